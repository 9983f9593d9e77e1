"""The syntactic side of the grammar engine: what happens when a lexeme is complete.

One rule differs from Lark's: an ``%ignore`` lexeme (whitespace, a comment) is refused
once the parse is complete and nothing but the end can follow (after a JSON document's
closing brace, after the ``;`` of a single SQL statement). It could only pad the end,
and a model left free to pad will often do so until it runs out of tokens.

A :class:`Syntax` receives complete lexemes (as lexer-terminal indices) and keeps the
parser state. The plain version passes terminals to the LALR tables and drops
``%ignore`` terminals; :class:`grammars.python_indent.PythonSyntax` adds INDENT/DEDENT
and bracket depth on top. Syntactic states are hashable and compare by identity of
their hash-consed parts, so results are memoised per (state, terminal).
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from grammars.lalr import END, ParseTables
from grammars.lexer_dfa import LexerDFA

IGNORED = -1  # lexer terminal dropped by the parser (%ignore), except at a closed end (below)
UNUSED = -2  # lexer terminal the parser never accepts


class Syntax:
    """LALR parsing of lexemes; ``%ignore`` terminals leave the state unchanged."""

    def __init__(self, tables: ParseTables, lexer: LexerDFA, parser_term: list[int]) -> None:
        self.tables = tables
        self.lexer = lexer
        self.parser_term = parser_term  # lexer terminal index -> parser terminal id / IGNORED / UNUSED
        self._rows: dict[Hashable, np.ndarray] = {}
        self._rows_by_bits: dict[int, np.ndarray] = {}
        self._pt = np.array(parser_term, dtype=np.int64)
        self._not_end = ~(1 << tables.terminal_ids[END])  # bits of every terminal but $END
        self._ok_key: dict[Hashable, int] = {}
        self._ok_ids: dict[bytes, int] = {}
        self._ok_arrays: list[np.ndarray] = []

    def initial(self) -> Hashable:
        return self.tables.root()

    def feed(self, syn: Hashable, term: int) -> Hashable | None:
        """The state after lexeme ``term`` (lexer terminal index), or None if not allowed."""
        p = self.parser_term[term]
        if p == IGNORED:
            return syn if self.tables.accepted(syn) & self._not_end else None  # type: ignore[arg-type]
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
            row = self._rows[syn] = self.row_of(self.tables.accepted(syn))  # type: ignore[arg-type]
        return row

    def row_of(self, bits: int) -> np.ndarray:
        """Lexer terminals taken by a parser that accepts the parser terminals in ``bits``
        (``%ignore`` ones always); shared by all stacks with the same accepted set."""
        row = self._rows_by_bits.get(bits)
        if row is None:
            pt = self._pt
            n = int(pt.max(initial=0)) + 1
            taken = np.array([(bits >> i) & 1 for i in range(n)], dtype=bool)
            row = ((pt == IGNORED) & bool(bits & self._not_end)) | ((pt >= 0) & taken[np.maximum(pt, 0)])
            self._rows_by_bits[bits] = row
        return row

    def ok_states(self, syn: Hashable) -> np.ndarray:
        """Bool over lexer DFA states: where an unfinished lexeme can still be taken by ``syn``."""
        return self._ok_arrays[self.ok_key(syn)]

    def ok_states_of(self, key: int) -> np.ndarray:
        """The array an :meth:`ok_key` names."""
        return self._ok_arrays[key]

    def ok_key(self, syn: Hashable) -> int:
        """A small int naming ``ok_states(syn)``: equal arrays get the same key, so results
        that depend only on them (a token group's kept tokens) are cached across stacks."""
        key = self._ok_key.get(syn)
        if key is None:
            row = self.accept_row(syn)
            raw = row.tobytes()
            key = self._ok_ids.get(raw)
            if key is None:
                ok = np.asarray(self.lexer.winnable[:, : len(self.parser_term)] @ row, dtype=bool)
                key = self._ok_ids[raw] = len(self._ok_arrays)
                self._ok_arrays.append(ok)
            self._ok_key[syn] = key
        return key
