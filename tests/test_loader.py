"""The loader models `auditctl -R` and the kernel's rule lists."""

from __future__ import annotations

from kmod_audit.loader import RuleSet, load
from kmod_audit.rules import parse_rules
from kmod_audit.syscalls import MACHINES

X86_64 = MACHINES["x86_64"]
RULE = "-a always,exit -F arch=b64 -S init_module -k k"
OTHER = "-a always,exit -F arch=b64 -S delete_module -k k"


def loaded(text: str, *, live: bool = False) -> RuleSet:
    """Load `text` as a rules file."""
    return load(parse_rules(text, path="t.rules", machine=X86_64, live=live), live=live)


class TestStopping:
    """auditctl -R stops at the first failing line unless -c/-i came first."""

    def test_stops_at_rejected_line(self) -> None:
        """Nothing after a rejected line loads; the lines are listed."""
        ruleset = loaded(f"{RULE}\n-a always,exit -S nosuch\n{OTHER}\n-e 1\n")
        assert [1] == [r.origin.line for r in ruleset.exit]
        assert ruleset.stopped_at is not None
        assert 2 == ruleset.stopped_at.line
        assert [3, 4] == [o.line for o in ruleset.not_loaded]
        assert ruleset.enabled is None

    def test_continue_flag(self) -> None:
        """After -c, a bad line is reported but loading goes on."""
        ruleset = loaded(f"-c\n-a always,exit -S nosuch\n{OTHER}\n")
        assert [3] == [r.origin.line for r in ruleset.exit]
        assert ruleset.stopped_at is None
        assert [2] == [i.origin.line for i in ruleset.issues]

    def test_duplicate_rule_exists(self) -> None:
        """The kernel refuses an identical rule."""
        ruleset = loaded(f"{RULE}\n{RULE}\n{OTHER}\n")
        assert "Error sending add rule data request (Rule exists)" == ruleset.issues[0].message
        assert [1] == [r.origin.line for r in ruleset.exit]

    def test_same_rule_other_key_is_not_a_duplicate(self) -> None:
        """Keys are part of a rule's identity."""
        ruleset = loaded(f"{RULE}\n{RULE.replace('-k k', '-k other')}\n")
        assert () == ruleset.issues

    def test_lock_blocks_later_lines(self) -> None:
        """After -e 2 every change fails with EPERM."""
        ruleset = loaded(f"-e 2\n{RULE}\n")
        assert () == ruleset.exit
        assert "Operation not permitted" in ruleset.issues[0].message
        assert ruleset.locked_at is not None

    def test_kernel_rejects_bit_operator_on_uid(self) -> None:
        """`uid&1` passes auditctl but the kernel says EINVAL."""
        ruleset = loaded(f"-a always,exit -F arch=b64 -S init_module -F uid&1 -k k\n{RULE}\n")
        assert "(Invalid argument)" in ruleset.issues[0].message
        assert () == ruleset.exit

    def test_kernel_rejects_ordering_against_unset(self) -> None:
        """`auid>=-1` becomes a loginuid_set test, which takes only = and !=."""
        ruleset = loaded("-a always,exit -F arch=b64 -S init_module -F auid>=-1 -k k\n")
        assert "(Invalid argument)" in ruleset.issues[0].message

    def test_missing_watch_parent_live(self) -> None:
        """Live, a watch whose parent directory is missing fails (ENOENT)."""
        ruleset = loaded("-w /nonexistent-dir-kmod-audit/x -p x -k k\n", live=True)
        assert "(No such file or directory)" in ruleset.issues[0].message


class TestLists:
    """Rule placement in the kernel lists."""

    def test_prepend(self) -> None:
        """-A puts the rule at the head of its list."""
        ruleset = loaded(f"{RULE}\n{OTHER.replace('-a ', '-A ')}\n")
        assert [2, 1] == [r.origin.line for r in ruleset.exit]

    def test_delete_all_and_by_key(self) -> None:
        """-D clears; -D -k clears only that key."""
        assert () == loaded(f"{RULE}\n-D\n").exit
        kept = loaded(f"{RULE}\n{OTHER.replace('-k k', '-k x')}\n-D -k k\n")
        assert [2] == [r.origin.line for r in kept.exit]

    def test_delete_rule(self) -> None:
        """-d removes the identical rule, and fails when there is none."""
        assert () == loaded(f"{RULE}\n{RULE.replace('-a ', '-d ')}\n").exit
        missing = loaded(f"{RULE.replace('-a ', '-d ')}\n")
        assert "(No such file or directory)" in missing.issues[0].message

    def test_listing_is_taken_as_loaded(self) -> None:
        """Captured `auditctl -l` output is the kernel's lists: nothing stops it."""
        text = (
            f"{RULE.replace('-k k', '-F key=k')}\n-a always,exit -F arch=b64 -S nosuch -F key=k\n"
        )
        source = parse_rules(text, path="l", machine=X86_64, syntax="listing")
        ruleset = load(source)
        assert ruleset.stopped_at is None
        assert 1 == len(ruleset.exit)
