"""Grammar engine: lexing across token boundaries, masks, fork/rollback, errors, caching.

Real tokenizer (the default SmolLM2 one), real Lark grammars, no mocks.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grammars import compile as compile_grammar
from grammars.token_tables import wait_for_table_saves
from plugin.errors import ConstraintViolation, GrammarError, PromptError

ARITH = r"""
start: expr
?expr: expr "+" term | term
?term: NUMBER | NAME | "(" expr ")" | "let" NAME "=" expr "in" expr
NAME: /[a-z]+/
NUMBER: /[0-9]+(\.[0-9]+)?/
%ignore " "
"""


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def mask_of(matcher) -> torch.Tensor:
    mask = torch.zeros(matcher.vocab.size, dtype=torch.bool)
    matcher.fill_mask(mask)
    return mask


def assert_mask_matches_accepts(matcher, rng: random.Random, sample: int = 400) -> None:
    """The vectorised mask and the one-token ``accepts`` agree (all allowed + a sample)."""
    mask = mask_of(matcher)
    allowed = torch.nonzero(mask).flatten().tolist()
    others = rng.sample(range(matcher.vocab.size), sample)
    for t in set(allowed[:sample]) | set(others):
        assert matcher.accepts(t) == bool(mask[t]), (t, matcher.vocab.token_bytes[t])


def test_tokens_crossing_lexeme_boundaries(default_tokenizer):
    g = compile_grammar(ARITH, default_tokenizer)
    m = g.matcher()
    # "12+ab" tokenizes with tokens ending one terminal and starting the next.
    for text in ["12+ab", "let x = 1.5 in x+(y+2)"]:
        m = g.matcher()
        for t in ids_of(default_tokenizer, text):
            assert m.accepts(t), (text, default_tokenizer.decode([t]))
            m.advance(t)
        assert m.is_accepting()
    # "1." is an unfinished NUMBER: not accepting, but viable; "1.x" is not.
    m = g.matcher_after("1.")
    assert not m.is_accepting()
    with pytest.raises(PromptError, match="line 1, column 3"):
        g.matcher_after("1.x")


def test_keyword_beats_name_but_longer_names_stay_names(default_tokenizer):
    g = compile_grammar(ARITH, default_tokenizer)
    assert g.matcher_after("let a = 1 in a").is_accepting()
    assert g.matcher_after("lets").is_accepting()  # a NAME, not the keyword
    with pytest.raises(PromptError):
        g.matcher_after("let let ")  # the second "let" is complete: a keyword, not a NAME


def test_token_holding_half_a_character(default_tokenizer):
    g = compile_grammar("json", default_tokenizer)
    m = g.matcher()
    text = '"héllo → 世界"'.encode()
    vocab = m.vocab
    byte_ids = {
        b[0]: i for i, b in enumerate(vocab.token_bytes) if len(b) == 1 and i not in vocab.special_ids
    }
    for b in text:  # byte by byte: most steps end inside a multi-byte character
        assert m.accepts(byte_ids[b])
        m.advance(byte_ids[b])
    assert m.is_accepting()


def test_eos_only_when_accepting_and_nothing_after(default_tokenizer):
    g = compile_grammar("json", default_tokenizer)
    eos = next(iter(g.vocab.eos_ids))
    m = g.matcher()
    assert not m.accepts(eos)
    with pytest.raises(ConstraintViolation):
        m.advance(eos)
    for t in ids_of(default_tokenizer, "[1]"):
        m.advance(t)
    assert m.accepts(eos) and bool(mask_of(m)[eos])
    m.advance(eos)
    assert m.is_finished() and not m.accepts(ids_of(default_tokenizer, " ")[0])


def test_fork_and_rollback_are_independent(default_tokenizer):
    g = compile_grammar("json", default_tokenizer)
    m = g.matcher()
    for t in ids_of(default_tokenizer, '{"a": [1, 2'):
        m.advance(t)
    before = mask_of(m)
    f = m.fork()
    closing = ids_of(default_tokenizer, "]}")
    for t in closing:
        f.advance(t)
    assert f.is_accepting() and not m.is_accepting()
    assert torch.equal(mask_of(m), before)
    f.rollback(len(closing))
    assert torch.equal(mask_of(f), before)
    with pytest.raises(ValueError):
        f.rollback(10_000)


def test_forced_tokens_follow_the_only_choice(default_tokenizer):
    g = compile_grammar('start: "(" "hello" ")"', default_tokenizer)
    m = g.matcher()
    # The whole text is forced, whatever tokens spell it; they are allowed one by one.
    forced = m.forced_tokens()
    assert default_tokenizer.decode(forced) == "(hello)"
    for tok in forced:
        m.advance(tok)
    assert m.is_accepting() and m.forced_tokens() == []
    # The rest of a keyword: after "[tr" only "ue" can follow; then a choice.
    json_g = compile_grammar("json", default_tokenizer)
    assert default_tokenizer.decode(json_g.matcher_after("[tr").forced_tokens()) == "ue"
    assert json_g.matcher_after("[true").forced_tokens() == []
    # SQL keywords are case-insensitive: "FR" may go on as "OM" or "om", a choice.
    sql = compile_grammar("sql", default_tokenizer)
    assert sql.matcher_after("SELECT a FROM t ORDER B").forced_tokens() == []


@pytest.mark.parametrize("grammar", ["json", "sql", "python"])
def test_mask_agrees_with_accepts_on_random_walks(default_tokenizer, grammar):
    g = compile_grammar(grammar, default_tokenizer)
    rng = random.Random(7)
    for _walk in range(3):
        m = g.matcher()
        for _step in range(12):
            assert_mask_matches_accepts(m, rng, sample=150)
            allowed = torch.nonzero(mask_of(m)).flatten().tolist()
            allowed = [t for t in allowed if t not in m.vocab.eos_ids]
            if not allowed:
                break
            m.advance(rng.choice(allowed))


@pytest.mark.parametrize(
    ("grammar", "text"),
    [
        ("json", '{"a": [1, {"b": null}], "c": "x"}'),
        ("sql", "SELECT a, count(*) FROM t JOIN u ON t.id = u.id WHERE a > 1 GROUP BY a"),
        (
            "python",
            "class A:\n    def f(self, x):\n        if x:\n            return (x +\n 1)\n"
            "        y = [i for i in x]\n",
        ),
    ],
)
def test_accepted_terminal_sets_equal_feeding_each_terminal(default_tokenizer, grammar, text):
    """The parser's accepted-terminal set (reductions shared between terminals, newline
    columns grouped by class) must equal feeding every terminal one by one."""
    g = compile_grammar(grammar, default_tokenizer)
    syntax = g.syntax
    m = g.matcher()
    for tok in default_tokenizer.encode(text, add_special_tokens=False):
        syn = m._state.syn
        brute = [syntax.feed(syn, t) is not None for t in range(len(syntax.parser_term))]
        assert syntax.accept_row(syn).tolist() == brute
        m.advance(tok)


def reference_signature(g, table, syn) -> list[tuple[int, int]]:
    """The split-trie walk written out in Python with one ``feed`` per edge: what the
    compiled core's ``signature`` must give (sorted (group, ok key) pairs)."""
    cstart, cterm, cseq, gstart, groups = (np.frombuffer(b, dtype=np.int32) for b in table.split_trie)
    out, todo = [], [(0, syn)]
    while todo:
        seq, s = todo.pop()
        out += [(int(gi), g.syntax.ok_key(s)) for gi in groups[gstart[seq] : gstart[seq + 1]]]
        for e in range(cstart[seq], cstart[seq + 1]):
            nxt = g.syntax.feed(s, int(cterm[e]))
            if nxt is not None:
                todo.append((int(cseq[e]), nxt))
    return sorted(out)


@pytest.mark.parametrize("grammar", ["json", "sql", "python"])
def test_signature_walk_equals_feeding_the_split_trie(default_tokenizer, grammar):
    """The compiled core's mask signature equals the trie walked feed by feed, on the
    states of a random walk (every group the walk reaches, with its ok key)."""
    g = compile_grammar(grammar, default_tokenizer)
    rng = random.Random(3)
    m = g.matcher()
    for _step in range(25):
        st_ = m._state
        table = g.table(st_.q)
        got = np.frombuffer(g.syntax.signature(st_.syn, table.split_trie), dtype=np.int32)
        assert [tuple(p) for p in got.reshape(-1, 2).tolist()] == reference_signature(g, table, st_.syn)
        allowed = [t for t in torch.nonzero(mask_of(m)).flatten().tolist() if t not in m.vocab.eos_ids]
        if not allowed:
            break
        m.advance(rng.choice(allowed))


def test_lr_core_refuses_inconsistent_tables():
    """Tables that do not fit together are a ValueError naming the part, not a crash."""
    from grammars import _lr_core

    kind, arg, nt, go = bytes(4), bytes(16), bytes(16), bytes(8)
    pt = np.zeros(2, dtype=np.int32).tobytes()
    with pytest.raises(ValueError, match="kind has 4 bytes, expected 6"):
        _lr_core.Parser(2, 3, 1, kind, arg, nt, go, 0, 1, 2, pt)
    shift_far = np.array([1, 0, 0, 0], dtype=np.int8).tobytes()
    far = np.array([7, 0, 0, 0], dtype=np.int32).tobytes()
    with pytest.raises(ValueError, match="state 0 shifts to 7"):
        _lr_core.Parser(2, 2, 1, shift_far, far, nt, go, 0, 1, 1, pt)


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
        max_leaves=12,
    )
)
def test_every_json_value_is_accepted_token_by_token(default_tokenizer, value):
    import json

    g = compile_grammar("json", default_tokenizer)
    for text in (json.dumps(value), json.dumps(value, indent=2, ensure_ascii=False)):
        ids = ids_of(default_tokenizer, text)
        if g.vocab.decode(ids) != text.encode():
            continue  # the tokenizer cannot spell it (SmolLM2 lacks some byte tokens)
        m = g.matcher()
        for t in ids:
            m.advance(t)
        assert m.is_accepting(), text


@pytest.mark.parametrize(
    ("grammar", "line", "rule"),
    [
        ('start: a\na: "x" b', 2, "b"),
        ('start: a | b\na: "x"\nb: "x"', None, "[ab]"),
        ("start: A\nA: /(?<=x)y/", 2, None),
        ('start: "x" (', 1, None),
    ],
)
def test_bad_grammars_name_line_and_rule(default_tokenizer, grammar, line, rule):
    with pytest.raises(GrammarError) as err:
        compile_grammar(grammar, default_tokenizer)
    message = str(err.value)
    import re

    assert re.search(r"\(line [0-9]+\)", message)
    if line is not None:
        assert f"line {line}" in message
    if rule:
        assert re.search(f"rule {rule}", message)


def test_unknown_builtin_and_missing_file(default_tokenizer, tmp_path):
    with pytest.raises(GrammarError, match="built-ins are json, python, python_function, sql, sql_statement"):
        compile_grammar("pythn", default_tokenizer)
    with pytest.raises(GrammarError, match="not found"):
        compile_grammar(str(tmp_path / "nope.lark"), default_tokenizer)
    path = tmp_path / "tiny.lark"
    path.write_text('start: "a"+\n')
    assert compile_grammar(str(path), default_tokenizer).matcher_after("aaa").is_accepting()


def test_empty_language_is_a_dead_end_not_an_invalid_token(default_tokenizer):
    g = compile_grammar('start: "a" start', default_tokenizer)  # no finite sentence
    m = g.matcher()
    for _ in range(5):
        allowed = torch.nonzero(mask_of(m)).flatten().tolist()
        assert all(t not in m.vocab.eos_ids for t in allowed)
        m.advance(allowed[0])
    assert not m.is_accepting()


def test_compiles_are_cached_in_memory_and_on_disk(default_tokenizer, tmp_path, monkeypatch):
    import time

    from grammars import lark_compile

    monkeypatch.setenv("STENCIL_CACHE", str(tmp_path))
    monkeypatch.setattr(lark_compile, "_MEMORY", {})
    start = time.perf_counter()
    first = compile_grammar("python", default_tokenizer)
    cold = time.perf_counter() - start
    assert list((tmp_path / "grammars").glob("*.pkl"))
    assert compile_grammar("python", default_tokenizer) is first
    monkeypatch.setattr(lark_compile, "_MEMORY", {})
    start = time.perf_counter()
    compile_grammar("python", default_tokenizer)
    warm = time.perf_counter() - start
    print(f"python grammar compile: cold {cold * 1e3:.0f} ms, from disk {warm * 1e3:.0f} ms")


def test_nothing_but_the_end_after_a_closed_parse(default_tokenizer):
    """Once nothing but the end can follow, %ignore lexemes (blanks, comments) are refused:
    they could only pad the output. Inside the text they stay free."""
    json_g = compile_grammar("json", default_tokenizer)
    done = json_g.matcher_after('{ "a" : [1, 2] }')
    assert done.is_accepting() and done.is_finished()
    assert mask_of(done).nonzero().flatten().tolist() == sorted(done.vocab.eos_ids)
    with pytest.raises(PromptError):
        json_g.matcher_after('{"a": 1}\n')
    one = compile_grammar("sql_statement", default_tokenizer)
    assert one.matcher_after("SELECT a -- the name\n FROM t;").is_finished()
    with pytest.raises(PromptError):
        one.matcher_after("SELECT a FROM t; SELECT 1;")
    script = compile_grammar("sql", default_tokenizer).matcher_after("SELECT a FROM t;")
    assert script.is_accepting() and not script.is_finished()  # another statement may follow


def test_python_function_start_takes_one_definition(default_tokenizer):
    g = compile_grammar("python_function", default_tokenizer)
    m = g.matcher_after("@cache\ndef f(x):\n    # double it\n    return 2 * x\n")
    assert m.is_accepting()
    with pytest.raises(PromptError):
        g.matcher_after("def f(x):\n    return x\ny = f(1)\n")


def test_token_tables_from_disk_give_the_same_masks(default_tokenizer, tmp_path, monkeypatch):
    """A later process reads the per-lexer-state tables from the disk cache; the masks
    are the same, and a damaged table file is rebuilt, not trusted."""
    from grammars import lark_compile

    monkeypatch.setenv("STENCIL_CACHE", str(tmp_path))
    text = "SELECT a, count(*) FROM t WHERE b = 'x' GROUP BY a;"
    ids = ids_of(default_tokenizer, text)

    def masks() -> list[torch.Tensor]:
        lark_compile._MEMORY.clear()
        m = compile_grammar("sql", default_tokenizer).matcher()
        out = []
        for t in ids:
            out.append(mask_of(m))
            m.advance(t)
        return out

    built = masks()
    wait_for_table_saves()  # tables are written on a background thread
    files = sorted(tmp_path.rglob("q*.bin"))
    assert files, "tables were not written"
    assert all(torch.equal(a, b) for a, b in zip(built, masks(), strict=True))
    for damaged in (b"not a table", files[0].read_bytes()[:100]):  # garbage, a cut-off file
        files[0].write_bytes(damaged)
        assert all(torch.equal(a, b) for a, b in zip(built, masks(), strict=True))
        wait_for_table_saves()
        assert files[0].read_bytes() != damaged
    lark_compile._MEMORY.clear()
