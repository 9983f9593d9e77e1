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

The syntactic state is ``(stack, bracket depth, indent columns, at file start)``.
Indentation is spaces only (a tab in indentation is refused, which rules out
CPython's ``TabError`` cases). At end of input the tokenizer's implicit ``NEWLINE`` and
the closing ``DEDENT`` s are added, as CPython does.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Hashable

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
_PyState = tuple  # (StackNode, depth, indents tuple, at_start)


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
        self._memo: dict[tuple[Hashable, int], Hashable | None] = {}

    def initial(self) -> Hashable:
        return (self.tables.root(), 0, (0,), True)

    def feed(self, syn: Hashable, term: int) -> Hashable | None:
        key = (syn, term)
        memo = self._memo
        if key in memo:
            return memo[key]
        out = self._feed(syn, term, last=False)  # type: ignore[arg-type]
        if len(memo) > 2_000_000:
            memo.clear()
        memo[key] = out
        return out

    def feed_last(self, syn: Hashable, term: int) -> Hashable | None:
        return self._feed(syn, term, last=True)  # type: ignore[arg-type]

    def _feed(self, syn: _PyState, term: int, last: bool) -> _PyState | None:
        node, depth, indents, at_start = syn
        column = self.columns.get(term)
        if column is not None:
            if depth > 0:
                return (node, depth, indents, False)
            return self._newline(node, indents, 0 if last else column)
        p = self.parser_term[term]
        if p == IGNORED:
            if at_start and term in self.whitespace:
                return None  # CPython: "unexpected indent" on the first line
            return (node, depth, indents, at_start and term in self.whitespace)
        if p == UNUSED:
            return None
        if term in self.opening:
            depth += 1
        elif term in self.closing:
            if depth == 0:
                return None
            depth -= 1
        nxt = self.tables.feed(node, p)
        return None if nxt is None else (nxt, depth, indents, False)

    def _newline(self, node: StackNode, indents: tuple[int, ...], column: int) -> _PyState | None:
        if column == DEEP:
            return None
        feed = self.tables.feed
        cur = feed(node, self.t_newline)
        if cur is None:
            return None
        if column > indents[-1]:
            cur = feed(cur, self.t_indent)
            return None if cur is None else (cur, 0, (*indents, column), False)
        while column < indents[-1]:
            cur = feed(cur, self.t_dedent)
            if cur is None:
                return None
            indents = indents[:-1]
        if column != indents[-1]:
            return None
        return (cur, 0, indents, False)

    def finish(self, syn: Hashable) -> bool:
        node, depth, indents, _ = syn  # type: ignore[misc]
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
