"""`--metrics FILE`: Prometheus metrics of check and verify, read by a real node_exporter.

The unit tests read the file with prometheus_client's parser. The scrape test starts
Debian's node_exporter (tools/setup installs it) on a free 127.0.0.1 port with the
textfile collector on a private directory, judges the host kernel's running rules with
`kmod-audit check --running RULES.D --metrics ...` (compliant, drifted by `auditctl -D`,
restored) and reads the values back over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import attrs
import pytest
from prometheus_client.parser import text_string_to_metric_families

from _support import (
    FIXTURES,
    HostAudit,
    RunCli,
    Unprivileged,
    auditctl,
    poll,
    require_tool,
)
from hostaudit import audit_status
from kmod_audit.loader import compare, load
from kmod_audit.metrics import HELP
from kmod_audit.profiles import select_profiles
from kmod_audit.rules import parse_rules
from kmod_audit.syscalls import MACHINES

RULES: Final = FIXTURES / "rules"
PASS: Final = RULES / "cis-benchmark.pass.rules"
FAIL: Final = RULES / "never-before.fail.rules"

#: Set it to a path to keep the scraped kmod_audit_* lines of each phase (the issue's note).
EVIDENCE_ENV: Final = "KMOD_AUDIT_SCRAPE_EVIDENCE"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    """The kmod_audit_* samples of an exposition, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("kmod_audit_")
    }


def _one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(f"kmod_audit_{name}", tuple(sorted(labels.items())))]


def _compliant(samples: Samples, command: str = "check") -> dict[tuple[str, str], float]:
    """The compliant series as {(profile, requirement): value} for `command`."""
    out: dict[tuple[str, str], float] = {}
    for (name, labels), value in samples.items():
        if name == "kmod_audit_compliant":
            found = dict(labels)
            if found["command"] == command:
                out[found["profile"], found["requirement"]] = value
    return out


def _requirements(*profile_ids: str) -> set[tuple[str, str]]:
    return {(p.id, r.id) for p in select_profiles(list(profile_ids)) for r in p.requirements}


class TestMetricsFile:
    """The file holds one series per requirement and the run's exit code, on every exit."""

    def test_compliant_file(self, run_cli: RunCli, tmp_path: Path) -> None:
        """A compliant run: every requirement 1, exit code 0, HELP and TYPE lines."""
        path = tmp_path / "kmod-audit-check.prom"
        result = run_cli("check", str(PASS), "--profile", "cis", "--metrics", str(path))
        assert 0 == result.code, result.err
        text = path.read_text()
        samples = _samples(text)
        assert dict.fromkeys(_requirements("cis"), 1.0) == _compliant(samples)
        assert 0 == _one(samples, "exit_code", command="check")
        assert _one(samples, "run_duration_seconds", command="check") >= 0
        assert _one(samples, "last_run_timestamp_seconds", command="check") > 1.7e9
        for name in ("compliant", "exit_code", "run_duration_seconds"):
            assert f"# TYPE kmod_audit_{name} gauge" in text
            assert f"# HELP kmod_audit_{name} {HELP[name]}" in text
        # A rules file says nothing about the running kernel.
        assert not any(n.endswith(("_enabled", "_loaded", "_drift_rules")) for n, _ in samples)
        assert [path] == list(tmp_path.iterdir())  # no temporary file left beside it

    def test_failing_requirement_is_0_and_exit_code_1(
        self, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """A requirement that fails is 0; the exit code metric is the process's."""
        path = tmp_path / "m.prom"
        result = run_cli("check", str(FAIL), "--metrics", str(path))
        assert 1 == result.code
        samples = _samples(path.read_text())
        assert {("nixos-stig", "V-268096"): 0.0} == _compliant(samples)
        assert 1 == _one(samples, "exit_code", command="check")

    def test_only_the_failing_requirement_is_0(self, run_cli: RunCli, tmp_path: Path) -> None:
        """Exit 1 for one requirement: the others that pass stay 1 (one alert, for that one)."""
        path = tmp_path / "m.prom"
        rules = RULES / "al2023-no-kmod.fail.rules"
        result = run_cli("check", str(rules), "--profile", "al2023-stig", "--metrics", str(path))
        assert 1 == result.code
        assert {
            ("al2023-stig", "V-274091"): 1.0,
            ("al2023-stig", "V-274092"): 1.0,
            ("al2023-stig", "V-274093"): 0.0,
        } == _compliant(_samples(path.read_text()))

    def test_an_error_finding_zeroes_every_requirement(
        self, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """Requirements that pass are still 0 when the run is not compliant for another reason.

        So every series is 1 exactly when the exit code is 0, and one alert on
        kmod_audit_compliant == 0 sees every non-compliant run.
        """
        rules = tmp_path / "x.rules"
        lines = run_cli("generate").out
        rules.write_text(lines + "-a always,exit -F arch=b64 -S no_such_syscall -k x\n")
        path = tmp_path / "m.prom"
        result = run_cli("check", str(rules), "--metrics", str(path))
        assert 1 == result.code
        assert "PASS V-268096" in result.out
        assert {("nixos-stig", "V-268096"): 0.0} == _compliant(_samples(path.read_text()))

    def test_unreadable_input_is_exit_code_2_and_every_requirement_0(
        self, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """Exit 2 still writes the file: exit code 2, and each selected requirement 0."""
        path = tmp_path / "m.prom"
        result = run_cli(
            "check", str(tmp_path / "missing.rules"), "--profile", "all", "--metrics", str(path)
        )
        assert 2 == result.code
        samples = _samples(path.read_text())
        assert 2 == _one(samples, "exit_code", command="check")
        assert dict.fromkeys(_requirements("all"), 0.0) == _compliant(samples)

    @pytest.mark.parametrize("command", ["check", "verify"])
    def test_a_failure_after_the_verdict_zeroes_every_requirement(
        self, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
    ) -> None:
        """A compliant verdict whose report cannot be written (exit 2) is 0, not 1."""
        path = tmp_path / "m.prom"
        output = str(tmp_path / "report.json")

        real_replace = os.replace

        def broken(source: str, target: str) -> None:
            if target.endswith("report.json"):
                raise OSError(5, "Input/output error")
            real_replace(source, target)

        # The report's write fails at its rename, after the verdict; the metrics file's
        # write (the same writer) goes through.
        monkeypatch.setattr(os, "replace", broken)
        if command == "check":
            args = ["check", str(PASS), "--profile", "cis"]
        else:
            # The probe's one line, as a captured compliant run printed it.
            data = json.loads((FIXTURES / "probe" / "host-x86_64-all.json").read_text())
            (tmp_path / "probe.json").write_text(json.dumps(data))
            probe = tmp_path / "probe.sh"
            probe.write_text(
                f"#!/bin/sh\nprintf 'KMOD_AUDIT_PROBE '\ncat '{tmp_path}/probe.json'\n"
            )
            probe.chmod(0o755)
            args = ["verify", "--probe-command", str(probe)]
        result = run_cli(*args, "--format", "json", "--output", output, "--metrics", str(path))
        assert 2 == result.code, result.err
        assert "cannot write it" in result.err
        samples = _samples(path.read_text())
        assert 2 == _one(samples, "exit_code", command=command)
        assert {0.0} == set(_compliant(samples, command).values())

    def test_bad_profile_is_exit_code_2_without_series(
        self, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """An unknown profile names no requirement: only the run's metrics are written."""
        path = tmp_path / "m.prom"
        result = run_cli("check", str(PASS), "--profile", "nope", "--metrics", str(path))
        assert 2 == result.code
        samples = _samples(path.read_text())
        assert {} == _compliant(samples)
        assert 2 == _one(samples, "exit_code", command="check")

    def test_verify_usage_error_writes_verify_series(self, run_cli: RunCli, tmp_path: Path) -> None:
        """`verify` writes the same metrics with command="verify"."""
        path = tmp_path / "kmod-audit-verify.prom"
        result = run_cli("verify", "--uid-min", "x", "--no-load", "--metrics", str(path))
        assert 2 == result.code
        samples = _samples(path.read_text())
        assert {("nixos-stig", "V-268096"): 0.0} == _compliant(samples, "verify")
        assert 2 == _one(samples, "exit_code", command="verify")

    @pytest.mark.parametrize("form", ["separate", "equals"])
    def test_option_argparse_refuses_still_writes_the_file(
        self, run_cli: RunCli, tmp_path: Path, form: str
    ) -> None:
        """An unknown option (exit 2 from argparse) replaces the last run's values too."""
        path = tmp_path / "m.prom"
        assert 0 == run_cli("check", str(PASS), "--profile", "cis", "--metrics", str(path)).code
        metrics = ["--metrics", str(path)] if form == "separate" else [f"--metrics={path}"]
        result = run_cli("check", str(PASS), "--profile", "cis", "--bogus", *metrics)
        assert 2 == result.code
        assert "unrecognized arguments: --bogus" in result.err
        samples = _samples(path.read_text())
        assert 2 == _one(samples, "exit_code", command="check")
        assert dict.fromkeys(_requirements("cis"), 0.0) == _compliant(samples)

    def test_ambiguous_abbreviation_writes_nothing(
        self, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`verify --m X` could be --module: no file is made from X."""
        monkeypatch.chdir(tmp_path)
        result = run_cli("verify", "--m", "x")
        assert 2 == result.code
        assert [] == list(tmp_path.iterdir())

    def test_file_is_replaced_atomically(self, run_cli: RunCli, tmp_path: Path) -> None:
        """A second run renames a new file over the old one (a new inode, nothing left over)."""
        path = tmp_path / "m.prom"
        assert 0 == run_cli("check", str(PASS), "--profile", "cis", "--metrics", str(path)).code
        first = path.stat().st_ino
        assert 1 == run_cli("check", str(FAIL), "--metrics", str(path)).code
        assert first != path.stat().st_ino
        assert [path] == list(tmp_path.iterdir())
        assert 1 == _one(_samples(path.read_text()), "exit_code", command="check")


class TestMetricsErrors:
    """A metrics file that cannot be written is a clear error naming it."""

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("missing-dir/m.prom", "does not exist"),
            (".", "is a directory"),
        ],
        ids=["missing-directory", "directory"],
    )
    def test_unwritable_path_is_exit_2_before_the_run(
        self, run_cli: RunCli, tmp_path: Path, name: str, expected: str
    ) -> None:
        """A path that cannot be written is refused up front (exit 2), naming it."""
        path = tmp_path / name
        result = run_cli("check", str(PASS), "--format", "json", "--metrics", str(path))
        assert 2 == result.code
        error = json.loads(result.out)["error"]
        assert str(path) in error["message"]
        assert expected in error["message"]
        assert "usage" == error["kind"]

    def test_a_fifo_is_refused_not_replaced(self, run_cli: RunCli, tmp_path: Path) -> None:
        """A path that is no regular file (as /dev/null) is refused; the rename would replace it."""
        path = tmp_path / "null"
        os.mkfifo(path)
        result = run_cli("check", str(PASS), "--format", "json", "--metrics", str(path))
        assert 2 == result.code
        message = json.loads(result.out)["error"]["message"]
        assert f"--metrics {path}: is not a regular file" in message
        assert stat.S_ISFIFO(path.stat().st_mode)
        assert [path] == list(tmp_path.iterdir())

    def test_failure_to_write_at_the_end_is_named_on_stderr(
        self, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The write fails after the verdict (disk full): stderr names the file; 0 becomes 2."""
        path = tmp_path / "m.prom"

        def full(*_: object) -> None:
            raise OSError(28, "No space left on device")

        # The atomic writer's rename, as a full disk fails it.
        monkeypatch.setattr("kmod_audit._files.os.replace", full)
        result = run_cli("check", str(PASS), "--profile", "cis", "--metrics", str(path))
        assert 2 == result.code
        assert "result: COMPLIANT" in result.out
        assert f"--metrics {path}: cannot write the metrics file (No space left" in result.err
        result = run_cli("check", str(FAIL), "--metrics", str(path))
        assert 1 == result.code  # a non-compliant run keeps its exit code
        assert not path.exists()

    def test_missing_prometheus_client_is_exit_2_naming_it(
        self, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without prometheus_client (installed without dependencies): exit 2, what to install."""
        monkeypatch.setitem(sys.modules, "prometheus_client", None)
        path = tmp_path / "m.prom"
        result = run_cli("check", str(PASS), "--metrics", str(path))
        assert 2 == result.code
        assert "prometheus-client is missing" in result.err
        assert "Traceback" not in result.err
        assert not path.exists()

    def test_not_root_running_is_exit_code_3(
        self, unprivileged: Unprivileged, tmp_path: Path
    ) -> None:
        """`check --running` as a user who may not ask the kernel: exit 3, written as such."""
        del tmp_path  # pytest's is closed to other users
        directory = Path(tempfile.mkdtemp(prefix="kmod-audit-textfile-"))
        try:
            directory.chmod(0o777)
            path = directory / "kmod-audit-check.prom"
            proc = unprivileged.run("check", "--running", "--metrics", str(path))
            assert 3 == proc.returncode, proc.stderr
            samples = _samples(path.read_text())
        finally:
            shutil.rmtree(directory)
        assert 3 == _one(samples, "exit_code", command="check")
        assert {("nixos-stig", "V-268096"): 0.0} == _compliant(samples)
        assert not any(n.endswith(("_enabled", "_loaded", "_lost_records")) for n, _ in samples)


class TestDriftRules:
    """`kmod_audit_drift_rules` counts the rules that differ, as check reports drift."""

    @pytest.mark.parametrize(
        ("running", "on_disk", "expected"),
        [
            ("A\nB\n", "A\nB\n", 0),
            ("", "A\nB\n", 2),
            ("A\nC\n", "A\nB\n", 2),
            ("B\nA\n", "A\nB\n", 2),
            ("A\nB\nC\n", "A\nB\n", 1),
        ],
        ids=["same", "all-removed", "one-changed", "reordered", "one-added"],
    )
    def test_count(self, running: str, on_disk: str, expected: int) -> None:
        """Missing plus extra rules; the same rules in another order count the moved ones."""
        lines = {
            "A": "-a always,exit -F arch=b64 -S init_module -k a",
            "B": "-a always,exit -F arch=b64 -S delete_module -k b",
            "C": "-a always,exit -F arch=b64 -S finit_module -k c",
        }

        def text(names: str) -> str:
            return "".join(lines[n] + "\n" for n in names.split())

        live = load(parse_rules(text(running), path="l", machine=MACHINES["x86_64"]))
        disk = load(parse_rules(text(on_disk), path="d", machine=MACHINES["x86_64"]))
        assert expected == compare(live, disk).rules


# --------------------------------------------------------------------------------------
# The real consumer: node_exporter's textfile collector, scraped over HTTP.


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.frozen
class NodeExporter:
    """A node_exporter started by a test (stopped by its pid)."""

    pid: int
    url: str
    textfiles: Path

    def scrape(self) -> str:
        """GET /metrics."""
        with urllib.request.urlopen(self.url, timeout=30) as response:  # noqa: S310 - http on 127.0.0.1
            body: bytes = response.read()
        return body.decode()


@pytest.fixture
def node_exporter(tmp_path: Path) -> Iterator[NodeExporter]:
    """Debian's node_exporter with only the textfile collector, on a free 127.0.0.1 port."""
    binary = require_tool("prometheus-node-exporter", "apt-get install prometheus-node-exporter")
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    port = _free_port()
    log = (tmp_path / "node_exporter.log").open("wb")
    daemon = subprocess.Popen(
        [
            binary,
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={textfiles}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.disable-exporter-metrics",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    exporter = NodeExporter(
        pid=daemon.pid, url=f"http://127.0.0.1:{port}/metrics", textfiles=textfiles
    )
    try:

        def serving() -> bool:
            if daemon.poll() is not None:
                return True
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                exporter.scrape()
                return True
            return False

        poll(serving, 30, f"node_exporter answering on 127.0.0.1:{port}")
        if daemon.poll() is not None:
            pytest.fail(f"node_exporter exited: {(tmp_path / 'node_exporter.log').read_text()}")
        yield exporter
    finally:
        os.kill(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)
        log.close()


def _kmod_audit(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a process of its own (what a systemd unit runs)."""
    return subprocess.run(
        [sys.executable, "-m", "kmod_audit", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.root
class TestNodeExporterScrape:
    """node_exporter serves what check wrote: compliant, then drifted, then restored."""

    def test_compliant_drifted_restored(
        self, host_audit: HostAudit, node_exporter: NodeExporter, tmp_path: Path
    ) -> None:
        """The scraped values follow the host kernel's running rules through drift and back."""
        rules = _kmod_audit("generate", "--profile", "all").stdout
        rules_d = tmp_path / "rules.d"
        rules_d.mkdir()
        (rules_d / "50-kmod-audit.rules").write_text(rules)
        count = len(rules.splitlines())
        assert 0 == host_audit.load(rules).returncode
        auditctl("-e", "1")
        prom = node_exporter.textfiles / "kmod-audit-check.prom"
        wanted = _requirements("all")
        evidence: list[str] = []

        def phase(name: str, code: int) -> Samples:
            lost_before = int(audit_status()["lost"])
            proc = _kmod_audit(
                "check", "--running", str(rules_d), "--profile", "all", "--metrics", str(prom)
            )
            lost_after = int(audit_status()["lost"])
            assert code == proc.returncode, proc.stdout + proc.stderr
            text = node_exporter.scrape()
            lines = [line for line in text.splitlines() if line.startswith("kmod_audit_")]
            evidence.append(f"== {name} (kmod-audit check exit {proc.returncode})")
            evidence.extend(lines)
            samples = _samples(text)
            assert 0 == _samples_of(text, "node_textfile_scrape_error")
            assert wanted == set(_compliant(samples))
            assert code == _one(samples, "exit_code", command="check")
            assert 1 == _one(samples, "audit_enabled")
            # The kernel's lost count, read once with the running rules (it only grows).
            assert lost_before <= _one(samples, "lost_records") <= lost_after
            return samples

        samples = phase("compliant: the generated rules are loaded", 0)
        assert {1.0} == set(_compliant(samples).values())
        assert 0 == _one(samples, "drift_rules")
        assert count == _one(samples, "rules_loaded")

        auditctl("-D")  # the host-audit lock is held by the fixture
        samples = phase("drifted: auditctl -D removed the running rules", 1)
        assert {0.0} == set(_compliant(samples).values())
        assert count == _one(samples, "drift_rules")
        assert 0 == _one(samples, "rules_loaded")

        assert 0 == host_audit.load(rules).returncode
        samples = phase("restored: the rules are loaded again", 0)
        assert {1.0} == set(_compliant(samples).values())
        assert 0 == _one(samples, "drift_rules")

        # verify writes its own file into the same directory: node_exporter merges both
        # (same HELP and TYPE), with no scrape error and no clash of series.
        verify_prom = node_exporter.textfiles / "kmod-audit-verify.prom"
        assert (
            2 == _kmod_audit("verify", "--uid-min", "x", "--metrics", str(verify_prom)).returncode
        )
        text = node_exporter.scrape()
        samples = _samples(text)
        assert 0 == _samples_of(text, "node_textfile_scrape_error")
        assert {1.0} == set(_compliant(samples).values())
        assert {0.0} == set(_compliant(samples, "verify").values())
        assert 2 == _one(samples, "exit_code", command="verify")
        evidence.append("== check and verify files in one textfile directory")
        evidence.extend(line for line in text.splitlines() if line.startswith("kmod_audit_"))

        (tmp_path / "EVIDENCE-scrape.txt").write_text("\n".join(evidence) + "\n")
        target = os.environ.get(EVIDENCE_ENV)
        if target:
            Path(target).write_text("\n".join(evidence) + "\n")


def _samples_of(text: str, name: str) -> float:
    """The value of the one unlabelled sample `name` (node_exporter's own)."""
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
    assert 1 == len(values), f"{name}: {values}"
    return values[0]
