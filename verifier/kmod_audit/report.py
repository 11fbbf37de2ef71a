"""Reports: frozen records of a judgement, rendered as text or JSON (DESIGN section 3).

The JSON shape is a contract: `{"compliant": bool, "profiles": [{"id", "compliant",
"requirements": [{"id", "title", "status", "reasons", "rules"}]}], ...}`. We add keys
(`sources`, `findings`, `drift`, `options`, per-requirement `checks`, `references`, `fix`)
but never remove or rename these. A requirement kmod-audit cannot judge exactly has the
status `undecided` (its `reasons` say why); it is never compliant, and the top-level
`undecided` is true when any requirement is undecided.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal

import attrs

from ._terminal import escape_line
from .errors import EXIT_NONCOMPLIANT, EXIT_OK, EXIT_UNREACHABLE
from .probe_result import ProbeResult, Stimulus
from .profiles import Profile, RequiredCall
from .syscalls import abi_by_audit_arch

__all__ = [
    "CheckResult",
    "Evidence",
    "Finding",
    "ProfileResult",
    "RecordVerdict",
    "Report",
    "RequirementResult",
    "SourceReport",
    "VerifyReport",
    "relevant",
    "render_json",
    "render_text",
    "show_uid",
]

RequirementStatus = Literal["pass", "fail", "undecided"]

#: What the text report says about an undecided requirement.
UNDECIDED_HINT = (
    "kmod-audit cannot judge this exactly (it is neither a pass nor a failure); the "
    "reason above says what it lacks: give it that (the rules file rather than a listing, "
    "--running, the machine's files), or simplify the rules it names (fewer conditions, "
    "a narrower -S/-F arch), or prove it on the machine with `kmod-audit verify`"
)


@attrs.frozen(kw_only=True)
class Finding:
    """A problem with a source that is not one requirement.

    For example a line that fails to load, audit disabled, or drift.

    Attributes:
        path: The file (or `auditctl -l`).
        line: 1-based line number, 0 when not tied to a line.
        text: The line.
        message: What is wrong (auditctl's words where it has them).
        hint: What to do.
        severity: `error` makes the source non-compliant; `warning` does not.
    """

    path: str
    line: int
    text: str
    message: str
    hint: str
    severity: Literal["error", "warning"] = "error"

    def location(self) -> str:
        """Return `path:line` (or just the path)."""
        return f"{self.path}:{self.line}" if self.line else self.path

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class CheckResult:
    """One target of a requirement (e.g. `b32 finit_module`).

    Attributes:
        target: What must be recorded.
        status: `pass`, `fail`, `undecided` (kmod-audit cannot evaluate it exactly), or
            `n/a` (the syscall does not exist on this ABI).
        reason: Why, in one sentence (the covering rule or a counterexample).
        rules: The covering rules as `path:line: text`.
    """

    target: str
    status: Literal["pass", "fail", "undecided", "n/a"]
    reason: str
    rules: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class RequirementResult:
    """The judgement of one requirement.

    Attributes:
        id: Requirement id.
        title: Its title.
        status: `pass`, `fail`, or `undecided` (no check fails but one cannot be evaluated
            exactly).
        reasons: Why (one line per failed, else per undecided check; the covering rules
            when it passes).
        rules: The rules that satisfy it, as `path:line: text`.
        checks: The per-target results.
        references: STIG/CIS/CCI references.
        fix: Lines that would satisfy it (canonical form, see `generate`).
        applicable: False when nothing of it exists on this machine (e.g. create_module on
            aarch64).
    """

    id: str
    title: str
    status: RequirementStatus
    reasons: tuple[str, ...]
    rules: tuple[str, ...]
    checks: tuple[CheckResult, ...] = ()
    references: tuple[tuple[str, str], ...] = ()
    fix: tuple[str, ...] = ()
    applicable: bool = True

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "reasons": list(self.reasons),
            "rules": list(self.rules),
            "applicable": self.applicable,
            "checks": [attrs.asdict(c) for c in self.checks],
            "references": dict(self.references),
            "fix": list(self.fix),
        }


@attrs.frozen(kw_only=True)
class ProfileResult:
    """The judgement of one profile.

    Attributes:
        id: Profile id.
        title: The standard.
        compliant: All requirements pass.
        requirements: Per requirement.
    """

    id: str
    title: str
    compliant: bool
    requirements: tuple[RequirementResult, ...]

    @property
    def undecided(self) -> bool:
        """Some requirement could not be evaluated exactly."""
        return any(r.status == "undecided" for r in self.requirements)

    @property
    def failed(self) -> bool:
        """Some requirement definitely fails."""
        return any(r.status == "fail" for r in self.requirements)

    @classmethod
    def of(cls, profile: Profile, requirements: Iterable[RequirementResult]) -> ProfileResult:
        """The result of `profile`: compliant when every requirement passes."""
        results = tuple(requirements)
        return cls(
            id=profile.id,
            title=profile.title,
            compliant=all(r.status == "pass" for r in results),
            requirements=results,
        )

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "id": self.id,
            "title": self.title,
            "compliant": self.compliant,
            "undecided": self.undecided,
            "requirements": [r.to_json() for r in self.requirements],
        }


@attrs.frozen(kw_only=True)
class SourceReport:
    """The judgement of one source of rules.

    Attributes:
        label: What it is, e.g. `rules file x.rules` or `running rules (auditctl -l)`.
        path: Its path.
        syntax: `rules` or `listing`.
        profiles: Per profile.
        findings: Lines that failed to load, audit disabled, warnings.
        rule_count: How many rules loaded.
    """

    label: str
    path: str
    syntax: str
    profiles: tuple[ProfileResult, ...]
    findings: tuple[Finding, ...] = ()
    rule_count: int = 0

    @property
    def compliant(self) -> bool:
        """All profiles pass and no finding is an error."""
        return all(p.compliant for p in self.profiles) and not any(
            f.severity == "error" for f in self.findings
        )

    @property
    def failed(self) -> bool:
        """Definitely not compliant: a requirement fails or a finding is an error."""
        return any(p.failed for p in self.profiles) or any(
            f.severity == "error" for f in self.findings
        )

    @property
    def undecided(self) -> bool:
        """Some requirement could not be evaluated exactly."""
        return any(p.undecided for p in self.profiles)

    def verdict(self) -> str:
        """`COMPLIANT`, `NOT COMPLIANT`, or `CANNOT DECIDE` (nothing fails, something undecided)."""
        if self.compliant:
            return "COMPLIANT"
        return "CANNOT DECIDE" if self.undecided and not self.failed else "NOT COMPLIANT"

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "label": self.label,
            "path": self.path,
            "syntax": self.syntax,
            "compliant": self.compliant,
            "undecided": self.undecided,
            "rule_count": self.rule_count,
            "findings": [f.to_json() for f in self.findings],
            "profiles": [p.to_json() for p in self.profiles],
        }


@attrs.frozen(kw_only=True)
class Report:
    """A whole `check` run.

    Attributes:
        sources: Per source.
        drift: Differences between the running and the on-disk rules.
        options: The options the judgement used (arch, uid-min, key...).
    """

    sources: tuple[SourceReport, ...]
    drift: tuple[Finding, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def compliant(self) -> bool:
        """Every source is compliant."""
        return bool(self.sources) and all(s.compliant for s in self.sources)

    @property
    def undecided(self) -> bool:
        """Some requirement of some source could not be evaluated exactly."""
        return any(s.undecided for s in self.sources)

    def exit_code(self) -> int:
        """0 compliant; 1 when anything definitely fails; else 3 when something is undecided.

        A definite failure outweighs an undecided requirement: the system is not compliant
        whatever the undecided part would be.
        """
        if self.compliant:
            return EXIT_OK
        if self.undecided and not any(s.failed for s in self.sources):
            return EXIT_UNREACHABLE
        return EXIT_NONCOMPLIANT

    def verdict(self) -> str:
        """`COMPLIANT`, `NOT COMPLIANT`, or `CANNOT DECIDE` (as `exit_code`)."""
        return {EXIT_OK: "COMPLIANT", EXIT_UNREACHABLE: "CANNOT DECIDE"}.get(
            self.exit_code(), "NOT COMPLIANT"
        )

    def merged_profiles(self) -> list[ProfileResult]:
        """Profiles across sources: a requirement fails when it fails in any source."""
        if len(self.sources) == 1:
            return list(self.sources[0].profiles)
        merged: list[ProfileResult] = []
        for index, profile in enumerate(self.sources[0].profiles):
            requirements: list[RequirementResult] = []
            for r_index, first in enumerate(profile.requirements):
                per_source = [(s, s.profiles[index].requirements[r_index]) for s in self.sources]
                failed = [(s, r) for s, r in per_source if r.status == "fail"]
                undecided = [(s, r) for s, r in per_source if r.status == "undecided"]
                reasons = tuple(
                    f"{s.label}: {reason}" for s, r in per_source for reason in r.reasons
                )
                rules = tuple(dict.fromkeys(rule for _, r in per_source for rule in r.rules))
                requirements.append(
                    attrs.evolve(
                        first,
                        status="fail" if failed else "undecided" if undecided else "pass",
                        reasons=reasons,
                        rules=rules,
                    )
                )
            merged.append(
                attrs.evolve(
                    profile,
                    compliant=all(r.status == "pass" for r in requirements),
                    requirements=tuple(requirements),
                )
            )
        return merged

    def findings(self) -> list[Finding]:
        """Every finding of every source, then the drift."""
        return [f for s in self.sources for f in s.findings] + list(self.drift)


def render_json(report: Report) -> str:
    """Render the report as one JSON object (the CLI contract)."""
    data = {
        "compliant": report.compliant,
        "undecided": report.undecided,
        "profiles": [p.to_json() for p in report.merged_profiles()],
        "sources": [s.to_json() for s in report.sources],
        "findings": [f.to_json() for f in report.findings()],
        "drift": [f.to_json() for f in report.drift],
        "options": dict(report.options),
    }
    return json.dumps(data, indent=2, sort_keys=False)


def _indent(text: str, prefix: str) -> list[str]:
    # Split on newlines only: `splitlines` would also break at a `\r` or `\x1c` of a value,
    # which `render_text` shows escaped instead.
    return [prefix + line for line in text.removesuffix("\n").split("\n")] if text else [""]


def render_text(report: Report) -> str:
    """Render the report for a terminal.

    Every line is passed through `escape_line`: keys, paths and rule text come from the
    input, and their control characters must not act on the terminal.
    """
    out: list[str] = []
    options = dict(report.options)
    key = options.get("key") or "any non-empty key"
    out.append(
        f"kmod-audit check: arch {options.get('arch')}, uid-min {options.get('uid_min')}, "
        f"key {key}, kmod {options.get('kmod_path')}, "
        + (f"kernel {options['kernel']}" if options.get("kernel") else "any kernel")
        + (", strict" if options.get("strict") else "")
    )
    for source in report.sources:
        verdict = source.verdict()
        out.append("")
        out.append(f"== {source.label}: {verdict} ({source.rule_count} rules loaded)")
        for profile in source.profiles:
            state = "compliant" if profile.compliant else "NOT compliant"
            if profile.undecided and not profile.failed:
                state = "cannot decide"
            out.append(f"profile {profile.id} ({profile.title}): {state}")
            for req in profile.requirements:
                mark = {"pass": "PASS", "undecided": "CANNOT DECIDE"}.get(req.status, "FAIL")
                out.append(f"  {mark} {req.id}: {req.title}")
                out.extend(
                    f"       [{check.status}] {check.reason}"
                    for check in req.checks
                    if check.status != "pass"
                )
                if req.rules:
                    label = "recorded by:" if req.status == "pass" else "partly recorded by:"
                    out.append(f"       {label} {req.rules[0]}")
                    out.extend(f"       {' ' * len(label)} {rule}" for rule in req.rules[1:])
                if req.status == "fail" and req.fix:
                    out.append("       fix: these lines satisfy it (kmod-audit generate):")
                    out.extend(f"         {line}" for line in req.fix)
                if req.status == "undecided":
                    out.extend(_indent(UNDECIDED_HINT, "       what to do: "))
        if source.findings:
            out.append("findings:")
            for finding in source.findings:
                out.append(f"  {finding.severity}: {finding.location()}: {finding.message}")
                if finding.text:
                    out.append(f"    line: {finding.text.strip()}")
                out.extend(_indent(finding.hint, "    what to do: "))
    if report.drift:
        out.append("")
        out.append("drift between the running and the on-disk rules:")
        for finding in report.drift:
            out.append(f"  {finding.severity}: {finding.message}")
            out.extend(_indent(finding.hint, "    what to do: "))
    out.append("")
    verdict = report.verdict()
    if verdict == "CANNOT DECIDE":
        verdict += " (nothing fails, but some requirement cannot be evaluated exactly)"
    out.append("result: " + verdict)
    return "".join(escape_line(line) + "\n" for line in out)


# --------------------------------------------------------------------------------------
# verify: what the records say about each stimulus, and the run


#: What the records say about one stimulus.
RecordVerdict = Literal["recorded", "missing", "unkeyed", "wrong-key", "not-exercised"]


@attrs.frozen(kw_only=True)
class Evidence:
    """What the records say about one stimulus.

    Attributes:
        stimulus: The stimulus.
        verdict: `recorded` (keyed SYSCALL record found), `missing`, `unkeyed`,
            `wrong-key`, or `not-exercised`.
        record: The SYSCALL record line, when found.
        key: The record's key(s).
        success: The record's success field.
        exit: The record's exit field.
        auid: The record's auid.
        module: The KERN_MODULE name of the same event, for loads and unloads.
    """

    stimulus: Stimulus
    verdict: RecordVerdict
    record: str | None = None
    key: tuple[str, ...] = ()
    success: str | None = None
    exit: str | None = None
    auid: str | None = None
    module: str | None = None
    number: int | None = None

    def describe(self) -> str:
        """One line for reports."""
        s = self.stimulus
        what = f"{s.abi} {s.syscall}" + (f" of {s.program}" if s.program else "")
        what += f" ({s.actor}: auid={show_uid(s.auid)}, uid={s.uid}, pid={s.pid})"
        if self.verdict == "not-exercised":
            return f"{what}: not exercised ({s.error})"
        if self.record is None:
            return f"{what}: no SYSCALL record"
        keys = ",".join(self.key) or "(null)"
        module = f", KERN_MODULE name={self.module}" if self.module else ""
        return (
            f"{what}: SYSCALL record key={keys} success={self.success} exit={self.exit} "
            f"auid={self.auid}{module}"
        )

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        data = attrs.asdict(self)
        data["stimulus"] = attrs.asdict(self.stimulus)
        data["summary"] = self.describe()
        return data


def show_uid(value: int) -> str:
    """A uid as reports show it (`unset` for 4294967295)."""
    return "unset" if value == 0xFFFFFFFF else str(value)


@attrs.frozen(kw_only=True)
class VerifyReport:
    """A verify run.

    Attributes:
        target: The target's name.
        probe: What the probe did and saw.
        evidence: One entry per stimulus.
        used: The ids of the stimuli the selected profiles judged.
        profiles: Per profile.
        notes: Things worth knowing that are not failures (skipped stimuli, negative
            controls recorded without --strict).
        problems: Conditions that prevented a verdict.
        incomplete: Why the records read may not be all the kernel emitted (marker not
            seen, records lost, lines dropped, machine not modelled): a missing record is
            then no evidence against the rules.
        refuted: The checks whose failure rests on a record that was read (a record
            without the key or with another one, or a negative control under --strict):
            they stand even when the evidence is incomplete.
        options: The options used.
    """

    target: str
    probe: ProbeResult
    evidence: tuple[Evidence, ...]
    profiles: tuple[ProfileResult, ...]
    used: frozenset[str] = frozenset()
    notes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    incomplete: tuple[str, ...] = ()
    refuted: tuple[str, ...] = ()
    options: tuple[tuple[str, object], ...] = ()

    @property
    def compliant(self) -> bool:
        """All profiles pass and nothing prevented a verdict."""
        return all(p.compliant for p in self.profiles) and not self.problems and not self.incomplete

    def exit_code(self) -> int:
        """0 compliant; 3 when the system could not be exercised; 1 otherwise.

        Incomplete evidence is exit 3 unless a record that was read refutes a requirement.
        """
        if self.compliant:
            return 0
        if self.incomplete and not self.refuted:
            return 3
        if self.problems and all(p.compliant for p in self.profiles):
            return 3
        unexercised_only = all(
            all(
                "not exercised" in reason
                for req in p.requirements
                if req.status == "fail"
                for reason in req.reasons
            )
            for p in self.profiles
        )
        return 3 if unexercised_only and not self.problems and not self.refuted else 1

    def verdict(self) -> str:
        """`compliant`, `not-compliant` or `could-not-exercise` (exit 0, 1, 3)."""
        return {0: "compliant", 1: "not-compliant"}.get(self.exit_code(), "could-not-exercise")


def relevant(evidence: Evidence, call: RequiredCall) -> bool:
    """Whether `evidence` is a stimulus of `call` (of the kmod tools for an execution).

    The one selection `verify` judges by and the checklists quote from.
    """
    s = evidence.stimulus
    if s.abi != call.abi.bits:
        return False
    if call.execution:
        return s.program is not None and s.syscall == call.syscall
    if s.program is not None:
        return False
    if s.module is not None and evidence.number is not None:
        # A load by modprobe uses finit_module, or init_module for a module it had to
        # decompress itself: it counts for the syscall its record shows.
        table = abi_by_audit_arch(int(s.arch, 16))
        return table is not None and table.name(evidence.number) == call.syscall
    return s.syscall == call.syscall
