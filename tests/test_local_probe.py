"""`verify --target local` runs the probe in a fork of the CLI, not a second interpreter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import pytest

from _support import FIXTURES
from kmod_audit.cli import main
from kmod_audit.errors import ConsoleTimeout, TransportError
from kmod_audit.probe_result import ProbeResult
from kmod_audit.profiles import select_profiles
from kmod_audit.transports import LocalHost
from kmod_audit.verify import VerifyOptions, run_verify

PROBE_FIXTURE: Final = FIXTURES / "probe" / "host-x86_64-all.json"


def _no_interpreter(self: LocalHost, command: object, timeout: float = 0) -> tuple[int, str]:
    del self, timeout
    msg = f"a second interpreter was started: {command}"
    raise TransportError(msg)


def _alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _cli_probe(args: list[str]) -> int:
    """What the CLI runs in the forked child: its own `probe` subcommand."""
    return main(args, out=sys.stdout)


class TestLocalVerify:
    """The local probe is a forked child running `kmod-audit probe` in-process."""

    def test_probe_runs_in_a_fork(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """No command is executed; the child runs the probe and its result is judged."""
        seen: dict[str, object] = {}

        def probe(**kwargs: object) -> ProbeResult:
            # In the child: print what tells it apart from the parent (stderr is merged).
            sys.stderr.write(f"child pid={os.getpid()} sid={os.getsid(0)}\n")
            seen.update(kwargs)
            return ProbeResult.from_json(json.loads(PROBE_FIXTURE.read_text()))

        monkeypatch.setattr(LocalHost, "execute", _no_interpreter)
        monkeypatch.setattr("kmod_audit.probe.run_probe", probe)
        options = VerifyOptions(profiles=select_profiles(["all"]), kmod_path="/usr/bin/kmod")
        report = run_verify(LocalHost(), options, local=True, local_probe=_cli_probe)
        assert report.compliant
        assert {} == seen  # the probe ran in another process

    def test_probe_arguments_reach_the_child(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The child gets the options the `kmod-audit probe` command line would carry."""

        def probe(**kwargs: object) -> ProbeResult:
            raise TransportError(json.dumps(kwargs, sort_keys=True))

        monkeypatch.setattr(LocalHost, "execute", _no_interpreter)
        monkeypatch.setattr("kmod_audit.probe.run_probe", probe)
        options = VerifyOptions(
            profiles=select_profiles([]), module="veth", uid_min=2000, kmod_path="/bin/kmod"
        )
        with pytest.raises(TransportError, match="the probe failed on local") as info:
            run_verify(LocalHost(), options, local=True, local_probe=_cli_probe)
        output = getattr(info.value, "output", "")
        assert '"auid": 2000' in output
        assert '"module": "veth"' in output
        assert '"program": "/bin/kmod"' in output
        assert 3 == getattr(info.value, "status", None)


class TestForkedCall:
    """`LocalHost.call`: a process of its own, its status and output, stopped on timeout."""

    def test_separate_session_status_and_merged_output(self) -> None:
        """The child leads its own session; stdout and stderr come back in order."""

        def child() -> int:
            sys.stdout.write(f"pid={os.getpid()} sid={os.getsid(0)}\n")
            sys.stdout.flush()
            sys.stderr.write("on stderr\n")
            return 5

        status, output = LocalHost().call(child, display="child", timeout=30)
        assert 5 == status
        first, second = output.splitlines()
        pid = int(first.split()[0].removeprefix("pid="))
        assert f"pid={pid} sid={pid}" == first
        assert pid != os.getpid()
        assert "on stderr" == second

    def test_killed_by_a_signal_is_128_plus_n(self) -> None:
        """A child ended by SIGTERM reads as status 143, as from a shell."""

        def child() -> int:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
            return 0

        assert (128 + signal.SIGTERM, "") == LocalHost().call(child, display="child", timeout=30)

    def test_raising_child_is_status_70_with_the_traceback(self) -> None:
        """An exception never returns into the caller's code in the child."""

        def child() -> int:
            msg = "boom"
            raise RuntimeError(msg)

        status, output = LocalHost().call(child, display="child", timeout=30)
        assert 70 == status
        assert "RuntimeError: boom" in output

    def test_timeout_stops_the_whole_process_group(self, tmp_path: Path) -> None:
        """On timeout the child and what it started are stopped; ConsoleTimeout says so."""
        pidfile = tmp_path / "grandchild"

        def child() -> int:
            sleeper = subprocess.Popen(["sleep", "300"])
            pidfile.write_text(str(sleeper.pid))
            sys.stdout.write("started\n")
            sys.stdout.flush()
            time.sleep(300)
            return 0

        host = LocalHost(kill_grace=2.0)
        with pytest.raises(ConsoleTimeout, match="did not finish within 1 s") as info:
            host.call(child, display="kmod-audit probe", timeout=1.0)
        assert "started" in info.value.buffer
        assert "SIGTERM" in str(info.value)
        grandchild = int(pidfile.read_text())
        deadline = time.monotonic() + 10
        while _alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(grandchild)

    def test_what_the_child_says_as_it_stops_is_kept(self) -> None:
        """A child that cleans up on SIGTERM: its last words are in the timeout's buffer."""

        def child() -> int:
            def stop(_signum: int, _frame: object) -> None:
                sys.stdout.write("cleaned up: dummy unloaded again\n")
                sys.stdout.flush()
                os._exit(3)

            signal.signal(signal.SIGTERM, stop)
            sys.stdout.write("loading\n")
            sys.stdout.flush()
            time.sleep(300)
            return 0

        host = LocalHost(kill_grace=5.0)
        with pytest.raises(ConsoleTimeout, match="did not finish within 1 s") as info:
            host.call(child, display="kmod-audit probe", timeout=1.0)
        assert "loading\ncleaned up: dummy unloaded again" in info.value.buffer
