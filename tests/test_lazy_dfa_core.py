"""The lazy DFA's compiled core (``grammars/_lazy_dfa.c``) against plain Python.

The subset construction runs in C over the Python NFA; here every row it built for a
real schema walk is rebuilt in Python from the NFA (epsilon closures by hand) and must
name the same NFA sets. Fragment templates are compacted before they are copied; a
compacted template must accept exactly the bytes the built fragment accepts (and
Python's ``re`` does). The NFA's rows are kept out of the cyclic collector. Bad input
is a ``ValueError``, not a crash.
"""

from __future__ import annotations

import gc
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grammars.byte_nfa import ByteNFA, _build_pattern, _compact
from grammars.json_schema import compile_json_schema
from grammars.lazy_dfa import DEAD

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "tags": {"type": "array", "items": {"enum": ["a", "é", "z"]}},
        "n": {"type": "number"},
        "child": {"$ref": "#"},
    },
    "required": ["name"],
}
TEXTS = [b'{"name": "x\\u00e9", "tags": ["a", "\xc3\xa9"], "n": -1.5e3, "child": {"name": ""}}']


def closure(nfa: ByteNFA, targets: set[int], accept: int) -> tuple[int, ...]:
    """The core of the epsilon closure of ``targets`` (states with edges, and acceptance)."""
    seen, stack = set(targets), list(targets)
    while stack:
        for t in nfa.eps[stack.pop()]:
            if t not in seen:
                seen.add(t)
                stack.append(t)
    return tuple(sorted(s for s in seen if nfa.edges[s] or s == accept))


def test_rows_equal_python_subset_construction(default_vocab) -> None:
    compiled = compile_json_schema(SCHEMA, default_vocab)
    dfa = compiled.dfa
    for text in TEXTS:
        q = compiled.initial_state
        for byte in text:
            q = dfa.step(q, byte)
            assert q != DEAD
            compiled.allowed_ids(q)  # a trie walk: builds the rows of many states
    nfa = dfa.nfa
    built = np.flatnonzero(dfa.built[: dfa.states]).tolist()
    assert len(built) > 50
    for q in built:
        if q == DEAD:
            continue
        states = dfa.states_of(q)
        assert bool(dfa.final[q]) == (dfa.accept in states)
        for byte in range(256):
            targets = {t for s in states for lo, hi, t in nfa.edges[s] if lo <= byte <= hi}
            want = closure(nfa, targets, dfa.accept) if targets else ()
            assert dfa.states_of(int(dfa.trans[q, byte])) == want, (q, byte)


def accepts(edges, eps, s: int, e: int, data: bytes) -> bool:
    """Whether the fragment (start ``s``, end ``e``) reads ``data`` whole."""

    def close(states: set[int]) -> set[int]:
        stack = list(states)
        while stack:
            for t in eps[stack.pop()]:
                if t not in states:
                    states.add(t)
                    stack.append(t)
        return states

    cur = close({s})
    for byte in data:
        cur = close({t for q in cur for lo, hi, t in edges[q] if lo <= byte <= hi})
    return e in cur


PATTERNS = st.lists(
    st.sampled_from(["a", "b", "[a-c]", "[^a]", "é", ".", "(a|bc)", "a*", "(ab)?", "[é-ë]", "\\d", "x{2,3}"]),
    min_size=1,
    max_size=4,
).map("".join)


@settings(max_examples=60, deadline=None)
@given(pattern=PATTERNS, texts=st.lists(st.text(alphabet="abcxé1ëñ", max_size=6), min_size=1, max_size=12))
def test_compacted_templates_accept_the_same_bytes(pattern: str, texts: list[str]) -> None:
    nfa = ByteNFA()
    s, e = _build_pattern(nfa, pattern, False)
    edges, eps, cs, ce = _compact(nfa.edges, nfa.eps, s, e)
    assert len(edges) <= len(nfa.edges)
    for text in [*texts, pattern]:
        data = text.encode()
        want = re.fullmatch(pattern, text) is not None
        assert accepts(nfa.edges, nfa.eps, s, e, data) == want, (pattern, text)
        assert accepts(edges, eps, cs, ce, data) == want, (pattern, text)


def test_nfa_rows_are_not_tracked_by_the_collector(default_vocab) -> None:
    compiled = compile_json_schema(SCHEMA, default_vocab)
    q = compiled.dfa.walk(compiled.initial_state, TEXTS[0][:40])
    compiled.allowed_ids(q)
    nfa = compiled.dfa.nfa
    assert len(nfa.edges) > 100
    assert not any(gc.is_tracked(row) for row in nfa.edges + nfa.eps)
    assert not any(gc.is_tracked(e) for row in nfa.edges for e in row)


def test_bad_input_is_a_value_error(default_vocab) -> None:
    compiled = compile_json_schema(SCHEMA, default_vocab)
    dfa = compiled.dfa
    core = dfa._core
    with pytest.raises(ValueError, match="out of range"):
        core.closure((len(dfa.nfa.eps) + 5,), dfa.final)
    with pytest.raises(ValueError, match="no room"):
        core.closure((0,), np.zeros(1, dtype=bool))
    with pytest.raises(ValueError, match="inconsistent"):
        core.build_rows(np.array([1], dtype=np.int32), dfa.trans[:2].copy(), dfa.built, dfa.final)
    with pytest.raises(ValueError, match="does not exist"):
        core.build_rows(np.array([10**6], dtype=np.int32), dfa.trans, dfa.built, dfa.final)
    with pytest.raises(IndexError):
        dfa.states_of(10**6)
