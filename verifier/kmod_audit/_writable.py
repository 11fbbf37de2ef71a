"""Refuse an output file that cannot be written, before a run does any work."""

from __future__ import annotations

import os
import stat

from .errors import ConfigurationError


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
        ConfigurationError: a directory, a node the rename would replace, or a file in a
            missing, unreachable or unwritable directory (exit 2; nothing was run).
    """
    if not path or os.path.isdir(path):
        msg = f"{option} {path or repr(path)}: is a directory, not a file; pass {instead}"
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
