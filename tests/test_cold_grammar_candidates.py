"""A grammar state whose mask is not cached (a first visit: in a cold process its
lexer state has no token table yet) offers every text token as an unchecked candidate
to a greedy caller, and answers ``is_finished`` without a mask where a one-byte token
proves the output goes on (``GrammarMatcher.fill_candidates``,
``CompiledGrammar.continues``). Both must decide exactly what the masks decide: the
same ``continues`` as ``allowed(...).any()`` on states reached by random walks, and the
same greedy tokens as full masks on the default model."""

from __future__ import annotations

import dataclasses
import random
from collections import OrderedDict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grammars.cfg import CompiledGrammar
from grammars.lark_compile import compile_grammar
from plugin import constrained_generate


def _cold(g: CompiledGrammar) -> CompiledGrammar:
    """``g`` with no table in memory or on disk and empty caches."""
    return dataclasses.replace(
        g, table_dir=None, _tables={}, _masks=OrderedDict(), _bounds={}, _beyond={}, _byte_orders={}
    )


@pytest.fixture(scope="module", params=["json", "sql", "python"])
def grammar(request, default_tokenizer) -> CompiledGrammar:
    return compile_grammar(request.param, default_tokenizer)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_continues_is_what_the_table_says(grammar, seed):
    rng = random.Random(seed)
    matcher = grammar.matcher()
    for _ in range(24):
        q, syn = matcher._state.q, matcher._state.syn
        allowed = grammar.allowed(q, syn)
        assert _cold(grammar).continues(q, syn) == bool(allowed.any())
        ids = torch.nonzero(allowed).flatten().tolist()
        if not ids:
            break
        matcher.advance(rng.choice(ids))


def test_cold_state_offers_candidates_only_to_greedy(default_tokenizer, default_vocab):
    cold = _cold(compile_grammar("python", default_tokenizer))
    matcher = cold.matcher()
    lazy = torch.zeros(default_vocab.size, dtype=torch.bool)
    assert matcher.fill_candidates(lazy, greedy=True)
    assert not cold._tables  # nothing walked the vocabulary
    expected = torch.tensor(
        [bool(b) and i not in default_vocab.special_ids for i, b in enumerate(default_vocab.token_bytes)]
    )
    expected[list(default_vocab.eos_ids)] = matcher.is_accepting()  # the empty program is one
    assert torch.equal(lazy, expected)
    full = torch.zeros_like(lazy)
    sampled = torch.zeros_like(lazy)
    assert not matcher.fill_candidates(sampled, greedy=False)  # sampling: the full mask
    matcher.fill_mask(full)
    assert torch.equal(sampled, full) and bool((full & ~lazy).sum() == 0)
    warm = torch.zeros_like(lazy)
    assert not matcher.fill_candidates(warm, greedy=True)  # the mask is cached now
    assert torch.equal(warm, full)


@pytest.mark.parametrize(
    "prompt, grammar, options",
    [
        (
            "Write a Python function area(width, height) that returns the area of a rectangle.",
            "python_function",
            {"chat": True, "stop": "function"},
        ),
        ("def area(width, height):\n    ", "python", {"prefix": "def area(width, height):\n    "}),
        ("Write one SQLite query listing the names of singers from France.", "sql", {"chat": True}),
    ],
)
def test_cold_greedy_tokens_equal_full_masks(default_model, monkeypatch, prompt, grammar, options):
    model, tokenizer = default_model
    cold = _cold(compile_grammar(grammar, tokenizer))
    first = constrained_generate(model, tokenizer, prompt, constraint=cold, max_new_tokens=40, **options)
    monkeypatch.setattr(CompiledGrammar, "mask_ready", lambda self, q, syn: True)  # full masks only
    full = _cold(cold)
    second = constrained_generate(model, tokenizer, prompt, constraint=full, max_new_tokens=40, **options)
    assert first.token_ids == second.token_ids and first.valid
    assert len(cold._tables) < len(full._tables)  # the cold run walked fewer lexer states
