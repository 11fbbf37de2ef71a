"""The host kernel judges `check`: random rule sets, loaded and exercised for real.

Each example is a small random rules file over the grammar that decides module and kmod
auditing (lists, actions, `-a`/`-A`, arch, syscalls, the fields auid/uid/exit/success/exe/
perm/path/dir/key, watches, `-D`, control lines and lines auditctl rejects). It is judged
twice (tests/_differential.py, which the kernel matrix's guests run too):

- by `kmod-audit check FILE --profile all --kmod-path /usr/bin/kmod --format json`;
- by the kernel: the real `auditctl -R` loads it into the host's audit subsystem, the
  independent stimulus program (`tests/stimulus/stimulus.c`, compiled here) makes every
  target's syscalls as logged-in users (auid >= uid-min, uid 0 and the user's own) from
  a fork made after the login uid is set, and a private auditd writes the records.

A target is covered by the kernel when every stimulus event of it has a SYSCALL record
with a key. Both verdicts of every target are compared, and the number of rules `check`
says load with the lines of `auditctl -l`. The host cannot make every event (module
syscalls fail with ENOSYS here, so `success=yes` never happens; an exec fails only with
EFAULT or E2BIG): when `check` names an uncovered event the host cannot make and every
event the host made is recorded, the target is *undecidable*, never an agreement.

The grammar is drawn for a machine (`rules_files(platform)`): the kernel matrix
(tests/test_vm_matrix.py) draws files for aarch64 with `draw_examples` and judges them in
its arm64 guests.

`KMOD_AUDIT_DIFFERENTIAL_EXAMPLES=N` runs N examples (default `CI_EXAMPLES`);
`KMOD_AUDIT_DIFFERENTIAL_LOG=FILE` appends every judged target as a JSON line;
`KMOD_AUDIT_DIFFERENTIAL_KNOWN=1` also generates the disagreement classes that are excluded
while their fixes are pending (`BEING_FIXED`, `FOUND_NOT_YET_FIXED`);
`KMOD_AUDIT_DIFFERENTIAL_REPLAY=FILE[:FILE...]` judges just those files and prints every
outcome (to confirm a repro on the kernel).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, Phase, example, given, seed, settings
from hypothesis import strategies as st

from _differential import (
    AT_FORK,
    EXEC_SYSCALLS,
    KMOD,
    PLATFORMS,
    STIM,
    HarnessError,
    Judged,
    Kernel,
    Platform,
    build_stimulus,
    check_claims,
    harness_problems,
    installed,
    judge,
    missing_compilers,
)
from _support import Auditd, HostAudit, require_or_skip
from kmod_audit.cli import main

CI_EXAMPLES = 60
#: The host's platform (the test runs on x86_64 hosts; the kernel matrix judges aarch64).
HOST = PLATFORMS["x86_64"]

#: Disagreement classes other changes are fixing (issue 16 item 8). While listed here the
#: generator does not produce them (KMOD_AUDIT_DIFFERENTIAL_KNOWN=1 does); remove a name
#: when its fix lands.
BEING_FIXED: frozenset[str] = frozenset()
#: Disagreement classes this test found that no change fixes yet (see the note of the
#: commit that added them). Excluded the same way; remove a name when its fix lands.
FOUND_NOT_YET_FIXED: frozenset[str] = frozenset()
#: One minimal rules file per class of disagreement found (named for the class).
MINIMAL = Path(__file__).parent / "fixtures" / "differential"


def _excluded() -> frozenset[str]:
    if os.environ.get("KMOD_AUDIT_DIFFERENTIAL_KNOWN") == "1":
        return frozenset()
    return BEING_FIXED | FOUND_NOT_YET_FIXED


# --------------------------------------------------------------------------------------
# The grammar

OTHER_SYSCALLS = ("mount", "chmod")
AUID_VALUES = ("0", "999", "1000", "1001", "2000", "4294967294", "unset", "-1", "4294967295")
UID_VALUES = ("0", "1000", "1001", "2000")
EXIT_VALUES = ("-ENOSYS", "-EFAULT", "-E2BIG", "-EPERM", "0", "-38")
PATHS = (KMOD, "/usr/sbin/modprobe", "/usr/bin", "/usr/bin/kmod-audit-nothere")
DIRS = ("/usr/bin", "/usr", "/usr/sbin")
KEYS = ("k", "module_chng", "m2")
#: Conditions on the files a syscall names (an exec names kmod; a module syscall names
#: none, where only `filetype!=` matches): field, operators, values.
OBJECT_FIELDS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("filetype", ("=", "!=", "!="), ("file", "dir")),
    ("obj_uid", ("=", "!=", ">="), ("0", "1000")),
    ("obj_gid", ("=", "!="), ("0",)),
    ("inode", ("=", "!="), ("1",)),
    ("devmajor", ("=", "!=", "<"), ("0", "8")),
    ("saddr_fam", ("=", "!="), ("2",)),
)
#: Conditions on what the stimulus does not choose (its arguments, groups, session,
#: personality) and comparisons of two ids: field, operators, values. An argument value
#: past 32 bits is cut to 32 by auditctl, as the kernel compares them.
OTHER_FIELDS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("a0", ("=", "!=", "<", ">=", "&", "&="), ("0", "1", "0xffffffff", "4294967296", "-1")),
    ("a1", ("=", "!=", "&"), ("0", "2")),
    ("a2", ("!=", "<="), ("0", "0x80000000")),
    ("gid", ("=", "!=", ">="), ("0", "1000")),
    ("egid", ("=", "!="), ("0",)),
    ("sessionid", ("=", "!="), ("4294967295", "1")),
    ("pers", ("=", "!="), ("0", "8")),
)
COMPARISONS = (
    "-C uid!=auid",
    "-C auid=euid",
    "-C uid=euid",
    "-C gid!=egid",
    "-C auid!=obj_uid",
    "-C uid=obj_uid",
)
#: What `kmod-audit generate --profile all` prints for each machine: a file passing every
#: target, so that random lines around it make both verdicts common.
GOOD = {
    "x86_64": (
        (
            "-a always,exit -F arch=b64 -S create_module,init_module,delete_module,"
            "query_module,finit_module -F auid>=1000 -F auid!=unset -k module_chng"
        ),
        (
            "-a always,exit -F arch=b32 -S init_module,delete_module,finit_module "
            "-F auid>=1000 -F auid!=unset -k module_chng"
        ),
        f"-a always,exit -F path={KMOD} -F perm=x -F auid>=1000 -F auid!=unset -k module_chng",
        *(
            f"-a always,exit -F arch={arch} -S execve,execveat -F exit={code} -F auid>=1000 "
            "-F auid!=unset -k module_chng"
            for arch in ("b64", "b32")
            for code in ("-14", "-7")
        ),
    ),
    "aarch64": (
        *(
            f"-a always,exit -F arch={arch} -S init_module,delete_module,finit_module "
            "-F auid>=1000 -F auid!=unset -k module_chng"
            for arch in ("b64", "b32")
        ),
        f"-a always,exit -F path={KMOD} -F perm=x -F auid>=1000 -F auid!=unset -k module_chng",
        # arm64's compat classifier has no execveat: perm=x misses b32 execveat (issue 18).
        (
            f"-a always,exit -F arch=b32 -S execveat -F path={KMOD} -F auid>=1000 "
            "-F auid!=unset -k module_chng"
        ),
        *(
            f"-a always,exit -F arch={arch} -S execve,execveat -F exit={code} -F auid>=1000 "
            "-F auid!=unset -k module_chng"
            for arch in ("b64", "b32")
            for code in ("-14", "-7")
        ),
    ),
}


def _forms(platform: Platform) -> list[tuple[str, ...]]:
    """Complete forms of the requirements on `platform`: GOOD, and others of the exec one."""
    good = GOOD[platform.machine]
    modules = tuple(line for line in good if "_module" in line)
    # The execs a kernel that copies argv first fails before the open, and arm64's compat
    # execveat, which perm=x misses.
    before_open = tuple(line for line in good if " -F exit=" in line)
    compat = tuple(line for line in good if "-S execveat -F path=" in line)
    watch = (*modules, f"-w {KMOD} -p x -k m2", *compat, *before_open)
    exe = tuple(
        f"-a always,exit -F arch={arch} -S execve,execveat -F exe={KMOD} -F auid!=unset -k m2"
        for arch in ("b64", "b32")
    )
    # Every exec recorded by syscall rules (a keyless watch before them keeps their key).
    syscall = tuple(
        f"-a always,exit -F arch={arch} -S execve,execveat -F auid!=unset -k m2"
        for arch in ("b64", "b32")
    )
    forms = [good, watch, (*modules, *syscall)]
    if "exe-at-exec-failure" not in _excluded():
        forms.append((*modules, *exe))
    return forms


REJECTED = (
    "-a always,exit -F arch=b64 -S kmod_audit_bogus -k k",
    "-a always,exit -F arch=b64 -S init_module -F kmod_audit_bogus=1 -k k",
    "-a always,exit -F arch=b64 -S init_module -F auid=kmod -k k",
    "-a always,exit -S init_module -F arch=b64 -k k",
    "-w /kmod-audit-nonexistent/kmod -p x -k k",
)


def _exes(platform: Platform) -> tuple[str, ...]:
    """What `exe=` fields name: kmod, other programs, and the stimulus programs rules name."""
    return (KMOD, "/usr/sbin/modprobe", *platform.named, "/usr/bin/python3")


@st.composite
def _fields(
    draw: st.DrawFn, platform: Platform, *, syscalls: tuple[str, ...] | None, task: bool
) -> list[str]:
    known = _excluded()
    names = (
        ["auid", "uid"]
        if task
        else ["auid", "uid", "exit", "success", "exe", "perm", "key", "object", "other", "compare"]
    )
    execs = syscalls is None or bool({"all", *EXEC_SYSCALLS} & set(syscalls))
    if not task and execs:
        names += ["path", "path", "dir"]
    if "exe-at-exec-failure" in known and not task and execs:
        names.remove("exe")
    out: list[str] = []
    for name in draw(st.lists(st.sampled_from(names), max_size=3)):
        if name in {"auid", "uid"}:
            op = draw(st.sampled_from(("=", "!=", "<", ">=", ">", "<=")))
            values = AUID_VALUES if name == "auid" else UID_VALUES
            out.append(f"-F {name}{op}{draw(st.sampled_from(values))}")
        elif name == "exit":
            op = draw(st.sampled_from(("=", "!=", "<", ">=")))
            out.append(f"-F exit{op}{draw(st.sampled_from(EXIT_VALUES))}")
        elif name == "success":
            op = draw(st.sampled_from(("=", "!=")))
            out.append(f"-F success{op}{draw(st.sampled_from(('0', '1')))}")
        elif name == "exe":
            if "duplicate-exe" in known and any(f.startswith("-F exe") for f in out):
                continue
            op = draw(st.sampled_from(("=", "!=")))
            out.append(f"-F exe{op}{draw(st.sampled_from(_exes(platform)))}")
        elif name == "perm":
            out.append(f"-F perm={draw(st.sampled_from(('x', 'wa', 'rx')))}")
        elif name == "compare":
            out.append(draw(st.sampled_from(COMPARISONS)))
        elif name in {"object", "other"}:
            pool = OBJECT_FIELDS if name == "object" else OTHER_FIELDS
            field, ops, constants = draw(st.sampled_from(pool))
            op, constant = draw(st.sampled_from(ops)), draw(st.sampled_from(constants))
            out.append(f"-F {field}{op}{constant}")
        elif name in {"path", "dir"}:
            where = PATHS if name == "path" else DIRS
            out.append(f"-F {name}={draw(st.sampled_from(where))}")
        else:
            out.append(f"-F key={draw(st.sampled_from(KEYS))}")
    return out


@st.composite
def _exit_rule(draw: st.DrawFn, platform: Platform) -> str:
    known = _excluded()
    flag = draw(st.sampled_from(("-a", "-a", "-A")))
    action = draw(st.sampled_from(("always", "always", "never")))
    # auditctl reads -S names in the table of the arch named, `!=` too: `-F arch!=b32 -S
    # init_module` is syscall 128 on every ABI but b32.
    arch = draw(st.sampled_from(("=b64", "=b64", "=b32", "!=b64", "!=b32", None)))
    kind = draw(st.sampled_from(("module", "module", "exec", "all", "other", "none")))
    pool = {
        "module": platform.module_syscalls(),
        "exec": EXEC_SYSCALLS,
        "all": ("all",),
        "other": OTHER_SYSCALLS,
        "none": (),
    }[kind]
    syscalls = (
        tuple(draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True)))
        if pool
        else None
    )
    fields = draw(_fields(platform, syscalls=syscalls, task=False))
    if syscalls is None and "perm-without-syscall" in known:
        fields = [f for f in fields if not f.startswith("-F perm")]
    parts = [f"{flag} {action},exit"]
    if arch is not None:
        parts.append(f"-F arch{arch}")
    if syscalls:
        parts.append("-S " + ",".join(syscalls))
    parts += fields
    keyed = draw(st.sampled_from(("k", "k", "none", "two")))
    if "inode-rule-order" in known and any(f.startswith("-F path") for f in fields):
        keyed = "k"  # a keyless inode rule keeps the key of a later syscall rule
    if keyed != "none" and not any(f.startswith("-F key") for f in fields):
        parts.append(f"-k {draw(st.sampled_from(KEYS))}")
        if keyed == "two":
            parts.append(f"-k {draw(st.sampled_from(KEYS))}")
    return " ".join(parts)


@st.composite
def _watch(draw: st.DrawFn) -> str:
    path = draw(st.sampled_from((KMOD, *PATHS)))  # kmod twice as often
    line = f"-w {path} -p {draw(st.sampled_from(('x', 'x', 'wa', 'rwxa', 'r')))}"
    # A keyless watch keeps the key of a later syscall rule (being fixed).
    if "inode-rule-order" in _excluded() or draw(st.booleans()):
        line += f" -k {draw(st.sampled_from(KEYS))}"
    return line


@st.composite
def _other_list_rule(draw: st.DrawFn, platform: Platform) -> str:
    which = draw(st.sampled_from(("task", "exclude", "user")))
    action = draw(st.sampled_from(("always", "never")))
    if which == "task":
        if "always-task" in _excluded():
            action = "never"
        # Task rules only match logged-in users (auid!=unset): a task rule decides at
        # fork how a task is audited for its life, and this host's other tasks (auid
        # unset) must not be changed by a test.
        op = draw(st.sampled_from(("=", ">=", "!=")))
        fields = ["-F auid!=unset", f"-F auid{op}{draw(st.sampled_from(('1000', '1001', '2000')))}"]
        fields += draw(_fields(platform, syscalls=None, task=True))
        # auditctl takes a task rule's key only after an exe field (at fork, exe= never
        # matches and exe!= always does: the new task is not the current one).
        exe = draw(st.sampled_from(("", "", " -F exe!=", " -F exe=")))
        if exe:
            fields.append(f"{exe.strip()}{draw(st.sampled_from(_exes(platform)))}")
        key = ""
        if draw(st.booleans()):
            key = f" -{draw(st.sampled_from(('k ', 'F key=')))}{draw(st.sampled_from(KEYS))}"
        return f"-a {action},task {' '.join(fields)}{key}"
    if which == "exclude":
        msgtype = draw(st.sampled_from(("SYSCALL", "PATH", "CWD", "EXECVE")))
        return f"-a {action},exclude -F msgtype={msgtype}"
    return f"-a {action},user -F auid>={draw(st.sampled_from(('0', '1000')))}"


@st.composite
def _control(draw: st.DrawFn) -> str:
    known = _excluded()
    choices = ["-D", "-b 8192", "-f 0", "-f 1", "-r 0", "-r 10000", "-e 0", "-e 1"]
    if "crlf-delete" not in known:
        choices.append("-D\r")
    return draw(st.sampled_from(choices))


_ALL_SYSCALLS = re.compile(r"-[aA] always,exit(?!.* -S (?!all\b))")
_NARROWED = re.compile(r" -F (?:path|dir|perm|exe)=")


def floods(rule: str) -> bool:
    """Whether `rule` records every syscall of a stimulus (or of every task).

    That is an `always` task rule, or an `always` exit rule of every syscall (no `-S`, or
    `-S all`) that no `path=`, `dir=`, `perm=` or `exe=` field narrows. A guest's auditd
    under TCG takes about two minutes to write the records of one such file (measured on
    Debian's 6.1 and 6.12: 118 to 132 s, against 4 to 18 s for the others); the host's
    kernel takes seconds.
    """
    if rule.startswith(("-a always,task", "-A always,task")):
        return True
    return bool(_ALL_SYSCALLS.match(rule)) and not _NARROWED.search(rule)


@st.composite
def rules_files(draw: st.DrawFn, platform: Platform = HOST, *, flooding: bool = True) -> str:
    """A small random rules file for `platform` (it never holds `-e 2` or `-f 2`).

    Without `flooding`, no line `floods` (the files the kernel matrix's guests judge).
    """
    exit_rule, other_list_rule = _exit_rule(platform), _other_list_rule(platform)
    if not flooding:
        exit_rule = exit_rule.filter(lambda rule: not floods(rule))
        other_list_rule = other_list_rule.filter(lambda rule: not floods(rule))
    lines = draw(
        st.lists(
            st.one_of(
                exit_rule,
                exit_rule,
                exit_rule,
                _watch(),
                other_list_rule,
                _control(),
                st.sampled_from(REJECTED),
            ),
            min_size=1,
            max_size=6,
        )
    )
    forms = _forms(platform)
    if draw(st.booleans()):
        at = draw(st.integers(0, len(lines)))
        lines[at:at] = draw(st.sampled_from(forms))
    return "# kmod-audit differential example\n" + "\n".join(lines) + "\n"


def draw_examples(platform: Platform, count: int, draw_seed: int) -> list[str]:
    """`count` random rules files for `platform`, none with a line that `floods`.

    The kernel matrix judges them in its guests (the host's own run keeps the floods).
    """
    texts: list[str] = []

    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate])
    @seed(draw_seed)
    @given(rules_files(platform, flooding=False))
    def draw(text: str) -> None:
        texts.append(text)

    draw()
    return texts


@pytest.fixture
def stimulus(
    host_audit: HostAudit,  # noqa: ARG001 - the programs' paths are shared: made under the lock
    tmp_path: Path,
) -> Iterator[None]:
    """The stimulus programs, compiled here and installed (removed afterwards)."""
    missing = missing_compilers(HOST)
    if missing:
        require_or_skip("; ".join(missing))
    with installed(HOST, build_stimulus(HOST, tmp_path)):
        yield


@pytest.fixture
def kernel(auditd: Auditd) -> Kernel:
    """The host's kernel, with a private auditd."""
    return Kernel(HOST, auditd)


def _examples() -> int:
    value = os.environ.get("KMOD_AUDIT_DIFFERENTIAL_EXAMPLES", str(CI_EXAMPLES))
    if not value.isdigit() or int(value) < 1:
        pytest.fail(
            f"KMOD_AUDIT_DIFFERENTIAL_EXAMPLES={value!r}: give a positive number of examples"
        )
    return int(value)


def _judge(kernel: Kernel, path: Path, text: str) -> Judged:
    """`judge`, with a harness failure reported as the test's failure."""
    try:
        return judge(kernel, path, text)
    except HarnessError as exc:
        pytest.fail(str(exc))


@pytest.mark.parametrize("machine", sorted(PLATFORMS))
def test_good_is_what_generate_prints(machine: str) -> None:
    """GOOD is `generate --profile all`: a file that passes every target on every kernel."""
    out = io.StringIO()
    assert 0 == main(
        ["generate", "--profile", "all", "--arch", machine, "--kmod-path", KMOD], out=out
    )
    assert list(GOOD[machine]) == out.getvalue().splitlines()


@pytest.mark.parametrize("machine", sorted(PLATFORMS))
def test_examples_are_drawn_for_the_machine(machine: str) -> None:
    """What the matrix's guests judge: drawn again alike, with only the machine's syscalls."""
    platform = PLATFORMS[machine]
    texts = draw_examples(platform, 20, 7)
    assert texts == draw_examples(platform, 20, 7)
    assert len(set(texts)) > 10
    absent = {"create_module", "query_module"} - set(platform.module_syscalls())
    assert not [t for t in texts for name in absent if name in t]
    assert any(GOOD[machine][0] in t for t in texts)
    assert [] == [line for t in texts for line in t.splitlines() if floods(line)]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("-a always,exit -F arch=b64 -S all -F key=module_chng", True),
        ("-A always,exit -k k", True),
        ("-a always,exit -F arch=b32 -F auid>=1000 -F exe!=/usr/bin/kmod", True),
        ("-a always,task -F auid!=unset -F auid=1000", True),
        ("-a always,exit -F path=/usr/bin/kmod -F perm=x -k k", False),
        ("-a always,exit -S all -F exe=/usr/bin/kmod", False),
        ("-a always,exit -F arch=b64 -S init_module,all -k k", False),
        ("-a always,exit -F arch=b64 -S allx -k k", False),
        ("-a never,exit -S all", False),
        ("-a never,task -F auid!=unset", False),
        ("-w /usr/bin/kmod -p x", False),
    ],
)
def test_floods(rule: str, expected: bool) -> None:
    """What the matrix's files leave out: rules that record every syscall of a stimulus."""
    assert expected == floods(rule)


@pytest.mark.root
@pytest.mark.usefixtures("stimulus")  # it depends on host_audit, as auditd does
class TestCheckAgreesWithTheKernel:
    """Random rule sets: `check`'s verdict of every target is the kernel's."""

    def test_harness_sees_every_record(self, kernel: Kernel, tmp_path: Path) -> None:
        """The generated rules pass every target and the kernel records every stimulus event."""
        good = GOOD[HOST.machine]
        judged = _judge(kernel, tmp_path / "good.rules", "\n".join(good) + "\n")
        assert [] == harness_problems(HOST, judged, len(good))

    @pytest.mark.parametrize("name", sorted(path.stem for path in MINIMAL.glob("*.rules")), ids=str)
    def test_minimal_file_of_each_class(self, kernel: Kernel, tmp_path: Path, name: str) -> None:
        """Each class of disagreement found so far, in its minimal file: check agrees."""
        if name in _excluded():
            pytest.skip(f"{name} is excluded (its fix is pending): see FOUND_NOT_YET_FIXED")
        text = (MINIMAL / f"{name}.rules").read_text()
        outcomes = _judge(kernel, tmp_path / "example.rules", text).outcomes
        assert [] == [outcome.describe() for outcome in outcomes if outcome.disagrees]
        # Not judged for want of records would prove nothing; what check leaves to the ids
        # a task had at fork is not judged by design (the stimulus cannot change them).
        assert any(outcome.kind == "agree" for outcome in outcomes) or all(
            AT_FORK in outcome.detail for outcome in outcomes
        )

    @pytest.mark.parametrize(("mode", "recorded"), [("calls", True), ("calls-in-place", False)])
    def test_task_rules_see_the_ids_at_fork(
        self, kernel: Kernel, tmp_path: Path, mode: str, recorded: bool
    ) -> None:
        """A task rule on uid matches the ids a task had at fork, not at its module syscall.

        The exit rules leave uid 1000 to the task rule. A task forked as uid 1000 is in the
        record state (key t); one forked as root that then became uid 1000 itself, as a
        setuid program may, is not, and its calls go unrecorded: `check` cannot know the
        ids at fork, so it fails the requirement and says why.
        """
        text = "-a always,task -F uid=1000 -F exe!=/nonexistent -k t\n" + "".join(
            f"-a always,exit -F arch={arch} -S init_module,finit_module,delete_module "
            "-F auid>=1000 -F auid!=unset -F uid!=1000 -k module_chng\n"
            for arch in ("b64", "b32")
        )
        path = tmp_path / "fork.rules"
        path.write_text(text)
        claims, _ = check_claims(HOST, path)
        events, _, lost = kernel.judge(path, text, (), runs=[(1000, 1000, STIM, mode)])
        modules = [event for event in events if event.target[1] not in EXEC_SYSCALLS]
        assert not lost
        assert modules
        assert {recorded} == {event.key == "t" for event in modules}
        claim = claims[("b64", "init_module")]
        assert ("fail", True) == (claim.status, AT_FORK in claim.reason)

    def test_every_target_verdict_and_rule_count(self, kernel: Kernel, tmp_path: Path) -> None:
        """No target of a random rules file is judged otherwise than the kernel records it."""
        tally: Counter[str] = Counter()
        disagreements: list[tuple[str, str]] = []
        log = os.environ.get("KMOD_AUDIT_DIFFERENTIAL_LOG")
        replay = os.environ.get("KMOD_AUDIT_DIFFERENTIAL_REPLAY")

        def record(text: str, judged: Judged) -> None:
            tally["examples"] += 1
            for outcome in judged.outcomes:
                tally[outcome.kind] += 1
                if outcome.disagrees:
                    disagreements.append((text, outcome.describe()))
            if log:
                with open(log, "a") as handle:
                    for outcome in judged.outcomes:
                        handle.write(json.dumps({"text": text, **attrs.asdict(outcome)}) + "\n")

        @settings(
            max_examples=_examples(),
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
            phases=[Phase.explicit, Phase.generate],
        )
        @given(rules_files())
        @example("-a always,exit -F arch=b64 -S all -k k\n" + "\n".join(GOOD["x86_64"]) + "\n")
        @example(
            "-a never,exit -F arch=b64 -S init_module,finit_module,execve -F filetype!=dir\n"
            "-a never,exit -F arch=b32 -S delete_module -F filetype!=file\n"
            + "\n".join(GOOD["x86_64"])
            + "\n"
        )
        def judge_one(text: str) -> None:
            record(text, _judge(kernel, tmp_path / "example.rules", text))

        if replay:
            for name in replay.split(":"):
                text = Path(name).read_bytes().decode()
                judged = _judge(kernel, tmp_path / "example.rules", text)
                record(text, judged)
                for outcome in judged.outcomes:
                    print(f"{name}: {outcome.describe()}")  # noqa: T201
        else:
            judge_one()
        print(f"kernel differential: {dict(tally)}")  # noqa: T201 - the run's tally, for CI logs
        assert [] == [f"{outcome}\n{text}" for text, outcome in disagreements]
