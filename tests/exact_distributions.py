"""Exact distributions for the sampler tests: a tiny random Llama and a finite language.

A tiny random-weight Llama (built from a config on the default tokenizer's vocabulary,
its output layer sharpened so that it puts real mass on tokens the constraint refuses)
and a finite language whose every token sequence can be enumerated with its exact model
probability. From that enumeration: the exact grammar-conditional distribution
``P(x | x ∈ L)`` (the samplers' target) and masked decoding's distribution (the product
of ``P(t|w) / A(w)``), which the samplers are compared with.
"""

from __future__ import annotations

import math
from typing import Any

import torch

LANGUAGE = "[ab]{1,3}"  # 14 strings, more token sequences


def tiny_model(tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(60.0)  # sharpen: mass moves onto a few tokens, many refused
    return model


def _probs(model: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    return torch.softmax(logits, dim=-1)


def enumerate_language(model: Any, constraint: Any, prompt_ids: list[int], eos: int) -> list[tuple]:
    """Every token sequence of the constraint's (finite) language, EOS last, with per step
    ``(model probabilities, allowed mask, token)``."""
    out: list[tuple] = []

    def walk(matcher: Any, seq: list[int], steps: list) -> None:
        probs = _probs(model, prompt_ids + seq)
        mask = torch.zeros(probs.numel(), dtype=torch.bool)
        matcher.fill_mask(mask)
        for t in torch.nonzero(mask).flatten().tolist():
            here = [*steps, (probs, mask, t)]
            if t == eos:
                out.append((tuple(seq), here))
                continue
            kid = matcher.fork()
            kid.advance(t)
            walk(kid, [*seq, t], here)

    walk(constraint.matcher(), [], [])
    return out


def exact_and_masked(sequences: list[tuple]) -> tuple[dict, dict]:
    """The grammar-conditional distribution and masked decoding's, over the sequences."""
    joint = {seq: math.prod(float(p[t]) for p, _, t in steps) for seq, steps in sequences}
    total = sum(joint.values())
    exact = {k: v / total for k, v in joint.items()}
    masked = {
        seq: math.prod(float(p[t]) / float(p[m].sum()) for p, m, t in steps) for seq, steps in sequences
    }
    return exact, masked


def kl(p: dict, q: dict) -> float:
    return sum(pv * math.log(pv / q[k]) for k, pv in p.items() if pv > 0)


def total_variation(p: dict, q: dict) -> float:
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)


def chi_square_pvalue(counts: dict, target: dict, runs: int) -> float:
    """Chi-square p-value of sampled outcome ``counts`` (``runs`` draws) against the
    exact ``target`` distribution; outcomes expected fewer than 5 times are pooled."""
    from scipy.stats import chisquare

    keys = [k for k, p in target.items() if p * runs >= 5]
    observed = [counts.get(k, 0) for k in keys] + [runs - sum(counts.get(k, 0) for k in keys)]
    expected = [target[k] * runs for k in keys] + [runs * (1 - sum(target[k] for k in keys))]
    if expected[-1] < 1e-6:
        observed, expected = observed[:-1], expected[:-1]
    scale = sum(observed) / sum(expected)
    return float(chisquare(observed, [e * scale for e in expected]).pvalue)
