"""The syntactic side of the grammar engine: what happens when a lexeme is complete.

A :class:`Syntax` receives complete lexemes (as lexer-terminal indices) and keeps the
parser state. The plain version passes terminals to the LALR tables and drops
``%ignore`` terminals; :class:`grammars.python_indent.PythonSyntax` adds INDENT/DEDENT
and bracket depth on top. Syntactic states are hashable and compare by identity of
their hash-consed parts, so results are memoised per (state, terminal).
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from grammars.lalr import ParseTables
from grammars.lexer_dfa import LexerDFA

IGNORED = -1  # lexer terminal dropped by the parser (%ignore)
UNUSED = -2  # lexer terminal the parser never accepts


class Syntax:
    """LALR parsing of lexemes; ``%ignore`` terminals leave the state unchanged."""

    def __init__(self, tables: ParseTables, lexer: LexerDFA, parser_term: list[int]) -> None:
        self.tables = tables
        self.lexer = lexer
        self.parser_term = parser_term  # lexer terminal index -> parser terminal id / IGNORED / UNUSED
        self._rows: dict[Hashable, np.ndarray] = {}
        self._ok_states: dict[Hashable, np.ndarray] = {}

    def initial(self) -> Hashable:
        return self.tables.root()

    def feed(self, syn: Hashable, term: int) -> Hashable | None:
        """The state after lexeme ``term`` (lexer terminal index), or None if not allowed."""
        p = self.parser_term[term]
        if p == IGNORED:
            return syn
        if p == UNUSED:
            return None
        return self.tables.feed(syn, p)  # type: ignore[arg-type]

    def feed_last(self, syn: Hashable, term: int) -> Hashable | None:
        """Like ``feed`` for the lexeme that the end of input completes."""
        return self.feed(syn, term)

    def finish(self, syn: Hashable) -> bool:
        """Whether the input may end in ``syn`` (no lexeme in progress)."""
        return self.tables.accepts_end(syn)  # type: ignore[arg-type]

    def accept_row(self, syn: Hashable) -> np.ndarray:
        """Bool over lexer terminals: which complete lexemes ``syn`` takes next."""
        row = self._rows.get(syn)
        if row is None:
            row = np.array([self.feed(syn, t) is not None for t in range(len(self.parser_term))], dtype=bool)
            self._rows[syn] = row
        return row

    def ok_states(self, syn: Hashable) -> np.ndarray:
        """Bool over lexer DFA states: where an unfinished lexeme can still be taken by ``syn``."""
        got = self._ok_states.get(syn)
        if got is None:
            got = self.lexer.winnable[:, : len(self.parser_term)] @ self.accept_row(syn)
            got = np.asarray(got, dtype=bool)
            self._ok_states[syn] = got
        return got

    def clear_memo(self) -> None:
        """Drop memoised rows (called when memory grows; results are recomputed on demand)."""
        self._rows.clear()
        self._ok_states.clear()

