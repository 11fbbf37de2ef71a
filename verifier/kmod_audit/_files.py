"""Output files: refuse a bad one before a run does any work, then write it atomically.

`write_atomic` is the one writer of every report, checklist and metrics file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence

from .errors import ConfigurationError, ParseError


def check_writable(option: str, path: str, *, replaces: bool, instead: str) -> None:
    """Refuse `path` for `option` unless a file can be written there.

    Both writers put a temporary file in the directory and rename it. With `replaces` the
    rename goes over `path` itself (`write_atomic(replaces=True)`, for `--metrics`), so a device,
    FIFO or socket there would be replaced: refused. Without, `path` is followed as the
    shell's `>` does (`write_atomic`): a symlink to its file, a device or FIFO is
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


def write_atomic(
    path: str,
    text: str | bytes,
    *,
    option: str = "--output",
    replaces: bool = False,
    what: str = "it",
    instead: str = "pass a path in a writable directory (nothing was written)",
) -> None:
    r"""Write `text` to `path` atomically: temp file beside it, fsync, rename, fsync the dir.

    A reader sees the old file or the whole new one, never a part; on any failure the
    temporary file is removed and `path` is as it was. A new file gets mode 0666 minus
    the umask (as `open` would make it); an existing file keeps its mode. A symlink is
    followed (the file it names is replaced, the link stays), and a device, FIFO or
    socket (`/dev/stdout`, `/dev/null`, a pipe) is written into as the shell's `>` does:
    a rename would replace the node itself. Characters UTF-8 cannot hold (lone surrogates
    a target may send) are written as backslash escapes (`\udcff`), as on stdout.

    With `replaces` the rename goes over `path` itself, as node_exporter's textfile
    collector expects of `--metrics` (prometheus_client's `write_to_textfile` does the
    same): a symlink there is replaced, not followed, and the file always gets mode 0666
    minus the umask. `check_writable(..., replaces=True)` has refused any other node.

    `option` names the option that asked for the file in the messages, `what` the file
    and `instead` what to do when it cannot be written.

    Raises:
        ConfigurationError: the file cannot be written (names it and says why).
    """
    if os.path.isdir(path):
        msg = f"{option} {path}: is a directory; pass a file name"
        raise ConfigurationError(msg)
    try:
        found = os.stat(path)
    except OSError:
        found = None
    data = text if isinstance(text, bytes) else text.encode("utf-8", "backslashreplace")
    if found is not None and not replaces and not stat.S_ISREG(found.st_mode):
        try:
            with open(path, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            msg = f"{option} {path}: cannot write it ({exc.strerror or exc}); pass another path"
            raise ConfigurationError(msg) from None
        return
    target = path if replaces else os.path.realpath(path)
    directory = os.path.dirname(os.path.abspath(target))
    if found is not None and not replaces:
        mode = found.st_mode & 0o7777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    temp = None
    try:
        fd, temp = tempfile.mkstemp(
            prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory
        )
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, target)
        temp = None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        msg = f"{option} {path}: cannot write {what} ({reason}); {instead}"
        raise ConfigurationError(msg) from None
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)
    # Make the rename itself durable; a file system that cannot sync a directory (some
    # network ones) has still renamed the file.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
