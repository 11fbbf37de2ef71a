"""Refuse an output file that cannot be written, or must not be, before a run does any work."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence

from .errors import ConfigurationError, ParseError


def check_writable(option: str, path: str, *, replaces: bool, instead: str) -> None:
    """Refuse `path` for `option` unless a file can be written there.

    Both writers put a temporary file in the directory and rename it. With `replaces` the
    rename goes over `path` itself (prometheus_client's `write_to_textfile`), so a device,
    FIFO or socket there would be replaced: refused. Without, `path` is followed as the
    shell's `>` does (`evidence.write_atomic`): a symlink to its file, a device or FIFO is
    written into.

    Args:
        option: The option that named `path` (`--output`, `--metrics`), for the messages.
        path: The file to write.
        replaces: Whether the file at `path` itself is replaced (see above).
        instead: What to pass instead, for the messages.

    Raises:
        ConfigurationError: an empty path, a directory, a node the rename would replace, or
            a file in a missing, unreachable or unwritable directory (exit 2; nothing was
            run).
    """
    if not path:
        msg = f"{option} '': empty path; pass {instead} (nothing was run)"
        raise ConfigurationError(msg)
    if os.path.isdir(path):
        msg = f"{option} {path}: is a directory, not a file; pass {instead}"
        raise ConfigurationError(msg)
    try:
        mode: int | None = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        if not replaces:
            return  # written into
        msg = (
            f"{option} {path}: is not a regular file (a device, FIFO or socket), and the "
            f"file is replaced by a rename; pass {instead}"
        )
        raise ConfigurationError(msg)
    directory = os.path.dirname(path if replaces else os.path.realpath(path)) or "."
    try:
        is_directory = stat.S_ISDIR(os.stat(directory).st_mode)
    except FileNotFoundError:
        is_directory = False
    except OSError as exc:
        msg = (
            f"{option} {path}: the directory {directory} cannot be reached ({exc.strerror}); "
            f"run as a user who may write there, or pass {instead} (nothing was run)"
        )
        raise ConfigurationError(msg) from None
    if not is_directory:
        msg = (
            f"{option} {path}: the directory {directory} does not exist; create it or pass "
            f"{instead} (nothing was run)"
        )
        raise ConfigurationError(msg)
    if not os.access(directory, os.W_OK | os.X_OK):
        msg = (
            f"{option} {path}: the directory {directory} is not writable by this user (the "
            f"file is written beside it, then renamed); run as a user who may write there, "
            f"or pass {instead} (nothing was run)"
        )
        raise ConfigurationError(msg)


def refuse_rules_path(option: str, path: str, sources: Sequence[str]) -> None:
    """Refuse `path` for `option` when writing it could change audit rules.

    That is a rules source being judged (a file, or anything inside a rules.d directory,
    even a new file: augenrules would load it), the system's rules.d (even a new file),
    its audit.rules, and the file audit-rules-nixos.service loads. The path is compared
    resolved (symlinks, `..`, relative spellings) both as followed (`write_atomic`
    follows a symlink) and as replaced (the metrics rename replaces the last component),
    and by inode (hard links, bind mounts).

    Args:
        option: The option that named `path` (`--output`, `--metrics`...), for the message.
        path: The file to write (`-` is stdout; empty is left to `check_writable`).
        sources: The rules sources of the run (files, directories, `-`).

    Raises:
        ConfigurationError: `path` is or lies inside rules that are judged or loaded
            (exit 2; nothing was run).
    """
    if path in {"", "-"}:
        return
    spellings = _spellings(path)
    for protected, is_directory, what in _protected(sources):
        if _hits(path, spellings, protected, is_directory=is_directory):
            where = "inside " if is_directory and not _same(path, protected) else ""
            msg = (
                f"{option} {path}: that is {where}{what}; writing there would change the "
                "rules; pass a file elsewhere (nothing was run)"
            )
            raise ConfigurationError(msg)


def _spellings(path: str) -> set[str]:
    """The absolute real paths a write to `path` may land on (followed, or replaced)."""
    followed = os.path.realpath(path)
    parent, name = os.path.split(os.path.abspath(path))
    replaced = os.path.normpath(os.path.join(os.path.realpath(parent), name))
    return {followed, replaced}


def _protected(sources: Sequence[str]) -> Iterator[tuple[str, bool, str]]:
    """(path, is a directory, what it is) of every place whose rules a write may change."""
    from . import sources as on_disk  # noqa: PLC0415 - read at call time: tests point them elsewhere
    from . import system  # noqa: PLC0415

    for source in sources:
        if source != "-":
            yield source, os.path.isdir(source), f"the rules source {source} being judged"
    yield (
        system.RULES_D,
        True,
        (
            f"the system's rules directory {system.RULES_D} (augenrules loads its *.rules "
            "when audit starts)"
        ),
    )
    yield (
        system.AUDIT_RULES,
        False,
        f"the system's rules file {system.AUDIT_RULES} (loaded when audit starts)",
    )
    try:
        nixos = system.nixos_rules_file(system.NIXOS_UNITS)
    except ParseError:
        nixos = None  # a unit that cannot be read: discovery reports it
    if nixos is not None:
        yield nixos, False, f"the NixOS rules file {nixos} (audit-rules-nixos.service loads it)"
    try:
        start = on_disk.start_loads()
    except (ParseError, OSError):
        return  # units that cannot be read: discovery reports them
    for load in start.loads:
        if load not in {on_disk.AUGENRULES, on_disk.NO_RULES, system.AUDIT_RULES}:
            yield load, False, f"a rules file loaded when audit starts ({start.how})"


def _same(path: str, other: str) -> bool:
    """Whether `path` and `other` both exist and are the same inode."""
    try:
        return os.path.samestat(os.stat(path), os.stat(other))
    except (OSError, ValueError):
        return False


def _hits(path: str, spellings: set[str], protected: str, *, is_directory: bool) -> bool:
    """Whether writing `path` (landing on one of `spellings`) changes `protected`."""
    real = os.path.realpath(protected)
    if real in spellings or _same(path, protected):
        return True
    if not is_directory:
        return False
    if any(spelling.startswith(real.rstrip(os.sep) + os.sep) for spelling in spellings):
        return True
    # The same directory by another way (a bind mount): compare the ancestors by inode.
    for spelling in spellings:
        parent = os.path.dirname(spelling)
        while True:
            if _same(parent, protected):
                return True
            if parent == os.path.dirname(parent):
                break
            parent = os.path.dirname(parent)
    # A hard link to one of its files.
    try:
        names = os.listdir(protected)
    except OSError:
        return False
    return any(_same(path, os.path.join(protected, name)) for name in names)
