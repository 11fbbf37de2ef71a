"""Where audit records come from: auditd's log, the kernel log, journald, ausearch.

Parsing them is `records`; this module reads the sources, and only what is new.

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
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Final, Literal, TypeAlias

import attrs

from ._verbose import logger
from .errors import CommandFailed, ParseError, TransportError
from .records import (
    KMSG_PREFIX,
    OVERWRITTEN_NOTE,
    AuditRecord,
    check_marker,
    is_marker,
    log_lines,
    parse_journal,
    parse_line,
    parse_records,
)

__all__ = [
    "AUDITD_CONF",
    "DEFAULT_LOG_FILE",
    "KMSG",
    "JournalPosition",
    "KmsgPosition",
    "LogPosition",
    "MarkerTimeout",
    "Position",
    "RecordSource",
    "auditd_config_path",
    "auditd_log_file",
    "auditd_settings",
    "kmsg_position",
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
# auditd's num_logs is at most 999: its rotated files are LOG.1 ... LOG.998.
MAX_ROTATED: Final = 999
SUBPROCESS_TIMEOUT: Final = 120.0
# CLOCK_REALTIME_COARSE (Linux): the clock the kernel stamps audit records with.
_CLOCK_REALTIME_COARSE: Final = 5


def _coarse_now() -> float:
    """The wall clock as the kernel stamps records: never ahead of a later record's time."""
    try:
        return time.clock_gettime(_CLOCK_REALTIME_COARSE)
    except OSError:  # not Linux: the fine clock, minus a tick of slack
        return time.time() - 0.01


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
            match = KMSG_PREFIX.match(line)
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
        lines.insert(0, f"{OVERWRITTEN_NOTE} {start.sequence}..{first - 1}")
    return "".join(line + "\n" for line in lines)


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
    for line in log_lines(stdout):
        record = parse_line(line)
        if record is not None and record.milliseconds >= floor:
            kept.append(line + "\n")
    return "".join(kept)


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
    check_marker(marker)
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
