"""The enumerating evaluator: exact on small rule lists, the test oracle of `evaluate`.

It lives with the tests, not in the wheel: no command uses it.

This is how kmod-audit judged rules before issue 9, kept to check the symbolic evaluator
(`kmod_audit.evaluate`) against: every rule condition compares one event attribute with
a constant, so the attribute values between two neighbouring constants behave alike. We
enumerate one representative per interval (each constant, its neighbours and the ends of
the range) and evaluate the rules on the product: that is exact for the comparison
operators and covers the bit operators with the masks, their complements, 0 and ~0.

The product grows with every constant, so before building it we look at each condition
alone: one that is false for every in-scope event (`auid=unset` when auid >= uid-min is
required, `arch=b64` for a b32 call) means its rule never matches and is dropped; one that
is true for every in-scope event (`auid!=unset`) cannot tell events apart and adds no
representatives. When the product is still too large, the target is *undecided*.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

import attrs

from kmod_audit.evaluate import (
    _TYPICAL_ERRNOS,
    BEFORE_OPEN_NOTE,
    PID_MAX,
    U32,
    Context,
    Coverage,
    RequiredEvent,
    _before_open,
    _dimension,
    _Evaluator,
    _judge_event,
    _name_owner,
    _relevant_exit_rules,
)
from kmod_audit.loader import RuleSet
from kmod_audit.rules import ARG_FIELDS, UID_UNSET, Field, Rule

__all__ = ["EVENT_BUDGET", "evaluate"]

#: Above this many representative events per target we give up (undecided) rather than guess.
EVENT_BUDGET: Final = 200_000
#: Operators whose truth on interval representatives is the truth on the whole interval.
_ORDERED_OPS: Final = frozenset({"=", "!=", "<", ">", "<=", ">="})


def _constants(fields: Iterable[Field]) -> dict[str, set[int | str]]:
    found: dict[str, set[int | str]] = {}
    for field in fields:
        if field.compare:
            for name in (field.name, str(field.value)):
                found.setdefault(_dimension(name), set())
            continue
        found.setdefault(_dimension(field.name), set()).add(field.value)
    return found


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
    fields: Iterable[Field], target: RequiredEvent, ctx: Context
) -> list[tuple[str, list[int | str | bool]]]:
    """The event attributes the conditions look at, each with its representative values."""
    fields = list(fields)
    constants = _constants(fields)
    for field in fields:
        # `-C auid=obj_uid`: the owner of the files an exec names cuts the other side.
        sides = (field.name, str(field.value))
        for mine, other in (sides, sides[::-1]):
            owner = _name_owner(mine, target.program) if field.compare else None
            if owner is not None:
                constants.setdefault(_dimension(other), set()).add(owner)
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
    if ctx.argv_first and target.program is not None and {"path", "dir"} & set(constants):
        # Whether a failed exec got as far as opening the file depends on its exit code.
        constants.setdefault("exit", set())
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
    if "exe" in constants:
        paths = {str(v) for v in constants["exe"]}
        if target.program is not None:
            paths.add(target.program.path)  # what a successful exec runs
        names: list[int | str | bool] = sorted(paths)
        dims.append(("exe", ["(another program)", *names]))
    return dims


def _events(
    dims: list[tuple[str, list[int | str | bool]]], target: RequiredEvent
) -> Iterator[dict[str, int | str | bool]]:
    names = [name for name, _ in dims]
    program = target.program
    for combo in itertools.product(*(values for _, values in dims)):
        event = dict(zip(names, combo, strict=True))
        if (
            program is not None
            and event["success"]
            and event.get("exe", program.path) != (program.path)
        ):
            continue  # a successful exec runs the program
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


def _constant_truth(evaluator: _Evaluator, field: Field) -> bool | None:
    """The value of `field` on every in-scope event when it is the same on all, else None.

    Only for conditions whose truth on the interval representatives of their own constant
    is their truth on every event (comparisons; not the bit tests `&`/`&=`).
    """
    if field.op not in _ORDERED_OPS:
        return None
    dims = _dimensions([field], evaluator.target, evaluator.ctx)
    seen = {evaluator.field(field, event, task=False) for event in _events(dims, evaluator.target)}
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


def evaluate(
    ruleset: RuleSet, target: RequiredEvent, ctx: Context, *, prune: bool = True
) -> Coverage:
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
    # A keyed `always` task rule records the events of the tasks it matches: task rules
    # are listed before the exit rules.
    order = {id(rule): position for position, rule in enumerate((*ruleset.task, *exit_rules))}
    covering: dict[int, Rule] = {}
    count = 0
    failed: Coverage | None = None
    for event in _events(dims, target):
        count += 1
        for outcome in _judge_event(evaluator, ruleset, exit_rules, event, ctx):
            if outcome.verdict == "covered":
                assert outcome.rule is not None
                covering.setdefault(order[id(outcome.rule)], outcome.rule)
            elif failed is None:
                # After a successful exec the program runs: its exe is implied.
                implied = target.program is not None and bool(event["success"])
                shown = {
                    k: v
                    for k, v in event.items()
                    if k != "exe" or (v != "(another program)" and not implied)
                }
                before_open = target.program is not None and ctx.argv_first
                failed = Coverage(
                    target=target,
                    covered=False,
                    rules=(),
                    event=shown,
                    outcome=outcome,
                    events=count,
                    note=BEFORE_OPEN_NOTE if before_open and _before_open(event) else None,
                )
    # Every keyed rule some event reaches and may match, in list order (also when the
    # target is not covered: they record part of its events).
    rules = tuple(covering[position] for position in sorted(covering))
    if failed is not None:
        return attrs.evolve(failed, rules=rules)
    return Coverage(target=target, covered=True, rules=rules, events=count)
