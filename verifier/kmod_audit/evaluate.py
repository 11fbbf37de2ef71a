"""Judge a loaded rule set the way the kernel applies it (DESIGN section 5).

A *target* is one kind of event that must be recorded: "a b32 finit_module call" or "a b64
execve of /usr/bin/kmod". It is covered when, for every such event made by a logged-in
user (auid in [uid-min, 4294967294], uid 0 or the user's own, success yes or no), the
kernel records a SYSCALL record carrying an acceptable key:

- the task list does not exempt the task (`-a never,task`) nor put it in the record state
  without an acceptable key (`-a always,task`: every syscall of the task is then recorded
  with the task rule's key, and no exit rule applies to it),
- the first matching rule on the exit list (kernel order: `-A` rules first) has action
  `always` and a key (the pinned key with `--key`); a keyless watch records with the key
  of the first matching syscall rule after it (`_borrows`),
- no exclude rule drops SYSCALL records.

The event space is infinite, but every rule condition compares one event attribute with
a constant, so a rule matches a *box* of events: a set of values per attribute (intervals
for the comparisons, as the kernel compares u32 values; bit patterns for `&` and `&=`; a
finite or cofinite set of paths for `exe`). We follow the in-scope events through the
rules in list order, the way first-match analysis of firewall rule sets does: the events
that reach a rule are the in-scope events minus the boxes of the earlier rules that surely
match. That difference is never built in advance. Whether a keyed rule is reached is
mostly proven by one value per attribute that no earlier box holds; otherwise, and for
every rule that would be a failure, `_Cover` decides whether the earlier boxes hold the
rule's box, per class of values of each attribute, memoised, with a counting argument
(the pigeonhole of issue 16), and finds its first event. Nothing is enumerated, and no
budget decides a verdict: past `WORK_LIMIT` steps or `TIME_LIMIT` seconds (far more than
real rule lists need) the target is *undecided*, naming the rule being decided.
Conditions we cannot evaluate (SELinux labels, object inodes) are *unknown*: an unknown
`never` rule may suppress, an unknown `always` rule may not match, and we say so.

`tests/oracles/enumerating.py` keeps the evaluator that enumerated one representative event per
interval; it is the oracle the tests compare this one with.
"""

from __future__ import annotations

import bisect
import errno
import functools
import heapq
import os
import re
import stat
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Literal

import attrs

from .loader import RuleSet
from .rules import (
    ARG_FIELDS,
    GID_FIELDS,
    LSM_FIELDS,
    UID_UNSET,
    Field,
    Rule,
    TargetFiles,
    ThisMachine,
)
from .syscalls import BEFORE_OPEN, Abi

__all__ = [
    "BEFORE_OPEN_NOTE",
    "LAYOUTS",
    "LAYOUT_TEXT",
    "Context",
    "Coverage",
    "EventOutcome",
    "ExecFile",
    "ExecOrder",
    "Layout",
    "NamedFile",
    "RequiredEvent",
    "evaluate",
    "exec_order",
]

U32: Final = 0xFFFFFFFF
SYSCALL_RECORD: Final = 1300
PID_MAX: Final = 4194304
#: How `exe` behaves on the task list: audit_exe_compare() compares only the current task
#: (Linux 6.7+), and a task rule runs at fork for the new task, which is not current: `exe=`
#: never matches there and `exe!=` always does. (`-F exe` is also the only way to give a
#: task rule a key: auditctl takes a key only after -S, a watch or exe.)
_TASK_EXE: Final = "exe= never matches a task rule, exe!= always does"

# Failure return codes a module syscall typically has, for readable counterexamples.
_TYPICAL_ERRNOS: Final = (
    errno.ENOSYS,
    errno.EPERM,
    errno.ENOENT,
    errno.EEXIST,
    errno.EINVAL,
    errno.EBUSY,
    errno.EFAULT,
    errno.ENOEXEC,
    errno.EBADF,
    errno.EACCES,
    errno.E2BIG,
)
#: How `do_execveat_common` (fs/exec.c) orders its work. "open-first": it opens the file
#: before it copies argv (Linux 6.8 on, commit 978ffcbf00d8 "execve: open the executable
#: file before doing anything else", and before 5.9). "argv-first": it copies argv and
#: envp first and opens the file in `bprm_execve` (5.9 to 6.7, the 5.10, 5.15, 6.1 and 6.6
#: LTS lines; Debian 12's 6.1).
ExecOrder = Literal["open-first", "argv-first"]
#: How the target links its top-level directories, when its files are not read: "split"
#: (none), "merged" (/bin, /sbin, /lib* link into /usr: Debian 12, Fedora, AL2023), or
#: "merged-sbin" (also /usr/sbin links to bin: Arch, Fedora 42).
Layout = Literal["split", "merged", "merged-sbin"]
#: The layouts, the one that takes every path as it is spelled first.
LAYOUTS: Final[tuple[Layout, ...]] = ("split", "merged", "merged-sbin")
#: What each layout means, in a report.
LAYOUT_TEXT: Final[dict[str, str]] = {
    "split": "a target whose /bin, /sbin and /lib* are directories of their own",
    "merged": "a target whose /bin, /sbin and /lib* are links into /usr (merged /usr)",
    "merged-sbin": "a target with merged /usr whose /usr/sbin is a link to bin",
}
_MERGED_DIRS: Final = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
#: How an uncertain condition on a path names it (`EventOutcome.uncertain`).
_PATH_CONDITION: Final = re.compile(r"(path|exe|dir)!?=(/.*)")
#: The directories whose links a `Layout` decides: nothing else links them elsewhere.
_DECIDED_DIRS: Final = frozenset(
    {"/", "/usr", *(f"/{name}" for name in _MERGED_DIRS)}
    | {f"/usr/{name}" for name in _MERGED_DIRS}
)
#: The note on a counterexample that is such a failure.
BEFORE_OPEN_NOTE: Final = (
    "a kernel that copies argv before it opens the file (Linux 5.9 to 6.7, such as Debian "
    "12's 6.1) fails this exec before it opens the file, so the exec names no file: "
    "path=, dir= and watches do not match it"
)
_UID_FAMILY: Final = frozenset({"uid", "euid", "suid", "fsuid"})
#: What a task rule compares is the new task when it is created (audit_filter_task, at
#: fork), not the process at its module syscall or exec: its ids, login uid, session and
#: personality may change in between (a setuid program, setuid(), a login session's own
#: process writing its loginuid). So on the task list these conditions are unknown.
_AT_FORK: Final = frozenset(
    {
        "auid",
        "loginuid_set",
        "pid",
        "pers",
        "sessionid",
        *_UID_FAMILY,
        "gid",
        "egid",
        "sgid",
        "fsgid",
    }
)
AT_FORK_NOTE: Final = "when the task was created"
_NAME_FIELDS: Final = frozenset(
    {"filetype", "devmajor", "devminor", "inode", "obj_uid", "obj_gid"}
) | (LSM_FIELDS - {"subj_user", "subj_role", "subj_type", "subj_sen", "subj_clr"})


@attrs.frozen
class NamedFile:
    """What the kernel knows of a file an exec names (an audit_names entry).

    Attributes:
        uid: Its owner (`obj_uid`).
        gid: Its group (`obj_gid`).
        mode: Its st_mode (`filetype` compares the S_IFMT bits).
    """

    uid: int
    gid: int
    mode: int


@attrs.frozen
class ExecFile:
    """A program whose executions must be recorded (the kmod binary).

    Attributes:
        path: Its real path (what `--kmod-path` names).
        identity: (st_dev, st_ino) when it exists on this machine, for live matching.
        names: The files an exec of it names, as read on this machine: the program
            itself (named by every exec of it that gets as far as opening it), then its
            interpreters (`#!`, the ELF loader), which a successful exec opens too. None
            when not read (offline, a foreign root, or unreadable): conditions on them
            (`obj_uid`, `obj_gid`, `filetype`, `-C auid=obj_uid`) are then unknown.
        interpreters: Its interpreters as read on this machine (`#!`, the ELF loader):
            watches on them may match its executions too. Empty when not read.
    """

    path: str
    identity: tuple[int, int] | None = None
    names: tuple[NamedFile, ...] | None = None
    interpreters: tuple[ExecFile, ...] = ()

    @classmethod
    def at(cls, path: str, *, files: TargetFiles) -> ExecFile:
        """Describe the program at `path` on the target whose files are `files`.

        On this machine it has an identity (device and inode) too. In a copy of the
        target's root, its real path, owner, type and interpreters are read there; without
        the target's files, only its path is known.
        """
        real = files.real(path)
        if real is None:
            return cls(os.path.normpath(path))
        identity = None
        if isinstance(files, ThisMachine):
            try:
                info = os.stat(path)
            except OSError:
                return cls(os.path.normpath(path))
            identity = (info.st_dev, info.st_ino)
        named = _named_files(real, files)
        return cls(real, identity) if named is None else cls(real, identity, named[0], named[1])


_PT_INTERP: Final = 3


def _interpreter(path: str) -> str | None:
    """The interpreter an exec of `path` opens (`#!` line or ELF PT_INTERP), if any.

    Raises:
        OSError: The file cannot be read.
        ValueError: Its header is not one we can read.
    """
    with open(path, "rb") as handle:
        head = handle.read(4096)
        if head.startswith(b"#!"):
            words = head[2:].split(b"\n", 1)[0].split()
            return os.fsdecode(words[0]) if words else None
        if not head.startswith(b"\x7fELF") or len(head) < 64:
            raise ValueError(path)
        wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
        header = struct.Struct(order + ("32xQ14xHH" if wide else "28xI10xHH"))
        phoff, phentsize, phnum = header.unpack_from(head)
        entry = struct.Struct(order + ("I4xQ16xQ" if wide else "II8xI"))
        for index in range(phnum):
            handle.seek(phoff + index * phentsize)
            raw = handle.read(entry.size)
            if len(raw) < entry.size:
                raise ValueError(path)
            kind, offset, size = entry.unpack(raw)
            if kind == _PT_INTERP:
                handle.seek(offset)
                return os.fsdecode(handle.read(size).split(b"\0", 1)[0])
    return None


def _named_files(
    path: str, files: TargetFiles
) -> tuple[tuple[NamedFile, ...], tuple[ExecFile, ...]] | None:
    """The files an exec of `path` names: it, then its interpreters (None: unreadable).

    `files` are the target's: this machine's, or a copy of its root.

    Returns:
        What the kernel records of each, and the interpreters (for watches on them).
    """
    found: list[NamedFile] = []
    interpreters: list[ExecFile] = []
    current: str | None = path
    here = isinstance(files, ThisMachine)
    try:
        while current is not None and len(found) < 5:  # binfmt_script nests up to 4 deep
            local, real = files.local(current), files.real(current)
            if local is None or real is None:
                return None
            info = os.stat(local)
            found.append(NamedFile(info.st_uid, info.st_gid, info.st_mode))
            if current != path:
                identity = (info.st_dev, info.st_ino) if here else None
                interpreters.append(ExecFile(real, identity))
            current = _interpreter(local)
    except (OSError, ValueError, struct.error):
        return None
    return tuple(found), tuple(interpreters)


def _names_other_file(field: Field, program: ExecFile, ctx: Context) -> str | None:
    """How the `path=`/`dir=` of `field` names an interpreter of `program`, if it does.

    A successful exec names its interpreters too (`-F dir=/usr/lib -F perm=x` matches the
    executions of every program that the ELF loader in /usr/lib runs), a failed one only
    the program (failures after the loader is opened aside: running out of memory).

    Returns:
        `tree` for a `dir=` tree watch over one (exit list: it matches the successful
        executions), `watch` for a watch on one (the inode hash, whose order against the
        program's own watches is not modelled: unknown), None when it names none.
    """
    for interpreter in program.interpreters:
        if field.ambiguous and (
            _identifies(str(field.value), interpreter, ctx) is not False
            or _under(str(field.value), interpreter, ctx) is not False
        ):
            return "watch"
        if field.name == "path" and _identifies(str(field.value), interpreter, ctx) is not False:
            return "watch"
        if field.name == "dir":
            under = _under(str(field.value), interpreter, ctx)
            if under is not False:
                return "tree" if under else "watch"  # "watch": not known
    return None


def _on_names(program: ExecFile, test: Callable[[NamedFile], bool]) -> bool | None:
    """Whether some file the exec names passes `test` (how the kernel reads `obj_uid`...).

    The program itself is named by every exec of it; its interpreters only by those that
    get as far as opening them (not by a failed one, as a rule). So: true when the
    program passes, false when no file does, unknown otherwise (or when not read).
    """
    if program.names is None:
        return None
    if test(program.names[0]):
        return True
    return None if any(test(named) for named in program.names[1:]) else False


def _name_field(field: Field, program: ExecFile) -> bool | None:
    """`obj_uid`, `obj_gid` or `filetype` on an exec of `program` (kernel/auditsc.c)."""
    value = int(field.value)
    if field.name == "filetype":
        # audit_match_filetype: some name has that type; `!=` negates the result.
        found = _on_names(program, lambda named: stat.S_IFMT(named.mode) == value)
        return found if found is None or field.op == "=" else not found
    attribute = "uid" if field.name == "obj_uid" else "gid"
    return _on_names(program, lambda named: _compare(getattr(named, attribute), field.op, value))


def _unnamed_field(field: Field, program: ExecFile | None) -> bool | None:
    """A condition on named files (or `saddr_fam`) that `_name_field` does not decide.

    An exec names files whose inodes are not modelled: unknown. A module syscall names
    none (kernel/auditsc.c, audit_filter_rules): the inode, device, owner and LSM object
    comparisons find nothing to match, whatever the operator. Only `filetype` negates
    afterwards: audit_match_filetype finds no name of the type, and `filetype!=` turns
    that into a match (commit 0223fad3c98a, 2019). Neither stores a socket address.
    """
    if field.name == "saddr_fam":
        return False
    if program is not None:
        return None
    return field.name == "filetype" and field.op == "!="


def _name_owner(name: str, program: ExecFile | None) -> int | None:
    """The value `-C ...=obj_uid` (`obj_gid`) compares with: shared by every name, else None."""
    if program is None or program.names is None:
        return None
    attribute = "uid" if name == "obj_uid" else "gid"
    values = {getattr(named, attribute) for named in program.names}
    return values.pop() if len(values) == 1 else None


@attrs.frozen
class RequiredEvent:
    """One kind of event that must be recorded.

    Attributes:
        abi: The syscall ABI the call is made in.
        syscall: The syscall name.
        number: Its number in that ABI.
        program: For executions, the program executed; None for module syscalls.
    """

    abi: Abi
    syscall: str
    number: int
    program: ExecFile | None = None

    def __str__(self) -> str:
        """Return e.g. `b32 finit_module` or `b64 execve of /usr/bin/kmod`."""
        if self.program is not None:
            return f"{self.abi.bits} {self.syscall} of {self.program.path}"
        return f"{self.abi.bits} {self.syscall}"


@attrs.frozen(kw_only=True)
class Context:
    """What the judgement depends on besides the rules.

    Attributes:
        uid_min: The lowest login uid of a real user (`--uid-min`).
        key: The key records must carry; None accepts any non-empty key.
        live: Whether paths in rules may be compared with this machine's files.
        deadline: A `time.monotonic()` time after which no target is judged further (it
            is undecided), to bound a whole run; each target has `TIME_LIMIT` anyway.
        exec_order: Whether the kernel opens an exec's file before it copies argv
            (`ExecOrder`); a caller that does not know judges both.
        layout: The target's directory links, when its files are not read (not `live`):
            a caller that does not know judges every `Layout`.
        files: A copy of the target's files (`--root`), when not `live`: the directories
            of paths in rules are resolved there. None: not read.
    """

    uid_min: int = 1000
    key: str | None = None
    live: bool = True
    deadline: float | None = None
    exec_order: ExecOrder = "open-first"
    layout: Layout = "split"
    files: TargetFiles | None = None

    @property
    def argv_first(self) -> bool:
        """Whether a failed exec may end before the file is opened (`BEFORE_OPEN`)."""
        return self.exec_order == "argv-first"


EventVerdict = Literal[
    "covered",
    "never",
    "no-key",
    "wrong-key",
    "unmatched",
    "excluded",
    "task-never",
    "task-no-key",
    "task-wrong-key",
]


@attrs.frozen
class EventOutcome:
    """What happens to one event.

    Attributes:
        verdict: `covered`, or why it is not recorded as required.
        rule: The deciding rule (None when no rule matches).
        uncertain: The field names that made a rule only *maybe* match.
        lender: When `rule` is a keyless watch (the kernel's inode pass), the syscall
            rule whose key the record carries (None: no syscall rule matches the event).
        borrowed: Whether the verdict comes from the key of a later syscall rule.
    """

    verdict: EventVerdict
    rule: Rule | None
    uncertain: tuple[str, ...] = ()
    lender: Rule | None = None
    borrowed: bool = False


@attrs.frozen(kw_only=True)
class Coverage:
    """The judgement of one target.

    Attributes:
        target: What was judged.
        covered: True when every in-scope event is recorded with an acceptable key.
        rules: The rules that record the in-scope events (when covered, or partly).
        event: An event that is not covered (None when covered).
        outcome: What happens to that event.
        events: How much work the evaluation took (event classes examined).
        undecided: Why kmod-audit cannot decide (the evaluation would exceed its limit);
            None when it decided. An undecided target is neither covered nor a failure.
        note: What else the reader needs to know of the counterexample (the kernel
            behaviour it rests on), appended to the reason.
    """

    target: RequiredEvent
    covered: bool
    rules: tuple[Rule, ...]
    event: dict[str, int | str | bool] | None = None
    outcome: EventOutcome | None = None
    events: int = 0
    undecided: str | None = None
    note: str | None = None

    def reason(self) -> str:
        """Explain, in one sentence, why the target is or is not covered."""
        if self.undecided is not None:
            return f"{self.target}: kmod-audit cannot decide: {self.undecided}"
        if self.covered:
            where = ", ".join(f"{r.origin} `{r.origin.text.strip()}`" for r in self.rules)
            return f"{self.target}: recorded by {where}"
        assert self.outcome is not None  # noqa: S101 - set whenever covered is False
        event = describe_event(self.event or {})
        if self.target.program is not None and "exe" in (self.event or {}):
            event += ", the caller's own program, which a failed exec leaves running"
        rule = self.outcome.rule
        where = f"{rule.origin} `{rule.origin.text.strip()}`" if rule is not None else ""
        maybe = (
            f" (it may match: kmod-audit cannot evaluate {', '.join(self.outcome.uncertain)})"
            if self.outcome.uncertain
            else ""
        )
        verdict = self.outcome.verdict
        lender = self.outcome.lender
        lent = f"{lender.origin} `{lender.origin.text.strip()}`" if lender is not None else ""
        text = {
            "never": f"first matching rule is {where} (action never){maybe}",
            "no-key": f"first matching rule is {where}, which has no key{maybe}",
            "wrong-key": f"first matching rule is {where}, whose key is "
            f"{rule.key if rule else ''!r}{maybe}",
            "unmatched": "no loaded rule matches it",
            "excluded": f"SYSCALL records are dropped by the exclude rule {where}{maybe}",
            "task-never": f"the task is never audited because of {where}{maybe}",
            "task-no-key": f"every syscall of the task is recorded without a key because of "
            f"{where} (an `always` task rule: no exit rule applies to the task){maybe}",
            "task-wrong-key": f"every syscall of the task is recorded with the key "
            f"{rule.key if rule else ''!r} of {where} (an `always` task rule: no exit rule "
            f"applies to the task){maybe}",
            "covered": "covered",
        }[verdict]
        if self.outcome.borrowed:
            # A keyless watch decides to record; the record carries the key of the first
            # syscall rule that matches too (the kernel filters syscall rules first).
            text = {
                "no-key": f"first matching rule is the watch {where}, which has no key, and "
                + (
                    f"the first matching syscall rule {lent} has none to lend it"
                    if lender is not None
                    else "no syscall rule matches it to lend it one"
                )
                + maybe,
                "wrong-key": f"first matching rule is the watch {where}, which has no key; "
                f"the record carries the key {lender.key if lender else ''!r} of {lent}{maybe}",
            }.get(verdict, text)
        if verdict == "unmatched" and self.outcome.uncertain:
            text = (
                "no loaded rule surely matches it (kmod-audit cannot evaluate "
                f"{', '.join(self.outcome.uncertain)})"
            )
        program = self.target.program
        about_files = any(
            name in condition
            for condition in self.outcome.uncertain
            for name in ("obj_uid", "obj_gid", "filetype")
        )
        if about_files and program is not None and program.names is None:
            text += (
                f"; the owner and type of {program.path} (and of its interpreter) are read "
                "only on the live machine or in a copy of its files (--root DIR), so the worst "
                "case counts here"
            )
        if self.note is not None:
            text += f"; {self.note}"
        return f"{self.target} ({event}): {text}"


def exec_order(release: str | None) -> ExecOrder | None:
    """How the kernel `release` (`uname -r`, or MAJOR.MINOR) orders an exec; None: unknown."""
    found = re.match(r"([0-9]+)\.([0-9]+)", release or "")
    if found is None:
        return None
    version = (int(found.group(1)), int(found.group(2)))
    return "argv-first" if (5, 9) <= version < (6, 8) else "open-first"


def _before_open(event: dict[str, int | str | bool]) -> bool:
    """Whether `event` is a failed exec whose failure comes before the file is opened."""
    exit_ = event.get("exit")
    if event.get("success") or not isinstance(exit_, int):
        return False
    return any(exit_ == (-code) & U32 for code in BEFORE_OPEN)


def describe_event(event: dict[str, int | str | bool]) -> str:
    """Return `auid=1000, uid=0, success=no, exit=-ENOSYS` style text."""
    parts: list[str] = []
    for name, value in event.items():
        if name == "success":
            parts.append(f"success={'yes' if value else 'no'}")
        elif name == "exit" and isinstance(value, int):
            code = value - (1 << 32) if value & 0x80000000 else value
            label = errno.errorcode.get(-code) if code < 0 else None
            parts.append(f"exit={'-' + label if label else code}")
        else:
            parts.append(f"{name}={value}")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------


def _compare(left: int, op: str, right: int) -> bool:
    if op == "=":
        return left == right
    if op == "!=":
        return left != right
    if op == "<":
        return left < right
    if op == ">":
        return left > right
    if op == "<=":
        return left <= right
    if op == ">=":
        return left >= right
    if op == "&":
        return bool(left & right)
    return (left & right) == right  # "&="


def _perm_matches(field: Field, target: RequiredEvent) -> bool:
    """Whether `-F perm=` (a watch's `-p`) matches the event, as the kernel does.

    `audit_match_perm()` classifies the syscall first. An exec is only matched by `x`, and
    only when the ABI's classifier calls the syscall an exec (`Abi.execs`): arm64's compat
    classifier (`lib/compat_audit.c`) knows `execve` only, so no `perm=` matches a 32-bit
    `execveat` there. Module syscalls are in no class; no `perm=` rule records them.
    `perm!=` negates (auditctl refuses it, but the kernel takes it from other loaders, and
    the running rules are read back with it).
    """
    execs = target.program is not None and target.syscall in target.abi.execs
    matched = bool(int(field.value) & 1) and execs
    return not matched if field.op == "!=" else matched


def _links(layout: Layout) -> dict[str, str]:
    """The directory links of `layout`: link -> target, both absolute."""
    merged = {f"/{name}": f"/usr/{name}" for name in _MERGED_DIRS} if layout != "split" else {}
    if layout == "merged-sbin":
        merged |= {"/sbin": "/usr/bin", "/usr/sbin": "/usr/bin"}
    return merged


def _canonical(path: str, layout: Layout) -> str:
    """`path` with the directory links of `layout` resolved, all but the last component.

    The kernel resolves every component of a watched path but the last (a watch on a
    symlink watches the link).
    """
    normal = os.path.normpath(path)
    head, tail = os.path.split(normal)
    if not tail:
        return normal
    for link, target in sorted(_links(layout).items(), key=lambda item: -len(item[0])):
        if head == link or head.startswith(link + "/"):
            head = target + head[len(link) :]
            break
    return os.path.join(head, tail)


def _identifies(path: str, program: ExecFile, ctx: Context) -> bool | None:
    """Whether a watch/exe mark on `path` is on the program's inode; None: not known.

    The kernel resolves every component but the last (a watch on a symlink watches the
    link, which is never executed), so we lstat() the path. Without this machine's files,
    the directory links of `ctx.layout` (merged /usr) decide; a path of the program's name
    in another directory may name it through a link of the target's that is not read
    (`/opt/bin` to `/usr/bin`): not known.
    """
    if ctx.live and program.identity is not None:
        try:
            info = os.lstat(path)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == program.identity
    head, tail = os.path.split(os.path.normpath(path))
    real = ctx.files.real(head) if ctx.files is not None else None
    if real is not None:
        return os.path.join(real, tail) == program.path
    mine, theirs = _canonical(path, ctx.layout), _canonical(program.path, ctx.layout)
    if mine == theirs:
        return True
    head, tail = os.path.split(mine)
    if ctx.live or tail != os.path.basename(theirs) or head in _DECIDED_DIRS:
        return False
    return None


def _under(directory: str, program: ExecFile, ctx: Context) -> bool | None:
    """Whether a `dir=` tree watch on `directory` covers the program; None: not known.

    The kernel tags the inode `directory` names (without following a last-component
    symlink) and everything below it, so a tree watch on the program itself counts too.
    Without this machine's files, as `_identifies`: a directory of the name of one of the
    program's may be one of them through a link of the target's that is not read.
    """
    if ctx.live and program.identity is not None:
        stripped = directory.rstrip("/") or "/"
        if os.path.islink(stripped) or not os.path.lexists(stripped):
            return False
        real = os.path.realpath(stripped)
        inside = program.path
    else:
        real = os.path.normpath(directory)
        head, tail = os.path.split(real)
        copied = ctx.files.real(real) if ctx.files is not None and tail else None
        if copied is not None and ctx.files is not None:
            if copied != os.path.join(ctx.files.real(head) or head, tail):
                return False  # a tree watch on a link
            real, inside = copied, program.path
        else:
            if real in _links(ctx.layout):
                return False  # a tree watch on a link
            real = _canonical(real, ctx.layout)
            inside = _canonical(program.path, ctx.layout)
            if not ctx.live and not _within(inside, real):
                parents = os.path.dirname(inside).split("/")
                head = os.path.dirname(real)
                if os.path.basename(real) in parents and head not in _DECIDED_DIRS:
                    return None
    return _within(inside, real)


def _watch_on(field: Field, program: ExecFile, ctx: Context) -> tuple[bool, str | None] | None:
    """Whether the `path=`/`dir=` of `field` names `program`, and how it names an interpreter.

    Returns:
        (names the program, `_names_other_file` when it does not); None when not known: a
        link of the target's that is not read may make it the program, or `auditctl -l`
        does not say whether it is a path= or a dir= watch (`field.ambiguous`).
    """
    as_path = _identifies(str(field.value), program, ctx)
    as_dir = _under(str(field.value), program, ctx)
    matched = as_path if field.name == "path" else as_dir
    if matched is None or (field.ambiguous and (None in (as_path, as_dir) or as_path != as_dir)):
        return None
    return matched, None if matched else _names_other_file(field, program, ctx)


def _within(inside: str, directory: str) -> bool:
    """Whether the path `inside` is `directory` or below it."""
    return inside == directory or inside.startswith(directory.rstrip("/") + "/")


@attrs.define
class _Evaluator:
    target: RequiredEvent
    ctx: Context
    #: Conditions true on every in-scope syscall-exit event: skipped outside the task list
    #: (events carry no value for the attributes only they look at).
    always: set[tuple[Field, bool]] = attrs.Factory(set)

    def field(self, field: Field, event: dict[str, int | str | bool], *, task: bool) -> bool | None:
        """Evaluate one condition on one event: True, False or None (unknown)."""
        name = field.name
        program = self.target.program
        if task and at_fork(field):
            return None
        if field.compare:
            return self._compare_fields(field, event)
        if name in LSM_FIELDS and name.startswith("subj_"):
            return None
        if name == "auid":
            auid = int(event["auid"])
            if field.value == UID_UNSET:
                # The kernel turns a test against unset into a loginuid_set test.
                return _compare(int(auid != UID_UNSET), field.op, 0)
            return _compare(auid, field.op, int(field.value))
        if name in _UID_FAMILY:
            return _compare(int(event["uid"]), field.op, int(field.value))
        if name in GID_FIELDS - {"obj_gid"}:
            return _compare(int(event["gid"]), field.op, int(field.value))
        if name in {"pid", "pers", "sessionid"}:
            return _compare(int(event[name]), field.op, int(field.value))
        if name == "msgtype":
            return _compare(SYSCALL_RECORD, field.op, int(field.value))
        if name == "exe" and field.ambiguous:
            return None  # read from auditctl -l: exe= or exe!=, which it prints alike
        if name == "exe" and task:
            return field.op != "="  # see _TASK_EXE
        if name == "exe":
            running = event.get("exe", _ANOTHER_PROGRAM)
            if program is not None and (task or running == program.path):
                # After a successful exec the process runs the program. (Task rules are
                # judged at fork time; we keep judging them against the program.)
                same = _identifies(str(field.value), program, self.ctx)
                if same is None:
                    return None
            else:
                # Module syscalls, and a failed exec: the caller's own program.
                same = running == field.value
            return same if field.op == "=" else not same
        if task:
            # Task rules run at fork time without a syscall context: syscall-dependent
            # conditions never match there.
            return False
        if name == "arch":
            return _compare(self.target.abi.audit_arch, field.op, int(field.value))
        if name == "ppid":
            return _compare(int(event["ppid"]), field.op, int(field.value))
        if name == "success":
            return_valid = 1 if event["success"] else 2
            return _compare(return_valid, field.op, 1 if field.value else 2)
        if name == "exit":
            return _compare(int(event["exit"]), field.op, int(field.value))
        if name in ARG_FIELDS:
            return _compare(int(event[name]), field.op, int(field.value))
        if name == "perm":
            return _perm_matches(field, self.target)
        if name in {"path", "dir"}:
            if program is None:
                return False
            found = _watch_on(field, program, self.ctx)
            if found is None:
                return None
            matched, other = found
            if other is not None:
                return bool(event["success"]) if other == "tree" else None
            if matched and self.ctx.argv_first and _before_open(event):
                return False  # the exec ended before it opened the file: it names none
            return matched
        if name in {"obj_uid", "obj_gid", "filetype"} and program is not None:
            # Before the file is opened the exec's only name is the path it was given, with
            # no inode: the kernel's view of it is not modelled.
            return None if self.ctx.argv_first else _name_field(field, program)
        if name in _NAME_FIELDS or name == "saddr_fam":
            return _unnamed_field(field, program)
        return None

    def _compare_fields(self, field: Field, event: dict[str, int | str | bool]) -> bool | None:
        def value(name: str) -> int | None:
            if name == "auid":
                return int(event["auid"])
            if name in _UID_FAMILY:
                return int(event["uid"])
            if name in GID_FIELDS - {"obj_gid"}:
                return int(event["gid"])
            if name in {"obj_uid", "obj_gid"} and not self.ctx.argv_first:
                return _name_owner(name, self.target.program)
            return None

        left, right = value(field.name), value(str(field.value))
        if left is None or right is None:
            return None if self.target.program is not None else False
        return _compare(left, field.op, right)

    def rule(
        self, rule: Rule, event: dict[str, int | str | bool], *, task: bool = False
    ) -> tuple[bool | None, tuple[str, ...]]:
        """Evaluate a rule's conditions (all must hold): True, False or None with reasons."""
        unknown: list[str] = []
        for field in rule.fields:
            if not task and (field, field.ambiguous) in self.always:
                continue
            result = self.field(field, event, task=task)
            if result is False:
                return False, ()
            if result is None:
                unknown.append(_unknown_text(field, task=task))
        return (None, tuple(unknown)) if unknown else (True, ())


def at_fork(field: Field) -> bool:
    """Whether a task rule's condition compares what may change after fork (`_AT_FORK`)."""
    return field.compare or field.name in _AT_FORK


def _unknown_text(field: Field, *, task: bool) -> str:
    """How a report names a condition kmod-audit cannot evaluate."""
    text = field.render().removeprefix("-F ").removeprefix("-C ")
    return f"{text} {AT_FORK_NOTE}" if task and at_fork(field) else text


def _relevant_exit_rules(rules: Sequence[Rule], target: RequiredEvent) -> list[Rule]:
    return [r for r in rules if r.syscalls is None or target.number in r.syscalls]


def _key_ok(rule: Rule, ctx: Context) -> EventVerdict:
    if not rule.keys:
        return "no-key"
    if ctx.key is not None and ctx.key not in rule.keys:
        return "wrong-key"
    return "covered"


def _task_key_ok(rule: Rule, ctx: Context) -> EventVerdict:
    """The verdict of an event whose task an `always` task rule puts in the record state."""
    verdict = _key_ok(rule, ctx)
    if verdict == "covered":
        return verdict
    return "task-no-key" if verdict == "no-key" else "task-wrong-key"


def _judge_event(
    evaluator: _Evaluator,
    ruleset: RuleSet,
    exit_rules: Sequence[Rule],
    event: dict[str, int | str | bool],
    ctx: Context,
) -> list[EventOutcome]:
    """Every possible outcome for one event (more than one when some rule may match)."""
    outcomes: list[EventOutcome] = []
    # The first matching task rule decides the task's state at fork (audit_filter_task):
    # `never` leaves it unaudited; `always` puts it in the record state, whose priority
    # (~0) no exit rule outranks, so every syscall is recorded with that rule's key (none
    # when it has none). Either way no exit rule applies to the task.
    decided = False
    for rule in ruleset.task:
        matched, unknown = evaluator.rule(rule, event, task=True)
        if matched is False:
            continue
        if rule.action == "never":
            outcomes.append(EventOutcome("task-never", rule, unknown))
        else:
            outcomes.append(EventOutcome(_task_key_ok(rule, ctx), rule, unknown))
        if matched is True:
            decided = True
            break
    for rule in ruleset.exclude:
        matched, unknown = evaluator.rule(rule, event)
        if matched is False:
            continue
        outcomes.append(EventOutcome("excluded", rule, unknown))
        if matched is True:
            break
    if decided:
        return outcomes
    uncertain: list[str] = []
    for position, rule in enumerate(exit_rules):
        matched, unknown = evaluator.rule(rule, event)
        if matched is False:
            continue
        verdict: EventVerdict = "never" if rule.action == "never" else _key_ok(rule, ctx)
        if _borrows(rule):
            later = exit_rules[position + 1 :]
            outcomes.extend(_lent(evaluator, rule, unknown, later, event=event, ctx=ctx))
        else:
            outcomes.append(EventOutcome(verdict, rule, unknown))
        if matched is True:
            return outcomes
        uncertain.extend(unknown)
    outcomes.append(EventOutcome("unmatched", None, tuple(dict.fromkeys(uncertain))))
    return outcomes


def _in_inode_hash(rule: Rule) -> bool | None:
    """Whether the kernel keeps `rule` in its inode hash rather than on the exit list.

    `audit_add_rule` files a rule with a watch (`path=`, a `-w` on a file) or an `inode=`
    field under the watched inode; tree watches (`dir=`) stay on the exit list. None: a
    `-w` read from `auditctl -l`, which may be either.
    """
    fields = [f for f in rule.fields if not f.compare and f.name in {"path", "dir", "inode"}]
    if any(f.ambiguous for f in fields):
        return None
    return any(f.name in {"path", "inode"} for f in fields)


def _borrows(rule: Rule) -> bool:
    """Whether a record decided by `rule` carries the key of a syscall rule instead.

    At syscall exit (kernel/auditsc.c, `__audit_syscall_exit`) the kernel runs the exit
    list (`audit_filter_syscall`), then the rules of the inode hash for each name the
    syscall collected (`audit_filter_inodes`). Every exit rule has a priority from its
    place in the list (`audit_add_rule`: `-A` above all, `-a` below all), and
    `audit_filter_rules` skips a rule whose priority is not above the one that matched
    already: the inode pass overrides only a later syscall rule, so the first matching
    rule in list order decides the action (`never` in either pass included). But a rule
    sets `ctx->filterkey` only when it has a key (reset at every syscall's end): a keyless
    `always` watch records the event with the key of the first matching syscall rule
    (whatever its action), or with none. Confirmed on the kernel by
    tests/test_kernel.py::TestExecutionsInTheKernel.
    """
    return rule.action == "always" and not rule.keys and _in_inode_hash(rule) is True


def _lent(
    evaluator: _Evaluator,
    watch: Rule,
    unknown: tuple[str, ...],
    later: Sequence[Rule],
    *,
    event: dict[str, int | str | bool],
    ctx: Context,
) -> list[EventOutcome]:
    """The outcomes of an event that the keyless watch `watch` records (see `_borrows`).

    The key is that of the first syscall rule after it that matches the event: every rule
    that may be it gives one outcome.
    """
    outcomes: list[EventOutcome] = []
    uncertain = list(unknown)
    for rule in later:
        inode = _in_inode_hash(rule)
        if inode is True:
            continue
        matched, maybe = evaluator.rule(rule, event)
        if matched is False:
            continue
        verdict = _key_ok(rule, ctx)
        both = tuple(dict.fromkeys([*unknown, *maybe]))
        shown = rule if verdict == "covered" else watch
        outcomes.append(EventOutcome(verdict, shown, both, lender=rule, borrowed=True))
        if matched is True and inode is False:
            return outcomes
        uncertain.extend(maybe)
    outcomes.append(EventOutcome("no-key", watch, tuple(dict.fromkeys(uncertain)), borrowed=True))
    return outcomes


# -- value sets ------------------------------------------------------------------------
#
# The symbolic evaluator describes sets of events as unions of boxes: one set of values
# per event attribute. Attributes compared in order are unions of intervals; attributes
# bit-tested (`&`, `&=`) are unions of ternary cubes (fixed bits and free bits), which
# represent both intervals (as aligned blocks) and bit tests exactly; `exe` is a finite
# or cofinite set of paths.

_FAIL_LOW: Final = (1 << 32) - 4095


class _Ranges:
    """A set of u32 values: sorted, disjoint, closed intervals [los[i], his[i]]."""

    __slots__ = ("his", "los")

    def __init__(self, los: tuple[int, ...], his: tuple[int, ...]) -> None:
        self.los = los
        self.his = his

    @classmethod
    def span(cls, low: int, high: int) -> _Ranges:
        return cls((low,), (high,)) if low <= high else cls((), ())

    def __bool__(self) -> bool:
        return bool(self.los)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        i = bisect.bisect_right(self.los, value) - 1
        return i >= 0 and self.his[i] >= value

    def __and__(self, other: _Ranges) -> _Ranges:
        los: list[int] = []
        his: list[int] = []
        for low, high in zip(other.los, other.his, strict=True):
            i = bisect.bisect_left(self.his, low)
            j = bisect.bisect_right(self.los, high)
            if i >= j:
                continue
            start = len(los)
            los.extend(self.los[i:j])
            his.extend(self.his[i:j])
            los[start] = max(los[start], low)
            his[-1] = min(his[-1], high)
        return _Ranges(tuple(los), tuple(his))

    def meets(self, other: _Ranges) -> bool:
        """Whether the two sets share a value (in time logarithmic in the larger one)."""
        small, large = (self, other) if len(self.los) <= len(other.los) else (other, self)
        for low, high in zip(small.los, small.his, strict=True):
            if bisect.bisect_left(large.his, low) < bisect.bisect_right(large.los, high):
                return True
        return False

    def within(self, other: _Ranges) -> bool:
        """Whether every value of this set is in `other`."""
        for low, high in zip(self.los, self.his, strict=True):
            i = bisect.bisect_right(other.los, low) - 1
            if i < 0 or other.his[i] < high:
                return False
        return True

    def __sub__(self, other: _Ranges) -> _Ranges:
        los, his = self.los, self.his
        for low, high in zip(other.los, other.his, strict=True):
            i = bisect.bisect_left(his, low)
            j = bisect.bisect_right(los, high)
            if i >= j:
                continue
            mid_los: tuple[int, ...] = ()
            mid_his: tuple[int, ...] = ()
            if los[i] < low:
                mid_los, mid_his = (los[i],), (low - 1,)
            if his[j - 1] > high:
                mid_los, mid_his = (*mid_los, high + 1), (*mid_his, his[j - 1])
            los = los[:i] + mid_los + los[j:]
            his = his[:i] + mid_his + his[j:]
        return _Ranges(los, his)

    def least(self) -> int:
        return self.los[0]


def _cube_minus(cube: tuple[int, int], other: tuple[int, int]) -> list[tuple[int, int]]:
    """`cube` without the values of `other`, as disjoint cubes (value, care mask)."""
    value, care = cube
    o_value, o_care = other
    if (value ^ o_value) & care & o_care:
        return [cube]
    pieces: list[tuple[int, int]] = []
    free = o_care & ~care
    bit = 1 << 31
    while free:
        if free & bit:
            pieces.append((value | (~o_value & bit), care | bit))
            value |= o_value & bit
            care |= bit
            free &= ~bit
        bit >>= 1
    return pieces


class _Cubes:
    """A set of u32 values as disjoint ternary cubes (value, care mask)."""

    __slots__ = ("cubes",)

    def __init__(self, cubes: tuple[tuple[int, int], ...]) -> None:
        self.cubes = cubes

    @classmethod
    def of(cls, ranges: _Ranges) -> _Cubes:
        """The same set as `ranges`, as aligned blocks."""
        cubes: list[tuple[int, int]] = []
        for start, high in zip(ranges.los, ranges.his, strict=True):
            low = start
            while low <= high:
                size = low & -low if low else 1 << 32
                while low + size - 1 > high:
                    size >>= 1
                cubes.append((low, ~(size - 1) & U32))
                low += size
        return cls(tuple(cubes))

    def __bool__(self) -> bool:
        return bool(self.cubes)

    def __contains__(self, value: object) -> bool:
        return (
            isinstance(value, int)
            and 0 <= value <= U32
            and any((value & c) == v for v, c in self.cubes)
        )

    def __and__(self, other: _Cubes) -> _Cubes:
        if len(self.cubes) * len(other.cubes) > _CUBE_WORK:
            raise _TooHard(limit="patterns")
        return _Cubes(
            tuple(
                (v1 | v2, c1 | c2)
                for v1, c1 in self.cubes
                for v2, c2 in other.cubes
                if not (v1 ^ v2) & c1 & c2
            )
        )

    def __sub__(self, other: _Cubes) -> _Cubes:
        cubes = list(self.cubes)
        work = 0
        for cube in other.cubes:
            work += len(cubes)
            if work > _CUBE_WORK:
                raise _TooHard(limit="patterns")
            cubes = [piece for mine in cubes for piece in _cube_minus(mine, cube)]
        return _Cubes(tuple(cubes))

    def least(self) -> int:
        return min(v for v, _ in self.cubes)


class _Names:
    """A finite set of paths, or all paths but a finite set (`cofinite`)."""

    __slots__ = ("cofinite", "names")

    def __init__(self, names: frozenset[str], *, cofinite: bool) -> None:
        self.names = names
        self.cofinite = cofinite

    def __bool__(self) -> bool:
        return self.cofinite or bool(self.names)

    def __contains__(self, value: object) -> bool:
        return (value in self.names) != self.cofinite

    def __and__(self, other: _Names) -> _Names:
        if self.cofinite and other.cofinite:
            return _Names(self.names | other.names, cofinite=True)
        if self.cofinite:
            return _Names(other.names - self.names, cofinite=False)
        if other.cofinite:
            return _Names(self.names - other.names, cofinite=False)
        return _Names(self.names & other.names, cofinite=False)

    def __sub__(self, other: _Names) -> _Names:
        return self & _Names(other.names, cofinite=not other.cofinite)


_Set = _Ranges | _Cubes | _Names
#: A box: the events whose attributes lie in the given sets (absent: any value).
_Box = dict[str, _Set]
_Condition = bool | None | tuple[str, _Set]
#: Above this much work on one target we answer undecided (realistic rules need hundreds).
WORK_LIMIT: Final = 2_000_000
#: Above this many seconds on one target we answer undecided (realistic rules need
#: milliseconds); `Context.deadline` may end it sooner, to bound a whole run.
TIME_LIMIT: Final = 1.5
#: The work between two looks at the clock.
_CLOCK_STEPS: Final = 16
#: Past this many classes of bit patterns on one attribute, `_Taken` searches instead.
_CUBE_CLASSES: Final = 64
#: Past this many bit patterns for one attribute of one rule (`&` tests multiply out: ten
#: masks of 4 to 16 bits make millions), the target is undecided.
_PATTERNS: Final = 4096
#: Past this many pairs of patterns in one operation on bit patterns, likewise (a bound
#: on each step of the work, which `WORK_LIMIT` and `TIME_LIMIT` count only between steps).
_CUBE_WORK: Final = 100_000
#: The rules an undecided target names at most (a 64 KB file holds hundreds).
_NAMED: Final = 6
_ANOTHER_PROGRAM: Final = "(another program)"
_DIMS: Final = ("auid", "gid", "exit", *sorted(ARG_FIELDS), "pid", "ppid", "pers", "sessionid")
#: The attributes after auid and uid in the enumeration's order.
_RANKED: Final = (*_DIMS[1:], "exe")
_SEEDS: Final[dict[str, tuple[int, ...]]] = {
    "gid": (0, 100),
    "exit": tuple((-code) & U32 for code in _TYPICAL_ERRNOS),
    **dict.fromkeys(ARG_FIELDS, (0, 1)),
    "pid": (1000,),
    "ppid": (1,),
    "pers": (0,),
    "sessionid": (1,),
}


class _Unstructured(Exception):
    """Bit patterns fall into more than `_CUBE_CLASSES` classes: `_Cover` does not apply."""


class _TooHard(Exception):
    """The evaluation of one target needs more than `WORK_LIMIT` steps or `TIME_LIMIT`.

    Attributes:
        limit: The limit reached: `steps`, `time` or `patterns` (bit patterns that
            multiply out: `_PATTERNS`, `_CUBE_WORK`).
        rule: The rule whose judgement reached it (None: the end of the list).
    """

    def __init__(self, limit: Literal["steps", "time", "patterns"]) -> None:
        super().__init__(limit)
        self.limit = limit
        self.rule: Rule | None = None


def _meet(box: _Box, other: _Box) -> _Box | None:
    """The intersection of two boxes, None when empty."""
    out = dict(box)
    for dim, values in other.items():
        mine = box.get(dim)
        both = values if mine is None else mine & values  # type: ignore[operator]
        if not both:
            return None
        out[dim] = both
    return out


def _cut(box: _Box, other: _Box, domains: dict[str, _Set]) -> list[_Box]:
    """`box` without `other` as disjoint boxes (`box` is assumed to meet `other`)."""
    pieces: list[_Box] = []
    current = dict(box)
    for dim, values in other.items():
        mine = current.get(dim)
        if mine is None:
            mine = domains[dim]
        rest = mine - values  # type: ignore[operator]
        if rest:
            piece = dict(current)
            piece[dim] = rest
            pieces.append(piece)
        current[dim] = mine & values  # type: ignore[operator]
    return pieces


def _contains(box: _Box, other: _Box, domains: dict[str, _Set]) -> bool:
    """Whether every event of `other` is in `box`."""
    for dim, values in box.items():
        mine = other.get(dim)
        if mine is None:
            mine = domains[dim]
        if mine - values:  # type: ignore[operator]
            return False
    return True


class _Taken:
    """The events the rules of a list have surely matched so far, kept as the rules' boxes.

    The events that reach the next rule are the in-scope events minus these boxes. Nothing
    is subtracted ahead of time: `first` and `reaches` ask `_Cover` about a box and the
    taken ones on demand. Two proofs need no search. Per attribute, `free` holds the values
    that no taken box contains: a box with such a value has an event that escapes every
    taken box. And `open` holds the values that no taken box about that attribute *alone*
    contains: a box with no value outside it on some attribute lies inside the taken boxes
    (rules repeated under another key, `-F exit=-EACCES` after `-F success=0`).
    """

    def __init__(
        self,
        domains: dict[str, _Set],
        rank: _Ranker,
        work: int = 0,
        *,
        deadline: float | None = None,
    ) -> None:
        self.domains = domains
        self.rank = rank
        self.deadline = deadline
        self.clock = work + _CLOCK_STEPS
        self.boxes: list[_Box] = []
        self.free: dict[str, _Ranges] = {
            dim: values for dim, values in domains.items() if isinstance(values, _Ranges)
        }
        self.free.pop("failure", None)
        self.open = dict(self.free)
        self.everything = False
        self.work = work

    def take(self, box: _Box) -> None:
        """Record that a rule surely matches the events of `box`."""
        if self.everything:
            return
        if not box:
            self.everything = True
            self.boxes = []
            return
        self.boxes.append(box)
        if len(box) == 1:
            [(alone, values)] = box.items()
            if alone in self.open and isinstance(values, _Ranges):
                self.open[alone] = self.open[alone] - values
        for dim in list(self.free):
            mine = box.get(dim)
            rest = self.free[dim] - mine if isinstance(mine, _Ranges) else None
            if rest:
                self.free[dim] = rest
            else:
                del self.free[dim]

    def _spend(self, steps: int) -> None:
        self.work += steps
        if self.work > WORK_LIMIT:
            raise _TooHard(limit="steps")
        if self.deadline is not None and self.work >= self.clock:
            self.clock = self.work + _CLOCK_STEPS
            if time.monotonic() > self.deadline:
                raise _TooHard(limit="time")

    def reaches(self, box: _Box) -> bool:
        """Whether some event of `box` escapes every taken box."""
        if self.everything:
            return False
        self._spend(1)
        for dim, free in self.free.items():
            values = box.get(dim)
            if values is None or free.meets(values):  # type: ignore[arg-type]
                return True
        if self._inside(box):
            return False
        try:
            cover = _Cover(box, self.boxes, self.domains, self._spend)
        except _Unstructured:
            return self._search(box) is not None
        return not cover.covered(0, cover.everyone)

    def _inside(self, box: _Box) -> bool:
        """Whether `box` has no value outside the taken boxes about one attribute alone."""
        for dim, values in self.open.items():
            if not values.meets(box.get(dim, self.domains[dim])):  # type: ignore[arg-type]
                return True
        return False

    def first(self, box: _Box) -> tuple[tuple[object, ...], _Box] | None:
        """The first event (in the enumeration's order) of `box` minus the taken boxes.

        Returns:
            The event's rank and a box that starts with it, or None when no event is left.
        """
        if self.everything or self._inside(box):
            return None
        self._spend(len(self.boxes) + 1)
        try:
            cover = _Cover(box, self.boxes, self.domains, self._spend)
        except _Unstructured:
            return self._search(box)
        found = cover.first(self.rank.part)
        if found is None:
            return None
        piece = {**box, **found}
        return self.rank(piece), piece

    def _search(self, box: _Box) -> tuple[tuple[object, ...], _Box] | None:
        """`first` by a best-first search, for bit patterns that fall into too many classes.

        A piece is cut by the first taken box it meets, into pieces that avoid that box;
        the piece with the least first event comes next. Taken boxes with fewer conditions
        come first: they contain whole pieces more often and cut them into fewer pieces.
        """
        taken = [other for other in self.boxes if _meet(box, other) is not None]
        self._spend(len(self.boxes) + 1)
        taken.sort(key=len)
        heap = [(self.rank(box), 0, box, 0)]
        tie = 0
        while heap:
            rank, _, piece, index = heapq.heappop(heap)
            start = index
            while index < len(taken) and _meet(piece, taken[index]) is None:
                index += 1
            self._spend(index - start + 1)
            if index == len(taken):
                return rank, piece
            if _contains(taken[index], piece, self.domains):
                continue
            pieces = _cut(piece, taken[index], self.domains)
            self._spend(len(pieces))
            for part in pieces:
                tie += 1
                heapq.heappush(heap, (self.rank(part), tie, part, index + 1))
        return None


def _atoms(
    whole: _Set, sets: Sequence[tuple[_Set, int]], spend: Callable[[int], None]
) -> list[tuple[_Set, int]]:
    """`whole` cut into the classes of values that the same sets hold.

    Args:
        whole: The values to cut.
        sets: Sets (within `whole`), each with its bit.
        spend: Counts the work (bit patterns may fall into many classes).

    Returns:
        Each class with the bits of the sets that hold it; values of one class are alike
        for every set.
    """
    if isinstance(whole, _Ranges):
        # A sweep over the interval ends: the holders change only there.
        toggles: dict[int, int] = {}
        for values, bit in sets:
            for low, high in zip(values.los, values.his, strict=True):  # type: ignore[union-attr]
                toggles[low] = toggles.get(low, 0) ^ bit
                toggles[high + 1] = toggles.get(high + 1, 0) ^ bit
        spans: dict[int, tuple[list[int], list[int]]] = {}
        holders, start = 0, 0
        for cut in sorted(toggles):
            if cut > start:
                los, his = spans.setdefault(holders, ([], []))
                los.append(start)
                his.append(cut - 1)
            holders ^= toggles[cut]
            start = cut
        if start <= U32:
            los, his = spans.setdefault(holders, ([], []))
            los.append(start)
            his.append(U32)
        ranges = [(whole & _Ranges(tuple(lo), tuple(hi)), b) for b, (lo, hi) in spans.items()]
        return [(values, bits) for values, bits in ranges if values]
    if isinstance(whole, _Names):
        # Every path a set names is a class of its own, and so are all the others.
        finite: dict[str, int] = {}
        excluded: dict[str, int] = {}
        cofinite = 0
        for values, bit in sets:
            names = values.names  # type: ignore[union-attr]
            if values.cofinite:  # type: ignore[union-attr]
                cofinite |= bit
                for name in names:
                    excluded[name] = excluded.get(name, 0) | bit
            else:
                for name in names:
                    finite[name] = finite.get(name, 0) | bit
        named = finite.keys() | excluded.keys()
        grouped: dict[int, set[str]] = {}
        for name in named:
            bits = finite.get(name, 0) | (cofinite & ~excluded.get(name, 0))
            grouped.setdefault(bits, set()).add(name)
        classes = [(whole & _Names(frozenset(n), cofinite=False), b) for b, n in grouped.items()]
        classes.append((whole & _Names(frozenset(named), cofinite=True), cofinite))
        return [(values, bits) for values, bits in classes if values]
    # Bit patterns: refine by each distinct set in turn.
    same: dict[tuple[tuple[int, int], ...], tuple[_Set, int]] = {}
    for values, bit in sets:
        key = values.cubes  # type: ignore[union-attr]
        known = same.get(key)
        same[key] = (values, bit | (known[1] if known else 0))
    parts: list[tuple[_Set, int]] = [(whole, 0)]
    for values, bits in same.values():
        refined: list[tuple[_Set, int]] = []
        for part, holders in parts:
            inner = part & values  # type: ignore[operator]
            if inner:
                refined.append((inner, holders | bits))
            outer = part - values  # type: ignore[operator]
            if outer:
                refined.append((outer, holders))
        spend(len(refined))
        if len(refined) > _CUBE_CLASSES:
            raise _Unstructured
        parts = refined
    return parts


def _narrower(box: _Box, other: _Box) -> _Box | None:
    """`other`'s sets on the attributes where it does not hold all of `box`'s values.

    Returns:
        None when the two boxes do not meet.
    """
    narrower: _Box = {}
    for dim, values in other.items():
        mine = box.get(dim)
        if mine is None:
            narrower[dim] = values  # a rule's sets are never its whole domain
        elif isinstance(mine, _Ranges) and isinstance(values, _Ranges):
            if not mine.meets(values):
                return None
            if not mine.within(values):
                narrower[dim] = values  # `_atoms` cuts it to `mine`
        else:
            both = mine & values  # type: ignore[operator]
            if not both:
                return None
            if mine - values:  # type: ignore[operator]
                narrower[dim] = both
    return narrower


class _Cover:
    """Whether the taken boxes cover a box, and the first event of the box they do not.

    This is a cover problem (is a box inside a union of boxes?), NP-hard in general, so it
    is searched, but along its structure, never by guessing:

    - *Atoms.* On each attribute the box's values fall into classes that the same taken
      boxes hold (`_atoms`, computed once); the values of one class are alike, so a search
      picks classes, not values.
    - *Splitting.* Fixing one class of one attribute leaves the taken boxes that hold it; a
      subproblem is the attributes fixed so far and the boxes left (a bit mask). The same
      subproblem is reached by many paths (`!=` rules are alike but for their constant),
      so each is decided once (memoised).
    - *A box that holds the rest* (every value of every unfixed attribute) covers it.
    - *Counting.* An event outside every box left must leave each of them on some
      attribute, and one value of an attribute leaves at most as many boxes as its class
      that the fewest hold. When those maxima add up to fewer than the boxes left, every
      event is covered: the pigeonhole argument that decides "rule i excludes the value i
      on each of k attributes, k+1 rules" at once.

    Args:
        box: The box asked about.
        taken: The boxes that may cover it.
        domains: The in-scope values per attribute.
        spend: Counts the work (raises `_TooHard` past the limits).
    """

    def __init__(
        self,
        box: _Box,
        taken: Sequence[_Box],
        domains: dict[str, _Set],
        spend: Callable[[int], None],
    ) -> None:
        self.spend = spend
        #: Each taken box meeting `box`, as its sets on the attributes where it is narrower.
        boxes: list[dict[str, _Set]] = []
        dims: set[str] = set()
        for other in taken:
            narrower = _narrower(box, other)
            if narrower is not None:
                boxes.append(narrower)
                dims.update(narrower)
        spend(len(taken))
        whole = {dim: box.get(dim, domains[dim]) for dim in dims}
        #: Attributes in the enumeration's order (the order of `first`).
        self.dims = [dim for dim in (*_DIMS, "exe") if dim in whole]
        self.bit = {dim: 1 << index for index, dim in enumerate(self.dims)}
        #: Per attribute, the boxes narrower on it; per box, the attributes it narrows.
        self.on = dict.fromkeys(self.dims, 0)
        self.needs: list[int] = []
        for index, narrower in enumerate(boxes):
            needs = 0
            for dim in narrower:
                self.on[dim] |= 1 << index
                needs |= self.bit[dim]
            self.needs.append(needs)
        #: Per attribute, its classes with the boxes (narrower on it) that hold each.
        self.atoms: dict[str, list[tuple[_Set, int]]] = {}
        for dim in self.dims:
            sets = [(b[dim], 1 << i) for i, b in enumerate(boxes) if dim in b]
            self.atoms[dim] = _atoms(whole[dim], sets, spend)
            spend(len(sets) + len(self.atoms[dim]))
        self.everyone = (1 << len(boxes)) - 1
        self.memo: dict[tuple[int, int], bool] = {}

    def covered(self, fixed: int, boxes: int) -> bool:
        """Whether `boxes` cover the box, with the attributes `fixed` set to classes they hold."""
        self.spend(1)
        if not boxes:
            return False
        # Per unfixed attribute, the boxes narrower on it (bit masks, not a loop over boxes).
        live: list[tuple[str, int]] = []
        anywhere = 0
        narrowed_fixed = 0
        for dim in self.dims:
            narrow = self.on[dim] & boxes
            if not narrow:
                continue
            if fixed & self.bit[dim]:
                narrowed_fixed |= self.bit[dim]
            else:
                live.append((dim, narrow))
                anywhere |= narrow
        if boxes & ~anywhere:
            return True  # a box holds every value left
        # Only the attributes the boxes narrow matter: fixing others changed nothing.
        key = (narrowed_fixed, boxes)
        found = self.memo.get(key)
        if found is None:
            found = self.memo[key] = self._covered(fixed, boxes, live)
        return found

    def _covered(self, fixed: int, boxes: int, live: list[tuple[str, int]]) -> bool:
        # A box narrower on one attribute left decides it: an event outside that box must
        # take a class of that attribute outside it.
        after = [0] * (len(live) + 1)
        for index in range(len(live) - 1, -1, -1):
            after[index] = after[index + 1] | live[index][1]
        before = 0
        bound = 0
        count = boxes.bit_count()
        best: tuple[tuple[bool, int, int], str, set[int]] | None = None
        for index, (dim, narrow) in enumerate(live):
            unit = narrow & ~(before | after[index + 1])
            before |= narrow
            others = boxes & ~narrow
            # The classes an event outside every box may take (none held by a unit box).
            children = {
                others | (holders & narrow) for _, holders in self.atoms[dim] if not holders & unit
            }
            self.spend(len(self.atoms[dim]))
            if not children:
                return True  # every class of this attribute is inside some box
            leaves = count - min(child.bit_count() for child in children)
            bound += leaves
            score = (bool(unit), leaves, -len(children))
            if best is None or score > best[0]:
                best = (score, dim, children)
        if best is None or bound < count:
            return True  # no event leaves them all (counting)
        _, dim, children = best
        split = fixed | self.bit[dim]
        return all(self.covered(split, child) for child in sorted(children, key=int.bit_count))

    def first(self, part: Callable[[str, _Set], tuple[object, ...]]) -> _Box | None:
        """The classes, per attribute in the enumeration's order, of the first event left.

        Args:
            part: The rank of the first value of a set (`_Ranker.part`).

        Returns:
            The chosen class per attribute that the boxes narrow, or None when covered.
        """
        fixed, boxes = 0, self.everyone
        if self.covered(fixed, boxes):
            return None
        chosen: _Box = {}
        for dim in self.dims:
            narrow = self.on[dim] & boxes
            if not narrow:
                continue
            atoms = sorted(self.atoms[dim], key=lambda atom: part(dim, atom[0]))
            self.spend(len(atoms))
            for values, holders in atoms:
                child = (boxes & ~narrow) | (holders & narrow)
                if not self.covered(fixed | self.bit[dim], child):
                    chosen[dim] = values
                    fixed, boxes = fixed | self.bit[dim], child
                    break
        return chosen


def _pick(
    values: _Set, seeds: Sequence[int], others: Sequence[int] = ()
) -> tuple[tuple[int, int], int]:
    """The value the enumeration would reach first in `values`, with its rank.

    The enumeration visits the seeds, then its other representatives in ascending order:
    the least value of a set of intervals is one of them; for bit patterns, `others`
    lists them.
    """
    for index, seed in enumerate(seeds):
        if seed in values:
            return (0, index), seed
    for other in others:
        if other in values:
            return (1, other), other
    least = values.least()  # type: ignore[union-attr]
    return (1, least), least


class _Ranker:
    """Order events as the enumerating evaluator visits them, to report the same one.

    A box's rank is that of its first event: per attribute, in the enumeration's order
    (auid, uid, gid, success, exit, a0..a3, pid, ppid, pers, sessionid, exe), the first
    seed in the box, else its least value.
    """

    def __init__(
        self,
        domains: dict[str, _Set],
        ctx: Context,
        case: int,
        others: dict[str, list[int]] | None = None,
    ) -> None:
        self.domains = domains
        self.seeds = {**_SEEDS, "auid": (ctx.uid_min,)}
        self.others = others or {}
        self.base: dict[str, tuple[object, ...]] = {
            dim: self.part(dim, domains[dim]) for dim in _DIMS
        }
        self.base["exe"] = ("",)
        self.case = case

    def part(self, dim: str, values: _Set) -> tuple[object, ...]:
        """The rank of the first value of `values` (the `exit` part includes success)."""
        if dim == "exe":
            return ("",) if values.cofinite else (min(values.names),)  # type: ignore[union-attr]
        if dim == "exit":
            failures = values & self.domains["failure"]  # type: ignore[operator]
            if failures:
                return 0, _pick(failures, self.seeds["exit"], self.others.get("exit", ()))[0]
            return 1, (0, 0)
        return (_pick(values, self.seeds[dim], self.others.get(dim, ()))[0],)

    def values(self, box: _Box) -> dict[str, int | str | bool]:
        """The first event of `box`, with every attribute."""
        event: dict[str, int | str | bool] = {}
        for dim in _DIMS:
            values = box.get(dim, self.domains[dim])
            if dim == "exit":
                failures = values & self.domains["failure"]  # type: ignore[operator]
                others = self.others.get("exit", ())
                event["exit"] = _pick(failures, self.seeds["exit"], others)[1] if failures else 0
                event["success"] = event["exit"] == 0
                continue
            event[dim] = _pick(values, self.seeds[dim], self.others.get(dim, ()))[1]
        names = box.get("exe")
        if names is None or names.cofinite:  # type: ignore[union-attr]
            event["exe"] = _ANOTHER_PROGRAM
        else:
            event["exe"] = min(names.names)  # type: ignore[union-attr]
        return event

    def __call__(self, box: _Box) -> tuple[object, ...]:
        parts = dict(self.base)
        for dim, values in box.items():
            parts[dim] = self.part(dim, values)
        return (*parts["auid"], self.case, *(item for dim in _RANKED for item in parts[dim]))


_ROOT: Final = 0
_SELF: Final = 1


def _ranges(op: str, constant: int) -> _Ranges:
    """The u32 values v with `v op constant`, for the ordered operators."""
    if op == "=":
        return _Ranges.span(constant, constant)
    if op == "!=":
        return _Ranges.span(0, U32) - _Ranges.span(constant, constant)
    if op == "<":
        return _Ranges.span(0, constant - 1)
    if op == ">":
        return _Ranges.span(constant + 1, U32)
    if op == "<=":
        return _Ranges.span(0, constant)
    return _Ranges.span(constant, U32)  # ">="


def _bits(op: str, mask: int) -> _Cubes:
    """The u32 values v with `v & mask` (some bit set) or `v &= mask` (all bits set)."""
    if op == "&=":
        return _Cubes(((mask, mask),))
    cubes: list[tuple[int, int]] = []
    care = 0
    for bit in (1 << n for n in range(31, -1, -1)):
        if mask & bit:
            cubes.append((bit, care | bit))
            care |= bit
    return _Cubes(tuple(cubes))


@functools.lru_cache(maxsize=64)
def _domain(dim: str, uid_min: int, *, bitwise: bool) -> _Set:
    """The values an in-scope event may have for `dim` (`failure`: failed exit codes)."""
    spans = {
        "auid": _Ranges.span(uid_min, UID_UNSET - 1),
        "gid": _Ranges.span(0, U32 - 1),
        "exit": _Ranges((0, _FAIL_LOW), (0, U32)),
        "failure": _Ranges.span(_FAIL_LOW, U32),
        "pid": _Ranges.span(1, PID_MAX),
        "ppid": _Ranges.span(1, PID_MAX),
        "sessionid": _Ranges.span(0, U32 - 1),
    }
    values = spans.get(dim, _Ranges.span(0, U32))  # a0..a3, pers
    return _Cubes.of(values) if bitwise else values


@functools.lru_cache(maxsize=1 << 16)
def _where(dim: str, op: str, constant: int, uid_min: int, *, bitwise: bool) -> _Condition:
    """The condition `dim op constant` on the in-scope events: a set, or always true/false."""
    domain = _domain(dim, uid_min, bitwise=bitwise)
    values: _Set
    if op in {"&", "&="}:
        values = _bits(op, constant) & domain  # type: ignore[operator]
    elif bitwise:
        values = _Cubes.of(_ranges(op, constant)) & domain  # type: ignore[operator]
    else:
        values = _ranges(op, constant) & domain  # type: ignore[operator]
    if not values:
        return False
    if not domain - values:  # type: ignore[operator]
        return True
    return dim, values


@attrs.define
class _Symbolic:
    """Turns rule conditions into boxes, for one target, mirroring `_Evaluator.field`."""

    target: RequiredEvent
    ctx: Context
    #: The attributes bit-tested by some condition: their sets are cubes.
    bitwise: frozenset[str]
    domains: dict[str, _Set] = attrs.Factory(dict)
    #: Conditions by (id of the field, case, task list): fields live as long as the rules.
    conditions: dict[tuple[int, int, bool], _Condition] = attrs.Factory(dict)
    #: Whether some rule looks at the process's executable (`exe`).
    exe_conditions: bool = False

    def __attrs_post_init__(self) -> None:
        for dim in _DIMS:
            self.domains[dim] = _domain(dim, self.ctx.uid_min, bitwise=dim in self.bitwise)
        self.domains["failure"] = _domain(
            "failure", self.ctx.uid_min, bitwise="exit" in self.bitwise
        )
        self.domains["exe"] = _Names(frozenset(), cofinite=True)

    def impossible(self) -> list[_Box]:
        """The events no process can make, which the walks take from the start.

        A successful exec runs the program it executed: with `exe` conditions about, an
        exec target's events with success and another executable do not exist.
        """
        program = self.target.program
        if program is None or not self.exe_conditions:
            return []
        success = self.where("exit", "=", 0)
        if not isinstance(success, tuple):  # pragma: no cover - exit=0 is in the domain
            return []
        others = _Names(frozenset({program.path}), cofinite=True)
        return [{"exit": success[1], "exe": others}]

    def where(self, dim: str, op: str, constant: int) -> _Condition:
        """The condition `dim op constant` on the in-scope events."""
        return _where(dim, op, constant, self.ctx.uid_min, bitwise=dim in self.bitwise)

    def opened(self) -> _Condition:
        """The exec events that open the file: all but the failures `BEFORE_OPEN`."""
        values = self.domains["exit"]
        for code in BEFORE_OPEN:
            point = self.where("exit", "=", (-code) & U32)
            if isinstance(point, tuple):
                values = values - point[1]  # type: ignore[operator]
        return "exit", values

    def condition(self, field: Field, case: int, *, task: bool) -> _Condition:
        """One condition as a set of events, or its truth on all of them (None: unknown)."""
        name = field.name
        program = self.target.program
        if task and at_fork(field):
            return None
        if field.compare:
            return self._compare_fields(field, case)
        if name in LSM_FIELDS and name.startswith("subj_"):
            return None
        if name == "auid":
            if field.value == UID_UNSET:
                # The kernel turns a test against unset into a loginuid_set test.
                return _compare(1, field.op, 0)
            return self.where("auid", field.op, int(field.value))
        if name in _UID_FAMILY:
            if case == _ROOT:
                return _compare(0, field.op, int(field.value))
            return self.where("auid", field.op, int(field.value))
        if name in GID_FIELDS - {"obj_gid"}:
            return self.where("gid", field.op, int(field.value))
        if name in {"pid", "pers", "sessionid"}:
            return self.where(name, field.op, int(field.value))
        if name == "msgtype":
            return _compare(SYSCALL_RECORD, field.op, int(field.value))
        if name == "exe" and field.ambiguous:
            return None  # read from auditctl -l: exe= or exe!=, which it prints alike
        if name == "exe" and task:
            return field.op != "="  # see _TASK_EXE
        if name == "exe":
            if program is not None and task:
                same = _identifies(str(field.value), program, self.ctx)
                if same is None:
                    return None
                return same if field.op == "=" else not same
            # The process's executable at syscall exit: for an exec, the program when it
            # succeeded (`_Symbolic.impossible`), the caller's own program when it failed.
            paths = {str(field.value)}
            if program is not None:
                same = _identifies(str(field.value), program, self.ctx)
                if same is None:
                    return None  # a link of the target's, not read, may make it the program
                if same:
                    paths.add(program.path)
                else:
                    paths.discard(program.path)
            return "exe", _Names(frozenset(paths), cofinite=field.op != "=")
        if task:
            # Task rules run at fork time without a syscall context.
            return False
        if name == "arch":
            return _compare(self.target.abi.audit_arch, field.op, int(field.value))
        if name == "ppid":
            return self.where("ppid", field.op, int(field.value))
        if name == "success":
            wanted = 1 if field.value else 2
            succeeds, fails = _compare(1, field.op, wanted), _compare(2, field.op, wanted)
            if succeeds == fails:
                return succeeds
            return self.where("exit", "=", 0) if succeeds else ("exit", self.domains["failure"])
        if name == "exit":
            return self.where("exit", field.op, int(field.value))
        if name in ARG_FIELDS:
            return self.where(name, field.op, int(field.value))
        if name == "perm":
            return _perm_matches(field, self.target)
        if name in {"path", "dir"}:
            if program is None:
                return False
            found = _watch_on(field, program, self.ctx)
            if found is None:
                return None
            matched, other = found
            if other is not None:
                return self.where("exit", "=", 0) if other == "tree" else None
            if matched and self.ctx.argv_first:
                return self.opened()
            return matched
        if name in {"obj_uid", "obj_gid", "filetype"} and program is not None:
            return None if self.ctx.argv_first else _name_field(field, program)
        if name in _NAME_FIELDS or name == "saddr_fam":
            return _unnamed_field(field, program)
        return None

    def _compare_fields(self, field: Field, case: int) -> _Condition:
        def side(name: str) -> str | int | None:
            if name == "auid":
                return "auid"
            if name in _UID_FAMILY:
                return 0 if case == _ROOT else "auid"
            if name in GID_FIELDS - {"obj_gid"}:
                return "gid"
            if name in {"obj_uid", "obj_gid"} and not self.ctx.argv_first:
                return _name_owner(name, self.target.program)
            return None

        left, right = side(field.name), side(str(field.value))
        if left is None or right is None:
            return None if self.target.program is not None else False
        if isinstance(left, int) and isinstance(right, int):
            return _compare(left, field.op, right)
        if left == right:
            return _compare(1, field.op, 1)
        if isinstance(left, str) and isinstance(right, int):
            return self.where(left, field.op, right)
        if isinstance(right, str) and isinstance(left, int):
            return self.where(right, field.op, left)  # -C takes only = and !=
        return None  # auid against gid: no such -C pair

    def rule(self, rule: Rule, case: int, *, task: bool) -> tuple[_Box, tuple[str, ...]] | None:
        """A rule's conditions as one box and the conditions it cannot evaluate.

        Returns:
            None when the rule matches no in-scope event.
        """
        box: _Box = {}
        unknown: list[str] = []
        for field in rule.fields:
            key = (id(field), case, task)
            if key in self.conditions:
                result = self.conditions[key]
            else:
                result = self.conditions[key] = self.condition(field, case, task=task)
            if result is True:
                continue
            if result is False:
                return None
            if result is None:
                unknown.append(_unknown_text(field, task=task))
                continue
            dim, values = result
            mine = box.get(dim)
            both = values if mine is None else mine & values  # type: ignore[operator]
            if not both:
                return None
            if isinstance(both, _Cubes) and len(both.cubes) > _PATTERNS:
                raise _TooHard(limit="patterns")
            box[dim] = both
        return box, tuple(unknown)

    def shown(self, rules: Iterable[Rule], others: Iterable[Rule]) -> set[str]:
        """The attributes the enumerating evaluator would show in a counterexample."""
        shown = {"auid", "success"}
        for rule in rules:
            names: list[str] = []
            for field in rule.fields:
                cases = (_ROOT, _SELF) if _about_uid(field) else (_ROOT,)
                truths = {self._truth(field, case) for case in cases}
                if truths == {False}:
                    break
                if truths != {True}:
                    names.extend(_field_dims(field))
                    if field.name in {"path", "dir"} and self.ctx.argv_first:
                        names.append("exit")  # whether the exec got as far as the open
            else:
                shown.update(names)
        for rule in others:
            for field in rule.fields:
                shown.update(_field_dims(field))
        return shown

    def others(self, rules: Iterable[Rule]) -> dict[str, list[int]]:
        """For bit-tested attributes, the enumeration's representatives, ascending."""
        found: dict[str, set[int]] = {dim: set() for dim in self.bitwise}
        for rule in rules:
            for field in rule.fields:
                dim = "auid" if _dimension(field.name) == "uid" else _dimension(field.name)
                if field.compare or dim not in found or not isinstance(field.value, int):
                    continue
                constants = {field.value}
                if dim in ARG_FIELDS:
                    constants.add(~field.value & U32)
                found[dim].update(v + step for v in constants for step in (-1, 0, 1))
        ends = {
            "auid": {self.ctx.uid_min, UID_UNSET - 1},
            "exit": {_FAIL_LOW, U32},
            "pid": {1, PID_MAX},
            "ppid": {1, PID_MAX},
        }
        return {
            dim: sorted(
                v for v in values | ends.get(dim, {0, U32, U32 - 1}) if v in self.domains[dim]
            )
            for dim, values in found.items()
        }

    def _truth(self, field: Field, case: int) -> bool | str | None:
        if field.op not in {"=", "!=", "<", ">", "<=", ">="}:
            return "varies"
        key = (id(field), case, False)
        if key not in self.conditions:
            self.conditions[key] = self.condition(field, case, task=False)
        result = self.conditions[key]
        return "varies" if isinstance(result, tuple) else result


def _field_dims(field: Field) -> list[str]:
    if field.compare:
        return [_dimension(field.name), _dimension(str(field.value))]
    return [_dimension(field.name)]


def _dimension(name: str) -> str:
    if name in _UID_FAMILY:
        return "uid"
    if name in GID_FIELDS - {"obj_gid"}:
        return "gid"
    return name


def _about_uid(field: Field) -> bool:
    """Whether the truth of `field` depends on the uid (0 or the user's own)."""
    return field.name in _UID_FAMILY or (field.compare and str(field.value) in _UID_FAMILY)


def _uses_uid(rules: Iterable[Rule]) -> bool:
    return any(_about_uid(field) for rule in rules for field in rule.fields)


def _bitwise(rules: Iterable[Rule]) -> frozenset[str]:
    found: set[str] = set()
    for rule in rules:
        for field in rule.fields:
            if field.op in {"&", "&="} and not field.compare:
                dim = _dimension(field.name)
                dim = "auid" if dim == "uid" else dim
                if dim in _DIMS:  # not devminor: unknown for module syscalls, see _NAME_FIELDS
                    found.add(dim)
    return frozenset(found)


@attrs.frozen
class _Hit:
    """The first event that reaches a rule and may match it (or reaches the end of the list).

    Attributes:
        rank: Its place in the order the enumerating evaluator visits events.
        box: A box of events that starts with it.
        rule: The rule reached (None: the end of the list).
        case: The uid case (root or the user's own uid).
        position: The rule's position in its list.
    """

    rank: tuple[object, ...]
    box: _Box
    rule: Rule | None
    case: int
    position: int


def _walk(
    symbolic: _Symbolic,
    rules: Sequence[Rule],
    case: int,
    *,
    task: bool,
    ranker: _Ranker,
    bad: Callable[[Rule], bool],
    end: bool = False,
    work: int = 0,
    lend: bool = False,
    decided: Sequence[_Box] = (),
) -> tuple[list[int], list[_Hit], int]:
    """Follow the events through `rules` in order (first match wins).

    Args:
        symbolic: The rules' conditions as boxes.
        rules: The list.
        case: The uid case.
        task: Whether it is the task list.
        ranker: The enumeration's order of events.
        bad: Whether an event that reaches a rule and may match it is a failure.
        end: Whether an event that no rule surely matches is a failure.
        work: The work done before, for `WORK_LIMIT`.
        lend: Whether keyless watches take the key of a later syscall rule (`_borrows`:
            the exit list).
        decided: The events another list decided (they never reach `rules`).

    Returns:
        The positions of the good rules that some event reaches and may match, the first
        event of each failure (a bad rule reached, or the end), and the work done in all.
    """
    taken = _Taken(symbolic.domains, ranker, work, deadline=symbolic.ctx.deadline)
    for box in (*symbolic.impossible(), *decided):
        taken.take(box)
    good: list[int] = []
    failures: list[_Hit] = []
    for position, rule in enumerate(rules):
        if taken.everything:
            break
        try:
            compiled = symbolic.rule(rule, case, task=task)
            if compiled is None:
                continue
            box, unknown = compiled
            if lend and _borrows(rule):
                _walk_lenders(
                    symbolic,
                    rules,
                    position,
                    box,
                    case=case,
                    taken=taken,
                    good=good,
                    failures=failures,
                )
            elif bad(rule):
                # Only the least failure is reported: a box whose first event ranks after
                # one found already cannot hold a lesser one (thousands of `never` rules on
                # other programs' failed execs, `-F exe=`, need no search each).
                if not failures or min(hit.rank for hit in failures) > ranker(box):
                    found = taken.first(box)
                    if found is not None:
                        failures.append(_Hit(found[0], found[1], rule, case, position))
            elif taken.reaches(box):
                good.append(position)
        except _TooHard as hard:
            hard.rule = rule
            raise
        if not unknown:
            taken.take(box)
    if end:
        found = taken.first({})
        if found is not None:
            failures.append(_Hit(found[0], found[1], None, case, len(rules)))
    return good, failures, taken.work


def _walk_lenders(
    symbolic: _Symbolic,
    rules: Sequence[Rule],
    position: int,
    box: _Box,
    *,
    case: int,
    taken: _Taken,
    good: list[int],
    failures: list[_Hit],
) -> None:
    """Follow the events that reach the keyless watch `rules[position]` to their key.

    They are recorded with the key of the first syscall rule after the watch that matches
    them (`_borrows`): a second walk, over those rules, of the watch's box minus the
    boxes taken before it. A lender with an unacceptable key, or no lender, is a failure.
    """
    lent = _Taken(taken.domains, taken.rank, taken.work, deadline=taken.deadline)
    for earlier in taken.boxes:
        lent.take(earlier)
    for later_position in range(position + 1, len(rules)):
        later = rules[later_position]
        inode = _in_inode_hash(later)
        if inode is True:
            continue
        compiled = symbolic.rule(later, case, task=False)
        if compiled is None:
            continue
        later_box, unknown = compiled
        both = _meet(box, later_box)
        if both is None:
            continue
        if _key_ok(later, symbolic.ctx) != "covered":
            found = lent.first(both)
            if found is not None:
                failures.append(_Hit(found[0], found[1], rules[position], case, position))
        elif lent.reaches(both):
            good.append(later_position)
        if not unknown and inode is False:
            lent.take(later_box)
    found = lent.first(box)
    if found is not None:
        failures.append(_Hit(found[0], found[1], rules[position], case, position))
    taken.work = lent.work


def evaluate(ruleset: RuleSet, target: RequiredEvent, ctx: Context) -> Coverage:
    """Judge whether `ruleset` records every in-scope event of `target`.

    The in-scope events are followed through the task, exclude and exit lists, in list
    order: an event *reaches* a rule when no earlier rule surely matches it. The target is
    covered unless some event reaches a `never` or unkeyed (wrongly keyed) task rule, an
    exclude rule, a `never` or unkeyed (wrongly keyed) exit rule that may match it, or the
    end of the exit list; an event a task rule surely matches never reaches the exit list. The
    counterexample is the first such event in the order the enumerating oracle visits events, judged
    once more concretely by `_judge_event` for the reason. The rules reported are the
    keyed `always` task rules, then the keyed exit rules, that some in-scope event reaches
    and may match, in list order.

    Args:
        ruleset: The loaded rules.
        target: The event kind.
        ctx: uid-min, pinned key, live filesystem.

    Returns:
        The coverage, with a counterexample when not covered, or `undecided` set when the
        evaluation would exceed `WORK_LIMIT` steps or `TIME_LIMIT` (or `ctx.deadline`),
        far beyond any realistic rule list.
    """
    deadline = time.monotonic() + TIME_LIMIT
    if ctx.deadline is not None and ctx.deadline < deadline:
        deadline, limit = ctx.deadline, "the time left for judging in this run"
    else:
        limit = f"{TIME_LIMIT:g} s"
    ctx = attrs.evolve(ctx, deadline=deadline)
    exit_rules = _relevant_exit_rules(ruleset.exit, target)
    everything = (*exit_rules, *ruleset.task, *ruleset.exclude)
    symbolic = _Symbolic(target, ctx, _bitwise(everything))
    symbolic.exe_conditions = any(f.name == "exe" for rule in everything for f in rule.fields)
    cases = (_ROOT, _SELF) if _uses_uid(everything) else (_ROOT,)
    others = symbolic.others(everything)
    failures: list[_Hit] = []
    good: set[int] = set()
    task_good: set[int] = set()
    work = 0

    def wrong(rule: Rule) -> bool:
        return rule.action == "never" or _key_ok(rule, ctx) != "covered"

    try:
        for case in cases:
            ranker = _Ranker(symbolic.domains, ctx, case, others)
            # An event a task rule surely matches never reaches the exit list: its task is
            # unaudited (`never`) or recorded with the task rule's key (`always`).
            decided = [
                compiled[0]
                for rule in ruleset.task
                if (compiled := symbolic.rule(rule, case, task=True)) is not None
                and not compiled[1]
            ]
            for rules, task, bad, end in (
                (ruleset.task, True, wrong, False),
                (ruleset.exclude, False, lambda _: True, False),
                (exit_rules, False, wrong, True),
            ):
                reached, failed, work = _walk(
                    symbolic,
                    rules,
                    case,
                    task=task,
                    ranker=ranker,
                    bad=bad,
                    end=end,
                    work=work,
                    lend=rules is exit_rules,
                    decided=decided if rules is exit_rules else (),
                )
                failures.extend(failed)
                if rules is exit_rules:
                    good.update(reached)
                elif task:
                    task_good.update(reached)
    except _TooHard as hard:

        def narrows(rule: Rule, *, task: bool) -> bool:
            try:
                return any((symbolic.rule(rule, case, task=task) or ({}, ()))[0] for case in cases)
            except _TooHard:
                return True

        involved = [
            rule
            for rules, task in ((exit_rules, False), (ruleset.task, True), (ruleset.exclude, False))
            for rule in rules
            if narrows(rule, task=task)
        ]
        named = list(dict.fromkeys(str(rule.origin) for rule in involved))
        origins = ", ".join(named[:_NAMED])
        if len(named) > _NAMED:
            origins += f" and {len(named) - _NAMED} more"
        if hard.limit == "steps":
            limit = f"{WORK_LIMIT} steps"
        elif hard.limit == "patterns":
            limit = "the bit patterns its `&` and `&=` tests multiply out into"
        hardest = (
            "which events no rule matches"
            if hard.rule is None
            else f"which events reach {hard.rule.origin} `{hard.rule.origin.text.strip()}`"
        )
        return Coverage(
            target=target,
            covered=False,
            rules=(),
            undecided=f"the conditions of the rules that can match it ({origins}) split its "
            f"events into more pieces than kmod-audit follows exactly ({limit}); it was "
            f"deciding {hardest}",
        )
    rules = (
        *(ruleset.task[position] for position in sorted(task_good)),
        *(exit_rules[position] for position in sorted(good)),
    )
    if not failures:
        return Coverage(target=target, covered=True, rules=rules, events=work)
    first = min(failures, key=lambda hit: hit.rank)
    ranker = _Ranker(symbolic.domains, ctx, first.case, others)
    return _counterexample(ruleset, exit_rules, symbolic, first, ranker, rules=rules, work=work)


def _counterexample(
    ruleset: RuleSet,
    exit_rules: Sequence[Rule],
    symbolic: _Symbolic,
    first: _Hit,
    ranker: _Ranker,
    *,
    rules: tuple[Rule, ...],
    work: int,
) -> Coverage:
    """The coverage of a target that `first` shows is not covered."""
    target, ctx = symbolic.target, symbolic.ctx
    event = ranker.values(first.box)
    event["uid"] = 0 if first.case == _ROOT else event["auid"]
    outcome = None
    for found in _judge_event(_Evaluator(target, ctx), ruleset, exit_rules, event, ctx):
        if found.verdict != "covered":
            outcome = found
            break
    if outcome is None:  # pragma: no cover - the two evaluations disagree: a bug
        return Coverage(
            target=target,
            covered=False,
            rules=(),
            undecided=f"kmod-audit found the event {describe_event(event)} uncovered but "
            "cannot confirm it (an internal inconsistency: please report it)",
        )
    shown = symbolic.shown(exit_rules, (*ruleset.task, *ruleset.exclude))
    names = ["auid", "uid", "gid", "success", "exit", *sorted(ARG_FIELDS)]
    names += ["pid", "ppid", "pers", "sessionid"]
    implied = target.program is not None and bool(event["success"])  # runs the program
    if event["exe"] != _ANOTHER_PROGRAM and not implied:
        names.append("exe")
    note = None
    if target.program is not None and ctx.argv_first and _before_open(event):
        note = BEFORE_OPEN_NOTE
    program = target.program
    linked = [
        condition
        for condition in outcome.uncertain
        if program is not None
        and (match := _PATH_CONDITION.fullmatch(condition)) is not None
        and (_under if match.group(1) == "dir" else _identifies)(match.group(2), program, ctx)
        is None
    ]
    if linked and program is not None:
        said = (
            f"whether {', '.join(linked)} names {program.path} depends on the target's "
            "directory links, which are not read (pass --root DIR, a copy of its files, or "
            "judge the rules on the machine), so the worst case counts here"
        )
        note = f"{note}; {said}" if note else said
    return Coverage(
        target=target,
        covered=False,
        rules=rules,
        event={name: event[name] for name in names if name in shown or name == "exe"},
        outcome=outcome,
        events=work,
        note=note,
    )
