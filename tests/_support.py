"""Helpers shared by the tests (importable thanks to `pythonpath = ["tests"]`)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import attrs
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@attrs.frozen
class CliResult:
    """What one CLI run returned."""

    code: int
    out: str
    err: str


class RunCli(Protocol):
    """The `run_cli` fixture: run `kmod-audit ARGS...` in-process."""

    def __call__(self, *args: str) -> CliResult:
        """Run the CLI."""
        ...


def auditctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real auditctl (output decoded without newline translation: keys may hold CR)."""
    proc = subprocess.run(["auditctl", *args], capture_output=True, check=False, timeout=60)
    result = subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )
    if check:
        result.check_returncode()
    return result


def audit_status() -> dict[str, str]:
    """`auditctl -s` as a mapping."""
    status: dict[str, str] = {}
    for line in auditctl("-s").stdout.splitlines():
        name, _, value = line.partition(" ")
        status[name] = value.strip()
    return status


@attrs.define
class HostAudit:
    """The host's audit subsystem, restored to its original state at teardown.

    Attributes:
        rules: `auditctl -l` as found.
        status: `auditctl -s` as found.
    """

    rules: str
    status: dict[str, str]

    def load(self, text: str) -> subprocess.CompletedProcess[str]:
        """Replace the rules with `text` via `auditctl -R` (after `-D`); return the result."""
        if "-e 2" in text or "-f 2" in text:
            msg = "refusing to load -e 2 / -f 2 on the host"
            raise AssertionError(msg)
        auditctl("-D")
        with tempfile.NamedTemporaryFile("w", suffix=".rules", delete=False) as handle:
            handle.write(text)
        try:
            os.chmod(handle.name, 0o600)
            return auditctl("-R", handle.name, check=False)
        finally:
            os.unlink(handle.name)

    def listing(self) -> str:
        """`auditctl -l` now."""
        return auditctl("-l").stdout

    def restore(self) -> None:
        """Put back the rules and the status found at setup."""
        auditctl("-D")
        if self.rules.strip() != "No rules":
            with tempfile.NamedTemporaryFile("w", suffix=".rules", delete=False) as handle:
                handle.write(self.rules)
            try:
                auditctl("-R", handle.name, check=False)
            finally:
                os.unlink(handle.name)
        for option, name in (
            ("-b", "backlog_limit"),
            ("-r", "rate_limit"),
            ("--backlog_wait_time", "backlog_wait_time"),
        ):
            value = self.status.get(name)
            if value is not None and value.isdigit():
                auditctl(option, value, check=False)
        failure = self.status.get("failure")
        if failure in {"0", "1"}:
            auditctl("-f", failure, check=False)
        enabled = self.status.get("enabled")
        if enabled in {"0", "1"}:
            auditctl("-e", enabled, check=False)


def poll(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until `predicate()` holds, failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.05)


@attrs.frozen
class Auditd:
    """A private auditd started by a test.

    Attributes:
        pid: Its pid.
        log: Its log file.
    """

    pid: int
    log: Path


def auditd_conf(directory: Path, log: Path) -> str:
    ours = {
        "log_file": str(log),
        "log_group": "root",
        "log_format": "ENRICHED",
        "write_logs": "yes",
        "flush": "INCREMENTAL_ASYNC",
        "freq": "50",
        "plugin_dir": str(directory / "plugins.d"),
        "max_log_file_action": "ROTATE",
        "num_logs": "5",
        "space_left_action": "IGNORE",
        "admin_space_left_action": "IGNORE",
        "disk_full_action": "IGNORE",
        "disk_error_action": "IGNORE",
    }
    host = Path("/etc/audit/auditd.conf")
    lines = host.read_text().splitlines() if host.exists() else []
    kept = [line for line in lines if line.partition("=")[0].strip() not in ours]
    return "\n".join([*kept, *(f"{name} = {value}" for name, value in ours.items())]) + "\n"


def require_or_skip(reason: str) -> None:
    """Skip a test whose prerequisite is missing, or fail when KMOD_AUDIT_REQUIRE_ROOT=1.

    `tools/check` sets KMOD_AUDIT_REQUIRE_ROOT=1 when run as root (CI): there a missing
    prerequisite is a broken setup, not a reason to pass by skipping.
    """
    if os.environ.get("KMOD_AUDIT_REQUIRE_ROOT") == "1":
        pytest.fail(f"KMOD_AUDIT_REQUIRE_ROOT=1 but {reason}")
    pytest.skip(reason)


def host_kmod_layout() -> bool:
    """Whether this machine has the Debian kmod layout the fixtures name.

    /usr/bin/kmod a real file and /usr/sbin/insmod, /usr/sbin/modprobe symlinks to it.
    """
    kmod = Path("/usr/bin/kmod")
    return (
        kmod.is_file()
        and not kmod.is_symlink()
        and Path("/usr/sbin/insmod").is_symlink()
        and Path("/usr/sbin/modprobe").is_symlink()
    )
