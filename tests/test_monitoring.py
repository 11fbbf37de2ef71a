"""monitoring/kmod-audit.rules.yml: the alerting rules, checked and unit-tested by promtool.

`promtool check rules` validates the file and `promtool test rules` runs
monitoring/kmod-audit.rules.test.yml against it. Mutations prove that the unit tests have
teeth: an alert that never fires, or always fires, must fail them, so each alert is tested
both firing and silent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from _support import promtool

MONITORING = Path(__file__).resolve().parents[1] / "monitoring"
RULES = MONITORING / "kmod-audit.rules.yml"
TESTS = MONITORING / "kmod-audit.rules.test.yml"
ALERT = re.compile(r"^ *- alert: (\w+)$", re.MULTILINE)
ALERTS = ALERT.findall(RULES.read_text(encoding="utf-8"))


def _promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


def _with_expr(text: str, alert: str, expr: str) -> str:
    """The rules file with `alert`'s expr (one line or a block scalar) replaced by `expr`."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() == f"- alert: {alert}")
    at = next(i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("expr:"))
    indent = len(lines[at]) - len(lines[at].lstrip())
    end = at + 1
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
    ):
        end += 1
    # Keep the blank line that separates rules.
    while end > at + 1 and not lines[end - 1].strip():
        end -= 1
    return "".join([*lines[:at], " " * indent + f"expr: {expr}\n", *lines[end:]])


class TestRules:
    """The rules file as Prometheus reads it."""

    def test_alerts(self) -> None:
        """The file has the seven alerts docs/monitoring.md documents."""
        assert [
            "KmodAuditNotCompliant",
            "KmodAuditAuditDisabled",
            "KmodAuditNotLocked",
            "KmodAuditDrift",
            "KmodAuditRecordsLost",
            "KmodAuditRunStale",
            "KmodAuditCouldNotJudge",
        ] == ALERTS

    def test_check_rules(self) -> None:
        """`promtool check rules` accepts the file and finds every rule."""
        proc = _promtool("check", "rules", RULES.name)
        assert 0 == proc.returncode, proc.stdout + proc.stderr
        assert f"SUCCESS: {len(ALERTS)} rules found" in proc.stdout

    def test_unit_tests_pass(self) -> None:
        """`promtool test rules` passes the unit tests."""
        proc = _promtool("test", "rules", TESTS.name)
        assert 0 == proc.returncode, proc.stdout + proc.stderr
        assert "SUCCESS" in proc.stdout


class TestUnitTestsHaveTeeth:
    """Each alert is tested firing and silent: breaking it either way fails the tests."""

    @pytest.mark.parametrize(
        ("mutation", "expr"),
        [("never-fires", "vector(0) > 1"), ("always-fires", "vector(1)")],
        ids=["never-fires", "always-fires"],
    )
    @pytest.mark.parametrize("alert", ALERTS)
    def test_mutation_fails(self, tmp_path: Path, alert: str, mutation: str, expr: str) -> None:
        """The unit tests fail when the alert's expression is replaced by one that is wrong."""
        mutated = _with_expr(RULES.read_text(encoding="utf-8"), alert, expr)
        assert mutated.count(f"expr: {expr}\n") == 1
        (tmp_path / RULES.name).write_text(mutated, encoding="utf-8")
        shutil.copy(TESTS, tmp_path / TESTS.name)
        assert 0 == _promtool("check", "rules", RULES.name, cwd=tmp_path).returncode

        proc = _promtool("test", "rules", TESTS.name, cwd=tmp_path)

        assert 1 == proc.returncode, f"{alert} {mutation}: the tests still pass:\n{proc.stdout}"
        assert f"alertname: {alert}," in proc.stdout + proc.stderr
