"""Shared fixtures: the CLI runner, the machines, and the host's real audit subsystem.

Tests that touch the host kernel's audit state use `host_audit`: it records the rules and
the status (enabled, failure, backlog, rate, backlog_wait_time) first and restores them
afterwards, even when the test fails. It never sets `-e 2` or `-f 2` (those would lock
audit or panic the machine until reboot).

Root-only tests are skipped when not root, unless `KMOD_AUDIT_REQUIRE_ROOT=1` (set by
`.ci/run`): then a missing prerequisite is a failure, so CI cannot pass by skipping.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from hypothesis import settings

from _support import (
    Auditd,
    CliResult,
    HostAudit,
    RunCli,
    Unprivileged,
    audit_status,
    require_or_skip,
    valid_report,
)
from hostaudit import HostAuditError, held, private_auditd, unusable
from kmod_audit._arguments import wants_json
from kmod_audit.cli import main
from kmod_audit.syscalls import MACHINES, Machine

#: `tools/check --quick` (KMOD_AUDIT_QUICK=1): the most examples a property test runs.
QUICK_EXAMPLES = 10
#: Under --quick, the suites that run every case on the host kernel one at a time (every
#: rules fixture through check and verify, every auditctl oracle line) run one case in
#: QUICK_SAMPLE, the same ones each time; CI runs them all.
QUICK_SAMPLED: Final = frozenset({"test_agreement.py", "test_auditctl_oracle.py"})
QUICK_SAMPLE = 16


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (remote.py) into node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the VM tests on one xdist worker; under --quick, shorten the long runs.

    `tools/check` runs the tests on both cores with `--dist loadgroup`. The VM tests boot
    QEMU under TCG and share module-scoped boots (a scenario, a matrix leg): they form one
    group, so one worker runs them one at a time while the other runs the rest. Two guests
    at once (the matrix as a second group) made the whole run slower: each TCG guest
    wants more than a core (pytest alone 23.6 min in CI, the matrix legs three times
    slower than alone).
    Tests that drive the host's audit subsystem serialise on its lock (tools/hostaudit.py), in
    whichever worker runs them; under --quick they are one group too (2 min 12 s instead of
    2 min 52 s here), while in the full run the VM group keeps one worker busy anyway.
    """
    quick = os.environ.get("KMOD_AUDIT_QUICK") == "1"
    if quick:
        seen: dict[str, int] = {}
        kept, dropped = [], []
        for item in items:
            module = item.path.name
            if module in QUICK_SAMPLED and hasattr(item, "callspec"):
                seen[module] = seen.get(module, -1) + 1
                if seen[module] % QUICK_SAMPLE:
                    dropped.append(item)
                    continue
            kept.append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept
    for item in items:
        if item.get_closest_marker("vm") is not None:
            item.add_marker(pytest.mark.xdist_group("vm"))
        elif quick and "host_audit" in getattr(item, "fixturenames", ()):
            # Without the VM tests, the tests that hold the host audit lock are the longest
            # chain: on one worker they run back to back while the other runs the rest,
            # instead of both workers waiting on the lock in turn.
            item.add_marker(pytest.mark.xdist_group("host-audit"))
        # Hypothesis reads a test's settings from the function when it runs.
        test = getattr(getattr(item, "obj", None), "__func__", getattr(item, "obj", None))
        chosen = getattr(test, "_hypothesis_internal_use_settings", None)
        if quick and chosen is not None and chosen.max_examples > QUICK_EXAMPLES:
            test._hypothesis_internal_use_settings = settings(  # type: ignore[union-attr]
                chosen, max_examples=QUICK_EXAMPLES
            )


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """Run `kmod-audit ARGS...` in-process; return code, stdout and stderr.

    Whatever `--format json` prints on stdout is checked against the shipped JSON Schema
    (`valid_report`), so every JSON output of the tests that use this fixture conforms.
    """

    def run(*args: str) -> CliResult:
        out = io.StringIO()
        capsys.readouterr()
        code = main(list(args), out=out)
        captured = capsys.readouterr()
        if wants_json(args) and out.getvalue().strip():
            valid_report(out.getvalue())
        return CliResult(code, out.getvalue() + captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def unprivileged() -> Iterator[Unprivileged]:
    """Run the CLI as uid/gid 65534 (root only), wherever the clone lives.

    The package and its dependencies are copied to a fresh world-readable directory
    (removed afterwards), and run by an interpreter that user can read.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to an unprivileged user")
    if shutil.which("setpriv") is None:
        require_or_skip("setpriv is not installed (apt-get install util-linux)")
    directory = Path(tempfile.mkdtemp(prefix="kmod-audit-unprivileged-"))
    try:
        yield Unprivileged.stage(directory)
    finally:
        shutil.rmtree(directory)


@pytest.fixture
def x86_64() -> Machine:
    """The x86_64 machine."""
    return MACHINES["x86_64"]


@pytest.fixture
def aarch64() -> Machine:
    """The aarch64 machine."""
    return MACHINES["aarch64"]


def _require_root_or_skip(reason: str) -> None:
    if os.environ.get("KMOD_AUDIT_REQUIRE_ROOT") == "1":
        pytest.fail(f"KMOD_AUDIT_REQUIRE_ROOT=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def host_audit() -> Iterator[HostAudit]:
    """The host's real audit subsystem (root); restored afterwards, even on failure."""
    problem = unusable()
    if problem is not None:
        _require_root_or_skip(problem)
    if audit_status().get("enabled") == "2":
        _require_root_or_skip("host audit is locked (enabled 2); reboot to test")
    # The host has one audit subsystem: `held` serialises every process that drives it (two
    # test runs, or two xdist workers, would otherwise restore each other's rules).
    with held() as host:
        yield host
    # Read under the lock: once it is released, another worker may change the state.
    assert host.restored is not None
    after, rules = host.restored
    for name in ("enabled", "failure", "backlog_limit", "rate_limit"):
        assert host.status.get(name) == after.get(name), f"audit {name} not restored"
    assert host.rules == rules, "audit rules not restored"


@pytest.fixture
def auditd(
    host_audit: HostAudit,  # noqa: ARG001 - its teardown restores audit state after auditd stops
    tmp_path: Path,
) -> Iterator[Auditd]:
    """A private auditd (`auditd -n -c DIR`, log in tmp_path), stopped by its pid afterwards."""
    if shutil.which("auditd") is None:
        pytest.skip("auditd is not installed (apt-get install auditd)")
    registered = audit_status().get("pid", "0")
    if registered != "0":
        pytest.skip(f"another auditd (pid {registered}) is registered with the kernel")
    try:
        with private_auditd(tmp_path / "auditd") as daemon:
            yield daemon
    except HostAuditError as exc:
        pytest.fail(str(exc))
