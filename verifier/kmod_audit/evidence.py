"""Evidence an assessor takes: STIG Viewer checklists (CKLB, CKL) and Heimdall HDF.

`check` and `verify` judge requirements; this module turns a judgement into the files
assessors import: STIG Viewer 3 checklists (`.cklb`, JSON), STIG Viewer 2 checklists
(`.ckl`, XML) and MITRE's Heimdall Data Format (HDF, what `inspecjs` and Heimdall read).
STIG Manager imports the checklists with its own parsers (`reviewsFromCklb`,
`reviewsFromCkl`); the tests run those parsers on real outputs.

Checklists exist only for DISA STIGs (`nixos-stig`, `al2023-stig`): one STIG entry per
selected STIG profile, one rule per requirement. CIS and Tenable are no STIGs: a checklist
for them alone is refused (exit 2; use `--format hdf` or `json`), and alongside a STIG they
are left out of the checklist (its target comments say so). HDF holds every profile.

The check and fix text are kmod-audit's own words and name the STIG release; DISA's text
is not reproduced. Statuses: `not_a_finding` when proven, `open` with the reason when not,
`not_reviewed` when kmod-audit could not decide (`check`: the evaluator cannot decide;
`verify`: exit 3, the kernel could not be exercised or the evidence is incomplete, or a
failure that rests on no record read while another requirement makes the run exit 1), and
`not_applicable` when nothing of the requirement exists on the machine. The finding
details are the evidence: the covering rule lines with file:line (`check`), or per stimulus
the SYSCALL record's serial, key, auid, success and exit and the KERN_MODULE name of a real
load (`verify`); each states the time, kernel, host and kmod-audit version.

Files are written atomically (`_files.write_atomic`): a temporary file in the same directory,
fsync, rename, so a reader never sees a partial checklist.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import re
import stat
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from ._hostinfo import host_facts
from ._jsonspans import Node, member_spans, parse_spans
from ._version import __version__
from .errors import ConfigurationError
from .profiles import Benchmark, Profile, Requirement
from .report import relevant, verify_targets

if TYPE_CHECKING:
    from .report import Evidence, Report, RequirementResult, VerifyReport

__all__ = [
    "FORMATS",
    "Assessment",
    "Outcome",
    "assess_check",
    "assess_verify",
    "load_template",
    "preflight",
    "render",
    "render_ckl",
    "render_cklb",
    "render_hdf",
]

#: The evidence formats (beside `text` and `json`).
FORMATS: Final = ("cklb", "ckl", "hdf")

Status = Literal["not_a_finding", "open", "not_reviewed", "not_applicable"]

TOOL: Final = f"kmod-audit {__version__}"
# Namespace of the stable UUIDs of STIGs and rules (uuid5): the same rule has the same
# uuid in every checklist kmod-audit writes.
_NAMESPACE: Final = uuid.UUID("5d0b2a55-7f3c-4e51-9a0e-6b6d6f642d61")
_CCI: Final = re.compile(r"CCI-\d{6}")
_SRG: Final = re.compile(r"SRG-OS-\d{6}-GPOS-\d{5}")
_AUDIT_ID: Final = re.compile(r"msg=audit\((\d+)\.(\d+):(\d+)\)")
# STIG Manager cuts finding details and comments at 32767 characters.
_MAX_TEXT: Final = 32767
_CKL_STATUS: Final = {
    "not_a_finding": "NotAFinding",
    "open": "Open",
    "not_reviewed": "Not_Reviewed",
    "not_applicable": "Not_Applicable",
}
_IMPACT: Final = {"low": 0.3, "medium": 0.5, "high": 0.7}
# Who made a stimulus, in an assessor's words (probe.Actor names).
_ACTORS: Final = {
    "root": "logged-in user as root",
    "user": "logged-in user",
    "unset": "no login uid",
    "below": "login uid below uid-min",
}


@attrs.frozen(kw_only=True)
class Outcome:
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
    status: Status
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
    outcomes: tuple[Outcome, ...]
    profiles: tuple[Profile, ...]
    verdict: str

    def hostname(self) -> str:
        """The target's host name (never empty: STIG Manager needs one)."""
        return str(self.host.get("hostname") or "unknown-host")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _references(req: Requirement) -> dict[str, str]:
    return dict(req.references)


def _ccis(req: Requirement) -> list[str]:
    return _CCI.findall(_references(req).get("CCI", ""))


def _release(profile: Profile) -> str:
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
    refs = _references(req)
    rule = refs.get("Rule ID", req.id)
    return (
        f"This requirement ({rule}) is from the {_release(profile)}; its check procedure "
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
        f"DISA's fix text is in the {_release(profile)}."
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


def _check_status(result: RequirementResult, errors: Sequence[str]) -> Status:
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
    outcomes: list[Outcome] = []
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
                Outcome(
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
    from .profiles import select_profiles  # noqa: PLC0415 - the ids come from the report

    return list(select_profiles(list(options.get("profiles") or [])))


def _hdf_status(status: str) -> str:
    return {"pass": "passed", "fail": "failed", "n/a": "skipped"}.get(status, "skipped")


def _leads(command: str) -> dict[Status, str]:
    return {
        "not_a_finding": f"Not a finding: proven by kmod-audit {command}.",
        "open": f"Open: kmod-audit {command} found that it is not met.",
        "not_reviewed": f"Not reviewed: kmod-audit {command} could not decide.",
        "not_applicable": "Not applicable: nothing of it exists on this machine.",
    }


#: How every comment kmod-audit writes begins (a merge replaces these, never an assessor's).
_OUR_COMMENTS: Final = tuple(
    lead for command in ("check", "verify") for lead in _leads(command).values()
)


def _comment(status: Status, reasons: Sequence[str], command: str) -> str:
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
    from .syscalls import EXEC_SYSCALLS  # noqa: PLC0415

    probe = report.probe
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
    outcomes: list[Outcome] = []
    for profile in (p for p in _verify_profiles(report)):
        result_profile = next(p for p in report.profiles if p.id == profile.id)
        for req, result in zip(profile.requirements, result_profile.requirements, strict=True):
            if not result.applicable:
                status: Status = "not_applicable"
            elif result.status == "pass":
                status = "not_a_finding"
            elif exit_code == 3 or _unproven(result, report):
                status = "not_reviewed"
            else:
                status = "open"
            lines = [*header, ""]
            for abi, syscall in verify_targets(req, probe.machine):
                tools = syscall in EXEC_SYSCALLS and bool(req.tools)
                label = f"{abi} {syscall}" + (" of kmod" if tools else "")
                check = next((c for c in result.checks if c.target == label), None)
                lines.append(f"{label}: {check.status if check else '?'}")
                chosen = [e for e in report.evidence if relevant(e, abi, syscall, tools=tools)]
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
                Outcome(
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
    from .profiles import PROFILES  # noqa: PLC0415

    return [PROFILES[p.id] for p in report.profiles]


# --------------------------------------------------------------------------------------
# CKLB (STIG Viewer 3)


def stig_profiles(profiles: Sequence[Profile]) -> list[Profile]:
    """The profiles that are DISA STIGs (those with a checklist)."""
    return [p for p in profiles if p.benchmark is not None]


def _uuid(*parts: str) -> str:
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


def _target_data(assessment: Assessment) -> dict[str, Any]:
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


def _cklb_rule(outcome: Outcome, bench: Benchmark, stig_uuid: str) -> dict[str, Any]:
    req = outcome.requirement
    refs = _references(req)
    group = refs.get("Vuln ID", req.id)
    rule_src = refs.get("Rule ID", "")
    srg = _SRG.findall(refs.get("SRG", ""))
    return {
        "group_id_src": group,
        "group_tree": [
            {
                "id": group,
                "title": srg[0] if srg else group,
                "description": "<GroupDescription></GroupDescription>",
            }
        ],
        "group_id": group,
        "severity": refs.get("severity", "medium"),
        "group_title": srg[0] if srg else req.title,
        "rule_id_src": rule_src,
        "rule_id": rule_src.removesuffix("_rule"),
        "rule_version": refs.get("STIG ID", ""),
        "rule_title": req.title,
        "fix_text": fix_text(outcome.profile, req),
        "weight": "10.0",
        "check_content": check_text(outcome.profile, req),
        "check_content_ref": {"href": bench.filename, "name": "M"},
        "classification": "Unclassified",
        "discussion": (
            f"See the {_release(outcome.profile)} for the discussion of this requirement. "
            "Audit records of module loads and unloads show who changed the running kernel."
        ),
        "false_positives": "",
        "false_negatives": "",
        "documentable": "false",
        "security_override_guidance": "",
        "potential_impacts": "",
        "third_party_tools": "",
        "ia_controls": "",
        "responsibility": "",
        "mitigations": "",
        "mitigation_control": "",
        "legacy_ids": [],
        "ccis": _ccis(req),
        "reference_identifier": "",
        "uuid": _uuid(bench.id, group),
        "stig_uuid": stig_uuid,
        "status": outcome.status,
        "overrides": {},
        "comments": outcome.comment,
        "finding_details": outcome.details,
    }


def _cklb_stig(profile: Profile, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    bench = profile.benchmark
    if bench is None:  # pragma: no cover - callers pass STIG profiles only
        msg = f"{profile.id} is no STIG"
        raise ValueError(msg)
    stig_uuid = _uuid(bench.id)
    rules = [_cklb_rule(o, bench, stig_uuid) for o in outcomes if o.profile.id == profile.id]
    return {
        "stig_name": bench.title,
        "display_name": bench.display_name,
        "stig_id": bench.id,
        "release_info": bench.release_info,
        "version": bench.version,
        "uuid": stig_uuid,
        "reference_identifier": "",
        "size": len(rules),
        "rules": rules,
    }


def render_cklb(assessment: Assessment, template: str | None = None) -> str:
    """A STIG Viewer 3 checklist (CKLB): one STIG entry per selected STIG profile.

    With `template` (the text of a checklist exported from STIG Viewer), the rules
    kmod-audit judged are filled into it and everything else stays byte-identical (see
    `merge_cklb`).
    """
    if template is not None:
        return merge_cklb(template, assessment)
    stigs = [_cklb_stig(p, assessment.outcomes) for p in stig_profiles(assessment.profiles)]
    checklist = {
        "title": f"kmod-audit {assessment.command}: {assessment.hostname()}",
        "id": str(uuid.uuid4()),
        "stigs": stigs,
        "active": False,
        "mode": 2,
        "has_path": False,
        "target_data": _target_data(assessment),
        "cklb_version": "1.0",
    }
    return json.dumps(checklist, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------
# Merging into a STIG Viewer checklist


MAX_TEMPLATE_BYTES: Final = 64 * 1024 * 1024
"""The most a `--cklb-template` may hold (a whole STIG's checklist is a few MiB)."""


def _regular_template(path: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "no regular file (a device, FIFO or socket)"
        msg = f"--cklb-template {path}: is {kind}; pass a .cklb file STIG Viewer 3 saved"
        raise ConfigurationError(msg)


def load_template(path: str) -> str:
    """Read a STIG Viewer 3 checklist to merge into, checked to be one.

    Raises:
        ConfigurationError: it cannot be read or is no CKLB checklist (names the file).
    """
    try:
        # Only a regular file, and a bounded read: /dev/zero would fill the memory, and a
        # FIFO without a writer would hang (as for rules sources). O_NONBLOCK: a path
        # swapped for a FIFO after the check does not wait for a writer either.
        _regular_template(path, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            _regular_template(path, os.fstat(handle.fileno()).st_mode)
            data = handle.read(MAX_TEMPLATE_BYTES + 1)
        # Plain utf-8: a byte order mark is kept (and written back) like every other byte.
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = (
            f"--cklb-template {path}: cannot read it ({exc}); pass a .cklb file STIG Viewer 3 saved"
        )
        raise ConfigurationError(msg) from None
    if len(data) > MAX_TEMPLATE_BYTES:
        msg = (
            f"--cklb-template {path}: holds more than {MAX_TEMPLATE_BYTES // (1024 * 1024)} "
            "MiB, far more than a checklist of a whole STIG; pass a .cklb file STIG Viewer 3 "
            "saved"
        )
        raise ConfigurationError(msg)
    try:
        # Three levels reach each STIG's `rules`; the rules are read by the merge.
        root = parse_spans(text.removeprefix("\ufeff"), levels=3)
    except json.JSONDecodeError as exc:
        checklist_like = exc.msg.startswith(("Nested deeper", "Integer too long"))
        what = "no checklist" if checklist_like else "not JSON"
        msg = (
            f"--cklb-template {path}: {what} ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}); pass a .cklb file STIG Viewer 3 saved"
        )
        raise ConfigurationError(msg) from None
    stigs = root.get("stigs") if isinstance(root.value, dict) else None
    if stigs is None or not isinstance(stigs.value, list):
        msg = f"--cklb-template {path}: no `stigs` array, so it is no STIG Viewer 3 checklist"
        raise ConfigurationError(msg)
    for index, stig in enumerate(stigs.items):
        rules = stig.get("rules") if isinstance(stig.value, dict) else None
        if rules is None or not isinstance(rules.value, list):
            msg = f"--cklb-template {path}: stigs[{index}] has no `rules` array"
            raise ConfigurationError(msg)
    return text


def _indent_of(text: str, pos: int) -> str:
    """The blanks between the start of `pos`'s line and `pos` ("" if anything else is there)."""
    # Only the blanks just before `pos` are read: looking back to the line start would read
    # a compact (one-line) checklist whole, once per rule.
    start = pos
    while start > 0 and text[start - 1] != "\n" and text[start - 1].isspace():
        start -= 1
    if start > 0 and text[start - 1] != "\n":
        return ""
    return text[start:pos]


def _dumps_like(value: object, indent: str, step: str) -> str:
    """`value` as JSON, indented to sit at `indent` in a document indented by `step`."""
    if not step:
        return json.dumps(value, ensure_ascii=False)
    text = json.dumps(value, indent=len(step), ensure_ascii=False)
    return text.replace("\n", "\n" + indent)


def _step(text: str) -> str:
    """The document's indentation unit (empty for compact JSON)."""
    match = re.search(r"\n([ \t]+)\S", text)
    return match.group(1) if match else ""


def merge_cklb(template: str, assessment: Assessment) -> str:
    """Fill the rules kmod-audit judged into the checklist `template`.

    A rule is matched by the STIG's `stig_id` and the rule's `group_id` (its V- number).
    Its `status` and `finding_details` are replaced; its `comments` too, unless an
    assessor wrote some (a comment an earlier kmod-audit run wrote is replaced). A rule
    kmod-audit could not review (`not_reviewed`) is left as the template has it: "could
    not decide" never overwrites an assessor's verdict. A STIG of the selection that the
    template lacks is appended. An empty host name is filled in
    (STIG Manager needs one). Every other byte of the template stays as it is.
    """
    bom = "\ufeff" if template.startswith("\ufeff") else ""
    text = template.removeprefix("\ufeff")
    # Four levels reach each rule (decoded whole); a rule that changes is read again for
    # the spans of its members.
    root = parse_spans(text, levels=4)
    step = _step(text)
    edits: list[tuple[int, int, str]] = []
    # Each outcome's texts are encoded once, not once per rule that shows them.
    encoded: dict[str, str] = {}

    def encode(value: str) -> str:
        if value not in encoded:
            encoded[value] = json.dumps(value, ensure_ascii=False)
        return encoded[value]

    stigs_node = root.get("stigs")
    if stigs_node is None:  # load_template checked it
        msg = "the template has no stigs array"
        raise ConfigurationError(msg)
    present: set[str] = set()
    for stig in stigs_node.items:
        stig_id = stig.get("stig_id")
        bench_id = str(stig_id.value) if stig_id is not None else ""
        bench_id = bench_id.replace("xccdf_mil.disa.stig_benchmark_", "")
        present.add(bench_id)
        ours = {
            _references(o.requirement).get("Vuln ID", o.requirement.id): o
            for o in assessment.outcomes
            if o.profile.benchmark is not None and o.profile.benchmark.id == bench_id
        }
        rules = stig.get("rules")
        for rule in rules.items if rules is not None else ():
            # The decoded rule holds the last of repeated members, as Node.get finds it.
            members = rule.value if isinstance(rule.value, dict) else {}
            if "group_id" not in members:
                continue
            outcome = ours.get(str(members["group_id"]))
            if outcome is None or outcome.status == "not_reviewed":
                continue
            comments = members.get("comments")
            changes: dict[str, str] = {
                "status": encode(outcome.status),
                "finding_details": encode(outcome.details),
            }
            # An assessor's comment stays; one an earlier run wrote would contradict the
            # new status (a merged checklist is the next run's template).
            if not comments or (isinstance(comments, str) and comments.startswith(_OUR_COMMENTS)):
                changes["comments"] = encode(outcome.comment)
            edits.extend(_set_members(text, rule, changes))
    missing = [
        p
        for p in stig_profiles(assessment.profiles)
        if p.benchmark is not None and p.benchmark.id not in present
    ]
    if missing:
        indent = _indent_of(text, stigs_node.items[0].start) if stigs_node.items else ""
        blocks = [_dumps_like(_cklb_stig(p, assessment.outcomes), indent, step) for p in missing]
        if stigs_node.items:
            joiner = ",\n" + indent if step else ","
            edits.append(
                (stigs_node.items[-1].end, stigs_node.items[-1].end, joiner + joiner.join(blocks))
            )
        else:
            edits.append((stigs_node.start + 1, stigs_node.end - 1, ",".join(blocks)))
    target = root.get("target_data")
    if target is not None and isinstance(target.value, dict) and not target.value.get("host_name"):
        # STIG Manager refuses a checklist without a host name; every other field of the
        # target data is the assessor's.
        edits.extend(_set_members(text, target, {"host_name": encode(assessment.hostname())}))
    return bom + _apply(text, edits)


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    """`text` with each span `[start, end)` of `edits` replaced, built in one pass.

    The edits never overlap (each lies inside its own rule, the target data, or at the end
    of the stigs array). Making them one by one copied the whole text per edit: a
    checklist of 20,000 rules never finished.
    """
    parts: list[str] = []
    pos = 0
    # An insertion at the end of a replaced member sorts after it, so it follows it.
    for start, end, new in sorted(edits):
        if start < pos:  # pragma: no cover - would be a bug in merge_cklb
            msg = f"overlapping checklist edits at offset {start}"
            raise ValueError(msg)
        parts.append(text[pos:start])
        parts.append(new)
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def _set_members(text: str, obj: Node, changes: dict[str, str]) -> list[tuple[int, int, str]]:
    """Edits that set members of the object `obj` (replaced in place, or appended).

    `changes` maps each member's name to its new value as JSON text.
    """
    edits: list[tuple[int, int, str]] = []
    added: list[str] = []
    spans = member_spans(text, obj)
    found = {key: (start, end) for key, start, end in spans}  # the last of repeated keys
    for name, encoded in changes.items():
        if name in found:
            edits.append((*found[name], encoded))
        else:
            added.append(f"{json.dumps(name)}: {encoded}")
    if added:
        if not spans:
            edits.append((obj.start + 1, obj.start + 1, ", ".join(added)))
        else:
            _, last_start, last_end = spans[-1]
            key_start = text.rfind('"', 0, text.rfind(":", 0, last_start))
            key_start = text.rfind('"', 0, key_start)
            indent = _indent_of(text, key_start)
            sep = ",\n" + indent if indent else ", "
            edits.append((last_end, last_end, sep + sep.join(added)))
    return edits


# --------------------------------------------------------------------------------------
# CKL (STIG Viewer 2)


# Characters XML 1.0 cannot hold at all (not even as references): a key or a record from the
# target may contain them.
_XML_INVALID: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml_text(text: str) -> str:
    return _XML_INVALID.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = _xml_text(text)
    return element


def render_ckl(assessment: Assessment) -> str:
    """A STIG Viewer 2 checklist (CKL, XML): one iSTIG per selected STIG profile."""
    root = ET.Element("CHECKLIST")
    asset = _sub(root, "ASSET")
    td = _target_data(assessment)
    for tag, value in (
        ("ROLE", "None"),
        ("ASSET_TYPE", "Computing"),
        ("MARKING", ""),
        ("HOST_NAME", td["host_name"]),
        ("HOST_IP", td["ip_address"]),
        ("HOST_MAC", td["mac_address"]),
        ("HOST_FQDN", td["fqdn"]),
        ("TARGET_COMMENT", td["comments"]),
        ("TECH_AREA", ""),
        ("TARGET_KEY", ""),
        ("WEB_OR_DATABASE", "false"),
        ("WEB_DB_SITE", ""),
        ("WEB_DB_INSTANCE", ""),
    ):
        _sub(asset, tag, value)
    stigs = _sub(root, "STIGS")
    for profile in stig_profiles(assessment.profiles):
        bench = profile.benchmark
        if bench is None:  # pragma: no cover - filtered above
            continue
        istig = _sub(stigs, "iSTIG")
        info = _sub(istig, "STIG_INFO")
        for name, value in (
            ("version", bench.version),
            ("classification", "UNCLASSIFIED"),
            ("customname", ""),
            ("stigid", bench.id),
            ("description", f"Requirements of the {_release(profile)} judged by {TOOL}."),
            ("filename", bench.filename),
            ("releaseinfo", bench.release_info),
            ("title", bench.title),
            ("uuid", _uuid(bench.id)),
            ("notice", ""),
            ("source", ""),
        ):
            datum = _sub(info, "SI_DATA")
            _sub(datum, "SID_NAME", name)
            if value:
                _sub(datum, "SID_DATA", value)
        for outcome in (o for o in assessment.outcomes if o.profile.id == profile.id):
            rule = _cklb_rule(outcome, bench, _uuid(bench.id))
            vuln = _sub(istig, "VULN")
            attributes = [
                ("Vuln_Num", rule["group_id"]),
                ("Severity", rule["severity"]),
                ("Group_Title", rule["group_title"]),
                ("Rule_ID", rule["rule_id_src"]),
                ("Rule_Ver", rule["rule_version"]),
                ("Rule_Title", rule["rule_title"]),
                ("Vuln_Discuss", rule["discussion"]),
                ("IA_Controls", ""),
                ("Check_Content", rule["check_content"]),
                ("Fix_Text", rule["fix_text"]),
                ("False_Positives", ""),
                ("False_Negatives", ""),
                ("Documentable", "false"),
                ("Mitigations", ""),
                ("Potential_Impact", ""),
                ("Third_Party_Tools", ""),
                ("Mitigation_Control", ""),
                ("Responsibility", ""),
                ("Security_Override_Guidance", ""),
                ("Check_Content_Ref", "M"),
                ("Weight", "10.0"),
                ("Class", "Unclass"),
                ("STIGRef", f"{bench.title} :: Version {bench.version}, {bench.release_info}"),
                ("TargetKey", ""),
                ("STIG_UUID", rule["stig_uuid"]),
                *(("CCI_REF", cci) for cci in rule["ccis"]),
            ]
            for name, value in attributes:
                datum = _sub(vuln, "STIG_DATA")
                _sub(datum, "VULN_ATTRIBUTE", name)
                _sub(datum, "ATTRIBUTE_DATA", value)
            _sub(vuln, "STATUS", _CKL_STATUS[outcome.status])
            _sub(vuln, "FINDING_DETAILS", outcome.details)
            _sub(vuln, "COMMENTS", outcome.comment)
            _sub(vuln, "SEVERITY_OVERRIDE", "")
            _sub(vuln, "SEVERITY_JUSTIFICATION", "")
    ET.indent(root, space="\t")
    body = ET.tostring(root, encoding="unicode", short_empty_elements=False)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<!--{TOOL}-->\n{body}\n'


# --------------------------------------------------------------------------------------
# HDF (MITRE Heimdall Data Format, exec JSON 1.0)


def _hdf_control(outcome: Outcome, time: str) -> dict[str, Any]:
    req = outcome.requirement
    refs = _references(req)
    severity = refs.get("severity", "medium")
    if outcome.status == "not_applicable":
        results: list[dict[str, Any]] = [
            {
                "status": "skipped",
                "code_desc": f"{req.id}: not applicable",
                "skip_message": outcome.comment,
                "start_time": time,
            }
        ]
    else:
        results = []
        for target, status, message in outcome.checks:
            result: dict[str, Any] = {
                "status": status,
                "code_desc": f"{req.id} {target}",
                "start_time": time,
            }
            if status == "failed":
                result["message"] = message
            elif status == "skipped":
                result["skip_message"] = message
            else:
                result["message"] = message
            results.append(result)
    tags: dict[str, Any] = {"severity": severity, "kmod_audit_status": outcome.status}
    for label, tag in (("Vuln ID", "gid"), ("Rule ID", "rid"), ("STIG ID", "stig_id")):
        if label in refs:
            tags[tag] = refs[label]
    if _ccis(req):
        tags["cci"] = _ccis(req)
    for label in ("CIS", "Tenable", "ComplianceAsCode"):
        if label in refs:
            tags[label.lower()] = refs[label]
    return {
        "id": req.id,
        "title": req.title,
        "desc": check_text(outcome.profile, req),
        "descriptions": [
            {"label": "default", "data": req.title},
            {"label": "check", "data": check_text(outcome.profile, req)},
            {"label": "fix", "data": fix_text(outcome.profile, req)},
        ],
        # Heimdall reads impact 0 as "not applicable".
        "impact": 0.0 if outcome.status == "not_applicable" else _IMPACT.get(severity, 0.5),
        "refs": [],
        "tags": tags,
        "code": outcome.details,
        "source_location": {"ref": "kmod_audit/profiles.py", "line": None},
        "results": results,
    }


def render_hdf(assessment: Assessment) -> str:
    """The Heimdall Data Format (exec JSON 1.0): one profile per selected profile."""
    profiles = []
    for profile in assessment.profiles:
        controls = [
            _hdf_control(o, assessment.time)
            for o in assessment.outcomes
            if o.profile.id == profile.id
        ]
        digest = hashlib.sha256(
            json.dumps([c["id"] for c in controls] + [profile.title]).encode()
        ).hexdigest()
        profiles.append(
            {
                "name": f"kmod-audit-{profile.id}",
                "title": profile.title,
                "version": __version__,
                "summary": _release(profile),
                "maintainer": "kmod-audit",
                "license": "MIT",
                "sha256": digest,
                "supports": [{"platform-family": "linux"}],
                "attributes": [],
                "groups": [
                    {"id": c["id"], "title": c["title"], "controls": [c["id"]]} for c in controls
                ],
                "controls": controls,
                "status": "loaded",
            }
        )
    document = {
        "platform": {
            "name": "linux",
            "release": assessment.kernel,
            "target_id": assessment.hostname(),
        },
        "profiles": profiles,
        "statistics": {},
        "version": __version__,
        "passthrough": {
            "tool": TOOL,
            "command": assessment.command,
            "time": assessment.time,
            "target": assessment.target,
            "machine": assessment.machine,
            "host": assessment.host,
            "verdict": assessment.verdict,
        },
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------
# The CLI's entry points


def preflight(
    fmt: str, profiles: Sequence[Profile], template: str | None, *, option: str | None = None
) -> str | None:
    """Refuse what cannot give the file asked for, before any work; return the template.

    `option` names what asked for the file in the messages (default `--format FMT`).

    Raises:
        ConfigurationError: a checklist of no STIG, a template without `--format cklb`,
            or an unreadable template.
    """
    if template is not None and fmt != "cklb":
        msg = "--cklb-template: it fills a STIG Viewer 3 checklist; pass --format cklb with it"
        raise ConfigurationError(msg)
    if fmt in {"cklb", "ckl"} and not stig_profiles(profiles):
        chosen = ", ".join(p.id for p in profiles)
        named = option or f"--format {fmt}"
        msg = (
            f"{named}: STIG Viewer checklists exist only for DISA STIGs (nixos-stig, "
            f"al2023-stig), and {chosen} is none; use --format hdf (Heimdall) or json for "
            "CIS and Tenable, or add --profile nixos-stig or --profile al2023-stig"
        )
        raise ConfigurationError(msg)
    return load_template(template) if template is not None else None


def render(fmt: str, assessment: Assessment, template: str | None = None) -> str:
    """Render `assessment` in the evidence format `fmt` (`cklb`, `ckl` or `hdf`)."""
    writers: dict[str, Callable[[Assessment], str]] = {
        "cklb": lambda a: render_cklb(a, template),
        "ckl": render_ckl,
        "hdf": render_hdf,
    }
    return writers[fmt](assessment)
