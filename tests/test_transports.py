"""Transports against real components: processes, shells on ptys, and a real sshd.

`DriverMachine` is the exception: the real NixOS test driver needs a Nix store, so it is
tested against `FakeDriverMachine`, which runs commands on this host exactly the way the
driver's `QemuMachine._execute` does (`timeout N bash -c 'set -euo pipefail; ...' | base64`,
stderr not captured, `check_return=False` giving -1). Its real-path test is the NixOS VM
test (a later issue).
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pexpect
import pexpect.fdpexpect
import pytest

from _support import FIXTURES
from kmod_audit.errors import CommandFailed, ConfigurationError, ConsoleTimeout, TransportError
from kmod_audit.transports import (
    DEFAULT_INITIAL_PROMPT,
    ClosableHost,
    DriverMachine,
    DriverMachineLike,
    Host,
    LocalHost,
    SerialConsole,
    SshTarget,
    target_from_spec,
)

NOISY_CONSOLE = FIXTURES / "transports" / "noisy_console.sh"
SPECIAL_ARGS = ("a b", "it's", '"q"', "$HOME", "a;b", "`id`", "\\", "*", "!x", "<>|&", "")
SPECIAL_OUTPUT = "".join(f"{arg}|" for arg in SPECIAL_ARGS)
SHELLS = {
    "bash": ("bash", "--norc", "--noprofile", "-i"),
    "sh": ("sh", "-i"),  # dash on Debian
}


def _require_or_skip(reason: str) -> None:
    """Skip, unless KMOD_AUDIT_REQUIRE_ROOT=1 makes a missing prerequisite a failure."""
    if os.environ.get("KMOD_AUDIT_REQUIRE_ROOT") == "1":
        pytest.fail(f"KMOD_AUDIT_REQUIRE_ROOT=1 but {reason}")
    pytest.skip(reason)


def _unique_seconds() -> str:
    """A sleep duration no other process uses, to find our sleeps in /proc."""
    return f"{300 + secrets.randbelow(10**6) / 10**6:.6f}"


def _live_processes(*, pgid: int | None = None, arg: str | None = None) -> list[int]:
    """Pids of live (not zombie) processes in group `pgid` or with `arg` in their argv."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
        if state in {"Z", "X"}:
            continue
        if pgid is not None and int(pgrp) != pgid:
            continue
        if arg is not None and arg.encode() not in argv:
            continue
        found.append(int(entry))
    return found


def _survivors(*, pgid: int | None = None, arg: str | None = None) -> list[int]:
    """Like `_live_processes`, after giving killed processes up to 5 s to die."""
    deadline = time.monotonic() + 5
    while (alive := _live_processes(pgid=pgid, arg=arg)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_transports_fit_the_target_protocol() -> None:
    """Every transport is a Host and a ClosableHost (checked by mypy; built here)."""
    targets: list[ClosableHost] = [
        LocalHost(),
        DriverMachine(FakeDriverMachine()),
        SerialConsole(command=["sh", "-i"]),
        SshTarget(host="127.0.0.1", user="root"),
    ]
    plain: list[Host] = list(targets)
    assert ["local", "machine", "sh", "ssh://root@127.0.0.1"] == [t.name for t in plain]


class TestLocalHost:
    """Commands on this machine: argv lists, no shell, process groups stopped on timeout."""

    def test_status_and_combined_output(self) -> None:
        """The exit status and stdout+stderr (in order) come back; non-zero is not raised."""
        assert (3, "out\nerr\nmore\n") == LocalHost().execute(
            ["sh", "-c", "echo out; echo err >&2; echo more; exit 3"]
        )

    def test_arguments_are_literal(self) -> None:
        """Spaces, quotes, `$`, `;` and globs reach the program unchanged (no shell)."""
        assert (0, SPECIAL_OUTPUT) == LocalHost().execute(["printf", "%s|", *SPECIAL_ARGS])

    def test_stdin_is_empty(self) -> None:
        """A command reading stdin gets end-of-file at once instead of waiting."""
        assert (0, "") == LocalHost().execute(["cat"], timeout=5)

    def test_killed_by_signal_reports_128_plus_n(self) -> None:
        """A command killed by SIGKILL reports 137, as a shell does."""
        assert 137 == LocalHost().execute(["sh", "-c", "kill -9 $$"])[0]

    def test_undecodable_output_is_replaced(self) -> None:
        """Bytes that are not UTF-8 become U+FFFD instead of failing."""
        assert (0, "a\ufffdb") == LocalHost().execute(["printf", "a\\377b"])

    def test_timeout_stops_the_process_group(self) -> None:
        """On timeout every process of the command's group is stopped and the error tells all."""
        first, second = _unique_seconds(), _unique_seconds()
        command = ["sh", "-c", f"echo started; sleep {first} & sleep {second}"]
        start = time.monotonic()
        with pytest.raises(ConsoleTimeout) as caught:
            LocalHost(kill_grace=1).execute(command, timeout=1)
        assert time.monotonic() - start < 5
        assert [] == _survivors(arg=first)
        assert [] == _survivors(arg=second)
        error = caught.value
        assert 1 == error.timeout
        assert "started\n" == error.buffer
        assert shlex.join(command) in str(error)
        assert "SIGTERM" in str(error)
        assert "waited 1 s for" in str(error)

    def test_timeout_reads_as_the_user_gave_it(self) -> None:
        """The rest of a deadline (0.99996 s) is reported as 1 s, not to the microsecond."""
        with pytest.raises(ConsoleTimeout) as caught:
            LocalHost(kill_grace=1).execute(["sleep", str(_unique_seconds())], timeout=0.99996)
        assert ("did not finish within 1 s", "waited 1 s for") == tuple(
            text
            for text in ("did not finish within 1 s", "waited 1 s for")
            if text in str(caught.value)
        )

    def test_background_child_holding_the_output(self) -> None:
        """A child that keeps stdout open counts as running; the message says so."""
        seconds = _unique_seconds()
        with pytest.raises(ConsoleTimeout) as caught:
            LocalHost().execute(["sh", "-c", f"sleep {seconds} & echo done"], timeout=1)
        assert "exited with status 0" in str(caught.value)
        assert "done\n" == caught.value.buffer
        assert [] == _survivors(arg=seconds)

    def test_missing_program(self) -> None:
        """A program that does not exist is a TransportError naming it."""
        with pytest.raises(TransportError, match="could not start `/nonexistent/kma-x`"):
            LocalHost().execute(["/nonexistent/kma-x"])

    @pytest.mark.parametrize(
        ("command", "error"),
        [("ls -l", TypeError), ([], ValueError), (["a\0b"], ValueError)],
        ids=["string", "empty", "nul"],
    )
    def test_bad_commands(self, command: list[str], error: type[Exception]) -> None:
        """A shell string, an empty argv or a NUL byte is a programming error."""
        with pytest.raises(error):
            LocalHost().execute(command)


# --- DriverMachine ----------------------------------------------------------------------


@attrs.define
class FakeDriverMachine:
    """Runs commands on this host the way test_driver's `QemuMachine._execute` does.

    The real method sends `timeout T bash -c 'set -euo pipefail; CMD' | (base64 -w 0; echo)`
    to the VM's backdoor shell (stderr goes to the VM console), then `echo
    ${PIPESTATUS[0]}`; with `check_return=False` it returns -1 and decodes strictly.
    """

    name: str = "machine"
    calls: list[tuple[str, bool, int | None]] = attrs.field(factory=list)

    def execute(
        self,
        command: str,
        check_return: bool = True,
        check_output: bool = True,
        timeout: int | None = 900,
    ) -> tuple[int, str]:
        """Run `command` like the driver and return (status, stdout)."""
        assert check_output
        self.calls.append((command, check_return, timeout))
        command = f"set -euo pipefail; {command}"
        timeout_str = f"timeout {timeout}" if timeout is not None else ""
        line = (
            f"{timeout_str} bash -c {shlex.quote(command)} 2>/dev/null | (base64 -w 0; echo); "
            'echo "${PIPESTATUS[0]}"'
        )
        _, out = LocalHost().execute(["bash", "-c", line], timeout=(timeout or 60) + 10)
        encoded, status = out.splitlines()
        output = base64.b64decode(encoded)
        if not check_return:
            return (-1, output.decode())
        return (int(status), output.decode(errors="replace"))


@attrs.define
class LostStatusMachine:
    """A driver machine whose shell dies before the status marker (a VM that reset)."""

    name: str = "broken"

    def execute(
        self, command: str, *, check_return: bool = True, timeout: int | None = 900
    ) -> tuple[int, str]:
        """Return partial output and no marker."""
        del command, check_return, timeout
        return (0, "partial output")


class TestDriverMachine:
    """The test-driver adapter (real path: the NixOS VM test, later issue)."""

    def test_status_and_combined_output(self) -> None:
        """The real status comes back, and stderr too although the driver drops it."""
        fake = FakeDriverMachine()
        machine: DriverMachineLike = fake
        target = DriverMachine(machine)
        assert (3, "out\nerr\n") == target.execute(
            ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=20
        )
        assert "machine" == target.name

    def test_keeps_check_return_and_rounds_the_timeout_up(self) -> None:
        """check_return stays True (False gives -1) and the timeout becomes whole seconds."""
        fake = FakeDriverMachine()
        DriverMachine(fake).execute(["true"], timeout=1.2)
        [(command, check_return, timeout)] = fake.calls
        assert (True, 2) == (check_return, timeout)
        assert command.startswith("__kma_rc=0; true </dev/null 2>&1 || __kma_rc=$?; ")

    def test_arguments_are_literal(self) -> None:
        """Shell metacharacters reach the program unchanged through the driver's bash -c."""
        assert (0, SPECIAL_OUTPUT) == DriverMachine(FakeDriverMachine()).execute(
            ["printf", "%s|", *SPECIAL_ARGS], timeout=20
        )

    def test_own_status_124_is_not_a_timeout(self) -> None:
        """A command exiting 124 itself is returned; the marker tells it from `timeout`."""
        target = DriverMachine(FakeDriverMachine())
        assert (124, "no newline") == target.execute(
            ["sh", "-c", "printf 'no newline'; exit 124"], timeout=20
        )

    def test_timeout(self) -> None:
        """When the driver's `timeout` stops the command, ConsoleTimeout carries its output."""
        with pytest.raises(ConsoleTimeout) as caught:
            DriverMachine(FakeDriverMachine()).execute(
                ["sh", "-c", "echo started; sleep 30"], timeout=1
            )
        assert "started\n" == caught.value.buffer
        assert "stopped it" in str(caught.value)

    def test_lost_status(self) -> None:
        """Output without the status marker is a TransportError showing that output."""
        with pytest.raises(TransportError, match="partial output"):
            DriverMachine(LostStatusMachine()).execute(["true"])


# --- SerialConsole ----------------------------------------------------------------------


@pytest.fixture(params=sorted(SHELLS), ids=sorted(SHELLS))
def console(request: pytest.FixtureRequest) -> Iterator[SerialConsole]:
    """A started console on a real interactive shell (bash or dash) in a pty."""
    shell = SerialConsole(command=SHELLS[request.param], startup_timeout=10, interrupt_timeout=5)
    with shell:
        yield shell


class TestSerialConsole:
    """A real shell on a pty driven through markers, prompts and deadlines."""

    def test_status_and_output(self, console: SerialConsole) -> None:
        """Status and output come back; stderr shares the console."""
        assert (0, "hello\n") == console.execute(["echo", "hello"])
        assert (7, "out\nerr\n") == console.execute(["sh", "-c", "echo out; echo err >&2; exit 7"])

    def test_arguments_are_literal(self, console: SerialConsole) -> None:
        """Quotes, `$`, `;`, backquotes, globs, `!` and newlines reach the program unchanged."""
        assert (0, SPECIAL_OUTPUT + "two\nlines|") == console.execute(
            ["printf", "%s|", *SPECIAL_ARGS, "two\nlines"]
        )

    def test_multi_line_output_and_line_ends(self, console: SerialConsole) -> None:
        r"""Blank lines and a missing final newline survive; `\r\n` from a tty becomes `\n`."""
        assert (0, "one\ntwo\n\nthree") == console.execute(["printf", "one\\ntwo\\n\\nthree"])
        assert (0, "a\nb\n") == console.execute(["printf", "a\\r\\nb\\r\\n"])
        assert (0, "") == console.execute(["true"])

    def test_output_that_looks_like_a_prompt(self, console: SerialConsole) -> None:
        """Output holding our prompt, other prompts or a fake marker is returned as is."""
        fake_end = "__KMA_END_0_1_0__"
        expected = f"{console.prompt}\n$ \n# \n{fake_end}\n"
        assert (0, expected) == console.execute(
            ["printf", "%s\\n", console.prompt, "$ ", "# ", fake_end]
        )
        assert (0, "next\n") == console.execute(["echo", "next"])

    def test_stdin_is_empty(self, console: SerialConsole) -> None:
        """A command reading stdin gets end-of-file instead of eating the next command."""
        assert (0, "") == console.execute(["cat"], timeout=5)
        assert (0, "ok\n") == console.execute(["echo", "ok"])

    def test_timeout_interrupts_and_recovers(self, console: SerialConsole) -> None:
        """A hung command times out with pattern and tail, gets Ctrl-C, and the console works on."""
        seconds = _unique_seconds()
        with pytest.raises(ConsoleTimeout) as caught:
            console.execute(["sh", "-c", f"echo still-working; sleep {seconds}"], timeout=1)
        error = caught.value
        assert error.pattern.startswith("__KMA_END_")
        assert "still-working" in error.buffer
        assert "interrupted with Ctrl-C" in str(error)
        assert repr(error.pattern) in str(error)
        assert [] == _survivors(arg=seconds)
        assert (0, "after\n") == console.execute(["echo", "after"])

    def test_terminal_control_characters_are_refused(self, console: SerialConsole) -> None:
        """Ctrl-A (QEMU's escape), TAB or CR are refused before anything is sent."""
        for char in ("\x01", "\t", "\r", "\x03"):
            with pytest.raises(ConfigurationError, match="control character"):
                console.execute(["echo", f"a{char}b"])
        assert (0, "ok\n") == console.execute(["echo", "ok"])

    def test_too_long_line_is_refused(self, console: SerialConsole) -> None:
        """A line longer than a tty holds is refused instead of being cut silently."""
        with pytest.raises(ConfigurationError, match="bytes a terminal line holds"):
            console.execute(["echo", "x" * 5000])
        assert (0, "ok\n") == console.execute(["echo", "ok"])

    def test_shell_exit_is_a_transport_error(self, console: SerialConsole) -> None:
        """When the shell goes away the console says so, and stays unusable."""
        with pytest.raises(TransportError, match="closed while running `exit 3`"):
            console.execute(["exit", "3"], timeout=5)
        with pytest.raises(TransportError, match="open a new console"):
            console.execute(["true"])

    def test_path_is_exported(self) -> None:
        """`path=` sets PATH in the shell."""
        printenv = shutil.which("printenv")
        assert printenv is not None
        path = f"{os.path.dirname(printenv)}:/bin"
        with SerialConsole(command=SHELLS["sh"], path=path, startup_timeout=10) as sh:
            assert (0, f"{path}\n") == sh.execute(["printenv", "PATH"])

    def test_close_leaves_no_process(self) -> None:
        """close() ends the shell and its whole process group; a second close is harmless."""
        shell = SerialConsole(command=SHELLS["bash"], startup_timeout=10)
        shell.start()
        child = shell._child
        assert isinstance(child, pexpect.spawn)
        assert child.pid is not None
        assert [] != _live_processes(pgid=child.pid)
        shell.close()
        shell.close()
        assert [] == _survivors(pgid=child.pid)
        with pytest.raises(TransportError, match="it was closed"):
            shell.execute(["true"])

    def test_noisy_serial_console(self) -> None:
        r"""Boot junk, `\r\r\n` and kernel messages printed at any time do not confuse it."""
        noisy = SerialConsole(
            command=["sh", str(NOISY_CONSOLE)],
            initial_prompt=None,
            startup_timeout=10,
            close_timeout=3,
        )
        with noisy:
            child = noisy._child
            assert child is not None
            pid = child.pid
            assert pid is not None
            for number in range(15):
                status, output = noisy.execute(
                    ["sh", "-c", f"echo line {number}; echo second; exit {number}"]
                )
                kept = [
                    line for line in output.splitlines() if not re.match(r"\[ *\d+\.\d+\]", line)
                ]
                assert (number, ["line " + str(number), "second"]) == (status, kept)
                assert "\r" not in output
        assert [] == _survivors(pgid=pid)

    def test_attach_to_an_existing_spawn(self) -> None:
        """An existing pexpect session in text mode is driven the same way."""
        child = pexpect.spawn(
            "bash",
            ["--norc", "--noprofile", "-i"],
            encoding="utf-8",
            codec_errors="replace",
        )
        with SerialConsole(child=child, name="attached", startup_timeout=10) as shell:
            assert (0, "hi\n") == shell.execute(["echo", "hi"])
        assert not child.isalive()

    def test_socket_without_tty_like_the_driver_backdoor(self) -> None:
        """A shell on a socket (no tty, no prompt) works; a timeout then leaves it unusable.

        Ctrl-C is just a byte on a socket, so it cannot interrupt the command; the console
        says so instead of hanging.
        """
        ours, theirs = socket.socketpair()
        shell = subprocess.Popen(
            ["sh", "-i"],
            stdin=theirs.fileno(),
            stdout=theirs.fileno(),
            stderr=theirs.fileno(),
            start_new_session=True,
        )
        theirs.close()
        fd = ours.detach()  # the console owns the fd from here on and closes it
        seconds = _unique_seconds()
        try:
            child = pexpect.fdpexpect.fdspawn(fd, encoding="utf-8", codec_errors="replace")
            console = SerialConsole(
                child=child, name="hvc0", initial_prompt=None, startup_timeout=10
            )
            console.interrupt_timeout = 1
            with console:
                assert (4, "out\nerr\n") == console.execute(
                    ["sh", "-c", "echo out; echo err >&2; exit 4"]
                )
                with pytest.raises(ConsoleTimeout, match="unusable"):
                    console.execute(["sleep", seconds], timeout=1)
                with pytest.raises(TransportError, match="Ctrl-C did not bring the shell back"):
                    console.execute(["true"])
        finally:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait(timeout=5)
            with contextlib.suppress(OSError):
                os.close(fd)
        assert [] == _survivors(arg=seconds)

    def test_no_prompt_within_the_startup_deadline(self) -> None:
        """A console that never shows a prompt times out with the pattern; nothing is left."""
        seconds = _unique_seconds()
        console = SerialConsole(command=["sleep", seconds], startup_timeout=1)
        with pytest.raises(ConsoleTimeout) as caught:
            console.start()
        assert DEFAULT_INITIAL_PROMPT == caught.value.pattern
        # The hint names what a CLI user can change: the console command and the time.
        assert f"check that `sleep {seconds}` starts an interactive shell" in str(caught.value)
        assert "verify --timeout" in str(caught.value)
        assert "initial_prompt" not in str(caught.value)
        assert [] == _survivors(arg=seconds)

    def test_deadline_bounds_the_start_up(self) -> None:
        """With a deadline before the end of startup_timeout, start-up ends at the deadline."""
        seconds = _unique_seconds()
        console = SerialConsole(
            command=["sleep", seconds], startup_timeout=600, deadline=time.monotonic() + 1
        )
        with pytest.raises(ConsoleTimeout) as caught:
            console.start()
        assert "the time left before the overall deadline" in str(caught.value)
        assert caught.value.timeout <= 1
        assert [] == _survivors(arg=seconds)

    def test_deadline_bounds_a_command(self) -> None:
        """A command's wait ends at the deadline, whatever timeout it was given."""
        seconds = _unique_seconds()
        console = SerialConsole(
            command=SHELLS["sh"], interrupt_timeout=600, deadline=time.monotonic() + 20
        )
        with console, pytest.raises(ConsoleTimeout) as caught:
            console.execute(["sleep", seconds], timeout=600)
        assert "the time left before the overall deadline" in str(caught.value)
        assert caught.value.timeout < 20
        assert [] == _survivors(arg=seconds)

    def test_program_that_ends_at_once(self) -> None:
        """A console program that exits before a prompt is a TransportError with its output."""
        console = SerialConsole(command=["sh", "-c", "echo no shell here"], startup_timeout=5)
        with pytest.raises(TransportError, match="no shell here"):
            console.start()

    def test_missing_program(self) -> None:
        """A console program that does not exist is a TransportError naming it."""
        console = SerialConsole(command=["/nonexistent/vng"])
        with pytest.raises(TransportError, match="could not start console"):
            console.start()

    def test_command_must_be_a_list(self) -> None:
        """A command string is refused rather than split into letters."""
        with pytest.raises(TypeError, match="not the string 'vng --run'"):
            SerialConsole(command="vng --run")

    def test_needs_text_mode_and_exactly_one_source(self) -> None:
        """A bytes-mode session, or neither/both of command and child, is refused."""
        child = pexpect.spawn("true")
        try:
            with pytest.raises(ValueError, match="text mode"):
                SerialConsole(child=child)
            with pytest.raises(ValueError, match="either command"):
                SerialConsole()
        finally:
            child.close()


# --- SshTarget --------------------------------------------------------------------------


@attrs.frozen
class Sshd:
    """A running test sshd on 127.0.0.1 and how to reach it."""

    port: int
    user: str
    key: Path
    pam: bool
    log: Path

    def target(self, port: int | None = None) -> SshTarget:
        """An SshTarget for this sshd (or for another port on 127.0.0.1)."""
        return SshTarget(
            host="127.0.0.1",
            user=self.user,
            port=port or self.port,
            identity=str(self.key),
            options=["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"],
            connect_timeout=5,
        )


def _start_sshd(
    sshd_bin: str, directory: Path, user: str, *, pam: bool
) -> tuple[subprocess.Popen[bytes], Sshd]:
    port = _free_port()
    config = directory / f"sshd_config.{'pam' if pam else 'nopam'}"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {directory / 'host_key'}\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
        f"AllowUsers {user}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        f"UsePAM {'yes' if pam else 'no'}\n"
        "StrictModes no\n"
        "PidFile none\n"
        "PrintMotd no\n"
    )
    log = directory / f"sshd.{'pam' if pam else 'nopam'}.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [sshd_bin, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    server = Sshd(port=port, user=user, key=directory / "client_key", pam=pam, log=log)
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, server
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"sshd did not listen on port {port} within 10 s:\n{log.read_text()}")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real sshd on a free port of 127.0.0.1 with a fresh host key and client key.

    Tries `UsePAM yes` first (pam_loginuid sets the login uid), then `UsePAM no`. sshd
    needs its privilege separation directory /run/sshd; it is created when missing.
    """
    sshd_bin = shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/sbin/sshd") if os.path.exists(p)), None
    )
    keygen = shutil.which("ssh-keygen")
    if sshd_bin is None or keygen is None or shutil.which("ssh") is None:
        _require_or_skip("OpenSSH is missing (apt-get install openssh-server openssh-client)")
    assert sshd_bin is not None
    assert keygen is not None
    privsep = Path("/run/sshd")
    if not privsep.is_dir():
        try:
            privsep.mkdir(mode=0o755, parents=True)
        except OSError as exc:
            _require_or_skip(f"sshd needs {privsep} and it could not be created: {exc}")
    directory = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(directory / key)],
            check=True,
            timeout=30,
        )
    authorized = directory / "authorized_keys"
    authorized.write_text((directory / "client_key.pub").read_text())
    authorized.chmod(0o600)
    user = pwd.getpwuid(os.geteuid()).pw_name
    # PAM needs root; as another user sshd can only log in that same user without it.
    attempts = (True, False) if os.geteuid() == 0 else (False,)
    for pam in attempts:
        proc, server = _start_sshd(sshd_bin, directory, user, pam=pam)
        try:
            server.target().execute(["true"], timeout=20)
        except CommandFailed:
            _stop(proc)
            if pam is attempts[-1]:
                raise
            continue
        break
    try:
        yield server
    finally:
        _stop(proc)


class TestSshTarget:
    """Commands through the system ssh client and a real sshd."""

    def test_status_and_combined_output(self, sshd: Sshd) -> None:
        """The remote status and stdout+stderr come back; non-zero is not raised."""
        assert (3, "out\nerr\n") == sshd.target().execute(
            ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=20
        )

    def test_remote_255_is_a_status(self, sshd: Sshd) -> None:
        """A remote command exiting 255 is told apart from ssh's own failure."""
        assert (255, "no newline") == sshd.target().execute(
            ["sh", "-c", "printf 'no newline'; exit 255"], timeout=20
        )

    def test_arguments_are_literal(self, sshd: Sshd) -> None:
        """Arguments survive the remote login shell and `sh -c` unchanged."""
        assert (0, SPECIAL_OUTPUT) == sshd.target().execute(
            ["printf", "%s|", *SPECIAL_ARGS], timeout=20
        )

    def test_login_sets_the_login_uid(self, sshd: Sshd) -> None:
        """With UsePAM yes, pam_loginuid gives commands the login user's auid."""
        if not sshd.pam:
            pytest.skip("this sshd runs with UsePAM no (not root, or PAM refused the login)")
        status, output = sshd.target().execute(["cat", "/proc/self/loginuid"], timeout=20)
        assert (0, str(os.geteuid())) == (status, output.strip())

    def test_connection_refused(self, sshd: Sshd) -> None:
        """A closed port is a TransportError that shows ssh's complaint and what to check."""
        with pytest.raises(TransportError) as caught:
            sshd.target(port=_free_port()).execute(["true"], timeout=20)
        message = str(caught.value)
        assert "ssh could not run `true`" in message
        assert "Connection refused" in message
        assert "sshd listens" in message
        assert isinstance(caught.value, CommandFailed)
        assert 255 == caught.value.status

    def test_timeout(self, sshd: Sshd) -> None:
        """A remote command outliving the deadline raises ConsoleTimeout with its output."""
        with pytest.raises(ConsoleTimeout) as caught:
            sshd.target().execute(["sh", "-c", "echo started; sleep 30"], timeout=2)
        assert "started" in caught.value.buffer

    def test_ssh_argv(self) -> None:
        """Options come before `--`, then USER@HOST and one remote line; sudo wraps argv."""
        target = SshTarget(host="h", user="u", port=2222, identity="/k", options=["A=b"], sudo=True)
        assert [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-T",
            "-p",
            "2222",
            "-i",
            "/k",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "A=b",
            "--",
            "u@h",
            "remote line",
        ] == target.ssh_argv("remote line")


# --- target_from_spec -------------------------------------------------------------------


class TestTargetFromSpec:
    """The CLI's --target values."""

    def test_local(self) -> None:
        """`local` is this machine."""
        assert LocalHost() == target_from_spec("local")

    @pytest.mark.parametrize(
        ("spec", "host", "user", "port", "name"),
        [
            ("ssh://root@host.example", "host.example", "root", None, "ssh://root@host.example"),
            ("ssh://alice@10.0.0.1:2222", "10.0.0.1", "alice", 2222, "ssh://alice@10.0.0.1:2222"),
            ("ssh://bob@[::1]:22/", "::1", "bob", 22, "ssh://bob@[::1]:22"),
        ],
        ids=["host", "port", "ipv6"],
    )
    def test_ssh(self, spec: str, host: str, user: str, port: int | None, name: str) -> None:
        """ssh://USER@HOST[:PORT] becomes an SshTarget."""
        target = target_from_spec(spec)
        assert isinstance(target, SshTarget)
        assert (host, user, port, name) == (target.host, target.user, target.port, target.name)

    def test_console(self) -> None:
        """console:COMMAND is split with shlex and not started yet."""
        target = target_from_spec("console:vng --run -- 'uname -a'")
        assert isinstance(target, SerialConsole)
        assert ("vng", "--run", "--", "uname -a") == target.command
        assert "vng" == target.name
        assert target._child is None
        assert target.deadline is None

    def test_console_carries_the_deadline(self) -> None:
        """The CLI's deadline reaches the console and is its only start-up limit."""
        deadline = time.monotonic() + 600
        target = target_from_spec("console:cat", deadline=deadline)
        assert isinstance(target, SerialConsole)
        assert deadline == target.deadline
        assert 120 < target.startup_timeout <= 600  # not the fixed 120 s of a bare console

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ("", "not a known target"),
            ("remote", "not a known target; use local, ssh://USER@HOST"),
            ("ssh://host", "names no user"),
            ("ssh://u:secret@host", "holds a password"),
            ("ssh://u@", "names no host"),
            ("ssh://u@host:99999", "bad port"),
            ("ssh://u@host/path", "path, query or fragment"),
            ("ssh://u@-oProxyCommand=x", "not start with '-'"),
            ("console:", "console command is empty"),
            ("console:'unclosed", "fix the quoting"),
        ],
        ids=[
            "empty",
            "unknown",
            "no-user",
            "password",
            "no-host",
            "bad-port",
            "path",
            "dash-host",
            "empty-console",
            "bad-quoting",
        ],
    )
    def test_errors(self, spec: str, message: str) -> None:
        """Anything else is a ConfigurationError that says what is wrong."""
        with pytest.raises(ConfigurationError) as caught:
            target_from_spec(spec)
        assert message in str(caught.value)
        assert repr(spec) in str(caught.value)
