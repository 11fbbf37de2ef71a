"""A JSON reader that remembers where each value lies in the text, for byte-exact edits.

Merging results into a STIG Viewer checklist must leave every rule kmod-audit does not
prove byte-identical, whatever spacing and escapes STIG Viewer (or a person) used. So
the checklist is not re-serialised: the few values that change are replaced in the
original text, at the spans this reader records.
"""

from __future__ import annotations

import json
import re
from typing import Final

import attrs

__all__ = ["Node", "parse_spans"]

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
        return Node(start=pos, end=match.end(), value=json.loads(match.group()))

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


def parse_spans(text: str) -> Node:
    """Parse the JSON document `text`, keeping the span of every value.

    Raises:
        json.JSONDecodeError: `text` is not one JSON value (with trailing blanks only), or
            it nests arrays and objects deeper than `MAX_DEPTH`.
    """
    reader = _Reader(text)
    node = reader.value(0)
    end = reader.skip(node.end)
    if end != len(text):
        raise reader.fail(_EXTRA, end)
    return node
