#!/usr/bin/env python3
"""Boot Debian's full kernel under QEMU (TCG) with virtme-ng, for tests and tooling.

The development host runs a kernel without loadable modules, so whatever must really load a
module (and read back the audit records) runs in a throwaway guest: `vng` boots
`/boot/vmlinuz-<version>` with the host's root filesystem shared read-only over 9p (`/etc`,
`/var`, `/tmp`, ... are RAM-backed overlays, `/var/log` and `/run` are empty tmpfs), runs one
command as root and powers off. Nothing the guest does reaches the host, except through
`--rwdir` directories; the host's own audit state is never touched (it is another kernel).

Two ways in:
- `run_guest(script, kernel=...)`: boot, run a host script in the guest, collect its
  output. The script prints `RESULT key=value ...` lines and `BEGIN name`/`END name` blocks
  that `GuestRun.results()` and `GuestRun.section()` parse.
- `console(kernel)`: an interactive root shell on the guest's serial console, as a
  `pexpect.spawn` (what a SerialConsole transport drives).

Pitfalls this module handles (all of them observed on our machines):
- QEMU reopens `/proc/self/fd/1` and `/proc/self/fd/2` with O_TRUNC: an inherited regular
  file (a CI log, pytest's capture file) would be truncated and overwritten. Output always
  goes through pipes (or a pty plus a dedicated log file).
- Killing `vng` alone leaves QEMU running. On a timeout QEMU is stopped first, by the pid
  from its `-pidfile` (checked to still be a QEMU), so that virtme-run reaps it; then the
  whole process group gets SIGTERM, then SIGKILL.
- `vng` runs `virtme-run` by name, so the virtualenv's `bin` must be on PATH.
- The `--exec` command travels base64-encoded on the kernel command line: a long one makes
  the guest hang silently. Keep the logic in a script file and pass only its path.
- Host environment variables do not reach the guest: scripts set their own PATH. In the
  guest, `/usr/bin/python3` starts in about a second.
- Never `--rw`: the guest's init then writes to the host's `/etc`.

Other kernels (tools/matrix.py fetches them): `kernel_from_spec("amd64-6.12")` boots an
unpacked kernel with the host's root; an arm64 kernel boots under qemu-system-aarch64 with
an arm64 root built from Debian packages, where the repository is at GUEST_REPO and the
one rwdir at GUEST_WORK (`guest_path` maps a host path).

Command line:
    python3 tools/vmrun.py check                  # what is missing (exit 1 if anything)
    python3 tools/vmrun.py run SCRIPT [--timeout N] [--kernel K] [--arch A] [-- ARG ...]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import selectors
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, BinaryIO, Final

import attrs
import pexpect

import matrix

__all__ = [
    "ARM64_DEFAULT",
    "DEFAULT_APPEND",
    "GUEST_REPO",
    "GUEST_WORK",
    "START_AUDITD",
    "STOP_AUDITD",
    "GuestBootError",
    "GuestRun",
    "Kernel",
    "VMError",
    "console",
    "find_busybox",
    "find_kernel",
    "find_vng",
    "guest_path",
    "kernel_from_spec",
    "main",
    "missing_prerequisites",
    "run_guest",
]

log = logging.getLogger("kmod_audit.vmrun")

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
#: Guest-side helper: start `auditd -n`, print `RESULT auditd_pid=PID` once registered.
START_AUDITD = TOOLS / "guest" / "start-auditd.sh"
#: Guest-side helper: flush (marker), stop auditd PID, print `RESULT auditd_stopped=PID`.
STOP_AUDITD = TOOLS / "guest" / "stop-auditd.sh"

#: Kernel options for every boot unless told otherwise: the guest kernel audits only with it.
DEFAULT_APPEND: tuple[str, ...] = ("audit=1",)

#: Guest paths of the repository and the --rwdir in a foreign root: tools/matrix.py makes
#: both mount points when it builds the root (shared read-only).
GUEST_REPO = matrix.GUEST_REPO
GUEST_WORK = matrix.GUEST_WORK

_BOOT = Path("/boot")
_MODULES = Path("/lib/modules")
# The --exec command is base64-encoded into the kernel command line (2048 bytes on x86,
# shared with vng's own options); 1.8 kB already hung the guest. 512 leaves ample room.
_MAX_EXEC = 512
# vng pastes --rwdir and --qemu-opts values unquoted into a `sh -c` string.
_SHELL_SAFE = re.compile(r"[A-Za-z0-9_./+,:@%-]+")
# The same for a QEMU option word, which may also hold `=` (never first: not an assignment).
_QEMU_SAFE = re.compile(r"[A-Za-z0-9_./+,:@%-][A-Za-z0-9_./+,:@%=-]*")
# Paths the guest does not see from the host (its own /proc, /sys, /dev, /run).
_GUEST_PRIVATE = (Path("/proc"), Path("/sys"), Path("/dev"), Path("/run"))
_KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL of the process group
_DRAIN = 10.0  # seconds to collect what is left in the pipes after a kill
_PT_INTERP = 3  # ELF program header type of the dynamic loader path


class VMError(Exception):
    """The VM could not be started or driven (a prerequisite or the guest failed)."""


class GuestBootError(VMError):
    """The guest never offered a shell prompt on its console.

    Attributes:
        tail: The end of what the console printed.
        console_log: The end of the kernel console log (vng's stderr).
    """

    def __init__(self, msg: str, *, tail: str, console_log: str) -> None:
        """Build the error; the message already names what was waited for."""
        super().__init__(msg)
        self.tail = tail
        self.console_log = console_log


@attrs.frozen
class Kernel:
    """A bootable kernel with its modules.

    Attributes:
        version: The release string (`uname -r` in the guest), e.g. `6.1.0-56-amd64`.
        image: `/boot/vmlinuz-<version>`, or the image of an unpacked package.
        modules: `/lib/modules/<version>`, shared into the guest with the host root (an
            unpacked package's tree sits next to its image: vng finds it there).
        arch: Debian's name of the guest's architecture (`amd64`, `arm64`).
        root: The guest's root directory for a foreign architecture (tools/matrix.py
            builds one); None boots with the host's root. In a foreign root the repository
            is at GUEST_REPO and the one `rwdirs` directory at GUEST_WORK.
        package: The Debian package and version it came from, when known.
    """

    version: str
    image: Path
    modules: Path
    arch: str = "amd64"
    root: Path | None = None
    package: str = ""

    @property
    def qemu(self) -> str:
        """The QEMU binary that boots it."""
        return {"amd64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}[self.arch]


def guest_path(kernel: Kernel, path: Path, rwdirs: Sequence[Path] = ()) -> str:
    """Where a guest booted from `kernel` sees the host's `path`.

    With the host's root it is the same path. In a foreign root only the repository
    (at GUEST_REPO) and the first of `rwdirs` (at GUEST_WORK) are shared.

    Raises:
        ValueError: the guest does not see `path`.
    """
    path = Path(os.path.abspath(path))
    if kernel.root is None:
        return str(path)
    shares = [(REPO, GUEST_REPO)] + [(Path(os.path.abspath(d)), GUEST_WORK) for d in rwdirs[:1]]
    for host, guest in shares:
        if path == host or path.is_relative_to(host):
            return str(Path(guest, path.relative_to(host)))
    msg = (
        f"{path} is not shared with the {kernel.arch} guest: only the repository ({REPO}) "
        "and one --rwdir are; put the file there"
    )
    raise ValueError(msg)


@attrs.frozen(kw_only=True)
class GuestRun:
    """What one `run_guest` boot produced.

    Attributes:
        status: vng's exit status: the guest script's own status; 255 when the guest died
            without reporting (panic, hang); negative (minus the signal) when killed.
        stdout: The guest script's standard output.
        stderr: Its standard error, plus vng's and QEMU's messages.
        elapsed: Wall-clock seconds from start to cleanup, boot included.
        timed_out: Whether the run hit its timeout and was killed.
    """

    status: int
    stdout: str
    stderr: str
    elapsed: float
    timed_out: bool

    def results(self) -> dict[str, str]:
        """Parse the `RESULT key=value key2=value2` lines of stdout (a later key wins).

        Returns:
            Every key seen on a `RESULT` line, with its value (which has no blanks).
        """
        found: dict[str, str] = {}
        for line in self.stdout.splitlines():
            words = line.split()
            if words[:1] != ["RESULT"]:
                continue
            for word in words[1:]:
                key, sep, value = word.partition("=")
                if sep and key:
                    found[key] = value
        return found

    def section(self, name: str) -> str:
        """Return the stdout text between the lines `BEGIN <name>` and `END <name>`.

        Args:
            name: The section name the guest printed.

        Returns:
            The lines in between, each with its newline (empty if there are none).

        Raises:
            LookupError: The guest did not print both lines (the message shows the tail).
        """
        lines = self.stdout.splitlines(keepends=True)
        marks = [line.rstrip("\r\n") for line in lines]
        begin, end = f"BEGIN {name}", f"END {name}"
        if begin in marks:
            first = marks.index(begin) + 1
            if end in marks[first:]:
                return "".join(lines[first : marks.index(end, first)])
        msg = f"no {begin!r} ... {end!r} section in the guest's output; {self.summary()}"
        raise LookupError(msg)

    def summary(self, lines: int = 20) -> str:
        """Describe the run for an assertion message: status, time, tails of both streams.

        Args:
            lines: How many trailing lines of each stream to show.

        Returns:
            A multi-line description.
        """
        how = f"timed out after {self.elapsed:.1f} s" if self.timed_out else "finished"
        return (
            f"guest {how} with status {self.status} ({self.elapsed:.1f} s)\n"
            f"--- stdout (tail) ---\n{_tail(self.stdout, lines)}\n"
            f"--- stderr (tail) ---\n{_tail(self.stderr, lines)}"
        )


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _version_key(version: str) -> tuple[tuple[int, ...], str]:
    # Like `sort -V` for Debian releases: 6.1.0-9-amd64 < 6.1.0-56-amd64.
    return tuple(int(number) for number in re.findall(r"\d+", version)), version


def find_kernel(boot: Path = _BOOT, modules: Path = _MODULES) -> Kernel | None:
    """Find the newest full-flavour Debian kernel that has its modules installed.

    Full flavour means `vmlinuz-<version>` with a version ending in `-amd64` and not a
    `-cloud-` one (the cloud flavour was never tried here).

    Args:
        boot: Where the kernel images are.
        modules: Where the module trees are.

    Returns:
        The kernel, or None when there is none.
    """
    try:
        names = os.listdir(boot)
    except OSError:
        return None
    found: list[Kernel] = []
    for name in names:
        version = name.removeprefix("vmlinuz-")
        if version == name or not version.endswith("-amd64") or "-cloud-" in version:
            continue
        kernel = Kernel(version, boot / name, modules / version)
        if kernel.image.is_file() and kernel.modules.is_dir():
            found.append(kernel)
    return max(found, key=lambda kernel: _version_key(kernel.version), default=None)


#: The kernel `--arch arm64` boots without `--kernel`: the newest arm64 leg of the matrix.
ARM64_DEFAULT: Final = "arm64-6.12"


def kernel_from_spec(spec: str | None, arch: str | None = None) -> Kernel:
    """The kernel `--kernel SPEC --arch ARCH` names (the harness's default: the host's).

    SPEC is a leg of tools/matrix.py (`amd64-6.1` is the host's installed kernel), a Debian
    package name, a .deb file or an unpacked kernel directory; ARCH is `amd64` or `arm64`
    (by default the leg's, else amd64). Without SPEC: amd64 boots the host's kernel, arm64
    the newest arm64 leg (ARM64_DEFAULT).

    Raises:
        VMError: nothing bootable; the message says what to fetch or pass.
    """
    if arch is not None and arch not in {"amd64", "arm64"}:
        msg = f"--arch {arch!r}: the harness boots amd64 or arm64"
        raise VMError(msg)
    if spec is None and arch == "arm64":
        spec = ARM64_DEFAULT  # the host's kernel is amd64: Debian's newest arm64 one
    leg = matrix.LEGS.get(spec or "amd64-6.1")
    if leg is not None and arch is not None and leg.arch != arch:
        msg = f"--kernel {spec} is an {leg.arch} kernel, not {arch}; drop --arch or match it"
        raise VMError(msg)
    if spec is None or (leg is not None and leg.host):
        kernel = find_kernel()
        if kernel is None:
            msg = "no installed Debian amd64 kernel to boot; see `python3 tools/vmrun.py check`"
            raise VMError(msg)
        return kernel
    try:
        found = matrix.kernel_for(spec, arch or (leg.arch if leg else "amd64"))
    except matrix.MatrixError as exc:
        raise VMError(str(exc)) from None
    return Kernel(
        found.release,
        found.image,
        found.modules,
        arch=found.leg.arch,
        root=found.root,
        package=found.package,
    )


def _venv_bins() -> list[Path]:
    bins = [Path(sys.prefix) / "bin", REPO / ".venv" / "bin"]
    on_path = shutil.which("vng")
    if on_path is not None:
        bins.append(Path(on_path).parent)
    return bins


def find_vng() -> Path | None:
    """Find `vng` next to `virtme-run` (vng runs it by name from PATH).

    Looks in the running interpreter's virtualenv, then the repository's `.venv`, then PATH.

    Returns:
        The path of `vng`, or None.
    """
    for directory in _venv_bins():
        vng, virtme_run = directory / "vng", directory / "virtme-run"
        if os.access(vng, os.X_OK) and os.access(virtme_run, os.X_OK):
            return vng
    return None


def find_busybox() -> Path | None:
    """Find the busybox virtme-ng will put into the guest's initramfs, as virtme does.

    Returns:
        Its path (static or not: check with `missing_prerequisites`), or None.
    """
    names = ("busybox-static", "busybox.static", "busybox")
    dirs = [Path(prefix, sub) for prefix in ("/usr/local", "/usr", "/") for sub in ("bin", "sbin")]
    for name in names:
        on_path = shutil.which(name)
        if on_path is not None:
            return Path(on_path)
        for directory in dirs:
            if (directory / name).is_file():
                return directory / name
    return None


def _is_static_elf(path: Path) -> bool:
    # A static executable has no PT_INTERP program header (no dynamic loader).
    try:
        with path.open("rb") as elf:
            header = elf.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF":
                return False
            order = "<" if header[5] == 1 else ">"
            if header[4] == 2:  # ELFCLASS64
                (phoff,) = struct.unpack_from(order + "Q", header, 0x20)
                phentsize, phnum = struct.unpack_from(order + "HH", header, 0x36)
            else:
                (phoff,) = struct.unpack_from(order + "I", header, 0x1C)
                phentsize, phnum = struct.unpack_from(order + "HH", header, 0x2A)
            for index in range(phnum):
                elf.seek(phoff + index * phentsize)
                (p_type,) = struct.unpack(order + "I", elf.read(4))
                if p_type == _PT_INTERP:
                    return False
    except (OSError, struct.error):
        return False
    return True


def missing_prerequisites(kernel: Kernel | None = None) -> list[str]:
    """List what is missing to boot a guest, each item saying how to get it.

    Args:
        kernel: The kernel to boot; by default the host's installed one.

    Returns:
        Human-readable problems; empty when a guest can boot.
    """
    missing: list[str] = []
    install = "apt-get install --no-install-recommends"
    kernel = kernel or find_kernel()
    if kernel is None:
        missing.append(
            "a full-flavour Debian kernel: /boot/vmlinuz-<version>-amd64 with "
            f"/lib/modules/<version> ({install} linux-image-amd64)"
        )
    elif not os.access(kernel.image, os.R_OK):
        missing.append(f"read access to {kernel.image} (Debian installs it 0600: run as root)")
    qemu, package = (
        ("qemu-system-aarch64", "qemu-system-arm")
        if kernel is not None and kernel.arch == "arm64"
        else ("qemu-system-x86_64", "qemu-system-x86")
    )
    if shutil.which(qemu) is None:
        missing.append(f"{qemu} ({install} {package})")
    busybox = find_busybox()
    if busybox is None:
        missing.append(f"a static busybox for the guest's initramfs ({install} busybox-static)")
    elif not _is_static_elf(busybox):
        missing.append(
            f"a static busybox: {busybox} (found first, as virtme-ng searches) is dynamically "
            f"linked ({install} busybox-static)"
        )
    if find_vng() is None:
        missing.append(
            "vng and virtme-run (virtme-ng) in the virtualenv: "
            ".venv/bin/pip install -e '.[dev,vm]' (or tools/setup)"
        )
    return missing


def _require_vng() -> Path:
    vng = find_vng()
    if vng is None:
        msg = (
            "vng (virtme-ng) not found in the virtualenv or on PATH; install it with "
            "`.venv/bin/pip install -e '.[dev,vm]'` or tools/setup, then retry"
        )
        raise VMError(msg)
    return vng


def _shell_safe(path: Path, what: str) -> str:
    text = str(path)
    if not path.is_absolute() or _SHELL_SAFE.fullmatch(text) is None:
        msg = (
            f"{what} {text!r} must be an absolute path of letters, digits and _./+,:@%- "
            "(vng pastes it into a shell command unquoted)"
        )
        raise ValueError(msg)
    return text


def _vng_argv(
    vng: Path,
    kernel: Kernel,
    *,
    append: Sequence[str],
    memory: str,
    cpus: int,
    rwdirs: Sequence[Path],
    pidfile: Path,
    qemu_opts: Sequence[str] = (),
) -> list[str]:
    installed = kernel.image == _BOOT / f"vmlinuz-{kernel.version}"
    argv = [
        str(vng),
        "--run",
        # An installed kernel by its release; an unpacked one by its image path (vng then
        # takes the module tree next to it).
        kernel.version if installed else _shell_safe(kernel.image, "kernel image"),
        "--disable-kvm",  # no usable KVM: QEMU aborts, or hangs with a tuned -cpu
        "--force-9p",  # what vng falls back to anyway (no virtiofsd); be explicit
        f"--memory={memory}",
        f"--cpus={cpus}",
    ]
    if kernel.arch != "amd64":
        argv.append(f"--arch={kernel.arch}")
    if not installed and kernel.root is None:
        # The guest's /var (and /tmp, /opt, ...) are empty overlays of the host's: the
        # module tree vng links to must be shared at its own path.
        tree = _shell_safe(kernel.image.parent.parent, "kernel directory")
        argv.append(f"--rodir={tree}={tree}")
    if kernel.root is not None:
        argv += [
            f"--root={_shell_safe(kernel.root, 'guest root')}",
            f"--rodir={GUEST_REPO}={_shell_safe(REPO, 'repository')}",
        ]
        if len(rwdirs) > 1:
            msg = f"a {kernel.arch} guest shares one rwdir (at {GUEST_WORK}), not {len(rwdirs)}"
            raise ValueError(msg)
    argv += [f"--append={option}" for option in append]
    for directory in rwdirs:
        if not directory.is_dir():
            msg = f"rwdir {directory} is not a directory on the host"
            raise ValueError(msg)
        where = _shell_safe(directory, "rwdir")
        argv.append(
            f"--rwdir={GUEST_WORK}={where}" if kernel.root is not None else f"--rwdir={where}"
        )
    extra = [_qemu_word(word) for word in qemu_opts]
    # With `=`: as a separate item argparse would take `-pidfile` for an option.
    argv.append(" ".join([f"--qemu-opts=-pidfile {_shell_safe(pidfile, 'pidfile')}", *extra]))
    return argv


def _qemu_word(word: str) -> str:
    # vng pastes --qemu-opts into a `sh -c` string unquoted: allow only words the shell
    # passes through unchanged (QEMU's `key=value,key=value` syntax included).
    if _QEMU_SAFE.fullmatch(word) is None:
        msg = (
            f"QEMU option {word!r} must consist of letters, digits and _./+,:@%=- "
            "(vng pastes it into a shell command unquoted)"
        )
        raise ValueError(msg)
    return word


def _vng_env(vng: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(vng.parent), env.get("PATH", "/usr/bin:/bin")])
    return env


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _alive(pid: int) -> bool:
    # A zombie keeps its /proc entry; it is dead for our purpose.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _qemu_pid(pidfile: Path) -> int | None:
    # QEMU removes its pidfile on a clean exit but leaves it stale when it aborts: trust
    # the pid only while it still is a live QEMU.
    try:
        pid = int(pidfile.read_text(encoding="ascii").strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"qemu" in cmdline and _alive(pid) else None


def _kill_qemu(pidfile: Path, *, grace: float = _KILL_GRACE) -> None:
    # Last resort once its process group is gone: give QEMU `grace` seconds to finish
    # dying from the signals it already got, then SIGKILL it by pid.
    pid = _qemu_pid(pidfile)
    deadline = time.monotonic() + grace
    while pid is not None and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid is None or not _alive(pid):
        return
    log.warning("QEMU pid %d outlived its process group; killing it", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _kill_vm(proc: subprocess.Popen[bytes], pidfile: Path, capture: _Capture) -> None:
    # QEMU first, while its parent virtme-run still waits for it: virtme-run reaps it and
    # returns 255, and vng exits. Killing the group first races: a QEMU that outlives
    # virtme-run becomes an orphan zombie that this container's init may never reap.
    qemu = _qemu_pid(pidfile)
    if qemu is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(qemu, signal.SIGTERM)
        capture.pump(time.monotonic() + _KILL_GRACE)
    # vng, sh, virtme-run (and QEMU) share the group that start_new_session created.
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        capture.pump(time.monotonic() + _KILL_GRACE)
    _signal_group(proc.pid, signal.SIGKILL)
    _kill_qemu(pidfile)


@attrs.define
class _Capture:
    """Read a child's stdout and stderr until EOF or a deadline, echoing as asked."""

    proc: subprocess.Popen[bytes]
    on_stdout: Callable[[bytes], None] | None
    on_stderr: Callable[[bytes], None] | None
    stdout: bytearray = attrs.Factory(bytearray)
    stderr: bytearray = attrs.Factory(bytearray)
    selector: selectors.BaseSelector = attrs.Factory(selectors.DefaultSelector)

    def __attrs_post_init__(self) -> None:
        """Watch both pipes."""
        streams: list[tuple[IO[bytes] | None, bytearray, Callable[[bytes], None] | None]] = [
            (self.proc.stdout, self.stdout, self.on_stdout),
            (self.proc.stderr, self.stderr, self.on_stderr),
        ]
        for stream, buffer, echo in streams:
            if stream is not None:
                self.selector.register(stream, selectors.EVENT_READ, (buffer, echo))

    def pump(self, deadline: float) -> bool:
        """Collect until both pipes close and the child exits; False at the deadline."""
        while self.selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for key, _ in self.selector.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    self.selector.unregister(key.fileobj)
                    continue
                buffer, echo = key.data
                buffer.extend(chunk)
                if echo is not None:
                    echo(chunk)
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        """Release the selector and the pipes."""
        self.selector.close()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _exec_command(script: Path, args: Sequence[str], kernel: Kernel) -> str:
    if not script.is_file() or not os.access(script, os.X_OK):
        msg = f"guest script {script} must be an executable file (chmod +x, with a #! line)"
        raise ValueError(msg)
    if any(script.is_relative_to(private) for private in _GUEST_PRIVATE):
        msg = f"guest script {script} is under a directory the guest does not share"
        raise ValueError(msg)
    command = shlex.join([guest_path(kernel, script), *args])
    if len(command) > _MAX_EXEC:
        msg = (
            f"guest command is {len(command)} characters (limit {_MAX_EXEC}): it rides on the "
            "kernel command line; put the logic into the script instead of its arguments"
        )
        raise ValueError(msg)
    return command


def run_guest(
    script: Path,
    *,
    kernel: Kernel,
    timeout: float = 300,
    append: Sequence[str] = DEFAULT_APPEND,
    memory: str = "1G",
    cpus: int = 2,
    rwdirs: Sequence[Path] = (),
    qemu_opts: Sequence[str] = (),
    args: Sequence[str] = (),
    on_stdout: Callable[[bytes], None] | None = None,
    on_stderr: Callable[[bytes], None] | None = None,
) -> GuestRun:
    """Boot `kernel`, run the host file `script` in the guest as root, and power off.

    The guest sees the host's root read-only, so `script` (and anything it reads, such as
    rules files) is used in place; results come back on stdout, or through `rwdirs`. The
    script runs with a minimal environment (no host variables): it must set its own PATH.
    Whatever happens, no QEMU is left behind when this returns or raises.

    Args:
        script: An executable file on the host (`#!/bin/sh` runs under dash).
        kernel: What to boot (`find_kernel()`).
        timeout: Seconds for the whole run, boot included (a boot takes 16-35 s here).
        append: Kernel command-line options.
        memory: Guest memory, QEMU syntax.
        cpus: Guest CPUs.
        rwdirs: Host directories the guest may write, at the same paths.
        qemu_opts: More QEMU options, one word each (e.g. a user-mode NIC with hostfwd).
        args: Arguments for the script (keep them short: see `_MAX_EXEC`).
        on_stdout: Called with each chunk of the guest's stdout as it arrives.
        on_stderr: The same for stderr.

    Returns:
        The run; on timeout `timed_out` is True and the output is what arrived until then.

    Raises:
        VMError: vng is not installed.
        ValueError: The script, its command line or a directory cannot be used.
    """
    script = Path(os.path.abspath(script))
    command = _exec_command(script, args, kernel)
    vng = _require_vng()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kmod-audit-vm-") as tmp:
        pidfile = Path(tmp) / "qemu.pid"
        argv = _vng_argv(
            vng,
            kernel,
            append=append,
            memory=memory,
            cpus=cpus,
            rwdirs=rwdirs,
            pidfile=pidfile,
            qemu_opts=qemu_opts,
        )
        argv += ["--exec", command]
        log.info("booting %s: %s", kernel.version, shlex.join(argv))
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,  # a closed stdin crashes vng; a tty is not needed
            stdout=subprocess.PIPE,  # never a file: QEMU would truncate it
            stderr=subprocess.PIPE,
            env=_vng_env(vng),
            start_new_session=True,  # one process group to kill
        )
        capture = _Capture(proc, on_stdout, on_stderr)
        timed_out = False
        try:
            if not capture.pump(started + timeout):
                timed_out = True
                log.warning("guest timed out after %.0f s; killing it", timeout)
                _kill_vm(proc, pidfile, capture)
                capture.pump(time.monotonic() + _DRAIN)
        finally:
            if proc.poll() is None:  # interrupted, or still not dead after the drain
                _kill_vm(proc, pidfile, capture)
                proc.wait()
            # Leftovers of the group (nothing, normally) and a QEMU that outlived it.
            _signal_group(proc.pid, signal.SIGKILL)
            _kill_qemu(pidfile)
            capture.close()
    elapsed = time.monotonic() - started
    log.info("guest finished: status %s in %.1f s", proc.returncode, elapsed)
    return GuestRun(
        status=proc.returncode,
        stdout=capture.stdout.decode("utf-8", "replace"),
        stderr=capture.stderr.decode("utf-8", "replace"),
        elapsed=elapsed,
        timed_out=timed_out,
    )


def _await_prompt(child: pexpect.spawn[str], timeout: float, console_log: Path) -> None:
    try:
        child.expect(r"[#$] ", timeout=timeout)
    except (pexpect.TIMEOUT, pexpect.EOF) as exc:
        what = f"gave {timeout:.0f} s" if isinstance(exc, pexpect.TIMEOUT) else "ended (EOF)"
        seen = child.before if isinstance(child.before, str) else ""
        try:
            kernel_log = console_log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            kernel_log = ""
        tail, kernel_log = _tail(seen, 30), _tail(kernel_log, 30)
        msg = (
            f"the guest's console {what} without a shell prompt (pattern '[#$] ').\n"
            f"The console printed:\n{tail or '(nothing)'}\n"
            f"vng's stderr (errors, kernel console):\n{kernel_log or '(nothing)'}\n"
            "Check the prerequisites with `python3 tools/vmrun.py check`."
        )
        raise GuestBootError(msg, tail=tail, console_log=kernel_log) from None


def _close_console(child: pexpect.spawn[str], pidfile: Path, exit_timeout: float) -> None:
    # `exit` ends the guest's login shell; the guest then powers off and QEMU exits.
    with contextlib.suppress(pexpect.ExceptionPexpect, OSError):
        if child.isalive():
            child.sendline("exit")
            child.expect(pexpect.EOF, timeout=exit_timeout)
    # Still there (a command is running, the shell is wedged): QEMU's mux escape Ctrl-A x
    # quits QEMU at once. Only here: a stray Ctrl-A elsewhere would drive the monitor.
    with contextlib.suppress(pexpect.ExceptionPexpect, OSError):
        if child.isalive():
            log.warning("guest did not power off after `exit`; quitting QEMU (Ctrl-A x)")
            child.send("\x01x")
            child.expect(pexpect.EOF, timeout=5)
    qemu = _qemu_pid(pidfile)
    if qemu is not None:  # QEMU first, as in _kill_vm: virtme-run then reaps it
        with contextlib.suppress(ProcessLookupError, pexpect.ExceptionPexpect, OSError):
            os.kill(qemu, signal.SIGTERM)
            child.expect(pexpect.EOF, timeout=_KILL_GRACE)
    with contextlib.suppress(pexpect.ExceptionPexpect, OSError):
        child.close(force=True)
    if child.pid is not None:  # the pty child leads a session and process group
        _signal_group(child.pid, signal.SIGKILL)
    _kill_qemu(pidfile)


@contextlib.contextmanager
def console(
    kernel: Kernel,
    *,
    append: Sequence[str] = DEFAULT_APPEND,
    timeout: float = 300,
    memory: str = "1G",
    cpus: int = 2,
    rwdirs: Sequence[Path] = (),
    qemu_opts: Sequence[str] = (),
    exit_timeout: float = 30,
) -> Iterator[pexpect.spawn[str]]:
    """Boot `kernel` with an interactive root shell on its serial console.

    The spawn talks to the guest's bash through a pty, and is past its first prompt when
    yielded; its `timeout` is 60 s. The console is raw: CR CR LF line ends, echo on,
    bracketed-paste escapes, root's `.bashrc` and its PATH (where `python3` may be a slow
    pyenv shim); set a unique prompt, `stty -echo` and a plain PATH first. Never send a
    Ctrl-A (0x01): it is QEMU's monitor escape on this console. Leave the shell at a prompt:
    on exit this sends `exit`, waits for EOF (up to `exit_timeout`), then forces QEMU down.

    Args:
        kernel: What to boot (`find_kernel()`).
        append: Kernel command-line options.
        timeout: Seconds to wait for the first prompt (23-35 s here).
        memory: Guest memory, QEMU syntax.
        cpus: Guest CPUs.
        rwdirs: Host directories the guest may write, at the same paths.
        qemu_opts: More QEMU options, one word each (e.g. a user-mode NIC with hostfwd).
        exit_timeout: Seconds to wait for the guest to power off after `exit`.

    Yields:
        The `pexpect.spawn` (str, utf-8, undecodable bytes replaced).

    Raises:
        VMError: vng is not installed.
        GuestBootError: No prompt within `timeout` (carries the console tails).
    """
    vng = _require_vng()
    with tempfile.TemporaryDirectory(prefix="kmod-audit-console-") as tmp:
        pidfile = Path(tmp) / "qemu.pid"
        # The kernel console (hvc0) is written to vng's stderr: keep it off the pty.
        console_log = Path(tmp) / "console.log"
        argv = _vng_argv(
            vng,
            kernel,
            append=append,
            memory=memory,
            cpus=cpus,
            rwdirs=rwdirs,
            pidfile=pidfile,
            qemu_opts=qemu_opts,
        )
        command = f"exec {shlex.join(argv)} 2>{shlex.quote(str(console_log))}"
        log.info("booting %s with a console: %s", kernel.version, command)
        child: pexpect.spawn[str] = pexpect.spawn(
            "/bin/bash",
            ["-c", command],
            env=_vng_env(vng),
            encoding="utf-8",
            codec_errors="replace",
            timeout=60,
            dimensions=(200, 1000),  # no wrapping of long command lines
        )
        try:
            _await_prompt(child, timeout, console_log)
            yield child
        finally:
            _close_console(child, pidfile, exit_timeout)


def _write_to(stream: BinaryIO) -> Callable[[bytes], None]:
    def write(chunk: bytes) -> None:
        stream.write(chunk)
        stream.flush()

    return write


def _check() -> int:
    missing = missing_prerequisites()
    for item in missing:
        print(f"missing: {item}")
    if missing:
        return 1
    kernel = find_kernel()
    print(f"ok: kernel {kernel.version if kernel else '?'}, vng {find_vng()}")
    return 0


def _run(options: argparse.Namespace) -> int:
    try:
        kernel = kernel_from_spec(options.kernel, options.arch)
    except VMError as exc:
        print(f"vmrun: {exc}", file=sys.stderr)
        return 2
    try:
        run = run_guest(
            Path(options.script),
            kernel=kernel,
            timeout=options.timeout,
            append=options.append or DEFAULT_APPEND,
            memory=options.memory,
            cpus=options.cpus,
            rwdirs=[Path(directory) for directory in options.rwdir],
            args=options.args,
            on_stdout=_write_to(sys.stdout.buffer),
            on_stderr=_write_to(sys.stderr.buffer),
        )
    except (VMError, ValueError) as exc:
        print(f"vmrun: {exc}", file=sys.stderr)
        return 2
    if run.timed_out:  # already logged
        return 124
    print(f"vmrun: guest status {run.status} after {run.elapsed:.1f} s", file=sys.stderr)
    return run.status if run.status >= 0 else 128 - run.status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (`check`, `run`).

    Args:
        argv: The arguments (default: `sys.argv[1:]`).

    Returns:
        The exit status: for `run` the guest's, 124 on timeout, 2 when it cannot start.
    """
    parser = argparse.ArgumentParser(
        prog="tools/vmrun.py", description=(__doc__ or "").split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="list missing prerequisites (exit 1 if any)")
    run = commands.add_parser(
        "run",
        help="boot, run SCRIPT in the guest, stream its output, exit with its status",
        description="Script arguments that start with '-' go after '--'.",
    )
    run.add_argument("script", help="an executable file on the host (the guest sees it)")
    run.add_argument("args", nargs="*", help="arguments for the script")
    run.add_argument("--timeout", type=float, default=300, help="seconds (default 300)")
    run.add_argument(
        "--append",
        action="append",
        default=[],
        help=f"kernel option (repeatable; default {' '.join(DEFAULT_APPEND)})",
    )
    run.add_argument("--memory", default="1G", help="guest memory (default 1G)")
    run.add_argument("--cpus", type=int, default=2, help="guest CPUs (default 2)")
    run.add_argument("--rwdir", action="append", default=[], help="host dir the guest may write")
    run.add_argument(
        "--kernel",
        help="a kernel leg (amd64-6.1 [default], amd64-6.12, arm64-6.1, arm64-6.12), a Debian "
        "linux-image-* package name, a .deb or an unpacked kernel directory (tools/matrix.py)",
    )
    run.add_argument(
        "--arch", choices=["amd64", "arm64"], help="the kernel's architecture (default: its leg's)"
    )
    # Everything after `--` is for the script (argparse's REMAINDER would swallow options).
    words = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in words:
        split = words.index("--")
        words, extra = words[:split], words[split + 1 :]
    options = parser.parse_args(words)
    if extra and options.command != "run":
        parser.error("only `run` takes script arguments after --")
    if options.command == "run":
        options.args = [*options.args, *extra]
    logging.basicConfig(level=logging.WARNING, format="vmrun: %(message)s")
    if options.command == "check":
        return _check()
    return _run(options)


if __name__ == "__main__":
    sys.exit(main())
