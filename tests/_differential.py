"""The kernel's side of the kernel-differential test, and the comparison: no pytest here.

`tests/test_kernel_differential.py` draws random rules files and judges them on the host;
the kernel matrix (`tests/test_vm_matrix.py`) draws them on the host and has
`tools/guest/differential.py` judge them in each guest, whose python3 has attrs but no
pytest or hypothesis. Both judge a file with `judge()`:

- `check_claims`: `kmod-audit check FILE --profile all --kmod-path /usr/bin/kmod --format
  json`, live on the machine that runs it, and its claim of every target;
- `Kernel`: the real `auditctl -R` loads the file, the stimulus programs
  (`tests/stimulus/stimulus.c`, built by `build_stimulus`) make every target's syscalls as
  logged-in users from a fork made after the login uid is set, and a private auditd writes
  the records;
- `compare`: both verdicts of every target, and the number of rules `check` says load
  against the lines of `auditctl -l`.

A `Platform` is what differs between machines: the targets' syscall numbers, the audit
arch of each ABI, and the programs that make the calls. On x86_64 one program makes both
ABIs' calls (b32 through `int 0x80`); on aarch64 an AArch64 build makes the b64 calls and a
static armhf build, run in compat mode, the b32 ones.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from hostaudit import Auditd, audit_status, auditctl
from kmod_audit.cli import main

#: Seconds the log may stand still before the marker record is given up (`Kernel._arrives`).
MARKER_WAIT: Final = 10
KMOD: Final = "/usr/bin/kmod"
UID_MIN: Final = 1000
AUID_MAX: Final = 4294967294
STIMULUS_SOURCE: Final = Path(__file__).parent / "stimulus" / "stimulus.c"
#: Where the stimulus programs are installed (made and removed by `installed`).
STIMULUS_DIR: Final = Path("/run/kmod-audit-differential")
#: The path of the stimulus program that rules may name in `exe=` (the other copy, `OTHER`,
#: is never named: it is "another program").
STIM: Final = str(STIMULUS_DIR / "stimulus")
OTHER: Final = str(STIMULUS_DIR / "other")
#: On aarch64, the 32-bit build that makes the b32 calls, named in `exe=` as STIM is.
STIM32: Final = str(STIMULUS_DIR / "stimulus32")
OTHER32: Final = str(STIMULUS_DIR / "other32")
#: How `check` names a task rule's condition on what may change after fork.
AT_FORK: Final = "when the task was created"
EXEC_SYSCALLS: Final = ("execve", "execveat")
ERRNO_NAMES: Final = {"ENOSYS": 38, "EFAULT": 14, "E2BIG": 7}


class HarnessError(RuntimeError):
    """The harness itself failed: nothing can be said of the example."""


@attrs.frozen
class Platform:
    """What the differential needs to know of one machine, from the kernel's own tables.

    Attributes:
        machine: `uname -m`.
        targets: Every target of `--profile all` there: (abi, syscall) -> its number.
        arches: The `arch=` of each ABI's SYSCALL records.
        compilers: Each build of the stimulus -> the compiler command that makes it.
        programs: Each installed program's path -> its build.
        named: The programs rules may name in `exe=` (the others are "another program").
        runs: (program, mode) of every stimulus run, made for every actor.
    """

    machine: str
    targets: Mapping[tuple[str, str], int]
    arches: Mapping[str, str]
    compilers: Mapping[str, tuple[str, ...]]
    programs: Mapping[str, str]
    named: tuple[str, ...]
    runs: tuple[tuple[str, str], ...]

    def module_syscalls(self) -> tuple[str, ...]:
        """The module syscalls of the native ABI, in the order of `targets`."""
        return tuple(s for abi, s in self.targets if abi == "b64" and s not in EXEC_SYSCALLS)


PLATFORMS: Final = {
    # arch/x86/entry/syscalls/syscall_64.tbl and syscall_32.tbl.
    "x86_64": Platform(
        machine="x86_64",
        targets={
            ("b64", "create_module"): 174,
            ("b64", "init_module"): 175,
            ("b64", "delete_module"): 176,
            ("b64", "query_module"): 178,
            ("b64", "finit_module"): 313,
            ("b32", "init_module"): 128,
            ("b32", "delete_module"): 129,
            ("b32", "finit_module"): 350,
            ("b64", "execve"): 59,
            ("b64", "execveat"): 322,
            ("b32", "execve"): 11,
            ("b32", "execveat"): 358,
        },
        arches={"b64": "c000003e", "b32": "40000003"},
        compilers={"x86_64": ("gcc",)},
        programs={STIM: "x86_64", OTHER: "x86_64"},
        named=(STIM,),
        runs=(
            (STIM, "calls"),
            (OTHER, "calls"),
            (OTHER, "exec64"),
            (OTHER, "exec64at"),
            (OTHER, "exec32"),
            (OTHER, "exec32at"),
        ),
    ),
    # include/uapi/asm-generic/unistd.h (arm64's own) and arch/arm/tools/syscall.tbl (its
    # compat ABI). Both builds are static: the guest's root has no armhf libc.
    "aarch64": Platform(
        machine="aarch64",
        targets={
            ("b64", "init_module"): 105,
            ("b64", "delete_module"): 106,
            ("b64", "finit_module"): 273,
            ("b32", "init_module"): 128,
            ("b32", "delete_module"): 129,
            ("b32", "finit_module"): 379,
            ("b64", "execve"): 221,
            ("b64", "execveat"): 281,
            ("b32", "execve"): 11,
            ("b32", "execveat"): 387,
        },
        arches={"b64": "c00000b7", "b32": "40000028"},
        compilers={
            "aarch64": ("aarch64-linux-gnu-gcc", "-static"),
            "armhf": ("arm-linux-gnueabihf-gcc", "-static"),
        },
        programs={STIM: "aarch64", OTHER: "aarch64", STIM32: "armhf", OTHER32: "armhf"},
        named=(STIM, STIM32),
        runs=(
            (STIM, "calls"),
            (OTHER, "calls"),
            (STIM32, "calls"),
            (OTHER32, "calls"),
            (OTHER, "exec64"),
            (OTHER, "exec64at"),
            (OTHER32, "exec32"),
            (OTHER32, "exec32at"),
        ),
    ),
}

#: The apt packages of each build's compiler (tools/setup installs them).
COMPILER_PACKAGES: Final = {
    "x86_64": "gcc libc6-dev",
    "aarch64": "gcc-aarch64-linux-gnu libc6-dev-arm64-cross",
    "armhf": "gcc-arm-linux-gnueabihf libc6-dev-armhf-cross",
}


def missing_compilers(platform: Platform) -> list[str]:
    """What `build_stimulus` lacks for `platform`: one line per compiler, saying what to do."""
    return [
        f"no {command[0]} for the {build} stimulus (apt-get install {COMPILER_PACKAGES[build]})"
        for build, command in platform.compilers.items()
        if shutil.which(command[0]) is None
    ]


def build_stimulus(platform: Platform, into: Path) -> dict[str, Path]:
    """Compile every build of the stimulus for `platform` into `into`: build -> binary."""
    built = {}
    for build, command in platform.compilers.items():
        binary = into / f"stimulus-{build}"
        done = subprocess.run(
            [*command, "-O1", "-Wall", "-Werror", "-o", str(binary), str(STIMULUS_SOURCE)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            msg = f"{command[0]} could not build {STIMULUS_SOURCE} for {build}:\n{done.stderr}"
            raise HarnessError(msg)
        built[build] = binary
    return built


@contextlib.contextmanager
def installed(platform: Platform, builds: Mapping[str, Path]) -> Iterator[None]:
    """Every program of `platform` at its path in STIMULUS_DIR, removed afterwards."""
    STIMULUS_DIR.mkdir(exist_ok=True)
    try:
        for path, build in platform.programs.items():
            shutil.copy(builds[build], path)
            Path(path).chmod(0o755)
        yield
    finally:
        shutil.rmtree(STIMULUS_DIR)


# --------------------------------------------------------------------------------------
# What `check` says


@attrs.frozen
class Claim:
    """What `check` says of one target.

    Attributes:
        status: `pass`, `fail` or `undecided`.
        event: The uncovered event it names (attribute -> text), None when it names none.
        reason: Its reason text.
    """

    status: str
    event: dict[str, str] | None
    reason: str


def target_name(target: tuple[str, str]) -> str:
    """The target as `check` names it: `b64 init_module`, `b32 execve of /usr/bin/kmod`."""
    abi, syscall = target
    return f"{abi} {syscall} of {KMOD}" if syscall in EXEC_SYSCALLS else f"{abi} {syscall}"


def check_claims(platform: Platform, path: Path) -> tuple[dict[tuple[str, str], Claim], int]:
    """Run `kmod-audit check` on the file; its claim per target and loaded-rule count."""
    out = io.StringIO()
    code = main(
        ["check", str(path), "--profile", "all", "--kmod-path", KMOD, "--format", "json"],
        out=out,
    )
    if code not in {0, 1, 3}:
        msg = f"check {path} exited {code}:\n{out.getvalue()}"
        raise HarnessError(msg)
    data = json.loads(out.getvalue())
    claims: dict[tuple[str, str], Claim] = {}
    for target in platform.targets:
        name = target_name(target)
        statuses = [
            check
            for profile in data["profiles"]
            for requirement in profile["requirements"]
            for check in requirement.get("checks", [])
            if check["target"] == name
        ]
        if not statuses:
            msg = f"check judged no target {name!r} of {path}"
            raise HarnessError(msg)
        check = statuses[0]
        # describe_event: `TARGET (auid=1000, uid=0, success=no, exit=-ENOSYS): why`.
        match = re.match(re.escape(name) + r" \(([^()]*)\): ", check["reason"])
        event = None
        if check["status"] == "fail" and match:
            # Parts are `name=value`; a value may be followed by words about it (`exe=X,
            # the caller's own program, which a failed exec leaves running`).
            event = dict(re.findall(r"(?:^|, )(\w+)=([^,]*)", match.group(1)))
        status = check["status"] if "cannot decide" not in check["reason"] else "undecided"
        claims[target] = Claim(status, event, check["reason"])
    return claims, data["sources"][0]["rule_count"]


# --------------------------------------------------------------------------------------
# The kernel's side


@attrs.frozen
class Event:
    """One stimulus event the kernel judged.

    Attributes:
        target: (abi, syscall).
        auid: Login uid.
        uid: uid (0, or the user's own).
        exit: The syscall's result (0 for a successful exec).
        exe: The program at syscall exit (`KMOD` after a successful exec).
        key: The key of its SYSCALL record; `(null)` when unkeyed; None when no record.
    """

    target: tuple[str, str]
    auid: int
    uid: int
    exit: int
    exe: str
    key: str | None

    @property
    def recorded(self) -> bool:
        """Whether a SYSCALL record with a key was written."""
        return self.key not in {None, "(null)"}

    def matches(self, claimed: dict[str, str], named_exes: set[str]) -> bool:
        """Whether this is the event `check` names (every attribute it names agrees)."""
        for name, value in claimed.items():
            if name == "auid" and int(value) != self.auid:
                return False
            if name == "uid" and int(value) != self.uid:
                return False
            if name == "success" and (value == "yes") != (self.exit == 0):
                return False
            if name == "exit" and _exit_value(value) != self.exit:
                return False
            if name == "exe":
                # `(another program)`: any program no exe= field of the rules names.
                seen = self.exe if self.exe in named_exes else "(another program)"
                if value != seen:
                    return False
            if name not in {"auid", "uid", "success", "exit", "exe"}:
                return False  # an attribute the stimulus does not control
        return True

    def describe(self) -> str:
        """Return e.g. `b64 init_module auid=1000 uid=0 exit=-38 exe=... key=None`."""
        return (
            f"{target_name(self.target)} auid={self.auid} uid={self.uid} exit={self.exit} "
            f"exe={self.exe} key={self.key}"
        )


def _exit_value(text: str) -> int | None:
    if text.lstrip("-").isdigit():
        return int(text)
    name = text.lstrip("-")
    return -ERRNO_NAMES[name] if name in ERRNO_NAMES else None


def _auids(text: str) -> list[int]:
    """Login uids at every boundary the rules draw within [UID_MIN, AUID_MAX]."""
    points = {UID_MIN, UID_MIN + 1, AUID_MAX}
    for value in re.findall(r"(?:auid|uid)(?:!=|>=|<=|=|<|>)(\d+)", text):
        for near in (int(value) - 1, int(value), int(value) + 1):
            if UID_MIN <= near <= AUID_MAX:
                points.add(near)
    return sorted(points)


_FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')


def _records(text: str) -> list[dict[str, str]]:
    records = []
    for raw in text.splitlines():
        line = raw.split("\x1d", 1)[0]  # the ENRICHED part
        if line.startswith("type=SYSCALL "):
            records.append({name: value.strip('"') for name, value in _FIELD.findall(line)})
    return records


#: A stimulus run: (auid, uid, program, mode).
Run = tuple[int, int, str, str]


@attrs.define
class Kernel:
    """This machine's kernel with a private auditd: load a file, make the stimuli, read records."""

    platform: Platform
    auditd: Auditd

    def judge(
        self,
        path: Path,
        text: str,
        extra: Iterable[tuple[int, int]],
        runs: Sequence[Run] | None = None,
    ) -> tuple[list[Event], int, bool]:
        """Load `path`, exercise every target; the events, `auditctl -l` count, loss.

        `runs` replaces the stimuli of every actor and mode.
        """
        # Room for the records of `-S all` rules. A full backlog drops records (counted as
        # lost: the example is then undecidable) rather than stall this shared host.
        for option in (
            ("-D",),
            ("-e", "1"),
            ("-b", "65536"),
            ("-r", "0"),
            ("--backlog_wait_time", "0"),
        ):
            auditctl(*option)
        lost = int(audit_status().get("lost", "0"))
        self._clear_log()
        auditctl("-R", str(path), check=False)
        listing = auditctl("-l").stdout
        count = 0 if listing.strip() == "No rules" else len(listing.splitlines())
        actors = sorted({*((a, u) for a in _auids(text) for u in (0, a)), *extra})
        runs = runs or [
            (auid, uid, program, mode)
            for auid, uid in actors
            for program, mode in self.platform.runs
        ]
        reports = [(run, self._run(*run)) for run in runs]
        auditctl("-D")
        # The file may have set a small backlog or a rate limit: a flood of `-S all`
        # records then drops the marker too. Room again, and the marker sent anew.
        for option in (("-e", "1"), ("-b", "65536"), ("-r", "0")):
            auditctl(*option)
        arrived = False
        for _ in range(3):
            token = f"kmod-audit-differential-{uuid.uuid4()}"
            auditctl("-m", token)
            if arrived := self._arrives(token):
                break
        lost_now = int(audit_status().get("lost", "0"))
        if not arrived and lost_now == lost:
            msg = f"no marker reached {self.auditd.log}, and the kernel lost no record"
            raise HarnessError(msg)
        by_key = {}
        for record in _records(self._log()):
            if "pid" in record and "syscall" in record and "exit" in record:
                by_key[
                    (
                        int(record["pid"]),
                        record["arch"],
                        int(record["syscall"]),
                        int(record["exit"]),
                    )
                ] = record.get("key", "(null)")
        events = []
        targets = self.platform.targets
        for (auid, uid, program, mode), lines in reports:
            for pid, abi, number, result in lines:
                target = next((t for t, n in targets.items() if t[0] == abi and n == number), None)
                if target is None:
                    continue  # b32 create_module and query_module: no profile target
                # The executable at syscall exit: kmod after a successful exec, else the caller.
                exe = KMOD if not mode.startswith("calls") and result == 0 else program
                key = by_key.get((pid, self.platform.arches[abi], number, result))
                events.append(Event(target, auid, uid, result, exe, key))
        return events, count, lost_now != lost

    def _run(self, auid: int, uid: int, program: str, mode: str) -> list[tuple[int, str, int, int]]:
        proc = subprocess.run(
            [program, str(auid), str(uid), mode, KMOD],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        said = f"{program} {auid} {uid} {mode}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
        if proc.returncode != 0:
            raise HarnessError(said)
        lines = []
        exits = {}
        for line in proc.stdout.splitlines():
            parts = line.split()
            if parts[0] == "exit":
                exits[int(parts[1])] = int(parts[2])
            else:
                lines.append((int(parts[0]), parts[1], int(parts[2]), int(parts[3])))
        # A successful exec is reported before it is made: kmod then exits 0.
        if not mode.startswith("calls") and (len(lines) != 1 or exits.get(lines[0][0]) != 0):
            raise HarnessError(said)
        return lines

    def _arrives(self, token: str) -> bool:
        """Whether `token` reaches the log while auditd keeps writing.

        A flood of records (`-S all`, a task rule) takes a guest under TCG a while to write:
        wait as long as the log grows, and give up once it has not grown for MARKER_WAIT s.
        """
        size, since = -1, time.monotonic()
        while True:
            text = self._log()
            if token in text:
                return True
            if len(text) != size:
                size, since = len(text), time.monotonic()
            elif time.monotonic() - since > MARKER_WAIT:
                return False
            time.sleep(0.1)

    def _rotated(self) -> list[Path]:
        log = self.auditd.log
        return sorted(log.parent.glob(log.name + ".*"), key=lambda p: -int(p.suffix[1:] or 0))

    def _clear_log(self) -> None:
        """Empty the log (auditd appends with O_APPEND) and drop rotated ones."""
        for rotated in self._rotated():
            rotated.unlink()
        os.truncate(self.auditd.log, 0)

    def _log(self) -> str:
        """Everything auditd wrote since `_clear_log`, oldest first (across rotations)."""
        data = b"".join(p.read_bytes() for p in [*self._rotated(), self.auditd.log])
        return data.decode(errors="replace")


# --------------------------------------------------------------------------------------
# Comparing


@attrs.frozen
class Outcome:
    """One target of one example, judged.

    Attributes:
        kind: `agree`, `undecidable`, `false-pass` (check passes, the kernel did not
            record an event), `false-fail` (check fails naming an event the kernel
            recorded, and it recorded every other event), `wrong-counterexample` (both
            fail, but the event check names was recorded), or `rule-count`.
        target: The target (empty for rule-count).
        detail: Evidence.
    """

    kind: str
    target: str
    detail: str

    @property
    def disagrees(self) -> bool:
        """Whether check and the kernel disagree here."""
        return self.kind not in {"agree", "undecidable"}

    def describe(self) -> str:
        """Return `KIND: TARGET: DETAIL`."""
        return f"{self.kind}: {self.target}: {self.detail}"


def compare(
    claims: dict[tuple[str, str], Claim], events: list[Event], text: str, *, lost: bool
) -> list[Outcome]:
    """Compare check's claim with the kernel's records for every target."""
    named = set(re.findall(r"exe!?=(\S+)", text))
    outcomes = []
    for target, claim in claims.items():
        mine = [e for e in events if e.target == target]
        unrecorded = [e for e in mine if not e.recorded]
        name = target_name(target)
        if claim.status not in {"pass", "fail"}:  # undecided (or n/a)
            outcomes.append(Outcome("undecidable", name, claim.reason))
        elif claim.status == "fail" and AT_FORK in claim.reason:
            # A task rule's ids at fork, other than at the syscall: the stimulus forks after
            # setting them (`test_task_rules_see_the_ids_at_fork` makes the other case), so
            # only an event the kernel left unrecorded anyway bears on the claim.
            kind = "agree" if unrecorded else "undecidable"
            outcomes.append(Outcome(kind, name, claim.reason))
        elif unrecorded and lost:
            outcomes.append(Outcome("undecidable", name, "the kernel lost records"))
        elif claim.status == "pass":
            if unrecorded:
                outcomes.append(Outcome("false-pass", name, unrecorded[0].describe()))
            else:
                outcomes.append(Outcome("agree", name, ""))
        elif claim.event is None:
            # A claim about every event (rules that never load, audit disabled).
            kind = "agree" if unrecorded else "false-fail"
            outcomes.append(Outcome(kind, name, claim.reason))
        else:
            producible = [e for e in mine if e.matches(claim.event, named)]
            if any(not e.recorded for e in producible):
                outcomes.append(Outcome("agree", name, ""))
            elif unrecorded:
                kind = "wrong-counterexample" if producible else "agree"
                outcomes.append(
                    Outcome(kind, name, f"{claim.reason} / kernel: {unrecorded[0].describe()}")
                )
            elif producible:
                outcomes.append(
                    Outcome(
                        "false-fail", name, f"{claim.reason} / kernel: {producible[0].describe()}"
                    )
                )
            else:
                outcomes.append(Outcome("undecidable", name, claim.reason))
    return outcomes


def _extra_actors(claims: dict[tuple[str, str], Claim]) -> set[tuple[int, int]]:
    """The (auid, uid) of every event `check` names, when the stimulus can make it."""
    extra = set()
    for claim in claims.values():
        if claim.event is None or "auid" not in claim.event:
            continue
        auid = int(claim.event["auid"])
        uid = int(claim.event.get("uid", "0"))
        if UID_MIN <= auid <= AUID_MAX and uid in {0, auid}:
            extra.add((auid, uid))
    return extra


@attrs.frozen
class Judged:
    """One rules file judged by `check` and by the kernel.

    Attributes:
        claims: check's status of every target.
        events: Every stimulus event: its target, its description, whether it was recorded.
        model_count: The rules check says load.
        kernel_count: The lines of `auditctl -l`.
        lost: Whether the kernel lost records meanwhile.
        outcomes: Every target's outcome (and a `rule-count` one when the counts differ).
    """

    claims: dict[str, str]
    events: list[tuple[str, str, bool]]
    model_count: int
    kernel_count: int
    lost: bool
    outcomes: list[Outcome]

    def to_json(self) -> dict[str, object]:
        """The JSON form (`from_json` reads it back)."""
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Judged:
        """Read what `to_json` wrote."""
        return cls(
            claims=dict(data["claims"]),
            events=[(str(target), str(text), bool(seen)) for target, text, seen in data["events"]],
            model_count=int(data["model_count"]),
            kernel_count=int(data["kernel_count"]),
            lost=bool(data["lost"]),
            outcomes=[Outcome(**outcome) for outcome in data["outcomes"]],
        )


def judge(kernel: Kernel, path: Path, text: str, runs: Sequence[Run] | None = None) -> Judged:
    """Judge one rules file by `check` and by the kernel (`text` is written to `path`)."""
    path.write_text(text, newline="")
    path.chmod(0o600)
    claims, model_count = check_claims(kernel.platform, path)
    events, kernel_count, lost = kernel.judge(path, text, _extra_actors(claims), runs)
    outcomes = compare(claims, events, text, lost=lost)
    if model_count != kernel_count:
        outcomes.append(
            Outcome("rule-count", "", f"check {model_count}, auditctl -l {kernel_count}")
        )
    return Judged(
        claims={target_name(t): c.status for t, c in claims.items()},
        events=[(target_name(e.target), e.describe(), e.recorded) for e in events],
        model_count=model_count,
        kernel_count=kernel_count,
        lost=lost,
        outcomes=outcomes,
    )


def harness_problems(platform: Platform, judged: Judged, lines: int) -> list[str]:
    """What shows the harness blind, for a file of `lines` rules that passes every target.

    `check` must pass every target, the stimulus must make an event of each, the kernel must
    record every one of them, and `auditctl -l` must list every line.
    """
    problems = [f"check: {t}: {s}" for t, s in judged.claims.items() if s != "pass"]
    made = {target for target, _, _ in judged.events}
    problems += [
        f"no stimulus event of {name}"
        for name in map(target_name, platform.targets)
        if name not in made
    ]
    problems += [f"not recorded: {text}" for _, text, recorded in judged.events if not recorded]
    if judged.kernel_count != lines:
        problems.append(f"auditctl -l lists {judged.kernel_count} rules of {lines}")
    return problems
