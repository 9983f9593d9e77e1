"""Fill-in-the-middle over the edit-aware cache (plugin/kv/fim.py).

A real tokenizer (DeepSeek-Coder's 32k vocabulary from ../shared/data) given DeepSeek's
three FIM markers as special tokens, and a tiny random Llama over it: the FIM string the
session keeps must stay ``PRE prefix SUF suffix MID`` through edits and cursor moves, with
token ids and first-layer keys as a fresh encode gives them.
"""

from __future__ import annotations

import pytest
import torch
import transformers as hf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin import OptionError
from plugin.kv import FimSession, fim_spelling
from plugin.kv.fim import FIM_SPELLINGS
from tests.conftest import shared_path
from tests.test_edit_session import DOC, _check

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
DEEPSEEK = FIM_SPELLINGS[0]


@pytest.fixture(scope="module")
def fim_tokenizer():
    tokenizer = hf.AutoTokenizer.from_pretrained(shared_path("tokenizers", "deepseek-coder-32k"))
    tokenizer.add_special_tokens({"additional_special_tokens": list(DEEPSEEK)})
    return tokenizer


@pytest.fixture(scope="module")
def fim_model(fim_tokenizer):
    torch.manual_seed(0)
    config = hf.LlamaConfig(
        vocab_size=len(fim_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )
    return hf.LlamaForCausalLM(config).eval()


def _fim_text(session: FimSession) -> str:
    pre, suf, mid = DEEPSEEK
    return pre + session.text[: session.cursor] + suf + session.text[session.cursor :] + mid


def test_spellings_are_found_by_vocabulary(fim_tokenizer, default_tokenizer):
    assert fim_spelling(fim_tokenizer) == DEEPSEEK
    assert fim_spelling(default_tokenizer) is None


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_edits_and_moves_keep_the_fim_string(data, fim_model, fim_tokenizer):
    text = DOC[: data.draw(st.integers(0, 500))]
    session = FimSession(fim_model, fim_tokenizer, text, data.draw(st.integers(0, len(text))))
    for _ in range(data.draw(st.integers(1, 6))):
        n = len(session.text)
        if data.draw(st.booleans()):
            start = data.draw(st.integers(0, n))
            end = data.draw(st.integers(start, min(n, start + 20)))
            session.edit(start, end, data.draw(st.sampled_from(["", "x", "\n", "    y = 2\n", "é"])))
        else:
            session.move(data.draw(st.integers(0, n)))
        assert session.session.text == _fim_text(session)
        _check(session.session, fim_tokenizer)


def test_generation_reads_both_sides(fim_model, fim_tokenizer):
    text = "def area(w, h):\n    \n\nprint(area(2, 3))\n"
    cursor = text.index("\n    ") + 5
    session = FimSession(fim_model, fim_tokenizer, text, 0)
    gen = session.generate(cursor, max_new_tokens=4, regex=r"return [a-z]+")
    assert session.cursor == cursor and session.session.text == _fim_text(session)
    ids = fim_tokenizer(_fim_text(session), add_special_tokens=False).input_ids
    assert gen.stats["prompt_tokens"] == len(ids) + len(session.session._lead)
    assert gen.text.startswith("return")


def test_too_long_for_fim_is_refused(fim_model, fim_tokenizer):
    with pytest.raises(OptionError, match="needs the whole document"):
        FimSession(fim_model, fim_tokenizer, DOC, 10, context_tokens=50)


def test_no_fim_tokens_is_refused(tiny_model, default_tokenizer):
    with pytest.raises(OptionError, match="no fill-in-the-middle tokens"):
        FimSession(tiny_model, default_tokenizer, "x = 1\n", 0)
