"""The compiled core's trie walks equal token-by-token walks of the same automata.

``grammars._trie_walk`` walks a vocabulary's token trie; these tests hold it to a plain
Python walk of every token, over real vocabularies and real automata: the grammar
engine's lexer DFAs (JSON, SQL, Python built-ins) for the longest-match walk, a lazily
built JSON Schema DFA (rows built mid-walk, resumed) for the DFA walk. Bad buffers are a
``ValueError``, not a crash.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from grammars import compile as compile_grammar
from grammars.json_schema import compile_json_schema
from grammars.lexer_dfa import DEAD, START
from grammars.native import TokenTrie, core, dfa_allowed, lexer_walk, trie_of
from grammars.token_tables import TokenBytes


def python_lexer_walk(lexer, data: bytes, q: int):
    """(end state, splits) of ``data`` from ``q`` by longest match; None when it dies."""
    rows, best = lexer.rows, lexer.best_list
    seq: list[int] = []
    for b in data:
        nxt = rows[q][b]
        if nxt == DEAD:
            if best[q] < 0 or rows[START][b] == DEAD:
                return None
            seq.append(best[q])
            nxt = rows[START][b]
        q = nxt
    return q, seq


def test_trie_lists_every_token_once() -> None:
    raw = [b"ab", b"a", b"abc", b"b", b"ab", b"\xff\x00", b"abd"]
    trie = TokenTrie.build(raw)
    _, _, end, _, rows, _ = trie.buffers
    assert sorted(rows.tolist()) == list(range(len(raw)))
    assert trie.nodes == 7  # a, ab, abc, abd, b, \xff, \xff\x00
    ends = np.frombuffer(end, dtype=np.int32)
    assert ends[0] == 4  # the subtree of "a": a, ab, abc, abd


@pytest.mark.parametrize("grammar", ["json", "sql", "python"])
def test_lexer_walk_equals_python_walk(default_tokenizer, default_vocab, grammar: str) -> None:
    compiled = compile_grammar(grammar, default_tokenizer)
    lexer, tokens = compiled.lexer, TokenBytes.of(default_vocab)
    trie = trie_of(tokens)
    rng = np.random.default_rng(0)
    states = [START, *rng.choice(np.arange(2, lexer.n_states), size=min(6, lexer.n_states - 2)).tolist()]
    for q in states:
        walk = lexer_walk(trie, lexer, q, START)
        got = {}
        cuts = walk.offsets.tolist()
        for g, (a, b) in enumerate(itertools.pairwise(cuts)):
            for row, end in zip(walk.rows[a:b].tolist(), walk.ends[a:b].tolist(), strict=True):
                assert row not in got, (q, tokens.raw[row])  # each token in one group
                got[row] = (end, list(walk.splits(g)))
        assert len(set(walk.group_seq.tolist())) == len(walk.group_seq)  # one group per sequence
        for row, data in enumerate(tokens.raw):
            assert got.get(row) == python_lexer_walk(lexer, data, q), (q, data)


def test_dfa_walk_resumes_below_unbuilt_rows(default_vocab) -> None:
    schema = {"type": "object", "properties": {"café": {"enum": ["naïve", "x"]}, "n": {"type": "integer"}}}
    compiled = compile_json_schema(schema, default_vocab)
    dfa, tokens = compiled.dfa, TokenBytes.of(default_vocab)
    trie = trie_of(tokens)
    for prefix in [b"", b'{"', b'{"caf', b'{"caf\xc3\xa9": "', b'{"n": 1']:
        q = dfa.walk(compiled.initial_state, prefix)
        before = int(dfa.built.sum())
        ids, states, bools = dfa_allowed(trie.labelled(tokens.ids), dfa, q, default_vocab.size, 100)
        got = dict(zip(ids.tolist(), states.tolist(), strict=True))
        want = {}
        for row, data in enumerate(tokens.raw):
            end = dfa.walk(q, data)
            if end != DEAD:
                want[int(tokens.ids[row])] = end
        assert got == want, prefix
        assert len(ids) == len(got)  # each token once
        assert (bools is not None) == (len(got) >= 100), prefix
        if bools is not None:
            assert np.flatnonzero(bools).tolist() == sorted(got), prefix
        assert int(dfa.built.sum()) >= before


def test_bad_buffers_are_value_errors(default_vocab) -> None:
    trie = trie_of(TokenBytes.of(default_vocab))
    trans = np.zeros((2, 256), dtype=np.int32)
    built = np.ones(3, dtype=bool)  # one more state than rows
    out = np.empty(trie.rows, dtype=np.int32)
    work = np.array([0, trie.nodes, 1], dtype=np.int32)
    with pytest.raises(ValueError, match="inconsistent"):
        core().walk_dfa(trie.buffers, trans, built, work, out, out.copy(), 0)
    with pytest.raises(ValueError, match="work item 0 out of range"):
        beyond = np.array([0, trie.nodes + 1, 1], dtype=np.int32)
        core().walk_dfa(trie.buffers, trans, built[:2], beyond, out, out.copy(), 0)
    small = np.empty(1, dtype=np.int32)
    trans[1] = 1  # every byte loops on state 1: every token is allowed
    with pytest.raises(ValueError, match="too small"):
        core().walk_dfa(trie.buffers, trans, built[:2], work, small, small.copy(), 0)
