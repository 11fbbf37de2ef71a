"""The evaluator applies rules the way the kernel does (first match, u32 compares...)."""

from __future__ import annotations

import errno
import importlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from bench import PIGEONHOLE_ATTRIBUTES, pigeonhole
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from _support import FIXTURES
from kmod_audit.evaluate import (
    BEFORE_OPEN_NOTE,
    Context,
    Coverage,
    ExecFile,
    ExecOrder,
    Layout,
    NamedFile,
    RequiredEvent,
    _Evaluator,
    _identifies,
    _judge_event,
    _under,
    evaluate,
    exec_order,
)
from kmod_audit.generate import generate_lines
from kmod_audit.loader import RuleSet, load
from kmod_audit.profiles import select_profiles
from kmod_audit.rules import NOT_READ, THIS_MACHINE, parse_rules
from kmod_audit.syscalls import MACHINES, Abi
from oracles import enumerating
from oracles.enumerating import EVENT_BUDGET

evaluate_module = importlib.import_module("kmod_audit.evaluate")
X86_64 = MACHINES["x86_64"]
B64 = X86_64.native
B32 = X86_64.compat


def target(abi: Abi, syscall: str, program: ExecFile | None = None) -> RequiredEvent:
    """The target for `syscall` on `abi`."""
    number = abi.number(syscall)
    assert number is not None
    return RequiredEvent(abi, syscall, number, program)


def covered(text: str, tgt: RequiredEvent, ctx: Context | None = None) -> bool:
    """Whether `text` (a rules file) covers `tgt`."""
    ruleset = load(
        parse_rules(text, path="t.rules", machine=X86_64, files=NOT_READ), files=NOT_READ
    )
    return evaluate(ruleset, tgt, ctx or Context()).covered


GOOD = "-a always,exit -F arch=b64 -S init_module -F auid>=1000 -F auid!=unset -k k\n"
KMOD_WATCH = "-w /usr/bin/kmod -p x -k k\n"


class TestFirstMatch:
    """The first matching exit rule decides."""

    def test_always_with_key(self) -> None:
        """A matching always rule with a key covers."""
        assert covered(GOOD, target(B64, "init_module"))

    def test_never_first_suppresses(self) -> None:
        """A never rule before the good one wins."""
        assert not covered(
            "-a never,exit -F arch=b64 -S init_module\n" + GOOD, target(B64, "init_module")
        )

    def test_prepend_reorders(self) -> None:
        """-A puts a rule first even when written last."""
        text = GOOD + "-A never,exit -F arch=b64 -S init_module\n"
        assert not covered(text, target(B64, "init_module"))

    def test_never_for_other_users_is_harmless(self) -> None:
        """A never rule for auid < 1000 does not touch real users."""
        text = "-a never,exit -F arch=b64 -S init_module -F auid<1000\n" + GOOD
        assert covered(text, target(B64, "init_module"))

    def test_earlier_keyless_rule_steals_the_event(self) -> None:
        """An earlier always rule without a key decides first, so no key is recorded."""
        text = "-a always,exit -F arch=b64 -S init_module\n" + GOOD
        ruleset = load(parse_rules(text, path="t", machine=X86_64))
        coverage = evaluate(ruleset, target(B64, "init_module"), Context())
        assert not coverage.covered
        assert coverage.outcome is not None
        assert "no-key" == coverage.outcome.verdict


class TestKernelComparisons:
    """Field semantics follow kernel/auditsc.c, including its quirks."""

    def test_success_ge_1_matches_failures_too(self) -> None:
        """`success>=1` compares return_valid (1 ok, 2 fail) >= 1: it matches both outcomes."""
        text = "-a always,exit -F arch=b64 -S init_module -F success>=1 -k k\n"
        assert covered(text, target(B64, "init_module"))

    def test_success_1_misses_failures(self) -> None:
        """`success=1` records only successful calls."""
        text = "-a always,exit -F arch=b64 -S init_module -F success=1 -k k\n"
        assert not covered(text, target(B64, "init_module"))

    def test_exit_is_compared_unsigned(self) -> None:
        """`exit<0` never matches: the kernel compares the return code as u32."""
        text = "-a always,exit -F arch=b64 -S init_module -F exit<0 -k k\n"
        ruleset = load(parse_rules(text, path="t", machine=X86_64))
        coverage = evaluate(ruleset, target(B64, "init_module"), Context())
        assert not coverage.covered

    def test_auid_unset_is_loginuid_set(self) -> None:
        """`auid!=-1` means "login uid set", covering every real user."""
        text = "-a always,exit -F arch=b64 -S init_module -F auid!=-1 -k k\n"
        assert covered(text, target(B64, "init_module"))

    def test_uid_filter_misses_sudo(self) -> None:
        """`uid>=1000` misses a user running `sudo modprobe` (uid 0)."""
        text = "-a always,exit -F arch=b64 -S init_module -F uid>=1000 -k k\n"
        assert not covered(text, target(B64, "init_module"))

    def test_field_compare_auid_uid(self) -> None:
        """`-C auid!=uid` misses users acting as themselves."""
        text = "-a always,exit -F arch=b64 -S init_module -C auid!=uid -k k\n"
        assert not covered(text, target(B64, "init_module"))

    def test_bitmask_on_argument(self) -> None:
        """`a1&1` matches only some argument values."""
        text = "-a always,exit -F arch=b64 -S init_module -F a1&1 -k k\n"
        assert not covered(text, target(B64, "init_module"))

    def test_uid_min_from_context(self) -> None:
        """With uid-min 500, `auid>=1000` leaves users 500..999 out."""
        assert not covered(GOOD, target(B64, "init_module"), Context(uid_min=500))

    def test_archless_rule_matches_the_number_on_b32(self) -> None:
        """A rule without arch matches its numbers on every ABI (175 is not b32 init_module)."""
        text = "-a always,exit -S init_module -k k\n"
        assert covered(text, target(B64, "init_module"))
        assert not covered(text, target(B32, "init_module"))


class TestOtherLists:
    """The task and exclude lists can silence records."""

    def test_task_never(self) -> None:
        """`-a never,task` stops syscall auditing of every task."""
        assert not covered("-a never,task\n" + GOOD, target(B64, "init_module"))

    def test_task_never_on_ids_may_exempt(self) -> None:
        """A task exemption for auid 0 may exempt a user's task: ids are compared at fork."""
        text = "-a never,task -F auid=0\n" + GOOD
        ruleset = load(
            parse_rules(text, path="t.rules", machine=X86_64, files=NOT_READ), files=NOT_READ
        )
        coverage = evaluate(ruleset, target(B64, "init_module"), Context())
        expected = (
            "b64 init_module (auid=1000, success=no): the task is never audited because of "
            "t.rules:1 `-a never,task -F auid=0` (it may match: kmod-audit cannot evaluate "
            "auid=0 when the task was created)"
        )
        assert (False, expected) == (coverage.covered, coverage.reason())

    def test_task_always_without_key(self) -> None:
        """A keyless `always` task rule makes every record keyless, whatever the exit rules."""
        text = GOOD + "-a always,task -F auid!=unset\n"
        ruleset = load(
            parse_rules(text, path="t.rules", machine=X86_64, files=NOT_READ), files=NOT_READ
        )
        coverage = evaluate(ruleset, target(B64, "init_module"), Context())
        expected = (
            "b64 init_module (auid=1000, success=no): every syscall of the task is recorded "
            "without a key because of t.rules:2 `-a always,task -F auid!=unset` (an `always` "
            "task rule: no exit rule applies to the task) (it may match: kmod-audit cannot "
            "evaluate auid!=-1 when the task was created)"
        )
        assert (False, expected) == (coverage.covered, coverage.reason())

    def test_task_always_with_key(self) -> None:
        """A keyed `always` task rule records every syscall with its key, even with no exit rule."""
        text = "-a always,task -F exe!=/usr/bin/kmod -F key=t\n"
        ruleset = load(
            parse_rules(text, path="t.rules", machine=X86_64, files=NOT_READ), files=NOT_READ
        )
        coverage = evaluate(ruleset, target(B32, "finit_module"), Context())
        expected = (
            "b32 finit_module: recorded by t.rules:1 "
            "`-a always,task -F exe!=/usr/bin/kmod -F key=t`"
        )
        assert (True, expected) == (coverage.covered, coverage.reason())

    def test_task_always_on_ids_does_not_cover(self) -> None:
        """A keyed `always` task rule on ids covers nothing alone: a task's ids change after fork.

        A task forked as uid 1000 that runs a setuid program, or a login session's own
        process that writes its loginuid, is not in the record state at its module syscall.
        """
        text = "-a always,task -F uid=0 -F exe!=/usr/bin/kmod -F key=t\n"
        text += GOOD.replace("-k k", "-F uid!=0 -k k")
        assert not covered(text, target(B64, "init_module"))
        assert covered(text.replace(" -F uid!=0", ""), target(B64, "init_module"))

    def test_task_always_key_outranks_the_exit_rules(self) -> None:
        """With `--key`, the task rule's key is the records' key, not the matching exit rule's."""
        text = GOOD + "-a always,task -F exe!=/x -k t\n"
        ruleset = load(
            parse_rules(text, path="t.rules", machine=X86_64, files=NOT_READ), files=NOT_READ
        )
        coverage = evaluate(ruleset, target(B64, "init_module"), Context(key="k"))
        expected = (
            "b64 init_module (auid=1000, success=no): every syscall of the task is recorded "
            "with the key 't' of t.rules:2 `-a always,task -F exe!=/x -k t` "
            "(an `always` task rule: no exit rule applies to the task)"
        )
        assert (False, expected) == (coverage.covered, coverage.reason())
        assert covered(text, target(B64, "init_module"), Context(key="t"))

    def test_task_first_match_decides(self) -> None:
        """The first task rule an event matches decides; a later keyless `always` rule is moot."""
        text = "-a always,task -F exe!=/x -F key=t\n-a never,task\n-a always,task\n"
        assert covered(text, target(B64, "init_module"))
        text = "-a never,task -F exe!=/x\n-a always,task -F exe!=/x -F key=t\n"
        ruleset = load(
            parse_rules(text, path="t.rules", machine=X86_64, files=NOT_READ), files=NOT_READ
        )
        coverage = evaluate(ruleset, target(B64, "init_module"), Context())
        expected = (
            "b64 init_module (auid=1000, success=no): the task is never audited because of "
            "t.rules:1 `-a never,task -F exe!=/x`"
        )
        assert (False, expected) == (coverage.covered, coverage.reason())

    def test_task_always_for_other_users(self) -> None:
        """A keyless `always` task rule for auid 0 may still take a user's task (set at fork)."""
        assert not covered("-a always,task -F auid=0\n" + GOOD, target(B64, "init_module"))

    def test_task_exe_is_not_the_new_task(self) -> None:
        """At fork, `exe=` never matches a task rule and `exe!=` always does."""
        exe = target(B64, "execve", ExecFile("/usr/bin/kmod"))
        for tgt in (target(B64, "init_module"), exe):
            assert covered("-a never,task -F exe=/usr/bin/kmod\n" + GOOD + KMOD_WATCH, tgt)
            assert not covered("-a never,task -F exe!=/usr/bin/kmod\n" + GOOD + KMOD_WATCH, tgt)

    def test_exclude_syscall_records(self) -> None:
        """Excluding SYSCALL records drops the evidence."""
        assert not covered(
            GOOD + "-a always,exclude -F msgtype=SYSCALL\n", target(B64, "init_module")
        )


class TestKeys:
    """Pinned keys."""

    def test_pinned_key_among_several(self) -> None:
        """A pinned key is found among a rule's keys."""
        text = "-a always,exit -F arch=b64 -S init_module -k a -k b\n"
        assert covered(text, target(B64, "init_module"), Context(key="b"))
        assert not covered(text, target(B64, "init_module"), Context(key="c"))


class TestUnknownFields:
    """Conditions we cannot evaluate are treated conservatively."""

    def test_unknown_always_does_not_cover(self) -> None:
        """An always rule on an SELinux label may not match."""
        text = "-a always,exit -F arch=b64 -S init_module -F subj_type=x_t -k k\n"
        assert not covered(text, target(B64, "init_module"))

    def test_unknown_never_may_suppress(self) -> None:
        """A never rule on an SELinux label may match first."""
        text = "-a never,exit -F arch=b64 -S init_module -F subj_type=x_t\n" + GOOD
        ruleset = load(parse_rules(text, path="t", machine=X86_64))
        coverage = evaluate(ruleset, target(B64, "init_module"), Context())
        assert coverage.outcome is not None
        assert ("subj_type=x_t",) == coverage.outcome.uncertain


class TestExecutions:
    """Executions of kmod: watches on the real file fire, on symlinks they do not."""

    @pytest.fixture
    def layout(self, tmp_path: Path) -> tuple[Path, ExecFile]:
        """A fake kmod binary with an insmod symlink next to it, judged live."""
        binary = tmp_path / "bin" / "kmod"
        binary.parent.mkdir()
        binary.write_text("#!/bin/sh\n")
        (tmp_path / "sbin").mkdir()
        os.symlink(binary, tmp_path / "sbin" / "insmod")
        return tmp_path, ExecFile.at(str(binary), files=THIS_MACHINE)

    def judge(self, text: str, program: ExecFile) -> bool:
        """Whether `text` covers execve of `program` on b64 (live)."""
        ruleset = load(
            parse_rules(text, path="t", machine=X86_64, files=THIS_MACHINE), files=THIS_MACHINE
        )
        return evaluate(ruleset, target(B64, "execve", program), Context()).covered

    def test_watch_real_file(self, layout: tuple[Path, ExecFile]) -> None:
        """`-w <real kmod> -p x` covers."""
        root, program = layout
        assert self.judge(f"-w {root}/bin/kmod -p x -k k\n", program)

    def test_watch_symlink(self, layout: tuple[Path, ExecFile]) -> None:
        """`-w <symlink> -p x` does not cover (the link itself is watched)."""
        root, program = layout
        assert not self.judge(f"-w {root}/sbin/insmod -p x -k k\n", program)

    def test_watch_without_x(self, layout: tuple[Path, ExecFile]) -> None:
        """`-p wa` does not fire on execution."""
        root, program = layout
        assert not self.judge(f"-w {root}/bin/kmod -p wa -k k\n", program)

    def test_directory_watch(self, layout: tuple[Path, ExecFile]) -> None:
        """A `dir=` tree watch with perm=x covers programs inside it."""
        root, program = layout
        text = f"-a always,exit -F dir={root}/bin -F perm=x -k k\n"
        assert self.judge(text, program)

    def test_exe_field(self, layout: tuple[Path, ExecFile]) -> None:
        """`exe=` the real binary covers its successful executions only.

        A failed exec leaves the caller running its own program, which is what `exe=`
        compares at syscall exit; a rule for the failures completes the cover.
        """
        root, program = layout
        text = f"-a always,exit -F arch=b64 -S execve -F exe={root}/bin/kmod -k k\n"
        assert not self.judge(text, program)
        failures = "-a always,exit -F arch=b64 -S execve -F success=0 -k k\n"
        assert self.judge(text + failures, program)
        other = f"-a always,exit -F arch=b64 -S execve -F exe={root}/sbin/insmod -k k\n"
        assert not self.judge(other + failures, program)

    def test_module_syscalls_ignore_watches(self) -> None:
        """A watch never records a module syscall (no path names are involved)."""
        assert not covered("-w /usr/bin/kmod -p x -k k\n", target(B64, "init_module"))


KMOD_EXEC = target(B64, "execve", ExecFile("/usr/bin/kmod"))
EXECVE = "-a always,exit -F arch=b64 -S execve"


def _reason(text: str, tgt: RequiredEvent = KMOD_EXEC, ctx: Context | None = None) -> str:
    ruleset = load(
        parse_rules(text, path="t.rules", machine=X86_64, files=NOT_READ), files=NOT_READ
    )
    return evaluate(ruleset, tgt, ctx or Context(live=False)).reason()


class TestExecutableAtExit:
    """`exe=` compares the executable at syscall exit: the program, or the caller's.

    After a failed exec the caller runs on (TestExecutionsInTheKernel in test_kernel.py).
    """

    def test_exe_equal_misses_failed_executions(self) -> None:
        """`exe=kmod` does not record a failed exec of kmod by another program."""
        expected = "b64 execve of /usr/bin/kmod (auid=1000, success=no): no loaded rule matches it"
        assert expected == _reason(f"{EXECVE} -F exe=/usr/bin/kmod -k mod\n")

    def test_exe_not_equal_misses_successful_executions(self) -> None:
        """With failures recorded by `exe!=kmod`, the successful exec is the one missed."""
        text = f"{EXECVE} -F exe!=/usr/bin/kmod -k mod\n{EXECVE} -F success=0 -k k\n"
        expected = "b64 execve of /usr/bin/kmod (auid=1000, success=yes): no loaded rule matches it"
        assert expected == _reason(text)

    def test_exe_of_the_caller_is_shown(self) -> None:
        """A failed exec by a process running kmod itself is not matched by `exe!=kmod`."""
        expected = (
            "b64 execve of /usr/bin/kmod (auid=1000, success=no, exe=/usr/bin/kmod, the "
            "caller's own program, which a failed exec leaves running): no loaded rule matches it"
        )
        assert expected == _reason(f"{EXECVE} -F exe!=/usr/bin/kmod -k mod\n")


class TestInterpreters:
    """A successful exec names the program's interpreters too (the ELF loader)."""

    def test_never_tree_over_the_loader_suppresses_successful_executions(self) -> None:
        """`-A never,exit -F dir=<loader's directory> -F perm=x` hides successful execs."""
        loaded = target(
            B64, "execve", ExecFile("/usr/bin/kmod", interpreters=(ExecFile("/lib64/ld.so"),))
        )
        text = f"-A never,exit -F dir=/lib64 -F perm=x\n{EXECVE} -k k\n"
        expected = (
            "b64 execve of /usr/bin/kmod (auid=1000, success=yes): first matching rule is "
            "t.rules:1 `-A never,exit -F dir=/lib64 -F perm=x` (action never)"
        )
        assert expected == _reason(text, loaded)


class TestInodePassKeepsTheKey:
    """Watches are matched after the syscall rules; a keyless one keeps their key."""

    def test_keyless_watch_before_a_keyed_syscall_rule_covers(self) -> None:
        """`-w kmod -p x` (no key) first, then a keyed execve rule: recorded with its key."""
        text = f"-w /usr/bin/kmod -p x\n{EXECVE} -k k\n"
        expected = f"b64 execve of /usr/bin/kmod: recorded by t.rules:2 `{EXECVE} -k k`"
        assert expected == _reason(text)

    def test_keyed_never_rule_lends_its_key(self) -> None:
        """The key of a later `never` syscall rule is the key the watch's record carries."""
        assert covered(
            "-w /usr/bin/kmod -p x\n-a never,exit -F arch=b64 -S execve -k nk\n", KMOD_EXEC
        )
        pinned = Context(key="k", live=False)
        assert not covered(
            "-w /usr/bin/kmod -p x\n-a never,exit -F arch=b64 -S execve -k nk\n", KMOD_EXEC, pinned
        )

    def test_keyless_watch_without_a_lender(self) -> None:
        """A failed exec that no keyed syscall rule matches is recorded without a key."""
        text = f"-w /usr/bin/kmod -p x\n{EXECVE} -F success=1 -k k\n"
        expected = (
            "b64 execve of /usr/bin/kmod (auid=1000, success=no): first matching rule is the "
            "watch t.rules:1 `-w /usr/bin/kmod -p x`, which has no key, and no syscall rule "
            "matches it to lend it one"
        )
        assert expected == _reason(text)

    def test_tree_watch_stays_on_the_exit_list(self) -> None:
        """A keyless `dir=` tree watch first decides: no key (it is not in the inode hash)."""
        text = f"-a always,exit -F dir=/usr/bin -F perm=x\n{EXECVE} -k k\n"
        assert not covered(text, KMOD_EXEC)

    def test_never_before_a_watch_still_suppresses(self) -> None:
        """Rule priority keeps list order: a `never` syscall rule before a watch wins."""
        assert not covered(
            "-a never,exit -F arch=b64 -S execve\n-w /usr/bin/kmod -p x -k w\n", KMOD_EXEC
        )


#: kmod as read on a live machine: a root-owned regular file, its ELF loader likewise.
ROOT_KMOD = target(
    B64,
    "execve",
    ExecFile("/usr/bin/kmod", names=(NamedFile(0, 0, 0o100755), NamedFile(0, 0, 0o100755))),
)
#: kmod owned by uid 1000 (its loader still root's).
USER_KMOD = target(
    B64,
    "execve",
    ExecFile("/usr/bin/kmod", names=(NamedFile(1000, 100, 0o100755), NamedFile(0, 0, 0o100755))),
)
PATH_RULE = "-a always,exit -F path=/usr/bin/kmod -F perm=x"


class TestConditionsOnTheFile:
    """`obj_uid`, `obj_gid`, `filetype` and `-C ...obj_uid` are decided from the files."""

    @pytest.mark.parametrize(
        "condition",
        [
            "-F obj_uid=0",
            "-F obj_gid=0",
            "-F filetype=file",
            "-F filetype!=dir",
            "-C auid!=obj_uid",
        ],
    )
    def test_true_on_the_file_covers(self, condition: str) -> None:
        """A condition the root-owned regular kmod file meets does not hinder coverage."""
        assert covered(f"{PATH_RULE} {condition} -k k\n", ROOT_KMOD)

    @pytest.mark.parametrize(
        "condition", ["-F obj_uid=1000", "-F filetype=dir", "-F filetype!=file", "-C auid=obj_uid"]
    )
    def test_false_on_every_file_does_not_suppress(self, condition: str) -> None:
        """A `never` rule whose condition no named file meets never matches."""
        text = f"-a never,exit -F arch=b64 -S execve {condition}\n{PATH_RULE} -k k\n"
        assert covered(text, ROOT_KMOD)

    def test_interpreter_may_match_after_success(self) -> None:
        """`obj_uid!=1000` on a user-owned kmod matches only through the loader: unknown."""
        text = f"-a never,exit -F arch=b64 -S execve -F obj_uid!=1000\n{PATH_RULE} -k k\n"
        assert not covered(text, USER_KMOD)
        loader = f"-a never,exit -F arch=b64 -S execve -F obj_uid=0\n{PATH_RULE} -k k\n"
        assert not covered(loader, USER_KMOD)

    def test_offline_says_why(self) -> None:
        """Without the machine's files the worst case counts, and the reason says so."""
        reason = _reason(f"{PATH_RULE} -F obj_uid=0 -k k\n")
        assert reason.endswith(
            "; the owner and type of /usr/bin/kmod (and of its interpreter) are read only on "
            "the live machine or in a copy of its files (--root DIR), so the worst case counts "
            "here"
        )


class TestConditionsOnNoFile:
    """A module syscall names no file: a condition on one never holds, but `filetype!=`."""

    @pytest.mark.parametrize(
        ("condition", "matches"),
        [
            ("-F filetype=file", False),
            ("-F filetype!=file", True),
            ("-F filetype!=dir", True),
            ("-F obj_uid!=0", False),
            ("-F obj_gid=0", False),
            ("-F inode!=1", False),
            ("-F devmajor!=8", False),
            ("-F saddr_fam!=2", False),
            ("-C auid!=obj_uid", False),
        ],
    )
    def test_a_never_rule_matches_as_the_kernel_finds(self, condition: str, matches: bool) -> None:
        """`filetype!=` negates a search that finds nothing; the other comparisons find none.

        The kernel judges these in tests/test_kernel_differential.py (`OBJECT_FIELDS`).
        """
        text = f"-a never,exit -F arch=b64 -S init_module,finit_module {condition}\n{GOOD}"
        text += "-a always,exit -F arch=b64 -S finit_module -k k\n"
        for name in ("init_module", "finit_module"):
            for judge in (evaluate, enumerating.evaluate):
                coverage = judge(_ruleset(text), target(B64, name), Context())
                assert (not matches, None) == (coverage.covered, coverage.undecided), judge


class TestDirectoryLinks:
    """Without the target's files, a path may name kmod through a directory link."""

    @pytest.mark.parametrize(
        ("judge", "path", "layout", "expected"),
        [
            (_identifies, "/usr/bin/kmod", "split", True),
            (_identifies, "/bin/kmod", "split", False),
            (_identifies, "/bin/kmod", "merged", True),
            (_identifies, "/usr/sbin/kmod", "merged", False),
            (_identifies, "/usr/sbin/kmod", "merged-sbin", True),
            (_identifies, "/opt/bin/kmod", "merged", None),
            (_identifies, "/usr/local/bin/kmod", "split", None),
            (_identifies, "/opt/bin/modprobe", "merged", False),
            (_under, "/usr/bin", "split", True),
            (_under, "/usr", "split", True),
            (_under, "/bin", "merged", False),
            (_under, "/x/bin", "merged", None),
            (_under, "/x/usr", "split", None),
            (_under, "/x/lib", "split", False),
            (_under, "/usr/local/bin", "split", None),
        ],
    )
    def test_identifies_and_under(
        self,
        judge: Callable[[str, ExecFile, Context], bool | None],
        path: str,
        layout: Layout,
        expected: bool | None,
    ) -> None:
        """The layout decides /bin, /sbin and /lib*; another directory is not known.

        `_identifies`: a path of kmod's name; `_under`: a tree watch on a directory of the
        name of one of kmod's directories.
        """
        program = ExecFile.at("/usr/bin/kmod", files=NOT_READ)
        assert expected is judge(path, program, Context(live=False, layout=layout))

    def test_live_knows(self) -> None:
        """Live, a path of kmod's name elsewhere is simply another file."""
        program = ExecFile("/usr/bin/kmod")
        assert _identifies("/opt/bin/kmod", program, Context()) is False


def _ruleset(text: str) -> RuleSet:
    return load(parse_rules(text, path="t.rules", machine=X86_64, files=NOT_READ), files=NOT_READ)


#: The issue 7.7 file: the never rule is only for auid unset, which is out of scope.
NEVER_UNSET_MANY_FIELDS = (FIXTURES / "rules" / "never-unset-many-fields.pass.rules").read_text()
#: A never rule that can match in-scope events, with more conditions than the budget allows.
OVER_BUDGET = (
    "-a never,exit -F arch=b64 -S all -F auid>=1000 -F a0=0x2 -F a1=0x10 -F a2=0x20 "
    "-F a3=0x40 -F exit=-EPERM -F pid>1 -k odd\n" + GOOD
)


class TestExactness:
    """Conditions and constants never make the evaluation give up (issues 7.7 and 9)."""

    @pytest.mark.parametrize(
        "tgt",
        [target(abi, name) for abi in (B64, B32) for name in ("init_module", "finit_module")],
        ids=str,
    )
    def test_never_rule_for_auid_unset_is_not_a_limit(self, tgt: RequiredEvent) -> None:
        """The issue 7.7 file covers every module syscall, on both ABIs, exactly."""
        for judge in (evaluate, enumerating.evaluate):
            coverage = judge(_ruleset(NEVER_UNSET_MANY_FIELDS), tgt, Context())
            assert (True, None) == (coverage.covered, coverage.undecided)
        assert enumerating.evaluate(_ruleset(NEVER_UNSET_MANY_FIELDS), tgt, Context()).events <= 8

    def test_conditions_true_for_every_user_add_no_events(self) -> None:
        """`auid>=1000`, `auid!=unset` and the target's arch do not multiply the events."""
        coverage = enumerating.evaluate(_ruleset(GOOD), target(B64, "init_module"), Context())
        assert coverage.covered
        assert 4 == coverage.events  # auid 1000 and 4294967294, success yes and no

    def test_uid_constant_cuts_the_auid_range(self) -> None:
        """`never uid=5000` hides user 5000 acting as themselves (uid = auid = 5000)."""
        text = "-a never,exit -F arch=b64 -S all -F uid=5000\n" + GOOD
        coverage = evaluate(_ruleset(text), target(B64, "init_module"), Context())
        assert not coverage.covered
        assert coverage.outcome is not None
        assert "never" == coverage.outcome.verdict
        assert coverage.event is not None
        assert (5000, 5000) == (coverage.event["auid"], coverage.event["uid"])

    def test_enumeration_over_budget_is_undecided(self) -> None:
        """The oracle gives up past its budget, naming the rule, never with a verdict."""
        tgt = target(B64, "init_module")
        coverage = enumerating.evaluate(_ruleset(OVER_BUDGET), tgt, Context())
        assert coverage.undecided is not None
        assert not coverage.covered
        assert coverage.outcome is None
        assert f"more than the {EVENT_BUDGET}" in coverage.undecided
        assert "t.rules:1" in coverage.undecided
        assert coverage.reason().startswith("b64 init_module: kmod-audit cannot decide: ")

    def test_many_conditions_are_decided(self) -> None:
        """The file the enumeration gave up on is judged: the never rule hides some calls."""
        coverage = evaluate(_ruleset(OVER_BUDGET), target(B64, "init_module"), Context())
        assert None is coverage.undecided
        assert not coverage.covered
        assert coverage.outcome is not None
        assert "never" == coverage.outcome.verdict
        assert coverage.event is not None
        assert (2, 0x10, 0x20, 0x40) == tuple(coverage.event[a] for a in ("a0", "a1", "a2", "a3"))
        assert "exit=-EPERM" in coverage.reason()

    def test_work_limit_is_undecided(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Past the work limit the target is undecided (exit 3), never a verdict."""
        monkeypatch.setattr(evaluate_module, "WORK_LIMIT", 1)
        coverage = evaluate(_ruleset(OVER_BUDGET), target(B64, "init_module"), Context())
        assert coverage.undecided is not None
        assert (False, None) == (coverage.covered, coverage.outcome)
        assert "t.rules:1" in coverage.undecided
        assert coverage.reason().startswith("b64 init_module: kmod-audit cannot decide: ")

    @pytest.mark.parametrize(
        ("shape", "verdict"),
        [
            (
                "\n".join(
                    f"-a always,exit -S all -F auid>={2000 + 10 * i} -F auid<{2005 + 10 * i}"
                    f" -k r{i}"
                    for i in range(300)
                ),
                "covered",
            ),
            ("\n".join(f"-a never,exit -S all -F exe=/opt/x/bin{i}" for i in range(300)), "never"),
            (
                "\n".join(
                    f"-a never,exit -S all -F a0={10 * i} -F a1={10 * i + 1} -F gid={i}"
                    f" -F pid={100 + i} -F sessionid={i + 5}"
                    for i in range(300)
                ),
                "never",
            ),
            (
                "\n".join(
                    f"-a always,exit -F arch=b64 -S init_module -F a0!={i} -F a1>={i + 2}"
                    f" -F a2<{100 + i} -F a3!={7 * i} -F exit!=-{i + 1} -F auid>={1000 + i}"
                    f" -F uid!={5000 + i} -k k{i}"
                    for i in range(9)
                ),
                "covered",
            ),
        ],
        ids=["auid-ranges", "exe-never", "filler", "wmax"],
    )
    def test_constructed_shapes_are_decided(self, shape: str, verdict: str) -> None:
        """The issue 9 shapes that the enumeration could not afford get a verdict."""
        coverage = evaluate(_ruleset(shape + "\n" + GOOD), target(B64, "init_module"), Context())
        assert None is coverage.undecided
        outcome = coverage.outcome
        assert verdict == ("covered" if outcome is None else outcome.verdict)

    @pytest.mark.parametrize("covering", [GOOD, ""], ids=["then-covered", "then-nothing"])
    @pytest.mark.parametrize(
        "line",
        [
            (
                "-a always,exit -F arch=b64 -S init_module -F a0!={i} -F a1>={b} -F a2<{c}"
                " -F a3!={d} -F exit!=-{e} -F auid>={f} -F uid!={g} -k w{i}"
            ),
            (
                "-a always,exit -F arch=b64 -S init_module -F a0={i} -F a1={i} -F a2={i}"
                " -F a3={i} -F uid={g} -F gid={g} -F pid={g} -k f{i}"
            ),
        ],
        ids=["wmax", "filler"],
    )
    def test_every_keyed_rule_of_a_long_list_is_reached(self, line: str, covering: str) -> None:
        """1,000 keyed rules that each hold events of their own are all listed, in order.

        What the last rule (or the end of the list) still receives is judged exactly: the
        covering rule records it, or the first event that escapes all 1,000 is reported.
        """
        rules = [
            line.format(i=i, b=100 + i, c=200 + i, d=300 + i, e=1 + i % 30, f=1000 + i, g=2000 + i)
            for i in range(1000)
        ]
        ruleset, tgt = _ruleset("\n".join(rules) + "\n" + covering), target(B64, "init_module")
        coverage = evaluate(ruleset, tgt, Context())
        assert None is coverage.undecided
        keys = [rule.keys[0] for rule in coverage.rules]
        assert keys[:1000] == [rule.split(" -k ")[1] for rule in rules]
        if covering:
            assert (True, ["k"]) == (coverage.covered, keys[1000:])
            return
        assert coverage.outcome is not None
        assert "unmatched" == coverage.outcome.verdict
        assert {"unmatched"} == _confirmed(ruleset, tgt, Context(), coverage)

    @pytest.mark.parametrize(
        ("lines", "listed"),
        [
            (("a0<10", "a0>=10", ""), "ab"),
            (("a0<10 -F a1<10", "a0>=10 -F a1>=10", ""), "abc"),
            (("auid<2000 -F a0!=5", "auid>=2000 -F a0!=5", "a0=5", ""), "abc"),
        ],
        ids=["two-halves-hide-the-third", "two-quadrants-leave-two", "three-parts"],
    )
    def test_rule_hidden_by_several_earlier_rules(
        self, lines: tuple[str, ...], listed: str
    ) -> None:
        """A keyed rule is listed only when some event reaches it, as the oracle finds."""
        text = "".join(
            f"-a always,exit -F arch=b64 -S init_module{' -F ' + c if c else ''} -k {'abcd'[i]}\n"
            for i, c in enumerate(lines)
        )
        tgt = target(B64, "init_module")
        for judge in (evaluate, enumerating.evaluate):
            coverage = judge(_ruleset(text), tgt, Context())
            assert (True, listed) == (coverage.covered, "".join(r.keys[0] for r in coverage.rules))


#: Far below what the search that cut boxes apart needed for 8 attributes (millions of steps);
#: the pigeonholes take thousands.
PIGEONHOLE_WORK = 10_000
#: The pigeonhole attributes in the enumeration's order (the order of a counterexample).
_RANKED_ATTRIBUTES = ("gid", "a0", "a1", "a2", "a3", "pid", "ppid", "pers", "sessionid")


class TestPigeonhole:
    """Rule i excludes the value i on each of k attributes (issue 16 item 3).

    Every event is recorded when there are more such rules than attributes (k values can
    not avoid k+1 constants), and one is not when there are as many: the cover question
    is decided by counting and by classes of values, not by cutting boxes apart.
    """

    @pytest.fixture(autouse=True)
    def low_limit(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Lower the work limit: the verdicts must come from the structure, not a search."""
        monkeypatch.setattr(evaluate_module, "WORK_LIMIT", PIGEONHOLE_WORK)

    @pytest.mark.parametrize("attributes", range(3, 10))
    @pytest.mark.parametrize(
        "syscall", [(B64, "init_module"), (B32, "finit_module")], ids=["b64", "b32"]
    )
    def test_one_rule_more_than_attributes_covers(
        self, attributes: int, syscall: tuple[Abi, str]
    ) -> None:
        """One rule more records every event, each rule some event of its own, in order."""
        ruleset = _ruleset(pigeonhole(attributes, attributes + 1))
        coverage = evaluate(ruleset, target(*syscall), Context())
        assert None is coverage.undecided
        assert coverage.covered
        keys = [f"m{i}" for i in range(1, attributes + 2)]
        assert keys == [rule.keys[0] for rule in coverage.rules]

    @pytest.mark.parametrize("attributes", range(3, 10))
    def test_as_many_rules_as_attributes_leave_an_event(self, attributes: int) -> None:
        """As many rules as attributes: the first event left holds 1, 2, ...; no rule matches."""
        ruleset, tgt = _ruleset(pigeonhole(attributes, attributes)), target(B64, "init_module")
        coverage = evaluate(ruleset, tgt, Context())
        assert None is coverage.undecided
        assert coverage.outcome is not None
        assert (False, "unmatched") == (coverage.covered, coverage.outcome.verdict)
        named = set(PIGEONHOLE_ATTRIBUTES[:attributes])
        expected = {
            name: value
            for value, name in enumerate((n for n in _RANKED_ATTRIBUTES if n in named), 1)
        }
        assert coverage.event is not None
        assert expected == {name: coverage.event[name] for name in named}
        assert {"unmatched"} == _confirmed(ruleset, tgt, Context(), coverage)

    @pytest.mark.parametrize("rules", [3, 4])
    def test_oracle_agrees_on_three_attributes(self, rules: int) -> None:
        """Where the enumeration affords it, it gives the same verdict and counterexample."""
        ruleset, tgt = _ruleset(pigeonhole(3, rules)), target(B64, "delete_module")
        oracle = enumerating.evaluate(ruleset, tgt, Context())
        assert None is oracle.undecided
        coverage = evaluate(ruleset, tgt, Context())
        assert (oracle.covered, oracle.rules) == (coverage.covered, coverage.rules)
        assert oracle.reason() == coverage.reason()

    def test_past_the_time_limit_is_undecided_naming_the_rule(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With no time to judge, the target is undecided, naming the rule it stopped at."""
        monkeypatch.setattr(evaluate_module, "TIME_LIMIT", 0)
        text = pigeonhole(9, 10)
        coverage = evaluate(_ruleset(text), target(B64, "init_module"), Context())
        assert (False, None, ()) == (coverage.covered, coverage.outcome, coverage.rules)
        assert coverage.undecided is not None
        assert "more pieces than kmod-audit follows exactly (0 s)" in coverage.undecided
        named = re.search(
            r"it was deciding which events reach t\.rules:(\d+) `(.*)`$", coverage.undecided
        )
        assert named is not None, coverage.undecided
        assert text.splitlines()[int(named[1]) - 1] == named[2]

    def test_bit_tests_that_multiply_out_are_undecided(self) -> None:
        """`&` tests on one attribute whose patterns multiply out are undecided, at once."""
        masks = ("0xff", "0xff00", "0xff0000", "0xff000000", "0xf0f0f0f")
        never = "-a never,exit -F arch=b64 -S init_module " + " ".join(f"-F a0&{m}" for m in masks)
        coverage = evaluate(_ruleset(never + "\n" + GOOD), target(B64, "init_module"), Context())
        assert (False, None) == (coverage.covered, coverage.outcome)
        assert coverage.undecided is not None
        assert "(the bit patterns its `&` and `&=` tests multiply out into)" in coverage.undecided
        assert coverage.undecided.endswith(f"which events reach t.rules:1 `{never}`")

    def test_past_the_run_deadline_is_undecided(self) -> None:
        """A run's deadline (`Context.deadline`) ends each target's judging too."""
        ctx = Context(deadline=0.0)
        coverage = evaluate(_ruleset(pigeonhole(9, 10)), target(B32, "init_module"), ctx)
        assert coverage.undecided is not None
        assert "(the time left for judging in this run)" in coverage.undecided


def _family(name: str, ops: tuple[str, ...], values: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda op, value: f"-F {name}{op}{value}", st.sampled_from(ops), st.sampled_from(values)
    )


_ORDERED = ("=", "!=", "<", ">", "<=", ">=")
#: Conditions of every kind the evaluator enumerates, each family about equally likely.
_FIELDS = st.one_of(
    _family("auid", (*_ORDERED, "&"), ("0", "999", "1000", "1001", "4294967294", "unset")),
    _family("uid", _ORDERED, ("0", "1000", "5000")),
    _family("gid", ("=", "!=", ">"), ("0", "100")),
    _family("success", ("=", "!="), ("0", "1")),
    _family("exit", _ORDERED, ("0", "-EPERM", "-ENOSYS", "5")),
    *(
        _family(arg, (*_ORDERED, "&", "&="), ("0", "1", "0x2", "0xffffffff"))
        for arg in ("a0", "a3")
    ),
    _family("pid", ("=", ">", "<"), ("1", "1000")),
    _family("sessionid", ("=", "!="), ("1", "4294967295")),
    _family("exe", ("=", "!="), ("/usr/bin/kmod", "/bin/true")),
    st.sampled_from(("-F subj_type=kmod_t", "-C auid!=uid", "-C uid=auid", "-F msgtype=1300")),
)
#: More conditions for the comparison with the oracle: other attributes, several masks.
_MORE_FIELDS = st.one_of(
    _FIELDS,
    _family("a1", ("&", "&=", "=", ">="), ("3", "5", "6", "0x80000000")),
    _family("ppid", ("=", "!=", "<"), ("1", "2")),
    _family("pers", ("=", "!=", ">"), ("0", "8")),
    _family("euid", ("=", "!="), ("0", "1000")),
    _family("egid", ("<", ">="), ("100", "101")),
    _family("auid", ("<=", ">"), ("499", "500", "1000")),
    st.sampled_from(("-C gid!=egid", "-C euid=suid", "-C auid!=euid", "-F exit>=-4095")),
    # The exits of an exec that fails before it opens the file on argv-first kernels.
    _family("exit", ("=", "!="), ("-14", "-7")),
    _family("obj_uid", ("=", "!="), ("0", "1000")),
    _family("filetype", ("=", "!="), ("file", "dir")),
    st.sampled_from(("-C auid=obj_uid", "-C auid!=obj_uid", "-C uid!=obj_uid", "-C gid=obj_gid")),
)
#: Watches and path rules on kmod (the kernel's inode pass, `_borrows`) and a tree watch.
_WATCH_LINES = st.sampled_from(
    (
        "-w /usr/bin/kmod -p x",
        "-w /usr/bin/kmod -p x -k k",
        "-w /usr/bin/kmod -p x -k other",
        "-a always,exit -F path=/usr/bin/kmod -F perm=x -F auid>=1000",
        "-a always,exit -F path=/usr/bin/kmod -F perm=x -F success=0",
        "-A always,exit -F path=/usr/bin/kmod -F perm=x -F a0&2",
        "-a never,exit -F path=/usr/bin/kmod -F perm=x -F uid=0",
        "-a always,exit -F dir=/usr/bin -F perm=x",
        "-a always,exit -F path=/usr/bin/kmod -F perm=x -F obj_uid=0 -F exe!=/bin/true",
        "-A never,exit -F dir=/lib64 -F perm=x",
        "-a always,exit -F dir=/lib64 -F perm=x -k k",
        "-a never,exit -F path=/lib64/ld-linux-x86-64.so.2 -F perm=x",
        # Merged-/usr aliases of kmod: the same file or not, by the target's layout.
        "-w /bin/kmod -p x -k k",
        "-a never,exit -F dir=/sbin -F perm=x",
        "-a always,exit -F dir=/bin/ -F perm=x -k k",
        "-a always,exit -S execve -F exe!=/bin/kmod -k k",
        "-a never,exit -S execveat -F exe=/usr/sbin/kmod",
    )
)


#: `!=` (and some `=`) on several attributes with a few shared constants: the pigeonhole
#: shapes of issue 16, where rules cover together what none covers alone.
_NOT_EQUAL_FIELDS = st.one_of(
    *(
        _family(name, ("!=", "!=", "!=", "="), ("1", "2", "3"))
        for name in ("a0", "a1", "gid", "pid", "pers")
    ),
    _family("exit", ("!=",), ("-EPERM", "-ENOSYS")),
)


@st.composite
def _rule_lines(draw: st.DrawFn, fields: st.SearchStrategy[str] = _FIELDS) -> str:
    """An exit rule line with a few conditions that the evaluator enumerates."""
    flag = draw(st.sampled_from(("-a", "-a", "-A")))
    action = draw(st.sampled_from(("always", "never")))
    arch = draw(st.sampled_from(("", " -F arch=b64", " -F arch=b32")))
    syscalls = draw(st.sampled_from(("all", "init_module", "init_module,finit_module", "execve")))
    conditions = draw(st.lists(fields, max_size=4))
    key = draw(st.sampled_from(("", " -k k", " -k other")))
    return f"{flag} {action},exit{arch} -S {syscalls} {' '.join(conditions)}{key}".replace(
        "  ", " "
    )


#: Last lines that cover most targets, so that the rules before them decide.
_COVERING = (
    "",
    "-a always,exit -S all -k k",
    "-a always,exit -F arch=b64 -S all -F auid>=1000 -k k",
    "-a always,exit -F arch=b32 -S all -F auid!=unset -k k",
    "-a always,exit -F arch=b64 -S all -F uid!=5000 -k k",
)


class TestPruningIsExact:
    """Dropping rules and conditions before enumerating never changes a judgement (oracle)."""

    @settings(max_examples=300, deadline=None)
    @given(
        lines=st.lists(_rule_lines(), min_size=1, max_size=4),
        last=st.sampled_from(_COVERING),
        tgt=st.sampled_from(
            (
                target(B64, "init_module"),
                target(B32, "finit_module"),
                target(B64, "execve", ExecFile("/usr/bin/kmod")),
            )
        ),
        ctx=st.sampled_from((Context(live=False), Context(uid_min=500, key="k", live=False))),
    )
    def test_pruned_equals_unpruned(
        self, lines: list[str], last: str, tgt: RequiredEvent, ctx: Context
    ) -> None:
        """Pruned or not, the same targets are covered, and pruning never gives up more."""
        ruleset = _ruleset("".join(line + "\n" for line in [*lines, last]))
        full = enumerating.evaluate(ruleset, tgt, ctx, prune=False)
        assume(full.undecided is None)
        pruned = enumerating.evaluate(ruleset, tgt, ctx)
        assert None is pruned.undecided
        assert full.covered == pruned.covered
        assert pruned.events <= full.events or not full.covered


#: The files an exec of kmod names (kmod, then the ELF loader) as read live, two ways.
_ROOT_OWNED = (NamedFile(0, 0, 0o100755), NamedFile(0, 0, 0o100755))
_USER_OWNED = (NamedFile(1000, 100, 0o100755), NamedFile(0, 0, 0o100755))
_LOADER = ExecFile("/lib64/ld-linux-x86-64.so.2")
_TARGETS = (
    target(B64, "init_module"),
    target(B32, "finit_module"),
    target(B64, "execve", ExecFile("/usr/bin/kmod")),
    target(B64, "execve", ExecFile("/usr/bin/kmod", names=_ROOT_OWNED)),
    target(B64, "execve", ExecFile("/usr/bin/kmod", names=_USER_OWNED)),
    target(B64, "execve", ExecFile("/usr/bin/kmod", interpreters=(_LOADER,))),
)
_CONTEXTS = (
    Context(live=False),
    Context(uid_min=500, key="k", live=False),
    Context(live=False, exec_order="argv-first"),
    Context(uid_min=500, key="k", live=False, exec_order="argv-first"),
    Context(live=False, layout="merged"),
    Context(live=False, exec_order="argv-first", layout="merged-sbin"),
)


def _confirmed(ruleset: RuleSet, tgt: RequiredEvent, ctx: Context, coverage: Coverage) -> set[str]:
    """The verdicts the enumerating evaluator gives the counterexample of `coverage`."""
    assert coverage.event is not None
    event: dict[str, int | str | bool] = {"uid": 0, "gid": 0, "exit": 0, "pid": 1, "ppid": 1}
    event.update({"pers": 0, "sessionid": 0, "a0": 0, "a1": 0, "a2": 0, "a3": 0})
    event.update({"exe": "(another program)", **coverage.event})
    if "exit" not in coverage.event and not event["success"]:
        event["exit"] = (-1) & 0xFFFFFFFF
    relevant = [r for r in ruleset.exit if r.syscalls is None or tgt.number in r.syscalls]
    outcomes = _judge_event(_Evaluator(tgt, ctx), ruleset, relevant, event, ctx)
    return {str(outcome.verdict) for outcome in outcomes} - {"covered"}


class TestSymbolicEqualsEnumeration:
    """The symbolic evaluator agrees with the enumerating one wherever that one decides."""

    @settings(max_examples=1000, deadline=None)
    @given(
        lines=st.lists(st.one_of(_rule_lines(_MORE_FIELDS), _WATCH_LINES), min_size=1, max_size=5),
        others=st.lists(
            st.sampled_from(
                (
                    "-a never,task -F auid=1000",
                    "-a never,task -F uid=0",
                    "-a always,task -F pid=1000",
                    "-a always,task -F auid!=unset",
                    "-a always,task -F auid>=1001 -F exe!=/bin/true -F key=k",
                    "-a always,task -F uid=0 -F exe!=/bin/true -k other",
                    "-a never,task -F exe=/bin/true",
                    "-a never,task -F subj_type=x_t",
                    "-a always,exclude -F msgtype=1301",
                    "-a always,exclude -F msgtype=SYSCALL -F auid=1001",
                    "-a never,exclude -F msgtype=SYSCALL -F uid!=0",
                )
            ),
            max_size=2,
        ),
        last=st.sampled_from(_COVERING),
        tgt=st.sampled_from(_TARGETS),
        ctx=st.sampled_from(_CONTEXTS),
    )
    def test_same_verdict_and_a_real_counterexample(
        self,
        lines: list[str],
        others: list[str],
        last: str,
        tgt: RequiredEvent,
        ctx: Context,
    ) -> None:
        """Same verdict, same rules; a counterexample is one under the oracle, same reason."""
        ruleset = _ruleset("".join(line + "\n" for line in [*others, *lines, last]))
        oracle = enumerating.evaluate(ruleset, tgt, ctx)
        assume(oracle.undecided is None)
        coverage = evaluate(ruleset, tgt, ctx)
        assert None is coverage.undecided
        assert oracle.covered == coverage.covered
        assert oracle.rules == coverage.rules
        if coverage.covered:
            return
        assert coverage.outcome is not None
        assert coverage.outcome.verdict in _confirmed(ruleset, tgt, ctx, coverage)
        assert oracle.reason() == coverage.reason()

    @settings(max_examples=200, deadline=None)
    @given(
        lines=st.lists(_rule_lines(_MORE_FIELDS), min_size=1, max_size=5),
        last=st.sampled_from(_COVERING),
        tgt=st.sampled_from(_TARGETS),
        ctx=st.sampled_from(_CONTEXTS),
    )
    def test_same_when_bit_patterns_are_searched(
        self, lines: list[str], last: str, tgt: RequiredEvent, ctx: Context
    ) -> None:
        """Bit patterns with too many classes fall back to the best-first search: still exact."""
        ruleset = _ruleset("".join(line + "\n" for line in [*lines, last]))
        oracle = enumerating.evaluate(ruleset, tgt, ctx)
        assume(oracle.undecided is None)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(evaluate_module, "_CUBE_CLASSES", 0)
            coverage = evaluate(ruleset, tgt, ctx)
        assert None is coverage.undecided
        assert (oracle.covered, oracle.rules) == (coverage.covered, coverage.rules)
        assert oracle.reason() == coverage.reason()

    @settings(max_examples=300, deadline=None)
    @given(
        lines=st.lists(_rule_lines(_NOT_EQUAL_FIELDS), min_size=2, max_size=6),
        last=st.sampled_from(_COVERING),
        tgt=st.sampled_from(_TARGETS),
        ctx=st.sampled_from(_CONTEXTS),
    )
    def test_same_on_not_equal_shapes(
        self, lines: list[str], last: str, tgt: RequiredEvent, ctx: Context
    ) -> None:
        """Rules of `!=` conditions that cover only together are judged as the oracle does."""
        ruleset = _ruleset("".join(line + "\n" for line in [*lines, last]))
        oracle = enumerating.evaluate(ruleset, tgt, ctx)
        assume(oracle.undecided is None)
        coverage = evaluate(ruleset, tgt, ctx)
        assert None is coverage.undecided
        assert (oracle.covered, oracle.rules) == (coverage.covered, coverage.rules)
        assert oracle.reason() == coverage.reason()


@pytest.mark.parametrize(
    ("release", "order"),
    [
        ("5.4.0-150-generic", "open-first"),
        ("5.8", "open-first"),
        ("5.9", "argv-first"),
        ("5.10.0-30-amd64", "argv-first"),
        ("6.1.0-28-amd64", "argv-first"),
        ("6.1", "argv-first"),
        ("6.7.12", "argv-first"),
        ("6.8", "open-first"),
        ("6.12.57+deb12-amd64", "open-first"),
        ("6.18.44-fc-v1272", "open-first"),
        ("", None),
        ("linux", None),
        (None, None),
    ],
)
def test_exec_order_of_a_kernel_release(release: str | None, order: str | None) -> None:
    """Linux 5.9 to 6.7 copies argv before it opens an exec's file (fs/exec.c)."""
    assert order == exec_order(release)


@pytest.mark.parametrize(("order", "covered"), [("open-first", True), ("argv-first", False)])
@pytest.mark.parametrize(
    "rules",
    [
        "-w /usr/bin/kmod -p x -k k",
        "-a always,exit -F path=/usr/bin/kmod -F perm=x -F auid>=1000 -k k",
        "-a always,exit -F dir=/usr/bin -F perm=x -k k",
    ],
)
def test_a_failed_exec_before_the_open_names_no_file(
    rules: str, order: ExecOrder, covered: bool
) -> None:
    """On argv-first kernels path=, dir= and watches miss an exec with a bad argv."""
    program = ExecFile.at("/usr/bin/kmod", files=NOT_READ)
    coverage = evaluate(
        _ruleset(rules + "\n"),
        target(B64, "execve", program),
        Context(live=False, exec_order=order),
    )
    assert covered == coverage.covered
    if not covered:
        assert coverage.event is not None
        assert (-errno.EFAULT) & 0xFFFFFFFF == coverage.event["exit"]
        assert BEFORE_OPEN_NOTE in coverage.reason()


def test_the_exit_lines_of_generate_record_them() -> None:
    """The `-F exit=-14` and `-F exit=-7` lines of generate cover the failures before the open."""
    text = "".join(
        line + "\n"
        for line in generate_lines(select_profiles(["al2023-stig"]), machine=MACHINES["x86_64"])
    )
    ctx = Context(live=False, exec_order="argv-first")
    for abi in MACHINES["x86_64"].abis:
        for syscall in ("execve", "execveat"):
            number = abi.number(syscall)
            assert number is not None
            target = RequiredEvent(
                abi, syscall, number, ExecFile.at("/usr/bin/kmod", files=NOT_READ)
            )
            assert evaluate(_ruleset(text), target, ctx).covered, f"{abi.bits} {syscall}"


@pytest.mark.parametrize(
    ("path", "layout", "same"),
    [
        ("/bin/kmod", "split", False),
        ("/bin/kmod", "merged", True),
        ("/sbin/kmod", "merged", False),
        ("/sbin/kmod", "merged-sbin", True),
        ("/usr/sbin/kmod", "merged-sbin", True),
        ("/usr/bin/kmod", "split", True),
        ("/usr/bin/../bin/kmod", "split", True),
        ("/lib/../bin/kmod", "merged", True),  # /usr/lib/.. is /usr: the same file
    ],
)
def test_a_layout_decides_which_paths_are_kmod(path: str, layout: str, same: bool) -> None:
    """Without the target's files, its directory links (merged /usr) decide identity."""
    rules = f"-w {path} -p x -k k\n"
    ctx = Context(live=False, layout=layout)  # type: ignore[arg-type]
    program = ExecFile.at("/usr/bin/kmod", files=NOT_READ)
    assert same == covered(rules, target(B64, "execve", program), ctx)


@pytest.mark.parametrize(
    ("directory", "layout", "under"),
    [
        ("/bin", "merged", False),  # a tree watch on the link itself
        ("/bin/", "merged", False),
        ("/usr", "merged", True),
        ("/usr/sbin", "merged-sbin", False),
        ("/usr/bin", "split", True),
    ],
)
def test_a_tree_watch_and_the_layout(directory: str, layout: str, under: bool) -> None:
    """A dir= tree watch covers kmod when the directory, not a link to it, holds it."""
    rules = f"-a always,exit -F dir={directory} -F perm=x -k k\n"
    ctx = Context(live=False, layout=layout)  # type: ignore[arg-type]
    program = ExecFile.at("/usr/bin/kmod", files=NOT_READ)
    assert under == covered(rules, target(B64, "execve", program), ctx)
