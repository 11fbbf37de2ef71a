"""What the kernel ends up with: a model of `auditctl -R` feeding the kernel's rule lists.

`auditctl -R FILE` sends the file line by line and stops at the first line that fails,
either in auditctl (a `Rejection` from the parser) or in the kernel (an invalid field
value, a duplicate rule, a watch whose parent directory is missing, anything after
`-e 2`). Unless the file said `-c` or `-i` before it, nothing after that line loads: this
is how one typo silently drops every later rule. NixOS loads its rules exactly this way
(`audit-rules-nixos.service`), and augenrules does too.

Captured `auditctl -l` output is already what the kernel holds; it is taken as loaded.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Final

import attrs

from .rules import (
    EQUALITY_ONLY_FIELDS,
    NAME_MAX,
    NO_BITOPS_FIELDS,
    PATH_MAX,
    THIS_MACHINE,
    UID_UNSET,
    Command,
    Origin,
    Rejection,
    Rule,
    RulesSource,
    TargetFiles,
)

__all__ = ["Drift", "LoadIssue", "RuleSet", "Unread", "compare", "load", "without"]

_LOCKED_HINT: Final = (
    "`-e 2` locks the rules until reboot; keep it as the last line (augenrules moves it there)"
)


@attrs.frozen(kw_only=True)
class LoadIssue:
    """A line that did not load.

    Attributes:
        origin: The line.
        message: auditctl's message for it.
        hint: What to do.
        stops: True when `auditctl -R` stops at this line (nothing after it loads).
        unless: The file whose absence on the target refuses the line, when the target's
            files are not read (the line is refused in one possible world, see `without`).
    """

    origin: Origin
    message: str
    hint: str
    stops: bool
    unless: str | None = None


@attrs.frozen(kw_only=True)
class Unread:
    """A line that loads only where a file the rules are not judged with is there.

    Attributes:
        origin: The line.
        path: The directory (or path) the kernel needs: a watch's parent, a tree watch's
            path, the directory of an `exe=`.
        message: The kernel's error where it is not there.
        hint: What to do.
        action: The rule's action: refused, an `always` rule only loses records.
    """

    origin: Origin
    path: str
    message: str
    hint: str
    action: str


@attrs.frozen(kw_only=True)
class RuleSet:
    """The kernel's audit configuration after loading a source.

    Attributes:
        source: What was loaded.
        exit: The exit (syscall) filter list, in kernel order (`-A` rules first).
        task: The task list.
        exclude: The exclude (record type) list.
        user: The user-message list.
        filesystem: The filesystem list.
        enabled: The last `-e` value applied, None when the source never sets it.
        enabled_origin: The line that set it.
        locked_at: The `-e 2` line, if any.
        issues: Lines that did not load, in order.
        stopped_at: The line at which loading stopped, if it did.
        not_loaded: The lines after the stop that were never sent.
        warnings: auditctl's warnings (they do not stop loading).
        files: What was known of the target's files.
        unread: The lines that loaded only because a file they need is taken to be there:
            the target's files are not read (`files`), so it may not be (see `without`).
        refused: The lines refused as if a file they need were not there (`without`).
    """

    source: RulesSource
    exit: tuple[Rule, ...] = ()
    task: tuple[Rule, ...] = ()
    exclude: tuple[Rule, ...] = ()
    user: tuple[Rule, ...] = ()
    filesystem: tuple[Rule, ...] = ()
    enabled: int | None = None
    enabled_origin: Origin | None = None
    locked_at: Origin | None = None
    issues: tuple[LoadIssue, ...] = ()
    stopped_at: Origin | None = None
    not_loaded: tuple[Origin, ...] = ()
    warnings: tuple[tuple[Origin, str], ...] = ()
    files: TargetFiles = THIS_MACHINE
    unread: tuple[Unread, ...] = ()
    refused: frozenset[Origin] = frozenset()

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every loaded rule, list by list."""
        return self.exit + self.task + self.exclude + self.user + self.filesystem


@attrs.frozen
class Drift:
    """How the running rules differ from one on-disk rule set.

    Attributes:
        missing: Rules on disk but not running, in on-disk order.
        extra: Rules running but not on disk, in running order.
        moved: With neither, the positions that differ (0: the same rules in the same
            order); rules compare by their kernel identity (`Rule.signature`).
    """

    missing: tuple[Rule, ...]
    extra: tuple[Rule, ...]
    moved: int

    @property
    def rules(self) -> int:
        """How many rules differ (`kmod_audit_drift_rules`)."""
        return len(self.missing) + len(self.extra) + self.moved


def compare(running: RuleSet, on_disk: RuleSet) -> Drift:
    """Compare the running rules with on-disk ones, in time linear in their counts."""
    live = [r.signature() for r in running.rules]
    disk = [r.signature() for r in on_disk.rules]
    live_set, disk_set = set(live), set(disk)
    missing = tuple(r for r, s in zip(on_disk.rules, disk, strict=True) if s not in live_set)
    extra = tuple(r for r, s in zip(running.rules, live, strict=True) if s not in disk_set)
    moved = 0
    if not missing and not extra and live != disk:
        moved = sum(a != b for a, b in zip(live, disk, strict=False)) + abs(len(live) - len(disk))
    return Drift(missing, extra, moved)


#: The kernel's error for a watch or `exe=` whose directory is missing.
_ENOENT: Final = "Error sending add rule data request (No such file or directory)"


def _kernel_check(rule: Rule, *, files: TargetFiles) -> tuple[str, str, str | None] | None:
    """Return (error, hint, unless) when the kernel would refuse `rule` (audit_data_to_entry).

    `unless` is None for a certain refusal, else the path whose existence on the target is
    not known (`files`): the rule loads only where it is there.
    """
    found = _refusal(rule)
    if found is not None:
        return (*found, None)
    for field in rule.fields:
        if field.compare or field.name not in {"path", "dir", "exe"}:
            continue
        missing = _missing(str(field.value), field.name, files, watch=rule.watch is not None)
        if missing is not None:
            return missing
    return None


def _refusal(rule: Rule) -> tuple[str, str] | None:
    """(error, hint) when the kernel refuses `rule` whatever the target's files hold."""
    einval = "Error sending add rule data request (Invalid argument)"
    watches = [f for f in rule.fields if f.name in {"path", "dir", "inode"} and not f.compare]
    if len(watches) > 1:
        return einval, "a rule may hold one path=, dir= or inode= field"
    if rule.list == "filesystem" and any(f.name != "fstype" for f in rule.fields):
        return einval, "filesystem rules take only fstype= (and a key)"
    exe_seen = False
    for field in rule.fields:
        if field.name == "exe" and not field.compare:
            # audit_data_to_entry() keeps one exe mark per rule: a second exe= (or exe!=)
            # is EINVAL, whatever either names.
            if exe_seen:
                return einval, (
                    "a rule may hold one exe= field (the kernel refuses a second one); "
                    "write one rule per program"
                )
            exe_seen = True
        if field.compare or field.name in EQUALITY_ONLY_FIELDS:
            if field.op not in {"=", "!="}:
                name = "field_compare" if field.compare else field.name
                return einval, f"`{name}` takes only = and != (the kernel refuses {field.op})"
            if field.name == "key":
                return einval, "a rule holds one key: give every key with -k"
        if field.compare:
            continue
        if field.name in {"path", "dir", "exe"}:
            too_long = _name_too_long(str(field.value))
            if too_long is not None:
                return "Error sending add rule data request (File name too long)", too_long
        if field.name == "field_compare" and int(field.value) > 25:
            return einval, "field_compare takes an AUDIT_COMPARE_* number (1-25)"
        if field.name in {"path", "exe"} and str(field.value).rsplit("/", 1)[-1] in {".", ".."}:
            # kern_path_locked() refuses a last component that is not a name (LAST_DOT).
            return einval, f"{field.name}= must name a file, not end in `.` or `..`"
        if field.name == "exe":
            exe = str(field.value)
            if not exe.startswith("/") or exe.endswith("/"):
                return einval, "exe= takes the absolute path of a program"
        if field.op in {"&", "&="} and field.name in NO_BITOPS_FIELDS:
            return einval, f"`{field.name}` takes no bit operators (& and &= are for a0..a3)"
        if field.name == "auid" and field.value == UID_UNSET and field.op not in {"=", "!="}:
            return einval, "compare auid with unset (-1) only with = or !="
        if (
            field.name in {"uid", "euid", "suid", "fsuid", "obj_uid"}
            or field.name in {"gid", "egid", "sgid", "fsgid", "obj_gid"}
        ) and field.value == UID_UNSET:
            return einval, f"{field.name} cannot be -1/4294967295 (not a valid id)"
        if field.name in {"path", "dir"}:
            path = str(field.value)
            if field.op != "=":
                return einval, f"{field.name} takes only ="
            if not path.startswith("/"):
                return einval, f"{field.name} must be an absolute path"
            if field.name == "path" and path.endswith("/"):
                return einval, "a file watch path must not end with '/'"
    return None


def _name_too_long(path: str) -> str | None:
    """Why the kernel's path lookup refuses `path` with ENAMETOOLONG, or None.

    The kernel takes a path= (or -w), dir= or exe= value of up to PATH_MAX bytes from the
    rule, but resolves it with getname_kernel()/kern_path(), which need the path *and its
    terminating NUL* to fit in PATH_MAX (so at most 4095 bytes), and each component to
    fit in NAME_MAX (255) bytes.
    """
    size = len(path.encode(errors="surrogateescape"))
    if size >= PATH_MAX:
        return (
            f"the path is {size} bytes long; the kernel resolves paths of at most "
            f"{PATH_MAX - 1} bytes"
        )
    for part in path.split("/"):
        if len(part.encode(errors="surrogateescape")) > NAME_MAX:
            return f"a path component is longer than {NAME_MAX} bytes: {part[:20]}..."
    return None


def _missing(
    path: str, name: str, files: TargetFiles, *, watch: bool
) -> tuple[str, str, str | None] | None:
    """(error, hint, unless) when the kernel may not find what the `name=` field needs.

    A `dir=` tree watch needs its path (kern_path(): any existing path will do); a `path=`
    watch its parent directory, and an `exe=` mark its directory (kern_path_locked()).
    `unless` is None where `files` says it is missing, the path where they do not know.
    A `-w` whose path `files` cannot say is a directory needs only its parent: auditctl
    makes it a tree watch where it is a directory, and a file watch where it is not.
    """
    if name == "dir" and not (watch and files.exists(path) is None):
        there = files.exists(path)
        needed = path
        hint = f"{path} does not exist {files.where}; watch a directory that exists"
    else:
        needed = os.path.dirname(path.rstrip("/")) or "/"
        there = files.is_dir(needed)
        hint = (
            f"the directory {needed} of exe= does not exist {files.where}"
            if name == "exe"
            else f"the parent directory {needed} of the watch does not exist {files.where}, so "
            "the kernel refuses the watch; watch the real path of the file (e.g. the kmod "
            "binary's)"
        )
    if there:
        return None
    return _ENOENT, hint, needed if there is None else None


class _Lists:
    """The kernel's rule lists while loading, with each operation in constant time.

    Every rule gets a ticket that orders it within its list: appended rules count up from
    0, `-A` rules count down from -1, so sorting the live tickets gives the kernel order.
    The identity (what the kernel compares, `Rule.identity`) is computed once per rule and
    indexes the tickets holding it in list order, so "Rule exists" and `-d` are dictionary
    look-ups. Rules deleted by `-D -k` stay in those queues until a look-up meets them.
    """

    def __init__(self) -> None:
        self._live: dict[int, tuple[Rule, tuple[object, ...]]] = {}
        self._by_identity: dict[tuple[object, ...], deque[int]] = {}
        self._by_key: dict[str, set[int]] = {}
        self._next_back = 0
        self._next_front = -1

    def _first(self, identity: tuple[object, ...]) -> deque[int] | None:
        """The queue of `identity`, its first ticket live, or None when none is live."""
        tickets = self._by_identity.get(identity)
        if tickets is None:
            return None
        while tickets and tickets[0] not in self._live:
            tickets.popleft()
        return tickets or None

    def exists(self, rule: Rule, identity: tuple[object, ...]) -> bool:  # noqa: ARG002
        """Whether a live rule has the identity of `rule`."""
        return self._first(identity) is not None

    def add(self, rule: Rule, identity: tuple[object, ...], *, prepend: bool) -> None:
        """Put `rule` at the end of its list, or at its head for `-A`."""
        tickets = self._by_identity.setdefault(identity, deque())
        if prepend:
            ticket = self._next_front
            self._next_front -= 1
            tickets.appendleft(ticket)
        else:
            ticket = self._next_back
            self._next_back += 1
            tickets.append(ticket)
        self._live[ticket] = (rule, identity)
        if rule.keys:
            self._by_key.setdefault(rule.key, set()).add(ticket)

    def delete(self, rule: Rule, identity: tuple[object, ...]) -> bool:  # noqa: ARG002
        """Delete the first rule with the identity of `rule`; False when there is none."""
        tickets = self._first(identity)
        if tickets is None:
            return False
        ticket = tickets.popleft()
        gone, _ = self._live.pop(ticket)
        if gone.keys:
            self._by_key[gone.key].discard(ticket)
        return True

    def delete_all(self, key: str | None) -> None:
        """`-D`, or `-D -k KEY`: delete the rules whose key contains KEY (auditctl's strstr).

        One pass over the distinct keys per `-D -k` line, never one per rule and line.
        """
        if key is None:
            self._live.clear()
            self._by_identity.clear()
            self._by_key.clear()
            return
        for stored in [k for k in self._by_key if key in k]:
            for ticket in self._by_key.pop(stored):
                del self._live[ticket]

    def lists(self) -> dict[str, list[Rule]]:
        """The rules of each list, in kernel order."""
        result: dict[str, list[Rule]] = {name: [] for name in _LIST_NAMES}
        for ticket in sorted(self._live):
            rule = self._live[ticket][0]
            result[rule.list].append(rule)
        return result


_LIST_NAMES: Final = ("exit", "task", "exclude", "user", "filesystem")


@attrs.define
class _Loader:
    source: RulesSource
    files: TargetFiles
    refuse: frozenset[Origin] = frozenset()
    lists: _Lists = attrs.Factory(_Lists)
    enabled: int | None = None
    enabled_origin: Origin | None = None
    locked_at: Origin | None = None
    ignore_errors: bool = False
    issues: list[LoadIssue] = attrs.Factory(list)
    warnings: list[tuple[Origin, str]] = attrs.Factory(list)
    unread: list[Unread] = attrs.Factory(list)

    keep_going: bool = False

    def fail(self, origin: Origin, message: str, hint: str, unless: str | None = None) -> bool:
        """Record a failed line; return True when loading stops here."""
        stops = not self.ignore_errors and self.source.syntax == "rules"
        if self.keep_going:
            stops = False
        self.issues.append(
            LoadIssue(origin=origin, message=message, hint=hint, stops=stops, unless=unless)
        )
        return stops

    def apply(self, item: Command | Rejection) -> bool:
        """Apply one line; return True when loading stops."""
        if isinstance(item, Rejection):
            return self.fail(item.origin, item.message, item.hint)
        for warning in item.warnings:
            self.warnings.append((item.origin, warning))
        kind = item.kind
        if kind in {"ignore_errors", "continue_on_error"}:
            self.ignore_errors = True
            return False
        if kind == "noop":
            return False
        if self.locked_at is not None:
            return self.fail(
                item.origin,
                "Error sending request (Operation not permitted): the audit configuration is "
                f"locked by `-e 2` at {self.locked_at}",
                _LOCKED_HINT,
            )
        if kind == "enable":
            self.enabled = item.value
            self.enabled_origin = item.origin
            if item.value == 2:
                self.locked_at = item.origin
            return False
        if kind in {"failure", "backlog", "rate", "backlog_wait_time", "loginuid_immutable"}:
            return False
        if kind == "delete_all":
            self.lists.delete_all(item.key)
            return False
        rule = item.rule
        if rule is None:  # pragma: no cover - the parser always sets it for rule kinds
            return False
        if kind == "delete":
            return self._delete(item.origin, rule)
        return self._add(item.origin, rule, prepend=kind == "prepend")

    def _add(self, origin: Origin, rule: Rule, *, prepend: bool) -> bool:
        identity = rule.identity()
        if self.source.syntax == "rules":
            problem = _kernel_check(rule, files=self.files)
            if problem is not None:
                message, hint, unless = problem
                if unless is None or origin in self.refuse:
                    return self.fail(origin, message, hint, unless)
                self.unread.append(
                    Unread(
                        origin=origin, path=unless, message=message, hint=hint, action=rule.action
                    )
                )
            # A new -A rule still carries AUDIT_FILTER_PREPEND in its flags, which stored
            # rules have lost, so the kernel never finds it a duplicate.
            if not prepend and self.lists.exists(rule, identity):
                return self.fail(
                    origin,
                    "Error sending add rule data request (Rule exists)",
                    "remove the duplicate line (the kernel refuses a second identical rule)",
                )
        self.lists.add(rule, identity, prepend=prepend)
        return False

    def _delete(self, origin: Origin, rule: Rule) -> bool:
        if self.lists.delete(rule, rule.identity()):
            return False
        return self.fail(
            origin,
            "Error sending delete rule data request (No such file or directory)",
            "the rule to delete was never added; remove the -d/-W line",
        )


def load(
    source: RulesSource,
    *,
    files: TargetFiles = THIS_MACHINE,
    keep_going: bool = False,
    refuse: frozenset[Origin] = frozenset(),
) -> RuleSet:
    """Load `source` the way `auditctl -R` and the kernel would, starting from no rules.

    Args:
        source: The parsed rules.
        files: What is known of the target's files (watch parents must exist). A line that
            needs a file they do not know loads, and is listed in `RuleSet.unread`.
        keep_going: Load past failing lines as `auditctl -c` would (to tell which later
            lines would have helped had loading not stopped).
        refuse: Lines of `RuleSet.unread` to refuse instead, as if the file were not there.

    Returns:
        The resulting rule lists, with every line that failed and where loading stopped.
    """
    return _load(source, files=files, keep_going=keep_going, lists=_Lists(), refuse=refuse)


def without(ruleset: RuleSet, unread: Unread, *, keep_going: bool = False) -> RuleSet:
    """The rule set loaded on a target that lacks the file `unread` needs.

    Its line is refused: `auditctl -R` stops there, unless `-i` or `-c` came before it. Then
    every later `always` rule of `ruleset.unread` is refused too, the worst case: refusing
    an `always` rule only loses records, refusing a `never` rule only gains them. So the
    worlds "every file there" and `without` each unread line hold the worst a target can be.
    """
    place = ruleset.unread.index(unread)
    refuse = {unread.origin} | {
        later.origin for later in ruleset.unread[place + 1 :] if later.action == "always"
    }
    return load(
        ruleset.source, files=ruleset.files, keep_going=keep_going, refuse=frozenset(refuse)
    )


def _load(
    source: RulesSource,
    *,
    files: TargetFiles,
    keep_going: bool,
    lists: _Lists,
    refuse: frozenset[Origin] = frozenset(),
) -> RuleSet:
    """`load` with the given list bookkeeping (the tests pass the old quadratic one)."""
    loader = _Loader(source=source, files=files, refuse=refuse, keep_going=keep_going, lists=lists)
    stopped_at: Origin | None = None
    not_loaded: list[Origin] = []
    for item in source.items:
        if stopped_at is not None:
            not_loaded.append(item.origin)
            continue
        if loader.apply(item):
            stopped_at = item.origin
    held = loader.lists.lists()
    return RuleSet(
        source=source,
        exit=tuple(held["exit"]),
        task=tuple(held["task"]),
        exclude=tuple(held["exclude"]),
        user=tuple(held["user"]),
        filesystem=tuple(held["filesystem"]),
        enabled=loader.enabled,
        enabled_origin=loader.enabled_origin,
        locked_at=loader.locked_at,
        issues=tuple(loader.issues),
        stopped_at=stopped_at,
        not_loaded=tuple(not_loaded),
        warnings=tuple(loader.warnings),
        files=files,
        unread=tuple(loader.unread),
        refused=refuse,
    )
