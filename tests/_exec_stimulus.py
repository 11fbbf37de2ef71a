"""Execute a program as a logged-in user and read the SYSCALL records the kernel emits.

The records are read from the audit netlink multicast group (AUDIT_NLGRP_READLOG), which
every record reaches whether or not an auditd is registered, so the tests need no auditd
and read nothing but the records of their own stimulus. Needs root (CAP_AUDIT_READ).
"""

from __future__ import annotations

import errno
import os
import re
import select
import socket
import struct
import subprocess
import sys
import time
from typing import Final

import attrs

NETLINK_AUDIT: Final = 9
AUDIT_NLGRP_READLOG: Final = 1
AUDIT_SYSCALL: Final = 1300
AUDIT_EOE: Final = 1320
_HEADER: Final = struct.Struct("=IHHII")
_SO_RCVBUFFORCE: Final = 33
#: A single argument longer than MAX_ARG_STRLEN (32 pages): execve opens the program,
#: then fails with E2BIG, and the caller goes on running its own program.
_TOO_LONG: Final = 200_000

_CHILD: Final = """
import os, sys
auid, program, fail, length = sys.argv[1], sys.argv[2], sys.argv[3] == "fail", sys.argv[4]
with open("/proc/self/loginuid", "w") as handle:
    handle.write(auid)
if fail:
    try:
        os.execv(program, [program, "x" * int(length)])
    except OSError as exc:
        sys.exit(0 if exc.errno == 7 else 3)
os.execv(program, [program, "--version"])
"""


@attrs.frozen
class ExecRecord:
    """What the kernel recorded for one execve.

    Attributes:
        success: Whether the exec succeeded (`success=yes`).
        key: The record's key (None for `key=(null)`).
        exe: The `exe=` of the record (the process's executable at syscall exit).
    """

    success: bool
    key: str | None
    exe: str


def _field(text: str, name: str) -> str | None:
    match = re.search(rf"\b{name}=(\"[^\"]*\"|\S+)", text)
    return match.group(1).strip('"') if match else None


def exec_records(program: str, *, auid: int = 1000, fail: bool = False) -> list[ExecRecord]:
    """Execute `program` (an execve that succeeds, or fails with E2BIG) as login uid `auid`.

    The child is `python -c`: after a failed exec it still runs Python.

    Returns:
        The SYSCALL records of that execve (an empty list when none was emitted).
    """
    for _ in range(3):
        found = _exec_records_once(program, auid=auid, fail=fail)
        if found is not None:
            return found
    msg = "audit records were dropped three times in a row (the multicast buffer overflowed)"
    raise AssertionError(msg)


def _exec_records_once(program: str, *, auid: int, fail: bool) -> list[ExecRecord] | None:
    """One stimulus: its records, or None when some record was dropped meanwhile."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
    try:
        # Other processes' records share the group: a large buffer (root may exceed
        # rmem_max) keeps ours from being dropped; a drop is detected and retried.
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 1 << 24)
        sock.bind((0, AUDIT_NLGRP_READLOG))
        child = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-c",
                _CHILD,
                str(auid),
                program,
                "fail" if fail else "ok",
                str(_TOO_LONG),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, err = child.communicate(timeout=60)
        if fail and child.returncode != 0:
            msg = f"the failing exec of {program} did not fail with E2BIG: {err!r}"
            raise AssertionError(msg)
        # A marker of our own, emitted after the child's records: once it arrives,
        # every record of the child has been read.
        marker = f"kmod-audit-exec-stimulus-{os.getpid()}-{time.monotonic_ns()}"
        subprocess.run(["auditctl", "-m", marker], check=True, capture_output=True, timeout=60)
        found: list[ExecRecord] = []
        dropped = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], 0.5)
            if not ready:
                continue
            try:
                data = sock.recv(1 << 16)
            except OSError as exc:  # ENOBUFS: records of other processes overflowed it
                if exc.errno != errno.ENOBUFS:
                    raise
                dropped = True
                continue
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
                text = data[offset + _HEADER.size : offset + length].decode(errors="replace")
                offset += max((length + 3) & ~3, _HEADER.size)
                if marker in text:
                    return None if dropped else found
                if kind != AUDIT_SYSCALL or _field(text, "pid") != str(child.pid):
                    continue
                if _field(text, "syscall") != "59" or _field(text, "auid") != str(auid):
                    continue
                key = _field(text, "key")
                found.append(
                    ExecRecord(
                        success=_field(text, "success") == "yes",
                        key=None if key in {None, "(null)"} else key,
                        exe=_field(text, "exe") or "",
                    )
                )
        msg = f"the audit marker {marker!r} did not arrive within 10 s (is audit enabled?)"
        raise AssertionError(msg)
    finally:
        sock.close()
