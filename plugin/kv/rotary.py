"""Rotary position embeddings as a Hugging Face model applies them, and re-rotation of cached keys.

Hugging Face caches keys *after* RoPE: the key of a token at position ``p`` is
``R(p) k``. Moving that token to ``p + Δ`` (text inserted or deleted before it) is one
multiplication by ``R(Δ)``, because rotations compose: ``R(Δ) R(p) = R(p + Δ)``. Every
token of a suffix moves by the same Δ, so the rotation is one ``[rotary_dim]`` vector of
cosines and one of sines broadcast over the whole cache; values are left as they are.

What differs between models, all read from the model itself:

* the inverse frequencies (``inv_freq`` buffer of the rotary module: ``rope_theta``,
  head dim and position-independent scalings such as ``linear``, ``llama3`` or ``yarn``
  already folded in; GPT-J keeps a sin/cos table instead, read at position 1);
* partial rotary (only the first ``rotary_dim`` = 2 × len(inv_freq) dims rotate);
* the layout: half-split (Llama, Qwen2, Mistral, Phi, GPT-NeoX: dims ``i`` and
  ``i + rotary_dim/2`` form a pair) or interleaved (GPT-J, Cohere: dims ``2i, 2i+1``).

A length-dependent scaling (``dynamic`` NTK, ``longrope``) changes the frequencies with
the sequence length, so ``R(a) R(b) = R(a + b)`` no longer holds; models without rotary
embeddings have nothing to rotate. For those :func:`read_rotary` raises
:class:`RotaryUnavailable`, and :class:`plugin.kv.EditSession` re-encodes instead.
Whatever the attributes say, :func:`read_rotary` checks itself once per model on a
real forward (first-layer keys of the same tokens at two positions) and refuses a
rotation that does not reproduce the model's own keys.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch

from plugin.errors import StencilError
from plugin.kv.cache import with_cache

# RoPE variants whose frequencies depend on the current sequence length
LENGTH_DEPENDENT = frozenset({"dynamic", "longrope"})
# model types whose rotary pairs are adjacent dims (GPT-J style); every other RoPE model in
# transformers pairs dim i with i + rotary_dim / 2. The self-check tries the other layout too.
INTERLEAVED_MODEL_TYPES = frozenset({"gptj", "codegen", "cohere", "cohere2"})
_CHECK_DELTAS = (37, -5)
_CHECK_TOLERANCE = 2e-3  # relative; float32 angle rounding at the probe's positions is ~1e-6


class RotaryUnavailable(StencilError):
    """The model's cached keys cannot be moved by a rotation (no RoPE, a length-dependent
    scaling, or a layout the self-check could not confirm); the message names the attribute."""


@dataclass(frozen=True)
class Rotary:
    """How one model rotates its keys: see the module docstring."""

    inv_freq: torch.Tensor  # float64, [rotary_dim // 2], CPU
    head_dim: int
    interleaved: bool
    source: str  # where the frequencies were read, for stats and errors

    @property
    def rotary_dim(self) -> int:
        return 2 * self.inv_freq.numel()

    def _cos_sin(
        self, delta: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        angle = self.inv_freq * float(delta)  # float64: Δ up to the context length stays exact enough
        cos, sin = angle.cos(), angle.sin()
        if self.interleaved:
            cos, sin = cos.repeat_interleave(2), sin.repeat_interleave(2)
        else:
            cos, sin = torch.cat([cos, cos]), torch.cat([sin, sin])
        return cos.to(device=device, dtype=dtype), sin.to(device=device, dtype=dtype)

    def rotate(self, keys: torch.Tensor, delta: int) -> torch.Tensor:
        """``keys`` (``[..., seq, head_dim]``, already rotated to their positions) moved by
        ``delta`` positions; a new tensor of the same dtype (computed in float32 at least)."""
        if delta == 0:
            return keys
        work = keys.float() if keys.dtype in (torch.float16, torch.bfloat16) else keys
        cos, sin = self._cos_sin(delta, work.device, work.dtype)
        d = self.rotary_dim
        part = work[..., :d]
        if self.interleaved:
            pairs = part.unflatten(-1, (-1, 2))
            turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        else:
            half = d // 2
            turned = torch.cat((-part[..., half:], part[..., :half]), dim=-1)
        rotated = part * cos + turned * sin
        if d < work.shape[-1]:
            rotated = torch.cat((rotated, work[..., d:]), dim=-1)
        return rotated.to(keys.dtype)


_CHECKED: weakref.WeakKeyDictionary[Any, Rotary | RotaryUnavailable] = weakref.WeakKeyDictionary()


def read_rotary(model: Any) -> Rotary:
    """The model's :class:`Rotary`, read from its attributes and confirmed on a forward.

    Cached per model. Raises :class:`RotaryUnavailable` naming the attribute when the
    keys cannot be re-rotated exactly.
    """
    known = _CHECKED.get(model)
    if known is None:
        try:
            known = _self_checked(model, _read_attributes(model))
        except RotaryUnavailable as exc:
            known = exc
        _CHECKED[model] = known
    if isinstance(known, RotaryUnavailable):
        raise known
    return known


def _text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


def _rope_type(module: Any, config: Any) -> str:
    found = getattr(module, "rope_type", None)
    if isinstance(found, str):
        return found
    for name in ("rope_parameters", "rope_scaling"):
        params = getattr(config, name, None)
        if isinstance(params, dict):
            kind = params.get("rope_type") or params.get("type")
            if isinstance(kind, str):
                return kind
    return "default"


def _read_attributes(model: Any) -> Rotary:
    config = _text_config(model)
    kind = getattr(config, "model_type", type(model).__name__)
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(config, "head_dim", None) or (
        config.hidden_size // heads if heads and getattr(config, "hidden_size", None) else None
    )
    if not head_dim:
        raise RotaryUnavailable(f"{kind}: config has neither head_dim nor hidden_size / num_attention_heads")
    modules = [(n, m) for n, m in model.named_modules() if "rotary" in type(m).__name__.lower()]
    if not modules:
        raise RotaryUnavailable(f"{kind}: no rotary embedding module (the model has no RoPE to re-rotate)")
    with_freq = [(n, m) for n, m in modules if isinstance(getattr(m, "inv_freq", None), torch.Tensor)]
    if with_freq:
        distinct = {tuple(m.inv_freq.flatten().tolist()) for _, m in with_freq}
        if len(distinct) > 1:
            names = ", ".join(n for n, _ in with_freq)
            raise RotaryUnavailable(f"{kind}: several rotary modules with different frequencies ({names})")
        name, module = with_freq[0]
        rope_type = _rope_type(module, config)
        if rope_type in LENGTH_DEPENDENT:
            raise RotaryUnavailable(
                f"{kind}: {name}.rope_type is {rope_type!r}, whose frequencies depend on the sequence "
                "length (rotations do not compose)"
            )
        inv_freq = module.inv_freq.detach().flatten().to("cpu", torch.float64)
        source = f"{name}.inv_freq (rope_type {rope_type!r})"
    else:
        name, module = modules[0]
        table = getattr(module, "embed_positions", None)
        if not isinstance(table, torch.Tensor) or table.dim() != 2 or table.shape[0] < 2:
            raise RotaryUnavailable(
                f"{kind}: {name} has neither inv_freq nor an embed_positions sin/cos table"
            )
        half = table.shape[1] // 2  # rows are [sin(p·f), cos(p·f)]
        row = table[1].detach().to("cpu", torch.float64)
        inv_freq = torch.atan2(row[:half], row[half:])
        source = f"{name}.embed_positions (sin/cos table)"
    if 2 * inv_freq.numel() > head_dim:
        raise RotaryUnavailable(
            f"{kind}: {source} has {inv_freq.numel()} frequencies for head_dim {head_dim}"
        )
    return Rotary(inv_freq, int(head_dim), kind in INTERLEAVED_MODEL_TYPES, source)


@torch.inference_mode()
def _first_layer_keys(model: Any, ids: list[int], start: int) -> torch.Tensor:
    from transformers import DynamicCache

    device = next(model.parameters()).device
    cache = DynamicCache()
    positions = torch.arange(start, start + len(ids), device=device)[None]
    model(
        input_ids=torch.tensor([ids], device=device),
        position_ids=positions,
        **with_cache(model, cache),
    )
    return cache.layers[0].keys.float()


def _self_checked(model: Any, rotary: Rotary) -> Rotary:
    """``rotary`` (or the same frequencies in the other layout) if rotating first-layer keys
    reproduces the model's own keys at shifted positions; else :class:`RotaryUnavailable`."""
    vocab = int(getattr(_text_config(model), "vocab_size", 0) or 0)
    if vocab < 8:
        raise RotaryUnavailable("config.vocab_size is missing: cannot run the rotation self-check")
    ids = [vocab // 3, vocab // 2, vocab // 5]
    try:
        base = _first_layer_keys(model, ids, 10)
        shifted = {d: _first_layer_keys(model, ids, 10 + d) for d in _CHECK_DELTAS}
    except Exception as exc:  # a model whose forward takes no position_ids or caches no keys
        raise RotaryUnavailable(f"rotation self-check forward failed: {type(exc).__name__}: {exc}") from None
    if base.shape[-1] != rotary.head_dim:
        raise RotaryUnavailable(
            f"cached keys have {base.shape[-1]} dims per head, config says head_dim {rotary.head_dim}"
        )
    for layout in (rotary.interleaved, not rotary.interleaved):
        candidate = Rotary(rotary.inv_freq, rotary.head_dim, layout, rotary.source)
        worst = max(
            float((candidate.rotate(base, d) - want).abs().max() / want.abs().max().clamp_min(1e-12))
            for d, want in shifted.items()
        )
        if worst <= _CHECK_TOLERANCE:
            return candidate
    raise RotaryUnavailable(
        f"rotating first-layer keys with {rotary.source} does not reproduce the model's keys at shifted "
        "positions in either layout (half-split or interleaved)"
    )
