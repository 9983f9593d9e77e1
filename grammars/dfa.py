"""Regular constraints as a token-level DFA, indexed by outlines-core.

outlines-core turns a regex and a vocabulary into an ``Index``: for every DFA state,
the map token → next state (built once, in Rust). We wrap it in our own Matcher so that
state is a plain int, history is a persistent linked list (``fork`` is O(1),
``rollback`` walks back), EOS follows the seam's rule, and per-state masks are cached as
index tensors so ``fill_mask`` is one vectorised scatter instead of a Python loop.

Indexes are cached in memory and on disk (``$STENCIL_CACHE/index``) by
(regex, vocabulary fingerprint): large JSON Schemas take seconds to index.

An end sentinel works around an outlines-core bug (0.2.10–0.2.14): its DFA reports
matches one byte late, and the index drops every token that leaves an accepting
state into a non-accepting one (``a(xb)?`` loses ``a → ax``; the number ``0`` cannot be
continued by ``.5``). We index ``(?:P)`` followed by a private-use character that no
output ever contains, through a pseudo-token beyond the vocabulary: matches then only
end after the sentinel, no mid-text transition is dropped, and a state accepts exactly
when the sentinel leads from it to an index-final state. Real tokens containing the
sentinel's lead byte (0xF4: only plane-16 private-use characters) are left out of the
index, so no output can contain them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import outlines_core
import torch

from grammars.state_cache import STATE_CACHE
from plugin.errors import ConstraintViolation, RegexError, prefix_error
from plugin.matcher import Layout, Matcher
from plugin.paths import cache_dir
from plugin.vocabulary import Vocabulary

log = logging.getLogger(__name__)

_FINISHED = -1  # pseudo-state after EOS
_SENTINEL = "\U0010fffd"  # a private-use character that ends every indexed pattern
_SENTINEL_LEAD = 0xF4
_MAX_FORCED = 256
ROW_THRESHOLD = 512  # states allowing at least this many tokens get a cached bool row


class AllowedRows:
    """Cached bool rows of a compiled automaton's allowed tokens (mixed into both
    routes; needs ``vocab``, ``allowed_ids`` and ``_owner``, its key in
    :data:`grammars.state_cache.STATE_CACHE`)."""

    vocab: Vocabulary
    _owner: int

    def forced_bytes(self, state: int, layout: Layout | None = None) -> bytes:
        """Bytes every continuation from ``state`` starts with, as
        :meth:`plugin.matcher.Matcher.forced_bytes` (``b""``: unknown here; automata over
        bytes say more)."""
        return b""

    def allowed_ids(self, state: int) -> torch.Tensor:
        raise NotImplementedError

    def allowed_row(self, state: int) -> torch.Tensor | None:
        """A cached bool row of the allowed text tokens, for states that allow many.

        OR-ing a row costs a few µs where scattering tens of thousands of ids costs tens;
        small states keep the scatter. Rows share the process's state cache.
        """
        key = (self._owner, "row", state)
        row = STATE_CACHE.get(key)
        if row is not None:
            return row
        ids = self.allowed_ids(state)
        if ids.numel() < ROW_THRESHOLD:
            return None
        row = torch.zeros(self.vocab.size, dtype=torch.bool)
        row[ids] = True
        return STATE_CACHE.put(key, row, row.numel())


class CompiledDFA(AllowedRows):
    """An outlines-core index bound to one :class:`Vocabulary`; immutable, shareable."""

    def __init__(
        self, pattern: str, vocab: Vocabulary, index: Any, distance: dict[int, int] | None = None
    ) -> None:
        self.pattern = pattern
        self.vocab = vocab
        self._index = index
        self.initial_state: int = index.get_initial_state()
        self._index_finals: frozenset[int] = frozenset(index.get_final_states())
        self._sentinel_id = vocab.size  # the pseudo-token spelling _SENTINEL
        self._final: dict[int, bool] = {}
        self._allowed: dict[int, torch.Tensor] = {}
        self._lock = threading.Lock()
        self._eos_tensor = torch.tensor(sorted(vocab.eos_ids), dtype=torch.long)
        self._owner = STATE_CACHE.owner()
        self._distance: dict[int, int] | None = distance
        self._max_distance = max(distance.values(), default=0) if distance else 0
        self._text = _text_token_filter(vocab)
        self._next_distance: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def matcher(self) -> DFAMatcher:
        return DFAMatcher(self, (self.initial_state, None, 0, -1))

    def matcher_after(self, prefix: str | bytes) -> DFAMatcher:
        """Completion mode: a matcher that has read ``prefix`` (a document's text before
        the cursor). The index only knows token transitions, so the prefix is spelled
        with the vocabulary's tokens; the automaton is deterministic over bytes, so every
        spelling reaching a byte offset reaches the same state and a walk over offsets
        suffices. Raises ``PromptError`` naming where the pattern stops matching."""
        data = prefix.encode() if isinstance(prefix, str) else prefix
        spellings = self.vocab.text_tokens()
        longest = max(map(len, spellings))
        states: dict[int, int] = {0: self.initial_state}
        for i in range(len(data) + 1):  # offsets in increasing order: each is final when reached
            state = states.get(i)
            if state is None:
                continue
            if i == len(data):
                return DFAMatcher(self, (state, None, 0, -1), data)
            for end in range(i + 1, min(i + longest, len(data)) + 1):
                if end in states:
                    continue
                for token in spellings.get(data[i:end], ()):
                    found = self.next_state(state, token)
                    if found is not None:
                        states[end] = found
                        break
        raise prefix_error("the pattern", data, max(states))

    @property
    def index(self) -> Any:
        """The underlying outlines-core ``Index`` (for benchmarks against its ``Guide``)."""
        return self._index

    @property
    def max_distance(self) -> int:
        """The largest finite distance bound over all states."""
        self.distances()
        return self._max_distance

    def is_final(self, state: int) -> bool:
        """Whether the text that led to ``state`` matches the whole pattern."""
        hit = self._final.get(state)
        if hit is None:
            hit = self._index.get_next_state(state, self._sentinel_id) in self._index_finals
            self._final[state] = hit
        return hit

    def next_state(self, state: int, token_id: int) -> int | None:
        """The state after ``token_id`` (a text token), or None when it is not allowed."""
        if token_id in self.vocab.special_ids or not 0 <= token_id < self.vocab.size:
            return None
        return self._index.get_next_state(state, token_id)

    def allowed_ids(self, state: int) -> torch.Tensor:
        """Text tokens allowed in ``state`` (EOS excluded), as a cached long tensor."""
        ids = self._allowed.get(state)
        if ids is None:
            raw = torch.tensor(self._index.get_allowed_tokens(state) or [], dtype=torch.long)
            raw = raw[raw < self.vocab.size]  # drop the sentinel pseudo-token
            ids = raw[self._text[raw]].sort().values if raw.numel() else raw
            with self._lock:
                self._allowed[state] = ids
        return ids

    def distances(self) -> dict[int, int]:
        """Upper bound, per state, on the tokens needed to reach acceptance.

        Computed once when the constraint is compiled (and stored in the disk cache), over
        single-byte tokens only: any path they spell is a real token path, so the bound
        is sound, and the search costs at most 256 lookups per state instead of the full
        transition table (millions of entries for a mid-size schema).
        """
        if self._distance is not None:
            return self._distance
        byte_tokens = self.vocab.single_byte_ids
        reverse: dict[int, set[int]] = {}
        seen = {self.initial_state}
        frontier = [self.initial_state]
        while frontier:
            nxt_frontier = []
            for state in frontier:
                for tok in byte_tokens:
                    nxt = self._index.get_next_state(state, tok)
                    if nxt is None:
                        continue
                    reverse.setdefault(nxt, set()).add(state)
                    if nxt not in seen:
                        seen.add(nxt)
                        nxt_frontier.append(nxt)
            frontier = nxt_frontier
        distance = {s: 0 for s in seen if self.is_final(s)}
        frontier = list(distance)
        while frontier:
            nxt_frontier = []
            for state in frontier:
                for prev in reverse.get(state, ()):
                    if prev not in distance:
                        distance[prev] = distance[state] + 1
                        nxt_frontier.append(prev)
            frontier = nxt_frontier
        with self._lock:
            self._distance = distance
            self._max_distance = max(distance.values(), default=0)
        return distance

    def next_distances(self, state: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(allowed ids, distance bound of the state each leads to) for ``state``."""
        hit = self._next_distance.get(state)
        if hit is None:
            distance = self.distances()
            ids = self.allowed_ids(state)
            far = 1 << 30
            dist = torch.tensor(
                [distance.get(self._index.get_next_state(state, int(t)), far) for t in ids.tolist()],
                dtype=torch.long,
            )
            hit = (ids, dist)
            with self._lock:
                self._next_distance[state] = hit
        return hit

    def budget_window(self, state: int) -> int:
        """Remaining-token counts at or below which :meth:`too_far` may refuse a token."""
        _, dist = self.next_distances(state)
        return int(dist.max()) + 1 if dist.numel() else 0

    def too_far_state(self, state: int, remaining: int) -> bool:
        """Whether acceptance from ``state`` (reached by a token) needs more than
        ``remaining - 1`` tokens: :meth:`too_far`'s test for one token."""
        return self.distances().get(state, 1 << 30) > remaining - 1

    def too_far(self, state: int, remaining: int) -> torch.Tensor:
        """The allowed tokens after which acceptance needs more than ``remaining - 1``
        tokens, by the single-byte bounds :meth:`distances` computed for the whole index."""
        ids, dist = self.next_distances(state)
        return ids[dist > remaining - 1]


# A history node: (state, parent node, depth). Shared between forks, never mutated.
_Node = tuple[int, Any, int, int]  # (state, parent node, tokens advanced, token)


class DFAMatcher(Matcher):
    """Per-sequence state over a :class:`CompiledDFA`."""

    __slots__ = ("_dfa", "_node", "_prefix", "vocab")

    def __init__(self, dfa: CompiledDFA, node: _Node, prefix: bytes = b"") -> None:
        self._dfa = dfa
        self._node = node
        self._prefix = prefix  # what matcher_after read before the first token
        self.vocab = dfa.vocab

    def text(self) -> bytes:
        """The prefix and the bytes of the tokens advanced since (EOS excluded)."""
        tokens: list[int] = []
        node = self._node
        while node[1] is not None:
            if node[0] != _FINISHED:
                tokens.append(node[3])
            node = node[1]
        return self._prefix + self.vocab.decode(tokens[::-1])

    @property
    def state(self) -> int:
        return self._node[0]

    @property
    def num_advanced(self) -> int:
        return self._node[2]

    def accepts(self, token_id: int) -> bool:
        state = self._node[0]
        if state == _FINISHED:
            return False
        if token_id in self.vocab.eos_ids:
            return self._dfa.is_final(state)
        return self._dfa.next_state(state, token_id) is not None

    def advance(self, token_id: int) -> None:
        state, _, depth, _ = self._node
        if state == _FINISHED:
            raise ConstraintViolation(f"token {token_id} advanced after end of sequence")
        if token_id in self.vocab.eos_ids:
            if not self._dfa.is_final(state):
                raise ConstraintViolation("EOS advanced before the constraint accepts")
            nxt = _FINISHED
        else:
            found = self._dfa.next_state(state, token_id)
            if found is None:
                raise ConstraintViolation(
                    f"token {token_id} ({self.vocab.token_bytes[token_id]!r}) is not allowed here"
                )
            nxt = found
        self._node = (nxt, self._node, depth + 1, token_id)

    def fill_mask(self, mask: torch.Tensor) -> None:
        state = self._node[0]
        if state == _FINISHED:
            return
        row = self._dfa.allowed_row(state)
        if row is not None:
            mask[: row.numel()] |= row.to(mask.device, non_blocking=True)
        else:
            mask[self._dfa.allowed_ids(state).to(mask.device)] = True
        if self._dfa.is_final(state):
            mask[self._dfa._eos_tensor.to(mask.device)] = True

    def budget_window(self) -> int:
        # restrict_to_budget clears nothing while every successor can finish in time
        state = self._node[0]
        if state == _FINISHED:
            return 0
        return self._dfa.budget_window(state)

    def restrict_to_budget(self, mask: torch.Tensor, remaining: int) -> bool:
        state = self._node[0]
        if state == _FINISHED:
            return False
        dfa = self._dfa
        if remaining - 1 >= dfa.max_distance:
            return False  # every state reachable within the budget can still finish
        too_far = dfa.too_far(state, remaining)
        if too_far.numel() == 0:
            return False
        if too_far.numel() == dfa.allowed_ids(state).numel() and not dfa.is_final(state):
            return False  # the budget cannot be met at all: leave the choice to the model
        mask[too_far.to(mask.device)] = False
        return True

    def budget_refuses(self, token_id: int, remaining: int) -> bool:
        state = self._node[0]
        if state == _FINISHED or token_id in self.vocab.eos_ids:
            return False
        nxt = self._dfa.next_state(state, token_id)
        return nxt is not None and self._dfa.too_far_state(nxt, remaining)

    def forced_bytes(self, layout: Layout | None = None) -> bytes:
        state = self._node[0]
        return b"" if state == _FINISHED else self._dfa.forced_bytes(state, layout)

    def forced_tokens(self) -> list[int]:
        out: list[int] = []
        state = self._node[0]
        while state != _FINISHED and not self._dfa.is_final(state) and len(out) < _MAX_FORCED:
            ids = self._dfa.allowed_ids(state)
            if ids.numel() != 1:
                break
            tok = int(ids[0])
            out.append(tok)
            nxt = self._dfa.next_state(state, tok)
            assert nxt is not None
            state = nxt
        return out

    def fork(self) -> DFAMatcher:
        return DFAMatcher(self._dfa, self._node, self._prefix)

    def rollback(self, n: int) -> None:
        if n < 0 or n > self._node[2]:
            raise ValueError(f"cannot roll back {n} tokens; {self._node[2]} were advanced")
        node = self._node
        for _ in range(n):
            node = node[1]
        self._node = node

    def is_accepting(self) -> bool:
        state = self._node[0]
        return state == _FINISHED or self._dfa.is_final(state)

    def is_finished(self) -> bool:
        state = self._node[0]
        if state == _FINISHED:
            return True
        return self._dfa.is_final(state) and self._dfa.allowed_ids(state).numel() == 0


# --- compilation and caching -------------------------------------------------------

_TEXT_FILTERS: dict[str, torch.Tensor] = {}


def _text_token_filter(vocab: Vocabulary) -> torch.Tensor:
    """Bool tensor: True for ids that are text tokens (not special, not EOS)."""
    hit = _TEXT_FILTERS.get(vocab.fingerprint)
    if hit is None:
        hit = torch.ones(vocab.size, dtype=torch.bool)
        hit[sorted(vocab.special_ids | vocab.eos_ids)] = False
        _TEXT_FILTERS[vocab.fingerprint] = hit
    return hit


_MEMORY: OrderedDict[tuple[str, str], CompiledDFA] = OrderedDict()
_MEMORY_CAP = 64
_OC_VOCABS: dict[str, Any] = {}
_COMPILE_LOCK = threading.Lock()


def _outlines_vocabulary(vocab: Vocabulary) -> Any:
    oc_vocab = _OC_VOCABS.get(vocab.fingerprint)
    if oc_vocab is None:
        # No real token may spell any part of the sentinel, or a partial sentinel could be
        # generated at an accepting state. Its lead byte 0xF4 only starts characters of
        # plane 16 (private use), so those are the only texts this costs.
        tokens = {b: ids for b, ids in vocab.text_tokens().items() if _SENTINEL_LEAD not in b}
        tokens[_SENTINEL.encode()] = [vocab.size]
        oc_vocab = outlines_core.Vocabulary(min(vocab.eos_ids), tokens)
        _OC_VOCABS[vocab.fingerprint] = oc_vocab
    return oc_vocab


def _disk_path(key: str) -> Path:
    return cache_dir() / "index" / f"{key}.bin"


def compile_dfa(pattern: str, vocab: Vocabulary) -> CompiledDFA:
    """Index ``pattern`` (Rust regex syntax, anchored at both ends) over ``vocab``."""
    mem_key = (pattern, vocab.fingerprint)
    with _COMPILE_LOCK:
        hit = _MEMORY.get(mem_key)
        if hit is not None:
            _MEMORY.move_to_end(mem_key)
            return hit
    key = hashlib.sha256(f"v4\0{vocab.fingerprint}\0{pattern}".encode())
    path = _disk_path(key.hexdigest()[:40])
    entry = None
    if path.exists():
        try:
            entry = pickle.loads(path.read_bytes())
            compiled = CompiledDFA(pattern, vocab, entry["index"], entry["distance"])
        except Exception as exc:  # a stale or truncated cache entry: rebuild it
            log.warning("ignoring unreadable index cache %s: %s", path, exc)
            entry = None
    if entry is None:
        try:
            index = outlines_core.Index(f"(?:{pattern}){_SENTINEL}", _outlines_vocabulary(vocab))
        except Exception as exc:  # outlines-core reports regex errors as ValueError
            if "incompatible with the regex" in str(exc):
                raise RegexError(
                    f"regex {_short(pattern)} matches no text this vocabulary can spell "
                    "(empty language, or characters the vocabulary lacks)"
                ) from None
            raise RegexError(f"cannot compile regex {_short(pattern)}: {exc}") from None
        compiled = CompiledDFA(pattern, vocab, index)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(pickle.dumps({"index": index, "distance": compiled.distances()}))
            tmp.replace(path)
        except OSError as exc:
            log.warning("could not write index cache %s: %s", path, exc)
    start = compiled.initial_state
    if not compiled.is_final(start) and compiled.allowed_ids(start).numel() == 0:
        raise RegexError(
            f"regex {_short(pattern)} matches no text this vocabulary can spell (empty language)"
        )
    with _COMPILE_LOCK:
        _MEMORY[mem_key] = compiled
        while len(_MEMORY) > _MEMORY_CAP:
            _MEMORY.popitem(last=False)
    return compiled


def _short(pattern: str, limit: int = 80) -> str:
    return repr(pattern if len(pattern) <= limit else pattern[:limit] + "…")
