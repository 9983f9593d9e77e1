"""Self-speculation by layer skipping (plugin.speculation.layer_skip, SWIFT): lossless by
test, like every drafter (tests/test_speculative.py).

* Greedy: output equals non-speculative output token for token on a tiny random model
  (a layer given) and on the default model (layers given, and chosen from the context).
* Sampling: speculative samples follow masked decoding's exact distribution
  (chi-square against the enumerated language).
* The draft reads the loop's cache and never writes it; bad layer sets and models it
  cannot run on are ``OptionError``s naming them.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from grammars.regex import compile_regex
from plugin import OptionError, constrained_generate
from plugin.kv.cache import extend, layers_of
from plugin.speculation import SpeculativeConfig
from plugin.speculation.layer_skip import candidate_sets, choose_layers, skipping_forward
from tests.exact_distributions import LANGUAGE, chi_square_pvalue, enumerate_language, exact_and_masked


def _config(**kwargs) -> SpeculativeConfig:
    """Drafts as the drafter makes them (not cut to the machine's forward cost: the
    tests judge the drafter's own tokens)."""
    kwargs.setdefault("fit_cost", False)
    return SpeculativeConfig(drafters=("layer_skip",), **kwargs)


@pytest.mark.parametrize(
    ("prompt", "constraint"),
    [
        ("alpha beta gamma alpha beta", {"regex": r"[a-z ]{1,40}\."}),
        ("def add(a, b):\n    return a + b\n\ndef add(a, b):\n", {"grammar": "python"}),
        ("Write JSON:", {"json_schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}),
        ("x y z", {}),
    ],
)
def test_greedy_layer_skip_is_token_for_token_on_a_tiny_model(
    tiny_model, default_tokenizer, prompt, constraint
):
    plain = constrained_generate(tiny_model, default_tokenizer, prompt, max_new_tokens=24, **constraint)
    for skip in ((1,), (0,)):
        fast = constrained_generate(
            tiny_model,
            default_tokenizer,
            prompt,
            max_new_tokens=24,
            speculative=_config(skip_layers=skip, stop_threshold=1.0, max_draft=4),
            **constraint,
        )
        assert fast.token_ids == plain.token_ids and fast.finish_reason == plain.finish_reason
        spec = fast.stats["speculative"]
        assert spec["drafter_failures"] == {}
        assert spec["layer_skip"]["skipped_layers"] == list(skip) and spec["layer_skip"]["drafting"]
        if len(plain.token_ids) > 1:
            assert spec["per_drafter"]["layer_skip"]["drafted"] > 0


def test_the_skipping_forward_reads_the_cache_without_writing_it(tiny_model, default_tokenizer):
    from transformers import DynamicCache

    ids = default_tokenizer.encode("alpha beta gamma delta", add_special_tokens=False)
    cache = DynamicCache()
    full = extend(tiny_model, cache, ids)
    keys, values = layers_of(cache)
    before = [k.clone() for k in keys]
    from plugin.kv.cache import cache_over

    # nothing skipped: the same logits as the model's own forward over the last token
    view = cache_over(keys, values, len(ids) - 1)
    same = skipping_forward(tiny_model, view, len(ids) - 1, ids[-1:], frozenset())
    assert torch.allclose(same[0], full, atol=1e-4)
    # several tokens at once (a causal mask over the cache) equal them one at a time
    view = cache_over(keys, values, 1)
    rows = skipping_forward(tiny_model, view, 1, ids[1:], frozenset({1}), rows=len(ids) - 1)
    view = cache_over(keys, values, 1)
    for i, token in enumerate(ids[1:]):
        one = skipping_forward(tiny_model, view, 1 + i, [token], frozenset({1}))
        assert torch.allclose(rows[i], one[0], atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(layers_of(cache)[0], before, strict=True))


def test_sampled_layer_skip_follows_masked_decoding_exactly(tiny_model, default_tokenizer):
    """Drafts from the model without its second layer are often wrong: the accept and
    residual rule must leave masked decoding's distribution."""
    piece = {t: default_tokenizer.convert_tokens_to_ids(t) for t in ("x", "ab", "bb", "a", "b")}
    prompt_ids = [piece[t] for t in ("x", "bb", "b", "ab", "a", "bb", "a", "ab", "b")]
    constraint = compile_regex(LANGUAGE, default_tokenizer)
    sequences = enumerate_language(tiny_model, constraint, prompt_ids, default_tokenizer.eos_token_id)
    _, masked = exact_and_masked(sequences)
    runs = 600
    counts: Counter = Counter()
    drafted = accepted = 0
    config = _config(skip_layers=(1,), stop_threshold=1.0, max_draft=3)
    for seed in range(runs):
        gen = constrained_generate(
            tiny_model,
            default_tokenizer,
            prompt_ids,
            constraint=constraint,
            temperature=1.0,
            seed=seed,
            max_new_tokens=8,
            speculative=config,
        )
        assert gen.valid
        counts[tuple(gen.token_ids)] += 1
        drafted += gen.stats["speculative"]["drafted_tokens"]
        accepted += gen.stats["speculative"]["accepted_tokens"]
    assert drafted > runs / 2 and 0 < accepted < drafted  # both paths ran
    assert chi_square_pvalue(counts, masked, runs) > 1e-3


def test_default_model_layer_skip_is_lossless_and_chooses_from_the_context(default_model):
    model, tokenizer = default_model
    code = (
        "def area(width, height):\n    return width * height\n\n\n# the same function, renamed to surface\n"
    )
    plain = constrained_generate(model, tokenizer, code, grammar="python", max_new_tokens=20)
    given = constrained_generate(
        model,
        tokenizer,
        code,
        grammar="python",
        max_new_tokens=20,
        speculative=_config(skip_layers=(9, 15, 21)),
    )
    assert given.token_ids == plain.token_ids
    assert given.stats["speculative"]["per_drafter"]["layer_skip"]["accepted"] > 0
    chosen = constrained_generate(
        model, tokenizer, code, grammar="python", max_new_tokens=20, speculative="layer_skip"
    )
    assert chosen.token_ids == plain.token_ids
    report = chosen.stats["speculative"]["layer_skip"]
    layers = model.config.num_hidden_layers
    assert report["skipped_layers"] and all(2 <= i < layers - 2 for i in report["skipped_layers"])
    assert 0.0 <= report["match"] <= 1.0
    # drafting follows the estimate: chosen layers draft only where they are estimated to pay
    assert report["drafting"] == (report["estimated_gain"] >= 1.0)
    if not report["drafting"]:
        assert chosen.stats["speculative"]["drafted_tokens"] == 0 and "not to pay" in report["why"]


def test_candidate_layer_sets_keep_the_edges_and_a_shallow_model_has_none(tiny_model):
    sets = candidate_sets(30)
    assert sets and all(all(2 <= i < 28 for i in s) and list(s) == sorted(set(s)) for s in sets)
    assert candidate_sets(30) == sets  # seeded: the same every time
    assert candidate_sets(4) == []
    from transformers import DynamicCache

    cache = DynamicCache()
    ids = list(range(100, 140))
    extend(tiny_model, cache, ids)
    assert choose_layers(tiny_model, cache, len(ids), ids) is None  # 2 layers: nothing to skip


def test_bad_layer_sets_and_models_are_option_errors(tiny_model, default_tokenizer):
    for bad in ([], ["3"], 3, [True]):
        with pytest.raises(OptionError, match="skip_layers must be"):
            _config(skip_layers=bad)
    with pytest.raises(OptionError, match=r"skip_layers \[7\] out of range: the model has layers 0..1"):
        constrained_generate(tiny_model, default_tokenizer, "x", speculative=_config(skip_layers=(7,)))
    with pytest.raises(OptionError, match="at least one must stay"):
        constrained_generate(tiny_model, default_tokenizer, "x", speculative=_config(skip_layers=(0, 1)))
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(default_tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64)
    ).eval()
    with pytest.raises(OptionError, match=r"'layer_skip' needs a decoder-only model with model\.layers"):
        constrained_generate(gpt2, default_tokenizer, "x", speculative="layer_skip", max_new_tokens=2)
