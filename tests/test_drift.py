"""The drift between the running rules and the on-disk ones, found in linear time."""

from __future__ import annotations

from typing import Final

from hypothesis import given, settings
from hypothesis import strategies as st

from kmod_audit.check import drift_findings
from kmod_audit.loader import Drift, RuleSet, compare, load
from kmod_audit.report import Finding
from kmod_audit.rules import NOT_READ, parse_rules
from kmod_audit.syscalls import MACHINES

X86_64 = MACHINES["x86_64"]

#: Rules that differ in list, action, fields, field order, syscalls, key or watch kind.
_RULES: Final = (
    "-A always,exit -F arch=b64 -S init_module -k k",
    "-A always,exit -F arch=b64 -S init_module -k other",
    "-A never,exit -F arch=b64 -S init_module -k k",
    "-A always,exit -F arch=b64 -S init_module,delete_module -F auid>=1000 -F auid!=-1 -k k",
    "-A always,exit -F arch=b64 -S delete_module,init_module -F auid!=-1 -F auid>=1000 -k k",
    "-A always,exit -F arch=b32 -S init_module -k k",
    "-A always,exit -F path=/usr/bin/kmod -F perm=x -k k",
    "-A always,exit -F dir=/usr/bin/kmod -F perm=x -k k",
    "-A always,exclude -F msgtype=CWD",
    "-A never,task",
)


def _ruleset(lines: list[str], path: str) -> RuleSet:
    """Load `lines` (`-A` never fails as a duplicate, so repeats stay)."""
    text = "".join(line + "\n" for line in reversed(lines))
    return load(parse_rules(text, path=path, machine=X86_64, files=NOT_READ), files=NOT_READ)


def _quadratic_drift(running: RuleSet, on_disk: RuleSet, label: str) -> list[Finding]:
    """The drift findings as they were before: a list scan per rule (the oracle), same wording."""
    live = [r.signature() for r in running.rules]
    disk = [r.signature() for r in on_disk.rules]
    missing = tuple(r for r in on_disk.rules if r.signature() not in live)
    extra = tuple(r for r in running.rules if r.signature() not in disk)
    moved = 0
    if not missing and not extra:
        moved = sum(a != b for a, b in zip(live, disk, strict=False)) + abs(len(live) - len(disk))
    return drift_findings(Drift(missing, extra, moved), label)


class TestDrift:
    """Running against on-disk rules: missing, extra, reordered and repeated rules."""

    @settings(max_examples=300, deadline=None)
    @given(
        running=st.lists(st.sampled_from(_RULES), max_size=12),
        on_disk=st.lists(st.sampled_from(_RULES), max_size=12),
        permute=st.booleans(),
        data=st.data(),
    )
    def test_same_findings_as_rescanning_drift(
        self, running: list[str], on_disk: list[str], permute: bool, data: st.DataObject
    ) -> None:
        """Same findings in the same order as the quadratic comparison it replaces."""
        if permute:
            # Often the same rules in another order (or with repeats dropped or added).
            running = data.draw(st.permutations(on_disk))
        live, disk = _ruleset(running, "auditctl -l"), _ruleset(on_disk, "audit.rules")
        assert _quadratic_drift(live, disk, "audit.rules") == drift_findings(
            compare(live, disk), "audit.rules"
        )

    def test_another_order(self) -> None:
        """The same rules in another order are reported as such, and nothing else."""
        live = _ruleset([_RULES[0], _RULES[2]], "auditctl -l")
        disk = _ruleset([_RULES[2], _RULES[0]], "audit.rules")
        findings = drift_findings(compare(live, disk), "audit.rules")
        assert ["the running rules are those of audit.rules but in another order"] == [
            f.message for f in findings
        ]

    def test_repeated_rule(self) -> None:
        """A rule held twice on one side only is not missing; the lists still differ."""
        live = _ruleset([_RULES[0]], "auditctl -l")
        disk = _ruleset([_RULES[0], _RULES[0]], "audit.rules")
        findings = drift_findings(compare(live, disk), "audit.rules")
        assert 1 == len(findings)
        assert "another order" in findings[0].message
