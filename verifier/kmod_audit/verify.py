"""`kmod-audit verify`: run the probe on a target and judge the records it produced.

Each stimulus is matched to its SYSCALL record by pid, syscall number and arch. A
requirement passes when every exercised stimulus of a logged-in user (login uid at or
above uid-min; uid 0 or the user's own) produced a record with an acceptable key, and
every required syscall x ABI was exercised at least once. What could not be exercised is
said as such and never counts as evidence.

One verdict with `check` for one rule set: a negative control (login uid unset, or below
uid-min) recorded with the key means the rules record more than required. That is a note;
it fails a requirement only with `--strict` and only where the standard's check text
demands the login-uid filters (`Requirement.strict_filters`), as `check --strict` does.

A missing record counts against the rules only when the record source is complete. When
the marker written after the stimuli never arrived, the kernel's `lost` counter grew, the
kernel log shows dropped lines, or the machine is not modelled, the evidence is
incomplete: the verdict is "could not exercise" (exit 3) naming the cause, unless a record
that was read refutes a requirement (a record without the key or with another key).
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
import time
from collections.abc import Callable
from typing import Final, Literal

import attrs

from . import records
from ._terminal import escape_line
from ._verbose import nested
from .errors import CommandFailed, TransportError
from .probe_result import LEFT_LOADED, ProbeResult
from .profiles import Profile, Requirement
from .report import (
    CheckResult,
    Evidence,
    ProfileResult,
    RecordVerdict,
    RequirementResult,
    VerifyReport,
    relevant,
)
from .syscalls import MACHINES, machine_by_name
from .transports import Host, LocalHost, target_from_spec

__all__ = [
    "PROBE_PREFIX",
    "VerifyOptions",
    "judge_probe",
    "render_verify_json",
    "render_verify_text",
    "run_verify",
    "verify_target",
]

PROBE_PREFIX: Final = "KMOD_AUDIT_PROBE "
# The probe's problem when audit is off: the source is complete, the kernel records nothing.
_AUDIT_DISABLED: Final = "audit is disabled"


@attrs.frozen(kw_only=True)
class VerifyOptions:
    """What verify checks.

    Attributes:
        profiles: The profiles.
        key: The key the records must carry; None accepts any non-empty key.
        uid_min: First uid of real users (for the reports).
        module: The probe module.
        probe_command: argv that runs `kmod-audit probe` on the target.
        kmod_path: The kmod binary on the target (None: the probe resolves it there).
        timeout: Seconds for the whole probe run.
        strict: A negative control recorded with the key fails the requirements whose
            standard demands the login-uid filters (as `check --strict`); without it, it
            is a note.
        no_load: Never load a module (`--no-load`): the probe makes only the failing
            attempts and the executions; the real load is not exercised, by choice (a
            note, neither a failure nor incomplete evidence).
    """

    profiles: tuple[Profile, ...]
    key: str | None = None
    uid_min: int = 1000
    module: str = "dummy"
    probe_command: tuple[str, ...] = ()
    kmod_path: str | None = None
    timeout: float = 300.0
    strict: bool = False
    no_load: bool = False


def _acceptable(keys: tuple[str, ...], key: str | None) -> RecordVerdict:
    if not keys:
        return "unkeyed"
    if key is not None and key not in keys:
        return "wrong-key"
    return "recorded"


def _evidence(probe: ProbeResult, key: str | None) -> list[Evidence]:
    events = records.group_events(records.parse_records(probe.records))
    by_pid: dict[str, list[records.AuditEvent]] = {}
    for event in events:
        syscall = event.syscall
        if syscall is not None and syscall.get("pid") is not None:
            by_pid.setdefault(str(syscall.get("pid")), []).append(event)
    out: list[Evidence] = []
    for stimulus in probe.stimuli:
        if not stimulus.exercised:
            out.append(Evidence(stimulus=stimulus, verdict="not-exercised"))
            continue
        match = None
        for event in by_pid.get(str(stimulus.pid), []):
            record = event.syscall
            if record is None:
                continue
            if record.number("syscall") in stimulus.numbers and (
                (record.get("arch") or "").lower() == stimulus.arch
            ):
                match = event
                break
        if match is None or match.syscall is None:
            out.append(Evidence(stimulus=stimulus, verdict="missing"))
            continue
        record = match.syscall
        keys = record.keys
        module = next((r.get("name") for r in match.records_of("KERN_MODULE")), None)
        out.append(
            Evidence(
                stimulus=stimulus,
                verdict=_acceptable(keys, key),
                record=record.raw,
                key=keys,
                success=record.get("success"),
                exit=record.get("exit"),
                auid=record.get("auid"),
                module=module,
                number=record.number("syscall"),
            )
        )
    return out


def _requirement(
    req: Requirement,
    evidence: list[Evidence],
    probe: ProbeResult,
    used: set[str],
    *,
    strict: bool,
    refuted: list[str],
    incomplete: bool = False,
) -> RequirementResult:
    """Judge one requirement; append the labels of refuted checks to `refuted`.

    `incomplete`: the records read may not be all (`VerifyReport.incomplete`). A negative
    control without a keyed record then proves no filter, so `--strict` cannot pass.
    """
    checks: list[CheckResult] = []
    rules: list[str] = []
    # As `check --strict`: the login-uid filters are demanded only where the standard's
    # check text demands them.
    controls_fail = strict and req.strict_filters
    machine = machine_by_name(probe.machine)
    for call in req.calls(machine) if machine is not None else []:
        if call.number is None:
            continue
        abi, label = call.abi.bits, call.label()
        chosen = [e for e in evidence if relevant(e, call)]
        used.update(e.stimulus.id for e in chosen)
        in_scope = [e for e in chosen if not e.stimulus.control]
        controls = [e for e in chosen if e.stimulus.control]
        exercised = [e for e in in_scope if e.verdict != "not-exercised"]
        bad = [e for e in exercised if e.verdict != "recorded"]
        leaked = [e for e in controls if e.verdict == "recorded"]
        problems: list[str] = []
        absent = [s for s in probe.skipped if s.not_applicable and abi in s.what]
        if not exercised and not chosen and absent:
            # The machine cannot make such a call at all (it says why): never a pass.
            why = "; ".join(f"{s.what}: {s.why}" for s in absent)
            checks.append(CheckResult(target=label, status="n/a", reason=f"{label}: {why}"))
            continue
        if not exercised:
            why = "; ".join(
                {e.stimulus.error or "" for e in in_scope if e.stimulus.error}
                | {f"{s.what}: {s.why}" for s in probe.skipped if abi in s.what}
            )
            problems.append(f"{label}: not exercised ({why or 'no stimulus'})")
        # A record that was not read counts against the rules only when the records read
        # are all that the kernel emitted (DESIGN.md): else the check cannot be decided.
        doubts = [
            f"{label}: {e.describe()} (the evidence is incomplete: it may be among the "
            "records not read)"
            for e in bad
            if incomplete and e.verdict == "missing"
        ]
        # A failed execution ends before the file is opened on some kernels: one the
        # probe could not make leaves that case unproven, however the others went.
        doubts.extend(
            f"{label}: {e.describe()}: so an execution that fails before the file is "
            "opened is not proven recorded"
            for e in in_scope
            if call.execution and e.stimulus.expect == "failure" and e.verdict == "not-exercised"
            if exercised
        )
        problems.extend(
            f"{label}: {e.describe()}" for e in bad if not (incomplete and e.verdict == "missing")
        )
        if controls_fail:
            problems.extend(
                f"{label}: --strict: negative control recorded with the key, so the rules "
                f"lack the login-uid filters auid>=uid-min and auid!=unset: {e.describe()}"
                for e in leaked
            )
            unseen = [e for e in controls if e.verdict == "missing"]
            if incomplete and unseen and not leaked:
                doubts.append(
                    f"{label}: --strict: {len(unseen)} negative controls produced no record, "
                    "but the evidence is incomplete (their records may be missing), so the "
                    "login-uid filters auid>=uid-min and auid!=unset are not proven"
                )
        if any(e.verdict in {"unkeyed", "wrong-key"} for e in bad) or (controls_fail and leaked):
            refuted.append(label)
        rules.extend(e.describe() for e in exercised if e.verdict == "recorded")
        more = (
            f"{len(leaked)} negative controls (login uid unset or below uid-min) recorded "
            "with the key: the rules record more than required ("
            + (
                "a failure only with --strict)"
                if req.strict_filters
                else "the standard demands no login-uid filter)"
            )
            if leaked and not controls_fail
            else ""
        )
        if problems or doubts:
            found = [*problems, *doubts]
            reason = "; ".join([*found, more] if more else found)
            status: Literal["fail", "undecided"] = "fail" if problems else "undecided"
            checks.append(CheckResult(target=label, status=status, reason=reason))
        else:
            passed = [e.describe() for e in exercised]
            quiet = [e for e in controls if e.verdict in {"missing", "unkeyed", "wrong-key"}]
            reason = f"{label}: {len(exercised)} stimuli recorded with the key"
            if quiet:
                reason += f"; {len(quiet)} negative controls produced no keyed record"
            if more:
                reason += f"; {more}"
            checks.append(
                CheckResult(target=label, status="pass", reason=reason, rules=tuple(passed))
            )
    failed = [c for c in checks if c.status == "fail"]
    undecided = [c for c in checks if c.status == "undecided"]
    return RequirementResult(
        id=req.id,
        title=req.title,
        status="fail" if failed else "undecided" if undecided else "pass",
        reasons=tuple(c.reason for c in (failed or undecided or checks)),
        rules=tuple(dict.fromkeys(rules)),
        checks=tuple(checks),
        references=req.references,
        applicable=any(c.status != "n/a" for c in checks),
    )


def _unmodelled(req: Requirement, why: str) -> RequirementResult:
    check = CheckResult(target="every syscall", status="fail", reason=f"not exercised: {why}")
    return RequirementResult(
        id=req.id,
        title=req.title,
        status="fail",
        reasons=(check.reason,),
        rules=(),
        checks=(check,),
        references=req.references,
    )


def _incomplete(probe: ProbeResult) -> list[str]:
    """Why the records read may not be all that the kernel emitted during the probe."""
    causes = [p for p in probe.problems if not p.startswith((_AUDIT_DISABLED, LEFT_LOADED))]
    disabled = any(p.startswith(_AUDIT_DISABLED) for p in probe.problems)
    # With audit disabled the kernel drops the marker too: its absence says nothing more.
    if not probe.marker_seen and not disabled:
        hint = (
            "the kernel log drops audit lines over its rate limit: run auditd"
            if probe.source.startswith("kernel log")
            else "check that auditd is running and its log is the one read"
        )
        causes.append(
            f"the marker {probe.marker!r} written after the stimuli never reached "
            f"{probe.source}: records written before it may be missing; {hint}, and run "
            "verify again"
        )
    lost = probe.audit.get("lost")
    if probe.lost_after is not None and lost is not None and probe.lost_after > lost:
        causes.append(
            f"the kernel lost {probe.lost_after - lost} audit records during the probe "
            f"(auditctl -s: lost {lost} -> {probe.lost_after}); raise the backlog (-b), "
            "lift the rate limit (-r 0), run auditd, and run verify again"
        )
    causes.extend(
        f"{loss}: audit records were dropped from {probe.source}; run auditd (the kernel "
        "log is rate-limited) and run verify again"
        for loss in records.losses(probe.records)
    )
    return causes


def judge_probe(
    probe: ProbeResult, options: VerifyOptions, *, target: str = "local"
) -> VerifyReport:
    """Judge a probe's stimuli and records against the profiles."""
    evidence = _evidence(probe, options.key)
    used: set[str] = set()
    refuted: list[str] = []
    incomplete = _incomplete(probe)
    unmodelled = None
    if machine_by_name(probe.machine) is None:
        unmodelled = (
            f"the probe ran on a {probe.machine} machine, which kmod-audit does not model "
            f"(it knows {', '.join(MACHINES)}): no syscall can be checked there"
        )
        incomplete.append(unmodelled)
    profiles = [
        ProfileResult.of(
            profile,
            [
                _unmodelled(r, unmodelled)
                if unmodelled is not None
                else _requirement(
                    r,
                    evidence,
                    probe,
                    used,
                    strict=options.strict,
                    refuted=refuted,
                    incomplete=bool(incomplete),
                )
                for r in profile.requirements
            ],
        )
        for profile in options.profiles
    ]
    problems = [p for p in probe.problems if p.startswith((_AUDIT_DISABLED, LEFT_LOADED))]
    notes = [f"not exercised: {s.what}: {s.why}" for s in probe.skipped]
    leaked = [e for e in evidence if e.stimulus.id in used and e.stimulus.control]
    leaked = [e for e in leaked if e.verdict == "recorded"]
    if leaked and not options.strict:
        notes.append(
            f"{len(leaked)} negative controls (login uid unset or below uid-min) were recorded "
            "with the key: the rules record more than required, which `check` accepts too "
            "(--strict fails it where the standard demands auid>=uid-min and auid!=unset)"
        )
    if probe.modules_before != probe.modules_after and not probe.modules_left:  # else named
        problems.append(
            f"{options.module} was {'loaded' if probe.modules_before else 'not loaded'} before "
            "the probe and is not any more as found"
        )
    return VerifyReport(
        target=target,
        probe=probe,
        evidence=tuple(evidence),
        profiles=tuple(profiles),
        used=frozenset(used),
        notes=tuple(notes),
        problems=tuple(problems),
        incomplete=tuple(incomplete),
        refuted=tuple(dict.fromkeys(refuted)),
        options=(
            ("profiles", [p.id for p in options.profiles]),
            ("key", options.key),
            ("uid_min", options.uid_min),
            ("module", options.module),
            ("strict", options.strict),
            ("no_load", options.no_load),
        ),
    )


def probe_argv(options: VerifyOptions, *, local: bool) -> list[str]:
    """The command that runs the probe on the target."""
    base = list(options.probe_command) or (
        [sys.executable, "-m", "kmod_audit"] if local else ["kmod-audit"]
    )
    return [*base, *probe_args(options)]


def probe_args(options: VerifyOptions) -> list[str]:
    """The `probe` subcommand and its options, as the target's kmod-audit takes them."""
    args = ["probe", "--module", options.module, "--uid-min", str(options.uid_min)]
    if options.kmod_path is not None:
        args += ["--kmod-path", options.kmod_path]
    if options.no_load:
        # A target whose kmod-audit predates --no-load refuses the option (the probe then
        # fails, exit 3): it can never fall back to a probe that loads.
        args.append("--no-load")
    return args


def run_verify(
    target: Host,
    options: VerifyOptions,
    *,
    local: bool,
    local_probe: Callable[[list[str]], int] | None = None,
) -> VerifyReport:
    """Run the probe on `target` and judge what it found.

    With `local_probe` (the CLI passes its own `probe` subcommand), a local target without
    a `--probe-command` runs the probe in a fork of this process: `local_probe(probe_args)`
    in the child, a process of its own (signals, cleanup, its stimuli's login uids) without
    the start-up of a second interpreter. Otherwise the probe runs as a command.

    Raises:
        TransportError: the probe could not be run or did not answer.
    """
    argv = probe_argv(options, local=local)
    if (
        local
        and local_probe is not None
        and not options.probe_command
        and isinstance(target, LocalHost)
    ):
        status, output = target.call(
            functools.partial(local_probe, probe_args(options)),
            display=shlex.join(argv),
            timeout=options.timeout,
        )
    else:
        status, output = target.execute(argv, timeout=options.timeout)
    line = next((row for row in output.splitlines() if row.startswith(PROBE_PREFIX)), None)
    if status != 0 or line is None:
        msg = (
            f"the probe failed on {target.name}; check that kmod-audit is installed there "
            "(or pass --probe-command) and that it runs as root"
        )
        raise CommandFailed(msg, command=shlex.join(argv), status=status, output=output)
    try:
        data = json.loads(line[len(PROBE_PREFIX) :])
        probe = ProbeResult.from_json(data)
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"the probe on {target.name} printed an unreadable result ({exc})"
        raise TransportError(msg) from exc
    return judge_probe(probe, options, target=target.name)


def verify_target(
    spec: str,
    options: VerifyOptions,
    *,
    local_probe: Callable[[list[str]], int] | None = None,
) -> VerifyReport:
    """Reach the target `spec` names (`local`, `ssh://...`, `console:...`), probe it, judge.

    `options.timeout` bounds the whole run: a console's start-up and the probe share it.

    Raises:
        TransportError: the target cannot be reached, or no time was left for the probe.
    """
    deadline = time.monotonic() + options.timeout
    with target_from_spec(spec, deadline=deadline) as target, nested(f"verifying {target.name}"):
        left = deadline - time.monotonic()
        if left <= 0:
            msg = (
                f"--timeout {options.timeout:g}: no time was left for the probe after reaching "
                f"{target.name}; pass a longer --timeout"
            )
            raise TransportError(msg)
        options = attrs.evolve(options, timeout=left)
        return run_verify(
            target, options, local=isinstance(target, LocalHost), local_probe=local_probe
        )


def render_verify_json(report: VerifyReport) -> str:
    """The JSON report (same top-level shape as `check`)."""
    data = {
        "compliant": report.compliant,
        "verdict": report.verdict(),
        "profiles": [p.to_json() for p in report.profiles],
        "target": report.target,
        "machine": report.probe.machine,
        "kernel": report.probe.kernel,
        "host": report.probe.host,
        "source": report.probe.source,
        "problems": list(report.problems),
        "incomplete": list(report.incomplete),
        "refuted": list(report.refuted),
        "notes": list(report.notes),
        "evidence": [e.to_json() for e in report.evidence],
        "audit": report.probe.audit,
        "lost_after": report.probe.lost_after,
        "options": dict(report.options),
    }
    return json.dumps(data, indent=2)


def render_verify_text(report: VerifyReport) -> str:
    """The report for a terminal.

    Every line is passed through `escape_line`: keys, records, module names and errors come
    from the target, and their control characters must not act on the terminal.
    """
    probe = report.probe
    out = [
        (
            f"kmod-audit verify: {report.target} ({probe.machine}, kernel {probe.kernel}), "
            f"records from {probe.source}"
        ),
    ]
    unverified = report.exit_code() == 3
    for profile in report.profiles:
        state = "compliant" if profile.compliant else "NOT compliant"
        if unverified and not profile.compliant:
            state = "could not be verified"
        out.append(f"profile {profile.id} ({profile.title}): {state}")
        for req in profile.requirements:
            status = {"pass": "PASS", "undecided": "NOT VERIFIED"}.get(req.status, "FAIL")
            if unverified and req.status == "fail":
                status = "NOT VERIFIED"  # exit 3: no record read refutes it
            out.append(f"  {status} {req.id}: {req.title}")
            out.extend(f"       [{check.status}] {check.reason}" for check in req.checks)
    judged = [e for e in report.evidence if e.stimulus.id in report.used]
    shown = [e for e in judged if not e.stimulus.control]
    controls = [e for e in judged if e.stimulus.control]
    out.append("evidence (stimuli of logged-in users):")
    out.extend(f"  {e.describe()}" for e in shown)
    keyed = [e for e in controls if e.verdict == "recorded"]
    out.append(
        f"negative controls (login uid unset or below uid-min): {len(controls)} stimuli, "
        f"{len(keyed)} recorded with the key"
    )
    out.extend(f"  {e.describe()}" for e in keyed)
    other = len(report.evidence) - len(judged)
    if other:
        out.append(f"({other} more stimuli not required by the selected profiles: --format json)")
    if report.notes:
        out.append("notes:")
        out.extend(f"  {n}" for n in report.notes)
    if report.problems:
        out.append("problems:")
        out.extend(f"  {p}" for p in report.problems)
    if report.incomplete:
        out.append("incomplete evidence (a missing record proves nothing):")
        out.extend(f"  {p}" for p in report.incomplete)
    result = {0: "COMPLIANT", 1: "NOT COMPLIANT"}.get(report.exit_code(), "COULD NOT EXERCISE")
    out.append(f"result: {result}")
    return "".join(escape_line(line) + "\n" for line in out)
