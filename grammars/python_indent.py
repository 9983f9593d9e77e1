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

The syntactic state is ``(stack, bracket depth, indent columns, at file start)``,
interned by the compiled LR core like the stacks (one int per state, feeds memoised).
Indentation is spaces only (a tab in indentation is refused, which rules out
CPython's ``TabError`` cases). At end of input the tokenizer's implicit ``NEWLINE`` and
the closing ``DEDENT`` s are added, as CPython does.
"""

from __future__ import annotations

import ast
import warnings

import numpy as np

from grammars.lalr import ParseTables
from grammars.lexer_dfa import LexerDFA, TerminalSpec
from grammars.syntax import Syntax

MAX_COLUMN = 80
NEWLINE = "_NEWLINE"
INDENT = "_INDENT"
DEDENT = "_DEDENT"
_OPEN = {"LPAR", "LSQB", "LBRACE"}
_CLOSE = {"RPAR", "RSQB", "RBRACE"}
_BLANK_LINES = r"(?:#[^\r\n\x00]*)?(?:\r?\n[ \t\f]*(?:#[^\r\n\x00]*)?)*\r?\n"
DEEP = MAX_COLUMN + 1


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
    """:class:`Syntax` plus the indentation rules above, run by the LR core's Python
    layer (``grammars/_lr_core.c``): a state is (stack, bracket depth, indent columns,
    at file start), interned there, so it is one int like a plain stack."""

    def __init__(
        self,
        tables: ParseTables,
        lexer: LexerDFA,
        parser_term: list[int],
        columns: dict[int, int],
        whitespace_terms: set[int],
    ) -> None:
        n = len(parser_term)
        names = [t.name for t in lexer.terminals]
        column = np.full(n, -1, dtype=np.int32)
        for term, col in columns.items():
            column[term] = col
        ws = np.array([i in whitespace_terms for i in range(n)], dtype=np.uint8)
        opening = np.array([name in _OPEN for name in names], dtype=np.uint8)
        closing = np.array([name in _CLOSE for name in names], dtype=np.uint8)
        ids = tables.terminal_ids
        layer = (
            column.tobytes(),
            ws.tobytes(),
            opening.tobytes(),
            closing.tobytes(),
            ids[NEWLINE],
            ids[INDENT],
            ids[DEDENT],
            DEEP,
        )
        super().__init__(tables, lexer, parser_term, layer)
        self.columns = columns  # lexer terminal index -> column, for the _NL_* family
        self.whitespace = whitespace_terms


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
