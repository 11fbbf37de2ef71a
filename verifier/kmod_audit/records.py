"""Audit records: parse them from any source's text, group them into events, find markers.

Pure: reading the sources is `logs`.

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
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Iterator
from typing import Final

import attrs

from ._syscall_tables import MESSAGE_TYPES
from .errors import ConfigurationError
from .rules import KEY_SEPARATOR

__all__ = [
    "ENCODED_FIELDS",
    "ENRICHED_SEPARATOR",
    "KMSG_PREFIX",
    "MESSAGE_NAMES",
    "OVERWRITTEN_NOTE",
    "AuditEvent",
    "AuditRecord",
    "ParsedLog",
    "check_marker",
    "group_events",
    "is_marker",
    "log_lines",
    "losses",
    "new_marker",
    "parse_journal",
    "parse_line",
    "parse_log",
    "parse_records",
]

ENRICHED_SEPARATOR: Final = "\x1d"

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
KMSG_PREFIX: Final = re.compile(r"^(?P<pri>\d{1,3}),(?P<sequence>\d{1,20}),\d{1,20},[^;]*;")
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


def parse_line(line: str) -> AuditRecord | None:
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


def log_lines(text: str) -> Iterator[str]:
    """The lines of a log text, each without its line end (and a CR before it).

    Not str.splitlines(): it also splits on 0x1D, the ENRICHED separator, and 0x1C/0x1E.
    """
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
    for number, line in enumerate(log_lines(text), start=1):
        if not line.strip():
            continue
        record = parse_line(line)
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


def check_marker(marker: str) -> None:
    """Refuse a marker the kernel would not log as one word (ConfigurationError)."""
    if _MARKER.fullmatch(marker) is None:
        msg = (
            f"marker {marker!r} is not usable: the kernel logs user messages unescaped, so a "
            "marker must be 1-200 characters of letters, digits and `_.:-`, starting with a "
            "letter or digit; use new_marker()"
        )
        raise ConfigurationError(msg)


OVERWRITTEN_NOTE: Final = "kmod-audit: the kernel log ring overwrote messages"
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
    for line in log_lines(text):
        if line.startswith(OVERWRITTEN_NOTE):
            found.append(f"{line.removeprefix('kmod-audit: ')} before they were read")
            continue
        prefix = KMSG_PREFIX.match(line)
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
    return parse_line(f"type={name} msg=audit({stamp}): {body}")


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
    for number, line in enumerate(log_lines(text), start=1):
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
