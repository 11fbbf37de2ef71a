"""The probe's module bookkeeping on this host (the VM tests load real modules).

tests/test_vm_modules.py proves the whole behaviour on a kernel with modules; these check
the parts that need none: kernel module names, and that a signal during the load window
is noted (not acted on) and the previous handlers come back.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from kmod_audit.probe import STOP_SIGNALS, _StopSignals, module_name
from kmod_audit.transports import LocalHost


@pytest.mark.parametrize(
    ("given", "kernel"),
    [("crc-itu-t", "crc_itu_t"), ("crc_itu_t", "crc_itu_t"), ("dummy", "dummy")],
)
def test_module_name(given: str, kernel: str) -> None:
    """`-` and `_` are the same in module names, as /proc/modules shows them."""
    assert kernel == module_name(given)


class TestStopSignals:
    """The load window notes SIGINT, SIGTERM and SIGHUP, and restores the handlers."""

    @pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: s.name)
    def test_signal_is_noted_then_handler_restored(self, sig: signal.Signals) -> None:
        """A real signal sets `caught` (nothing is raised); then the old handler is back."""
        seen: list[int] = []
        previous = signal.signal(sig, lambda signum, _frame: seen.append(signum))
        try:
            with _StopSignals() as stop:
                assert not stop()
                os.kill(os.getpid(), sig)
                os.kill(os.getpid(), signal.SIGTERM if sig != signal.SIGTERM else signal.SIGINT)
                assert (True, sig) == (stop(), stop.caught)  # the first one wins
            os.kill(os.getpid(), sig)  # back to the handler from before
            assert [sig] == seen
        finally:
            signal.signal(sig, previous)

    def test_ignored_signal_stays_ignored(self) -> None:
        """A signal ignored by whoever started the probe is not caught in the window."""
        previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            with _StopSignals() as stop:
                assert signal.SIG_IGN == signal.getsignal(signal.SIGHUP)
                os.kill(os.getpid(), signal.SIGHUP)
                assert not stop()
        finally:
            signal.signal(signal.SIGHUP, previous)


def test_interrupted_command_output_is_passed_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C while verify waits for the probe: what the probe says as it stops is shown.

    The probe names a module it could not unload on its way out (SIGTERM from the
    transport); `verify` then raises KeyboardInterrupt, so the transport must log it.
    """
    ready = tmp_path / "ready"
    script = f"trap 'echo probe: dummy is left loaded; exit 3' TERM; touch {ready}; "
    script += "while :; do sleep 0.1; done"

    def interrupt() -> None:
        while not ready.exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        LocalHost().execute(["sh", "-c", script], timeout=120)
    thread.join()
    said = [r.getMessage() for r in caplog.records if "was stopped; it said:" in r.getMessage()]
    assert 1 == len(said), caplog.text
    assert "probe: dummy is left loaded" in said[0]
