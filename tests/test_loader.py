"""The loader models `auditctl -R` and the kernel's rule lists."""

from __future__ import annotations

import pytest

from kmod_audit.loader import RuleSet, load
from kmod_audit.rules import parse_rules
from kmod_audit.syscalls import MACHINES

X86_64 = MACHINES["x86_64"]
RULE = "-a always,exit -F arch=b64 -S init_module -k k"
OTHER = "-a always,exit -F arch=b64 -S delete_module -k k"
#: 3840 bytes of path in 255-byte components: one more component of 254 bytes makes 4095.
DEEP = ("/" + "a" * 255) * 15


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


class TestKernelPathLimits:
    """The kernel resolves path=, dir= and exe= values: limits and `.`/`..` endings."""

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            ("-a always,exit -F path=/usr/bin/.. -F perm=x -k k", "(Invalid argument)"),
            ("-a always,exit -F path=/usr/bin/. -F perm=x -k k", "(Invalid argument)"),
            ("-a always,exit -F exe=/usr/bin/.. -S all -k k", "(Invalid argument)"),
            (f"-a always,exit -F path={DEEP}/{'b' * 255} -F perm=x -k k", "(File name too long)"),
            (f"-a always,exit -F path=/tmp/{'a' * 256} -F perm=x -k k", "(File name too long)"),
            (f"-a always,exit -F dir={DEEP}/{'b' * 255} -k k", "(File name too long)"),
            (f"-a always,exit -F exe=/tmp/{'a' * 256} -S all -k k", "(File name too long)"),
        ],
        ids=[
            "path-dotdot",
            "path-dot",
            "exe-dotdot",
            "path-4096",
            "path-component-256",
            "dir-4096",
            "exe-component-256",
        ],
    )
    def test_refused_offline(self, line: str, message: str) -> None:
        """Even without looking at this machine's files, the kernel's refusal is modelled."""
        ruleset = loaded(line + "\n")
        assert (True, ()) == (
            bool(ruleset.issues) and message in ruleset.issues[0].message,
            ruleset.exit,
        )

    @pytest.mark.parametrize(
        "line",
        [
            f"-a always,exit -F path={DEEP}/{'b' * 254} -F perm=x -k k",
            f"-a always,exit -F path=/tmp/{'a' * 255} -F perm=x -k k",
            "-a always,exit -F path=/usr/../usr/bin/kmod -F perm=x -k k",
            "-a always,exit -F path=//usr//bin/kmod -F perm=x -k k",
        ],
        ids=["path-4095", "component-255", "dotdot-inside", "double-slashes"],
    )
    def test_accepted_offline(self, line: str) -> None:
        """Just inside the limits, and `..` or `//` inside a path, the kernel accepts the rule."""
        assert () == loaded(line + "\n").issues

    def test_watch_ending_in_dotdot(self) -> None:
        """`-w /missing/..`: stat() fails, so a file watch, which the kernel refuses (EINVAL).

        Offline the model cannot stat, and takes it as the directory it is wherever it exists.
        """
        line = "-w /nonexistent-kmod-audit/.. -p x -k k\n"
        live, offline = loaded(line, live=True), loaded(line)
        assert (True, ()) == (
            "(Invalid argument)" in live.issues[0].message,
            offline.issues,
        )
