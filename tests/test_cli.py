"""The CLI contract: exit codes, errors without tracebacks, the JSON shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _support import FIXTURES, RunCli, Unprivileged

RULES = FIXTURES / "rules"


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


#: A never rule that can match logged-in users' module calls, with so many conditions that
#: kmod-audit cannot enumerate them exactly; the b64 checks are undecided.
OVER_BUDGET = (
    "-a never,exit -F arch=b64 -S all -F auid>=1000 -F a0=0x2 -F a1=0x10 -F a2=0x20 "
    "-F a3=0x40 -F exit=-EPERM -F pid>1 -k odd\n"
    "-a always,exit -F arch=b64 -S init_module,delete_module,finit_module -F auid>=1000 "
    "-F auid!=unset -k module_chng\n"
    "-a always,exit -F arch=b32 -S init_module,delete_module,finit_module -F auid>=1000 "
    "-F auid!=unset -k module_chng\n"
)


class TestUndecided:
    """A limit of the evaluator is exit 3 ("cannot decide"), never a pass or a failure."""

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
