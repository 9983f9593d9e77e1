"""Vocabulary: token bytes concatenate back to the text, for every real tokenizer."""

from __future__ import annotations

import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from plugin.errors import VocabularyError
from plugin.vocabulary import Vocabulary
from tests.conftest import SHARED_TOKENIZERS, shared_path

SAMPLES = [
    "def f(x):\n\treturn x ** 2  # square\n",
    "Héllo wörld — 中文字符 🤗 emoji\u00a0nbsp",
    '{"a": [1, 2.5e-3, null], "b": "\\u00e9"}',
    "SELECT name FROM singer WHERE age > 30;",
    "   leading spaces and trailing   ",
    "\r\n\x00\x7f control",
]
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


@pytest.fixture(scope="module", params=["default", *SHARED_TOKENIZERS])
def tokenizer(request, default_tokenizer):
    if request.param == "default":
        return default_tokenizer
    return AutoTokenizer.from_pretrained(shared_path("tokenizers", request.param))


def test_known_texts_round_trip(tokenizer):
    vocab = Vocabulary.from_tokenizer(tokenizer)
    assert vocab.kind == "byte_level"
    for text in SAMPLES:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert vocab.decode(ids) == text.encode("utf-8")


@settings(max_examples=60, deadline=None)
@given(text=texts)
def test_random_texts_round_trip(tokenizer, text):
    vocab = Vocabulary.from_tokenizer(tokenizer)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    # Some vocabularies cannot spell every byte (SmolLM2 lacks 0xF1): the tokenizer then
    # drops it itself, and only texts it can represent are ours to round-trip.
    assume(tokenizer.decode(ids) == text)
    assert vocab.decode(ids) == text.encode("utf-8")


def test_special_tokens_are_kept_apart(tokenizer):
    vocab = Vocabulary.from_tokenizer(tokenizer)
    assert vocab.size == len(tokenizer)
    assert vocab.eos_ids and vocab.eos_ids <= vocab.special_ids
    for i in vocab.special_ids:
        assert vocab.token_bytes[i] == b""
    # special tokens contribute no text even when the tokenizer adds them
    ids = tokenizer("x").input_ids
    assert vocab.decode(ids) == b"x"


def test_vocabulary_is_cached_per_tokenizer(default_tokenizer):
    assert Vocabulary.from_tokenizer(default_tokenizer) is Vocabulary.from_tokenizer(default_tokenizer)


def _sentencepiece_style() -> PreTrainedTokenizerFast:
    """A real SentencePiece-style BPE (Metaspace ▁, <0xNN> byte fallback) built here.

    As in Llama-2's tokenizer.json, the 256 byte pieces are ordinary vocabulary entries.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces += ["▁", *"abcdefghijklmnopqrstuvwxyz", "▁t", "▁th", "▁the", "▁f", "▁fo", "▁fox"]
    merges = [("▁", "t"), ("▁t", "h"), ("▁th", "e"), ("▁", "f"), ("▁f", "o"), ("▁fo", "x")]
    vocab = {p: i for i, p in enumerate(pieces)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    return fast


def test_sentencepiece_metaspace_and_byte_fallback():
    tokenizer = _sentencepiece_style()
    vocab = Vocabulary.from_tokenizer(tokenizer)
    assert vocab.kind == "sentencepiece"
    for text in ["the fox adds", "é 🤗 ünknown bytes"]:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        # SentencePiece prepends "▁" to the first word: the bytes keep that space.
        assert vocab.decode(ids) in (text.encode(), b" " + text.encode())
    assert vocab.token_bytes[tokenizer.convert_tokens_to_ids("<0x41>")] == b"A"


def test_wordpiece_is_rejected_clearly():
    from tokenizers import Tokenizer, decoders, models

    tok = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]"))
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[UNK]")
    with pytest.raises(VocabularyError, match="WordPiece"):
        Vocabulary.from_tokenizer(fast)


def test_tokenizer_without_fast_backend():
    class Slow:
        pass

    with pytest.raises(VocabularyError, match="fast"):
        Vocabulary.from_tokenizer(Slow())


def test_fingerprint_differs_between_tokenizers(default_tokenizer):
    gpt2 = AutoTokenizer.from_pretrained(shared_path("tokenizers", "gpt2-50k"))
    a = Vocabulary.from_tokenizer(default_tokenizer).fingerprint
    b = Vocabulary.from_tokenizer(gpt2).fingerprint
    assert a != b and len(a) == 32
    json.dumps(a)
