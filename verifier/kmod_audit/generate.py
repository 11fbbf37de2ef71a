"""The minimal rule set that satisfies a set of profiles, in the canonical line format.

The canonical format (the NixOS module's `render.nix` produces the same bytes):

    -a always,exit -F arch=b64 -S <syscalls> -F auid>=<uid-min> -F auid!=unset -k <key>
    -a always,exit -F arch=b32 -S <syscalls> -F auid>=<uid-min> -F auid!=unset -k <key>
    -a always,exit -F path=<kmod> -F perm=x -F auid>=<uid-min> -F auid!=unset -k <key>
    -a always,exit -F arch=b32 -S execveat -F path=<kmod> -F auid>=<uid-min> -F auid!=unset -k <key>
    -a always,exit -F arch=b64 -S execve,execveat -F exit=-14 <the same filters and key>
    -a always,exit -F arch=b64 -S execve,execveat -F exit=-7 <the same filters and key>
    (and the same two for b32)

- one rule per ABI (b64 first), listing every required syscall that exists in that ABI's
  table, in syscall-number order (the order `auditctl -l` prints, so a listing of the
  loaded rules reads the same); an ABI with no required syscall gets no line;
- `-F arch` before `-S` (auditctl resolves names in the table of the arch given first);
- the filters the STIG/CIS check texts ask for: `auid>=<uid-min>` and `auid!=unset`;
- the execution rule (only when a profile asks for kmod executions) names the real
  binary, never a symlink (a watch on a symlink never fires), and has no `-F arch`, so it
  covers 64-bit and 32-bit callers alike;
- where an ABI's audit classes do not call an exec syscall an exec, `perm=x` misses it, and
  an explicit rule names it: `-F arch=b32 -S execveat -F path=<kmod>` on aarch64, whose
  compat classifier (`lib/compat_audit.c`) lists execve only (`Abi.execs`);
- a failed exec that ends before the kernel opens the file names no file, and `path=`
  misses it: on Linux 5.9 to 6.7 (Debian 12's 6.1) that is a bad argv (EFAULT) or too many
  arguments (E2BIG), `syscalls.BEFORE_OPEN`. Per ABI, `-S execve,execveat -F exit=-14` and
  `-F exit=-7` record those (of any program: the kernel has not looked at the file);
- `-k <key>` last; single spaces; no comments; each line ends with a newline.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

from .errors import ConfigurationError
from .loader import load
from .profiles import Profile, Requirement
from .rules import MAX_KEY_LEN, NAME_MAX, NOT_READ, PATH_MAX, Rejection, parse_rules
from .syscalls import BEFORE_OPEN, EXEC_SYSCALLS, MODULE_SYSCALLS, Abi, Machine

__all__ = [
    "DEFAULT_KEY",
    "KEY_PATTERN",
    "abi_exec_misses",
    "abi_execs",
    "generate_lines",
    "loading_problem",
    "validate_key",
    "validate_kmod_path",
]

DEFAULT_KEY: Final = "module_chng"
#: Keys we generate: printable, no space (auditctl splits on it), no quote or 0x01 (the
#: kernel would hex-encode the key in records), at most 256 bytes (auditctl's limit).
KEY_PATTERN: Final = r"[A-Za-z0-9_][A-Za-z0-9_.:@+=-]{0,255}"
_KEY_RE: Final = re.compile(KEY_PATTERN)


def validate_key(key: str) -> str | None:
    """Return why `key` cannot be used in generated rules, or None when it is fine."""
    if not key:
        return "the key is empty"
    if len(key.encode()) > MAX_KEY_LEN:
        return f"the key is {len(key.encode())} bytes long; auditctl accepts at most {MAX_KEY_LEN}"
    if not _KEY_RE.fullmatch(key):
        return (
            f"the key {key!r} has characters outside [A-Za-z0-9_.:@+=-] (or starts with one "
            "of .:@+=-); records would hex-encode it or auditctl would split it"
        )
    return None


def validate_kmod_path(path: str) -> str | None:
    r"""Return why `path` cannot be the kmod path of a generated rule, or None.

    The rule is `-a always,exit -F path=PATH -F perm=x ...`. auditctl splits its line on
    spaces and reads `\ ` and `\\` as escapes; libaudit splits `path!=...` at the
    first `!=`, `>=`, `<=` or `&=`; the kernel wants an absolute path to a file (not
    ending in `/`, `.` or `..`) that it can resolve: at most PATH_MAX - 1 bytes, each
    component at most NAME_MAX bytes. The parent directory must also exist on the machine
    that loads the rules, which only that machine can tell.
    """
    if not path:
        return "the path is empty"
    try:
        size = len(path.encode())
    except UnicodeEncodeError:
        return "the path is not valid UTF-8; pass the path as the kernel spells it"
    if not path.startswith("/"):
        return "the path is relative; pass the absolute path of the kmod binary"
    last = path.rsplit("/", 1)[1]
    if last in {"", ".", ".."}:
        return (
            "the path names a directory (it ends in /, . or ..); the kernel accepts only a "
            "file here: pass the kmod binary itself, e.g. /usr/bin/kmod"
        )
    bad = sorted({c for c in path if c.isspace() or not c.isprintable() or c == "\\"})
    if bad:
        return (
            f"the path holds {', '.join(repr(c) for c in bad)}, which auditctl would split, "
            "unescape or send changed; pass a path without spaces, control characters or "
            "backslashes"
        )
    for operator in ("!=", ">=", "<=", "&="):
        if operator in path:
            return (
                f"the path holds {operator!r}, where auditctl would split the field "
                "`path=...`; pass a path without it"
            )
    if size >= PATH_MAX:
        return (
            f"the path is {size} bytes long; the kernel resolves paths of at most "
            f"{PATH_MAX - 1} bytes"
        )
    for part in path.split("/"):
        if len(part.encode()) > NAME_MAX:
            return (
                f"the component {part[:16]}... is {len(part.encode())} bytes long; the kernel "
                f"accepts at most {NAME_MAX} bytes per component"
            )
    return None


def loading_problem(lines: list[str], *, machine: Machine, key: str, kmod_path: str) -> str | None:
    """Return why `auditctl -R` would not load `lines` exactly as meant, or None.

    The lines are read back with the rules parser and loader (the model of auditctl and
    the kernel, without looking at this machine's files): every line must load, as one
    rule with the key given and, for the execution rule, the kmod path given.
    """
    text = "".join(line + "\n" for line in lines)
    source = parse_rules(text, path="generated", machine=machine, syntax="rules", files=NOT_READ)
    ruleset = load(source, files=NOT_READ)
    for item in source.items:
        if isinstance(item, Rejection):
            return f"auditctl would refuse `{item.origin.text}`: {item.message}"
    if ruleset.issues:
        issue = ruleset.issues[0]
        return f"the kernel would refuse `{issue.origin.text}`: {issue.message}"
    if len(ruleset.rules) != len(lines):
        return f"auditctl would load {len(ruleset.rules)} rules from {len(lines)} lines"
    for rule in ruleset.rules:
        if rule.key != key:
            return f"auditctl would read the key as {rule.key!r}"
        path = rule.field("path")
        if path is not None and path.value != kmod_path:
            return f"auditctl would read the path as {path.value!r}"
    return None


def generate_lines(
    requirements: Iterable[Requirement] | Iterable[Profile],
    *,
    machine: Machine,
    key: str = DEFAULT_KEY,
    uid_min: int = 1000,
    kmod_path: str = "/usr/bin/kmod",
) -> list[str]:
    """Return the canonical rule lines for the requirements (or profiles) given.

    Args:
        requirements: Requirements, or profiles whose requirements are all wanted.
        machine: The machine whose kernel loads the rules.
        key: The key every rule carries.
        uid_min: The first uid of real users.
        kmod_path: The real path of the kmod binary.

    Returns:
        The lines, without newlines.
    """
    reqs: list[Requirement] = []
    for item in requirements:
        if isinstance(item, Profile):
            reqs.extend(item.requirements)
        elif isinstance(item, Requirement):
            reqs.append(item)
    filters = f"-F auid>={uid_min} -F auid!=unset -k {key}"
    lines: list[str] = []
    for abi in machine.abis:
        wanted = {
            syscall
            for req in reqs
            if abi.bits in req.abis
            for syscall in req.syscalls
            if syscall in MODULE_SYSCALLS
        }
        numbers = sorted(n for n in (abi.number(s) for s in wanted) if n is not None)
        if numbers:
            names = ",".join(str(abi.name(n)) for n in numbers)
            lines.append(f"-a always,exit -F arch={abi.bits} -S {names} {filters}")
    if any(req.tools for req in reqs):
        lines.append(f"-a always,exit -F path={kmod_path} -F perm=x {filters}")
        for abi in machine.abis:
            missed = abi_exec_misses(abi)
            if missed:
                names = ",".join(missed)
                lines.append(
                    f"-a always,exit -F arch={abi.bits} -S {names} -F path={kmod_path} {filters}"
                )
        for abi in machine.abis:
            names = ",".join(abi_execs(abi))
            lines.extend(
                f"-a always,exit -F arch={abi.bits} -S {names} -F exit=-{code} {filters}"
                for code in BEFORE_OPEN
            )
    return lines


def abi_execs(abi: Abi) -> list[str]:
    """The exec syscalls of `abi`, in number order."""
    present = [(n, s) for s in EXEC_SYSCALLS if (n := abi.number(s)) is not None]
    return [s for _, s in sorted(present)]


def abi_exec_misses(abi: Abi) -> list[str]:
    """The exec syscalls of `abi` that `-F perm=x` does not match, in number order."""
    return [s for s in abi_execs(abi) if s not in abi.execs]


def generate_rules(
    profiles: Sequence[Profile], *, machine: Machine, key: str, uid_min: int, kmod_path: str
) -> list[str]:
    """The lines `kmod-audit generate` prints, refusing what would not load as written.

    Raises:
        ConfigurationError: a bad key or kmod path, or lines that auditctl or the kernel
            would refuse or read differently (read back with the model `check` uses).
    """
    problem = validate_key(key)
    if problem is not None:
        msg = f"--key: {problem}"
        raise ConfigurationError(msg)
    shown = (
        repr(kmod_path)
        if len(kmod_path) <= 80
        else f"{kmod_path[:60]!r}... ({len(kmod_path)} characters)"
    )
    problem = validate_kmod_path(kmod_path)
    if problem is not None:
        msg = f"--kmod-path {shown}: {problem}"
        raise ConfigurationError(msg)
    lines = generate_lines(profiles, machine=machine, key=key, uid_min=uid_min, kmod_path=kmod_path)
    # Never print a line auditctl or the kernel would refuse or read differently.
    problem = loading_problem(lines, machine=machine, key=key, kmod_path=kmod_path)
    if problem is not None:
        msg = (
            f"the rules for --key {key!r} --kmod-path {shown} would not load as written: "
            f"{problem}; pass a plain key and the absolute path of the kmod binary"
        )
        raise ConfigurationError(msg)
    return lines
