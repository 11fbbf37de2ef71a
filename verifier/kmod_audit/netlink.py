"""Ask the kernel for its audit rules and status over the audit netlink socket.

This is the request `auditctl -l` and `auditctl -s` make (AUDIT_LIST_RULES, AUDIT_GET),
read without going through their text: `auditctl -l` prints a path= watch and a dir=
tree watch alike (`-w`), prints exe!= as exe=, prints every 64-bit arch as `b64` with the
names of that arch's table, and prints some values in forms it does not read back. The
binary rules are exact, so `check --running` judges what the kernel really holds.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Final

import attrs

from .errors import TransportError
from .rules import (
    COMPARISONS,
    PERM_BITS,
    UID_UNSET,
    Field,
    ListName,
    Op,
    Origin,
    Rule,
)
from .syscalls import Machine, abi_by_audit_arch

__all__ = ["KernelStatus", "list_rules", "status", "user_message"]

NETLINK_AUDIT: Final = 9
AUDIT_GET: Final = 1000
AUDIT_LIST_RULES: Final = 1013
AUDIT_USER: Final = 1005
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLM_F_REQUEST: Final = 1
NLM_F_ACK: Final = 4
_HEADER: Final = struct.Struct("=IHHII")
_RULE_HEAD: Final = struct.Struct("=III")
_WORDS: Final = 64
_STATUS: Final = struct.Struct("=IIIIIIII")
TIMEOUT: Final = 5.0

_LISTS: Final[dict[int, ListName]] = {
    0: "user",
    1: "task",
    4: "exit",
    5: "exclude",
    6: "filesystem",
}
_OPS: Final[dict[int, Op]] = {
    0x08000000: "&",
    0x10000000: "<",
    0x20000000: ">",
    0x30000000: "!=",
    0x40000000: "=",
    0x48000000: "&=",
    0x50000000: "<=",
    0x60000000: ">=",
}
_FIELDS: Final = {
    0: "pid",
    1: "uid",
    2: "euid",
    3: "suid",
    4: "fsuid",
    5: "gid",
    6: "egid",
    7: "sgid",
    8: "fsgid",
    9: "auid",
    10: "pers",
    11: "arch",
    12: "msgtype",
    13: "subj_user",
    14: "subj_role",
    15: "subj_type",
    16: "subj_sen",
    17: "subj_clr",
    18: "ppid",
    19: "obj_user",
    20: "obj_role",
    21: "obj_type",
    22: "obj_lev_low",
    23: "obj_lev_high",
    24: "loginuid_set",
    25: "sessionid",
    26: "fstype",
    100: "devmajor",
    101: "devminor",
    102: "inode",
    103: "exit",
    104: "success",
    105: "path",
    106: "perm",
    107: "dir",
    108: "filetype",
    109: "obj_uid",
    110: "obj_gid",
    111: "field_compare",
    112: "exe",
    113: "saddr_fam",
    200: "a0",
    201: "a1",
    202: "a2",
    203: "a3",
    210: "key",
}
_STRINGS: Final = frozenset({13, 14, 15, 16, 17, 19, 20, 21, 22, 23, 105, 107, 112, 210})


@attrs.frozen
class KernelStatus:
    """What `auditctl -s` shows.

    Attributes:
        enabled: 0 off, 1 on, 2 locked.
        failure: 0 silent, 1 printk, 2 panic.
        pid: auditd's pid (0: none).
        lost: Records lost so far.
        backlog_limit: The backlog limit.
    """

    enabled: int
    failure: int
    pid: int
    lost: int
    backlog_limit: int


def _request(kind: int, payload: bytes = b"") -> list[tuple[int, bytes]]:
    """Send one audit request and return the (type, payload) replies until DONE/ack."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
    except OSError as exc:
        msg = (
            f"cannot open the audit netlink socket ({exc.strerror}); the kernel may lack "
            "audit support (CONFIG_AUDIT)"
        )
        raise TransportError(msg) from exc
    with sock:
        sock.settimeout(TIMEOUT)
        sock.bind((0, 0))
        sequence = 1
        length = _HEADER.size + len(payload)
        padding = b"\0" * (-length % 4)
        message = (
            _HEADER.pack(length, kind, NLM_F_REQUEST | NLM_F_ACK, sequence, 0) + payload + padding
        )
        try:
            sock.sendto(message, (0, 0))
        except OSError as exc:
            raise _denied(exc) from exc
        replies: list[tuple[int, bytes]] = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError as exc:
                msg = f"the kernel did not answer the audit request {kind} within {TIMEOUT:g} s"
                raise TransportError(msg) from exc
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, reply, _flags, seq, _pid = _HEADER.unpack_from(data, offset)
                payload = data[offset + _HEADER.size : offset + length]
                offset += (length + 3) & ~3
                if length < _HEADER.size or seq != sequence:
                    continue
                if reply == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code != 0:
                        raise _denied(OSError(-code, os.strerror(-code)))
                    if (kind == AUDIT_GET and replies) or kind == AUDIT_USER:
                        return replies
                    continue
                if reply == NLMSG_DONE:
                    return replies
                replies.append((reply, payload))
                if kind == AUDIT_GET and reply == AUDIT_GET:
                    return replies


def _denied(exc: OSError) -> TransportError:
    if exc.errno in {errno.EPERM, errno.EACCES}:
        msg = (
            "the kernel refused to list the audit rules (needs CAP_AUDIT_CONTROL); run "
            "kmod-audit as root"
        )
    else:
        msg = f"the audit netlink request failed ({exc.strerror})"
    return TransportError(msg)


def status() -> KernelStatus:
    """Return the kernel's audit status (AUDIT_GET).

    Raises:
        TransportError: no audit support, not permitted, or no answer.
    """
    for kind, payload in _request(AUDIT_GET):
        if kind == AUDIT_GET and len(payload) >= _STATUS.size:
            _mask, enabled, failure, pid, _rate, backlog_limit, lost, _backlog = (
                _STATUS.unpack_from(payload)
            )
            return KernelStatus(enabled, failure, pid, lost, backlog_limit)
    msg = "the kernel sent no audit status"
    raise TransportError(msg)


def user_message(text: str) -> None:
    """Write a USER record (as `auditctl -m TEXT` does), e.g. a marker in the record stream.

    Raises:
        TransportError: not permitted (CAP_AUDIT_WRITE) or no audit support.
    """
    _request(AUDIT_USER, f"text={text}".encode() + b"\0")


def list_rules(machine: Machine) -> tuple[Rule, ...]:
    """Return the kernel's audit rules in kernel order, list by list (AUDIT_LIST_RULES).

    Raises:
        TransportError: no audit support, not permitted, or no answer.
    """
    rules: list[Rule] = []
    for kind, payload in _request(AUDIT_LIST_RULES):
        if kind == AUDIT_LIST_RULES:
            rule = decode_rule(payload, machine, len(rules) + 1)
            if rule is not None:
                rules.append(rule)
    return tuple(rules)


def decode_rule(payload: bytes, machine: Machine, index: int) -> Rule | None:
    """Decode one `struct audit_rule_data`; None for a list kmod-audit does not model."""
    flags, action, count = _RULE_HEAD.unpack_from(payload)
    offset = _RULE_HEAD.size
    mask = struct.unpack_from(f"={_WORDS}I", payload, offset)
    offset += 4 * _WORDS
    types = struct.unpack_from(f"={_WORDS}I", payload, offset)
    offset += 4 * _WORDS
    values = struct.unpack_from(f"={_WORDS}I", payload, offset)
    offset += 4 * _WORDS
    opflags = struct.unpack_from(f"={_WORDS}I", payload, offset)
    offset += 4 * _WORDS
    (buflen,) = struct.unpack_from("=I", payload, offset)
    buf = payload[offset + 4 : offset + 4 + buflen]
    list_name = _LISTS.get(flags & 0x07)
    if list_name is None or action not in {0, 2}:
        return None
    fields: list[Field] = []
    keys: tuple[str, ...] = ()
    position = 0
    for i in range(min(count, _WORDS)):
        kind, value, op = types[i], values[i], _OPS.get(opflags[i], "=")
        name = _FIELDS.get(kind, f"field{kind}")
        if kind in _STRINGS:
            text = buf[position : position + value].decode("utf-8", errors="replace")
            position += value
            if name == "key":
                keys = tuple(text.split("\x01"))
            else:
                fields.append(Field(name, op, text, text))
            continue
        fields.append(_numeric(name, op, value))
    all_syscalls = all(word == 0xFFFFFFFF for word in mask[: _WORDS - 1])
    syscalls = (
        None
        if all_syscalls or list_name != "exit"
        else frozenset(n for n in range(32 * (_WORDS - 1) + 16) if mask[n // 32] & (1 << (n % 32)))
    )
    arch = next((f.value for f in fields if f.name == "arch" and not f.compare), None)
    abi = abi_by_audit_arch(arch) if isinstance(arch, int) else machine.native
    watch = next((str(f.value) for f in fields if f.name in {"path", "dir"}), None)
    rule = Rule(
        list=list_name,
        action="always" if action == 2 else "never",
        fields=tuple(fields),
        syscalls=syscalls,
        syscall_table=abi.table if abi is not None else None,
        keys=keys,
        watch=watch,
        origin=Origin("kernel", index, ""),
    )
    return attrs.evolve(rule, origin=Origin("kernel", index, rule.render()))


def _numeric(name: str, op: Op, value: int) -> Field:
    if name == "loginuid_set":
        # loginuid_set=1 is `auid!=unset`; the kernel lists legacy rules as auid=-1 already.
        is_set = (value == 1) == (op == "=")
        return Field("auid", "!=" if is_set else "=", UID_UNSET, "unset")
    if name == "field_compare" and 1 <= value <= len(COMPARISONS):
        left, right = COMPARISONS[value - 1]
        return Field(left, op, right, f"{left}{op}{right}", compare=True)
    if name == "perm":
        text = "".join(c for c, bit in PERM_BITS.items() if value & bit)
        return Field(name, op, value, text)
    return Field(name, op, value, str(value))
