"""Where a run's reports go: every format asked for, to files (atomically) or stdout.

`check` and `verify` give one report; `--format` sends it to `--output` or stdout, each
`--FORMAT-output FILE` writes it once more. Everything that can be refused is refused
before the run does any work (`preflight`); every body is rendered before the first file
is written (`emit`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final, TextIO

import attrs

from ._files import check_writable, refuse_rules_path, write_atomic
from ._verbose import logger
from .errors import ConfigurationError
from .profiles import Profile

__all__ = [
    "EVIDENCE_FORMATS",
    "FORMATS",
    "Destination",
    "Outputs",
    "destinations",
    "emit",
    "preflight",
    "refuse_input",
]

#: The report formats, in the order --help lists them, with what --help says of each: the
#: run's own reports, then the evidence formats (`evidence.render` renders each of those).
FORMATS: Final = {
    "text": "",
    "json": "",
    "cklb": "STIG Viewer 3 checklist",
    "ckl": "STIG Viewer 2 checklist",
    "hdf": "Heimdall Data Format",
}
#: The formats the evidence package renders from an assessment.
EVIDENCE_FORMATS: Final = tuple(FORMATS)[2:]


@attrs.frozen(kw_only=True)
class Outputs:
    """The output options of a run.

    Attributes:
        format: `--format`.
        output: `--output` (None or `-`: stdout).
        extra: (format, paths) of each `--FORMAT-output` option, in format order.
        cklb_template: `--cklb-template`.
        metrics: `--metrics` (None without it).
        sources: The rules sources judged (no report may be written over them).
    """

    format: str
    output: str | None
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
    cklb_template: str | None = None
    metrics: str | None = None
    sources: tuple[str, ...] = ()


@attrs.frozen
class Destination:
    """Where one report of a run goes.

    Attributes:
        option: The option that asked for it (`--output`, `--json-output`...).
        fmt: Its format.
        path: The file, or None for stdout.
    """

    option: str
    fmt: str
    path: str | None


def destinations(args: Outputs) -> list[Destination]:
    """The reports of the run: `--format` to `--output` or stdout, then each --FORMAT-output.

    Raises:
        ConfigurationError: an option given twice, two reports for stdout, or two reports
            (or a report and --metrics) into one file.
    """
    found = [
        Destination("--output", args.format, None if args.output in {None, "-"} else args.output)
    ]
    for fmt, paths in args.extra:
        if len(paths) > 1:
            msg = f"--{fmt}-output is given {len(paths)} times ({', '.join(paths)}); give it once"
            raise ConfigurationError(msg)
        if paths and paths[0] == "-" and found[0].path is None:
            msg = (
                f"--{fmt}-output -: stdout already carries the --format {args.format} report; "
                "pass a file, or send the --format report to a file with --output"
            )
            raise ConfigurationError(msg)
        found.extend(Destination(f"--{fmt}-output", fmt, p if p != "-" else None) for p in paths)
    named = [(d.option, d.path) for d in found if d.path is not None]
    if args.metrics:
        named.append(("--metrics", args.metrics))
    for index, (option, path) in enumerate(named):
        for other_option, other in named[:index]:
            if path and other and same_file(path, other):
                msg = (
                    f"{other_option} {other} and {option} {path} name the same file; each "
                    "report needs its own file"
                )
                raise ConfigurationError(msg)
    return found


def same_file(a: str, b: str) -> bool:
    """Whether writing `a` and `b` would replace one file (one resolved path, or one inode).

    A device or FIFO is written into, not replaced: two reports may go to /dev/null.
    """
    if any(os.path.exists(p) and not os.path.isfile(p) for p in (a, b)):
        return False
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samestat(os.stat(a), os.stat(b))
    except OSError:
        return False


def refuse_input(args: Outputs, option: str, path: str | None) -> None:
    """Refuse to write a report or metrics where rules are read (judged or loaded)."""
    if path is None:
        return
    refuse_rules_path(option, path, args.sources)


def preflight(args: Outputs, profiles: tuple[Profile, ...]) -> str | None:
    """Refuse what cannot give the reports asked for, before any work; read the template.

    That is a checklist no selected profile can fill, a template no checklist uses, and an
    output that cannot or must not be written (where rules are read).
    """
    found = destinations(args)
    for destination in found:
        if destination.path is not None:
            refuse_input(args, destination.option, destination.path)
            check_writable(
                destination.option,
                destination.path,
                replaces=False,
                instead="a file name in a writable directory",
            )
    formats = {destination.fmt for destination in found}
    if args.cklb_template is not None and "cklb" not in formats:
        msg = (
            "--cklb-template: it fills a STIG Viewer 3 checklist; pass --format cklb (or "
            "--cklb-output FILE) with it"
        )
        raise ConfigurationError(msg)
    if not formats & set(EVIDENCE_FORMATS):
        return None
    from . import evidence  # noqa: PLC0415 - only for the evidence formats

    template = None
    for destination in found:
        if destination.fmt in EVIDENCE_FORMATS:
            option = (
                f"--format {destination.fmt}"
                if destination.option == "--output"
                else destination.option
            )
            loaded = evidence.preflight(
                destination.fmt,
                profiles,
                args.cklb_template if destination.fmt == "cklb" and template is None else None,
                option=option,
            )
            template = template if loaded is None else loaded
    return template


def emit(
    args: Outputs,
    out: TextIO,
    own: dict[str, Callable[[], str]],
    assess: Callable[[], Any],
    template: str | None,
) -> None:
    """Write the run's one report in every format asked for: files atomically, then stdout.

    `own` renders the `text` and `json` formats; `assess` gives the evidence formats'
    assessment. Every body is rendered before any file is written, so a failure leaves
    none half done.
    """
    assessment: list[Any] = []

    def body(fmt: str) -> str:
        if fmt in own:
            return own[fmt]()
        from .evidence import render  # noqa: PLC0415 - only for the evidence formats

        if not assessment:
            assessment.append(assess())
        return render(fmt, assessment[0], template)

    bodies = [(destination, body(destination.fmt)) for destination in destinations(args)]

    for destination, rendered in bodies:
        if destination.path is not None:
            write_atomic(destination.path, rendered, option=destination.option)
            logger.info("%s report written to %s", destination.fmt, destination.path)
    for destination, rendered in bodies:
        if destination.path is None:
            out.write(rendered)
