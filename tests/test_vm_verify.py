"""`verify` on a real kernel with module support: Debian's kernel in a throwaway VM.

One boot runs the whole scenario (tests/fixtures/vm/verify-scenario.sh): the generated
rules are loaded, auditd runs, and `kmod-audit verify` (this checkout, through the shared
root filesystem) really loads `dummy` with finit_module and unloads it with delete_module.
A second boot drives the guest's serial console from the host with `SerialConsole`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import vmrun
from _support import FIXTURES, consumer_import, review_results, valid_report
from kmod_audit.generate import generate_lines
from kmod_audit.profiles import select_profiles
from kmod_audit.syscalls import MACHINES
from kmod_audit.transports import SerialConsole
from kmod_audit.verify import VerifyOptions, run_verify

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[1]
SCENARIO = FIXTURES / "vm" / "verify-scenario.sh"


def _kernel() -> vmrun.Kernel:
    missing = vmrun.missing_prerequisites()
    kernel = vmrun.find_kernel()
    if missing or kernel is None or os.environ.get("KMOD_AUDIT_NO_VM") == "1":
        reason = "VM prerequisites missing: " + "; ".join(missing or ["no kernel"])
        if (
            os.environ.get("KMOD_AUDIT_REQUIRE_ROOT") == "1"
            and os.environ.get("KMOD_AUDIT_NO_VM") != "1"
        ):
            pytest.fail(reason)
        pytest.skip(reason)
    return kernel


def _rules(tmp: Path, *, drop: str | None = None) -> Path:
    lines = generate_lines(
        select_profiles(["nixos-stig"]), machine=MACHINES["x86_64"], kmod_path="/usr/bin/kmod"
    )
    if drop is not None:
        lines = [line.replace(f"{drop},", "").replace(f",{drop}", "") for line in lines]
    path = tmp / ("rules" if drop is None else f"rules-without-{drop}")
    path.write_text("".join(line + "\n" for line in lines))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> vmrun.GuestRun:
    """Boot once and run every verify situation of the scenario script."""
    kernel = _kernel()
    tmp = tmp_path_factory.mktemp("vm-verify")
    run = vmrun.run_guest(
        SCENARIO,
        kernel=kernel,
        timeout=600,
        args=[str(REPO), str(_rules(tmp)), str(_rules(tmp, drop="finit_module"))],
    )
    assert not run.timed_out, run.summary()
    return run


def _report(run: vmrun.GuestRun, name: str) -> dict[str, Any]:
    return valid_report(run.section(name))


def _evidence(report: dict[str, Any], **match: object) -> list[dict[str, Any]]:
    return [
        e for e in report["evidence"] if all(e["stimulus"].get(k) == v for k, v in match.items())
    ]


class TestVerifyInTheVM:
    """The control proven on a kernel that can load modules."""

    def test_full_rules_pass(self, scenario: vmrun.GuestRun) -> None:
        """With the generated rules verify exits 0."""
        assert "0" == scenario.results().get("full"), scenario.summary()
        assert _report(scenario, "full")["compliant"] is True

    def test_dummy_really_loads_and_unloads_with_records(self, scenario: vmrun.GuestRun) -> None:
        """finit_module and delete_module of dummy: keyed, the user's auid, KERN_MODULE name."""
        report = _report(scenario, "full")
        loads = _evidence(report, module="dummy")
        assert [("finit_module", "delete_module")] == [
            tuple(e["stimulus"]["syscall"] for e in loads)
        ]
        assert [
            ("recorded", ("module_chng",), "yes", "1000", "dummy"),
            ("recorded", ("module_chng",), "yes", "1000", "dummy"),
        ] == [(e["verdict"], tuple(e["key"]), e["success"], e["auid"], e["module"]) for e in loads]
        assert "syscall=313 " in loads[0]["record"]
        assert "syscall=176 " in loads[1]["record"]

    def test_b32_failures_recorded(self, scenario: vmrun.GuestRun) -> None:
        """The unsuccessful b32 calls (int 0x80) are recorded with the key."""
        report = _report(scenario, "full")
        b32 = [
            e
            for e in _evidence(report, abi="b32", actor="root")
            if e["stimulus"]["syscall"] in {"init_module", "finit_module", "delete_module"}
        ]
        assert 3 == len(b32)
        assert {("recorded", "no")} == {(e["verdict"], e["success"]) for e in b32}

    def test_without_finit_module_fails(self, scenario: vmrun.GuestRun) -> None:
        """With finit_module missing from the rules verify exits 1, naming it."""
        assert "1" == scenario.results().get("no_finit"), scenario.summary()
        failed = [
            c["target"]
            for p in _report(scenario, "no_finit")["profiles"]
            for r in p["requirements"]
            for c in r["checks"]
            if c["status"] == "fail"
        ]
        assert ["b64 finit_module", "b32 finit_module"] == failed

    def test_missing_module_is_reported(self, scenario: vmrun.GuestRun) -> None:
        """A probe module that does not exist: the load is not exercised, the rest passes."""
        assert "0" == scenario.results().get("missing_module")
        notes = _report(scenario, "missing_module")["notes"]
        assert any("kmod_audit_no_such_module is not in" in n for n in notes), notes

    def test_loaded_module_is_left_as_found(self, scenario: vmrun.GuestRun) -> None:
        """An already loaded module is not unloaded."""
        assert "yes" == scenario.results().get("dummy_still_loaded")
        notes = _report(scenario, "already_loaded")["notes"]
        assert any("already loaded; it is left as found" in n for n in notes), notes

    def test_locked_rules_are_fine(self, scenario: vmrun.GuestRun) -> None:
        """With `enabled 2` verify only reads and still passes."""
        assert "0" == scenario.results().get("locked")
        assert 2 == _report(scenario, "locked")["audit"]["enabled"]

    def test_modules_disabled_still_records_attempts(self, scenario: vmrun.GuestRun) -> None:
        """With modules_disabled=1 loads fail with EPERM, and the attempts are still recorded."""
        assert "0" == scenario.results().get("modules_disabled")
        report = _report(scenario, "modules_disabled")
        assert any("kernel.modules_disabled=1" in n for n in report["notes"])
        init = _evidence(report, abi="b64", syscall="init_module", actor="root")
        assert [("recorded", "-1")] == [(e["verdict"], str(e["stimulus"]["result"])) for e in init]


class TestConsoleTransport:
    """The host-side verifier drives the guest over its serial console."""

    def test_verify_over_the_console(self, tmp_path: Path) -> None:
        """Start auditd, load rules, read `auditctl -l` and run the probe, all on the console."""
        kernel = _kernel()
        rules = _rules(tmp_path)
        python = str(REPO / ".venv" / "bin" / "python")
        with (
            vmrun.console(kernel, timeout=300) as child,
            SerialConsole(
                child=child,
                name="vm console",
                path="/usr/sbin:/usr/bin:/sbin:/bin",
                initial_prompt=None,  # vmrun.console() already waited for the first prompt
            ) as console,
        ):
            status, output = console.execute(["sh", str(vmrun.START_AUDITD), "60"], timeout=120)
            assert 0 == status, output
            assert (0, "") == console.execute(["auditctl", "-R", str(rules)], timeout=60)
            status, listing = console.execute(["auditctl", "-l"], timeout=60)
            assert 0 == status
            assert "-a always,exit -F arch=b32 -S init_module,delete_module,finit_module" in listing
            options = VerifyOptions(
                profiles=select_profiles(["nixos-stig"]),
                probe_command=(python, "-m", "kmod_audit"),
                timeout=300,
            )
            report = run_verify(console, options, local=False)
        assert report.compliant, report.problems
        assert report.probe.machine == "x86_64"
        assert sys.platform == "linux"


class TestVmVerifyTool:
    """`tools/vm-verify --format cklb --output FILE`: the checklist reaches the host."""

    def test_checklist_lands_on_the_host_and_imports(self, tmp_path: Path) -> None:
        """STIG Manager imports it: V-268096 passes, with the dummy load's record as evidence."""
        _kernel()
        out = tmp_path / "x.cklb"
        proc = subprocess.run(
            [str(REPO / "tools" / "vm-verify"), "--format", "cklb", "--output", str(out)],
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        tail = f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        assert 0 == proc.returncode, tail
        assert f"tools/vm-verify: report written to {out}" in proc.stderr
        assert ["x.cklb"] == [p.name for p in tmp_path.iterdir()]
        imported = consumer_import("cklb", out)
        assert {"SV-268096r1039563_rule": "pass"} == review_results(imported)
        [review] = imported["checklists"][0]["reviews"]
        load = next(
            line
            for line in review["detail"].splitlines()
            if "finit_module (real load/unload of module dummy)" in line
        )
        assert "[logged-in user as root: auid=1000 uid=0" in load
        assert "recorded: SYSCALL serial=" in load
        assert "key=module_chng auid=1000 success=yes exit=0; KERN_MODULE name=dummy" in load
