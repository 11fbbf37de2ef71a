"""contrib/systemd/: the unit files shipped for Debian, RHEL and AL2023.

`systemd-analyze verify` (tools/setup installs systemd) checks them against a private root
that holds the system's units and the binary their ExecStart= names. Their commands then
run for real on the host kernel with exactly the capability bounding set and
no_new_privs the units give them (setpriv), as systemd would start them.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

import attrs
import pytest
from prometheus_client.parser import text_string_to_metric_families

from _support import Auditd, HostAudit, RunCli, auditctl, require_tool

CONTRIB: Final = Path(__file__).parent.parent / "contrib" / "systemd"
UNITS: Final = (
    "kmod-audit-check.service",
    "kmod-audit-check.timer",
    "kmod-audit-verify.service",
    "kmod-audit-verify.timer",
)
SYSTEM_UNITS: Final = Path("/usr/lib/systemd/system")


@attrs.frozen
class Unit:
    """The settings of a unit file that the tests use (the last value of each key)."""

    settings: dict[str, list[str]]

    @classmethod
    def read(cls, name: str) -> Unit:
        """Parse contrib/systemd/NAME (no continuation lines are used there)."""
        settings: dict[str, list[str]] = {}
        for line in (CONTRIB / name).read_text().splitlines():
            if line.startswith(("#", "[")) or "=" not in line:
                continue
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
        return cls(settings)

    def one(self, key: str) -> str:
        """The value of `key` (it must be set once)."""
        values = self.settings[key]
        assert 1 == len(values), f"{key}: {values}"
        return values[0]

    def environment(self) -> dict[str, str]:
        """The Environment= assignments (quotes removed as systemd does)."""
        env: dict[str, str] = {}
        for value in self.settings.get("Environment", []):
            for word in shlex.split(value):
                name, _, text = word.partition("=")
                env[name] = text
        return env

    def command(self) -> list[str]:
        """ExecStart= as systemd expands it: `$VAR` splits into words, `${VAR}` is one word."""
        env = self.environment()
        words: list[str] = []
        for word in self.one("ExecStart").split():
            whole = re.fullmatch(r"\$\{(\w+)\}", word)
            split = re.fullmatch(r"\$(\w+)", word)
            if whole:
                words.append(env[whole.group(1)])
            elif split:
                words.extend(env[split.group(1)].split())
            else:
                words.append(word)
        return words

    def setpriv(self) -> list[str]:
        """The setpriv options that give a process this unit's bounding set and no_new_privs."""
        caps = self.one("CapabilityBoundingSet").split()
        bounding = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])
        options = [f"--bounding-set={bounding}", "--inh-caps=-all"]
        if self.one("NoNewPrivileges") == "yes":
            options.append("--no-new-privs")
        return options


def _analyze(
    tmp_path: Path, replace: tuple[str, str] | None = None, drop_in: str = ""
) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of the units in a root holding the system units and binary.

    `drop_in` is installed as an override.conf of kmod-audit-check.service.
    """
    analyze = require_tool("systemd-analyze", "apt-get install systemd")
    root = tmp_path / "root"
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    for name in UNITS:
        text = (CONTRIB / name).read_text()
        if replace is not None:
            text = text.replace(*replace)
        (units / name).write_text(text)
    if drop_in:
        directory = units / "kmod-audit-check.service.d"
        directory.mkdir()
        (directory / "override.conf").write_text(drop_in)
    binary = Path(Unit.read(UNITS[0]).one("ExecStart").split()[0])
    inside = root / binary.relative_to("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("#!/bin/sh\n")
    inside.chmod(0o755)
    return subprocess.run(
        [analyze, "verify", "--man=no", f"--root={root}", *UNITS],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


class TestSystemdAnalyze:
    """The shipped units pass `systemd-analyze verify`; a broken one does not."""

    def test_units_verify(self, tmp_path: Path) -> None:
        """No error and no warning for any of the four units."""
        proc = _analyze(tmp_path)
        assert (0, "") == (proc.returncode, proc.stderr + proc.stdout)

    @pytest.mark.parametrize(
        "replace",
        [
            ("ExecStart=/usr/local/bin/", "ExecStart=/nonexistent/"),
            ('Environment="KMOD_AUDIT_ARGS=--profile nixos-stig"', "Environment=A=b c"),
        ],
        ids=["missing-binary", "bad-environment"],
    )
    def test_a_broken_unit_fails(self, tmp_path: Path, replace: tuple[str, str]) -> None:
        """The check can fail: a unit with a mistake is an error or a warning."""
        proc = _analyze(tmp_path, replace)
        # An error fails systemd-analyze; a setting it ignores is a warning on stderr.
        assert (0, "") != (proc.returncode, proc.stderr + proc.stdout)
        assert "kmod-audit-" in proc.stderr

    def test_documented_drop_in_verifies(self, tmp_path: Path) -> None:
        """The RHEL and AL2023 drop-in of docs/install.md validly overrides the check unit."""
        readme = (CONTRIB.parent.parent / "docs" / "install.md").read_text()
        blocks = re.findall(r"```ini\n(\[Service\]\n.*?)```", readme, re.DOTALL)
        assert 1 == len(blocks)
        assert "ReadWritePaths=\n" in blocks[0]  # clears the Debian path first
        proc = _analyze(tmp_path, drop_in=blocks[0])
        assert (0, "") == (proc.returncode, proc.stderr + proc.stdout)
        proc = _analyze(tmp_path / "broken", drop_in=blocks[0].replace("=", " ", 1))
        assert "override.conf" in proc.stderr

    def test_services_are_oneshot_and_fail_when_not_compliant(self) -> None:
        """Oneshot, no exit status counted as success but 0: exit 1 and 3 fail the unit."""
        for name in ("kmod-audit-check.service", "kmod-audit-verify.service"):
            unit = Unit.read(name)
            assert "oneshot" == unit.one("Type")
            assert "SuccessExitStatus" not in unit.settings
            assert not unit.one("ExecStart").startswith("-")
            assert "strict" == unit.one("ProtectSystem")
            metrics = Path(unit.environment()["KMOD_AUDIT_METRICS"])
            assert str(metrics.parent) == unit.one("ReadWritePaths")
            assert "CAP_SYS_MODULE" not in unit.one("CapabilityBoundingSet")
        for name in ("kmod-audit-check.timer", "kmod-audit-verify.timer"):
            unit = Unit.read(name)
            assert ("hourly", "true") == (unit.one("OnCalendar"), unit.one("Persistent"))


def _metrics(path: Path) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
        if sample.name == "kmod_audit_exit_code"
    }


def _as_unit(unit: Unit, metrics: Path, setpriv: list[str]) -> subprocess.CompletedProcess[str]:
    """The unit's command with its capabilities; this Python and `metrics` substituted."""
    tool = require_tool("setpriv", "apt-get install util-linux")
    command = unit.command()
    wanted = unit.environment()["KMOD_AUDIT_METRICS"]
    args = [str(metrics) if word == wanted else word for word in command[1:]]
    return subprocess.run(
        [tool, *setpriv, sys.executable, "-m", "kmod_audit", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.mark.root
class TestCapabilities:
    """The units' commands work with exactly their capabilities, and need them."""

    def test_check_unit_command_runs_with_its_capabilities(
        self, host_audit: HostAudit, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """CAP_AUDIT_CONTROL suffices to judge the kernel and on-disk rules; without it, exit 3."""
        assert 0 == host_audit.load(run_cli("generate").out).returncode
        auditctl("-e", "1")
        unit = Unit.read("kmod-audit-check.service")
        metrics = tmp_path / "kmod-audit-check.prom"
        proc = _as_unit(unit, metrics, unit.setpriv())
        # This host's on-disk rules are whatever they are (0 or 1); never 2 or 3.
        assert proc.returncode in {0, 1}, proc.stdout + proc.stderr
        assert "== running rules (auditctl -l): COMPLIANT" in proc.stdout
        assert {"kmod_audit_exit_code": proc.returncode} == _metrics(metrics)
        without = [o for o in unit.setpriv() if not o.startswith("--bounding-set")]
        proc = _as_unit(unit, metrics, [*without, "--bounding-set=-all"])
        assert 3 == proc.returncode, proc.stdout + proc.stderr
        assert "Operation not permitted" in proc.stderr
        assert {"kmod_audit_exit_code": 3} == _metrics(metrics)

    def test_verify_unit_command_runs_with_its_capabilities(
        self, host_audit: HostAudit, auditd: Auditd, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """`verify --no-load` proves the rules without CAP_SYS_MODULE or any other extra."""
        del auditd
        assert 0 == host_audit.load(run_cli("generate").out).returncode
        auditctl("-e", "1")
        unit = Unit.read("kmod-audit-verify.service")
        metrics = tmp_path / "kmod-audit-verify.prom"
        proc = _as_unit(unit, metrics, unit.setpriv())
        assert 0 == proc.returncode, proc.stdout + proc.stderr
        assert "by choice (--no-load)" in proc.stdout
        assert {"kmod_audit_exit_code": 0} == _metrics(metrics)
