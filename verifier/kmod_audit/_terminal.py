r"""Terminal safety: show untrusted text on a terminal without letting it act there.

Rules files, `auditctl -l` output, audit records and a target's output reach the text
reports and the error messages. A key such as `k\r\x1b[2K` would otherwise move the
cursor, erase lines or hide text (`ESC[8m`), so a rules file could erase its own `[fail]`
lines and print `result: COMPLIANT`; U+202E (right-to-left override) would reorder what
follows it. Every character that is not printable is therefore shown as a Python-style
escape (`\r`, `\x1b`, `\u202e`): C0 and C1 controls, DEL, format characters (bidi
overrides and isolates, zero-width characters), line and paragraph separators, other
spaces than the plain space, surrogates (undecodable bytes of a command line) and
unassigned or private code points. Printable text, also non-ASCII, stays as it is.

The JSON output needs none of this: `json.dumps` escapes these characters itself.
"""

from __future__ import annotations

from typing import Final

__all__ = ["escape_line", "escape_lines"]

_NAMED: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_line(text: str) -> str:
    r"""Return `text` as one terminal-safe line: every non-printable character escaped.

    Newlines are escaped too, so a value can never start a line of its own.

    Args:
        text: Any text.

    Returns:
        `text` unchanged when it is printable; otherwise with each character that is not
        printable (`str.isprintable`, the space excepted) written as `\r`, `\x1b`, `\u202e`...
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else _escape_char(c) for c in text)


def escape_lines(text: str) -> str:
    r"""Return `text` terminal-safe, keeping its line breaks (`\n`) and escaping the rest.

    For messages that are several lines on purpose (an error with the command and the
    tail of its output).

    Args:
        text: Any text.

    Returns:
        Each line of `text` passed through `escape_line`, joined with `\n` again.
    """
    return "\n".join(escape_line(line) for line in text.split("\n"))
