"""ASAp (plugin/asap.py) against the exact grammar-conditional distribution.

A tiny random-weight Llama (built from a config on the default tokenizer's vocabulary,
its output layer sharpened so that it puts real mass on tokens the constraint refuses)
and a finite language, ``[ab]{1,3}`` (14 strings, more token sequences), whose every
token sequence can be enumerated with its exact model probability. Three distributions over those sequences:

* exact: ``P(x | x ∈ L)``, the target;
* masked decoding: the product of ``P(t|w) / A(w)``;
* ASAp's proposal after K samples: the product of ``P(t|w)·EFG(w t)`` renormalised,
  with the trie's EFG estimates.

ASAp starts as masked decoding (K = 0) and its KL to the exact distribution must fall
as K grows, ending far below masked decoding's.
"""

from __future__ import annotations

import math

import pytest
import torch

from grammars import compile_regex
from plugin.api import constrained_generate
from plugin.asap import ASApTrie

LANGUAGE = "[ab]{1,3}"


@pytest.fixture(scope="module")
def tiny_model(default_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    config = LlamaConfig(
        vocab_size=len(default_tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=default_tokenizer.bos_token_id,
        eos_token_id=default_tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(60.0)  # sharpen: mass moves onto a few tokens, many refused
    return model


def _probs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    return torch.softmax(logits, dim=-1)


def _enumerate(model, tokenizer, prompt_ids):
    """Every token sequence of the language (EOS last) with, per step, the model's
    probabilities and the allowed mask."""
    constraint = compile_regex(LANGUAGE, tokenizer)
    eos = tokenizer.eos_token_id
    out = []

    def walk(matcher, seq, steps):
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
    return constraint, out


def _kl(p: dict, q: dict) -> float:
    return sum(pv * math.log(pv / q[k]) for k, pv in p.items() if pv > 0)


def _proposal(trie: ASApTrie, sequences) -> dict:
    """ASAp's sampling distribution over the enumerated sequences, from the trie."""
    out = {}
    for seq, steps in sequences:
        node, logp = trie.root, 0.0
        for probs, mask, t in steps:
            w = trie.weights(node, probs.clone(), mask) if node is not None else probs * mask
            logp += math.log(float(w[t]) / float(w.sum()))
            node = node.kids[t][1] if node is not None and t in node.kids else None
        out[seq] = math.exp(logp)
    return out


def test_asap_converges_to_the_grammar_conditional_distribution(tiny_model, default_tokenizer):
    prompt_ids = default_tokenizer.encode("x", add_special_tokens=False)
    constraint, sequences = _enumerate(tiny_model, default_tokenizer, prompt_ids)
    assert 14 <= len(sequences) <= 400
    joint = {seq: math.prod(float(p[t]) for p, _, t in steps) for seq, steps in sequences}
    total = sum(joint.values())
    exact = {k: v / total for k, v in joint.items()}
    masked = {
        seq: math.prod(float(p[t]) / float(p[m].sum()) for p, m, t in steps) for seq, steps in sequences
    }
    kl_masked = _kl(exact, masked)
    assert kl_masked > 0.05, "the setup must make masked decoding visibly biased"

    trie = ASApTrie()
    assert _kl(exact, _proposal(trie, sequences)) == pytest.approx(kl_masked, rel=1e-3)
    curve = {}
    for k in range(1, 301):
        gen = constrained_generate(
            tiny_model,
            default_tokenizer,
            "x",
            constraint=constraint,
            sampler="asap",
            asap_trie=trie,
            temperature=1.0,
            seed=k,
            max_new_tokens=6,
        )
        assert gen.valid and gen.finish_reason == "stop"
        if k in (3, 10, 30, 100, 300):
            curve[k] = _kl(exact, _proposal(trie, sequences))
    print(f"\nKL(exact || masked) = {kl_masked:.4f}; KL(exact || ASAp after K samples) = {curve}")
    assert curve[300] <= curve[3] + 1e-9 and curve[300] < 0.2 * kl_masked


def test_asap_trie_round_trips_through_a_file(tiny_model, default_tokenizer, tmp_path):
    constraint = compile_regex(LANGUAGE, default_tokenizer)
    trie = ASApTrie()
    for k in range(5):
        constrained_generate(
            tiny_model,
            default_tokenizer,
            "y",
            constraint=constraint,
            sampler="asap",
            asap_trie=trie,
            temperature=1.0,
            seed=k,
            max_new_tokens=6,
        )
    trie.save(tmp_path / "trie.json")
    back = ASApTrie.load(tmp_path / "trie.json")
    assert back.samples == 5 and back.root.efg == pytest.approx(trie.root.efg)
    assert set(back.root.kids) == set(trie.root.kids)


def test_asap_refuses_top_p(tiny_model, default_tokenizer):
    from plugin.errors import OptionError

    with pytest.raises(OptionError, match="top_p"):
        constrained_generate(
            tiny_model,
            default_tokenizer,
            "x",
            regex=LANGUAGE,
            sampler="asap",
            temperature=1.0,
            top_p=0.9,
            max_new_tokens=6,
        )
