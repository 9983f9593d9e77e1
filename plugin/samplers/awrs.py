"""Adaptive weighted rejection sampling (AWRS, Lipkin et al. 2025) for one decoding step.

Masking asks the constraint about every token of the vocabulary; AWRS asks about a
handful. Tokens are drawn *without replacement* from the model's distribution ``p``
(after temperature / top-k / top-p) by sorting Gumbel-perturbed log-probabilities, and
the constraint is asked about each in that order; the first accepted token ``a`` is an
exact sample of ``p`` restricted to the allowed set ``A`` (Gumbel-max over what is left
once the rejected tokens are removed).

**Weight.** Sequential Monte Carlo needs the step's constrained mass ``Z = p(A)``. The
estimate used here is unbiased at the cost of one extra ``accepts`` call:

    Ẑ = p(a) + (M − p(a)) · 1[next token in the Gumbel order is allowed]

where ``M = 1 − p(rejected before a)``. Why: writing ``q = p(x)/p(pool)`` for a draw
from the current pool, the estimate of the pool's allowed share is ``(1 − q)·Ẑ(pool − x)``
after a rejection and ``q + (1 − q)·1[next draw allowed]`` after an acceptance; the
indicator is an unbiased estimate of the remaining pool's allowed share (its next draw is
a draw from it), so by induction ``E[Ẑ] = Z``. It is exact when every token is allowed
(``Ẑ = 1``) and when only ``a`` is (``Ẑ = p(a)``).

**Adaptive fallback.** When the allowed mass is tiny (a keyword after a long prose
prompt) rejection would take thousands of checks. After ``max_rejections`` rejections
the step computes the full mask once and samples from the masked remainder (the rejected
tokens are not in ``A``, so the sample is still exact), with the exact ``Z`` as weight.
The switch keeps ``Ẑ`` unbiased: it only replaces the estimate of a remaining pool by its
exact value.

**Greedy** (temperature 0): tokens are checked in descending probability; the first
accepted one is the constrained argmax, and the weight is reported as the mass of that
token (no sampling, no estimate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from plugin.matcher import Matcher

DEFAULT_MAX_REJECTIONS = 16


@dataclass(frozen=True)
class AWRSStep:
    """One AWRS step: the token, ``log Ẑ`` (unbiased for ``Z`` in expectation of ``Ẑ``),
    how many ``accepts`` calls it made, and whether it fell back to the full mask."""

    token: int
    log_weight: float
    checks: int
    fell_back: bool


def awrs_step(
    logits: torch.Tensor,
    matcher: Matcher,
    *,
    greedy: bool,
    generator: torch.Generator | None = None,
    max_rejections: int = DEFAULT_MAX_REJECTIONS,
) -> AWRSStep:
    """Choose the next token under ``matcher`` from 1-D ``logits``.

    ``logits`` are already tempered and filtered (``-inf`` marks tokens the sampling
    parameters exclude); ``p = softmax(logits)``. Raises ``ValueError`` when no token
    the constraint allows has any probability and no token is allowed at all.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    if greedy:
        keys = logp
    else:
        u = torch.rand(logp.shape, generator=generator, device=logp.device, dtype=torch.float32)
        keys = logp - torch.log(-torch.log(u.clamp_min(1e-20)))
    k = min(max_rejections + 2, keys.numel())
    order = torch.topk(keys, k).indices.tolist()
    lp = logp[order].tolist()
    checks = 0
    rejected_mass = 0.0
    for i in range(min(max_rejections + 1, k)):
        tok, lpt = order[i], lp[i]
        if lpt == -math.inf:
            break  # only zero-probability tokens are left: the allowed mass is 0 here
        checks += 1
        if not matcher.accepts(tok):
            rejected_mass += math.exp(lpt)
            continue
        p_a = math.exp(lpt)
        if greedy:
            return AWRSStep(tok, lpt, checks, False)
        remaining = max(1.0 - rejected_mass, p_a)
        if i + 1 < k and lp[i + 1] > -math.inf and remaining > p_a:
            checks += 1
            if matcher.accepts(order[i + 1]):
                return AWRSStep(tok, math.log(remaining), checks, False)
        return AWRSStep(tok, lpt, checks, False)
    return _fallback(logp, matcher, greedy, generator, checks)


def _fallback(
    logp: torch.Tensor, matcher: Matcher, greedy: bool, generator: torch.Generator | None, checks: int
) -> AWRSStep:
    """Full mask, exact weight ``Z = p(A)``; sample from ``p`` restricted to ``A``."""
    mask = torch.zeros(logp.numel(), dtype=torch.bool, device=logp.device)
    matcher.fill_mask(mask)
    return masked_step(logp, mask, greedy, generator, checks + logp.numel())


def masked_step(
    logp: torch.Tensor, mask: torch.Tensor, greedy: bool, generator: torch.Generator | None, checks: int
) -> AWRSStep:
    """Sample from ``logp`` restricted to ``mask``, with the exact weight ``Z = p(mask)``."""
    if not bool(mask.any()):
        raise ValueError("the constraint allows no token here (a dead end)")
    masked = logp.masked_fill(~mask, -math.inf)
    log_z = float(torch.logsumexp(masked, dim=-1))
    if log_z == -math.inf:
        # Every allowed token was filtered out by temperature/top-k/top-p: keep the output
        # valid (sample among the allowed tokens uniformly) and report a zero weight.
        ids = torch.nonzero(mask).flatten()
        pick = ids[torch.randint(ids.numel(), (1,), generator=generator, device=ids.device)]
        return AWRSStep(int(pick), -math.inf, checks, True)
    if greedy:
        return AWRSStep(int(torch.argmax(masked)), log_z, checks, True)
    probs = torch.softmax(masked, dim=-1)
    return AWRSStep(int(torch.multinomial(probs, 1, generator=generator)), log_z, checks, True)
