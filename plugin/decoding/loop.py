"""The decode loop: owns the model forward and its KV cache.

One prefill over the prompt, then one forward per sampled token. When the constraint
leaves no choice (``forced_tokens``), every forced token is appended and the model
reads them all in a single forward (jump-forward): masked sampling would have picked
them with probability 1, so the output distribution is unchanged and the model runs
fewer, wider steps. Near the end of the budget, matchers that can bound their distance
to acceptance (``restrict_to_budget``) drop tokens after which the output could no
longer finish, so a constrained output ends valid rather than cut off. The loop ends
when the model picks EOS (allowed only where the matcher accepts), when the constraint
allows nothing but EOS, or when tokens run out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from plugin.errors import OptionError
from plugin.kv.cache import CachedPrefix, extend
from plugin.matcher import Matcher
from plugin.samplers.asap import ASApTrie
from plugin.samplers.awrs import awrs_step
from plugin.samplers.sampling import SamplingParams, apply_repetition_penalty, choose_token, filter_logits
from plugin.vocabulary import Vocabulary

FINISH_STOP = "stop"  # the model ended where the constraint accepts, or nothing else was allowed
FINISH_LENGTH = "length"  # max_new_tokens ran out first
FINISH_DEAD_END = "dead_end"  # the constraint allowed no token at all (a grammar bug, reported)
FINISH_CANCELLED = "cancelled"  # should_stop() asked to stop


@dataclass
class DecodeResult:
    """What the loop produced, EOS excluded from ``token_ids``."""

    token_ids: list[int]
    finish_reason: str
    stats: dict[str, Any]
    step_constraint_us: list[float] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; NaN when empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def stop_token_ids(model: Any, vocab: Vocabulary) -> frozenset[int]:
    """EOS ids of the tokenizer plus those of the model's generation config."""
    ids = set(vocab.eos_ids)
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos:
        ids.update(config_eos)
    return frozenset(ids)


class _Model:
    """The model plus its KV cache, fed incrementally; the cache may start with a cached
    prefix of the prompt (an edit session's), which is read and never written."""

    def __init__(self, model: Any, prompt_cache: CachedPrefix | None = None) -> None:
        from transformers import DynamicCache

        self.model = model
        self.device = next(model.parameters()).device
        self.cache = prompt_cache.cache() if prompt_cache is not None else DynamicCache()
        self.cached = len(prompt_cache.ids) if prompt_cache is not None else 0
        self.seconds = 0.0

    def feed(self, token_ids: list[int]) -> torch.Tensor:
        """Append ``token_ids`` to the context; return float32 logits for the next token."""
        start = time.perf_counter()
        logits = extend(self.model, self.cache, token_ids)
        self.seconds += time.perf_counter() - start
        return logits


def decode(
    model: Any,
    vocab: Vocabulary,
    prompt_ids: list[int],
    matcher: Matcher | None,
    params: SamplingParams,
    max_new_tokens: int,
    *,
    seed: int | None = None,
    jump_forward: bool = True,
    finish_within_budget: bool = True,
    should_stop: Callable[[], bool] | None = None,
    sampler: str = "mask",
    asap_trie: ASApTrie | None = None,
    prompt_cache: CachedPrefix | None = None,
) -> DecodeResult:
    """Generate up to ``max_new_tokens`` tokens after ``prompt_ids`` under ``matcher``.

    ``sampler``: ``"mask"`` (full mask every step) or ``"awrs"`` (adaptive weighted
    rejection sampling, :mod:`plugin.samplers.awrs`: a few ``accepts`` calls per step; its log
    weights are summed into ``stats["log_weight"]``). With AWRS, jump-forward is off
    (a forced token's probability belongs in the weight), and the steps within the
    matcher's ``budget_window()`` of the end use the mask, so finish-within-budget holds.
    ``"asap"`` (grammar-aligned sampling, :mod:`plugin.samplers.asap`) needs ``asap_trie``: each
    step samples from the allowed tokens weighted by the trie's EFG estimates, every
    token (end-of-sequence included) is sampled, and the trie learns from the result.
    ``prompt_cache``: the KV cache of the first tokens of ``prompt_ids`` (they must match);
    only the rest of the prompt is encoded.
    """
    start = time.perf_counter()
    if prompt_cache is not None:
        cached = list(prompt_cache.ids)
        whole = len(cached) == len(prompt_ids) and prompt_cache.next_logits is not None
        if (len(cached) >= len(prompt_ids) and not whole) or prompt_ids[: len(cached)] != cached:
            raise OptionError(
                f"prompt_cache holds {len(cached)} tokens that are not a proper prefix of the "
                f"{len(prompt_ids)}-token prompt (the whole prompt needs next_logits)"
            )
    runner = _Model(model, prompt_cache)
    generator = torch.Generator(device=runner.device)
    generator.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
    stop_ids = stop_token_ids(model, vocab)
    out: list[int] = []
    step_us: list[float] = []
    forced_count = 0
    budget_steps = 0
    checks = 0
    finish = FINISH_LENGTH
    if prompt_cache is not None and runner.cached == len(prompt_ids):
        assert prompt_cache.next_logits is not None
        logits = prompt_cache.next_logits.clone()
    else:
        logits = runner.feed(prompt_ids[runner.cached :])
    prefill_seconds = time.perf_counter() - start
    width = logits.numel()
    mask = torch.zeros(width, dtype=torch.bool, device=runner.device)
    awrs = sampler == "awrs" and matcher is not None
    asap = asap_trie if sampler == "asap" and matcher is not None else None
    if awrs or asap is not None:
        jump_forward = False  # every token's probability must be seen
    node = asap.root if asap is not None else None
    path = [node]
    log_weight = 0.0
    fallbacks = 0
    awrs_checks: list[int] = []
    first_token_seconds: float | None = None  # time to first token, prefill included

    while len(out) < max_new_tokens:
        if should_stop is not None and should_stop():
            finish = FINISH_CANCELLED
            break
        t0 = time.perf_counter()
        if matcher is not None:
            if asap is None and matcher.is_finished():
                step_us.append((time.perf_counter() - t0) * 1e6)
                finish = FINISH_STOP
                break
            forced = matcher.forced_tokens()[: max_new_tokens - len(out)] if jump_forward else []
            if forced:
                for tok in forced:
                    matcher.advance(tok)
                step_us.append((time.perf_counter() - t0) * 1e6)
                if first_token_seconds is None:
                    first_token_seconds = time.perf_counter() - start
                out.extend(forced)
                forced_count += len(forced)
                logits = runner.feed(forced)
                continue
            token = None
            if awrs and not (finish_within_budget and max_new_tokens - len(out) <= matcher.budget_window()):
                scores = apply_repetition_penalty(logits, out, params.repetition_penalty)
                step = awrs_step(
                    scores if params.greedy else filter_logits(scores, params),
                    matcher,
                    greedy=params.greedy,
                    generator=generator,
                )
                token = step.token
                checks += step.checks
                awrs_checks.append(step.checks)
                fallbacks += step.fell_back
                log_weight += step.log_weight
            else:
                mask.zero_()
                matcher.fill_mask(mask)
                checks += vocab.size
                if finish_within_budget and matcher.restrict_to_budget(mask, max_new_tokens - len(out)):
                    budget_steps += 1
                if not bool(mask.any()):
                    step_us.append((time.perf_counter() - t0) * 1e6)
                    finish = FINISH_DEAD_END
                    break
        else:
            token = None
        t_constraint = time.perf_counter() - t0
        if token is None:  # not already chosen by AWRS
            logits = apply_repetition_penalty(logits, out, params.repetition_penalty)
            if asap is not None:
                token, node = asap.sample(node, logits, mask, params, generator)
                path.append(node)
            else:
                token = choose_token(logits, mask if matcher is not None else None, params, generator)
        t1 = time.perf_counter()
        if matcher is not None:
            matcher.advance(token)
        t_constraint += time.perf_counter() - t1
        step_us.append(t_constraint * 1e6)
        if first_token_seconds is None:
            first_token_seconds = time.perf_counter() - start
        if token in stop_ids:
            finish = FINISH_STOP
            break
        out.append(token)
        if len(out) < max_new_tokens:
            logits = runner.feed([token])

    if asap is not None:
        asap.update(path, complete=finish == FINISH_STOP)
    if finish == FINISH_LENGTH and matcher is not None and matcher.is_finished():
        finish = FINISH_STOP  # the budget ended exactly where the constraint completes
    seconds = time.perf_counter() - start
    constraint_seconds = sum(step_us) / 1e6
    stats: dict[str, Any] = {
        "tokens": len(out),
        "prompt_tokens": len(prompt_ids),
        "cached_prompt_tokens": runner.cached,
        "seconds": seconds,
        "model_seconds": runner.seconds,
        "prefill_seconds": prefill_seconds,
        "first_token_seconds": first_token_seconds,
        # decoding speed: the prompt's prefill is reported apart
        "tokens_per_second": len(out) / (seconds - prefill_seconds) if seconds > prefill_seconds else 0.0,
        "constraint_seconds": constraint_seconds,
        "constraint_checks": checks,
        "forced_tokens": forced_count,
        "budget_restricted_steps": budget_steps,
        "sampler": sampler,
    }
    if awrs:
        stats["log_weight"] = log_weight
        stats["awrs_fallbacks"] = fallbacks
        if awrs_checks:
            stats["checks_per_token_mean"] = sum(awrs_checks) / len(awrs_checks)
            stats["checks_per_token_p50"] = percentile([float(c) for c in awrs_checks], 0.5)
            stats["checks_per_token_p99"] = percentile([float(c) for c in awrs_checks], 0.99)
    if step_us:
        stats["constraint_us_per_step_p50"] = percentile(step_us, 0.5)
        stats["constraint_us_per_step_p99"] = percentile(step_us, 0.99)
    return DecodeResult(out, finish, stats, step_us)
