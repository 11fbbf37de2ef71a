"""The Ansible collection against a fleet: real guests over ssh, driven by ansible-playbook.

Two guests are booted once for this module with the VM harness (tools/vmrun.py: Debian's
kernel with module support under QEMU TCG, the host's root read-only, /etc and /var as
RAM overlays). Each runs auditd and an sshd that QEMU's user-mode network forwards a free
port of 127.0.0.1 to (tools/guest/start-sshd.sh). So each host has its own kernel, its
own audit rules and its own /etc/audit. A third inventory host is 127.0.0.1 on a closed
port: it cannot be reached. The tests run in file order; the last ones lock the audit
rules of one guest and make the other look like NixOS.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import vmrun
from _ansible import PLAYBOOK, Run, environment, run, tool
from _support import consumer_import, require_or_skip, review_results, valid_report
from kmod_audit.transports import SerialConsole

pytestmark = pytest.mark.vm

START_SSHD = vmrun.TOOLS / "guest" / "start-sshd.sh"
GUEST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
RULES_FILE = "/etc/audit/rules.d/50-kmod-audit.rules"
NEVER_FILE = "/etc/audit/rules.d/10-never.rules"
# A `never` rule for every module syscall, placed first: it takes the events before the
# kmod-audit rules do, so nothing is recorded (nixos-stig needs b64 and b32).
NEVER_RULES = (
    "-a never,exit -F arch=b64 -S init_module,finit_module,delete_module",
    "-a never,exit -F arch=b32 -S init_module,finit_module,delete_module",
)
RULES_PLAYBOOK = """---
- name: Install kmod-audit's rules
  hosts: guests
  gather_facts: false
  roles:
    - kmodaudit.kmod_audit.rules
"""


def _kernel() -> vmrun.Kernel:
    if os.environ.get("KMOD_AUDIT_NO_VM") == "1":
        pytest.skip("KMOD_AUDIT_NO_VM=1: VM tests are switched off")
    missing = vmrun.missing_prerequisites()
    kernel = vmrun.find_kernel()
    if missing or kernel is None:
        require_or_skip("VM prerequisites are missing: " + "; ".join(missing or ["no kernel"]))
    assert kernel is not None
    return kernel


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@attrs.frozen
class Guest:
    """A booted guest: its name, its forwarded ssh port and its serial console.

    Attributes:
        name: Its inventory name and host name.
        port: The port of 127.0.0.1 that reaches its sshd.
        console: A root shell on its console, independent of ssh and Ansible.
    """

    name: str
    port: int
    console: SerialConsole

    def sh(self, script: str, timeout: float = 120) -> str:
        """Run `script` with sh in the guest as root; return its output (status 0 asserted)."""
        status, output = self.console.execute(["sh", "-c", script], timeout=timeout)
        assert 0 == status, f"{self.name}: `{script}` exited {status}:\n{output}"
        return output


@attrs.frozen
class Fleet:
    """The guests, the key Ansible logs in with, and an inventory with an unreachable host.

    Attributes:
        guests: fleet-a and fleet-b.
        key: The private key root logs in with.
        inventory: The inventory file (groups `guests` and `fleet`).
        control_path_dir: Where ssh keeps its master connections (a short path: a unix
            socket's path has at most 107 bytes).
    """

    guests: tuple[Guest, ...]
    key: Path
    inventory: Path
    control_path_dir: Path

    def guest(self, name: str) -> Guest:
        """The guest called `name`."""
        return next(guest for guest in self.guests if guest.name == name)


def _boot(kernel: vmrun.Kernel, name: str, keys: Path, stack: contextlib.ExitStack) -> Guest:
    port = _free_port()
    child = stack.enter_context(
        vmrun.console(
            kernel,
            timeout=300,
            cpus=1,
            qemu_opts=[
                "-netdev",
                f"user,id=fleet,hostfwd=tcp:127.0.0.1:{port}-:22",
                "-device",
                "virtio-net-pci,netdev=fleet",
            ],
        )
    )
    console = stack.enter_context(
        SerialConsole(child=child, name=name, path=GUEST_PATH, initial_prompt=None)
    )
    guest = Guest(name=name, port=port, console=console)
    guest.sh(f"sh {vmrun.START_AUDITD} 60", timeout=120)
    guest.sh(f"sh {START_SSHD} {keys} {name} 60", timeout=120)
    return guest


def _wait_for_ssh(guest: Guest, key: Path) -> None:
    deadline = time.monotonic() + 120
    argv = [
        "ssh",
        *("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"),
        *("-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10"),
        *("-i", str(key), "-p", str(guest.port), "root@127.0.0.1", "true"),
    ]
    while True:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if proc.returncode == 0:
            return
        if time.monotonic() > deadline:
            log = guest.sh("cat /run/kmod-audit-sshd/sshd.log")
            pytest.fail(f"ssh to {guest.name} failed: {proc.stderr}\nsshd's log:\n{log}")
        time.sleep(1)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Boot fleet-a and fleet-b (in parallel), with auditd and sshd; stop them afterwards."""
    kernel = _kernel()
    tool("ansible-playbook")
    keys = tmp_path_factory.mktemp("fleet-keys")
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / key)],
            check=True,
            timeout=30,
        )
    (keys / "authorized_keys").write_text((keys / "client_key.pub").read_text())
    names = ("fleet-a", "fleet-b")
    stacks = {name: contextlib.ExitStack() for name in names}
    with contextlib.ExitStack() as cleanup:
        control = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="ka-cp.")))
        for stack in stacks.values():
            cleanup.push(stack)
        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            futures = [pool.submit(_boot, kernel, name, keys, stacks[name]) for name in names]
            guests = tuple(future.result() for future in futures)
        for guest in guests:
            _wait_for_ssh(guest, keys / "client_key")
        inventory = keys / "inventory.ini"
        common = (
            f"ansible_host=127.0.0.1 ansible_user=root ansible_ssh_private_key_file="
            f"{keys / 'client_key'} ansible_python_interpreter=/usr/bin/python3 "
            # Ansible's files go to the guest's own /tmp (a RAM overlay).
            "ansible_remote_tmp=/tmp/.ansible-tmp"
        )
        inventory.write_text(
            "[guests]\n"
            + "".join(f"{g.name} ansible_port={g.port} {common}\n" for g in guests)
            + "[fleet:children]\nguests\n[fleet]\n"
            + f"unreachable ansible_port={_free_port()} {common}\n"
            + "[all:vars]\nansible_ssh_common_args='-o UserKnownHostsFile=/dev/null'\n"
        )
        yield Fleet(
            guests=guests,
            key=keys / "client_key",
            inventory=inventory,
            control_path_dir=control,
        )


def _playbook(fleet: Fleet, tmp: Path, playbook: Path, *args: str) -> Run:
    result = run(
        [tool("ansible-playbook"), "-i", str(fleet.inventory), *args, str(playbook)],
        environment(
            tmp, ANSIBLE_TIMEOUT="60", ANSIBLE_SSH_CONTROL_PATH_DIR=str(fleet.control_path_dir)
        ),
        cwd=tmp,
        timeout=900,
    )
    print(result.out)  # noqa: T201 - the run's log, shown by pytest when the test fails
    return result


def _rules_playbook(tmp: Path) -> Path:
    path = tmp / "rules.yml"
    path.write_text(RULES_PLAYBOOK)
    return path


def _generated(profile: str) -> str:
    return subprocess.run(
        [
            tool("kmod-audit"),
            "generate",
            "--arch",
            "x86_64",
            "--kmod-path",
            "/usr/bin/kmod",
            "--profile",
            profile,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def _summary_rows(summary: str) -> dict[str, list[str]]:
    """Map each host of the fleet summary's table to [verdict, check, verify, reason]."""
    lines = summary.splitlines()
    header = lines[1]
    starts = [header.index(name) for name in ("verdict", "check", "verify", "reason")]
    rows: dict[str, list[str]] = {}
    for line in lines[2:-1]:
        cells = [line[a:b].strip() for a, b in zip([0, *starts], [*starts, None], strict=True)]
        rows[cells[0]] = cells[1:]
    return rows


def _json(path: Path) -> dict[str, Any]:
    return valid_report(path.read_text())


def _task_results(result: Run, task: str) -> dict[str, str]:
    """Map each host to its status line (`ok`, `changed`, `skipping`...) under TASK [task]."""
    statuses: dict[str, str] = {}
    for block in result.out.split(f"TASK [{task}]")[1:]:
        for line in block.split("\nTASK [", 1)[0].splitlines():
            status, sep, rest = line.partition(": [")
            if sep and status in {"ok", "changed", "skipping", "fatal"}:
                statuses[rest.split("]", 1)[0]] = status
    return statuses


class TestFleet:
    """The rules role, then prove-fleet.yml on two guests and an unreachable host.

    One sequence, to boot and run as little as possible under TCG: the rules role runs
    once (changed), then prove-fleet.yml runs it a second time (unchanged) before it
    proves every host. `--check --diff` runs on this machine in tests/test_ansible.py.
    """

    def test_rules_then_fleet_summary(self, fleet: Fleet, tmp_path: Path) -> None:
        """Rules: changed, then unchanged. Summary: compliant, NOT compliant, could not prove."""
        expected = _generated("nixos-stig")
        first = _playbook(fleet, tmp_path, _rules_playbook(tmp_path))
        assert 0 == first.code, first.describe()
        for guest in fleet.guests:
            # The file, then augenrules --load (the handler).
            assert 2 == first.recap()[guest.name]["changed"], first.describe()
            written = guest.sh(f"cat {RULES_FILE}")
            assert written.startswith("# Managed by Ansible (role kmodaudit.kmod_audit.rules)")
            assert expected.splitlines() == [
                line for line in written.splitlines() if not line.startswith("#")
            ]
            listing = guest.sh("auditctl -l")
            assert (
                "-a always,exit -F arch=b64 -S init_module,delete_module,finit_module "
                "-F auid>=1000 -F auid!=-1 -F key=module_chng"
            ) in listing.splitlines()

        bad = fleet.guest("fleet-b")
        lines = " ".join(f"'{line}'" for line in NEVER_RULES)
        bad.sh(f"printf '%s\\n' {lines} > {NEVER_FILE} && augenrules --load")
        assert bad.sh("auditctl -l").startswith("-a never,exit -F arch=b64 -S init_module")
        reports = tmp_path / "reports"
        result = _playbook(
            fleet,
            tmp_path,
            PLAYBOOK,
            "-e",
            json.dumps({"kmod_audit_hosts": "fleet", "kmod_audit_reports_dir": str(reports)}),
        )
        # The rules role's second run (inside prove-fleet.yml): nothing changed, no load.
        assert {"fleet-a": "ok", "fleet-b": "ok"} == _task_results(
            result, "kmodaudit.kmod_audit.rules : Write the rules file"
        ), result.describe()
        assert "Load the audit rules into the kernel" not in result.out
        summary = (reports / "fleet-summary.txt").read_text()
        print(summary)  # noqa: T201 - the issue quotes it
        assert 2 == result.code, result.describe()
        rows = _summary_rows(summary)
        assert ["fleet-a", "fleet-b", "unreachable"] == sorted(rows)
        assert ["compliant", "compliant", "compliant"] == rows["fleet-a"][:3], summary
        assert "with a real module load" in rows["fleet-a"][3]
        assert ["NOT compliant", "not-compliant", "not-compliant"] == rows["fleet-b"][:3]
        assert "check fails V-268096; verify fails V-268096" == rows["fleet-b"][3]
        assert ["could not prove", "none", "none"] == rows["unreachable"][:3], summary
        assert rows["unreachable"][3].startswith("unreachable: ")
        assert "Connection refused" in rows["unreachable"][3]
        assert summary.splitlines()[-1] == (
            "result: 1 compliant, 1 NOT compliant, 1 could not prove (3 hosts): "
            "FLEET NOT PROVEN COMPLIANT"
        )
        assert "2 of 3 hosts are not proven compliant: fleet-b, unreachable" in result.out

        # fleet-a: the real module load, recorded with the key, is in the verify report.
        verify = _json(reports / "fleet-a.verify.json")
        assert verify["compliant"] is True
        assert verify["options"]["no_load"] is False
        loads = [e for e in verify["evidence"] if e["stimulus"].get("module") == "dummy"]
        assert [("finit_module", "yes", "dummy"), ("delete_module", "yes", "dummy")] == [
            (e["stimulus"]["syscall"], e["success"], e["module"]) for e in loads
        ]
        assert _json(reports / "fleet-a.check.json")["compliant"] is True
        assert _json(reports / "fleet-b.check.json")["compliant"] is False
        assert _json(reports / "fleet-b.verify.json")["compliant"] is False
        # The checklists import into STIG Manager with the verdicts of the table.
        for host, result_of_rule in (("fleet-a", "pass"), ("fleet-b", "fail")):
            for command in ("check", "verify"):
                imported = consumer_import("cklb", reports / f"{host}.{command}.cklb")
                assert {"SV-268096r1039563_rule": result_of_rule} == review_results(imported)
        assert not list(reports.glob("unreachable.*"))
        # The prove role installed kmod-audit into its own virtualenv on the guest.
        good = fleet.guest("fleet-a")
        assert (
            "/opt/kmod-audit/bin/kmod-audit" == good.sh("ls /opt/kmod-audit/bin/kmod-audit").strip()
        )


class TestRefusals:
    """Locked audit rules and NixOS hosts get a clear answer, not an obscure failure."""

    def test_locked_rules_and_nixos(self, fleet: Fleet, tmp_path: Path) -> None:
        """Locked (fleet-a): written, not loaded, reboot named. NixOS (fleet-b): refused."""
        locked, nixos = fleet.guest("fleet-a"), fleet.guest("fleet-b")
        before = locked.sh("auditctl -l")
        locked.sh("auditctl -e 2 >/dev/null")  # in the guest only: its own kernel
        untouched = nixos.sh(f"cat {RULES_FILE} 2>&1; true")
        original = nixos.sh("readlink /etc/os-release").strip()
        nixos.sh(
            "rm /etc/os-release && printf '%s\\n' 'NAME=NixOS' 'ID=nixos' "
            "'VERSION_ID=\"25.11\"' 'PRETTY_NAME=\"NixOS 25.11 (Xantusia)\"' > /etc/os-release"
        )
        try:
            result = _playbook(
                fleet,
                tmp_path,
                _rules_playbook(tmp_path),
                "-e",
                json.dumps({"kmod_audit_profiles": ["cis"]}),
            )
        finally:
            nixos.sh(f"rm /etc/os-release && ln -s {original} /etc/os-release")
        assert 2 == result.code, result.describe()
        recap = result.recap()
        assert (1, 0) == (recap["fleet-a"]["changed"], recap["fleet-a"]["failed"]), recap
        assert "REBOOT NEEDED: the audit rules of fleet-a are locked" in result.out
        assert "reboot fleet-a to apply it" in result.out
        written = locked.sh(f"cat {RULES_FILE}")
        assert "-F path=/usr/bin/kmod -F perm=x" in written
        assert before == locked.sh("auditctl -l")
        assert "enabled 2" in locked.sh("auditctl -s").splitlines()

        assert 1 == recap["fleet-b"]["failed"], recap
        assert "fleet-b runs NixOS" in result.out
        assert "kmod-audit.nixosModules.default" in result.out
        assert "colmena or deploy-rs" in result.out
        assert untouched == nixos.sh(f"cat {RULES_FILE} 2>&1; true")
