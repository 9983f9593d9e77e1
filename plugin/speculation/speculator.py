"""Assembling one draft per target forward, and counting what the target kept.

A draft is built in the order of :data:`plugin.speculation.config.DRAFTERS`: the tokens
the constraint forces (certain to be accepted), then a copy from the context (context
lookup); when nothing matches, a draft model's greedy chain; then, with the room left,
a Token Recycling tree beside that chain (its first levels branch, so a wrong copy
still leaves likely alternatives scored in the same forward). The whole draft is then
cut by the constraint: a node the matcher refuses (or an end-of-sequence id) goes with
everything under it, so the target never scores a token the constraint could not emit.

Adaptive stopping (SpecDec++'s rule, train-free): each drafter's acceptance rate ``a``
is tracked per drafted position; a chain stops at the depth where the predicted chance
of a rejection so far, ``1 - a**depth``, passes ``stop_threshold``. A draft model's
chain stops where ``1 - prod(confidence)`` passes it.

A drafter that raises is switched off for the rest of the generation; the output is
unchanged (a draft only decides how many positions one forward scores) and ``stats``
names the failure.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Any

import torch

from plugin.matcher import Matcher
from plugin.speculation.config import SpeculativeConfig
from plugin.speculation.draft_model import DraftModel
from plugin.speculation.lookup import ContextLookup
from plugin.speculation.recycling import TokenRecycling
from plugin.speculation.tree import DraftTree

PRIOR_ACCEPTANCE = (3.0, 1.0)  # pseudo-counts (accepted, rejected) a drafter starts with
DECAY = 0.98  # old verdicts fade, so the rate follows the output's current stretch

_RECYCLING: weakref.WeakKeyDictionary[Any, TokenRecycling] = weakref.WeakKeyDictionary()


def recycling_for(model: Any, vocab_size: int) -> TokenRecycling:
    """The process-wide Token Recycling matrix of ``model`` (kept across generations)."""
    found = _RECYCLING.get(model)
    if found is None or found.table.shape[0] != vocab_size:
        found = _RECYCLING[model] = TokenRecycling(vocab_size)
    return found


class Speculator:
    """The drafters of one generation and their counters."""

    def __init__(
        self, config: SpeculativeConfig, model: Any, vocab_size: int, stop_ids: frozenset[int]
    ) -> None:
        self.config = config
        self.stop_ids = stop_ids
        self.enabled = list(config.drafters)
        self.lookup = ContextLookup(config.ngram, config.lookup_ids) if "lookup" in self.enabled else None
        self.recycling = recycling_for(model, vocab_size) if "recycling" in self.enabled else None
        self.draft_model = DraftModel(config.draft_model) if "draft_model" in self.enabled else None
        self.verdicts = {name: list(PRIOR_ACCEPTANCE) for name in self.enabled}
        self.drafted = dict.fromkeys(self.enabled, 0)
        self.accepted = dict.fromkeys(self.enabled, 0)
        self.failures: dict[str, str] = {}
        self.forwards = 0
        self.scored = 0

    # ----------------------------------------------------------------- drafting
    def draft(self, context: Sequence[int], matcher: Matcher | None, remaining: int) -> DraftTree:
        """A draft of at most ``min(max_draft, remaining)`` nodes after ``context``
        (which ends with the tokens about to be fed), every node allowed by ``matcher``."""
        limit = min(self.config.max_draft, remaining)
        tree = DraftTree()
        if limit <= 0:
            return tree
        if "constraint" in self.enabled and matcher is not None:
            self._guarded("constraint", lambda: self._forced(matcher, tree, limit))
        chain = [*context, *tree.tokens]
        tip = tree.tip()
        for name in ("lookup", "draft_model"):
            if name in self.enabled and limit > len(tree) and tree.tip() == tip:
                self._guarded(name, lambda name=name: self._propose(name, chain, tree, limit - len(tree)))
        if "recycling" in self.enabled and limit > len(tree):
            # alternatives beside the copied chain: the first levels branch
            self._guarded("recycling", lambda: self._recycle(chain[-1], tree, tip, limit - len(tree)))
        return self._cut(tree, matcher)

    def _forced(self, matcher: Matcher, tree: DraftTree, limit: int) -> None:
        fork = matcher.fork()
        for token in fork.forced_tokens()[:limit]:
            if token in self.stop_ids:
                break
            fork.advance(token)
            tree.add(token, tree.tip(), "constraint")

    def _propose(self, name: str, chain: list[int], tree: DraftTree, room: int) -> None:
        if name == "lookup":
            assert self.lookup is not None
            for token in self.lookup.propose(chain, self._depth(name, room)):
                tree.add(token, tree.tip(), name)
        elif name == "draft_model":
            assert self.draft_model is not None
            tokens, confidence = self.draft_model.propose(chain, room)
            reach = 1.0
            for token, p in zip(tokens, confidence, strict=True):
                if len(tree) and tree.sources[-1] == name and 1 - reach * p > self.config.stop_threshold:
                    break
                reach *= p
                tree.add(token, tree.tip(), name)

    def _recycle(self, last: int, tree: DraftTree, tip: int, room: int) -> None:
        assert self.recycling is not None
        width = self.config.tree_width
        self.recycling.propose(last, min(room, self._depth("recycling", room) * width), width, tree, tip)

    def _depth(self, name: str, room: int) -> int:
        """The deepest draft position whose predicted chance of being reached (every
        position before it accepted) stays above ``1 - stop_threshold``."""
        accepted, rejected = self.verdicts[name]
        rate = accepted / (accepted + rejected)
        if rate >= 1.0 or self.config.stop_threshold >= 1.0:
            return room
        if rate <= 0.0:
            return 1
        depth = math.floor(math.log(1 - self.config.stop_threshold) / math.log(rate))
        return max(1, min(room, depth))

    def _cut(self, tree: DraftTree, matcher: Matcher | None) -> DraftTree:
        """The nodes of ``tree`` the constraint allows, each with its whole ancestry."""
        kept = DraftTree()
        where: dict[int, int] = {-1: -1}
        states: dict[int, Matcher | None] = {-1: matcher}
        for i, (token, parent) in enumerate(zip(tree.tokens, tree.parents, strict=True)):
            if parent not in where or token in self.stop_ids:
                continue
            state = states[parent]
            if state is not None:
                if not state.accepts(token):
                    continue
                state = state.fork()
                state.advance(token)
            where[i] = kept.add(token, where[parent], tree.sources[i])
            states[i] = state
        return kept

    def _guarded(self, name: str, action: Any) -> None:
        if name not in self.enabled:
            return
        try:
            action()
        except Exception as exc:  # a drafter must never change the output
            self.enabled.remove(name)
            self.failures[name] = f"{type(exc).__name__}: {exc}"

    # ----------------------------------------------------------------- feedback
    def observe(self, tree: DraftTree, path: list[int], fed: list[int], rows: torch.Tensor) -> None:
        """Count one verification: ``path`` are the accepted nodes; the children of its
        last node (or of the root) that the target did not pick were rejected. ``rows``
        are the target's logits after the last ``len(rows)`` tokens of ``fed``."""
        self.forwards += 1
        self.scored += len(tree)
        for node in path:
            self._verdict(tree.sources[node], accepted=True)
        tip = path[-1] if path else -1
        rejected = {tree.sources[i] for i, p in enumerate(tree.parents) if p == tip}
        for name in rejected:
            self._verdict(name, accepted=False)
        for i, name in enumerate(tree.sources):
            self.drafted[name] = self.drafted.get(name, 0) + 1
            if i in path:
                self.accepted[name] = self.accepted.get(name, 0) + 1
        if self.recycling is not None and "recycling" in self.enabled:
            tail = fed[len(fed) - len(rows) :]
            self._guarded("recycling", lambda: self.recycling.observe(tail, rows))  # type: ignore[union-attr]

    def _verdict(self, name: str, *, accepted: bool) -> None:
        if name not in self.verdicts:
            return
        counts = self.verdicts[name]
        counts[0] = counts[0] * DECAY + accepted
        counts[1] = counts[1] * DECAY + (not accepted)

    def stats(self, tokens: int) -> dict[str, Any]:
        drafted = sum(self.drafted.values())
        accepted = sum(self.accepted.values())
        return {
            "drafters": list(self.config.drafters),
            "target_forwards": self.forwards,
            "drafted_tokens": drafted,
            "accepted_tokens": accepted,
            "acceptance_rate": accepted / drafted if drafted else 0.0,
            "tokens_per_forward": tokens / self.forwards if self.forwards else 0.0,
            "scored_per_forward": self.scored / self.forwards if self.forwards else 0.0,
            "per_drafter": {
                name: {"drafted": self.drafted[name], "accepted": self.accepted[name]}
                for name in self.drafted
            },
            "drafter_failures": dict(self.failures),
        }
