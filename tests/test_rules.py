"""The parser reads lines the way auditctl does."""

from __future__ import annotations

import pytest

from kmod_audit.rules import (
    UID_UNSET,
    Command,
    Rejection,
    c_strtoul,
    detect_syntax,
    parse_rules,
    split_line,
)
from kmod_audit.syscalls import Machine


def one(text: str, machine: Machine, *, live: bool = False) -> Command | Rejection:
    """Parse a single line and return its item."""
    source = parse_rules(text, path="t.rules", machine=machine, live=live)
    assert 1 == len(source.items)
    return source.items[0]


def rule_of(text: str, machine: Machine) -> Command:
    """Parse a single accepted rule line."""
    item = one(text, machine)
    assert isinstance(item, Command), item
    assert item.rule is not None
    return item


class TestTokenizer:
    """Lines are split like auditctl's fileopt()."""

    def test_only_space_separates(self) -> None:
        """A tab is part of a word, as in auditctl."""
        assert ["-a", "always,exit\t-S"] == split_line("-a always,exit\t-S")

    def test_backslash_space_and_backslash(self) -> None:
        r"""`\\ ` is a space inside a word and `\\\\` a backslash."""
        assert ["-w", "/a b\\c"] == split_line("-w /a\\ b\\\\c")

    @pytest.mark.parametrize(
        ("text", "value"),
        [
            ("1000", 1000),
            ("01000", 512),
            ("0x10", 16),
            ("12abc", 12),
            ("-1", UID_UNSET),
            ("4294967296", 0),
            ("abc", None),
            ("", None),
        ],
        ids=["decimal", "octal", "hex", "trailing-junk", "minus-one", "wraps", "word", "empty"],
    )
    def test_strtoul(self, text: str, value: int | None) -> None:
        """Numbers are read like C's strtoul(text, NULL, 0) into 32 bits."""
        assert value == c_strtoul(text)


class TestRuleSyntax:
    """Accepted rule forms and their kernel representation."""

    def test_list_and_action_in_either_order(self, x86_64: Machine) -> None:
        """`exit,always` is the same rule as `always,exit`."""
        a = rule_of("-a exit,always -F arch=b64 -S init_module -k k", x86_64).rule
        b = rule_of("-a always,exit -F arch=b64 -S init_module -k k", x86_64).rule
        assert a is not None
        assert b is not None
        assert a.identity() == b.identity()

    def test_split_combined_and_repeated_syscalls(self, x86_64: Machine) -> None:
        """`-S a,b` and `-S a -S b` give the same syscall mask."""
        combined = rule_of("-a always,exit -F arch=b64 -S init_module,finit_module", x86_64)
        repeated = rule_of("-a always,exit -F arch=b64 -S init_module -S finit_module", x86_64)
        assert combined.rule is not None
        assert repeated.rule is not None
        assert frozenset({175, 313}) == combined.rule.syscalls == repeated.rule.syscalls

    def test_names_resolve_in_the_arch_table(self, x86_64: Machine) -> None:
        """b32 names use the i386 numbers."""
        item = rule_of("-a always,exit -F arch=b32 -S init_module,finit_module", x86_64)
        assert item.rule is not None
        assert frozenset({128, 350}) == item.rule.syscalls

    def test_aarch64_b32_is_arm(self, aarch64: Machine) -> None:
        """On aarch64, b32 means the arm table (finit_module is 379)."""
        item = rule_of("-a always,exit -F arch=b32 -S finit_module", aarch64)
        assert item.rule is not None
        assert frozenset({379}) == item.rule.syscalls

    def test_syscall_numbers(self, x86_64: Machine) -> None:
        """`-S 175` is taken as a number."""
        item = rule_of("-a always,exit -F arch=b64 -S 175 -k k", x86_64)
        assert item.rule is not None
        assert frozenset({175}) == item.rule.syscalls

    def test_all(self, x86_64: Machine) -> None:
        """`-S all` is the full mask (None)."""
        item = rule_of("-a always,exit -F arch=b64 -S all -k k", x86_64)
        assert item.rule is not None
        assert item.rule.syscalls is None

    @pytest.mark.parametrize("spelling", ["unset", "-1", "4294967295"], ids=str)
    def test_auid_spellings_are_equal(self, x86_64: Machine, spelling: str) -> None:
        """unset, -1 and 4294967295 are one value."""
        item = rule_of(f"-a always,exit -F arch=b64 -S init_module -F auid!={spelling}", x86_64)
        assert item.rule is not None
        field = item.rule.field("auid")
        assert field is not None
        assert UID_UNSET == field.value

    def test_keys_join(self, x86_64: Machine) -> None:
        """`-k a -F key=b` gives two keys, joined with 0x01 in the kernel."""
        item = rule_of("-a always,exit -F arch=b64 -S init_module -k a -F key=b", x86_64)
        assert item.rule is not None
        assert ("a", "b") == item.rule.keys
        assert "a\x01b" == item.rule.key

    def test_watch(self, x86_64: Machine) -> None:
        """`-w PATH -p x -k K` is an exit rule on every syscall with path and perm fields."""
        item = rule_of("-w /usr/bin/kmod -p x -k modules", x86_64)
        assert item.rule is not None
        assert "-w /usr/bin/kmod -p x -k modules" == item.rule.render()
        assert item.rule.syscalls is None

    @pytest.mark.parametrize(
        "op", ["=", "!=", "<", ">", "<=", ">=", "&", "&="], ids=lambda o: f"op{o}"
    )
    def test_every_operator_on_a0(self, x86_64: Machine, op: str) -> None:
        """All eight operators parse on a syscall argument."""
        item = rule_of(f"-a always,exit -F arch=b64 -S init_module -F a0{op}5 -k k", x86_64)
        assert item.rule is not None
        field = item.rule.field("a0")
        assert field is not None
        assert (op, 5) == (field.op, field.value)

    def test_controls(self, x86_64: Machine) -> None:
        """Control lines become commands with their values."""
        text = "-D\n-b 8192\n-f 1\n-r 100\n--backlog_wait_time 60000\n-e 1\n-c\n-i\n"
        source = parse_rules(text, path="t", machine=x86_64)
        kinds = [(i.kind, i.value) for i in source.items if isinstance(i, Command)]
        assert [
            ("delete_all", None),
            ("backlog", 8192),
            ("failure", 1),
            ("rate", 100),
            ("backlog_wait_time", 60000),
            ("enable", 1),
            ("continue_on_error", None),
            ("ignore_errors", None),
        ] == kinds

    def test_comments_and_blank_lines_are_skipped(self, x86_64: Machine) -> None:
        """Only `#` as the first word starts a comment."""
        source = parse_rules("# c\n\n   \n  # indented\n", path="t", machine=x86_64)
        assert () == source.items


class TestRejections:
    """Lines auditctl refuses, with its own message."""

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            ("-a always,exit -S init_module -F arch=b64", "arch must be before -S"),
            ("-a always,exit -F arch=b64 -S nosuch", "Syscall name unknown: nosuch"),
            (
                "-a always,exit -F arch=b64 -F auid>=1000 -k x",
                "key option needs a watch or syscall given prior to it",
            ),
            ("-a always,exit -F arch>=b64 -S init_module", "arch only takes = or != operators"),
            ("-a sometimes,exit -S init_module", "Append rule - bad keyword sometimes,exit"),
            (
                "-a always,exit -F arch=b64 -S init_module -k x # c",
                "parameter passed without an option given",
            ),
            ("-w relative/path -p x", "The path must start with '/'"),
            ("-w /usr/bin/kmod -p z", "Permission z isn't supported"),
            ("-e 3", "Enable must be 0, 1, or 2 was 3"),
            ("-a always,exit -F arch=b64 -S init_module -F nosuch=1", "Unknown field name"),
            (
                "-a always,exit -F arch=b64 -S init_module -F auid>=nosuchuser",
                "Unknown user: nosuchuser",
            ),
            (
                "-a always,exit -F arch=b64 -S init_module -k " + "k" * 257,
                "key option exceeds size limit",
            ),
            ("-F arch=b64", "List must be given before field"),
            ("-Z", "Option -Z on line 1 is invalid"),
        ],
        ids=[
            "arch-after-S",
            "unknown-syscall",
            "key-without-syscall",
            "arch-operator",
            "bad-action",
            "eol-comment",
            "relative-watch",
            "bad-perm",
            "enable-3",
            "unknown-field",
            "unknown-user",
            "key-too-long",
            "field-without-list",
            "unknown-option",
        ],
    )
    def test_rejected(self, x86_64: Machine, line: str, message: str) -> None:
        """The rejection carries auditctl's message and a hint."""
        item = one(line, x86_64)
        assert isinstance(item, Rejection)
        assert message in item.message
        assert item.hint
        assert 1 == item.origin.line

    def test_create_module_unknown_on_aarch64(self, aarch64: Machine) -> None:
        """create_module does not exist on aarch64."""
        item = one("-a always,exit -F arch=b64 -S create_module -k k", aarch64)
        assert isinstance(item, Rejection)
        assert "Syscall name unknown: create_module" == item.message
        assert "aarch64" in item.hint

    def test_possible_is_silently_eaten(self, x86_64: Machine) -> None:
        """The deprecated `possible` action is dropped without an error, as auditctl does."""
        source = parse_rules("-a exit,possible -S init_module", path="t", machine=x86_64)
        assert () == source.items
        backwards = parse_rules("-a possible,exit -S init_module", path="t", machine=x86_64)
        assert isinstance(backwards.items[0], Rejection)


class TestSyntaxDetection:
    """Captured `auditctl -l` output is told apart from rules files."""

    @pytest.mark.parametrize(
        ("text", "syntax"),
        [
            ("No rules\n", "listing"),
            ("-a always,exit -F arch=b64 -S init_module -F key=k\n-w /x -p x -k y\n", "listing"),
            ("-a always,exit -F arch=b64 -S init_module -k k\n", "rules"),
            ("# comment\n-a always,exit -F arch=b64 -S init_module -F key=k\n", "rules"),
            ("-D\n-a always,exit -F arch=b64 -S init_module -F key=k\n", "rules"),
            ("-a exit,always -F arch=b64 -S init_module -F key=k\n", "rules"),
            ("", "rules"),
            ("-w /usr/bin/kmod -p x -k modules\n", "rules"),
        ],
        ids=[
            "no-rules",
            "listing",
            "dash-k",
            "comment",
            "control",
            "list-first",
            "empty",
            "ambiguous-watch",
        ],
    )
    def test_detect(self, text: str, syntax: str) -> None:
        """Only exact `auditctl -l` shapes are taken as a listing."""
        assert syntax == detect_syntax(text.splitlines())
