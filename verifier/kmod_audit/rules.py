"""Audit rules: one model for rules files and `auditctl -l` output, and a faithful parser.

The parser reproduces what auditctl 3.x/4.x does with each line of a file given to
`auditctl -R` (see audit-userspace `src/auditctl.c` and `lib/libaudit.c`): a line is split
on spaces only, `#` starts a comment only as the first word, options are read with
getopt (so `-Farch=b64` works and a stray word is an error), `-F arch` must precede `-S`,
syscall names resolve in the table of the rule's arch (the machine's native table when
there is none), numbers are read like C's strtoul with base 0 (so `auid>=01000` is octal),
keys given with `-k` and `-F key=` join with 0x01, and so on. Each line becomes either a
`Command` (what auditctl sends to the kernel) or a `Rejection` (auditctl's own message and
what to do). What the kernel then does with the commands is `loader.py`'s job.
"""

from __future__ import annotations

import errno as _errno
import grp
import os
import pwd
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Literal, NamedTuple, Protocol

import attrs

from ._syscall_tables import MESSAGE_TYPES
from .syscalls import ABIS, MACHINES, Abi, Machine, abi_by_audit_arch, resolve_arch


class TargetFiles(Protocol):
    """What is known of the files of the machine whose kernel loads the rules.

    auditctl makes a `-w` on a directory a tree watch (it stat()s the path), and the kernel
    refuses a watch whose parent directory (a tree watch: whose path) does not exist, and
    an `exe=` whose directory does not. Each answer is None when it is not known.

    Attributes:
        where: Where the files are, in a message: `here`, `on the target`, `in DIR`.
    """

    @property
    def where(self) -> str:
        """Where the files are, in a message."""

    def is_dir(self, path: str) -> bool | None:
        """Whether `path` is a directory there (following symlinks)."""

    def exists(self, path: str) -> bool | None:
        """Whether `path` exists there (a symlink counts, wherever it points)."""

    def local(self, path: str) -> str | None:
        """Where this machine reads the file at `path` there; None when not read."""

    def real(self, path: str) -> str | None:
        """`path` there with its links resolved; None when the files are not read."""


@attrs.frozen
class ThisMachine:
    """The files of this machine: the rules are judged where they load."""

    where: str = "here"

    def is_dir(self, path: str) -> bool:
        """Whether `path` is a directory here."""
        return os.path.isdir(path)

    def exists(self, path: str) -> bool:
        """Whether `path` exists here."""
        return os.path.lexists(path)

    def local(self, path: str) -> str:
        """`path` itself."""
        return os.path.realpath(path)

    def real(self, path: str) -> str:
        """`path` with its links resolved."""
        return os.path.realpath(path)


#: Directories every target has: the root, /etc (auditd's own configuration), /var and
#: /var/log, and /usr with what every layout of its links has (`evaluate.Layout`): /bin,
#: /sbin and /lib, directories or links into /usr.
EVERY_TARGET_HAS: Final = frozenset(
    {"/", "/etc", "/var", "/var/log", "/usr", "/usr/bin", "/usr/sbin", "/usr/lib"}
    | {"/bin", "/sbin", "/lib"}
)


@attrs.frozen
class NotRead:
    """The target's files, not read (`--offline`, another `--arch`).

    Attributes:
        dirs: The directories known to be there: those every target has
            (`EVERY_TARGET_HAS`), and those of the programs judged (`with_program`).
    """

    dirs: frozenset[str] = EVERY_TARGET_HAS
    where: str = "on the target"

    def with_program(self, path: str) -> NotRead:
        """These files, with the directories of the program at `path` known to be there."""
        found = set(self.dirs)
        head = os.path.dirname(os.path.normpath(path))
        while head not in found:
            found.add(head)
            head = os.path.dirname(head)
        return attrs.evolve(self, dirs=frozenset(found))

    def is_dir(self, path: str) -> bool | None:
        """True for a directory known to be there; otherwise not known."""
        return True if os.path.normpath(path) in self.dirs else None

    def exists(self, path: str) -> bool | None:
        """True for a directory known to be there; otherwise not known."""
        return self.is_dir(path)

    def local(self, path: str) -> None:  # noqa: ARG002 - the protocol's signature
        """Nothing: the files are not read."""
        return

    def real(self, path: str) -> None:  # noqa: ARG002 - the protocol's signature
        """Nothing: the files are not read."""
        return


THIS_MACHINE: Final = ThisMachine()
NOT_READ: Final = NotRead()

__all__ = [
    "KEY_SEPARATOR",
    "MAX_KEY_LEN",
    "Command",
    "Field",
    "Origin",
    "Rejection",
    "Rule",
    "RulesSource",
    "detect_syntax",
    "explain_syntax",
    "listing_problem",
    "parse_rules",
]

MAX_KEY_LEN: Final = 256
PATH_MAX: Final = 4096
NAME_MAX: Final = 255
KEY_SEPARATOR: Final = "\x01"
UID_UNSET: Final = 0xFFFFFFFF
U32: Final = 0xFFFFFFFF
MAX_FIELDS: Final = 64
BITMASK_BITS: Final = 64 * 32

Syntax = Literal["rules", "listing"]
ListName = Literal["exit", "task", "user", "exclude", "filesystem"]
Action = Literal["always", "never"]
Op = Literal["=", "!=", "<", ">", "<=", ">=", "&", "&="]

OPERATORS: Final[tuple[Op, ...]] = ("!=", ">=", "<=", "&=", "=", ">", "<", "&")

# Field kinds, as libaudit's audit_rule_fieldpair_data switches on them.
UID_FIELDS: Final = frozenset({"uid", "euid", "suid", "fsuid", "auid", "obj_uid"})
GID_FIELDS: Final = frozenset({"gid", "egid", "sgid", "fsgid", "obj_gid"})
LSM_FIELDS: Final = frozenset(
    {
        "subj_user",
        "subj_role",
        "subj_type",
        "subj_sen",
        "subj_clr",
        "obj_user",
        "obj_role",
        "obj_type",
        "obj_lev_low",
        "obj_lev_high",
    }
)
STRING_FIELDS: Final = LSM_FIELDS | {"path", "dir", "exe", "key"}
ARG_FIELDS: Final = frozenset({"a0", "a1", "a2", "a3"})
EXIT_ONLY_FIELDS: Final = frozenset(
    {
        "obj_user",
        "obj_role",
        "obj_type",
        "obj_lev_low",
        "obj_lev_high",
        "path",
        "dir",
        "perm",
        "filetype",
        "devmajor",
        "devminor",
        "inode",
        "success",
        "exit",
        "ppid",
    }
)
FIELD_NAMES: Final = frozenset(
    {
        "pid",
        "uid",
        "euid",
        "suid",
        "fsuid",
        "gid",
        "egid",
        "sgid",
        "fsgid",
        "auid",
        "loginuid",
        "pers",
        "arch",
        "msgtype",
        "ppid",
        "sessionid",
        "devmajor",
        "devminor",
        "inode",
        "exit",
        "success",
        "path",
        "perm",
        "dir",
        "filetype",
        "fstype",
        "field_compare",
        "a0",
        "a1",
        "a2",
        "a3",
        "key",
        "exe",
        "saddr_fam",
        "loginuid_set",
    }
    | LSM_FIELDS
    | UID_FIELDS
    | GID_FIELDS
)
# Fields the kernel (audit_field_valid) refuses bit operators on.
# The kernel's audit_field_valid(): these fields take no bit operators (pers, devminor
# and a0..a3 take every operator)...
NO_BITOPS_FIELDS: Final = (
    UID_FIELDS
    | GID_FIELDS
    | {
        "pid",
        "msgtype",
        "ppid",
        "devmajor",
        "exit",
        "success",
        "inode",
        "sessionid",
        "subj_sen",
        "subj_clr",
        "obj_lev_low",
        "obj_lev_high",
        "saddr_fam",
    }
)
# ...and these only = and != (libaudit sends the others, the kernel answers EINVAL).
EQUALITY_ONLY_FIELDS: Final = frozenset(
    {
        "subj_user",
        "subj_role",
        "subj_type",
        "obj_user",
        "obj_role",
        "obj_type",
        "path",
        "dir",
        "key",
        "arch",
        "fstype",
        "perm",
        "filetype",
        "field_compare",
        "exe",
    }
)
# The `-C` comparisons, in AUDIT_COMPARE_* order (number = index + 1); auditctl -l prints
# them as these pairs whichever way round they were written.
COMPARISONS: Final = (
    ("uid", "obj_uid"),
    ("gid", "obj_gid"),
    ("euid", "obj_uid"),
    ("egid", "obj_gid"),
    ("auid", "obj_uid"),
    ("suid", "obj_uid"),
    ("sgid", "obj_gid"),
    ("fsuid", "obj_uid"),
    ("fsgid", "obj_gid"),
    ("uid", "auid"),
    ("uid", "euid"),
    ("uid", "fsuid"),
    ("uid", "suid"),
    ("auid", "fsuid"),
    ("auid", "suid"),
    ("auid", "euid"),
    ("euid", "suid"),
    ("euid", "fsuid"),
    ("suid", "fsuid"),
    ("gid", "egid"),
    ("gid", "fsgid"),
    ("gid", "sgid"),
    ("egid", "fsgid"),
    ("egid", "sgid"),
    ("sgid", "fsgid"),
)
COMPARABLE: Final = frozenset(COMPARISONS)
FILETYPES: Final = {
    "file": 0o100000,
    "dir": 0o040000,
    "socket": 0o140000,
    "link": 0o120000,
    "character": 0o020000,
    "block": 0o060000,
    "fifo": 0o010000,
}
FSTYPES: Final = {"debugfs": 0x64626720, "tracefs": 0x74726163}
PERM_BITS: Final = {"r": 4, "w": 2, "x": 1, "a": 8}
AF_MAX: Final = 46
_DEFAULT_MACHINE: Final = MACHINES["x86_64"]

_OPTSTRING: Final = "hicslDvtC:e:f:r:b:a:A:d:S:F:m:R:w:W:k:p:q:"
# Whether each short option takes an argument (built once, not per line).
_TAKES_ARG: Final = {
    c: _OPTSTRING[i + 1 : i + 2] == ":" for i, c in enumerate(_OPTSTRING) if c != ":"
}
_LONG_OPTS: Final = {
    "loginuid-immutable": False,
    "backlog_wait_time": True,
    "reset-lost": False,
    "reset_backlog_wait_time_actual": False,
    "signal": True,
}


@attrs.frozen
class Origin:
    """Where a line came from.

    Attributes:
        path: The file, `-` for stdin, or `auditctl -l` for the running rules.
        line: 1-based line number.
        text: The line as written (without the newline).
    """

    path: str
    line: int
    text: str

    def __str__(self) -> str:
        """Return `path:line`."""
        return f"{self.path}:{self.line}"


@attrs.frozen
class Field:
    """One `-F name<op>value` condition (or `-C` comparison) in kernel form.

    Attributes:
        name: Canonical field name (`loginuid` is stored as `auid`).
        op: The operator.
        value: The value the kernel compares with: an unsigned 32-bit number, or a string
            for path/dir/exe/LSM fields, or the other field's name for a `-C` comparison.
        text: The value as written.
        compare: True for a `-C` field-to-field comparison.
        ambiguous: For a `-w` read from `auditctl -l` on a directory: it may be a `dir=`
            tree watch or a `path=` watch on the directory itself (the listing prints both
            the same way). For an `exe=` read from `auditctl -l`: it may be `exe!=`
            (print_rule prints both as `exe=`).
    """

    name: str
    op: Op
    value: int | str
    text: str
    compare: bool = False
    ambiguous: bool = attrs.field(default=False, eq=False)

    def render(self) -> str:
        """Return the field as `auditctl -l` would print it (`auid!=-1` for unset)."""
        if self.compare:
            return f"-C {self.name}{self.op}{self.value}"
        if self.name == "auid" and self.value == UID_UNSET:
            return f"-F auid{self.op}-1"
        if self.name in ARG_FIELDS and isinstance(self.value, int):
            return f"-F {self.name}{self.op}0x{self.value:x}"
        if self.name == "perm" and isinstance(self.value, int):
            perms = "".join(c for c, bit in PERM_BITS.items() if self.value & bit)
            return f"-F perm={perms}"
        if self.name == "exit" and isinstance(self.value, int) and self.value & 0x80000000:
            code = (1 << 32) - self.value
            name = _errno.errorcode.get(code)
            return f"-F exit{self.op}-{name}" if name else f"-F exit{self.op}-{code}"
        return f"-F {self.name}{self.op}{self.value}"


@attrs.frozen(kw_only=True)
class Rule:
    """An audit rule in the form the kernel keeps it.

    Attributes:
        list: The filter list (`exit`, `task`, `user`, `exclude`, `filesystem`).
        action: `always` or `never`.
        fields: The conditions, in the order they were given (keys excluded).
        syscalls: The syscall numbers of the mask; None means every syscall (`-S all`).
        syscall_table: The table the names were resolved in (for display).
        keys: The filter keys, in order (the kernel stores them joined with 0x01).
        watch: The path of a `-w` watch, for display in the watch form.
        origin: The line that produced the rule.
        listed_watch: Read from a watch line of `auditctl -l` (`-w PATH -p PERMS`, or
            ` -p PERMS...`). auditctl prints a rule of only path=, dir=, perm= and key
            fields on every syscall in that form whatever its action: the `always` read
            here may be `never` (`-a never,exit -F path=P -F perm=x` lists as `-w P -p x`).
    """

    list: ListName
    action: Action
    fields: tuple[Field, ...] = ()
    syscalls: frozenset[int] | None = None
    syscall_table: str | None = None
    keys: tuple[str, ...] = ()
    watch: str | None = None
    origin: Origin
    listed_watch: bool = attrs.field(default=False, eq=False)

    @property
    def key(self) -> str:
        """The filter key as the kernel stores it (keys joined with 0x01), or ``""``."""
        return KEY_SEPARATOR.join(self.keys)

    def field(self, name: str) -> Field | None:
        """Return the first field called `name`, or None."""
        for field in self.fields:
            if field.name == name and not field.compare:
                return field
        return None

    @property
    def arch(self) -> int | None:
        """The AUDIT_ARCH value of an `arch=` field, or None when the rule has none."""
        field = self.field("arch")
        return field.value if field is not None and isinstance(field.value, int) else None

    def identity(self) -> tuple[object, ...]:
        """What the kernel compares to decide that two rules are the same rule."""
        return (
            self.list,
            self.action,
            tuple((f.name, f.op, f.value, f.compare) for f in self.fields),
            self.syscalls,
            self.key,
        )

    def signature(self) -> tuple[object, ...]:
        """Order-insensitive identity, for comparing a file with `auditctl -l` output.

        `auditctl -l` prints path= and dir= watches alike (`-w`), so they compare equal.
        """
        return (
            self.list,
            self.action,
            tuple(
                sorted(
                    (
                        "watch" if f.name in {"path", "dir"} else f.name,
                        f.op,
                        str(f.value),
                        f.compare,
                    )
                    for f in self.fields
                )
            ),
            self.syscalls,
            self.key,
        )

    def syscall_names(self) -> str:
        """Return the `-S` list as auditctl -l prints it (names in number order)."""
        if self.syscalls is None:
            return "all"
        table = ABIS.get(self.syscall_table or "")
        names = []
        for number in sorted(self.syscalls):
            name = table.name(number) if table is not None else None
            names.append(name or str(number))
        return ",".join(names)

    def render(self) -> str:
        """Return the rule as `auditctl -l` would print it (canonical, one line)."""
        key_text = " ".join(f"-k {k}" for k in self.keys)
        if self.watch is not None and self._is_watch():
            perm = self.field("perm")
            perm_text = f" -p {perm.render().split('=', 1)[1]}" if perm is not None else ""
            return f"-w {self.watch}{perm_text}" + (f" {key_text}" if key_text else "")
        parts = [f"-a {self.action},{self.list}"]
        for arch in self.fields:
            if arch.name != "arch" or arch.compare:
                continue
            abi = abi_by_audit_arch(arch.value) if isinstance(arch.value, int) else None
            parts.append(f"-F arch{arch.op}{abi.bits if abi else arch.text}")
        if self.list == "exit" and self.syscalls != frozenset():
            parts.append(f"-S {self.syscall_names()}")
        parts.extend(f.render() for f in self.fields if f.name != "arch" or f.compare)
        parts.extend(f"-F key={k}" for k in self.keys)
        return " ".join(parts)

    def _is_watch(self) -> bool:
        return (
            self.list == "exit"
            and self.syscalls is None
            and all(f.name in {"path", "dir", "perm"} for f in self.fields)
        )


CommandKind = Literal[
    "add",
    "prepend",
    "delete",
    "delete_all",
    "enable",
    "failure",
    "backlog",
    "rate",
    "backlog_wait_time",
    "ignore_errors",
    "continue_on_error",
    "loginuid_immutable",
    "noop",
]


@attrs.frozen(kw_only=True)
class Command:
    """One accepted line: what auditctl would send to the kernel.

    Attributes:
        kind: What the line does.
        origin: The line.
        rule: The rule for `add`/`prepend`/`delete`.
        value: The number for `enable`/`failure`/`backlog`/`rate`/`backlog_wait_time`.
        key: For `delete_all` with `-k`, only rules with this key are deleted.
        warnings: auditctl's warnings for this line (they do not stop loading).
        watch_kind: For a `-w` watch, `path` or `dir` as auditctl decided by stat().
    """

    kind: CommandKind
    origin: Origin
    rule: Rule | None = None
    value: int | None = None
    key: str | None = None
    warnings: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class Rejection:
    """A line auditctl itself refuses (before anything reaches the kernel).

    Attributes:
        origin: The line.
        message: auditctl's message (or ours, in its words).
        hint: What to do about it.
    """

    origin: Origin
    message: str
    hint: str


@attrs.frozen(kw_only=True)
class RulesSource:
    """A parsed rules text.

    Attributes:
        path: Where it came from.
        syntax: `rules` (for `auditctl -R`) or `listing` (captured `auditctl -l`).
        items: One Command or Rejection per non-blank, non-comment line, in order.
        machine: The machine the names and `b64`/`b32` were resolved for.
        syntax_reason: Why the text was taken as `syntax` when it was detected (empty when
            the caller said which it is).
    """

    path: str
    syntax: Syntax
    items: tuple[Command | Rejection, ...]
    machine: Machine
    syntax_reason: str = ""

    @property
    def rejections(self) -> tuple[Rejection, ...]:
        """The rejected lines."""
        return tuple(i for i in self.items if isinstance(i, Rejection))


# --------------------------------------------------------------------------------------
# Tokenising like auditctl's fileopt(): preprocess `\ ` and `\\`, split on spaces only.


def split_line(text: str) -> list[str]:
    r"""Split one rules-file line into words exactly as auditctl does.

    Only the space character separates words (a tab is part of a word); `\\ ` is a space
    inside a word and `\\\\` a backslash.
    """
    if "\\" not in text:
        # No escapes: splitting on single spaces and dropping the empty words is the same.
        return [word for word in text.split(" ") if word]
    words: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in " \\":
            current.append(text[i + 1])
            i += 2
            continue
        if char == " ":
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
        i += 1
    if current:
        words.append("".join(current))
    return words


def c_strto(text: str, *, signed: bool = False) -> int | None:
    """Read the leading number of `text` like C's strtol/strtoul(text, NULL, 0) on 64 bits.

    Returns None when no digits are read. Hex needs `0x`; a leading `0` means octal; trailing
    junk is ignored. strtoul saturates at ULONG_MAX and negates modulo 2**64; strtol
    saturates at LONG_MAX / LONG_MIN. The result is the C value (signed for strtol).
    """
    s = text.lstrip(" \t\n\v\f\r")
    negative = False
    if s[:1] in "+-" and s:
        negative = s[0] == "-"
        s = s[1:]
    base = 10
    digits = "0123456789"
    if s[:2].lower() == "0x" and len(s) > 2 and s[2] in "0123456789abcdefABCDEF":
        base, s, digits = 16, s[2:], "0123456789abcdefABCDEF"
    elif s[:1] == "0":
        base, digits = 8, "01234567"
    end = 0
    while end < len(s) and s[end] in digits:
        end += 1
    if end == 0:
        return None
    value = int(s[:end], base)
    if signed:
        if negative:
            return -min(value, 1 << 63)
        return min(value, (1 << 63) - 1)
    if value >= 1 << 64:
        return (1 << 64) - 1
    return ((-value) if negative else value) % (1 << 64)


def c_strtoul(text: str) -> int | None:
    """strtoul(text, NULL, 0) reduced to the unsigned 32 bits a kernel field value keeps."""
    value = c_strto(text)
    return None if value is None else value & U32


def _c_strtol(text: str) -> int | None:
    """strtol(text, NULL, 0) reduced to 32 bits (kernel field values are __u32)."""
    value = c_strto(text, signed=True)
    return None if value is None else value & U32


# --------------------------------------------------------------------------------------
# getopt_long emulation (GNU, permuting, opterr=0).


class _Opt(NamedTuple):
    name: str  # short letter or long name
    arg: str | None
    word: str  # the word that held the option (for "Option %s is invalid")
    optind: int  # GNU getopt's optind after this option (for the -l/-s/-D checks)


def _getopt(words: Sequence[str]) -> tuple[list[_Opt | str], list[str]]:
    """Return the options in order (a bare string marks an invalid option) and non-options."""
    takes_arg = _TAKES_ARG
    result: list[_Opt | str] = []
    extra: list[str] = []
    i = 1
    while i < len(words):
        word = words[i]
        if word == "--":
            extra.extend(words[i + 1 :])
            break
        if word.startswith("--"):
            name, eq, inline = word[2:].partition("=")
            matches = [n for n in _LONG_OPTS if n == name] or [
                n for n in _LONG_OPTS if n.startswith(name)
            ]
            i += 1
            if len(matches) != 1:
                result.append(word)
                continue
            long_name = matches[0]
            if _LONG_OPTS[long_name]:
                if eq:
                    result.append(_Opt(long_name, inline, word, i))
                elif i < len(words):
                    result.append(_Opt(long_name, words[i], word, i + 1))
                    i += 1
                else:
                    result.append(word)
            elif eq:
                result.append(word)
            else:
                result.append(_Opt(long_name, None, word, i))
            continue
        if word.startswith("-") and len(word) > 1:
            j = 1
            i += 1
            while j < len(word):
                letter = word[j]
                if letter not in takes_arg:
                    result.append(word)
                    j += 1
                    continue
                if takes_arg[letter]:
                    if j + 1 < len(word):
                        result.append(_Opt(letter, word[j + 1 :], word, i))
                    elif i < len(words):
                        result.append(_Opt(letter, words[i], word, i + 1))
                        i += 1
                    else:
                        result.append(word)
                    break
                # GNU getopt moves optind past a word only once its last letter is read:
                # after `-D` in `-D\r` (or `-ic`) optind still names that word, so
                # setopt's end-of-options check fails the line.
                result.append(_Opt(letter, None, word, i if j == len(word) - 1 else i - 1))
                j += 1
            continue
        extra.append(word)
        i += 1
    return result, extra


# --------------------------------------------------------------------------------------
# One line, the way auditctl's setopt() + handle_request() treat it.


class _LineError(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


_HINT_SYNTAX = "see auditctl(8) for the option syntax; until this line is fixed, `auditctl -R` \
stops here and loads nothing after it"

_FILTER_LISTS: Final = {"exit", "task", "user", "exclude", "filesystem"}


#: Fields whose reading changes the line's state (`arch` selects the syscall table, a
#: path, exe or perm allows a key, fstype marks a filesystem rule): read every time.
_FIELDS_WITH_STATE: Final = STRING_FIELDS | {"arch", "fstype", "perm"}
#: Every other field reads the same on every line of the same list: `-F arch=b64`,
#: `-F auid>=1000` and `-F auid!=unset` are read once per file, not once per rule.
_FIELDS_READ: dict[tuple[str | None, str, str], Field] = {}
_FIELDS_READ_MAX: Final = 1 << 16


@attrs.define
class _RuleBuilder:
    """Mutable state of one line, as auditctl's globals (`add`, `del`, `_audit_elf`...)."""

    machine: Machine
    origin: Origin
    files: TargetFiles
    syntax: Syntax = "rules"
    op: Literal["add", "prepend", "delete"] | None = None
    list_name: ListName | None = None
    action: Action | None = None
    fields: list[Field] = attrs.Factory(list)
    syscalls: set[int] | None = attrs.Factory(set)
    elf: int | None = None
    syscall_added: bool = False
    perm_added: bool = False
    exe_added: bool = False
    fs_added: bool = False
    keys: list[str] = attrs.Factory(list)
    watch: str | None = None
    warnings: list[str] = attrs.Factory(list)

    # -- -a / -A / -d -------------------------------------------------------------------
    def setup(self, text: str, op: Literal["add", "prepend", "delete"]) -> bool:
        """Handle `-a`/`-A`/`-d`; return False for the deprecated `possible` action."""
        if self.op is not None:
            msg = "Multiple rule insert/delete operations are not allowed"
            raise _LineError(msg, "put each rule on its own line")
        first, comma, second = text.partition(",")
        bad = f"{_setup_word(op)} rule - bad keyword {text}"
        hint = (
            "the list is one of exit, task, user, exclude, filesystem and the action always or "
            "never, e.g. `-a always,exit`"
        )
        if not comma or "," in second:
            raise _LineError(bad, hint)
        # audit_rule_setup(): try the first word as an action, else as a list; then the
        # second word as whatever is still missing. `exit,possible` is the deprecated action
        # (auditctl drops the line silently) but `possible,exit` is a bad keyword.
        actions = {"always", "never"}
        action: str | None = first if first in actions else None
        filter_list: str | None = None
        if first not in actions and first != "possible":
            if first not in _FILTER_LISTS:
                raise _LineError(bad, hint)
            filter_list = first
        if filter_list is None:
            filter_list = second if second in _FILTER_LISTS else None
        elif second == "possible":
            return False
        elif second in actions:
            action = second
        else:
            raise _LineError(bad, hint)
        if filter_list is None or action is None:
            raise _LineError(bad, hint)
        self.op = op
        self.list_name = filter_list  # type: ignore[assignment]
        self.action = action  # type: ignore[assignment]
        return True

    # -- -S -------------------------------------------------------------------------------
    def add_syscalls(self, text: str) -> None:
        """Handle `-S`."""
        if self.list_name in {"task", "user", "filesystem", "exclude"}:
            msg = f"Error: syscall auditing being added to {self.list_name} list"
            raise _LineError(msg, f"remove -S from a {self.list_name} rule")
        unknown_arch = self.elf is None
        if unknown_arch:
            self.elf = self.machine.native.audit_arch
        for name in text.split(","):
            if not name:
                continue
            self._add_syscall(name)
        self.syscall_added = True
        if unknown_arch and self.op is not None and self.machine.name == "x86_64":
            self._check_mismatch(text)

    def _add_syscall(self, name: str) -> None:
        if name == "all":
            self.syscalls = None
            return
        abi = abi_by_audit_arch(self.elf or 0)
        number = abi.number(name) if abi is not None else None
        if number is None and name[:1].isdigit():
            number = _c_strtol_signed(name)
        if number is None or number < 0 or number >= BITMASK_BITS:
            where = f" for {abi.table}" if abi is not None else ""
            msg = f"Syscall name unknown: {name}"
            raise _LineError(
                msg,
                f"`{name}` does not exist{where}; render rules per arch and list only the "
                "syscalls that exist there (e.g. create_module and query_module do not "
                "exist on aarch64)",
            )
        if self.syscalls is not None:
            self.syscalls.add(number)

    def _check_mismatch(self, text: str) -> None:
        compat = self.machine.compat
        native = self.machine.native
        names = [n for n in text.split(",") if n and n != "all"]
        if any(native.number(n) != compat.number(n) for n in names if not n[:1].isdigit()):
            self.warnings.append("WARNING - 32/64 bit syscall mismatch, you should specify an arch")

    # -- -F / -C --------------------------------------------------------------------------
    def add_field(self, pair: str) -> None:
        """Handle `-F name<op>value`."""
        if self.op is None:
            msg = "List must be given before field"
            raise _LineError(msg, "start the rule with `-a always,exit` (or -A/-d)")
        if pair.startswith("key="):
            self.add_key(pair[4:], from_field=True)
            return
        self.check_room(pair)
        known = (self.list_name, self.syntax, pair)
        field = _FIELDS_READ.get(known)
        if field is not None:
            self.fields.append(field)
            return
        name, op, value = _split_pair(pair)
        if name == "key":
            # Not `key=`: libaudit sends it as a field of its own, here and now (the kernel
            # keeps its value as the rule's key, whatever the operator; see build()).
            if self.list_name in {"exclude", "user"}:
                msg = f"{pair} Field not supported by this filter"
                raise _LineError(msg, "keys belong on exit, task and filesystem rules")
            if not self.key_allowed():
                msg = "Key field needs a watch, syscall or exe path given prior to it"
                raise _LineError(msg, "put the key after -S, -w or -F path=/dir=/exe=")
        canonical = "auid" if name == "loginuid" else name
        field = self._field_value(canonical, op, value, pair)
        if canonical not in _FIELDS_WITH_STATE:
            if len(_FIELDS_READ) >= _FIELDS_READ_MAX:
                _FIELDS_READ.clear()
            _FIELDS_READ[known] = field
        self.fields.append(field)

    def check_room(self, pair: str) -> None:
        """Refuse a field once the rule is full, as libaudit does (EAU_FIELDTOOMANY).

        A rule holds at most AUDIT_MAX_FIELDS (64) fields, and libaudit refuses to add one
        once a rule has 63, so a rule auditctl sends has at most 63 fields *including* its
        key: `-F arch`, every `-F`/`-C`, the path and perm fields of `-w` (and `-p`) and the
        joined `-k`/`-F key=` keys (one field, added last). `-S` adds none.
        """
        if len(self.fields) >= MAX_FIELDS - 1:
            msg = f"Too many fields in rule: {pair}"
            raise _LineError(
                msg,
                f"a rule may hold at most {MAX_FIELDS - 1} fields counting -F arch, each -F "
                "and -C, a watch's path and permissions, and the key: split the rule",
            )

    def _field_value(self, name: str, op: Op, value: str, pair: str) -> Field:
        lst = self.list_name
        if lst == "exclude" and name not in {
            "pid",
            "uid",
            "gid",
            "auid",
            "msgtype",
            "subj_user",
            "subj_role",
            "subj_type",
            "subj_sen",
            "subj_clr",
            "exe",
        }:
            msg = (
                f"{pair} Only msgtype, pid, uid, gid, auid, subj_*, and exe fields can be used "
                "with exclude filter"
            )
            raise _LineError(msg, "the exclude list filters record types, not syscalls")
        if name in EXIT_ONLY_FIELDS and lst != "exit":
            msg = f"{pair} field can only be used on the exit filter list"
            raise _LineError(msg, "use this field in an `-a always,exit` rule")
        if name in UID_FIELDS:
            return Field(name, op, _uid_value(value, pair), value)
        if name in GID_FIELDS:
            return Field(name, op, _gid_value(value, pair), value)
        if name == "exit":
            return Field(name, op, _exit_value(value, pair), value)
        if name == "msgtype":
            if lst not in {"exclude", "user"}:
                msg = f"{pair} msgtype field can only be used with exclude or user filter list"
                raise _LineError(msg, "use msgtype only in `-a always,exclude` rules")
            number = _c_strtol(value) if value[:1].isdigit() else MESSAGE_TYPES.get(value)
            if number is None:
                msg = f"{pair} -F unknown message type - {value}"
                raise _LineError(msg, "use a type name as `ausearch -m` spells it")
            return Field(name, op, number & U32, value)
        if name in STRING_FIELDS:
            return self._string_field(name, op, value, pair)
        if name == "arch":
            return self._arch_field(op, value, pair)
        if name == "perm":
            if op != "=":
                msg = f"{pair} Only the = operator can be used with perm"
                raise _LineError(msg, "write `-F perm=x`")
            # auditctl sets _audit_permadded for a perm field too: a key may follow it, and
            # the rule, with no -S, gets -S all (the kernel then matches perm=x on every
            # execve/execveat, audit_match_perm).
            self.perm_added = True
            return Field(name, op, _perm_value(value, pair), value)
        if name == "filetype":
            if self.syntax == "listing" and value.isdigit():
                return Field(name, op, int(value), value)  # auditctl -l prints the number
            if value not in FILETYPES:
                msg = f"{pair} Unknown file type"
                raise _LineError(msg, f"use one of {', '.join(FILETYPES)}")
            return Field(name, op, FILETYPES[value], value)
        if name == "fstype":
            if lst != "filesystem":
                msg = f"{pair} field is not valid for the filter"
                raise _LineError(msg, "fstype belongs on the filesystem list")
            if op not in {"=", "!="}:
                msg = f"{pair} Only the = and != operators can be used with this field"
                raise _LineError(msg, "use = or !=")
            number = c_strtoul(value) if value[:1].isdigit() else FSTYPES.get(value)
            if number is None:
                msg = f"{pair} Unknown file system type"
                raise _LineError(msg, "use debugfs or tracefs")
            self.fs_added = True
            return Field(name, op, number, value)
        if name in ARG_FIELDS:
            number = _signed_or_unsigned(value)
            if number is None:
                msg = f"{pair} Field value must be numeric"
                raise _LineError(msg, "a0..a3 take numbers")
            return Field(name, op, number, value)
        if name == "sessionid":
            if lst not in {"exclude", "user", "exit"}:
                msg = f"{pair} Field not supported by this filter"
                raise _LineError(msg, "sessionid works on the exit list")
            number = UID_UNSET if value == "unset" else _signed_or_unsigned(value)
            return Field(name, op, number if number is not None else 0, value)
        if name == "saddr_fam":
            number = c_strtoul(value) or 0
            if number >= AF_MAX:
                msg = f"{pair} Field value too large"
                raise _LineError(msg, "use an address family number")
            return Field(name, op, number, value)
        if name == "field_compare":
            number = _c_strtol(value) if value[:1].isdigit() else None
            if number is None:
                msg = f"-F value should be number for {pair}"
                raise _LineError(msg, "field_compare takes an AUDIT_COMPARE_* number")
            if 1 <= number <= len(COMPARISONS):
                return _compare_field(COMPARISONS[number - 1], op, pair)
            return Field(name, op, number, value)
        if name == "inode" and op not in {"=", "!="}:
            msg = f"{pair} Only the = and != operators can be used with this field"
            raise _LineError(msg, "use = or !=")
        if self.syntax == "listing" and name != "inode":
            # auditctl -l prints these values signed (pid=-1): read them back leniently.
            listed = _signed_or_unsigned(value, signed_digits=True)
            if listed is not None:
                return Field(name, op, listed, value)
        if not value[:1].isdigit():
            msg = f"{pair} Field value must be numeric"
            raise _LineError(msg, f"{name} takes a number")
        number = c_strtoul(value) if name == "inode" else _c_strtol(value)
        return Field(name, op, number or 0, value)

    def _string_field(self, name: str, op: Op, value: str, pair: str) -> Field:
        if name == "exe":
            if op not in {"=", "!="}:
                msg = f"{pair} Only the = and != operators can be used with this field"
                raise _LineError(msg, "use exe= or exe!=")
            self.exe_added = True
            if self.syntax == "listing":
                self.warnings.append(_EXE_LISTED.format(value=value))
                return Field(name, op, value, value, ambiguous=True)
        if name in {"path", "dir"}:
            self.perm_added = True
        if len(value.encode(errors="surrogateescape")) > PATH_MAX:
            msg = "String value too long"
            raise _LineError(msg, f"{pair[:40]}...: string values hold at most {PATH_MAX} bytes")
        return Field(name, op, value, value)

    def _arch_field(self, op: Op, value: str, pair: str) -> Field:
        if self.syscall_added:
            msg = "arch must be before -S"
            raise _LineError(
                msg,
                "write `-F arch=b64` before `-S`; the syscall names are resolved in the "
                "table of the arch given before them",
            )
        if op not in {"=", "!="}:
            msg = "arch only takes = or != operators"
            raise _LineError(msg, "write `-F arch=b64` or `-F arch=b32`")
        elf = resolve_arch(value, self.machine)
        if elf is None:
            msg = f"{pair} Elf type unknown"
            raise _LineError(msg, "use b64, b32 or a machine name such as x86_64")
        self.elf = elf
        return Field("arch", op, elf, value)

    def add_compare(self, pair: str) -> None:
        """Handle `-C left<op>right`."""
        self.check_room(pair)
        if "!=" in pair:
            left, right, op = *pair.split("!=", 1), "!="
        elif "=" in pair:
            left, right, op = *pair.split("=", 1), "="
        else:
            msg = f"{pair} Only the = and != operators can be used with this field"
            raise _LineError(msg, "write e.g. `-C auid!=uid`")
        left = "auid" if left == "loginuid" else left
        right = "auid" if right == "loginuid" else right
        if self.list_name != "exit":
            msg = f"{pair} can only be used with exit filter list"
            raise _LineError(msg, "field comparisons (-C) work only in exit rules")
        if (left, right) in COMPARABLE:
            canonical = (left, right)
        elif (right, left) in COMPARABLE:
            canonical = (right, left)
        else:
            msg = f"-C incompatible comparison {pair}"
            raise _LineError(msg, "see auditctl(8) -C for the comparable fields")
        self.fields.append(_compare_field(canonical, op, pair))

    # -- -k -------------------------------------------------------------------------------
    def add_key(self, key: str, *, from_field: bool = False) -> None:
        """Handle `-k` and `-F key=`."""
        if not from_field and (
            not (self.syscall_added or self.perm_added or self.exe_added or self.fs_added)
            or self.op is None
        ):
            msg = "key option needs a watch or syscall given prior to it"
            raise _LineError(msg, "put -k after -S, -w or -F path=/dir=/exe=")
        # `-F key=` is only checked once the whole line is read (see key_allowed).
        # auditctl keeps one key string: a separator goes in only when it is not empty, so
        # an empty `-F key=` first adds nothing and an empty one later adds the separator.
        current = self.key
        joined = f"{current}{KEY_SEPARATOR}{key}" if current else key
        if len(joined.encode(errors="surrogateescape")) > MAX_KEY_LEN:
            msg = "key option exceeds size limit"
            raise _LineError(msg, f"keys (joined) may be at most {MAX_KEY_LEN} bytes")
        if KEY_SEPARATOR in key:
            self.warnings.append(f"key {key!r} has illegal character")
        if current:
            self.keys.append(key)
        elif key:
            self.keys = [key]

    @property
    def key(self) -> str:
        """The key string as auditctl builds it (the keys joined with 0x01)."""
        return KEY_SEPARATOR.join(self.keys)

    def key_allowed(self) -> bool:
        """Whether libaudit accepts the key field at the end of the line (EAU_KEYDEP)."""
        return self.syscall_added or self.perm_added or self.exe_added or self.fs_added

    # -- -w / -p --------------------------------------------------------------------------
    def add_watch(self, path: str, *, delete: bool) -> None:
        """Handle `-w`/`-W`."""
        if not delete and self.op is not None:
            msg = "watch option can't be given with a syscall"
            raise _LineError(msg, "write a watch as `-w PATH -p PERMS -k KEY` on its own")
        _check_watch_path(path)
        if self.fields:
            msg = "Rule is not empty"
            raise _LineError(msg, "-w must be the first option of its line")
        # auditctl trims trailing slashes (when the path is longer than 2 characters).
        trailing = path.endswith("/")
        if len(path) > 2:
            path = path.rstrip("/") or "/"
        self.op = "delete" if delete else "add"
        self.list_name = "exit"
        self.action = "always"
        self.syscall_added = True
        self.perm_added = True
        self.syscalls = None
        is_dir = self.files.is_dir(path)
        if is_dir is None and (trailing or path.rsplit("/", 1)[-1] in {".", ".."}):
            is_dir = True  # a directory wherever it exists (`/x/..` does only as a directory)
        # Not known: a watch of the file, the narrower one (a tree watch records all it does).
        kind = "dir" if is_dir else "path"
        self.watch = path
        ambiguous = self.syntax == "listing"
        self.fields.append(Field(kind, "=", path, path, ambiguous=ambiguous))
        self.fields.append(Field("perm", "=", 15, "rwxa"))

    def set_perms(self, text: str) -> None:
        """Handle `-p`."""
        if self.op is None:
            msg = "permission option needs a watch given prior to it"
            raise _LineError(msg, "write `-w PATH -p x`")
        bits = _perm_bits(
            text,
            too_long=f"permission {text} is too long",
            bad=lambda char: f"Permission {char} isn't supported",
        )
        if not self.fields:
            msg = "Permissions should be preceeded by other fields"  # codespell:ignore
            raise _LineError(msg, "write `-w PATH -p x`")
        # audit_update_watch_perms() sets every perm field, or adds one if there is room.
        updated = False
        for i, field in enumerate(self.fields):
            if field.name == "perm" and not field.compare:
                self.fields[i] = Field("perm", "=", bits, text)
                updated = True
        if not updated:
            if len(self.fields) >= MAX_FIELDS - 1:
                msg = "Too many fields when adding permissions"
                raise _LineError(msg, f"a rule may hold at most {MAX_FIELDS - 1} fields")
            self.fields.append(Field("perm", "=", bits, text))
        self.perm_added = True

    def build(self) -> Rule:
        """Return the finished rule (auditctl adds `-S all` when no syscall was given)."""
        assert self.list_name is not None  # noqa: S101 - guaranteed by the caller
        assert self.action is not None  # noqa: S101
        syscalls: frozenset[int] | None
        if self.list_name != "exit" or self.syscalls is None:
            syscalls = None
        elif self.syscall_added:
            # The kernel turns the top 16 bits of the mask into syscall classes (directory
            # writes, chattr, read, write, signal): their members are not modelled, and no
            # class holds a module syscall or execve, so they are dropped here.
            syscalls = frozenset(n for n in self.syscalls if n < BITMASK_BITS - 16)
        elif self.syntax == "listing" and self.watch is None:
            syscalls = frozenset()  # auditctl -l omits -S only for an empty mask
        else:
            syscalls = None
        abi = abi_by_audit_arch(self.elf or self.machine.native.audit_arch)
        fields, keys = self.fields, self.keys
        lone = [f for f in fields if f.name == "key" and not f.compare]
        if len(lone) == 1 and lone[0].op == "!=" and not keys:
            # The kernel stores a key field's value as the rule's key without looking at its
            # operator: `-F key!=k` records with key "k" (`auditctl -l`: `-F key=k`). With
            # another key field, or another operator, the kernel refuses the rule (loader).
            fields = [f for f in fields if f is not lone[0]]
            keys = [str(lone[0].value)]
        return Rule(
            list=self.list_name,
            action=self.action,
            fields=tuple(fields),
            syscalls=syscalls,
            syscall_table=abi.table if abi is not None else None,
            keys=tuple(keys),
            watch=self.watch,
            origin=self.origin,
            listed_watch=self.syntax == "listing" and self.watch is not None,
        )


def _compare_field(pair: tuple[str, str], op: str, text: str) -> Field:
    """A field comparison in kernel form (AUDIT_FIELD_COMPARE with the pair's number)."""
    return Field(pair[0], op, pair[1], text, compare=True)  # type: ignore[arg-type]


def _setup_word(op: str) -> str:
    return {"add": "Append", "prepend": "Add", "delete": "Delete"}[op]


def _split_pair(pair: str) -> tuple[str, Op, str]:
    for op in OPERATORS:
        index = pair.find(op)
        if index >= 0:
            name, value = pair[:index], pair[index + len(op) :]
            break
    else:
        msg = f"{pair} Missing operation"
        raise _LineError(msg, "write the field as name=value (or != < > <= >= & &=)")
    # libaudit searches for the two-character operators first across the whole pair, so
    # `a<=b` is `<=` even though `=` appears too: the loop order above does the same.
    if not name:
        msg = f"{pair} Missing field name"
        raise _LineError(msg, "write the field as name=value")
    if not value:
        msg = f"{pair} Missing field value"
        raise _LineError(msg, "write the field as name=value")
    if name not in FIELD_NAMES:
        msg = f"{pair} Unknown field name"
        raise _LineError(msg, "see auditctl(8) for the field names")
    if name == "loginuid_set":
        msg = f"{pair} Unknown field name"
        raise _LineError(msg, "see auditctl(8) for the field names")
    return name, op, value


def _c_strtol_signed(text: str) -> int | None:
    """strtol(text, NULL, 0) as the signed C value (for syscall numbers)."""
    return c_strto(text, signed=True)


def _signed_or_unsigned(value: str, *, signed_digits: bool = False) -> int | None:
    """Read a number the way libaudit does.

    Digits go through strtoul (strtol when `signed_digits`); `-N` through strtol.
    """
    if value[:1].isdigit():
        return _c_strtol(value) if signed_digits else c_strtoul(value)
    if len(value) >= 2 and value[0] == "-" and value[1].isdigit():
        return _c_strtol(value)
    return None


def _uid_value(value: str, pair: str) -> int:
    number = _signed_or_unsigned(value)
    if number is not None:
        return number
    if value == "unset":
        return UID_UNSET
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        msg = f"Unknown user: {value}"
        raise _LineError(msg, f"{pair}: use a uid number or a user that exists here") from None


def _gid_value(value: str, pair: str) -> int:
    if value[:1].isdigit():
        number = _c_strtol(value)
        return number if number is not None else 0
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        msg = f"Unknown group: {value}"
        raise _LineError(msg, f"{pair}: use a gid number or a group that exists here") from None


def _exit_value(value: str, pair: str) -> int:
    number = _signed_or_unsigned(value, signed_digits=True)
    if number is not None:
        return number
    name = value.removeprefix("-")
    code = getattr(_errno, name, None) if name.isupper() else None
    if not isinstance(code, int):
        msg = f"{pair} -F unknown errno -"
        raise _LineError(msg, "use a number or an errno name such as -EPERM")
    return (-code if value.startswith("-") else code) & U32


def _perm_value(value: str, pair: str) -> int:
    return _perm_bits(
        value,
        too_long=f"{pair} String value too long",
        bad=lambda _char: f"{pair} Permission can only contain 'rwxa'",
    )


def _perm_bits(text: str, *, too_long: str, bad: Callable[[str], str]) -> int:
    """Read r/w/x/a permissions into AUDIT_PERM_* bits (at most 4 letters)."""
    if len(text) > 4:
        raise _LineError(too_long, "permissions are some of r, w, x, a")
    bits = 0
    for char in text:
        bit = PERM_BITS.get(char.lower())
        if bit is None:
            raise _LineError(bad(char), "permissions are some of r, w, x, a")
        bits |= bit
    return bits


def _check_watch_path(path: str) -> None:
    if len(path) >= PATH_MAX:
        msg = "The path passed for the watch is too big"
        raise _LineError(msg, "shorten the path")
    if not path.startswith("/"):
        msg = "The path must start with '/'"
        raise _LineError(msg, "watch an absolute path")
    if len(os.path.basename(path.rstrip("/") or "/")) > NAME_MAX:
        msg = "The base name of the path is too big"
        raise _LineError(msg, "shorten the file name")


_STOPPING = frozenset({"i", "c", "s", "v", "l", "signal"})  # setopt sets retval -2
_RETURNING = frozenset(
    {"m", "q", "t", "loginuid-immutable", "reset-lost", "reset_backlog_wait_time_actual"}
)  # setopt returns at once


def _parse_words(
    words: list[str],
    origin: Origin,
    machine: Machine,
    *,
    files: TargetFiles,
    syntax: Syntax,
    done: list[Command],
) -> None:
    """Append to `done` what auditctl sends for one line; raise _LineError when it fails.

    Options take effect in order, as in auditctl's setopt(): control options (`-e`, `-b`...)
    are sent as they are read, so a line can fail after some of them took effect. `-i`, `-c`,
    `-s`, `-l`, `-v` and `-D` end the option loop; anything after them is an error.
    """
    options, extra = _getopt(["auditctl", *words])
    builder = _RuleBuilder(machine=machine, origin=origin, files=files, syntax=syntax)
    count = len(words) + 1
    stopped_at: int | None = None
    for opt in options:
        if isinstance(opt, str):
            msg = f"Option {opt} on line {origin.line} is invalid"
            raise _LineError(msg, _HINT_SYNTAX)
        name, arg = opt.name, opt.arg or ""
        if name == "h":
            msg = "-h (help) is not a rule"
            raise _LineError(msg, "remove the line")
        if name in _RETURNING:
            if name == "m" and count > 3:
                msg = "The -m option must be only the only option and takes 1 parameter"
                raise _LineError(msg, "write `-m TEXT` alone")
            if name == "q" and builder.syscall_added:
                msg = "Syscall auditing requested for make equivalent"
                raise _LineError(msg, "write `-q MOUNT,SUBTREE` alone")
            kind: CommandKind = "loginuid_immutable" if name == "loginuid-immutable" else "noop"
            done.append(Command(kind=kind, origin=origin))
            return
        if name in _STOPPING:
            _stopping_option(name, count, origin, done)
            stopped_at = opt.optind
            break
        if name == "D":
            if count > 4 or count == 3:
                msg = "Wrong number of options for Delete all request"
                raise _LineError(msg, "write `-D` alone (or `-D -k KEY`)")
            key: str | None = None
            if count == 4:
                # auditctl looks at the word after -D and takes the 4th word as the key.
                after = words[opt.optind - 1] if opt.optind - 1 < len(words) else None
                if after != "-k":
                    msg = "Only the -k option is allowed"
                    raise _LineError(msg, "write `-D` alone (or `-D -k KEY`)")
                key = words[2]
            done.append(Command(kind="delete_all", origin=origin, key=key))
            stopped_at = count if key is not None else opt.optind
            break
        if name in {"e", "f"}:
            if arg not in {"0", "1", "2"}:
                word = "Enable" if name == "e" else "Failure"
                msg = f"{word} must be 0, 1, or 2 was {arg}"
                raise _LineError(msg, f"write `-{name} 1`")
            done.append(
                Command(kind="enable" if name == "e" else "failure", origin=origin, value=int(arg))
            )
        elif name in {"r", "b", "backlog_wait_time"}:
            if not arg[:1].isdigit():
                word = {"r": "Rate", "b": "Backlog", "backlog_wait_time": "Backlog_wait_time"}[name]
                msg = f"{word} must be a numeric value was {arg}"
                raise _LineError(msg, f"write e.g. `-{name} 8192`")
            kinds: dict[str, CommandKind] = {"r": "rate", "b": "backlog"}
            done.append(
                Command(
                    kind=kinds.get(name, "backlog_wait_time"), origin=origin, value=c_strtoul(arg)
                )
            )
        elif name in {"a", "A", "d"}:
            if "task" in arg and builder.syscall_added:
                msg = "Syscall auditing requested for task list"
                raise _LineError(msg, "task rules take no -S")
            op: Literal["add", "prepend", "delete"] = {"a": "add", "A": "prepend"}.get(
                name, "delete"
            )  # type: ignore[assignment]
            if not builder.setup(arg, op):
                return  # the deprecated `possible` action: auditctl drops the line silently
        elif name == "S":
            builder.add_syscalls(arg)
        elif name == "F":
            builder.add_field(arg)
        elif name == "C":
            builder.add_compare(arg)
        elif name == "R":
            msg = "Error - nested rule files not supported"
            raise _LineError(msg, "remove -R from the rules file")
        elif name in {"w", "W"}:
            builder.add_watch(arg, delete=name == "W")
        elif name == "k":
            builder.add_key(arg)
        elif name == "p":
            builder.set_perms(arg)
    if not options:
        msg = "parameter passed without an option given"
        raise _LineError(msg, _HINT_SYNTAX)
    if not extra and stopped_at is not None and stopped_at < count:
        word = words[stopped_at - 1]
        if word.startswith("-") and not word.startswith("--") and len(word) > 2:
            # getopt stopped inside this word (`-D\r`, `-ic`): what came before took effect.
            msg = f"{word!r}: auditctl acts on its first options, then fails on the rest"
            raise _LineError(msg, "write -c, -i, -D, -s, -l, -v alone, each on its own line")
    if extra or (stopped_at is not None and stopped_at < count):
        stray = " ".join(extra) if extra else " ".join(words[(stopped_at or 1) - 1 :])
        msg = f"parameter passed without an option given ({stray!r})"
        raise _LineError(
            msg,
            "a `#` comment must start the line (auditctl has no end-of-line comments), and "
            "-c, -i, -D, -s, -l take no other option on their line; otherwise remove the "
            "stray word",
        )
    if stopped_at is not None:
        return
    if builder.keys and syntax == "rules":
        # auditctl adds the joined key as the rule's last field (and libaudit counts it).
        builder.check_room(f"key={builder.key}")
    if builder.keys and not builder.key_allowed() and syntax == "rules":
        msg = f"key={builder.key} Key field needs a watch, syscall or exe path given prior to it"
        raise _LineError(msg, "put the key after -S, -w or -F path=/dir=/exe=")
    if builder.op is None:
        if builder.syscall_added:
            msg = "Error - no list specified"
            raise _LineError(msg, "add `-a always,exit` to the rule")
        if not done:
            done.append(Command(kind="noop", origin=origin))
        return
    if (
        builder.op != "delete"
        and builder.list_name != "task"
        and not builder.syscall_added
        and syntax == "rules"
    ):
        builder.syscalls = None  # auditctl adds -S all
    rule = builder.build()
    done.append(
        Command(kind=builder.op, origin=origin, rule=rule, warnings=tuple(builder.warnings))
    )


def _stopping_option(name: str, count: int, origin: Origin, done: list[Command]) -> None:
    """-i, -c, -s, -l, -v, --signal: record what they do and check their own arguments."""
    if name == "i":
        done.append(Command(kind="ignore_errors", origin=origin))
    elif name == "c":
        done.append(Command(kind="continue_on_error", origin=origin))
    elif name == "s" and count > 3:
        msg = "Too many options for status command"
        raise _LineError(msg, "write `-s` alone")
    elif name == "l" and count > 4:
        msg = "Wrong number of options for list request"
        raise _LineError(msg, "write `-l` alone")
    else:
        done.append(Command(kind="noop", origin=origin))


#: `printf("%d")` and `printf("%u")` of a field value, as `auditctl -l` prints most fields.
_PRINTED_SIGNED: Final = re.compile(r"-?(?:0|[1-9][0-9]*)")
_PRINTED_UNSIGNED: Final = re.compile(r"0|[1-9][0-9]*")
#: `printf("0x%X")`: a0..a3 and unknown arches.
_PRINTED_HEX: Final = re.compile(r"0x(?:0|[1-9A-F][0-9A-F]*)")
_PRINTED_PAIR: Final = re.compile(r"([a-z_0-9]+)(!=|>=|<=|&=|=|>|<|&)(.+)", re.DOTALL)
_PRINTED_ERRNO: Final = re.compile(r"-[A-Z][A-Z0-9]*")
#: Fields `auditctl -l` prints as strings, whatever they hold.
_PRINTED_STRINGS: Final = LSM_FIELDS | {"path", "dir", "exe"}
#: auditctl -l prints the actions and lists the kernel can hold (`possible` and `entry`
#: are refused by current kernels).
_PRINTED_ACTIONS: Final = frozenset({"always", "never"})
_INT_MIN: Final = -(1 << 31)
_INT_MAX: Final = (1 << 31) - 1


def _canonical_perms(text: str) -> bool:
    """Whether `text` is a non-empty permission set in auditctl -l's order (r, w, x, a)."""
    order = "rwxa"
    return bool(text) and "".join(c for c in order if c in text) == text


def _printed_syscalls(text: str, abi: Abi | None) -> str | None:
    """Why `-S text` is not what auditctl -l prints for a mask in `abi`, or None."""
    if text == "all":
        return None
    previous = -1
    for item in text.split(","):
        if abi is not None and abi.number(item) is not None:
            number: int = abi.number(item)  # type: ignore[assignment]
        elif _PRINTED_UNSIGNED.fullmatch(item) and int(item) < BITMASK_BITS:
            number = int(item)
            if abi is not None and abi.name(number) is not None:
                return f"syscall {item} written as a number (auditctl -l prints its name)"
        else:
            where = f" in the {abi.table} table" if abi is not None else ""
            return f"syscall {item!r} is not a syscall name{where}"
        if number <= previous:
            return f"syscalls not in number order or repeated at {item!r}"
        previous = number
    return None


def _printed_field(name: str, op: str, value: str) -> str | None:
    """Why `-F name<op>value` is not how auditctl -l prints a field the kernel holds."""
    if name not in FIELD_NAMES or name in {"arch", "key", "loginuid", "field_compare"}:
        return f"field {name!r} is never printed in this form"
    if op in {"&", "&="} and name in NO_BITOPS_FIELDS:
        return f"{name} with a bit operator (the kernel refuses it)"
    if name == "exe" and op != "=":
        return "exe!= (auditctl -l prints exe!= as exe=)"
    if name in _PRINTED_STRINGS:
        if op in {"=", "!="} or name not in EQUALITY_ONLY_FIELDS:  # subj_sen< is a level
            return None
        return f"{name}{op} (only = and != exist)"
    if name == "perm":
        return None if op == "=" and _canonical_perms(value) else f"perm{op}{value}"
    if name in ARG_FIELDS:
        return None if _PRINTED_HEX.fullmatch(value) else f"{name} value {value!r} not 0x%X"
    if name == "inode":
        return None if _PRINTED_UNSIGNED.fullmatch(value) else f"inode value {value!r}"
    if name == "exit" and _PRINTED_ERRNO.fullmatch(value):
        return None
    if name == "msgtype" and value in MESSAGE_TYPES:
        return None
    if name == "fstype" and value in FSTYPES:
        return None
    if not _PRINTED_SIGNED.fullmatch(value) or not _INT_MIN <= int(value) <= _INT_MAX:
        # `unset`, 4294967295, 0x3e8, 01750, user names: what people write, never printed.
        return f"{name}{op}{value} (auditctl -l prints this value as a signed decimal)"
    if value == "-1" and name in (UID_FIELDS | GID_FIELDS) - {"auid"}:
        return f"{name}{op}-1 (the kernel refuses it)"
    if value == "-1" and name == "auid" and op not in {"=", "!="}:
        return f"auid{op}-1 (the kernel refuses it)"
    return None


def _printed_rule(words: list[str], machine: Machine) -> str | None:
    """Why an `-a` line is not one auditctl -l prints, or None."""
    action, _, list_name = words[1].partition(",")
    if action not in _PRINTED_ACTIONS or list_name not in _FILTER_LISTS:
        return f"`-a {words[1]}` (auditctl -l prints ACTION,LIST with action always or never)"
    pairs = words[2:]
    if len(pairs) % 2:
        return "an option without its argument"
    options = [(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)]
    index = 0
    abi: Abi | None = machine.native
    while (
        index < len(options)
        and options[index][0] == "-F"
        and options[index][1].startswith(("arch=", "arch!="))
    ):
        value = options[index][1].split("=", 1)[1]
        if value in {"b64", "b32"}:
            abi = machine.abi(value)
        elif _PRINTED_HEX.fullmatch(value):
            abi = abi_by_audit_arch(int(value, 16))
        else:
            return f"arch value {value!r} (auditctl -l prints b64, b32 or 0x%X)"
        index += 1
    if index < len(options) and options[index][0] == "-S":
        if list_name != "exit":
            return f"-S on the {list_name} list"
        problem = _printed_syscalls(options[index][1], abi)
        if problem is not None:
            return problem
        index += 1
    elif list_name == "exit":
        return "an exit rule without -S (auditctl -l prints -S for every exit rule)"
    keys_started = False
    for option, arg in options[index:]:
        if option == "-C":
            match = _PRINTED_PAIR.fullmatch(arg)
            compared = (match[1], match[3]) if match is not None else None
            if compared not in COMPARABLE or match is None or match[2] not in {"=", "!="}:
                return f"-C {arg} (not a comparison as auditctl -l prints it)"
        elif option != "-F":
            return f"{option} after the fields (auditctl -l prints -F arch, then -S, then -F/-C)"
        elif arg.startswith("key="):
            if len(arg) == 4 or KEY_SEPARATOR in arg:
                return "an empty key or one holding 0x01"
            keys_started = True
            continue
        else:
            match = _PRINTED_PAIR.fullmatch(arg)
            if match is None:
                return f"-F {arg} (not name<op>value)"
            problem = _printed_field(match[1], match[2], match[3])
            if problem is not None:
                return problem
        if keys_started:
            return "a field after the key (auditctl -l prints the key last)"
    return None


def _printed_watch(words: list[str]) -> str | None:
    """Why a `-w` line is not one auditctl -l prints (`-w PATH -p PERMS [-k KEY]...`)."""
    if len(words) < 4 or len(words) % 2 or not words[1].startswith("/"):
        return "not `-w /PATH -p PERMS [-k KEY]...`"
    if words[2] != "-p" or not _canonical_perms(words[3]):
        return f"watch permissions {' '.join(words[2:4])!r} (auditctl -l prints -p first, as rwxa)"
    for option, key in zip(words[4::2], words[5::2], strict=True):
        if option != "-k" or KEY_SEPARATOR in key:
            return f"{option} {key} after -p (auditctl -l prints only -k KEY there)"
    return None


#: How auditctl -l prints a rule whose first field is perm= when it takes it for a watch
#: (only path=, dir=, perm= and key fields, every syscall): ` -p PERMS`, then `-w PATH`
#: with no space before it, then ` -k KEY` per key. `-a always,exit -F perm=x -k k`
#: (auditctl adds -S all) is printed ` -p x -k k`.
_PRINTED_PERM_RULE: Final = re.compile(
    r" -p (?P<perms>[rwxa]{1,4})(?:-w (?P<path>/.*?))?(?P<keys>(?: -k [^ ]+)*)", re.DOTALL
)


def _listed_perm_rule(
    line: str, origin: Origin, machine: Machine, *, files: TargetFiles
) -> Command | None:
    """Read a ` -p PERMS[-w PATH] [-k KEY]...` line of auditctl -l, or None if it is not one."""
    match = _PRINTED_PERM_RULE.fullmatch(line)
    if match is None:
        return None
    perms = match["perms"]
    fields = [Field("perm", "=", _perm_bits(perms, too_long="", bad=str), perms)]
    path = match["path"]
    if path is not None:
        kind = "dir" if files.is_dir(path) else "path"
        fields.append(Field(kind, "=", path, path, ambiguous=True))
    keys = tuple(key for key in match["keys"].split(" -k ") if key)
    rule = Rule(
        list="exit",
        action="always",
        fields=tuple(fields),
        syscalls=None,
        syscall_table=machine.native.table,
        keys=keys,
        watch=path,
        origin=origin,
        listed_watch=True,
    )
    return Command(kind="add", origin=origin, rule=rule)


def listing_problem(line: str, machine: Machine) -> str | None:
    """Return why `line` is not a line `auditctl -l` prints, or None when it could be.

    Follows audit-userspace `src/auditctl-listing.c` (print_rule): single spaces, `-w PATH
    -p PERMS -k KEY...` for watches, otherwise `-a ACTION,LIST`, the `-F arch` fields, `-S`
    (names of the rule's arch in number order, or `all`), then every other field in kernel
    order with values as printf prints them (`auid!=-1`, never `unset`; `a0=0x10`; keys
    last as `-F key=`). Fields the kernel refuses are never printed either.
    """
    if line.startswith(" -p "):
        if _PRINTED_PERM_RULE.fullmatch(line):
            return None
        return "not ` -p PERMS[-w PATH] [-k KEY]...` (a rule of perm= first, printed as a watch)"
    if line != line.strip(" ") or "  " in line:
        # A CR or tab is printed as it is when a key, path or exe= value holds it (then a
        # rules file of the same text loads the same rule).
        return "spacing auditctl -l never prints (leading, trailing or double spaces)"
    words = line.split(" ")
    if words[0] == "-w":
        return _printed_watch(words)
    if words[0] != "-a" or len(words) < 2:
        return f"a line starting with {words[0]!r} (auditctl -l prints only -a and -w lines)"
    return _printed_rule(words, machine)


def explain_syntax(lines: Iterable[str], machine: Machine | None = None) -> tuple[Syntax, str]:
    """Tell captured `auditctl -l` output from a rules file, and say why.

    A text is a listing only on positive evidence: every line is one `auditctl -l` could
    have printed (see `listing_problem`), no rule repeats (the kernel never holds two; but a
    watch line may appear twice, for an `always` and a `never` rule that auditctl -l prints
    alike), and at least one line has a mark of the listing (`-F key=` or `-S all` on an `-a` line);
    or the text is exactly `No rules`. Anything else is a rules file, the stricter
    reading: a text that reads the same both ways is loaded as `auditctl -R` would.

    Args:
        lines: The text's lines.
        machine: The machine whose `auditctl -l` would have printed it (syscall names);
            x86_64 when None.

    Returns:
        The syntax, and a sentence saying why.
    """
    machine = machine or _DEFAULT_MACHINE
    content = [line for line in lines if line]
    if not content:
        return "rules", "empty text"
    if content == ["No rules"]:
        return "listing", "`No rules`, as auditctl -l prints it for no rules"
    marked = False
    seen: dict[str, int] = {}
    for number, line in enumerate(content, start=1):
        problem = listing_problem(line, machine)
        if problem is not None:
            return "rules", f"line {number} is not auditctl -l output: {problem}"
        # auditctl -l prints a watch without its action: `-a always,exit -F path=P -F
        # perm=x` and `-a never,exit -F path=P -F perm=x` are two rules, printed alike.
        most = 2 if line.startswith(("-w ", " -p ")) else 1
        if seen.get(line, 0) >= most:
            return "rules", (
                f"line {number} repeats a rule (the kernel never holds two)"
                if most == 1
                else f"line {number} repeats a watch twice (the kernel holds at most an "
                "`always` and a `never` rule that auditctl -l prints alike)"
            )
        seen[line] = seen.get(line, 0) + 1
        marked = marked or (line.startswith("-a ") and (" -F key=" in line or " -S all" in line))
    if not marked:
        return "rules", (
            "it reads the same as auditctl -l output but nothing marks it as one (no -F key= "
            "or -S all on an -a line); taken as a rules file, the stricter reading"
        )
    return "listing", "every line is as auditctl -l prints it"


def detect_syntax(lines: Iterable[str], machine: Machine | None = None) -> Syntax:
    """Tell captured `auditctl -l` output from a rules file (see `explain_syntax`)."""
    return explain_syntax(lines, machine)[0]


LINE_SIZE: Final = 6144


_EXE_LISTED: Final = (
    "auditctl -l prints both exe={value} and exe!={value} as `exe={value}`, so this listing "
    "cannot say which the kernel holds: kmod-audit judges the rule both ways (the field "
    "counts as a condition it cannot evaluate) and reports the worse; judge the running "
    "rules with `kmod-audit check --running` as root (netlink has the operator) or judge "
    "the rules file"
)
_CR_HINT: Final = (
    "the line holds a carriage return (a CRLF line ending?): auditctl splits words on "
    "spaces only, so the CR is part of the word before it (`-D\\r` fails after deleting "
    "the rules); convert the file to LF line endings (`dos2unix FILE`)"
)
_CR_WARNING: Final = (
    "the line holds a carriage return (a CRLF line ending?), which auditctl keeps in the "
    "word before it: a key, path or exe= value then names something else; convert the "
    "file to LF line endings (`dos2unix FILE`)"
)


def _fgets_pieces(line: str) -> list[str]:
    """What auditctl's fgets(buf, 6144) + strlen see of one physical line.

    A line longer than 6143 bytes is read in several pieces (each parsed as a line of its
    own), and a NUL ends the C string, hiding the rest of the piece.
    """
    data = line.encode("utf-8", errors="surrogateescape")
    if len(data) < LINE_SIZE:
        chunks = [data]
    else:
        chunks = [data[i : i + LINE_SIZE - 1] for i in range(0, len(data), LINE_SIZE - 1)]
    return [chunk.split(b"\x00", 1)[0].decode("utf-8", errors="replace") for chunk in chunks]


def _parse_piece(
    line: str,
    origin: Origin,
    machine: Machine,
    *,
    files: TargetFiles,
    syntax: Syntax,
    items: list[Command | Rejection],
) -> None:
    if not line.strip(" "):
        return
    if syntax == "listing" and line.strip() == "No rules":
        return
    if syntax == "listing" and line.startswith(" -p "):
        listed = _listed_perm_rule(line, origin, machine, files=files)
        if listed is not None:
            items.append(listed)
            return
    words = split_line(line)
    if not words or words[0].startswith("#"):
        return
    # fileopt() makes room for strlen(line) / 3 + 3 argv entries ("auditctl", the words,
    # NULL) and silently drops the words that do not fit: a long line of short words
    # (`-k a -k b ...`) loses its tail.
    words = words[: len(line.encode(errors="surrogateescape")) // 3 + 1]
    done: list[Command] = []
    try:
        _parse_words(words, origin, machine, files=files, syntax=syntax, done=done)
    except _LineError as error:
        items.extend(done)
        hint = error.hint
        if "\r" in line and syntax == "rules":
            hint += f"; {_CR_HINT}"
        items.append(Rejection(origin=origin, message=error.message, hint=hint))
        return
    if "\r" in line and syntax == "rules":
        done = [attrs.evolve(c, warnings=(*c.warnings, _CR_WARNING)) for c in done]
    items.extend(done)


def parse_rules(
    text: str,
    *,
    path: str,
    machine: Machine,
    syntax: Syntax | None = None,
    files: TargetFiles = THIS_MACHINE,
    first_line: int = 1,
    origins: Sequence[Origin] | None = None,
) -> RulesSource:
    """Parse a rules file or captured `auditctl -l` output.

    Never raises for bad content: every line auditctl would refuse becomes a `Rejection`.

    Args:
        text: The whole text.
        path: Where it came from (for messages).
        machine: The machine whose auditctl would read it (`b64`/`b32`, syscall tables).
        syntax: `rules` or `listing`; detected when None.
        files: What is known of the files of the machine that loads the rules (a `-w` on a
            directory is a tree watch).
        first_line: The number of the first line (for assembled texts).
        origins: Per-line origins overriding `path`/line numbers (for assembled rules.d).

    Returns:
        The parsed source.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    reason = ""
    if syntax is None:
        syntax, reason = explain_syntax(lines, machine)
    items: list[Command | Rejection] = []
    for index, physical in enumerate(lines):
        origin = (
            origins[index]
            if origins is not None and index < len(origins)
            else Origin(path, first_line + index, physical)
        )
        for piece in _fgets_pieces(physical):
            _parse_piece(piece, origin, machine, files=files, syntax=syntax, items=items)
    return RulesSource(
        path=path, syntax=syntax, items=tuple(items), machine=machine, syntax_reason=reason
    )
