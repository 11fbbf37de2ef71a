"""Helpers shared by the tests (importable thanks to `pythonpath = ["tests"]`)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Protocol

import attrs

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
