"""Terminal regexes (Python ``re`` syntax, as Lark writes them) as NFAs over UTF-8 bytes.

The grammar engine lexes the bytes of tokens, not characters: a token may hold half of
a multi-byte character. So every character class is compiled to the UTF-8 byte
sequences of its code points (surrogates excluded, as UTF-8 cannot carry them), and the
lexer DFA built from these NFAs (:mod:`grammars.lexer_dfa`) runs byte by byte.

Look-around, back-references and anchors cannot be expressed as a finite automaton over
bytes; they raise :class:`UnsupportedPattern`, which the grammar compiler turns into a
``GrammarError`` naming the terminal.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import re._constants as sre_c
import re._parser as sre_parse
import sys
import unicodedata
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from grammars.native import lazy_dfa_core
from plugin.paths import cache_dir

MAX_UNICODE = 0x10FFFF
_SURROGATES = (0xD800, 0xDFFF)
_REPEAT_UNROLL_LIMIT = 100


class UnsupportedPattern(ValueError):
    """The pattern uses a construct a byte automaton cannot express."""


@dataclass
class ByteNFA:
    """Thompson NFA: ``edges[s]`` is a list of (lo, hi, target) byte ranges, ``eps[s]`` targets."""

    edges: list[list[tuple[int, int, int]]] = field(default_factory=list)
    eps: list[list[int]] = field(default_factory=list)

    def new_state(self) -> int:
        self.edges.append([])
        self.eps.append([])
        return len(self.edges) - 1


Ranges = list[tuple[int, int]]


def _normalise(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _negate(ranges: Ranges) -> Ranges:
    out: Ranges = []
    nxt = 0
    for lo, hi in _normalise(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_UNICODE:
        out.append((nxt, MAX_UNICODE))
    return out


@functools.cache
def _category_ranges(category: str) -> tuple[tuple[int, int], ...]:
    """Code-point ranges of ``\\d``, ``\\w``, ``\\s`` as Python's Unicode ``re`` defines them."""
    return _unicode_categories()[category]


@functools.cache
def _unicode_categories() -> dict[str, tuple[tuple[int, int], ...]]:
    """All three categories, read from the disk cache (per Python version and Unicode
    database) or computed by running ``re`` over every code point: half a second, which
    a new process would otherwise pay in the first mask of a pattern using ``\\d``."""
    key = f"{sys.version_info[0]}.{sys.version_info[1]}-{unicodedata.unidata_version}"
    path = cache_dir() / f"unicode-categories-{key}.json"
    try:
        found = json.loads(path.read_text())
        return {c: tuple((int(lo), int(hi)) for lo, hi in found[c]) for c in "dws"}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    text = "".join(map(chr, range(_SURROGATES[0]))) + "".join(
        map(chr, range(_SURROGATES[1] + 1, MAX_UNICODE + 1))
    )  # every code point but the surrogates
    out: dict[str, tuple[tuple[int, int], ...]] = {}
    for name, pattern in (("d", r"\d+"), ("w", r"\w+"), ("s", r"\s+")):
        fixed: Ranges = []
        for m in re.finditer(pattern, text):
            lo, hi = ord(m.group()[0]), ord(m.group()[-1])
            # the surrogate gap made code points around it adjacent in ``text``: split
            if lo < _SURROGATES[0] <= hi:
                fixed += [(lo, _SURROGATES[0] - 1), (_SURROGATES[1] + 1, hi)]
            else:
                fixed.append((lo, hi))
        out[name] = tuple(_normalise(fixed))
    with contextlib.suppress(OSError):  # a read-only cache only costs the half second
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(out))
        tmp.replace(path)
    return out


_CATEGORIES = {
    sre_c.CATEGORY_DIGIT: ("d", False),
    sre_c.CATEGORY_NOT_DIGIT: ("d", True),
    sre_c.CATEGORY_WORD: ("w", False),
    sre_c.CATEGORY_NOT_WORD: ("w", True),
    sre_c.CATEGORY_SPACE: ("s", False),
    sre_c.CATEGORY_NOT_SPACE: ("s", True),
}


def _category(cat: object, ascii_only: bool) -> Ranges:
    name, negated = _CATEGORIES[cat]
    if ascii_only:
        base = _normalise([(i, i) for i in range(128) if re.match(f"\\{name}", chr(i), re.ASCII)])
    else:
        base = list(_category_ranges(name))
    return _negate(base) if negated else base


def _case_variants(cp: int) -> Ranges:
    ch = chr(cp)
    out = {cp}
    for v in (ch.lower(), ch.upper()):
        if len(v) == 1:
            out.add(ord(v))
    return [(c, c) for c in out]


def _utf8_sequences(lo: int, hi: int) -> list[list[tuple[int, int]]]:
    """Split code points ``lo..hi`` into byte-range sequences (each a list of (lo, hi) bytes)."""
    out: list[list[tuple[int, int]]] = []
    for a, b in ((0, 0x7F), (0x80, 0x7FF), (0x800, 0xFFFF), (0x10000, MAX_UNICODE)):
        s, e = max(lo, a), min(hi, b)
        if s > e:
            continue
        # Remove surrogates from the 3-byte block.
        parts = [(s, e)]
        if a == 0x800:
            parts = [(x, y) for x, y in ((s, min(e, 0xD7FF)), (max(s, 0xE000), e)) if x <= y]
        for x, y in parts:
            out.extend(_split_same_length(x, y))
    return out


def _split_same_length(lo: int, hi: int) -> list[list[tuple[int, int]]]:
    enc_lo, enc_hi = chr(lo).encode(), chr(hi).encode()
    n = len(enc_lo)
    if n == 1:
        return [[(lo, hi)]]
    # Split until every byte position varies independently (a cross product of ranges).
    for i in range(1, n):
        mask = (1 << (6 * i)) - 1
        if lo & ~mask != hi & ~mask:
            if lo & mask != 0:
                return _split_same_length(lo, lo | mask) + _split_same_length((lo | mask) + 1, hi)
            if hi & mask != mask:
                return _split_same_length(lo, (hi & ~mask) - 1) + _split_same_length(hi & ~mask, hi)
    return [[(enc_lo[k], enc_hi[k]) for k in range(n)]]


_Trie = tuple[tuple[int, int, "_Trie"], ...]


@functools.lru_cache(maxsize=4096)
def _utf8_trie(ranges: tuple[tuple[int, int], ...]) -> _Trie:
    """The UTF-8 byte-range trie of a normalised code-point class, as nested tuples
    ((lo, hi, children), ...). Cached: the same classes (a JSON key's "any other
    character", a format's alphabet) are built again for every object that uses them."""
    trie: dict[tuple[int, int], dict] = {}
    for lo, hi in ranges:
        for seq in _utf8_sequences(lo, hi):
            node = trie
            for br in seq[:-1]:
                node = node.setdefault(br, {})
            node.setdefault(seq[-1], {})

    def freeze(node: dict) -> _Trie:
        return tuple((lo, hi, freeze(child)) for (lo, hi), child in node.items())

    return freeze(trie)


_TEMPLATES: dict[Hashable, tuple] = {}
_TEMPLATE_CAP = 4096
_SMALL: tuple = ()  # the template of a fragment too small to be worth copying
_SMALL_STATES = 3


def fragment(nfa: ByteNFA, key: Hashable, build: Callable[[], tuple[int, int]]) -> tuple[int, int]:
    """``build()``'s fragment in ``nfa``, built once per process and copied after.

    Why: a schema spells the same character classes over and over (every JSON string
    holds the any-character class with its escapes, dozens of states), and building one
    in Python costs a hundred times more than copying it. ``build`` must only make new
    states that point at each other; a fragment that does not (or holds a deferred
    part of a lazy NFA) is used as built and not kept."""
    found = _TEMPLATES.get(key)
    if found is _SMALL:
        return build()
    if found:
        if len(found) == 4:  # copied for the first time: compact it once (see _compact)
            found = _TEMPLATES[key] = (*_compact(*found), True)
        edges, eps, s, e, _ = found
        base = len(nfa.edges)
        lazy_dfa_core.extend_shifted(nfa.edges, nfa.eps, edges, eps, base)  # the copy, in C
        return s + base, e + base
    base = len(nfa.edges)
    s, e = build()
    top = len(nfa.edges)
    pending = getattr(nfa, "pending", {})
    inside = (
        base <= s < top
        and base <= e < top
        and all(base <= t < top for row in nfa.edges[base:top] for _, _, t in row)
        and all(base <= t < top for row in nfa.eps[base:top] for t in row)
        and not any(q in pending for q in range(base, top))
    )
    if inside and top - base <= _SMALL_STATES and len(_TEMPLATES) < _TEMPLATE_CAP:
        _TEMPLATES[key] = _SMALL  # a literal byte: building it beats copying it
    elif inside and len(_TEMPLATES) < _TEMPLATE_CAP:
        _TEMPLATES[key] = (  # compacted when first copied: most fragments never are
            [[(lo, hi, t - base) for lo, hi, t in row] for row in nfa.edges[base:top]],
            [[t - base for t in row] for row in nfa.eps[base:top]],
            s - base,
            e - base,
        )
    return s, e


def _compact(
    edges: list[list[tuple[int, int, int]]], eps: list[list[int]], s: int, e: int
) -> tuple[list[list[tuple[int, int, int]]], list[list[int]], int, int]:
    """A fragment template with fewer states and edges, for the same language.

    Why: every copy of a template costs Python objects per state and edge, and every
    DFA state built over it holds its NFA states; the UTF-8 classes are built with one
    chain of states per byte sequence, which share most of their tails. Two states
    other than ``s`` and ``e`` (which the fragment's user links to and from) with the
    same edges and epsilon moves (to the same merged states) accept the same suffixes,
    so they are merged, until no two are alike; adjacent byte ranges to one target are
    joined; states ``s`` cannot reach are dropped."""
    n = len(edges)
    rep = list(range(n))
    while True:
        seen: dict[tuple, int] = {}
        changed = False
        for q in range(n):
            if rep[q] != q or q in (s, e):
                continue
            sig = (
                tuple(sorted((lo, hi, rep[t]) for lo, hi, t in edges[q])),
                tuple(sorted({rep[t] for t in eps[q]})),
            )
            other = seen.setdefault(sig, q)
            if other != q:
                rep[q] = other
                changed = True
        if not changed:
            break
        for q in range(n):  # follow chains of merges to their end
            while rep[rep[q]] != rep[q]:
                rep[q] = rep[rep[q]]
    order: list[int] = []
    index: dict[int, int] = {}
    stack = [s]
    while stack:  # number the states ``s`` reaches, in the order met
        q = rep[stack.pop()]
        if q in index:
            continue
        index[q] = len(order)
        order.append(q)
        stack.extend(t for _, _, t in reversed(edges[q]))
        stack.extend(reversed(eps[q]))
    if rep[e] not in index:  # the end is unreachable: keep it, as the user links from it
        index[rep[e]] = len(order)
        order.append(rep[e])
    new_edges = []
    for q in order:
        joined: list[tuple[int, int, int]] = []
        for t, lo, hi in sorted((index[rep[t]], lo, hi) for lo, hi, t in edges[q]):
            if joined and joined[-1][2] == t and joined[-1][1] + 1 >= lo:
                joined[-1] = (joined[-1][0], max(joined[-1][1], hi), t)
            else:
                joined.append((lo, hi, t))
        new_edges.append(joined)
    new_eps = [sorted({index[rep[t]] for t in eps[q]}) for q in order]
    return new_edges, new_eps, index[rep[s]], index[rep[e]]


class _Builder:
    def __init__(self, nfa: ByteNFA, ignore_case: bool, ascii_only: bool, dotall: bool) -> None:
        self.nfa = nfa
        self.dotall = dotall
        self.ignore_case = ignore_case
        self.ascii_only = ascii_only

    def chars(self, ranges: Ranges) -> tuple[int, int]:
        """A fragment matching one code point out of ``ranges``."""
        key = tuple(_normalise(ranges))
        return fragment(self.nfa, ("utf8", key), lambda: self._utf8_chars(key))

    def _utf8_chars(self, ranges: tuple[tuple[int, int], ...]) -> tuple[int, int]:
        start, end = self.nfa.new_state(), self.nfa.new_state()
        edges = self.nfa.edges

        def emit(node: _Trie, state: int) -> None:
            for lo, hi, child in node:
                if child:
                    mid = self.nfa.new_state()
                    edges[state].append((lo, hi, mid))
                    emit(child, mid)
                else:
                    edges[state].append((lo, hi, end))

        emit(_utf8_trie(ranges), start)
        return start, end

    def literal(self, cp: int) -> Ranges:
        return _case_variants(cp) if self.ignore_case else [(cp, cp)]

    def seq(self, items: list) -> tuple[int, int]:
        start = self.nfa.new_state()
        cur = start
        for op, av in items:
            s, e = self.node(op, av)
            self.nfa.eps[cur].append(s)
            cur = e
        return start, cur

    def node(self, op: object, av: object) -> tuple[int, int]:
        if op is sre_c.LITERAL:
            return self.chars(self.literal(av))
        if op is sre_c.NOT_LITERAL:
            return self.chars(_negate(self.literal(av)))
        if op is sre_c.ANY:
            return self.chars([(0, MAX_UNICODE)] if self.dotall else _negate([(10, 10)]))
        if op is sre_c.IN:
            return self.chars(self.char_set(av))
        if op is sre_c.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            saved = self.ignore_case
            if add_flags & sre_c.SRE_FLAG_IGNORECASE:
                self.ignore_case = True
            if del_flags & sre_c.SRE_FLAG_IGNORECASE:
                self.ignore_case = False
            frag = self.seq(list(sub))
            self.ignore_case = saved
            return frag
        if op is sre_c.BRANCH:
            start, end = self.nfa.new_state(), self.nfa.new_state()
            for alt in av[1]:
                s, e = self.seq(list(alt))
                self.nfa.eps[start].append(s)
                self.nfa.eps[e].append(end)
            return start, end
        if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, getattr(sre_c, "POSSESSIVE_REPEAT", None)):
            lo, hi, sub = av
            return self.repeat(lo, hi, list(sub))
        names = {
            sre_c.AT: "anchors",
            sre_c.ASSERT: "look-ahead/look-behind",
            sre_c.ASSERT_NOT: "negative look-around",
            sre_c.GROUPREF: "back-references",
        }
        raise UnsupportedPattern(f"{names.get(op, str(op))} cannot be compiled to a byte automaton")

    def repeat(self, lo: int, hi: int, sub: list) -> tuple[int, int]:
        unbounded = hi is sre_c.MAXREPEAT
        if lo > _REPEAT_UNROLL_LIMIT or (not unbounded and hi > _REPEAT_UNROLL_LIMIT):
            raise UnsupportedPattern(f"repetition bound above {_REPEAT_UNROLL_LIMIT}")
        start = self.nfa.new_state()
        cur = start
        for _ in range(lo):
            s, e = self.seq(sub)
            self.nfa.eps[cur].append(s)
            cur = e
        if unbounded:
            s, e = self.seq(sub)
            self.nfa.eps[cur].append(s)
            self.nfa.eps[e].append(s)
            end = self.nfa.new_state()
            self.nfa.eps[cur].append(end)
            self.nfa.eps[e].append(end)
            return start, end
        end = self.nfa.new_state()
        self.nfa.eps[cur].append(end)
        for _ in range(hi - lo):
            s, e = self.seq(sub)
            self.nfa.eps[cur].append(s)
            self.nfa.eps[e].append(end)
            cur = e
        return start, end

    def char_set(self, items: list) -> Ranges:
        ranges: Ranges = []
        negate = False
        for op, av in items:
            if op is sre_c.NEGATE:
                negate = True
            elif op is sre_c.LITERAL:
                ranges += self.literal(av)
            elif op is sre_c.RANGE:
                lo, hi = av
                ranges.append((lo, hi))
                if self.ignore_case:
                    for cp in range(lo, min(hi, lo + 2000) + 1):
                        ranges += _case_variants(cp)
            elif op is sre_c.CATEGORY:
                ranges += _category(av, self.ascii_only)
            else:
                raise UnsupportedPattern(f"character-set item {op} is not supported")
        return _negate(ranges) if negate else _normalise(ranges)


def add_pattern(nfa: ByteNFA, pattern: str, ignore_case: bool = False) -> tuple[int, int]:
    """Add ``pattern`` to ``nfa``; return its (start, accept) states (built once per
    process and copied after: a schema spells the same number pattern per value)."""
    return fragment(nfa, ("pattern", pattern, ignore_case), lambda: _build_pattern(nfa, pattern, ignore_case))


def _build_pattern(nfa: ByteNFA, pattern: str, ignore_case: bool) -> tuple[int, int]:
    try:
        parsed = sre_parse.parse(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise UnsupportedPattern(f"invalid regex: {exc}") from None
    flags = parsed.state.flags
    builder = _Builder(nfa, bool(flags & re.IGNORECASE), bool(flags & re.ASCII), bool(flags & re.DOTALL))
    return builder.seq(list(parsed))
