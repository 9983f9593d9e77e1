"""Self-speculation by layer skipping (SWIFT): the target itself, some decoder layers
skipped, drafts greedily.

There is no second model and no second cache. The draft reads the decode loop's own KV
cache (the full model's keys and values of the accepted context) through views
(:func:`plugin.kv.cache.cache_over`): its kept layers attend to the context exactly as
the target's do, and only the drafted positions are computed with layers missing. What
the draft appends goes to new tensors and is dropped after the draft; the loop's cache
is never written.

Which layers to skip is chosen as SWIFT does, from the context rather than by training:
over the last :data:`WINDOW` tokens before the first draft, the full model's greedy
choices are the labels, and candidate layer sets (structured and random, at several
skip ratios; never the first or last :data:`KEEP_EDGE` layers) are scored by how often
their greedy choice matches. The winner maximises the expected tokens per unit of cost
of a short draft (see :func:`expected_gain`), and is kept per model for the process, as
Token Recycling's table is. When even the winner is estimated not to pay (gain below
1, as on the default model on two CPU cores: skipping 10 of its 30 layers keeps about
half the greedy tokens), the drafter drafts nothing and ``stats["speculative"]
["layer_skip"]`` says so. A skip set given in ``SpeculativeConfig(skip_layers=...)`` is
used as it is, always.

Drafts are greedy point masses with the draft's own probability as the confidence the
adaptive stop reads (SWIFT's confidence-aware drafting), so verification is the same
lossless rule as for every drafter.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from plugin.errors import OptionError
from plugin.kv.cache import cache_over, layers_of, tree_attention_mask, with_cache
from plugin.speculation.draft_model import Pick, greedy

WINDOW = 24  # context tokens the layer choice is scored on
KEEP_EDGE = 2  # first and last layers never skipped (embedding- and head-side layers matter most)
SKIP_RATIOS = (0.2, 0.35, 0.5)  # of the layers, for the candidate sets
RANDOM_SETS = 2  # random candidates per ratio, besides the evenly spaced one
VERIFY_COST = 1.3  # a forward scoring 1 + 3 tokens against one over 1 (bench/forward_cost.py)

CacheView = Callable[[], tuple[Any, int]]  # the loop's cache and how many positions it holds


@dataclass(frozen=True)
class LayerChoice:
    """The skipped layers and how they scored on the context: ``match`` is the share of
    positions where the skipping model's greedy token equals the full model's, ``gain``
    the estimated tokens per unit of cost against plain decoding (below 1: it does not
    pay on this model and machine)."""

    skipped: tuple[int, ...]
    match: float
    gain: float


_CHOICES: weakref.WeakKeyDictionary[Any, LayerChoice] = weakref.WeakKeyDictionary()


def decoder_parts(model: Any) -> tuple[Any, Any, Sequence[Any], Any, Any]:
    """The embedding, rotary embedding, decoder layers, final norm and LM head of a
    decoder-only Hugging Face model (Llama, Qwen, Mistral, SmolLM and their kin), or an
    :class:`OptionError` saying layer skipping cannot run on it."""
    inner = getattr(model, "model", None)
    parts = [getattr(inner, name, None) for name in ("embed_tokens", "rotary_emb", "layers", "norm")]
    head = getattr(model, "lm_head", None)
    if inner is None or any(part is None for part in parts) or head is None:
        raise OptionError(
            f"speculative drafter 'layer_skip' needs a decoder-only model with model.layers, "
            f"embed_tokens, rotary_emb, norm and lm_head; {type(model).__name__} has not"
        )
    config = getattr(model, "config", None)
    layer_types = getattr(config, "layer_types", None) or ()
    if any("sliding" in str(kind) for kind in layer_types):
        raise OptionError(
            f"speculative drafter 'layer_skip' does not run on {type(model).__name__}: "
            "its sliding-window layers need their own masks"
        )
    embed, rotary, layers, norm = parts
    return embed, rotary, layers, norm, head


def check_skip_layers(model: Any, skip_layers: tuple[int, ...] | None) -> None:
    """An :class:`OptionError` unless layer skipping runs on ``model`` and every index
    of ``skip_layers`` names one of its layers (and at least one layer stays)."""
    layers = decoder_parts(model)[2]
    if skip_layers is None:
        return
    bad = [i for i in skip_layers if not 0 <= i < len(layers)]
    if bad:
        raise OptionError(
            f"speculative: skip_layers {bad} out of range: the model has layers 0..{len(layers) - 1}"
        )
    if len(set(skip_layers)) >= len(layers):
        raise OptionError("speculative: skip_layers names every layer; at least one must stay")


@torch.inference_mode()
def skipping_forward(
    model: Any, cache: Any, past: int, ids: list[int], skipped: frozenset[int], rows: int = 1
) -> torch.Tensor:
    """float32 logits after each of the last ``rows`` of ``ids``, read after the ``past``
    positions ``cache`` holds, by ``model`` without the layers in ``skipped``. ``cache``
    grows on the kept layers only (hand it a view, :func:`cache_over`)."""
    embed, rotary, layers, norm, head = decoder_parts(model)
    device = next(model.parameters()).device
    hidden = embed(torch.tensor([ids], dtype=torch.long, device=device))
    positions = torch.arange(past, past + len(ids), device=device)[None]
    cos_sin = rotary(hidden, position_ids=positions)
    mask = None  # one query sees everything cached: no mask needed
    if len(ids) > 1:
        _, mask = tree_attention_mask(list(range(-1, len(ids) - 1)), past, hidden.dtype, device)
    for i, layer in enumerate(layers):
        if i in skipped:
            continue
        hidden = layer(
            hidden,
            attention_mask=mask,
            position_ids=positions,
            position_embeddings=cos_sin,
            **with_cache(layer, cache),
        )
        if isinstance(hidden, tuple):  # older transformers return (hidden_states, ...)
            hidden = hidden[0]
    return head(norm(hidden[:, -rows:]))[0].float()


def expected_gain(match: float, kept: float, depth: int = 3) -> float:
    """Tokens per unit of cost of a ``depth``-token greedy draft whose tokens are each
    kept with chance ``match`` and each cost ``kept`` of a forward, verified in one
    forward costing :data:`VERIFY_COST`; plain decoding is 1. A rough model: it decides
    between candidate layer sets and says whether drafting can pay at all."""
    tokens = sum(match**i for i in range(depth + 1))
    return tokens / (VERIFY_COST + depth * kept)


def candidate_sets(layers: int, seed: int = 0) -> list[tuple[int, ...]]:
    """Layer sets to try: for each ratio of :data:`SKIP_RATIOS`, evenly spaced middle
    layers and :data:`RANDOM_SETS` random ones (SWIFT's random search, seeded)."""
    middle = list(range(KEEP_EDGE, layers - KEEP_EDGE))
    if not middle:
        return []  # too shallow to skip anything but the edges
    rng = random.Random(seed)
    found: list[tuple[int, ...]] = []
    for ratio in SKIP_RATIOS:
        count = min(len(middle), max(1, round(ratio * layers)))
        step = len(middle) / count
        sets = [tuple(middle[int(i * step)] for i in range(count))]
        sets += [tuple(sorted(rng.sample(middle, count))) for _ in range(RANDOM_SETS)]
        found += [s for s in sets if s not in found]
    return found


def choose_layers(model: Any, cache: Any, past: int, ids: Sequence[int]) -> LayerChoice | None:
    """The candidate set with the best :func:`expected_gain` on the last positions of
    the context (``ids``: every token the cache holds, ``past`` of them), or ``None``
    when the context is too short to judge or the model too shallow to skip a layer."""
    window = min(WINDOW, past - 1)
    layers = len(decoder_parts(model)[2])
    if window < 4 or not candidate_sets(layers):
        return None
    keys, values = layers_of(cache)
    start = past - window
    chunk = list(ids[start:past])
    labels = skipping_forward(model, cache_over(keys, values, start), start, chunk, frozenset(), window)
    wanted = labels[:-1].argmax(dim=-1)  # the full model's choices for chunk[1:] positions
    best: LayerChoice | None = None
    for skipped in candidate_sets(layers):
        logits = skipping_forward(
            model, cache_over(keys, values, start), start, chunk, frozenset(skipped), window
        )
        match = float((logits[:-1].argmax(dim=-1) == wanted).float().mean())
        gain = expected_gain(match, (layers - len(skipped)) / layers)
        if best is None or gain > best.gain:
            best = LayerChoice(skipped, match, gain)
    return best


class LayerSkip:
    """The ``layer_skip`` drafter of one generation."""

    name = "layer_skip"

    def __init__(self, model: Any, view: CacheView, skip_layers: tuple[int, ...] | None) -> None:
        check_skip_layers(model, skip_layers)
        self.model = model
        self.view = view
        self.given = skip_layers is not None
        self.choice: LayerChoice | None = (
            LayerChoice(tuple(sorted(set(skip_layers))), float("nan"), float("nan"))
            if skip_layers is not None
            else _CHOICES.get(model)
        )

    def propose(
        self, context: Sequence[int], limit: int, reach: float, floor: float, pick: Pick = greedy
    ) -> tuple[list[int], list[float]]:
        """Tokens after ``context`` (the prompt, the output and the draft so far) as
        ``pick`` chooses them from the skipping model's logits, and its probability of
        each: at most ``limit``, and no more once ``reach`` times the probabilities falls
        below ``floor`` (every drafted token costs a partial forward, so the draft stops
        where the adaptive stop would cut it)."""
        cache, past = self.view()
        if self.choice is None:
            self.choice = choose_layers(self.model, cache, past, context)
            if self.choice is None:
                return [], []
            _CHOICES[self.model] = self.choice
        if not self.drafts():
            return [], []
        skipped = frozenset(self.choice.skipped)
        keys, values = layers_of(cache)
        draft_cache = cache_over(keys, values, past)
        logits = skipping_forward(self.model, draft_cache, past, list(context[past:]), skipped)
        at = len(context)
        tokens: list[int] = []
        confidence: list[float] = []
        while True:
            chosen = pick(logits[-1])
            if chosen is None:
                return tokens, confidence
            best, p = chosen
            tokens.append(best)
            confidence.append(p)
            reach *= p
            if len(tokens) >= limit or reach < floor:
                return tokens, confidence
            logits = skipping_forward(self.model, draft_cache, at, [best], skipped)
            at += 1

    def drafts(self) -> bool:
        """Whether it drafts: always with the layers the user gave; with chosen ones only
        when the choice is estimated to pay (SWIFT falls back to plain decoding too)."""
        return self.given or (self.choice is not None and self.choice.gain >= 1.0)

    def stats(self) -> dict[str, Any]:
        choice = self.choice
        if choice is None:
            return {"skipped_layers": None, "drafting": False, "why": "context too short to choose layers"}
        found = {"skipped_layers": list(choice.skipped), "match": choice.match, "estimated_gain": choice.gain}
        if self.drafts():
            return {**found, "drafting": True}
        return {**found, "drafting": False, "why": "the best layer set is estimated not to pay"}
