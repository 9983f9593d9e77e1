"""Regexes over the *decoded* text of a JSON string, as automata over its JSON spelling.

JSON Schema's ``pattern`` (and our ``format`` patterns) speak about the string a parser
returns, while a model writes its JSON spelling: ``"`` must be written ``\\"``, a
newline ``\\n``, and any character may be written ``\\uXXXX`` (``json.dumps`` does so for
every non-ASCII one). So each character class of the pattern becomes the set of its
spellings: the raw UTF-8 bytes (where JSON allows them raw), the short escapes, and
``\\u`` escapes restricted to the class's code points (astral characters as surrogate
pairs when the class holds the whole astral range). Lone surrogates are never written
(under-accepts a text no real data holds).

``pattern`` is searched, not matched, by JSON Schema: an unanchored side is padded with
"any characters". Python's ``re`` semantics are followed (``jsonschema`` uses it), so
``\\d`` and ``\\w`` are Unicode classes; ``$`` before a final newline is not generated.
"""

from __future__ import annotations

import re
import re._constants as sre_c
import re._parser as sre_parse

from grammars.byte_nfa import MAX_UNICODE, ByteNFA, Ranges, UnsupportedPattern, _Builder, _normalise, fragment

_SHORT_ESCAPES = {
    0x22: b'"',
    0x5C: b"\\",
    0x2F: b"/",
    0x08: b"b",
    0x0C: b"f",
    0x0A: b"n",
    0x0D: b"r",
    0x09: b"t",
}
_BMP = ((0, 0xD7FF), (0xE000, 0xFFFF))
_EAGER_REPEAT = 64  # longer counted repeats are unrolled lazily, copy by copy
ANY_CHAR: Ranges = [(0, MAX_UNICODE)]


def _intersect(ranges: Ranges, lo: int, hi: int) -> Ranges:
    return [(max(a, lo), min(b, hi)) for a, b in ranges if max(a, lo) <= min(b, hi)]


def _hex_digits(lo: int, hi: int, n: int) -> list[list[tuple[int, int]]]:
    """``lo..hi`` as sequences of ``n`` hex-digit ranges."""
    if n == 1:
        return [[(lo, hi)]]
    unit = 16 ** (n - 1)
    a, b = divmod(lo, unit)[0], divmod(hi, unit)[0]
    if a == b:
        return [[(a, a), *s] for s in _hex_digits(lo % unit, hi % unit, n - 1)]
    out: list[list[tuple[int, int]]] = []
    if lo % unit:
        out += [[(a, a), *s] for s in _hex_digits(lo % unit, unit - 1, n - 1)]
        a += 1
    last_full = b if hi % unit == unit - 1 else b - 1
    if a <= last_full:
        out.append([(a, last_full)] + [(0, 15)] * (n - 1))
    if last_full < b:
        out += [[(b, b), *s] for s in _hex_digits(0, hi % unit, n - 1)]
    return out


def _digit_bytes(lo: int, hi: int) -> list[tuple[int, int]]:
    """Byte ranges spelling hex digits ``lo..hi`` (either case)."""
    out = []
    if lo <= 9:
        out.append((0x30 + lo, 0x30 + min(hi, 9)))
    if hi >= 10:
        a, b = max(lo, 10) - 10, hi - 10
        out += [(0x61 + a, 0x61 + b), (0x41 + a, 0x41 + b)]
    return out


class JsonStringBuilder(_Builder):
    """A :class:`_Builder` whose characters are JSON string spellings (module doc)."""

    def __init__(
        self, nfa: ByteNFA, ignore_case: bool = False, dotall: bool = False, dry: bool = False
    ) -> None:
        super().__init__(nfa, ignore_case, ascii_only=False, dotall=dotall)
        self.dry = dry  # check the pattern's constructs only: every class is one edge

    def raw_chars(self, ranges: Ranges) -> tuple[int, int]:
        """Only the raw UTF-8 spellings of ``ranges`` (no escapes)."""
        return super().chars(ranges)

    def chars(self, ranges: Ranges) -> tuple[int, int]:
        nfa = self.nfa
        if self.dry:
            start, end = nfa.new_state(), nfa.new_state()
            nfa.edges[start].append((0x61, 0x61, end))
            return start, end
        key = tuple(_normalise(ranges))
        return fragment(nfa, ("json", key), lambda: self._json_chars(list(key)))

    def _json_chars(self, ranges: Ranges) -> tuple[int, int]:
        nfa = self.nfa
        start, end = nfa.new_state(), nfa.new_state()
        raw: Ranges = []
        for lo, hi in _intersect(ranges, 0x20, MAX_UNICODE):
            raw += [
                (a, b)
                for a, b in ((lo, min(hi, 0x21)), (max(lo, 0x23), min(hi, 0x5B)), (max(lo, 0x5D), hi))
                if a <= b
            ]
        if raw:
            s, e = super().chars(raw)
            nfa.eps[start].append(s)
            nfa.eps[e].append(end)
        escape = nfa.new_state()
        used = False
        for cp, letter in _SHORT_ESCAPES.items():
            if any(lo <= cp <= hi for lo, hi in ranges):
                nfa.edges[escape].append((letter[0], letter[0], end))
                used = True
        after_u = nfa.new_state()
        for lo, hi in (r for b in _BMP for r in _intersect(ranges, *b)):
            for digits in _hex_digits(lo, hi, 4):
                self._hex_chain(after_u, digits, end)
                used = True
        if _intersect(ranges, 0x10000, MAX_UNICODE) == [(0x10000, MAX_UNICODE)]:
            low = nfa.new_state()
            self._hex_chain(after_u, [(0xD, 0xD), (0x8, 0xB), (0, 15), (0, 15)], low)
            backslash = nfa.new_state()
            u = nfa.new_state()
            nfa.edges[low].append((0x5C, 0x5C, backslash))
            nfa.edges[backslash].append((0x75, 0x75, u))
            self._hex_chain(u, [(0xD, 0xD), (0xC, 0xF), (0, 15), (0, 15)], end)
        if nfa.edges[after_u]:
            nfa.edges[escape].append((0x75, 0x75, after_u))
        if used:
            nfa.edges[start].append((0x5C, 0x5C, escape))
        return start, end

    def _hex_chain(self, state: int, digits: list[tuple[int, int]], end: int) -> None:
        for i, (lo, hi) in enumerate(digits):
            nxt = end if i == len(digits) - 1 else self.nfa.new_state()
            for a, b in _digit_bytes(lo, hi):
                self.nfa.edges[state].append((a, b, nxt))
            state = nxt

    def repeat(self, lo: int, hi: int, sub: list) -> tuple[int, int]:
        unbounded = hi is sre_c.MAXREPEAT
        if max(lo, 0 if unbounded else hi) <= _EAGER_REPEAT or not hasattr(self.nfa, "defer"):
            return super().repeat(lo, hi, sub)
        return self._lazy_repeat(lo, hi, sub, 0)

    def _lazy_repeat(self, lo: int, hi: int, sub: list, done: int) -> tuple[int, int]:
        """Copy ``done`` of ``sub`` (of ``lo..hi``), each next copy built on first use."""
        nfa = self.nfa
        start, end = nfa.new_state(), nfa.new_state()
        if done >= lo:
            nfa.eps[start].append(end)
        if hi is sre_c.MAXREPEAT and done >= lo:
            s, e = self.seq(sub)  # past the minimum an unbounded repeat is a loop
            nfa.eps[start].append(s)
            nfa.eps[e].append(start)
            return start, end
        if hi is not sre_c.MAXREPEAT and done >= hi:
            return start, end
        s, e = self.seq(sub)
        nfa.eps[start].append(s)
        rest_s, rest_e = nfa.defer(lambda: self._lazy_repeat(lo, hi, sub, done + 1))  # type: ignore[attr-defined]
        nfa.eps[e].append(rest_s)
        nfa.eps[rest_e].append(end)
        return start, end


def _is_anchor(item: tuple, kinds: tuple) -> bool:
    return item[0] is sre_c.AT and item[1] in kinds


_BEGIN = (sre_c.AT_BEGINNING, sre_c.AT_BEGINNING_STRING)
_END = (sre_c.AT_END, sre_c.AT_END_STRING)


def parse_pattern(pattern: str) -> sre_parse.SubPattern:
    try:
        return sre_parse.parse(pattern)
    except re.error as exc:
        raise UnsupportedPattern(f"invalid regex {pattern!r}: {exc}") from None


def pattern_width(pattern: str) -> tuple[int, int] | None:
    """(min, max) characters of an anchored-both-ends ``pattern``'s matches, else None."""
    parsed = parse_pattern(pattern)
    items = list(parsed)
    if len(items) < 2 or not _is_anchor(items[0], _BEGIN) or not _is_anchor(items[-1], _END):
        return None
    lo, hi = sre_parse.SubPattern(parsed.state, items[1:-1]).getwidth()
    return lo, hi


def add_string_pattern(nfa: ByteNFA, pattern: str, dry: bool = False) -> tuple[int, int]:
    """The JSON spellings of strings that ``re.search(pattern, s)`` finds a match in
    (the string's content, without its quotes)."""
    parsed = parse_pattern(pattern)
    flags = parsed.state.flags
    builder = JsonStringBuilder(nfa, bool(flags & re.IGNORECASE), bool(flags & re.DOTALL), dry)
    items = list(parsed)
    alternatives = [items]
    if len(items) == 1 and items[0][0] is sre_c.BRANCH:
        alternatives = [list(alt) for alt in items[0][1][1]]
    start, end = nfa.new_state(), nfa.new_state()
    for alt in alternatives:
        anchored_start = bool(alt) and _is_anchor(alt[0], _BEGIN)
        anchored_end = bool(alt) and _is_anchor(alt[-1], _END)
        core = alt[1 if anchored_start else 0 : len(alt) - 1 if anchored_end else len(alt)]
        s, e = builder.seq(core)
        if not anchored_start:
            s = _pad(builder, s, before=True)
        if not anchored_end:
            e = _pad(builder, e, before=False)
        nfa.eps[start].append(s)
        nfa.eps[e].append(end)
    return start, end


def _pad(builder: JsonStringBuilder, state: int, before: bool) -> int:
    """Any characters before (or after) ``state``: a loop on a fresh state."""
    nfa = builder.nfa
    loop = nfa.new_state()
    s, e = builder.chars(ANY_CHAR)
    nfa.eps[loop].append(s)
    nfa.eps[e].append(loop)
    if before:
        nfa.eps[loop].append(state)
        return loop
    nfa.eps[state].append(loop)
    return loop


def add_string_chars(nfa: ByteNFA, min_len: int, max_len: int | None) -> tuple[int, int]:
    """Any ``min_len..max_len`` characters (``None``: no upper bound)."""
    builder = JsonStringBuilder(nfa, dotall=True)
    any_char = [(sre_c.ANY, None)]
    if min_len == 0 and max_len is None:
        start = nfa.new_state()
        s, e = builder.chars(ANY_CHAR)
        nfa.eps[start].append(s)
        nfa.eps[e].append(start)
        return start, start
    return builder.repeat(min_len, sre_c.MAXREPEAT if max_len is None else max_len, any_char)
