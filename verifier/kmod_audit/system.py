"""Reading rules and defaults from the live system (this machine).

- the running rules: `auditctl -l` and the kernel state: `auditctl -s`;
- the on-disk rules that the next boot loads: on NixOS the file
  `audit-rules-nixos.service` passes to `auditctl -R`; elsewhere `/etc/audit/rules.d/*.rules`
  assembled the way augenrules does, or `/etc/audit/audit.rules`;
- defaults: UID_MIN from /etc/login.defs, the real path of the kmod binary.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
from typing import TYPE_CHECKING, BinaryIO, Final

import attrs

from .errors import CommandFailed, ConfigurationError, ParseError, TransportError

if TYPE_CHECKING:
    from .evaluate import Layout

__all__ = [
    "AUDIT_RULES",
    "MAX_RULES_BYTES",
    "NIXOS_UNITS",
    "RULES_D",
    "CopyOf",
    "auditctl_list",
    "auditctl_status",
    "decode_rules",
    "default_kmod_path",
    "default_uid_min",
    "kmod_path_for",
    "layout_of",
    "nixos_rules_file",
    "read_rules_bytes",
    "read_rules_text",
    "read_text",
]

NIXOS_UNITS: Final = (
    "/etc/systemd/system/audit-rules-nixos.service",
    "/run/systemd/system/audit-rules-nixos.service",
)
RULES_D: Final = "/etc/audit/rules.d"
AUDIT_RULES: Final = "/etc/audit/audit.rules"
AUDITCTL_TIMEOUT: Final = 30.0


#: How many symlinks a path lookup follows before it gives up (the kernel's MAXSYMLINKS).
_MAX_LINKS: Final = 40


@attrs.frozen
class CopyOf:
    """A copy of the target's root filesystem (`--root DIR`): its files, links resolved in it.

    Attributes:
        root: The directory that holds the copy.
    """

    root: str

    @property
    def where(self) -> str:
        """Where the files are, in a message."""
        return f"in {self.root}"

    def is_dir(self, path: str) -> bool | None:
        """Whether `path` is a directory on the target; None when the copy cannot say."""
        found = self._inside(path, follow=True)
        return found if found is None or isinstance(found, bool) else os.path.isdir(found)

    def exists(self, path: str) -> bool | None:
        """Whether `path` exists on the target; None when the copy cannot say."""
        found = self._inside(path, follow=False)
        return found if found is None or isinstance(found, bool) else os.path.lexists(found)

    def local(self, path: str) -> str | None:
        """This machine's path of the target's `path` in the copy, its links resolved."""
        found = self._inside(path, follow=True)
        return found if isinstance(found, str) else None

    def real(self, path: str) -> str | None:
        """The target's `path` with its links resolved in the copy."""
        found = self.local(path)
        return None if found is None else found[len(self.root) :] or "/"

    def _inside(self, path: str, *, follow: bool) -> str | bool | None:
        """This machine's path of the target's `path`, its symlinks resolved in the copy.

        False when the lookup fails as the kernel's would (too many links), None when a link
        cannot be read.
        """
        parts = [p for p in path.split("/") if p]
        parts.reverse()
        done = ""
        hops = 0
        while parts:
            name = parts.pop()
            if name == ".":
                continue
            if name == "..":
                done = done.rsplit("/", 1)[0]
                continue
            here = self.root + done + "/" + name
            if (parts or follow) and os.path.islink(here):
                hops += 1
                if hops > _MAX_LINKS:
                    return False
                try:
                    target = os.readlink(here)
                except OSError:
                    return None
                if target.startswith("/"):
                    done = ""
                parts.extend(reversed([p for p in target.split("/") if p]))
                continue
            done += "/" + name
        return self.root + (done or "/")


def layout_of(root: str) -> Layout:
    """How the filesystem at `root` (a copy of a target's) links /bin and /sbin into /usr.

    Raises:
        ConfigurationError: `root` is not a directory.
    """
    if not os.path.isdir(root):
        msg = f"--root {root}: not a directory; pass a copy of the target's root filesystem"
        raise ConfigurationError(msg)

    files = CopyOf(root)
    if files.real("/bin") != "/usr/bin":
        return "split"
    if "/usr/bin" in {files.real("/sbin"), files.real("/usr/sbin")}:
        return "merged-sbin"
    return "merged"


def read_text(path: str) -> str:
    """The text of the file at `path`, as Path.read_text (pathlib costs start-up time)."""
    with open(path, errors="replace") as file:
        return file.read()


def _auditctl(*args: str) -> str:
    auditctl = shutil.which("auditctl") or next(
        (p for p in ("/sbin/auditctl", "/usr/sbin/auditctl") if os.path.exists(p)), None
    )
    if auditctl is None:
        msg = (
            "auditctl was not found on PATH, /sbin or /usr/sbin; install the audit userspace "
            "(Debian: apt-get install auditd; NixOS: security.audit.enable = true)"
        )
        raise TransportError(msg)
    import subprocess  # noqa: PLC0415 - `check FILE` never runs a program: start lean

    argv = [auditctl, *args]
    try:
        # Bytes, not text=True: universal newlines would turn a key's trailing CR into
        # nothing (`-k x\r` from a CRLF file is a real, different key).
        proc = subprocess.run(argv, capture_output=True, timeout=AUDITCTL_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        msg = (
            f"`{shlex.join(argv)}` did not answer within {AUDITCTL_TIMEOUT:g} s; "
            "is the kernel audit subsystem stuck?"
        )
        raise TransportError(msg) from exc
    except OSError as exc:
        msg = f"could not run `{shlex.join(argv)}`: {exc}"
        raise TransportError(msg) from exc
    stdout = proc.stdout.decode(errors="replace")
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        hint = (
            "run kmod-audit as root (auditctl needs CAP_AUDIT_CONTROL)"
            if os.geteuid() != 0
            else "check that the kernel has audit support (CONFIG_AUDIT) and audit=1"
        )
        msg = f"`{shlex.join(argv)}` failed: {stderr.strip() or 'no error text'}; {hint}"
        raise CommandFailed(
            msg, command=shlex.join(argv), status=proc.returncode, output=stdout + stderr
        )
    return stdout


def auditctl_list() -> str:
    """Return the output of `auditctl -l` (the rules the kernel holds).

    Raises:
        TransportError: auditctl is missing, not permitted, or failed.
    """
    return _auditctl("-l")


def auditctl_status() -> dict[str, str]:
    """Return `auditctl -s` as a mapping (`enabled`, `failure`, `pid`, `lost`, ...).

    Raises:
        TransportError: auditctl is missing, not permitted, or failed.
    """
    status: dict[str, str] = {}
    for line in _auditctl("-s").splitlines():
        name, _, value = line.strip().partition(" ")
        if name:
            status[name] = value.strip()
    return status


def default_uid_min(path: str = "/etc/login.defs") -> int:
    """UID_MIN from login.defs, 1000 when absent or unreadable."""
    try:
        text = read_text(path)
    except OSError:
        return 1000
    for line in text.splitlines():
        match = re.match(r"^\s*UID_MIN\s+(\d+)\s*(?:#.*)?$", line)
        if match:
            return int(match.group(1))
    return 1000


def kmod_path_for(*, this_machine: bool) -> str:
    """The kmod path `check` and `generate` assume when `--kmod-path` is not given.

    For rules meant for this machine, the real path of its kmod binary; for another
    machine (a foreign `--arch`, or `check --offline`) this machine's files say nothing, so
    the usual `/usr/bin/kmod` (Debian, RHEL, AL2023).
    """
    return default_kmod_path() if this_machine else "/usr/bin/kmod"


def default_kmod_path() -> str:
    """The real path of the kmod binary: resolved from PATH, else /usr/bin/kmod."""
    found = shutil.which("kmod")
    if found is None:
        for candidate in ("/usr/bin/kmod", "/bin/kmod", "/run/current-system/sw/bin/kmod"):
            if os.path.exists(candidate):
                found = candidate
                break
    return os.path.realpath(found) if found else "/usr/bin/kmod"


MAX_RULES_BYTES: Final = 64 * 1024 * 1024
"""The most a rules source may hold (far above any real rules file: 64 MiB)."""

_KINDS: Final = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _special_kind(mode: int) -> str | None:
    """What a non-regular, non-directory file is (None for regular files and directories)."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def _refuse_special(path: str, kind: str) -> ParseError:
    msg = (
        f"is {kind}, not a regular file; kmod-audit reads rules only from regular files, "
        "directories (rules.d) and `-` (stdin): copy the rules into a file"
    )
    return ParseError(path, 0, "", msg)


def _too_big(path: str) -> ParseError:
    msg = (
        f"holds more than {MAX_RULES_BYTES // (1024 * 1024)} MiB (the limit for a rules "
        "source, far above any real rules file); pass the audit rules file itself"
    )
    return ParseError(path, 0, "", msg)


def _read_bounded(stream: BinaryIO, path: str) -> bytes:
    data = stream.read(MAX_RULES_BYTES + 1)
    if len(data) > MAX_RULES_BYTES:
        raise _too_big(path)
    return data


def _read_stdin() -> bytes:
    import sys  # noqa: PLC0415 - only needed for stdin

    where = "<stdin>"
    if sys.stdin is None:
        msg = "stdin is closed; pipe the rules into kmod-audit or pass a file"
        raise ParseError(where, 0, "", msg)
    try:
        return _read_bounded(sys.stdin.buffer, where)
    except OSError as exc:
        msg = f"cannot read stdin ({exc.strerror}); pipe the rules into kmod-audit or pass a file"
        raise ParseError(where, 0, "", msg) from None


def read_rules_bytes(path: str) -> bytes:
    """Read a rules source (`-` is stdin) as bytes, bounded and without blocking.

    Only regular files are opened: a FIFO, device or socket is refused before it is read
    (so `/dev/zero` or a FIFO with no writer never hangs), and no source may exceed
    `MAX_RULES_BYTES`.

    Raises:
        ParseError: the source is missing, unreadable, special, or too big.
    """
    if path == "-":
        return _read_stdin()
    try:
        kind = _special_kind(os.stat(path).st_mode)
        if kind is not None:
            raise _refuse_special(path, kind)
        # O_NONBLOCK: should the path have been swapped for a FIFO since the stat, the
        # open does not wait for a writer; fstat below then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as stream:
            mode = os.fstat(stream.fileno()).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError  # noqa: TRY301 - handled with the open's own
            kind = _special_kind(mode)
            if kind is not None:
                raise _refuse_special(path, kind)
            return _read_bounded(stream, path)
    except IsADirectoryError:
        msg = "is a directory; pass the directory itself only for rules.d (it must hold *.rules)"
        raise ParseError(path, 0, "", msg) from None
    except OSError as exc:
        msg = f"cannot read it ({exc.strerror}); check the path and permissions"
        raise ParseError(path, 0, "", msg) from None


def decode_rules(data: bytes, path: str) -> str:
    """Rules text from bytes: invalid UTF-8 replaced; a binary file is a ParseError."""
    if b"\x00" in data[:8192]:
        msg = "looks like a binary file, not audit rules; pass a rules file or `auditctl -l` output"
        raise ParseError(path, 0, "", msg)
    return data.decode("utf-8", errors="replace")


def read_rules_text(path: str) -> str:
    """Read a rules source (`-` is stdin), turning failures into ParseError.

    Invalid UTF-8 is replaced (U+FFFD), whatever the locale, for files and stdin alike.
    """
    return decode_rules(read_rules_bytes(path), "<stdin>" if path == "-" else path)


def nixos_rules_file(units: tuple[str, ...] = NIXOS_UNITS) -> str | None:
    """The rules file `audit-rules-nixos.service` loads (`auditctl -R FILE`), if any.

    Raises:
        ParseError: the unit's ExecStart is not valid shell-like quoting.
    """
    for unit in units:
        try:
            text = read_text(unit)
        except OSError:
            continue
        for line in text.splitlines():
            if not line.startswith("ExecStart="):
                continue
            command = line.partition("=")[2]
            try:
                words = shlex.split(command, posix=True)
            except ValueError as exc:
                msg = (
                    f"its ExecStart cannot be read ({exc}: {command!r}); fix the unit "
                    "(on NixOS: rebuild the system), or pass the rules file to check"
                )
                raise ParseError(unit, 0, line, msg) from None
            for index, word in enumerate(words[:-1]):
                if word == "-R":
                    return words[index + 1]
    return None
