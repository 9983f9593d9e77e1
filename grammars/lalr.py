"""LALR(1) tables from Lark, as integers.

Lark builds the grammar and its tables; we only run them, in the compiled LR core
(``grammars/_lr_core.c``, through :mod:`grammars.syntax`): stacks there are
hash-consed, so a whole stack is one int, forks and rollbacks are free, and feeds are
memoised per (stack, terminal). These tables are what goes to disk with a compiled
grammar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

END = "$END"


@dataclass
class ParseTables:
    """Integer LALR tables: terminals by id, shift/reduce actions, gotos."""

    terminal_ids: dict[str, int]
    actions: list[dict[int, tuple[int, int, int]]]  # (kind 0=shift/1=reduce, arg, goto nt)
    gotos: list[dict[int, int]]
    start_state: int
    end_state: int

    def dense(self) -> tuple[int, int, int, bytes, bytes, bytes, bytes, int, int, int]:
        """The tables as the LR core takes them: (states, terminals, nonterminals, action
        kind int8 [state, terminal] (0 none, 1 shift, 2 reduce), its argument int32 (the
        shifted-to state or the pop count), its nonterminal int32, gotos int32
        [state, nonterminal] (-1 none), start state, end state, the ``$END`` terminal)."""
        n_states, n_terms = len(self.actions), len(self.terminal_ids)
        n_nts = 1 + max(
            [nt for row in self.gotos for nt in row]
            + [act[2] for row in self.actions for act in row.values()],
            default=0,
        )
        kind = np.zeros((n_states, n_terms), dtype=np.int8)
        arg = np.zeros((n_states, n_terms), dtype=np.int32)
        nt = np.full((n_states, n_terms), -1, dtype=np.int32)
        go = np.full((n_states, n_nts), -1, dtype=np.int32)
        for state, row in enumerate(self.actions):
            for term, (k, a, n) in row.items():
                kind[state, term] = 1 if k == 0 else 2
                arg[state, term] = a
                nt[state, term] = n
        for state, row in enumerate(self.gotos):
            for n, target in row.items():
                go[state, n] = target
        return (
            n_states,
            n_terms,
            n_nts,
            kind.tobytes(),
            arg.tobytes(),
            nt.tobytes(),
            go.tobytes(),
            self.start_state,
            self.end_state,
            self.terminal_ids[END],
        )


def tables_from_lark(parser: object, start: str) -> ParseTables:
    """Convert a Lark LALR parser's ``IntParseTable`` into :class:`ParseTables`."""
    table = parser.parser.parser.parser.parse_table  # type: ignore[attr-defined]
    terminal_ids: dict[str, int] = {}
    nonterminal_ids: dict[str, int] = {}
    n_states = max(table.states) + 1
    actions: list[dict[int, tuple[int, int, int]]] = [{} for _ in range(n_states)]
    gotos: list[dict[int, int]] = [{} for _ in range(n_states)]
    for state, row in table.states.items():
        for symbol, (action, arg) in row.items():
            is_terminal = symbol == END or symbol.isupper()
            if action.name == "Shift" and not is_terminal:
                nt = nonterminal_ids.setdefault(symbol, len(nonterminal_ids))
                gotos[state][nt] = arg
                continue
            tid = terminal_ids.setdefault(symbol, len(terminal_ids))
            if action.name == "Shift":
                actions[state][tid] = (0, arg, -1)
            else:
                origin = arg.origin.name
                origin = origin.value if hasattr(origin, "value") else str(origin)
                nt = nonterminal_ids.setdefault(origin, len(nonterminal_ids))
                actions[state][tid] = (1, len(arg.expansion), nt)
    terminal_ids.setdefault(END, len(terminal_ids))
    return ParseTables(
        terminal_ids=terminal_ids,
        actions=actions,
        gotos=gotos,
        start_state=table.start_states[start],
        end_state=table.end_states[start],
    )
