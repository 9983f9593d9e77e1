"""The edit-aware KV cache (plugin/kv): tokens, keys and logits against a full re-encode.

Tiny random models of each rotary layout over the real default tokenizer: Llama, Qwen2,
Mistral (half-split), Phi (partial, half-split), GPT-J (partial, interleaved), Cohere
(interleaved), GPT-2 (no RoPE: the re-encode fallback). First-layer keys depend only on
the token and its position, so after any edits and window moves they must equal those
of a fresh forward over the cached tokens: that checks every re-rotation exactly.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
import torch
import transformers as hf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin import OptionError, PromptError, constrained_generate
from plugin.kv import EditError, EditSession, RotaryUnavailable, read_rotary
from plugin.kv.cache import cache_over, extend, with_cache
from plugin.kv.edit_session import RECENT_STALE

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

_COMMON = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
LAYOUTS = {
    "llama": (hf.LlamaConfig, hf.LlamaForCausalLM, {"num_key_value_heads": 2, **_COMMON}),
    "qwen2": (hf.Qwen2Config, hf.Qwen2ForCausalLM, {"num_key_value_heads": 2, **_COMMON}),
    "mistral": (hf.MistralConfig, hf.MistralForCausalLM, {"num_key_value_heads": 2, **_COMMON}),
    "phi-partial": (hf.PhiConfig, hf.PhiForCausalLM, {"partial_rotary_factor": 0.5, **_COMMON}),
    "gptj-interleaved": (
        hf.GPTJConfig,
        hf.GPTJForCausalLM,
        {"n_embd": 64, "n_layer": 2, "n_head": 4, "rotary_dim": 8},
    ),
    "cohere-interleaved": (hf.CohereConfig, hf.CohereForCausalLM, {"num_key_value_heads": 2, **_COMMON}),
}
EXPECTED = {  # (rotary dims, interleaved)
    "llama": (16, False),
    "qwen2": (16, False),
    "mistral": (16, False),
    "phi-partial": (8, False),
    "gptj-interleaved": (8, True),
    "cohere-interleaved": (16, True),
}


def _build(name: str, tokenizer) -> torch.nn.Module:
    config_cls, model_cls, kwargs = LAYOUTS[name]
    torch.manual_seed(0)
    config = config_cls(vocab_size=len(tokenizer), max_position_embeddings=2048, **kwargs)
    return model_cls(config).eval()


@pytest.fixture(scope="module")
def layout_models(default_tokenizer):
    return {name: _build(name, default_tokenizer) for name in LAYOUTS}


@pytest.fixture(scope="module")
def gpt2_model(default_tokenizer):
    torch.manual_seed(0)
    config = hf.GPT2Config(
        vocab_size=len(default_tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=2048
    )
    return hf.GPT2LMHeadModel(config).eval()


SOURCE = Path(sysconfig.get_paths()["stdlib"], "textwrap.py").read_text(encoding="utf-8")
DOC = SOURCE[:1500]


@torch.inference_mode()
def _fresh(model, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """First-layer keys and last logits of a plain forward over ``ids``."""
    cache = hf.DynamicCache()
    out = model(input_ids=torch.tensor([ids]), **with_cache(model, cache))
    return cache.layers[0].keys, out.logits[0, -1].float()


def _check(session: EditSession, tokenizer) -> None:
    """The session agrees with its text: ids as the tokenizer gives them, the window's ids,
    and first-layer keys equal to a fresh forward over the cached tokens."""
    assert session.token_ids == tokenizer(session.text, add_special_tokens=False).input_ids
    start, stop = session.window
    assert session._cached == session._lead + session.token_ids[start:stop]
    assert stop - start <= session.context_tokens
    if session._cached:
        keys, _ = _fresh(session.model, session._cached)
        torch.testing.assert_close(session._keys[0], keys, rtol=1e-3, atol=1e-4)
        assert all(k.shape[2] == len(session._cached) for k in session._keys)
    if session._next_logits is not None:  # known logits = the cache read again at its last token
        last = len(session._cached) - 1
        again = extend(
            session.model, cache_over(session._keys, session._values, last), session._cached[last:]
        )
        torch.testing.assert_close(session._next_logits, again, rtol=1e-4, atol=1e-4)


_PIECES = st.sampled_from(
    ["", " ", "\n", "x", "    ", "def f(a):\n", "é", "😀", "  \n", "))", "12", "\t", "'s"]
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_edits_keep_tokens_and_keys_exact(data, layout_models, default_tokenizer):
    model = layout_models[data.draw(st.sampled_from(sorted(LAYOUTS)))]
    context = data.draw(st.sampled_from([None, 60]))
    session = EditSession(
        model, default_tokenizer, DOC[: data.draw(st.integers(0, 600))], context_tokens=context
    )
    for _ in range(data.draw(st.integers(1, 6))):
        n = len(session.text)
        start = data.draw(st.integers(0, n))
        end = data.draw(st.integers(start, min(n, start + 30)))
        session.edit(start, end, "".join(data.draw(st.lists(_PIECES, max_size=3))))
        _check(session, default_tokenizer)
        if session.text and data.draw(st.booleans()):
            offset = data.draw(st.integers(0, len(session.text)))
            if offset or session._lead:
                session.logits(offset)  # may move the window
                _check(session, default_tokenizer)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_rotary_read_from_each_layout(name, layout_models):
    rotary = read_rotary(layout_models[name])
    assert (rotary.rotary_dim, rotary.interleaved) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_suffix_keys_after_an_edit_equal_a_full_forward(name, layout_models, default_tokenizer):
    model = layout_models[name]
    session = EditSession(model, default_tokenizer, DOC)
    assert session.stats["rotation"].startswith("exact")
    middle = DOC.index("\n", 300)
    session.edit(middle, middle, "\n    inserted = [1, 2, 3]  # a new line")
    session.edit(100, 160, "")  # a deletion: negative shift
    assert session.stats["tokens_rerotated"] > 0
    _check(session, default_tokenizer)


@pytest.mark.parametrize("name", ["llama", "gptj-interleaved"])
def test_edit_at_the_end_gives_the_full_reencode_logits(name, layout_models, default_tokenizer):
    model = layout_models[name]
    session = EditSession(model, default_tokenizer, DOC)
    session.edit(len(DOC), len(DOC), "\n    return text")
    _, want = _fresh(model, session.token_ids)
    torch.testing.assert_close(session.logits(), want, rtol=1e-4, atol=1e-4)


def test_model_without_rope_reencodes_the_suffix_and_says_so(gpt2_model, default_tokenizer):
    with pytest.raises(RotaryUnavailable, match="no rotary"):
        read_rotary(gpt2_model)
    session = EditSession(gpt2_model, default_tokenizer, DOC)
    assert session.stats["rotation"].startswith("re-encode")
    session.edit(200, 230, "")  # fewer tokens: the suffix moves
    assert session.stats["tokens_reencoded_fallback"] > 0 and session.stats["tokens_rerotated"] == 0
    _, want = _fresh(gpt2_model, session.token_ids)
    torch.testing.assert_close(session.logits(), want, rtol=1e-4, atol=1e-4)  # re-encoded: exact


def test_length_dependent_rope_falls_back(default_tokenizer):
    torch.manual_seed(0)
    config = hf.LlamaConfig(
        vocab_size=len(default_tokenizer),
        num_key_value_heads=2,
        rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
        **_COMMON,
    )
    model = hf.LlamaForCausalLM(config).eval()
    session = EditSession(model, default_tokenizer, DOC[:300])
    assert "dynamic" in session.stats["rotation"] and session.stats["rotation"].startswith("re-encode")


def test_window_follows_the_offset_by_rotation(layout_models, default_tokenizer):
    session = EditSession(layout_models["llama"], default_tokenizer, SOURCE[:4000], context_tokens=100)
    n = len(session.token_ids)
    assert session.window == (n - 100, n)
    encoded = session.stats["tokens_encoded"]
    offset = SOURCE.rindex("\n", 0, 3850)  # a few lines up: the window moves back
    session.logits(offset)
    _check(session, default_tokenizer)
    ids = default_tokenizer(SOURCE[:offset], add_special_tokens=False).input_ids
    assert session.window[0] == len(ids) - 100 < n - 100
    assert session.stats["window_moves"] == 1
    # the new front, and the stale positions before the reading point (after a new front)
    assert session.stats["tokens_freshened"] == RECENT_STALE
    assert session.stats["tokens_encoded"] - encoded == n - len(ids) + RECENT_STALE
    session.logits()  # and forward again: tokens dropped at the front, nothing encoded but the tail
    _check(session, default_tokenizer)
    assert session.window == (n - 100, n) and session.stats["window_moves"] == 2


def test_generate_reuses_the_cache_and_leaves_it_unchanged(layout_models, default_tokenizer):
    model = layout_models["llama"]
    session = EditSession(model, default_tokenizer, DOC)
    session.edit(50, 60, "")
    session.logits()  # encodes the stale tokens before the end again (written back)
    before = [k.clone() for k in session._keys]
    gen = session.generate(max_new_tokens=8, regex=r"[a-z ]{1,20}")
    assert gen.stats["cached_prompt_tokens"] == len(session.token_ids)  # the logits there are known
    assert all(torch.equal(a, b) for a, b in zip(before, session._keys, strict=True))
    plain = constrained_generate(
        model, default_tokenizer, session.token_ids, max_new_tokens=8, regex=r"[a-z ]{1,20}"
    )
    fresh = EditSession(model, default_tokenizer, session.text).generate(
        max_new_tokens=8, regex=r"[a-z ]{1,20}"
    )
    assert fresh.token_ids == plain.token_ids  # no edit since the encode: exact


@pytest.mark.parametrize("name", ["llama", "gptj-interleaved"])
def test_stale_tokens_before_the_reading_point_are_encoded_again(name, layout_models, default_tokenizer):
    """After an edit far before the end, the last RECENT_STALE positions are stale; reading
    the logits there encodes them again against the current cache (written back), and the
    logits equal a forward that encodes those positions from the edited cache."""
    model = layout_models[name]
    session = EditSession(model, default_tokenizer, DOC, refresh_every=None)
    session.edit(40, 60, "")
    n = len(session._cached)
    assert all(session._stale[-RECENT_STALE:]) and not any(session._stale[:5])
    keys, values = [k.clone() for k in session._keys], [v.clone() for v in session._values]
    want = extend(model, cache_over(keys, values, n - RECENT_STALE), session._cached[-RECENT_STALE:])
    got = session.logits()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert session.stats["tokens_freshened"] == RECENT_STALE
    assert not any(session._stale[-RECENT_STALE:]) and session._stale[n - RECENT_STALE - 1]
    torch.testing.assert_close(session.logits(), want, rtol=1e-4, atol=1e-4)  # known now: no re-encode
    assert session.stats["tokens_freshened"] == RECENT_STALE
    _check(session, default_tokenizer)
    session.edit(len(session.text), len(session.text), "\nx = 1")  # at the end: nothing stale there
    session.logits()
    assert session.stats["tokens_freshened"] == RECENT_STALE


def test_refresh_every_reencodes(layout_models, default_tokenizer):
    session = EditSession(layout_models["llama"], default_tokenizer, DOC, refresh_every=2)
    session.edit(10, 10, "a")
    session.edit(20, 20, "b")
    assert session.stats["refreshes"] == 1 and session.stats["edits_since_refresh"] == 0
    _check(session, default_tokenizer)


def test_failed_update_reencodes(layout_models, default_tokenizer):
    model = layout_models["llama"]
    session = EditSession(model, default_tokenizer, DOC)
    original = model.forward
    calls = {"n": 0}

    def failing_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("out of memory (injected)")
        return original(*args, **kwargs)

    model.forward = failing_once
    try:
        session.edit(100, 100, "# note\n")
    finally:
        del model.forward
    assert session.stats["failed_updates"] == 1
    _check(session, default_tokenizer)


def test_bad_input_is_named(layout_models, default_tokenizer):
    session = EditSession(layout_models["llama"], default_tokenizer, "ab😀cd")
    with pytest.raises(EditError, match="outside the text"):
        session.edit(3, 99, "x")
    with pytest.raises(EditError, match="before start"):
        session.edit(3, 2, "x")
    with pytest.raises(EditError, match="integer"):
        session.edit("1", 2, "x")
    with pytest.raises(EditError, match="str"):
        session.edit(1, 2, b"x")
    with pytest.raises(EditError, match="lone surrogate at offset 1"):
        EditSession(layout_models["llama"], default_tokenizer, "a\ud83d\ude00b")
    with pytest.raises(EditError, match="new_text holds a lone surrogate at offset 0"):
        session.edit(2, 2, "\udc00")
    with pytest.raises(OptionError, match="context_tokens"):
        EditSession(layout_models["llama"], default_tokenizer, "x", context_tokens=0)
    with pytest.raises(OptionError, match="builds prompt"):
        session.generate(prompt="x")
    empty = EditSession(layout_models["llama"], default_tokenizer, "")
    with pytest.raises(PromptError, match="offset 0"):
        empty.logits()
    assert session.text == "ab😀cd"  # refused edits changed nothing


def test_prompt_cache_must_prefix_the_prompt(layout_models, default_tokenizer):
    session = EditSession(layout_models["llama"], default_tokenizer, DOC)
    ids, prefix = session.prompt_cache()
    with pytest.raises(OptionError, match="not a proper prefix"):
        constrained_generate(session.model, default_tokenizer, ids[:5], prompt_cache=prefix, max_new_tokens=2)


@pytest.mark.default_model
def test_default_model_edit_then_complete(default_model):
    model, tokenizer = default_model
    session = EditSession(model, tokenizer, DOC)
    cut = DOC.index("\n", 900)
    session.edit(cut, cut, "\n    width = 70")
    _check(session, tokenizer)
    _, want = _fresh(model, tokenizer(session.text[: cut + 15], add_special_tokens=False).input_ids)
    got = session.logits(cut + 15)
    assert int(got.argmax()) == int(want.argmax())
    gen = session.generate(len(session.text), grammar="python", prefix=session.text, max_new_tokens=6)
    assert gen.stats["cached_prompt_tokens"] > 0
