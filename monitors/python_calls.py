"""Call arity: whether the arguments of a call fit the callee's signature as jedi knows it.

The Python monitor asks jedi for the signature(s) once per call (keyed by the call's
``(``) and checks the arguments typed so far against them, at two points:

* ``)`` is refused while a parameter without a default is still unfilled (too few
  arguments);
* at the start of an argument, once every positional parameter is filled and the
  callee takes no ``*args``, only a keyword argument (a keyword parameter not given
  yet), a ``*``/``**`` unpacking or ``)`` may follow (too many positional arguments).

Where a call could be legal under any of several signatures (typeshed overloads), it
is allowed. Unpacked arguments (``*xs``, ``**kw``) make the count unknown: the call is
then left free. Class calls are left free too: jedi sometimes reports a base class's
constructor for a subclass with its own ``__init__``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

_KEYWORD_ARGUMENT = re.compile(rb"\s*([A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)\s*=(?!=)")
_BLANK = re.compile(rb"(\s|\\\n|#[^\n]*)*")
_UNCOUNTABLE = re.compile(rb"\b(lambda|for)\b")


@dataclass(frozen=True)
class Signature:
    """What arity checking needs of one signature."""

    positional: tuple[bytes, ...]  # positional-only and positional-or-keyword, in order
    keyword: frozenset[bytes]  # names that may be passed by keyword
    required: frozenset[bytes]  # parameters without a default (not * or **)
    var_positional: bool
    var_keyword: bool

    @classmethod
    def from_jedi(cls, signature: Any) -> Signature:
        positional: list[bytes] = []
        keyword: set[bytes] = set()
        required: set[bytes] = set()
        var_positional = var_keyword = False
        for p in signature.params:
            kind = str(p.kind)
            name = p.name.encode()
            if kind.endswith("VAR_POSITIONAL"):
                var_positional = True
                continue
            if kind.endswith("VAR_KEYWORD"):
                var_keyword = True
                continue
            if not kind.endswith("KEYWORD_ONLY"):
                positional.append(name)
            if not kind.endswith("POSITIONAL_ONLY"):
                keyword.add(name)
            if not _has_default(p.to_string()):
                required.add(name)
        return cls(tuple(positional), frozenset(keyword), frozenset(required), var_positional, var_keyword)


@dataclass(frozen=True)
class Arguments:
    """The arguments of a call typed so far: ``positional`` complete positional ones,
    ``keywords`` the keyword names given, ``unpacked`` whether ``*``/``**`` was used,
    and ``current`` the argument in progress."""

    positional: int
    keywords: frozenset[bytes]
    unpacked: bool
    current: bytes

    @classmethod
    def parse(cls, parts: Sequence[bytes]) -> Arguments | None:
        """From :func:`monitors.python_lexer.split_arguments`'s parts; None when commas may
        not separate arguments (a ``lambda``'s parameters, a generator's ``for`` targets)."""
        if any(_UNCOUNTABLE.search(part) for part in parts):
            return None
        positional, keywords, unpacked = 0, set(), False
        for part in parts[:-1]:
            kind, name = _classify(part)
            if kind == "positional":
                positional += 1
            elif kind == "keyword":
                keywords.add(name)
            elif kind == "unpacked":
                unpacked = True
        return cls(positional, frozenset(keywords), unpacked, parts[-1])

    @property
    def at_start(self) -> bool:
        """Whether the argument in progress is still empty (blanks and comments)."""
        return _BLANK.fullmatch(self.current) is not None

    def refuses_close(self, signatures: Iterable[Signature]) -> bool:
        """Whether ``)`` now leaves a required parameter unfilled under every signature."""
        if self.unpacked:
            return False
        kind, name = _classify(self.current)
        if kind == "unpacked":
            return False
        positional = self.positional + (kind == "positional")
        keywords = self.keywords | ({name} if kind == "keyword" else set())
        return all(
            any(p not in keywords for p in s.required if p not in s.positional[:positional])
            for s in signatures
        )

    def overflows(self, signatures: Iterable[Signature]) -> bool:
        """Whether, at an argument's start, no further positional argument fits any
        signature (only a keyword argument, an unpacking or ``)`` may come)."""
        if self.unpacked or not self.at_start:
            return False
        return all(not s.var_positional and self.positional >= len(s.positional) for s in signatures)

    def keyword_names(self, signatures: Iterable[Signature]) -> frozenset[bytes] | None:
        """The keyword parameters not given yet, by position or keyword, over all
        signatures; None when a signature takes ``**kwargs`` (any name)."""
        names: set[bytes] = set()
        for s in signatures:
            if s.var_keyword:
                return None
            names |= s.keyword - self.keywords - set(s.positional[: self.positional])
        return frozenset(names)


def _classify(part: bytes) -> tuple[str, bytes]:
    """``("empty"|"unpacked"|"keyword"|"positional", keyword name)`` of one argument."""
    if _BLANK.fullmatch(part):
        return "empty", b""
    stripped = part.lstrip()
    if stripped.startswith(b"*"):
        return "unpacked", b""
    m = _KEYWORD_ARGUMENT.match(part)
    if m:
        return "keyword", m.group(1)
    return "positional", b""


def _has_default(text: str) -> bool:
    """Whether a parameter as jedi prints it (``name: annotation=default``) has a default:
    an ``=`` outside the annotation's brackets and strings."""
    depth, quote = 0, ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "=" and depth == 0:
            return True
    return False
