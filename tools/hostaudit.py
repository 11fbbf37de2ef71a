"""The host's audit subsystem, for the tests and the bench: one harness, one set of guarantees.

The host has one audit subsystem, so every process that changes it (a test, the bench)
first takes HOST_AUDIT_LOCK. `held()` then records the rules and the status, sets the
state the caller needs (audit enabled, failure 1: a machine where no auditd has started
since boot has `enabled 0`, and the kernel then records nothing), and restores the rules
and flags afterwards, even when the caller fails. It never sets `-e 2` or `-f 2`: those
lock audit, or panic the machine, until reboot.

`private_auditd()` starts an auditd of our own (`auditd -n -c DIR`) and stops it by its pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

import attrs

from kmod_audit.errors import TransportError
from kmod_audit.netlink import NETLINK_AUDIT, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR
from kmod_audit.system import auditctl_status

HOST_AUDIT_LOCK: Final = "/run/lock/kmod-audit-host-audit.lock"


class HostAuditError(RuntimeError):
    """The host's audit subsystem cannot be used or restored as asked."""


#: How long an auditctl call may take. The kernel deletes about 80 rules a second here
#: (12 ms a rule, more beside busy jobs): `-D` after the bench's 20,000-rule rows takes
#: minutes, and a timeout there would leave the host's rules half deleted.
TIMEOUT: Final = 60.0
DELETE_TIMEOUT: Final = 1800.0


def auditctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real auditctl (output decoded without newline translation: keys may hold CR).

    Raises:
        HostAuditError: it failed (with `check`), or did not finish in time.
    """
    timeout = DELETE_TIMEOUT if "-D" in args else TIMEOUT
    try:
        proc = subprocess.run(
            ["auditctl", *args], capture_output=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        msg = (
            f"auditctl {' '.join(args)} did not finish within {timeout:g} s; check the host's "
            "audit state (auditctl -s, auditctl -l) and restore it by hand"
        )
        raise HostAuditError(msg) from None
    result = subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )
    if check and result.returncode != 0:
        msg = f"auditctl {' '.join(args)} failed: {result.stderr.strip()}"
        raise HostAuditError(msg)
    return result


def audit_status() -> dict[str, str]:
    """`auditctl -s` as a mapping, read as kmod-audit reads it."""
    try:
        return auditctl_status()
    except TransportError as exc:
        raise HostAuditError(str(exc)) from None


#: What `add_rule` sends beside kmod_audit.netlink's constants (include/uapi/linux/audit.h):
#: the message type, the exit list, AUDIT_FILTER_PREPEND, and the numbers of the operators.
AUDIT_ADD_RULE: Final = 1011
AUDIT_FILTER_EXIT: Final = 4
AUDIT_FILTER_PREPEND: Final = 0x10
OPERATORS: Final = {"=": 0x40000000, "!=": 0x30000000}
ACTIONS: Final = {"never": 0, "always": 2}
_NLMSG: Final = struct.Struct("=IHHII")
_WORDS: Final = 64


def add_rule(
    action: str,
    syscalls: Iterable[int],
    fields: Sequence[tuple[int, str, int]],
    *,
    prepend: bool = False,
) -> None:
    """Add one exit-list rule over netlink (AUDIT_ADD_RULE), as a loader other than auditctl.

    The kernel takes rules auditctl refuses to make (`-F perm!=x`); `check --running` reads
    them back over netlink. `fields` are numeric: (field number, operator, value).

    Raises:
        HostAuditError: the kernel refused the rule, or did not answer.
    """
    mask = [0] * _WORDS
    for number in syscalls:
        mask[number // 32] |= 1 << (number % 32)
    flags = AUDIT_FILTER_EXIT | (AUDIT_FILTER_PREPEND if prepend else 0)
    types, values, ops = [0] * _WORDS, [0] * _WORDS, [0] * _WORDS
    for i, (kind, op, value) in enumerate(fields):
        types[i], values[i], ops[i] = kind, value, OPERATORS[op]
    payload = struct.pack(
        f"=3I{_WORDS}I{_WORDS}I{_WORDS}I{_WORDS}II",
        flags,
        ACTIONS[action],
        len(fields),
        *mask,
        *types,
        *values,
        *ops,
        0,
    )
    request = NLM_F_REQUEST | NLM_F_ACK
    header = _NLMSG.pack(_NLMSG.size + len(payload), AUDIT_ADD_RULE, request, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT) as sock:
        sock.settimeout(TIMEOUT)
        sock.bind((0, 0))
        sock.sendto(header + payload, (0, 0))
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                msg = "the kernel did not acknowledge AUDIT_ADD_RULE"
                raise HostAuditError(msg) from None
            _length, kind, _flags, seq, _pid = _NLMSG.unpack_from(data)
            if kind == NLMSG_ERROR and seq == 1:  # the ack: 0 or -errno
                (code,) = struct.unpack_from("=i", data, _NLMSG.size)
                if code:
                    msg = f"the kernel refused the rule: {os.strerror(-code)}"
                    raise HostAuditError(msg)
                return


def unusable() -> str | None:
    """Why this process cannot drive the host's audit subsystem (None when it can)."""
    if os.geteuid() != 0:
        return "needs root to drive the host's audit subsystem"
    if shutil.which("auditctl") is None:
        return "auditctl is not installed (apt-get install auditd)"
    probe = auditctl("-s", check=False)
    if probe.returncode != 0:
        return f"auditctl -s failed: {probe.stderr.strip()}"
    return None


def _load_file(text: str) -> subprocess.CompletedProcess[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".rules", delete=False) as handle:
        handle.write(text)
    try:
        os.chmod(handle.name, 0o600)
        return auditctl("-R", handle.name, check=False)
    finally:
        os.unlink(handle.name)


@attrs.define
class HostAudit:
    """The host's audit subsystem, restored to its original state at the end of `held()`.

    Attributes:
        rules: `auditctl -l` as found.
        status: `auditctl -s` as found.
        waited: Seconds spent waiting for another process to release the lock.
        restored: `auditctl -s` and `auditctl -l` just after the restore, read while the
            lock is still held (after it, another process may already change them).
    """

    rules: str
    status: dict[str, str]
    waited: float = 0.0
    restored: tuple[dict[str, str], str] | None = None

    def load(self, text: str) -> subprocess.CompletedProcess[str]:
        """Replace the rules with `text` via `auditctl -R` (after `-D`); return the result."""
        if "-e 2" in text or "-f 2" in text:
            msg = "refusing to load -e 2 / -f 2 on the host"
            raise HostAuditError(msg)
        auditctl("-D")
        return _load_file(text)

    def listing(self) -> str:
        """`auditctl -l` now."""
        return auditctl("-l").stdout

    def restore(self) -> None:
        """Put back the rules and the status found at the start.

        Every step is tried; a rule step that could not finish is raised at the end, after
        the status (above all `enabled`) is back.
        """
        failed: HostAuditError | None = None
        try:
            auditctl("-D", check=False)
            if self.rules.strip() != "No rules":
                _load_file(self.rules)
        except HostAuditError as exc:
            failed = exc
        for option, name in (
            ("-b", "backlog_limit"),
            ("-r", "rate_limit"),
            ("--backlog_wait_time", "backlog_wait_time"),
        ):
            value = self.status.get(name)
            if value is not None and value.isdigit():
                auditctl(option, value, check=False)
        failure = self.status.get("failure")
        if failure in {"0", "1"}:
            auditctl("-f", failure, check=False)
        enabled = self.status.get("enabled")
        if enabled in {"0", "1"}:
            auditctl("-e", enabled, check=False)
        if failed is not None:
            raise failed


@contextlib.contextmanager
def held(on_wait: Callable[[], None] | None = None) -> Iterator[HostAudit]:
    """Hold the host audit lock with audit enabled and failure 1; restore all afterwards.

    `on_wait` is called once before waiting when another process holds the lock (the bench
    says so); the time waited is `HostAudit.waited`.
    """
    with Path(HOST_AUDIT_LOCK).open("a") as lock:
        waiting = time.monotonic()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(lock, fcntl.LOCK_EX)
        waited = time.monotonic() - waiting
        status = audit_status()
        if status.get("enabled") == "2":
            msg = "host audit is locked (enabled 2): its rules cannot change until reboot"
            raise HostAuditError(msg)
        host = HostAudit(rules=auditctl("-l").stdout, status=status, waited=waited)
        try:
            # A known starting state, whatever the machine had. A caller that needs another
            # state sets it; the restore puts back what was found.
            auditctl("-e", "1")
            auditctl("-f", "1")
            yield host
        finally:
            host.restore()
            host.restored = (audit_status(), auditctl("-l", check=False).stdout)


def auditd_conf(directory: Path, log: Path, *, rotate: bool = True) -> str:
    """auditd.conf for a private auditd: the host's, with our log and no disk actions.

    With `rotate=False` the log is never rotated (the bench's big log stays the one auditd
    writes and `verify` reads).
    """
    ours = {
        "log_file": str(log),
        "log_group": "root",
        "log_format": "ENRICHED",
        "write_logs": "yes",
        "flush": "INCREMENTAL_ASYNC",
        "freq": "50",
        "plugin_dir": str(directory / "plugins.d"),
        "max_log_file_action": "ROTATE" if rotate else "IGNORE",
        **({"num_logs": "5"} if rotate else {}),
        "space_left_action": "IGNORE",
        "admin_space_left_action": "IGNORE",
        "disk_full_action": "IGNORE",
        "disk_error_action": "IGNORE",
    }
    host = Path("/etc/audit/auditd.conf")
    lines = host.read_text().splitlines() if host.exists() else []
    kept = [line for line in lines if line.partition("=")[0].strip() not in ours]
    return "\n".join([*kept, *(f"{name} = {value}" for name, value in ours.items())]) + "\n"


@attrs.frozen
class Auditd:
    """A private auditd.

    Attributes:
        pid: Its pid.
        log: Its log file.
    """

    pid: int
    log: Path


@contextlib.contextmanager
def private_auditd(directory: Path, *, rotate: bool = True) -> Iterator[Auditd]:
    """`auditd -n -c DIR` writing DIR/log/audit.log, registered with the kernel; stopped by pid.

    Call it inside `held()`: the restore puts back the audit state auditd changed.
    """
    log = directory / "log" / "audit.log"
    (directory / "plugins.d").mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    conf = directory / "auditd.conf"
    conf.write_text(auditd_conf(directory, log, rotate=rotate))
    conf.chmod(0o600)
    out = directory / "auditd.out"
    with out.open("ab") as output:
        daemon = subprocess.Popen(
            ["auditd", "-n", "-c", str(directory)], stdout=output, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 10
            while daemon.poll() is None and audit_status().get("pid") != str(daemon.pid):
                if time.monotonic() > deadline:
                    msg = "auditd did not register with the kernel within 10 s"
                    raise HostAuditError(msg)
                time.sleep(0.05)
            if daemon.poll() is not None:
                text = out.read_text(errors="replace")
                msg = f"auditd exited: {text.strip()[-300:]}"
                raise HostAuditError(msg)
            yield Auditd(pid=daemon.pid, log=log)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=10)
