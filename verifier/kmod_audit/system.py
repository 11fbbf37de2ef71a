"""Reading rules and defaults from the live system (this machine).

- the running rules: `auditctl -l` and the kernel state: `auditctl -s`;
- the on-disk rules that the next boot loads: on NixOS the file
  `audit-rules-nixos.service` passes to `auditctl -R`; elsewhere `/etc/audit/rules.d/*.rules`
  assembled the way augenrules does, or `/etc/audit/audit.rules`;
- defaults: UID_MIN from /etc/login.defs, the real path of the kmod binary.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import stat
from collections.abc import Sequence
from typing import Any, BinaryIO, Final, Literal

import attrs

from .errors import CommandFailed, ParseError, TransportError
from .rules import Origin

__all__ = [
    "ALL_DIALECTS",
    "MAX_RULES_BYTES",
    "Assembly",
    "Augenrules",
    "OnDiskRules",
    "assemble_rules_d",
    "assemble_rules_d_all",
    "auditctl_list",
    "auditctl_status",
    "augenrules_dialects",
    "default_kmod_path",
    "default_uid_min",
    "discover_on_disk",
    "filevercmp",
    "nixos_rules_file",
    "read_rules_bytes",
    "read_rules_text",
    "rules_d_assemblies",
]

NIXOS_UNITS: Final = (
    "/etc/systemd/system/audit-rules-nixos.service",
    "/run/systemd/system/audit-rules-nixos.service",
)
RULES_D: Final = "/etc/audit/rules.d"
AUDIT_RULES: Final = "/etc/audit/audit.rules"
AUDITCTL_TIMEOUT: Final = 30.0


def _read_text(path: str) -> str:
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
        text = _read_text(path)
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


def _decode(data: bytes, path: str) -> str:
    if b"\x00" in data[:8192]:
        msg = "looks like a binary file, not audit rules; pass a rules file or `auditctl -l` output"
        raise ParseError(path, 0, "", msg)
    return data.decode("utf-8", errors="replace")


def read_rules_text(path: str) -> str:
    """Read a rules source (`-` is stdin), turning failures into ParseError.

    Invalid UTF-8 is replaced (U+FFFD), whatever the locale, for files and stdin alike.
    """
    return _decode(read_rules_bytes(path), "<stdin>" if path == "-" else path)


# ---------------------------------------------------------------------------------------
# augenrules: how it assembles rules.d, modelled exactly (script version and awk dialect).

AUGENRULES_SCRIPTS: Final = ("/sbin/augenrules", "/usr/sbin/augenrules")
SYSTEMD_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The PATH systemd gives auditd.service, whose ExecStartPost runs augenrules."""
_IFS: Final = b" \t\n"
# What gawk's `\s` ([[:space:]]) matches beyond ASCII in a UTF-8 locale (glibc iswspace).
_UNICODE_SPACES: Final = (
    "\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2008\u2009\u200a\u2028\u2029\u205f\u3000"
)


@attrs.frozen(kw_only=True)
class Augenrules:
    r"""One way augenrules assembles rules.d: its script's version, its awk, its locale.

    Attributes:
        listing: `ls`: `for rules in $(/bin/ls -1v DIR | grep "\\.rules$")` (audit <= 4.1.2:
            names are split at blanks and globbed); `glob`: `DIR/*.rules | sort -zV |
            xargs -0r cat` (audit >= 4.1.3).
        quoted_cat: `cat DIR/"$rules"` (audit >= 3.1.1) rather than `cat DIR/$rules`
            (Debian 12's 3.0.9: split and globbed a second time).
        strip_cr: The awk program drops a trailing CR (`sub(/\\r$/, "")`, audit >= 3.1.1).
        awk_space: awk knows `\\s` (gawk, busybox); mawk (Debian's awk) reads it as `s`, so an
            indented `-e 2` stays in place.
        utf8: augenrules runs in a UTF-8 locale: grep drops a name that is not UTF-8, gawk's
            `\\s` matches Unicode spaces too.
    """

    listing: Literal["ls", "glob"]
    quoted_cat: bool
    strip_cr: bool
    awk_space: bool
    utf8: bool

    def describe(self) -> str:
        """Return a short human description."""
        script = (
            "audit >= 4.1.3 (sort -V)"
            if self.listing == "glob"
            else "audit 3.1.1 to 4.1.2 (ls -v)"
            if self.quoted_cat
            else "audit <= 3.1 (ls -v, unquoted cat)"
        )
        awk = "awk with \\s (gawk)" if self.awk_space else "awk without \\s (mawk)"
        return f"{script}, {awk}, {'UTF-8' if self.utf8 else 'C'} locale"


_SCRIPTS: Final[tuple[dict[str, Any], ...]] = (
    {"listing": "ls", "quoted_cat": False, "strip_cr": False},
    {"listing": "ls", "quoted_cat": True, "strip_cr": True},
    {"listing": "glob", "quoted_cat": True, "strip_cr": True},
)


def _script_variants(text: str) -> list[dict[str, Any]]:
    """The script variants an augenrules text matches (every one when not recognised)."""
    if "sort -zV" in text and "xargs -0r cat" in text:
        return [_SCRIPTS[2]]
    if re.search(r"ls -1v \$\{?SourceRulesDir\}? \| grep", text):
        quoted = '/"${rules}"' in text
        unquoted = re.search(r"cat \$\{?SourceRulesDir\}?/\$\{?rules\}?\s*$", text, re.MULTILINE)
        strip = r"sub(/\r$/" in text
        if quoted != bool(unquoted):
            return [{"listing": "ls", "quoted_cat": quoted, "strip_cr": strip}]
    return list(_SCRIPTS)


def _awk_variants(path: str) -> list[bool]:
    r"""Whether the awk that augenrules runs knows `\s` (both when unknown)."""
    found = shutil.which("awk", path=path)
    name = os.path.basename(os.path.realpath(found)) if found else ""
    if name.startswith("mawk"):
        return [False]
    if name.startswith("gawk"):
        return [True]
    # busybox takes `\s` from the C library's regcomp (glibc: yes, musl: no); others vary.
    return [True, False]


def augenrules_dialects(
    scripts: Sequence[str] = AUGENRULES_SCRIPTS, path: str = SYSTEMD_PATH
) -> tuple[tuple[Augenrules, ...], str]:
    """The ways this machine's augenrules may assemble rules.d, and how that was decided.

    Read from the installed augenrules script and the `awk` on systemd's PATH. The locale
    augenrules runs in is not known, so both are returned; so is every script version when
    no script is found, and both awk dialects when awk is neither mawk nor gawk.
    """
    script_text = None
    script_path = ""
    for candidate in scripts:
        try:
            script_text = _read_text(candidate)
        except OSError:
            continue
        script_path = candidate
        break
    variants = _script_variants(script_text) if script_text is not None else list(_SCRIPTS)
    spaces = _awk_variants(path)
    found = shutil.which("awk", path=path)
    how = (
        f"{script_path or 'no augenrules script found'}, "
        f"awk {os.path.realpath(found) if found else 'not found'}"
    )
    dialects = tuple(
        Augenrules(**variant, awk_space=space, utf8=utf8)
        for variant in variants
        for space in spaces
        for utf8 in (False, True)
    )
    return dialects, how


ALL_DIALECTS: Final = tuple(
    Augenrules(**variant, awk_space=space, utf8=utf8)
    for variant in _SCRIPTS
    for space in (False, True)
    for utf8 in (False, True)
)
"""Every modelled augenrules (for rules.d from another machine)."""


def _order(name: bytes, pos: int, length: int) -> int:
    if pos == length:
        return -1
    c = name[pos]
    if 0x30 <= c <= 0x39:
        return 0
    if 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A:
        return c
    if c == 0x7E:
        return -2
    return c + 256


def _isdigit(name: bytes, pos: int, length: int) -> bool:
    return pos < length and 0x30 <= name[pos] <= 0x39


def _verrevcmp(a: bytes, alen: int, b: bytes, blen: int) -> int:
    """Gnulib's verrevcmp (the Debian version comparison) over a[:alen] and b[:blen]."""
    apos = bpos = 0
    while apos < alen or bpos < blen:
        first_diff = 0
        while (apos < alen and not _isdigit(a, apos, alen)) or (
            bpos < blen and not _isdigit(b, bpos, blen)
        ):
            ac, bc = _order(a, apos, alen), _order(b, bpos, blen)
            if ac != bc:
                return ac - bc
            apos += 1
            bpos += 1
        while apos < alen and a[apos] == 0x30:
            apos += 1
        while bpos < blen and b[bpos] == 0x30:
            bpos += 1
        while _isdigit(a, apos, alen) and _isdigit(b, bpos, blen):
            if not first_diff:
                first_diff = a[apos] - b[bpos]
            apos += 1
            bpos += 1
        if _isdigit(a, apos, alen):
            return 1
        if _isdigit(b, bpos, blen):
            return -1
        if first_diff:
            return first_diff
    return 0


def _prefix_length(name: bytes) -> int:
    r"""The length of `name` without its suffix `(\.[A-Za-z~][A-Za-z0-9~]*)*$`."""
    length = len(name)
    prefix = 0
    i = 0
    while True:
        if i == length:
            return prefix
        i += 1
        prefix = i
        while i + 1 < length and name[i] == 0x2E and _suffix_start(name[i + 1]):
            i += 2
            while i < length and (_suffix_start(name[i]) or 0x30 <= name[i] <= 0x39):
                i += 1


def _suffix_start(c: int) -> bool:
    return 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or c == 0x7E


def filevercmp(a: bytes, b: bytes) -> int:
    """GNU filevercmp (gnulib 2022, coreutils >= 9.1): the order of `ls -v` and `sort -V`.

    Returns:
        Negative, zero or positive as `a` sorts before, with or after `b`.
    """
    if not a:
        return -int(bool(b))
    if not b:
        return 1
    if a[:1] == b".":
        if b[:1] != b".":
            return -1
        if a == b".":
            return -int(b != b".")
        if b == b".":
            return 1
        if a == b"..":
            return -int(b != b"..")
        if b == b"..":
            return 1
    elif b[:1] == b".":
        return 1
    aprefix, bprefix = _prefix_length(a), _prefix_length(b)
    one_pass_only = aprefix == len(a) and bprefix == len(b)
    result = _verrevcmp(a, aprefix, b, bprefix)
    return result if result or one_pass_only else _verrevcmp(a, len(a), b, len(b))


def _version_order(a: bytes, b: bytes) -> int:
    """`ls -v`'s order: filevercmp, ties broken by strcmp (sort -V by its last resort)."""
    return filevercmp(a, b) or (a > b) - (a < b)


def _ifs_split(word: bytes) -> list[bytes]:
    return [field for field in re.split(rb"[ \t\n]+", word) if field]


def _glob_regex(pattern: bytes) -> re.Pattern[bytes] | None:
    """The sh (dash) pattern as a regex, or None when it has no glob character."""
    if not re.search(rb"[*?\[]", pattern):
        return None
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i : i + 1]
        if c == b"\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1 : i + 2]))
            i += 2
            continue
        if c == b"*":
            out.append(b".*")
        elif c == b"?":
            out.append(b".")
        elif c == b"[":
            j = i + 1
            negate = pattern[j : j + 1] == b"!"
            j += negate
            k = j + 1 if pattern[j : j + 1] == b"]" else j
            end = pattern.find(b"]", k)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = _bracket_body(pattern[j:end])
                out.append(b"[" + (b"^" if negate else b"") + body + b"]")
                i = end + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile(b"".join(out), re.DOTALL)
    except re.error:
        return None


def _bracket_body(body: bytes) -> bytes:
    """A sh bracket expression's body as a Python regex class body."""
    out = []
    i = 0
    while i < len(body):
        if body.startswith(b"[:", i) and (end := body.find(b":]", i + 2)) > 0:
            name = body[i + 2 : end]
            out.append(_POSIX_CLASSES.get(name, re.escape(body[i : end + 2])))
            i = end + 2
            continue
        c = body[i : i + 1]
        out.append(c if c == b"-" and 0 < i < len(body) - 1 else re.escape(c))
        i += 1
    return b"".join(out)


_POSIX_CLASSES: Final = {
    b"alpha": b"A-Za-z",
    b"digit": b"0-9",
    b"alnum": b"A-Za-z0-9",
    b"upper": b"A-Z",
    b"lower": b"a-z",
    b"space": b" \\t\\n\\r\\f\\v",
    b"blank": b" \\t",
    b"punct": rb"!-/:-@\[-`{-~",
    b"xdigit": b"0-9A-Fa-f",
}


def _glob(pattern: bytes, directory: bytes, prefix: bytes) -> list[bytes]:
    """Pathname expansion of `prefix + pattern` as dash does it (pattern: one name).

    `directory` is where the name is looked up; `prefix` is how the result is spelled.
    """
    regex = _glob_regex(pattern)
    if regex is None:
        return [prefix + pattern]
    try:
        entries = os.listdir(directory or b".")
    except OSError:
        entries = []
    matches = sorted(
        name
        for name in [*entries, b".", b".."]
        if regex.fullmatch(name) and (not name.startswith(b".") or pattern.startswith(b"."))
    )
    return [prefix + name for name in matches] or [prefix + pattern]


def _cat_arguments(directory: bytes, dialect: Augenrules, cwd: bytes) -> list[bytes]:
    """The paths augenrules hands to `cat`, in order (relative ones are relative to cwd)."""
    base = directory.rstrip(b"/") or b"/"
    slash = base + b"/" if base != b"/" else b"/"
    entries = os.listdir(base)
    if dialect.listing == "glob":
        found = [
            slash + name
            for name in entries
            if not name.startswith(b".")
            and name.endswith(b".rules")
            # `[ -e "$rules" ] || continue`: a dangling symlink is skipped.
            and os.path.exists(slash + name)
        ]
        return sorted(found, key=functools.cmp_to_key(_version_order))
    names = sorted(
        (n for n in entries if not n.startswith(b".")), key=functools.cmp_to_key(_version_order)
    )
    lines = b"\n".join(names).split(b"\n")
    selected = [
        line for line in lines if line.endswith(b".rules") and (not dialect.utf8 or _is_utf8(line))
    ]
    words = [
        match
        for line in selected
        for field in _ifs_split(line)
        for match in _glob(field, os.path.join(cwd, b""), b"")
    ]
    arguments: list[bytes] = []
    for word in words:
        if dialect.quoted_cat:
            arguments.append(slash + word)
            continue
        fields = _ifs_split(b"/" + word)
        first, rest = fields[0], fields[1:]
        arguments.extend(_glob(first[1:], base, slash))
        for field in rest:
            arguments.extend(_glob(field, cwd, b""))
    return arguments


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@attrs.frozen(kw_only=True)
class Assembly:
    """rules.d as one augenrules dialect assembles it.

    Attributes:
        dialects: The dialects that give this result.
        text: The assembled rules, one per line (without augenrules' header and the empty
            lines it prints for absent `-D`/`-b`/`-f`/`-e`).
        origins: Where each line of `text` came from.
        file_text: Exactly what augenrules writes to audit.rules (header included).
        notes: Files augenrules does not load, and why.
    """

    dialects: tuple[Augenrules, ...]
    text: str
    origins: tuple[Origin, ...]
    file_text: bytes
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        """Return the dialects, for a report."""
        more = len(self.dialects) - 1
        return self.dialects[0].describe() + (f" (and {more} more)" if more else "")


def _cat(
    arguments: list[bytes], cwd: bytes, directory: str, cache: dict[bytes, bytes]
) -> tuple[list[tuple[bytes, Origin]], list[str]]:
    """Concatenate the files as `cat` does; return the lines with origins, and notes.

    `cache` holds the files already read (by path).
    """
    lines: list[tuple[bytes, Origin]] = []
    notes: list[str] = []
    pending: tuple[bytes, Origin] | None = None
    total = 0
    absolute = os.fsencode(os.path.join(os.path.abspath(directory), ""))
    read: set[bytes] = set()
    for argument in arguments:
        full = os.path.join(cwd, argument)
        # Name the files as the user named the directory.
        shown = (
            os.path.join(directory, os.fsdecode(full[len(absolute) :]))
            if full.startswith(absolute)
            else os.fsdecode(full)
        )
        try:
            mode = os.stat(full).st_mode
        except OSError as exc:
            notes.append(f"`cat {shown}` fails ({exc.strerror})")
            continue
        if stat.S_ISDIR(mode):
            notes.append(f"`cat {shown}` fails (is a directory)")
            continue
        data = cache[full] if full in cache else cache.setdefault(full, read_rules_bytes(shown))
        read.add(os.path.realpath(full))
        total += len(data)
        if total > MAX_RULES_BYTES:
            msg = (
                f"its rules files together hold more than {MAX_RULES_BYTES // (1024 * 1024)} "
                "MiB (the limit for a rules source, far above any real rules.d)"
            )
            raise ParseError(directory, 0, "", msg)
        _decode(data, shown)  # refuses a binary file
        pieces = data.split(b"\n")
        for number, piece in enumerate(pieces, start=1):
            last = number == len(pieces)
            if last and piece == b"":
                break
            origin = Origin(shown, number, "")
            if pending is not None:
                piece = pending[0] + piece  # noqa: PLW2901 - the merged line
                origin = pending[1]
                pending = None
            if last:
                pending = (piece, origin)
                break
            lines.append((piece, origin))
    if pending is not None:
        lines.append(pending)
    for name in sorted(os.listdir(absolute)):
        path = os.path.join(absolute, name)
        if (
            name.endswith(b".rules")
            and not name.startswith(b".")
            and os.path.isfile(path)
            and os.path.realpath(path) not in read
        ):
            notes.append(
                f"{os.path.join(directory, os.fsdecode(name))} is not loaded: augenrules' "
                "shell splits or expands its name, or grep drops it"
            )
    return lines, notes


def _awk(
    lines: list[tuple[bytes, Origin]], dialect: Augenrules, directory: str
) -> tuple[list[tuple[str, Origin]], bytes]:
    """Augenrules' awk program: drop comments, move the last -D/-b/-f first, -e last."""
    space = (
        "[ \t\n\v\f\r" + (_UNICODE_SPACES if dialect.utf8 else "") + "]"
        if dialect.awk_space
        else "s"
    )
    patterns = (
        ("#", re.compile(f"{space}*#")),
        ("e", re.compile(f"{space}*-e")),
        ("D", re.compile(f"{space}*-D{space}*\\Z")),
        ("f", re.compile(f"{space}*-f")),
        ("b", re.compile(f"{space}*-b")),
    )
    last: dict[str, tuple[str, Origin]] = {}
    body: list[tuple[str, Origin]] = []
    raw_last: dict[str, bytes] = {}
    raw_body: list[bytes] = []
    for raw, origin in lines:
        if dialect.strip_cr and raw.endswith(b"\r"):
            raw = raw[:-1]  # noqa: PLW2901 - sub(/\r$/, "")
        if not raw:
            continue
        # gawk matches characters in a UTF-8 locale; mawk and the C locale match bytes.
        # Both only look at the leading spaces and the directive, so decoding is exact.
        line = raw.decode("utf-8", errors="replace") if dialect.utf8 else raw.decode("latin-1")
        text = raw.decode("utf-8", errors="replace")
        kind = next((k for k, p in patterns if p.match(line)), None)
        entry = (text, Origin(origin.path, origin.line, text))
        if kind == "#":
            continue
        if kind is None:
            body.append(entry)
            raw_body.append(raw)
        else:
            last[kind] = entry
            raw_last[kind] = raw
    ordered = [last[k] for k in ("D", "b", "f") if k in last] + body
    if "e" in last:
        ordered.append(last["e"])
    header = b"## This file is automatically generated from " + os.fsencode(directory) + b"\n"
    file_text = header + b"".join(
        line + b"\n"
        for line in [
            raw_last.get("D", b""),
            raw_last.get("b", b""),
            raw_last.get("f", b""),
            *raw_body,
            raw_last.get("e", b""),
        ]
    )
    return ordered, file_text


def assemble_rules_d_all(
    directory: str,
    dialects: Sequence[Augenrules] = ALL_DIALECTS,
    *,
    cwd: str = "/",
    header_directory: str | None = None,
) -> tuple[Assembly, ...]:
    """Assemble rules.d as each augenrules dialect does; one Assembly per distinct result.

    Args:
        directory: The rules.d directory.
        dialects: The dialects to model.
        cwd: augenrules' working directory (systemd runs it in `/`): the shell matches a
            file name with glob characters there.
        header_directory: The directory named in augenrules' header line (`directory`).

    Raises:
        ParseError: the directory cannot be read, holds no *.rules file, or a file that
            augenrules would read is special (FIFO, device), unreadable or too big.
    """
    try:
        names = os.listdir(directory)
    except OSError as exc:
        msg = f"cannot list it ({exc.strerror})"
        raise ParseError(directory, 0, "", msg) from None
    if not any(n.endswith(".rules") for n in names):
        msg = "holds no *.rules file; augenrules would load nothing"
        raise ParseError(directory, 0, "", msg)
    absolute = os.path.abspath(directory)
    results: dict[bytes, tuple[list[Augenrules], list[tuple[str, Origin]], list[str]]] = {}
    cache: dict[bytes, bytes] = {}  # each file is read once, whatever the dialects
    file_texts: dict[bytes, bytes] = {}
    for dialect in dialects:
        arguments = _cat_arguments(os.fsencode(absolute), dialect, os.fsencode(cwd))
        lines, notes = _cat(arguments, os.fsencode(cwd), directory, cache)
        ordered, file_text = _awk(lines, dialect, header_directory or directory)
        key = file_text + b"\0" + "\0".join(f"{o}" for _, o in ordered).encode()
        if key in results:
            results[key][0].append(dialect)
        else:
            results[key] = ([dialect], ordered, notes)
            file_texts[key] = file_text
    return tuple(
        Assembly(
            dialects=tuple(found),
            text="".join(f"{line}\n" for line, _ in ordered),
            origins=tuple(origin for _, origin in ordered),
            file_text=file_texts[key],
            notes=tuple(notes),
        )
        for key, (found, ordered, notes) in results.items()
    )


def assemble_rules_d(directory: str, dialect: Augenrules | None = None) -> tuple[str, list[Origin]]:
    """Assemble rules.d the way augenrules does, keeping each line's origin.

    augenrules concatenates `*.rules` in `ls -v` order, drops comments and blank lines, keeps
    only the last `-D`, `-b`, `-f` and `-e` lines, puts `-D`, `-b`, `-f` first and `-e`
    last. Modelled as `dialect` (default: this machine's augenrules, or the first of its
    possible dialects; `assemble_rules_d_all` gives every one).

    Raises:
        ParseError: the directory cannot be read or holds no *.rules file.
    """
    chosen = dialect if dialect is not None else augenrules_dialects()[0][0]
    (assembly,) = assemble_rules_d_all(directory, (chosen,))
    return assembly.text, list(assembly.origins)


def nixos_rules_file(units: tuple[str, ...] = NIXOS_UNITS) -> str | None:
    """The rules file `audit-rules-nixos.service` loads (`auditctl -R FILE`), if any.

    Raises:
        ParseError: the unit's ExecStart is not valid shell-like quoting.
    """
    for unit in units:
        try:
            text = _read_text(unit)
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


def rules_d_assemblies(directory: str, *, live: bool = True) -> tuple[tuple[Assembly, ...], str]:
    """rules.d as this machine's augenrules may assemble it, and how the dialect was chosen.

    Live: the dialects of the installed augenrules and awk (`augenrules_dialects`).
    Otherwise (rules.d from another machine) every modelled dialect.

    Raises:
        ParseError: see `assemble_rules_d_all`.
    """
    if live:
        dialects, how = augenrules_dialects()
    else:
        dialects, how = ALL_DIALECTS, "rules.d of another machine: every augenrules dialect"
    return assemble_rules_d_all(directory, dialects), how


@attrs.frozen(kw_only=True)
class OnDiskRules:
    """The rules the system loads at boot.

    Attributes:
        label: How the report names them.
        path: The file or directory.
        text: The (assembled) text.
        origins: Per-line origins when assembled from rules.d.
        assemblies: rules.d as each possible augenrules dialect assembles it (else empty).
        how: How the augenrules dialect was chosen.
    """

    label: str
    path: str
    text: str
    origins: tuple[Origin, ...] | None = None
    assemblies: tuple[Assembly, ...] = ()
    how: str = ""


def discover_on_disk() -> OnDiskRules | None:
    """Find the rules this machine loads at boot, or None when there are none.

    Raises:
        ParseError: the rules exist but cannot be read (special file, too big, ...).
    """
    nixos = nixos_rules_file()
    if nixos is not None:
        return OnDiskRules(
            label=f"on-disk rules {nixos} (loaded by audit-rules-nixos.service)",
            path=nixos,
            text=read_rules_text(nixos),
        )
    if os.path.isdir(RULES_D) and any(n.endswith(".rules") for n in os.listdir(RULES_D)):
        assemblies, how = rules_d_assemblies(RULES_D)
        return OnDiskRules(
            label=f"on-disk rules {RULES_D}/*.rules (as augenrules assembles them)",
            path=RULES_D,
            text=assemblies[0].text,
            origins=assemblies[0].origins,
            assemblies=assemblies,
            how=how,
        )
    if os.path.exists(AUDIT_RULES):
        return OnDiskRules(
            label=f"on-disk rules {AUDIT_RULES}",
            path=AUDIT_RULES,
            text=read_rules_text(AUDIT_RULES),
        )
    return None
