"""How augenrules assembles /etc/audit/rules.d, modelled exactly.

The script version (audit 3.0.9, 3.1.1 to 4.1.2, 4.1.3 and later) and the awk dialect
(mawk, gawk) decide the file order (`ls -v`, later `sort -zV` with the locale's ties),
which files are read, how a name with a blank is split, and where `-e`/`-D` lines go.
`check` judges rules.d as this assembles it; where a fact is unknown, every possible
assembly is judged and the worst counts.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import re
import shutil
import stat
from collections.abc import Sequence
from typing import Any, Final, Literal

import attrs

from .errors import ParseError
from .rules import Origin
from .system import AUDITCTL_TIMEOUT, MAX_RULES_BYTES, decode_rules, read_rules_bytes, read_text

__all__ = [
    "ALL_DIALECTS",
    "AUGENRULES_SCRIPTS",
    "MAX_TIE_ORDERS",
    "UNKNOWN_TIES",
    "Assembly",
    "Augenrules",
    "TieOrder",
    "assemble_rules_d",
    "assemble_rules_d_all",
    "augenrules_dialects",
    "filevercmp",
]

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
            script_text = read_text(candidate)
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
        decode_rules(data, shown)  # refuses a binary file
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
