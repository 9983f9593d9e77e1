"""What a monitor says at a trigger point: which identifiers may come next.

A :class:`Restriction` is the answer of one analysis (jedi after ``obj.``, the SQLite
schema after ``FROM``), asked once per trigger and then applied to every token of the
identifier that follows. Identifiers are compared as bytes, because every constraint in
Stencil speaks bytes.

The identifier's *end* matters as well as its spelling: ``follow`` lists identifiers
that are legal only right before a given byte. SQL uses it for qualifiers (``T1`` is
legal before ``.`` although it is not a column) and Python for string prefixes (``f``
before a quote).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

_IDENT = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") | frozenset(
    range(0x80, 0x100)
)
_DIGITS = frozenset(b"0123456789")


def is_ident_byte(b: int) -> bool:
    """Bytes that may continue an identifier (ASCII word characters and any non-ASCII byte,
    so UTF-8 identifiers stay whole)."""
    return b in _IDENT


def starts_identifier(b: int) -> bool:
    """Bytes that may start an identifier: a digit starts a number instead."""
    return b in _IDENT and b not in _DIGITS


@dataclass(frozen=True)
class Restriction:
    """The identifiers allowed at one trigger point.

    ``names``: identifiers allowed whatever ends them. ``follow``: ``(end byte, names)``
    pairs, identifiers allowed only when that byte ends them (``None``: any identifier).
    ``excluded``: identifiers refused whatever else says (with ``None`` above: "any
    identifier but these"). ``casefold``: compare ASCII case-insensitively (SQL). ``kind`` says what triggered
    the restriction, for ``stats``.
    """

    names: frozenset[bytes]
    follow: tuple[tuple[int, frozenset[bytes] | None], ...] = ()
    casefold: bool = False
    kind: str = ""
    excluded: frozenset[bytes] = frozenset()  # never legal as a whole identifier
    _follow: dict[int, frozenset[bytes] | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.casefold:
            object.__setattr__(self, "names", frozenset(n.lower() for n in self.names))
            follow = tuple(
                (end, None if names is None else frozenset(n.lower() for n in names))
                for end, names in self.follow
            )
            object.__setattr__(self, "follow", follow)
            object.__setattr__(self, "excluded", frozenset(n.lower() for n in self.excluded))
        object.__setattr__(self, "_follow", dict(self.follow))

    @cached_property
    def open_prefix(self) -> bool:
        """Whether every identifier is a legal prefix (some ``follow`` entry allows any)."""
        return any(names is None for _, names in self.follow)

    @cached_property
    def candidates(self) -> frozenset[bytes]:
        """Every identifier that is legal before some end (names and follow names)."""
        out = set(self.names)
        for _, names in self.follow:
            if names is not None:
                out |= names
        return frozenset(out)

    @cached_property
    def prefixes(self) -> frozenset[bytes]:
        """Every non-empty prefix of a candidate."""
        return frozenset(c[:k] for c in self.candidates for k in range(1, len(c) + 1))

    def norm(self, s: bytes) -> bytes:
        return s.lower() if self.casefold else s

    def prefix_ok(self, partial: bytes) -> bool:
        """Whether ``partial`` can still grow into a legal identifier."""
        return self.open_prefix or self.norm(partial) in self.prefixes

    def opens_before(self, end: int) -> bool:
        """Whether any identifier is legal right before the byte ``end``."""
        return end in self._follow and self._follow[end] is None

    def complete_ok(self, ident: bytes, end: int | None) -> bool:
        """Whether ``ident`` is legal when the byte ``end`` ends it (None: the text ends)."""
        key = self.norm(ident)
        if key in self.excluded:
            return False
        if key in self.names:
            return True
        if end is None or end not in self._follow:
            return False
        names = self._follow[end]
        return names is None or key in names
