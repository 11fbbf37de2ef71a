"""The VM harness (tools/vmrun.py): real guests (marker `vm`, one boot per test, ~2 min).

Each boot is a Debian kernel under QEMU TCG (16-35 s on two cores). Missing prerequisites
skip the tests, unless `KMOD_AUDIT_REQUIRE_ROOT=1` (CI as root): then they fail, so CI
cannot pass by skipping. `KMOD_AUDIT_NO_VM=1` (the opt-out that tools/setup honours too)
always skips.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import attrs
import pytest

import vmrun

RULE = (
    "-a always,exit -F arch=b64 -S init_module,finit_module,delete_module "
    "-F auid>=1000 -F auid!=unset -k module_chng"
)

# Runs in the guest under dash. RULES is the host path of the rules file. Module syscalls
# of the root shell itself (auid unset) must not match the rule; only the one child whose
# login uid is 1000 must.
AUDIT_SCENARIO = """#!/bin/sh
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
RULES=$1
echo "RESULT uname=$(uname -r)"

modprobe dummy && grep -q '^dummy ' /proc/modules && loaded=yes || loaded=no
modprobe -r dummy && ! grep -q '^dummy ' /proc/modules && unloaded=yes || unloaded=no
echo "RESULT plain_load=$loaded plain_unload=$unloaded"

started=$({start}) || exit 3
echo "$started"
pid=${{started##*auditd_pid=}}

auditctl -R "$RULES" >/dev/null
echo "RESULT rules_rc=$?"

/usr/bin/python3 -c '
import os, sys
child = os.fork()
if child == 0:
    with open("/proc/self/loginuid", "w") as handle:
        handle.write(sys.argv[1])
    os.execvp(sys.argv[2], sys.argv[2:])
sys.exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
' 1000 modprobe dummy
echo "RESULT auid_load_rc=$?"
grep -q '^dummy ' /proc/modules && echo "RESULT auid_loaded=yes"
modprobe -r dummy
echo "RESULT unset_unload_rc=$?"

{stop} "$pid" || exit 4
echo BEGIN log
grep '^type=SYSCALL' /var/log/audit/audit.log
echo END log
"""


def _require_or_skip(reason: str) -> None:
    # Mirrors conftest._require_root_or_skip: under CI as root, skipping is failing.
    if os.environ.get("KMOD_AUDIT_REQUIRE_ROOT") == "1":
        pytest.fail(f"KMOD_AUDIT_REQUIRE_ROOT=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def kernel() -> vmrun.Kernel:
    """The kernel to boot; skips (or fails, under KMOD_AUDIT_REQUIRE_ROOT=1) without one."""
    if os.environ.get("KMOD_AUDIT_NO_VM") == "1":
        pytest.skip("KMOD_AUDIT_NO_VM=1: VM tests are switched off")
    missing = vmrun.missing_prerequisites()
    found = vmrun.find_kernel()
    if missing or found is None:
        _require_or_skip("VM prerequisites are missing: " + "; ".join(missing))
    assert found is not None
    return found


def _write_script(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)
    return path


def _qemu_pids() -> set[int]:
    found = subprocess.run(
        ["pgrep", "-f", "qemu-system"], capture_output=True, text=True, check=False
    )
    return {int(pid) for pid in found.stdout.split()}


def _leaked_qemus(before: set[int]) -> dict[int, str]:
    """QEMUs started since `before` whose run is over (their pidfile's directory is gone).

    Other people's VMs may start meanwhile: those still have their directory. A zombie
    counts as leaked (nobody reaped it). Returns pid -> state and command line.
    """
    leaked: dict[int, str] = {}
    for pid in _qemu_pids() - before:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rpartition(")")[2]
        except OSError:
            continue  # gone since pgrep saw it
        pidfile = argv[argv.index("-pidfile") + 1] if "-pidfile" in argv[:-1] else ""
        if not pidfile or not Path(pidfile).parent.is_dir():
            leaked[pid] = f"state {state.split()[0]}: {' '.join(argv)[:200]}"
    return leaked


def _syscall_records(log: str) -> list[str]:
    # Drop the interpreted (ENRICHED) tail after 0x1D: it repeats field names.
    return [line.partition("\x1d")[0] for line in log.splitlines() if "type=SYSCALL" in line]


@pytest.mark.vm
class TestPrerequisites:
    """What a boot needs is installed."""

    def test_present(self, kernel: vmrun.Kernel) -> None:
        """A full-flavour kernel with its modules, QEMU, static busybox and vng are there."""
        assert [] == vmrun.missing_prerequisites()
        assert kernel.image.is_file()
        assert kernel.modules.is_dir()
        assert re.fullmatch(r"\d+\.\d+\.\d+-\d+-amd64", kernel.version)


@pytest.mark.vm
class TestRunGuest:
    """run_guest: a script in a guest, its status and output."""

    def test_audit_scenario(self, kernel: vmrun.Kernel, tmp_path: Path) -> None:
        """Modules load in the guest, and a load under login uid 1000 leaves a keyed record."""
        rules = tmp_path / "module_chng.rules"
        rules.write_text(RULE + "\n", encoding="utf-8")
        script = _write_script(
            tmp_path / "scenario.sh",
            AUDIT_SCENARIO.format(start=vmrun.START_AUDITD, stop=vmrun.STOP_AUDITD),
        )

        run = vmrun.run_guest(script, kernel=kernel, timeout=240, args=[str(rules)])

        assert (0, False) == (run.status, run.timed_out), run.summary()
        results = run.results()
        assert {
            "uname": kernel.version,
            "plain_load": "yes",
            "plain_unload": "yes",
            "rules_rc": "0",
            "auid_load_rc": "0",
            "auid_loaded": "yes",
            "unset_unload_rc": "0",
        }.items() <= results.items(), run.summary()
        assert results.get("auditd_pid", "").isdigit(), run.summary()
        assert results["auditd_pid"] == results.get("auditd_stopped"), run.summary()
        records = _syscall_records(run.section("log"))
        keyed = [line for line in records if 'key="module_chng"' in line]
        assert [line for line in keyed if "syscall=313 " in line and " auid=1000 " in line], (
            "no finit_module record with key module_chng and auid 1000:\n" + "\n".join(records)
        )
        # The root shell's unload (auid unset) is filtered out by the rule.
        assert [] == [line for line in keyed if "auid=4294967295" in line]


@pytest.mark.vm
class TestTimeout:
    """run_guest at its timeout."""

    def test_kills_the_guest(self, kernel: vmrun.Kernel, tmp_path: Path) -> None:
        """A guest that never ends is killed at the timeout, and no QEMU is left running."""
        script = _write_script(
            tmp_path / "forever.sh", "#!/bin/sh\necho 'RESULT sleeping=yes'\nexec sleep 100000\n"
        )
        before = _qemu_pids()

        timeout = 60  # long enough to boot (16-33 s alone, up to 45 s beside busy tests)
        run = vmrun.run_guest(script, kernel=kernel, timeout=timeout)

        assert (True, 255) == (run.timed_out, run.status), run.summary()
        assert timeout <= run.elapsed < timeout + 20, run.summary()
        assert "yes" == run.results().get("sleeping"), "the guest never booted: " + run.summary()
        assert {} == _leaked_qemus(before)


@pytest.mark.vm
class TestConsole:
    """console(): the interactive serial console."""

    def test_shell_and_clean_exit(self, kernel: vmrun.Kernel) -> None:
        """The console yields a root shell at a prompt; leaving it powers the guest off."""
        before = _qemu_pids()

        with vmrun.console(kernel, timeout=240) as child:
            child.sendline("uname -r; echo __DONE__$((6 * 7))")
            child.expect(r"__DONE__42")
            seen = child.before or ""

        assert kernel.version in seen
        assert not child.isalive()
        assert {} == _leaked_qemus(before)

    def test_boot_failure_raises(self, kernel: vmrun.Kernel, tmp_path: Path) -> None:
        """A console whose kernel cannot start raises GuestBootError with vng's message."""
        missing = attrs.evolve(kernel, image=tmp_path / "vmlinuz-missing")

        with pytest.raises(vmrun.GuestBootError) as caught, vmrun.console(missing, timeout=60):
            pytest.fail("a console without a kernel yielded a shell")

        assert "vmlinuz-missing does not exist" in caught.value.console_log
        assert "vmlinuz-missing does not exist" in str(caught.value)


class TestGuestRunParsing:
    """Output parsing, without a guest."""

    @pytest.mark.parametrize(
        ("stdout", "expected"),
        [
            ("RESULT a=1 b=two\n", {"a": "1", "b": "two"}),
            ("noise\nRESULT a=1\nRESULT a=2 c=\n", {"a": "2", "c": ""}),
            ("RESULTS a=1\n  RESULT b=2 junk\n", {"b": "2"}),
        ],
        ids=["one-line", "later-wins", "prefix-and-junk"],
    )
    def test_results(self, stdout: str, expected: dict[str, str]) -> None:
        """RESULT lines become a mapping; a later key wins; other lines are ignored."""
        run = vmrun.GuestRun(status=0, stdout=stdout, stderr="", elapsed=1.0, timed_out=False)
        assert expected == run.results()

    def test_section(self) -> None:
        """The text between BEGIN and END lines is returned verbatim, braces and all."""
        stdout = 'x\nBEGIN json\n{"a": 1}\nEND json-not\n]\nEND json\nBEGIN empty\nEND empty\n'
        run = vmrun.GuestRun(status=0, stdout=stdout, stderr="", elapsed=1.0, timed_out=False)
        assert '{"a": 1}\nEND json-not\n]\n' == run.section("json")
        assert "" == run.section("empty")
        with pytest.raises(LookupError, match="BEGIN missing"):
            run.section("missing")


class TestFindKernel:
    """find_kernel on a fake /boot and /lib/modules, without a guest."""

    @pytest.mark.parametrize(
        ("images", "trees", "expected"),
        [
            (["6.1.0-9-amd64", "6.1.0-56-amd64"], ["6.1.0-9-amd64", "6.1.0-56-amd64"], "56"),
            (["6.1.0-9-amd64", "6.1.0-56-amd64"], ["6.1.0-9-amd64"], "9"),
            (
                ["6.1.0-60-cloud-amd64", "6.1.0-9-amd64"],
                ["6.1.0-60-cloud-amd64", "6.1.0-9-amd64"],
                "9",
            ),
            (["6.1.0-60-rt-arm64", "6.1.0-60-amd64.old"], ["6.1.0-60-rt-arm64"], None),
        ],
        ids=["newest-by-number", "needs-modules", "not-cloud", "none"],
    )
    def test_picks_newest_full_flavour(
        self, tmp_path: Path, images: list[str], trees: list[str], expected: str | None
    ) -> None:
        """The newest -amd64 image with a module tree wins; cloud and other flavours do not."""
        boot, modules = tmp_path / "boot", tmp_path / "modules"
        boot.mkdir()
        for version in images:
            (boot / f"vmlinuz-{version}").write_bytes(b"")
            (boot / f"config-{version}").write_bytes(b"")
        for version in trees:
            (modules / version).mkdir(parents=True)

        found = vmrun.find_kernel(boot, modules)

        if expected is None:
            assert found is None
            return
        version = f"6.1.0-{expected}-amd64"
        assert found == vmrun.Kernel(version, boot / f"vmlinuz-{version}", modules / version)


class TestQemuOptions:
    """More QEMU options (a user-mode NIC with hostfwd) ride on vng's --qemu-opts."""

    def _argv(self, tmp_path: Path, qemu_opts: list[str]) -> list[str]:
        kernel = vmrun.Kernel("6.1.0-1-amd64", tmp_path / "vmlinuz", tmp_path / "modules")
        return vmrun._vng_argv(
            Path("/venv/bin/vng"),
            kernel,
            append=("audit=1",),
            memory="1G",
            cpus=1,
            rwdirs=(),
            pidfile=Path("/tmp/x/qemu.pid"),
            qemu_opts=qemu_opts,
        )

    def test_appended_after_the_pidfile(self, tmp_path: Path) -> None:
        """The words follow `-pidfile FILE` in the one --qemu-opts value."""
        argv = self._argv(
            tmp_path,
            ["-netdev", "user,id=n,hostfwd=tcp:127.0.0.1:2222-:22", "-device", "virtio-net-pci"],
        )
        assert (
            "--qemu-opts=-pidfile /tmp/x/qemu.pid -netdev "
            "user,id=n,hostfwd=tcp:127.0.0.1:2222-:22 -device virtio-net-pci"
        ) == argv[-1]
        assert "--qemu-opts=-pidfile /tmp/x/qemu.pid" == self._argv(tmp_path, [])[-1]

    @pytest.mark.parametrize("word", ["a;b", "$(x)", "a b", "=x", ""], ids=repr)
    def test_shell_words_refused(self, tmp_path: Path, word: str) -> None:
        """A word the shell would change is refused (vng pastes it into `sh -c` unquoted)."""
        with pytest.raises(ValueError, match="vng pastes it into a shell command unquoted"):
            self._argv(tmp_path, [word])
