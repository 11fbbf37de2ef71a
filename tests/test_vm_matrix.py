"""The kernel matrix: the control proven on every kernel and architecture we claim.

This module boots every leg of tools/matrix.py (amd64 6.1, the host's installed Debian
kernel that the other vm tests boot; amd64 6.12; arm64 6.1 and 6.12), one at a time and
each once, and runs all of its cases in that one boot, in one Python process
(tools/guest/run-cases.sh, run_cases.py):

- `generated`: `generate --profile all` for the leg's machine, then `verify --profile
  all`: COMPLIANT, with a real load and unload of `dummy`. On arm64 the b32 stimuli are
  AArch32 programs, recorded with arch=40000028.
- `no-b32`: the same rules without their b32 lines: NOT COMPLIANT, and only b32 fails.
- `permx-only`: the rules without the explicit b32 `execveat` rule, as `generate` printed
  them before: on arm64 NOT COMPLIANT for exactly b32 `execveat` of kmod (arm64's compat
  audit classes do not call execveat an exec), on amd64 COMPLIANT; `check` agrees on both.
- `no-before-open`: the rules without their `-F exit=` lines: a failed exec of kmod with a
  bad argv or a too long argument ends before the file is opened on 6.1 (NOT COMPLIANT),
  not on 6.12 (COMPLIANT); `check --kernel-version` agrees on each.
- `fixture-*`: the rules fixtures judged for the leg's machine (every aarch64 one on
  arm64; on amd64 a sample of `KMOD_AUDIT_MATRIX_FIXTURES` x86_64 ones, default
  `FIXTURE_SAMPLE`, drawn with the run's seed: tests/test_agreement.py judges all of them
  on the host's own kernel every run) are loaded and probed (`kmod-audit probe
  --no-load`); the probe is judged as verify judges it, with and without `--strict`, and
  must agree with `check` (the differences that remain by design are
  tests/test_agreement.py's KNOWN).
- `differential`: tests/test_kernel_differential.py's harness check (GOOD) and
  `KMOD_AUDIT_MATRIX_DIFFERENTIAL` of its random rules files (default
  `DIFFERENTIAL_EXAMPLES`), drawn here for the leg's machine with the run's seed and judged
  in the guest after the cases (tools/guest/differential.py): `check` live there against
  the kernel's records of its independent stimulus, built here (on arm64 an AArch64 and
  a static armhf build, the cross compilers tools/setup installs). No line of them
  `floods` (records every syscall of the stimulus: two minutes a file under TCG).
- `random-*`: random rule sets over the grammar that decides module and kmod auditing
  (b32 and b64, execve and execveat, perm=, path=, watches, never rules, login-uid
  filters), probed the same way. No requirement may pass `check --arch MACHINE` and fail
  on the kernel.

`KMOD_AUDIT_MATRIX_SEED` replays a run (the failure messages print it);
`KMOD_AUDIT_MATRIX_EXAMPLES` sets how many random rule sets each leg gets (default
`RANDOM_EXAMPLES`). A probe whose records the kernel or auditd did not deliver in full
(verify: undecided, exit 3) says nothing about the rules: such cases are counted, not
judged, and a leg where most cases are undecided fails.

Where the matrix cannot be fetched the tests skip with the reason; with
KMOD_AUDIT_REQUIRE_MATRIX=1 (.ci/run) they fail instead.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shlex
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest

import vmrun
from _differential import PLATFORMS, Judged, build_stimulus, harness_problems, missing_compilers
from _support import FIXTURES, RunCli, fixture_args, valid_report
from kmod_audit import ProbeResult, VerifyOptions, VerifyReport, judge_probe
from kmod_audit.errors import EXIT_UNREACHABLE as EXIT_UNDECIDED
from kmod_audit.evaluate import BEFORE_OPEN_NOTE, exec_order
from kmod_audit.generate import generate_lines
from kmod_audit.profiles import select_profiles
from kmod_audit.syscalls import MACHINES
from kmod_audit.verify import PROBE_PREFIX
from test_agreement import KNOWN, _statuses
from test_kernel_differential import GOOD, draw_examples

REPO = Path(__file__).resolve().parents[1]
RUN_CASES = REPO / "tools" / "guest" / "run-cases.sh"
LEGS = ("amd64-6.1", "amd64-6.12", "arm64-6.1", "arm64-6.12")
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}
RANDOM_EXAMPLES = 4
#: Random files of the kernel-differential test judged in each leg (4 to 18 s each under
#: TCG); KMOD_AUDIT_MATRIX_DIFFERENTIAL sets it.
DIFFERENTIAL_EXAMPLES = 4
FIXTURE_SAMPLE = 4
# A rule set that records every syscall of the stimuli (`-S all`) keeps a TCG guest's
# auditd writing for a while after the probe: the probe waits this long for its records.
PROBE = ("probe", "--no-load", "--timeout", "120")
KMOD = "/usr/bin/kmod"


def _kernel(leg: str) -> vmrun.Kernel:
    required = os.environ.get("KMOD_AUDIT_REQUIRE_MATRIX") == "1"
    reason = None
    kernel = None
    if os.environ.get("KMOD_AUDIT_NO_VM") == "1":
        pytest.skip("KMOD_AUDIT_NO_VM=1")
    try:
        kernel = vmrun.kernel_from_spec(leg)
    except vmrun.VMError as exc:
        reason = f"kernel leg {leg}: {exc}"
    else:
        missing = vmrun.missing_prerequisites(kernel)
        if missing:
            reason = f"kernel leg {leg}: " + "; ".join(missing)
    if reason is not None or kernel is None:
        if required:
            pytest.fail(f"{reason} (KMOD_AUDIT_REQUIRE_MATRIX=1: the matrix must run)")
        pytest.skip(reason or leg)
    return kernel


@attrs.frozen
class Case:
    """One case of a leg's boot: rules, kmod-audit arguments, and check's for comparison."""

    name: str
    rules: str
    argv: tuple[str, ...]
    check_args: tuple[str, ...] = ()
    fixture: str | None = None


@attrs.frozen
class LegRun:
    """What one leg's boot produced."""

    leg: str
    machine: str
    kernel: vmrun.Kernel
    run: vmrun.GuestRun
    out: Path
    cases: dict[str, Case]
    seed: int
    differential: str | None

    def status(self, name: str) -> str | None:
        """The case's RESULT: kmod-audit's exit status, or `load-N`."""
        return self.run.results().get(f"case-{name}")

    def stdout(self, name: str) -> str:
        """What kmod-audit printed for the case."""
        return (self.out / f"{name}.stdout").read_text(encoding="utf-8", errors="replace")

    def report(self, name: str) -> dict[str, Any]:
        """The case's verify JSON report, checked against the schema."""
        return valid_report(self.stdout(name))

    def probe(self, name: str) -> ProbeResult:
        """The case's probe result."""
        line = next(
            (row for row in self.stdout(name).splitlines() if row.startswith(PROBE_PREFIX)), None
        )
        assert line is not None, f"case {name}: no probe result\n{self.run.summary()}"
        return ProbeResult.from_json(json.loads(line[len(PROBE_PREFIX) :]))


def _generated(machine: str) -> list[str]:
    return generate_lines(select_profiles(["all"]), machine=MACHINES[machine], kmod_path=KMOD)


def _text(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _fixture_cases(machine: str) -> list[Case]:
    """A case per rules fixture judged for `machine` that can be loaded in a guest."""
    cases = []
    for path in sorted((FIXTURES / "rules").glob("*.rules")):
        args = fixture_args(path)
        arch = args[args.index("--arch") + 1] if "--arch" in args else "x86_64"
        text = path.read_bytes().decode()
        lines = [line.strip() for line in text.splitlines()]
        if arch != machine or ("-e 2" in lines and lines.index("-e 2") < len(lines) - 1):
            continue  # judged for another machine, or locks before its rules
        # As tests/test_agreement.py: no `-e 2` (later cases need the rules unlocked), no
        # comments; CRs stay.
        loaded = "".join(
            line + "\n"
            for line in text.split("\n")
            if line.strip() != "-e 2" and not line.lstrip().startswith("#")
        )
        probe = list(PROBE)
        for option in ("--uid-min", "--kmod-path"):
            if option in args:
                probe += [option, args[args.index(option) + 1]]
        name = path.name.removesuffix(".rules")
        cases.append(
            Case(
                name=f"fixture-{name}",
                rules=loaded,
                argv=tuple(probe),
                check_args=(str(path), *[a for a in args if a not in {"--strict", "--offline"}]),
                fixture=name,
            )
        )
    return cases


# The random grammar: what decides module and kmod auditing on arm64.
_FILTERS = ("-F auid>=1000", "-F auid!=unset", "-F auid>=1000 -F auid!=unset", "-F uid=0", "")
_SYSCALLS = (
    "init_module",
    "finit_module",
    "delete_module",
    "init_module,finit_module,delete_module",
    "execve",
    "execveat",
    "execve,execveat",
    "all",
)


def _random_rule(rng: random.Random) -> str:
    key = rng.choice(("-k module_chng", "-k module_chng", "-k other", ""))
    kind = rng.random()
    if kind < 0.2:
        return f"-w {KMOD} -p {rng.choice(('x', 'rx', 'wa', 'rwxa'))} {key}".strip()
    action = "never" if rng.random() < 0.15 else "always"
    parts = [f"-{rng.choice('aaA')} {action},exit"]
    arch = rng.choice(("-F arch=b64", "-F arch=b32", ""))
    syscalls = rng.choice(_SYSCALLS)
    if arch:
        parts.append(arch)
    if kind < 0.45:
        parts.append(f"-F path={KMOD}")
        if rng.random() < 0.6:
            parts.append("-F perm=x")
        elif arch:
            parts.append(f"-S {rng.choice(('execve', 'execveat', 'execve,execveat'))}")
    elif arch or syscalls == "all":
        parts.append(f"-S {syscalls}")
    else:
        parts += ["-F arch=b64", f"-S {syscalls}"]
    parts.append(rng.choice(_FILTERS))
    parts.append(key)
    return " ".join(p for p in parts if p)


def _random_cases(machine: str, seed: int, count: int) -> list[Case]:
    rng = random.Random(seed)  # noqa: S311 - rule sets, not secrets
    cases = []
    for index in range(count):
        rules = [_random_rule(rng) for _ in range(rng.randint(1, 5))]
        cases.append(
            Case(
                name=f"random-{index:02d}",
                rules=_text(rules),
                argv=PROBE,
                check_args=("--arch", machine, "--profile", "all"),
            )
        )
    return cases


def _cases(machine: str, seed: int) -> list[Case]:
    generated = _generated(machine)
    verify = ("verify", "--target", "local", "--profile", "all", "--format", "json")
    cases = [
        Case(name="generated", rules=_text(generated), argv=verify),
        Case(
            name="no-b32",
            rules=_text([line for line in generated if "arch=b32" not in line]),
            argv=(*verify, "--no-load"),
        ),
        Case(
            name="permx-only",
            rules=_text([line for line in generated if "-S execveat -F path=" not in line]),
            argv=(*verify, "--no-load"),
            check_args=("--arch", machine, "--profile", "all", "--kmod-path", KMOD),
        ),
        Case(
            name="no-before-open",
            rules=_text([line for line in generated if " -F exit=" not in line]),
            argv=(*verify, "--no-load"),
            check_args=("--arch", machine, "--profile", "all", "--kmod-path", KMOD),
        ),
    ]
    fixtures = _fixture_cases(machine)
    if machine == "x86_64":
        # The host's kernel judges every x86_64 fixture (tests/test_agreement.py); this leg,
        # another kernel of the same arch, a different sample each run.
        count = int(os.environ.get("KMOD_AUDIT_MATRIX_FIXTURES", FIXTURE_SAMPLE))
        fixtures = sorted(
            random.Random(seed).sample(fixtures, min(count, len(fixtures))),  # noqa: S311
            key=lambda c: c.name,
        )
    count = int(os.environ.get("KMOD_AUDIT_MATRIX_EXAMPLES", RANDOM_EXAMPLES))
    return [*cases, *fixtures, *_random_cases(machine, seed, count)]


@pytest.fixture(scope="module", params=LEGS)
def leg_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LegRun:
    """Boot the leg once and run every case in it."""
    leg = str(request.param)
    kernel = _kernel(leg)
    machine = MACHINE[kernel.arch]
    seed = int(os.environ.get("KMOD_AUDIT_MATRIX_SEED", random.SystemRandom().randrange(2**32)))
    share = tmp_path_factory.mktemp(f"matrix-{leg}")
    (share / "cases").mkdir()
    cases = _cases(machine, seed)
    differential = _differential_files(machine, seed, share / "differential")
    for case in cases:
        (share / "cases" / f"{case.name}.rules").write_text(case.rules)
        (share / "cases" / f"{case.name}.args").write_text("".join(a + "\n" for a in case.argv))
    started = time.monotonic()
    run = vmrun.run_guest(
        RUN_CASES,
        kernel=kernel,
        timeout=900,
        rwdirs=[share],
        args=[vmrun.guest_path(kernel, REPO), vmrun.guest_path(kernel, share, [share])],
    )
    print(  # noqa: T201 - the leg's time, in the log the note quotes
        f"\nmatrix leg {leg} ({kernel.package or kernel.version}): {len(cases)} cases in "
        f"{time.monotonic() - started:.0f} s, seed {seed}"
    )
    assert not run.timed_out, run.summary()
    assert run.results().get("done") == "1", run.summary()
    return LegRun(
        leg=leg,
        machine=machine,
        kernel=kernel,
        run=run,
        out=share / "out",
        cases={c.name: c for c in cases},
        seed=seed,
        differential=differential,
    )


def _differential_files(machine: str, seed: int, into: Path) -> str | None:
    """The kernel-differential files and stimulus programs of a leg; why not, when not."""
    platform = PLATFORMS[machine]
    missing = missing_compilers(platform)
    if missing:
        return "; ".join(missing)
    count = int(os.environ.get("KMOD_AUDIT_MATRIX_DIFFERENTIAL", DIFFERENTIAL_EXAMPLES))
    into.mkdir()
    build_stimulus(platform, into)
    (into / "harness.rules").write_text("\n".join(GOOD[machine]) + "\n")
    for index, text in enumerate(draw_examples(platform, count, seed)):
        (into / f"random-{index:02d}.rules").write_text(text)
    return None


def _failed_targets(report: dict[str, Any]) -> set[str]:
    return {
        c["target"]
        for p in report["profiles"]
        for r in p["requirements"]
        for c in r["checks"]
        if c["status"] == "fail"
    }


def _verify_report(run: LegRun, case: Case, *, strict: bool) -> VerifyReport:
    """The probe of `case` judged as `verify` (with `--strict`) judges it."""
    args = list(case.check_args)
    profiles = [args[i + 1] for i, a in enumerate(args) if a == "--profile"]
    key = args[args.index("--key") + 1] if "--key" in args else None
    uid_min = int(args[args.index("--uid-min") + 1]) if "--uid-min" in args else 1000
    options = VerifyOptions(
        profiles=select_profiles(profiles), key=key, uid_min=uid_min, strict=strict, no_load=True
    )
    return judge_probe(run.probe(case.name), options)


def _judged(run: LegRun, case: Case, *, strict: bool) -> tuple[int, dict[str, str]]:
    """The exit code and requirement statuses verify gives for the probe of `case`."""
    report = _verify_report(run, case, strict=strict)
    data = {"profiles": [p.to_json() for p in report.profiles]}
    return report.exit_code(), _statuses(data)


def _checked(run_cli: RunCli, leg_run: LegRun, *args: str) -> tuple[int, dict[str, str], str]:
    """`check` on the host, for the leg's machine and kernel (`--kernel-version`)."""
    result = run_cli("check", *args, "--kernel-version", leg_run.kernel.version, "--format", "json")
    data = json.loads(result.out)
    return result.code, _statuses(data), result.out


@pytest.mark.vm
class TestMatrix:
    """Each leg: generated rules pass with a real load, b32 is proven, check agrees."""

    def test_generated_rules_are_compliant_with_a_real_load(self, leg_run: LegRun) -> None:
        """The generated rules: `verify --profile all`: COMPLIANT; dummy loaded and unloaded."""
        assert leg_run.status("generated") == "0", leg_run.run.summary()
        report = leg_run.report("generated")
        assert report["compliant"] is True
        assert report["machine"] == leg_run.machine
        assert report["kernel"] == leg_run.kernel.version
        loads = [e for e in report["evidence"] if e["stimulus"].get("module") == "dummy"]
        assert [("finit_module", "recorded", "yes"), ("delete_module", "recorded", "yes")] == [
            (e["stimulus"]["syscall"], e["verdict"], e["success"]) for e in loads
        ]

    def test_b32_is_exercised_and_recorded(self, leg_run: LegRun) -> None:
        """Each b32 stimulus a profile requires, by a logged-in user: ran, recorded as b32."""
        report = leg_run.report("generated")
        compat = MACHINES[leg_run.machine].compat
        # What some profile requires in b32 (create_module and query_module, where they
        # exist, only in b64: the generated rules leave their b32 calls unrecorded).
        wanted = {"init_module", "finit_module", "delete_module", "execve", "execveat"}
        b32 = [
            e
            for e in report["evidence"]
            if e["stimulus"]["abi"] == "b32"
            and e["stimulus"]["actor"] in {"root", "user"}
            and e["stimulus"]["syscall"] in wanted
        ]
        assert wanted == {e["stimulus"]["syscall"] for e in b32}
        assert {e["verdict"] for e in b32} == {"recorded"}
        assert all(f"arch={compat.hex} " in e["record"] for e in b32), b32[0]["record"]
        assert not [n for n in report["notes"] if "b32" in n], report["notes"]

    def test_rules_without_b32_are_not_compliant(self, leg_run: LegRun) -> None:
        """Without the b32 lines verify fails, and only b32 targets fail."""
        assert leg_run.status("no-b32") == "1", leg_run.run.summary()
        failed = _failed_targets(leg_run.report("no-b32"))
        assert failed
        assert {t.split()[0] for t in failed} == {"b32"}, failed

    def test_perm_x_alone_and_b32_execveat(self, leg_run: LegRun, run_cli: RunCli) -> None:
        """perm=x misses b32 execveat on arm64 only; check and the kernel agree."""
        case = leg_run.cases["permx-only"]
        path = leg_run.out.parent / "cases" / "permx-only.rules"
        code, _, text = _checked(run_cli, leg_run, str(path), *case.check_args)
        report = leg_run.report("permx-only")
        if leg_run.machine == "aarch64":
            assert leg_run.status("permx-only") == "1", leg_run.run.summary()
            assert _failed_targets(report) == {"b32 execveat of kmod"}
            assert code == 1
            assert "b32 execveat of /usr/bin/kmod" in text
        else:
            assert leg_run.status("permx-only") == "0", leg_run.run.summary()
            assert code == 0, text

    def test_failed_executions_before_the_open(self, leg_run: LegRun, run_cli: RunCli) -> None:
        """Without generate's exit= lines, the kernel version decides; check agrees.

        A failed exec of kmod with a bad argv (EFAULT) or a too long argument (E2BIG) ends
        before the file is opened on Linux 5.9 to 6.7 (6.1 here): `path=` and the watches
        miss it. 6.12 opens the file first and records it.
        """
        case = leg_run.cases["no-before-open"]
        path = leg_run.out.parent / "cases" / "no-before-open.rules"
        code, _, text = _checked(run_cli, leg_run, str(path), *case.check_args)
        report = leg_run.report("no-before-open")
        executions = {
            e["stimulus"]["id"]: e["verdict"]
            for e in report["evidence"]
            if e["stimulus"].get("program") and e["stimulus"]["actor"] == "root"
        }
        failing = {i for i in executions if "-bad-argv-" in i or "-long-argument-" in i}
        assert len(failing) == 8, executions  # b64, b32 x execve, execveat x the two
        results = {
            e["stimulus"]["id"]: e["stimulus"]["result"]
            for e in report["evidence"]
            if e["stimulus"]["id"] in failing
        }
        assert results == {
            i: -errno.EFAULT if "-bad-argv-" in i else -errno.E2BIG for i in failing
        }, results
        if exec_order(leg_run.kernel.version) == "argv-first":
            assert leg_run.status("no-before-open") == "1", leg_run.run.summary()
            assert {i for i, v in executions.items() if v != "recorded"} == failing, executions
            assert code == 1, text
            assert BEFORE_OPEN_NOTE in text
        else:
            assert leg_run.status("no-before-open") == "0", leg_run.run.summary()
            assert set(executions.values()) == {"recorded"}, executions
            assert code == 0, text

    def test_fixtures_check_and_the_kernel_agree(self, leg_run: LegRun, run_cli: RunCli) -> None:
        """Each fixture case: check's verdicts equal the probe's, strict or not."""
        cases = [c for c in leg_run.cases.values() if c.fixture is not None]
        assert cases
        disagreements = []
        undecided = []
        for case in cases:
            assert case.fixture is not None
            status = leg_run.status(case.name)
            if status is not None and status.startswith("load-"):
                # The guest's auditctl refused the file; check must say it does not load.
                code, _, _ = _checked(run_cli, leg_run, *case.check_args)
                if code == 0:
                    disagreements.append(f"{case.fixture}: auditctl refused it, check passes")
                continue
            assert status == "0", f"{case.name}: probe exit {status}\n{leg_run.run.summary()}"
            known = KNOWN.get(case.fixture)
            if known is not None and not known.premise():
                known = None
            for strict in (False, True):
                flag = ("--strict",) if strict else ()
                check = _checked(run_cli, leg_run, *case.check_args, *flag)[:2]
                verify = _judged(leg_run, case, strict=strict)
                if verify[0] == EXIT_UNDECIDED and known is None:
                    undecided.append(case.name)
                elif known is None:
                    if check != verify:
                        disagreements.append(
                            f"{case.fixture} {flag}: check {check}, kernel {verify}"
                        )
                elif (known.check_exit, known.verify_exit) != (check[0], verify[0]):
                    disagreements.append(f"{case.fixture} {flag}: {known.why}: {check} {verify}")
        _enough_decided(leg_run, cases, undecided)
        assert disagreements == [], (
            f"leg {leg_run.leg}, KMOD_AUDIT_MATRIX_SEED={leg_run.seed}:\n"
            + "\n".join(disagreements)
        )

    def test_random_rule_sets_never_pass_what_the_kernel_misses(
        self, leg_run: LegRun, run_cli: RunCli
    ) -> None:
        """No requirement passes `check --arch MACHINE` that the kernel fails."""
        cases = [c for c in leg_run.cases.values() if c.name.startswith("random-")]
        assert cases
        false_passes = []
        undecided = []
        agreed = 0
        for case in cases:
            path = leg_run.out.parent / "cases" / f"{case.name}.rules"
            status = leg_run.status(case.name)
            check = _checked(run_cli, leg_run, str(path), *case.check_args)
            replay = shlex.join(["cat", str(path)]) + f"\n{case.rules}"
            if status is not None and status.startswith("load-"):
                if check[0] == 0:
                    false_passes.append(f"{case.name}: auditctl refused it, check passes\n{replay}")
                continue
            assert status == "0", f"{case.name}: probe exit {status}\n{leg_run.run.summary()}"
            verify = _judged(leg_run, case, strict=False)
            if verify[0] == EXIT_UNDECIDED:
                undecided.append(case.name)
                continue
            agreed += check[1] == verify[1]
            false_passes += [
                f"{case.name} {req}: check pass, kernel {verify[1].get(req)}\n{replay}"
                for req, state in check[1].items()
                if state == "pass" and verify[1].get(req) == "fail"
            ]
        print(  # noqa: T201 - how much of the property the run judged
            f"\n{leg_run.leg}: {agreed}/{len(cases)} random rule sets agree in full, "
            f"{len(undecided)} undecided"
        )
        _enough_decided(leg_run, cases, undecided)
        assert false_passes == [], (
            f"leg {leg_run.leg}, KMOD_AUDIT_MATRIX_SEED={leg_run.seed}:\n" + "\n".join(false_passes)
        )

    def test_kernel_differential_property(self, leg_run: LegRun) -> None:
        """tests/test_kernel_differential.py's files on this kernel: check agrees with it.

        Its independent stimulus (tests/stimulus/stimulus.c), not the probe, makes the
        module syscalls and execs of random rule sets, and check judges them live in the
        guest: on 6.1 a kernel that copies argv before it opens an exec's file; on arm64
        b32 is an armhf program's, recorded as arch=40000028.
        """
        if leg_run.differential is not None:
            if os.environ.get("KMOD_AUDIT_REQUIRE_MATRIX") == "1":
                pytest.fail(f"leg {leg_run.leg}: {leg_run.differential}")
            pytest.skip(leg_run.differential)
        log = (leg_run.out / "differential.log").read_text(errors="replace")
        where = f"leg {leg_run.leg}, KMOD_AUDIT_MATRIX_SEED={leg_run.seed}"
        assert "0" == leg_run.run.results().get("differential"), (
            f"{where}: the differential failed in the guest:\n{log[-6000:]}"
        )
        judged = {
            path.stem: Judged.from_json(json.loads(path.read_text()))
            for path in sorted((leg_run.out / "differential").glob("*.json"))
        }
        harness = judged.pop("harness")
        platform = PLATFORMS[leg_run.machine]
        assert [] == harness_problems(platform, harness, len(GOOD[leg_run.machine])), where
        share = leg_run.out.parent / "differential"
        assert len(list(share.glob("random-*.rules"))) == len(judged), where
        tally = Counter(outcome.kind for one in judged.values() for outcome in one.outcomes)
        print(f"\n{leg_run.leg}: kernel differential {dict(tally)}")  # noqa: T201
        assert [] == [
            f"{outcome.describe()}\n{(share / f'{name}.rules').read_text()}"
            for name, one in judged.items()
            for outcome in one.outcomes
            if outcome.disagrees
        ], where
        assert tally["agree"] > 0, where


def _enough_decided(leg_run: LegRun, cases: list[Case], undecided: list[str]) -> None:
    """Undecided probes judge nothing; most of a leg's cases must be decided."""
    reasons = {
        name: "; ".join(_verify_report(leg_run, leg_run.cases[name], strict=False).incomplete)
        for name in sorted(set(undecided))
    }
    assert len(reasons) * 2 <= len(cases), (
        f"leg {leg_run.leg}: {len(reasons)} of {len(cases)} cases undecided (the guest did not "
        "deliver their records in time):\n"
        + "\n".join(f"{name}: {why}" for name, why in reasons.items())
    )


def test_random_rules_are_well_formed() -> None:
    """The generator's lines are rules auditctl's grammar accepts (parsed by the model)."""
    from kmod_audit.rules import NOT_READ, Rejection, parse_rules  # noqa: PLC0415

    for machine in ("x86_64", "aarch64"):
        for case in _random_cases(machine, seed=1, count=40):
            source = parse_rules(
                case.rules,
                path=case.name,
                machine=MACHINES[machine],
                syntax="rules",
                files=NOT_READ,
            )
            rejected = [i for i in source.items if isinstance(i, Rejection)]
            assert rejected == [], (case.rules, rejected)
            assert re.search(r"-[aAw] ", case.rules)


@pytest.mark.vm
class TestVmVerifyOnOtherKernels:
    """`tools/vm-verify --kernel`, as docs/kernels.md shows it."""

    def _vm_verify(self, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
        output = tmp_path / "report.json"
        proc = subprocess.run(
            [str(REPO / "tools" / "vm-verify"), *args, "--format", "json", "--output", str(output)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        text = proc.stdout + proc.stderr
        assert output.exists(), text
        return proc.returncode, valid_report(output.read_text()), text

    def test_arm64_leg(self, tmp_path: Path) -> None:
        """`--arch arm64 --profile all` (the newest arm64 leg): COMPLIANT, b32 as 40000028."""
        kernel = _kernel(vmrun.ARM64_DEFAULT)
        code, report, text = self._vm_verify(tmp_path, "--arch", "arm64", "--profile", "all")
        assert code == 0, text
        assert report["compliant"] is True
        assert (report["machine"], report["kernel"]) == ("aarch64", kernel.version)
        b32 = [e for e in report["evidence"] if e["stimulus"]["abi"] == "b32"]
        assert b32
        assert all(" arch=40000028 " in e["record"] for e in b32 if e["verdict"] == "recorded")
        assert {e["verdict"] for e in b32 if e["stimulus"]["actor"] == "root"} == {"recorded"}

    def test_debian_package_name(self, tmp_path: Path) -> None:
        """`--kernel linux-image-...`: the package the amd64 6.12 leg unpacked, by its name."""
        kernel = _kernel("amd64-6.12")
        package = kernel.package.split()[0]
        assert package.startswith("linux-image-6.12.")
        code, report, text = self._vm_verify(tmp_path, "--kernel", package, "--profile", "all")
        assert code == 0, text
        assert report["kernel"] == kernel.version
        loads = [e for e in report["evidence"] if e["stimulus"].get("module") == "dummy"]
        assert {e["verdict"] for e in loads} == {"recorded"}
        assert len(loads) == 2
