"""Compiled Lark grammars and their token-level matcher.

A matcher state is ``(q, syn)``: the lexer DFA state of the lexeme in progress and the
syntactic state (an int naming a hash-consed LR stack, plus indentation for Python, in
the compiled LR core; see :mod:`grammars.syntax`). Both are immutable, so the history
is a linked list of states: ``fork`` and ``rollback`` are
O(1) and O(n).

Masks are computed from per-lexer-state token tables (:mod:`grammars.token_tables`) and
cached per ``(q, syn)``: as stacks are hash-consed, an equal parser context is the
same key, so the mask of a context seen before is a dictionary lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from grammars.lexer_dfa import DEAD, START, LexerDFA
from grammars.syntax import Syntax, group_mask
from grammars.token_tables import (
    TokenBytes,
    TokenTable,
    build_table,
    fewest_tokens,
    load_table,
    save_table_soon,
)
from plugin.errors import ConstraintViolation, prefix_error
from plugin.matcher import Layout, Matcher, next_forced_byte
from plugin.vocabulary import Vocabulary

_MASK_CACHE_BYTES = 256 * 1024 * 1024
_MAX_FORCED_BYTES = 64
FAR = 1 << 30  # the bound of a state from which no completion was found
_COMPLETION_VISITS = 4096  # states a completion walk may enter
_COMPLETION_BYTES = 256  # the longest completion a walk builds
_WITHIN_VISITS = 1024  # states a breadth-first budget check may enter
# Bytes a completion walk tries first, in this order, and last. `:` and `0` come before
# quotes and newlines (`except` needs `:0`; a walk that opened quotes there went on
# concatenating strings), and blanks go last: Python's newline lexemes have a lexer
# state per column, so a walk that took a blank early went down a column per byte and
# spent its visits there (inside `{"k": {}, (` it gave up after 4,096 states, where
# `):0}` ends it).
_CLOSING_FIRST = b")]}:0\"';a\n"
_BLANKS_LAST = b" \t"
_TERMINAL_VISITS = 1024  # parser states a lexeme-level completion search may enter
_OPEN_LEXEME_BYTES = 16  # bytes a search may add to finish the lexeme in progress
# First bytes of the lexemes a completion is mostly made of (names, keywords, numbers,
# closing brackets, `:`, `;`, newlines); operators and openers only lengthen it.
_COMPLETING = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_)]}:;\n")


@dataclass(frozen=True)
class Spellings:
    ids: dict[bytes, list[int]]
    longest: int


@dataclass
class CompiledGrammar:
    """A grammar compiled against one vocabulary; ``matcher()`` starts a sequence.

    ``final_check`` (optional) vets the complete text before end-of-sequence is allowed;
    the Python grammar uses ``ast.parse`` there for the few rules LALR cannot express.
    """

    name: str
    lexer: LexerDFA
    syntax: Syntax
    vocab: Vocabulary
    tokens: TokenBytes
    final_check: Callable[[bytes], bool] | None = None
    table_dir: Path | None = None  # where per-lexer-state token tables are kept on disk
    _tables: dict[int, TokenTable] = field(default_factory=dict)
    _masks: OrderedDict = field(default_factory=OrderedDict)
    _bounds: dict[tuple[int, int], int] = field(default_factory=dict)
    _beyond: dict[tuple[int, int], int] = field(default_factory=dict)  # limits :meth:`within` refuted
    _byte_orders: dict[tuple[int, int, int], list[int]] = field(default_factory=dict)

    def matcher(self) -> GrammarMatcher:
        """A fresh matcher at the grammar's start."""
        return GrammarMatcher(self, _State(START, self.syntax.initial(), None, -1, 0, b""))

    def matcher_after(self, prefix: str | bytes) -> GrammarMatcher:
        """Completion mode: a matcher that has consumed ``prefix`` (the code before the cursor).

        The prefix's bytes go through the lexer and parser like generated ones, so the
        boundary between prefix and generation may fall inside a lexeme (``item.na``).
        Raises ``PromptError`` if the grammar cannot continue the prefix.
        """
        data = prefix.encode() if isinstance(prefix, str) else prefix
        q, syn = START, self.syntax.initial()
        for i in range(len(data)):
            found = _walk(self, q, syn, data[i : i + 1])
            if found is None:
                break
            q, syn = found
        else:
            if q == START or self.syntax.ok_states(syn)[q]:
                return GrammarMatcher(self, _State(q, syn, None, -1, 0, data))
            i = len(data)
        raise prefix_error(f"the grammar {self.name!r}", data, i)

    def spellings(self) -> Spellings:
        """Byte string -> token ids, built once (used to spell forced bytes)."""
        got = self.__dict__.get("_spellings")
        if got is None:
            ids = self.vocab.text_tokens()
            got = self.__dict__["_spellings"] = Spellings(ids, max(map(len, ids)))
        return got

    def table(self, q: int) -> TokenTable:
        table = self._tables.get(q)
        if table is None:
            table = self._tables[q] = self._load_or_build_table(q)
        return table

    def mask_ready(self, q: int, syn: int) -> bool:
        """Whether the mask of ``(q, syn)`` is cached (a copy away), as opposed to a
        build from the lexer state's token table (read from disk or, in a cold
        process, a walk of the vocabulary: about a millisecond per state on the
        default vocabulary, 1–14 ms on Llama-3's)."""
        return (q, syn) in self._masks

    def continues(self, q: int, syn: int) -> bool:
        """Whether some text token is allowed from ``(q, syn)``, exactly, without a
        mask where possible: a cached mask answers; else a token of one byte that is
        allowed proves it (one walk each, the likeliest bytes first); only when none is
        does the mask decide."""
        hit = self._masks.get((q, syn))
        if hit is None:
            for data in self._byte_probes():
                if _walk(self, q, syn, data, check=True) is not None:
                    return True
        return bool((hit if hit is not None else self.allowed(q, syn)).any())

    def _byte_probes(self) -> list[bytes]:
        """The vocabulary's one-byte text tokens' bytes: newline and space, then ASCII."""
        got = self.__dict__.get("_probes")
        if got is None:
            tokens = self.tokens  # text tokens only
            ones = {tokens.raw[i] for i in np.flatnonzero(tokens.lengths == 1).tolist()}
            got = self.__dict__["_probes"] = sorted(
                ones, key=lambda b: (b not in (b"\n", b" "), b[0] >= 0x80, b[0])
            )
        return got

    def _load_or_build_table(self, q: int) -> TokenTable:
        path = None if self.table_dir is None else self.table_dir / f"q{q}.bin"
        if path is not None and path.is_file():
            try:
                return load_table(path)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a damaged cache file is rebuilt
        table = build_table(self.lexer, self.tokens, q)
        if path is not None:
            save_table_soon(table, path)
        return table

    def allowed(self, q: int, syn: int) -> torch.Tensor:
        """Bool tensor over the vocabulary: text tokens allowed from ``(q, syn)`` (no EOS).

        Two cache levels: by ``(q, syn)`` (a context seen before), then by the mask's
        *signature*, the surviving token groups with the ``ok_states`` key of the parser
        state each leaves, which is equal for stacks that differ only below what the
        next token can reach (the same JSON member at depth 3 and depth 4).
        """
        key = (q, syn)
        hit = self._masks.get(key)
        if hit is not None:
            self._masks.move_to_end(key)
            return hit
        table = self.table(q)
        signature = self.syntax.signature(syn, table.split_trie)
        full_key = (q, signature)
        mask = self._masks.get(full_key)  # type: ignore[call-overload]
        if mask is None:
            mask = self._build_mask(table, signature)
            self._remember(full_key, mask)
        self._remember(key, mask)
        return mask

    def bound(self, q: int, syn: int) -> int:
        """Tokens of a known completion from ``(q, syn)`` to a point where the grammar
        may end (:data:`FAR` if the searches found none): an upper bound on the shortest
        one, so a budget that is at least this can always be met.

        The completion is real. First the one with the fewest lexemes
        (:func:`_lexeme_completion`: ``A in A)`` after ``sum(1 for``), else a
        depth-first walk over bytes (:func:`_completion`) that tries closing bytes
        first; every state on its path gets the bound of the rest of the path, so the
        states the next tokens reach are mostly known. It is counted in the fewest
        vocabulary tokens that spell its bytes (any spelling of the same bytes reaches
        the same state). Python's final ``ast.parse`` is not part of the search: a
        completion the LALR tables allow but CPython refuses (an assignment to a
        literal, say) is rare and would be bounded as finishable.
        """
        key = (q, syn)
        hit = self._bounds.get(key)
        if hit is None:
            found = _lexeme_completion(self, q, syn) or _completion(self, q, syn)
            if found is None:
                hit = self._bounds[key] = FAR
            else:
                self._record(*found)
                hit = self._bounds[key]
        return hit

    def _record(self, data: bytes, states: list[tuple[int, int]], tail: int) -> None:
        """Give each state on a completion path the bound of the rest of the path, where
        it is smaller than the one known."""
        lengths = _spelled_lengths(self, data)
        for i, state in enumerate(states):
            if lengths[i] + tail < self._bounds.get(state, FAR):
                self._bounds[state] = lengths[i] + tail

    def within(self, q: int, syn: int, limit: int) -> bool:
        """Whether the grammar may end within ``limit`` tokens from ``(q, syn)``, as far
        as a search finds: the bound first; else breadth first over bytes (each byte
        at most one token) to depth ``limit``, stopping at a state where the grammar may
        end or whose bound fits what is left.

        Why: :meth:`bound` is a depth-first walk's completion, often far from the
        shortest (after ``def`` it wandered far past the short completion); refusing tokens on
        it near a budget of 96 tokens made the default model write ``def area():``
        instead of ``def area(width, height):``. (The byte walk alone found no
        completion after ``sum(1 for`` or ``return x if``, where a blank must come
        before the next name and blanks go last, so every generator expression was
        refused at any budget: the bound now searches lexemes first.) A "no" here is what the search could
        not prove within its caps; it is kept per state (a "no" for a limit is a "no"
        for every smaller one), and paths found improve the bounds on them."""
        key = (q, syn)
        if limit <= 0:  # a bound is 0 exactly where the grammar may end: no walk needed
            return limit == 0 and _may_end(self, q, syn)
        if self.bound(q, syn) <= limit:
            return True
        if self._beyond.get(key, -1) >= limit:
            return False
        parent: dict[tuple[int, int], tuple[tuple[int, int], int] | None] = {key: None}
        frontier = [key]
        for depth in range(1, limit + 1):
            layer = []
            for st in frontier:
                for b in _next_bytes(self, *st):
                    found = _walk(self, st[0], st[1], bytes((b,)), check=True)
                    if found is None or found in parent:
                        continue
                    parent[found] = (st, b)
                    tail = 0 if _may_end(self, *found) else self._bounds.get(found, FAR)
                    if depth + tail <= limit:  # fits if its bytes spell in as many tokens
                        path, states, at = bytearray(), [], found
                        while (link := parent[at]) is not None:
                            at, byte = link
                            states.append(at)
                            path.append(byte)
                        data, states = bytes(reversed(path)), states[::-1]
                        if _spelled_lengths(self, data)[0] + tail <= limit:
                            self._record(data, states, tail)
                            return True
                    layer.append(found)
            if len(parent) > _WITHIN_VISITS:
                break
            frontier = layer
            if not frontier:
                break
        self._beyond[key] = max(self._beyond.get(key, -1), limit)
        return False

    def _build_mask(self, table: TokenTable, signature: bytes) -> torch.Tensor:
        """The tokens of the signature's groups whose open lexeme its ok key keeps, set
        in one pass in the compiled core."""
        out = np.zeros(self.vocab.size, dtype=np.uint8)
        ok = self.syntax.ok_table()
        group_mask(signature, table.ids, table.ends, table.offsets, ok, ok.shape[1], out)
        return torch.from_numpy(out.view(bool))

    def _remember(self, key: Hashable, mask: torch.Tensor) -> None:
        self._masks[key] = mask
        if len(self._masks) * self.vocab.size > _MASK_CACHE_BYTES:
            self._masks.popitem(last=False)


def _forced_bytes(g: CompiledGrammar, q: int, syn: int, layout: Layout | None = None) -> bytes:
    """The bytes that must come next from ``(q, syn)``, until a choice or a possible end
    (with ``layout``: a blank-or-not choice is guessed, see ``Matcher.forced_bytes``)."""
    out = bytearray()
    prev = layout.last if layout is not None else -1
    lexer, syntax = g.lexer, g.syntax
    while len(out) < _MAX_FORCED_BYTES and not _may_end(g, q, syn):
        row = lexer.trans[q]
        ok = syntax.ok_states(syn)
        allowed = (row != DEAD) & ok[row]
        term = int(lexer.best[q])
        if q != START and term >= 0:
            after = syntax.feed(syn, term)
            if after is not None:
                restart = lexer.trans[START]
                allowed |= (row == DEAD) & (restart != DEAD) & syntax.ok_states(after)[restart]
        byte = next_forced_byte(np.flatnonzero(allowed), layout, prev)
        if byte is None:
            break
        found = _walk(g, q, syn, bytes((byte,)), check=True)
        if found is None:
            break
        out.append(byte)
        prev = byte
        q, syn = found
    return bytes(out)


def _next_bytes(g: CompiledGrammar, q: int, syn: int) -> list[int]:
    """One byte per distinct next state among those that may follow ``(q, syn)``,
    closing ones first (see :data:`_CLOSING_FIRST`), then the others in byte order,
    blanks last.
    They depend on the parser state only through the ok keys before and after the open
    lexeme ends, so they are kept per (lexer state, those keys)."""
    lexer, syntax = g.lexer, g.syntax
    term = int(lexer.best[q])
    after = syntax.feed(syn, term) if q != START and term >= 0 else None
    key = (q, syntax.ok_key(syn), -1 if after is None else syntax.ok_key(after))
    hit = g._byte_orders.get(key)
    if hit is None:
        row, restart = lexer.trans[q], lexer.trans[START]
        allowed = (row != DEAD) & syntax.ok_states_of(key[1])[row]
        if after is not None:
            allowed |= (row == DEAD) & (restart != DEAD) & syntax.ok_states_of(key[2])[restart]
        order = [b for b in _CLOSING_FIRST if allowed[b]]
        placed = _CLOSING_FIRST + _BLANKS_LAST
        order += [b for b in np.flatnonzero(allowed).tolist() if b not in placed]
        order += [b for b in _BLANKS_LAST if allowed[b]]
        # bytes that lead to the same lexer state (continuing the lexeme, or ending it
        # and starting the same next one) lead to the same matcher state: one each
        seen: set[tuple[bool, int]] = set()
        hit = []
        for b in order:
            target = (True, int(row[b])) if row[b] != DEAD else (False, int(restart[b]))
            if target not in seen:
                seen.add(target)
                hit.append(b)
        g._byte_orders[key] = hit
    return hit


def _completion(g: CompiledGrammar, q: int, syn: int) -> tuple[bytes, list[tuple[int, int]], int] | None:
    """``(data, states, tail)``: bytes ``data`` from ``(q, syn)`` to a point where the
    grammar may end, or to a state whose bound is known (``tail`` tokens, else 0), with
    the state before each byte (the start included); None if the walk finds neither
    within its caps.

    Depth first, each state entered once, closing bytes tried first: most states end
    within a few bytes (a number or a name ends where it is, brackets and quotes close,
    a statement needs ``0``). Not the shortest completion, a real one."""
    start = (q, syn)
    if _may_end(g, q, syn):
        return b"", [start], 0
    seen = {start}
    path = bytearray()
    states = [start]
    stack = [iter(_next_bytes(g, q, syn))]
    while stack:
        cq, cs = states[-1]
        step = None
        for b in stack[-1]:
            found = _walk(g, cq, cs, bytes((b,)), check=True)
            if found is not None and found not in seen:
                step = (b, found)
                break
        if step is None:
            stack.pop()
            states.pop()
            if path:
                path.pop()
            continue
        b, found = step
        seen.add(found)
        path.append(b)
        states.append(found)
        known = g._bounds.get(found)
        if known is not None and known < FAR:
            return bytes(path), states[:-1], known
        if _may_end(g, *found):
            return bytes(path), states[:-1], 0
        if len(seen) > _COMPLETION_VISITS:
            return None
        if len(path) >= _COMPLETION_BYTES:
            path.pop()
            states.pop()
            continue
        stack.append(iter(_next_bytes(g, *found)))
    return None


def _shortest_lexemes(g: CompiledGrammar) -> list[bytes | None]:
    """For each lexer terminal, the shortest bytes the lexer reads as that terminal from
    its start state (None if it has none): a breadth-first walk of the lexer DFA, built
    once per grammar (the Python grammar's newline terminals, one per column, are
    ``\\n`` and that many blanks)."""
    got = g.__dict__.get("_lexemes")
    if got is not None:
        return got
    trans, best = g.lexer.trans, g.lexer.best
    lexemes: list[bytes | None] = [None] * len(g.syntax.parser_term)
    path: dict[int, bytes] = {START: b""}
    frontier = np.array([START])
    while frontier.size:
        rows = trans[frontier]  # [states, 256]
        where, byte = np.nonzero(rows != DEAD)
        targets = rows[where, byte]
        targets, first = np.unique(targets, return_index=True)  # the first way in, in byte order
        fresh = [i for i, t in enumerate(targets.tolist()) if t not in path]
        for i in fresh:
            t = int(targets[i])
            path[t] = path[int(frontier[where[first[i]]])] + bytes((int(byte[first[i]]),))
            term = int(best[t])
            if 0 <= term < len(lexemes) and lexemes[term] is None:
                lexemes[term] = path[t]
        frontier = targets[fresh]
    g.__dict__["_lexemes"] = lexemes
    return lexemes


def _lexeme_completion(
    g: CompiledGrammar, q: int, syn: int
) -> tuple[bytes, list[tuple[int, int]], int] | None:
    """A completion from ``(q, syn)`` with the fewest lexemes, as ``(data, states, 0)``
    (the state before each byte), or None if the search finds none within its caps.

    The lexeme in progress is finished first (every way within
    :data:`_OPEN_LEXEME_BYTES` bytes), then the parser is searched breadth first over
    whole lexemes (each terminal spelled by its shortest lexeme, see
    :func:`_shortest_lexemes`; hash-consed parser states make equal stacks one node)
    to a state where the input may end: first over the lexemes that begin with a name
    character, a closing bracket, ``:``, ``;`` or a newline (what completions are made
    of: ``A in A)``), then over all of them. The lexemes are then joined, a blank put
    between two that would run together, and the bytes walked again: what is returned
    is a real completion, the same as the byte walks would find, only shorter."""
    lexemes = _shortest_lexemes(g)
    starts = _open_lexeme_ends(g, q, syn)
    usable = [t for t, spelled in enumerate(lexemes) if spelled and g.syntax.parser_term[t] >= 0]
    completing = [t for t in usable if lexemes[t][0] in _COMPLETING]  # type: ignore[index]
    for alphabet in (completing, usable):
        found = _search_lexemes(g, starts, alphabet)
        if found is not None:
            spelled = _spelled_completion(g, q, syn, *found)
            if spelled is not None:
                return spelled
    return None


def _open_lexeme_ends(g: CompiledGrammar, q: int, syn: int) -> list[tuple[bytes, int]]:
    """The ways to finish the lexeme in progress at ``(q, syn)`` within
    :data:`_OPEN_LEXEME_BYTES` bytes: (the bytes, the parser state once it is fed)."""
    if q == START:
        return [(b"", syn)]
    syntax, rows, best = g.syntax, g.lexer.rows, g.lexer.best_list
    ends: list[tuple[bytes, int]] = []
    reached = {q: b""}
    frontier = [q]
    while frontier:
        layer = []
        for cq in frontier:
            term = best[cq]
            fed = syntax.feed(syn, term) if term >= 0 else None
            if fed is not None:
                ends.append((reached[cq], fed))
            if len(reached[cq]) < _OPEN_LEXEME_BYTES:
                for b, nq in enumerate(rows[cq]):
                    if nq != DEAD and nq not in reached:
                        reached[nq] = reached[cq] + bytes((b,))
                        layer.append(nq)
        frontier = layer
    return ends


def _search_lexemes(
    g: CompiledGrammar, starts: list[tuple[bytes, int]], alphabet: list[int]
) -> tuple[bytes, int, list[tuple[int, int]]] | None:
    """Breadth first from the ``starts`` over the terminals of ``alphabet`` to a parser
    state where the input may end, entering at most :data:`_TERMINAL_VISITS` states:
    (the start's bytes, its parser state, then each terminal with the state before it)."""
    syntax = g.syntax
    parent: dict[int, tuple[int, int] | bytes] = {}  # parser state -> (before, terminal) or start bytes
    frontier = []
    for data, fed in starts:
        if fed not in parent:
            parent[fed] = data
            frontier.append(fed)
    goal = next((s for s in frontier if syntax.finish(s)), None)
    while goal is None and frontier and len(parent) < _TERMINAL_VISITS:
        layer = []
        for s in frontier:
            takes = syntax.accept_row(s)
            for t in alphabet:
                if not takes[t]:
                    continue
                after = syntax.feed(s, t)
                if after is None or after in parent:
                    continue
                parent[after] = (s, t)
                if syntax.finish(after):
                    goal = after
                    break
                layer.append(after)
            if goal is not None:
                break
        frontier = layer
    if goal is None:
        return None
    terms: list[tuple[int, int]] = []
    at = goal
    while not isinstance(link := parent[at], bytes):
        terms.append(link)
        at = link[0]
    return link, at, terms[::-1]


def _spelled_completion(
    g: CompiledGrammar, q: int, syn: int, head: bytes, first: int, terms: list[tuple[int, int]]
) -> tuple[bytes, list[tuple[int, int]], int] | None:
    """The bytes of a lexeme-level completion (``head`` finishes the open lexeme into
    parser state ``first``; then ``terms``), checked by walking them: each lexeme must
    end the one before it in the parser state the search had, and be read as its own
    terminal (``in`` then a name needs a blank: ``ina`` is one name)."""
    lexemes, best = _shortest_lexemes(g), g.lexer.best_list
    data = bytearray(head)
    at = _walk(g, q, syn, head, check=True) if head else (q, syn)
    if at is None or at[1] != syn:
        return None
    for before, term in terms:
        spelled = lexemes[term]
        assert spelled is not None
        for glue in (b"", b" "):
            nxt = None if at is None else _walk(g, *at, glue + spelled, check=True)
            if nxt is not None and nxt[1] == before and best[nxt[0]] == term:
                break
        else:
            return None
        data += glue + spelled
        at = nxt
    if at is None or not _may_end(g, *at) or (not terms and g.syntax.feed(syn, best[at[0]]) != first):
        return None
    states, state = [], (q, syn)
    for b in data:
        states.append(state)
        state = _walk(g, *state, bytes((b,)), check=True)  # type: ignore[assignment]
        if state is None:
            return None
    return bytes(data), states or [(q, syn)], 0


def _spelled_lengths(g: CompiledGrammar, data: bytes) -> list[int]:
    """For each suffix ``data[i:]``, the fewest vocabulary tokens that spell it (FAR if
    some byte has no token), see :func:`grammars.token_tables.fewest_tokens`."""
    spell = g.spellings()
    return fewest_tokens(data, spell.ids, spell.longest, FAR)


def _may_end(g: CompiledGrammar, q: int, syn: int | None) -> bool:
    """Whether the grammar accepts the input ending at ``(q, syn)`` (no final check)."""
    if q != START:
        term = int(g.lexer.best[q])
        syn = None if term < 0 else g.syntax.feed_last(syn, term)
        if syn is None:
            return False
    return g.syntax.finish(syn)


def _walk(g: CompiledGrammar, q: int, syn: int, data: bytes, check: bool = False) -> tuple[int, int] | None:
    """Run ``data`` from ``(q, syn)``; None if a lexeme dies or the parser refuses.

    With ``check``, also require the open lexeme to be completable in the new context.
    """
    trans, best, syntax = g.lexer.rows, g.lexer.best_list, g.syntax
    s: int | None = syn
    for b in data:
        nq = trans[q][b]
        if nq == DEAD:
            term = best[q]
            if term < 0:
                return None
            s = syntax.feed(s, term)
            if s is None:
                return None
            nq = trans[START][b]
            if nq == DEAD:
                return None
        q = nq
    if check and q != START and not syntax.ok_states(s)[q]:
        return None
    return q, s  # type: ignore[return-value]


@dataclass(eq=False)
class _State:
    q: int
    syn: int
    parent: _State | None
    token: int  # -1 at the root, EOS id when finished
    depth: int
    prefix: bytes
    accepting: bool | None = None  # memo: the final check (``ast.parse``) is not free


class GrammarMatcher(Matcher):
    """Per-sequence state over a :class:`CompiledGrammar`."""

    __slots__ = ("_finished", "_g", "_last_step", "_state", "vocab")

    def __init__(self, grammar: CompiledGrammar, state: _State) -> None:
        self._g = grammar
        self._state = state
        self.vocab = grammar.vocab
        # (state, token, result) of the last _step: the decode loop asks budget_refuses
        # (or accepts) for the chosen token, then advances over it, on the same state
        self._last_step: tuple[_State, int, tuple[int, int] | None] | None = None

    @property
    def num_advanced(self) -> int:
        return self._state.depth

    def _is_done(self) -> bool:
        return self._state.token in self.vocab.eos_ids

    def _step(self, token_id: int) -> tuple[int, int] | None:
        st = self._state
        last = self._last_step
        if last is not None and last[0] is st and last[1] == token_id:
            return last[2]
        data = self.vocab.token_bytes[token_id]
        if token_id in self.vocab.special_ids or not data:
            return None
        found = _walk(self._g, st.q, st.syn, data, check=True)
        self._last_step = (st, token_id, found)
        return found

    def accepts(self, token_id: int) -> bool:
        if self._is_done():
            return False
        if token_id in self.vocab.eos_ids:
            return self.is_accepting()
        return self._step(token_id) is not None

    def advance(self, token_id: int) -> None:
        st = self._state
        if self._is_done():
            raise ConstraintViolation(f"token {token_id} advanced after end of sequence")
        if token_id in self.vocab.eos_ids:
            if not self.is_accepting():
                raise ConstraintViolation("EOS advanced before the grammar accepts")
            self._state = _State(st.q, st.syn, st, token_id, st.depth + 1, b"")
            return
        found = self._step(token_id)
        if found is None:
            raise ConstraintViolation(
                f"token {token_id} ({self.vocab.token_bytes[token_id]!r}) is not allowed here"
            )
        self._state = _State(found[0], found[1], st, token_id, st.depth + 1, b"")

    def fill_mask(self, mask: torch.Tensor) -> None:
        if self._is_done():
            return
        allowed = self._g.allowed(self._state.q, self._state.syn)
        mask[: allowed.numel()] |= allowed.to(mask.device, non_blocking=True)
        if self.is_accepting():
            mask[list(self.vocab.eos_ids)] = True

    candidate_refusals = 4  # then the full mask: a cold table costs about a millisecond

    def fill_candidates(self, mask: torch.Tensor, *, greedy: bool = False) -> bool:
        """Greedy, from a state whose mask is not cached: every text token as an
        unchecked candidate, and end-of-sequence where the grammar may end. The
        caller's argmax is then checked with one walk of its bytes instead of a mask
        built from the lexer state's token table (read from disk, or in a cold process
        a walk of the whole vocabulary), and the model's pick is usually allowed; after
        :attr:`candidate_refusals` refused picks the caller asks for the full mask. The
        chosen token is the same either way. Otherwise (sampling, a cached mask) the
        full mask."""
        st = self._state
        if not greedy or self._is_done() or self._g.mask_ready(st.q, st.syn):
            self.fill_mask(mask)
            return False
        size = self.vocab.size
        mask[:size] = True
        mask[list(self.vocab.special_ids)] = False
        if self.is_accepting():
            mask[list(self.vocab.eos_ids)] = True
        return True

    def budget_refuses(self, token_id: int, remaining: int) -> bool:
        if self._is_done() or token_id in self.vocab.eos_ids:
            return False
        found = self._step(token_id)
        return found is not None and not self._g.within(*found, remaining - 2)

    def restrict_to_budget(self, mask: torch.Tensor, remaining: int) -> bool:
        """Clear the tokens after which the grammar's bound (:meth:`CompiledGrammar.bound`)
        plus the end-of-sequence token exceeds ``remaining - 1``: the output then ends
        ``"stop"`` (with EOS) within its budget, not ``"length"``. Tokens are taken group
        by group from the lexer state's token table: a group's tokens end the same
        lexemes, so they share the parser state after them and differ only in the lexer
        state they leave open."""
        if self._is_done():
            return False
        g, st = self._g, self._state
        size = self.vocab.size
        allowed = mask[:size].cpu().numpy()
        table = g.table(st.q)
        parent, term = table.seq_parent, table.seq_term
        syn_of: dict[int, int | None] = {0: st.syn}
        far = np.zeros(size, dtype=bool)
        limit = remaining - 2  # the completion's tokens, then EOS
        for gi, seq in enumerate(table.group_seq.tolist()):
            a, b = int(table.offsets[gi]), int(table.offsets[gi + 1])
            ids = table.ids[a:b]
            live = allowed[ids]
            if not live.any():
                continue
            chain = []
            while seq not in syn_of:
                chain.append(seq)
                seq = int(parent[seq])
            syn = syn_of[seq]
            for c in reversed(chain):
                syn = None if syn is None else g.syntax.feed(syn, int(term[c]))
                syn_of[c] = syn
            if syn is None:
                continue
            ends = table.ends[a:b][live]
            for end in np.unique(ends).tolist():
                if not g.within(end, syn, limit):
                    far[ids[live][ends == end]] = True
        if not far.any():
            return False
        if not (allowed & ~far).any():  # EOS counts only if the mask given allows it (a
            return False  # monitor may refuse the end): the budget cannot be met, leave it
        mask[torch.from_numpy(np.flatnonzero(far)).to(mask.device)] = False
        return True

    def forced_bytes(self, layout: Layout | None = None) -> bytes:
        return b"" if self._is_done() else _forced_bytes(self._g, self._state.q, self._state.syn, layout)

    def forced_tokens(self) -> list[int]:
        """Tokens spelling the bytes the grammar leaves no choice about.

        The choice is looked at byte by byte, not token by token: after ``SELECT a FR``
        only ``OM`` can follow, although the tokens ``O``, ``OM`` and ``OM `` all fit.
        The forced bytes are then spelled greedily with the longest allowed token.
        Stops where the output may end (end-of-sequence is a choice too).
        """
        if self._is_done():
            return []
        data = _forced_bytes(self._g, self._state.q, self._state.syn)
        out: list[int] = []
        probe = self.fork()
        spell = self._g.spellings()
        i = 0
        while i < len(data):
            for n in range(min(len(data) - i, spell.longest), 0, -1):
                tok = next((t for t in spell.ids.get(data[i : i + n], ()) if probe.accepts(t)), None)
                if tok is not None:
                    break
            else:
                break
            out.append(tok)
            probe.advance(tok)
            i += n
        return out

    def fork(self) -> GrammarMatcher:
        return GrammarMatcher(self._g, self._state)

    def rollback(self, n: int) -> None:
        if n < 0 or n > self._state.depth:
            raise ValueError(f"cannot roll back {n} tokens; {self._state.depth} were advanced")
        st = self._state
        for _ in range(n):
            st = st.parent  # type: ignore[assignment]
        self._state = st

    def text(self) -> bytes:
        """The bytes consumed so far (prefix included, EOS excluded)."""
        parts: list[bytes] = []
        st: _State | None = self._state
        while st is not None:
            if st.token >= 0 and st.token not in self.vocab.eos_ids:
                parts.append(self.vocab.token_bytes[st.token])
            elif st.prefix:
                parts.append(st.prefix)
            st = st.parent
        return b"".join(reversed(parts))

    def is_accepting(self) -> bool:
        st = self._state
        if self._is_done():
            return True
        if st.accepting is None:
            g = self._g
            st.accepting = _may_end(g, st.q, st.syn) and (g.final_check is None or g.final_check(self.text()))
        return st.accepting

    def is_finished(self) -> bool:
        if self._is_done():
            return True
        return self.is_accepting() and not self._g.continues(self._state.q, self._state.syn)
