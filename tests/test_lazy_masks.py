"""The lazy route's token masks equal a token-by-token walk of the automaton.

``TokenMasks.allowed`` has the compiled core walk the token trie, settling subtrees
whose bytes loop on a state without walking them; this checks, over the real
vocabulary, that it gives exactly the tokens and end states a plain walk gives.
"""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from grammars.dfa import ROW_THRESHOLD
from grammars.json_schema import compile_json_schema
from grammars.lazy_dfa import DEAD, TokenMasks
from plugin.vocabulary import Vocabulary
from tests.conftest import shared_path

SCHEMAS = [
    # free keys and free strings (free-text states), numbers, nesting
    {"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"}}},
    # bounded strings (no loops), a pattern with non-ASCII classes, an enum
    {
        "type": "object",
        "properties": {
            "short": {"type": "string", "maxLength": 3},
            "greek": {"type": "string", "pattern": "^[α-ω]+é?$"},
            "pick": {"enum": ["état", "Zürich", "x"]},
        },
        "required": ["short", "greek", "pick"],
        "additionalProperties": False,
    },
    {"type": "array", "items": {"type": "string", "format": "date"}},
]
PREFIXES = [
    ["", '{"', '{"na', '{"name": "', '{"name": "caf\u00e9 ', '{"name": "x", "', '{"n": 1'],
    ["", '{"short": "', '{"short": "ab', '{"short": "a", "greek": "', '{"short": "a", "greek": "αβ'],
    ["", '["', '["2024-0', '["2024-01-01", '],
]


def brute_force(dfa, vocab, q: int) -> dict[int, int]:
    out = {}
    for tid, data in enumerate(vocab.token_bytes):
        if not data or tid in vocab.special_ids:
            continue
        end = dfa.walk(q, data)
        if end != DEAD:
            out[tid] = end
    return out


@pytest.fixture(scope="module", params=["default", "llama3-128k"])
def vocab(request, default_vocab):
    """The default model's vocabulary, and Llama-3's (many more multi-byte tokens)."""
    if request.param == "default":
        return default_vocab
    return Vocabulary.from_tokenizer(AutoTokenizer.from_pretrained(shared_path("tokenizers", request.param)))


@pytest.mark.parametrize("case", range(len(SCHEMAS)))
def test_masks_equal_token_walks(vocab, case: int) -> None:
    compiled = compile_json_schema(SCHEMAS[case], vocab)
    dfa = compiled.dfa
    masks = TokenMasks.of(vocab)
    for prefix in PREFIXES[case]:
        q = dfa.walk(compiled.initial_state, prefix.encode())
        assert q != DEAD, prefix
        ids, ends, row = masks.allowed(dfa, q)
        want = brute_force(dfa, vocab, q)
        assert sorted(ids.tolist()) == sorted(want), prefix  # each token once
        assert dict(zip(ids.tolist(), ends.tolist(), strict=True)) == want, prefix
        assert (row is not None) == (len(want) >= ROW_THRESHOLD), prefix
        if row is not None:
            assert np.flatnonzero(row).tolist() == sorted(want), prefix
