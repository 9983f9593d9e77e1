"""AWRS (plugin/samplers/awrs.py), tested statistically against exact enumerated distributions.

Each test takes a real matcher (the built-in JSON grammar on the default tokenizer) at a
fixed state and a fixed logits vector, so the locally constrained distribution
``softmax(logits) restricted to the allowed tokens`` and its mass ``Z`` are known
exactly from the full mask. AWRS is then run with many seeds: the token frequencies
must pass a chi-square test against that distribution, and the mean weight must lie
within the confidence interval of ``Z``. Seeds are fixed, so CI is stable; the
thresholds (p > 1e-3, 4 standard errors) make a false alarm on a correct sampler rare.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chisquare

from grammars import compile as compile_grammar
from plugin.samplers.awrs import awrs_step

RUNS = 3000


def _setup(default_tokenizer, prefix: str, boost: float, seed: int = 0):
    """A matcher after ``prefix`` and logits where the allowed set has mass ~ boost-controlled."""
    m = compile_grammar("json", default_tokenizer).matcher_after(prefix)
    mask = torch.zeros(m.vocab.size, dtype=torch.bool)
    m.fill_mask(mask)
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(m.vocab.size, generator=g) * 2.0
    allowed = torch.nonzero(mask).flatten()
    favoured = allowed[torch.randperm(allowed.numel(), generator=g)[:40]]
    logits[favoured] += boost
    disallowed = torch.nonzero(~mask).flatten()
    logits[disallowed[torch.randperm(disallowed.numel(), generator=g)[:40]]] += 5.0
    probs = torch.softmax(logits, dim=-1)
    z = float(probs[mask].sum())
    target = torch.where(mask, probs, torch.zeros_like(probs)) / z
    return m, logits, mask, target, z


def _chi_square(tokens: list[int], target: torch.Tensor) -> float:
    """p-value of the observed token counts against ``target`` (rare tokens pooled)."""
    counts = torch.bincount(torch.tensor(tokens), minlength=target.numel()).double()
    expected = target.double() * len(tokens)
    big = expected >= 5
    obs = [*counts[big].tolist(), float(counts[~big].sum())]
    exp = [*expected[big].tolist(), float(expected[~big].sum())]
    if exp[-1] < 5:  # fold a small pooled bin into the largest one
        obs[0] += obs.pop()
        exp[0] += exp.pop()
    scale = sum(obs) / sum(exp)  # float rounding only
    return float(chisquare(obs, [e * scale for e in exp]).pvalue)


@pytest.mark.parametrize(
    ("boost", "max_rejections"),
    [(8.0, 16), (6.0, 16), (6.0, 2)],  # Z = 0.59; Z = 0.17 (more rejections); forced fallbacks
)
def test_awrs_samples_the_locally_constrained_distribution(default_tokenizer, boost, max_rejections):
    m, logits, mask, target, z = _setup(default_tokenizer, '{"a": [1, ', boost)
    gen = torch.Generator().manual_seed(1234)
    steps = [
        awrs_step(logits, m, greedy=False, generator=gen, max_rejections=max_rejections) for _ in range(RUNS)
    ]
    tokens = [s.token for s in steps]
    assert all(bool(mask[t]) for t in tokens)
    assert _chi_square(tokens, target) > 1e-3
    weights = torch.tensor([math.exp(s.log_weight) for s in steps], dtype=torch.float64)
    stderr = float(weights.std()) / math.sqrt(RUNS)
    assert abs(float(weights.mean()) - z) <= 4 * stderr + 1e-9, (float(weights.mean()), z, stderr)
    if max_rejections == 2:
        assert any(s.fell_back for s in steps)
    else:  # a handful of checks, not the vocabulary; the full mask only rarely
        assert sorted(s.checks for s in steps)[RUNS // 2] <= 10
        assert sum(s.fell_back for s in steps) < 0.1 * RUNS


def test_awrs_weight_is_exact_when_everything_or_one_token_is_allowed(default_tokenizer):
    # Inside a JSON string almost every token is allowed: the estimate is 1 - p(refused).
    m, logits, _, _, z = _setup(default_tokenizer, '{"a": "', 0.0)
    gen = torch.Generator().manual_seed(5)
    weights = [math.exp(awrs_step(logits, m, greedy=False, generator=gen).log_weight) for _ in range(300)]
    assert abs(sum(weights) / len(weights) - z) < 0.02
    # After "[tr" only "ue"-spelling tokens are allowed: the weight is their mass.
    m2 = compile_grammar("json", default_tokenizer).matcher_after("[tr")
    mask2 = torch.zeros(m2.vocab.size, dtype=torch.bool)
    m2.fill_mask(mask2)
    probs = torch.softmax(logits, dim=-1)
    step = awrs_step(logits, m2, greedy=False, generator=gen)
    assert bool(mask2[step.token])
    if int(mask2.sum()) == 1:
        assert math.isclose(math.exp(step.log_weight), float(probs[mask2].sum()), rel_tol=1e-4)


def test_awrs_greedy_is_the_constrained_argmax(default_tokenizer):
    m, logits, mask, _, _ = _setup(default_tokenizer, '{"a": [1, ', 3.0)
    step = awrs_step(logits, m, greedy=True)
    assert step.token == int(torch.argmax(logits.masked_fill(~mask, -math.inf)))


def test_awrs_generation_is_valid_and_cheap(default_model, default_tokenizer):
    import json

    from plugin.api import constrained_generate

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    for seed in range(3):
        gen = constrained_generate(
            default_model[0],
            default_tokenizer,
            "A JSON object with a number n:",
            json_schema=schema,
            sampler="awrs",
            temperature=1.0,
            seed=seed,
            max_new_tokens=48,
        )
        assert gen.finish_reason == "stop" and gen.valid
        assert isinstance(json.loads(gen.text)["n"], int)
        assert gen.stats["checks_per_token_p50"] <= 3  # the mean includes the rare full masks
        assert math.isfinite(gen.stats["log_weight"])
