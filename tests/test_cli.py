"""The CLI contract: exit codes, errors without tracebacks, the JSON shape."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest
from bench import pigeonhole
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from _support import (
    FIXTURES,
    OVER_BUDGET,
    RunCli,
    Unprivileged,
    lower_work_limit,
    valid_report,
)
from kmod_audit import _arguments as arguments
from kmod_audit import cli
from kmod_audit import sources as sources_module
from kmod_audit.errors import TransportError
from kmod_audit.probe_result import ProbeResult
from kmod_audit.profiles import select_profiles
from kmod_audit.transports import LocalHost
from kmod_audit.verify import VerifyOptions, judge_probe, render_verify_text

RULES = FIXTURES / "rules"
PROBE_FIXTURE = FIXTURES / "probe" / "host-x86_64-all.json"
# A port nothing listens on: ssh fails at once with "Connection refused".
UNREACHABLE: Final = "ssh://nobody@127.0.0.1:1"


def _kmod_audit(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m kmod_audit ARGS...` in a real process."""
    return subprocess.run(
        [sys.executable, "-m", "kmod_audit", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def _terminal_safe(text: str) -> bool:
    """Whether `text` holds no character a terminal would act on (newlines aside)."""
    return all(c.isprintable() or c in " \n" for c in text)


class TestExitCodes:
    """0 compliant, 1 not compliant, 2 usage or unreadable input, 3 system unreachable."""

    def test_compliant(self, run_cli: RunCli) -> None:
        """A compliant file exits 0."""
        assert 0 == run_cli("check", str(RULES / "syscalls-combined.pass.rules")).code

    def test_not_compliant(self, run_cli: RunCli) -> None:
        """A non-compliant file exits 1."""
        assert 1 == run_cli("check", str(RULES / "missing-b32.fail.rules")).code

    def test_missing_file(self, run_cli: RunCli) -> None:
        """A missing file exits 2 and names it."""
        result = run_cli("check", "/nonexistent/audit.rules")
        assert 2 == result.code
        assert "/nonexistent/audit.rules: cannot read it" in result.err

    def test_binary_file(self, run_cli: RunCli, tmp_path: Path) -> None:
        """A binary file exits 2 with a clear message."""
        path = tmp_path / "blob"
        path.write_bytes(b"\x7fELF\x00\x00\x01")
        result = run_cli("check", str(path))
        assert 2 == result.code
        assert "binary file" in result.err

    def test_empty_directory(self, run_cli: RunCli, tmp_path: Path) -> None:
        """A rules.d directory with no *.rules exits 2."""
        result = run_cli("check", str(tmp_path))
        assert 2 == result.code
        assert "holds no *.rules file" in result.err

    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (["--profile", "nope"], "unknown profile nope"),
            (["--arch", "sparc"], "--arch sparc: unknown architecture"),
            (["--uid-min", "ten"], "--uid-min ten: not a number"),
            (["--uid-min", "4294967295"], "must be between 0 and 4294967294"),
            (["--key="], "--key: the key is empty"),
            (["--format", "xml"], "invalid choice"),
        ],
        ids=["profile", "arch", "uid-min", "uid-min-range", "empty-key", "format"],
    )
    def test_usage_errors(self, run_cli: RunCli, args: list[str], needle: str) -> None:
        """Bad options exit 2 and name the option."""
        result = run_cli("check", *args, str(RULES / "syscalls-combined.pass.rules"))
        assert 2 == result.code
        assert needle in result.err

    @pytest.mark.root
    def test_unreachable_system(self, unprivileged: Unprivileged) -> None:
        """Without permission to ask the kernel (not root), `--running` exits 3."""
        result = unprivileged.run("check", "--running")
        assert 3 == result.returncode, result.stderr
        assert "run kmod-audit as root" in result.stderr
        assert "Traceback" not in result.stderr


class TestJsonContract:
    """The JSON object outside checks rely on."""

    def test_shape(self, run_cli: RunCli) -> None:
        """Top-level compliant/profiles; requirements carry id/title/status/reasons/rules."""
        result = run_cli(
            "check",
            "--profile",
            "all",
            "--format",
            "json",
            str(RULES / "never-before.fail.rules"),
        )
        data = json.loads(result.out)
        assert data["compliant"] is False
        assert ["nixos-stig", "al2023-stig", "cis", "tenable"] == [
            p["id"] for p in data["profiles"]
        ]
        stig = data["profiles"][0]
        assert stig["compliant"] is False
        requirement = stig["requirements"][0]
        assert "V-268096" == requirement["id"]
        assert "fail" == requirement["status"]
        assert any("never-before.fail.rules:2" in r for r in requirement["reasons"])
        assert any(r.endswith("-k module_chng") for r in requirement["rules"])
        assert "ANIX-00-000290" == requirement["references"]["STIG ID"]
        assert requirement["fix"]

    def test_not_applicable_requirement(self, run_cli: RunCli) -> None:
        """create_module on aarch64 passes as not applicable."""
        result = run_cli(
            "check",
            "--profile",
            "al2023-stig",
            "--arch",
            "aarch64",
            "--format",
            "json",
            str(RULES / "aarch64-cis.pass.rules"),
        )
        requirements = json.loads(result.out)["profiles"][0]["requirements"]
        create = next(r for r in requirements if r["id"] == "V-274092")
        assert ("pass", False) == (create["status"], create["applicable"])


class TestSources:
    """Stdin, directories and several sources."""

    def test_stdin(self) -> None:
        """`-` reads the rules from stdin."""
        text = (RULES / "syscalls-combined.pass.rules").read_text()
        result = subprocess.run(
            [sys.executable, "-m", "kmod_audit", "check", "-"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert 0 == result.returncode, result.stdout + result.stderr
        assert "<stdin>" in result.stdout

    def test_rules_directory_is_assembled(self, run_cli: RunCli, tmp_path: Path) -> None:
        """A rules.d directory is assembled like augenrules: -e moves last, natural order."""
        (tmp_path / "10-lock.rules").write_text("-e 2\n")
        (tmp_path / "9-b32.rules").write_text(
            "-a always,exit -F arch=b32 -S init_module,finit_module,delete_module "
            "-F auid>=1000 -F auid!=unset -k m\n"
        )
        (tmp_path / "50-b64.rules").write_text(
            "-a always,exit -F arch=b64 -S init_module,finit_module,delete_module "
            "-F auid>=1000 -F auid!=unset -k m\n"
        )
        (tmp_path / "notes.txt").write_text("-e 0\n")
        result = run_cli("check", "--format", "json", str(tmp_path))
        assert 0 == result.code, result.out  # -e 2 moved last, so nothing after it failed
        data = json.loads(result.out)
        assert [] == data["findings"]
        rules = data["profiles"][0]["requirements"][0]["rules"]
        assert {f"{tmp_path}/9-b32.rules:1", f"{tmp_path}/50-b64.rules:1"} == {
            r.split(": ")[0] for r in rules
        }

    def test_several_sources_all_must_pass(self, run_cli: RunCli) -> None:
        """With two files, one failing makes the run fail."""
        result = run_cli(
            "check",
            str(RULES / "syscalls-combined.pass.rules"),
            str(RULES / "missing-b32.fail.rules"),
        )
        assert 1 == result.code
        assert result.out.count("== ") == 2


class TestNothingLost:
    """A report or metrics file is never written over the rules being judged."""

    @pytest.mark.parametrize("option", ["--output", "--metrics"])
    @pytest.mark.parametrize("layout", ["file", "rules.d"])
    def test_report_over_a_source_is_refused(
        self, run_cli: RunCli, tmp_path: Path, option: str, layout: str
    ) -> None:
        """Exit 2 naming both paths, and the rules file is as it was."""
        rules_d = tmp_path / "rules.d"
        rules_d.mkdir()
        rules = rules_d / "10-modules.rules"
        text = (RULES / "syscalls-combined.pass.rules").read_text()
        rules.write_text(text)
        source = rules if layout == "file" else rules_d
        result = run_cli("check", str(source), option, str(rules))
        assert 2 == result.code, result.err
        inside = "inside " if layout == "rules.d" else ""
        assert (
            f"{option} {rules}: that is {inside}the rules source {source} being judged"
            in result.err
        )
        assert text == rules.read_text()

    @pytest.mark.parametrize("option", ["--output", "--metrics", "--json-output"])
    @pytest.mark.parametrize("spelling", ["plain", "dot-dot", "relative", "symlinked-dir"])
    def test_new_file_in_a_judged_rules_d_is_refused(
        self,
        run_cli: RunCli,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        option: str,
        spelling: str,
    ) -> None:
        """A file that does not exist yet inside a rules.d being judged is refused (exit 2)."""
        rules_d = _rules_d(tmp_path)
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "link").symlink_to(rules_d)
        monkeypatch.chdir(tmp_path / "elsewhere")
        path = {
            "plain": f"{rules_d}/zz-report.rules",
            "dot-dot": f"{tmp_path}/elsewhere/../rules.d/zz-report.rules",
            "relative": "../rules.d/zz-report.rules",
            "symlinked-dir": f"{tmp_path}/link/zz-report.rules",
        }[spelling]
        result = run_cli("check", str(rules_d), option, path)
        assert (2, ["10-modules.rules"]) == (result.code, sorted(os.listdir(rules_d)))
        assert (
            f"{option} {path}: that is inside the rules source {rules_d} being judged; writing "
            "there would change the rules; pass a file elsewhere (nothing was run)"
        ) in result.err
        assert 0 == run_cli("check", str(rules_d)).code

    @pytest.mark.parametrize("option", ["--output", "--metrics"])
    def test_hard_link_to_a_judged_rules_file_is_refused(
        self, run_cli: RunCli, tmp_path: Path, option: str
    ) -> None:
        """Another name (hard link) of a file in the rules.d being judged is refused."""
        rules_d = _rules_d(tmp_path)
        other = tmp_path / "report.txt"
        os.link(rules_d / "10-modules.rules", other)
        text = other.read_text()
        result = run_cli("check", str(rules_d), option, str(other))
        assert (2, text) == (result.code, other.read_text()), result.err
        assert "that is inside the rules source" in result.err

    @pytest.mark.parametrize("option", ["--output", "--metrics"])
    def test_empty_path(self, run_cli: RunCli, option: str) -> None:
        """An empty output path is refused as such, not as a directory."""
        result = run_cli("check", str(RULES / "syscalls-combined.pass.rules"), option, "")
        assert (2, True) == (result.code, f"{option} '': empty path; pass" in result.err)


def _rules_d(tmp_path: Path) -> Path:
    """A compliant rules.d in tmp_path/rules.d."""
    rules_d = tmp_path / "rules.d"
    rules_d.mkdir()
    (rules_d / "10-modules.rules").write_text((RULES / "syscalls-combined.pass.rules").read_text())
    return rules_d


class TestSystemRulesAreNotOutputs:
    """--output and --metrics never name the rules the system loads at start.

    The system paths are pointed at a scratch tree (`kmod_audit.system.RULES_D`,
    `AUDIT_RULES`, `NIXOS_UNITS`, as discovery reads them): the host's /etc/audit is never
    written.
    """

    @pytest.fixture
    def system(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
        """A scratch /etc/audit (rules.d, audit.rules) and a NixOS unit loading a rules file."""
        etc = tmp_path / "etc" / "audit"
        (etc / "rules.d").mkdir(parents=True)
        stig = (RULES / "syscalls-combined.pass.rules").read_text()
        (etc / "rules.d" / "10-modules.rules").write_text(stig)
        (etc / "audit.rules").write_text(stig)
        nixos = tmp_path / "store" / "audit.rules"
        nixos.parent.mkdir()
        nixos.write_text(stig)
        unit = tmp_path / "audit-rules-nixos.service"
        unit.write_text(f"[Service]\nExecStart=/bin/auditctl -R {nixos}\n")
        monkeypatch.setattr("kmod_audit.system.RULES_D", str(etc / "rules.d"))
        monkeypatch.setattr("kmod_audit.system.AUDIT_RULES", str(etc / "audit.rules"))
        monkeypatch.setattr("kmod_audit.system.NIXOS_UNITS", (str(unit),))
        return {"rules.d": etc / "rules.d", "audit.rules": etc / "audit.rules", "nixos": nixos}

    @staticmethod
    def _tree(root: Path) -> dict[str, str]:
        return {str(p): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}

    @pytest.mark.parametrize("option", ["--output", "--metrics", "--cklb-output"])
    @pytest.mark.parametrize(
        ("target", "what"),
        [
            ("rules.d/zz-report.rules", "inside the system's rules directory"),
            ("rules.d/10-modules.rules", "inside the system's rules directory"),
            ("audit.rules", "the system's rules file"),
            ("nixos", "the NixOS rules file"),
        ],
        ids=["new-in-rules.d", "in-rules.d", "audit.rules", "nixos"],
    )
    def test_refused_with_a_source(
        self,
        run_cli: RunCli,
        tmp_path: Path,
        system: dict[str, Path],
        option: str,
        target: str,
        what: str,
    ) -> None:
        """Judging another file, a report over the system's rules is exit 2; nothing changes."""
        head, _, tail = target.partition("/")
        path = system[head] / tail if tail else system[head]
        before = self._tree(tmp_path)
        result = run_cli(
            "check", str(RULES / "syscalls-combined.pass.rules"), "--profile", "nixos-stig",
            option, str(path),
        )  # fmt: skip
        assert (2, before) == (result.code, self._tree(tmp_path)), result.err
        assert f"{option} {path}: that is {what}" in result.err
        assert "(nothing was run)" in result.err

    @pytest.mark.parametrize("option", ["--output", "--metrics"])
    def test_refused_in_discovery(
        self, run_cli: RunCli, tmp_path: Path, system: dict[str, Path], option: str
    ) -> None:
        """`check --output AUDIT_RULES` (discovery) is refused before the rules are read."""
        before = self._tree(tmp_path)
        result = run_cli("check", option, str(system["audit.rules"]))
        assert (2, before) == (result.code, self._tree(tmp_path)), result.err
        assert "that is the system's rules file" in result.err

    def test_verify_is_refused_before_connecting(
        self, run_cli: RunCli, tmp_path: Path, system: dict[str, Path]
    ) -> None:
        """`verify` refuses a report over audit.rules before it reaches the target."""
        before = self._tree(tmp_path)
        result = run_cli("verify", "--target", UNREACHABLE, "--output", str(system["audit.rules"]))
        assert (2, before) == (result.code, self._tree(tmp_path)), result.err
        assert "that is the system's rules file" in result.err

    def test_file_a_unit_loads(
        self, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A rules file that a unit loads with `auditctl -R FILE` at start is no output."""
        loaded = tmp_path / "site.rules"
        loaded.write_text((RULES / "syscalls-combined.pass.rules").read_text())
        service = tmp_path / "lib" / "systemd" / "system" / "auditd.service"
        service.parent.mkdir(parents=True)
        service.write_text(
            f"[Service]\nExecStart=/sbin/auditd\nExecStartPost=/sbin/auditctl -R {loaded}\n"
        )
        real = sources_module.start_loads
        monkeypatch.setattr(
            "kmod_audit.sources.start_loads", lambda: real(str(tmp_path), live=True)
        )
        before = self._tree(tmp_path)
        result = run_cli("check", "--output", str(loaded))
        assert (2, before) == (result.code, self._tree(tmp_path)), result.err
        assert "that is a rules file loaded when audit starts" in result.err

    def test_metrics_of_a_refused_command_line(
        self, run_cli: RunCli, tmp_path: Path, system: dict[str, Path]
    ) -> None:
        """A command line argparse refuses writes no metrics over audit.rules either."""
        before = self._tree(tmp_path)
        result = run_cli("check", "--bogus", "--metrics", str(system["audit.rules"]))
        assert (2, before) == (result.code, self._tree(tmp_path)), result.err
        assert "that is the system's rules file" in result.err


class TestHostRulesAreNotOutputs:
    """With the real system paths, the refusal comes before anything could be written."""

    @pytest.fixture(autouse=True)
    def no_writes(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """Every writer of the CLI, replaced by one that records the path and writes nothing."""
        written: list[str] = []

        def record(path: object, *_: object, **__: object) -> None:
            written.append(str(path))

        monkeypatch.setattr("kmod_audit.outputs.write_atomic", record)
        monkeypatch.setattr("kmod_audit.metrics.write_atomic", record)
        return written

    @pytest.mark.parametrize("option", ["--output", "--metrics"])
    @pytest.mark.parametrize(
        ("path", "what"),
        [
            ("/etc/audit/audit.rules", "the system's rules file /etc/audit/audit.rules"),
            ("/etc/audit/rules.d/zz-report.rules", "inside the system's rules directory"),
            ("/etc/audit/rules.d/../audit.rules", "the system's rules file"),
        ],
        ids=["audit.rules", "new-in-rules.d", "dot-dot"],
    )
    @pytest.mark.parametrize(
        "source", [[], [str(RULES / "syscalls-combined.pass.rules")]], ids=["discovery", "source"]
    )
    def test_refused_and_unchanged(
        self,
        run_cli: RunCli,
        no_writes: list[str],
        option: str,
        path: str,
        what: str,
        source: list[str],
    ) -> None:
        """Exit 2 naming the system's rules, nothing written, /etc/audit as it was."""
        before = _snapshot(Path("/etc/audit"))
        result = run_cli("check", *source, option, path)
        assert (2, [], before) == (result.code, no_writes, _snapshot(Path("/etc/audit")))
        assert f"{option} {path}: that is {what}" in result.err


def _snapshot(directory: Path) -> dict[str, bytes] | None:
    """Every file under `directory` with its bytes (None when there is no such directory)."""
    if not directory.is_dir():
        return None
    found: dict[str, bytes] = {}
    for path in sorted(directory.rglob("*")):
        try:
            found[str(path)] = path.read_bytes() if path.is_file() else b"<not a file>"
        except OSError as exc:  # not root: the host's rules may be unreadable
            found[str(path)] = repr(exc).encode()
    return found


class TestNoTraceback:
    """Internal errors never print a traceback."""

    def test_module_entry_point(self) -> None:
        """`python -m kmod_audit --version` works."""
        result = subprocess.run(
            [sys.executable, "-m", "kmod_audit", "--version"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert 0 == result.returncode
        assert result.stdout.startswith("kmod-audit ")


class TestUndecided:
    """A limit of the evaluator is exit 3 ("cannot decide"), never a pass or a failure."""

    @pytest.fixture(autouse=True)
    def low_limit(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Lower the evaluator's work limit (no real rule list reaches it) below OVER_BUDGET's."""
        lower_work_limit(monkeypatch)

    def test_never_rule_for_auid_unset_is_compliant(self, run_cli: RunCli) -> None:
        """The issue 7.7 file, once judged NOT COMPLIANT at the limit, is compliant."""
        path = str(RULES / "never-unset-many-fields.pass.rules")
        result = run_cli("check", path, "--format", "json")
        assert 0 == result.code, result.out
        data = json.loads(result.out)
        assert (True, False) == (data["compliant"], data["undecided"])
        assert "cannot" not in result.out

    def test_over_budget_is_exit_3(self, run_cli: RunCli, tmp_path: Path) -> None:
        """Over the budget: exit 3, status `undecided` in JSON, `cannot decide` in text."""
        path = tmp_path / "big.rules"
        path.write_text(OVER_BUDGET)
        text = run_cli("check", str(path))
        assert 3 == text.code, text.out
        assert "CANNOT DECIDE V-268096" in text.out
        assert "[undecided] b64 init_module: kmod-audit cannot decide: " in text.out
        assert "big.rules:1) split its events into" in text.out
        assert "what to do: kmod-audit cannot judge this exactly" in text.out
        assert "result: CANNOT DECIDE" in text.out
        result = run_cli("check", str(path), "--format", "json")
        assert 3 == result.code
        data = json.loads(result.out)
        assert (False, True) == (data["compliant"], data["undecided"])
        [profile] = data["profiles"]
        assert (False, True) == (profile["compliant"], profile["undecided"])
        [req] = profile["requirements"]
        assert "undecided" == req["status"]
        assert {"b64 init_module", "b64 finit_module", "b64 delete_module"} == {
            c["target"] for c in req["checks"] if c["status"] == "undecided"
        }
        assert {"pass"} == {c["status"] for c in req["checks"] if c["target"].startswith("b32")}
        assert all("kmod-audit cannot decide" in reason for reason in req["reasons"])
        assert 3 == len(req["reasons"])

    def test_definite_failure_outweighs_undecided(self, run_cli: RunCli, tmp_path: Path) -> None:
        """Without the b32 rule the requirement fails for sure: exit 1, status `fail`."""
        path = tmp_path / "big-b64-only.rules"
        path.write_text("".join(OVER_BUDGET.splitlines(keepends=True)[:2]))
        result = run_cli("check", str(path), "--format", "json")
        assert 1 == result.code, result.out
        data = json.loads(result.out)
        assert "fail" == data["profiles"][0]["requirements"][0]["status"]
        assert {"fail", "undecided"} == {
            c["status"] for c in data["profiles"][0]["requirements"][0]["checks"]
        }

    @pytest.mark.parametrize(
        ("other", "code", "status"),
        [("missing-b32.fail.rules", 1, "fail"), ("syscalls-combined.pass.rules", 3, "undecided")],
        ids=["other-fails", "other-passes"],
    )
    def test_sources_merge_fail_before_undecided(
        self, run_cli: RunCli, tmp_path: Path, other: str, code: int, status: str
    ) -> None:
        """Across sources a failure anywhere is exit 1; otherwise undecided anywhere is 3."""
        path = tmp_path / "big.rules"
        path.write_text(OVER_BUDGET)
        result = run_cli("check", str(path), str(RULES / other), "--format", "json")
        assert code == result.code, result.out
        data = json.loads(result.out)
        assert status == data["profiles"][0]["requirements"][0]["status"]
        assert data["undecided"] is True


class TestBoundedJudging:
    """Any rules file is decided, or undecided (exit 3) naming a rule, in bounded time."""

    def test_pigeonhole_of_eight_attributes_is_compliant(
        self, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The issue 16 file (9 rules of `!=` on 8 attributes per ABI) is COMPLIANT.

        Within 10,000 steps per target: the search that cut boxes apart took 47 s on it.
        """
        monkeypatch.setattr(importlib.import_module("kmod_audit.evaluate"), "WORK_LIMIT", 10_000)
        path = tmp_path / "pigeonhole.rules"
        path.write_text(pigeonhole(8, 9))
        result = run_cli("check", str(path), "--profile", "nixos-stig")
        assert 0 == result.code, result.out
        assert "result: COMPLIANT" in result.out

    def test_out_of_time_is_exit_3_naming_the_rule(
        self, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With no time left for judging, `check` is exit 3 and names where it stopped."""
        monkeypatch.setattr(cli, "JUDGING_TIME", 0)
        path = tmp_path / "pigeonhole.rules"
        path.write_text(pigeonhole(9, 10))
        result = run_cli("check", str(path), "--profile", "nixos-stig")
        assert 3 == result.code, result.out
        assert "result: CANNOT DECIDE" in result.out
        named = re.search(
            r"\(the time left for judging in this run\); it was deciding which events reach "
            r"\S*pigeonhole\.rules:(\d+) `(.*?)`",
            result.out,
        )
        assert named is not None, result.out
        assert pigeonhole(9, 10).splitlines()[int(named[1]) - 1] == named[2]


class TestOptionValidation:
    """Every option value is checked when the command line is read: exit 2, naming both."""

    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (
                ["check", "--kernel-version", "latest", "-"],
                "argument --kernel-version: 'latest' is not a kernel release",
            ),
            (
                ["check", "--kernel-version", "6.1 && reboot", "-"],
                "argument --kernel-version: '6.1 && reboot' is not a kernel release",
            ),
            (["verify", "--timeout", "nan"], "argument --timeout: 'nan' is out of range"),
            (["verify", "--timeout", "inf"], "argument --timeout: 'inf' is out of range"),
            (["verify", "--timeout", "1e309"], "argument --timeout: '1e309' is out of range"),
            (["verify", "--timeout", "-1"], "argument --timeout: '-1' is out of range"),
            (["verify", "--timeout", "0"], "argument --timeout: '0' is out of range"),
            (["verify", "--timeout", "86401"], "argument --timeout: '86401' is out of range"),
            (["verify", "--timeout", "5s"], "argument --timeout: '5s' is not a number"),
            (["probe", "--timeout", "nan"], "argument --timeout: 'nan' is out of range"),
            (["probe", "--timeout", "-1"], "argument --timeout: '-1' is out of range"),
            (["probe", "--timeout", "0"], "argument --timeout: '0' is out of range"),
            (
                ["verify", "--probe-command", 'kmod-audit "x'],
                """argument --probe-command: 'kmod-audit "x' cannot be split""",
            ),
            (["verify", "--probe-command", " "], "argument --probe-command: ' ' is empty"),
            (["verify", "--module=-r"], "argument --module: '-r' is not a kernel module"),
            (["probe", "--module", "a b"], "argument --module: 'a b' is not a kernel module"),
            (["verify", "--module", "m" * 56], "is not a kernel module name"),
            (["verify", "--kmod-path", "kmod"], "argument --kmod-path: 'kmod' is not an absolute"),
            (["probe", "--kmod-path", "bin/kmod"], "'bin/kmod' is not an absolute path"),
            (["check", "--kmod-path", "bin/kmod"], "--kmod-path 'bin/kmod': the path is relative"),
            (["check", "--kmod-path", "/usr/bin/"], "--kmod-path '/usr/bin/': the path names a"),
            (["probe", "--auid", "me"], "--auid me: not a number"),
        ],
        ids=[
            "kernel-version-word",
            "kernel-version-shell",
            "verify-nan",
            "verify-inf",
            "verify-overflow",
            "verify-negative",
            "verify-zero",
            "verify-over-a-day",
            "verify-unit",
            "probe-nan",
            "probe-negative",
            "probe-zero",
            "unbalanced-quote",
            "blank-command",
            "module-option",
            "module-space",
            "module-too-long",
            "relative-kmod",
            "probe-relative-kmod",
            "check-relative-kmod",
            "check-kmod-directory",
            "auid",
        ],
    )
    def test_bad_values_are_usage_errors(
        self, run_cli: RunCli, args: list[str], needle: str
    ) -> None:
        """A bad value exits 2 with a message naming the option and the value."""
        # An unreachable target: even code that let the value through never probes here.
        target = ["--target", UNREACHABLE] if args[0] == "verify" else []
        result = run_cli(*args, *target)
        assert (2, True) == (result.code, needle in result.err), result.err
        assert [] == [w for w in ("Traceback", "internal error") if w in result.err]

    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (["generate", "--profile=--"], "--profile: unknown profile --"),
            (["generate", "--arch=--"], "--arch --: unknown architecture"),
            (["check", "--uid-min=--"], "--uid-min --: not a number"),
            (["check", "--format=--"], "argument --format: invalid choice: '--'"),
            (["verify", "--timeout=--"], "argument --timeout: '--' is not a number"),
            (["verify", "--target=--"], "--target '--' is not a known target"),
        ],
        ids=["profile", "arch", "uid-min", "format", "timeout", "target"],
    )
    def test_double_dash_as_a_value(self, run_cli: RunCli, args: list[str], needle: str) -> None:
        """`--opt=--` is the value `--`, checked like any other (Python 3.11 passed a list)."""
        result = run_cli(*args)
        assert (2, True) == (result.code, needle in result.err), result.err
        assert [] == [w for w in ("Traceback", "internal error") if w in result.err]

    @pytest.mark.parametrize(
        "args",
        [
            ["verify", "--target", UNREACHABLE, "--timeout", "nan"],
            ["verify", "--target", UNREACHABLE, "--probe-command", 'kmod-audit "x'],
            ["probe", "--timeout", "0"],
        ],
        ids=["timeout", "probe-command", "probe-timeout"],
    )
    def test_in_a_real_process(self, args: list[str]) -> None:
        """The same errors from the installed entry point: exit 2, usage, no traceback."""
        result = _kmod_audit(*args)
        assert 2 == result.returncode, result.stderr
        assert f"kmod-audit {args[0]}: error: argument " in result.stderr
        assert "Traceback" not in result.stderr
        assert "" == result.stdout

    def test_good_values_pass(self, run_cli: RunCli) -> None:
        """Valid values reach the target: here an unreachable one, so exit 3."""
        result = run_cli(
            "verify",
            "--target",
            UNREACHABLE,
            "--timeout",
            "30.5",
            "--module",
            "crc-itu-t",
            "--kmod-path",
            "/usr/bin/kmod",
            "--probe-command",
            "sudo -n 'kmod-audit'",
        )
        assert 3 == result.code, result.err
        assert "sudo -n kmod-audit probe --module crc-itu-t" in result.err


def _cli_options() -> dict[str, list[tuple[str, bool]]]:
    """The real subcommands and their options, read from the parser: (option, takes a value)."""
    parser = arguments.parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: [
            (option, action.nargs != 0)
            for action in command._actions
            for option in action.option_strings
            if option not in {"-h", "--help"}
        ]
        for name, command in commands.choices.items()
    }


_OPTIONS: Final = _cli_options()
_SPECIAL_VALUES: Final = (
    *("", " ", "-", "--", "-1", "0", "-0", "0.0", "1e-320", "1e309", "-1e309", "9" * 400),
    *("nan", "NaN", "inf", "-inf", "infinity", "0x10", "1_000", "4294967295"),
    "\u0661\u0660\u0660\u0660",  # 1000 in Arabic-Indic digits: int() and float() read it
    *("'", '"', "\\", "x'y", 'kmod-audit "x', "a b", "$HOME", "`id`", "*", "~"),
    *("\x1b[2K", "\r", "\n", "\t", "\x7f", "\x85", "\u202e", "\ufeff", "\udcff", "é", "模块"),
    *("-r", "--", "---", "-x", "--help", "--version", "--format", "json", "text"),
    *("/", ".", "..", "/nonexistent", "/usr/bin/kmod/", "dummy", "all", "nixos-stig"),
    *("x86_64", "aarch64", "module_chng", "m" * 300),
)
# Values a test can pass without starting a program or a connection: never `console:X`
# or `ssh://X` with a made-up X (those would run X or look a host up).
_VALUES: Final = st.one_of(
    st.sampled_from(_SPECIAL_VALUES),
    st.text(max_size=16),
    st.binary(max_size=8).map(lambda data: data.decode("utf-8", "surrogateescape")),
    st.integers().map(str),
    st.floats().map(str),
    st.from_regex(r"-{1,2}[a-z][a-z-]{0,12}", fullmatch=True),
).filter(lambda v: "\0" not in v and not v.startswith(("console:", "ssh:")))
_TARGETS: Final = (
    UNREACHABLE,
    "console:false",
    "console:/nonexistent/console",
    "console:'unclosed",
    "console:",
    "ssh://",
    "ssh://-oProxyCommand=x@h",
    "ssh://u@h:99999",
    "local",  # the local probe is replaced by a failure in the fuzz below
    "remote",
)


# Good values, so that runs also get past the options (to a verdict, or to the target).
_GOOD: Final = {
    "--profile": ("nixos-stig", "all", "cis"),
    "--arch": ("x86_64", "aarch64"),
    "--uid-min": ("1000", "0", "4294967294"),
    "--auid": ("1000",),
    "--key": ("module_chng", "k"),
    "--kmod-path": ("/usr/bin/kmod",),
    "--module": ("dummy", "crc-itu-t"),
    "--timeout": ("5", "0.5", "86400"),
    "--probe-command": ("kmod-audit", "sudo -n kmod-audit"),
    "--format": ("text", "json"),
    "--output": ("report.out", "-"),
    "--metrics": ("kmod-audit.prom",),
    "--json-output": ("report.json", "-"),
    "--hdf-output": ("report.hdf.json",),
    "--target": _TARGETS,
}
#: The options that write a file.
_WRITES: Final = frozenset(
    {
        "--output",
        "--metrics",
        *(f"--{fmt}-output" for fmt in ("text", "json", "cklb", "ckl", "hdf")),
    }
)
_SOURCES: Final = (
    str(RULES / "syscalls-combined.pass.rules"),
    str(RULES / "missing-b32.fail.rules"),
)


@st.composite
def _argvs(draw: st.DrawFn) -> list[str]:
    """An argv of a real subcommand with real options, hostile values and stray words."""
    argv: list[str] = draw(st.sampled_from(([], ["-v"], ["-vv"])))
    command = draw(st.sampled_from(sorted(_OPTIONS)))
    argv.append(command)
    for _ in range(draw(st.integers(0, 5))):
        option, takes_value = draw(st.sampled_from(_OPTIONS[command]))
        if not takes_value:
            argv.append(option)
            continue
        good = _GOOD.get(option, ())
        hostile = option != "--target" and draw(st.integers(0, 3)) == 0
        value = draw(_VALUES if hostile or not good else st.sampled_from(good))
        if option in _WRITES:
            # Relative to the test's own directory: the fuzz runs as root, and an absolute
            # value such as /nonexistent would write a report there.
            value = value.lstrip("/") or "."
        glued = draw(st.booleans())
        argv.extend([f"{option}={value}"] if glued else [option, value])
    if command == "check":
        argv.extend(draw(st.lists(st.one_of(st.sampled_from(_SOURCES), _VALUES), max_size=2)))
    elif draw(st.integers(0, 3)) == 0:
        argv.append(draw(_VALUES))  # a stray word
    if command in {"check", "verify"} and draw(st.booleans()):
        argv += ["--format", "json"]
    return argv


def _local_probe(self: LocalHost, command: object, timeout: float = 0) -> tuple[int, str]:
    del self, command, timeout
    msg = "the option fuzz never runs a local probe"
    raise TransportError(msg)


def _no_probe(**_: object) -> ProbeResult:
    msg = "the option fuzz never makes the probe's stimuli"
    raise TransportError(msg)


class TestAnyOptions:
    """No command line makes the CLI crash: any argv exits 0-3 without a traceback."""

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(argv=_argvs())
    def test_exit_code_and_no_traceback(
        self,
        run_cli: RunCli,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        argv: list[str],
    ) -> None:
        """Any argv of real options and hostile values exits 0-3, terminal-safe, no traceback.

        With `--format json`, an error is one JSON object with the same exit code. The
        local probe and the probe's stimuli are replaced by a failure (exit 3): the
        property is about reading the options, and real stimuli run in test_verify.py.
        """
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(LocalHost, "execute", _local_probe)
        monkeypatch.setattr("kmod_audit.probe.run_probe", _no_probe)
        result = run_cli(*argv)
        event(f"{argv[0] if argv[0] in _OPTIONS else argv[1]}: exit {result.code}")
        assert result.code in {0, 1, 2, 3}, (argv, result.err)
        assert [] == [w for w in ("Traceback", "internal error") if w in result.err], argv
        assert _terminal_safe(result.err), (argv, result.err)
        if argv[0] != "generate":  # generate prints rules byte for byte (issue 8.5 checks)
            assert _terminal_safe(result.out), (argv, result.out)
        # The last --format wins (a `--` before it would make it a positional word).
        if argv[-2:] == ["--format", "json"] and "--" not in argv and result.code in {2, 3}:
            data = json.loads(result.out)
            assert (["error"], result.code) == (list(data), data["error"]["exit"]), argv


class TestTerminalSafety:
    """Control characters from the input never reach the terminal raw."""

    HOSTILE_RULES = (
        "-a never,exit -F arch=b32 -S finit_module -k x\r\x1b[2K\x1b[1A\x1b[2K\n"
        "-a always,exit -F arch=b64 -S init_module,finit_module,delete_module "
        "-F auid>=1000 -F auid!=unset -k k\x1b[8m\n"
        "-a always,exit -F arch=b32 -S init_module,finit_module,delete_module "
        "-F auid>=1000 -F auid!=unset -k \u202eevil\x9b2K\n"
    )

    def test_check_report_escapes_keys(self, run_cli: RunCli, tmp_path: Path) -> None:
        """A key with CR, ESC[2K, ESC[8m, CSI or U+202E is shown escaped in the text report."""
        path = tmp_path / "hostile.rules"
        path.write_text(self.HOSTILE_RULES)
        result = run_cli("check", "--offline", str(path))
        assert 1 == result.code, result.out
        assert _terminal_safe(result.out), result.out
        assert "-k x\\r\\x1b[2K\\x1b[1A\\x1b[2K" in result.out  # in the [fail] reason
        assert "-k k\\x1b[8m" in result.out
        assert "-k \\u202eevil\\x9b2K" in result.out
        assert "result: NOT COMPLIANT\n" == result.out.splitlines(keepends=True)[-1]

    def test_json_report_keeps_the_key(self, run_cli: RunCli, tmp_path: Path) -> None:
        """The JSON report is ASCII and carries the exact key (json escapes it itself)."""
        path = tmp_path / "hostile.rules"
        path.write_text(self.HOSTILE_RULES)
        result = run_cli("check", "--offline", "--format", "json", str(path))
        assert result.out.isascii()
        rules = json.loads(result.out)["profiles"][0]["requirements"][0]["rules"]
        assert any(rule.endswith("-k k\x1b[8m") for rule in rules)

    def test_error_message_escapes_the_path(self, run_cli: RunCli, tmp_path: Path) -> None:
        """An error on stderr shows a path's control characters escaped."""
        result = run_cli("check", str(tmp_path / "x\x1b[2K\ry.rules"))
        assert 2 == result.code
        assert _terminal_safe(result.err), result.err
        assert "x\\x1b[2K\\ry.rules: cannot read it" in result.err

    def test_usage_error_escapes_the_argument(self, run_cli: RunCli) -> None:
        """The errors argparse finds (unrecognized arguments) are escaped too."""
        result = run_cli("check", "--\x1b[8m")
        assert 2 == result.code
        assert _terminal_safe(result.err), result.err
        assert "unrecognized arguments: --\\x1b[8m" in result.err

    def test_verbose_log_escapes_console_output(self) -> None:
        """With -vv the console's output is logged escaped (a console may print anything)."""
        result = _kmod_audit(
            "-vv", "verify", "--target", "console:printf 'a\\033[2Jb\\n'", "--timeout", "30"
        )
        assert 3 == result.returncode, result.stderr
        assert _terminal_safe(result.stderr), result.stderr
        assert "printf console: a\\x1b[2Jb" in result.stderr

    def test_verify_report_escapes_what_the_target_said(self) -> None:
        """Keys of records, the kernel name and problems from the target are shown escaped."""
        data = json.loads(PROBE_FIXTURE.read_text())
        data["kernel"] = "6.1\r\x1b[2Kfake"
        data["records"] = data["records"].replace('key="module_chng"', 'key="k\x1b[8m"')
        data["problems"] = ["lost\x1b[1A\x1b[2K"]
        report = judge_probe(
            ProbeResult.from_json(data), VerifyOptions(profiles=select_profiles(["nixos-stig"]))
        )
        text = render_verify_text(report)
        assert _terminal_safe(text), text
        assert "kernel 6.1\\r\\x1b[2Kfake" in text
        assert "key=k\\x1b[8m" in text
        assert "  lost\\x1b[1A\\x1b[2K\n" in text


class TestJsonErrors:
    """With --format json every error is one JSON object on stdout, with the exit code."""

    @pytest.mark.parametrize(
        ("args", "code", "kind", "needle"),
        [
            (["check", "--bogus"], 2, "usage", "unrecognized arguments: --bogus"),
            (["verify", "--timeout", "nan"], 2, "usage", "argument --timeout: 'nan'"),
            (["check", "--uid-min", "ten"], 2, "usage", "--uid-min ten: not a number"),
            (["check", "/nonexistent/audit.rules"], 2, "input", "cannot read it"),
            (["verify", "--target", "remote"], 2, "usage", "is not a known target"),
            (["verify", "--target", UNREACHABLE], 3, "transport", "Connection refused"),
        ],
        ids=["argparse", "option-type", "option", "input", "target", "transport"],
    )
    def test_error_object(
        self, run_cli: RunCli, args: list[str], code: int, kind: str, needle: str
    ) -> None:
        """The object is {"error": {"exit", "kind", "message"}}; stderr has the message too."""
        result = run_cli(*args, "--format", "json")
        error = json.loads(result.out)["error"]
        assert (code, code, kind) == (result.code, error["exit"], error["kind"])
        assert needle in error["message"]
        assert needle in result.err

    def test_format_before_the_error(self, run_cli: RunCli) -> None:
        """`--format=json` given before the bad word counts as well."""
        result = run_cli("check", "--format=json", "--strict", "--bogus")
        assert 2 == json.loads(result.out)["error"]["exit"]

    def test_text_format_prints_nothing_on_stdout(self, run_cli: RunCli) -> None:
        """Without --format json an error leaves stdout empty."""
        result = run_cli("check", "/nonexistent/audit.rules")
        assert (2, "") == (result.code, result.out)

    def test_internal_error(self, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
        """Even a bug (an unexpected exception) is reported as a JSON error object."""

        def broken(*_: object, **__: object) -> int:
            msg = "boom"
            raise RuntimeError(msg)

        monkeypatch.setattr(cli, "run_check", broken)
        result = run_cli("check", "--format", "json")
        error = json.loads(result.out)["error"]
        assert (2, "internal", True) == (result.code, error["kind"], "boom" in error["message"])

    def test_in_a_real_process(self) -> None:
        """The installed entry point prints the object and exits with its code."""
        result = _kmod_audit("verify", "--target", UNREACHABLE, "--format", "json")
        assert (3, 3) == (result.returncode, valid_report(result.stdout)["error"]["exit"])


class TestTimeoutBoundsEverything:
    """`verify --timeout` bounds a console's start-up too."""

    def test_console_without_prompt(self) -> None:
        """`console:cat` never shows a prompt: exit 3 within --timeout, with a CLI hint.

        Before, start-up waited a fixed 120 s; the 60 s process timeout catches that.
        """
        result = _kmod_audit("verify", "--target", "console:cat", "--timeout", "3", timeout=60)
        assert 3 == result.returncode, result.stderr
        assert "console cat showed no shell prompt within" in result.stderr
        assert "verify --timeout" in result.stderr
        assert "initial_prompt" not in result.stderr


#: `check` of a file for an aarch64 target on Debian's 6.12, whose files are not read here.
FOREIGN_STIG: Final = (
    "check",
    "--arch",
    "aarch64",
    "--kernel-version",
    "6.12",
    "--profile",
    "al2023-stig",
)


def _aarch64_stig_rules(run_cli: RunCli) -> str:
    """What `generate` prints for the AL2023 STIG on aarch64 (COMPLIANT on its own)."""
    return run_cli("generate", "--profile", "al2023-stig", "--arch", "aarch64").out


class TestKernelVersion:
    """A watch on kmod alone: the kernel's version decides (Linux 5.9 to 6.7 copy argv first)."""

    RULES = "-w /usr/bin/kmod -p x -k modules\n"

    @pytest.mark.parametrize(
        ("version", "code"),
        [("6.1.0-28-amd64", 1), ("6.7", 1), ("6.12.57+deb12-amd64", 0), ("5.4", 0)],
    )
    def test_the_version_given(
        self, run_cli: RunCli, tmp_path: Path, version: str, code: int
    ) -> None:
        """V-274093 (executions of kmod) fails for 5.9 to 6.7 and passes otherwise."""
        path = tmp_path / "watch.rules"
        path.write_text(self.RULES)
        args = ("check", "--offline", "--profile", "al2023-stig", "--kernel-version", version)
        result = run_cli(*args, str(path), "--format", "json")
        data = json.loads(result.out)
        [req] = [r for r in data["profiles"][0]["requirements"] if r["id"] == "V-274093"]
        assert ("pass" if code == 0 else "fail") == req["status"], req["reasons"]
        assert version == dict(data["options"])["kernel"]
        text = run_cli(*args, str(path)).out
        assert text.startswith("kmod-audit check: arch x86_64, ")
        assert f", kernel {version}" in text.splitlines()[0]
        if code:
            assert "exit=-EFAULT" in text
            assert "copies argv before it opens the file" in text

    def test_an_unknown_kernel_is_every_kernel(self, run_cli: RunCli, tmp_path: Path) -> None:
        """Offline without --kernel-version, the worst kernel counts, and the reason says so."""
        path = tmp_path / "watch.rules"
        path.write_text(self.RULES)
        result = run_cli("check", "--offline", "--profile", "al2023-stig", str(path))
        assert "any kernel" in result.out.splitlines()[0]
        assert "[fail] b64 execve of /usr/bin/kmod (auid=1000, success=no, exit=-EFAULT)" in (
            result.out
        )
        assert "the kernel the rules are for is not known (pass --kernel-version V" in result.out
        data = json.loads(
            run_cli(
                "check", "--offline", "--profile", "al2023-stig", str(path), "--format", "json"
            ).out
        )
        assert dict(data["options"])["kernel"] is None

    def test_strict_sees_the_rules_of_every_kernel(self, run_cli: RunCli, tmp_path: Path) -> None:
        """The exit= lines only argv-first kernels need are judged by --strict too.

        Judged for an unknown kernel, each order covers the execs, but with other rules:
        the lines without the literal login-uid filters must fail --strict all the same.
        """
        path = tmp_path / "strict.rules"
        path.write_text(
            "-a always,exit -F path=/usr/bin/kmod -F perm=x -F auid>=1000 -F auid!=unset -k k\n"
            + "".join(
                f"-a always,exit -F arch={bits} -S execve,execveat -F exit=-{code} -k k\n"
                for bits in ("b64", "b32")
                for code in (14, 7)
            )
        )
        args = ("check", "--offline", "--strict", "--profile", "al2023-stig", str(path))
        for version in ((), ("--kernel-version", "6.1")):
            result = run_cli(*args, *version, "--format", "json")
            data = json.loads(result.out)
            [req] = [r for r in data["profiles"][0]["requirements"] if r["id"] == "V-274093"]
            assert "fail" == req["status"], (version, req["reasons"])
            assert any("lacks the literal filter" in reason for reason in req["reasons"])

    @pytest.mark.parametrize("version", ["6.1", "6.12", None])
    def test_a_failure_before_the_open_may_name_the_file(
        self, run_cli: RunCli, tmp_path: Path, version: str | None
    ) -> None:
        """A never rule on the path drops an EFAULT exec on 6.1 too.

        There it usually ends before the open, but may end after it, with the file named.
        """
        path = tmp_path / "never.rules"
        path.write_text(
            "".join(
                f"-a always,exit -F arch={bits} -S execve,execveat -F exit!=-7 -F exit!=-14 -k k\n"
                for bits in ("b64", "b32")
            )
            + "-a never,exit -F path=/usr/bin/kmod\n"
            + "".join(
                f"-a always,exit -F arch={bits} -S execve,execveat -k k\n"
                for bits in ("b64", "b32")
            )
        )
        flags = ("--kernel-version", version) if version else ()
        result = run_cli("check", "--offline", "--profile", "al2023-stig", *flags, str(path))
        assert 1 == result.code, result.out
        assert "first matching rule is" in result.out
        assert "`-a never,exit -F path=/usr/bin/kmod` (action never)" in result.out

    def test_a_foreign_machine_is_judged_for_every_layout(
        self, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """`-w /bin/kmod` for aarch64: /bin may or may not be /usr/bin; the reason says so."""
        path = tmp_path / "bin.rules"
        path.write_text("-w /bin/kmod -p x -k modules\n")
        args = ("check", "--arch", "aarch64", "--profile", "al2023-stig")
        result = run_cli(*args, "--kernel-version", "6.12", str(path))
        assert 1 == result.code
        assert "[fail] b64 execve of /usr/bin/kmod (auid=1000, success=no)" in result.out
        assert "so every layout of /bin, /sbin and /lib* is judged; this is on a target" in (
            result.out
        )
        named = run_cli(*args, "--kernel-version", "6.12", "--kmod-path", "/bin/kmod", str(path))
        assert "[fail] b64 execve of /bin/kmod" not in named.out

    @pytest.mark.parametrize(("merged", "code"), [(True, 0), (False, 1)])
    def test_root_gives_the_layout(
        self,
        run_cli: RunCli,
        tmp_path: Path,
        merged: bool,
        code: int,
    ) -> None:
        """`--root DIR`: the links of DIR/bin and DIR/sbin decide which paths are kmod."""
        root = tmp_path / "root"
        (root / "usr" / "bin").mkdir(parents=True)
        (root / "usr" / "sbin").mkdir()
        if merged:
            (root / "bin").symlink_to("usr/bin")
            (root / "sbin").symlink_to("usr/sbin")
        else:
            (root / "bin").mkdir()
        path = tmp_path / "bin.rules"
        path.write_text("-w /bin/kmod -p x -k modules\n")
        result = run_cli(
            "check",
            "--root",
            str(root),
            "--kernel-version",
            "6.12",
            "--profile",
            "al2023-stig",
            str(path),
            "--format",
            "json",
        )
        data = json.loads(result.out)
        [req] = [r for r in data["profiles"][0]["requirements"] if r["id"] == "V-274093"]
        assert ("pass" if code == 0 else "fail") == req["status"], req["reasons"]
        assert ("merged" if merged else "split") == dict(data["options"])["layout"]
        assert not any("every layout" in reason for reason in req["reasons"])

    @pytest.mark.parametrize("where", ["none", "missing", "present"])
    def test_a_watch_parent_of_the_target_decides_what_loads(
        self, run_cli: RunCli, tmp_path: Path, where: str
    ) -> None:
        """`-w /opt/app/conf` before the module rules: offline, the target may lack /opt/app.

        Without its files the worst is judged (the watch refused, `auditctl -R` stops
        there), and the report names the directory; `--root` decides.
        """
        generated = _aarch64_stig_rules(run_cli)
        path = tmp_path / "stig.rules"
        path.write_text("-w /opt/app/conf -p wa -k app\n" + generated)
        args = list(FOREIGN_STIG)
        if where != "none":
            root = tmp_path / "root"
            (root / "usr" / "bin").mkdir(parents=True)
            if where == "present":
                (root / "opt" / "app").mkdir(parents=True)
            args += ["--root", str(root)]
        result = run_cli(*args, str(path))
        assert (0 if where == "present" else 1) == result.code, result.out
        if where == "none":
            assert "this is on a target that has no /opt/app, which may be: " in result.out
            assert f"warning: {path}:1: if /opt/app does not exist on the target" in result.out
            # A -w of a directory that may not exist loads either way (a tree watch where it
            # is a directory, a watch of a file where not): no world refuses it.
            path.write_text("-w /etc/sudoers.d/ -p wa -k actions\n" + generated)
            assert 0 == run_cli(*args, str(path)).code
        if where == "missing":
            assert f"the parent directory /opt/app of the watch does not exist in {root}" in (
                result.out
            )
            assert "this is on a target that has no" not in result.out

    @pytest.mark.parametrize(("owner", "code"), [(None, 1), (0, 0), (1000, 1)])
    def test_root_gives_the_owner_of_kmod(
        self, run_cli: RunCli, tmp_path: Path, owner: int | None, code: int
    ) -> None:
        """`obj_uid=0` on the kmod rule: offline the worst counts, --root reads the owner.

        The copy holds the host's kmod and the ELF loader it names (PT_INTERP): a failed
        exec names kmod only, so its owner decides.
        """
        kmod = shutil.which("kmod") or "/usr/bin/kmod"
        interpreter = "/lib64/ld-linux-x86-64.so.2"
        if platform.machine() != "x86_64" or not os.path.exists(kmod) or os.geteuid() != 0:
            pytest.skip("needs the host's x86_64 kmod and its ELF loader, and root (chown)")
        generated = _aarch64_stig_rules(run_cli)
        text = generated.replace("-F perm=x", "-F perm=x -F obj_uid=0")
        path = tmp_path / "owner.rules"
        path.write_text(text)
        args = list(FOREIGN_STIG)
        if owner is not None:
            root = tmp_path / "root"
            (root / "usr" / "bin").mkdir(parents=True)
            (root / "lib64").mkdir()
            shutil.copy(kmod, root / "usr" / "bin" / "kmod")
            shutil.copy(interpreter, root / "lib64")
            os.chown(root / "usr" / "bin" / "kmod", owner, 0)
            args += ["--root", str(root)]
        result = run_cli(*args, str(path))
        assert code == result.code, result.out
        said = "read only on the live machine or in a copy of its files (--root DIR)"
        assert (owner is None) == (said in result.out), result.out

    @pytest.mark.parametrize("where", ["none", "link", "directory"])
    def test_a_directory_link_of_the_target_may_name_kmod(
        self, run_cli: RunCli, tmp_path: Path, where: str
    ) -> None:
        """`exe=/opt/bin/kmod` is kmod where /opt/bin links to /usr/bin: offline, not known.

        A `never` rule on it suppresses the successful executions of kmod there. `-c` keeps
        loading when the target has no /opt/bin at all (the rule is then refused).
        """
        generated = _aarch64_stig_rules(run_cli)
        never = "-a never,exit -F arch=b64 -S execve -F success=1 -F exe=/opt/bin/kmod\n"
        path = tmp_path / "link.rules"
        path.write_text("-c\n" + never + generated)
        args = list(FOREIGN_STIG)
        if where != "none":
            root = tmp_path / "root"
            (root / "usr" / "bin").mkdir(parents=True)
            (root / "usr" / "bin" / "kmod").touch()
            (root / "opt").mkdir()
            if where == "link":
                (root / "opt" / "bin").symlink_to("../usr/bin")
            else:
                (root / "opt" / "bin").mkdir()
            args += ["--root", str(root)]
        result = run_cli(*args, str(path))
        assert (0 if where == "directory" else 1) == result.code, result.out
        said = "names /usr/bin/kmod depends on the target's directory links, which are not read"
        assert (where == "none") == (said in result.out), result.out
        if where != "directory":
            assert "b64 execve of /usr/bin/kmod (auid=1000, success=yes, exit=0)" in result.out

    @pytest.mark.parametrize(
        ("link", "code"), [(None, 1), ("usr", 1), (None, 0), ("../usr/bin", 0)]
    )
    def test_a_tree_watch_through_a_directory_link(
        self, run_cli: RunCli, tmp_path: Path, link: str | None, code: int
    ) -> None:
        """`-a never,exit -F dir=/x/bin`: where /x links to /usr it covers kmod.

        Offline (the first case) not known, the worst counts; `--root` resolves /x in the
        copy: a link to usr covers kmod, a real /x/bin or /x/bin itself a link does not (a
        tree watch on a link covers nothing).
        """
        generated = _aarch64_stig_rules(run_cli)
        path = tmp_path / "tree.rules"
        path.write_text("-c\n-a never,exit -F arch=b64 -S execve -F dir=/x/bin\n" + generated)
        args = list(FOREIGN_STIG)
        offline = link is None and code == 1
        if not offline:
            root = tmp_path / "root"
            (root / "usr" / "bin").mkdir(parents=True)
            (root / "usr" / "bin" / "kmod").touch()
            if link == "usr":
                (root / "x").symlink_to("usr")
            else:
                (root / "x").mkdir()
                if link is None:
                    (root / "x" / "bin").mkdir()
                else:
                    (root / "x" / "bin").symlink_to(link)
            args += ["--root", str(root)]
        result = run_cli(*args, str(path))
        assert code == result.code, result.out
        assert offline == ("depends on the target's directory links" in result.out), result.out

    def test_too_many_unread_lines_are_undecided(self, run_cli: RunCli, tmp_path: Path) -> None:
        """Past MAX_UNREAD_WORLDS lines that need an unread directory, a pass is undecided."""
        generated = _aarch64_stig_rules(run_cli)
        watches = "".join(f"-w /opt/app{i}/conf -p wa -k app\n" for i in range(20))
        path = tmp_path / "many.rules"
        path.write_text(generated + watches)
        result = run_cli(*FOREIGN_STIG, str(path))
        assert 3 == result.code, result.out
        assert "20 lines load only where a directory they need exists" in result.out
        few = tmp_path / "few.rules"
        few.write_text(generated + watches[: watches.index("app16")].rsplit("\n", 1)[0])
        assert 0 == run_cli(*FOREIGN_STIG, str(few)).code

    def test_root_must_be_a_directory(self, run_cli: RunCli, tmp_path: Path) -> None:
        """A --root that is not a directory is exit 2, saying what to pass."""
        result = run_cli("check", "--root", str(tmp_path / "nothing"), "-")
        assert 2 == result.code
        assert "--root " in result.err
        assert "not a directory; pass a copy of the target's root filesystem" in result.err
