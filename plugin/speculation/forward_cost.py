"""What one target forward costs by the number of tokens it reads, measured on this
machine: the curve each draft is sized against (:func:`fit_to_cost`).

Why measured: the curve is the machine's, not the model's. On one 2-core machine a
forward over 4 tokens cost 1.6 forwards over one and grew smoothly after; on another
(with the routed kernels of :mod:`plugin.linear_kernels`) 4 tokens cost 1.33 and 5 cost
2.3, a step that a draft of 4 nodes pays for nothing. Speculation that sizes drafts by
predicted acceptance alone loses there what it wins on the first machine, so the
speculator keeps the nodes most likely to be kept while the expected tokens per unit of
measured cost grows. The measurement (about 6 s on the default model on two
cores: forwards over 1..:data:`MAX_ROWS` tokens after :data:`CONTEXT` cached ones) is
kept per machine, model shape and kernel routes in ``$STENCIL_CACHE/forward-cost.json``
and per model for the process.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from plugin.machine_cache import machine_key, read_entry, write_entry
from plugin.speculation.tree import DraftTree

log = logging.getLogger(__name__)

MAX_ROWS = 16
"""Forwards over up to this many tokens are timed; longer ones are extrapolated."""
CONTEXT = 256  # cached tokens before the timed forwards (a prompt and some output)
_TIMED = 5  # timed rounds over every size (the median counts), after one untimed
_FILE = "forward-cost.json"
_METHOD = 2  # 1: each size timed three times in a row (a drifting machine bent the curve)
_MEMO: weakref.WeakKeyDictionary[Any, ForwardCost] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ForwardCost:
    """``seconds[n - 1]``: a forward over ``n`` tokens. Not smoothed: a BLAS may well
    run 4 rows faster than 3, and the fit can use that."""

    seconds: tuple[float, ...]
    source: str = "measured"

    def relative(self, rows: int) -> float:
        """A forward over ``rows`` tokens in forwards over one (linear beyond the
        measured sizes)."""
        last = len(self.seconds)
        cost = self.seconds[rows - 1] if rows <= last else self.seconds[-1] * rows / last
        return cost / self.seconds[0]


def forward_cost(model: Any, *, use_cache: bool = True) -> ForwardCost:
    """The measured curve of ``model`` on this machine (per process, then per machine;
    ``use_cache=False`` measures again)."""
    found = _MEMO.get(model) if use_cache else None
    if found is not None:
        return found
    key = _key(model)
    entry = read_entry(_FILE, key) if use_cache else None
    seconds = entry.get("seconds") if entry else None
    if isinstance(seconds, list) and len(seconds) == MAX_ROWS and all(s > 0 for s in seconds):
        found = ForwardCost(tuple(float(s) for s in seconds), "cache")
    else:
        found = _measure(model)
        if use_cache:
            write_entry(_FILE, key, {"seconds": list(found.seconds)})
    _MEMO[model] = found
    return found


def _key(model: Any) -> str:
    config = getattr(model, "config", None)
    shape = {
        name: getattr(config, name, None)
        for name in (
            "model_type",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
        )
    }
    parameter = next(model.parameters())
    plan = getattr(model, "_stencil_linear_plan", None)
    return machine_key(
        model=shape,
        dtype=str(parameter.dtype),
        device=str(parameter.device),
        routes=plan.routes if plan is not None else None,
        method=_METHOD,
    )


def _measure(model: Any) -> ForwardCost:
    start = time.perf_counter()
    vocab = int(model.config.vocab_size)
    longest = getattr(model.config, "max_position_embeddings", None) or CONTEXT + MAX_ROWS
    context = [(1000 + i) % vocab for i in range(max(1, min(CONTEXT, longest - MAX_ROWS)))]
    seconds = time_forwards(model, context, range(1, MAX_ROWS + 1), _TIMED, warm=1)
    log.info("timed forwards over 1..%d tokens in %.1fs", MAX_ROWS, time.perf_counter() - start)
    return ForwardCost(tuple(seconds[n] for n in range(1, MAX_ROWS + 1)))


@torch.inference_mode()
def time_forwards(
    model: Any, context: Sequence[int], sizes: Iterable[int], repeats: int, warm: int = 0
) -> dict[int, float]:
    """Median seconds of a forward over ``n`` new tokens after ``context`` cached, every
    new position scored (what a draft's verification does), for each ``n`` in ``sizes``;
    ``warm`` untimed rounds first. The sizes are timed in rotation (one forward of each
    per round), so a machine whose speed drifts during the measurement drifts for every
    size alike instead of bending the curve. Each forward reads a fresh view of the same
    cache (``bench/forward_cost.py`` uses this too)."""
    from transformers import DynamicCache

    from plugin.kv.cache import cache_over, extend, layers_of, score

    device = next(model.parameters()).device
    vocab = int(model.config.vocab_size)
    cache = DynamicCache()
    extend(model, cache, list(context))
    keys, values = layers_of(cache)
    sizes = list(sizes)
    samples: dict[int, list[float]] = {n: [] for n in sizes}
    for attempt in range(warm + repeats):
        for n in sizes:
            new = [(2000 + i) % vocab for i in range(n)]
            fresh = cache_over(keys, values, len(context))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            score(model, fresh, new, n)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if attempt >= warm:
                samples[n].append(time.perf_counter() - t)
    return {n: sorted(s)[len(s) // 2] for n, s in samples.items()}


# ------------------------------------------------------------------ sizing a draft
def node_reaches(tree: DraftTree, rate: Callable[[int], float]) -> list[float]:
    """Each node's predicted chance of being kept: the product of ``rate(i)`` (its
    chance of being the target's choice once its parent is reached) along its path."""
    reach: list[float] = []
    for i, parent in enumerate(tree.parents):
        reach.append((reach[parent] if parent >= 0 else 1.0) * rate(i))
    return reach


def fit_to_cost(tree: DraftTree, reach: Sequence[float], relative: Callable[[int], float]) -> DraftTree:
    """The nodes of ``tree`` worth one forward: the ``k`` most likely to be kept, with
    ``k`` maximising the expected tokens per forward over its cost,
    ``(1 + sum of their reaches) / relative(k + 1)`` (the decided token and ``k`` nodes).
    A node is never more likely than its parent, so the kept nodes keep their ancestry."""
    n = len(tree)
    if n == 0:
        return tree
    order = sorted(range(n), key=lambda i: (-reach[i], i))
    best_k, best, expected = 0, 1.0 / relative(1), 1.0
    for k, i in enumerate(order, start=1):
        expected += reach[i]
        value = expected / relative(k + 1)
        if value > best:
            best_k, best = k, value
    if best_k == n:
        return tree
    keep = set(order[:best_k])
    fitted = DraftTree()
    where: dict[int, int] = {-1: -1}
    for i in range(n):
        parent = tree.parents[i]
        if i in keep and parent in where:
            where[i] = fitted.add(tree.tokens[i], where[parent], tree.sources[i], tree.features[i])
    return fitted
