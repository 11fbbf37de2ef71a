"""Inside a throwaway guest: run kmod-audit once per case, all in this one process.

Started by run-cases.sh (which starts and stops auditd around it). WORK/cases/NAME.rules
are the rules of case NAME and WORK/cases/NAME.args its kmod-audit arguments, one per line
(e.g. `verify`, `--target`, `local`, `--format`, `json`, or `probe`, `--no-load`). For
each case, in name order: delete every rule, enable audit (a previous case's `-e 0` must
not carry over), load the case's rules with `auditctl -R`, and run kmod-audit's CLI with its
stdout to WORK/out/NAME.stdout and stderr to .stderr. Prints `RESULT case-NAME=STATUS`
(the CLI's exit status, or `load-N` when auditctl refused the file with status N).

Why one process: under QEMU TCG, starting Python and importing the package takes longer
than most probes; the CLI's `main` is called in-process, as the tests call it.

Usage: python3 run_cases.py WORK        (kmod_audit importable: the venv, or PYTHONPATH)
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

from kmod_audit.cli import main


def _auditctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["auditctl", *args], capture_output=True, text=True, check=False, timeout=60
    )


def run_case(work: Path, rules: Path) -> str:
    """Load one case's rules and run its kmod-audit arguments; its RESULT value."""
    name = rules.name.removesuffix(".rules")
    out = work / "out"
    for args in (("-D",), ("-e", "1")):
        done = _auditctl(*args)
        if done.returncode != 0:
            return f"setup-{done.returncode}"
    loaded = _auditctl("-R", str(rules))
    (out / f"{name}.load").write_text(loaded.stdout + loaded.stderr)
    if loaded.returncode != 0:
        return f"load-{loaded.returncode}"
    argv = (work / "cases" / f"{name}.args").read_text().splitlines()
    started = time.monotonic()
    with (
        (out / f"{name}.stdout").open("w", encoding="utf-8", errors="backslashreplace") as stdout,
        (out / f"{name}.stderr").open("w", encoding="utf-8", errors="backslashreplace") as stderr,
        contextlib.redirect_stderr(stderr),
    ):
        status = main(argv, out=stdout)
    took = time.monotonic() - started
    print(f"== guest: case {name}: kmod-audit {argv[0]} exit {status} in {took:.1f} s", flush=True)
    return str(status)


def main_cases(work: Path) -> int:
    """Run every case in WORK/cases; 0 when each was run (whatever its status)."""
    (work / "out").mkdir(exist_ok=True)
    for rules in sorted((work / "cases").glob("*.rules")):
        name = rules.name.removesuffix(".rules")
        print(f"RESULT case-{name}={run_case(work, rules)}", flush=True)
    _auditctl("-D")
    return 0


if __name__ == "__main__":
    sys.exit(main_cases(Path(sys.argv[1])))
