"""`verify` on the host kernel: real stimuli, a real auditd, real records.

The host kernel has audit but no module support: module syscalls fail with ENOSYS and
are still audited, so every unsuccessful stimulus can be proven here; the successful load
is reported as not exercisable (the VM tests exercise it on a kernel with modules).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from _support import (
    FIXTURES,
    Auditd,
    HostAudit,
    RunCli,
    Unprivileged,
    audit_status,
    auditctl,
)
from kmod_audit.probe import ProbeResult
from kmod_audit.profiles import select_profiles
from kmod_audit.verify import PROBE_PREFIX, VerifyOptions, judge_probe, run_verify

PROBE_FIXTURE = FIXTURES / "probe" / "host-x86_64-all.json"


def _state() -> tuple[str, str | None, str | None, bool]:
    status = audit_status()
    return (
        auditctl("-l").stdout,
        status.get("enabled"),
        status.get("failure"),
        Path("/proc/modules").exists(),
    )


def _load(host_audit: HostAudit, run_cli: RunCli, *args: str, drop: str | None = None) -> None:
    rules = run_cli("generate", *args).out
    if drop is not None:
        rules = "".join(line + "\n" for line in rules.splitlines() if drop not in line)
    assert 0 == host_audit.load(rules).returncode
    auditctl("-e", "1")


def _evidence(data: dict[str, Any]) -> list[dict[str, Any]]:
    return list(data["evidence"])


@pytest.mark.root
class TestVerifyOnTheHostKernel:
    """Every unsuccessful module syscall is recorded with the key; controls are not."""

    def test_nixos_stig_is_proven(
        self, host_audit: HostAudit, auditd: Auditd, run_cli: RunCli
    ) -> None:
        """With the generated rules, verify finds every b64 and b32 stimulus and exits 0."""
        _load(host_audit, run_cli)
        before = _state()
        result = run_cli("verify", "--target", "local", "--format", "json")
        assert 0 == result.code, result.out + result.err
        data = json.loads(result.out)
        assert data["compliant"] is True
        assert f"auditd log {auditd.log}" == data["source"]
        evidence = _evidence(data)
        wanted = [
            e
            for e in evidence
            if e["stimulus"]["syscall"] in {"init_module", "finit_module", "delete_module"}
            and e["stimulus"]["program"] is None
        ]
        in_scope = [e for e in wanted if e["stimulus"]["actor"] in {"root", "user"}]
        controls = [e for e in wanted if e["stimulus"]["actor"] in {"unset", "below"}]
        assert {"b64", "b32"} == {e["stimulus"]["abi"] for e in in_scope}
        assert 2 * 2 * 3 == len(in_scope)  # two actors, two ABIs, three syscalls
        assert {("recorded", ("module_chng",), "no", "1000")} == {
            (e["verdict"], tuple(e["key"]), e["success"], e["auid"]) for e in in_scope
        }
        assert {"missing"} == {e["verdict"] for e in controls}
        assert any(
            "successful load and unload of dummy" in note and "no module support" in note
            for note in data["notes"]
        )
        assert before == _state()

    def test_missing_b32_rule_fails_naming_b32(
        self, host_audit: HostAudit, auditd: Auditd, run_cli: RunCli
    ) -> None:
        """Without the b32 rule, verify exits 1 and the failing checks are the b32 ones."""
        del auditd
        _load(host_audit, run_cli, drop="arch=b32")
        result = run_cli("verify", "--target", "local", "--format", "json")
        assert 1 == result.code, result.out
        data = json.loads(result.out)
        failed = [
            check["target"]
            for req in data["profiles"][0]["requirements"]
            for check in req["checks"]
            if check["status"] == "fail"
        ]
        assert ["b32 init_module", "b32 finit_module", "b32 delete_module"] == failed

    def test_kmod_executions_are_proven(
        self, host_audit: HostAudit, auditd: Auditd, run_cli: RunCli
    ) -> None:
        """The CIS kmod rule records execve/execveat of kmod from 64- and 32-bit callers."""
        del auditd
        _load(host_audit, run_cli, "--profile", "cis")
        result = run_cli("verify", "--target", "local", "--profile", "cis", "--format", "json")
        assert 0 == result.code, result.out
        executions = [
            e for e in _evidence(json.loads(result.out)) if e["stimulus"]["program"] is not None
        ]
        assert {
            ("b64", "execve"),
            ("b64", "execveat"),
            ("b32", "execve"),
            ("b32", "execveat"),
        } == {
            (e["stimulus"]["abi"], e["stimulus"]["syscall"])
            for e in executions
            if e["verdict"] == "recorded"
        }

    def test_pinned_key_mismatch_fails(
        self, host_audit: HostAudit, auditd: Auditd, run_cli: RunCli
    ) -> None:
        """Records carrying another key than `--key` do not count."""
        del auditd
        _load(host_audit, run_cli, "--key", "other_key")
        result = run_cli("verify", "--target", "local", "--key", "module_chng")
        assert 1 == result.code
        assert "key=other_key" in result.out

    def test_audit_disabled_is_a_clear_verdict(
        self, host_audit: HostAudit, auditd: Auditd, run_cli: RunCli
    ) -> None:
        """With auditing disabled, verify says so and does not pass."""
        del auditd
        _load(host_audit, run_cli)
        auditctl("-e", "0")
        result = run_cli("verify", "--target", "local")
        assert 1 == result.code
        assert "audit is disabled (auditctl -s: enabled 0)" in result.out

    def test_not_root_is_exit_3(self, unprivileged: Unprivileged) -> None:
        """As an unprivileged user the probe refuses to run: exit 3 with what to do."""
        result = unprivileged.run("probe", timeout=120)
        assert 3 == result.returncode, result.stderr
        assert "the probe needs root" in result.stderr
        assert "Traceback" not in result.stderr


class _FakeTransport:
    """Replays a probe output captured from a real run (beside the real-path tests above)."""

    name = "fake"

    def __init__(self, output: str, status: int = 0) -> None:
        self.output = output
        self.status = status
        self.commands: list[list[str]] = []

    def execute(self, command: list[str], timeout: float = 120.0) -> tuple[int, str]:
        del timeout
        self.commands.append(list(command))
        return self.status, self.output


class TestJudgingCapturedProbe:
    """The verdict logic on a probe result captured from the host kernel."""

    def _probe(self) -> ProbeResult:
        return ProbeResult.from_json(json.loads(PROBE_FIXTURE.read_text()))

    def test_captured_run_is_compliant_for_all_profiles(self) -> None:
        """The capture was made with `generate --profile all` loaded: every profile passes."""
        report = judge_probe(self._probe(), VerifyOptions(profiles=select_profiles(["all"])))
        assert [True, True, True, True] == [p.compliant for p in report.profiles]
        assert report.compliant

    def test_transport_carries_the_probe(self) -> None:
        """run_verify sends the probe command and judges what comes back."""
        payload = PROBE_PREFIX + PROBE_FIXTURE.read_text().replace("\n", "")
        fake = _FakeTransport("kernel noise\n" + payload + "\n")
        options = VerifyOptions(profiles=select_profiles([]), probe_command=("kmod-audit",))
        report = run_verify(fake, options, local=False)  # type: ignore[arg-type]
        assert ["kmod-audit", "probe", "--module", "dummy", "--uid-min", "1000"] == fake.commands[0]
        assert report.compliant

    def test_failing_probe_is_a_transport_error(self) -> None:
        """A probe that exits non-zero without a result is exit 3 material."""
        fake = _FakeTransport("kmod-audit: not found", status=127)
        options = VerifyOptions(profiles=select_profiles([]))
        with pytest.raises(Exception, match="the probe failed on fake") as info:
            run_verify(fake, options, local=False)  # type: ignore[arg-type]
        assert 3 == getattr(info.value, "exit_code", None)

    def test_removing_records_fails(self) -> None:
        """If the b32 records were missing, b32 checks fail (the records are the evidence)."""
        probe = self._probe()
        kept = "\n".join(line for line in probe.records.splitlines() if "arch=40000003" not in line)
        report = judge_probe(
            ProbeResult.from_json({**probe.to_json(), "records": kept}),
            VerifyOptions(profiles=select_profiles(["nixos-stig"])),
        )
        failed = [
            c.target
            for r in report.profiles[0].requirements
            for c in r.checks
            if c.status == "fail"
        ]
        assert ["b32 init_module", "b32 finit_module", "b32 delete_module"] == failed
