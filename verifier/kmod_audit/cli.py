"""The `kmod-audit` command line (DESIGN section 3; exit codes 0/1/2/3)."""

from __future__ import annotations

import argparse
import gc
import io
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, TextIO

from ._arguments import UsageError, parser, wants_json
from ._files import refuse_rules_path
from ._terminal import escape_lines
from ._verbose import logger
from .check import JUDGING_TIME, Options, run_check
from .errors import (
    EXIT_OK,
    EXIT_USAGE,
    ConfigurationError,
    ParseError,
    TransportError,
    VerifierError,
)
from .generate import DEFAULT_KEY, generate_rules
from .outputs import FORMATS, Outputs, emit, preflight, refuse_input
from .profiles import Profile, select_profiles
from .report import (
    render_json,
    render_text,
)
from .rules import NOT_READ, THIS_MACHINE, UID_UNSET
from .syscalls import MACHINES, Machine, host_machine, machine_by_name
from .system import (
    CopyOf,
    default_kmod_path,
    default_uid_min,
    kmod_path_for,
    layout_of,
)

if TYPE_CHECKING:
    from .metrics import RunMetrics

__all__ = ["main"]


def _outputs(args: argparse.Namespace) -> Outputs:
    return Outputs(
        format=getattr(args, "format", "text"),
        output=getattr(args, "output", None),
        extra=tuple((fmt, tuple(getattr(args, f"{fmt}_output", ()))) for fmt in FORMATS),
        cklb_template=getattr(args, "cklb_template", None),
        metrics=getattr(args, "metrics", None),
        sources=tuple(getattr(args, "sources", ())),
    )


def _machine(arch: str | None) -> Machine:
    if arch is None:
        machine = host_machine()
        if machine is None:
            msg = "this machine's architecture is not modelled; pass --arch " + " or --arch ".join(
                MACHINES
            )
            raise ConfigurationError(msg)
        return machine
    machine = machine_by_name(arch)
    if machine is None:
        msg = f"--arch {arch}: unknown architecture; use one of {', '.join(MACHINES)}"
        raise ConfigurationError(msg)
    return machine


def _uid_min(text: str | None, option: str = "--uid-min") -> int:
    if text is None:
        return default_uid_min()
    try:
        value = int(text, 10)
    except ValueError:
        msg = f"{option} {text}: not a number; pass the first uid of real users, e.g. 1000"
        raise ConfigurationError(msg) from None
    if not 0 <= value < UID_UNSET:
        msg = f"{option} {text}: must be between 0 and 4294967294"
        raise ConfigurationError(msg)
    return value


def _profiles(ids: list[str]) -> tuple[Profile, ...]:
    try:
        return select_profiles(ids)
    except KeyError as exc:
        msg = f"--profile: {exc.args[0]}"
        raise ConfigurationError(msg) from None


def _options(args: argparse.Namespace, *, pinned_key: str | None) -> Options:
    profiles = _profiles(args.profile)
    machine = _machine(args.arch)
    root = getattr(args, "root", None)
    live = not getattr(args, "offline", False) and root is None
    if args.arch is not None and host_machine() != machine:
        # A file meant for another machine: this machine's files say nothing about it.
        live = False
    if args.kmod_path is not None:
        # The kmod path names the program judged and goes into the fix lines: refuse what
        # `generate` refuses (a relative path would give `-F path=bin/kmod`, which the
        # kernel does not load).
        from .generate import validate_kmod_path  # noqa: PLC0415 - check imports it anyway

        problem = validate_kmod_path(args.kmod_path)
        if problem is not None:
            msg = f"--kmod-path {args.kmod_path!r}: {problem}"
            raise ConfigurationError(msg)
    kmod = args.kmod_path or kmod_path_for(this_machine=live)
    # A file for another machine: only what every target has, and the kmod binary's place.
    files = (
        THIS_MACHINE if live else CopyOf(root) if root is not None else NOT_READ.with_program(kmod)
    )
    return Options(
        machine=machine,
        profiles=profiles,
        uid_min=_uid_min(args.uid_min),
        key=pinned_key,
        kmod_path=kmod,
        strict=getattr(args, "strict", False),
        files=files,
        deadline=time.monotonic() + JUDGING_TIME,
        # Live, the rules are for this machine's kernel; a file for another machine names
        # its kernel with --kernel-version, or none (every kernel is judged).
        kernel=getattr(args, "kernel_version", None) or (platform.release() if live else None),
        layout=layout_of(root) if root is not None else None,
    )


def _check(args: argparse.Namespace, out: TextIO, metrics: RunMetrics | None) -> int:
    if args.key is not None and not args.key:
        msg = "--key: the key is empty; pass the key the records must carry"
        raise ConfigurationError(msg)
    options = _options(args, pinned_key=args.key)
    template = preflight(_outputs(args), options.profiles)
    run = run_check(options, args.sources, running=args.running)
    result = run.report
    if metrics is not None:
        metrics.observe_check(result, running=run.running, drift=run.drift, kernel=run.kernel)

    def assess() -> object:
        from .evidence import assess_check  # noqa: PLC0415 - only for the evidence formats

        return assess_check(result)

    own = {"text": lambda: render_text(result), "json": lambda: render_json(result) + "\n"}
    emit(_outputs(args), out, own, assess, template)
    return result.exit_code()


def _generate(args: argparse.Namespace, out: TextIO) -> int:
    key = args.key if args.key is not None else DEFAULT_KEY
    machine = _machine(args.arch)
    # An explicit empty --kmod-path is refused, never replaced by the default.
    kmod = args.kmod_path
    if kmod is None:
        kmod = kmod_path_for(this_machine=args.arch is None or host_machine() == machine)
    lines = generate_rules(
        _profiles(args.profile),
        machine=machine,
        key=key,
        uid_min=_uid_min(args.uid_min),
        kmod_path=kmod,
    )
    out.write("".join(line + "\n" for line in lines))
    return EXIT_OK


def _verify(args: argparse.Namespace, out: TextIO, metrics: RunMetrics | None) -> int:
    from .verify import (  # noqa: PLC0415 - only for verify
        VerifyOptions,
        render_verify_json,
        render_verify_text,
        verify_target,
    )

    if args.key is not None and not args.key:
        msg = "--key: the key is empty; pass the key the records must carry"
        raise ConfigurationError(msg)
    profiles = _profiles(args.profile)
    template = preflight(_outputs(args), profiles)
    options = VerifyOptions(
        profiles=profiles,
        key=args.key,
        uid_min=_uid_min(args.uid_min),
        module=args.module,
        probe_command=args.probe_command or (),
        kmod_path=args.kmod_path,
        timeout=args.timeout,
        strict=args.strict,
        no_load=args.no_load,
    )
    report = verify_target(args.target, options, local_probe=_local_probe)
    if metrics is not None:
        metrics.observe_verify(report)

    def assess() -> object:
        from .evidence import assess_verify  # noqa: PLC0415 - only for the evidence formats

        return assess_verify(report)

    own = {
        "text": lambda: render_verify_text(report),
        "json": lambda: render_verify_json(report) + "\n",
    }
    emit(_outputs(args), out, own, assess, template)
    return report.exit_code()


def _probe(args: argparse.Namespace, out: TextIO) -> int:
    from .probe import run_probe  # noqa: PLC0415 - only for probe
    from .verify import PROBE_PREFIX  # noqa: PLC0415

    uid_min = _uid_min(args.uid_min)
    auid = _uid_min(args.auid, "--auid") if args.auid is not None else uid_min
    result = run_probe(
        module=args.module,
        auid=auid,
        uid_min=uid_min,
        program=args.kmod_path or default_kmod_path(),
        timeout=args.timeout,
        load=not args.no_load,
    )
    out.write(PROBE_PREFIX + json.dumps(result.to_json()) + "\n")
    return EXIT_OK


def _local_probe(args: list[str]) -> int:
    """`kmod-audit probe ARGS` in the forked child of a local verify (what `argv` would run)."""
    return main(args, out=sys.stdout)


_KINDS: Final = (
    (ParseError, "input"),
    (ConfigurationError, "usage"),
    (TransportError, "transport"),
)


def _error(
    stream: TextIO, message: str, *, code: int, kind: str, as_json: bool, human: str = ""
) -> int:
    """Report an error: terminal-safe on stderr, and as one JSON object on `stream`.

    `human` replaces the `kmod-audit: MESSAGE` line on stderr (argparse's form of usage
    errors).
    """
    sys.stderr.write(escape_lines(human or f"kmod-audit: {message}") + "\n")
    if as_json:
        error = {"exit": code, "kind": kind, "message": message}
        stream.write(json.dumps({"error": error}) + "\n")
    return code


class _SafeFormatter(logging.Formatter):
    """Log lines with their control characters escaped (console output is logged too)."""

    def format(self, record: logging.LogRecord) -> str:
        """Format the record, then make it terminal-safe."""
        return escape_lines(super().format(record))


def _run(args: argparse.Namespace, stream: TextIO, metrics: RunMetrics | None) -> int:
    if args.command == "check":
        return _check(args, stream, metrics)
    if args.command == "verify":
        return _verify(args, stream, metrics)
    if args.command == "probe":
        return _probe(args, stream)
    return _generate(args, stream)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the CLI; return the exit code.

    Every error is reported on stderr, and also as `{"error": {"exit": N, "kind": ...,
    "message": ...}}` on stdout when `--format json` was given: usage errors (exit 2, also
    those argparse finds), unreadable input (2), a system that could not be asked (3),
    an interruption (130) and internal errors (2).
    """
    stream = out if out is not None else sys.stdout
    if out is None and isinstance(sys.stdout, io.TextIOWrapper):
        # A key in a locale that cannot encode it must not end the report half-written.
        sys.stdout.reconfigure(errors="backslashreplace")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(argv)
    except UsageError as exc:
        command = exc.prog.removeprefix("kmod-audit").strip()
        code = _error(
            stream,
            f"{command}: {exc.message}" if command else exc.message,
            code=EXIT_USAGE,
            kind="usage",
            as_json=wants_json(argv),
            human=f"{exc.usage}{exc.prog}: error: {exc.message}",
        )
        _usage_metrics(argv, code, stream)
        return code
    except SystemExit as exc:  # argparse: --help or --version
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    as_json = getattr(args, "format", "text") == "json"
    package = logging.getLogger("kmod_audit")
    handler: logging.Handler | None = None
    level = package.level
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_SafeFormatter("kmod-audit: %(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.DEBUG if args.verbose > 1 else logging.INFO)
    # Parsing and loading a big rules file allocate many objects that all live to the end:
    # the cyclic collector's default pace (a pass per 700 allocations) would spend a third
    # of the time on them. Collect less often (as mypy does) for this call only.
    thresholds = gc.get_threshold()
    gc.set_threshold(200_000, 30, 30)
    metrics: RunMetrics | None = None
    try:
        if getattr(args, "metrics", None) is not None:
            from .metrics import RunMetrics  # noqa: PLC0415 - only with --metrics

            refuse_input(_outputs(args), "--metrics", args.metrics)
            metrics = RunMetrics.begin(args.command, args.metrics, args.profile)
        code = _run(args, stream, metrics)
    except VerifierError as exc:
        kind = next((k for cls, k in _KINDS if isinstance(exc, cls)), "error")
        code = _error(stream, str(exc), code=exc.exit_code, kind=kind, as_json=as_json)
    except KeyboardInterrupt:
        code = _error(stream, "interrupted", code=130, kind="interrupted", as_json=as_json)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a traceback
        logger.debug("internal error", exc_info=True)
        message = (
            f"internal error ({type(exc).__name__}: {exc}); this is a bug in kmod-audit, "
            "please report it with the input (run with -vv for details)"
        )
        code = _error(stream, message, code=EXIT_USAGE, kind="internal", as_json=as_json)
    finally:
        gc.set_threshold(*thresholds)
    try:
        if metrics is not None:
            code = _write_metrics(metrics, code, stream)
    finally:
        if handler is not None:
            package.removeHandler(handler)
            package.setLevel(level)
    return code


def _usage_metrics(argv: Sequence[str], code: int, stream: TextIO) -> None:
    """Write the metrics of a command line argparse refused, when it names `--metrics FILE`.

    Exit 2 writes the file too (as after parsing): a timer whose options are wrong must
    replace the last good run's values, not leave them for the alerts. Only the exact
    `--metrics FILE` (and `--profile ID`) or `--metrics=FILE` before a `--` count (an
    abbreviation may be another option); each requirement of the profiles is 0.
    """
    words = list(argv)
    if "--" in words:
        words = words[: words.index("--")]
    command = next((w for w in words if not w.startswith("-")), None)
    found: dict[str, list[str]] = {"--metrics": [], "--profile": []}
    for index, word in enumerate(words):
        name, eq, value = word.partition("=")
        if name in found and eq:
            found[name].append(value)
        elif name in found and index + 1 < len(words):
            found[name].append(words[index + 1])
    paths = found["--metrics"]
    if command not in {"check", "verify"} or not paths or not paths[-1]:
        return
    from .metrics import RunMetrics  # noqa: PLC0415 - only with --metrics

    try:
        # The command line did not parse: any word may be a rules source.
        refuse_rules_path("--metrics", paths[-1], [w for w in argv if w != paths[-1]])
        run = RunMetrics.begin(
            "check" if command == "check" else "verify", paths[-1], found["--profile"]
        )
    except VerifierError as exc:
        _error(stream, str(exc), code=EXIT_USAGE, kind="usage", as_json=False)
        return
    _write_metrics(run, code, stream)


def _write_metrics(run: RunMetrics, code: int, stream: TextIO) -> int:
    """Write the metrics file of a run that ended with `code`; return the exit code.

    The report (or error) is already on stdout, so a failure to write the file is said on
    stderr only; a run that was compliant then exits 2, so the failure is not missed.
    """
    try:
        run.write(code)
    except VerifierError as exc:
        _error(stream, str(exc), code=EXIT_USAGE, kind="usage", as_json=False)
        return code or EXIT_USAGE
    return code
