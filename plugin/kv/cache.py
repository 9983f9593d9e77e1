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
        logits = model(input_ids=chunk, past_key_values=cache, use_cache=True, **extra).logits[0, -1]
    assert logits is not None
    return logits.float()


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
