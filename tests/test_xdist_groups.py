"""`tools/check`'s scheduling: the VM tests stay in their xdist group, on one worker.

The VM tests share module-scoped boots (a scenario, a matrix leg): split across workers,
each worker boots them again and two TCG guests fight for the two cores. pytest 9.2 broke
`--dist loadgroup` without an error (pyproject.toml pins pytest below it); this runs the
real suite's VM modules with the VMs switched off and reads which worker ran each test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VM_MODULES = ("test_vm_modules.py", "test_vm_verify.py", "test_vm_harness.py")


def test_vm_tests_run_on_one_worker() -> None:
    """Every `vm` test, the kernel matrix's included, runs on one and the same worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KMOD_AUDIT"))}
    env["KMOD_AUDIT_NO_VM"] = "1"  # the VM tests skip at once; the scheduling is the same
    files = [f"tests/{name}" for name in (*VM_MODULES, "test_vm_matrix.py")]
    argv = ["-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup", "-v", "-m", "vm"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *argv, *files],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    workers: dict[str, set[str]] = defaultdict(set)
    line = re.compile(r"^\[(gw\d+)\] \[ *\d+%\] \w+ (\S+)", re.MULTILINE)
    for worker, nodeid in line.findall(proc.stdout):
        module = nodeid.split("::")[0].removeprefix("tests/")
        workers[module].add(worker)
    assert set(workers) == {*VM_MODULES, "test_vm_matrix.py"}, proc.stdout[-3000:]
    assert len(set().union(*workers.values())) == 1, dict(workers)
