"""KV tensors held outside a Hugging Face cache, handed to a forward as a fresh cache.

The edit session keeps each layer's keys and values as plain tensors
(``[batch, kv_heads, seq, head_dim]``). A forward gets a new ``DynamicCache`` whose layers
*are* slices of those tensors: the model's own update concatenates the new tokens into
new tensors, so the session's tensors are never written and one cached document can
serve any number of generations. (``DynamicCache.crop`` would cut the session's copy.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


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
    (token ids) that starts with ``ids``: only the rest of the prompt is encoded.
    :meth:`plugin.kv.EditSession.generate` builds one from the document's cache.
    """

    ids: tuple[int, ...]
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]

    def cache(self) -> Any:
        """A fresh ``DynamicCache`` over these tensors (a forward appends to new tensors)."""
        return cache_over(list(self.keys), list(self.values), len(self.ids))
