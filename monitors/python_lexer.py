"""Where partial Python code stands lexically: inside a string, a comment, which brackets
are open.

tree-sitter cannot say this for incomplete code (``x = "abc obj.`` parses as an
attribute access inside an ERROR node), so the Python monitor scans the bytes itself
before asking tree-sitter for the syntactic role. The open brackets also give the
temporary closers that make the partial code parse (MGD's trick).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

_OPEN = {ord("("): ord(")"), ord("["): ord("]"), ord("{"): ord("}")}
_CLOSE = {v: k for k, v in _OPEN.items()}
_QUOTES = (ord('"'), ord("'"))


@dataclass(frozen=True)
class LexState:
    """``brackets``: open brackets, innermost last, and ``opened`` their offsets in the
    text; ``quote``: the delimiter of the string we are in (``b""`` outside strings);
    ``comment``: inside a ``#`` comment."""

    brackets: bytes = b""
    opened: tuple[int, ...] = ()
    quote: bytes = b""
    escaped: bool = False
    comment: bool = False

    @property
    def in_code(self) -> bool:
        return not self.quote and not self.comment

    def closers(self) -> bytes:
        """The closing brackets that balance the open ones."""
        return bytes(_OPEN[b] for b in reversed(self.brackets))


def scan(state: LexState, data: bytes, offset: int = 0, commas: list[int] | None = None) -> LexState:
    """The lexical state after ``data`` follows a text in ``state``; ``data`` starts at
    ``offset`` in the whole text (for :attr:`LexState.opened`). ``commas``, if given,
    receives the offsets of the commas in code outside any bracket opened in ``data``.

    f-strings count as strings: their ``{…}`` parts are not looked into.
    """
    brackets = bytearray(state.brackets)
    opened = list(state.opened)
    depth = len(brackets)
    quote, escaped, comment = state.quote, state.escaped, state.comment
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if comment:
            if b == 0x0A:
                comment = False
            i += 1
        elif quote:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x0A and len(quote) == 1:
                quote = b""  # an unterminated one-line string ends with its line
            elif data.startswith(quote, i):
                i += len(quote)
                quote = b""
                continue
            i += 1
        elif b == 0x23:  # '#'
            comment = True
            i += 1
        elif b in _QUOTES:
            triple = data[i : i + 3]
            quote = triple if triple in (b'"""', b"'''") else data[i : i + 1]
            i += len(quote)
        else:
            if b in _OPEN:
                brackets.append(b)
                opened.append(offset + i)
            elif b in _CLOSE and brackets and brackets[-1] == _CLOSE[b]:
                brackets.pop()
                opened.pop()
            elif b == 0x2C and commas is not None and len(brackets) == depth:
                commas.append(offset + i)
            i += 1
    return LexState(bytes(brackets), tuple(opened), quote, escaped, comment)


def split_arguments(data: bytes) -> list[bytes]:
    """The top-level comma-separated parts of ``data``, the text after a call's ``(``
    (strings, comments and nested brackets are skipped over; the last part is the
    argument in progress, maybe empty)."""
    commas: list[int] = []
    scan(LexState(), data, 0, commas)
    bounds = [-1, *commas, len(data)]
    return [data[a + 1 : b] for a, b in itertools.pairwise(bounds)]
