"""KV tensors held outside a Hugging Face cache, handed to a forward as a fresh cache.

The edit session keeps each layer's keys and values as plain tensors
(``[batch, kv_heads, seq, head_dim]``). A forward gets a new ``DynamicCache`` whose layers
*are* slices of those tensors: the model's own update concatenates the new tokens into
new tensors, so the session's tensors are never written and one cached document can
serve any number of generations. (``DynamicCache.crop`` would cut the session's copy.)
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch

CHUNK = 1024  # tokens per forward when encoding long spans (bounds the attention's memory)


@functools.cache
def _keeps_last_logits(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


@functools.cache
def _cache_keyword(module_class: type) -> str:
    # transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name warns on
    # every forward and goes in 5.40); older releases know only the old names
    known = inspect.signature(module_class.forward).parameters
    return next((n for n in ("cache", "past_key_values", "past_key_value") if n in known), "past_key_values")


def with_cache(module: Any, cache: Any) -> dict[str, Any]:
    """The keyword arguments that hand ``cache`` to the forward of ``module`` (a model or
    one of its decoder layers) and turn caching on, spelled as the installed
    ``transformers`` wants them."""
    return {_cache_keyword(type(module)): cache, "use_cache": True}


@torch.inference_mode()
def extend(model: Any, cache: Any, ids: list[int]) -> torch.Tensor:
    """Run ``ids`` through ``model`` after what ``cache`` holds (the cache grows) and
    return the float32 logits after the last one. Only the last position goes through
    the LM head: the full ``[tokens, vocab]`` logits of a 1,000-token prompt cost about
    as much as a third of its layers on the default model."""
    if not ids:
        raise ValueError("extend needs at least one token")
    device = next(model.parameters()).device
    extra = {"logits_to_keep": 1} if _keeps_last_logits(type(model)) else {}
    logits = None
    for at in range(0, len(ids), CHUNK):
        chunk = torch.tensor([ids[at : at + CHUNK]], dtype=torch.long, device=device)
        logits = model(input_ids=chunk, **with_cache(model, cache), **extra).logits[0, -1]
    assert logits is not None
    return logits.float()


@torch.inference_mode()
def score(
    model: Any, cache: Any, ids: list[int], rows: int, parents: list[int] | None = None
) -> torch.Tensor:
    """Run ``ids`` after what ``cache`` holds and return float32 logits after each of the
    last ``rows`` of them (``[rows, vocab]``): what a speculative verification reads.

    ``parents`` makes ``ids`` a tree (``parents[i]`` is the index in ``ids`` of the
    token before ``ids[i]``, -1 for the cache's last token): each token then sees the
    cache and its own ancestors only, at the position of its depth, so one forward scores
    every branch of a draft tree. ``None`` (or a chain) is the ordinary causal forward.
    The cache then holds every token of ``ids``; :func:`keep_path` cuts it to one branch.
    """
    if not 1 <= rows <= len(ids):
        raise ValueError(f"score needs 1 <= rows <= {len(ids)} tokens, got {rows}")
    device = next(model.parameters()).device
    past = cache_length(cache)
    chunk = torch.tensor([ids], dtype=torch.long, device=device)
    extra: dict[str, Any] = {"logits_to_keep": rows} if _keeps_last_logits(type(model)) else {}
    if parents is not None and any(p != i - 1 for i, p in enumerate(parents)):
        depth, mask = tree_attention_mask(parents, past, model.dtype, device)
        extra["position_ids"] = (past + depth).unsqueeze(0)
        extra["attention_mask"] = mask
    logits = model(input_ids=chunk, **with_cache(model, cache), **extra).logits[0]
    return logits[-rows:].float()


def tree_attention_mask(
    parents: list[int], past: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depths of the tree's tokens and the additive 4-D attention mask (0 where a token
    may look: the cached context, its ancestors, itself; the dtype's minimum elsewhere)."""
    n = len(parents)
    sees = torch.zeros(n, n, dtype=torch.bool)
    depth = torch.zeros(n, dtype=torch.long)
    for i, p in enumerate(parents):
        if not -1 <= p < i:
            raise ValueError(f"tree token {i} names parent {p}: parents must come before their children")
        if p >= 0:
            sees[i] = sees[p]
            depth[i] = depth[p] + 1
        sees[i, i] = True
    allowed = torch.cat([torch.ones(n, past, dtype=torch.bool), sees], dim=1)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return depth.to(device), mask[None, None].to(device)


def cache_length(cache: Any) -> int:
    """Positions a ``DynamicCache`` holds (0 when empty)."""
    return int(cache.get_seq_length()) if cache.layers else 0


def keep_path(cache: Any, start: int, path: list[int]) -> None:
    """Cut ``cache`` back to its first ``start`` positions plus the positions
    ``start + i`` for ``i`` in ``path`` (one branch of a scored tree, in order): what a
    verification keeps of the draft it scored. Only this cache's own tensors change; a
    :class:`CachedPrefix` it was built over is never written."""
    length = cache_length(cache)
    if path == list(range(len(path))):
        if start + len(path) == length:
            return
        index = None
    else:
        index = torch.tensor([start + i for i in path], dtype=torch.long)
    for layer in cache.layers:
        if getattr(layer, "is_sliding", False):
            raise TypeError("sliding-window cache layers cannot be cut back to a draft branch")
        for name in ("keys", "values"):
            full = getattr(layer, name)
            if index is None:
                kept = full[:, :, : start + len(path)]
            else:
                kept = torch.cat([full[:, :, :start], full.index_select(2, index.to(full.device))], dim=2)
            setattr(layer, name, kept)


def layers_of(cache: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The keys and values of every layer of a ``DynamicCache`` after a forward."""
    keys, values = [], []
    for layer in cache.layers:
        if getattr(layer, "is_sliding", False):
            raise TypeError("sliding-window cache layers keep only the window: they cannot be spliced")
        keys.append(layer.keys)
        values.append(layer.values)
    return keys, values


def cache_over(keys: list[torch.Tensor], values: list[torch.Tensor], length: int) -> Any:
    """A new ``DynamicCache`` holding the first ``length`` positions of ``keys``/``values``
    (views, no copy); empty when ``length`` is 0."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache()
    if length == 0 or not keys:
        return cache
    for k, v in zip(keys, values, strict=True):
        layer = DynamicLayer()
        layer.keys, layer.values = k[:, :, :length], v[:, :, :length]
        layer.dtype, layer.device = k.dtype, k.device
        layer.is_initialized = True
        cache.layers.append(layer)
    return cache


@dataclass(frozen=True)
class CachedPrefix:
    """The KV cache of the first ``len(ids)`` tokens of a prompt (read-only views).

    Give it to :func:`plugin.constrained_generate` as ``prompt_cache=`` with a prompt
    (token ids) that starts with ``ids``: only the rest of the prompt is encoded. It may
    hold the whole prompt when ``next_logits`` (the logits after it) are given.
    :meth:`plugin.kv.EditSession.generate` builds one from the document's cache.
    """

    ids: tuple[int, ...]
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    next_logits: torch.Tensor | None = None

    def cache(self) -> Any:
        """A fresh ``DynamicCache`` over these tensors (a forward appends to new tensors)."""
        return cache_over(list(self.keys), list(self.values), len(self.ids))
