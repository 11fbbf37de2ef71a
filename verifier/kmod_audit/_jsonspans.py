"""A JSON reader that remembers where each value lies in the text, for byte-exact edits.

Merging results into a STIG Viewer checklist must leave every rule kmod-audit does not
prove byte-identical, whatever spacing and escapes STIG Viewer (or a person) used. So
the checklist is not re-serialised: the few values that change are replaced in the
original text, at the spans this reader records.

A valid document is read fast: C's `json` checks it first, and only the levels asked for
are walked in Python (a value below them is decoded whole by C's scanner); `member_spans`
reads the spans of one object's members later, for the few a merge changes. Anything C
refuses, or nests deeper than `MAX_DEPTH`, goes to the exact reader, which names the error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Final

import attrs

__all__ = ["Node", "member_spans", "parse_spans"]

_WS: Final = re.compile(r"[ \t\n\r]*")
_NUMBER: Final = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_LITERALS: Final = {"true": True, "false": False, "null": None}
# json.loads's own messages.
_VALUE: Final = "Expecting value"
_NAME: Final = "Expecting property name enclosed in double quotes"
_COLON: Final = "Expecting ':' delimiter"
_COMMA: Final = "Expecting ',' delimiter"
_EXTRA: Final = "Extra data"
# Deeper than any checklist (STIG Viewer's nest about 6 levels), and far below Python's
# recursion limit: a hostile document is refused with a message, never a RecursionError.
MAX_DEPTH: Final = 200
_DEEP: Final = f"Nested deeper than {MAX_DEPTH} levels"
_LONG: Final = "Integer too long to read"


@attrs.frozen(kw_only=True)
class Node:
    """A JSON value and where it is.

    Attributes:
        start: Offset of its first character.
        end: Offset just past its last character.
        value: The decoded value (for objects and arrays: the decoded whole).
        members: For an object, `(key, node)` pairs in text order.
        items: For an array, its element nodes.
    """

    start: int
    end: int
    value: object
    members: tuple[tuple[str, Node], ...] = ()
    items: tuple[Node, ...] = ()

    def get(self, key: str) -> Node | None:
        """The node of member `key` of an object (the last one, as json.loads keeps)."""
        found = None
        for name, node in self.members:
            if name == key:
                found = node
        return found


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text

    def skip(self, pos: int) -> int:
        match = _WS.match(self.text, pos)
        return match.end() if match else pos

    def fail(self, what: str, pos: int) -> json.JSONDecodeError:
        return json.JSONDecodeError(what, self.text, pos)

    def value(self, pos: int, depth: int = 0) -> Node:
        text = self.text
        pos = self.skip(pos)
        char = text[pos : pos + 1]
        if char in {"{", "["} and depth >= MAX_DEPTH:
            raise self.fail(_DEEP, pos)
        if char == "{":
            return self.object(pos, depth + 1)
        if char == "[":
            return self.array(pos, depth + 1)
        if char == '"':
            string, end = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
            return Node(start=pos, end=end, value=string)
        for word, literal in _LITERALS.items():
            if text.startswith(word, pos):
                return Node(start=pos, end=pos + len(word), value=literal)
        match = _NUMBER.match(text, pos)
        if match is None:
            raise self.fail(_VALUE, pos)
        try:
            number = json.loads(match.group())
        except ValueError:  # Python refuses to read integers of over 4300 digits
            raise self.fail(_LONG, pos) from None
        return Node(start=pos, end=match.end(), value=number)

    def object(self, start: int, depth: int) -> Node:
        text = self.text
        members: list[tuple[str, Node]] = []
        pos = self.skip(start + 1)
        if text[pos : pos + 1] == "}":
            return Node(start=start, end=pos + 1, value={})
        while True:
            pos = self.skip(pos)
            if text[pos : pos + 1] != '"':
                raise self.fail(_NAME, pos)
            key, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
            pos = self.skip(pos)
            if text[pos : pos + 1] != ":":
                raise self.fail(_COLON, pos)
            node = self.value(pos + 1, depth)
            members.append((key, node))
            pos = self.skip(node.end)
            char = text[pos : pos + 1]
            if char == "}":
                value = {k: n.value for k, n in members}
                return Node(start=start, end=pos + 1, value=value, members=tuple(members))
            if char != ",":
                raise self.fail(_COMMA, pos)
            pos += 1

    def array(self, start: int, depth: int) -> Node:
        text = self.text
        items: list[Node] = []
        pos = self.skip(start + 1)
        if text[pos : pos + 1] == "]":
            return Node(start=start, end=pos + 1, value=[])
        while True:
            node = self.value(pos, depth)
            items.append(node)
            pos = self.skip(node.end)
            char = text[pos : pos + 1]
            if char == "]":
                value = [n.value for n in items]
                return Node(start=start, end=pos + 1, value=value, items=tuple(items))
            if char != ",":
                raise self.fail(_COMMA, pos)
            pos += 1


# The gaps between the values of a document known to be valid, blanks included: a key (raw,
# as group 1) and the colon after it; a comma and the next key, or the "}"; a comma, or "]".
_FIRST_KEY: Final = re.compile(r'[ \t\n\r]*"((?:[^"\\]|\\.)*)"[ \t\n\r]*:[ \t\n\r]*')
_NEXT_KEY: Final = re.compile(
    r'[ \t\n\r]*(?:,[ \t\n\r]*"((?:[^"\\]|\\.)*)"[ \t\n\r]*:[ \t\n\r]*|\})'
)
_NEXT_ITEM: Final = re.compile(r"[ \t\n\r]*(?:,[ \t\n\r]*|\])")
# C's scanner: (value, end) of the value at an offset, with no Python frame in between.
_SCAN: Final[Callable[[str, int], tuple[object, int]]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_scanstring: Final[Callable[[str, int], tuple[str, int]]] = json.decoder.scanstring  # type: ignore[attr-defined]


class _FastReader(_Reader):
    """Reads a document C's decoder accepted: expands `levels` levels, decodes the rest whole.

    Validity is known, so only the spans are read here: one regular expression per gap
    between values, and one call of C's scanner per value below the levels. The loops are
    written out (no helper call per value): a checklist's rules array has thousands.
    """

    def __init__(self, text: str, levels: int) -> None:
        super().__init__(text)
        self.levels = levels
        self.scan = _SCAN

    def value(self, pos: int, depth: int = 0) -> Node:
        return self.at(self.skip(pos), depth)

    def at(self, pos: int, depth: int) -> Node:
        """The value that starts at `pos` (no blanks before it)."""
        if depth < self.levels:
            char = self.text[pos : pos + 1]
            if char == "{":
                return self.object(pos, depth + 1)
            if char == "[":
                return self.array(pos, depth + 1)
        value, end = self.scan(self.text, pos)
        return Node(start=pos, end=end, value=value)

    def object(self, start: int, depth: int) -> Node:
        text, scan, leaves = self.text, self.scan, depth >= self.levels
        gap = _FIRST_KEY.match(text, start + 1)
        if gap is None:  # no key: the object is empty
            return Node(start=start, end=self.skip(start + 1) + 1, value={})
        members: list[tuple[str, Node]] = []
        while True:
            key = gap.group(1)
            if "\\" in key:  # escaped: decode it (only blanks follow it, then the colon)
                key = _scanstring(text, gap.start(1))[0]
            pos = gap.end()
            if leaves or text[pos] not in "{[":
                value, end = scan(text, pos)
                node = Node(start=pos, end=end, value=value)
            else:
                node = self.at(pos, depth)
            members.append((key, node))
            gap = _NEXT_KEY.match(text, node.end)
            if gap is None:  # pragma: no cover - the document was checked to be valid
                raise self.fail(_COMMA, node.end)
            if gap.group(1) is None:  # the "}"
                value = {k: n.value for k, n in members}
                return Node(start=start, end=gap.end(), value=value, members=tuple(members))

    def array(self, start: int, depth: int) -> Node:
        text, scan, leaves = self.text, self.scan, depth >= self.levels
        pos = self.skip(start + 1)
        if text[pos : pos + 1] == "]":
            return Node(start=start, end=pos + 1, value=[])
        items: list[Node] = []
        while True:
            if leaves or text[pos] not in "{[":
                value, end = scan(text, pos)
                node = Node(start=pos, end=end, value=value)
            else:
                node = self.at(pos, depth)
            items.append(node)
            gap = _NEXT_ITEM.match(text, node.end)
            if gap is None:  # pragma: no cover - the document was checked to be valid
                raise self.fail(_COMMA, node.end)
            pos = gap.end()  # at the next item, or past the "]"
            if text[pos - 1] == "]":
                return Node(
                    start=start, end=pos, value=[n.value for n in items], items=tuple(items)
                )


class _Constant(ValueError):
    """NaN or Infinity, which C's decoder takes and JSON (and this reader) does not."""


def _refuse_constant(name: str) -> object:
    raise _Constant(name)


def _depth(value: object) -> int:
    """How deeply `value` nests lists and dicts (level by level: no recursion, no limit)."""
    depth = 0
    level: list[object] = [value]
    while True:
        containers = [item for item in level if isinstance(item, (dict, list))]
        if not containers:
            return depth
        depth += 1
        level = []
        for container in containers:
            level.extend(container.values() if isinstance(container, dict) else container)


def _accepted(text: str) -> bool:
    """Whether the exact reader would accept `text` (decided by C's decoder, fast)."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # JSONDecodeError and _Constant are ValueErrors
        return False
    return _depth(value) <= MAX_DEPTH


def parse_spans(text: str, *, levels: int | None = None) -> Node:
    """Parse the JSON document `text`, keeping the span of every value.

    Args:
        text: The document.
        levels: Expand arrays and objects only this many levels deep (the root is level
            1): one below them has its span and value, but no `members` or `items`. All
            levels when None. A merge needs a few levels; walking them all in Python is
            most of the cost of a large checklist.

    Raises:
        json.JSONDecodeError: `text` is not one JSON value (with trailing blanks only), or
            it nests arrays and objects deeper than `MAX_DEPTH`.
    """
    if _accepted(text):
        return _read(_FastReader(text, MAX_DEPTH if levels is None else levels))
    return _read(_Reader(text))  # names the error as json.loads would, with its position


def _read(reader: _Reader) -> Node:
    """The one value of `reader`'s document, which only blanks may follow."""
    node = reader.value(0)
    end = reader.skip(node.end)
    if end != len(reader.text):
        raise reader.fail(_EXTRA, end)
    return node


def member_spans(text: str, node: Node) -> list[tuple[str, int, int]]:
    """`(key, start, end)` of the value of each member of the object `node`, in text order.

    Only the spans: no value is kept and no node made, so a merge that changes a few
    members of many rules pays little for the others.

    Args:
        text: The document `node` was parsed from (by `parse_spans`, so it is valid).
        node: An object of it, expanded or not.
    """
    spans: list[tuple[str, int, int]] = []
    gap = _FIRST_KEY.match(text, node.start + 1)
    while gap is not None and gap.group(1) is not None:
        key = gap.group(1)
        if "\\" in key:
            key = _scanstring(text, gap.start(1))[0]
        start = gap.end()
        end = _SCAN(text, start)[1]
        spans.append((key, start, end))
        gap = _NEXT_KEY.match(text, end)
    return spans
