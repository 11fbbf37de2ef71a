"""Audit records from logs: parse them, group them into events, read only what is new.

Where records come from, and what they look like there:

- auditd's log (`log_file` in auditd.conf; /var/log/audit/audit.log by default):
  `type=SYSCALL msg=audit(1795316028.008:6): arch=c000003e syscall=175 ... key="module_chng"`.
  With the default `log_format = ENRICHED` a 0x1D byte follows the record, then auditd's
  interpretation (`ARCH=x86_64 SYSCALL=init_module AUID="name"`); the line is cut there.
  With `name_format` set, lines start with `node=NAME `.
- `ausearch --raw` output: the same lines (PROCTITLE lines gain a bare 0x1D).
- the kernel log when no auditd runs (`dmesg`, `/dev/kmsg`):
  `audit: type=1300 audit(1795316028.008:6): arch=...`, the type as a number (mapped to its
  name here), behind a `[  12.345678] ` or `5,1406,4377242932,-;` prefix. The kernel
  rate-limits these lines (printk_ratelimit: 10 lines per 5 s by default) and drops the rest.
- journald, when it collects audit: `journalctl _TRANSPORT=audit -o json`, where `MESSAGE` is
  the type name, a space, then the record body, `_AUDIT_TYPE`/`_AUDIT_ID` carry the type
  number and the serial, and `_SOURCE_REALTIME_TIMESTAMP` the record time (systemd
  `src/journal/journald-audit.c`, `process_audit_string`).

Facts the parser relies on: the records of one event share `msg=audit(TIME:SERIAL)`; auditd
never writes EOE records to disk, so events are grouped by (node, time, serial) and serials
restart at boot. Untrusted strings (key, comm, exe, name, cwd, ...) are quoted when printable
and hex-encoded otherwise (a space, a quote, a control or non-ASCII byte); several keys are
joined by 0x01 (so always hex); `(null)` means no value; proctitle is always hex. Loading a
rule emits a CONFIG_CHANGE record that carries the rule's key, so consumers match SYSCALL
records (`AuditEvent.syscall`), not any record with the key.

Reading only what is new: `position()` notes the log's inode, device and size before the
stimuli; `read_since()` seeks there (it never reads what came before, so its cost does not
depend on the log's size) and follows auditd's rotation (audit.log -> audit.log.1 -> ...).
auditd writes asynchronously (`flush = INCREMENTAL_ASYNC`), so `wait_for_marker()` polls,
with a deadline, for a USER record (`auditctl -m TEXT` or `netlink.user_message`) written
after the stimuli.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Final, Literal, TypeAlias

import attrs

from ._log import logger
from ._syscall_tables import MESSAGE_TYPES
from .errors import CommandFailed, ConfigurationError, ParseError, TransportError
from .rules import KEY_SEPARATOR

__all__ = [
    "AUDITD_CONF",
    "DEFAULT_LOG_FILE",
    "ENCODED_FIELDS",
    "ENRICHED_SEPARATOR",
    "KMSG",
    "MESSAGE_NAMES",
    "AuditEvent",
    "AuditRecord",
    "JournalPosition",
    "KmsgPosition",
    "LogPosition",
    "MarkerTimeout",
    "ParsedLog",
    "Position",
    "RecordSource",
    "auditd_config_path",
    "auditd_log_file",
    "auditd_settings",
    "group_events",
    "is_marker",
    "kmsg_position",
    "losses",
    "new_marker",
    "parse_journal",
    "parse_log",
    "parse_records",
    "position",
    "read_ausearch",
    "read_journal",
    "read_new",
    "read_since",
    "wait_for_marker",
]

AUDITD_CONF: Final = "/etc/audit/auditd.conf"
DEFAULT_LOG_FILE: Final = "/var/log/audit/audit.log"
KMSG: Final = "/dev/kmsg"
ENRICHED_SEPARATOR: Final = "\x1d"
# auditd's num_logs is at most 999: its rotated files are LOG.1 ... LOG.998.
MAX_ROTATED: Final = 999
SUBPROCESS_TIMEOUT: Final = 120.0
# CLOCK_REALTIME_COARSE (Linux): the clock the kernel stamps audit records with.
_CLOCK_REALTIME_COARSE: Final = 5

# Types of <linux/audit.h> that the generated MESSAGE_TYPES lacks (its generator skips
# names starting with LOG, FEATURE and KERNEL_OTHER); auditd writes these names.
_MORE_TYPES: Final = {"LOGIN": 1006, "KERNEL_OTHER": 1316, "FEATURE_CHANGE": 1328}


def _message_names() -> dict[int, str]:
    names: dict[int, str] = {}
    for name, number in (*MESSAGE_TYPES.items(), *_MORE_TYPES.items()):
        names.setdefault(number, name)  # INTEGRITY_DATA, not its alias INTEGRITY_FIRST_MSG
    return names


#: Message type numbers to names (the names auditd writes).
MESSAGE_NAMES: Final = _message_names()

#: Fields whose value the kernel or libaudit hex-encodes when it is not plain printable text.
ENCODED_FIELDS: Final = frozenset(
    {
        "key",
        "comm",
        "exe",
        "name",
        "proctitle",
        "cwd",
        "path",
        "dir",
        "acct",
        "cmd",
        "ocomm",
        "data",
        "watch",
        "root_dir",
    }
)
# Numbers printed in hex (%x) and octal (%o) by the kernel; every other number is decimal.
_HEX_NUMBERS: Final = frozenset({"arch", "a0", "a1", "a2", "a3", "per"})
_OCTAL_NUMBERS: Final = frozenset({"mode"})

_STAMP = r"audit\((?P<time>\d{1,20}\.\d{1,9}):(?P<serial>\d{1,20})\):"
# Record headers are matched at the start of the line only (`re.match`): a user message
# (`auditctl -m`, AUDIT_USER over netlink) is logged with its text unescaped, so a header
# found later in a line is text someone wrote, never a record.
_LOG_LINE: Final = re.compile(
    r"(?:node=(?P<node>\S{1,256}) )?"
    r"type=(?P<type>[A-Za-z][A-Za-z0-9_]{0,63}(?:\[\d{1,10}\])?) msg=" + _STAMP
)
# The kernel's own line: a /dev/kmsg `PRI,SEQ,TS,FLAGS;` prefix or a `dmesg -r` `<PRI>`
# (either carries the facility: kernel messages have facility 0, what userspace writes to
# /dev/kmsg has facility 1 or more), then an optional `dmesg` time stamp `[...] `.
_KMSG_LINE: Final = re.compile(
    r"(?:(?P<pri>\d{1,3}),\d{1,20},\d{1,20},[^;]{0,64};|<(?P<raw_pri>\d{1,3})>)?"
    r"(?:\[[^\]\n]{1,64}\] ?)?"
    r"audit: type=(?P<number>\d{1,10}) " + _STAMP
)
_KMSG_PREFIX: Final = re.compile(r"^(?P<pri>\d{1,3}),(?P<sequence>\d{1,20}),\d{1,20},[^;]*;")
# syslog facility * 8 + level: facility 0 (kernel) is below 8.
_KERNEL_FACILITY_END: Final = 8
_HEX: Final = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_DECIMAL: Final = re.compile(r"-?\d{1,30}")
_HEX_DIGITS: Final = re.compile(r"[0-9A-Fa-f]{1,32}")
_OCTAL_DIGITS: Final = re.compile(r"[0-7]{1,32}")
_TYPE_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_JOURNAL_NUMBERED: Final = re.compile(r"AUDIT\d+")
_MARKER: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")


def _type_name(number: int) -> str:
    """The name auditd writes for a message type number (`UNKNOWN[n]` when it has none)."""
    return MESSAGE_NAMES.get(number, f"UNKNOWN[{number}]")


def _millis(stamp: str) -> int:
    """`1795316028.008` as whole milliseconds since the epoch."""
    seconds, _, fraction = stamp.partition(".")
    return int(seconds) * 1000 + int((fraction + "000")[:3])


def _coarse_now() -> float:
    """The wall clock as the kernel stamps records: never ahead of a later record's time."""
    try:
        return time.clock_gettime(_CLOCK_REALTIME_COARSE)
    except OSError:  # not Linux: the fine clock, minus a tick of slack
        return time.time() - 0.01


# --------------------------------------------------------------------------------------
# Records and events


@attrs.frozen(kw_only=True)
class AuditRecord:
    """One audit record (one line of audit.log).

    Attributes:
        type: The type name, e.g. `SYSCALL`, also when the source gave a number (kmsg,
            journald); `UNKNOWN[n]` for a number with no name.
        time: The event time as written, seconds.milliseconds (`1795316028.008`).
        serial: The event serial (restarts at boot).
        fields: The `name=value` pairs in order, values raw (quotes and hex kept). The
            fields inside a userspace `msg='...'` follow the `msg` field itself.
        raw: The line as read (prefixes and the ENRICHED suffix included).
        node: The `node=` name (auditd `name_format`), empty when absent.
    """

    type: str
    time: str
    serial: int
    fields: tuple[tuple[str, str], ...]
    raw: str
    node: str = ""

    def _raw_value(self, name: str) -> str | None:
        for field, value in self.fields:
            if field == name:
                return value
        return None

    def get(self, name: str) -> str | None:
        r"""Return the first value of field `name`, unquoted and hex-decoded.

        Quotes (`"..."`, `'...'`) are removed; a hex value of a field in
        `ENCODED_FIELDS` is decoded (UTF-8, undecodable bytes as `\xNN`); several keys
        stay joined by 0x01 (use `keys`).

        Args:
            name: The field name, e.g. `pid`, `key`, `exe`.

        Returns:
            The value, or None when the record has no such field or its value is the
            kernel's unquoted `(null)`.
        """
        value = self._raw_value(name)
        if value is None or value == "(null)":
            return None
        return _decode_value(name, value)

    def number(self, name: str) -> int | None:
        """Return field `name` as a number: hex for arch, a0-a3 and per; octal for mode.

        Args:
            name: The field name, e.g. `syscall`, `exit`, `pid`, `arch`.

        Returns:
            The number, or None when the field is absent or not a number.
        """
        value = self.get(name)
        if value is None:
            return None
        if name in _HEX_NUMBERS:
            base, pattern = 16, _HEX_DIGITS
        elif name in _OCTAL_NUMBERS:
            base, pattern = 8, _OCTAL_DIGITS
        else:
            base, pattern = 10, _DECIMAL
        if pattern.fullmatch(value) is None:
            return None
        return int(value, base)

    @property
    def keys(self) -> tuple[str, ...]:
        """The record's keys (`key=` split on 0x01); empty for `key=(null)` or no key."""
        value = self.get("key")
        if not value:
            return ()
        return tuple(value.split(KEY_SEPARATOR))

    @property
    def milliseconds(self) -> int:
        """The record time in whole milliseconds since the epoch."""
        return _millis(self.time)


def _decode_value(name: str, value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    if value[:1] in {'"', "'"}:  # cut short (truncated line): the rest, unquoted
        return value[1:]
    if name in ENCODED_FIELDS and _HEX.fullmatch(value):
        return bytes.fromhex(value).decode("utf-8", errors="backslashreplace")
    return value


@attrs.frozen(kw_only=True)
class AuditEvent:
    """The records of one event: those that share node, time and serial.

    Attributes:
        time: The event time, seconds.milliseconds.
        serial: The event serial.
        records: The records in the order they were read.
        node: The `node=` name, empty when absent.
    """

    time: str
    serial: int
    records: tuple[AuditRecord, ...]
    node: str = ""

    @property
    def syscall(self) -> AuditRecord | None:
        """The event's SYSCALL record, or None (events without a syscall have none)."""
        return self.record("SYSCALL")

    def record(self, record_type: str) -> AuditRecord | None:
        """Return the first record of `record_type` (e.g. `KERN_MODULE`), or None."""
        return next((r for r in self.records if r.type == record_type), None)

    def records_of(self, record_type: str) -> tuple[AuditRecord, ...]:
        """Return every record of `record_type`, in order (e.g. the PATH records)."""
        return tuple(r for r in self.records if r.type == record_type)


@attrs.frozen(kw_only=True)
class ParsedLog:
    """What a parser made of a text.

    Attributes:
        records: The records, in the order read.
        skipped: The non-empty lines that are not records, as (1-based line, text):
            kernel messages around kmsg records, `----` separators, cut or foreign lines.
    """

    records: tuple[AuditRecord, ...]
    skipped: tuple[tuple[int, str], ...] = ()


def _tokenize(body: str, *, expand_msg: bool = True) -> list[tuple[str, str]]:
    """Split a record body into (name, raw value) pairs.

    A value is a `"quoted"` string (to the next quote), a userspace `'...'` message (to the
    last quote: it is always the last field and its text is not escaped), or a word up to
    the next space. Words without `=` (as in AVC's `{ read }`) are not fields.
    """
    fields: list[tuple[str, str]] = []
    size = len(body)
    index = 0
    while index < size:
        if body[index] == " ":
            index += 1
            continue
        equals = index
        while equals < size and body[equals] not in " =":
            equals += 1
        if equals >= size or body[equals] == " ":
            index = equals
            continue
        name = body[index:equals]
        start = equals + 1
        opener = body[start : start + 1]
        if opener == '"':
            close = body.find('"', start + 1)
            end = size if close < 0 else close + 1
        elif opener == "'":
            close = body.rfind("'")
            end = size if close <= start else close + 1
        else:
            space = body.find(" ", start)
            end = size if space < 0 else space
        value = body[start:end]
        index = max(end, start + 1)
        if not name:
            continue
        fields.append((name, value))
        if expand_msg and name == "msg" and opener == "'":
            inner = value[1:-1] if len(value) >= 2 and value.endswith("'") else value[1:]
            fields.extend(_tokenize(inner, expand_msg=False))
    return fields


def _parse_line(line: str) -> AuditRecord | None:
    """Parse one line whose record header starts the line; None for anything else."""
    record_text = line.split(ENRICHED_SEPARATOR, 1)[0]
    match = _LOG_LINE.match(record_text)
    if match is not None:
        type_name = match["type"]
        node = match["node"] or ""
    else:
        match = _KMSG_LINE.match(record_text)
        if match is None:
            return None
        priority = match["pri"] or match["raw_pri"]
        if priority is not None and int(priority) >= _KERNEL_FACILITY_END:
            return None  # written to /dev/kmsg by a process, not printed by the kernel
        type_name = _type_name(int(match["number"]))
        node = ""
    body = record_text[match.end() :]
    return AuditRecord(
        type=type_name,
        time=match["time"],
        serial=int(match["serial"]),
        fields=tuple(_tokenize(body)),
        raw=line,
        node=node,
    )


def _lines(text: str) -> Iterator[str]:
    # Not str.splitlines(): it also splits on 0x1D, the ENRICHED separator, and 0x1C/0x1E.
    for line in text.split("\n"):
        yield line.removesuffix("\r")


def parse_log(text: str) -> ParsedLog:
    r"""Parse audit records from any of the text sources, keeping count of other lines.

    Accepts audit.log lines (RAW or ENRICHED, with or without `node=`), `ausearch --raw`
    output, and kernel log lines from `dmesg` or `/dev/kmsg`. Never raises.

    Args:
        text: The text; lines end with `\n` (a `\r` before it is dropped).

    Returns:
        The records and the skipped lines.
    """
    records: list[AuditRecord] = []
    skipped: list[tuple[int, str]] = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        record = _parse_line(line)
        if record is None:
            skipped.append((number, line))
        else:
            records.append(record)
    return ParsedLog(records=tuple(records), skipped=tuple(skipped))


def parse_records(text: str) -> list[AuditRecord]:
    """Parse the audit records in `text` (see `parse_log`); other lines are skipped.

    Args:
        text: audit.log lines, `ausearch --raw` output, or kernel log lines.

    Returns:
        The records, in the order read. Never raises.
    """
    return list(parse_log(text).records)


def group_events(records: Iterable[AuditRecord]) -> list[AuditEvent]:
    """Group records into events by (node, time, serial), in order of first appearance.

    auditd never writes the EOE record to disk, so an event is known only by its stamp.

    Args:
        records: Records, e.g. from `parse_records`.

    Returns:
        The events, each with its records in the order read.
    """
    groups: dict[tuple[str, str, int], list[AuditRecord]] = {}
    for record in records:
        groups.setdefault((record.node, record.time, record.serial), []).append(record)
    return [
        AuditEvent(time=stamp, serial=serial, records=tuple(members), node=node)
        for (node, stamp, serial), members in groups.items()
    ]


def is_marker(record: AuditRecord, marker: str) -> bool:
    """Whether `record` is the USER record that `auditctl -m MARKER` writes.

    The kernel logs a user message unescaped as `msg='text=MARKER ...'` (auditctl appends
    ` exe=... res=success`; a bare netlink message has nothing after the text).

    Args:
        record: Any record.
        marker: The marker text.

    Returns:
        True for the USER record carrying exactly this marker.
    """
    if record.type != "USER":
        return False
    message = record.get("msg")
    if message is None:
        return False
    expected = f"text={marker}"
    return message == expected or message.startswith(expected + " ")


def new_marker(prefix: str = "kmod-audit-marker") -> str:
    """Return a fresh marker text, `PREFIX-<16 hex digits>`, safe to write unquoted."""
    return f"{prefix}-{secrets.token_hex(8)}"


def _check_marker(marker: str) -> None:
    if _MARKER.fullmatch(marker) is None:
        msg = (
            f"marker {marker!r} is not usable: the kernel logs user messages unescaped, so a "
            "marker must be 1-200 characters of letters, digits and `_.:-`, starting with a "
            "letter or digit; use new_marker()"
        )
        raise ConfigurationError(msg)


# --------------------------------------------------------------------------------------
# auditd configuration


def auditd_settings(conf: str = AUDITD_CONF) -> dict[str, str]:
    """Read auditd.conf as `name = value` pairs (comments and blank lines skipped).

    Args:
        conf: The path of auditd.conf.

    Returns:
        The settings, names as written.

    Raises:
        ParseError: the file cannot be read.
    """
    try:
        text = Path(conf).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        msg = (
            f"cannot read it ({exc.strerror}); auditd.conf is usually readable by root only: "
            "run kmod-audit as root"
        )
        raise ParseError(conf, 0, "", msg) from None
    settings: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        name, _, value = stripped.partition("=")
        settings[name.strip()] = value.strip()
    return settings


def auditd_log_file(conf: str = AUDITD_CONF) -> str:
    """Return where auditd writes its log: `log_file` in auditd.conf, or auditd's default.

    Args:
        conf: The path of auditd.conf.

    Returns:
        The log path (/var/log/audit/audit.log when `log_file` is not set).

    Raises:
        ParseError: auditd.conf cannot be read.
    """
    return auditd_settings(conf).get("log_file") or DEFAULT_LOG_FILE


def auditd_config_path(pid: int) -> str:
    """Return the auditd.conf a running auditd uses: `-c DIR` on its command line, or /etc.

    Args:
        pid: auditd's pid (`auditctl -s` shows it).

    Returns:
        DIR/auditd.conf when auditd was started with `-c DIR`, else /etc/audit/auditd.conf
        (also when its command line cannot be read).
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return AUDITD_CONF
    for index, arg in enumerate(argv):
        if arg == b"-c" and index + 1 < len(argv) and argv[index + 1]:
            return os.path.join(os.fsdecode(argv[index + 1]), "auditd.conf")
    return AUDITD_CONF


# --------------------------------------------------------------------------------------
# Reading the log file from a position


@attrs.frozen(kw_only=True)
class LogPosition:
    """A point in a log file, taken before the stimuli.

    Attributes:
        path: The log's path (auditd reopens a new file there when it rotates).
        inode: The inode of the file at `path` then (0: there was no file).
        device: Its device.
        offset: The byte offset: what came before is never read.
        head: SHA-256 (hex) of the file's first min(offset, 4096) bytes, which tells the
            same file from a new one that got the inode number of a deleted one; empty
            when unknown (not checked).
        time: The wall clock then (CLOCK_REALTIME_COARSE, as the kernel stamps records),
            for the time-based fallbacks.
    """

    path: str
    inode: int
    device: int
    offset: int
    head: str = ""
    time: float = 0.0


@attrs.frozen(kw_only=True)
class KmsgPosition:
    """A point in the kernel log (`/dev/kmsg`), taken before the stimuli.

    Attributes:
        sequence: The sequence number the next kernel message will get.
        time: The wall clock then (CLOCK_REALTIME_COARSE).
        path: The kmsg device.
    """

    sequence: int
    time: float
    path: str = KMSG


@attrs.frozen(kw_only=True)
class JournalPosition:
    """A point in the journal: records stamped at or after `time` are new.

    Attributes:
        time: The wall clock when taken (CLOCK_REALTIME_COARSE).
    """

    time: float


#: Where reading starts, for each kind of record source.
Position: TypeAlias = LogPosition | KmsgPosition | JournalPosition


def position(path: str) -> LogPosition:
    """Note where the log at `path` ends now (take it before the stimuli).

    A missing file is position 0 of a file to come (auditd may not have created it yet).

    Args:
        path: The log file, e.g. `auditd_log_file()`.

    Returns:
        The position.

    Raises:
        TransportError: the file exists but cannot be read.
    """
    now = _coarse_now()
    try:
        with open(path, "rb") as handle:
            status = os.fstat(handle.fileno())
            head = _head(handle, status.st_size)
    except FileNotFoundError:
        return LogPosition(path=path, inode=0, device=0, offset=0, time=now)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    return LogPosition(
        path=path,
        inode=status.st_ino,
        device=status.st_dev,
        offset=status.st_size,
        head=head,
        time=now,
    )


_HEAD_BYTES: Final = 4096


def _head(handle: BinaryIO, offset: int) -> str:
    """SHA-256 of the first min(offset, 4096) bytes: the file's identity with its inode."""
    handle.seek(0)
    return hashlib.sha256(handle.read(min(offset, _HEAD_BYTES))).hexdigest()


def _is_start_file(handle: BinaryIO, start: LogPosition) -> bool:
    """Whether `handle` is the file `start` was taken on, still holding what preceded it."""
    status = os.fstat(handle.fileno())
    if start.inode == 0 or (status.st_ino, status.st_dev) != (start.inode, start.device):
        return False
    if status.st_size < start.offset:
        return False
    return not start.head or _head(handle, start.offset) == start.head


def _unreadable(path: str, exc: OSError) -> TransportError:
    msg = (
        f"cannot read the audit log {path} ({exc.strerror}); it is readable by root and "
        "auditd's log_group only: run kmod-audit as root, or read it with `ausearch --raw`"
    )
    return TransportError(msg)


def _replaced(start: LogPosition) -> TransportError:
    msg = (
        f"the audit log {start.path} (inode {start.inode}) was truncated or replaced after "
        f"the position was taken: it no longer holds the {start.offset} bytes that preceded "
        "it, so records written in between may be lost; run again (auditd rotates by "
        "renaming; do not let logrotate copytruncate its log)"
    )
    return TransportError(msg)


def _rotated_files(start: LogPosition) -> list[str]:
    """The files written after `start`, oldest first, that auditd's rotation renamed.

    Returns LOG.k (holding `start`'s inode), LOG.k-1, ..., LOG.1.
    """
    chain: list[str] = []
    for index in range(1, MAX_ROTATED + 1):
        candidate = f"{start.path}.{index}"
        try:
            status = os.stat(candidate)
        except FileNotFoundError:
            break
        except OSError as exc:
            raise _unreadable(candidate, exc) from exc
        chain.append(candidate)
        if (status.st_ino, status.st_dev) == (start.inode, start.device):
            return chain[::-1]
    msg = (
        f"the audit log {start.path} was rotated after the position was taken (inode "
        f"{start.inode}), and no rotated file {start.path}.N has that inode any more "
        f"(looked at {len(chain)}); records may be lost: raise num_logs/max_log_file in "
        "auditd.conf, or read with read_ausearch(), and run again"
    )
    raise TransportError(msg)


def _read_from(handle: BinaryIO, offset: int, *, complete: bool) -> tuple[bytes, int]:
    """Read `handle` from `offset` (a seek: nothing before it is read).

    A line cut by `offset` (written before the position) is dropped. With `complete`, a
    last line without its newline is left for the next read.

    Returns:
        The bytes and the offset after them.
    """
    handle.seek(max(offset - 1, 0))
    data = handle.read()
    if offset > 0:
        previous, data = data[:1], data[1:]
        if previous not in {b"\n", b""}:
            cut = data.find(b"\n")
            if cut < 0:
                return b"", offset
            data = data[cut + 1 :]
            offset += cut + 1
    if complete:
        last = data.rfind(b"\n")
        data = data[: last + 1]
    elif data and not data.endswith(b"\n"):
        data += b"\n"
    return data, offset + len(data)


def _read_chain(chain: list[str], start: LogPosition) -> bytes | None:
    """Read the rest of the oldest file, then the others; None if it is not start's file."""
    parts: list[bytes] = []
    for index, name in enumerate(chain):
        try:
            with open(name, "rb") as handle:
                if index == 0 and not _is_start_file(handle, start):
                    return None
                offset = start.offset if index == 0 else 0
                parts.append(_read_from(handle, offset, complete=False)[0])
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _unreadable(name, exc) from exc
    return b"".join(parts)


def _read_older(start: LogPosition) -> bytes:
    # A second rotation while the chain is opened moves the names: look again.
    for _attempt in range(3):
        data = _read_chain(_rotated_files(start), start)
        if data is not None:
            return data
    raise _replaced(start)


def read_new(start: LogPosition) -> tuple[str, LogPosition]:
    """Read the complete lines written to the log after `start`, and where they end.

    Seeks to `start.offset` (what came before is never read). When the file at `start.path`
    is no longer the one `start` was taken on, auditd has rotated it: the rest of the old
    file (LOG.k, found by inode), then LOG.k-1 ... LOG.1, then the new file from 0 are read.
    A last line still being written is left for the next call.

    Args:
        start: From `position()`, or the second item of an earlier `read_new()`.

    Returns:
        The text, and the position after it (pass it to the next call to read on).

    Raises:
        TransportError: the log cannot be read; or it was truncated, replaced, or rotated
            and its old file is gone, so that records may be lost.
    """
    try:
        handle = open(start.path, "rb")  # noqa: SIM115 - closed below, after the older files
    except FileNotFoundError:
        handle = None
    except OSError as exc:
        raise _unreadable(start.path, exc) from exc
    with contextlib.ExitStack() as stack:
        older = b""
        offset = 0
        if handle is not None:
            stack.enter_context(handle)
            status = os.fstat(handle.fileno())
            if (status.st_ino, status.st_dev) == (start.inode, start.device):
                if not _is_start_file(handle, start):
                    raise _replaced(start)
                offset = start.offset
            elif start.inode != 0:
                older = _read_older(start)
        elif start.inode != 0:
            older = _read_older(start)
        if handle is None:
            # No file at the path (not yet created, or mid-rotation): the next read takes
            # the new file from its start.
            following = attrs.evolve(start, inode=0, device=0, offset=0, head="")
            return older.decode("utf-8", errors="replace"), following
        data, end = _read_from(handle, offset, complete=True)
        following = attrs.evolve(
            start,
            inode=status.st_ino,
            device=status.st_dev,
            offset=end,
            head=_head(handle, end),
        )
        return (older + data).decode("utf-8", errors="replace"), following


# --------------------------------------------------------------------------------------
# The kernel log


def _kmsg_entries(path: str) -> Iterator[tuple[int, str]]:
    """Yield (sequence, line) for every message the kmsg ring still holds."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        msg = (
            f"cannot read the kernel log {path} ({exc.strerror}); it needs root (or "
            "kernel.dmesg_restrict=0): run kmod-audit as root"
        )
        raise TransportError(msg) from exc
    try:
        while True:
            try:
                chunk = os.read(fd, 16384)
            except BlockingIOError:
                return
            except BrokenPipeError:  # overwritten while we read: go on with the next one
                continue
            if not chunk:
                return
            line = chunk.decode("utf-8", errors="replace").split("\n", 1)[0]
            match = _KMSG_PREFIX.match(line)
            if match is not None:
                yield int(match["sequence"]), line
    finally:
        os.close(fd)


def kmsg_position(path: str = KMSG) -> KmsgPosition:
    """Note the kernel log's next sequence number (take it before the stimuli).

    Reads the ring buffer once (its size is fixed, so the cost is bounded).

    Args:
        path: The kmsg device.

    Returns:
        The position.

    Raises:
        TransportError: the kernel log cannot be read.
    """
    now = _coarse_now()
    last = -1
    for sequence, _line in _kmsg_entries(path):
        last = sequence
    return KmsgPosition(sequence=last + 1, time=now, path=path)


def _read_kmsg(start: KmsgPosition) -> str:
    lines: list[str] = []
    first: int | None = None
    for sequence, line in _kmsg_entries(start.path):
        if first is None:
            first = sequence
        if sequence >= start.sequence:
            lines.append(line)
    if first is not None and first > start.sequence:
        logger.warning(
            "the kernel log ring overwrote messages %d..%d since the position; records "
            "may be lost (raise log_buf_len or run auditd)",
            start.sequence,
            first - 1,
        )
        # Said in the text too, so that whoever judges it knows it is incomplete.
        lines.insert(0, f"{_OVERWRITTEN_NOTE} {start.sequence}..{first - 1}")
    return "".join(line + "\n" for line in lines)


_OVERWRITTEN_NOTE: Final = "kmod-audit: the kernel log ring overwrote messages"
# What the kernel prints when it drops audit records or the lines that carry them
# (kernel/audit.c: audit_log_lost(), audit_panic(); lib/ratelimit.c for printk_ratelimit(),
# which kauditd_printk_skb() calls for every record when no auditd runs).
_LOSS_LINE: Final = re.compile(
    r"(?P<what>\S{1,64}: \d{1,20} callbacks suppressed"
    r"|audit: (?:audit_lost=\d{1,20}[^\n]{0,120}|backlog limit exceeded|rate limit exceeded"
    r"|kauditd hold queue overflow|out of memory in audit_log_start))$"
)
_DMESG_STAMP: Final = re.compile(r"(?:<\d{1,3}>)?\[[^\]\n]{1,64}\] ?")


def losses(text: str) -> list[str]:
    """Say where the kernel log read after a position shows that records were lost.

    Without auditd the kernel prints each record with `printk_ratelimit()` (10 lines per
    5 s by default) and drops the rest, saying so later as `kauditd_printk_skb: N callbacks
    suppressed`; it says `audit: backlog limit exceeded`, `audit: rate limit exceeded` or
    `audit: audit_lost=N ...` when it drops records itself; and the ring buffer may
    overwrite messages before they are read (a gap in the sequence numbers). Only kernel
    messages count (what a process writes to /dev/kmsg has another facility).

    Args:
        text: Kernel log lines as `read_since` returns them for a `KmsgPosition` (or
            `dmesg` output); audit.log and journal text has none of these lines.

    Returns:
        One sentence per sign of loss, naming the line (empty when there is none).
    """
    found: list[str] = []
    previous: int | None = None
    for line in _lines(text):
        if line.startswith(_OVERWRITTEN_NOTE):
            found.append(f"{line.removeprefix('kmod-audit: ')} before they were read")
            continue
        prefix = _KMSG_PREFIX.match(line)
        if prefix is not None:
            sequence = int(prefix["sequence"])
            if previous is not None and sequence > previous + 1:
                found.append(
                    f"the kernel log ring overwrote messages {previous + 1}..{sequence - 1} "
                    "while they were read"
                )
            previous = sequence
            if int(prefix["pri"]) >= _KERNEL_FACILITY_END:
                continue
            message = line[prefix.end() :]
        else:
            stamp = _DMESG_STAMP.match(line)
            message = line[stamp.end() :] if stamp is not None else line
        loss = _LOSS_LINE.match(message)
        if loss is not None:
            found.append(f"the kernel log says `{loss['what']}`")
    return found


# --------------------------------------------------------------------------------------
# Fallbacks, ausearch and journald


def _run(argv: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "LC_ALL": "C"},
        )
    except FileNotFoundError:
        msg = f"{argv[0]} was not found; install {what}, or read the log file directly"
        raise TransportError(msg) from None
    except subprocess.TimeoutExpired as exc:
        msg = (
            f"`{shlex.join(argv)}` did not finish within {timeout:g} s; read the log "
            "directly (read_since) or pass a later start"
        )
        raise TransportError(msg) from exc
    except OSError as exc:
        msg = f"could not run `{shlex.join(argv)}`: {exc}"
        raise TransportError(msg) from exc


def read_ausearch(
    since: LogPosition | float,
    *,
    path: str | None = None,
    ausearch: str = "ausearch",
    timeout: float = SUBPROCESS_TIMEOUT,
) -> str:
    r"""Read raw records stamped at or after `since` with `ausearch --raw`.

    For when the log cannot be read directly. `ausearch --start` takes local time to the
    second (in the C locale: `MM/DD/YY HH:MM:SS`); the exact cut to the millisecond is made
    here. ausearch reads every file it searches from the start (about 21 MB/s), so prefer
    `read_since()`.

    Args:
        since: A `LogPosition` (its time, and its path unless `path` is given), or a time
            in seconds since the epoch.
        path: The file to search (`-if`); None searches auditd's own logs (all rotated
            files of the `log_file` in /etc/audit/auditd.conf).
        ausearch: The ausearch program.
        timeout: Seconds to wait for ausearch.

    Returns:
        The matching records' lines (as ausearch prints them), each ending with `\n`.

    Raises:
        TransportError: ausearch is missing, failed, or took too long.
    """
    if isinstance(since, LogPosition):
        start = since.time
        path = path if path is not None else since.path
    else:
        start = since
    moment = time.localtime(int(start))
    argv = [
        ausearch,
        "--raw",
        "--start",
        time.strftime("%m/%d/%y", moment),
        time.strftime("%H:%M:%S", moment),
    ]
    argv += ["-if", path] if path is not None else ["--input-logs"]
    proc = _run(argv, timeout, "the audit userspace (Debian: apt-get install auditd)")
    stdout = proc.stdout.decode("utf-8", errors="replace")
    stderr = proc.stderr.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        # No match: status 1, and `<no matches>` on stderr (nothing at all with --raw).
        if proc.returncode == 1 and stderr.strip() in {"", "<no matches>"}:
            return ""
        msg = f"`{shlex.join(argv)}` failed: {stderr.strip() or 'no error text'}"
        raise CommandFailed(
            msg, command=shlex.join(argv), status=proc.returncode, output=stdout + stderr
        )
    floor = int(start * 1000)
    kept: list[str] = []
    for line in _lines(stdout):
        record = _parse_line(line)
        if record is not None and record.milliseconds >= floor:
            kept.append(line + "\n")
    return "".join(kept)


def _journal_value(value: object) -> str | None:
    """A journal JSON field value as text: a string, bytes as a number array, or a list."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if value and all(isinstance(item, int) and 0 <= item < 256 for item in value):
            return bytes(value).decode("utf-8", errors="replace")
        for item in value:  # a field set several times: the first value
            text = _journal_value(item)
            if text is not None:
                return text
    return None


def _journal_record(entry: dict[str, object]) -> AuditRecord | None:
    number_text = _journal_value(entry.get("_AUDIT_TYPE"))
    serial_text = _journal_value(entry.get("_AUDIT_ID"))
    message = _journal_value(entry.get("MESSAGE"))
    stamp_text = _journal_value(entry.get("_SOURCE_REALTIME_TIMESTAMP")) or _journal_value(
        entry.get("__REALTIME_TIMESTAMP")
    )
    if number_text is None or serial_text is None or message is None or stamp_text is None:
        return None
    if not (
        _DECIMAL.fullmatch(number_text)
        and _DECIMAL.fullmatch(serial_text)
        and _DECIMAL.fullmatch(stamp_text)
    ):
        return None
    number = int(number_text)
    # journald names a type it does not know AUDITnnnn; auditd writes UNKNOWN[nnnn].
    name = MESSAGE_NAMES.get(number) or _journal_value(entry.get("_AUDIT_TYPE_NAME"))
    if name is None or not _TYPE_NAME.fullmatch(name) or _JOURNAL_NUMBERED.fullmatch(name):
        name = _type_name(number)
    micros = int(stamp_text)
    # journald's MESSAGE is the type name (AUDITnnnn when it has none), a space, the body.
    body = message.partition(" ")[2]
    stamp = f"{micros // 1_000_000}.{micros // 1000 % 1000:03d}:{serial_text}"
    return _parse_line(f"type={name} msg=audit({stamp}): {body}")


def parse_journal(text: str) -> ParsedLog:
    """Parse `journalctl -o json` output (one JSON object a line) into audit records.

    Entries without `_AUDIT_TYPE`, `_AUDIT_ID`, a time or a `MESSAGE` (journalctl prints a
    field over 4096 bytes as null without `--all`) are skipped. Each record's `raw` is the
    audit.log line rebuilt from the entry. Never raises.

    Args:
        text: The JSON lines.

    Returns:
        The records and the skipped lines.
    """
    records: list[AuditRecord] = []
    skipped: list[tuple[int, str]] = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            entry = None
        record = _journal_record(entry) if isinstance(entry, dict) else None
        if record is None:
            skipped.append((number, line))
        else:
            records.append(record)
    return ParsedLog(records=tuple(records), skipped=tuple(skipped))


def read_journal(
    since: JournalPosition | float,
    *,
    journalctl: str = "journalctl",
    timeout: float = SUBPROCESS_TIMEOUT,
) -> list[AuditRecord]:
    """Read the audit records journald stored at or after `since`.

    Runs `journalctl _TRANSPORT=audit --since @SECONDS -o json --all` and cuts to the
    millisecond here. journald sees audit records only when it collects them
    (systemd-journald-audit.socket); it could not be exercised live where this was
    written (no systemd), only on journald-shaped JSON.

    Args:
        since: A `JournalPosition`, or a time in seconds since the epoch.
        journalctl: The journalctl program.
        timeout: Seconds to wait for journalctl.

    Returns:
        The records, oldest first.

    Raises:
        TransportError: journalctl is missing, failed, or took too long.
    """
    start = since.time if isinstance(since, JournalPosition) else since
    argv = [
        journalctl,
        "_TRANSPORT=audit",
        "--since",
        f"@{int(start)}",
        "--output",
        "json",
        "--all",
        "--no-pager",
        "--quiet",
    ]
    proc = _run(argv, timeout, "systemd (journalctl)")
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", errors="replace")
        msg = (
            f"`{shlex.join(argv)}` failed: {stderr.strip() or 'no error text'}; check that "
            "journald runs and that this user may read the system journal (root or group "
            "systemd-journal/adm)"
        )
        raise CommandFailed(msg, command=shlex.join(argv), status=proc.returncode, output=stderr)
    floor = int(start * 1000)
    parsed = parse_journal(proc.stdout.decode("utf-8", errors="replace"))
    return [record for record in parsed.records if record.milliseconds >= floor]


# --------------------------------------------------------------------------------------
# One interface over the sources


def read_since(start: Position) -> str:
    """Return the records written after `start`, as audit.log-style lines.

    Args:
        start: From `position()` (a log file), `kmsg_position()`, or a `JournalPosition`.

    Returns:
        The text (complete lines only); parse it with `parse_records`.

    Raises:
        TransportError: the source cannot be read (see `read_new`, `read_journal`).
    """
    if isinstance(start, LogPosition):
        return read_new(start)[0]
    if isinstance(start, KmsgPosition):
        return _read_kmsg(start)
    return "".join(record.raw + "\n" for record in read_journal(start))


def _where(start: Position) -> str:
    if isinstance(start, LogPosition):
        return f"the audit log {start.path} (from byte {start.offset}, inode {start.inode})"
    if isinstance(start, KmsgPosition):
        return f"the kernel log {start.path} (from message {start.sequence})"
    return "the journal (journalctl _TRANSPORT=audit)"


@attrs.define
class MarkerTimeout(TransportError):
    """The marker record did not reach the record source within the deadline.

    Attributes:
        source: Where we looked (log path and position).
        marker: The marker text waited for.
        timeout: The deadline in seconds.
        tail: The tail of what was read after the position.
    """

    source: str = ""
    marker: str = ""
    timeout: float = 0.0
    tail: str = ""

    def __str__(self) -> str:
        """Return the message with the source, marker, deadline and what was read."""
        return (
            f"{self.message}\n  waited {self.timeout:g} s for: USER text={self.marker} in "
            f"{self.source}\n  read after the position (tail): {self.tail[-2000:]!r}"
        )


def wait_for_marker(
    start: Position,
    marker: str,
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Poll the source after `start` until the USER record carrying `marker` is there.

    Write the marker after the stimuli (`auditctl -m MARKER` or
    `netlink.user_message(MARKER)`): once it is in the log, so is every record the kernel
    emitted before it. Polls every `interval` seconds until `timeout`; a log file is read
    incrementally (each poll reads only the new bytes).

    Args:
        start: Where reading starts (taken before the stimuli).
        marker: The marker text (letters, digits, `_.:-`; see `new_marker`).
        timeout: Seconds to wait in all.
        interval: Seconds between polls.
        sleep: The sleep function (tests pass a fake).

    Returns:
        Everything read after `start`, up to and including the marker's line at least.

    Raises:
        ConfigurationError: the marker has characters the kernel would not log verbatim.
        MarkerTimeout: the marker did not appear in time.
        TransportError: the source cannot be read.
    """
    _check_marker(marker)
    deadline = time.monotonic() + timeout
    parts: list[str] = []
    cursor = start
    while True:
        if isinstance(cursor, LogPosition):
            new, cursor = read_new(cursor)
            parts.append(new)
        else:
            new = read_since(cursor)
            parts = [new]
        if marker in new and any(is_marker(r, marker) for r in parse_records(new)):
            return "".join(parts)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            where = _where(start)
            msg = (
                f"no USER record with text={marker} reached {where} within {timeout:g} s; "
                "check that auditd is running (auditctl -s shows its pid) and writes this "
                "log (log_file in auditd.conf), that audit is enabled (auditctl -e 1), and "
                "that `lost` in auditctl -s did not grow"
            )
            raise MarkerTimeout(
                msg, source=where, marker=marker, timeout=timeout, tail="".join(parts)
            )
        sleep(min(interval, remaining))


SourceKind: TypeAlias = Literal["auditd", "kmsg", "journal"]


@attrs.frozen(kw_only=True)
class RecordSource:
    """Where this machine's audit records can be read, found from auditd's state.

    Attributes:
        kind: `auditd` (its log file), `kmsg` (the kernel log, when no auditd runs) or
            `journal` (journald, when the kernel log cannot be read).
        path: The log file, the kmsg device, or `journalctl`.
        problem: Why records cannot be read from it, or None.
    """

    kind: SourceKind
    path: str
    problem: str | None = None

    @classmethod
    def discover(cls, *, auditd_pid: int) -> RecordSource:
        """Find the record source: auditd's log if it runs, else the kernel log.

        The log path comes from the auditd.conf that auditd was started with (`-c DIR`).

        Args:
            auditd_pid: auditd's pid from the kernel's audit status (0: none).

        Returns:
            The source; `problem` says why it cannot be used, when it cannot.
        """
        if auditd_pid > 0:
            conf = auditd_config_path(auditd_pid)
            try:
                settings = auditd_settings(conf)
            except ParseError as exc:
                return cls(kind="auditd", path=DEFAULT_LOG_FILE, problem=str(exc))
            path = settings.get("log_file") or DEFAULT_LOG_FILE
            if (
                settings.get("write_logs", "yes").lower() == "no"
                or settings.get("log_format", "").upper() == "NOLOG"
            ):
                problem = (
                    f"auditd (pid {auditd_pid}) writes no log ({conf}: write_logs = no or "
                    "log_format = NOLOG); set write_logs = yes to read records from it"
                )
                return cls(kind="auditd", path=path, problem=problem)
            if not os.access(path, os.R_OK) and os.path.exists(path):
                problem = (
                    f"cannot read auditd's log {path}; run as root or as a member of "
                    f"log_group ({settings.get('log_group', 'root')})"
                )
                return cls(kind="auditd", path=path, problem=problem)
            return cls(kind="auditd", path=path)
        if os.access(KMSG, os.R_OK):
            return cls(kind="kmsg", path=KMSG)
        journalctl = shutil.which("journalctl")
        if journalctl is not None:
            return cls(kind="journal", path=journalctl)
        problem = (
            f"no auditd runs, {KMSG} cannot be read and there is no journalctl: nowhere to "
            "read audit records from; start auditd or run as root"
        )
        return cls(kind="kmsg", path=KMSG, problem=problem)

    def position(self) -> Position:
        """Note where the source ends now (take it before the stimuli).

        Raises:
            TransportError: the source cannot be read.
        """
        if self.kind == "auditd":
            return position(self.path)
        if self.kind == "kmsg":
            return kmsg_position(self.path)
        return JournalPosition(time=_coarse_now())

    def read_since(self, start: Position) -> str:
        """Return the records written after `start` as audit.log-style lines.

        Raises:
            TransportError: the source cannot be read.
        """
        if isinstance(start, JournalPosition):
            records = read_journal(start, journalctl=self.path)
            return "".join(record.raw + "\n" for record in records)
        return read_since(start)

    def wait_for(self, start: Position, marker: str, timeout: float) -> bool:
        """Whether the USER record carrying `marker` appears after `start` within `timeout`.

        Raises:
            ConfigurationError: the marker is not usable (see `wait_for_marker`).
            TransportError: the source cannot be read.
        """
        try:
            wait_for_marker(start, marker, timeout=timeout)
        except MarkerTimeout:
            return False
        return True

    def describe(self) -> str:
        """Say where records are read from, for reports."""
        if self.kind == "auditd":
            return f"auditd log {self.path}"
        if self.kind == "kmsg":
            return f"kernel log {self.path} (no auditd; the kernel rate-limits audit lines there)"
        return "journald (journalctl _TRANSPORT=audit)"
