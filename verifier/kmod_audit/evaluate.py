"""Judge a loaded rule set the way the kernel applies it (DESIGN section 5).

A *target* is one kind of event that must be recorded: "a b32 finit_module call" or "a b64
execve of /usr/bin/kmod". It is covered when, for every such event made by a logged-in
user (auid in [uid-min, 4294967294], uid 0 or the user's own, success yes or no), the
kernel records a SYSCALL record carrying an acceptable key:

- the task list does not exempt the task (`-a never,task`),
- the first matching rule on the exit list (kernel order: `-A` rules first) has action
  `always` and a key (the pinned key with `--key`),
- no exclude rule drops SYSCALL records.

The event space is infinite, but every rule condition compares one event attribute with a
constant, so the attribute values between two neighbouring constants behave alike. We
enumerate one representative per interval (each constant, its neighbours and the ends of
the range) and evaluate the rules on the product: that is exact for the comparison
operators and covers the bit operators with the masks, their complements, 0 and ~0.
Conditions we cannot evaluate (SELinux labels, object inodes) are *unknown*: an unknown
`never` rule may suppress, an unknown `always` rule may not match, and we say so.

The product grows with every constant, so before building it we look at each condition
alone: one that is false for every in-scope event (`auid=unset` when auid >= uid-min is
required, `arch=b64` for a b32 call) means its rule never matches and is dropped; one that
is true for every in-scope event (`auid!=unset`) cannot tell events apart and adds no
representatives. Both are exact. When the product is still too large, the target is
*undecided*: we never turn that limit into a verdict.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
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
)
from .syscalls import Abi

__all__ = ["Context", "Coverage", "ExecFile", "Outcome", "Target", "evaluate"]

U32: Final = 0xFFFFFFFF
SYSCALL_RECORD: Final = 1300
PID_MAX: Final = 4194304
#: Above this many representative events per target we give up (undecided) rather than guess.
EVENT_BUDGET: Final = 200_000
#: Operators whose truth on interval representatives is the truth on the whole interval.
_ORDERED_OPS: Final = frozenset({"=", "!=", "<", ">", "<=", ">="})

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
)
_UID_FAMILY: Final = frozenset({"uid", "euid", "suid", "fsuid"})
_NAME_FIELDS: Final = frozenset(
    {"filetype", "devmajor", "devminor", "inode", "obj_uid", "obj_gid"}
) | (LSM_FIELDS - {"subj_user", "subj_role", "subj_type", "subj_sen", "subj_clr"})


@attrs.frozen
class ExecFile:
    """A program whose executions must be recorded (the kmod binary).

    Attributes:
        path: Its real path (what `--kmod-path` names).
        identity: (st_dev, st_ino) when it exists on this machine, for live matching.
    """

    path: str
    identity: tuple[int, int] | None = None

    @classmethod
    def at(cls, path: str, *, live: bool) -> ExecFile:
        """Describe the program at `path`, consulting this machine when `live`."""
        if live:
            try:
                info = os.stat(path)
            except OSError:
                return cls(os.path.normpath(path))
            return cls(os.path.realpath(path), (info.st_dev, info.st_ino))
        return cls(os.path.normpath(path))


@attrs.frozen
class Target:
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
    """

    uid_min: int = 1000
    key: str | None = None
    live: bool = True


Verdict = Literal["covered", "never", "no-key", "wrong-key", "unmatched", "excluded", "task-never"]


@attrs.frozen
class Outcome:
    """What happens to one representative event.

    Attributes:
        verdict: `covered`, or why it is not recorded as required.
        rule: The deciding rule (None when no rule matches).
        uncertain: The field names that made a rule only *maybe* match.
    """

    verdict: Verdict
    rule: Rule | None
    uncertain: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class Coverage:
    """The judgement of one target.

    Attributes:
        target: What was judged.
        covered: True when every in-scope event is recorded with an acceptable key.
        rules: The rules that record the in-scope events (when covered, or partly).
        event: A representative event that is not covered (None when covered).
        outcome: What happens to that event.
        events: How many representative events were evaluated.
        undecided: Why kmod-audit cannot decide (the evaluation would exceed its budget);
            None when it decided. An undecided target is neither covered nor a failure.
    """

    target: Target
    covered: bool
    rules: tuple[Rule, ...]
    event: dict[str, int | str | bool] | None = None
    outcome: Outcome | None = None
    events: int = 0
    undecided: str | None = None

    def reason(self) -> str:
        """Explain, in one sentence, why the target is or is not covered."""
        if self.undecided is not None:
            return f"{self.target}: kmod-audit cannot decide: {self.undecided}"
        if self.covered:
            where = ", ".join(f"{r.origin} `{r.origin.text.strip()}`" for r in self.rules)
            return f"{self.target}: recorded by {where}"
        assert self.outcome is not None  # noqa: S101 - set whenever covered is False
        event = describe_event(self.event or {})
        rule = self.outcome.rule
        where = f"{rule.origin} `{rule.origin.text.strip()}`" if rule is not None else ""
        maybe = (
            f" (it may match: kmod-audit cannot evaluate {', '.join(self.outcome.uncertain)})"
            if self.outcome.uncertain
            else ""
        )
        verdict = self.outcome.verdict
        text = {
            "never": f"first matching rule is {where} (action never){maybe}",
            "no-key": f"first matching rule is {where}, which has no key{maybe}",
            "wrong-key": f"first matching rule is {where}, whose key is "
            f"{rule.key if rule else ''!r}{maybe}",
            "unmatched": "no loaded rule matches it",
            "excluded": f"SYSCALL records are dropped by the exclude rule {where}{maybe}",
            "task-never": f"the task is never audited because of {where}{maybe}",
            "covered": "covered",
        }[verdict]
        if verdict == "unmatched" and self.outcome.uncertain:
            text = (
                "no loaded rule surely matches it (kmod-audit cannot evaluate "
                f"{', '.join(self.outcome.uncertain)})"
            )
        return f"{self.target} ({event}): {text}"


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


def _identifies(path: str, program: ExecFile, ctx: Context) -> bool:
    """Whether a watch/exe mark on `path` is on the program's inode.

    The kernel resolves every component but the last (a watch on a symlink watches the
    link, which is never executed), so we lstat() the path.
    """
    if ctx.live and program.identity is not None:
        try:
            info = os.lstat(path)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == program.identity
    return os.path.normpath(path) == program.path


def _under(directory: str, program: ExecFile, ctx: Context) -> bool:
    """Whether a `dir=` tree watch on `directory` covers the program.

    The kernel tags the inode `directory` names (without following a last-component
    symlink) and everything below it, so a tree watch on the program itself counts too.
    """
    if ctx.live and program.identity is not None:
        stripped = directory.rstrip("/") or "/"
        if os.path.islink(stripped) or not os.path.lexists(stripped):
            return False
        real = os.path.realpath(stripped)
    else:
        real = os.path.normpath(directory)
    return program.path == real or program.path.startswith(real.rstrip("/") + "/")


@attrs.define
class _Evaluator:
    target: Target
    ctx: Context
    #: Conditions true on every in-scope syscall-exit event: skipped outside the task list
    #: (events carry no value for the attributes only they look at).
    always: set[tuple[Field, bool]] = attrs.Factory(set)

    def field(self, field: Field, event: dict[str, int | str | bool], *, task: bool) -> bool | None:
        """Evaluate one condition on one event: True, False or None (unknown)."""
        name = field.name
        program = self.target.program
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
        if name == "exe":
            if program is not None:
                same = _identifies(str(field.value), program, self.ctx)
            else:
                same = event["exe"] == field.value
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
            return bool(int(field.value) & 1) if program is not None else False
        if name in {"path", "dir"}:
            if program is None:
                return False
            as_path = _identifies(str(field.value), program, self.ctx)
            as_dir = _under(str(field.value), program, self.ctx)
            if field.ambiguous and as_path != as_dir:
                return None  # `auditctl -l` does not say which of the two it is
            return as_path if name == "path" else as_dir
        if name in _NAME_FIELDS or name == "saddr_fam":
            # No path names are collected by module syscalls; an exec has some we do not model.
            return None if program is not None and name != "saddr_fam" else False
        return None

    def _compare_fields(self, field: Field, event: dict[str, int | str | bool]) -> bool | None:
        def value(name: str) -> int | None:
            if name == "auid":
                return int(event["auid"])
            if name in _UID_FAMILY:
                return int(event["uid"])
            if name in GID_FIELDS - {"obj_gid"}:
                return int(event["gid"])
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
                unknown.append(field.render().removeprefix("-F ").removeprefix("-C "))
        return (None, tuple(unknown)) if unknown else (True, ())


def _relevant_exit_rules(rules: Sequence[Rule], target: Target) -> list[Rule]:
    return [r for r in rules if r.syscalls is None or target.number in r.syscalls]


def _constants(fields: Iterable[Field]) -> dict[str, set[int | str]]:
    found: dict[str, set[int | str]] = {}
    for field in fields:
        if field.compare:
            for name in (field.name, str(field.value)):
                found.setdefault(_dimension(name), set())
            continue
        found.setdefault(_dimension(field.name), set()).add(field.value)
    return found


def _dimension(name: str) -> str:
    if name in _UID_FAMILY:
        return "uid"
    if name in GID_FIELDS - {"obj_gid"}:
        return "gid"
    return name


def _around(values: Iterable[int | str], low: int, high: int, seeds: Iterable[int]) -> list[int]:
    """Representatives of every interval the constants cut [low, high] into, seeds first."""
    points: list[int] = []
    for seed in seeds:
        if low <= seed <= high and seed not in points:
            points.append(seed)
    extra: set[int] = {low, high}
    for value in values:
        if isinstance(value, int):
            extra.update({value - 1, value, value + 1})
    for value in sorted(extra):
        if low <= value <= high and value not in points:
            points.append(value)
    return points


def _dimensions(
    fields: Iterable[Field], target: Target, ctx: Context
) -> list[tuple[str, list[int | str | bool]]]:
    """The event attributes the conditions look at, each with its representative values."""
    constants = _constants(fields)
    dims: list[tuple[str, list[int | str | bool]]] = []
    # The user's own uid is their auid, so uid constants cut the auid range too.
    auid_values = _around(
        constants.get("auid", set()) | constants.get("uid", set()),
        ctx.uid_min,
        UID_UNSET - 1,
        [ctx.uid_min],
    )
    dims.append(("auid", list(auid_values)))
    if "uid" in constants:
        dims.append(("uid", ["root", "self"]))
    if "gid" in constants:
        dims.append(("gid", list(_around(constants["gid"], 0, U32 - 1, [0, 100]))))
    dims.append(("success", [False, True]))
    if "exit" in constants:
        failures = _around(
            constants["exit"],
            (1 << 32) - 4095,
            U32,
            [(-code) & U32 for code in _TYPICAL_ERRNOS],
        )
        dims.append(("exit", [0, *failures]))
    for arg in sorted(ARG_FIELDS):
        if arg in constants:
            masks = {int(v) for v in constants[arg] if isinstance(v, int)}
            complements = {(~m) & U32 for m in masks}
            dims.append((arg, list(_around(masks | complements, 0, U32, [0, 1]))))
    if "pid" in constants:
        dims.append(("pid", list(_around(constants["pid"], 1, PID_MAX, [1000]))))
    if "ppid" in constants:
        dims.append(("ppid", list(_around(constants["ppid"], 1, PID_MAX, [1]))))
    if "pers" in constants:
        dims.append(("pers", list(_around(constants["pers"], 0, U32, [0]))))
    if "sessionid" in constants:
        dims.append(("sessionid", list(_around(constants["sessionid"], 0, U32 - 1, [1]))))
    if "exe" in constants and target.program is None:
        names: list[int | str | bool] = sorted(str(v) for v in constants["exe"])
        dims.append(("exe", ["(another program)", *names]))
    return dims


def _events(
    dims: list[tuple[str, list[int | str | bool]]],
) -> Iterator[dict[str, int | str | bool]]:
    names = [name for name, _ in dims]
    for combo in itertools.product(*(values for _, values in dims)):
        event = dict(zip(names, combo, strict=True))
        if "uid" in event:
            event["uid"] = 0 if event["uid"] == "root" else int(event["auid"])
        if "exit" in event:
            success = bool(event["success"])
            if success != (event["exit"] == 0):
                continue
        yield event


def _size(dims: list[tuple[str, list[int | str | bool]]]) -> int:
    size = 1
    for _, values in dims:
        size *= len(values)
    return size


def _key_ok(rule: Rule, ctx: Context) -> Verdict:
    if not rule.keys:
        return "no-key"
    if ctx.key is not None and ctx.key not in rule.keys:
        return "wrong-key"
    return "covered"


def _judge_event(
    evaluator: _Evaluator,
    ruleset: RuleSet,
    exit_rules: Sequence[Rule],
    event: dict[str, int | str | bool],
    ctx: Context,
) -> list[Outcome]:
    """Every possible outcome for one event (more than one when some rule may match)."""
    outcomes: list[Outcome] = []
    for rule in ruleset.task:
        matched, unknown = evaluator.rule(rule, event, task=True)
        if matched is False:
            continue
        if rule.action == "never":
            outcomes.append(Outcome("task-never", rule, unknown))
        if matched is True:
            break
    for rule in ruleset.exclude:
        matched, unknown = evaluator.rule(rule, event)
        if matched is False:
            continue
        outcomes.append(Outcome("excluded", rule, unknown))
        if matched is True:
            break
    uncertain: list[str] = []
    for rule in exit_rules:
        matched, unknown = evaluator.rule(rule, event)
        if matched is False:
            continue
        verdict: Verdict = "never" if rule.action == "never" else _key_ok(rule, ctx)
        outcomes.append(Outcome(verdict, rule, unknown))
        if matched is True:
            return outcomes
        uncertain.extend(unknown)
    outcomes.append(Outcome("unmatched", None, tuple(dict.fromkeys(uncertain))))
    return outcomes


def _constant_truth(evaluator: _Evaluator, field: Field) -> bool | None:
    """The value of `field` on every in-scope event when it is the same on all, else None.

    Only for conditions whose truth on the interval representatives of their own constant
    is their truth on every event (comparisons; not the bit tests `&`/`&=`).
    """
    if field.op not in _ORDERED_OPS:
        return None
    dims = _dimensions([field], evaluator.target, evaluator.ctx)
    seen = {evaluator.field(field, event, task=False) for event in _events(dims)}
    return seen.pop() if len(seen) == 1 else None


def _prune(evaluator: _Evaluator, rules: Sequence[Rule]) -> list[tuple[Rule, tuple[Field, ...]]]:
    """Drop the rules that match no in-scope event; keep the conditions that tell events apart.

    Returns:
        Each rule that may match, with those of its conditions that are not true on every
        in-scope event (the only ones whose constants need representatives).
    """
    truths: dict[tuple[Field, bool], bool | None] = {}
    kept: list[tuple[Rule, tuple[Field, ...]]] = []
    for rule in rules:
        values: list[tuple[Field, bool | None]] = []
        for field in rule.fields:
            cache = (field, field.ambiguous)
            if cache not in truths:
                truths[cache] = _constant_truth(evaluator, field)
            values.append((field, truths[cache]))
        if any(value is False for _, value in values):
            continue
        kept.append((rule, tuple(field for field, value in values if value is not True)))
    evaluator.always.update(cache for cache, value in truths.items() if value is True)
    return kept


def _undecided(dims: list[tuple[str, list[int | str | bool]]], rules: Iterable[Rule]) -> str:
    """Say why the product of `dims` is too large to evaluate, and which rules make it."""
    widest = sorted((d for d in dims if len(d[1]) > 2), key=lambda d: -len(d[1]))
    names = ", ".join(f"{name} ({len(values)} values)" for name, values in widest)
    origins = ", ".join(dict.fromkeys(str(rule.origin) for rule in rules))
    return (
        f"the conditions ({names}) of the rules that can match it ({origins}) split its "
        f"events into {_size(dims)} classes, more than the {EVENT_BUDGET} kmod-audit "
        "evaluates exactly"
    )


def evaluate(ruleset: RuleSet, target: Target, ctx: Context, *, prune: bool = True) -> Coverage:
    """Judge whether `ruleset` records every in-scope event of `target`.

    Args:
        ruleset: The loaded rules.
        target: The event kind.
        ctx: uid-min, pinned key, live filesystem.
        prune: Drop the exit rules that cannot match an in-scope event, and the conditions
            true on every one, before enumerating (exact; off only to test that).

    Returns:
        The coverage, with a counterexample when not covered, or `undecided` set when the
        evaluation would exceed `EVENT_BUDGET`.
    """
    evaluator = _Evaluator(target, ctx)
    relevant = _relevant_exit_rules(ruleset.exit, target)
    kept = _prune(evaluator, relevant) if prune else [(rule, rule.fields) for rule in relevant]
    exit_rules = [rule for rule, _ in kept]
    others = (*ruleset.task, *ruleset.exclude)
    dims = _dimensions(
        [
            *(field for _, fields in kept for field in fields),
            *(field for rule in others for field in rule.fields),
        ],
        target,
        ctx,
    )
    if _size(dims) > EVENT_BUDGET:
        involved = [*(rule for rule, fields in kept if fields), *others]
        return Coverage(
            target=target, covered=False, rules=(), undecided=_undecided(dims, involved)
        )
    covering: dict[int, Rule] = {}
    count = 0
    for event in _events(dims):
        count += 1
        for outcome in _judge_event(evaluator, ruleset, exit_rules, event, ctx):
            if outcome.verdict != "covered":
                shown = {k: v for k, v in event.items() if k != "exe" or v != "(another program)"}
                return Coverage(
                    target=target,
                    covered=False,
                    rules=tuple(covering.values()),
                    event=shown,
                    outcome=outcome,
                    events=count,
                )
            assert outcome.rule is not None  # noqa: S101 - covered implies a rule
            covering.setdefault(id(outcome.rule), outcome.rule)
    return Coverage(target=target, covered=True, rules=tuple(covering.values()), events=count)
