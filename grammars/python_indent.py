"""Python's indentation, incrementally: INDENT/DEDENT and bracket depth in the matcher state.

The grammar's ``_NEWLINE`` terminal (a newline plus following blank and comment lines)
is replaced in the lexer by one terminal per indentation column of the line it ends on,
``_NL_0`` ... ``_NL_80`` (plus ``_NL_DEEP`` beyond). The column is then a property of the
lexeme, fixed by the longest-match rule, so a token like ``":\\n    return"`` is handled
by the same vectorised tables as any other, and the indentation check is a parser-side
step like the LALR one:

* inside brackets a newline is dropped (implicit line joining);
* otherwise ``_NEWLINE`` goes to the parser, then ``_INDENT`` if the column is deeper than
  the current block, or ``_DEDENT`` for each block closed; a column matching no open
  block is an error, as in CPython.

The syntactic state is a :class:`PyState` ``(stack, bracket depth, indent columns, at
file start)``, hash-consed like the stacks so that it hashes by identity and memoises
its own feeds (no global memo table to grow or clear).
Indentation is spaces only (a tab in indentation is refused, which rules out
CPython's ``TabError`` cases). At end of input the tokenizer's implicit ``NEWLINE`` and
the closing ``DEDENT`` s are added, as CPython does.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Hashable

import numpy as np

from grammars.lalr import ParseTables, StackNode
from grammars.lexer_dfa import LexerDFA, TerminalSpec
from grammars.syntax import IGNORED, UNUSED, Syntax

MAX_COLUMN = 80
NEWLINE = "_NEWLINE"
INDENT = "_INDENT"
DEDENT = "_DEDENT"
_OPEN = {"LPAR", "LSQB", "LBRACE"}
_CLOSE = {"RPAR", "RSQB", "RBRACE"}
_BLANK_LINES = r"(?:#[^\r\n\x00]*)?(?:\r?\n[ \t\f]*(?:#[^\r\n\x00]*)?)*\r?\n"
DEEP = MAX_COLUMN + 1
_MISSING = object()


class PyState:
    """One interned Python syntactic state; build it with :meth:`PythonSyntax.state`."""

    __slots__ = ("at_start", "depth", "fed", "indents", "node")

    def __init__(self, node: StackNode, depth: int, indents: tuple[int, ...], at_start: bool) -> None:
        self.node = node
        self.depth = depth
        self.indents = indents
        self.at_start = at_start
        self.fed: dict[int, PyState | None] = {}


def newline_terminals(newline: TerminalSpec) -> list[tuple[TerminalSpec, int]]:
    """The per-column terminals that replace ``_NEWLINE``, with their column."""
    out = []
    for col in range(MAX_COLUMN + 1):
        regex = _BLANK_LINES + (" " * col).replace(" ", "[ ]")
        out.append((TerminalSpec(f"_NL_{col}", regex, False, newline.priority, False, 1 << 30), col))
    deep = _BLANK_LINES + "[ ]" * DEEP + "[ ]*"
    out.append((TerminalSpec("_NL_DEEP", deep, False, newline.priority, False, 1 << 30), DEEP))
    return out


class PythonSyntax(Syntax):
    """:class:`Syntax` plus the indentation rules above."""

    def __init__(
        self,
        tables: ParseTables,
        lexer: LexerDFA,
        parser_term: list[int],
        columns: dict[int, int],
        whitespace_terms: set[int],
    ) -> None:
        super().__init__(tables, lexer, parser_term)
        self.columns = columns  # lexer terminal index -> column, for the _NL_* family
        self.whitespace = whitespace_terms
        names = [t.name for t in lexer.terminals]
        self.opening = {i for i, n in enumerate(names) if n in _OPEN}
        self.closing = {i for i, n in enumerate(names) if n in _CLOSE}
        ids = tables.terminal_ids
        self.t_newline, self.t_indent, self.t_dedent = ids[NEWLINE], ids[INDENT], ids[DEDENT]
        self._nl_term = {col: term for term, col in columns.items()}
        self._nl_cols = np.array(sorted(columns.values()))
        self._nl_terms = np.array([self._nl_term[c] for c in self._nl_cols])
        self._closers = np.array(sorted(self.closing), dtype=np.int64)
        self._spaces = np.array(sorted(whitespace_terms), dtype=np.int64)
        self._interned: dict[tuple[StackNode, int, tuple[int, ...], bool], PyState] = {}

    def state(self, node: StackNode, depth: int, indents: tuple[int, ...], at_start: bool) -> PyState:
        """The one :class:`PyState` with these parts."""
        key = (node, depth, indents, at_start)
        got = self._interned.get(key)
        if got is None:
            got = self._interned[key] = PyState(node, depth, indents, at_start)
        return got

    def initial(self) -> Hashable:
        return self.state(self.tables.root(), 0, (0,), True)

    def feed(self, syn: Hashable, term: int) -> Hashable | None:
        fed = syn.fed  # type: ignore[attr-defined]
        out = fed.get(term, _MISSING)
        if out is _MISSING:
            out = fed[term] = self._feed(syn, term, last=False)  # type: ignore[arg-type]
        return out  # type: ignore[return-value]

    def accept_row(self, syn: Hashable) -> np.ndarray:
        """As :meth:`Syntax.accept_row`, with the indentation rules: one feed per class of
        newline columns (deeper than the block, equal, or an open block's column) instead
        of one per column."""
        row = self._rows.get(syn)
        if row is not None:
            return row
        st: PyState = syn  # type: ignore[assignment]
        row = self.row_of(self.tables.accepted(st.node)).copy()
        if st.at_start:
            row[self._spaces] = False
        if st.depth == 0:
            row[self._closers] = False
        nl = np.zeros(len(self._nl_cols), dtype=bool)
        if st.depth > 0:
            nl[:] = True  # implicit line joining: every newline is dropped
        else:
            top = st.indents[-1]
            deeper = (self._nl_cols > top) & (self._nl_cols != DEEP)
            if deeper.any():
                nl[deeper] = self.feed(st, int(self._nl_terms[deeper][0])) is not None
            for col in st.indents:
                term = self._nl_term.get(col)
                if term is not None:
                    nl[self._nl_cols == col] = self.feed(st, term) is not None
        row[self._nl_terms] = nl
        self._rows[syn] = row
        return row

    def feed_last(self, syn: Hashable, term: int) -> Hashable | None:
        return self._feed(syn, term, last=True)  # type: ignore[arg-type]

    def _feed(self, syn: PyState, term: int, last: bool) -> PyState | None:
        node, depth, indents = syn.node, syn.depth, syn.indents
        column = self.columns.get(term)
        if column is not None:
            if depth > 0:
                return self.state(node, depth, indents, False)
            return self._newline(node, indents, 0 if last else column)
        p = self.parser_term[term]
        if p == IGNORED:
            if syn.at_start and term in self.whitespace:
                return None  # CPython: "unexpected indent" on the first line
            if not self.tables.accepted(node) & self._not_end:
                return None  # nothing but the end can follow (see grammars.syntax)
            return self.state(node, depth, indents, syn.at_start and term in self.whitespace)
        if p == UNUSED:
            return None
        if term in self.opening:
            depth += 1
        elif term in self.closing:
            if depth == 0:
                return None
            depth -= 1
        nxt = self.tables.feed(node, p)
        return None if nxt is None else self.state(nxt, depth, indents, False)

    def _newline(self, node: StackNode, indents: tuple[int, ...], column: int) -> PyState | None:
        if column == DEEP:
            return None
        feed = self.tables.feed
        cur = feed(node, self.t_newline)
        if cur is None:
            return None
        if column > indents[-1]:
            cur = feed(cur, self.t_indent)
            return None if cur is None else self.state(cur, 0, (*indents, column), False)
        while column < indents[-1]:
            cur = feed(cur, self.t_dedent)
            if cur is None:
                return None
            indents = indents[:-1]
        if column != indents[-1]:
            return None
        return self.state(cur, 0, indents, False)

    def finish(self, syn: Hashable) -> bool:
        node, depth, indents = syn.node, syn.depth, syn.indents  # type: ignore[attr-defined]
        if depth:
            return False
        with_newline = self.tables.feed(node, self.t_newline)
        cur: StackNode | None = with_newline if with_newline is not None else node
        for _ in indents[1:]:
            cur = self.tables.feed(cur, self.t_dedent)  # type: ignore[arg-type]
            if cur is None:
                return False
        return self.tables.accepts_end(cur)  # type: ignore[arg-type]


def parses_as_python(source: bytes) -> bool:
    """``ast.parse`` as the final gate: rules LALR cannot see (assignment targets,
    argument order, f-string contents) are checked on the finished text."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True
