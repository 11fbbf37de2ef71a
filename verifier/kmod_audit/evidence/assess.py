"""The one mapping from a report to checklist entries: statuses, findings and comments."""

from __future__ import annotations

import datetime as dt
import platform
import re
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from kmod_audit._hostinfo import host_facts
from kmod_audit._version import __version__
from kmod_audit.profiles import Profile, Requirement
from kmod_audit.report import relevant

if TYPE_CHECKING:
    from kmod_audit.report import Evidence, Report, RequirementResult, VerifyReport

ChecklistStatus = Literal["not_a_finding", "open", "not_reviewed", "not_applicable"]

TOOL: Final = f"kmod-audit {__version__}"
# Namespace of the stable UUIDs of STIGs and rules (uuid5): the same rule has the same
# uuid in every checklist kmod-audit writes.
_NAMESPACE: Final = uuid.UUID("5d0b2a55-7f3c-4e51-9a0e-6b6d6f642d61")
_CCI: Final = re.compile(r"CCI-\d{6}")
SRG: Final = re.compile(r"SRG-OS-\d{6}-GPOS-\d{5}")
_AUDIT_ID: Final = re.compile(r"msg=audit\((\d+)\.(\d+):(\d+)\)")
# STIG Manager cuts finding details and comments at 32767 characters.
_MAX_TEXT: Final = 32767
CKL_STATUS: Final = {
    "not_a_finding": "NotAFinding",
    "open": "Open",
    "not_reviewed": "Not_Reviewed",
    "not_applicable": "Not_Applicable",
}
IMPACT: Final = {"low": 0.3, "medium": 0.5, "high": 0.7}
# Who made a stimulus, in an assessor's words (probe.Actor names).
_ACTORS: Final = {
    "root": "logged-in user as root",
    "user": "logged-in user",
    "unset": "no login uid",
    "below": "login uid below uid-min",
}


@attrs.frozen(kw_only=True)
class ChecklistEntry:
    """The result of one requirement, as a checklist rule shows it.

    Attributes:
        profile: The profile.
        requirement: The requirement.
        status: The checklist status.
        comment: One paragraph: the verdict and its reason.
        details: The finding details (the evidence, several lines).
        checks: Per target: (label, HDF status `passed`/`failed`/`skipped`, message).
    """

    profile: Profile
    requirement: Requirement
    status: ChecklistStatus
    comment: str
    details: str
    checks: tuple[tuple[str, str, str], ...]


@attrs.frozen(kw_only=True)
class Assessment:
    """A `check` or `verify` run, ready for the evidence writers.

    Attributes:
        command: `check` or `verify`.
        time: When it ran, ISO 8601 in UTC.
        host: The target's own facts: hostname, fqdn, ips, macs.
        target: What was judged (sources, or the verify target).
        machine: The machine (x86_64, aarch64).
        kernel: The kernel release the judgement is about.
        outcomes: Per requirement of every selected profile.
        profiles: The selected profiles.
        verdict: The run's verdict and exit code, in words.
    """

    command: Literal["check", "verify"]
    time: str
    host: dict[str, Any]
    target: str
    machine: str
    kernel: str
    outcomes: tuple[ChecklistEntry, ...]
    profiles: tuple[Profile, ...]
    verdict: str

    def hostname(self) -> str:
        """The target's host name (never empty: STIG Manager needs one)."""
        return str(self.host.get("hostname") or "unknown-host")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def references(req: Requirement) -> dict[str, str]:
    """The requirement's references (CCI, SRG, STIG ids) as a mapping."""
    return dict(req.references)


def ccis(req: Requirement) -> list[str]:
    """The CCI ids of the requirement."""
    return _CCI.findall(references(req).get("CCI", ""))


def release(profile: Profile) -> str:
    """The benchmark release line of a profile, as checklists show it."""
    bench = profile.benchmark
    if bench is None:
        return profile.title
    version = f"V{bench.version}R{bench.release}"
    return f"{bench.title}, Version {bench.version} Release {bench.release} ({version})"


def _what(req: Requirement) -> str:
    parts = []
    if req.syscalls:
        parts.append(
            f"every use of {', '.join(req.syscalls)} on the {' and '.join(req.abis)} "
            "system call interface(s)"
        )
    if req.tools:
        parts.append(f"every execution of {', '.join(req.tools)}")
    return " and ".join(parts)


def check_text(profile: Profile, req: Requirement) -> str:
    """kmod-audit's own check text for `req` (DISA's is in the STIG release named)."""
    refs = references(req)
    rule = refs.get("Rule ID", req.id)
    return (
        f"This requirement ({rule}) is from the {release(profile)}; its check procedure "
        "is in that release. kmod-audit evaluates it by what the kernel records: "
        f"{_what(req)} by a user with a login uid at or above UID_MIN must produce a "
        "SYSCALL audit record with a non-empty key (or the key pinned with --key). "
        "`kmod-audit check` judges the loaded rules the way the kernel applies them (the "
        "first matching exit rule decides; never-rules, success and auid filters count); "
        "`kmod-audit verify` makes the calls as a logged-in user, loads and unloads a real "
        "module, and reads the records back. The finding details show the evidence."
    )


def fix_text(profile: Profile, req: Requirement) -> str:
    """kmod-audit's own fix text for `req`."""
    return (
        f"Load audit rules that record {_what(req)} for users with a login uid, with a "
        f"key. `kmod-audit generate --profile {profile.id}` prints a minimal set for this "
        "machine; on NixOS, enable security.kernelModuleAudit. Reload the rules (NixOS: "
        "nixos-rebuild switch; elsewhere: augenrules --load) and run `kmod-audit verify`. "
        f"DISA's fix text is in the {release(profile)}."
    )


def _cut(text: str) -> str:
    if len(text) <= _MAX_TEXT:
        return text
    note = "\n[... cut to the 32767 characters STIG Manager keeps; see --format json]"
    return text[: _MAX_TEXT - len(note)] + note


def _host_line(host: dict[str, Any]) -> str:
    parts = [f"host {host.get('hostname') or '?'}"]
    if host.get("fqdn"):
        parts.append(f"FQDN {host['fqdn']}")
    if host.get("ips"):
        parts.append("IPs " + ", ".join(host["ips"]))
    if host.get("macs"):
        parts.append("MACs " + ", ".join(host["macs"]))
    return "; ".join(parts)


# --------------------------------------------------------------------------------------
# check


def _check_status(result: RequirementResult, errors: Sequence[str]) -> ChecklistStatus:
    if not result.applicable:
        return "not_applicable"
    if result.status == "fail" or (errors and result.status == "pass"):
        return "open"
    if result.status == "undecided":
        return "not_reviewed"
    return "not_a_finding"


def assess_check(report: Report, *, now: str | None = None) -> Assessment:
    """The assessment of a `check` run (every source; a requirement fails if any fails)."""
    options = dict(report.options)
    time = now or _now()
    host = host_facts()
    machine = str(options.get("arch", platform.machine()))
    live = bool(options.get("live", True))
    labels = [s.label for s in report.sources]
    errors = [
        f"{f.location()}: {f.message}"
        for s in report.sources
        for f in s.findings
        if f.severity == "error"
    ]
    key = options.get("key") or "any non-empty key"
    header = [
        f"{TOOL} check at {time}: {_host_line(host)}; kernel {platform.release()}.",
        f"Judged as the {machine} kernel loads the rules (uid-min {options.get('uid_min')}, "
        f"key {key}, kmod {options.get('kmod_path')}"
        + (", strict" if options.get("strict") else "")
        + ("" if live else "; offline: this machine's files were not consulted")
        + ").",
    ]
    selected = _profiles_of(options)
    merged = {p.id: p for p in report.merged_profiles()}
    outcomes: list[ChecklistEntry] = []
    for profile in selected:
        result_profile = merged[profile.id]
        for req, result in zip(profile.requirements, result_profile.requirements, strict=True):
            status = _check_status(result, errors)
            lines = [*header, ""]
            for source in report.sources:
                per = next(p for p in source.profiles if p.id == profile.id)
                res = next(r for r in per.requirements if r.id == req.id)
                lines.append(
                    f"Source: {source.label} ({source.rule_count} rules loaded): {res.status}"
                )
                for check in res.checks:
                    lines.append(f"  [{check.status}] {check.reason}")
                    # The covering rules, each as file:line: text.
                    lines.extend(f"      {rule}" for rule in check.rules)
                lines.extend(
                    f"  finding ({f.severity}): {f.location()}: {f.message}"
                    + (f" | line: {f.text.strip()}" if f.text else "")
                    for f in source.findings
                )
            if report.drift:
                lines.append("Drift between the running and the on-disk rules:")
                lines.extend(f"  {f.severity}: {f.message}" for f in report.drift)
            if result.fix and status == "open":
                lines.append("Rules that would satisfy it (kmod-audit generate):")
                lines.extend(f"  {line}" for line in result.fix)
            reasons = list(result.reasons)
            if status == "open" and result.status == "pass":
                reasons = [f"the rules cover it, but the source has errors: {e}" for e in errors]
            comment = _comment(status, reasons, "check")
            # Not reviewed as a whole: a passing part must not make Heimdall say Passed.
            checks = tuple(
                (
                    c.target,
                    "skipped" if status == "not_reviewed" else _hdf_status(c.status),
                    c.reason,
                )
                for c in result.checks
            )
            if status == "open" and result.status == "pass":
                checks = (*checks, ("source", "failed", "; ".join(errors)))
            outcomes.append(
                ChecklistEntry(
                    profile=profile,
                    requirement=req,
                    status=status,
                    comment=comment,
                    details=_cut("\n".join(lines)),
                    checks=checks,
                )
            )
    return Assessment(
        command="check",
        time=time,
        host=host,
        target="; ".join(labels),
        machine=machine,
        kernel=platform.release(),
        outcomes=tuple(outcomes),
        profiles=tuple(selected),
        verdict=f"{report.verdict()} (exit {report.exit_code()})",
    )


def _profiles_of(options: dict[str, Any]) -> list[Profile]:
    from kmod_audit.profiles import select_profiles  # noqa: PLC0415 - the ids come from the report

    return list(select_profiles(list(options.get("profiles") or [])))


def _hdf_status(status: str) -> str:
    return {"pass": "passed", "fail": "failed", "n/a": "skipped"}.get(status, "skipped")


def _leads(command: str) -> dict[ChecklistStatus, str]:
    return {
        "not_a_finding": f"Not a finding: proven by kmod-audit {command}.",
        "open": f"Open: kmod-audit {command} found that it is not met.",
        "not_reviewed": f"Not reviewed: kmod-audit {command} could not decide.",
        "not_applicable": "Not applicable: nothing of it exists on this machine.",
    }


#: How every comment kmod-audit writes begins (a merge replaces these, never an assessor's).
OUR_COMMENTS: Final = tuple(
    lead for command in ("check", "verify") for lead in _leads(command).values()
)


def _comment(status: ChecklistStatus, reasons: Sequence[str], command: str) -> str:
    lead = _leads(command)[status]
    shown = list(reasons[:10])
    if len(reasons) > 10:
        shown.append(f"... and {len(reasons) - 10} more (see the finding details)")
    return _cut(" ".join([lead, *(f"{r}." if not r.endswith(".") else r for r in shown)]))


# --------------------------------------------------------------------------------------
# verify


def _record_fields(evidence: Evidence) -> str:
    match = _AUDIT_ID.search(evidence.record or "")
    parts = []
    if match:
        seconds, millis, serial = match.groups()
        try:
            when = dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        except (OverflowError, ValueError, OSError):
            # A time no calendar holds (a corrupt or forged log line): shown as it was.
            parts.append(f"serial={serial} time={seconds}.{millis}")
        else:
            parts.append(f"serial={serial} time={when}.{millis}Z")
    keys = ",".join(evidence.key) or "(null)"
    parts.append(f"key={keys} auid={evidence.auid} success={evidence.success} exit={evidence.exit}")
    text = "SYSCALL " + " ".join(parts)
    if evidence.module:
        text += f"; KERN_MODULE name={evidence.module}"
    return text


def _stimulus_line(evidence: Evidence) -> str:
    s = evidence.stimulus
    auid = "unset" if s.auid == 0xFFFFFFFF else str(s.auid)
    what = f"{s.abi} {s.syscall}" + (f" of {s.program}" if s.program else "")
    if s.module:
        what += f" (real load/unload of module {s.module})"
    who = f"{_ACTORS.get(s.actor, s.actor)}: auid={auid} uid={s.uid} pid={s.pid}, result {s.result}"
    if evidence.verdict == "not-exercised":
        return f"{what} [{who}]: not exercised ({s.error})"
    if evidence.record is None:
        return f"{what} [{who}]: no SYSCALL record ({evidence.verdict})"
    return f"{what} [{who}]: {evidence.verdict}: {_record_fields(evidence)}"


def assess_verify(report: VerifyReport, *, now: str | None = None) -> Assessment:
    """The assessment of a `verify` run."""
    from kmod_audit.syscalls import machine_by_name  # noqa: PLC0415

    probe = report.probe
    machine = machine_by_name(probe.machine)
    time = now or _now()
    host = dict(probe.host) or {"hostname": report.target}
    exit_code = report.exit_code()
    options = dict(report.options)
    key = options.get("key") or "any non-empty key"
    header = [
        (
            f"{TOOL} verify at {time}: target {report.target} ({_host_line(host)}); "
            f"{probe.machine}, kernel {probe.kernel}."
        ),
        (
            f"Records read from {probe.source} (only those written after the stimuli "
            f"began); key {key}, uid-min {options.get('uid_min')}, probe module "
            f"{options.get('module')}; verdict {report.verdict()} (exit {exit_code})."
        ),
    ]
    header.extend(f"Incomplete evidence: {p}" for p in report.incomplete)
    header.extend(f"Problem: {p}" for p in report.problems)
    # What was not exercised (the real load with --no-load, or on a kernel without module
    # support): the evidence must not read as if it had been.
    header.extend(f"Note: {n}" for n in report.notes)
    outcomes: list[ChecklistEntry] = []
    for profile in (p for p in _verify_profiles(report)):
        result_profile = next(p for p in report.profiles if p.id == profile.id)
        for req, result in zip(profile.requirements, result_profile.requirements, strict=True):
            if not result.applicable:
                status: ChecklistStatus = "not_applicable"
            elif result.status == "pass":
                status = "not_a_finding"
            elif exit_code == 3 or _unproven(result, report):
                status = "not_reviewed"
            else:
                status = "open"
            lines = [*header, ""]
            for call in req.calls(machine) if machine is not None else []:
                if call.number is None:
                    continue
                label = call.label()
                check = next((c for c in result.checks if c.target == label), None)
                lines.append(f"{label}: {check.status if check else '?'}")
                chosen = [e for e in report.evidence if relevant(e, call)]
                lines.extend(f"  {_stimulus_line(e)}" for e in chosen if not e.stimulus.control)
                controls = [e for e in chosen if e.stimulus.control]
                if controls:
                    keyed = [e for e in controls if e.verdict == "recorded"]
                    lines.append(
                        f"  negative controls (login uid unset or below uid-min): "
                        f"{len(controls)}, {len(keyed)} recorded with the key"
                    )
                    lines.extend(f"    {_stimulus_line(e)}" for e in keyed)
            if not result.checks or result.checks[0].target == "every syscall":
                lines.extend(f"  {c.reason}" for c in result.checks)
            reasons = (
                list(result.reasons)
                if status != "not_a_finding"
                else [c.reason for c in result.checks]
            )
            outcomes.append(
                ChecklistEntry(
                    profile=profile,
                    requirement=req,
                    status=status,
                    comment=_comment(status, reasons, "verify"),
                    details=_cut("\n".join(lines)),
                    checks=tuple(
                        (
                            c.target,
                            "skipped" if status == "not_reviewed" else _hdf_status(c.status),
                            c.reason,
                        )
                        for c in result.checks
                    ),
                )
            )
    return Assessment(
        command="verify",
        time=time,
        host=host,
        target=report.target,
        machine=probe.machine,
        kernel=probe.kernel,
        outcomes=tuple(outcomes),
        profiles=tuple(_verify_profiles(report)),
        verdict=f"{report.verdict()} (exit {exit_code})",
    )


def _unproven(result: RequirementResult, report: VerifyReport) -> bool:
    """A failure that rests on nothing read (the run exits 1 for another requirement).

    No check of it is refuted by a record that was read, and it was not exercised, or
    its records are missing from evidence known to be incomplete (where a missing record
    proves nothing): as with exit 3, kmod-audit could not decide it.
    """
    failed = [c for c in result.checks if c.status == "fail"]
    if any(c.target in report.refuted for c in failed):
        return False
    return bool(report.incomplete) or all("not exercised" in c.reason for c in failed)


def _verify_profiles(report: VerifyReport) -> list[Profile]:
    from kmod_audit.profiles import PROFILES  # noqa: PLC0415

    return [PROFILES[p.id] for p in report.profiles]


# --------------------------------------------------------------------------------------
# CKLB (STIG Viewer 3)


def stig_profiles(profiles: Sequence[Profile]) -> list[Profile]:
    """The profiles that are DISA STIGs (those with a checklist)."""
    return [p for p in profiles if p.benchmark is not None]


def stable_uuid(*parts: str) -> str:
    """A UUID that is the same for the same parts in every run (uuid5)."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def _target_comment(assessment: Assessment) -> str:
    left_out = [p.id for p in assessment.profiles if p.benchmark is None]
    text = (
        f"Assessed by {TOOL} {assessment.command} at {assessment.time}: "
        f"{assessment.target}; {assessment.machine}, kernel {assessment.kernel}; "
        f"verdict {assessment.verdict}."
    )
    if left_out:
        text += (
            f" Profiles {', '.join(left_out)} are no DISA STIGs and have no checklist: "
            "see kmod-audit's --format hdf or json output."
        )
    return text


def target_data(assessment: Assessment) -> dict[str, Any]:
    """The checklist's target (host) section."""
    host = assessment.host
    return {
        "target_type": "Computing",
        "host_name": assessment.hostname(),
        "ip_address": ", ".join(host.get("ips") or []),
        "mac_address": ", ".join(host.get("macs") or []),
        "fqdn": str(host.get("fqdn") or ""),
        "comments": _target_comment(assessment),
        "role": "None",
        "is_web_database": False,
        "technology_area": "",
        "web_db_site": "",
        "web_db_instance": "",
        "classification": None,
    }
