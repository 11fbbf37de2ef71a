"""The `kmod-audit` command line (DESIGN section 3; exit codes 0/1/2/3)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from typing import TextIO

from . import __version__, netlink
from ._log import logger, nested
from .check import Options, judge_source
from .errors import (
    EXIT_NONCOMPLIANT,
    EXIT_OK,
    EXIT_USAGE,
    ConfigurationError,
    ParseError,
    TransportError,
    VerifierError,
)
from .generate import DEFAULT_KEY, generate_lines, validate_key
from .loader import RuleSet
from .profiles import PROFILES, Profile, select_profiles
from .report import Finding, Report, SourceReport, render_json, render_text
from .rules import UID_UNSET, Command, RulesSource, parse_rules
from .syscalls import MACHINES, Machine, host_machine, machine_by_name
from .system import (
    assemble_rules_d,
    auditctl_list,
    auditctl_status,
    default_kmod_path,
    default_uid_min,
    discover_on_disk,
    read_rules_text,
)

__all__ = ["main"]

_PROFILE_HELP = "profile id: " + ", ".join([*PROFILES, "all"]) + " (repeatable; default nixos-stig)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    check.add_argument("--format", choices=("text", "json"), default="text")

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
    verify.add_argument("--module", default="dummy", metavar="NAME", help="probe module (dummy)")
    verify.add_argument("--key", metavar="KEY", help="key the records must carry")
    verify.add_argument("--uid-min", metavar="N", help="first uid of real users (default: UID_MIN)")
    verify.add_argument("--kmod-path", metavar="PATH", help="the kmod binary on the target")
    verify.add_argument(
        "--probe-command",
        metavar="CMD",
        help="command that runs kmod-audit on the target (default: kmod-audit; locally this "
        "Python)",
    )
    verify.add_argument(
        "--timeout", type=float, default=300.0, metavar="S", help="seconds for the probe (300)"
    )
    verify.add_argument("--format", choices=("text", "json"), default="text")

    probe = sub.add_parser(
        "probe",
        help="(on the target) make the stimuli and print them with the audit records",
        description="Used by verify: runs on the machine under test, as root.",
    )
    probe.add_argument("--module", default="dummy", metavar="NAME")
    probe.add_argument("--auid", metavar="N", help="login uid of the test user (default: uid-min)")
    probe.add_argument("--uid-min", metavar="N", help="first uid of real users (default: UID_MIN)")
    probe.add_argument("--kmod-path", metavar="PATH", help="real path of the kmod binary")
    probe.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        metavar="S",
        help="seconds to wait for the records (15)",
    )
    return parser


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
    parser.add_argument("--key", metavar="KEY", help="key the records must carry")
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


def _uid_min(text: str | None) -> int:
    if text is None:
        return default_uid_min()
    try:
        value = int(text, 10)
    except ValueError:
        msg = f"--uid-min {text}: not a number; pass the first uid of real users, e.g. 1000"
        raise ConfigurationError(msg) from None
    if not 0 <= value < UID_UNSET:
        msg = f"--uid-min {text}: must be between 0 and 4294967294"
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
    return Options(
        machine=machine,
        profiles=profiles,
        uid_min=_uid_min(args.uid_min),
        key=pinned_key,
        kmod_path=args.kmod_path or default_kmod_path(),
        strict=getattr(args, "strict", False),
        live=live,
    )


def _load_file(path: str, options: Options) -> tuple[RuleSet, SourceReport]:
    if path != "-" and os.path.isdir(path):
        text, origins = assemble_rules_d(path)
        source = parse_rules(
            text,
            path=path,
            machine=options.machine,
            live=options.live,
            origins=origins,
            syntax="rules",
        )
        label = f"rules directory {path} (as augenrules assembles it)"
    else:
        text = read_rules_text(path)
        source = parse_rules(
            text,
            path=path if path != "-" else "<stdin>",
            machine=options.machine,
            live=options.live,
        )
        kind = "captured auditctl -l output" if source.syntax == "listing" else "rules file"
        label = f"{kind} {path if path != '-' else '<stdin>'}"
    with nested(f"judging {label}"):
        return judge_source(source, options, label=label)


def _load_running(options: Options) -> tuple[RuleSet, SourceReport]:
    """The kernel's rules and enabled flag.

    Read over the audit netlink socket (the request `auditctl -l` makes, but exact: the
    listing's text prints path= and dir= watches alike and foreign arches as b64/b32);
    `auditctl -l` and `auditctl -s` are the fallback when netlink is not usable.
    """
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
    live = [r.signature() for r in running.rules]
    disk = [r.signature() for r in on_disk.rules]
    missing = [r for r in on_disk.rules if r.signature() not in live]
    extra = [r for r in running.rules if r.signature() not in disk]
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
        for rule in missing
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
        for rule in extra
    )
    if not missing and not extra and live != disk:
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
        on_disk = discover_on_disk()
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
            source = parse_rules(
                on_disk.text,
                path=on_disk.path,
                machine=options.machine,
                live=options.live,
                origins=on_disk.origins,
                syntax="rules",
            )
            files.append(judge_source(source, options, label=on_disk.label))
    reports.extend(report for _, report in files)
    if running is not None:
        for ruleset, report in files:
            drift.extend(_drift(running, ruleset, report.label))
    result = Report(sources=tuple(reports), drift=tuple(drift), options=options.as_pairs())
    out.write(render_json(result) + "\n" if args.format == "json" else render_text(result))
    return EXIT_OK if result.compliant else EXIT_NONCOMPLIANT


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
    options = VerifyOptions(
        profiles=profiles,
        key=args.key,
        uid_min=_uid_min(args.uid_min),
        module=args.module,
        probe_command=tuple(shlex.split(args.probe_command)) if args.probe_command else (),
        kmod_path=args.kmod_path,
        timeout=args.timeout,
    )
    with target_from_spec(args.target) as target, nested(f"verifying {target.name}"):
        report = run_verify(target, options, local=isinstance(target, LocalHost))
    out.write(
        render_verify_json(report) + "\n" if args.format == "json" else render_verify_text(report)
    )
    return report.exit_code()


def _probe(args: argparse.Namespace, out: TextIO) -> int:
    from .probe import run_probe  # noqa: PLC0415 - only for probe
    from .verify import PROBE_PREFIX  # noqa: PLC0415

    uid_min = _uid_min(args.uid_min)
    auid = _uid_min(args.auid) if args.auid is not None else uid_min
    result = run_probe(
        module=args.module,
        auid=auid,
        uid_min=uid_min,
        program=args.kmod_path or default_kmod_path(),
        timeout=args.timeout,
    )
    out.write(PROBE_PREFIX + json.dumps(result.to_json()) + "\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the CLI; return the exit code."""
    stream = out if out is not None else sys.stdout
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.verbose:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose > 1 else logging.INFO,
            format="kmod-audit: %(message)s",
        )
    try:
        if args.command == "check":
            return _check(args, stream)
        if args.command == "verify":
            return _verify(args, stream)
        if args.command == "probe":
            return _probe(args, stream)
        return _generate(args, stream)
    except ParseError as exc:
        sys.stderr.write(f"kmod-audit: {exc}\n")
        return exc.exit_code
    except VerifierError as exc:
        sys.stderr.write(f"kmod-audit: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("kmod-audit: interrupted\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a traceback
        logger.debug("internal error", exc_info=True)
        sys.stderr.write(
            f"kmod-audit: internal error ({type(exc).__name__}: {exc}); this is a bug in "
            "kmod-audit, please report it with the input (run with -vv for details)\n"
        )
        return EXIT_USAGE
