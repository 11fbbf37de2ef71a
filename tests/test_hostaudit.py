"""tools/hostaudit.py when auditctl hangs: a clear error, and the status still put back.

The real path (every test that drives the host's audit subsystem, through `held()` and the
`host_audit` fixture, restores the real kernel's rules and status) is checked in
tests/conftest.py. Here a stand-in `auditctl` on PATH hangs where the real one can take
minutes (`-D` of 20,000 rules), which no test can wait for.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import hostaudit


@pytest.fixture
def fake_auditctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `auditctl` that logs its arguments and hangs on `-D`; returns the log."""
    log = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "auditctl"
    script.write_text(
        f'#!/bin/sh\necho "$*" >> {log}\n[ "$1" = -D ] && exec sleep 30\nexit 0\n',
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(hostaudit, "DELETE_TIMEOUT", 0.5)
    return log


def test_a_hanging_auditctl_is_a_clear_error(fake_auditctl: Path) -> None:
    """`-D` past its timeout: HostAuditError naming the call and what to do, no traceback."""
    with pytest.raises(hostaudit.HostAuditError) as caught:
        hostaudit.auditctl("-D")
    assert str(caught.value) == (
        "auditctl -D did not finish within 0.5 s; check the host's audit state "
        "(auditctl -s, auditctl -l) and restore it by hand"
    )
    assert fake_auditctl.read_text() == "-D\n"


def test_restore_puts_the_status_back_before_it_raises(fake_auditctl: Path) -> None:
    """The rules could not be deleted: `enabled` and the rest are restored anyway."""
    host = hostaudit.HostAudit(
        rules="No rules\n",
        status={"enabled": "0", "failure": "1", "backlog_limit": "64"},
        waited=0.0,
    )
    with pytest.raises(hostaudit.HostAuditError, match="auditctl -D did not finish"):
        host.restore()
    assert fake_auditctl.read_text().splitlines() == ["-D", "-b 64", "-f 1", "-e 0"]
