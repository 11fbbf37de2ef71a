"""The kernel matrix's tools without booting: tools/matrix.py and vmrun's other kernels.

What a guest of another kernel or architecture is given (vng's arguments, the paths it sees)
and how a bad `--kernel` is refused. tests/test_vm_matrix.py boots the legs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

import matrix
import vmrun

REPO = Path(__file__).resolve().parents[1]


def _argv(kernel: vmrun.Kernel, rwdirs: list[Path]) -> list[str]:
    return vmrun._vng_argv(
        Path("/venv/bin/vng"),
        kernel,
        append=("audit=1",),
        memory="1G",
        cpus=2,
        rwdirs=rwdirs,
        pidfile=Path("/tmp/x/qemu.pid"),
    )


def _matrix_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`tools/matrix.py ARGS` with the package importable, as tools/setup runs it."""
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "matrix.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "verifier")},
        check=False,
        timeout=60,
    )


def _unpacked(tmp_path: Path, release: str) -> Path:
    directory = tmp_path / "kernel"
    (directory / "boot").mkdir(parents=True)
    (directory / "boot" / f"vmlinuz-{release}").write_bytes(b"image")
    (directory / "lib" / "modules" / release).mkdir(parents=True)
    return directory


class TestGuestOfAnotherKernel:
    """What vng is told for an unpacked amd64 kernel and for an arm64 one."""

    def test_installed_kernel_by_release(self) -> None:
        """The host's kernel boots by its release, as before: nothing else is shared."""
        release = "6.1.0-57-amd64"
        kernel = vmrun.Kernel(
            release, Path(f"/boot/vmlinuz-{release}"), Path(f"/lib/modules/{release}")
        )
        argv = _argv(kernel, [])
        assert argv[1:3] == ["--run", release]
        assert not [a for a in argv if a.startswith(("--rodir", "--root", "--arch"))]

    def test_unpacked_amd64_kernel_shares_its_module_tree(self, tmp_path: Path) -> None:
        """By image path, and its directory at the same path (the guest's /var is empty)."""
        directory = _unpacked(tmp_path, "6.12.95+deb12-amd64")
        image = directory / "boot" / "vmlinuz-6.12.95+deb12-amd64"
        kernel = vmrun.Kernel("6.12.95+deb12-amd64", image, directory / "lib" / "modules")
        argv = _argv(kernel, [tmp_path])
        assert argv[1:3] == ["--run", str(image)]
        assert f"--rodir={directory}={directory}" in argv
        assert f"--rwdir={tmp_path}" in argv
        assert not [a for a in argv if a.startswith(("--root", "--arch"))]

    def test_arm64_kernel_boots_its_own_root(self, tmp_path: Path) -> None:
        """arm64: its root, the repository at GUEST_REPO, the rwdir at GUEST_WORK."""
        root = _unpacked(tmp_path, "6.12.95+deb12-arm64")
        image = root / "boot" / "vmlinuz-6.12.95+deb12-arm64"
        kernel = vmrun.Kernel(
            "6.12.95+deb12-arm64", image, root / "lib" / "modules", arch="arm64", root=root
        )
        work = tmp_path / "work"
        work.mkdir()
        argv = _argv(kernel, [work])
        assert "--arch=arm64" in argv
        assert f"--root={root}" in argv
        assert f"--rodir=/opt/kmod-audit={REPO}" in argv
        assert f"--rwdir=/opt/kmod-audit-work={work}" in argv
        assert kernel.qemu == "qemu-system-aarch64"
        with pytest.raises(ValueError, match="shares one rwdir"):
            _argv(kernel, [work, tmp_path])

    def test_guest_paths(self, tmp_path: Path) -> None:
        """The host's root: the same path; a foreign root: only the repository and the rwdir."""
        host = vmrun.Kernel("r", Path("/boot/vmlinuz-r"), Path("/lib/modules/r"))
        assert vmrun.guest_path(host, tmp_path / "x") == str(tmp_path / "x")
        arm = attrs.evolve(host, arch="arm64", root=tmp_path)
        script = REPO / "tools" / "guest" / "run-cases.sh"
        assert vmrun.guest_path(arm, script) == "/opt/kmod-audit/tools/guest/run-cases.sh"
        assert vmrun.guest_path(arm, tmp_path / "w" / "a", [tmp_path / "w"]) == (
            "/opt/kmod-audit-work/a"
        )
        with pytest.raises(ValueError, match="not shared with the arm64 guest"):
            vmrun.guest_path(arm, Path("/etc/passwd"))


class TestKernelSpecs:
    """A --kernel that names nothing bootable is refused with what to pass instead."""

    @pytest.fixture(autouse=True)
    def _empty_cache(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KMOD_AUDIT_MATRIX_CACHE", str(tmp_path / "cache"))

    def test_unknown_word(self) -> None:
        """Not a leg, package, .deb or directory."""
        with pytest.raises(vmrun.VMError, match=r"is not a leg \(amd64-6.1, amd64-6.12"):
            vmrun.kernel_from_spec("nonsense")

    def test_leg_and_arch_disagree(self) -> None:
        """arm64-6.12 with --arch amd64."""
        with pytest.raises(vmrun.VMError, match="is an arm64 kernel, not amd64"):
            vmrun.kernel_from_spec("arm64-6.12", "amd64")

    def test_arm64_alone_is_the_newest_arm64_leg(self) -> None:
        """--arch arm64 alone: arm64-6.12 (the host's kernel is amd64); here not fetched."""
        assert vmrun.ARM64_DEFAULT == "arm64-6.12"
        assert matrix.LEGS[vmrun.ARM64_DEFAULT].arch == "arm64"
        with pytest.raises(vmrun.VMError, match=r"kernel leg arm64-6\.12 is not fetched"):
            vmrun.kernel_from_spec(None, "arm64")

    def test_leg_not_fetched(self) -> None:
        """A leg the cache lacks names the command that fetches it."""
        with pytest.raises(vmrun.VMError, match=r"run `tools/matrix.py fetch arm64-6.1`"):
            vmrun.kernel_from_spec("arm64-6.1")

    def test_missing_deb(self, tmp_path: Path) -> None:
        """A .deb that is not there."""
        with pytest.raises(vmrun.VMError, match="no such file"):
            vmrun.kernel_from_spec(str(tmp_path / "linux-image-x_1_amd64.deb"))

    def test_directory_without_modules_dep(self, tmp_path: Path) -> None:
        """An unpacked kernel without modules.dep says how to make it."""
        directory = _unpacked(tmp_path, "6.12.1-amd64")
        with pytest.raises(
            vmrun.VMError, match=r"has no lib/modules/6.12.1-amd64/modules.dep; run `depmod -b"
        ):
            vmrun.kernel_from_spec(str(directory))

    def test_arm64_directory_must_be_a_root(self, tmp_path: Path) -> None:
        """An arm64 kernel directory without a guest userland is refused."""
        directory = _unpacked(tmp_path, "6.12.1-arm64")
        (directory / "lib" / "modules" / "6.12.1-arm64" / "modules.dep").write_text("")
        with pytest.raises(vmrun.VMError, match="is not an arm64 guest root"):
            vmrun.kernel_from_spec(str(directory), "arm64")

    def test_unpacked_amd64_directory(self, tmp_path: Path) -> None:
        """A depmod'ed unpacked amd64 kernel boots with the host's root."""
        directory = _unpacked(tmp_path, "6.12.1-amd64")
        (directory / "lib" / "modules" / "6.12.1-amd64" / "modules.dep").write_text("")
        kernel = vmrun.kernel_from_spec(str(directory))
        assert kernel.version == "6.12.1-amd64"
        assert kernel.root is None
        assert kernel.image == directory.resolve() / "boot" / "vmlinuz-6.12.1-amd64"

    def test_cli_refuses_an_unknown_leg(self) -> None:
        """`tools/matrix.py fetch` names the legs; `list` says what is missing."""
        proc = _matrix_cli("fetch", "arm64-5.10")
        assert proc.returncode == 2
        assert "unknown leg 'arm64-5.10'; the legs are amd64-6.1, amd64-6.12" in proc.stderr
        listed = _matrix_cli("list")
        assert listed.returncode == 0
        assert "arm64-6.12: kernel leg arm64-6.12 is not fetched" in listed.stdout

    def test_the_legs(self) -> None:
        """The four legs the README's kernel table claims."""
        assert {name: (leg.arch, leg.suite, leg.host) for name, leg in matrix.LEGS.items()} == {
            "amd64-6.1": ("amd64", "bookworm", True),
            "amd64-6.12": ("amd64", "bookworm-backports", False),
            "arm64-6.1": ("arm64", "bookworm", False),
            "arm64-6.12": ("arm64", "bookworm-backports", False),
        }


class TestVmVerifyUsage:
    """tools/vm-verify refuses or explains before it boots anything."""

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(REPO / "tools" / "vm-verify"), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def test_help_prints_the_usage(self) -> None:
        """`--help` prints the header's usage and exits 0 (no VM, no generate)."""
        proc = self._run("--help")
        assert proc.returncode == 0, proc.stderr
        assert "Usage: tools/vm-verify [--kernel K] [--arch amd64|arm64]" in proc.stdout
        assert "#" not in proc.stdout
        assert "vmrun" not in proc.stderr

    def test_unknown_arch(self) -> None:
        """`--arch riscv64`: exit 2, naming the value and the ones that work."""
        proc = self._run("--arch", "riscv64")
        assert proc.returncode == 2
        assert "tools/vm-verify: --arch riscv64: use amd64 or arm64" in proc.stderr

    def test_option_without_its_value(self) -> None:
        """`--kernel` last: exit 2, naming the option."""
        proc = self._run("--kernel")
        assert proc.returncode == 2
        assert "tools/vm-verify: --kernel needs a value" in proc.stderr
