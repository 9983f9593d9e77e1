"""The DFA Matcher over real vocabularies: the seam's contract, tested as properties."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grammars.regex import compile_regex
from plugin.errors import ConstraintViolation, PromptError, RegexError
from plugin.matcher import new_mask

PATTERNS = [
    r"(red|green|blue|yellow|magenta)",
    r"[a-z]{1,8}( [a-z]{1,8}){0,3}\.",
    r"-?(0|[1-9][0-9]{0,6})(\.[0-9]{1,4})?",
    r'\{"id": [0-9]{1,4}, "tag": "[a-zé]{0,6}"\}',
]


def walk(matcher, ids):
    for i in ids:
        if not matcher.accepts(i):
            return False
        matcher.advance(i)
    return True


@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_false_rejects(default_tokenizer, pattern, data):
    """Every string of the language, tokenized canonically, is accepted and ends accepting."""
    compiled = compile_regex(pattern, default_tokenizer)
    text = data.draw(st.from_regex(pattern, fullmatch=True))
    ids = default_tokenizer(text, add_special_tokens=False).input_ids
    m = compiled.matcher()
    assert walk(m, ids), text
    assert m.is_accepting()
    assert m.accepts(default_tokenizer.eos_token_id)


@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_no_false_accepts_and_mask_agrees_with_accepts(default_tokenizer, default_vocab, pattern, seed):
    """Random walks through fill_mask: the mask equals accepts(), and accepted texts match."""
    compiled = compile_regex(pattern, default_tokenizer)
    gen = torch.Generator().manual_seed(seed)
    m = compiled.matcher()
    eos = default_tokenizer.eos_token_id
    ids: list[int] = []
    for _ in range(40):
        mask = new_mask(default_vocab.size)
        m.fill_mask(mask)
        allowed = mask.nonzero().flatten()
        probe = torch.randint(0, default_vocab.size, (50,), generator=gen).tolist()
        assert all(bool(mask[t]) == m.accepts(t) for t in probe + allowed[:50].tolist())
        assert allowed.numel() > 0
        tok = int(allowed[torch.randint(0, allowed.numel(), (1,), generator=gen)])
        if tok == eos:
            break
        m.advance(tok)
        ids.append(tok)
    text = default_vocab.decode(ids).decode("utf-8")
    if m.is_accepting():
        assert re.fullmatch(pattern, text)
    else:  # a viable prefix: some completion exists
        assert any(m.accepts(t) for t in allowed.tolist())


def test_eos_only_when_accepting(default_tokenizer):
    eos = default_tokenizer.eos_token_id
    m = compile_regex(r"ab(c)?", default_tokenizer).matcher()
    assert not m.accepts(eos)
    with pytest.raises(ConstraintViolation):
        m.advance(eos)
    walk(m, default_tokenizer("ab", add_special_tokens=False).input_ids)
    assert m.is_accepting() and m.accepts(eos)
    m.advance(eos)
    assert m.is_finished() and not m.accepts(eos)
    mask = new_mask(len(default_tokenizer))
    m.fill_mask(mask)
    assert not mask.any()


def test_fork_and_rollback_are_independent(default_tokenizer):
    compiled = compile_regex(r"(cat|car|dog)s?", default_tokenizer)
    ids = default_tokenizer("cars", add_special_tokens=False).input_ids
    m = compiled.matcher()
    walk(m, ids)
    f = m.fork()
    f.rollback(len(ids))
    assert f.num_advanced == 0 and not f.is_accepting()
    assert m.num_advanced == len(ids) and m.is_accepting()
    assert walk(f, default_tokenizer("dog", add_special_tokens=False).input_ids) and f.is_accepting()
    with pytest.raises(ValueError):
        m.rollback(len(ids) + 1)


def test_forced_tokens_follow_the_only_path(default_tokenizer, default_vocab):
    m = compile_regex(r"SELECT name FROM singer;", default_tokenizer).matcher()
    assert m.forced_tokens() == []  # "S", "SE", "SELECT"… all spell the start: a choice
    walk(m, default_tokenizer("SELECT name FROM singer", add_special_tokens=False).input_ids)
    forced = m.forced_tokens()
    assert default_vocab.decode(forced) == b";"
    assert walk(m, forced) and m.is_finished()


def test_disallowed_token_raises(default_tokenizer):
    m = compile_regex(r"[0-9]+", default_tokenizer).matcher()
    bad = default_tokenizer("x", add_special_tokens=False).input_ids[0]
    with pytest.raises(ConstraintViolation, match="not allowed"):
        m.advance(bad)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(ab", "position 0"),
        ("a{2,1}", "position"),
        ("a(?=b)", "look-around"),
        (r"(a)\1", "back-references"),
        ("[^\\s\\S]", "empty language"),
    ],
)
def test_bad_regex_errors_name_the_problem(default_tokenizer, pattern, message):
    with pytest.raises(RegexError, match=re.escape(message)):
        compile_regex(pattern, default_tokenizer)


def test_compiled_constraints_are_cached_in_memory_and_on_disk(default_tokenizer, tmp_path, monkeypatch):
    import grammars.dfa as dfa

    monkeypatch.setenv("STENCIL_CACHE", str(tmp_path))
    pattern = r"cache-test-[0-9]{3}"
    first = compile_regex(pattern, default_tokenizer)
    assert compile_regex(pattern, default_tokenizer) is first
    assert list((tmp_path / "index").glob("*.bin"))
    dfa._MEMORY.clear()
    reloaded = compile_regex(pattern, default_tokenizer)
    assert reloaded is not first and reloaded.distances() == first.distances()


def test_budget_restriction_keeps_outputs_finishable(default_tokenizer, default_vocab):
    """With k tokens left, every token the restricted mask allows can still finish."""
    compiled = compile_regex(r'"[a-z]{0,50}"', default_tokenizer)
    m = compiled.matcher()
    walk(m, default_tokenizer('"abc', add_special_tokens=False).input_ids)
    mask = new_mask(default_vocab.size)
    m.fill_mask(mask)
    before = int(mask.sum())
    assert m.restrict_to_budget(mask, 1)
    allowed = mask.nonzero().flatten().tolist()
    assert 0 < len(allowed) < before
    for t in allowed:  # each allowed token closes the string
        f = m.fork()
        f.advance(t)
        assert f.is_accepting()


@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_completion_mode_continues_any_prefix_of_the_language(default_tokenizer, pattern, data):
    """``matcher_after(p)`` for every prefix ``p`` of a string of the language, cut
    anywhere (inside a token too): the rest, tokenized, is accepted and ends accepting,
    and ``text()`` is the prefix plus what was advanced."""
    compiled = compile_regex(pattern, default_tokenizer)
    text = data.draw(st.from_regex(pattern, fullmatch=True))
    cut = data.draw(st.integers(0, len(text)))
    m = compiled.matcher_after(text[:cut])
    assert walk(m, default_tokenizer(text[cut:], add_special_tokens=False).input_ids)
    assert m.is_accepting() and m.text() == text.encode()
    assert m.fork().text() == text.encode()


def test_completion_mode_names_where_the_prefix_stops_matching(default_tokenizer):
    compiled = compile_regex(r'\{"id": [0-9]{1,4}, "tag": "[a-zé]{0,6}"\}', default_tokenizer)
    with pytest.raises(PromptError, match=r"fails at line 1, column 10, after '\{\"id\": 12'"):
        compiled.matcher_after('{"id": 12x')
