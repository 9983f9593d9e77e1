"""The syntactic side of the grammar engine: what happens when a lexeme is complete.

One rule differs from Lark's: an ``%ignore`` lexeme (whitespace, a comment) is refused
once the parse is complete and nothing but the end can follow (after a JSON document's
closing brace, after the ``;`` of a single SQL statement). It could only pad the end,
and a model left free to pad will often do so until it runs out of tokens.

A :class:`Syntax` receives complete lexemes (as lexer-terminal indices) and keeps the
parser state. The plain version passes terminals to the LALR tables and drops
``%ignore`` terminals; :class:`grammars.python_indent.PythonSyntax` adds INDENT/DEDENT
and bracket depth on top. Both run in the compiled LR core (``grammars/_lr_core.c``):
a syntactic state is an int naming a hash-consed state there (equal states, equal
ints), and feeds are memoised per (state, terminal). Why in C: the first mask of a new
parser state feeds every edge of a lexer state's split trie (thousands for Python),
which cost milliseconds per mask in Python.
"""

from __future__ import annotations

import numpy as np

from grammars.lalr import ParseTables
from grammars.lexer_dfa import LexerDFA
from grammars.native import lr_core as _lr_core

IGNORED = -1  # lexer terminal dropped by the parser (%ignore), except at a closed end (below)
UNUSED = -2  # lexer terminal the parser never accepts

SplitTrie = tuple[bytes, bytes, bytes, bytes, bytes]  # see grammars.token_tables.TokenTable.split_trie
split_trie = _lr_core.split_trie  # (group_seq, seq_parent, seq_term) int32 -> SplitTrie
group_mask = _lr_core.group_mask  # (signature, ids, ends, offsets, ok_table, lexer states, out)


class Syntax:
    """LALR parsing of lexemes; ``%ignore`` terminals leave the state unchanged."""

    def __init__(
        self,
        tables: ParseTables,
        lexer: LexerDFA,
        parser_term: list[int],
        python_layer: tuple | None = None,
    ) -> None:
        self.tables = tables
        self.lexer = lexer
        self.parser_term = parser_term  # lexer terminal index -> parser terminal id / IGNORED / UNUSED
        pt = np.array(parser_term, dtype=np.int32).tobytes()
        self._core = _lr_core.Parser(*tables.dense(), pt, python_layer)
        self._winnable = lexer.winnable[:, : len(parser_term)]
        self._ok = np.zeros((16, len(self._winnable)), dtype=np.uint8)  # ok arrays, a row per key
        self._n_ok = 0

    def initial(self) -> int:
        return self._core.initial()

    def feed(self, syn: int, term: int) -> int | None:
        """The state after lexeme ``term`` (lexer terminal index), or None if not allowed."""
        got = self._core.feed(syn, term)
        return None if got < 0 else got

    def feed_last(self, syn: int, term: int) -> int | None:
        """Like ``feed`` for the lexeme that the end of input completes."""
        got = self._core.feed(syn, term, True)
        return None if got < 0 else got

    def finish(self, syn: int) -> bool:
        """Whether the input may end in ``syn`` (no lexeme in progress)."""
        return self._core.finish(syn)

    def accept_row(self, syn: int) -> np.ndarray:
        """Bool over lexer terminals: which complete lexemes ``syn`` takes next (terminals
        that share a reduction followed together, not one feed each)."""
        return np.frombuffer(self._core.accept_row(syn), dtype=bool)

    def ok_states(self, syn: int) -> np.ndarray:
        """Bool over lexer DFA states: where an unfinished lexeme can still be taken by ``syn``."""
        return self.ok_states_of(self._core.ok_key(syn))

    def ok_key(self, syn: int) -> int:
        """A small int naming ``ok_states(syn)``: equal accept rows get the same key, so
        results that depend only on them (a token group's kept tokens) are cached across
        stacks."""
        return self._core.ok_key(syn)

    def ok_states_of(self, key: int) -> np.ndarray:
        """The array an :meth:`ok_key` names."""
        if key >= self._n_ok:
            self.ok_table()
        return self._ok[key].view(bool)

    def ok_table(self) -> np.ndarray:
        """uint8 [keys, lexer states]: every ok key's array so far (rows are built the
        first time they are asked for), as the mask assembly reads them."""
        n = self._core.key_count()
        if n > self._n_ok:
            if n > len(self._ok):
                grown = np.zeros((2 * n, self._ok.shape[1]), dtype=np.uint8)
                grown[: self._n_ok] = self._ok[: self._n_ok]
                self._ok = grown  # rows handed out before keep the old buffer: same values
            for key in range(self._n_ok, n):
                row = np.frombuffer(self._core.key_row(key), dtype=bool)
                self._ok[key] = self._winnable @ row
            self._n_ok = n
        return self._ok[: self._n_ok]

    def signature(self, syn: int, trie: SplitTrie) -> bytes:
        """The (group, ok key) pairs, int32 and sorted, of every token group whose split
        sequence the parser takes from ``syn``: the split trie walked with one feed per
        edge, a refused terminal dropping its subtree (see ``CompiledGrammar.allowed``)."""
        return self._core.signature(syn, *trie)

    def sizes(self) -> dict[str, int]:
        """How many stacks, states, ok keys and feeds the core keeps (for diagnostics)."""
        return self._core.sizes()
