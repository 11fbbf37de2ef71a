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
import subprocess
from pathlib import Path
from typing import Final

import attrs

from .errors import CommandFailed, ParseError, TransportError
from .rules import Origin

__all__ = [
    "OnDiskRules",
    "assemble_rules_d",
    "auditctl_list",
    "auditctl_status",
    "default_kmod_path",
    "default_uid_min",
    "discover_on_disk",
    "nixos_rules_file",
    "read_rules_text",
]

NIXOS_UNITS: Final = (
    "/etc/systemd/system/audit-rules-nixos.service",
    "/run/systemd/system/audit-rules-nixos.service",
)
RULES_D: Final = "/etc/audit/rules.d"
AUDIT_RULES: Final = "/etc/audit/audit.rules"
AUDITCTL_TIMEOUT: Final = 30.0


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
        text = Path(path).read_text(errors="replace")
    except OSError:
        return 1000
    for line in text.splitlines():
        match = re.match(r"^\s*UID_MIN\s+(\d+)\s*(?:#.*)?$", line)
        if match:
            return int(match.group(1))
    return 1000


def default_kmod_path() -> str:
    """The real path of the kmod binary: resolved from PATH, else /usr/bin/kmod."""
    found = shutil.which("kmod")
    if found is None:
        for candidate in ("/usr/bin/kmod", "/bin/kmod", "/run/current-system/sw/bin/kmod"):
            if os.path.exists(candidate):
                found = candidate
                break
    return os.path.realpath(found) if found else "/usr/bin/kmod"


def read_rules_text(path: str) -> str:
    """Read a rules source (`-` is stdin), turning failures into ParseError."""
    try:
        if path == "-":
            import sys  # noqa: PLC0415 - only needed for stdin

            return sys.stdin.read()
        data = Path(path).read_bytes()
    except IsADirectoryError:
        msg = "is a directory; pass the directory itself only for rules.d (it must hold *.rules)"
        raise ParseError(path, 0, "", msg) from None
    except OSError as exc:
        msg = f"cannot read it ({exc.strerror}); check the path and permissions"
        raise ParseError(path, 0, "", msg) from None
    if b"\x00" in data[:8192]:
        msg = "looks like a binary file, not audit rules; pass a rules file or `auditctl -l` output"
        raise ParseError(path, 0, "", msg)
    return data.decode("utf-8", errors="replace")


def _natural_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def assemble_rules_d(directory: str) -> tuple[str, list[Origin]]:
    """Assemble rules.d the way augenrules does, keeping each line's origin.

    augenrules concatenates `*.rules` in natural order (`ls -1v`), drops comments and blank
    lines, keeps only the last `-D`, `-b`, `-f` and `-e` lines, puts `-D`, `-b`, `-f` first and
    `-e` last.

    Raises:
        ParseError: the directory cannot be read or holds no *.rules file.
    """
    try:
        names = sorted((n for n in os.listdir(directory) if n.endswith(".rules")), key=_natural_key)
    except OSError as exc:
        msg = f"cannot list it ({exc.strerror})"
        raise ParseError(directory, 0, "", msg) from None
    if not names:
        msg = "holds no *.rules file; augenrules would load nothing"
        raise ParseError(directory, 0, "", msg)
    last: dict[str, tuple[str, Origin]] = {}
    body: list[tuple[str, Origin]] = []
    # augenrules `cat`s the files together: a file without a final newline runs into the
    # first line of the next one, and auditctl then sees the merged line.
    pending: tuple[str, Origin] | None = None
    for name in names:
        path = os.path.join(directory, name)
        text = read_rules_text(path)
        lines = text.split("\n")
        for number, line in enumerate(lines, start=1):
            is_last = number == len(lines)
            if is_last and line == "":
                break
            origin = Origin(path, number, line)
            text_line = line
            if pending is not None:
                text_line = pending[0] + line
                origin = Origin(pending[1].path, pending[1].line, text_line)
                pending = None
            if is_last:
                pending = (text_line, origin)
                break
            _classify(text_line, origin, last, body)
    if pending is not None:
        _classify(pending[0], pending[1], last, body)
    ordered = [last[k] for k in ("D", "b", "f") if k in last] + body
    if "e" in last:
        ordered.append(last["e"])
    if not ordered:
        return "", []
    return "\n".join(line for line, _ in ordered) + "\n", [o for _, o in ordered]


def _classify(
    line: str,
    origin: Origin,
    last: dict[str, tuple[str, Origin]],
    body: list[tuple[str, Origin]],
) -> None:
    """Sort one assembled line the way augenrules' awk program does."""
    if not line or re.match(r"^\s*#", line):
        return
    for key, pattern in (
        ("e", r"^\s*-e"),
        ("D", r"^\s*-D\s*$"),
        ("f", r"^\s*-f"),
        ("b", r"^\s*-b"),
    ):
        if re.match(pattern, line):
            last[key] = (line, origin)
            return
    body.append((line, origin))


def nixos_rules_file(units: tuple[str, ...] = NIXOS_UNITS) -> str | None:
    """The rules file `audit-rules-nixos.service` loads (`auditctl -R FILE`), if any."""
    for unit in units:
        try:
            text = Path(unit).read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if not line.startswith("ExecStart="):
                continue
            words = shlex.split(line.partition("=")[2], posix=True)
            for index, word in enumerate(words[:-1]):
                if word == "-R":
                    return words[index + 1]
    return None


@attrs.frozen(kw_only=True)
class OnDiskRules:
    """The rules the system loads at boot.

    Attributes:
        label: How the report names them.
        path: The file or directory.
        text: The (assembled) text.
        origins: Per-line origins when assembled from rules.d.
    """

    label: str
    path: str
    text: str
    origins: tuple[Origin, ...] | None = None


def discover_on_disk() -> OnDiskRules | None:
    """Find the rules this machine loads at boot, or None when there are none."""
    nixos = nixos_rules_file()
    if nixos is not None:
        return OnDiskRules(
            label=f"on-disk rules {nixos} (loaded by audit-rules-nixos.service)",
            path=nixos,
            text=read_rules_text(nixos),
        )
    if os.path.isdir(RULES_D) and any(n.endswith(".rules") for n in os.listdir(RULES_D)):
        text, origins = assemble_rules_d(RULES_D)
        return OnDiskRules(
            label=f"on-disk rules {RULES_D}/*.rules (as augenrules assembles them)",
            path=RULES_D,
            text=text,
            origins=tuple(origins),
        )
    if os.path.exists(AUDIT_RULES):
        return OnDiskRules(
            label=f"on-disk rules {AUDIT_RULES}",
            path=AUDIT_RULES,
            text=read_rules_text(AUDIT_RULES),
        )
    return None
