"""`verify` on the host kernel: real stimuli, a real auditd, real records.

The host kernel has audit but no module support: module syscalls fail with ENOSYS and
are still audited, so every unsuccessful stimulus can be proven here; the successful load
is reported as not exercisable (the VM tests exercise it on a kernel with modules).
"""

from __future__ import annotations

import contextlib
import errno
import json
import platform
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from _support import (
    FIXTURES,
    Auditd,
    HostAudit,
    RunCli,
    Unprivileged,
    audit_status,
    auditctl,
    valid_report,
)
from kmod_audit import netlink
from kmod_audit.errors import TransportError
from kmod_audit.evaluate import exec_order
from kmod_audit.logs import RecordSource
from kmod_audit.probe import BAD_IMAGE, _Prober
from kmod_audit.probe_result import ProbeResult
from kmod_audit.profiles import select_profiles
from kmod_audit.records import parse_records
from kmod_audit.report import VerifyReport
from kmod_audit.syscalls import MACHINES
from kmod_audit.verify import (
    PROBE_PREFIX,
    VerifyOptions,
    judge_probe,
    probe_argv,
    render_verify_json,
    render_verify_text,
    run_verify,
)

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

    def test_failed_executions_of_kmod_are_exercised(
        self, host_audit: HostAudit, auditd: Auditd, run_cli: RunCli
    ) -> None:
        """The probe executes kmod with a bad argv and a too long argument, on each ABI.

        A kernel that opens the file before it copies argv (Linux 6.8 on, as here) records
        both failures with `path=` alone (no `-F exit=` lines); 5.9 to 6.7 does not (also
        tests/test_vm_matrix.py, on Debian's 6.1). `check` of the live machine agrees.
        """
        del auditd
        _load(host_audit, run_cli, "--profile", "al2023-stig", drop=" -F exit=")
        result = run_cli(
            "verify", "--target", "local", "--profile", "al2023-stig", "--format", "json"
        )
        data = json.loads(result.out)
        executions = {
            e["stimulus"]["id"]: (e["stimulus"]["result"], e["verdict"])
            for e in _evidence(data)
            if e["stimulus"]["program"] and e["stimulus"]["actor"] == "root"
        }
        opens_first = exec_order(platform.release()) == "open-first"
        verdict = "recorded" if opens_first else "missing"
        failures = {
            f"{bits}-{syscall}-kmod-{how}-root": (-code, verdict)
            for bits in ("b64", "b32")
            for syscall in ("execve", "execveat")
            for how, code in (("bad-argv", errno.EFAULT), ("long-argument", errno.E2BIG))
        }
        assert failures.items() <= executions.items(), executions
        code = 0 if opens_first else 1
        assert code == result.code, result.out
        checked = run_cli("check", "--running", "--profile", "al2023-stig")
        assert code == checked.code, checked.out

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


def _captured() -> ProbeResult:
    return ProbeResult.from_json(json.loads(PROBE_FIXTURE.read_text()))


def _with(probe: ProbeResult, **changes: Any) -> ProbeResult:
    return ProbeResult.from_json({**probe.to_json(), **changes})


def _without_b32(probe: ProbeResult) -> str:
    return "\n".join(line for line in probe.records.splitlines() if "arch=40000003" not in line)


def _judge(probe: ProbeResult, *profiles: str, **options: Any) -> VerifyReport:
    return judge_probe(probe, VerifyOptions(profiles=select_profiles(list(profiles)), **options))


def _failed(report: VerifyReport) -> list[str]:
    return [
        c.target
        for p in report.profiles
        for r in p.requirements
        for c in r.checks
        if c.status == "fail"
    ]


def test_a_failed_execution_not_made_leaves_its_check_undecided() -> None:
    """The probe could not make a failing exec of kmod: that check is not proven."""
    probe = _captured()
    data = probe.to_json()
    made = next(s for s in data["stimuli"] if s["id"] == "b64-execve-kmod-root")
    data["stimuli"].append(
        {
            **made,
            "id": "b64-execve-kmod-long-argument-root",
            "pid": 99999,
            "expect": "failure",
            "result": None,
            "error": "no result (child status 3)",
        }
    )
    report = _judge(ProbeResult.from_json(data), "al2023-stig")
    checks = {c.target: c for p in report.profiles for r in p.requirements for c in r.checks}
    assert "undecided" == checks["b64 execve of kmod"].status
    assert "not proven recorded" in checks["b64 execve of kmod"].reason
    assert "pass" == checks["b64 execveat of kmod"].status
    assert 3 == report.exit_code()


class TestIncompleteEvidence:
    """A missing record is evidence against the rules only when the record source is complete."""

    def test_missing_records_from_a_complete_source_are_not_compliant(self) -> None:
        """Marker seen, nothing lost: the missing b32 records make it exit 1."""
        probe = _captured()
        report = _judge(_with(probe, records=_without_b32(probe)), "nixos-stig")
        assert (1, "not-compliant", ()) == (
            report.exit_code(),
            report.verdict(),
            report.incomplete,
        )

    def test_marker_never_seen_is_exit_3(self) -> None:
        """Records missing and the marker never arrived: could not exercise, naming the marker."""
        probe = _captured()
        report = _judge(_with(probe, records=_without_b32(probe), marker_seen=False), "nixos-stig")
        assert (3, "could-not-exercise") == (report.exit_code(), report.verdict())
        assert [f"the marker {probe.marker!r} written after the stimuli never reached"] == [
            c.split(" auditd log")[0] for c in report.incomplete
        ]
        text = render_verify_text(report)
        assert "result: COULD NOT EXERCISE" in text
        assert "NOT COMPLIANT" not in text
        assert "incomplete evidence (a missing record proves nothing):" in text
        data = valid_report(render_verify_json(report))
        assert ("could-not-exercise", False) == (data["verdict"], data["compliant"])

    def test_a_missing_record_of_incomplete_evidence_leaves_its_requirement_undecided(
        self,
    ) -> None:
        """Marker missing: a requirement whose only gap is an unread record is undecided.

        Its checks with missing b32 records say `undecided` (the record may be among those
        not read), never `fail`: a checklist or dashboard must not read a finding there.
        """
        probe = _captured()
        report = _judge(_with(probe, records=_without_b32(probe), marker_seen=False), "all")
        statuses = {(p.id, r.id): r.status for p in report.profiles for r in p.requirements}
        assert statuses[("nixos-stig", "V-268096")] == "undecided"
        assert "fail" not in statuses.values()
        checks = [c for p in report.profiles for r in p.requirements for c in r.checks]
        b32 = {c.status for c in checks if c.target.startswith("b32 ")}
        assert b32 == {"undecided"}
        assert all(
            "it may be among the records not read" in c.reason
            for c in checks
            if c.status == "undecided"
        )
        assert "  NOT VERIFIED V-268096:" in render_verify_text(report)
        data = valid_report(render_verify_json(report))
        assert data["profiles"][0]["requirements"][0]["status"] == "undecided"

    def test_lost_records_are_exit_3(self) -> None:
        """`lost` grew during the probe: exit 3, naming the counter before and after."""
        probe = _captured()
        report = _judge(_with(probe, records=_without_b32(probe), lost_after=7), "nixos-stig")
        assert 3 == report.exit_code()
        assert any("(auditctl -s: lost 0 -> 7)" in c for c in report.incomplete)

    @pytest.mark.parametrize(
        "line",
        [
            "4,1442,4668540846,-;kauditd_printk_skb: 41 callbacks suppressed",
            "4,1442,4668540846,-;audit: audit_lost=5 audit_rate_limit=0 audit_backlog_limit=64",
            "3,1442,4668540846,-;audit: backlog limit exceeded",
            "3,1442,4668540846,-;audit: rate limit exceeded",
            "4,1442,4668540846,-;audit: kauditd hold queue overflow",
            "[ 4668.540846] kauditd_printk_skb: 41 callbacks suppressed",
            "kmod-audit: the kernel log ring overwrote messages 10..20",
        ],
        ids=["suppressed", "audit_lost", "backlog", "rate", "hold-queue", "dmesg", "overwritten"],
    )
    def test_kernel_log_drops_are_exit_3(self, line: str) -> None:
        """The kernel log says it dropped lines or records: exit 3, quoting what it said."""
        probe = _captured()
        records = line + "\n" + _without_b32(probe)
        report = _judge(_with(probe, records=records), "nixos-stig")
        assert 3 == report.exit_code()
        assert 1 == len(report.incomplete)
        shown = line.split(";", 1)[-1].split("] ", 1)[-1].removeprefix("kmod-audit: ")
        assert shown in report.incomplete[0]

    def test_sequence_gap_in_the_kernel_log_is_exit_3(self) -> None:
        """Kernel log sequence numbers that jump: the messages between were overwritten."""
        probe = _captured()
        records = "6,10,1,-;kmod-audit: a\n6,14,2,-;kmod-audit: b\n" + _without_b32(probe)
        report = _judge(_with(probe, records=records), "nixos-stig")
        assert 3 == report.exit_code()
        assert ["the kernel log ring overwrote messages 11..13 while they were read"] == [
            c.split(":")[0] for c in report.incomplete
        ]

    def test_a_process_cannot_write_a_drop_line(self) -> None:
        """The same words written to /dev/kmsg by a process (facility user) are no drop."""
        probe = _captured()
        records = "12,1442,4668540846,-;kauditd_printk_skb: 41 callbacks suppressed\n"
        report = _judge(_with(probe, records=records + _without_b32(probe)), "nixos-stig")
        assert (1, ()) == (report.exit_code(), report.incomplete)

    def test_a_record_read_refutes_even_when_incomplete(self) -> None:
        """Records carrying another key than --key are read evidence: exit 1 despite the marker."""
        report = _judge(_with(_captured(), marker_seen=False), "nixos-stig", key="other")
        assert 1 == report.exit_code()
        assert 6 == len(report.refuted)

    def test_all_recorded_but_incomplete_is_not_compliant(self) -> None:
        """Every record found but the marker missing: not COMPLIANT either (exit 3)."""
        report = _judge(_with(_captured(), marker_seen=False), "all")
        assert [True, True, True, True] == [p.compliant for p in report.profiles]
        assert (False, 3) == (report.compliant, report.exit_code())


def _controls_recorded(probe: ProbeResult) -> str:
    """The records, plus a keyed SYSCALL record for every negative control.

    Each copies the record of the same syscall and ABI made by `root` (pid, auid and
    serial changed): what rules without an auid filter record.
    """
    lines = probe.records.splitlines()
    extra: list[str] = []
    for serial, control in enumerate((s for s in probe.stimuli if s.control), start=1):
        twin = next(
            s
            for s in probe.stimuli
            if s.actor == "root"
            and (s.abi, s.syscall, s.program) == (control.abi, control.syscall, control.program)
        )
        line = next(
            (
                line
                for line in lines
                if line.startswith("type=SYSCALL")
                and f" pid={twin.pid} " in line
                and f" syscall={twin.numbers[0]} " in line
                and f"arch={twin.arch} " in line
            ),
            None,
        )
        if line is None:  # not recorded for root either (b32 create_module: no profile)
            continue
        line = re.sub(r":\d+\):", f":{9_000_000 + serial}):", line, count=1)
        line = line.replace(f" pid={twin.pid} ", f" pid={control.pid} ")
        extra.append(line.replace(" auid=1000 ", f" auid={control.auid} "))
    return "\n".join([*lines, *extra])


class TestNegativeControls:
    """A negative control recorded with the key is a note; it fails only with --strict."""

    def test_recorded_controls_are_a_note(self) -> None:
        """Rules without an auid filter record more than required: compliant, with a note."""
        probe = _captured()
        report = _judge(_with(probe, records=_controls_recorded(probe)), "all")
        assert (0, ()) == (report.exit_code(), report.refuted)
        assert any("the rules record more than required" in n for n in report.notes)

    def test_strict_fails_them_where_the_standard_demands_the_filters(self) -> None:
        """With --strict the STIG and CIS requirements fail, Tenable's (no filters) pass."""
        probe = _captured()
        report = _judge(_with(probe, records=_controls_recorded(probe)), "all", strict=True)
        assert 1 == report.exit_code()
        assert {"nixos-stig": False, "al2023-stig": False, "cis": False, "tenable": True} == {
            p.id: p.compliant for p in report.profiles
        }
        assert all("--strict: negative control recorded" in r for r in _reasons(report))

    def test_strict_with_incomplete_evidence_proves_no_filter(self) -> None:
        """--strict, controls unrecorded but the marker missing: no pass (exit 3), not refuted."""
        report = _judge(_with(_captured(), marker_seen=False), "all", strict=True)
        assert (3, ()) == (report.exit_code(), report.refuted)
        assert {"nixos-stig": False, "al2023-stig": False, "cis": False, "tenable": True} == {
            p.id: p.compliant for p in report.profiles
        }
        assert all("the evidence is incomplete" in r for r in _reasons(report))
        complete = _judge(_captured(), "all", strict=True)
        assert (0, []) == (complete.exit_code(), _reasons(complete))


def _reasons(report: VerifyReport) -> list[str]:
    return [
        c.reason
        for p in report.profiles
        for r in p.requirements
        for c in r.checks
        if c.status == "fail"
    ]


class TestUnmodelledMachine:
    """A probe on a machine kmod-audit does not model never passes with zero checks."""

    def test_riscv64_is_exit_3_naming_the_machine(self) -> None:
        """A riscv64 probe: exit 3, every requirement unexercised, the machine named."""
        report = _judge(_with(_captured(), machine="riscv64"), "all")
        assert (3, False) == (report.exit_code(), report.compliant)
        assert all(r.status == "fail" for p in report.profiles for r in p.requirements)
        expected = (
            "the probe ran on a riscv64 machine, which kmod-audit does not model (it knows "
            "x86_64, aarch64): no syscall can be checked there"
        )
        assert [expected] == list(report.incomplete)
        assert "result: COULD NOT EXERCISE" in render_verify_text(report)


class TestModuleLeftLoaded:
    """A module the probe could not unload is a problem of the system, not lost evidence."""

    def test_named_in_problems_and_exit_3(self) -> None:
        """The probe's complete records pass, but tun stays loaded: exit 3, tun in problems."""
        left = (
            "the probe loaded tun and could not unload it (tun: in use, use count 2): it is "
            "left loaded; unload it with `rmmod tun` once nothing uses it"
        )
        captured = _captured()
        probe = _with(captured, problems=[*captured.problems, left], modules_left=["tun"])
        report = _judge(probe, "nixos-stig")
        assert (3, [left], []) == (
            report.exit_code(),
            [p for p in report.problems if "tun" in p],
            list(report.incomplete),
        )


def _kernel_log_only(host_audit: HostAudit) -> None:
    """Skip unless no auditd is registered: then records go to the kernel log (kmsg)."""
    registered = host_audit.status.get("pid", "0")
    if registered != "0":
        pytest.skip(f"an auditd (pid {registered}) receives the records, not the kernel log")


@contextlib.contextmanager
def _printk_ratelimit(interval: int, burst: int) -> Iterator[None]:
    """Set kernel.printk_ratelimit{,_burst}, restoring them afterwards (even on failure)."""
    paths = [
        Path("/proc/sys/kernel/printk_ratelimit"),
        Path("/proc/sys/kernel/printk_ratelimit_burst"),
    ]
    saved = [path.read_text() for path in paths]
    try:
        for path, number in zip(paths, (interval, burst), strict=True):
            path.write_text(f"{number}\n")
        yield
    finally:
        for path, text in zip(paths, saved, strict=True):
            path.write_text(text)


@pytest.mark.root
class TestKernelLogSource:
    """No auditd: the kernel log is the record source, and it can lose records."""

    def test_lost_records_are_exit_3(self, host_audit: HostAudit, run_cli: RunCli) -> None:
        """With a rate limit of 1 record/s the kernel loses records: exit 3 naming `lost`.

        `auditctl -r 1` lets one record a second through and counts the rest in `lost`;
        each probe child makes its syscalls within microseconds, so records are lost
        whatever the machine's speed.
        """
        _kernel_log_only(host_audit)
        _load(host_audit, run_cli)
        auditctl("-r", "1")
        result = run_cli("verify", "--target", "local", "--format", "json")
        data = json.loads(result.out)
        assert 3 == result.code, data.get("incomplete")
        assert "could-not-exercise" == data["verdict"]
        assert data["source"].startswith("kernel log /dev/kmsg")
        assert data["lost_after"] > data["audit"]["lost"]
        assert any(
            f"(auditctl -s: lost {data['audit']['lost']} -> {data['lost_after']})" in cause
            for cause in data["incomplete"]
        ), data["incomplete"]

    def test_printk_rate_limit_is_exit_3(self, host_audit: HostAudit, run_cli: RunCli) -> None:
        """The kernel log prints one audit line an hour: the marker never arrives, exit 3.

        Without auditd the kernel prints records under `printk_ratelimit()`; with an
        interval of an hour and a burst of 1 at most one line of the probe is printed, so
        the marker written last is dropped (nothing is counted in `lost`).
        """
        _kernel_log_only(host_audit)
        _load(host_audit, run_cli)
        with _printk_ratelimit(3600, 1):
            result = run_cli("verify", "--target", "local")
        assert 3 == result.code, result.out
        assert "never reached kernel log /dev/kmsg" in result.out
        assert "result: COULD NOT EXERCISE" in result.out
        assert "NOT COMPLIANT" not in result.out


# A SYSCALL record as auditd writes it, for the b64 init_module of the captured probe's
# `root` stimulus (pid 693): sent as the text of a USER message, it must not count.
FORGED = (
    "x type=SYSCALL msg=audit(1795320921.831:32067): arch=c000003e syscall=175 success=no "
    "exit=-38 a0=0 a1=0 a2=0 a3=0 items=0 ppid=690 pid=693 auid=1000 uid=0 gid=0 euid=0 "
    'suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=108 comm="kmod-audit" '
    'exe="/usr/bin/python3" key="module_chng"'
)


def _forged_kmsg_line(token: str) -> str:
    """Send FORGED (tagged with `token`) as a USER message; return the kernel log's line.

    The kernel prints audit lines under a rate limit (10 per 5 s): a message dropped by
    it is sent again, until a deadline past the limit's window.
    """
    source = RecordSource.discover(auditd_pid=0)
    start = source.position()
    deadline = time.monotonic() + 12
    while True:
        netlink.user_message(f"{FORGED} tag={token}")
        time.sleep(0.2)
        lines = [line for line in source.read_since(start).splitlines() if token in line]
        if lines:
            return lines[0]
        if time.monotonic() > deadline:
            pytest.fail(f"the USER message tagged {token} never reached the kernel log")


@pytest.mark.root
class TestOnlyRealRecordsCount:
    """A USER message whose text imitates a SYSCALL record is a USER record, nothing more."""

    def test_forged_user_message_in_the_kernel_log(self, host_audit: HostAudit) -> None:
        """The kernel's line for the forged message parses as one USER record."""
        _kernel_log_only(host_audit)
        auditctl("-e", "1")
        line = _forged_kmsg_line(secrets.token_hex(6))
        assert re.match(r"\d+,\d+,\d+,[^;]*;audit: type=1005 audit\(", line), line
        assert ["USER"] == [r.type for r in parse_records(line)]

    def test_forged_user_message_does_not_make_verify_pass(self, host_audit: HostAudit) -> None:
        """The captured run without its b64 init_module record, plus the forged line, fails."""
        _kernel_log_only(host_audit)
        auditctl("-e", "1")
        probe = _captured()
        real = "type=SYSCALL msg=audit(1795320921.831:32067):"
        kept = [line for line in probe.records.splitlines() if not line.startswith(real)]
        assert len(kept) == len(probe.records.splitlines()) - 1
        forged = _forged_kmsg_line(secrets.token_hex(6))
        report = _judge(_with(probe, records="\n".join([*kept, forged])), "nixos-stig")
        assert 1 == report.exit_code()
        assert ["b64 init_module"] == _failed(report)
        assert "b64 init_module (root: auid=1000, uid=0, pid=693): no SYSCALL record" in (
            render_verify_text(report)
        )


# Every module syscall and every execution, whoever makes it, recorded with our keys.
_EVERY_LOAD_AND_EXEC = "".join(
    f"-a always,exit -F arch={abi} -S init_module,finit_module,delete_module -k kmod-audit-t\n"
    f"-a always,exit -F arch={abi} -S execve,execveat -k kmod-audit-t-exec\n"
    for abi in ("b64", "b32")
)
# (audit arch, init_module, finit_module) numbers of x86_64 and its i386 ABI.
_LOADS = {"c000003e": (175, 313), "40000003": (128, 350)}


def _load_attempts(log: Path, offset: int, module: str) -> tuple[list[str], list[str]]:
    """The load attempts in the audit log after `offset`.

    Returns:
        The init_module/finit_module records whose arguments are not the probe's failing
        ones (a bad image of len(BAD_IMAGE) bytes; the fd -1), and the EXECVE records that
        name `module` (a modprobe of it).
    """
    with log.open("rb") as handle:
        handle.seek(offset)
        records = parse_records(handle.read().decode(errors="replace"))
    loads = []
    for record in records:
        if record.type != "SYSCALL":
            continue
        numbers = _LOADS.get(record.get("arch") or "")
        if numbers is None or record.number("syscall") not in numbers:
            continue
        init, _finit = numbers
        failing = (
            record.number("a1") == len(BAD_IMAGE)
            if record.number("syscall") == init
            else record.number("a0") in {0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF}
        )
        if not failing or record.get("success") != "no":
            loads.append(record.raw)
    execs = [
        r.raw
        for r in records
        if r.type == "EXECVE"
        and any(r.get(k) == module for k, _ in r.fields if re.fullmatch(r"a[0-9]+", k))
    ]
    return loads, execs


@pytest.mark.root
class TestNoLoad:
    """`verify --no-load` never loads a module, even where the kernel could."""

    @pytest.fixture
    def modules_pretended(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make the probe believe this kernel can load `dummy` (it reaches the forked probe)."""
        monkeypatch.setattr("kmod_audit.probe._proc_modules", dict)
        monkeypatch.setattr("kmod_audit.probe._cannot_load", lambda *_: None)

    def test_no_load_attempt_reaches_the_kernel(
        self,
        host_audit: HostAudit,
        auditd: Auditd,
        run_cli: RunCli,
        modules_pretended: None,
    ) -> None:
        """Only failing init/finit_module calls and no modprobe; the load is skipped by choice."""
        del modules_pretended
        assert 0 == host_audit.load(_EVERY_LOAD_AND_EXEC).returncode
        auditctl("-e", "1")
        offset = auditd.log.stat().st_size
        result = run_cli("verify", "--no-load", "--format", "json")
        data = json.loads(result.out)
        # The skipped load is neither a failure nor incomplete evidence.
        assert 0 == result.code, data.get("incomplete") or data.get("problems")
        assert [] == [e for e in _evidence(data) if e["stimulus"]["module"] is not None]
        assert any(
            "successful load and unload of dummy: by choice (--no-load)" in note
            for note in data["notes"]
        ), data["notes"]
        assert data["options"]["no_load"] is True
        loads, execs = _load_attempts(auditd.log, offset, "dummy")
        assert ([], []) == (loads, execs)
        # The failing attempts were made and recorded: the records above were really read.
        recorded = [e for e in _evidence(data) if e["verdict"] == "recorded"]
        assert {"init_module", "finit_module"} <= {e["stimulus"]["syscall"] for e in recorded}
        text = run_cli("verify", "--no-load").out
        assert "by choice (--no-load)" in text
        assert "result: COMPLIANT" in text

    def test_without_no_load_the_same_check_sees_modprobe(
        self,
        host_audit: HostAudit,
        auditd: Auditd,
        run_cli: RunCli,
        modules_pretended: None,
    ) -> None:
        """The check above can fail: without --no-load the probe runs `modprobe dummy`."""
        del modules_pretended
        assert 0 == host_audit.load(_EVERY_LOAD_AND_EXEC).returncode
        auditctl("-e", "1")
        offset = auditd.log.stat().st_size
        run_cli("verify", "--format", "json")
        _loads, execs = _load_attempts(auditd.log, offset, "dummy")
        assert execs, "no EXECVE record of `modprobe dummy`"

    def test_probe_refuses_to_load(self) -> None:
        """The one code path that loads is closed to a probe told not to load."""
        prober = _Prober(
            machine=MACHINES["x86_64"],
            auid=1000,
            uid_min=1000,
            module="dummy",
            program="/usr/bin/kmod",
            load=False,
        )
        with pytest.raises(TransportError, match="never to load a module"):
            prober._load(["/usr/sbin/modprobe", "dummy"], lambda: False)
        assert [] == prober.stimuli

    def test_probe_command_carries_no_load(self) -> None:
        """A remote probe gets --no-load (an older kmod-audit refuses it: it cannot load)."""
        options = VerifyOptions(profiles=select_profiles([]), no_load=True)
        assert "--no-load" == probe_argv(options, local=False)[-1]
        assert "--no-load" not in probe_argv(attrs.evolve(options, no_load=False), local=False)
