"""Audit records and their sources: parsing, grouping, reading after a position, markers.

Parser goldens come from logs captured for real on this machine (see
`tests/fixtures/logs/README.md`; regenerate the goldens with
`KMOD_AUDIT_UPDATE_GOLDENS=1 pytest tests/test_logs.py`). The `root` tests start a private
auditd as a child of the test (stopped by pid) or read the kernel log, and restore the
host's audit state through `host_audit`. journald could not be exercised live here (no
systemd): its parser is tested on journald-shaped JSON and `read_journal` on a fake
journalctl.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _support import FIXTURES, Auditd, HostAudit, audit_status, auditctl, poll
from kmod_audit import logs as logs_module
from kmod_audit.errors import CommandFailed, ConfigurationError, ParseError, TransportError
from kmod_audit.logs import (
    KmsgPosition,
    LogPosition,
    MarkerTimeout,
    RecordSource,
    auditd_config_path,
    auditd_log_file,
    kmsg_position,
    position,
    read_ausearch,
    read_journal,
    read_new,
    read_since,
    wait_for_marker,
)
from kmod_audit.records import (
    AuditRecord,
    ParsedLog,
    group_events,
    is_marker,
    losses,
    new_marker,
    parse_journal,
    parse_log,
    parse_records,
)

LOGS = FIXTURES / "logs"
CASES = sorted([*LOGS.glob("*.log"), *LOGS.glob("*.jsonl")])
UPDATE = os.environ.get("KMOD_AUDIT_UPDATE_GOLDENS") == "1"
RULE = "-a always,exit -F arch=b64 -S init_module -F auid>=1000 -F auid!=unset -k module_chng\n"
INIT_MODULE = 175
X86_64 = 0xC000003E
ENOSYS = -38

# Runs as its own process, so that its pid is the one in the record: set the login uid
# (allowed once while unset), then call the syscall given (ENOSYS here, still audited).
STIMULUS = """
import ctypes, sys
with open("/proc/self/loginuid", "w") as handle:
    handle.write("1000")
ctypes.CDLL(None, use_errno=True).syscall(int(sys.argv[1]), 0, 0, 0)
"""


def _parse(path: Path) -> ParsedLog:
    text = path.read_text(encoding="utf-8")
    return parse_journal(text) if path.suffix == ".jsonl" else parse_log(text)


def _golden(parsed: ParsedLog) -> str:
    """One JSON document, one event or record a line, so that diffs stay readable."""

    def dump(value: object) -> str:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)

    events = [
        dump(
            {
                "node": e.node,
                "time": e.time,
                "serial": e.serial,
                "types": [r.type for r in e.records],
            }
        )
        for e in group_events(parsed.records)
    ]
    records = []
    for record in parsed.records:
        decoded: dict[str, str | None] = {}
        for name, raw in record.fields:
            value = record.get(name)
            if name not in decoded and value != raw:
                decoded[name] = value
        item: dict[str, object] = {
            "type": record.type,
            "time": record.time,
            "serial": record.serial,
            "node": record.node,
            "fields": [list(field) for field in record.fields],
            "decoded": decoded,
        }
        if any(name == "key" for name, _ in record.fields):
            item["keys"] = list(record.keys)
        records.append(dump(item))
    return (
        "{\n"
        f' "skipped": {dump([list(s) for s in parsed.skipped])},\n'
        ' "events": [\n  ' + ",\n  ".join(events) + "\n ],\n"
        ' "records": [\n  ' + ",\n  ".join(records) + "\n ]\n}\n"
    )


def _fixture_records(name: str) -> list[AuditRecord]:
    return list(_parse(LOGS / name).records)


def _syscall(records: list[AuditRecord], number: int) -> AuditRecord:
    found = [r for r in records if r.type == "SYSCALL" and r.number("syscall") == number]
    assert 1 == len(found), f"expected one SYSCALL {number}, found {len(found)}"
    return found[0]


def _same(record: AuditRecord) -> tuple[object, ...]:
    return (record.type, record.time, record.serial, record.fields)


class TestGoldens:
    """Every fixture log parses to its golden."""

    @pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
    def test_matches_golden(self, path: Path) -> None:
        """The records, fields, decoded values, keys, events and skipped lines are the golden's."""
        actual = _golden(_parse(path))
        golden = path.with_suffix(".json")
        if UPDATE:
            golden.write_text(actual, encoding="utf-8")
        assert golden.read_text(encoding="utf-8") == actual
        json.loads(actual)


class TestAuditRecord:
    """Field values: unquoted, hex-decoded, numbers by base, keys split."""

    def test_quoted_key(self) -> None:
        """A printable key is quoted in the log and comes back unquoted."""
        record = _syscall(_fixture_records("auditd-enriched.log"), INIT_MODULE)
        assert ("module_chng", ("module_chng",)) == (record.get("key"), record.keys)

    def test_multiple_keys_are_hex_and_split(self) -> None:
        """Two keys are 0x01-joined and hex-encoded; `keys` splits them."""
        record = _syscall(_fixture_records("auditd-enriched.log"), 176)
        assert "6D6F64756C65735F61016D6F64756C65735F62" == dict(record.fields)["key"]
        assert "modules_a\x01modules_b" == record.get("key")
        assert ("modules_a", "modules_b") == record.keys

    @pytest.mark.parametrize(
        ("number", "key"),
        [(178, 'odd key "q"'), (313, "kmod_é")],
        ids=["space-and-quotes", "non-ascii"],
    )
    def test_odd_key_is_hex_decoded(self, number: int, key: str) -> None:
        """A key with a space, quotes or non-ASCII bytes is hex in the log and decoded here."""
        record = _syscall(_fixture_records("auditd-enriched.log"), number)
        assert (key,) == record.keys

    def test_null_key_is_no_key(self) -> None:
        """`key=(null)` (a rule without key) gives no keys and no value."""
        record = _syscall(_fixture_records("auditd-enriched.log"), 174)
        assert ("(null)", None, ()) == (dict(record.fields)["key"], record.get("key"), record.keys)

    def test_quoted_null_is_a_real_key(self) -> None:
        """A key literally named `(null)` is quoted, so it is a key, unlike bare (null)."""
        (record,) = parse_records('type=SYSCALL msg=audit(1.001:2): syscall=175 key="(null)"\n')
        assert ("(null)",) == record.keys

    def test_numbers_by_base(self) -> None:
        """The arch and a0-a3 are hex, exit and the ids decimal (exit may be negative)."""
        record = _syscall(_fixture_records("auditd-enriched.log"), INIT_MODULE)
        actual = tuple(
            record.number(name) for name in ("arch", "syscall", "exit", "auid", "a0", "items")
        )
        assert (X86_64, INIT_MODULE, ENOSYS, 1000, 0, 0) == actual
        assert (None, None) == (record.number("comm"), record.number("no_such_field"))

    def test_exe_and_proctitle_decoded(self) -> None:
        """Quoted exe is unquoted; proctitle (always hex) is decoded, NULs between args."""
        records = _fixture_records("auditd-enriched.log")
        daemon = group_events(records)[1]
        assert daemon.syscall is not None
        assert "/usr/sbin/auditd" == daemon.syscall.get("exe")
        proctitle = daemon.record("PROCTITLE")
        assert proctitle is not None
        assert ["auditd", "-n", "-c"] == (proctitle.get("proctitle") or "").split("\0")[:3]

    def test_user_message_fields(self) -> None:
        """The fields inside `msg='...'` of a USER record follow the `msg` field."""
        (user,) = [r for r in _fixture_records("auditd-enriched.log") if r.type == "USER"]
        names = [name for name, _ in user.fields]
        assert ["pid", "uid", "auid", "ses", "msg", "text", "exe"] == names[:7]
        assert "kmod-audit-fixture-auditd-enriched" == user.get("text")
        assert (user.get("msg") or "").startswith("text=kmod-audit-fixture-auditd-enriched ")
        assert is_marker(user, "kmod-audit-fixture-auditd-enriched")
        assert not is_marker(user, "kmod-audit-fixture")

    def test_node_prefix(self) -> None:
        """`node=NAME` is kept and keeps equal stamps of two machines apart."""
        text = (
            "node=alpha type=SYSCALL msg=audit(5.000:7): syscall=175 key=(null)\n"
            "node=beta type=SYSCALL msg=audit(5.000:7): syscall=176 key=(null)\n"
        )
        events = group_events(parse_records(text))
        assert [("alpha", 175), ("beta", 176)] == [
            (e.node, e.syscall.number("syscall") if e.syscall else None) for e in events
        ]

    def test_cut_line(self) -> None:
        """A line cut inside a quoted value still parses; the value is what is there."""
        (record,) = parse_records('type=SYSCALL msg=audit(1.5:9): syscall=1 comm="pyth')
        assert ("pyth", "1.5", 1500) == (record.get("comm"), record.time, record.milliseconds)


class TestSources:
    """The same records, whichever source wrote them."""

    def test_enriched_and_ausearch_agree(self) -> None:
        """audit.log (ENRICHED) and `ausearch --raw` of it give the same records."""
        assert [_same(r) for r in _fixture_records("auditd-enriched.log")] == [
            _same(r) for r in _fixture_records("ausearch-raw.log")
        ]

    def test_raw_and_enriched_have_the_same_shape(self) -> None:
        """RAW and ENRICHED logs of the same stimuli give the same types and field names."""

        def shape(name: str) -> list[tuple[str, tuple[str, ...]]]:
            return [(r.type, tuple(n for n, _ in r.fields)) for r in _fixture_records(name)]

        assert shape("auditd-enriched.log") == shape("auditd-raw.log")

    def test_enriched_suffix_is_cut(self) -> None:
        """Nothing after the 0x1D separator becomes a field; `raw` keeps the whole line."""
        record = _syscall(_fixture_records("auditd-enriched.log"), INIT_MODULE)
        assert "key" == record.fields[-1][0]
        assert 'SYSCALL=init_module AUID="' in record.raw

    def test_kmsg_types_become_names(self) -> None:
        """Lines of dmesg and /dev/kmsg give named types; kernel chatter is skipped, counted."""
        dmesg = _parse(LOGS / "kmsg-dmesg.log")
        devkmsg = _parse(LOGS / "kmsg-devkmsg.log")
        expected = ["LOGIN", "SYSCALL", "PROCTITLE", "SYSCALL", "PROCTITLE", "USER"]
        assert expected == [r.type for r in dmesg.records]
        assert [_same(r) for r in dmesg.records] == [_same(r) for r in devkmsg.records]
        assert [1, 2] == [line for line, _ in dmesg.skipped]
        assert ("module_chng",) == _syscall(list(dmesg.records), INIT_MODULE).keys

    def test_journal_matches_kmsg(self) -> None:
        """The JSON journald makes of the same records gives what the kernel printed."""
        journal = _parse(LOGS / "journald.jsonl")
        kmsg = _fixture_records("kmsg-dmesg.log")
        assert [_same(r) for r in kmsg] == [_same(r) for r in journal.records[: len(kmsg)]]
        assert [1, 9] == [line for line, _ in journal.skipped]

    def test_journal_odd_entries(self) -> None:
        """A byte-array MESSAGE is decoded; a type journald cannot name is UNKNOWN[n]."""
        records = _parse(LOGS / "journald.jsonl").records
        assert "tab\there" == records[-2].get("text")
        assert ("UNKNOWN[1399]", "future") == (records[-1].type, records[-1].get("op"))

    def test_skipped_lines_are_counted(self) -> None:
        """Lines that are not records are skipped and listed; blank lines are not listed."""
        text = (
            "----\n"
            "time->Sun Nov 22 04:01:04 2026\n"
            "\n"
            "type=USER msg=audit(1.002:3): pid=1 msg='text=m'\r\n"
            "type=SYSCALL msg=audit(oops): arch=c000003e\n"
            "audit: type=1300 audit(1.003:4): syscall=175 key=(null)\x1c x\n"
        )
        parsed = parse_log(text)
        assert ["USER", "SYSCALL"] == [r.type for r in parsed.records]
        assert [1, 2, 5] == [line for line, _ in parsed.skipped]
        assert "m" == parsed.records[0].get("text")


# The text of a user message imitating a SYSCALL record (the kernel logs it unescaped).
FORGED = (
    "type=SYSCALL msg=audit(1795316028.008:6): arch=c000003e syscall=175 success=no "
    'exit=-38 pid=42 auid=1000 uid=0 key="module_chng"'
)
USER_BODY = f"pid=7 uid=0 auid=4294967295 ses=4294967295 msg='text=x {FORGED}'"


class TestOnlyRecordHeaders:
    """A record is known by the header that starts its line, never by text inside it."""

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            (f"type=USER msg=audit(1795316030.001:9): {USER_BODY}", ["USER"]),
            (
                f'type=USER msg=audit(1795316030.001:9): {USER_BODY}\x1dUID="root"',
                ["USER"],
            ),
            (f"node=web1 type=USER msg=audit(1795316030.001:9): {USER_BODY}", ["USER"]),
            (
                f"5,1443,4668540849,-;audit: type=1005 audit(1795316030.001:9): {USER_BODY}",
                ["USER"],
            ),
            (f"[ 4668.540849] audit: type=1005 audit(1795316030.001:9): {USER_BODY}", ["USER"]),
            (f"audit: type=1005 audit(1795316030.001:9): {USER_BODY}", ["USER"]),
            (f"<5>[ 4668.540849] audit: type=1005 audit(1795316030.001:9): {USER_BODY}", ["USER"]),
            (
                f"<5>[ 4668.540849] audit: type=1300 audit(1795316028.008:6): {FORGED[40:]}",
                ["SYSCALL"],
            ),
            (f"something else {FORGED}", []),
            (f"kmod-audit: {FORGED}", []),
            (f"12,1444,4668540850,-;audit: type=1300 audit(1795316028.008:6): {FORGED[40:]}", []),
            (f"<12>audit: type=1300 audit(1795316028.008:6): {FORGED[40:]}", []),
            (f"12,1444,4668540850,-;{FORGED}", []),
        ],
        ids=[
            "auditd-raw",
            "auditd-enriched",
            "auditd-node",
            "devkmsg",
            "dmesg",
            "dmesg-notime",
            "dmesg-raw",
            "dmesg-raw-real-syscall",
            "text-before-header",
            "prefixed-header",
            "devkmsg-from-a-process",
            "dmesg-raw-from-a-process",
            "devkmsg-auditd-shape-from-a-process",
        ],
    )
    def test_header_at_the_start_only(self, line: str, expected: list[str]) -> None:
        """Each source's line is the record its header says; a header inside text is none."""
        assert expected == [r.type for r in parse_records(line)]

    def test_forged_user_message_stays_a_user_record(self) -> None:
        """The USER record keeps its own stamp; no SYSCALL event appears for pid 42."""
        (record,) = parse_records(f"type=USER msg=audit(1795316030.001:9): {USER_BODY}")
        assert ("1795316030.001", 9, "7") == (record.time, record.serial, record.get("pid"))
        assert [None] == [e.syscall for e in group_events([record])]

    def test_journal_entry_with_forged_text(self) -> None:
        """A journald USER entry whose message imitates a SYSCALL record is a USER record."""
        entry = {
            "_AUDIT_TYPE": "1005",
            "_AUDIT_ID": "9",
            "_SOURCE_REALTIME_TIMESTAMP": "1795316030001000",
            "MESSAGE": f"USER {FORGED} {USER_BODY}",
        }
        parsed = parse_journal(json.dumps(entry))
        assert [("USER", 9)] == [(r.type, r.serial) for r in parsed.records]

    def test_ausearch_output_with_forged_text(self) -> None:
        """`ausearch --raw` lines are read like audit.log: the USER record only."""
        text = f"----\ntype=USER msg=audit(1795316030.001:9): {USER_BODY}\n"
        assert ["USER"] == [r.type for r in parse_log(text).records]


class TestLosses:
    """What the kernel log says about records it dropped (the evidence is then incomplete)."""

    @pytest.mark.parametrize("name", ["kmsg-devkmsg.log", "kmsg-dmesg.log"])
    def test_captured_rate_limit_line(self, name: str) -> None:
        """The captured `kauditd_printk_skb: 41 callbacks suppressed` line is a loss."""
        text = (LOGS / name).read_text()
        assert ["the kernel log says `kauditd_printk_skb: 41 callbacks suppressed`"] == (
            losses(text)
        )

    def test_audit_log_has_none(self) -> None:
        """The auditd log holds records only: no loss is read into it."""
        assert [] == losses((LOGS / "auditd-enriched.log").read_text())

    def test_ring_overwritten_since_the_position(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Messages overwritten between the position and the read are said in the text."""

        def entries(path: str) -> Iterator[tuple[int, str]]:
            del path
            yield 15, "5,15,1,-;audit: type=1005 audit(1.000:1): pid=1 msg='text=m'"

        monkeypatch.setattr(logs_module, "_kmsg_entries", entries)
        text = read_since(KmsgPosition(sequence=10, time=0.0))
        assert ["the kernel log ring overwrote messages 10..14 before they were read"] == (
            losses(text)
        )
        assert ["USER"] == [r.type for r in parse_records(text)]


class TestGroupEvents:
    """Records group into events by (node, time, serial)."""

    def test_events_in_order_of_first_appearance(self) -> None:
        """The captured log has 19 events; the init_module one is SYSCALL + PROCTITLE."""
        events = group_events(_fixture_records("auditd-enriched.log"))
        assert 19 == len(events)
        (event,) = [e for e in events if e.syscall and e.syscall.number("syscall") == INIT_MODULE]
        assert ("SYSCALL", "PROCTITLE") == tuple(r.type for r in event.records)
        assert event.records[1:] == event.records_of("PROCTITLE")
        assert event.record("KERN_MODULE") is None

    def test_rule_load_key_is_not_on_its_syscall(self) -> None:
        """A rule load's CONFIG_CHANGE carries the key; its SYSCALL record has none."""
        events = group_events(_fixture_records("auditd-enriched.log"))
        loads = [e for e in events if e.record("CONFIG_CHANGE") is not None]
        change = loads[0].record("CONFIG_CHANGE")
        assert change is not None
        assert loads[0].syscall is not None
        assert (("module_chng",), ()) == (change.keys, loads[0].syscall.keys)

    def test_interleaved_records(self) -> None:
        """Records of two events written interleaved still group by stamp."""
        text = (
            "type=SYSCALL msg=audit(2.000:1): syscall=175 key=(null)\n"
            "type=SYSCALL msg=audit(2.000:2): syscall=176 key=(null)\n"
            "type=PROCTITLE msg=audit(2.000:1): proctitle=41\n"
            "type=PROCTITLE msg=audit(2.000:2): proctitle=42\n"
        )
        events = group_events(parse_records(text))
        assert [(1, "A"), (2, "B")] == [
            (e.serial, (e.record("PROCTITLE") or e.records[0]).get("proctitle")) for e in events
        ]


FRAGMENTS = st.sampled_from(
    [
        "type=",
        "SYSCALL",
        "UNKNOWN[12]",
        " msg=audit(",
        "1795316028.008",
        ":6",
        "):",
        " ",
        "=",
        '"',
        "'",
        "key=",
        "(null)",
        "6D6F01",
        "\x1d",
        "\x01",
        "\n",
        "\r",
        "audit: type=",
        "1300 audit(",
        "node=",
        "msg='",
        "text=",
        "[  12.5] ",
        "5,1,2,-;",
        "9" * 40,
        "é",
        "\x00",
        "\x1c",
        "arch=",
        "a0=",
        "exit=",
        "mode=",
    ]
)
TEXTS = st.one_of(
    st.text(),
    st.lists(st.one_of(FRAGMENTS, st.text(max_size=4)), max_size=80).map("".join),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4),
    max_leaves=8,
)
JOURNAL_KEYS = st.sampled_from(
    ["MESSAGE", "_AUDIT_TYPE", "_AUDIT_ID", "_SOURCE_REALTIME_TIMESTAMP", "_AUDIT_TYPE_NAME"]
)
JOURNAL_LINES = st.one_of(
    st.dictionaries(JOURNAL_KEYS, JSON_VALUES | st.from_regex(r"\d{1,25}", fullmatch=True)).map(
        json.dumps
    ),
    TEXTS,
)
NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True).filter(lambda n: n != "msg")
VALUES = st.one_of(
    st.from_regex(r"[A-Za-z0-9/_.:(),?-]{0,12}", fullmatch=True),
    st.from_regex(r"[ -!#-~]{0,12}", fullmatch=True).map(lambda v: f'"{v}"'),
    st.binary(min_size=1, max_size=8).map(lambda b: b.hex().upper()),
)


class TestProperties:
    """The parsers never raise, and what they read back is what was written."""

    @given(TEXTS)
    @settings(max_examples=300, deadline=None)
    def test_parse_never_raises(self, text: str) -> None:
        """parse_log, group_events and every record helper accept any text."""
        parsed = parse_log(text)
        for record in parsed.records:
            for name, _ in record.fields:
                record.get(name)
                record.number(name)
            assert isinstance(record.keys, tuple)
            assert record.milliseconds >= 0
            is_marker(record, "m")
        group_events(parsed.records)
        assert sum(1 for line in text.split("\n") if line.strip()) == len(parsed.records) + len(
            parsed.skipped
        )

    @given(st.lists(JOURNAL_LINES, max_size=5).map("\n".join))
    @settings(max_examples=200, deadline=None)
    def test_parse_journal_never_raises(self, text: str) -> None:
        """parse_journal accepts any text, JSON or not."""
        for record in parse_journal(text).records:
            assert isinstance(record.keys, tuple)

    @given(st.lists(st.tuples(NAMES, VALUES), max_size=12), st.integers(0, 2**32))
    @settings(max_examples=200, deadline=None)
    def test_fields_round_trip(self, fields: list[tuple[str, str]], serial: int) -> None:
        """A record written from fields parses back to the same fields, in order."""
        body = " ".join(f"{name}={value}" for name, value in fields)
        line = f"type=SYSCALL msg=audit(1795316028.008:{serial}): {body}\x1dARCH=x86_64"
        (record,) = parse_records(line)
        assert (serial, tuple(fields)) == (record.serial, record.fields)


def _write(path: Path, text: str, mode: str = "a") -> None:
    with path.open(mode, encoding="utf-8") as handle:
        handle.write(text)


def _line(serial: int, text: str = "x") -> str:
    return f"type=USER msg=audit(1.000:{serial}): pid=1 msg='text={text}'\n"


class TestReadSince:
    """Only bytes written after the position are read, across auditd's rotation."""

    def test_reads_only_after_the_position(self, tmp_path: Path) -> None:
        """Lines before the position are not returned, lines after are."""
        log = tmp_path / "audit.log"
        _write(log, _line(1) + _line(2))
        start = position(str(log))
        _write(log, _line(3))
        assert [3] == [r.serial for r in parse_records(read_since(start))]

    def test_large_prefix_is_skipped_by_seeking(self, tmp_path: Path) -> None:
        """With 32 MiB before the position, only what follows is returned and read.

        `/proc/self/io` rchar counts the bytes this process read: reading from the offset
        reads about what follows it, not the prefix.
        """
        log = tmp_path / "audit.log"
        block = _line(1, "stale-marker") * 4096
        with log.open("w", encoding="utf-8") as handle:
            for _ in range((32 << 20) // len(block) + 1):
                handle.write(block)
        start = position(str(log))
        _write(log, _line(2, "fresh"))
        io = Path("/proc/self/io")
        before = _rchar(io)
        text = read_since(start)
        after = _rchar(io)
        assert [(2, "fresh")] == [(r.serial, r.get("text")) for r in parse_records(text)]
        if before is not None and after is not None:
            assert after - before < 1 << 20

    def test_unfinished_line_waits_for_its_newline(self, tmp_path: Path) -> None:
        """A line still being written is left for the next read, then returned whole."""
        log = tmp_path / "audit.log"
        start = position(str(log))
        _write(log, _line(1) + "type=USER msg=audit(1.000:2): pid=1 ms")
        first, following = read_new(start)
        _write(log, "g='text=x'\n")
        second, _ = read_new(following)
        assert ([1], [2]) == (
            [r.serial for r in parse_records(first)],
            [r.serial for r in parse_records(second)],
        )
        assert "x" == parse_records(second)[0].get("text")

    def test_line_cut_by_the_position_is_dropped(self, tmp_path: Path) -> None:
        """A line that was half written when the position was taken predates it: dropped."""
        log = tmp_path / "audit.log"
        _write(log, _line(1) + "type=USER msg=audit(1.000:2): pid=1 ")
        start = position(str(log))
        _write(log, "msg='text=x'\n" + _line(3))
        assert [3] == [r.serial for r in parse_records(read_since(start))]

    def test_follows_one_rotation(self, tmp_path: Path) -> None:
        """After audit.log -> audit.log.1, the rest of .1 then the new file are read."""
        log = tmp_path / "audit.log"
        _write(log, _line(1))
        start = position(str(log))
        _write(log, _line(2))
        log.rename(tmp_path / "audit.log.1")
        _write(log, _line(3), "w")
        assert [2, 3] == [r.serial for r in parse_records(read_since(start))]

    def test_follows_two_rotations(self, tmp_path: Path) -> None:
        """After two rotations the old file is .2: its rest, all of .1, then the new file."""
        log = tmp_path / "audit.log"
        _write(log, _line(1))
        start = position(str(log))
        _write(log, _line(2))
        log.rename(tmp_path / "audit.log.1")
        _write(log, _line(3), "w")
        (tmp_path / "audit.log.1").rename(tmp_path / "audit.log.2")
        log.rename(tmp_path / "audit.log.1")
        _write(log, _line(4), "w")
        assert [2, 3, 4] == [r.serial for r in parse_records(read_since(start))]

    def test_reading_on_across_a_rotation(self, tmp_path: Path) -> None:
        """Positions returned by read_new continue on the new file after a rotation."""
        log = tmp_path / "audit.log"
        start = position(str(log))
        _write(log, _line(1))
        first, following = read_new(start)
        _write(log, _line(2))
        log.rename(tmp_path / "audit.log.1")
        _write(log, _line(3), "w")
        second, following = read_new(following)
        _write(log, _line(4))
        third, _ = read_new(following)
        assert [[1], [2, 3], [4]] == [
            [r.serial for r in parse_records(t)] for t in (first, second, third)
        ]

    def test_truncated_file_is_an_error(self, tmp_path: Path) -> None:
        """A log truncated in place (copytruncate) lost what followed the position: error."""
        log = tmp_path / "audit.log"
        _write(log, _line(1) + _line(2))
        start = position(str(log))
        _write(log, _line(3))
        _write(log, _line(4), "w")
        with pytest.raises(TransportError, match="truncated or replaced") as caught:
            read_since(start)
        assert str(log) in str(caught.value)

    def test_missing_file_at_the_position(self, tmp_path: Path) -> None:
        """A log created after the position is read whole."""
        log = tmp_path / "audit.log"
        start = position(str(log))
        assert (0, "") == (start.inode, read_since(start))
        _write(log, _line(1))
        assert [1] == [r.serial for r in parse_records(read_since(start))]

    def test_rotated_file_gone_is_an_error(self, tmp_path: Path) -> None:
        """When the old file is gone (even if a new file got its inode), records may be lost."""
        log = tmp_path / "audit.log"
        _write(log, _line(1))
        start = position(str(log))
        log.unlink()
        _write(log, _line(2), "w")
        with pytest.raises(TransportError) as caught:
            read_since(start)
        message = str(caught.value)
        assert str(log) in message
        assert f"inode {start.inode}" in message
        assert "may be lost" in message

    def test_rotated_file_is_found_by_inode(self, tmp_path: Path) -> None:
        """The old file is looked for by inode among LOG.1, LOG.2, ...; a stranger is refused."""
        log = tmp_path / "audit.log"
        _write(log, _line(1))
        start = position(str(log))
        log.rename(tmp_path / "kept-elsewhere")
        _write(tmp_path / "audit.log.1", _line(2), "w")
        _write(log, _line(3), "w")
        with pytest.raises(TransportError, match=r"no rotated file .*audit\.log\.N has that inode"):
            read_since(start)


def _rchar(io: Path) -> int | None:
    try:
        for line in io.read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "rchar":
                return int(value)
    except OSError:
        return None
    return None


class TestWaitForMarker:
    """Polling until the marker's USER record is in the log, with a deadline."""

    def test_returns_once_the_marker_is_there(self, tmp_path: Path) -> None:
        """The marker written by another party during the wait ends it."""
        log = tmp_path / "audit.log"
        start = position(str(log))
        marker = new_marker()
        calls: list[float] = []

        def sleep(seconds: float) -> None:
            calls.append(seconds)
            _write(log, _line(len(calls), "other") if len(calls) < 3 else _line(9, marker))

        text = wait_for_marker(start, marker, timeout=30, interval=0.01, sleep=sleep)
        assert [1, 2, 9] == [r.serial for r in parse_records(text)]
        assert [0.01, 0.01, 0.01] == calls

    def test_times_out_naming_log_marker_and_timeout(self, tmp_path: Path) -> None:
        """Without the marker the error names the log, the marker and the deadline."""
        log = tmp_path / "audit.log"
        _write(log, _line(1))
        start = position(str(log))
        _write(log, _line(2, "kmod-audit-marker-other"))
        with pytest.raises(MarkerTimeout) as caught:
            wait_for_marker(start, "kmod-audit-marker-x", timeout=0.2, interval=0.05)
        error = caught.value
        assert ("kmod-audit-marker-x", 0.2) == (error.marker, error.timeout)
        assert str(log) in error.source
        assert "kmod-audit-marker-other" in error.tail
        text = str(error)
        assert "text=kmod-audit-marker-x" in text
        assert str(log) in text
        assert "0.2 s" in text
        assert "auditctl -s" in text

    def test_marker_must_be_loggable_verbatim(self, tmp_path: Path) -> None:
        """A marker with spaces or quotes is refused: the kernel would not log it verbatim."""
        with pytest.raises(ConfigurationError, match="new_marker"):
            wait_for_marker(position(str(tmp_path / "audit.log")), "two words", timeout=1)

    def test_a_longer_marker_is_not_the_marker(self, tmp_path: Path) -> None:
        """`text=MARKER-2` does not count as `MARKER`."""
        log = tmp_path / "audit.log"
        start = position(str(log))
        _write(log, _line(1, "kmod-audit-marker-1-2"))
        with pytest.raises(MarkerTimeout):
            wait_for_marker(start, "kmod-audit-marker-1", timeout=0.1, interval=0.05)


class TestAuditdConfig:
    """Where auditd writes its log."""

    def test_log_file_from_the_conf(self, tmp_path: Path) -> None:
        """`log_file` is read from auditd.conf; absent, auditd's default applies."""
        conf = tmp_path / "auditd.conf"
        conf.write_text("# comment\nlog_file = /srv/audit/audit.log\nlog_format = ENRICHED\n")
        assert "/srv/audit/audit.log" == auditd_log_file(str(conf))
        conf.write_text("log_format = RAW\n")
        assert "/var/log/audit/audit.log" == auditd_log_file(str(conf))

    def test_unreadable_conf_is_a_parse_error(self, tmp_path: Path) -> None:
        """A missing auditd.conf is reported with its path."""
        missing = str(tmp_path / "auditd.conf")
        with pytest.raises(ParseError, match="cannot read it"):
            auditd_log_file(missing)

    def test_config_path_without_dash_c(self) -> None:
        """A process started without `-c DIR` uses /etc/audit/auditd.conf."""
        # Not this process: an xdist worker runs as `python -c CODE`.
        with subprocess.Popen(["sleep", "30"]) as process:
            try:
                assert "/etc/audit/auditd.conf" == auditd_config_path(process.pid)
            finally:
                process.kill()

    def test_discover_reports_a_log_less_auditd(self, tmp_path: Path) -> None:
        """An auditd that writes no log (`write_logs = no`) is a problem of the source."""
        (tmp_path / "auditd.conf").write_text("write_logs = no\n")
        script = tmp_path / "sleeper.py"
        script.write_text("import time\ntime.sleep(30)\n")
        # A stand-in whose command line carries `-c DIR` as auditd's would.
        sleeper = subprocess.Popen([sys.executable, str(script), "-c", str(tmp_path)])
        try:
            # Right after a vfork+exec the new command line can still read empty.
            cmdline = Path(f"/proc/{sleeper.pid}/cmdline")
            poll(lambda: bool(cmdline.read_bytes()), 10, "the stand-in's exec")
            source = RecordSource.discover(auditd_pid=sleeper.pid)
        finally:
            sleeper.kill()
            sleeper.wait(timeout=10)
        assert "auditd" == source.kind
        assert source.problem is not None
        assert "write_logs = no" in source.problem


@pytest.mark.skipif(shutil.which("ausearch") is None, reason="ausearch is not installed")
class TestAusearch:
    """`ausearch --raw` as the fallback reader (on the captured log)."""

    def test_records_from_the_start_time(self) -> None:
        """Only records stamped at or after the start (to the millisecond) are returned."""
        path = str(LOGS / "auditd-enriched.log")
        text = read_ausearch(1795320082.183, path=path)
        assert [("USER", 29275), ("DAEMON_END", 7645)] == [
            (r.type, r.serial) for r in parse_records(text)
        ]

    def test_no_matches_is_empty(self) -> None:
        """A start after every record gives no text, not an error."""
        assert "" == read_ausearch(1795320090.0, path=str(LOGS / "auditd-enriched.log"))

    def test_missing_ausearch_is_a_transport_error(self, tmp_path: Path) -> None:
        """A missing ausearch says what to install."""
        with pytest.raises(TransportError, match="install the audit userspace"):
            read_ausearch(0.0, path="/dev/null", ausearch=str(tmp_path / "missing" / "ausearch"))


def _fake_journalctl(tmp_path: Path, output: Path | None, status: int = 0) -> tuple[str, Path]:
    argv_file = tmp_path / "argv"
    script = tmp_path / "journalctl"
    cat = f"cat '{output}'\n" if output is not None else "echo 'No journal files were found.' >&2\n"
    script.write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{argv_file}'\n{cat}exit {status}\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return str(script), argv_file


class TestJournal:
    """journald as a source: could not be run live here (no systemd), so a fake journalctl."""

    def test_read_journal_asks_for_audit_entries_and_cuts_to_the_millisecond(
        self, tmp_path: Path
    ) -> None:
        """The call asks for _TRANSPORT=audit --since @SECONDS as json; records cut to the ms."""
        program, argv_file = _fake_journalctl(tmp_path, LOGS / "journald.jsonl")
        records = read_journal(1795320089.163, journalctl=program)
        assert [("USER", 29310), ("USER", 29312), ("UNKNOWN[1399]", 29314)] == [
            (r.type, r.serial) for r in records
        ]
        expected = "_TRANSPORT=audit --since @1795320089 --output json --all --no-pager --quiet"
        assert expected.split() == argv_file.read_text().split()

    def test_failing_journalctl_is_a_command_failure(self, tmp_path: Path) -> None:
        """A journalctl error is reported with its output and what to check."""
        program, _ = _fake_journalctl(tmp_path, None, status=1)
        with pytest.raises(CommandFailed, match="journald runs") as caught:
            read_journal(0.0, journalctl=program)
        assert "No journal files were found." in caught.value.output


# --------------------------------------------------------------------------------------
# The real kernel and a real auditd (root)


def _stimulus(number: int) -> int:
    """Make syscall `number` in a child whose login uid is 1000; return the child's pid."""
    child = subprocess.Popen([sys.executable, "-c", STIMULUS, str(number)])
    child.wait(timeout=30)
    return child.pid


def _settle(host_audit: HostAudit, log: Path) -> str:
    """Load the rule, then wait until everything so far is in the log; return the marker."""
    assert 0 == host_audit.load(RULE).returncode
    auditctl("-e", "1")
    marker = new_marker("kmod-audit-settle")
    auditctl("-m", marker)
    wait_for_marker(LogPosition(path=str(log), inode=0, device=0, offset=0), marker)
    return marker


@pytest.mark.root
class TestKmsg:
    """The kernel log as the source when no auditd runs."""

    def test_reads_only_messages_after_the_position(self) -> None:
        """Messages before the position are not returned; those after are.

        A record header written to /dev/kmsg by a process (facility user, not kernel) is
        returned as a line but is not a record: only the kernel prints audit records there.
        """
        if os.geteuid() != 0:
            pytest.skip("writing to /dev/kmsg needs root")
        token = secrets.token_hex(6)
        fd = os.open("/dev/kmsg", os.O_WRONLY)
        try:
            os.write(fd, f"kmod-audit-test: {token} before\n".encode())
            start = kmsg_position()
            os.write(fd, f"kmod-audit-test: {token} after\n".encode())
            fake = f"audit: type=1005 audit(1.000:1): pid=1 msg='text=kmod-audit-test-{token}'"
            os.write(fd, fake.encode() + b"\n")
        finally:
            os.close(fd)
        parsed = parse_log(read_since(start))
        assert [f"kmod-audit-test: {token} after", fake] == [
            line.partition(";")[2] for _, line in parsed.skipped if token in line
        ]
        assert [] == [r for r in parsed.records if token in r.raw]

    def test_live_marker_reaches_kmsg_without_auditd(self, host_audit: HostAudit) -> None:
        """With no auditd, `auditctl -m` reaches /dev/kmsg as a USER record (type 1005).

        The kernel rate-limits these lines (10 per 5 s): a marker dropped by the limit is
        written again, until a deadline past the limit's window.
        """
        registered = host_audit.status.get("pid", "0")
        if registered != "0":
            pytest.skip(f"an auditd (pid {registered}) receives the records, not the kernel log")
        auditctl("-e", "1")
        source = RecordSource.discover(auditd_pid=0)
        assert ("kmsg", None) == (source.kind, source.problem)
        start = source.position()
        deadline = time.monotonic() + 12
        while True:
            marker = new_marker()
            auditctl("-m", marker)
            try:
                text = wait_for_marker(start, marker, timeout=1.0)
                break
            except MarkerTimeout:
                registered = audit_status().get("pid", "0")
                if registered != "0":
                    pytest.skip(f"an auditd (pid {registered}) started meanwhile: it gets them")
                if time.monotonic() > deadline:
                    raise
        (record,) = [r for r in parse_records(text) if is_marker(r, marker)]
        assert "audit: type=1005 " in record.raw


@pytest.mark.root
class TestLiveAuditd:
    """A real auditd writes real records; we read exactly those after the position."""

    def test_finds_the_stimulus_syscall_record(self, host_audit: HostAudit, auditd: Auditd) -> None:
        """After position, stimulus and marker: exactly the stimulus' keyed SYSCALL, by pid."""
        settled = _settle(host_audit, auditd.log)
        source = RecordSource.discover(auditd_pid=auditd.pid)
        assert ("auditd", str(auditd.log), None) == (source.kind, source.path, source.problem)
        start = source.position()
        pid = _stimulus(INIT_MODULE)
        marker = new_marker()
        auditctl("-m", marker)
        assert source.wait_for(start, marker, 10)
        events = group_events(parse_records(source.read_since(start)))
        mine = [
            e.syscall
            for e in events
            if e.syscall is not None
            and e.syscall.get("pid") == str(pid)
            and e.syscall.number("syscall") == INIT_MODULE
        ]
        assert 1 == len(mine)
        record = mine[0]
        assert (("module_chng",), "no", ENOSYS, 1000, X86_64) == (
            record.keys,
            record.get("success"),
            record.number("exit"),
            record.number("auid"),
            record.number("arch"),
        )
        # What was in the log before the position (the settle marker) is not read again.
        # (Other keyed records may be there: other tests may drive the host's audit too.)
        assert [] == [r for e in events for r in e.records if is_marker(r, settled)]

    def test_follows_auditd_rotation(self, host_audit: HostAudit, auditd: Auditd) -> None:
        """When auditd rotates (SIGUSR1) between two stimuli, both are read, once each."""
        _settle(host_audit, auditd.log)
        start = position(str(auditd.log))
        first = _stimulus(INIT_MODULE)
        marker = new_marker()
        auditctl("-m", marker)
        wait_for_marker(start, marker, timeout=10)
        os.kill(auditd.pid, signal.SIGUSR1)
        rotated = Path(f"{auditd.log}.1")
        poll(
            lambda: (
                rotated.exists() and rotated.stat().st_ino == start.inode and auditd.log.exists()
            ),
            10,
            "auditd rotating its log",
        )
        second = _stimulus(INIT_MODULE)
        last = new_marker()
        auditctl("-m", last)
        text = wait_for_marker(start, last, timeout=10)
        syscalls = [
            int(r.get("pid") or 0)
            for r in parse_records(text)
            if r.type == "SYSCALL" and r.number("syscall") == INIT_MODULE
        ]
        assert [first, second] == syscalls
        markers = [r for r in parse_records(text) if is_marker(r, marker) or is_marker(r, last)]
        assert 2 == len(markers)
