"""Vocabulary tokens indexed by the identifier they carry, so a restriction becomes a mask
without looking at every token.

Each token splits into ``pre`` (bytes before its first identifier run), ``head`` (that
run) and ``post`` (the rest). Real vocabularies have few distinct ``pre`` values (the
135M default model: 24, most tokens have ``pre`` = ``b""`` or ``b" "``), so a mask costs
one monitor question per ``pre`` and one dictionary lookup per prefix of each legal
identifier (MGD's mask building is quadratic in the vocabulary; this is not). Tokens
with two identifier runs (``os.path``) are few and checked one by one.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from monitors.restriction import Restriction, is_ident_byte, starts_identifier
from plugin.vocabulary import Vocabulary


@dataclass
class HeadGroup:
    """The tokens that are ``pre + head`` (``bare``) or ``pre + head + post`` with a post
    free of identifier bytes, grouped by the post's first byte (``ended``)."""

    bare: list[int] = field(default_factory=list)
    ended: dict[int, list[int]] = field(default_factory=dict)


@dataclass
class IdentifierIndex:
    """Token ids of one vocabulary, grouped for identifier restrictions."""

    size: int
    heads: dict[bytes, dict[bytes, HeadGroup]]  # pre → head → tokens
    starts: dict[bytes, np.ndarray]  # pre → tokens whose head starts an identifier
    continuing: np.ndarray  # pre == b"": every token with a head (continues an identifier)
    bare: dict[bytes, np.ndarray]  # pre → tokens that are pre + head exactly
    ended_by: dict[bytes, dict[int, np.ndarray]]  # pre → post's first byte → tokens
    first_byte: dict[int, np.ndarray]  # tokens whose first byte is not an identifier byte
    complex_ids: list[int]  # two or more identifier runs: checked one by one
    token_bytes: list[bytes] = field(repr=False, default_factory=list)
    _lower: dict[bytes, dict[bytes, HeadGroup]] = field(default_factory=dict)
    _gated: dict[frozenset[int], list[int]] = field(default_factory=dict)

    def gated_inside(self, gated: frozenset[int]) -> list[int]:
        """Tokens where a byte of ``gated`` comes after the first byte (or is a digit that
        starts the token): their mask entry needs a walk (see :meth:`Monitor.refused`)."""
        found = self._gated.get(gated)
        if found is None:
            found = []
            for tid, data in enumerate(self.token_bytes):
                for i, b in enumerate(data):
                    if (
                        b in gated
                        and (i > 0 or is_ident_byte(b))
                        and not (i and is_ident_byte(data[i - 1]) and is_ident_byte(b))
                    ):
                        found.append(tid)
                        break
            self._gated[gated] = found
        return found

    def head_groups(self, pre: bytes, casefold: bool) -> dict[bytes, HeadGroup]:
        """``pre``'s head → tokens; keyed by lower-cased head when ``casefold``."""
        if not casefold:
            return self.heads.get(pre, {})
        if pre not in self._lower:
            merged: dict[bytes, HeadGroup] = {}
            for head, g in self.heads.get(pre, {}).items():
                m = merged.setdefault(head.lower(), HeadGroup())
                m.bare.extend(g.bare)
                for end, ids in g.ended.items():
                    m.ended.setdefault(end, []).extend(ids)
            self._lower[pre] = merged
        return self._lower[pre]

    def allowed_heads(self, pre: bytes, r: Restriction, partial: bytes) -> list[np.ndarray | list[int]]:
        """Token-id collections of group ``pre`` whose head, appended to ``partial``, fits ``r``:
        a legal prefix when the token ends with the head, a legal identifier before the
        token's next byte otherwise."""
        out: list[np.ndarray | list[int]] = []
        groups = self.head_groups(pre, r.casefold)
        p = r.norm(partial)
        if r.open_prefix:  # every head is a legal prefix; only the ends need checking
            out.append(self.bare.get(pre, np.empty(0, np.int64)))
            for end, ids in self.ended_by.get(pre, {}).items():
                if r.opens_before(end):
                    out.append(ids)
        n = len(p)
        for cand in r.candidates:
            if not cand.startswith(p) or len(cand) == n:
                continue
            rest = cand[n:]
            if not r.open_prefix:
                for k in range(1, len(rest)):
                    g = groups.get(rest[:k])
                    if g is not None and g.bare:
                        out.append(g.bare)
            g = groups.get(rest)
            if g is None:
                continue
            if not r.open_prefix:
                out.append(g.bare)
            for end, ids in g.ended.items():
                if r.complete_ok(cand, end):
                    out.append(ids)
        return out

    def excluded_heads(self, pre: bytes, r: Restriction, partial: bytes) -> list[list[int]]:
        """Tokens of group ``pre`` that, after ``partial``, end one of ``r.excluded`` (to
        clear after :meth:`allowed_heads`, whose open-prefix answer includes them)."""
        groups = self.head_groups(pre, r.casefold)
        p = r.norm(partial)
        return [
            ids
            for word in r.excluded
            if word.startswith(p) and (g := groups.get(word[len(p) :]))
            for ids in g.ended.values()
        ]


_INDEXES: weakref.WeakKeyDictionary[Vocabulary, IdentifierIndex] = weakref.WeakKeyDictionary()


def identifier_index(vocab: Vocabulary) -> IdentifierIndex:
    """The (cached) :class:`IdentifierIndex` of ``vocab``."""
    found = _INDEXES.get(vocab)
    if found is None:
        found = _INDEXES[vocab] = _build(vocab)
    return found


def split_identifier(data: bytes) -> tuple[bytes, bytes, bytes] | None:
    """``(pre, head, post)`` around the first identifier run of ``data`` (None: none)."""
    i = 0
    while i < len(data) and not is_ident_byte(data[i]):
        i += 1
    if i == len(data):
        return None
    j = i
    while j < len(data) and is_ident_byte(data[j]):
        j += 1
    return data[:i], data[i:j], data[j:]


def _build(vocab: Vocabulary) -> IdentifierIndex:
    heads: dict[bytes, dict[bytes, HeadGroup]] = {}
    starts: dict[bytes, list[int]] = {}
    continuing: list[int] = []
    bare: dict[bytes, list[int]] = {}
    ended_by: dict[bytes, dict[int, list[int]]] = {}
    first_byte: dict[int, list[int]] = {}
    complex_ids: list[int] = []
    for tid, data in enumerate(vocab.token_bytes):
        if not data or tid in vocab.special_ids:
            continue
        if not is_ident_byte(data[0]):
            first_byte.setdefault(data[0], []).append(tid)
        parts = split_identifier(data)
        if parts is None:
            continue
        pre, head, post = parts
        if any(is_ident_byte(b) for b in post):
            complex_ids.append(tid)
            continue
        g = heads.setdefault(pre, {}).setdefault(head, HeadGroup())
        if post:
            g.ended.setdefault(post[0], []).append(tid)
            ended_by.setdefault(pre, {}).setdefault(post[0], []).append(tid)
        else:
            g.bare.append(tid)
            bare.setdefault(pre, []).append(tid)
        if starts_identifier(head[0]):
            starts.setdefault(pre, []).append(tid)
        if not pre:
            continuing.append(tid)

    def arr(ids: list[int]) -> np.ndarray:
        return np.asarray(ids, dtype=np.int64)

    return IdentifierIndex(
        size=vocab.size,
        heads=heads,
        starts={k: arr(v) for k, v in starts.items()},
        continuing=arr(continuing),
        bare={k: arr(v) for k, v in bare.items()},
        ended_by={k: {e: arr(v) for e, v in d.items()} for k, d in ended_by.items()},
        first_byte={k: arr(v) for k, v in first_byte.items()},
        complex_ids=complex_ids,
        token_bytes=[b"" if tid in vocab.special_ids else data for tid, data in enumerate(vocab.token_bytes)],
    )
