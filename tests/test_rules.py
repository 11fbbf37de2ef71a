"""The parser reads lines the way auditctl does."""

from __future__ import annotations

import pytest

from kmod_audit.loader import load
from kmod_audit.rules import (
    NOT_READ,
    THIS_MACHINE,
    UID_UNSET,
    Command,
    Rejection,
    c_strtoul,
    detect_syntax,
    explain_syntax,
    listing_problem,
    parse_rules,
    split_line,
)
from kmod_audit.syscalls import MACHINES, Machine


def one(text: str, machine: Machine, *, live: bool = False) -> Command | Rejection:
    """Parse a single line and return its item."""
    source = parse_rules(
        text, path="t.rules", machine=machine, files=THIS_MACHINE if live else NOT_READ
    )
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


#: The file of issue 7 item 3: keys written as `-F key=`, no `-k`, no comment.
KEY_FIELD_RULES = (
    "-a always,exit -F arch=b32 -S delete -F key=modules\n"
    "-a always,exit -F arch=b64 -S init_module,finit_module,delete_module -F auid>=1000 "
    "-F auid!=unset -F key=modules\n"
    "-a always,exit -F arch=b32 -S init_module,finit_module,delete_module -F auid>=1000 "
    "-F auid!=unset -F key=modules\n"
)
#: A line exactly as `auditctl -l` prints it (x86_64), with the `-F key=` mark.
LISTED = (
    "-a always,exit -F arch=b64 -S init_module,delete_module,finit_module -F auid>=1000 "
    "-F auid!=-1 -F key=module_chng"
)


class TestListingNeedsPositiveEvidence:
    """A text is `auditctl -l` output only when every line is as auditctl -l prints it."""

    def test_key_field_rules_file_is_a_rules_file(self) -> None:
        """Issue 7.3: the file is a rules file, so loading stops at its bad first line."""
        x86_64 = MACHINES["x86_64"]
        syntax, reason = explain_syntax(KEY_FIELD_RULES.splitlines(), x86_64)
        assert ("rules", True) == (syntax, "line 1" in reason and "'delete'" in reason)
        ruleset = load(parse_rules(KEY_FIELD_RULES, path="f.rules", machine=x86_64), files=NOT_READ)
        assert (1, (), "rules") == (
            ruleset.stopped_at.line if ruleset.stopped_at else None,
            ruleset.rules,
            ruleset.source.syntax,
        )

    @pytest.mark.parametrize(
        ("line", "why"),
        [
            (LISTED.replace("auid!=-1", "auid!=unset"), "unset"),
            (LISTED.replace("auid!=-1", "auid!=4294967295"), "4294967295"),
            (LISTED.replace("auid>=1000", "auid>=0x3e8"), "0x3e8"),
            (LISTED.replace("auid>=1000", "auid>=01750"), "01750"),
            (LISTED.replace("auid>=1000", "loginuid>=1000"), "loginuid"),
            (LISTED.replace("init_module,", "nosuch_call,"), "nosuch_call"),
            (LISTED.replace("init_module,delete_module", "delete_module,init_module"), "order"),
            (LISTED.replace("delete_module,", "init_module,"), "repeated"),
            (LISTED.replace("-S init_module,", "-S 175,"), "number"),
            (LISTED.replace(",finit_module", " -S finit_module"), "-S"),
            (LISTED.replace("-F arch=b64", "-F arch=x86_64"), "x86_64"),
            (LISTED.replace("always,exit", "exit,always"), "exit,always"),
            (LISTED.replace(" -F key=module_chng", " -k module_chng"), "-k"),
            (LISTED.replace("-F auid>=1000 ", "") + " -F auid>=1000", "after the key"),
            (LISTED.replace(" -F auid", "  -F auid", 1), "spaces"),
            (LISTED + " ", "spaces"),
            (LISTED.replace("-F auid>=1000", "-F a0=0x1f"), "a0"),
            (LISTED.replace("-F auid>=1000", "-F uid=-1"), "refuses"),
            (LISTED.replace("-F auid>=1000", "-F uid&=4"), "bit operator"),
            (LISTED.replace("-F auid>=1000", "-F auid>=-1"), "refuses"),
            (LISTED.replace("-F auid>=1000", "-F auid>=root"), "decimal"),
            (LISTED.replace("-F auid>=1000", "-F filetype=file"), "decimal"),
            (LISTED.replace("-F auid>=1000", "-C obj_uid!=auid"), "-C"),
            (LISTED.replace("-F auid>=1000", "-F exe!=/usr/bin/kmod"), "exe!="),
            (LISTED.replace(" -S init_module,delete_module,finit_module", ""), "without -S"),
            ("-a always,exit -F arch=b64 -S init_module,nosuch -F key=k", "nosuch"),
            ("-w /usr/bin/kmod -p xr -k k", "permissions"),
            ("-w /usr/bin/kmod -k k -p x", "permissions"),
            ("-w /usr/bin/kmod -p x -F key=k", "-F"),
            ("-e 1", "-e"),
            ("# captured", "#"),
            ("-a always,exit -F arch=b64 -S init_module -F key=k extra", "without its argument"),
        ],
    )
    def test_never_printed_by_auditctl_l(self, line: str, why: str) -> None:
        """A line auditctl -l never prints makes the text a rules file, and says why."""
        x86_64 = MACHINES["x86_64"]
        problem = listing_problem(line, x86_64)
        syntax, reason = explain_syntax([LISTED, line], x86_64)
        assert (True, "rules", True) == (
            problem is not None and why in problem,
            syntax,
            "line 2" in reason,
        ), (problem, reason)

    @pytest.mark.parametrize(
        "text",
        [
            "No rules",
            LISTED,
            "-a never,exit -F arch=b64 -S all\n" + LISTED,
            (
                "-a always,exit -S all -F path=/usr/bin/kmod -F perm=x -F auid>=1000 "
                "-F auid!=-1 -F key=kernel_modules"
            ),
            (
                "-a always,exit -F arch=b64 -S init_module -F key=a -F key=b\n"
                "-w /usr/bin/kmod -p x -k modules"
            ),
            (
                "-a always,exit -F arch=b64 -S init_module -F a0=0x10 -F a1!=0xFF "
                "-F exit=-EPERM -F success=0 -C auid!=obj_uid -F key=k"
            ),
            "-a always,exit -F arch=b32 -S init_module,222 -F key=k",
            "-a always,exit -F arch=0x28 -S 128 -F key=k",
            "-a never,exclude -F msgtype=CWD\n-a never,exit -S all -F auid=-1",
            "-a always,task -F uid=0\n-a always,exit -F arch=b64 -S all -F key=k",
            (
                "-a always,exit -F arch=b64 -S all -F exe=/usr/bin/kmod -F inode=4294967295 "
                "-F filetype=32768 -F key=k"
            ),
        ],
        ids=[
            "no-rules",
            "stig",
            "never-first",
            "path-rule",
            "watch",
            "many-fields",
            "syscall-number",
            "foreign-arch",
            "exclude",
            "task",
            "exe",
        ],
    )
    def test_real_listing_shapes_are_listings(self, text: str) -> None:
        """Text in the exact form auditctl -l prints, with a mark of it, is a listing."""
        assert ("listing", "") == (
            explain_syntax(text.splitlines(), MACHINES["x86_64"])[0],
            "",
        )

    def test_unmarked_listing_form_is_a_rules_file_and_says_so(self) -> None:
        """Text that reads the same both ways is loaded as a rules file, and the reason says so."""
        x86_64 = MACHINES["x86_64"]
        text = "-a always,exit -F arch=b64 -S init_module\n-w /usr/bin/kmod -p x -k modules\n"
        source = parse_rules(text, path="t", machine=x86_64)
        assert ("rules", True) == (source.syntax, "stricter reading" in source.syntax_reason)

    def test_repeated_rule_is_a_rules_file(self) -> None:
        """The kernel never holds a rule twice, so a repeated line means a rules file."""
        assert ("rules", True) == (
            detect_syntax([LISTED, LISTED]),
            "repeats" in explain_syntax([LISTED, LISTED])[1],
        )

    def test_given_syntax_has_no_reason(self) -> None:
        """When the caller says which syntax it is, no reason is made up."""
        source = parse_rules(LISTED, path="t", machine=MACHINES["x86_64"], syntax="listing")
        assert ("listing", "") == (source.syntax, source.syntax_reason)


def _filled(
    total: int, key: str = " -k k", first: str = "-a never,exit -F arch=b64 -S all", held: int = 1
) -> str:
    """`first` (holding `held` fields) padded with auid fields to `total` fields, key included."""
    return first + " -F auid!=unset" * (total - held - (1 if key else 0)) + key


class TestFieldCount:
    """A rule holds at most 63 fields counting its key, as libaudit counts them."""

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            (_filled(63), None),
            (_filled(64), "Too many fields in rule: key=k"),
            (_filled(63, " -F key=k"), None),
            (_filled(64, " -F key=a -k b"), "Too many fields in rule: key=a\x01b"),
            (_filled(63, ""), None),
            (_filled(64, ""), "Too many fields in rule: auid!=unset"),
            (_filled(62, "") + " -C auid!=uid", None),
            (_filled(63, "") + " -C auid!=uid", "Too many fields in rule: auid!=uid"),
            (_filled(62, "", "-a always,exit -F path=/usr/bin/kmod") + " -p x", None),
            (
                _filled(63, "", "-a always,exit -F path=/usr/bin/kmod") + " -p x",
                "Too many fields when adding permissions",
            ),
            (_filled(64, first="-w /usr/bin/kmod -p x", held=2), "Too many fields in rule: key=k"),
            (_filled(63, first="-w /usr/bin/kmod -p x", held=2), None),
        ],
        ids=[
            "63-with-key",
            "64-with-key",
            "63-key-field",
            "64-two-keys",
            "63-no-key",
            "64-no-key",
            "63-compare",
            "64-compare",
            "63-perm-by-p",
            "64-perm-by-p",
            "64-watch",
            "63-watch",
        ],
    )
    def test_fields_counted_like_libaudit(
        self, x86_64: Machine, line: str, message: str | None
    ) -> None:
        """Issue 7.8: the key, -C, -w's two fields and -p's perm count toward the limit."""
        item = one(line, x86_64)
        got = item.message if isinstance(item, Rejection) else None
        assert message == got

    def test_p_updates_every_perm_field(self, x86_64: Machine) -> None:
        """`-p` sets every perm field already there (audit_update_watch_perms) and adds none."""
        item = rule_of("-a always,exit -F path=/x -F perm=r -F perm=w -p x -k k", x86_64)
        assert item.rule is not None
        assert [1, 1] == [f.value for f in item.rule.fields if f.name == "perm"]


class TestKeysAndWords:
    """Key strings and word counts as auditctl builds them."""

    @pytest.mark.parametrize(
        ("line", "key"),
        [
            ("-a always,exit -S all -F key= -k b", "b"),
            ("-a always,exit -S all -k a -F key=", "a\x01"),
            ("-a always,exit -S all -F key=", ""),
        ],
        ids=["empty-first", "empty-after", "empty-only"],
    )
    def test_empty_keys(self, x86_64: Machine, line: str, key: str) -> None:
        """An empty key adds a separator only after a non-empty one, as auditctl's strcat."""
        item = rule_of(line, x86_64)
        assert item.rule is not None
        assert key == item.rule.key

    def test_task_rule_with_empty_key_field_loads(self, x86_64: Machine) -> None:
        """`-F key=` with nothing after it adds no key, so no key dependency error."""
        assert isinstance(one("-a always,task -F uid=0 -F key=", x86_64), Command)

    def test_words_past_strlen_over_3_are_dropped(self, x86_64: Machine) -> None:
        """fileopt() keeps strlen(line) / 3 + 1 words: a long run of `-k a` loses its tail."""
        line = "-a always,exit -F arch=b64 -S init_module" + " -k a" * 31
        item = rule_of(line, x86_64)
        assert item.rule is not None
        assert 30 == len(item.rule.keys)


class TestWhatAuditctlListPrints:
    """The listing's own quirks (issue 16 item 8); the oracle checks them on the kernel."""

    def test_perm_only_rule_is_read(self, x86_64: Machine) -> None:
        """` -p x -k x` (a perm= rule with -S all, printed as a watch) is read as that rule."""
        source = parse_rules(" -p x -k x\n", path="l", machine=x86_64, syntax="listing")
        (item,) = source.items
        assert isinstance(item, Command)
        assert item.rule is not None
        assert (None, ("perm",), ("x",)) == (
            item.rule.syscalls,
            tuple(f.name for f in item.rule.fields),
            item.rule.keys,
        )

    def test_perm_before_path_is_read(self, x86_64: Machine) -> None:
        """` -p x-w PATH` (perm= given before path=) keeps both fields in kernel order."""
        source = parse_rules(" -p x-w /usr/bin/kmod\n", path="l", machine=x86_64, syntax="listing")
        (item,) = source.items
        assert isinstance(item, Command)
        assert item.rule is not None
        assert (("perm", "x"), ("path", "/usr/bin/kmod")) == tuple(
            (f.name, f.text) for f in item.rule.fields
        )

    def test_listed_exe_may_be_not_equal(self, x86_64: Machine) -> None:
        """A listed `exe=` is marked ambiguous (it may be `exe!=`) and warned about."""
        line = "-a always,exit -F arch=b64 -S execve -F exe=/usr/bin/kmod -F key=m\n"
        source = parse_rules(line, path="l", machine=x86_64, syntax="listing")
        (item,) = source.items
        assert isinstance(item, Command)
        assert item.rule is not None
        exe = item.rule.field("exe")
        assert exe is not None
        assert (True, 1) == (exe.ambiguous, sum("exe!=" in w for w in item.warnings))

    def test_perm_field_allows_a_key(self, x86_64: Machine) -> None:
        """`-F perm=x -k x` with no -S loads as `-S all -F perm=x` (auditctl 3.0.9)."""
        item = rule_of("-a always,exit -F perm=x -k x", x86_64)
        assert item.rule is not None
        assert (None, ("x",)) == (item.rule.syscalls, item.rule.keys)

    def test_getopt_stops_inside_a_word(self, x86_64: Machine) -> None:
        """`-D` and a CR deletes every rule, then fails the line (optind still names the word)."""
        source = parse_rules("-D\r\n", path="t", machine=x86_64, syntax="rules")
        assert ["delete_all", "rejected"] == [
            i.kind if isinstance(i, Command) else "rejected" for i in source.items
        ]

    def test_cr_in_a_value_is_printed(self, x86_64: Machine) -> None:
        """A key that holds a CR is listed with the CR: the line is still a listing's."""
        line = "-a always,exit -F arch=b64 -S init_module -F key=m\r"
        assert (None, "listing") == (
            listing_problem(line, x86_64),
            detect_syntax([line], x86_64),
        )
