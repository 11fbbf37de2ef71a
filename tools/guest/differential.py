"""Inside a throwaway guest: judge rules files by `check` and by this kernel.

The kernel matrix (tests/test_vm_matrix.py) draws the random rules files of the
kernel-differential test on the host and builds the stimulus programs for the guest's
machine; this judges each file here with tests/_differential.py (`check` live on this
machine, the real auditctl, this kernel, a private auditd), as the host's
tests/test_kernel_differential.py judges its own. Started by run-cases.sh after its cases.

    WORK/differential/NAME.rules       the files, judged in name order
    WORK/differential/stimulus-BUILD   the stimulus programs (`_differential.Platform`)
    WORK/out/differential/NAME.json    what each file gave (`Judged.to_json`), or
                                       {"error": TEXT} when the harness failed on it

Exit status 0 when every file was judged. Needs python3 with attrs, and kmod_audit
importable (the venv, or PYTHONPATH); no pytest or hypothesis.

Usage: python3 differential.py WORK
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tools")]

from _differential import PLATFORMS, HarnessError, Kernel, installed, judge  # noqa: E402
from hostaudit import HostAuditError, private_auditd  # noqa: E402


def main(work: Path) -> int:
    """Judge every file of WORK/differential; 0 when each was judged."""
    platform = PLATFORMS[os.uname().machine]
    files = work / "differential"
    out = work / "out" / "differential"
    out.mkdir(parents=True, exist_ok=True)
    builds = {build: files / f"stimulus-{build}" for build in platform.compilers}
    failed = 0
    with (
        tempfile.TemporaryDirectory(prefix="kmod-audit-differential.") as scratch,
        installed(platform, builds),
        private_auditd(Path(scratch) / "auditd") as auditd,
    ):
        kernel = Kernel(platform, auditd)
        for rules in sorted(files.glob("*.rules")):
            started = time.monotonic()
            try:
                judged = judge(kernel, Path(scratch) / "example.rules", rules.read_text())
            except (HarnessError, HostAuditError, OSError) as exc:
                failed += 1
                result: dict[str, object] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"== guest: differential {rules.stem}: {result['error']}", flush=True)
            else:
                result = judged.to_json()
            (out / f"{rules.stem}.json").write_text(json.dumps(result) + "\n")
            took = time.monotonic() - started
            print(f"== guest: differential {rules.stem}: {took:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
