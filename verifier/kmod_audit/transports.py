"""Transports: run a command on the system under test and get `(status, output)` back.

Every transport fits one `Target` protocol shaped like the NixOS test driver's
`Machine.execute`, so the verifier does not care how it reaches the kernel:

- `LocalHost`: this machine, through `subprocess` with an argv list (never a shell);
- `DriverMachine`: a NixOS test-driver machine, duck-typed (no import of `test_driver`);
- `SerialConsole`: a POSIX shell on a pty or serial console (`vng --run`, QEMU
  `-serial stdio`, a socket to `hvc0`) driven with pexpect, after pexpect's replwrap/pxssh
  and the test driver: a unique prompt, echo off, and begin/end markers carrying the exit
  status around every command;
- `SshTarget`: the system `ssh` client in batch mode.

`execute(command, timeout)` takes an argv list. Transports that need a shell line build it
with `shlex.join`, never by concatenating user text. It returns the exit status and the
combined stdout+stderr decoded as UTF-8 with `errors="replace"`. It raises `TransportError`
(or its subclasses `CommandFailed`, `ConsoleTimeout`) only when the system could not be
asked (no connection, console gone, deadline passed), never for a non-zero exit status.
A command killed by signal N reports `128 + N`, as a shell does.

Login uid (auid), which the audit rules filter on (DESIGN.md section 7): commands run by the
NixOS test driver (its backdoor service), by systemd units, and by `LocalHost` started from
either have the login uid unset (auid=4294967295). `sudo` and `su` alone do not set it. A
real login does: sshd with `UsePAM yes` runs `pam_loginuid`, and `sudo` keeps the value, so
`SshTarget(..., sudo=True)` runs commands as root with the login user's auid.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import secrets
import select
import shlex
import signal
import subprocess
import sys
import time
import traceback
import types
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Literal, NoReturn, Protocol, Self, TypeAlias

import attrs
import pexpect
import pexpect.fdpexpect

from ._verbose import nested
from .errors import (
    CommandFailed,
    ConfigurationError,
    ConsoleTimeout,
    TransportError,
    seconds,
)

__all__ = [
    "DEFAULT_INITIAL_PROMPT",
    "DEFAULT_TIMEOUT",
    "ClosableHost",
    "ConsoleChild",
    "DriverMachine",
    "DriverMachineLike",
    "Host",
    "LocalHost",
    "SerialConsole",
    "SshTarget",
    "target_from_spec",
]

logger = logging.getLogger("kmod_audit.transports")

DEFAULT_TIMEOUT: Final = 120.0
"""Seconds `execute` waits for a command unless told otherwise."""

DEFAULT_INITIAL_PROMPT: Final = r"[#$%>][ \t]*\Z"
"""Regex for "some shell prompt is the last thing on the console" (root `#`, user `$`, ...)."""

_TAIL: Final = 2000
# N_TTY's canonical line buffer holds 4095 bytes; longer lines are cut without an error.
_MAX_CONSOLE_LINE: Final = 4000
# A terminal acts on these bytes (Ctrl-C, Ctrl-D, erase, XON/XOFF, QEMU's Ctrl-A mux escape,
# TAB completion) instead of passing them to the shell. Newline is fine: inside shlex's
# single quotes the shell simply reads a continuation line.
_TTY_UNSAFE: Final = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
_CTRL_C: Final = "\x03"


class Host(Protocol):
    """Something that runs a command and returns its exit status and output.

    The shape of the NixOS test driver's `Machine.execute`, with an argv list instead of a
    shell string. A plain `name` attribute satisfies the `name` property.
    """

    @property
    def name(self) -> str:
        """A short name of the target, for messages."""
        ...

    def execute(self, command: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str]:
        """Run `command` (an argv list) and return its exit status and combined output.

        Args:
            command: The program and its arguments; never a shell string.
            timeout: Seconds to wait for the command to finish.

        Returns:
            The exit status and stdout+stderr, decoded with `errors="replace"`.

        Raises:
            TransportError: The system could not be asked (also `ConsoleTimeout`,
                `CommandFailed`); a non-zero exit status is returned, not raised.
        """
        ...


class ClosableHost(Host, Protocol):
    """A `Target` that may hold a connection or a process; close it when done.

    All transports in this module are closable context managers, so callers can write
    `with target_from_spec(spec) as target: ...`.
    """

    def close(self) -> None:
        """Release the connection or process behind the target (idempotent)."""
        ...

    def __enter__(self) -> Self:
        """Make the target ready and return it."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        """Close the target."""
        ...


class _ClosingMixin:
    """`with` support for transports whose `close()` has nothing to release."""

    def close(self) -> None:
        """Nothing to release; present so every transport can be closed the same way."""

    def __enter__(self) -> Self:
        """Return the target itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        """Close the target."""
        self.close()


def _argv(command: Sequence[str]) -> tuple[str, ...]:
    """Check that `command` is a non-empty argv list of strings and return it as a tuple."""
    if isinstance(command, str):
        msg = (
            f"command must be an argv list such as {command.split()!r}, not the string "
            f"{command!r}; transports never pass strings through a shell"
        )
        raise TypeError(msg)
    argv = tuple(command)
    if not argv:
        msg = "command is empty; pass the program and its arguments, e.g. ['true']"
        raise ValueError(msg)
    for arg in argv:
        if "\0" in arg:
            msg = f"argument {arg!r} of {shlex.join(argv)!r} holds a NUL byte, which no exec allows"
            raise ValueError(msg)
    return argv


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    """Convert a list of strings to a tuple; refuse one string (it would become letters)."""
    if isinstance(values, str):
        msg = f"expected a list of strings, not the string {values!r}; e.g. {values.split()!r}"
        raise TypeError(msg)
    return tuple(values)


def _shell_status(returncode: int) -> int:
    """Map subprocess's `-N` (killed by signal N) to a shell's `128 + N`."""
    return 128 - returncode if returncode < 0 else returncode


def _tail(text: str, limit: int = _TAIL) -> str:
    """The last `limit` characters of `text`, marked when cut."""
    return text if len(text) <= limit else "..." + text[-limit:]


def _as_bytes(data: object) -> bytes:
    """`TimeoutExpired.output` is bytes or None; make it bytes."""
    return data if isinstance(data, bytes) else b""


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # The group may be gone already, or hold a setuid program we may not signal; either way
    # there is nothing more to do from here and the caller reports what it saw.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> tuple[bytes, bytes, str]:
    """SIGTERM the process group of `proc`, then SIGKILL; return the output and what happened."""
    out, err = b"", b""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _signal_group(proc.pid, sig)
        try:
            out, err = proc.communicate(timeout=grace)
        except subprocess.TimeoutExpired as exc:
            # communicate() keeps what it read; the exception carries it so far.
            out, err = _as_bytes(exc.output), _as_bytes(exc.stderr)
            continue
        return out, err or b"", f"its process group was stopped with {sig.name}"
    # A process that left the group (setsid) still holds the pipes: stop waiting for it.
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    how = (
        "its process group got SIGKILL, but a process outside the group (one that called "
        "setsid) still holds its output open and was left running"
    )
    return out, err, how


def _run(
    argv: tuple[str, ...], *, timeout: float, grace: float, merge_stderr: bool, where: str
) -> tuple[int, bytes, bytes]:
    """Run `argv` in a new session with a deadline; return (status, stdout, stderr).

    On timeout the whole process group is stopped (SIGTERM, then SIGKILL after `grace`) and
    `ConsoleTimeout` is raised with the output so far.
    """
    display = shlex.join(argv)
    try:
        # stdin is /dev/null so nothing waits for input; stdout/stderr are pipes, never an
        # inherited file (QEMU-like children truncate or take over inherited files).
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        msg = (
            f"could not start `{display}` on {where}: {exc.strerror or exc}; "
            f"check that {argv[0]!r} is installed and on PATH"
        )
        raise TransportError(msg) from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        exited = proc.poll()
        out, err, how = _stop_group(proc, grace)
        seen = _decode(out + err)
        if exited is None:
            what = f"`{display}` did not finish within {seconds(timeout)} s on {where}"
            todo = "give it more time (timeout=...) or find out why it hangs"
        else:
            what = (
                f"`{display}` exited with status {_shell_status(exited)} on {where}, but "
                f"something it started kept its output open for {seconds(timeout)} s"
            )
            todo = "redirect the output of background processes (`>/dev/null 2>&1 &`)"
        msg = f"{what}; {how}. To fix: {todo}."
        raise ConsoleTimeout(
            msg,
            pattern=f"exit of `{display}` and the end of its output",
            timeout=timeout,
            buffer=_tail(seen),
        ) from None
    except BaseException:
        # Interrupted (Ctrl-C in the caller): do not leave the command running, and pass on
        # what it said as it stopped (a probe says which module, if any, it left loaded).
        out, err, _ = _stop_group(proc, grace)
        said = _decode(out + err).strip()
        if said:
            logger.warning("%s: `%s` was stopped; it said: %s", where, display, _tail(said))
        raise
    return _shell_status(proc.returncode), out, err or b""


def _fork_run(
    function: Callable[[], int], *, display: str, timeout: float, grace: float, where: str
) -> tuple[int, bytes]:
    """Run `function` in a forked child in a new session; return (status, stdout+stderr).

    The child is a process of its own, as `_run`'s would be (its own session and process
    group, stdin from /dev/null, stdout and stderr on one pipe), but it starts without a new
    interpreter: it runs `function` in the copy of this one and exits with what it returns.
    On timeout, or when the caller is interrupted, the whole group is stopped (SIGTERM, then
    SIGKILL after `grace`) and `ConsoleTimeout` is raised with the output so far.
    """
    for stream in (sys.stdout, sys.stderr):
        # Whatever this process has buffered would otherwise be written twice.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child (coverage does not follow forks)
        _fork_child(function, read_fd, write_fd)
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    try:
        try:
            out, complete = _read_until(read_fd, deadline)
            status = _reap(pid, max(deadline - time.monotonic(), 0.0)) if complete else None
        except BaseException:
            # Interrupted (Ctrl-C in the caller): do not leave the child running, and pass
            # on what it said as it stopped (a probe says which module, if any, it left
            # loaded).
            if _reap(pid, 0.0) is None:
                _stop_forked(pid, grace)
            said = _decode(_read_until(read_fd, time.monotonic() + grace)[0]).strip()
            if said:
                logger.warning("%s: `%s` was stopped; it said: %s", where, display, _tail(said))
            raise
        if status is not None:
            return status, out
        exited = _reap(pid, 0.0)
        how = _stop_forked(pid, grace)
        # What the child says as it stops (its cleanup) belongs to the error too.
        out += _read_until(read_fd, time.monotonic() + grace)[0]
    finally:
        os.close(read_fd)
    if exited is None:
        what = f"`{display}` did not finish within {seconds(timeout)} s on {where}"
        todo = "give it more time (--timeout) or find out why it hangs"
    else:
        what = (
            f"`{display}` exited with status {exited} on {where}, but something it started "
            f"kept its output open for {seconds(timeout)} s"
        )
        todo = "find the process that kept the output open"
    msg = f"{what}; {how}. To fix: {todo}."
    raise ConsoleTimeout(
        msg,
        pattern=f"exit of `{display}` and the end of its output",
        timeout=timeout,
        buffer=_tail(_decode(out)),
    )


def _read_until(fd: int, deadline: float) -> tuple[bytes, bool]:
    """Read `fd` to its end or until `deadline`; return what was read and whether it ended."""
    chunks: list[bytes] = []
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        data = os.read(fd, 65536)
        if not data:
            return b"".join(chunks), True
        chunks.append(data)
    return b"".join(chunks), False


def _fork_child(function: Callable[[], int], read_fd: int, write_fd: int) -> NoReturn:
    """The forked child of `_fork_run`: run `function` with fresh stdio, then exit."""
    code = 70  # EX_SOFTWARE: `function` raised
    try:
        os.setsid()
        os.close(read_fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(null)
        os.close(write_fd)
        # New streams on the new descriptors: the caller's may be objects of a test harness.
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        code = function()
    except BaseException:  # noqa: BLE001 - the child must never return into the caller's code
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _reap(pid: int, wait: float) -> int | None:
    """Wait up to `wait` seconds for the child `pid`; its shell-style status, or None."""
    deadline = time.monotonic() + wait
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if done:
            return _shell_status(os.waitstatus_to_exitcode(status))
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def _stop_forked(pid: int, grace: float) -> str:
    """SIGTERM the process group of the forked child `pid`, then SIGKILL; say what happened."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _signal_group(pid, sig)
        if _reap(pid, grace) is not None:
            return f"its process group was stopped with {sig.name}"
    return "its process group got SIGKILL but the process did not exit"


@attrs.define
class LocalHost(_ClosingMixin):
    """This machine: commands run as child processes, without a shell.

    Each command runs in a new session (its own process group) with stdin from /dev/null
    and stdout+stderr merged into one pipe, so their order is kept.

    Attributes:
        name: Name used in messages.
        kill_grace: Seconds between SIGTERM and SIGKILL when a command times out.
    """

    name: str = "local"
    kill_grace: float = 2.0

    def execute(self, command: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str]:
        """Run `command` here and return its exit status and combined output.

        Args:
            command: The program and its arguments.
            timeout: Seconds until the command's whole process group is stopped.

        Returns:
            The exit status (`128 + N` when killed by signal N) and stdout+stderr.

        Raises:
            TransportError: The program could not be started.
            ConsoleTimeout: The command (or a child holding its output) outlived `timeout`.
        """
        argv = _argv(command)
        logger.debug("%s: running `%s`", self.name, shlex.join(argv))
        status, out, _ = _run(
            argv, timeout=timeout, grace=self.kill_grace, merge_stderr=True, where=self.name
        )
        return status, _decode(out)

    def call(
        self, function: Callable[[], int], *, display: str, timeout: float = DEFAULT_TIMEOUT
    ) -> tuple[int, str]:
        """Run `function` in a forked child process and return its exit status and output.

        Like `execute` (a new session, stdin from /dev/null, stdout+stderr merged, the group
        stopped on timeout), without starting a new interpreter.

        Args:
            function: What the child runs; it prints its output and returns its exit status.
            display: The equivalent command line, for messages.
            timeout: Seconds until the child's whole process group is stopped.

        Returns:
            The exit status (`128 + N` when killed by signal N) and stdout+stderr.

        Raises:
            ConsoleTimeout: The child (or a process holding its output) outlived `timeout`.
        """
        logger.debug("%s: running `%s` in a forked child", self.name, display)
        status, out = _fork_run(
            function, display=display, timeout=timeout, grace=self.kill_grace, where=self.name
        )
        return status, _decode(out)


# --- the status wrapper shared by DriverMachine and SshTarget ---------------------------


def _status_script(argv: Sequence[str], nonce: str) -> str:
    """A POSIX sh script running `argv` and printing its status after a unique marker.

    The marker follows a newline, so it starts a line even when the output does not end
    with one; `_split_status` removes that newline again. `|| rc=$?` keeps `set -e`
    (the test driver runs commands under `set -euo pipefail`) from ending the script early.
    """
    return (
        f"__kma_rc=0; {shlex.join(argv)} </dev/null 2>&1 || __kma_rc=$?; "
        f"printf '\\n__KMA_RC_{nonce}=%s__\\n' \"$__kma_rc\""
    )


def _split_status(text: str, nonce: str) -> tuple[int, str] | None:
    """Split the output of `_status_script` into (status, output), or None without marker."""
    head, sep, tail = text.rpartition(f"\n__KMA_RC_{nonce}=")
    match = re.fullmatch(r"(\d+)__\n?", tail)
    if not sep or match is None:
        return None
    return int(match.group(1)), head


class DriverMachineLike(Protocol):
    """The part of a NixOS test-driver `Machine` that `DriverMachine` uses.

    The real method is `execute(command, check_return=True, check_output=True,
    timeout=900)`. The protocol's options are keyword-only (the adapter passes them by
    name), so the real signature, with `check_output` in between, fits it.
    """

    @property
    def name(self) -> str:
        """The machine's name in the test script."""
        ...

    def execute(
        self, command: str, *, check_return: bool = True, timeout: int | None = 900
    ) -> tuple[int, str]:
        """Run a shell command line in the VM and return (status, stdout)."""
        ...


@attrs.define
class DriverMachine(_ClosingMixin):
    """A NixOS test-driver machine, seen as a `Target`.

    The driver runs `timeout T bash -c 'set -euo pipefail; COMMAND' | base64` through its
    backdoor shell and returns only stdout; stderr goes to the VM console. This adapter
    therefore sends `shlex.join(argv)` with stdin from /dev/null and `2>&1`, followed by a
    marker that carries the exit status, and keeps `check_return=True`: with `False` the
    driver returns status -1 and decodes the output strictly. Commands run this way have
    the login uid unset (auid=4294967295), like any systemd service.

    The driver's own reads have no deadline: if the VM hangs, `execute` hangs with it
    (the driver's `globalTimeout` ends the test).

    Attributes:
        machine: The driver's machine object (e.g. `machine` in a testScript).
    """

    machine: DriverMachineLike

    @property
    def name(self) -> str:
        """The driver machine's name."""
        return self.machine.name

    def execute(self, command: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str]:
        """Run `command` in the VM and return its exit status and combined output.

        Args:
            command: The program and its arguments.
            timeout: Seconds, rounded up to whole seconds for the driver's `timeout`.

        Returns:
            The exit status and stdout+stderr.

        Raises:
            ConsoleTimeout: The driver's `timeout` stopped the command.
            TransportError: The driver could not talk to the VM (OSError), or the status
                was lost. The driver's own errors (e.g. its `MachineError`) pass through.
        """
        argv = _argv(command)
        display = shlex.join(argv)
        nonce = secrets.token_hex(8)
        seconds = max(1, math.ceil(timeout))
        logger.debug("%s: running `%s` through the test driver", self.name, display)
        try:
            driver_status, text = self.machine.execute(
                _status_script(argv, nonce), check_return=True, timeout=seconds
            )
        except OSError as exc:
            msg = (
                f"the test driver could not run `{display}` on {self.name}: {exc}; "
                "check that the VM is up (machine.start(), wait_for_unit)"
            )
            raise TransportError(msg) from exc
        result = _split_status(text, nonce)
        if result is not None:
            return result
        if driver_status == 124:
            msg = (
                f"`{display}` did not finish within {seconds} s on {self.name}; the driver's "
                "`timeout` stopped it. Give it more time or find out why it hangs."
            )
            raise ConsoleTimeout(
                msg,
                pattern=f"exit status marker __KMA_RC_{nonce}=N__",
                timeout=float(seconds),
                buffer=_tail(text),
            )
        msg = (
            f"`{display}` on {self.name} ended without reporting its exit status (the driver "
            f"returned status {driver_status}); the shell running it was probably killed. "
            f"Output so far: {_tail(text)!r}"
        )
        raise TransportError(msg)


# --- SSH ------------------------------------------------------------------------------


def _check_ssh_word(kind: str, value: str) -> None:
    if not value or value.startswith("-") or any(c.isspace() or c in "@'\"" for c in value):
        msg = (
            f"ssh {kind} {value!r} is not usable: it must be non-empty, not start with '-', "
            "and hold no spaces, quotes or '@'"
        )
        raise ConfigurationError(msg)


def _validate_host(_: object, __: attrs.Attribute[str], value: str) -> None:
    _check_ssh_word("host", value)


def _validate_user(_: object, __: attrs.Attribute[str], value: str) -> None:
    _check_ssh_word("user", value)


def _validate_port(_: object, __: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and not 1 <= value <= 65535:
        msg = f"ssh port {value} is out of range; use 1-65535"
        raise ConfigurationError(msg)


def _validate_options(
    _: object, __: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    for option in value:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*[ =]\S.*", option):
            msg = (
                f"ssh option {option!r} is not of the form Key=Value "
                "(as after `ssh -o`, e.g. 'StrictHostKeyChecking=accept-new')"
            )
            raise ConfigurationError(msg)


def _ssh_name(self: SshTarget) -> str:
    port = f":{self.port}" if self.port is not None else ""
    host = f"[{self.host}]" if ":" in self.host else self.host
    return f"ssh://{self.user}@{host}{port}"


@attrs.define(kw_only=True)
class SshTarget(_ClosingMixin):
    """A remote system reached with the system `ssh` client, one connection per command.

    The client runs as `ssh -o BatchMode=yes -o ConnectTimeout=N -T [-p PORT] [-i KEY
    -o IdentitiesOnly=yes] [-o EXTRA ...] -- USER@HOST sh -c SCRIPT`. SCRIPT runs the
    command with `2>&1` and prints its exit status after a unique marker, so a remote
    status of 255 is told apart from ssh's own 255 (connection or authentication failed).
    A login through sshd with `UsePAM yes` sets the login uid (pam_loginuid); with
    `sudo=True` the command runs under `sudo -n` and keeps that auid.

    Attributes:
        host: Host name or address.
        user: Login user.
        port: TCP port; None uses ssh's default (or ~/.ssh/config).
        identity: Private key file (`-i`), used alone (`IdentitiesOnly=yes`).
        options: Extra `-o` options as `Key=Value` strings.
        connect_timeout: Seconds ssh waits for the TCP connection.
        sudo: Run the command through `sudo -n --` (passwordless sudo needed).
        ssh: The ssh client program.
        kill_grace: Seconds between SIGTERM and SIGKILL when the client times out.
        name: Name used in messages; defaults to `ssh://USER@HOST[:PORT]`.
    """

    host: str = attrs.field(validator=_validate_host)
    user: str = attrs.field(validator=_validate_user)
    port: int | None = attrs.field(default=None, validator=_validate_port)
    identity: str | None = None
    options: tuple[str, ...] = attrs.field(
        default=(), converter=_strings, validator=_validate_options
    )
    connect_timeout: float = 10.0
    sudo: bool = False
    ssh: str = "ssh"
    kill_grace: float = 2.0
    name: str = attrs.field(default=attrs.Factory(_ssh_name, takes_self=True))

    def ssh_argv(self, remote: str) -> list[str]:
        """The ssh client's argv that runs the shell line `remote` on the target.

        Args:
            remote: The command line for the remote login shell.

        Returns:
            The argv for the local `ssh` client.
        """
        argv = [
            self.ssh,
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={max(1, math.ceil(self.connect_timeout))}",
            "-T",
        ]
        if self.port is not None:
            argv += ["-p", str(self.port)]
        if self.identity is not None:
            argv += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        for option in self.options:
            argv += ["-o", option]
        argv += ["--", f"{self.user}@{self.host}", remote]
        return argv

    def execute(self, command: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str]:
        """Run `command` on the remote system and return its exit status and combined output.

        Args:
            command: The program and its arguments.
            timeout: Seconds until the local ssh client is stopped. The remote command may
                keep running after that (there is no tty to hang up).

        Returns:
            The remote exit status and stdout+stderr.

        Raises:
            CommandFailed: ssh could not connect, authenticate, or run the command.
            ConsoleTimeout: No answer within `timeout`.
            TransportError: ssh could not be started or the status marker was lost.
        """
        argv = _argv(command)
        if self.sudo:
            argv = ("sudo", "-n", "--", *argv)
        display = shlex.join(argv)
        nonce = secrets.token_hex(8)
        # The remote login shell may not be POSIX (fish, csh): hand the script to sh.
        ssh_argv = self.ssh_argv(shlex.join(["sh", "-c", _status_script(argv, nonce)]))
        logger.debug("%s: running `%s`", self.name, display)
        status, out, err = _run(
            tuple(ssh_argv),
            timeout=timeout,
            grace=self.kill_grace,
            merge_stderr=False,
            where=f"{self.name} (via ssh)",
        )
        text = _decode(out)
        result = _split_status(text, nonce)
        if result is not None:
            return result
        said = _decode(err).strip() or "no error text"
        if status == 255:
            msg = (
                f"ssh could not run `{display}` on {self.name}: {_tail(said, 500)}. Check that "
                "the host is reachable, sshd listens on that port, the host key is known "
                "(or pass options such as 'StrictHostKeyChecking=accept-new'), and the key "
                "is accepted; BatchMode=yes means ssh never asks for a password."
            )
        else:
            msg = (
                f"`{display}` on {self.name} ended without reporting its exit status (ssh "
                f"exited with {status}); the remote shell was probably killed. ssh said: "
                f"{_tail(said, 500)}"
            )
        raise CommandFailed(msg, command=shlex.join(ssh_argv), status=status, output=text + said)


# --- serial console -------------------------------------------------------------------

ConsoleChild: TypeAlias = "pexpect.spawn[str] | pexpect.fdpexpect.fdspawn[str]"
"""A pexpect session in text mode: a spawned program on a pty, or an open fd/socket."""


class _ConsoleLog:
    """A pexpect `logfile_read` that logs the console's output line by line at DEBUG."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._partial = ""

    def write(self, data: str) -> None:
        """Log every complete line of `data`; keep the rest for the next call."""
        lines = (self._partial + data).split("\n")
        self._partial = lines.pop()
        for line in lines:
            logger.debug("%s console: %s", self._name, line.rstrip("\r"))

    def flush(self) -> None:
        """Nothing is buffered beyond the current partial line."""


def _console_text(raw: str) -> str:
    r"""Turn the tty's `\r\n` (or a serial console's `\r\r\n`) back into `\n`."""
    return re.sub(r"\r+\n", "\n", raw)


def _validate_command(
    _: object, __: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    if value:
        _argv(value)


def _console_name(console: SerialConsole) -> str:
    return console.command[0] if console.command else "session"


def _spawn(console: SerialConsole) -> ConsoleChild:
    try:
        child = pexpect.spawn(
            console.command[0],
            list(console.command[1:]),
            timeout=None,
            # Read in chunks clearly smaller than the search window, so a marker that
            # straddles two reads is still seen while searches stay linear in the output.
            maxread=8192,
            searchwindowsize=32768,
            encoding="utf-8",
            codec_errors="replace",
            echo=False,
            dimensions=console.dimensions,
        )
    except pexpect.ExceptionPexpect as exc:
        msg = (
            f"could not start console {console.name} with `{shlex.join(console.command)}`: "
            f"{exc}; check that the program is installed and on PATH"
        )
        raise TransportError(msg) from exc
    # pexpect waits 50 ms before each send so that a slow program can turn echo off first;
    # the markers cannot be matched by an echo, so that wait buys nothing here.
    child.delaybeforesend = None
    return child


@attrs.define(kw_only=True)
class SerialConsole:
    r"""A POSIX shell on a console, driven with pexpect.

    Give either `command` (an argv to spawn on a new pty, e.g. `["vng", "--run"]` or
    `["bash", "--norc", "--noprofile", "-i"]`) or `child` (an existing pexpect session in
    text mode, e.g. `fdspawn` on a socket to the VM's serial port; the console then owns it).
    The console starts on first use or on `start()`/`with`:

    1. wait for any prompt (`initial_prompt`, skipped when None) within `startup_timeout`
       (or until `deadline`, when that comes first);
    2. send one setup line: `stty -echo`, bracketed paste off, `PS1` set to a unique
       prompt written with split quotes (so the echoed line cannot match it), `PS2`,
       `PS0` and `PROMPT_COMMAND` empty, optionally `PATH`, then a sync marker; resend it
       every few seconds (input typed during boot can be lost) until the marker shows up.

    Each `execute` then sends one line: a begin marker, the shlex-joined command with stdin
    from /dev/null and `2>&1`, and an end marker carrying `$?`. Markers are printed with
    `printf` from split words, so only the output (never an echo) matches them; text
    before the begin marker (kernel messages, echoes, stray prompts) is dropped. Kernel
    messages printed while the command runs stay in its output. `\r\n` and `\r\r\n`
    become `\n`. On a timeout the command gets Ctrl-C (0x03; 0x01, QEMU's mux escape, is
    never sent) and the console re-syncs; if that fails it is unusable until closed.

    Attributes:
        command: Program and arguments to spawn (empty when `child` is given).
        child: An existing pexpect session to drive instead.
        name: Name used in messages (`console NAME`); defaults to the program's name.
        startup_timeout: Seconds to wait for the first prompt and the setup to answer.
        initial_prompt: Regex for the first prompt, or None when the shell prints none
            (the test driver's backdoor shell prints none).
        path: A PATH to export in the shell, or None to keep the target's.
        interrupt_timeout: Seconds to wait for the shell after Ctrl-C.
        close_timeout: Seconds `close()` waits for the shell to exit after `exit`.
        dimensions: Rows and columns of a spawned pty (wide, so tools do not cut lines).
        deadline: A `time.monotonic()` time by which every wait of this console ends:
            start-up, commands, the recovery after a timeout, and `close()`. None leaves
            each wait to its own timeout. The CLI sets it from `verify --timeout`, so that
            one option bounds the whole run.
    """

    command: tuple[str, ...] = attrs.field(
        default=(), converter=_strings, validator=_validate_command
    )
    _child: ConsoleChild | None = attrs.field(default=None, alias="child")
    name: str = attrs.field(default=attrs.Factory(_console_name, takes_self=True))
    startup_timeout: float = 120.0
    initial_prompt: str | None = DEFAULT_INITIAL_PROMPT
    path: str | None = None
    interrupt_timeout: float = 10.0
    close_timeout: float = 10.0
    dimensions: tuple[int, int] = (50, 250)
    deadline: float | None = None
    _nonce: str = attrs.field(init=False, factory=lambda: secrets.token_hex(6))
    _seq: int = attrs.field(init=False, default=0)
    _state: Literal["new", "ready", "broken", "closed"] = attrs.field(init=False, default="new")
    _broken_because: str = attrs.field(init=False, default="")
    _owns_process: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        """Check that exactly one of `command` and `child` is given, `child` in text mode."""
        if bool(self.command) == (self._child is not None):
            msg = "give SerialConsole either command=[...] to spawn or child=<pexpect session>"
            raise ValueError(msg)
        if self._child is not None and self._child.encoding is None:
            msg = (
                "the pexpect session must be in text mode: create it with "
                "encoding='utf-8', codec_errors='replace'"
            )
            raise ValueError(msg)

    @property
    def prompt(self) -> str:
        """The unique prompt this console sets (`KMA_<nonce>> `)."""
        return f"KMA_{self._nonce}> "

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the console if needed, wait for a shell and set it up (idempotent).

        Raises:
            ConsoleTimeout: No prompt, or no answer to the setup, within `startup_timeout`
                (or before `deadline`).
            TransportError: The program could not be started, the console closed, or the
                console was closed or broken before.
        """
        if self._state == "ready":
            return
        if self._state != "new":
            self._raise_unusable("start it")
        what = f"`{shlex.join(self.command)}`" if self.command else "an existing session"
        with nested(f"starting console {self.name} ({what})"):
            if self._child is None:
                self._child = _spawn(self)
                self._owns_process = True
            child = self._child
            if child.logfile_read is None:
                child.logfile_read = _ConsoleLog(self.name)
            try:
                self._handshake(child, *self._within(self.startup_timeout))
            except BaseException:
                self._force_close(child)
                raise
            self._state = "ready"

    def close(self) -> None:
        """Leave the shell with `exit` and close the session; force it when needed.

        Waits up to `close_timeout` for the console to end (a VM powers off), then closes
        the pty, which hangs up the shell; a spawned process group is then killed, so no
        process is left behind. Calling it again does nothing.
        """
        child = self._child
        state = self._state
        self._state = "closed"
        if child is None or state == "closed":
            return
        with nested(f"closing console {self.name}"):
            if state == "ready":
                _, allowed = self._within(self.close_timeout)
                try:
                    child.send("exit\n")
                    child.expect(pexpect.EOF, timeout=allowed)
                except pexpect.TIMEOUT:
                    logger.warning(
                        "console %s did not end within %.3g s after `exit`; closing it by force",
                        self.name,
                        allowed,
                    )
                except OSError as exc:
                    logger.warning("console %s: sending `exit` failed: %s", self.name, exc)
            self._force_close(child)

    def __enter__(self) -> Self:
        """Start the console and return it."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        """Close the console."""
        self.close()

    # -- commands -----------------------------------------------------------------------

    def execute(self, command: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str]:
        """Run `command` in the console's shell and return its exit status and output.

        Args:
            command: The program and its arguments; printable text only (no TAB or other
                control characters, at most about 4000 bytes in all: a tty's line limit).
            timeout: Seconds to wait for the end marker and the prompt after it.

        Returns:
            The exit status and the output (stdout and stderr share the console).

        Raises:
            ConsoleTimeout: The command did not finish in time (it was sent Ctrl-C).
            TransportError: The console closed, or is unusable after an earlier failure.
            ConfigurationError: The command cannot be typed on a terminal.
        """
        argv = _argv(command)
        display = shlex.join(argv)
        self.start()
        child = self._child
        if child is None or self._state != "ready":
            self._raise_unusable(f"run `{display}`")
        self._seq += 1
        seq, nonce = self._seq, self._nonce
        begin = f"__KMA_BEGIN_{nonce}_{seq}__"
        end = re.compile(rf"__KMA_END_{nonce}_{seq}_(\d+)__")
        line = (
            f"printf '%s%s__\\n' __KMA_BEGIN_{nonce}_ {seq}; {display} </dev/null 2>&1; "
            f"printf '\\n%s%s_%s__\\n' __KMA_END_{nonce}_ {seq} \"$?\""
        )
        self._check_line(line, display)
        logger.debug("%s: running `%s`", self.name, display)
        deadline, allowed = self._within(timeout)
        waiting_for = begin
        try:
            child.send(line + "\n")
            self._expect(child, begin, deadline)
            waiting_for = end.pattern
            match = self._expect_re(child, end, deadline)
            raw = child.before or ""
            waiting_for = self.prompt
            self._expect(child, self.prompt, deadline)
        except pexpect.TIMEOUT:
            seen = self._seen(child)
            recovered = self._interrupt(child)
            msg = (
                f"`{display}` did not finish within {self._limit(timeout, allowed)} on "
                f"console {self.name}; {recovered}. Give it more time if it is just slow, or "
                "read the console tail below for what blocked it."
            )
            raise ConsoleTimeout(
                msg, pattern=waiting_for, timeout=round(allowed, 2), buffer=_tail(seen)
            ) from None
        except (pexpect.EOF, OSError) as exc:
            self._break(f"the console closed while running `{display}`")
            msg = (
                f"console {self.name} closed while running `{display}` (the shell exited or "
                f"the VM powered off); it showed: {_tail(self._seen(child))!r}. "
                "Open a new console."
            )
            raise TransportError(msg) from exc
        text = _console_text(raw)
        # Drop the rest of the begin marker's line and the newline the end printf adds.
        text = text.removeprefix("\n")
        text = text.removesuffix("\n")
        return int(match.group(1)), text

    # -- internals ----------------------------------------------------------------------

    def _within(self, seconds: float) -> tuple[float, float]:
        """The deadline `seconds` from now, cut at `self.deadline`, and the seconds it leaves."""
        now = time.monotonic()
        end = now + seconds if self.deadline is None else min(now + seconds, self.deadline)
        return end, max(0.0, end - now)

    @staticmethod
    def _limit(requested: float, allowed: float) -> str:
        """`N s` for messages, saying so when the overall deadline cut the wait short."""
        if allowed >= requested:
            return f"{requested:g} s"
        return f"{allowed:.3g} s (the time left before the overall deadline, e.g. verify --timeout)"

    def _handshake(self, child: ConsoleChild, deadline: float, allowed: float) -> None:
        limit = self._limit(self.startup_timeout, allowed)
        if self.initial_prompt is not None:
            try:
                self._expect(child, re.compile(self.initial_prompt), deadline)
            except pexpect.TIMEOUT:
                msg = (
                    f"console {self.name} showed no shell prompt within {limit}; check that "
                    f"`{shlex.join(self.command) or self.name}` starts an interactive shell "
                    "that prints a prompt ending in #, $, % or > on this console (e.g. "
                    "`vng --run` boots to a root shell; `sh -i` and `bash -i` print one), "
                    "and allow more time (verify --timeout) when it is only slow to boot"
                )
                raise ConsoleTimeout(
                    msg,
                    pattern=self.initial_prompt,
                    timeout=round(allowed, 2),
                    buffer=_tail(self._seen(child)),
                ) from None
            except pexpect.EOF:
                self._raise_closed_early(child)
        setup = [
            "stty -echo 2>/dev/null",
            "bind 'set enable-bracketed-paste off' 2>/dev/null",
            # Split quotes: the echo of this line shows `KMA_x''> `, never the prompt itself.
            f"PS1='KMA_{self._nonce}''> '",
            "PS2=''",
            "PS0=''",
            "PROMPT_COMMAND=''",
        ]
        if self.path is not None:
            setup.append(f"PATH={shlex.quote(self.path)}; export PATH")
        try:
            self._sync(child, deadline, setup=setup, retry_every=3.0)
        except pexpect.TIMEOUT:
            msg = (
                f"the shell on console {self.name} did not answer the setup commands within "
                f"{limit}; is a POSIX shell (sh, bash, dash, busybox ash) waiting at a "
                "prompt there?"
            )
            raise ConsoleTimeout(
                msg,
                pattern=rf"__KMA_SYNC_{self._nonce}_\d+__ then {self.prompt!r}",
                timeout=round(allowed, 2),
                buffer=_tail(self._seen(child)),
            ) from None
        except pexpect.EOF:
            self._raise_closed_early(child)

    def _sync(
        self, child: ConsoleChild, deadline: float, *, setup: list[str], retry_every: float
    ) -> None:
        """Send `setup` and a sync marker until the marker and then the prompt show up.

        Any sync marker of this console counts: a late answer to an earlier attempt is as
        good, and what the later attempts print is dropped by the next begin marker.
        """
        marker = re.compile(rf"__KMA_SYNC_{self._nonce}_\d+__")
        while True:
            self._seq += 1
            child.send(
                "; ".join([*setup, f"printf '%s%s__\\n' __KMA_SYNC_{self._nonce}_ {self._seq}"])
                + "\n"
            )
            attempt_deadline = min(deadline, time.monotonic() + retry_every)
            try:
                self._expect(child, marker, attempt_deadline)
                break
            except pexpect.TIMEOUT:
                if time.monotonic() >= deadline:
                    raise
        self._expect(child, self.prompt, deadline)

    def _interrupt(self, child: ConsoleChild) -> str:
        """Send Ctrl-C and re-sync; say whether the console is usable again."""
        deadline, allowed = self._within(self.interrupt_timeout)
        try:
            child.send(_CTRL_C)
            self._sync(child, deadline, setup=[], retry_every=2.0)
        except (pexpect.TIMEOUT, pexpect.EOF, OSError):
            self._break("a command timed out and Ctrl-C did not bring the shell back")
            return (
                "Ctrl-C did not bring the shell back within "
                f"{self._limit(self.interrupt_timeout, allowed)}, so the console is unusable: "
                "close() it and open a new one"
            )
        return "it was interrupted with Ctrl-C and the console is usable again"

    def _expect(self, child: ConsoleChild, pattern: str | re.Pattern[str], deadline: float) -> None:
        remaining = max(0.0, deadline - time.monotonic())
        window = max(32768, 4 * child.maxread)
        if isinstance(pattern, str):
            child.expect_exact(pattern, timeout=remaining, searchwindowsize=window)
        else:
            child.expect(pattern, timeout=remaining, searchwindowsize=window)

    def _expect_re(
        self, child: ConsoleChild, pattern: re.Pattern[str], deadline: float
    ) -> re.Match[str]:
        self._expect(child, pattern, deadline)
        match = child.match
        if not isinstance(match, re.Match):  # pexpect sets it on a regex match
            msg = f"console {self.name}: pexpect matched {pattern.pattern!r} without a match"
            raise TransportError(msg)
        return match

    @staticmethod
    def _seen(child: ConsoleChild) -> str:
        """What the console showed since the last match (pexpect's before + buffer)."""
        before = child.before if isinstance(child.before, str) else ""
        buffer = child.buffer if isinstance(child.buffer, str) else ""
        return before if before.endswith(buffer) else before + buffer

    def _check_line(self, line: str, display: str) -> None:
        bad = _TTY_UNSAFE.search(line)
        if bad is not None:
            msg = (
                f"`{display}` holds the control character {bad.group()!r}, which a terminal "
                f"would act on instead of passing it to the shell of console {self.name}; "
                "pass such data through a file, or use the local or ssh transport"
            )
            raise ConfigurationError(msg)
        size = len(line.encode())
        if size > _MAX_CONSOLE_LINE:
            msg = (
                f"`{_tail(display, 200)}` makes a {size}-byte line, more than the "
                f"{_MAX_CONSOLE_LINE} bytes a terminal line holds on console {self.name}; "
                "shorten the command (write long data to a file first) or use ssh"
            )
            raise ConfigurationError(msg)

    def _break(self, because: str) -> None:
        self._state = "broken"
        self._broken_because = because

    def _raise_unusable(self, doing: str) -> NoReturn:
        why = "it was closed" if self._state == "closed" else self._broken_because
        msg = f"cannot {doing} on console {self.name}: {why}; open a new console"
        raise TransportError(msg)

    def _raise_closed_early(self, child: ConsoleChild) -> NoReturn:
        msg = (
            f"console {self.name} ended while starting (the program exited); it showed: "
            f"{_tail(self._seen(child))!r}. Run the command by hand to see why."
        )
        raise TransportError(msg)

    def _force_close(self, child: ConsoleChild) -> None:
        pid = child.pid if self._owns_process else None
        try:
            if isinstance(child, pexpect.spawn):
                # Closing the pty hangs up the shell; pexpect then sends SIGHUP, SIGCONT,
                # SIGINT and finally SIGKILL to a child that is still alive.
                child.close(force=True)
            else:
                child.close()
        except (pexpect.ExceptionPexpect, OSError) as exc:
            logger.warning("console %s: closing failed: %s", self.name, exc)
        if pid is not None:
            # pexpect made the child a session and group leader: its group is ours.
            _signal_group(pid, signal.SIGKILL)
        self._child = None


# --- CLI spec --------------------------------------------------------------------------


def target_from_spec(spec: str, *, deadline: float | None = None) -> ClosableHost:
    """Build a transport from the CLI's `--target` value.

    - `local`: this machine;
    - `ssh://USER@HOST[:PORT]`: `SshTarget` (IPv6 hosts in brackets);
    - `console:COMMAND`: `SerialConsole` spawning COMMAND (split with shlex); it starts on
      first use.

    Args:
        spec: The value of `--target`.
        deadline: A `time.monotonic()` time that bounds a console's start-up and every wait
            on it (`SerialConsole.deadline`). The other transports take their bound per
            command, from `execute`'s timeout.

    Returns:
        The transport, not yet connected; close it when done (`with` works).

    Raises:
        ConfigurationError: `spec` is none of the forms above, or a part of it is invalid.
    """
    usage = "use local, ssh://USER@HOST[:PORT] or console:COMMAND"
    if spec == "local":
        return LocalHost()
    if spec.startswith("console:"):
        text = spec.removeprefix("console:")
        try:
            argv = shlex.split(text)
        except ValueError as exc:
            msg = f"--target {spec!r}: cannot split the console command ({exc}); fix the quoting"
            raise ConfigurationError(msg) from None
        if not argv:
            msg = f"--target {spec!r}: the console command is empty; e.g. console:'vng --run'"
            raise ConfigurationError(msg)
        if deadline is None:
            return SerialConsole(command=argv)
        # The deadline is the one limit: start-up may use all the time left before it.
        startup = max(0.0, deadline - time.monotonic())
        return SerialConsole(command=argv, deadline=deadline, startup_timeout=startup)
    if spec.startswith("ssh://"):
        return _ssh_from_url(spec, usage)
    msg = f"--target {spec!r} is not a known target; {usage}"
    raise ConfigurationError(msg)


def _ssh_from_url(spec: str, usage: str) -> SshTarget:
    parts = urllib.parse.urlsplit(spec)
    try:
        port = parts.port
    except ValueError as exc:
        msg = f"--target {spec!r}: bad port ({exc}); {usage}"
        raise ConfigurationError(msg) from None
    user, host = parts.username, parts.hostname
    problems = []
    if not user:
        problems.append("it names no user (USER@ is required: the login user sets the auid)")
    if parts.password is not None:
        problems.append("it holds a password (ssh runs in batch mode; use a key)")
    if not host:
        problems.append("it names no host")
    if parts.path not in {"", "/"} or parts.query or parts.fragment:
        problems.append("it has a path, query or fragment after the host")
    if problems or not user or not host:
        msg = f"--target {spec!r}: {'; '.join(problems)}; {usage}"
        raise ConfigurationError(msg)
    try:
        return SshTarget(host=host, user=urllib.parse.unquote(user), port=port)
    except ConfigurationError as exc:
        msg = f"--target {spec!r}: {exc}"
        raise ConfigurationError(msg) from None
