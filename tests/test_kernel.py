"""The host kernel is the judge: rules go through the real `auditctl -R` into the real kernel.

Needs root and the audit subsystem (the `host_audit` fixture restores the rules and the
status afterwards, even when a test fails; nothing here sets `-e 2` or `-f 2`).
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import json
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from bench import pigeonhole

from _exec_stimulus import exec_records
from _support import FIXTURES, Auditd, HostAudit, RunCli, auditctl, poll
from hostaudit import add_rule
from kmod_audit import netlink
from kmod_audit.evaluate import (
    Context,
    ExecFile,
    RequiredEvent,
    _Evaluator,
    _judge_event,
    _relevant_exit_rules,
    evaluate,
)
from kmod_audit.loader import RuleSet, load
from kmod_audit.profiles import PROFILES
from kmod_audit.rules import THIS_MACHINE, parse_rules
from kmod_audit.syscalls import MACHINES

PROFILE_IDS = [*PROFILES, "all"]
VARIANTS = [
    ("defaults", []),
    ("key-uid", ["--key", "kernel_modules", "--uid-min", "500"]),
]
X86_64 = MACHINES["x86_64"]


def _lists(ruleset: RuleSet) -> dict[str, list[tuple[object, ...]]]:
    return {
        "exit": [r.identity() for r in ruleset.exit],
        "task": [r.identity() for r in ruleset.task],
        "exclude": [r.identity() for r in ruleset.exclude],
        "user": [r.identity() for r in ruleset.user],
        "filesystem": [r.identity() for r in ruleset.filesystem],
    }


def _kernel_lists(listing: str) -> dict[str, list[tuple[object, ...]]]:
    source = parse_rules(listing, path="auditctl -l", machine=X86_64, syntax="listing")
    assert () == source.rejections, f"auditctl -l output we cannot parse: {source.rejections}"
    grouped: dict[str, list[tuple[object, ...]]] = defaultdict(list)
    for rule in load(source).rules:
        grouped[rule.list].append(rule.identity())
    return {
        name: grouped.get(name, []) for name in ("exit", "task", "exclude", "user", "filesystem")
    }


def _netlink_lists() -> dict[str, list[tuple[object, ...]]]:
    grouped: dict[str, list[tuple[object, ...]]] = defaultdict(list)
    for rule in netlink.list_rules(X86_64):
        grouped[rule.list].append(rule.identity())
    return {
        name: grouped.get(name, []) for name in ("exit", "task", "exclude", "user", "filesystem")
    }


@pytest.mark.root
class TestGeneratedRulesInTheKernel:
    """Every generate output loads with `auditctl -R` and is judged compliant when running."""

    @pytest.mark.parametrize(
        ("profile", "variant"),
        list(itertools.product(PROFILE_IDS, VARIANTS)),
        ids=[f"{p}-{v[0]}" for p, v in itertools.product(PROFILE_IDS, VARIANTS)],
    )
    def test_loads_and_is_compliant(
        self,
        host_audit: HostAudit,
        run_cli: RunCli,
        profile: str,
        variant: tuple[str, list[str]],
    ) -> None:
        """The kernel accepts every line, `check --running` exits 0, `-l` parses back equal."""
        options = ["--profile", profile, "--arch", "x86_64", *variant[1]]
        generated = run_cli("generate", *options)
        assert 0 == generated.code, generated.err

        loaded = host_audit.load(generated.out)
        assert (0, "") == (loaded.returncode, loaded.stderr)
        auditctl("-e", "1")

        key = variant[1][1] if variant[1] else "module_chng"
        checked = run_cli("check", "--running", *options, "--key", key, "--format", "json")
        assert 0 == checked.code, checked.out + checked.err
        assert json.loads(checked.out)["compliant"] is True

        ours = load(parse_rules(generated.out, path="generated", machine=X86_64))
        assert _lists(ours) == _kernel_lists(host_audit.listing())
        assert _lists(ours) == _netlink_lists()

    def test_missing_b32_rule_is_reported_running(
        self, host_audit: HostAudit, run_cli: RunCli
    ) -> None:
        """Loaded without the b32 rule, the running rules fail nixos-stig, naming b32."""
        text = (FIXTURES / "rules" / "missing-b32.fail.rules").read_text()
        assert 0 == host_audit.load(text).returncode
        auditctl("-e", "1")
        result = run_cli("check", "--running")
        assert 1 == result.code
        assert "[fail] b32 init_module" in result.out

    def test_path_watch_on_a_directory_is_not_a_tree_watch(
        self, host_audit: HostAudit, run_cli: RunCli
    ) -> None:
        """`-F path=/usr/bin -F perm=x` watches the directory inode only: kmod is not covered.

        `auditctl -l` prints it as `-w /usr/bin -p x`, like a dir= tree watch; the running
        rules are read over netlink, which tells the two apart.
        """
        text = (
            "-a always,exit -F arch=b64 -S init_module,delete_module -k modules\n"
            "-a always,exit -F path=/usr/bin -F perm=x -k modules\n"
        )
        assert 0 == host_audit.load(text).returncode
        auditctl("-e", "1")
        path_rule = run_cli("check", "--running", "--profile", "tenable")
        assert 1 == path_rule.code, path_rule.out
        tree = text.replace("-F path=/usr/bin", "-F dir=/usr/bin")
        assert 0 == host_audit.load(tree).returncode
        tree_rule = run_cli("check", "--running", "--profile", "tenable")
        assert 0 == tree_rule.code, tree_rule.out

    def test_disabled_audit_is_not_compliant(self, host_audit: HostAudit, run_cli: RunCli) -> None:
        """With correct rules but `enabled 0`, the running system is not compliant."""
        assert 0 == host_audit.load(run_cli("generate").out).returncode
        auditctl("-e", "0")
        result = run_cli("check", "--running")
        assert 1 == result.code
        assert "audit is disabled in the kernel (auditctl -s: enabled 0)" in result.out


def _kernel_fixtures() -> list[Path]:
    out = []
    for path in sorted((FIXTURES / "rules").glob("*.rules")):
        text = path.read_bytes().decode()
        if "-e 2" in text or "-f 2" in text or "aarch64" in path.name:
            continue  # never lock or panic the host; aarch64 tables do not apply here
        if path.with_suffix(".args").exists() or text.startswith(("-a always,exit", "No rules")):
            continue  # captured listings are not rules files
        out.append(path)
    return out


@pytest.mark.root
class TestFixturesInTheKernel:
    """Our loader model agrees with the real auditctl + kernel on every rules fixture."""

    @pytest.mark.parametrize(
        "path", _kernel_fixtures(), ids=lambda p: p.name.removesuffix(".rules")
    )
    def test_model_matches_kernel(self, host_audit: HostAudit, path: Path) -> None:
        """Auditctl -R fails exactly when we predict a failing line, and the lists agree."""
        text = path.read_bytes().decode()
        real = host_audit.load(text)
        ours = load(parse_rules(text, path=path.name, machine=X86_64))
        assert bool(ours.issues) == (real.returncode != 0), real.stderr
        assert _lists(ours) == _kernel_lists(host_audit.listing())
        assert _lists(ours) == _netlink_lists()


@pytest.mark.root
class TestKernelAgreesWithTheEvaluator:
    """The host kernel records the module calls that `check` judges recorded.

    The rules go through `auditctl -R` into the kernel; `verify --target local` makes the
    calls (as root and as a user with a login uid, and with auid unset) and reads the records.
    """

    def test_never_rule_for_auid_unset_hides_nothing(
        self, host_audit: HostAudit, auditd: Auditd, run_cli: RunCli
    ) -> None:
        """The issue 7.7 file: `check --running` passes, and the kernel records every call."""
        del auditd
        text = (FIXTURES / "rules" / "never-unset-many-fields.pass.rules").read_text()
        loaded = host_audit.load(text)
        assert (0, "") == (loaded.returncode, loaded.stderr)
        auditctl("-e", "1")
        checked = run_cli("check", "--running")
        assert 0 == checked.code, checked.out + checked.err
        verified = run_cli("verify", "--target", "local", "--format", "json")
        assert 0 == verified.code, verified.out + verified.err
        in_scope = [
            e
            for e in json.loads(verified.out)["evidence"]
            if e["stimulus"]["syscall"] in {"init_module", "finit_module", "delete_module"}
            and e["stimulus"]["program"] is None
            and e["stimulus"]["actor"] in {"root", "user"}
        ]
        assert 2 * 2 * 3 == len(in_scope)  # two actors, two ABIs, three syscalls
        assert {"recorded"} == {e["verdict"] for e in in_scope}


#: The ELF loader of x86_64 programs (PT_INTERP of /usr/bin/kmod).
X86_64_LOADER = "/lib64/ld-linux-x86-64.so.2"
#: Rules about executions of a kmod copy (KM, in the directory DIR), judged by the kernel:
#: (id, rules, owner of the copy). Each was a disagreement between the model and the kernel.
EXEC_CASES = [
    # exe= is the process's executable at syscall exit: after a failed exec, the caller's.
    ("exe-equal", "-a always,exit -F arch=b64 -S execve -F exe=KM -k mod", 0),
    ("exe-not-equal", "-a always,exit -F arch=b64 -S execve -F exe!=KM -k mod", 0),
    # The inode pass (watches) runs after the syscall rules; a keyless match keeps their key.
    ("keyless-watch-first", "-w KM -p x\n-a always,exit -F arch=b64 -S execve -k k", 0),
    (
        "keyless-watch-keyed-never",
        "-w KM -p x\n-a never,exit -F arch=b64 -S execve -k nk",
        0,
    ),
    (
        "keyless-path-rule-first",
        "-a always,exit -F path=KM -F perm=x\n-a always,exit -F arch=b64 -S execve -k k",
        0,
    ),
    # Controls: a dir= tree watch stays on the exit list; rule priority keeps file order.
    (
        "keyless-tree-watch-first",
        "-a always,exit -F dir=DIR -F perm=x\n-a always,exit -F arch=b64 -S execve -k k",
        0,
    ),
    ("never-before-watch", "-a never,exit -F arch=b64 -S execve\n-w KM -p x -k w", 0),
    (
        "prepended-never-watch",
        "-a always,exit -F arch=b64 -S execve -k s\n-A never,exit -F path=KM -F perm=x",
        0,
    ),
    # A successful exec names the ELF loader too: tree watches over it match (LOADER: its
    # directory).
    (
        "never-tree-over-the-loader",
        "-A never,exit -F dir=LOADER -F perm=x\n-a always,exit -F arch=b64 -S execve -k k",
        0,
    ),
    ("tree-over-the-loader", "-a always,exit -F dir=LOADER -F perm=x -k lib", 0),
    # obj_uid, filetype and -C ...obj_uid are decided from the file (and its interpreter).
    ("obj-uid-root", "-a always,exit -F path=KM -F perm=x -F obj_uid=0 -k o", 0),
    ("filetype-file", "-a always,exit -F arch=b64 -S execve -F filetype=file -k f", 0),
    ("auid-not-owner", "-a always,exit -F arch=b64 -S execve -C auid!=obj_uid -k c", 0),
    (
        "never-for-user-owned",
        (
            "-a never,exit -F arch=b64 -S execve -F obj_uid=1000\n"
            "-a always,exit -F arch=b64 -S execve -k k"
        ),
        1000,
    ),
]


@pytest.mark.root
class TestExecutionsInTheKernel:
    """The kernel records the executions of a kmod copy as `check` judges them.

    The rules go through `auditctl -R` into the kernel; a child with login uid 1000
    executes the copy once successfully and once failing with E2BIG (it then still runs
    Python); its SYSCALL records are read from the audit multicast group.
    """

    @pytest.mark.parametrize(
        ("rules", "owner"), [c[1:] for c in EXEC_CASES], ids=[c[0] for c in EXEC_CASES]
    )
    def test_model_agrees_with_kernel(
        self, host_audit: HostAudit, tmp_path: Path, rules: str, owner: int
    ) -> None:
        """Each execution is recorded with a key exactly when the model says so."""
        program = tmp_path / "bin" / "kmod"
        program.parent.mkdir()
        shutil.copy2("/usr/bin/kmod", program)
        os.chown(program, owner, 0)
        executed = ExecFile.at(str(program), files=THIS_MACHINE)
        loader = os.path.dirname(os.path.realpath(X86_64_LOADER))
        text = rules.replace("KM", str(program)).replace("DIR", str(program.parent))
        text = text.replace("LOADER", loader) + "\n"
        loaded = host_audit.load(text)
        assert (0, "") == (loaded.returncode, loaded.stderr)
        auditctl("-e", "1")
        kernel = {fail: exec_records(str(program), auid=1000, fail=fail) for fail in (False, True)}

        ruleset = load(
            parse_rules(text, path="t.rules", machine=X86_64, files=THIS_MACHINE),
            files=THIS_MACHINE,
        )
        target = RequiredEvent(X86_64.native, "execve", 59, executed)
        ctx = Context()
        exit_rules = _relevant_exit_rules(ruleset.exit, target)
        model = {}
        for fail, records in kernel.items():
            caller = os.path.realpath(sys.executable)
            event: dict[str, int | str | bool] = {
                "auid": 1000,
                "uid": 0,
                "gid": 0,
                "success": not fail,
                "exit": (-errno.E2BIG) & 0xFFFFFFFF if fail else 0,
                "a0": 0,
                "a1": 0,
                "a2": 0,
                "a3": 0,
                "pid": 1000,
                "ppid": 1,
                "pers": 0,
                "sessionid": 1,
                "exe": caller if fail else executed.path,
            }
            verdicts = {
                o.verdict
                for o in _judge_event(_Evaluator(target, ctx), ruleset, exit_rules, event, ctx)
            }
            model[fail] = (
                "recorded"
                if verdicts == {"covered"}
                else ("not recorded" if "covered" not in verdicts else f"unsure {sorted(verdicts)}")
            )
            assert [r.exe for r in records] == [event["exe"]] * len(records)
        seen = {
            fail: "recorded" if any(r.key for r in records) else "not recorded"
            for fail, records in kernel.items()
        }
        assert seen == model
        coverage = evaluate(ruleset, target, ctx)
        if coverage.covered:
            assert {"recorded"} == set(seen.values())

    @pytest.mark.parametrize(
        ("rules", "code", "unrecorded"),
        [
            pytest.param(
                "-w KM -p x\n"
                "-a always,exit -F arch=b64 -S execve,execveat -k k\n"
                "-a always,exit -F arch=b32 -S execve,execveat -k k\n",
                0,
                [],
                id="keyless-watch-then-execve",
            ),
            pytest.param(
                "-a always,exit -F arch=b64 -S execve,execveat -F exe=KM -k mod\n"
                "-a always,exit -F arch=b32 -S execve,execveat -F exe=KM -k mod\n",
                1,
                [True],
                id="execve-exe-equal",
            ),
        ],
    )
    def test_check_running_agrees_with_kernel(
        self,
        host_audit: HostAudit,
        run_cli: RunCli,
        tmp_path: Path,
        rules: str,
        code: int,
        unrecorded: list[bool],
    ) -> None:
        """`check --running` judges the kmod requirement of al2023-stig as the kernel records.

        The kernel records every b64 execve of the copy with a key, or misses the failed one.
        """
        program = tmp_path / "bin" / "kmod"
        program.parent.mkdir()
        shutil.copy2("/usr/bin/kmod", program)
        modules = "-a always,exit -F arch=b64 -S init_module,finit_module,create_module -k m\n"
        loaded = host_audit.load(modules + rules.replace("KM", str(program)))
        assert (0, "") == (loaded.returncode, loaded.stderr)
        auditctl("-e", "1")
        missed = [
            fail
            for fail in (False, True)
            if not any(r.key for r in exec_records(str(program), auid=1000, fail=fail))
        ]
        assert unrecorded == missed
        options = ["--profile", "al2023-stig", "--kmod-path", str(program)]
        checked = run_cli("check", "--running", *options)
        assert code == checked.code, checked.out + checked.err
        if code:
            assert f"[fail] b64 execve of {program} (auid=1000, success=no)" in checked.out


def _module_call_as_user(args: tuple[int, int, int]) -> int:
    """Call b64 init_module(a0, a1, a2) in a child whose login uid is 1000; return its pid.

    A stimulus of its own (not kmod-audit's probe): the kernel audits the call at exit
    whatever it returns (ENOSYS or EFAULT here).
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            Path("/proc/self/loginuid").write_text("1000")
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall(ctypes.c_long(175), *(ctypes.c_long(arg) for arg in args))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return pid


def _init_module_records(auditd: Auditd, args: tuple[int, int, int]) -> list[str]:
    """The SYSCALL records of one b64 init_module(*args) by login uid 1000 (none, or one)."""
    pid = _module_call_as_user(args)
    marker = f"kmod-audit-init-module-{pid}"
    auditctl("-m", marker)
    poll(lambda: marker in auditd.log.read_text(errors="replace"), 10, "the marker")
    return [
        line
        for line in auditd.log.read_text(errors="replace").splitlines()
        if line.startswith("type=SYSCALL") and f" pid={pid} " in line and " syscall=175 " in line
    ]


@pytest.mark.root
class TestPigeonholeInTheKernel:
    """The kernel records the pigeonhole events the way `check` judges them (issue 16)."""

    @pytest.mark.parametrize(
        ("rules", "code", "key"), [(4, 0, "m4"), (3, 1, None)], ids=["covered", "one-short"]
    )
    def test_counterexample_is_what_the_kernel_drops(
        self,
        host_audit: HostAudit,
        auditd: Auditd,
        run_cli: RunCli,
        rules: int,
        code: int,
        key: str | None,
    ) -> None:
        """`check`'s verdict on 3 attributes holds in the kernel for its counterexample call."""
        loaded = host_audit.load(pigeonhole(3, rules))
        assert (0, "") == (loaded.returncode, loaded.stderr)
        auditctl("-e", "1")
        checked = run_cli("check", "--running", "--profile", "nixos-stig")
        assert code == checked.code, checked.out + checked.err
        if key is None:
            assert "(auid=1000, success=no, a0=1, a1=2, a2=3): no loaded rule" in checked.out
        records = _init_module_records(auditd, (1, 2, 3))
        if key is None:
            assert [] == records
            return
        [record] = records
        assert f' key="{key}"' in record
        assert " a0=1 a1=2 a2=3 " in record
        assert " auid=1000 " in record


#: Field numbers (include/uapi/linux/audit.h) and the b64 arch of x86_64 (AUDIT_ARCH_X86_64).
AUDIT_ARCH, AUDIT_PERM, AUDIT_FILETYPE = 11, 106, 108
ARCH_X86_64 = 0xC000003E


@pytest.mark.root
class TestRulesOfOtherLoaders:
    """Rules the kernel takes from any loader, read back by `check --running` over netlink."""

    @pytest.mark.parametrize(
        ("field", "code", "key"),
        [
            ((AUDIT_PERM, "=", 1), 0, "module_chng"),
            ((AUDIT_PERM, "!=", 1), 1, None),
            ((AUDIT_FILETYPE, "!=", 0o040000), 1, None),
        ],
        ids=["perm-x", "perm-not-x", "filetype-not-dir"],
    )
    def test_never_rule_on_no_file_is_judged_as_the_kernel_records(
        self,
        host_audit: HostAudit,
        auditd: Auditd,
        run_cli: RunCli,
        field: tuple[int, str, int],
        code: int,
        key: str | None,
    ) -> None:
        """`-A never,exit -S init_module -F perm!=x` (auditctl refuses `perm!=`) hides them all.

        `init_module` is in no class and names no file: `perm=x` and `filetype=dir` never
        match it, and `!=` negates that (kernel/auditsc.c, audit_filter_rules).
        """
        generated = run_cli("generate", "--profile", "nixos-stig", "--arch", "x86_64")
        loaded = host_audit.load(generated.out)
        assert (0, "") == (loaded.returncode, loaded.stderr)
        add_rule("never", [175], [(AUDIT_ARCH, "=", ARCH_X86_64), field], prepend=True)
        auditctl("-e", "1")
        checked = run_cli("check", "--running", "--profile", "nixos-stig")
        assert code == checked.code, checked.out + checked.err
        if code:
            assert "[fail] b64 init_module (auid=1000, success=no): first matching rule" in (
                checked.out
            )
        records = _init_module_records(auditd, (0, 0, 0))
        if key is None:
            assert [] == records
            return
        [record] = records
        assert f' key="{key}"' in record
