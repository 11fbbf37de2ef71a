"""`kmod-audit probe`: make the module syscalls on this machine and collect the records.

The probe runs on the machine under test (directly, over ssh, on a serial console or from
the NixOS test driver) and prints one JSON object: what it did (each stimulus with its
pid, ABI, syscall number, actor and result) and the raw audit records written meanwhile.
`verify` (possibly on another machine) matches them up.

Stimuli, each in a child process whose login uid is set first (DESIGN section 7):

- failing calls of every module syscall that exists on each ABI: init_module with a bad
  image, finit_module on a bad fd, delete_module of a module that does not exist,
  create_module and query_module (ENOSYS). b64 through libc's syscall(), b32 through
  `int 0x80` from this 64-bit process (IA32 emulation);
- each as two actors: `root` (uid 0 with the test user's login uid, like `sudo`) and
  `user` (uid and login uid of the test user: the call fails with EPERM, still audited);
- executions of the kmod binary (execve and execveat, b64 and b32);
- a successful load of the probe module with `modprobe` and its unload with delete_module,
  only when the kernel can and the module is not already loaded. Every module is left as
  found: module names compare as the kernel's do (`crc-itu-t` is `crc_itu_t`), exactly the
  modules the load added (the probe module and new dependencies, per /proc/modules before
  and after) are unloaded, never one that was there before, and SIGINT, SIGTERM or SIGHUP
  during the load still unloads them before the probe stops (exit 3). A module the probe
  cannot unload is named (`modules_left`, and in the error of an interrupted probe);
- negative controls: the same failing calls with the login uid unset, and below uid-min.

With `load=False` (`verify --no-load`) the probe never loads a module: the successful load
and unload are skipped by choice, and `_Prober` refuses to run a load at all.

The probe never changes audit rules or configuration.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import json
import os
import platform
import secrets
import select
import shutil
import signal
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Final, Self

import attrs

from . import _arm32, _syscall32, logs, netlink
from ._hostinfo import host_facts
from .errors import TransportError
from .probe_result import LEFT_LOADED, NOT_LOADED_BY_CHOICE, Actor, ProbeResult, Skipped, Stimulus
from .syscalls import EXEC_SYSCALLS, MODULE_SYSCALLS, Abi, Machine, host_machine

__all__ = ["ProbeInterrupted", "module_name", "run_probe"]

UID_UNSET: Final = 0xFFFFFFFF
AT_FDCWD: Final = -100
O_NONBLOCK: Final = 0o4000
MISSING_MODULE: Final = "kmod_audit_no_such_module"
CHILD_TIMEOUT: Final = 30.0
RESTORE_TIMEOUT: Final = 10.0
#: Signals that stop the probe; during the module load it first unloads what it loaded.
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
BAD_IMAGE: Final = b"kmod-audit probe, not an ELF module\0"


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _syscall64(number: int, *args: int | bytes | ctypes.Array[ctypes.c_char_p]) -> int:
    libc = _libc()
    converted: list[object] = []
    for arg in args:
        if isinstance(arg, int):
            converted.append(ctypes.c_long(arg))
        else:
            converted.append(arg)
    result = int(libc.syscall(ctypes.c_long(number), *converted))
    return -ctypes.get_errno() if result == -1 else result


def _read_loginuid() -> int:
    try:
        return int(Path("/proc/self/loginuid").read_text().strip())
    except (OSError, ValueError):
        return UID_UNSET


def _become(actor: Actor) -> None:
    """In the child: set the login uid (and uid) of `actor`; raise OSError when refused."""
    if _read_loginuid() != actor.auid:
        with open("/proc/self/loginuid", "w") as handle:
            handle.write(str(actor.auid))
    if actor.uid != 0:
        os.setgroups([])
        os.setresgid(actor.uid, actor.uid, actor.uid)
        os.setresuid(actor.uid, actor.uid, actor.uid)


@attrs.frozen
class _ChildResult:
    pid: int
    results: dict[str, int]
    errors: dict[str, str]
    status: int | None


def _never() -> bool:
    return False


def _reap(pid: int, stop: Callable[[], bool]) -> int:
    """Wait for the child `pid` to end; SIGKILL it as soon as `stop()` is true.

    A killed child ends when its current syscall returns (a module load completes first).

    Returns:
        Its exit status, or minus the signal that ended it.
    """
    while True:
        waited, raw = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return os.waitstatus_to_exitcode(raw)
        if stop():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        time.sleep(0.02)


def _run_child(
    actor: Actor,
    body: Callable[[Callable[[str, int], None]], None],
    stop: Callable[[], bool] = _never,
) -> _ChildResult:
    """Fork a child that becomes `actor` and runs `body(report)`; collect its reports.

    The child is killed when it reports for longer than CHILD_TIMEOUT, or as soon as
    `stop()` is true. A program it executes (modprobe) closes the pipe at exec and is then
    waited for without a deadline (the caller's timeout, e.g. verify's, bounds it).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        code = 0
        try:
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            try:
                _become(actor)
            except OSError as exc:
                os.write(
                    write_end,
                    (json.dumps({"error": f"cannot become {actor.name}: {exc}"}) + "\n").encode(),
                )
                os._exit(3)

            def report(stimulus_id: str, value: int) -> None:
                os.write(
                    write_end, (json.dumps({"id": stimulus_id, "result": value}) + "\n").encode()
                )

            body(report)
        except BaseException as exc:  # noqa: BLE001 - a child must never return into the parent's code
            with contextlib.suppress(OSError):
                os.write(write_end, (json.dumps({"error": repr(exc)}) + "\n").encode())
            code = 4
        os._exit(code)
    os.close(write_end)
    data = b""
    deadline = time.monotonic() + CHILD_TIMEOUT
    with os.fdopen(read_end, "rb") as pipe:
        while not stop():
            if time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
                break
            ready, _, _ = select.select([pipe], [], [], 0.1)
            if ready:
                chunk = os.read(pipe.fileno(), 65536)
                if not chunk:
                    break
                data += chunk
    # A program the child executed (modprobe) closed the pipe at exec: wait for its end.
    status = _reap(pid, stop)
    results: dict[str, int] = {}
    errors: dict[str, str] = {}
    for line in data.decode(errors="replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if "error" in item:
            errors[item.get("id", "*")] = str(item["error"])
        else:
            results[str(item["id"])] = int(item["result"])
    return _ChildResult(pid, results, errors, status)


# --------------------------------------------------------------------------------------
# The stimuli


@attrs.frozen
class _Plan:
    """A failing module syscall to make on one ABI."""

    id: str
    abi: Abi
    syscall: str
    number: int


def _failing_call(
    plan: _Plan, low: _syscall32.LowMemory | None, sys32: _syscall32.Syscall32 | None
) -> int:
    """Make one failing module syscall; return its result (-errno)."""
    if plan.abi.bits == "b32":
        assert low is not None  # noqa: S101 - set for b32 plans
        assert sys32 is not None  # noqa: S101
        image = low.put(BAD_IMAGE)
        empty = low.string("")
        name = low.string(MISSING_MODULE)
        args = {
            "init_module": (image, len(BAD_IMAGE), empty),
            "finit_module": (UID_UNSET, empty, 0),
            "delete_module": (name, O_NONBLOCK),
            "create_module": (name, 0),
            "query_module": (name, 0, 0, 0, 0),
        }[plan.syscall]
        return sys32(plan.number, *args)
    image_buffer = ctypes.create_string_buffer(BAD_IMAGE)
    empty_b = ctypes.c_char_p(b"")
    name_b = ctypes.c_char_p(MISSING_MODULE.encode())
    if plan.syscall == "init_module":
        return _syscall64(
            plan.number, ctypes.addressof(image_buffer), len(BAD_IMAGE), _address(empty_b)
        )
    if plan.syscall == "finit_module":
        return _syscall64(plan.number, -1, _address(empty_b), 0)
    if plan.syscall == "delete_module":
        return _syscall64(plan.number, _address(name_b), O_NONBLOCK)
    if plan.syscall == "create_module":
        return _syscall64(plan.number, _address(name_b), 0)
    return _syscall64(plan.number, _address(name_b), 0, 0, 0, 0)


def _address(value: ctypes.c_char_p) -> int:
    return ctypes.cast(value, ctypes.c_void_p).value or 0


#: The failed executions of kmod the probe makes: argv is a bad pointer (EFAULT), or one
#: argument is longer than the kernel takes (E2BIG). On Linux 5.9 to 6.7 both fail before
#: the kernel opens the file (`syscalls.BEFORE_OPEN`), later ones after it.
EXEC_FAILURES: Final = ("bad-argv", "long-argument")
#: MAX_ARG_STRLEN: the longest argument, with its NUL, that execve copies (32 pages of
#: this machine: 128 KiB with 4 KiB pages, 2 MiB with 64 KiB pages).
_MAX_ARG_STRLEN: Final = 32 * os.sysconf("SC_PAGE_SIZE")
#: The argv pointer of a `bad-argv` execution: never mapped.
_BAD_POINTER: Final = 1


def _exec_argv(program: str, how: str) -> list[str]:
    """The argv of an execution of `program` (`ok`, or one of `EXEC_FAILURES`)."""
    last = "x" * _MAX_ARG_STRLEN if how == "long-argument" else "--version"
    return [os.path.basename(program), last]


def _exec(abi: Abi, syscall: str, number: int, program: str, how: str = "ok") -> int:
    """In the child: execute `program --version` by the given syscall; return -errno on failure.

    `how` is `ok`, or one of `EXEC_FAILURES`: then the exec fails.
    """
    argv = _exec_argv(program, how)
    if abi.bits == "b32":
        low = _syscall32.LowMemory(size=2 * _MAX_ARG_STRLEN)
        sys32 = _syscall32.Syscall32()
        path = low.string(program)
        array = _BAD_POINTER if how == "bad-argv" else low.pointers([low.string(a) for a in argv])
        envp = low.pointers([])
        if syscall == "execve":
            return sys32(number, path, array, envp)
        return sys32(number, AT_FDCWD, path, array, envp, 0)
    c_argv = (ctypes.c_char_p * (len(argv) + 1))(*[a.encode() for a in argv], None)
    c_envp = (ctypes.c_char_p * 1)(None)
    c_path = ctypes.c_char_p(program.encode())
    argv_at = _BAD_POINTER if how == "bad-argv" else ctypes.addressof(c_argv)
    if syscall == "execve":
        return _syscall64(number, _address(c_path), argv_at, ctypes.addressof(c_envp))
    return _syscall64(number, AT_FDCWD, _address(c_path), argv_at, ctypes.addressof(c_envp), 0)


def _failing_stimulus(
    plan: _Plan, actor: Actor, pid: int, result: int | None, error: str | None
) -> Stimulus:
    """The record of one failing module syscall the probe made."""
    return Stimulus(
        id=plan.id,
        abi=plan.abi.bits,
        arch=plan.abi.hex,
        syscall=plan.syscall,
        numbers=(plan.number,),
        actor=actor.name,
        auid=actor.auid,
        uid=actor.uid,
        pid=pid,
        expect="failure",
        result=result,
        error=error,
    )


def _arm32_exec_args(syscall: str, program: str, how: str = "ok") -> list[_arm32.Arg]:
    """The arguments of an AArch32 execve/execveat of `program` (`how`: see `_exec`)."""
    path = program.encode()
    argv: _arm32.Arg = (
        _BAD_POINTER if how == "bad-argv" else [a.encode() for a in _exec_argv(program, how)]
    )
    if syscall == "execve":
        return [path, argv, []]
    return [AT_FDCWD, path, argv, [], 0]


@attrs.define
class _Prober:
    machine: Machine
    auid: int
    uid_min: int
    module: str
    program: str
    stimuli: list[Stimulus] = attrs.Factory(list)
    skipped: list[Skipped] = attrs.Factory(list)
    problems: list[str] = attrs.Factory(list)
    left: tuple[str, ...] = ()
    b32_ok: bool = True
    load: bool = True

    def actors(self) -> list[Actor]:
        actors = [Actor("root", self.auid, 0), Actor("user", self.auid, self.auid)]
        actors.append(Actor("unset", UID_UNSET, 0))
        if self.uid_min > 0:
            actors.append(Actor("below", self.uid_min - 1, 0))
        return actors

    def abis(self) -> list[Abi]:
        abis = [self.machine.native]
        if self.machine.name == "x86_64" and _syscall32.available():
            if self._probe_int80():
                abis.append(self.machine.compat)
            else:
                self.b32_ok = False
        elif self.machine.name == "aarch64":
            if self._probe_arm32():
                abis.append(self.machine.compat)
            else:
                self.b32_ok = False
        else:
            self.skipped.append(
                Skipped(
                    what=f"b32 ({self.machine.compat.table}) stimuli",
                    why=f"a 64-bit process cannot enter the {self.machine.compat.table} "
                    f"ABI on {self.machine.name}; that needs a 32-bit program",
                )
            )
        return abis

    def _probe_int80(self) -> bool:
        getpid = self.machine.compat.number("getpid") or 20

        def body(report: Callable[[str, int], None]) -> None:
            report("int80", _syscall32.Syscall32()(getpid))

        child = _run_child(Actor("root", _read_loginuid(), 0), body)
        if child.results.get("int80") == child.pid:
            return True
        self.skipped.append(
            Skipped(
                what="b32 (i386) stimuli",
                why="`int 0x80` does not reach the i386 syscall table here (IA32 emulation is "
                f"off, e.g. ia32_emulation=0; child status {child.status})",
            )
        )
        return False

    def _probe_arm32(self) -> bool:
        """Whether an AArch32 program runs here (then b32 stimuli are made that way)."""
        getpid = self.machine.compat.number("getpid") or 20

        def body(_report: Callable[[str, int], None]) -> None:
            _arm32.exec_image(_arm32.build(getpid, []))

        child = _run_child(Actor("root", _read_loginuid(), 0), body)
        if child.status == (-child.pid) & 0xFF and not child.errors:  # it exits with -getpid()
            return True
        error = "; ".join(child.errors.values())
        refused = "ENOEXEC" in error or f"Errno {errno.ENOEXEC}]" in error
        reason = _arm32.compat_el0()
        if refused and reason is not None:
            # The kernel refuses AArch32 programs and the machine says why: no process can
            # make a b32 call here, so those events cannot happen.
            self.skipped.append(
                Skipped(
                    what="b32 (arm) stimuli",
                    why=f"not applicable: {reason}, so no AArch32 program runs "
                    "(an exec of one fails with ENOEXEC)",
                    not_applicable=True,
                )
            )
            return False
        self.skipped.append(
            Skipped(
                what="b32 (arm) stimuli",
                why="an AArch32 program could not be run to make them "
                f"(child status {child.status}{', ' + error if error else ''})",
            )
        )
        return False

    def _arm32_child(self, actor: Actor, number: int, args: list[_arm32.Arg]) -> _ChildResult:
        def body(_report: Callable[[str, int], None]) -> None:
            _arm32.exec_image(_arm32.build(number, args))

        return _run_child(actor, body)

    def _arm32_failing_calls(self, actor: Actor, plans: list[_Plan]) -> None:
        """b32 module syscalls on aarch64: one AArch32 process per call."""
        image = BAD_IMAGE
        for plan in plans:
            calls: dict[str, list[_arm32.Arg]] = {
                "init_module": [image, len(image), b""],
                "finit_module": [UID_UNSET, b"", 0],
                "delete_module": [MISSING_MODULE.encode(), O_NONBLOCK],
            }
            args = calls[plan.syscall]
            child = self._arm32_child(actor, plan.number, args)
            result = None if child.errors else _arm32.exit_result(child.status)
            error = (
                None
                if result is not None
                else "; ".join(child.errors.values())
                or f"the AArch32 program ended with status {child.status}"
            )
            self.stimuli.append(_failing_stimulus(plan, actor, child.pid, result, error))

    def failing_calls(self, abis: list[Abi]) -> None:
        for actor in self.actors():
            plans = [
                _Plan(f"{abi.bits}-{syscall}-{actor.name}", abi, syscall, number)
                for abi in abis
                for syscall in MODULE_SYSCALLS
                if (number := abi.number(syscall)) is not None
            ]
            if self.machine.name == "aarch64":
                self._arm32_failing_calls(actor, [p for p in plans if p.abi.bits == "b32"])
                plans = [p for p in plans if p.abi.bits != "b32"]

            def body(report: Callable[[str, int], None], plans: list[_Plan] = plans) -> None:
                low = _syscall32.LowMemory() if any(p.abi.bits == "b32" for p in plans) else None
                sys32 = _syscall32.Syscall32() if low is not None else None
                for plan in plans:
                    report(plan.id, _failing_call(plan, low, sys32))

            child = _run_child(actor, body)
            for plan in plans:
                error = (
                    child.errors.get("*")
                    or child.errors.get(plan.id)
                    or (
                        None
                        if plan.id in child.results
                        else f"no result (child status {child.status})"
                    )
                )
                self.stimuli.append(
                    _failing_stimulus(plan, actor, child.pid, child.results.get(plan.id), error)
                )

    def executions(self, abis: list[Abi]) -> None:
        """Execute kmod by each exec syscall of each ABI: once as it should, then failing.

        The failures (`EXEC_FAILURES`) are still executions of kmod, which the standards
        want recorded; on Linux 5.9 to 6.7 they end before the file is opened.
        """
        for actor in (Actor("root", self.auid, 0), Actor("unset", UID_UNSET, 0)):
            for abi in abis:
                for syscall in EXEC_SYSCALLS:
                    self._execution(actor, abi, syscall, "ok")
        # The failures, as the logged-in user only (the executions above are the negative
        # controls), and each kind in one child: a failed exec returns to it.
        actor = Actor("root", self.auid, 0)
        for how in EXEC_FAILURES:
            plans = [
                (abi, syscall, number)
                for abi in abis
                for syscall in EXEC_SYSCALLS
                if (number := abi.number(syscall)) is not None
            ]
            for abi, syscall, _ in plans:
                if abi.table == "arm":
                    self._execution(actor, abi, syscall, how)
            self._failed_executions(actor, [p for p in plans if p[0].table != "arm"], how)

    def _failed_executions(self, actor: Actor, plans: list[tuple[Abi, str, int]], how: str) -> None:
        """Execute kmod failing (`how`) by each of `plans` in one child, in turn."""
        ids = [f"{abi.bits}-{syscall}-kmod-{how}-{actor.name}" for abi, syscall, _ in plans]

        def body(report: Callable[[str, int], None]) -> None:
            for stimulus_id, (abi, syscall, number) in zip(ids, plans, strict=True):
                report(stimulus_id, _exec(abi, syscall, number, self.program, how))

        if not plans:
            return
        child = _run_child(actor, body)
        for stimulus_id, (abi, syscall, number) in zip(ids, plans, strict=True):
            error = child.errors.get("*") or (
                None if stimulus_id in child.results else f"no result (child status {child.status})"
            )
            result = child.results.get(stimulus_id)
            self._executed(
                stimulus_id,
                actor,
                (abi, syscall, number, how),
                child.pid,
                result=result,
                error=error,
            )

    def _execution(self, actor: Actor, abi: Abi, syscall: str, how: str) -> None:
        found = abi.number(syscall)
        if found is None:
            return
        number: int = found
        failing = how != "ok"
        stimulus_id = f"{abi.bits}-{syscall}-kmod{f'-{how}' if failing else ''}-{actor.name}"

        def body(report: Callable[[str, int], None]) -> None:
            result = _exec(abi, syscall, number, self.program, how)
            report(stimulus_id, result)  # only reached when the exec failed

        error = None
        if abi.table == "arm":
            # An AArch32 program execs kmod; kmod's own exit status is 0.
            child = self._arm32_child(actor, number, _arm32_exec_args(syscall, self.program, how))
            result = None if child.errors else _arm32.exit_result(child.status)
            if result is None:
                error = "; ".join(child.errors.values()) or (
                    f"the AArch32 program ended with status {child.status}"
                )
        else:
            child = _run_child(actor, body)
            result = child.results.get(stimulus_id, child.status)
            error = child.errors.get("*")
        self._executed(
            stimulus_id, actor, (abi, syscall, number, how), child.pid, result=result, error=error
        )

    def _executed(
        self,
        stimulus_id: str,
        actor: Actor,
        call: tuple[Abi, str, int, str],
        pid: int,
        *,
        result: int | None,
        error: str | None,
    ) -> None:
        """Record an execution of kmod the probe made (or tried to), made as `how` says."""
        abi, syscall, number, how = call
        self.stimuli.append(
            Stimulus(
                id=stimulus_id,
                abi=abi.bits,
                arch=abi.hex,
                syscall=syscall,
                numbers=(number,),
                actor=actor.name,
                auid=actor.auid,
                uid=0,
                pid=pid,
                expect="success" if how == "ok" else "failure",
                result=result,
                error=error,
                program=self.program,
            )
        )

    def load_unload(self) -> tuple[bool | None, bool | None]:
        """Load the probe module and unload it again, leaving every module as found.

        Exactly the modules the load added are unloaded (the probe module by a stimulus
        child, then its new dependencies); those that cannot be are `self.left`.

        Returns:
            Whether the probe module was loaded before, and after.

        Raises:
            ProbeInterrupted: SIGINT, SIGTERM or SIGHUP came during the load or unload
                (after the modules were restored, or named as left loaded).
        """
        name = module_name(self.module)
        found = _proc_modules()
        before = None if found is None else name in found
        why = NOT_LOADED_BY_CHOICE if not self.load else _cannot_load(self.module, found)
        if why is not None:
            self.skipped.append(
                Skipped(what=f"successful load and unload of {self.module}", why=why)
            )
            return before, before
        assert found is not None  # noqa: S101 - _cannot_load says why when it is None
        modprobe = shutil.which("modprobe") or "/sbin/modprobe"
        with _StopSignals() as stop:
            self._load([modprobe, self.module], stop)
            if not stop():
                self._unload(name, stop)
            unloaded, left = _restore(found, name, self.machine.native)
        self.left = tuple(left)
        if left:
            self.problems.append(_left_loaded(left))
        if stop.caught is not None:
            raise ProbeInterrupted(_interrupted(stop.caught, self.module, unloaded, left))
        now = _proc_modules()
        return before, None if now is None else name in now

    def _load(self, argv: list[str], stop: Callable[[], bool]) -> None:
        if not self.load:
            # The one place a module is loaded: with --no-load it cannot be reached.
            msg = f"refusing to run {argv}: the probe was told never to load a module"
            raise TransportError(msg)
        actor = Actor("root", self.auid, 0)
        native = self.machine.native

        def body(_report: Callable[[str, int], None]) -> None:
            os.execv(argv[0], argv)  # noqa: S606 - an argv list, no shell

        child = _run_child(actor, body, stop)
        syscalls = ("init_module", "finit_module")
        self.stimuli.append(
            Stimulus(
                id=f"{native.bits}-load-{self.module}-root",
                abi=native.bits,
                arch=native.hex,
                syscall=syscalls[-1],
                numbers=tuple(n for s in syscalls if (n := native.number(s)) is not None),
                actor="root",
                auid=actor.auid,
                uid=0,
                pid=child.pid,
                expect="success",
                result=child.status,
                error=child.errors.get("*")
                or (None if child.status == 0 else f"`{' '.join(argv)}` exited {child.status}"),
                module=self.module,
            )
        )

    def _unload(self, name: str, stop: Callable[[], bool]) -> None:
        """The unload stimulus: delete_module of the probe module, as rmmod makes it."""
        actor = Actor("root", self.auid, 0)
        native = self.machine.native
        number = native.number("delete_module")
        stimulus_id = f"{native.bits}-unload-{self.module}-root"
        loaded = name in (_proc_modules() or {})
        if number is not None and loaded:

            def body(report: Callable[[str, int], None]) -> None:
                report(stimulus_id, _delete_module(number, name))

            child = _run_child(actor, body, stop)
            result = child.results.get(stimulus_id)
            error = child.errors.get("*") or child.errors.get(stimulus_id)
            if error is None and result is None:
                error = f"no result (child status {child.status})"
            elif error is None and result != 0:
                assert result is not None  # noqa: S101
                error = f"delete_module({name}) failed: {os.strerror(-result)}"
            pid = child.pid
        else:
            result, pid = None, 0
            error = f"{name} was not loaded after `modprobe {self.module}`: nothing to unload"
        self.stimuli.append(
            Stimulus(
                id=stimulus_id,
                abi=native.bits,
                arch=native.hex,
                syscall="delete_module",
                numbers=(number,) if number is not None else (),
                actor="root",
                auid=actor.auid,
                uid=0,
                pid=pid,
                expect="success",
                result=result,
                error=error,
                module=self.module,
            )
        )


def module_name(name: str) -> str:
    """The name the kernel gives a module: `-` and `_` are the same (as kmod compares them).

    Args:
        name: A module name as a user writes it (`crc-itu-t`).

    Returns:
        The name /proc/modules shows (`crc_itu_t`).
    """
    return name.replace("-", "_")


@attrs.frozen
class _Loaded:
    """One line of /proc/modules."""

    name: str
    uses: str
    users: tuple[str, ...]
    state: str
    unloadable: bool


def _proc_modules() -> dict[str, _Loaded] | None:
    """The loaded modules by name, newest first (the order of /proc/modules); None: no support."""
    try:
        text = Path("/proc/modules").read_text()
    except OSError:
        return None
    found: dict[str, _Loaded] = {}
    for line in text.splitlines():
        # name size refcount users state address; refcount and users are `-` without
        # CONFIG_MODULE_UNLOAD; users end with `,` and may be `[permanent]` (no exit).
        fields = line.split()
        if len(fields) < 5:
            continue
        users = tuple(u for u in fields[3].split(",") if u and u != "-")
        found[fields[0]] = _Loaded(
            name=fields[0],
            uses=fields[2],
            users=users,
            state=fields[4],
            unloadable=fields[2] != "-" and "[permanent]" not in users,
        )
    return found


def _delete_module(number: int, name: str) -> int:
    """delete_module(name, O_NONBLOCK) as rmmod makes it; return 0 or -errno."""
    buffer = ctypes.create_string_buffer(name.encode())  # alive until the call returns
    return _syscall64(number, ctypes.addressof(buffer), O_NONBLOCK)


def _restore(before: Collection[str], module: str, abi: Abi) -> tuple[list[str], dict[str, str]]:
    """Unload every module loaded now that was not in `before`.

    The probe module first, then the others (newest first), each once no module uses it;
    never one that was in `before`. A module still loading or unloading is waited for
    (up to RESTORE_TIMEOUT).

    Args:
        before: The names in /proc/modules before the load.
        module: The probe module's kernel name.
        abi: The native ABI (for delete_module's number).

    Returns:
        The modules unloaded, in order, and those left loaded with the reason.
    """
    number = abi.number("delete_module")
    deadline = time.monotonic() + RESTORE_TIMEOUT
    unloaded: list[str] = []
    left: dict[str, str] = {}
    while True:
        found = _proc_modules()
        if found is None:
            left = {module: "/proc/modules cannot be read any more"}
            break
        new = sorted(
            (m for m in found.values() if m.name not in before), key=lambda m: m.name != module
        )
        left = {}
        progress, busy = False, False
        for loaded in new:
            if loaded.state != "Live":
                busy = True
                left[loaded.name] = f"still {loaded.state.lower()}"
            elif not loaded.unloadable:
                left[loaded.name] = "the kernel cannot unload it"
            elif loaded.users:
                left[loaded.name] = f"used by {', '.join(loaded.users)}"
            elif number is None:
                left[loaded.name] = "no delete_module syscall"
            elif (result := _delete_module(number, loaded.name)) == 0:
                unloaded.append(loaded.name)
                progress = True
            elif result == -errno.EWOULDBLOCK:
                left[loaded.name] = f"in use, use count {loaded.uses}"
            else:
                left[loaded.name] = f"delete_module failed: {os.strerror(-result)}"
        if not left or (not progress and not busy) or time.monotonic() >= deadline:
            break
        if not progress:
            time.sleep(0.1)
    return unloaded, left


def _left_loaded(left: dict[str, str]) -> str:
    """Name the modules left loaded, why, and how to unload them."""
    it, they = ("it", "it is") if len(left) == 1 else ("them", "they are")
    why = "; ".join(f"{name}: {reason}" for name, reason in left.items())
    return (
        f"{LEFT_LOADED}{', '.join(left)} and could not unload {it} ({why}): {they} left "
        f"loaded; unload {it} with `rmmod {' '.join(left)}` once nothing uses {it}"
    )


def _interrupted(
    caught: signal.Signals, module: str, unloaded: list[str], left: dict[str, str]
) -> str:
    what = f"the probe was stopped by {caught.name} while it loaded and unloaded {module}"
    if left:
        return f"{what}; {_left_loaded(left)}; no verdict"
    restored = f"it unloaded {', '.join(unloaded)} again" if unloaded else "none was loaded"
    return f"{what}; {restored}, every module is as found; no verdict, run it again"


@attrs.define
class _StopSignals:
    """While modules are changed, note SIGINT, SIGTERM and SIGHUP instead of dying.

    The handler only notes the first signal (nothing is raised in the middle of a load or
    of the cleanup); the code polls the instance (`stop()` is true once one came). Signals
    that are ignored stay ignored; the previous handlers come back on exit.

    Attributes:
        caught: The first signal that came, if any.
    """

    caught: signal.Signals | None = None
    _saved: dict[signal.Signals, Any] = attrs.field(factory=dict)

    def __enter__(self) -> Self:
        """Install the handlers (only the main thread can)."""
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                previous = signal.getsignal(sig)
                if previous is not None and previous != signal.SIG_IGN:
                    self._saved[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *_exc: object) -> None:
        """Put the previous handlers back."""
        for sig, previous in self._saved.items():
            signal.signal(sig, previous)

    def __call__(self) -> bool:
        """Whether a signal asked to stop."""
        return self.caught is not None

    def _note(self, signum: int, _frame: object) -> None:
        if self.caught is None:
            self.caught = signal.Signals(signum)


class ProbeInterrupted(TransportError):
    """A signal stopped the probe during its module load (exit 3, no verdict)."""


def _module_directory() -> Path:
    """Where modprobe finds the running kernel's modules.

    /lib/modules/<release> on most systems; NixOS has no /lib and its kmod looks in the
    booted and the current system's kernel-modules (and honours $MODULE_DIR/<release>).
    """
    release = platform.release()
    prefix = os.environ.get("MODULE_DIR")  # NixOS kmod: $MODULE_DIR/<release>
    candidates = [
        f"{prefix}/{release}" if prefix else None,
        f"/lib/modules/{release}",
        f"/run/booted-system/kernel-modules/lib/modules/{release}",
        f"/run/current-system/kernel-modules/lib/modules/{release}",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "modules.dep").exists():
            return Path(candidate)
    return Path(f"/lib/modules/{release}")


def _cannot_load(module: str, found: dict[str, _Loaded] | None) -> str | None:
    """Why the probe must not load `module` (None: it may); `found` is /proc/modules."""
    if found is None:
        return "the kernel has no module support (/proc/modules is missing)"
    try:
        if Path("/proc/sys/kernel/modules_disabled").read_text().strip() == "1":
            return (
                "module loading is disabled (kernel.modules_disabled=1, e.g. NixOS "
                "security.lockKernelModules); failed attempts are still exercised"
            )
    except OSError:
        pass
    name = module_name(module)
    if name in found:
        return f"{module} is already loaded; it is left as found (not unloaded)"
    if any(not m.unloadable and "[permanent]" not in m.users for m in found.values()):
        return (
            "the kernel cannot unload modules (no CONFIG_MODULE_UNLOAD): a loaded "
            f"{module} could not be unloaded again"
        )
    directory = _module_directory()
    builtin = directory / "modules.builtin"
    with contextlib.suppress(OSError):
        if any(
            module_name(line.rsplit("/", 1)[-1].split(".ko")[0]) == name
            for line in builtin.read_text().splitlines()
        ):
            return f"{module} is built into the kernel; it cannot be loaded or unloaded"
    dep = directory / "modules.dep"
    try:
        names = {
            module_name(line.split(":", 1)[0].rsplit("/", 1)[-1].split(".ko")[0])
            for line in dep.read_text().splitlines()
        }
    except OSError:
        return f"no module tree for the running kernel ({dep} is missing)"
    if name not in names:
        return f"{module} is not in {dep}"
    if shutil.which("modprobe") is None and not os.path.exists("/sbin/modprobe"):
        return "modprobe is not installed"
    return None


# --------------------------------------------------------------------------------------


def _status() -> dict[str, int]:
    status = netlink.status()
    return {
        "enabled": status.enabled,
        "failure": status.failure,
        "pid": status.pid,
        "lost": status.lost,
        "backlog_limit": status.backlog_limit,
    }


def run_probe(
    *,
    module: str = "dummy",
    auid: int = 1000,
    uid_min: int = 1000,
    program: str = "/usr/bin/kmod",
    timeout: float = 15.0,
    load: bool = True,
) -> ProbeResult:
    """Make every stimulus on this machine and collect the records written meanwhile.

    Args:
        module: The probe module to load and unload when possible.
        auid: The login uid of the test user.
        uid_min: The first uid of real users (negative control: uid_min - 1).
        program: The real path of the kmod binary (executions are exercised with it).
        timeout: How long to wait for the records to reach the record source.
        load: Whether the successful load and unload may be exercised; False
            (`--no-load`) never loads a module.

    Returns:
        The stimuli and the raw records.

    Raises:
        TransportError: not root, or no audit support.
        ProbeInterrupted: SIGINT, SIGTERM or SIGHUP during the module load (the message
            says whether every module is as found, or which one is left loaded).
    """
    machine = host_machine()
    if machine is None:
        msg = f"the probe runs on x86_64 or aarch64, not {platform.machine()}"
        raise TransportError(msg)
    if os.geteuid() != 0:
        msg = (
            "the probe needs root: it sets login uids (CAP_AUDIT_CONTROL), makes module "
            "syscalls and reads the audit log; run it with sudo"
        )
        raise TransportError(msg)
    audit = _status()
    problems: list[str] = []
    if audit["enabled"] == 0:
        problems.append("audit is disabled (auditctl -s: enabled 0): no records can be produced")
    source = logs.RecordSource.discover(auditd_pid=audit["pid"])
    if source.problem is not None:
        problems.append(source.problem)
    start = source.position()
    prober = _Prober(
        machine=machine, auid=auid, uid_min=uid_min, module=module, program=program, load=load
    )
    abis = prober.abis()
    prober.failing_calls(abis)
    prober.executions(abis)
    before, after = prober.load_unload()
    marker = f"kmod-audit-probe-{secrets.token_hex(8)}"
    seen = False
    with contextlib.suppress(TransportError):
        netlink.user_message(marker)
        seen = source.wait_for(start, marker, timeout)
    records = source.read_since(start)
    lost_after = _status()["lost"]
    return ProbeResult(
        machine=machine.name,
        kernel=platform.release(),
        stimuli=tuple(prober.stimuli),
        skipped=tuple(prober.skipped),
        records=records,
        source=source.describe(),
        audit=audit,
        lost_after=lost_after,
        marker=marker,
        marker_seen=seen,
        modules_before=before,
        modules_after=after,
        problems=(*problems, *prober.problems),
        modules_left=prober.left,
        host=host_facts(),
    )
