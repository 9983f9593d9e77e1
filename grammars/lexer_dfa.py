"""One byte-level DFA for all terminals of a grammar (the lexer of the grammar engine).

Lexing rule (documented in the README): *longest match without backtracking*. A lexeme
grows while any terminal can still match it; when the next byte cannot extend it, the
lexeme ends and must be complete, and its terminal is the best one accepting it (higher
priority first, then literal strings before regexes, as Lark's standard lexer does, so
keywords win over names). Because the union DFA tracks every terminal at once, a
lexeme whose terminal is ambiguous until more bytes arrive (``1`` vs ``1.5``, ``in`` vs
``int``) simply stays open.

Per state the DFA records:

* ``best[s]``: the terminal a lexeme ending in ``s`` is (``-1`` if not accepting);
* ``winnable[s]``: the terminals some continuation from ``s`` can still end as
  (a terminal shadowed by a better one on every completion is not winnable).

State 0 is dead, state 1 is the start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grammars.byte_nfa import ByteNFA, add_pattern
from plugin.gc_pause import gc_paused

DEAD = 0
START = 1


@dataclass(frozen=True)
class TerminalSpec:
    """A terminal as the lexer sees it: name, regex, flags and precedence."""

    name: str
    regex: str
    ignore_case: bool
    priority: int
    is_literal: bool
    max_width: int


@dataclass
class LexerDFA:
    """Transition table plus per-state terminal facts (see module docstring)."""

    trans: np.ndarray  # int32 [n_states, 256]
    best: np.ndarray  # int32 [n_states]: terminal index or -1
    winnable: np.ndarray  # bool [n_states, n_terminals]
    terminals: list[TerminalSpec]

    @property
    def n_states(self) -> int:
        return int(self.trans.shape[0])

    @property
    def rows(self) -> list[list[int]]:
        """``trans`` as nested lists: indexing them from Python is much faster than numpy."""
        rows = self.__dict__.get("_rows")
        if rows is None:
            with gc_paused():
                rows = self.__dict__["_rows"] = self.trans.tolist()
        return rows

    @property
    def best_list(self) -> list[int]:
        """``best`` as a list, for the same reason as :attr:`rows`."""
        got = self.__dict__.get("_best_list")
        if got is None:
            got = self.__dict__["_best_list"] = self.best.tolist()
        return got

    def walk(self, state: int, data: bytes) -> int:
        rows = self.rows
        for b in data:
            state = rows[state][b]
            if state == DEAD:
                return DEAD
        return state


def precedence_order(terminals: list[TerminalSpec]) -> list[int]:
    """Indices of ``terminals`` best first: priority, literals before regexes, then Lark's order."""
    return sorted(
        range(len(terminals)),
        key=lambda i: (
            -terminals[i].priority,
            not terminals[i].is_literal,
            -terminals[i].max_width,
            terminals[i].name,
        ),
    )


def build_lexer_dfa(terminals: list[TerminalSpec]) -> LexerDFA:
    """Subset-construct the DFA of all ``terminals`` (raises ``UnsupportedPattern``)."""
    nfa = ByteNFA()
    root = nfa.new_state()
    accept_of: dict[int, int] = {}
    for idx, term in enumerate(terminals):
        try:
            s, e = add_pattern(nfa, term.regex, term.ignore_case)
        except ValueError as exc:
            raise type(exc)(f"terminal {term.name}: {exc}") from None
        nfa.eps[root].append(s)
        accept_of[e] = idx
    rank = {t: r for r, t in enumerate(precedence_order(terminals))}

    closure_cache: dict[int, frozenset[int]] = {}

    def closure(state: int) -> frozenset[int]:
        got = closure_cache.get(state)
        if got is None:
            seen = {state}
            stack = [state]
            while stack:
                for t in nfa.eps[stack.pop()]:
                    if t not in seen:
                        seen.add(t)
                        stack.append(t)
            got = closure_cache[state] = frozenset(seen)
        return got

    start_set = closure(root)
    ids: dict[frozenset[int], int] = {frozenset(): DEAD, start_set: START}
    order: list[frozenset[int]] = [frozenset(), start_set]
    rows: list[list[int]] = [[DEAD] * 256, []]
    i = 1
    while i < len(order):
        current = order[i]
        targets: list[set[int]] = [set() for _ in range(256)]
        for s in current:
            for lo, hi, t in nfa.edges[s]:
                for b in range(lo, hi + 1):
                    targets[b].add(t)
        row = []
        memo: dict[frozenset[int], int] = {}
        for b in range(256):
            raw = frozenset(targets[b])
            sid = memo.get(raw)
            if sid is None:
                full: set[int] = set()
                for t in raw:
                    full |= closure(t)
                key = frozenset(full)
                sid = ids.get(key)
                if sid is None:
                    sid = ids[key] = len(order)
                    order.append(key)
                    rows.append([])
                memo[raw] = sid
            row.append(sid)
        rows[i] = row
        i += 1

    n = len(order)
    trans = np.array(rows, dtype=np.int32)
    best = np.full(n, -1, dtype=np.int32)
    for sid, nset in enumerate(order):
        accepting = [accept_of[s] for s in nset if s in accept_of]
        if accepting:
            best[sid] = min(accepting, key=rank.__getitem__)
    return LexerDFA(
        trans=trans, best=best, winnable=_winnable(trans, best, len(terminals)), terminals=terminals
    )


def _winnable(trans: np.ndarray, best: np.ndarray, n_terms: int) -> np.ndarray:
    """Backward fixpoint: the terminals reachable as ``best`` from each state."""
    n = trans.shape[0]
    preds: list[set[int]] = [set() for _ in range(n)]
    for s in range(1, n):
        for t in set(trans[s].tolist()):
            if t != DEAD:
                preds[t].add(s)
    bits = [0] * n
    for s in range(n):
        if best[s] >= 0:
            bits[s] = 1 << int(best[s])
    work = [s for s in range(n) if bits[s]]
    while work:
        t = work.pop()
        for s in preds[t]:
            merged = bits[s] | bits[t]
            if merged != bits[s]:
                bits[s] = merged
                work.append(s)
    out = np.zeros((n, max(n_terms, 1)), dtype=bool)
    for s in range(n):
        b = bits[s]
        while b:
            low = b & -b
            out[s, low.bit_length() - 1] = True
            b ^= low
    return out
