"""Errors, split by whose fault they are (like the NixOS test driver's errors.py).

- `ConfigurationError` / `ParseError`: the input we were given is wrong (exit code 2).
- `TransportError` / `CommandFailed` / `ConsoleTimeout`: we could not ask the system (exit code 3).

Every message says what was checked, what was seen, and what to do next.
"""

from __future__ import annotations

import attrs

__all__ = [
    "CommandFailed",
    "ConfigurationError",
    "ConsoleTimeout",
    "ParseError",
    "TransportError",
    "VerifierError",
    "seconds",
]

EXIT_OK = 0
EXIT_NONCOMPLIANT = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def seconds(value: float) -> str:
    """A duration for messages, to 0.1 s: the rest of a 60 s deadline reads 60, not 59.9995."""
    return f"{round(value, 1):g}"


class VerifierError(Exception):
    """Base class of every error kmod-audit raises on purpose."""

    exit_code: int = EXIT_USAGE


@attrs.define
class ConfigurationError(VerifierError):
    """An option or input is invalid; the user must change how kmod-audit is called.

    Attributes:
        message: What is wrong and how to fix it.
    """

    message: str

    exit_code = EXIT_USAGE

    def __str__(self) -> str:
        """Return the message."""
        return self.message


@attrs.define
class ParseError(VerifierError):
    """A source could not be read or understood at all.

    Attributes:
        path: The file (or `-` / a command) the text came from.
        line: 1-based line number, or 0 when the whole source is at fault.
        text: The offending line (may be empty).
        message: What is wrong and what to do.
    """

    path: str
    line: int
    text: str
    message: str

    exit_code = EXIT_USAGE

    def __str__(self) -> str:
        """Return `path:line: message`."""
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


@attrs.define
class TransportError(VerifierError):
    """The system could not be asked (missing tool, no permission, dead connection).

    Attributes:
        message: What was attempted, what happened and what to do.
    """

    message: str

    exit_code = EXIT_UNREACHABLE

    def __str__(self) -> str:
        """Return the message."""
        return self.message


@attrs.define
class CommandFailed(TransportError):
    """A command on the target exited with an unexpected status.

    Attributes:
        command: The command as run (argv joined for display).
        status: Its exit status.
        output: The tail of its output.
    """

    command: str = ""
    status: int = 0
    output: str = ""

    def __str__(self) -> str:
        """Return the message with the command, status and output tail."""
        tail = self.output[-2000:]
        return (
            f"{self.message}\n  command: {self.command}\n  status: {self.status}\n  output: {tail}"
        )


@attrs.define
class ConsoleTimeout(TransportError):
    """A console did not show what we waited for within the deadline.

    Attributes:
        pattern: What we waited for.
        timeout: The deadline in seconds.
        buffer: The tail of what the console did show.
    """

    pattern: str = ""
    timeout: float = 0.0
    buffer: str = ""

    def __str__(self) -> str:
        """Return the message with the pattern, deadline and buffer tail."""
        tail = self.buffer[-2000:]
        return (
            f"{self.message}\n  waited {seconds(self.timeout)} s for: {self.pattern!r}\n"
            f"  console showed (tail): {tail!r}"
        )
