"""`verify` and `probe` leave every module as they found it: Debian's kernel in a VM.

One boot runs tests/fixtures/vm/modules-scenario.sh with this checkout (through the shared
root filesystem): module names compared as the kernel does (`crc-itu-t` is `crc_itu_t`),
only the modules the load added are unloaded (never a dependency that was loaded before),
and SIGTERM, Ctrl-C or an expiring `--timeout` during the load still unloads the module,
or names the one left loaded. The slow load is real: a modprobe.d `install` command keeps
modprobe running after the module is in, and the scenario signals then.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

import vmrun
from _support import FIXTURES, valid_report
from kmod_audit.generate import generate_lines
from kmod_audit.profiles import select_profiles
from kmod_audit.syscalls import MACHINES

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[1]
SCENARIO = FIXTURES / "vm" / "modules-scenario.sh"


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


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> vmrun.GuestRun:
    """Boot once and run every situation of the scenario script."""
    kernel = _kernel()
    rules = tmp_path_factory.mktemp("vm-modules") / "rules"
    lines = generate_lines(
        select_profiles(["nixos-stig"]), machine=MACHINES["x86_64"], kmod_path="/usr/bin/kmod"
    )
    rules.write_text("".join(line + "\n" for line in lines))
    rules.chmod(0o600)
    run = vmrun.run_guest(SCENARIO, kernel=kernel, timeout=1200, args=[str(REPO), str(rules)])
    assert not run.timed_out, run.summary()
    return run


def _results(run: vmrun.GuestRun, **expected: str) -> None:
    """Assert RESULT values, showing all of them (and the output tail) when one differs."""
    results = run.results()
    assert expected == {key: results.get(key) for key in expected}, run.summary(60)


def _report(run: vmrun.GuestRun, name: str) -> dict[str, Any]:
    return valid_report(run.section(name))


class TestModuleNames:
    """(a) `-` and `_` name the same module."""

    def test_dash_spelling_of_a_loaded_module_is_left_loaded(
        self, scenario: vmrun.GuestRun
    ) -> None:
        """`--module crc-itu-t` while crc_itu_t is loaded: not loaded, not unloaded."""
        _results(scenario, a_crc_after="yes")
        notes = _report(scenario, "a_dash")["notes"]
        assert any("crc-itu-t is already loaded; it is left as found" in n for n in notes), notes


class TestOnlyNewModulesAreUnloaded:
    """(b) The modules the load added go, nothing else."""

    def test_exactly_the_modules_the_load_added_go(self, scenario: vmrun.GuestRun) -> None:
        """`--module udf`: crc_itu_t stays when it was loaded before, and goes when not.

        cdrom, the other dependency, is loaded at boot (sr_mod uses it) and stays too. The
        unload of udf itself is the delete_module stimulus, recorded with the key.
        """
        _results(scenario, b_dep="0", b_udf_after="no", b_crc_after="yes", b_cdrom_after="yes")
        _results(scenario, b_new="0", b_new_udf_after="no", b_new_crc_after="no")
        evidence = [e for e in _report(scenario, "b_dep")["evidence"] if e["stimulus"]["module"]]
        assert [
            ("finit_module", "recorded", "udf"),
            ("delete_module", "recorded", "udf"),
        ] == [(e["stimulus"]["syscall"], e["verdict"], e["module"]) for e in evidence]


class TestSignalDuringTheLoad:
    """(c) A signal while modprobe is loading still leaves every module as found."""

    def test_sigterm_to_the_probe(self, scenario: vmrun.GuestRun) -> None:
        """SIGTERM to the probe alone: it unloads dummy, says so, and exits 3."""
        _results(scenario, c_term_in_window="yes", c_term="3", c_term_dummy_after="no")
        said = scenario.section("c_term.err")
        assert "stopped by SIGTERM" in said, said
        assert "it unloaded dummy again, every module is as found" in said, said

    def test_ctrl_c_on_the_probe(self, scenario: vmrun.GuestRun) -> None:
        """SIGINT to the probe's process group (Ctrl-C): dummy is unloaded, exit 3."""
        _results(scenario, c_int_in_window="yes", c_int="3", c_int_dummy_after="no")
        assert "stopped by SIGINT" in scenario.section("c_int.err")

    def test_ctrl_c_on_verify(self, scenario: vmrun.GuestRun) -> None:
        """Ctrl-C on verify stops the probe (SIGTERM); dummy is unloaded, and verify says so."""
        _results(
            scenario,
            c_verify_int_in_window="yes",
            c_verify_int="130",
            c_verify_int_dummy_after="no",
        )
        said = scenario.section("c_verify_int.err")
        assert "it unloaded dummy again" in said, said

    def test_verify_timeout(self, scenario: vmrun.GuestRun) -> None:
        """The --timeout of verify expires during the load: exit 3, dummy unloaded, said so."""
        _results(scenario, c_timeout_loaded="yes", c_timeout="3", c_timeout_dummy_after="no")
        said = scenario.section("c_timeout.err")
        assert "did not finish within 60 s" in said, said
        assert "it unloaded dummy again" in said, said


class TestModuleLeftLoaded:
    """When a module cannot be unloaded, the output names it and how to unload it."""

    def test_interrupted_probe_names_it(self, scenario: vmrun.GuestRun) -> None:
        """A module held open by the load's own process (tun): SIGTERM, exit 3, tun named."""
        _results(scenario, c_pin_in_window="yes", c_pin="3", c_pin_tun_after="yes")
        said = scenario.section("c_pin.err")
        assert "stopped by SIGTERM" in said, said
        assert "could not unload it (tun: in use, use count " in said, said
        assert "it is left loaded; unload it with `rmmod tun` once nothing uses it" in said, said

    def test_verify_names_it(self, scenario: vmrun.GuestRun) -> None:
        """A soft dependency held open: verify exits 3 and its problems name tun."""
        _results(scenario, pin_verify="3", pin_verify_tun_after="yes", pin_verify_dummy_after="no")
        problems = _report(scenario, "pin_verify")["problems"]
        left = [p for p in problems if "tun" in p]
        assert 1 == len(left), problems
        assert re.fullmatch(
            r"the probe loaded tun and could not unload it \(tun: in use, use count \d+\): "
            r"it is left loaded; unload it with `rmmod tun` once nothing uses it",
            left[0],
        ), left
