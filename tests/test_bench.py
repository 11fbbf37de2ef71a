"""`bench/run` works: a quick run of cheap rows prints the table (timings are not tested)."""

from __future__ import annotations

import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run"


def test_quick_run_prints_the_table() -> None:
    """`bench/run --quick --rows wmax` exits 0 and prints a header and each wmax row."""
    proc = subprocess.run(
        [str(BENCH), "--quick", "--rows", "wmax", "--runs", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert 0 == proc.returncode, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("kmod-audit bench, "), proc.stdout
    assert "(quick run: " in lines[0]
    assert lines[2].split() == [
        "what",
        "ours",
        "min",
        "/",
        "median",
        "peer",
        "min",
        "/",
        "median",
        "ratio",
        "target",
        "result",
    ]
    assert any(line.startswith("check wmax 10 (+") for line in lines), proc.stdout
    [nine] = [line for line in lines if line.startswith("check wmax 9-line file")]
    assert "< 0.2 s" in nine
    assert nine.split()[-1] in {"PASS", "FAIL"}
    assert lines[-1].startswith("total ")


def test_unknown_row_is_a_usage_error() -> None:
    """A misspelt row group is exit 2 naming the choices, before anything is measured."""
    proc = subprocess.run(
        [str(BENCH), "--rows", "wmaxx"], capture_output=True, text=True, check=False, timeout=60
    )
    assert 2 == proc.returncode
    assert "--rows: unknown group ['wmaxx']" in proc.stderr
    assert "exe-never" in proc.stderr


def test_template_row() -> None:
    """`bench/run --rows template` prints the 20,000-rule template row with its < 2 s target."""
    proc = subprocess.run(
        [str(BENCH), "--quick", "--rows", "template", "--runs", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert 0 == proc.returncode, proc.stderr
    [row] = [
        line
        for line in proc.stdout.splitlines()
        if line.startswith("check --cklb-template, 20,000-rule template (")
    ]
    assert "< 2 s" in row
    assert row.split()[-1] in {"PASS", "FAIL"}


def test_comparison_of_two_builds() -> None:
    """`--against` times both builds per row and prints their ratio and whether it is slower."""
    this = BENCH.parent.parent / ".venv" / "bin" / "kmod-audit"
    proc = subprocess.run(
        [str(BENCH), "--quick", "--rows", "wmax", "--runs", "1", "--against", str(this)],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert 0 == proc.returncode, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("kmod-audit bench comparison, "), proc.stdout
    assert "4 rounds of up to 1 runs per build" in lines[0]
    assert lines[1].split() == [
        "what",
        "this",
        "min",
        "/",
        "median",
        "other",
        "min",
        "/",
        "median",
        "this",
        "/",
        "other",
        "result",
    ]
    [nine] = [line for line in lines if line.startswith("check wmax 9-line file")]
    *_, ratio, result = nine.split()
    assert float(ratio) > 0
    assert result in {"ok", "SLOWER"}
    # Each build ran the group four times, one run each time: both sides show a min and a
    # median (a side that never ran would show "-").
    assert nine.count(" / ") == 2
    assert lines[-2].startswith("rows more than 10% slower: ")
    assert lines[-1].startswith("total ")
    assert proc.stderr.count("bench: wmax (") == 8


def test_comparison_needs_an_executable_build() -> None:
    """`--against` of a path that is not a kmod-audit is exit 2 saying what to give."""
    proc = subprocess.run(
        [str(BENCH), "--against", "/nonexistent/kmod-audit"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert 2 == proc.returncode
    assert "--against: /nonexistent/kmod-audit is not executable" in proc.stderr
    assert ".venv/bin/kmod-audit" in proc.stderr
