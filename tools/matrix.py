#!/usr/bin/env python3
"""The kernel matrix: Debian kernels (and an arm64 root) for the VM harness, by package name.

Legs (tests/test_vm_matrix.py runs each; tools/vm-verify and tools/vmrun.py take `--kernel`):

    amd64-6.1    the host's installed `linux-image-amd64` (bookworm), the root is the host's
    amd64-6.12   `linux-image-amd64` from bookworm-backports, unpacked, the root is the host's
    arm64-6.1    `linux-image-arm64` from bookworm, in an arm64 root built from Debian packages
    arm64-6.12   `linux-image-arm64` from bookworm-backports, in the same root

Everything is fetched through a private APT configuration (its own sources, lists, status
and archives under the cache directory) and only unpacked: nothing is installed on the host,
no foreign kernel goes into /boot, and the host's dpkg architecture list is not changed. A
kernel is cached by its package version; the arm64 root by the exact list of .debs it was
unpacked from, so a rerun with nothing new fetches nothing but the package lists.

    tools/matrix.py fetch [LEG...]   fetch and unpack (tools/setup runs it)
    tools/matrix.py list             one line per leg: name, kernel release, package, state

The cache is $KMOD_AUDIT_MATRIX_CACHE, default /var/cache/kmod-audit/matrix.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import attrs

__all__ = [
    "LEGS",
    "Leg",
    "MatrixError",
    "Unpacked",
    "cache_dir",
    "fetch",
    "unpacked",
]

SUITES: Final = {
    "bookworm": "http://deb.debian.org/debian bookworm main",
    "bookworm-updates": "http://deb.debian.org/debian bookworm-updates main",
    "bookworm-backports": "http://deb.debian.org/debian bookworm-backports main",
    "bookworm-security": "http://deb.debian.org/debian-security bookworm-security main",
}
KEYRING: Final = "/usr/share/keyrings/debian-archive-keyring.gpg"

#: The arm64 guest's userland: the audit userspace, kmod, the verifier's interpreter and
#: libraries (Debian's arm64 python3 runs the package from the repository: PYTHONPATH), a
#: static busybox for virtme-ng's initramfs, and what the guest scripts call.
ROOT_PACKAGES: Final = (
    "usr-is-merged",
    "base-files",
    "base-passwd",
    "bash",
    "dash",
    "coreutils",
    "util-linux",
    "mount",
    "kmod",
    "auditd",
    "python3",
    "python3-attr",
    "python3-pexpect",
    "python3-prometheus-client",
    "procps",
    "grep",
    "sed",
    "mawk",
    "findutils",
    "libc-bin",
    "busybox-static",
    "diffutils",
    "libpam-runtime",
    "libpam-modules",
)

#: Guest paths of the shared directories in a foreign root (its / is read-only).
GUEST_REPO: Final = "/opt/kmod-audit"
GUEST_WORK: Final = "/opt/kmod-audit-work"


class MatrixError(Exception):
    """A leg cannot be fetched or is not there; the message says what to do."""


@attrs.frozen(kw_only=True)
class Leg:
    """One kernel of the matrix.

    Attributes:
        name: `amd64-6.1`, ...
        arch: Debian's architecture name, `amd64` or `arm64` (what `vng --arch` wants).
        suite: The Debian suite the kernel comes from.
        host: Whether it is the host's installed kernel (nothing to fetch).
    """

    name: str
    arch: str
    suite: str
    host: bool = False


LEGS: Final = {
    leg.name: leg
    for leg in (
        Leg(name="amd64-6.1", arch="amd64", suite="bookworm", host=True),
        Leg(name="amd64-6.12", arch="amd64", suite="bookworm-backports"),
        Leg(name="arm64-6.1", arch="arm64", suite="bookworm"),
        Leg(name="arm64-6.12", arch="arm64", suite="bookworm-backports"),
    )
}


@attrs.frozen(kw_only=True)
class Unpacked:
    """A fetched kernel, ready to boot.

    Attributes:
        leg: Which leg.
        package: The kernel's Debian package and version, e.g. `linux-image-6.12.57+deb12-
            arm64 6.12.57-1~bpo12+1`.
        release: `uname -r` in the guest.
        image: The kernel image.
        root: The guest's root directory; None for the host's own root.
        modules: The kernel's module tree (with modules.dep).
    """

    leg: Leg
    package: str
    release: str
    image: Path
    root: Path | None
    modules: Path


def cache_dir() -> Path:
    """Where the matrix lives ($KMOD_AUDIT_MATRIX_CACHE or /var/cache/kmod-audit/matrix)."""
    return Path(os.environ.get("KMOD_AUDIT_MATRIX_CACHE", "/var/cache/kmod-audit/matrix"))


def _run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    what: str,
) -> str:
    try:
        proc = subprocess.run(
            list(argv),
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        msg = f"{what}: {argv[0]} failed: {exc}"
        raise MatrixError(msg) from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        msg = f"{what}: `{' '.join(argv[:4])} ...` exited {proc.returncode}:\n{tail}"
        raise MatrixError(msg)
    return proc.stdout


class _Apt:
    """A private APT for one architecture: its own sources, lists, status and archives."""

    def __init__(self, arch: str, base: Path) -> None:
        self.arch = arch
        self.dir = base / f"apt-{arch}"
        for sub in ("lists/partial", "archives/partial", "etc/apt.conf.d", "etc/preferences.d"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "etc/sources.list.d").mkdir(parents=True, exist_ok=True)
        (self.dir / "status").touch()
        (self.dir / "etc/sources.list").write_text(
            "".join(f"deb [signed-by={KEYRING}] {line}\n" for line in SUITES.values())
        )
        d = self.dir
        (self.dir / "apt.conf").write_text(
            f'Dir::Etc "{d}/etc";\n'
            f'Dir::Etc::sourcelist "{d}/etc/sources.list";\n'
            f'Dir::Etc::sourceparts "{d}/etc/sources.list.d";\n'
            f'Dir::Etc::parts "{d}/etc/apt.conf.d";\n'
            f'Dir::Etc::preferencesparts "{d}/etc/preferences.d";\n'
            f'Dir::State "{d}";\n'
            f'Dir::State::Lists "{d}/lists";\n'
            f'Dir::State::status "{d}/status";\n'
            f'Dir::Cache "{d}/cache";\n'
            f'Dir::Cache::archives "{d}/archives";\n'
            f'APT::Architecture "{arch}";\n'
            f'APT::Architectures {{ "{arch}"; }};\n'
            'Acquire::Languages "none";\n'
            'APT::Install-Recommends "false";\n'
        )
        self.env = {**os.environ, "APT_CONFIG": str(self.dir / "apt.conf"), "LC_ALL": "C"}

    def apt(self, *args: str, what: str) -> str:
        return _run(["apt-get", "-q", *args], env=self.env, what=what)

    def update(self) -> None:
        self.apt("update", what=f"apt-get update ({self.arch}, private lists)")

    def kernel_package(self, suite: str) -> tuple[str, str]:
        """The image package (and version) that `linux-image-<arch>` installs from `suite`.

        `bookworm` means the candidate APT picks without a target release: the newest of
        bookworm, bookworm-updates and bookworm-security (backports is never a default).
        """
        target = [] if suite == "bookworm" else ["-t", suite]
        plan = self.apt(
            "install",
            "-s",
            *target,
            f"linux-image-{self.arch}",
            what=f"apt-get install -s linux-image-{self.arch} ({suite})",
        )
        match = re.search(r"^Inst (linux-image-\d\S*) \((\S+) ", plan, re.MULTILINE)
        if match is None:
            msg = f"linux-image-{self.arch} ({suite}) names no linux-image-* package"
            raise MatrixError(msg)
        return match.group(1), match.group(2)

    def download(self, packages: Sequence[str], into: Path) -> list[Path]:
        """Download exact `name=version` packages into `into` (cached); return the .debs."""
        into.mkdir(parents=True, exist_ok=True)
        wanted = [p for p in packages if _deb_path(into, p) is None]
        if wanted:
            _run(
                ["apt-get", "-q", "download", *wanted],
                env=self.env,
                cwd=into,
                what=f"apt-get download ({self.arch})",
            )
        debs = []
        for package in packages:
            deb = _deb_path(into, package)
            if deb is None:
                msg = f"apt-get download left no .deb for {package} in {into}"
                raise MatrixError(msg)
            debs.append(deb)
        return debs

    def resolve(self, packages: Sequence[str]) -> list[str]:
        """`name=version` of every package an install of `packages` would unpack."""
        plan = self.apt("install", "-s", *packages, what=f"apt-get install -s ({self.arch})")
        found = re.findall(r"^Inst (\S+) \((\S+) ", plan, re.MULTILINE)
        if not found:
            msg = f"apt resolved no packages for the {self.arch} root"
            raise MatrixError(msg)
        return sorted(f"{name}={version}" for name, version in found)


def _deb_path(directory: Path, package: str) -> Path | None:
    name, version = package.split("=", 1)
    quoted = version.replace(":", "%3a")
    found = sorted(directory.glob(f"{name}_{quoted}_*.deb"))
    return found[0] if found else None


def _unpack(deb: Path, into: Path) -> None:
    """Unpack a .deb's files into `into` (no maintainer scripts); keep merged-/usr links."""
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    try:
        tar = subprocess.run(
            ["tar", "-x", "--keep-directory-symlink", "-C", str(into)],
            stdin=dpkg.stdout,
            capture_output=True,
            check=False,
            timeout=600,
        )
    finally:
        if dpkg.stdout is not None:
            dpkg.stdout.close()
        status = dpkg.wait(timeout=600)
    if status != 0 or tar.returncode != 0:
        msg = f"unpacking {deb.name} failed: {tar.stderr.decode(errors='replace').strip()}"
        raise MatrixError(msg)


def _depmod(root: Path, release: str) -> None:
    # The .debs ship no modules.dep: the host's depmod writes it (it reads arm64 modules).
    _run(["depmod", "-b", str(root), release], what=f"depmod -b {root} {release}")


def _kernel_release(root: Path) -> str:
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        msg = f"{root}/boot holds {len(images)} kernel images, expected one"
        raise MatrixError(msg)
    return images[0].name.removeprefix("vmlinuz-")


def _stamp(directory: Path) -> dict[str, object] | None:
    try:
        data = json.loads((directory / ".kmod-audit-complete").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _finish(staging: Path, final: Path, stamp: dict[str, object]) -> None:
    (staging / ".kmod-audit-complete").write_text(json.dumps(stamp, sort_keys=True) + "\n")
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)


def _deb_fields(deb: Path) -> tuple[str, str, str]:
    """Package, version and architecture of a .deb."""
    out = _run(
        ["dpkg-deb", "--show", "--showformat=${Package} ${Version} ${Architecture}", str(deb)],
        what=f"reading {deb}",
    ).split()
    if len(out) != 3:
        msg = f"{deb} is not a Debian package"
        raise MatrixError(msg)
    return out[0], out[1], out[2]


def _deb_release(deb: Path) -> str:
    """The kernel release a linux-image .deb boots as (its `boot/vmlinuz-<release>`)."""
    listing = _run(["dpkg-deb", "--contents", str(deb)], what=f"listing {deb}")
    found = re.findall(r"\./boot/vmlinuz-(\S+)$", listing, re.MULTILINE)
    if len(found) != 1:
        msg = f"{deb.name} holds {len(found)} kernel images (boot/vmlinuz-*), expected one"
        raise MatrixError(msg)
    return str(found[0])


def _kernel_dir(deb: Path, base: Path) -> Path:
    """An amd64 kernel .deb unpacked on its own (booted with the host's root), cached."""
    name, version, _ = _deb_fields(deb)
    # vng pastes the image path into a shell command: letters, digits and _./+,:@%- only.
    final = base / "kernels" / re.sub(r"[^A-Za-z0-9_.+,:@%-]", "-", f"{name}_{version}")
    if _stamp(final) is None:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=final.parent))
        _unpack(deb, staging)
        release = _kernel_release(staging)
        _depmod(staging, release)
        _finish(staging, final, {"kernels": {release: f"{name} {version}"}})
    return final


def _arm64_root(apt: _Apt, kernel_debs: Sequence[Path], base: Path) -> Path:
    """An arm64 root (ROOT_PACKAGES) with the kernels of `kernel_debs` in it, cached."""
    packages = apt.resolve(ROOT_PACKAGES)
    kernels = [_deb_fields(deb) for deb in kernel_debs]
    key = packages + [f"{name}={version}" for name, version, _ in kernels]
    digest = hashlib.sha256("\n".join(sorted(key)).encode()).hexdigest()[:16]
    final = base / "roots" / f"arm64-{digest}"
    if _stamp(final) is None:
        debs = apt.download(packages, base / "debs-arm64")
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=final.parent))
        _build_root(staging, [*debs, *kernel_debs])
        found = {}
        for (name, version, _), deb in zip(kernels, kernel_debs, strict=True):
            release = _deb_release(deb)
            if not (staging / "boot" / f"vmlinuz-{release}").is_file():
                msg = f"{deb.name} ({name} {version}) has no /boot/vmlinuz-{release}"
                raise MatrixError(msg)
            _depmod(staging, release)
            found[release] = f"{name} {version}"
        _finish(staging, final, {"packages": packages, "kernels": found})
    return final


def _release_of(directory: Path, package: str) -> str:
    """The release of `package` among the kernels unpacked in `directory`."""
    kernels = (_stamp(directory) or {}).get("kernels")
    if isinstance(kernels, dict):
        for release, holder in kernels.items():
            if holder == package:
                return str(release)
    msg = f"{directory} does not hold {package}; remove it and fetch again"
    raise MatrixError(msg)


def _record_leg(base: Path, leg: str, directory: Path, package: str) -> None:
    release = _release_of(directory, package)
    (base / "legs").mkdir(exist_ok=True)
    record = base / "legs" / f"{leg}.json"
    temporary = record.with_name(f".{record.name}.new")
    temporary.write_text(
        json.dumps({"dir": str(directory), "package": package, "release": release}) + "\n"
    )
    temporary.replace(record)


def _build_root(root: Path, debs: Sequence[Path]) -> None:
    """Unpack `debs` into `root` and do what their maintainer scripts would have done."""
    for directory in ("usr/bin", "usr/sbin", "usr/lib"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib"):
        (root / link).symlink_to(f"usr/{link}")
    for deb in debs:
        _unpack(deb, root)
    shutil.copy(root / "usr/share/base-passwd/passwd.master", root / "etc/passwd")
    shutil.copy(root / "usr/share/base-passwd/group.master", root / "etc/group")
    for link, target in (
        ("usr/bin/sh", "dash"),
        # virtme-init powers off with `poweroff -f` (systemd-sysv's, absent here).
        ("usr/bin/poweroff", "busybox"),
        ("usr/bin/awk", "mawk"),  # the awk alternative (mawk's postinst)
    ):
        path = root / link
        if not path.exists():
            path.unlink(missing_ok=True)
            path.symlink_to(target)
    # virtme-init needs the /dev/virtio-ports/virtme.* links (the script's output and exit
    # status), which udev makes. Debian's udev would cost ~15 s of coldplug under TCG: this
    # stand-in makes just those links, and udevadm does nothing.
    udevd = root / "usr/lib/systemd/systemd-udevd"
    udevd.parent.mkdir(parents=True, exist_ok=True)
    udevd.write_text(
        "#!/bin/sh\n"
        "mkdir -p /dev/virtio-ports\n"
        "for port in /sys/class/virtio-ports/*; do\n"
        '    [ -r "$port/name" ] || continue\n'
        '    name=$(cat "$port/name")\n'
        '    [ -n "$name" ] && ln -sf "../${port##*/}" "/dev/virtio-ports/$name"\n'
        "done\n"
        "exit 0\n"
    )
    udevadm = root / "usr/bin/udevadm"
    udevadm.write_text("#!/bin/sh\nexit 0\n")
    for script in (udevd, udevadm):
        script.chmod(0o755)
    # su (the interactive console) needs PAM's common-* files (pam-auth-update writes them).
    for kind in ("auth", "account", "password", "session", "session-noninteractive"):
        (root / f"etc/pam.d/common-{kind}").write_text(
            f"{kind.removesuffix('-noninteractive')} required pam_permit.so\n"
        )
    for directory in ("proc", "sys", "dev", "run", "tmp", "root", "var/log/audit", "var/tmp"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    for directory in ("tmp", "var/tmp"):
        (root / directory).chmod(0o1777)
    # Mount points of the shared directories (the guest's / is read-only).
    for guest in (GUEST_REPO, GUEST_WORK):
        (root / guest.lstrip("/")).mkdir(parents=True, exist_ok=True)


def _unpacked(leg: Leg, directory: Path, package: str, release: str) -> Unpacked:
    return Unpacked(
        leg=leg,
        package=package,
        release=release,
        image=directory / "boot" / f"vmlinuz-{release}",
        root=directory if leg.arch == "arm64" else None,
        modules=directory / "lib" / "modules" / release,
    )


def _read_leg(leg: Leg, base: Path) -> Unpacked:
    record = base / "legs" / f"{leg.name}.json"
    try:
        data = json.loads(record.read_text())
        directory, package, release = Path(data["dir"]), str(data["package"]), data["release"]
    except (OSError, ValueError, KeyError, TypeError):
        directory = None
    if directory is None or _stamp(directory) is None:
        msg = (
            f"kernel leg {leg.name} is not fetched (no {record}); "
            f"run `tools/matrix.py fetch {leg.name}` (tools/setup does)"
        )
        raise MatrixError(msg)
    return _unpacked(leg, directory, package, str(release))


def unpacked(name: str) -> Unpacked:
    """The fetched kernel of leg `name` (not the host's: see tools/vmrun.py's find_kernel).

    Raises:
        MatrixError: unknown leg, or not fetched (the message says how to fetch it).
    """
    leg = LEGS.get(name)
    if leg is None:
        msg = f"unknown kernel leg {name!r}; the legs are {', '.join(LEGS)}"
        raise MatrixError(msg)
    if leg.host:
        msg = f"{name} is the host's installed kernel; nothing is unpacked for it"
        raise MatrixError(msg)
    return _read_leg(leg, cache_dir())


def _prune(base: Path) -> None:
    """Remove unpacked kernels, roots and .debs no leg uses any more (bounded disk)."""
    used: set[Path] = set()
    for record in (base / "legs").glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            used.add(Path(json.loads(record.read_text())["dir"]))
    for kind in ("kernels", "roots"):
        for directory in (base / kind).glob("*"):
            if directory not in used:
                shutil.rmtree(directory, ignore_errors=True)


def fetch(names: Sequence[str] = ()) -> list[Unpacked]:
    """Fetch and unpack the legs named (default all but the host's); return them."""
    legs = [LEGS[n] for n in names] if names else list(LEGS.values())
    legs = [leg for leg in legs if not leg.host]
    base = cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    for arch in sorted({leg.arch for leg in legs}):
        apt = _Apt(arch, base)
        apt.update()
        mine = [leg for leg in legs if leg.arch == arch]
        chosen = [apt.kernel_package(leg.suite) for leg in mine]
        debs = apt.download([f"{n}={v}" for n, v in chosen], base / f"debs-{arch}")
        if arch == "arm64":
            root = _arm64_root(apt, debs, base)
            directories = [root] * len(mine)
        else:
            directories = [_kernel_dir(deb, base) for deb in debs]
        for leg, (name, version), directory in zip(mine, chosen, directories, strict=True):
            _record_leg(base, leg.name, directory, f"{name} {version}")
    _prune(base)
    return [_read_leg(leg, base) for leg in legs]


def kernel_for(spec: str, arch: str) -> Unpacked:
    """A kernel for the VM harness from a leg name, a package name, a .deb or a directory.

    - a leg (`arm64-6.12`): what `fetch` unpacked;
    - a Debian package name (`linux-image-6.12.95+deb12-amd64`): downloaded through the
      private APT of `arch` and unpacked (an arm64 one into its own arm64 root);
    - a `.deb` file: unpacked the same way;
    - a directory: an unpacked amd64 kernel package (`boot/vmlinuz-*` and its
      `lib/modules`), or for arm64 a whole guest root with one kernel in it.

    Raises:
        MatrixError: the spec names nothing usable; the message says what would be.
    """
    if spec in LEGS:
        leg = LEGS[spec]
        if leg.arch != arch:
            msg = f"kernel leg {spec} is {leg.arch}, not {arch}; drop --arch or make it match"
            raise MatrixError(msg)
        return unpacked(spec)
    custom = Leg(name=f"{arch}-custom", arch=arch, suite="")
    base = cache_dir()
    path = Path(spec)
    if path.is_dir():
        release = _kernel_release(path)
        if not (path / "lib" / "modules" / release / "modules.dep").is_file():
            msg = (
                f"{path} has no lib/modules/{release}/modules.dep; run `depmod -b {path} {release}`"
            )
            raise MatrixError(msg)
        if arch == "arm64" and not (path / "usr" / "sbin" / "auditctl").exists():
            msg = (
                f"{path} is not an arm64 guest root (no usr/sbin/auditctl); pass the kernel's "
                ".deb or package name instead, and an arm64 root is built around it"
            )
            raise MatrixError(msg)
        return _unpacked(custom, path.resolve(), f"unpacked {path}", release)
    base.mkdir(parents=True, exist_ok=True)
    apt = _Apt(arch, base)
    if path.suffix == ".deb":
        if not path.is_file():
            msg = f"--kernel {spec}: no such file"
            raise MatrixError(msg)
        deb = path.resolve()
    else:
        if not re.fullmatch(r"linux-image-[A-Za-z0-9.+~-]+", spec):
            msg = (
                f"--kernel {spec!r} is not a leg ({', '.join(LEGS)}), a linux-image-* package "
                "name, a .deb file or an unpacked kernel directory"
            )
            raise MatrixError(msg)
        apt.update()
        plan = apt.apt("install", "-s", spec, what=f"apt-get install -s {spec} ({arch})")
        match = re.search(rf"^Inst {re.escape(spec)} \((\S+) ", plan, re.MULTILINE)
        if match is None:
            msg = f"apt ({arch}) would not install {spec}"
            raise MatrixError(msg)
        (deb,) = apt.download([f"{spec}={match.group(1)}"], base / f"debs-{arch}")
    name, version, deb_arch = _deb_fields(deb)
    if deb_arch != arch:
        msg = f"{deb.name} is built for {deb_arch}, not {arch}; pass --arch {deb_arch}"
        raise MatrixError(msg)
    directory = _arm64_root(apt, [deb], base) if arch == "arm64" else _kernel_dir(deb, base)
    package = f"{name} {version}"
    return _unpacked(custom, directory, package, _release_of(directory, package))


def main(argv: Sequence[str] | None = None) -> int:
    """`fetch [LEG...]` or `list`."""
    parser = argparse.ArgumentParser(prog="tools/matrix.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetching = commands.add_parser("fetch", help="fetch and unpack the kernels (and arm64 root)")
    fetching.add_argument("legs", nargs="*", metavar="LEG", help=", ".join(LEGS))
    commands.add_parser("list", help="the legs and what is cached")
    options = parser.parse_args(argv)
    unknown = [name for name in getattr(options, "legs", []) if name not in LEGS]
    if unknown:
        parser.error(f"unknown leg {unknown[0]!r}; the legs are {', '.join(LEGS)}")
    if options.command == "fetch":
        try:
            fetched = fetch(options.legs)
        except MatrixError as exc:
            print(f"tools/matrix.py: {exc}", file=sys.stderr)
            return 2
        for item in fetched:
            where = item.image.parent.parent
            print(f"{item.leg.name}: {item.release} ({item.package}) in {where}")
        return 0
    for leg in LEGS.values():
        if leg.host:
            print(f"{leg.name}: the host's installed linux-image-amd64")
            continue
        try:
            item = unpacked(leg.name)
        except MatrixError as exc:
            print(f"{leg.name}: {exc}")
        else:
            print(f"{leg.name}: {item.release} ({item.package})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
