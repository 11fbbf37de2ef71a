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
- a successful load and unload of the probe module with `modprobe` / `modprobe -r`, only
  when the kernel can and the module is not already loaded (it is left as found);
- negative controls: the same failing calls with the login uid unset, and below uid-min.

The probe never changes audit rules or configuration.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import json
import os
import platform
import secrets
import select
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from . import _syscall32, logs, netlink
from .errors import TransportError
from .syscalls import EXEC_SYSCALLS, MODULE_SYSCALLS, Abi, Machine, host_machine

__all__ = ["Actor", "ProbeResult", "Stimulus", "run_probe"]

UID_UNSET: Final = 0xFFFFFFFF
AT_FDCWD: Final = -100
O_NONBLOCK: Final = 0o4000
MISSING_MODULE: Final = "kmod_audit_no_such_module"
CHILD_TIMEOUT: Final = 30.0
BAD_IMAGE: Final = b"kmod-audit probe, not an ELF module\0"

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
    """

    what: str
    why: str


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

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        data = attrs.asdict(self)
        data["stimuli"] = [attrs.asdict(s) for s in self.stimuli]
        data["skipped"] = [attrs.asdict(s) for s in self.skipped]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeResult:
        """Rebuild a result from its JSON form (what `verify` receives)."""
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
        )


# --------------------------------------------------------------------------------------
# Children


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


def _run_child(actor: Actor, body: Callable[[Callable[[str, int], None]], None]) -> _ChildResult:
    """Fork a child that becomes `actor` and runs `body(report)`; collect its reports."""
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
    status: int | None = None
    with os.fdopen(read_end, "rb") as pipe:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([pipe], [], [], 0.1)
            if ready:
                chunk = os.read(pipe.fileno(), 65536)
                if not chunk:
                    break
                data += chunk
        else:
            os.kill(pid, signal.SIGKILL)
    waited, raw = os.waitpid(pid, 0)
    if waited == pid:
        status = os.waitstatus_to_exitcode(raw)
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


def _exec(abi: Abi, syscall: str, number: int, program: str) -> int:
    """In the child: execute `program --version` by the given syscall; return -errno on failure."""
    argv = [os.path.basename(program), "--version"]
    if abi.bits == "b32":
        low = _syscall32.LowMemory()
        sys32 = _syscall32.Syscall32()
        path = low.string(program)
        array = low.pointers([low.string(a) for a in argv])
        envp = low.pointers([])
        if syscall == "execve":
            return sys32(number, path, array, envp)
        return sys32(number, AT_FDCWD, path, array, envp, 0)
    c_argv = (ctypes.c_char_p * (len(argv) + 1))(*[a.encode() for a in argv], None)
    c_envp = (ctypes.c_char_p * 1)(None)
    c_path = ctypes.c_char_p(program.encode())
    if syscall == "execve":
        return _syscall64(
            number, _address(c_path), ctypes.addressof(c_argv), ctypes.addressof(c_envp)
        )
    return _syscall64(
        number, AT_FDCWD, _address(c_path), ctypes.addressof(c_argv), ctypes.addressof(c_envp), 0
    )


@attrs.define
class _Prober:
    machine: Machine
    auid: int
    uid_min: int
    module: str
    program: str
    stimuli: list[Stimulus] = attrs.Factory(list)
    skipped: list[Skipped] = attrs.Factory(list)
    b32_ok: bool = True

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

    def failing_calls(self, abis: list[Abi]) -> None:
        for actor in self.actors():
            plans = [
                _Plan(f"{abi.bits}-{syscall}-{actor.name}", abi, syscall, number)
                for abi in abis
                for syscall in MODULE_SYSCALLS
                if (number := abi.number(syscall)) is not None
            ]

            def body(report: Callable[[str, int], None], plans: list[_Plan] = plans) -> None:
                low = _syscall32.LowMemory() if any(p.abi.bits == "b32" for p in plans) else None
                sys32 = _syscall32.Syscall32() if low is not None else None
                for plan in plans:
                    report(plan.id, _failing_call(plan, low, sys32))

            child = _run_child(actor, body)
            for plan in plans:
                self.stimuli.append(
                    Stimulus(
                        id=plan.id,
                        abi=plan.abi.bits,
                        arch=plan.abi.hex,
                        syscall=plan.syscall,
                        numbers=(plan.number,),
                        actor=actor.name,
                        auid=actor.auid,
                        uid=actor.uid,
                        pid=child.pid,
                        expect="failure",
                        result=child.results.get(plan.id),
                        error=child.errors.get("*")
                        or child.errors.get(plan.id)
                        or (
                            None
                            if plan.id in child.results
                            else f"no result (child status {child.status})"
                        ),
                    )
                )

    def executions(self, abis: list[Abi]) -> None:
        for actor in (Actor("root", self.auid, 0), Actor("unset", UID_UNSET, 0)):
            for abi in abis:
                for syscall in EXEC_SYSCALLS:
                    found = abi.number(syscall)
                    if found is None:
                        continue
                    number: int = found
                    stimulus_id = f"{abi.bits}-{syscall}-kmod-{actor.name}"

                    def body(
                        report: Callable[[str, int], None],
                        abi: Abi = abi,
                        syscall: str = syscall,
                        number: int = number,
                        stimulus_id: str = stimulus_id,
                    ) -> None:
                        result = _exec(abi, syscall, number, self.program)
                        report(stimulus_id, result)  # only reached when the exec failed

                    child = _run_child(actor, body)
                    result = child.results.get(stimulus_id, child.status)
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
                            pid=child.pid,
                            expect="success",
                            result=result,
                            error=child.errors.get("*"),
                            program=self.program,
                        )
                    )

    def load_unload(self) -> tuple[bool | None, bool | None]:
        before = _module_loaded(self.module)
        why = _cannot_load(self.module, before)
        if why is not None:
            self.skipped.append(
                Skipped(what=f"successful load and unload of {self.module}", why=why)
            )
            return before, before
        modprobe = shutil.which("modprobe") or "/sbin/modprobe"
        actor = Actor("root", self.auid, 0)
        native = self.machine.native
        for action, argv, syscalls in (
            ("load", [modprobe, self.module], ("init_module", "finit_module")),
            ("unload", [modprobe, "-r", self.module], ("delete_module",)),
        ):
            stimulus_id = f"{native.bits}-{action}-{self.module}-root"

            def body(_report: Callable[[str, int], None], argv: list[str] = argv) -> None:
                os.execv(argv[0], argv)  # noqa: S606 - an argv list, no shell

            child = _run_child(actor, body)
            numbers = tuple(n for s in syscalls if (n := native.number(s)) is not None)
            self.stimuli.append(
                Stimulus(
                    id=stimulus_id,
                    abi=native.bits,
                    arch=native.hex,
                    syscall=syscalls[-1],
                    numbers=numbers,
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
        after = _module_loaded(self.module)
        return before, after


def _module_loaded(name: str) -> bool | None:
    try:
        text = Path("/proc/modules").read_text()
    except OSError:
        return None
    return any(line.split(" ", 1)[0] == name for line in text.splitlines())


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


def _cannot_load(module: str, loaded: bool | None) -> str | None:
    if loaded is None:
        return "the kernel has no module support (/proc/modules is missing)"
    try:
        if Path("/proc/sys/kernel/modules_disabled").read_text().strip() == "1":
            return (
                "module loading is disabled (kernel.modules_disabled=1, e.g. NixOS "
                "security.lockKernelModules); failed attempts are still exercised"
            )
    except OSError:
        pass
    if loaded:
        return f"{module} is already loaded; it is left as found (not unloaded)"
    directory = _module_directory()
    builtin = directory / "modules.builtin"
    with contextlib.suppress(OSError):
        if any(
            line.rsplit("/", 1)[-1].split(".ko")[0] == module
            for line in builtin.read_text().splitlines()
        ):
            return f"{module} is built into the kernel; it cannot be loaded or unloaded"
    dep = directory / "modules.dep"
    try:
        names = {
            line.split(":", 1)[0].rsplit("/", 1)[-1].split(".ko")[0].replace("-", "_")
            for line in dep.read_text().splitlines()
        }
    except OSError:
        return f"no module tree for the running kernel ({dep} is missing)"
    if module.replace("-", "_") not in names:
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
) -> ProbeResult:
    """Make every stimulus on this machine and collect the records written meanwhile.

    Args:
        module: The probe module to load and unload when possible.
        auid: The login uid of the test user.
        uid_min: The first uid of real users (negative control: uid_min - 1).
        program: The real path of the kmod binary (executions are exercised with it).
        timeout: How long to wait for the records to reach the record source.

    Returns:
        The stimuli and the raw records.

    Raises:
        TransportError: not root, or no audit support.
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
    prober = _Prober(machine=machine, auid=auid, uid_min=uid_min, module=module, program=program)
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
        problems=tuple(problems),
    )
