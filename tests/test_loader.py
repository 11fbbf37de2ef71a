"""The loader models `auditctl -R` and the kernel's rule lists."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmod_audit.loader import _LIST_NAMES, RuleSet, _Lists, _load, load, without
from kmod_audit.rules import NOT_READ, THIS_MACHINE, Rule, Syntax, parse_rules
from kmod_audit.syscalls import MACHINES
from kmod_audit.system import CopyOf

X86_64 = MACHINES["x86_64"]
RULE = "-a always,exit -F arch=b64 -S init_module -k k"
OTHER = "-a always,exit -F arch=b64 -S delete_module -k k"
#: 3840 bytes of path in 255-byte components: one more component of 254 bytes makes 4095.
DEEP = ("/" + "a" * 255) * 15


def loaded(text: str, *, live: bool = False) -> RuleSet:
    """Load `text` as a rules file."""
    return load(
        parse_rules(text, path="t.rules", machine=X86_64, files=THIS_MACHINE if live else NOT_READ),
        files=THIS_MACHINE if live else NOT_READ,
    )


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


class TestUnreadFiles:
    """Without the target's files, a line needing one of its directories may be refused.

    It loads in one world and is refused in another (`without`).
    """

    def test_unknown_parent_loads_and_is_listed(self) -> None:
        """The watch loads, listed as unread; `without` refuses it and stops there."""
        ruleset = loaded(f"-w /opt/app/conf -p wa -k a\n{RULE}\n")
        assert [1] == [u.origin.line for u in ruleset.unread]
        assert "/opt/app" == ruleset.unread[0].path
        assert 2 == len(ruleset.exit)
        refused = without(ruleset, ruleset.unread[0])
        assert () == refused.exit
        assert "/opt/app" == refused.issues[0].unless
        assert refused.issues[0].stops

    def test_known_directories_are_not_unread(self) -> None:
        """Every target has /etc and /usr/bin, and the kmod binary's directory."""
        text = "-w /etc/passwd -p wa -k a\n-w /usr/bin/kmod -p x -k m\n-w /opt/x/kmod -p x\n"
        assert [3] == [u.origin.line for u in loaded(text).unread]
        files = NOT_READ.with_program("/opt/x/kmod")
        source = parse_rules(text, path="t.rules", machine=X86_64, files=files)
        assert () == load(source, files=files).unread

    def test_after_continue_only_always_rules_are_refused(self) -> None:
        """After `-c`, refusing the later `always` rules and keeping `never` is the worst."""
        text = (
            "-c\n-w /opt/a/f -p x -k a\n-a never,exit -F arch=b64 -S execve -F dir=/opt/b\n"
            "-a always,exit -F arch=b64 -S execve -F exe=/opt/c/tool -k c\n"
        )
        ruleset = loaded(text)
        assert [2, 3, 4] == [u.origin.line for u in ruleset.unread]
        refused = without(ruleset, ruleset.unread[0])
        assert [2, 4] == [i.origin.line for i in refused.issues]
        assert ["never"] == [r.action for r in refused.exit]

    def test_copy_of_a_root_resolves_links_inside_it(self, tmp_path: Path) -> None:
        """--root: absolute and relative links resolve in the copy, a loop is no directory."""
        (tmp_path / "usr" / "lib" / "app").mkdir(parents=True)
        (tmp_path / "lib").symlink_to("/usr/lib")
        (tmp_path / "opt").symlink_to("usr/lib")
        (tmp_path / "loop").symlink_to("loop")
        files = CopyOf(str(tmp_path))
        assert files.is_dir("/lib/app")
        assert files.is_dir("/opt/app/../app")
        assert not files.is_dir("/etc")
        assert not files.is_dir("/loop")
        assert files.exists("/loop")
        ruleset = load(
            parse_rules(
                "-w /lib/app/x -p wa\n-w /etc/x -p wa\n", path="t", machine=X86_64, files=files
            ),
            files=files,
        )
        assert [2] == [i.origin.line for i in ruleset.issues]
        assert () == ruleset.unread


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


class QuadraticLists(_Lists):
    """The loader's list bookkeeping before it was indexed: the oracle for the new one.

    Every look-up rescans the rules of the list and recomputes each identity, exactly as
    the loader did before "Rule exists", `-d` and `-D -k` went through the indexes.
    """

    def __init__(self) -> None:  # noqa: D107 - no state but the lists
        self.held: dict[str, list[Rule]] = {name: [] for name in _LIST_NAMES}

    def exists(self, rule: Rule, identity: tuple[object, ...]) -> bool:  # noqa: D102
        del identity
        return any(e.identity() == rule.identity() for e in self.held[rule.list])

    def add(self, rule: Rule, identity: tuple[object, ...], *, prepend: bool) -> None:  # noqa: D102
        del identity
        if prepend:
            self.held[rule.list].insert(0, rule)
        else:
            self.held[rule.list].append(rule)

    def delete(self, rule: Rule, identity: tuple[object, ...]) -> bool:  # noqa: D102
        del identity
        rules = self.held[rule.list]
        for index, existing in enumerate(rules):
            if existing.identity() == rule.identity():
                del rules[index]
                return True
        return False

    def delete_all(self, key: str | None) -> None:  # noqa: D102
        for name, rules in self.held.items():
            self.held[name] = [
                r for r in rules if key is not None and (not r.keys or key not in r.key)
            ]

    def lists(self) -> dict[str, list[Rule]]:  # noqa: D102
        return self.held


#: Rule bodies; `{k}` takes a key suffix (or none). Few enough that repeats are common.
_BODIES: Final = (
    "always,exit -F arch=b64 -S init_module{k}",
    "never,exit -F arch=b64 -S init_module{k}",
    "always,exit -F arch=b64 -S init_module,delete_module -F auid>=1000 -F auid!=-1{k}",
    "always,exit -F arch=b64 -S delete_module -F auid!=-1 -F auid>=1000{k}",
    "always,exit -F arch=b32 -S init_module{k}",
    "always,exit -F path=/usr/bin/kmod -F perm=x{k}",
    "always,exclude -F msgtype=CWD",
    "never,task",
    "always,user -F uid=0",
    "never,filesystem -F fstype=tracefs",
)
_KEYS: Final = ("", " -k k", " -k kmod", " -k mod -k k", " -F key=module", " -k x")


@st.composite
def _command_lines(draw: st.DrawFn) -> list[str]:
    """Lines adding, prepending and deleting a few pooled rules and watches, and -D lines.

    Each example draws from 2 or 3 rule bodies and keys, so the same rule comes back often.
    """
    bodies = draw(st.lists(st.sampled_from(_BODIES), min_size=1, max_size=3, unique=True))
    keys = draw(st.lists(st.sampled_from(_KEYS), min_size=1, max_size=2, unique=True))
    lines = []
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["-a", "-a", "-A", "-d", "-w", "-W", "-D", "other"]))
        key = draw(st.sampled_from(keys))
        if kind in {"-a", "-A", "-d"}:
            lines.append(f"{kind} {draw(st.sampled_from(bodies)).format(k=key)}")
        elif kind in {"-w", "-W"}:
            path = draw(st.sampled_from(["/etc/passwd", "/usr/bin/kmod"]))
            lines.append(f"{kind} {path} -p {draw(st.sampled_from(['wa', 'x']))}{key}")
        elif kind == "-D":
            lines.append(
                draw(st.sampled_from(["-D", "-D -k k", "-D -k mod", "-D -k kmod", "-D -k zz"]))
            )
        else:
            lines.append(
                draw(st.sampled_from(["-c", "-e 1", "-e 2", "-b 8192", "-a always,exit -S nosuch"]))
            )
    return lines


class TestIndexedLoader:
    """The indexed loader gives exactly what the rescanning one gave, line for line."""

    @settings(max_examples=500, deadline=None)
    @given(
        lines=_command_lines(),
        keep_going=st.booleans(),
        syntax=st.sampled_from(["rules", "listing"]),
    )
    def test_same_result_as_rescanning_loader(
        self, lines: list[str], keep_going: bool, syntax: Syntax
    ) -> None:
        """Rules, order, issues and stop line agree on random -a/-A/-d/-w/-W/-D/-D -k lines."""
        source = parse_rules(
            "".join(line + "\n" for line in lines),
            path="t.rules",
            machine=X86_64,
            syntax=syntax,
            files=NOT_READ,
        )
        expected = _load(source, files=NOT_READ, keep_going=keep_going, lists=QuadraticLists())
        assert expected == load(source, files=NOT_READ, keep_going=keep_going)

    def test_delete_takes_the_first_in_list_order(self) -> None:
        """`-d` removes the earliest copy in kernel order, a prepended one before the others."""
        ruleset = loaded(f"-a {RULE[3:]}\n-A {RULE[3:]}\n-A {RULE[3:]}\n-d {RULE[3:]}\n")
        assert () == ruleset.issues
        assert [2, 1] == [r.origin.line for r in ruleset.exit]

    def test_rule_exists_after_delete_by_key_and_re_add(self) -> None:
        """A rule deleted by `-D -k` can be added again; a second copy is then refused."""
        ruleset = loaded(f"{RULE}\n-D -k k\n{RULE}\n{RULE}\n")
        assert [3] == [r.origin.line for r in ruleset.exit]
        assert [4] == [i.origin.line for i in ruleset.issues]
