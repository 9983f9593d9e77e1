"""ASAp (plugin/samplers/asap.py) against the exact grammar-conditional distribution.

See ``tests/exact_distributions.py`` for the tiny model and the finite language. Three
distributions over the language's token sequences: exact ``P(x | x ∈ L)``; masked
decoding's; and ASAp's proposal after K samples (the product of ``P(t|w)·EFG(w t)``
renormalised, with the trie's EFG estimates). ASAp starts as masked decoding (K = 0) and
its KL to the exact distribution must fall as K grows, ending far below masked decoding's.
"""

from __future__ import annotations

import math

import pytest

from grammars import compile_regex
from plugin.api import constrained_generate
from plugin.samplers.asap import ASApTrie
from tests.exact_distributions import LANGUAGE, enumerate_language, exact_and_masked, kl


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


def _asap_sample(model, tokenizer, prompt, constraint, trie, seed):
    return constrained_generate(
        model,
        tokenizer,
        prompt,
        constraint=constraint,
        sampler="asap",
        asap_trie=trie,
        temperature=1.0,
        seed=seed,
        max_new_tokens=6,
    )


def test_asap_converges_to_the_grammar_conditional_distribution(sharp_tiny_model, default_tokenizer):
    prompt_ids = default_tokenizer.encode("x", add_special_tokens=False)
    constraint = compile_regex(LANGUAGE, default_tokenizer)
    sequences = enumerate_language(sharp_tiny_model, constraint, prompt_ids, default_tokenizer.eos_token_id)
    assert 14 <= len(sequences) <= 400
    exact, masked = exact_and_masked(sequences)
    kl_masked = kl(exact, masked)
    assert kl_masked > 0.05, "the setup must make masked decoding visibly biased"

    trie = ASApTrie()
    assert kl(exact, _proposal(trie, sequences)) == pytest.approx(kl_masked, rel=1e-3)
    curve = {}
    for k in range(1, 301):
        gen = _asap_sample(sharp_tiny_model, default_tokenizer, "x", constraint, trie, k)
        assert gen.valid and gen.finish_reason == "stop"
        if k in (3, 10, 30, 100, 300):
            curve[k] = kl(exact, _proposal(trie, sequences))
    print(f"\nKL(exact || masked) = {kl_masked:.4f}; KL(exact || ASAp after K samples) = {curve}")
    assert curve[300] <= curve[3] + 1e-9 and curve[300] < 0.2 * kl_masked


def test_asap_trie_round_trips_through_a_file(sharp_tiny_model, default_tokenizer, tmp_path):
    constraint = compile_regex(LANGUAGE, default_tokenizer)
    trie = ASApTrie()
    for k in range(5):
        _asap_sample(sharp_tiny_model, default_tokenizer, "y", constraint, trie, k)
    trie.save(tmp_path / "trie.json")
    back = ASApTrie.load(tmp_path / "trie.json")
    assert back.samples == 5 and back.root.efg == pytest.approx(trie.root.efg)
    assert set(back.root.kids) == set(trie.root.kids)


def test_asap_refuses_top_p(sharp_tiny_model, default_tokenizer):
    from plugin.errors import OptionError

    with pytest.raises(OptionError, match="top_p"):
        constrained_generate(
            sharp_tiny_model,
            default_tokenizer,
            "x",
            regex=LANGUAGE,
            sampler="asap",
            temperature=1.0,
            top_p=0.9,
            max_new_tokens=6,
        )
