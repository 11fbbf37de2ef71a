"""Run the real Ansible engine (ansible-core from the dev extra) on the collection."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from _support import require_or_skip

REPO = Path(__file__).resolve().parents[1]
#: The collection root that ANSIBLE_COLLECTIONS_PATH names (it holds ansible_collections/).
COLLECTIONS = REPO / "collections"
COLLECTION = COLLECTIONS / "ansible_collections" / "kmodaudit" / "kmod_audit"
PLAYBOOK = COLLECTION / "playbooks" / "prove-fleet.yml"
MODULE = "kmodaudit.kmod_audit.kmod_audit"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """The program `name` of the dev extra (beside this Python, else on PATH).

    Missing, it skips the test, but fails it in CI (`CI=true`, or KMOD_AUDIT_REQUIRE_ROOT=1
    as tools/check sets it as root): there the dev extra must be installed.
    """
    beside = BIN / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is not None:
        return found
    reason = f"{name} is not installed (pip install -e '.[dev]'; tools/setup installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    require_or_skip(reason)
    raise AssertionError  # pragma: no cover - require_or_skip does not return


def environment(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of an Ansible run: this collection, this venv's kmod-audit first.

    Ansible's own state (ssh control sockets, remote tmp, fact cache) stays under `tmp`.
    """
    env = dict(os.environ)
    env.update(
        {
            "PATH": os.pathsep.join([str(BIN), env.get("PATH", "/usr/bin:/bin")]),
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_HOME": str(tmp / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-local"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp"),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_FORCE_COLOR": "False",
            "ANSIBLE_NOCOLOR": "True",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
        }
    )
    env.update(extra)
    return env


@attrs.frozen
class Run:
    """One ansible or ansible-playbook run.

    Attributes:
        argv: The command line.
        code: Its exit status.
        out: Its stdout.
        err: Its stderr.
    """

    argv: tuple[str, ...]
    code: int
    out: str
    err: str

    def describe(self) -> str:
        """The command, status and output, for an assertion message."""
        return (
            f"$ {' '.join(self.argv)}\nexit {self.code}\n--- stdout ---\n{self.out[-6000:]}\n"
            f"--- stderr ---\n{self.err[-3000:]}"
        )

    def recap(self) -> dict[str, dict[str, int]]:
        """The PLAY RECAP counters per host (`ok`, `changed`, `unreachable`, `failed`...)."""
        found: dict[str, dict[str, int]] = {}
        recap = self.out.rpartition("PLAY RECAP")[2]
        for line in recap.splitlines():
            host, sep, counters = line.partition(" : ")
            if sep:
                found[host.strip()] = {
                    name: int(value) for name, value in re.findall(r"(\w+)=(\d+)", counters)
                }
        return found


def run(argv: list[str], env: dict[str, str], *, cwd: Path, timeout: float = 900) -> Run:
    """Run an Ansible command to the end and collect what it printed."""
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
    return Run(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


def adhoc_result(result: Run, host: str = "localhost") -> dict[str, Any]:
    """The module result an ad-hoc `ansible HOST -m MODULE` run printed for `host`.

    The default callback prints `HOST | STATUS => {json}` (the JSON may span lines).
    """
    pattern = rf"^{re.escape(host)} \| (\w+)[^\n]*=> (\{{.*)"
    match = re.search(pattern, result.out, re.MULTILINE | re.DOTALL)
    assert match is not None, result.describe()
    decoder = json.JSONDecoder()
    data, _ = decoder.raw_decode(match.group(2))
    assert isinstance(data, dict)
    data["_status"] = match.group(1)
    return data
