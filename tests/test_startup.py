"""Start-up: a command imports only the modules it runs (no timings, the imports are counted)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Final

import pytest

from _support import FIXTURES

#: Modules that only `verify`, `probe` or `check --running` need.
_NOT_FOR_CHECK_FILE: Final = (
    "kmod_audit.netlink",
    "kmod_audit.verify",
    "kmod_audit.transports",
    "kmod_audit.probe",
    "kmod_audit.logs",
    "subprocess",
    # Only with --metrics.
    "kmod_audit.metrics",
    "prometheus_client",
)


def _modules_after(code: str) -> set[str]:
    """The modules loaded by a fresh interpreter after running `code`."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(json.loads(proc.stdout.splitlines()[-1]))


class TestLazyImports:
    """`import kmod_audit` is cheap; `check FILE` never loads the verify or netlink code."""

    def test_package_import_loads_no_submodule(self) -> None:
        """The public names are re-exported lazily (PEP 562), not imported up front.

        Only the one-line `_version` module loads (`kmod_audit.__version__`).
        """
        loaded = _modules_after("import kmod_audit")
        assert ["kmod_audit._version"] == sorted(m for m in loaded if m.startswith("kmod_audit."))

    def test_every_public_name_resolves(self) -> None:
        """`from kmod_audit import *` still gives every name of `__all__`, from its module."""
        import kmod_audit  # noqa: PLC0415 - the subject of the test

        for name in kmod_audit.__all__:
            value = getattr(kmod_audit, name)
            module = getattr(value, "__module__", None)
            assert module is None or module.startswith("kmod_audit"), name
        assert set(kmod_audit.__all__) <= set(dir(kmod_audit))
        with pytest.raises(AttributeError, match="no_such_name"):
            _ = kmod_audit.no_such_name

    def test_check_file_loads_no_verify_or_netlink_code(self) -> None:
        """`kmod-audit check FILE` judges the file without the modules of other commands."""
        path = FIXTURES / "rules" / "cis-benchmark.pass.rules"
        loaded = _modules_after(
            "import io\nfrom kmod_audit.cli import main\n"
            f"assert main(['check', {str(path)!r}], out=io.StringIO()) in (0, 1)"
        )
        assert "kmod_audit.check" in loaded
        assert [] == [m for m in _NOT_FOR_CHECK_FILE if m in loaded]
