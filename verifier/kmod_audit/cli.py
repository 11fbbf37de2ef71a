"""The `kmod-audit` command line (DESIGN section 3; exit codes 0/1/2/3)."""

from __future__ import annotations

import argparse
import gc
import io
import json
import logging
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, NoReturn, TextIO

import attrs

from ._files import check_writable, refuse_rules_path, write_atomic
from ._terminal import escape_lines
from ._verbose import logger, nested
from ._version import __version__
from .augenrules import MAX_TIE_ORDERS, Assembly
from .check import JUDGING_TIME, Options, judge_source
from .errors import (
    EXIT_OK,
    EXIT_USAGE,
    ConfigurationError,
    ParseError,
    TransportError,
    VerifierError,
)
from .generate import DEFAULT_KEY, generate_lines, validate_key
from .loader import Drift, RuleSet, compare
from .profiles import PROFILES, Profile, select_profiles
from .report import (
    CheckResult,
    Finding,
    Report,
    RequirementResult,
    SourceReport,
    render_json,
    render_text,
)
from .rules import UID_UNSET, Command, RulesSource, parse_rules
from .sources import OnDiskRules, discover_on_disk, rules_d_assemblies
from .syscalls import MACHINES, Machine, host_machine, machine_by_name
from .system import (
    auditctl_list,
    auditctl_status,
    default_kmod_path,
    default_uid_min,
    read_rules_text,
)

if TYPE_CHECKING:
    from .metrics import RunMetrics

__all__ = ["main"]

_PROFILE_HELP = "profile id: " + ", ".join([*PROFILES, "all"]) + " (repeatable; default nixos-stig)"

_MAX_SECONDS: Final = 86400.0
"""The longest `--timeout` (one day): beyond it a wait is a mistake, not patience."""

# Kernel module names: MODULE_NAME_LEN is 64 bytes with the NUL and a pointer's worth
# reserved, so 55 characters; modprobe treats `-` and `_` alike. A leading `-` would make
# the name an option of modprobe.
_MODULE_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,54}", re.ASCII)


class _UsageError(Exception):
    """argparse refused the command line (raised instead of argparse's exit)."""

    def __init__(self, prog: str, usage: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog
        self.usage = usage
        self.message = message


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises `_UsageError` instead of printing and exiting.

    So `main` reports every usage error the same way as the others: on stderr, and as a
    JSON error object on stdout when `--format json` was given. Subparsers made with
    `add_subparsers` are of this class too.
    """

    def error(self, message: str) -> NoReturn:
        """Raise the usage error with this (sub)command's usage line."""
        raise _UsageError(self.prog, self.format_usage(), message)

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:  # noqa: ANN401 - argparse's own signature
        """Read `--opt=--` as the value `--`, as newer Pythons do.

        Python 3.11's argparse drops a `--` that is the whole value of a single-valued
        option and hands the action an empty list, skipping `type` and `choices`: every
        option would then reach the code as a list instead of a checked string.
        """
        if action.nargs is None and action.option_strings and arg_strings == ["--"]:
            value = self._get_value(action, "--")
            self._check_value(action, value)
            return value
        return super()._get_values(action, arg_strings)


def _seconds(text: str) -> float:
    """The `--timeout` type: seconds, a finite number above 0 and at most a day."""
    try:
        value = float(text)
    except ValueError:
        msg = f"{text!r} is not a number of seconds; pass e.g. 300"
        raise argparse.ArgumentTypeError(msg) from None
    if not math.isfinite(value) or not 0 < value <= _MAX_SECONDS:
        msg = (
            f"{text!r} is out of range; pass a number of seconds above 0 and at most "
            f"{_MAX_SECONDS:g} (one day), e.g. 300"
        )
        raise argparse.ArgumentTypeError(msg)
    return value


def _module_name(text: str) -> str:
    """The `--module` type: a kernel module name (what /proc/modules lists)."""
    if _MODULE_NAME.fullmatch(text) is None:
        msg = (
            f"{text!r} is not a kernel module name; use at most 55 letters, digits, _ and -, "
            "not starting with -, e.g. dummy"
        )
        raise argparse.ArgumentTypeError(msg)
    return text


def _command(text: str) -> tuple[str, ...]:
    """The `--probe-command` type: a command line split as a POSIX shell would."""
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        msg = f"{text!r} cannot be split into words ({exc}); fix the quoting"
        raise argparse.ArgumentTypeError(msg) from None
    if not argv:
        msg = f"{text!r} is empty; pass the command that runs kmod-audit there, e.g. kmod-audit"
        raise argparse.ArgumentTypeError(msg)
    if any("\0" in word for word in argv):
        msg = f"{text!r} holds a NUL byte, which no command can"
        raise argparse.ArgumentTypeError(msg)
    return argv


def _key(text: str) -> str:
    """The `--key` type: text that is valid UTF-8 (audit keys are compared as text)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        msg = (
            f"{text!r} holds bytes that are not UTF-8 (shown as \\udcXX); pass the key as "
            "UTF-8 text, e.g. module_chng"
        )
        raise argparse.ArgumentTypeError(msg) from None
    return text


def _absolute_path(text: str) -> str:
    """The `--kmod-path` type of verify and probe: an absolute path."""
    if not text.startswith("/") or "\0" in text:
        msg = f"{text!r} is not an absolute path; pass the real path of kmod, e.g. /usr/bin/kmod"
        raise argparse.ArgumentTypeError(msg)
    return text


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kmod-audit",
        description=(
            "Prove that kernel module loads and unloads leave keyed audit records "
            "(DISA STIG, CIS, Tenable)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log steps to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser(
        "check",
        help="judge audit rules semantically against the profiles",
        description=(
            "Judge rules files, captured `auditctl -l` output or the running rules the way "
            "the kernel applies them. With no SOURCE and no --running, judge both the "
            "running and the on-disk rules and report drift between them."
        ),
    )
    check.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="rules file, rules.d directory, captured `auditctl -l` output, or - for stdin",
    )
    check.add_argument(
        "--running", action="store_true", help="judge the running rules (auditctl -l)"
    )
    _common(check)
    check.add_argument(
        "--strict",
        action="store_true",
        help="also demand the literal auid>=N and auid!=unset filters",
    )
    check.add_argument(
        "--offline",
        action="store_true",
        help="do not consult this machine's files (symlinks, watch parents): judge a file "
        "meant for another machine",
    )
    _output_options(check)
    _metrics_option(check)

    generate = sub.add_parser(
        "generate",
        help="print the minimal rules that satisfy the profiles",
        description=(
            "Print the minimal rules file satisfying the profiles, in the canonical format "
            "the NixOS module renders byte for byte."
        ),
    )
    _common(generate)

    verify = sub.add_parser(
        "verify",
        help="exercise the kernel: make module syscalls as a logged-in user, find the records",
        description=(
            "Run the probe on the target (it makes every audited module syscall as a user "
            "with a login uid, loads and unloads the probe module when it can, and makes "
            "negative controls), then match the audit records to the stimuli and judge them "
            "against the profiles. Never changes audit rules; leaves the module as found."
        ),
    )
    verify.add_argument(
        "--target",
        default="local",
        metavar="TARGET",
        help="local, ssh://USER@HOST[:PORT] or console:COMMAND (default: local)",
    )
    verify.add_argument("--profile", action="append", default=[], metavar="ID", help=_PROFILE_HELP)
    verify.add_argument(
        "--module", type=_module_name, default="dummy", metavar="NAME", help="probe module (dummy)"
    )
    verify.add_argument("--key", type=_key, metavar="KEY", help="key the records must carry")
    verify.add_argument("--uid-min", metavar="N", help="first uid of real users (default: UID_MIN)")
    verify.add_argument(
        "--kmod-path", type=_absolute_path, metavar="PATH", help="the kmod binary on the target"
    )
    verify.add_argument(
        "--strict",
        action="store_true",
        help="a negative control recorded with the key fails (the literal auid>=N and "
        "auid!=unset filters, as check --strict); without it, it is a note",
    )
    verify.add_argument(
        "--probe-command",
        type=_command,
        metavar="CMD",
        help="command that runs kmod-audit on the target (default: kmod-audit; locally this "
        "Python)",
    )
    verify.add_argument(
        "--timeout",
        type=_seconds,
        default=300.0,
        metavar="S",
        help="seconds for the whole run: connecting (a console's start-up) and the probe (300)",
    )
    verify.add_argument(
        "--no-load",
        action="store_true",
        help="never load a module: only the failing attempts and the executions (safe on a "
        "timer in production); the real load is reported as not exercised, by choice",
    )
    _output_options(verify)
    _metrics_option(verify)

    probe = sub.add_parser(
        "probe",
        help="(on the target) make the stimuli and print them with the audit records",
        description="Used by verify: runs on the machine under test, as root.",
    )
    probe.add_argument("--module", type=_module_name, default="dummy", metavar="NAME")
    probe.add_argument("--no-load", action="store_true", help="never load a module")
    probe.add_argument("--auid", metavar="N", help="login uid of the test user (default: uid-min)")
    probe.add_argument("--uid-min", metavar="N", help="first uid of real users (default: UID_MIN)")
    probe.add_argument(
        "--kmod-path", type=_absolute_path, metavar="PATH", help="real path of the kmod binary"
    )
    probe.add_argument(
        "--timeout",
        type=_seconds,
        default=15.0,
        metavar="S",
        help="seconds to wait for the records (15)",
    )
    return parser


def _metrics_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics",
        metavar="FILE",
        help="also write the verdict as Prometheus metrics to FILE (atomically, whatever "
        "the exit code), e.g. /var/lib/prometheus/node-exporter/kmod-audit-check.prom",
    )


_FORMATS: Final = ("text", "json", "cklb", "ckl", "hdf")
"""The report formats, in the order --help lists them."""


def _output_options(parser: argparse.ArgumentParser) -> None:
    """--format, --output, --FORMAT-output and --cklb-template (check and verify)."""
    parser.add_argument(
        "--format",
        choices=_FORMATS,
        default="text",
        help="text, json, cklb (STIG Viewer 3 checklist), ckl (STIG Viewer 2 checklist) or "
        "hdf (Heimdall Data Format); checklists hold the DISA STIG profiles only",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write the report to FILE (atomically: whole or not at all) instead of stdout "
        "(- is stdout); never where audit rules are read (a rules source, /etc/audit/rules.d, "
        "audit.rules, the NixOS rules file)",
    )
    for fmt in _FORMATS:
        parser.add_argument(
            f"--{fmt}-output",
            action="append",
            default=[],
            metavar="FILE",
            help=f"also write the report as {fmt} to FILE, from the same run (atomically; "
            "- is stdout when --output names a file)",
        )
    parser.add_argument(
        "--cklb-template",
        metavar="FILE",
        help="with --format cklb or --cklb-output: a STIG Viewer 3 checklist to fill in; its "
        "other rules stay byte-identical",
    )


@attrs.frozen
class _Destination:
    """Where one report of a run goes.

    Attributes:
        option: The option that asked for it (`--output`, `--json-output`...).
        fmt: Its format.
        path: The file, or None for stdout.
    """

    option: str
    fmt: str
    path: str | None


def _destinations(args: argparse.Namespace) -> list[_Destination]:
    """The reports of the run: `--format` to `--output` or stdout, then each --FORMAT-output.

    Raises:
        ConfigurationError: an option given twice, two reports for stdout, or two reports
            (or a report and --metrics) into one file.
    """
    found = [
        _Destination("--output", args.format, None if args.output in {None, "-"} else args.output)
    ]
    for fmt in _FORMATS:
        paths: list[str] = getattr(args, f"{fmt}_output")
        if len(paths) > 1:
            msg = f"--{fmt}-output is given {len(paths)} times ({', '.join(paths)}); give it once"
            raise ConfigurationError(msg)
        if paths and paths[0] == "-" and found[0].path is None:
            msg = (
                f"--{fmt}-output -: stdout already carries the --format {args.format} report; "
                "pass a file, or send the --format report to a file with --output"
            )
            raise ConfigurationError(msg)
        found.extend(_Destination(f"--{fmt}-output", fmt, p if p != "-" else None) for p in paths)
    named = [(d.option, d.path) for d in found if d.path is not None]
    if getattr(args, "metrics", None):
        named.append(("--metrics", args.metrics))
    for index, (option, path) in enumerate(named):
        for other_option, other in named[:index]:
            if path and other and _same_file(path, other):
                msg = (
                    f"{other_option} {other} and {option} {path} name the same file; each "
                    "report needs its own file"
                )
                raise ConfigurationError(msg)
    return found


def _same_file(a: str, b: str) -> bool:
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


def _not_an_input(args: argparse.Namespace, option: str, path: str | None) -> None:
    """Refuse to write a report or metrics where rules are read (judged or loaded)."""
    if path is None:
        return
    refuse_rules_path(option, path, getattr(args, "sources", ()))


def _evidence_preflight(args: argparse.Namespace, profiles: tuple[Profile, ...]) -> str | None:
    """Refuse what cannot give the reports asked for, before any work; read the template.

    That is a checklist no selected profile can fill, a template no checklist uses, and an
    output that cannot or must not be written (where rules are read).
    """
    destinations = _destinations(args)
    for destination in destinations:
        if destination.path is not None:
            _not_an_input(args, destination.option, destination.path)
            check_writable(
                destination.option,
                destination.path,
                replaces=False,
                instead="a file name in a writable directory",
            )
    formats = {destination.fmt for destination in destinations}
    if args.cklb_template is not None and "cklb" not in formats:
        msg = (
            "--cklb-template: it fills a STIG Viewer 3 checklist; pass --format cklb (or "
            "--cklb-output FILE) with it"
        )
        raise ConfigurationError(msg)
    if formats <= {"text", "json"}:
        return None
    from .evidence import preflight  # noqa: PLC0415 - only for the evidence formats

    template = None
    for destination in destinations:
        if destination.fmt in {"cklb", "ckl", "hdf"}:
            option = (
                f"--format {destination.fmt}"
                if destination.option == "--output"
                else destination.option
            )
            loaded = preflight(
                destination.fmt,
                profiles,
                args.cklb_template if destination.fmt == "cklb" and template is None else None,
                option=option,
            )
            template = template if loaded is None else loaded
    return template


def _emit(
    args: argparse.Namespace,
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

    bodies = [(destination, body(destination.fmt)) for destination in _destinations(args)]

    for destination, rendered in bodies:
        if destination.path is not None:
            write_atomic(destination.path, rendered, option=destination.option)
            logger.info("%s report written to %s", destination.fmt, destination.path)
    for destination, rendered in bodies:
        if destination.path is None:
            out.write(rendered)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", action="append", default=[], metavar="ID", help=_PROFILE_HELP)
    parser.add_argument(
        "--arch",
        metavar="ARCH",
        help="machine whose kernel loads the rules: "
        + ", ".join(MACHINES)
        + " (default: this one)",
    )
    parser.add_argument("--uid-min", metavar="N", help="first uid of real users (default: UID_MIN)")
    parser.add_argument("--key", type=_key, metavar="KEY", help="key the records must carry")
    parser.add_argument("--kmod-path", metavar="PATH", help="real path of the kmod binary")


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
    live = not getattr(args, "offline", False)
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
    return Options(
        machine=machine,
        profiles=profiles,
        uid_min=_uid_min(args.uid_min),
        key=pinned_key,
        kmod_path=args.kmod_path or default_kmod_path(),
        strict=getattr(args, "strict", False),
        live=live,
        deadline=time.monotonic() + JUDGING_TIME,
    )


def _judge_rules_d(
    path: str, assemblies: Sequence[Assembly], how: str, options: Options, label: str
) -> tuple[RuleSet, SourceReport]:
    """Judge rules.d as augenrules assembles it; when the dialects differ, the worst one."""
    judged: list[tuple[RuleSet, SourceReport]] = []
    for assembly in assemblies:
        source = parse_rules(
            assembly.text,
            path=path,
            machine=options.machine,
            live=options.live,
            origins=assembly.origins,
            syntax="rules",
        )
        with nested(f"judging {label}"):
            ruleset, report = judge_source(source, options, label=label)
        notes = [
            Finding(
                path=path,
                line=0,
                text="",
                message=f"augenrules: {note}",
                hint="augenrules reads only names ending in .rules: put the rules into "
                "rules.d as NAME.rules"
                if "holds no *.rules file" in note
                else "name rules files with no blanks or glob characters, and end each "
                "file with a newline",
                severity="warning",
            )
            for note in assembly.notes
        ]
        if len(assemblies) > 1:
            # In the label, not a finding: it is about the machine, not a line of a file.
            report = attrs.evolve(
                report,
                label=f"{label}; how augenrules assembles it depends on its version, awk "
                f"and locale ({how}), and the {len(assemblies)} possible results differ: "
                f"judged as the worst, {assembly.describe()}",
            )
        judged.append((ruleset, attrs.evolve(report, findings=(*report.findings, *notes))))
    ruleset, report = _worst(judged)
    unjudged = max(assembly.unjudged_orders for assembly in assemblies)
    if unjudged:
        # Only passes change: an order not judged may fail them (failures stay failures).
        report = _undecided_orders(report, unjudged)
    return ruleset, report


_RANK: Final = {"fail": 0, "undecided": 1, "pass": 2}


def _worst(judged: Sequence[tuple[RuleSet, SourceReport]]) -> tuple[RuleSet, SourceReport]:
    """The worst of several possible rule sets, requirement by requirement.

    The rule set and findings are those of the first that fails, else the first that is
    not compliant (undecided), else the first. Each requirement is the worst any of them
    gives it (fail, then undecided, then pass), with that one's reasons and checks: a
    requirement that fails in one possibility and passes in the chosen one is no pass.
    """
    ruleset, report = next(
        (pair for pair in judged if pair[1].failed),
        next((pair for pair in judged if not pair[1].compliant), judged[0]),
    )
    worst: dict[tuple[str, str], RequirementResult] = {}
    for _, other in judged:
        for profile in other.profiles:
            for req in profile.requirements:
                known = worst.get((profile.id, req.id))
                if known is None or _RANK[req.status] < _RANK[known.status]:
                    worst[profile.id, req.id] = req
    profiles = []
    for profile in report.profiles:
        requirements = tuple(worst[profile.id, req.id] for req in profile.requirements)
        profiles.append(
            attrs.evolve(
                profile,
                requirements=requirements,
                compliant=all(req.status == "pass" for req in requirements),
            )
        )
    return ruleset, attrs.evolve(report, profiles=tuple(profiles))


def _undecided_orders(report: SourceReport, unjudged: int) -> SourceReport:
    """What passes in every judged order of tied names, but not every order was judged."""
    reason = (
        f"kmod-audit cannot decide: sort -V ties some rules file names, the locale that "
        f"breaks the ties is not known, and {MAX_TIE_ORDERS + unjudged} orders are possible; "
        f"the {MAX_TIE_ORDERS} judged all pass, {unjudged} were not. Rename the files so that no "
        "two names differ only in leading zeros (x0.rules, x00.rules), or check on the "
        "machine itself"
    )
    profiles = tuple(
        attrs.evolve(
            profile,
            compliant=False,
            requirements=tuple(
                attrs.evolve(
                    req,
                    status="undecided",
                    reasons=(reason,),
                    checks=(
                        CheckResult(target="order of files", status="undecided", reason=reason),
                        *req.checks,
                    ),
                )
                if req.status == "pass" and req.applicable
                else req
                for req in profile.requirements
            ),
        )
        for profile in report.profiles
    )
    return attrs.evolve(report, profiles=profiles)


def _judge_on_disk(on_disk: OnDiskRules, options: Options) -> tuple[RuleSet, SourceReport]:
    """Judge what the next start of audit loads; when that is not known, the worst case."""
    if on_disk.alternatives:
        judged = [_judge_on_disk(one, options) for one in on_disk.alternatives]
        ruleset, report = _worst(judged)
        label = (
            f"{report.label}; what the next start of audit loads is not known, so "
            f"{len(judged)} possibilities were judged and this, the worst, is reported: "
            + ", ".join(one.path for one in on_disk.alternatives)
        )
        return ruleset, attrs.evolve(report, label=label)
    if on_disk.assemblies:
        return _judge_rules_d(on_disk.path, on_disk.assemblies, on_disk.how, options, on_disk.label)
    source = parse_rules(
        on_disk.text,
        path=on_disk.path,
        machine=options.machine,
        live=options.live,
        origins=on_disk.origins,
        syntax="rules",
    )
    return judge_source(source, options, label=on_disk.label)


def _load_file(path: str, options: Options) -> tuple[RuleSet, SourceReport]:
    if path != "-" and os.path.isdir(path):
        assemblies, how = rules_d_assemblies(path, live=options.live)
        label = f"rules directory {path} (as augenrules assembles it)"
        return _judge_rules_d(path, assemblies, how, options, label)
    text = read_rules_text(path)
    source = parse_rules(
        text,
        path=path if path != "-" else "<stdin>",
        machine=options.machine,
        live=options.live,
    )
    kind = "captured auditctl -l output" if source.syntax == "listing" else "rules file"
    label = f"{kind} {path if path != '-' else '<stdin>'}"
    if source.syntax_reason:
        # Say why: a rules file is judged with auditctl -R's stop at the first bad line.
        label += f" ({source.syntax_reason})"
    with nested(f"judging {label}"):
        return judge_source(source, options, label=label)


def _load_running(options: Options) -> tuple[RuleSet, SourceReport]:
    """The kernel's rules and enabled flag.

    Read over the audit netlink socket (the request `auditctl -l` makes, but exact: the
    listing's text prints path= and dir= watches alike and foreign arches as b64/b32);
    `auditctl -l` and `auditctl -s` are the fallback when netlink is not usable.
    """
    from . import netlink  # noqa: PLC0415 - only when reading the running rules

    label = "running rules (auditctl -l)"
    with nested("reading the running rules (netlink AUDIT_LIST_RULES, AUDIT_GET)"):
        try:
            rules = netlink.list_rules(options.machine)
            enabled: int | None = netlink.status().enabled
        except TransportError as exc:
            logger.info("netlink failed (%s); falling back to auditctl -l", exc)
            text = auditctl_list()
            enabled_text = auditctl_status().get("enabled", "1")
            enabled = int(enabled_text) if enabled_text.isdigit() else None
            source = parse_rules(
                text,
                path="auditctl -l",
                machine=options.machine,
                syntax="listing",
                live=options.live,
            )
            return judge_source(source, options, label=label, enabled=enabled)
    items = tuple(Command(kind="add", origin=rule.origin, rule=rule) for rule in rules)
    source = RulesSource(path="kernel", syntax="listing", items=items, machine=options.machine)
    return judge_source(source, options, label=label, enabled=enabled)


def _drift(running: RuleSet, on_disk: RuleSet, label: str) -> list[Finding]:
    return _drift_findings(compare(running, on_disk), label)


def _drift_findings(drift: Drift, label: str) -> list[Finding]:
    """The warnings of `check` for the drift between the running rules and `label`."""
    findings = [
        Finding(
            path=rule.origin.path,
            line=rule.origin.line,
            text=rule.origin.text,
            message=f"on disk but not running: {rule.render()}",
            hint="reload the rules (NixOS: systemctl restart audit-rules-nixos; "
            "elsewhere: augenrules --load), or reboot when they are locked (-e 2)",
            severity="warning",
        )
        for rule in drift.missing
    ]
    findings.extend(
        Finding(
            path="auditctl -l",
            line=rule.origin.line,
            text=rule.origin.text,
            message=f"running but not in {label}: {rule.render()}",
            hint="a rule was added by hand or the on-disk rules changed since they were "
            "loaded; make the on-disk rules the source of truth and reload them",
            severity="warning",
        )
        for rule in drift.extra
    )
    if drift.moved:
        findings.append(
            Finding(
                path="auditctl -l",
                line=0,
                text="",
                message=f"the running rules are those of {label} but in another order",
                hint="order matters (the first matching rule wins); reload the on-disk rules",
                severity="warning",
            )
        )
    return findings


def _check(args: argparse.Namespace, out: TextIO) -> int:
    if args.key is not None and not args.key:
        msg = "--key: the key is empty; pass the key the records must carry"
        raise ConfigurationError(msg)
    options = _options(args, pinned_key=args.key)
    template = _evidence_preflight(args, options.profiles)
    reports: list[SourceReport] = []
    drift: list[Finding] = []
    running: RuleSet | None = None
    files = [_load_file(path, options) for path in args.sources]
    if args.running:
        running, report = _load_running(options)
        reports.append(report)
    if not args.sources and not args.running:
        running, report = _load_running(options)
        reports.append(report)
        on_disk = discover_on_disk(live=options.live)
        if on_disk is None:
            drift.append(
                Finding(
                    path="",
                    line=0,
                    text="",
                    message="no on-disk rules found (no audit-rules-nixos.service, "
                    "/etc/audit/rules.d/*.rules or /etc/audit/audit.rules)",
                    hint="the running rules will not survive a reboot; persist them",
                    severity="warning",
                )
            )
        else:
            files.append(_judge_on_disk(on_disk, options))
    reports.extend(report for _, report in files)
    compared = (
        [(compare(running, ruleset), report.label) for ruleset, report in files]
        if running is not None
        else []
    )
    for differences, label in compared:
        drift.extend(_drift_findings(differences, label))
    result = Report(sources=tuple(reports), drift=tuple(drift), options=options.as_pairs())
    if args.metrics_run is not None:
        from . import netlink  # noqa: PLC0415 - only with --metrics

        args.metrics_run.observe_check(
            result,
            running=running,
            drift=[differences for differences, _ in compared],
            kernel=netlink.audit_state() if running is not None else None,
        )

    def assess() -> object:
        from .evidence import assess_check  # noqa: PLC0415 - only for the evidence formats

        return assess_check(result)

    own = {"text": lambda: render_text(result), "json": lambda: render_json(result) + "\n"}
    _emit(args, out, own, assess, template)
    return result.exit_code()


def _generate(args: argparse.Namespace, out: TextIO) -> int:
    from .generate import loading_problem, validate_kmod_path  # noqa: PLC0415 - generate only

    key = args.key if args.key is not None else DEFAULT_KEY
    problem = validate_key(key)
    if problem is not None:
        msg = f"--key: {problem}"
        raise ConfigurationError(msg)
    profiles = _profiles(args.profile)
    machine = _machine(args.arch)
    # An explicit empty --kmod-path is refused below, never replaced by the default.
    kmod = (
        args.kmod_path
        if args.kmod_path is not None
        else default_kmod_path()
        if args.arch is None or host_machine() == machine
        else "/usr/bin/kmod"
    )
    shown = repr(kmod) if len(kmod) <= 80 else f"{kmod[:60]!r}... ({len(kmod)} characters)"
    problem = validate_kmod_path(kmod)
    if problem is not None:
        msg = f"--kmod-path {shown}: {problem}"
        raise ConfigurationError(msg)
    lines = generate_lines(
        profiles,
        machine=machine,
        key=key,
        uid_min=_uid_min(args.uid_min),
        kmod_path=kmod,
    )
    # Never print a line auditctl or the kernel would refuse or read differently: read the
    # lines back with the same model `check` uses.
    problem = loading_problem(lines, machine=machine, key=key, kmod_path=kmod)
    if problem is not None:
        msg = (
            f"the rules for --key {key!r} --kmod-path {shown} would not load as written: "
            f"{problem}; pass a plain key and the absolute path of the kmod binary"
        )
        raise ConfigurationError(msg)
    out.write("".join(line + "\n" for line in lines))
    return EXIT_OK


def _verify(args: argparse.Namespace, out: TextIO) -> int:
    from .transports import LocalHost, target_from_spec  # noqa: PLC0415 - only for verify
    from .verify import (  # noqa: PLC0415
        VerifyOptions,
        render_verify_json,
        render_verify_text,
        run_verify,
    )

    if args.key is not None and not args.key:
        msg = "--key: the key is empty; pass the key the records must carry"
        raise ConfigurationError(msg)
    profiles = _profiles(args.profile)
    template = _evidence_preflight(args, profiles)
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
    # --timeout bounds the whole run: a console's start-up and the probe share it.
    deadline = time.monotonic() + args.timeout
    with (
        target_from_spec(args.target, deadline=deadline) as target,
        nested(f"verifying {target.name}"),
    ):
        left = deadline - time.monotonic()
        if left <= 0:
            msg = (
                f"--timeout {args.timeout:g}: no time was left for the probe after reaching "
                f"{target.name}; pass a longer --timeout"
            )
            raise TransportError(msg)
        options = attrs.evolve(options, timeout=left)
        report = run_verify(
            target, options, local=isinstance(target, LocalHost), local_probe=_local_probe
        )
    if args.metrics_run is not None:
        args.metrics_run.observe_verify(report)

    def assess() -> object:
        from .evidence import assess_verify  # noqa: PLC0415 - only for the evidence formats

        return assess_verify(report)

    own = {
        "text": lambda: render_verify_text(report),
        "json": lambda: render_verify_json(report) + "\n",
    }
    _emit(args, out, own, assess, template)
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


def _wants_json(argv: Sequence[str]) -> bool:
    """Whether `argv` asks for `--format json`, judged even when it does not parse.

    The last `--format VALUE` or `--format=VALUE` before a `--` decides, as in argparse
    (which also takes abbreviations such as `--form json`).
    """
    value = None
    words = list(argv)
    for index, word in enumerate(words):
        if word == "--":
            break
        name, eq, rest = word.partition("=")
        if len(name) > 2 and "--format".startswith(name):
            if eq:
                value = rest
            elif index + 1 < len(words):
                value = words[index + 1]
    return value == "json"


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


def _run(args: argparse.Namespace, stream: TextIO) -> int:
    if args.command == "check":
        return _check(args, stream)
    if args.command == "verify":
        return _verify(args, stream)
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
        args = _parser().parse_args(argv)
    except _UsageError as exc:
        command = exc.prog.removeprefix("kmod-audit").strip()
        code = _error(
            stream,
            f"{command}: {exc.message}" if command else exc.message,
            code=EXIT_USAGE,
            kind="usage",
            as_json=_wants_json(argv),
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
    args.metrics_run = None
    try:
        if getattr(args, "metrics", None) is not None:
            from .metrics import RunMetrics  # noqa: PLC0415 - only with --metrics

            _not_an_input(args, "--metrics", args.metrics)
            args.metrics_run = RunMetrics.begin(args.command, args.metrics, args.profile)
        code = _run(args, stream)
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
        if args.metrics_run is not None:
            code = _write_metrics(args.metrics_run, code, stream)
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
