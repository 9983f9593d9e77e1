"""Sequential Monte Carlo over AWRS particles (Lipkin et al. 2025).

Masked decoding and AWRS both sample each token from the *locally* constrained
distribution, which over-weights prefixes where the model puts little mass on allowed
continuations. SMC corrects this globally: ``N`` particles are extended by AWRS, each
carrying the product of its steps' weight estimates ``Ẑ_t`` (unbiased for the allowed
mass ``Z_t``); when the effective sample size ``(Σw)² / Σw²`` falls below
``ess_threshold · N`` the particles are resampled in proportion to their weights (and the
weights reset to their mean), so the population follows ``P(x | x ∈ L)`` as ``N`` grows.

The prompt is encoded once; its KV cache is copied to the ``N`` rows of a batch, and all
particles run through the model together, one batched forward per step. Resampling
reorders the cache rows; each particle has its own (forked) matcher. A finished particle
keeps its row (fed a dummy token, its output ignored) until every particle has finished.
As in the decode loop, steps within the matcher's ``budget_window()`` of the end of the
token budget use the full mask restricted to tokens after which the output can still
finish in time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from plugin.decoding.loop import FINISH_LENGTH, FINISH_STOP, stop_token_ids
from plugin.kv.cache import with_cache
from plugin.matcher import Matcher
from plugin.samplers.awrs import awrs_step, masked_step
from plugin.samplers.sampling import SamplingParams, apply_repetition_penalty, filter_logits
from plugin.vocabulary import Vocabulary


@dataclass
class Particle:
    """One SMC particle: its tokens (EOS excluded), log weight and how it ended."""

    token_ids: list[int]
    log_weight: float
    finish_reason: str
    matcher: Matcher


@dataclass
class SMCResult:
    chosen: int  # index of the particle drawn as the answer (in proportion to weights)
    particles: list[Particle]
    stats: dict[str, Any]


def smc_decode(
    model: Any,
    vocab: Vocabulary,
    prompt_ids: list[int],
    matcher: Matcher,
    params: SamplingParams,
    max_new_tokens: int,
    *,
    particles: int = 4,
    ess_threshold: float = 0.5,
    seed: int | None = None,
) -> SMCResult:
    """Run ``particles`` AWRS particles with resampling; see the module docstring."""
    from transformers import DynamicCache

    start = time.perf_counter()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
    stops = stop_token_ids(model, vocab)
    n = particles
    cache = DynamicCache()
    with torch.inference_mode():
        first = model(input_ids=torch.tensor([prompt_ids], device=device), **with_cache(model, cache))
    cache.batch_repeat_interleave(n)
    logits = first.logits[0, -1].float().expand(n, -1)
    pool = [Particle([], 0.0, FINISH_LENGTH, matcher.fork()) for _ in range(n)]
    done = [False] * n
    resamples = checks = steps = 0
    model_seconds = 0.0
    while not all(done) and steps < max_new_tokens:
        steps += 1
        feed = []
        for i, part in enumerate(pool):
            if done[i]:
                feed.append(min(stops))
                continue
            row = apply_repetition_penalty(logits[i], part.token_ids, params.repetition_penalty)
            row = row if params.greedy else filter_logits(row, params)
            remaining = max_new_tokens - len(part.token_ids)
            if remaining <= part.matcher.budget_window():  # as the decode loop: finish within the budget
                mask = torch.zeros(row.numel(), dtype=torch.bool, device=device)
                part.matcher.fill_mask(mask)
                part.matcher.restrict_to_budget(mask, remaining)
                step = masked_step(torch.log_softmax(row, dim=-1), mask, params.greedy, gen, row.numel())
            else:
                step = awrs_step(row, part.matcher, greedy=params.greedy, generator=gen)
            checks += step.checks
            part.log_weight += step.log_weight
            part.matcher.advance(step.token)
            if step.token in stops:
                done[i] = True
                part.finish_reason = FINISH_STOP
                feed.append(step.token)
            else:
                part.token_ids.append(step.token)
                feed.append(step.token)
        if _ess(pool) < ess_threshold * n and not all(done):
            order = _resample(pool, gen)
            pool = [_copy(pool[j]) for j in order]
            done = [done[j] for j in order]
            mean = _logmeanexp([p.log_weight for p in pool])
            for p in pool:
                p.log_weight = mean
            cache.reorder_cache(torch.tensor(order, device=device))
            resamples += 1
        if all(done) or steps >= max_new_tokens:
            break
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model(input_ids=torch.tensor(feed, device=device)[:, None], **with_cache(model, cache))
        model_seconds += time.perf_counter() - t0
        logits = out.logits[:, -1].float()
    for i, part in enumerate(pool):
        if not done[i] and part.matcher.is_finished():
            part.finish_reason = FINISH_STOP  # as the decode loop: the budget ended where the constraint does
    weights = torch.tensor([p.log_weight for p in pool], dtype=torch.float64)
    if torch.isfinite(weights).any():
        chosen = int(torch.multinomial(torch.softmax(weights, dim=0).float(), 1, generator=_cpu(gen)))
    else:
        chosen = 0
    seconds = time.perf_counter() - start
    tokens = sum(len(p.token_ids) for p in pool)
    stats = {
        "particles": n,
        "resamples": resamples,
        "steps": steps,
        "seconds": seconds,
        "model_seconds": model_seconds,
        "constraint_checks": checks,
        "checks_per_token_mean": checks / max(1, tokens),
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        "ess_final": _ess(pool),
    }
    return SMCResult(chosen, pool, stats)


def _ess(pool: list[Particle]) -> float:
    w = torch.tensor([p.log_weight for p in pool], dtype=torch.float64)
    if not torch.isfinite(w).any():
        return 0.0
    w = torch.softmax(w, dim=0)
    return float(1.0 / (w * w).sum())


def _resample(pool: list[Particle], gen: torch.Generator) -> list[int]:
    """Multinomial resampling of particle indices in proportion to their weights."""
    w = torch.softmax(torch.tensor([p.log_weight for p in pool], dtype=torch.float64), dim=0)
    return torch.multinomial(w.float().cpu(), len(pool), replacement=True, generator=_cpu(gen)).tolist()


def _cpu(gen: torch.Generator) -> torch.Generator | None:
    return gen if gen.device.type == "cpu" else None


def _copy(p: Particle) -> Particle:
    return Particle(list(p.token_ids), p.log_weight, p.finish_reason, p.matcher.fork())


def _logmeanexp(xs: list[float]) -> float:
    finite = [x for x in xs if x > -math.inf]
    if not finite:
        return -math.inf
    m = max(finite)
    return m + math.log(sum(math.exp(x - m) for x in finite) / len(xs))
