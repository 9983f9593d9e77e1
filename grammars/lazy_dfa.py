"""A byte automaton built as decoding reaches it, and its token masks.

Why lazy: a JSON Schema's automaton can be huge (optional properties, nesting,
recursive ``$ref``s) while one decode visits a few dozen of its states. Building it
whole is what made the regex route slow to start (outlines-core indexes every state
over the whole vocabulary: 0.6 s p50 on MaskBench, minutes for some schemas). Here:

* :class:`LazyNFA` is a Thompson NFA over bytes whose parts may be *deferred*: a
  placeholder state holds a function that builds its fragment, called the first time
  an epsilon closure reaches it. Recursive schemas are therefore infinite NFAs that are
  only ever built as deep as the text goes.
* :class:`LazyDFA` determinises on demand: a DFA state is the set of NFA states (closed
  under epsilon) and its 256-entry transition row is computed when first needed.
* :class:`TokenMasks` computes the tokens allowed in a DFA state by walking the
  vocabulary's token trie in the compiled core (:mod:`grammars.native`): each shared
  prefix is read once, a dead byte drops its subtree, and a subtree whose bytes all loop
  on the state (free text) is settled without a walk. Rows the walk needs and the DFA
  has not built are built here and the walk resumes below them.
* :class:`CompiledLazyDFA` offers what :class:`grammars.dfa.DFAMatcher` needs (the same
  surface as the outlines-core route), with per-state masks cached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch

from grammars.byte_nfa import ByteNFA
from grammars.dfa import ROW_THRESHOLD, AllowedRows, DFAMatcher
from grammars.native import dfa_allowed, lazy_dfa_core, trie_of
from grammars.state_cache import STATE_CACHE
from grammars.token_tables import TokenBytes, fewest_tokens
from plugin.errors import CompileTimeout, prefix_error
from plugin.matcher import Layout, next_forced_byte
from plugin.vocabulary import Vocabulary

DEAD = 0
_FAR = 1 << 30
_DISTANCE_VISITS = 20_000  # DFA states a distance search may visit before giving up
_GREEDY_VISITS = 2_000  # states a depth-first walk to acceptance may enter before the search
# the order in which a walk to acceptance prefers bytes: what closes an open value first,
# then what patterns most often take (digits, letters), escapes and non-ASCII last
_CLOSING = np.full(256, 9, dtype=np.int8)
_CLOSING[0x21:0x7F] = 6
_CLOSING[np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ123456789", dtype=np.uint8)] = 5
_CLOSING[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)] = 4
_CLOSING[ord("\\")] = 8
for _rank, _byte in enumerate(b'"}]0'):
    _CLOSING[_byte] = _rank
_FORCED_BYTES_LIMIT = 64  # bytes a forced-text draft may span
MAX_EXPANSIONS = 50_000  # deferred fragments built in one closure: a loop that reads nothing


class LazyNFA(ByteNFA):
    """A :class:`ByteNFA` whose fragments may be built on first use (see module doc).

    ``deadline`` (a ``time.perf_counter`` value) bounds the building done while the
    constraint is compiled; past it :class:`CompileTimeout` is raised. Later expansions,
    during decoding, are bounded by :data:`MAX_EXPANSIONS` per closure instead.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[int, tuple[Callable[[], tuple[int, int]], int]] = {}
        self.deadline: float | None = None
        self.budget_label = ""

    def defer(self, build: Callable[[], tuple[int, int]]) -> tuple[int, int]:
        """A (start, end) pair standing for the fragment ``build()`` will make."""
        start, end = self.new_state(), self.new_state()
        self.pending[start] = (build, end)
        return start, end

    def expand(self, state: int) -> None:
        """Build the fragment deferred at ``state`` and link it in."""
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise CompileTimeout(self.budget_label)
        build, end = self.pending.pop(state)
        base = len(self.edges)
        s, e = build()
        self.eps[state].append(s)
        self.eps[e].append(end)
        self.untrack(base)

    def untrack(self, start: int = 0) -> None:
        """Keep the rows from ``start`` on out of the cyclic collector (they hold ints
        only): full collections walked the millions of rows a decoded schema grows, a
        fifth of MaskBench's mask time."""
        lazy_dfa_core.untrack_rows(self.edges, self.eps, start)


class LazyDFA:
    """Subset construction on demand over a :class:`LazyNFA` (state 0 is dead).

    The construction runs in the compiled core (``grammars/_lazy_dfa.c``), which reads
    the NFA's Python lists in place and calls :meth:`LazyNFA.expand` when a closure
    reaches a deferred part. The tables live here, as numpy arrays the trie walk reads:
    ``trans`` (a 256-entry row per state), ``built`` (whether a row is filled) and
    ``final`` (whether a state accepts); they grow here, before each call to the core
    that may make states."""

    def __init__(self, nfa: LazyNFA, start: int, accept: int) -> None:
        self.nfa = nfa
        self.accept = accept
        nfa.untrack()
        self._core = lazy_dfa_core.Subsets(
            nfa.edges, nfa.eps, nfa.pending, nfa.expand, _expansion_loop, accept, MAX_EXPANSIONS
        )
        self.trans = np.zeros((512, 256), dtype=np.int32)
        self.built = np.zeros(512, dtype=bool)
        self.built[DEAD] = True
        self.final = np.zeros(512, dtype=bool)
        self._free: dict[int, bool] = {}
        self.start = self.closure(frozenset([start]))

    @property
    def states(self) -> int:
        """DFA states made so far (the dead state included)."""
        return self._core.states

    def states_of(self, q: int) -> tuple[int, ...]:
        """The NFA states DFA state ``q`` stands for (sorted)."""
        return self._core.states_of(q)

    def _reserve(self, extra: int) -> None:
        """Room in the tables for ``extra`` states more than the core has made."""
        need = self._core.states + extra
        size = self.built.shape[0]
        if need <= size:
            return
        while size < need:
            size *= 2
        grown = size - self.built.shape[0]
        self.trans = np.concatenate([self.trans, np.zeros((grown, 256), dtype=np.int32)])
        self.built = np.concatenate([self.built, np.zeros(grown, dtype=bool)])
        self.final = np.concatenate([self.final, np.zeros(grown, dtype=bool)])

    def closure(self, targets: frozenset[int]) -> int:
        """The DFA state of the epsilon closure of ``targets`` (expanding deferred parts)."""
        self._reserve(1)
        return self._core.closure(tuple(targets), self.final)

    def build_row(self, q: int) -> None:
        """Compute the transition row of state ``q`` (one closure per byte class)."""
        self.ensure_rows(np.array([q], dtype=np.int32))

    def step(self, q: int, byte: int) -> int:
        if not self.built[q]:
            self.build_row(q)
        return int(self.trans[q, byte])

    def walk(self, q: int, data: bytes) -> int:
        for byte in data:
            if q == DEAD:
                break
            q = self.step(q, byte)
        return q

    def free_text(self, q: int) -> bool:
        """Whether every multi-byte UTF-8 character read from ``q`` comes back to ``q``
        (inside a JSON string with no length bound or pattern). Cached per state."""
        hit = self._free.get(q)
        if hit is None:
            hit = self._free[q] = self._all_wide_loop(q)
        return hit

    def _all_wide_loop(self, q: int) -> bool:
        # lead-byte ranges, then the ranges of the continuation bytes, per UTF-8 form
        forms = (
            ((0xC2, 0xDF), ((0x80, 0xBF),)),
            ((0xE0, 0xE0), ((0xA0, 0xBF), (0x80, 0xBF))),
            ((0xE1, 0xEC), ((0x80, 0xBF), (0x80, 0xBF))),
            ((0xED, 0xED), ((0x80, 0x9F), (0x80, 0xBF))),
            ((0xEE, 0xEF), ((0x80, 0xBF), (0x80, 0xBF))),
            ((0xF0, 0xF0), ((0x90, 0xBF), (0x80, 0xBF), (0x80, 0xBF))),
            ((0xF1, 0xF3), ((0x80, 0xBF), (0x80, 0xBF), (0x80, 0xBF))),
            ((0xF4, 0xF4), ((0x80, 0x8F), (0x80, 0xBF), (0x80, 0xBF))),
        )
        for (lo, hi), rest in forms:
            states = {self.step(q, b) for b in range(lo, hi + 1)}
            for clo, chi in rest:
                if DEAD in states:
                    return False
                states = {self.step(m, b) for m in states for b in range(clo, chi + 1)}
            if states != {q}:
                return False
        return True

    def ensure_rows(self, states: np.ndarray) -> None:
        """Build the rows of every state in ``states`` not built yet."""
        todo = np.unique(states[~self.built[states]]).astype(np.int32)
        while todo.size:
            self._reserve(256)  # a row makes at most one state per byte
            done = self._core.build_rows(todo, self.trans, self.built, self.final)
            todo = todo[done:]


def _expansion_loop() -> None:
    """Raised by the core when one closure expands more than :data:`MAX_EXPANSIONS`
    deferred fragments: a loop that reads nothing."""
    raise CompileTimeout("the schema nests without reading input (a $ref loop?)")


class TokenMasks:
    """The vocabulary's text tokens as a trie the compiled core walks (one per vocabulary)."""

    _CACHE: ClassVar[dict[str, TokenMasks]] = {}
    _LOCK: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, vocab: Vocabulary) -> None:
        self.tokens = TokenBytes.of(vocab)
        self.trie = trie_of(self.tokens).labelled(self.tokens.ids)  # walks report token ids
        self.size = vocab.size
        # what a completion's bytes may be spelled with (the tokens `allowed` walks)
        self.spellings = frozenset(self.tokens.raw)
        self.longest = int(self.tokens.lengths.max()) if self.tokens.lengths.size else 1

    @classmethod
    def of(cls, vocab: Vocabulary) -> TokenMasks:
        with cls._LOCK:
            hit = cls._CACHE.get(vocab.fingerprint)
            if hit is None:
                hit = cls._CACHE[vocab.fingerprint] = cls(vocab)
            return hit

    def allowed(self, dfa: LazyDFA, q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(token ids allowed in ``q``, in no particular order; the state each leads to;
        their bool row over the vocabulary when they are many, see
        :class:`grammars.dfa.AllowedRows`). Why unsorted: ordering a hundred thousand
        ids by a scatter over the vocabulary cost as much as the walk that found them,
        and no user of the ids needs an order."""
        return dfa_allowed(self.trie, dfa, q, self.size, ROW_THRESHOLD)


class CompiledLazyDFA(AllowedRows):
    """A lazily built byte automaton bound to one vocabulary (the surface
    :class:`grammars.dfa.DFAMatcher` drives). Safe to share between threads."""

    def __init__(self, dfa: LazyDFA, vocab: Vocabulary, description: str) -> None:
        self.dfa = dfa
        self.vocab = vocab
        self.pattern = description
        self.initial_state = dfa.start
        self._masks = TokenMasks.of(vocab)
        # per-state masks, rows and distances live in the process's bounded state cache
        self._owner = STATE_CACHE.owner()
        # completion bounds per state (kept: states are few, and every matcher of this
        # constraint shares them), the limits known out of reach, and the search graph
        self._bound: dict[int, int] = {}
        self._beyond: dict[int, int] = {}
        self._pruned: dict[int, list[tuple[int, int]]] = {}
        self._unpruned: dict[int, list[tuple[int, int]]] = {}
        self._lock = threading.RLock()
        self._eos_tensor = torch.tensor(sorted(vocab.eos_ids), dtype=torch.long)
        self._single_bytes = np.array(sorted(vocab.token_bytes[i][0] for i in vocab.single_byte_ids))
        self._blank = np.isin(self._single_bytes, list(b" \t\n\r"))
        self._skippable = self._blank | np.isin(self._single_bytes, list(b"[{"))

    def matcher(self) -> DFAMatcher:
        return DFAMatcher(self, (self.initial_state, None, 0, -1))

    def matcher_after(self, prefix: str | bytes) -> DFAMatcher:
        """Completion mode: a matcher that has read ``prefix``. The automaton is over
        bytes, so the prefix is read byte by byte (how it was tokenized cannot matter).
        Raises ``PromptError`` naming where the constraint stops matching."""
        data = prefix.encode() if isinstance(prefix, str) else prefix
        with self._lock:
            q = self.initial_state
            for i, byte in enumerate(data):
                q = self.dfa.step(q, byte)
                if q == DEAD:
                    raise prefix_error("the schema", data, i)
        return DFAMatcher(self, (q, None, 0, -1), data)

    def is_final(self, state: int) -> bool:
        return bool(self.dfa.final[state])

    def forced_bytes(self, state: int, layout: Layout | None = None) -> bytes:
        """Bytes every continuation from ``state`` starts with: the walk while exactly one
        byte leads on (or ``layout`` picks between blanks and one other byte) and the
        text read cannot end: a JSON key once its first letters tell it apart, the
        ``": "`` after it. At most ``_FORCED_BYTES_LIMIT`` bytes."""
        dfa = self.dfa
        out = bytearray()
        prev = layout.last if layout is not None else -1
        with self._lock:
            q = state
            while len(out) < _FORCED_BYTES_LIMIT and not dfa.final[q]:
                if not dfa.built[q]:
                    dfa.build_row(q)
                byte = next_forced_byte(np.flatnonzero(dfa.trans[q]), layout, prev)
                if byte is None:
                    break
                out.append(byte)
                prev = byte
                q = int(dfa.trans[q, byte])
        return bytes(out)

    def next_state(self, state: int, token_id: int) -> int | None:
        if token_id in self.vocab.special_ids or not 0 <= token_id < self.vocab.size:
            return None
        with self._lock:
            q = self.dfa.walk(state, self.vocab.token_bytes[token_id])
        return None if q == DEAD else q

    def _entry(self, state: int) -> tuple[torch.Tensor, np.ndarray, torch.Tensor | None]:
        """(allowed ids, the state each leads to, their bool row if they are many),
        computed in one trie walk and kept in the process's state cache."""
        key = (self._owner, "allowed", state)
        hit = STATE_CACHE.get(key)
        if hit is None:
            with self._lock:
                hit = STATE_CACHE.get(key)
                if hit is None:
                    ids, ends, row = self._masks.allowed(self.dfa, state)
                    size = ids.nbytes + ends.nbytes + (row.nbytes if row is not None else 0)
                    hit = (torch.from_numpy(ids), ends, None if row is None else torch.from_numpy(row))
                    hit = STATE_CACHE.put(key, hit, size)
        return hit

    def allowed_ids(self, state: int) -> torch.Tensor:
        """Text tokens allowed in ``state`` (EOS excluded), in no particular order."""
        return self._entry(state)[0]

    def allowed_row(self, state: int) -> torch.Tensor | None:
        """The bool row of :meth:`allowed_ids` where they are many (made by the walk)."""
        return self._entry(state)[2]

    @property
    def max_distance(self) -> int:
        """Unknown for an automaton not built whole: budget checks always look."""
        return _FAR

    def distance(self, state: int) -> int:
        """Tokens of a known completion from ``state`` to acceptance (``_FAR`` if none is
        found): an upper bound on the shortest one, found once per state and kept.

        Why not one search per state (what this was): a decode reaches a few dozen new
        states per step (one per distinct state its allowed tokens lead to), and a
        search from each re-walks the same hundreds of states to the end of the
        document; 0.2 s a step on the demo schema. Instead, a search stops at the first
        layer where it meets a state whose bound is already known (or an accepting one),
        and every state on the path it found gets its bound: the next states of a decode
        usually meet a known one within a byte or two (closing the string, say).

        The path is a real completion, so the bound is sound, and it is counted in
        tokens: its bytes are spelled with as few vocabulary tokens as possible (any
        spelling of the same bytes reaches the same states). It may exceed the shortest
        completion (the first known state met need not be on the shortest path): where
        that matters, near the end of a budget, :meth:`within` decides exactly.

        Before any search, a depth-first walk (:meth:`_greedy_completion`) usually finds
        a completion in about as many row lookups as it has bytes (the demo schema: 79
        states, bound 26 tokens, as the search's), where the first search of a decode
        visits thousands of states (every branch of the schema
        to the end of the document). The search, when the walk fails, first ignores
        whitespace, and ``[``/``{`` where another byte is possible, since opening
        containers never shortens a completion; in an automaton whose any-JSON values
        nest without end, searching them blows up exponentially.
        """
        hit = self._bound.get(state)
        if hit is None:
            with self._lock:
                hit = self._bound.get(state)
                if hit is None:
                    hit = self._greedy_completion(state)
                    if hit == _FAR:
                        hit = self._first_completion(state, prune=True)
                    if hit == _FAR:
                        hit = self._first_completion(state, prune=False)
                    if hit == _FAR:
                        self._bound[state] = _FAR
        return hit

    def within(self, state: int, limit: int) -> bool:
        """Whether acceptance can be reached from ``state`` in at most ``limit`` tokens,
        as far as the search before these bounds found (never a looser answer).

        That search took, per state, the shortest path over single-byte tokens with
        whitespace and container openings pruned, or without pruning when the pruned one
        found nothing within its visit cap. Here: the known bound first; else a
        breadth-first search over the same pruned graph to depth ``limit``, continued
        past it only to learn whether the pruned graph has a completion at all (if not,
        the unpruned graph is searched to depth ``limit``). Answers are kept per state:
        a "no" for a limit is a "no" for every smaller one.
        """
        if self.distance(state) <= limit:
            return True
        if self._beyond.get(state, -1) >= limit:
            return False
        with self._lock:
            found = self._search(state, limit, prune=True)
            if found is None:  # the pruned graph has no completion within the cap
                found = self._search(state, limit, prune=False, exhaust=False) or False
            if not found:
                self._beyond[state] = max(self._beyond.get(state, -1), limit)
        return found

    def _successors(self, q: int, prune: bool) -> list[tuple[int, int]]:
        """(state, a byte leading there) for each distinct state one single-byte token
        leads to from ``q``, pruned as :meth:`distance` says; cached per state."""
        cache = self._pruned if prune else self._unpruned
        hit = cache.get(q)
        if hit is None:
            if not self.dfa.built[q]:
                self.dfa.build_row(q)
            row = self.dfa.trans[q, self._single_bytes]
            live = row != DEAD
            if prune:
                plain = live & ~self._skippable
                live = plain if plain.any() else live & ~self._blank
            # one byte per state reached: the one a walk to acceptance prefers (any is a
            # real completion's byte; letters also spell in fewer tokens than punctuation)
            first: dict[int, int] = {}
            for r, byte in zip(row[live].tolist(), self._single_bytes[live].tolist(), strict=True):
                if r not in first or _CLOSING[byte] < _CLOSING[first[r]]:
                    first[r] = byte
            hit = cache[q] = sorted(first.items())  # by state, as the search always went
        return hit

    def _greedy_completion(self, state: int) -> int:
        """A depth-first walk from ``state`` to acceptance: at each state the successors
        with a known bound first (smallest first), then by the byte most likely to close
        what is open (``_CLOSING``); no state is entered twice, a dead end backs up.
        Records the path's bounds as :meth:`_first_completion` does; ``_FAR`` after
        ``_GREEDY_VISITS`` states (the breadth-first search then runs)."""
        parent: dict[int, tuple[int, int]] = {state: (-1, 0)}
        frames: list[tuple[int, list[tuple[int, int]]]] = []  # (state, options left, best last)
        q = state
        while True:
            known = 0 if self.dfa.final[q] else self._bound.get(q, _FAR)
            if known < _FAR:
                return self._record(parent, q, known)
            if len(parent) >= _GREEDY_VISITS:
                return _FAR
            ranked = sorted(
                (
                    (0 if self.dfa.final[r] else self._bound.get(r, _FAR), int(_CLOSING[byte]), r, byte)
                    for r, byte in self._successors(q, prune=True)
                    if r not in parent
                ),
                reverse=True,
            )
            frames.append((q, [(r, byte) for _, _, r, byte in ranked]))
            while True:  # the deepest state with an option not entered yet
                if not frames:
                    return _FAR
                at, options = frames[-1]
                while options and options[-1][0] in parent:
                    options.pop()
                if options:
                    break
                frames.pop()
            q, byte = options.pop()
            parent[q] = (at, byte)

    def _first_completion(self, state: int, prune: bool) -> int:
        """Breadth-first from ``state`` to the first layer holding an accepting state or
        one with a known bound; records the path's bounds and returns ``state``'s."""
        parent: dict[int, tuple[int, int]] = {state: (-1, 0)}
        frontier = [state]
        while frontier and len(parent) < _DISTANCE_VISITS:
            best, end = _FAR, -1
            for q in frontier:
                b = 0 if self.dfa.final[q] else self._bound.get(q, _FAR)
                if b < best:
                    best, end = b, q
            if end >= 0:
                return self._record(parent, end, best)
            frontier = self._expand(frontier, parent, prune)
        return _FAR

    def _search(self, state: int, limit: int, prune: bool, exhaust: bool = True) -> bool | None:
        """Whether the graph has a completion from ``state`` of at most ``limit`` bytes
        (found ones are recorded as bounds). With ``exhaust``, a search reaching depth
        ``limit`` goes on until it meets acceptance (False) or gives up (None: no
        completion within the visit cap); without, it stops there (False)."""
        parent: dict[int, tuple[int, int]] = {state: (-1, 0)}
        frontier = [state]
        depth = 0
        while frontier and len(parent) < _DISTANCE_VISITS:
            for q in frontier:
                b = 0 if self.dfa.final[q] else self._bound.get(q, _FAR)
                if depth + b <= limit or (depth > limit and b == 0):
                    self._record(parent, q, b)
                    return depth + b <= limit
            if depth >= limit and not exhaust:
                return False
            frontier = self._expand(frontier, parent, prune)
            depth += 1
        return None

    def _expand(self, frontier: list[int], parent: dict[int, tuple[int, int]], prune: bool) -> list[int]:
        """The next breadth-first layer: successors not seen yet, their parents noted."""
        nxt: list[int] = []
        for q in frontier:
            for r, byte in self._successors(q, prune):
                if r not in parent:
                    parent[r] = (q, byte)
                    nxt.append(r)
        return nxt

    def _record(self, parent: dict[int, tuple[int, int]], end: int, tail: int) -> int:
        """Give each state on the search path to ``end`` (whose bound is ``tail``) the
        bound of that path, its bytes spelled in as few tokens as the vocabulary allows
        (fewest tokens for each suffix, right to left); returns the first state's."""
        states = [end]
        data: list[int] = []
        q = end
        while parent[q][0] >= 0:
            q, byte = parent[q]
            states.append(q)
            data.append(byte)
        states.reverse()
        data.reverse()
        best = fewest_tokens(bytes(data), self._masks.spellings, self._masks.longest, _FAR)
        for q, b in zip(states, best, strict=True):
            if b + tail < self._bound.get(q, _FAR):
                self._bound[q] = b + tail
        return self._bound[states[0]]

    def _next_entry(
        self, state: int
    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, tuple[np.ndarray, np.ndarray], int]:
        """(allowed ids, the bound of the state each leads to, the state each leads to,
        the distinct end states and their bounds, the largest bound), cached per state."""
        key = (self._owner, "distances", state)
        hit = STATE_CACHE.get(key)
        if hit is None:
            ids, ends, _ = self._entry(state)
            unique, inverse = np.unique(ends, return_inverse=True)
            dist = np.array([self.distance(int(q)) for q in unique], dtype=np.int64)
            top = int(dist.max()) if dist.size else 0
            hit = (ids, torch.from_numpy(dist[inverse]), ends, (unique, dist), top)
            hit = STATE_CACHE.put(key, hit, ids.nbytes * 2 + ends.nbytes)
        return hit

    def next_distances(self, state: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(allowed ids, bound of the state each leads to) for ``state`` (cached)."""
        ids, dist, _, _, _ = self._next_entry(state)
        return ids, dist

    def budget_window(self, state: int) -> int:
        """Remaining-token counts at or below which :meth:`too_far` may refuse a token."""
        ids, _, _, _, top = self._next_entry(state)
        return top + 1 if ids.numel() else 0

    def too_far_state(self, state: int, remaining: int) -> bool:
        """Whether acceptance from ``state`` (reached by a token) needs more than
        ``remaining - 1`` tokens: :meth:`too_far`'s test for one token, which searches
        from that one state only (the cheap path of a decode: most steps are far from
        the end of their budget and the token chosen passes)."""
        return not self.within(state, remaining - 1)

    def too_far(self, state: int, remaining: int) -> torch.Tensor:
        """The allowed tokens after which acceptance needs more than ``remaining - 1``
        tokens. O(1) while every end state's known bound fits (most steps); otherwise
        only the end states whose bound does not fit are searched (:meth:`within`)."""
        ids, _, ends, (unique, dist), top = self._next_entry(state)
        limit = remaining - 1
        if top <= limit:
            return ids[:0]
        far = [q for q in unique[dist > limit].tolist() if not self.within(q, limit)]
        if not far:
            return ids[:0]
        return ids[torch.from_numpy(np.isin(ends, far))]
