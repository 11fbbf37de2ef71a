"""Helpers shared by the tests (importable thanks to `pythonpath = ["tests"]`)."""

from __future__ import annotations

import functools
import importlib
import importlib.resources
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import attrs
import jsonschema
import pytest

from hostaudit import Auditd, HostAudit, audit_status, auditctl, auditd_conf

# The host-audit harness lives in tools/hostaudit.py, shared with the bench.
__all__ = ["Auditd", "HostAudit", "audit_status", "auditctl", "auditd_conf"]

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_args(path: Path) -> list[str]:
    """The `check` options a rules fixture is judged with.

    From `<case>.args` beside it, else from a `# kmod-audit: OPTIONS` line among its first
    three lines; none otherwise.
    """
    sidecar = path.with_suffix(".args")
    if sidecar.exists():
        return shlex.split(sidecar.read_text())
    for line in path.read_bytes().decode().splitlines()[:3]:
        match = re.match(r"^# kmod-audit:(.*)$", line.rstrip("\r"))
        if match:
            return shlex.split(match.group(1))
    return []


@functools.cache
def _report_validator() -> jsonschema.protocols.Validator:
    schema_file = importlib.resources.files("kmod_audit") / "schema" / "report.schema.json"
    schema = json.loads(schema_file.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def valid_report(text: str) -> dict[str, Any]:
    """Parse the output of `--format json` and check it against the shipped JSON Schema.

    Fails the test, naming each violation, when it does not conform.
    """
    data = json.loads(text)
    errors = sorted(_report_validator().iter_errors(data), key=lambda e: list(e.path))
    if errors:
        pytest.fail(
            "the --format json output does not match verifier/kmod_audit/schema/"
            "report.schema.json:\n"
            + "\n".join(f"  at {list(e.path)}: {e.message[:300]}" for e in errors[:10])
        )
    assert isinstance(data, dict)
    return data


@attrs.frozen
class CliResult:
    """What one CLI run returned."""

    code: int
    out: str
    err: str


class RunCli(Protocol):
    """The `run_cli` fixture: run `kmod-audit ARGS...` in-process."""

    def __call__(self, *args: str) -> CliResult:
        """Run the CLI."""
        ...


def poll(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until `predicate()` holds, failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.05)


def require_or_skip(reason: str) -> None:
    """Skip a test whose prerequisite is missing, or fail when KMOD_AUDIT_REQUIRE_ROOT=1.

    `tools/check` sets KMOD_AUDIT_REQUIRE_ROOT=1 when run as root (CI): there a missing
    prerequisite is a broken setup, not a reason to pass by skipping.
    """
    if os.environ.get("KMOD_AUDIT_REQUIRE_ROOT") == "1":
        pytest.fail(f"KMOD_AUDIT_REQUIRE_ROOT=1 but {reason}")
    pytest.skip(reason)


def host_kmod_layout() -> bool:
    """Whether this machine has the Debian kmod layout the fixtures name.

    /usr/bin/kmod a real file and /usr/sbin/insmod, /usr/sbin/modprobe symlinks to it.
    """
    kmod = Path("/usr/bin/kmod")
    return (
        kmod.is_file()
        and not kmod.is_symlink()
        and Path("/usr/sbin/insmod").is_symlink()
        and Path("/usr/sbin/modprobe").is_symlink()
    )


# The unprivileged user the CLI tests drop to (nobody/nogroup on Debian).
UNPRIVILEGED_ID = 65534
# What `python -m kmod_audit` imports: the package and its dependencies (attrs is two;
# prometheus_client only with --metrics).
STAGED_PACKAGES = ("kmod_audit", "attr", "attrs", "pexpect", "ptyprocess", "prometheus_client")
# Run kmod_audit from the staged directory given as the first argument (-I ignores
# PYTHONPATH, the user site and the current directory; -S the site-packages).
_LAUNCHER = (
    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
    "runpy.run_module('kmod_audit', run_name='__main__', alter_sys=True)"
)
_IDENTITY = "import sys; print(sys.version_info >= (3, 11), sys.prefix, sys.version)"


def _as_unprivileged(*command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={UNPRIVILEGED_ID}",
            f"--regid={UNPRIVILEGED_ID}",
            "--clear-groups",
            *command,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def _interpreter_problem(python: str) -> str | None:
    """Why uid 65534 cannot run `python` as root does (None when it can).

    An interpreter installed under a directory other users cannot read (pyenv in /root,
    mode 0700) may still start, but then with another prefix and standard library (or not
    at all): compare what it reports as root and as the user.
    """
    command = [python, "-I", "-S", "-c", _IDENTITY]
    mine = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    theirs = _as_unprivileged(*command)
    if mine.returncode != 0 or not mine.stdout.startswith("True "):
        return f"it is not Python 3.11 or newer ({(mine.stdout + mine.stderr).strip()})"
    if theirs.returncode != 0:
        return f"uid {UNPRIVILEGED_ID} cannot run it ({theirs.stderr.strip()})"
    if theirs.stdout != mine.stdout:
        return (
            f"uid {UNPRIVILEGED_ID} cannot read its installation: as root it reports "
            f"{mine.stdout.split()[1]}, as uid {UNPRIVILEGED_ID} {theirs.stdout.split()[1]}"
        )
    return None


def unprivileged_python() -> str:
    """A Python 3.11+ interpreter that uid 65534 can run with its own standard library.

    This test run's interpreter (its real path: a venv's bin/python is a symlink), else the
    system's /usr/bin/python3. Fails the test, naming each candidate and why, when none is.
    """
    candidates = [os.path.realpath(sys.executable)]
    if os.path.exists("/usr/bin/python3"):
        candidates.append(os.path.realpath("/usr/bin/python3"))
    problems = []
    for python in dict.fromkeys(candidates):
        problem = _interpreter_problem(python)
        if problem is None:
            return python
        problems.append(f"{python}: {problem}")
    pytest.fail(
        "no Python interpreter that an unprivileged user can run: "
        + "; ".join(problems)
        + " (install python3, as tools/setup does, or run the tests with an interpreter "
        "that other users can read)"
    )


@attrs.frozen
class Unprivileged:
    """kmod-audit staged where any user can read it, run as uid/gid 65534.

    The clone may sit in a directory other users cannot enter (a `mktemp -d` directory),
    so the package and its dependencies are copied to a world-readable directory.

    Attributes:
        python: The interpreter (see `unprivileged_python`).
        path: The directory holding the copied packages.
    """

    python: str
    path: Path

    @classmethod
    def stage(cls, path: Path) -> Unprivileged:
        """Copy the packages into the directory `path`, readable by everyone; check the import."""
        path.chmod(0o755)
        for name in STAGED_PACKAGES:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                pytest.fail(f"cannot stage {name} for the unprivileged user: it is not installed")
            shutil.copytree(
                Path(spec.origin).parent,
                path / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        # Other users must read the copy (and the umask may have hidden it from them).
        for copied in path.rglob("*"):
            copied.chmod(0o755 if copied.is_dir() else 0o644)
        staged = cls(python=unprivileged_python(), path=path)
        imported = _as_unprivileged(
            staged.python,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path.insert(0, {str(path)!r}); import kmod_audit.cli",
        )
        if imported.returncode != 0:
            pytest.fail(
                f"uid {UNPRIVILEGED_ID} cannot import kmod_audit from {path}: "
                f"{imported.stderr.strip()} (is a parent directory of {path} closed to "
                "other users? set TMPDIR to one that is not)"
            )
        return staged

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`kmod-audit ARGS...` as uid/gid 65534 with no supplementary groups."""
        return _as_unprivileged(
            self.python, "-I", "-S", "-c", _LAUNCHER, str(self.path), *args, timeout=timeout
        )


def require_tool(name: str, install: str) -> str:
    """The path of the program `name`; skip without it, but fail in CI.

    CI (`CI=true`, or `KMOD_AUDIT_REQUIRE_ROOT=1` as `tools/check` sets it as root) must
    have every consumer that `tools/setup` installs: there a missing one is a broken
    setup, not a reason to pass by skipping.

    Args:
        name: The program, looked up on PATH.
        install: How to get it (e.g. `apt-get install prometheus-node-exporter`).
    """
    found = shutil.which(name)
    if found is not None:
        return found
    reason = f"{name} is not installed ({install}; tools/setup installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    require_or_skip(reason)
    raise AssertionError  # pragma: no cover - require_or_skip does not return


def promtool() -> str:
    """Prometheus' promtool (Debian's `prometheus` package, which tools/setup installs)."""
    return require_tool("promtool", "apt-get install --no-install-recommends prometheus")


#: The real consumers of checklists and HDF (npm packages pinned by package-lock.json,
#: installed by tools/setup with `npm ci`) and the script that runs their parsers.
CONSUMERS = Path(__file__).resolve().parents[1] / "tools" / "consumers"


def _in_ci() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("KMOD_AUDIT_REQUIRE_ROOT") == "1"


def consumer_import(fmt: str, path: Path) -> dict[str, Any]:
    """Import `path` with the real consumer of `fmt` and return what it made of it.

    `cklb`/`ckl`: STIG Manager's `reviewsFromCklb`/`reviewsFromCkl`; `hdf`: inspecjs. A
    missing node or npm package skips the test, except in CI (`CI=true`, or
    KMOD_AUDIT_REQUIRE_ROOT=1 as tools/check sets it), where it fails: CI must not pass by
    skipping. A file the parser refuses fails the test with the parser's message.
    """
    node = shutil.which("node") or shutil.which("nodejs")
    modules = CONSUMERS / "node_modules"
    missing = [
        what
        for what, ok in (
            ("node (apt-get install nodejs)", node is not None),
            (
                "@nuwcdivnpt/stig-manager-client-modules",
                (modules / "@nuwcdivnpt" / "stig-manager-client-modules").is_dir(),
            ),
            ("inspecjs", (modules / "inspecjs").is_dir()),
        )
        if not ok
    ]
    if missing:
        reason = (
            f"the real consumers are not installed ({', '.join(missing)}); run tools/setup "
            f"(npm ci in {CONSUMERS})"
        )
        if _in_ci():
            pytest.fail(f"CI, but {reason}")
        pytest.skip(reason)
    assert node is not None
    proc = subprocess.run(
        [node, str(CONSUMERS / "import.mjs"), fmt, str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        pytest.fail(f"the {fmt} consumer refused {path}: {proc.stderr.strip()}")
    data = json.loads(proc.stdout)
    assert isinstance(data, dict)
    return data


def review_results(imported: dict[str, Any]) -> dict[str, str]:
    """`{rule id: result}` of what STIG Manager's parser imported (every checklist)."""
    return {
        review["ruleId"]: review["result"]
        for checklist in imported["checklists"]
        for review in checklist["reviews"]
    }


#: A never rule that can match logged-in users' module calls, with many conditions, and the
#: generated rules: past a work limit of `LOW_WORK_LIMIT` steps the evaluator answers
#: undecided for the b64 module syscalls, while the b32 ones pass (tests of exit 3).
OVER_BUDGET = (
    "-a never,exit -F arch=b64 -S all -F auid>=1000 -F a0=0x2 -F a1=0x10 -F a2=0x20 "
    "-F a3=0x40 -F exit=-EPERM -F pid>1 -k odd\n"
    "-a always,exit -F arch=b64 -S init_module,delete_module,finit_module -F auid>=1000 "
    "-F auid!=unset -k module_chng\n"
    "-a always,exit -F arch=b32 -S init_module,delete_module,finit_module -F auid>=1000 "
    "-F auid!=unset -k module_chng\n"
)
#: The b64 checks of OVER_BUDGET take 3 steps, the b32 ones 1.
LOW_WORK_LIMIT = 2


def lower_work_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lower the evaluator's work limit (no real rule list reaches it) to LOW_WORK_LIMIT."""
    monkeypatch.setattr(
        importlib.import_module("kmod_audit.evaluate"), "WORK_LIMIT", LOW_WORK_LIMIT
    )
