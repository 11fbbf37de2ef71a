"""Reading rules and defaults from the live system (this machine).

- the running rules: `auditctl -l` and the kernel state: `auditctl -s`;
- the on-disk rules that the next boot loads: on NixOS the file
  `audit-rules-nixos.service` passes to `auditctl -R`; elsewhere `/etc/audit/rules.d/*.rules`
  assembled the way augenrules does, or `/etc/audit/audit.rules`;
- defaults: UID_MIN from /etc/login.defs, the real path of the kmod binary.
"""

from __future__ import annotations

import functools
import itertools
import math
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
    "StartLoad",
    "TieOrder",
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
    "start_loads",
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


MAX_TIE_ORDERS: Final = 120
"""The most orders of tied names (see `TieOrder`) modelled; beyond, the rest is undecided."""


@attrs.frozen(kw_only=True)
class TieOrder:
    """How `sort -V` (audit >= 4.1.3's augenrules) orders names that filevercmp ties.

    filevercmp ignores leading zeros (`x0.rules` and `x00.rules` tie). GNU sort breaks the
    tie with the locale's collation (strcoll): under C `x0.rules` comes first, under
    en_US.UTF-8 `x00.rules`. `ls -v` (older augenrules) breaks it with strcmp in any locale.

    Attributes:
        env: The locale variables augenrules runs with (LANG, LC_*, LOCPATH), so that the
            real `sort -zV` can order the tied names; None when not known: then every
            order is judged.
        how: Where that came from, for the report.
    """

    env: tuple[tuple[str, str], ...] | None = None
    how: str = "the locale augenrules runs in is not known"


UNKNOWN_TIES: Final = TieOrder()


@attrs.frozen
class _Listing:
    """augenrules' `cat` arguments in each possible order, and how many were left out."""

    orders: tuple[tuple[tuple[bytes, ...], str], ...]
    unjudged: int = 0


def _tie_groups(ordered: list[bytes]) -> list[list[bytes]]:
    """Consecutive runs of names that filevercmp ties (each run in strcmp order)."""
    groups: list[list[bytes]] = []
    for path in ordered:
        name = os.path.basename(path)
        if groups and filevercmp(os.path.basename(groups[-1][-1]), name) == 0:
            groups[-1].append(path)
        else:
            groups.append([path])
    return groups


def _sort_v(paths: list[bytes], env: tuple[tuple[str, str], ...]) -> list[bytes] | None:
    """`sort -zV` of `paths` run for real in the locale `env`; None when it cannot run."""
    import subprocess  # noqa: PLC0415 - only for tied names

    program = shutil.which("sort", path=SYSTEMD_PATH)
    if program is None:
        return None
    try:
        proc = subprocess.run(
            [program, "-zV"],
            input=b"".join(p + b"\0" for p in paths),
            env={"PATH": SYSTEMD_PATH, **dict(env)},
            capture_output=True,
            timeout=AUDITCTL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    result = proc.stdout.split(b"\0")[:-1]
    return result if proc.returncode == 0 and sorted(result) == sorted(paths) else None


def _file_key(path: bytes) -> bytes | None:
    """What makes two files interchangeable in augenrules' concatenation: their bytes.

    None for a file that gives awk no line (empty, or only blank and `#` lines, ending
    with a newline): wherever it goes, the concatenation is the same.
    """
    try:
        if stat.S_ISREG(os.stat(path).st_mode):
            with open(path, "rb") as file:
                data = file.read(MAX_RULES_BYTES + 1)
            lines = data.split(b"\n")
            if lines[-1] == b"" and all(
                not line.rstrip(b"\r") or line.startswith(b"#") for line in lines
            ):
                return None
            return b"f" + data
    except OSError:
        pass
    return b"p" + path  # not a regular file: never interchangeable


def _distinct_orders(group: list[bytes]) -> tuple[list[list[bytes]], int]:
    """The orders of `group` that differ in content (at most MAX_TIE_ORDERS), and how many."""
    found = [(key, path) for path in group if (key := _file_key(path)) is not None]
    inert = [path for path in group if path not in {p for _, p in found}]
    orders, count = _content_orders([p for _, p in found], [k for k, _ in found])
    return [[*inert, *order] for order in orders], count


def _content_orders(group: list[bytes], keys: list[bytes]) -> tuple[list[list[bytes]], int]:
    """The orders of `group` whose `keys` differ (at most MAX_TIE_ORDERS), and how many."""
    by_key: dict[bytes, list[bytes]] = {}
    for key, path in zip(keys, group, strict=True):
        by_key.setdefault(key, []).append(path)
    count = math.factorial(len(group))
    for paths in by_key.values():
        count //= math.factorial(len(paths))
    distinct = sorted(by_key)
    indices = sorted(distinct.index(key) for key in keys)
    orders: list[list[bytes]] = []
    while len(orders) < MAX_TIE_ORDERS:
        # Files with the same bytes take their names in strcmp order: only content counts.
        taken = {key: iter(by_key[key]) for key in distinct}
        orders.append([next(taken[distinct[i]]) for i in indices])
        # The next permutation of the multiset, in lexicographic order.
        i = len(indices) - 2
        while i >= 0 and indices[i] >= indices[i + 1]:
            i -= 1
        if i < 0:
            break
        j = len(indices) - 1
        while indices[j] <= indices[i]:
            j -= 1
        indices[i], indices[j] = indices[j], indices[i]
        indices[i + 1 :] = reversed(indices[i + 1 :])
    return orders, count


def _sort_v_orders(found: list[bytes], ties: TieOrder) -> _Listing:
    """The orders `sort -zV` may give `found`: one when the locale is known, else every one."""
    ordered = sorted(found, key=functools.cmp_to_key(_version_order))
    groups = _tie_groups(ordered)
    tied = [group for group in groups if len(group) > 1]
    if not tied:
        return _Listing(orders=((tuple(ordered), ""),))
    if ties.env is not None:
        resolved = [_sort_v(group, ties.env) if len(group) > 1 else group for group in groups]
        if all(group is not None for group in resolved):
            flat = tuple(path for group in resolved if group is not None for path in group)
            return _Listing(orders=((flat, _describe_ties(resolved, ties.how)),))
    how = ties.how if ties.env is None else f"{ties.how}, but sort -zV could not run"
    choices: list[list[list[bytes]]] = []
    total = 1
    for group in groups:
        orders, count = _distinct_orders(group) if len(group) > 1 else ([group], 1)
        choices.append(orders)
        total *= count
    combined = tuple(
        (tuple(path for group in choice for path in group), _describe_ties(choice, how))
        for choice in itertools.islice(itertools.product(*choices), MAX_TIE_ORDERS)
    )
    return _Listing(orders=combined, unjudged=total - len(combined))


def _describe_ties(groups: Sequence[Sequence[bytes] | None], how: str) -> str:
    shown = "; ".join(
        ", ".join(os.fsdecode(os.path.basename(p)) for p in group)
        for group in groups
        if group is not None and len(group) > 1
    )
    return f"names that sort -V ties in the order {shown} ({how})"


def _cat_arguments(
    directory: bytes, dialect: Augenrules, cwd: bytes, ties: TieOrder = UNKNOWN_TIES
) -> _Listing:
    """The paths augenrules hands to `cat`, in each possible order.

    Relative paths are relative to `cwd`.
    """
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
        return _sort_v_orders(found, ties)
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
    return _Listing(orders=((tuple(arguments), ""),))


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
        ties: The order `sort -V` gave names it ties (empty when none tie).
        unjudged_orders: How many further orders of tied names are possible but were not
            assembled (above MAX_TIE_ORDERS); the same on every Assembly of one rules.d.
    """

    dialects: tuple[Augenrules, ...]
    text: str
    origins: tuple[Origin, ...]
    file_text: bytes
    notes: tuple[str, ...] = ()
    ties: str = ""
    unjudged_orders: int = 0

    def describe(self) -> str:
        """Return the dialects (and the order of tied names), for a report."""
        more = len(self.dialects) - 1
        described = self.dialects[0].describe() + (f" (and {more} more)" if more else "")
        return described + (f", {self.ties}" if self.ties else "")


def _cat(
    arguments: Sequence[bytes], cwd: bytes, directory: str, cache: dict[bytes, bytes]
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


_EMPTY_NOTE: Final = (
    "{} holds no *.rules file: augenrules writes a rules file with no rules over "
    "audit.rules, and the next start of audit loads no rules"
)


def assemble_rules_d_all(
    directory: str,
    dialects: Sequence[Augenrules] = ALL_DIALECTS,
    *,
    cwd: str = "/",
    header_directory: str | None = None,
    ties: TieOrder = UNKNOWN_TIES,
    empty_ok: bool = False,
) -> tuple[Assembly, ...]:
    """Assemble rules.d as each augenrules dialect does; one Assembly per distinct result.

    Args:
        directory: The rules.d directory.
        dialects: The dialects to model.
        cwd: augenrules' working directory (systemd runs it in `/`): the shell matches a
            file name with glob characters there.
        header_directory: The directory named in augenrules' header line (`directory`).
        ties: How `sort -V` orders names it ties (audit >= 4.1.3); by default every order.
        empty_ok: A rules.d with no *.rules file assembles to no rules (what augenrules
            writes over audit.rules then) rather than being refused.

    Raises:
        ParseError: the directory cannot be read, holds no *.rules file (unless
            `empty_ok`), or a file that augenrules would read is special (FIFO, device),
            unreadable or too big.
    """
    try:
        names = os.listdir(directory)
    except OSError as exc:
        msg = f"cannot list it ({exc.strerror})"
        raise ParseError(directory, 0, "", msg) from None
    empty = not any(n.endswith(".rules") for n in names)
    if empty and not empty_ok:
        msg = "holds no *.rules file; augenrules would load nothing"
        raise ParseError(directory, 0, "", msg)
    absolute = os.path.abspath(directory)
    results: dict[bytes, tuple[list[Augenrules], list[tuple[str, Origin]], list[str], str]] = {}
    cache: dict[bytes, bytes] = {}  # each file is read once, whatever the dialects
    file_texts: dict[bytes, bytes] = {}
    unjudged = 0
    for dialect in dialects:
        listing = _cat_arguments(os.fsencode(absolute), dialect, os.fsencode(cwd), ties)
        unjudged = max(unjudged, listing.unjudged)
        for arguments, tie_order in listing.orders:
            lines, notes = _cat(arguments, os.fsencode(cwd), directory, cache)
            ordered, file_text = _awk(lines, dialect, header_directory or directory)
            key = file_text + b"\0" + "\0".join(f"{o}" for _, o in ordered).encode()
            if key in results:
                if dialect not in results[key][0]:
                    results[key][0].append(dialect)
            else:
                results[key] = ([dialect], ordered, notes, tie_order)
                file_texts[key] = file_text
    return tuple(
        Assembly(
            dialects=tuple(found),
            text="".join(f"{line}\n" for line, _ in ordered),
            origins=tuple(origin for _, origin in ordered),
            file_text=file_texts[key],
            notes=(_EMPTY_NOTE.format(directory), *notes) if empty else tuple(notes),
            ties=tie_order,
            unjudged_orders=unjudged,
        )
        for key, (found, ordered, notes, tie_order) in results.items()
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


def rules_d_assemblies(
    directory: str, *, live: bool = True, root: str = "/"
) -> tuple[tuple[Assembly, ...], str]:
    """rules.d as this machine's augenrules may assemble it, and how the dialect was chosen.

    Live: the dialects of the installed augenrules and awk (`augenrules_dialects`), and
    the locale augenrules runs in (`start_loads`) for the order of names `sort -V` ties.
    Otherwise (rules.d from another machine) every modelled dialect and every order.

    Raises:
        ParseError: see `assemble_rules_d_all`.
    """
    if live:
        dialects, how = augenrules_dialects(
            tuple(_under(root, script) for script in AUGENRULES_SCRIPTS)
        )
        ties = start_loads(root).ties
    else:
        dialects, how = ALL_DIALECTS, "rules.d of another machine: every augenrules dialect"
        ties = UNKNOWN_TIES
    return assemble_rules_d_all(directory, dialects, ties=ties), how


# ---------------------------------------------------------------------------------------
# What the next start of audit loads: the units (or init script) that start it, read.

UNIT_DIRS: Final = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
"""systemd's system unit search path, highest priority first."""
AUDIT_UNITS: Final = ("auditd.service", "audit-rules.service")
"""auditd.service runs `augenrules --load` after auditd (audit < 4: Debian 12, RHEL 8, 9);
audit >= 4 moved that to audit-rules.service, which auditd.service wants."""
INIT_SCRIPTS: Final = ("/etc/init.d/auditd", "/etc/rc.d/init.d/auditd")
AUDITD_DEFAULTS: Final = ("/etc/default/auditd", "/etc/sysconfig/auditd")
LOCALE_FILES: Final = ("/etc/locale.conf", "/etc/default/locale")
"""Where systemd takes the locale it gives services (Debian: /etc/default/locale)."""
_LOCALE_VAR: Final = re.compile(r"LANG|LANGUAGE|LC_[A-Z_]+|LOCPATH")
#: The variables that choose the collation `sort` breaks ties with.
_COLLATION_VARS: Final = frozenset({"LANG", "LC_ALL", "LC_COLLATE"})
SYSTEM_CONF: Final = "/etc/systemd/system.conf"
"""systemd's manager configuration (`DefaultEnvironment=` reaches every service)."""
SYSTEM_CONF_DIRS: Final = (
    "/etc/systemd/system.conf.d",
    "/run/systemd/system.conf.d",
    "/usr/local/lib/systemd/system.conf.d",
    "/usr/lib/systemd/system.conf.d",
    "/lib/systemd/system.conf.d",
)
_EXEC_KEYS: Final = ("ExecStartPre", "ExecStart", "ExecStartPost")
AUGENRULES: Final = "augenrules"
NO_RULES: Final = ""
"""A `StartLoad` possibility: the next start of audit loads no rules."""


def _under(root: str, path: str) -> str:
    """`path` of the system whose root directory is `root`."""
    return path if root in {"", "/"} else os.path.join(root, path.lstrip("/"))


def _assignments(text: str) -> list[tuple[str, str]]:
    """KEY=VALUE lines of a shell-like environment file (locale.conf, /etc/default/...)."""
    found = []
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        for word in words:
            key, sep, value = word.partition("=")
            if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                found.append((key, value))
    return found


def _unit_lines(text: str) -> list[str]:
    """A unit file's lines with continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


@attrs.frozen(kw_only=True)
class _Unit:
    """The parts of a systemd service that say how it loads audit rules."""

    path: str
    masked: bool = False
    commands: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def _read_unit(root: str, name: str) -> _Unit | None:
    """The unit `name` with its drop-ins applied, as systemd reads it; None when absent."""
    main = next(
        (
            path
            for path in (_under(root, os.path.join(d, name)) for d in UNIT_DIRS)
            if os.path.lexists(path)
        ),
        None,
    )
    if main is None:
        return None
    target = os.readlink(main) if os.path.islink(main) else ""
    if target == "/dev/null" or (not target and os.path.isfile(main) and not os.path.getsize(main)):
        return _Unit(path=main, masked=True)
    dropins: dict[str, str] = {}
    for directory in reversed(UNIT_DIRS):  # a higher-priority drop-in of a name wins
        folder = _under(root, os.path.join(directory, name + ".d"))
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            if entry.endswith(".conf"):
                dropins[entry] = os.path.join(folder, entry)
    commands: dict[str, list[str]] = {key: [] for key in _EXEC_KEYS}
    environment: list[tuple[str, str]] = []
    files: list[str] = []
    for path in [main, *(dropins[entry] for entry in sorted(dropins))]:
        try:
            text = _read_text(path)
        except OSError:
            continue
        section = ""
        for line in _unit_lines(text):
            if line.startswith("["):
                section = line
                continue
            key, _, value = (part.strip() for part in line.partition("="))
            if section != "[Service]":
                continue
            if key in commands:
                # An empty assignment resets the list (how a drop-in removes a command).
                commands[key] = [*commands[key], value] if value else []
            elif key == "Environment":
                environment = [*environment, *_assignments(value)] if value else []
            elif key == "EnvironmentFile":
                files = [*files, value] if value else []
    for file in files:  # EnvironmentFile= overrides Environment=
        try:
            environment.extend(_assignments(_read_text(_under(root, file.lstrip("-")))))
        except OSError:
            continue
    return _Unit(
        path=main,
        commands=tuple(c for key in _EXEC_KEYS for c in commands[key]),
        env=tuple(environment),
    )


def _unit_loads(commands: Sequence[str]) -> list[str] | None:
    """What the commands load: `augenrules` or a rules file; None when one is not understood."""
    loads: list[str] = []
    regenerated = False
    for command in commands:
        try:
            words = shlex.split(command.lstrip("-@:+!"))
        except ValueError:
            return None
        program = os.path.basename(words[0]) if words else ""
        if program == AUGENRULES:
            if "--load" in words:
                loads.append(AUGENRULES)
            elif "--check" not in words:
                regenerated = True
        elif program == "auditctl" and "-R" in words[:-1]:
            file = words[words.index("-R") + 1]
            loads.append(AUGENRULES if regenerated and file == AUDIT_RULES else file)
        elif re.search(r"augenrules|auditctl|audit\.rules|rules\.d", command):
            return None  # a script or shell line that may load rules: not followed
    return loads


def _init_script_loads(root: str) -> tuple[list[str] | None, str] | None:
    """What the SysV init script loads (None: no script), and how that was read."""
    for script in INIT_SCRIPTS:
        try:
            text = _read_text(_under(root, script))
        except OSError:
            continue
        if AUGENRULES not in text:
            if re.search(r"auditctl\s+-R\s+/etc/audit/audit\.rules", text):
                return [AUDIT_RULES], f"{script} runs `auditctl -R {AUDIT_RULES}`"
            return None, f"{script} loads no rules that kmod-audit can follow"
        if "USE_AUGENRULES" not in text:
            return [AUGENRULES], f"{script} runs augenrules"
        for defaults in AUDITD_DEFAULTS:
            try:
                values = dict(_assignments(_read_text(_under(root, defaults))))
            except OSError:
                continue
            if values.get("USE_AUGENRULES", "").lower() == "no":
                return [AUDIT_RULES], f"{script}: USE_AUGENRULES=no in {defaults}"
            return [AUGENRULES], f"{script} runs augenrules (USE_AUGENRULES in {defaults})"
        return [AUGENRULES], f"{script} runs augenrules (USE_AUGENRULES is not set)"
    return None


def _default_environment(root: str) -> list[tuple[str, str]]:
    """`DefaultEnvironment=` of systemd's system.conf and its drop-ins (later ones win)."""
    found: list[tuple[str, str]] = []
    drop_ins = sorted(
        {
            name
            for directory in SYSTEM_CONF_DIRS
            if os.path.isdir(_under(root, directory))
            for name in os.listdir(_under(root, directory))
            if name.endswith(".conf")
        }
    )
    paths = [SYSTEM_CONF] + [
        next(
            os.path.join(d, name)
            for d in SYSTEM_CONF_DIRS
            if os.path.exists(_under(root, os.path.join(d, name)))
        )
        for name in drop_ins
    ]
    for path in paths:
        try:
            text = _read_text(_under(root, path))
        except (OSError, ParseError):
            continue
        for line in text.splitlines():
            key, _, value = line.strip().partition("=")
            if key.strip() != "DefaultEnvironment":
                continue
            try:
                words = shlex.split(value)
            except ValueError:
                continue
            found.extend(
                (k, v) for k, _, v in (w.partition("=") for w in words) if _LOCALE_VAR.fullmatch(k)
            )
    return found


def _locale_env(root: str) -> tuple[list[tuple[str, str]], bool]:
    """The locale systemd gives every service (LANG, LC_*), and whether a file sets it.

    systemd's `DefaultEnvironment=`, then the first locale file. Without a locale file, or
    a `DefaultEnvironment=` that names the collation, PID 1's own environment (the kernel
    command line, an initrd) decides, which cannot be read here.
    """
    default = _default_environment(root)
    for path in LOCALE_FILES:
        try:
            text = _read_text(_under(root, path))
        except (OSError, ParseError):
            continue
        return [
            *default,
            *((k, v) for k, v in _assignments(text) if _LOCALE_VAR.fullmatch(k)),
        ], True
    return default, any(k in _COLLATION_VARS for k, _ in default)


@attrs.frozen(kw_only=True)
class StartLoad:
    """What the next start of audit loads, as far as the machine tells.

    Attributes:
        loads: Each possibility (one when known): `augenrules` (rules.d assembled, written
            over audit.rules and loaded; audit.rules itself when there is no rules.d), the
            path of a rules file loaded as it is (`auditctl -R FILE`), or NO_RULES (the
            units that start audit load none, or are masked).
        how: How that was decided, for the report.
        ties: The locale augenrules runs in, for the order of names `sort -V` ties.
    """

    loads: tuple[str, ...]
    how: str
    ties: TieOrder = UNKNOWN_TIES


def start_loads(root: str = "/", *, live: bool = True) -> StartLoad:
    """Read from the machine what the next start of audit loads.

    systemd (when it runs, else also the init script): `auditd.service` and
    `audit-rules.service` with their drop-ins; `augenrules --load` regenerates audit.rules
    from rules.d (even an empty one) and loads it, `auditctl -R FILE` loads FILE as it is.
    The SysV script runs augenrules unless USE_AUGENRULES=no, then loads audit.rules. Units
    that load nothing (or are masked) mean no rules. When nothing says, or a command is not
    understood (or not `live`: a foreign root), both are possible.

    Args:
        root: The system's root directory.
        live: `root` is this running machine (its programs and locales are used).
    """
    both = (AUGENRULES, AUDIT_RULES)
    if not live:
        return StartLoad(
            loads=both,
            how="not this running machine: augenrules (from rules.d) and "
            f"`auditctl -R {AUDIT_RULES}` are both possible",
        )
    possible: list[str] = []
    hows: list[str] = []
    unknown = False
    seen = False  # a unit or init script that starts audit was read
    envs: set[tuple[tuple[str, str], ...] | None] = set()
    for name in AUDIT_UNITS:
        unit = _read_unit(root, name)
        if unit is None:
            continue
        seen = True
        if unit.masked:
            hows.append(f"{name} is masked")
            continue
        loads = _unit_loads(unit.commands)
        if loads is None:
            unknown = True
            hows.append(f"{unit.path} runs a command that kmod-audit does not follow")
            continue
        hows.extend(
            f"{name} runs `augenrules --load`"
            if load == AUGENRULES
            else f"{name} runs `auditctl -R {load}`"
            for load in loads
        )
        possible.extend(loads)
        if AUGENRULES in loads:
            service, known = _locale_env(root)
            own = [(k, v) for k, v in unit.env if _LOCALE_VAR.fullmatch(k)]
            assigned = [*service, *own]
            if known or any(k in _COLLATION_VARS for k, _ in own):
                envs.add(tuple(dict(assigned).items()))
            else:
                envs.add(None)  # the locale of PID 1's own environment
    if not os.path.isdir(_under(root, "/run/systemd/system")):
        # systemd is not running here: an init script may start audit instead.
        script = _init_script_loads(root)
        if script is not None:
            script_loads, how = script
            seen = True
            hows.append(how)
            if script_loads is None:
                unknown = True
            else:
                possible.extend(script_loads)
                if AUGENRULES in script_loads:
                    envs.add(None)  # an init script's locale is that of whoever runs it
    if unknown:
        possible.extend(both)
        hows.append("what else loads rules is not known: both are possible")
    elif not possible and seen:
        possible.append(NO_RULES)
        hows.append("so nothing loads rules when audit starts")
    elif not possible:
        possible.extend(both)
        hows.append(
            "no unit or init script that starts audit was found: augenrules (from rules.d) "
            f"and `auditctl -R {AUDIT_RULES}` are both possible"
        )
    env = envs.pop() if len(envs) == 1 else None
    ties = (
        TieOrder(env=env, how="the locale of " + (", ".join(f"{k}={v}" for k, v in env) or "C"))
        if env is not None
        else UNKNOWN_TIES
    )
    return StartLoad(loads=tuple(dict.fromkeys(possible)), how="; ".join(hows), ties=ties)


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
        alternatives: When what the next start loads is not known: each possibility (the
            worst is reported); the other attributes are then those of the first.
    """

    label: str
    path: str
    text: str
    origins: tuple[Origin, ...] | None = None
    assemblies: tuple[Assembly, ...] = ()
    how: str = ""
    alternatives: tuple[OnDiskRules, ...] = ()


def _rules_d_on_disk(root: str, live: bool, start: StartLoad) -> OnDiskRules:
    directory = _under(root, RULES_D)
    why = start.how
    if live:
        dialects, how = augenrules_dialects(
            tuple(_under(root, script) for script in AUGENRULES_SCRIPTS)
        )
        ties = start.ties
    else:
        dialects, how = ALL_DIALECTS, "rules.d of another machine: every augenrules dialect"
        ties = UNKNOWN_TIES
    assemblies = assemble_rules_d_all(
        directory, dialects, header_directory=RULES_D, ties=ties, empty_ok=True
    )
    return OnDiskRules(
        label=f"on-disk rules {directory}/*.rules (as augenrules assembles them and writes "
        f"them over {AUDIT_RULES}: {why})",
        path=directory,
        text=assemblies[0].text,
        origins=assemblies[0].origins,
        assemblies=assemblies,
        how=how,
    )


def discover_on_disk(root: str = "/", *, live: bool = True) -> OnDiskRules | None:
    """Find the rules the next start of audit loads, or None when there are none.

    On NixOS the file `audit-rules-nixos.service` loads. Elsewhere what `start_loads`
    reads from the machine: rules.d as augenrules assembles it whenever augenrules runs
    and rules.d exists (an empty rules.d gives no rules: augenrules writes that over
    audit.rules), audit.rules where nothing regenerates it. When that is not known, every
    possibility is returned in `alternatives`.

    Args:
        root: The system's root directory.
        live: `root` is this running machine (else every possibility is judged).

    Raises:
        ParseError: the rules exist but cannot be read (special file, too big, ...).
    """
    nixos = nixos_rules_file(tuple(_under(root, unit) for unit in NIXOS_UNITS))
    if nixos is not None:
        return OnDiskRules(
            label=f"on-disk rules {nixos} (loaded by audit-rules-nixos.service)",
            path=nixos,
            text=read_rules_text(_under(root, nixos)),
        )
    start = start_loads(root, live=live)
    found: list[OnDiskRules] = []
    for load in start.loads:
        if load == NO_RULES:
            found.append(
                OnDiskRules(label=f"on-disk rules: none ({start.how})", path="(none)", text="")
            )
            continue
        if load == AUGENRULES and os.path.isdir(_under(root, RULES_D)):
            found.append(_rules_d_on_disk(root, live, start))
            continue
        path = AUDIT_RULES if load == AUGENRULES else load
        if os.path.exists(_under(root, path)):
            found.append(
                OnDiskRules(
                    label=f"on-disk rules {_under(root, path)} ({start.how})",
                    path=_under(root, path),
                    text=read_rules_text(_under(root, path)),
                )
            )
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    return attrs.evolve(found[0], alternatives=tuple(found))
