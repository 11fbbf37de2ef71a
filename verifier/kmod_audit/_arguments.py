"""The command line's grammar: the argparse parser, its value types and their messages.

Private to `cli`, which parses with it, dispatches, and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
from collections.abc import Sequence
from typing import Any, Final, NoReturn

from ._version import __version__
from .outputs import FORMATS
from .profiles import PROFILES
from .syscalls import MACHINES

__all__ = ["UsageError", "parser", "wants_json"]

_PROFILE_HELP = "profile id: " + ", ".join([*PROFILES, "all"]) + " (repeatable; default nixos-stig)"

_MAX_SECONDS: Final = 86400.0
"""The longest `--timeout` (one day): beyond it a wait is a mistake, not patience."""

# Kernel module names: MODULE_NAME_LEN is 64 bytes with the NUL and a pointer's worth
# reserved, so 55 characters; modprobe treats `-` and `_` alike. A leading `-` would make
# the name an option of modprobe.
_MODULE_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,54}", re.ASCII)


_KERNEL_VERSION: Final = re.compile(r"[0-9]+\.[0-9]+([.+~_-][0-9A-Za-z.+~_-]*)?", re.ASCII)


def _kernel_version(text: str) -> str:
    if len(text) > 64 or not _KERNEL_VERSION.fullmatch(text):
        msg = (
            f"{text!r} is not a kernel release; pass MAJOR.MINOR or what `uname -r` prints "
            "on the machine that loads the rules, e.g. 6.1 or 6.1.0-28-amd64"
        )
        raise argparse.ArgumentTypeError(msg)
    return text


class UsageError(Exception):
    """argparse refused the command line (raised instead of argparse's exit)."""

    def __init__(self, prog: str, usage: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog
        self.usage = usage
        self.message = message


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises `UsageError` instead of printing and exiting.

    So `main` reports every usage error the same way as the others: on stderr, and as a
    JSON error object on stdout when `--format json` was given. Subparsers made with
    `add_subparsers` are of this class too.
    """

    def error(self, message: str) -> NoReturn:
        """Raise the usage error with this (sub)command's usage line."""
        raise UsageError(self.prog, self.format_usage(), message)

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


def parser() -> argparse.ArgumentParser:
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
        "meant for another machine, every possibility of its files",
    )
    check.add_argument(
        "--root",
        metavar="DIR",
        help="a copy of the target's root filesystem: its files are read there (how /bin "
        "and /sbin link into /usr, which watch directories exist; implies --offline)",
    )
    check.add_argument(
        "--kernel-version",
        type=_kernel_version,
        metavar="V",
        help="the kernel release the rules are judged for, e.g. 6.1.0-28-amd64 (default: "
        "this machine's, uname -r; with --offline or another --arch, every kernel: the "
        "worst counts)",
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


def _output_options(parser: argparse.ArgumentParser) -> None:
    """--format, --output, --FORMAT-output and --cklb-template (check and verify)."""
    named = [f"{fmt} ({what})" if what else fmt for fmt, what in FORMATS.items()]
    parser.add_argument(
        "--format",
        choices=tuple(FORMATS),
        default="text",
        help=f"{', '.join(named[:-1])} or {named[-1]}; checklists hold the DISA STIG profiles only",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write the report to FILE (atomically: whole or not at all) instead of stdout "
        "(- is stdout); never where audit rules are read (a rules source, /etc/audit/rules.d, "
        "audit.rules, the NixOS rules file)",
    )
    for fmt in FORMATS:
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


def wants_json(argv: Sequence[str]) -> bool:
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
