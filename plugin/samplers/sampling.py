"""Turning one step's logits into a token: penalties, masking, temperature, top-k/p.

The constraint mask is applied *before* top-k/top-p, so filtering acts on the
constrained distribution and can never remove every allowed token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from plugin.errors import OptionError


@dataclass(frozen=True)
class SamplingParams:
    """How to pick a token. ``temperature == 0`` means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise OptionError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise OptionError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise OptionError(f"top_k must be >= 0, got {self.top_k}")
        if not self.repetition_penalty > 0:
            raise OptionError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def apply_repetition_penalty(logits: torch.Tensor, previous: list[int], penalty: float) -> torch.Tensor:
    """CTRL-style penalty: divide positive, multiply negative logits of the ``previous`` tokens."""
    if penalty == 1.0 or not previous:
        return logits
    previous = torch.tensor(previous, device=logits.device)
    seen = logits[previous]
    logits = logits.clone()
    logits[previous] = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p, on 1-D logits (-inf marks forbidden)."""
    logits = logits / params.temperature
    if params.top_k:
        k = min(params.top_k, logits.numel())
        kth = torch.topk(logits, k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop_sorted = cumulative - torch.softmax(sorted_logits, dim=-1) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def choose_token(
    logits: torch.Tensor,
    mask: torch.Tensor | None,
    params: SamplingParams,
    generator: torch.Generator | None,
) -> int:
    """Pick one token from 1-D float logits, restricted to ``mask`` when given."""
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    if params.greedy:
        return int(torch.argmax(logits))
    probs = torch.softmax(filter_logits(logits, params), dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
