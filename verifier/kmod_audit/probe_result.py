"""What the probe tells the controller: its stimuli, their results and the raw records.

The probe (`probe.py`) runs on the machine under test and prints one JSON object;
`verify` reads it back with `ProbeResult.from_json`, which checks every field's type before
any is used. This module is the wire protocol both sides share, so the controller never
imports the target-side probe.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

import attrs

__all__ = [
    "LEFT_LOADED",
    "NOT_LOADED_BY_CHOICE",
    "Actor",
    "ActorName",
    "ProbeResult",
    "Skipped",
    "Stimulus",
]

#: Why the successful load is skipped with `verify --no-load` (in the reports' notes).
NOT_LOADED_BY_CHOICE: Final = (
    "by choice (--no-load): no module is ever loaded; the failing attempts "
    "and the executions are exercised, and this is neither a failure nor incomplete evidence"
)

#: How the problem naming modules left loaded begins: verify reports it as a problem of
#: the system (the module stays loaded), not as evidence that is incomplete.
LEFT_LOADED: Final = "the probe loaded "

ActorName = Literal["root", "user", "unset", "below"]


@attrs.frozen
class Actor:
    """Who makes a stimulus.

    Attributes:
        name: `root` (uid 0, the test user's login uid), `user` (uid and login uid of the
            test user), `unset` (login uid unset) or `below` (login uid below uid-min).
        auid: The login uid the child sets.
        uid: The uid the child runs as.
    """

    name: ActorName
    auid: int
    uid: int

    @property
    def control(self) -> bool:
        """Whether this actor is a negative control (must not be recorded with the key)."""
        return self.name in {"unset", "below"}


@attrs.frozen(kw_only=True)
class Stimulus:
    """One thing the probe did, and what came of it.

    Attributes:
        id: Unique id, e.g. `b32-finit_module-root`.
        abi: `b64` or `b32`.
        arch: The AUDIT_ARCH value as SYSCALL records print it (`c000003e`).
        syscall: The syscall name.
        numbers: The syscall numbers a record may carry (a load by modprobe may use
            init_module or finit_module).
        actor: Who made it.
        auid: Login uid of the child.
        uid: Its uid.
        pid: Its pid (records are matched by pid).
        expect: `success` or `failure`.
        result: The return value (-errno), or the exit status for an execution; None when
            the child did not report.
        error: What went wrong when the stimulus could not be made.
        module: The module, for a successful load or unload.
        program: The program, for an execution.
    """

    id: str
    abi: str
    arch: str
    syscall: str
    numbers: tuple[int, ...]
    actor: ActorName
    auid: int
    uid: int
    pid: int
    expect: Literal["success", "failure"]
    result: int | None = None
    error: str | None = None
    module: str | None = None
    program: str | None = None

    @property
    def control(self) -> bool:
        """Whether this is a negative control."""
        return self.actor in {"unset", "below"}

    @property
    def exercised(self) -> bool:
        """Whether the stimulus really happened (a child ran it and reported)."""
        return self.error is None and self.result is not None


@attrs.frozen(kw_only=True)
class Skipped:
    """Something the probe could not exercise.

    Attributes:
        what: What (e.g. `successful load of dummy`).
        why: Why not.
        not_applicable: The machine cannot make such a call at all (an aarch64 kernel or
            CPU without AArch32), as opposed to a stimulus that could not be made here.
    """

    what: str
    why: str
    not_applicable: bool = False


@attrs.frozen(kw_only=True)
class ProbeResult:
    """Everything the probe did and saw.

    Attributes:
        machine: `uname -m`.
        kernel: `uname -r`.
        stimuli: The stimuli.
        skipped: What could not be exercised, and why.
        records: The raw audit records written after the stimuli began.
        source: Where the records were read from.
        audit: The kernel's audit status before (enabled, pid, lost...).
        lost_after: The `lost` counter after the stimuli.
        marker: The marker text written after the stimuli.
        marker_seen: Whether the marker reached the record source within the deadline.
        modules_before: Whether the probe module was loaded before.
        modules_after: Whether it is loaded after.
        problems: Conditions that prevent a verdict (audit disabled, no record source...).
        modules_left: Modules the probe loaded (the probe module or a dependency) and could
            not unload again: they are left loaded.
        host: What the target says about itself (host name, FQDN, IPs, MACs) for a
            checklist's target data; empty from an older probe.
    """

    machine: str
    kernel: str
    stimuli: tuple[Stimulus, ...]
    skipped: tuple[Skipped, ...]
    records: str
    source: str
    audit: dict[str, int]
    lost_after: int | None
    marker: str
    marker_seen: bool
    modules_before: bool | None
    modules_after: bool | None
    problems: tuple[str, ...] = ()
    modules_left: tuple[str, ...] = ()
    host: dict[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        data = attrs.asdict(self)
        data["stimuli"] = [attrs.asdict(s) for s in self.stimuli]
        data["skipped"] = [attrs.asdict(s) for s in self.skipped]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeResult:
        """Rebuild a result from its JSON form (what `verify` receives).

        Raises:
            KeyError: a field is missing.
            TypeError: a field has another type (the target's probe is not kmod-audit's).
        """
        _check_types(data)
        stimuli = tuple(Stimulus(**{**s, "numbers": tuple(s["numbers"])}) for s in data["stimuli"])
        skipped = tuple(Skipped(**s) for s in data["skipped"])
        return cls(
            machine=data["machine"],
            kernel=data["kernel"],
            stimuli=stimuli,
            skipped=skipped,
            records=data["records"],
            source=data["source"],
            audit=dict(data["audit"]),
            lost_after=data["lost_after"],
            marker=data["marker"],
            marker_seen=data["marker_seen"],
            modules_before=data["modules_before"],
            modules_after=data["modules_after"],
            problems=tuple(data.get("problems", ())),
            modules_left=tuple(data.get("modules_left", ())),
            host=_host_from_json(data.get("host")),
        )


_TEXT: Final = (str,)
_NUMBER: Final = (int,)
# What the JSON form of a probe result holds (None allowed where the record allows it).
_FIELDS: Final = {
    "machine": _TEXT,
    "kernel": _TEXT,
    "records": _TEXT,
    "source": _TEXT,
    "marker": _TEXT,
    "lost_after": (int, type(None)),
    "marker_seen": (bool,),
    "stimuli": (list, tuple),
    "skipped": (list, tuple),
    "audit": (dict,),
}
_STIMULUS: Final = {
    "id": _TEXT,
    "abi": _TEXT,
    "arch": _TEXT,
    "syscall": _TEXT,
    "actor": _TEXT,
    "expect": _TEXT,
    "numbers": (list, tuple),
    "auid": _NUMBER,
    "uid": _NUMBER,
    "pid": _NUMBER,
    "result": (int, type(None)),
    "error": (str, type(None)),
    "module": (str, type(None)),
    "program": (str, type(None)),
}


def _check_types(data: dict[str, Any]) -> None:
    """Refuse a probe result whose fields have other types than kmod-audit's probe writes."""

    def check(where: str, value: object, kinds: tuple[type, ...]) -> None:
        # bool is an int to isinstance; no number field takes one.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            msg = f"{where} is {json.dumps(value)[:80]}"
            raise TypeError(msg)

    for name, kinds in _FIELDS.items():
        check(name, data[name], kinds)
    for index, stimulus in enumerate(data["stimuli"]):
        check(f"stimuli[{index}]", stimulus, (dict,))
        for name, kinds in _STIMULUS.items():
            if name in stimulus:
                check(f"stimuli[{index}].{name}", stimulus[name], kinds)
        for number in stimulus.get("numbers", ()):
            check(f"stimuli[{index}].numbers", number, _NUMBER)
    for index, skipped in enumerate(data["skipped"]):
        check(f"skipped[{index}]", skipped, (dict,))
        if "not_applicable" in skipped:
            check(f"skipped[{index}].not_applicable", skipped["not_applicable"], (bool,))
    for name, value in data["audit"].items():
        check(f"audit.{name}", value, _NUMBER)


def _host_from_json(value: object) -> dict[str, Any]:
    """The target's host facts as the probe sent them, checked (strings, lists of strings).

    Raises:
        TypeError: a fact of another type (the target's probe is not kmod-audit's).
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        msg = f"host is {type(value).__name__}, not an object"
        raise TypeError(msg)
    for name, fact in value.items():
        if name in {"ips", "macs"}:
            ok = isinstance(fact, list) and all(isinstance(item, str) for item in fact)
            kind = "a list of strings"
        else:
            ok = isinstance(fact, str)
            kind = "a string"
        if not ok:
            msg = f"host.{name} is {json.dumps(fact)[:80]}, not {kind}"
            raise TypeError(msg)
    return dict(value)


# --------------------------------------------------------------------------------------
# Children
