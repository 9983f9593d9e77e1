"""Assembling one draft per target forward, and counting what the target kept.

A draft is built in the order of :data:`plugin.speculation.config.DRAFTERS`: the tokens
the constraint forces (certain to be accepted) and the tokenizer's spelling of the text
it forces (a JSON key once its first letters tell it apart: many token sequences spell
it, the model nearly always writes the tokenizer's own), then a copy from the context
(context lookup); when nothing matches, a draft model's greedy chain or the target's own
with layers skipped (SWIFT, :mod:`.layer_skip`). The chain goes on
in rounds, the constraint's text after each copy (a copied value, then the forced key
that follows it, then the next copy), while the predicted reach allows. Then, with the
room left, a Token Recycling tree beside the chain's first part (its first levels
branch, so a wrong copy still leaves likely alternatives scored in the same forward);
a draft still smaller than ``CHEAP_NODES`` takes recycled candidates of lower reach
too, because the first few drafted tokens cost little.
The whole draft is then cut by the constraint: a node the matcher refuses (or an
end-of-sequence id) goes with everything under it, so the target never scores a token
the constraint could not emit.

Adaptive stopping (SpecDec++'s rule with a counted, not trained, predictor): every node
has a predicted chance of being the target's choice once its parent is reached, counted
per drafter and feature (context lookup: how many tokens agree before the copy, and
depth; Token Recycling: depth and candidate rank; a draft model: its own probability;
spelled forced text: one rate), kept per model for the process.
A node's chance of being reached is the product along its path, and drafting stops
where that falls below ``1 - stop_threshold``: on two CPU cores a forward over 3 tokens costs about 1.3
forwards over one and over 4 about 1.6 (``bench/forward_cost.py``), so a node is worth
scoring only while it is likely enough to be kept.

A drafter that raises is switched off for the rest of the generation; the output is
unchanged (a draft only decides how many positions one forward scores) and ``stats``
names the failure.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch

from plugin.matcher import Layout, Matcher
from plugin.speculation.config import SpeculativeConfig
from plugin.speculation.draft_model import DraftModel, Pick, greedy
from plugin.speculation.forward_cost import ForwardCost, fit_to_cost, forward_cost, node_reaches
from plugin.speculation.layer_skip import CacheView, LayerSkip
from plugin.speculation.lookup import ContextLookup
from plugin.speculation.recycling import TokenRecycling, depth_bucket
from plugin.speculation.tree import DraftTree

PRIOR_ACCEPTANCE = (2.0, 1.0)  # pseudo-counts (accepted, rejected) a feature starts with
DECAY = 0.98  # old verdicts fade, so the rate follows the output's current stretch
ROUNDS = 4  # constraint-then-copy rounds one chain may take
# A forward over 1-3 drafted tokens besides the decided one costs 1.15-1.6 forwards over
# one (bench/forward_cost.py); deeper ones cost more each. So a draft smaller than
# CHEAP_NODES is filled with the best recycled candidates down to a reach of CHEAP_FLOOR
# (below the usual floor): a candidate kept one time in eight already pays for itself.
CHEAP_NODES = 3
CHEAP_FLOOR = 0.12
SPELLED = ("spelled",)  # the feature of a token spelling forced text (not certain: counted)
PRIOR_SPELLED = (8.0, 1.0)  # the tokenizer's own spelling is nearly always what the model writes
PICK_CANDIDATES = 8  # a model drafter's best tokens tried, in order, against the constraint

Spelling = Callable[[bytes], list[int]]


def tokenizer_spelling(tokenizer: Any) -> Spelling:
    """How ``tokenizer`` itself spells a piece of text (given as UTF-8 bytes; a broken
    last character is left out): the spelling a model trained on its output prefers."""

    def spell(data: bytes) -> list[int]:
        text = data.decode("utf-8", errors="ignore")
        return list(tokenizer(text, add_special_tokens=False).input_ids) if text else []

    return spell


Verdicts = dict[tuple[str, tuple[int, ...]], list[float]]

_RECYCLING: weakref.WeakKeyDictionary[Any, TokenRecycling] = weakref.WeakKeyDictionary()
_VERDICTS: weakref.WeakKeyDictionary[Any, Verdicts] = weakref.WeakKeyDictionary()


def recycling_for(model: Any, vocab_size: int) -> TokenRecycling:
    """The process-wide Token Recycling matrix of ``model`` (kept across generations)."""
    found = _RECYCLING.get(model)
    if found is None or found.table.shape[0] != vocab_size:
        found = _RECYCLING[model] = TokenRecycling(vocab_size)
    return found


def verdicts_for(model: Any) -> Verdicts:
    """The process-wide acceptance counters of ``model`` (drafter and feature → decayed
    accepted and rejected counts). Kept across generations, as the recycling table is:
    a generation of 30 tokens would otherwise spend most of its forwards relearning,
    from the priors, that deep recycled candidates are rarely kept."""
    found = _VERDICTS.get(model)
    if found is None:
        found = _VERDICTS[model] = {}
    return found


def agreement_bucket(tokens: int) -> int:
    """The context lookup's feature: how many tokens agree before the copy (1, 2, 3,
    4-7, 8-15, 16 or more), counted apart because longer agreement is kept more often."""
    return tokens if tokens <= 3 else 4 if tokens < 8 else 8 if tokens < 16 else 16


class Speculator:
    """The drafters of one generation and their counters."""

    def __init__(
        self,
        config: SpeculativeConfig,
        model: Any,
        vocab_size: int,
        stop_ids: frozenset[int],
        prompt_ids: Sequence[int],
        spell: Spelling | None = None,
        view: CacheView | None = None,
    ) -> None:
        """``view`` gives the decode loop's KV cache and its length (the ``layer_skip``
        drafter reads the accepted context's keys and values from it)."""
        self.config = config
        self.spell = spell
        self.layout = Layout()  # how the output lays out blanks, for forced-text guesses
        self._read = 0  # output tokens the layout has read
        self.prompt_ids = list(prompt_ids)
        self._given = 0  # output tokens the context lookup has been fed
        self.stop_ids = stop_ids
        self.enabled = list(config.drafters)
        self.lookup = ContextLookup(config.ngram, config.lookup_ids) if "lookup" in self.enabled else None
        if self.lookup is not None:
            self.lookup.add(self.prompt_ids)
        self.recycling = recycling_for(model, vocab_size) if "recycling" in self.enabled else None
        self.draft_model = DraftModel(config.draft_model) if "draft_model" in self.enabled else None
        self.layer_skip = None
        if "layer_skip" in self.enabled:
            if view is None:
                raise ValueError("the layer_skip drafter needs the decode loop's cache view")
            self.layer_skip = LayerSkip(model, view, config.skip_layers)
        self.verdicts = verdicts_for(model)
        self.drafted = dict.fromkeys(self.enabled, 0)
        self.accepted = dict.fromkeys(self.enabled, 0)
        self.failures: dict[str, str] = {}
        self.cost: ForwardCost | None = None
        if config.fit_cost:
            try:
                self.cost = forward_cost(model)
            except Exception as exc:  # drafts go unfitted; the output never depends on it
                self.failures["fit_cost"] = f"{type(exc).__name__}: {exc}"
        self.forwards = 0
        self.scored = 0

    # ----------------------------------------------------------------- drafting
    def draft(
        self,
        out: Sequence[int],
        matcher: Matcher | None,
        remaining: int,
        ends: Callable[[list[int]], bool] | None = None,
    ) -> DraftTree:
        """A draft of at most ``min(max_draft, remaining)`` nodes after the prompt and
        ``out`` (the output so far, ending with the tokens about to be fed; it only
        grows), every node allowed by ``matcher``; with ``ends`` (given the tokens
        drafted after ``out``, True where the generation would end), nothing is drafted
        after a node that ends it."""
        if self.lookup is not None:
            self.lookup.add(out[self._given :])
            self._given = len(out)
        if matcher is not None and self.spell is not None:
            token_bytes = matcher.vocab.token_bytes
            self.layout.read(b"".join(token_bytes[t] for t in out[self._read :]))
            self._read = len(out)
        limit = min(self.config.max_draft, remaining)
        tree = DraftTree()
        if limit <= 0:
            return tree
        probe = matcher.fork() if matcher is not None else None
        reach = 1.0  # predicted chance that the chain's end is reached
        tip = -1  # where recycling branches: after the first round's constraint part
        for round_ in range(ROUNDS):
            before = len(tree)
            if "constraint" in self.enabled and probe is not None:
                reach = self._guarded(
                    "constraint", lambda r=reach: self._forced(probe, tree, limit, r), reach
                )
            if round_ == 0:
                tip = tree.tip()
            copied = len(tree)
            for name in ("lookup", "draft_model", "layer_skip"):
                if name in self.enabled and limit > len(tree) and len(tree) == copied:
                    reach = self._guarded(
                        name,
                        lambda name=name, r=reach: self._propose(name, out, tree, limit, r, probe),
                        reach,
                    )
            if probe is not None and not self._follow(probe, tree, copied):
                break  # the copy left the constraint's language: no next round after it
            if len(tree) in (copied, before) or len(tree) >= limit:
                break
        if "recycling" in self.enabled and limit > len(tree):
            # alternatives beside the chain, best first
            last = tree.tokens[tip] if tip >= 0 else out[-1]
            floor = 1 - self.config.stop_threshold
            self._guarded("recycling", lambda: self._recycle(last, tree, tip, limit - len(tree), floor))
            cheap = min(CHEAP_NODES, limit)
            if len(tree) < cheap:
                # a second best-first pass at the lower floor; candidates the first pass
                # drafted come out first again and use up room, so it adds fewer than
                # ``room`` nodes when the first pass added some (measured as it is)
                room = cheap - len(tree)
                self._guarded("recycling", lambda: self._recycle(last, tree, tip, room, CHEAP_FLOOR))
        kept = self._cut(tree, matcher, ends)
        if self.cost is None:
            return kept
        return fit_to_cost(kept, node_reaches(kept, self._node_rate(kept)), self.cost.relative)

    def _node_rate(self, tree: DraftTree) -> Callable[[int], float]:
        """Node ``i``'s predicted chance of being the target's choice once its parent
        is reached (1 for a forced token)."""

        def rate(i: int) -> float:
            source, feature = tree.sources[i], tree.features[i]
            return 1.0 if source == "constraint" and not feature else self._rate(source, feature)

        return rate

    def _follow(self, probe: Matcher, tree: DraftTree, start: int) -> bool:
        """Advance ``probe`` over the chain's nodes from ``start``; at the first one the
        constraint refuses, cut the chain there (``_cut`` would) and say so."""
        for i in range(start, len(tree)):
            token = tree.tokens[i]
            if token in self.stop_ids or not probe.accepts(token):
                tree.truncate(i)
                return False
            probe.advance(token)
        return True

    def _forced(self, probe: Matcher, tree: DraftTree, limit: int, reach: float) -> float:
        """The forced tokens after the chain (``probe`` is the constraint there; it is
        advanced), then the tokenizer's spelling of the forced text after them."""
        for token in probe.forced_tokens()[: limit - len(tree)]:
            if token in self.stop_ids:
                return reach
            probe.advance(token)
            tree.add(token, tree.tip(), "constraint")
        if self.spell is None or limit <= len(tree):
            return reach
        last = tree.tokens[-1] if tree.tokens else None
        token_bytes = probe.vocab.token_bytes
        tail = token_bytes[last] if last is not None else b""
        data = probe.forced_bytes(Layout(self.layout.after, tail[-1] if tail else self.layout.last))
        if not data:
            return reach
        floor = 1 - self.config.stop_threshold
        spelled = self.spell(data)
        if spelled and len(token_bytes[spelled[-1]]) == 1:
            # a lone quote or blank that ends the forced text is where the tokenizer most
            # often joins it to what follows (``":``, `` true``): leave it to the others
            spelled.pop()
        for token in spelled[: limit - len(tree)]:
            chance = reach * self._rate("constraint", SPELLED)
            if chance < floor or token in self.stop_ids or not probe.accepts(token):
                break
            reach = chance
            probe.advance(token)
            tree.add(token, tree.tip(), "constraint", SPELLED)
        return reach

    def _propose(
        self,
        name: str,
        out: Sequence[int],
        tree: DraftTree,
        limit: int,
        reach: float,
        probe: Matcher | None = None,
    ) -> float:
        """A copy (lookup) or a draft model's or the skipping target's chain after the
        chain so far, while the predicted reach stays above the floor; returns the reach
        at its end. ``probe`` (the constraint at the chain's end, not advanced) steers a
        model's draft to the tokens the constraint allows."""
        floor = 1 - self.config.stop_threshold
        room = limit - len(tree)
        pending = list(tree.tokens)
        first = reach == 1.0  # nothing uncertain before: the first node is always drafted
        if name == "lookup":
            assert self.lookup is not None
            tokens, agreed = self.lookup.propose(pending, room)
            for depth, token in enumerate(tokens, start=1):
                feature = (agreement_bucket(agreed), depth_bucket(depth))
                chance = reach * self._rate(name, feature)
                if chance < floor and not (first and depth == 1):
                    break
                reach = chance
                tree.add(token, tree.tip(), name, feature)
        else:
            context = [*self.prompt_ids, *out, *pending]
            pick = self._picker(probe)
            if name == "draft_model":
                assert self.draft_model is not None
                tokens, confidence = self.draft_model.propose(context, room, pick)
            else:
                assert self.layer_skip is not None
                tokens, confidence = self.layer_skip.propose(context, room, reach, floor, pick)
            for depth, (token, p) in enumerate(zip(tokens, confidence, strict=True), start=1):
                chance = reach * p
                if chance < floor and not (first and depth == 1):
                    break
                reach = chance
                tree.add(token, tree.tip(), name, (depth_bucket(depth),))
        return reach

    def _picker(self, probe: Matcher | None) -> Pick:
        """A model drafter's choice at each position: its most likely token that the
        constraint allows (the constraint followed along the draft on a fork of
        ``probe``): its :data:`PICK_CANDIDATES` best are tried first, then the
        constraint's whole mask. The draft ends where the model's most likely token is
        an end-of-sequence id or nothing is allowed."""
        if probe is None:
            return greedy
        walker = probe.fork()

        def pick(logits: torch.Tensor) -> tuple[int, float] | None:
            probs = torch.softmax(logits.float(), dim=-1)
            top = torch.topk(probs, min(PICK_CANDIDATES, probs.numel()))
            chosen = None
            for rank, token in enumerate(top.indices.tolist()):
                if token in self.stop_ids and rank == 0:
                    return None
                if token not in self.stop_ids and walker.accepts(token):
                    chosen = token
                    break
            if chosen is None:
                mask = torch.zeros(probs.numel(), dtype=torch.bool)
                walker.fill_mask(mask)
                mask[list(self.stop_ids & set(range(probs.numel())))] = False
                if not bool(mask.any()):
                    return None
                chosen = int(torch.argmax(probs.cpu().masked_fill(~mask, -1.0)))
            walker.advance(chosen)
            return chosen, float(probs[chosen])

        return pick

    def _recycle(self, last: int, tree: DraftTree, tip: int, room: int, floor: float) -> None:
        assert self.recycling is not None
        self.recycling.propose(
            last,
            room,
            self.config.tree_width,
            tree,
            tip,
            lambda depth, rank: self._rate("recycling", (depth_bucket(depth), rank)),
            floor,
        )

    def _rate(self, name: str, feature: tuple[int, ...]) -> float:
        """Predicted chance that a node of ``name`` with ``feature`` is the target's
        choice once its parent is reached (SpecDec++'s acceptance prediction, counted
        instead of trained)."""
        prior = PRIOR_SPELLED if feature == SPELLED else PRIOR_ACCEPTANCE
        accepted, rejected = self.verdicts.get((name, feature), prior)
        return accepted / (accepted + rejected)

    def _cut(
        self, tree: DraftTree, matcher: Matcher | None, ends: Callable[[list[int]], bool] | None = None
    ) -> DraftTree:
        """The nodes of ``tree`` the constraint allows, each with its whole ancestry,
        none under a node where ``ends`` says the generation ends."""
        kept = DraftTree()
        where: dict[int, int] = {-1: -1}
        states: dict[int, Matcher | None] = {-1: matcher}
        paths: dict[int, list[int]] = {-1: []}  # drafted tokens up to each node (with ends)
        final: set[int] = set()  # nodes where the generation ends
        for i, (token, parent) in enumerate(zip(tree.tokens, tree.parents, strict=True)):
            if parent not in where or parent in final or token in self.stop_ids:
                continue
            state = states[parent]
            if state is not None:
                if not state.accepts(token):
                    continue
                state = state.fork()
                state.advance(token)
            where[i] = kept.add(token, where[parent], tree.sources[i], tree.features[i])
            states[i] = state
            if ends is not None:
                paths[i] = [*paths[parent], token]
                if ends(paths[i]):
                    final.add(i)
        return kept

    def _guarded(self, name: str, action: Callable[[], Any], default: Any = None) -> Any:
        """``action()``, or ``default`` once ``name`` is off or has failed (a failing
        drafter is switched off: a draft must never change the output)."""
        if name not in self.enabled:
            return default
        try:
            return action()
        except Exception as exc:
            self.enabled.remove(name)
            self.failures[name] = f"{type(exc).__name__}: {exc}"
            return default

    # ----------------------------------------------------------------- feedback
    def observe(self, tree: DraftTree, path: list[int], fed: list[int], rows: torch.Tensor) -> None:
        """Count one verification: ``path`` are the accepted nodes. Under the root and
        under every accepted node, the child the target picked was accepted and its
        siblings rejected; nodes under a rejection were never judged. ``rows`` are the
        target's logits after the last ``len(rows)`` tokens of ``fed``."""
        self.forwards += 1
        self.scored += len(tree)
        kept = set(path)
        for parent in [-1, *path]:
            for i, p in enumerate(tree.parents):
                if p == parent and (tree.sources[i] != "constraint" or tree.features[i]):
                    self._verdict((tree.sources[i], tree.features[i]), accepted=i in kept)
        for i, name in enumerate(tree.sources):
            self.drafted[name] = self.drafted.get(name, 0) + 1
            if i in kept:
                self.accepted[name] = self.accepted.get(name, 0) + 1
        if self.recycling is not None and "recycling" in self.enabled:
            tail = fed[len(fed) - len(rows) :]
            self._guarded("recycling", lambda: self.recycling.observe(tail, rows))  # type: ignore[union-attr]

    def _verdict(self, key: tuple[str, tuple[int, ...]], *, accepted: bool) -> None:
        counts = self.verdicts.setdefault(key, list(PRIOR_SPELLED if key[1] == SPELLED else PRIOR_ACCEPTANCE))
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
            **({"layer_skip": self.layer_skip.stats()} if self.layer_skip is not None else {}),
        }
