"""LALR(1) tables from Lark, driven over a persistent, hash-consed stack.

Lark builds the grammar and its tables; we only run them. A parser state is a
:class:`StackNode` (LR state plus parent). Nodes are hash-consed: ``push(parent, s)``
always returns the same object for the same stack contents, so a whole stack compares
and hashes by identity, forks and rollbacks are free, and results of feeding a terminal
are memoised on the node (``feed`` is a dict lookup the second time).
"""

from __future__ import annotations

from dataclasses import dataclass

END = "$END"


class StackNode:
    """One entry of an LR stack; the object *is* the whole stack below it."""

    __slots__ = ("__weakref__", "_accepted", "_fed", "_kids", "parent", "state")

    def __init__(self, state: int, parent: StackNode | None) -> None:
        self.state = state
        self.parent = parent
        self._kids: dict[int, StackNode] = {}
        self._fed: dict[int, StackNode | None] = {}
        self._accepted: int | None = None

    def push(self, state: int) -> StackNode:
        kid = self._kids.get(state)
        if kid is None:
            kid = self._kids[state] = StackNode(state, self)
        return kid


@dataclass
class ParseTables:
    """Integer LALR tables: terminals by id, shift/reduce actions, gotos."""

    terminal_ids: dict[str, int]
    actions: list[dict[int, tuple[int, int, int]]]  # (kind 0=shift/1=reduce, arg, goto nt)
    gotos: list[dict[int, int]]
    start_state: int
    end_state: int

    def __getstate__(self) -> dict:
        """Pickle the tables only, not the stacks and per-state summaries built at run time."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def root(self) -> StackNode:
        """The empty stack; always the same object, so equal stacks stay identical."""
        node = self.__dict__.get("_root")
        if node is None:
            node = self.__dict__["_root"] = StackNode(self.start_state, None)
        return node

    def feed(self, node: StackNode, term: int) -> StackNode | None:
        """The stack after shifting terminal ``term`` (with its reductions), or None."""
        memo = node._fed
        if term in memo:
            return memo[term]
        cur: StackNode | None = node
        actions, gotos = self.actions, self.gotos
        result: StackNode | None = None
        while cur is not None:
            act = actions[cur.state].get(term)
            if act is None:
                break
            kind, arg, nt = act
            if kind == 0:
                result = cur.push(arg)
                break
            for _ in range(arg):
                cur = cur.parent  # type: ignore[union-attr]
            cur = cur.push(gotos[cur.state][nt])  # type: ignore[union-attr]
        memo[term] = result
        return result

    def accepted(self, node: StackNode) -> int:
        """Bit set of the terminals ``feed`` would take from ``node``.

        Equal to testing ``feed`` for every terminal, but terminals that share a
        reduction are followed together: a handful of reductions instead of one
        reduction chain per terminal (the parser side of every mask needs this set).
        """
        got = node._accepted
        if got is None:
            got = node._accepted = self._accepted_among(node, -1)
        return got

    def _accepted_among(self, node: StackNode, among: int) -> int:
        shifts, reduces = self._summary(node.state)
        out = shifts & among
        for pop, nt, terms in reduces:
            terms &= among
            if not terms:
                continue
            cur: StackNode = node
            for _ in range(pop):
                cur = cur.parent  # type: ignore[assignment]
            cur = cur.push(self.gotos[cur.state][nt])
            out |= self._accepted_among(cur, terms) if cur._accepted is None else cur._accepted & terms
        return out

    def _summary(self, state: int) -> tuple[int, list[tuple[int, int, int]]]:
        """Per LR state: shifted terminals, and reductions with the terminals that trigger them."""
        cache = self.__dict__.setdefault("_summaries", {})
        got = cache.get(state)
        if got is None:
            shifts = 0
            reduces: dict[tuple[int, int], int] = {}
            for term, (kind, arg, nt) in self.actions[state].items():
                if kind == 0:
                    shifts |= 1 << term
                else:
                    reduces[(arg, nt)] = reduces.get((arg, nt), 0) | (1 << term)
            got = cache[state] = (shifts, [(a, n, t) for (a, n), t in reduces.items()])
        return got

    def accepts_end(self, node: StackNode) -> bool:
        """Whether the input may end here (``$END`` reduces to the start symbol)."""
        end = self.terminal_ids[END]
        cur: StackNode | None = node
        while cur is not None:
            if cur.state == self.end_state:
                return True
            act = self.actions[cur.state].get(end)
            if act is None or act[0] == 0:
                return False
            for _ in range(act[1]):
                cur = cur.parent  # type: ignore[union-attr]
            if cur is None:
                return False
            cur = cur.push(self.gotos[cur.state][act[2]])
        return False


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
