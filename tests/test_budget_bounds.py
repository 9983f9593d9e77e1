"""The lazy route's completion bounds: sound, never looser than a full search, and what
``restrict_to_budget`` needs to keep every output finishable within its budget.

The bounds are found once per state by searches that stop at the first known state
(``CompiledLazyDFA.distance``), and checked exactly near the end of a budget
(``CompiledLazyDFA.within``); these tests compare them with the breadth-first search
each state used to run in full, and drive matchers the way the decode loop does.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from grammars.json_schema import compile_json_schema
from grammars.lazy_dfa import _DISTANCE_VISITS, _FAR, DEAD
from plugin.demo import USER_SCHEMA

SCHEMAS = [
    USER_SCHEMA,  # the demo's user record: bounded strings, an email, a bounded array
    {"type": "array", "items": {}},  # any JSON inside: nests without end
    {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string"}, "minItems": 2}},
        "required": ["tags"],
    },
]


def full_search(compiled, state: int) -> int:
    """The search each state used to run: shortest single-byte path, pruned first."""
    for prune in (True, False):
        seen = {state: 0}
        frontier = [state]
        while frontier and len(seen) < _DISTANCE_VISITS:
            nxt = []
            for q in frontier:
                if compiled.dfa.final[q]:
                    return seen[q]
                if not compiled.dfa.built[q]:
                    compiled.dfa.build_row(q)
                row = compiled.dfa.trans[q, compiled._single_bytes]
                live = row != DEAD
                if prune:
                    plain = live & ~compiled._skippable
                    live = plain if plain.any() else live & ~compiled._blank
                for r in np.unique(row[live]).tolist():
                    if r not in seen:
                        seen[r] = seen[q] + 1
                        nxt.append(r)
            frontier = nxt
    return _FAR


def walk_under_budget(compiled, budget: int, rng: random.Random) -> tuple[bool, list[int], list[int]]:
    """A random decode (never choosing EOS) under restrict_to_budget, as the decode
    loop runs it; whether it ends accepting, the states it passed and its tokens."""
    matcher = compiled.matcher()
    mask = torch.zeros(compiled.vocab.size, dtype=torch.bool)
    states: list[int] = []
    tokens: list[int] = []
    for used in range(budget):
        if matcher.is_finished():
            break
        states.append(matcher.state)
        token = random_budget_step(matcher, mask, budget - used, rng)
        if token is None:
            break  # only EOS is left
        tokens.append(token)
    return matcher.is_accepting(), states, tokens


@pytest.mark.parametrize("case", range(len(SCHEMAS)))
def test_random_decodes_finish_within_any_budget_the_bound_allows(default_vocab, case: int) -> None:
    compiled = compile_json_schema(SCHEMAS[case], default_vocab, budget_s=30)
    start = compiled.distance(compiled.initial_state)
    assert start < _FAR
    rng = random.Random(case)
    for slack in (0, 0, 1, 3, 8, 20):
        accepted, _, _ = walk_under_budget(compiled, start + slack, rng)
        assert accepted, (case, start, slack)


@pytest.mark.parametrize("case", range(len(SCHEMAS)))
def test_bounds_are_real_completions_and_never_looser(default_vocab, case: int) -> None:
    """Each state's bound is spelled by a chain of allowed tokens whose bounds drop by
    one (so it is a real completion), and within() says yes wherever the full search
    found a completion that short."""
    compiled = compile_json_schema(SCHEMAS[case], default_vocab, budget_s=30)
    rng = random.Random(100 + case)
    met: set[int] = set()
    for slack in (2, 30):
        met.update(walk_under_budget(compiled, compiled.distance(compiled.initial_state) + slack, rng)[1])
    for state in sorted(met)[:40]:
        reference = full_search(compiled, state)
        if reference < _FAR:
            assert compiled.within(state, reference)
        q, left = state, compiled.distance(state)
        while not compiled.is_final(q):  # follow the bound down to acceptance
            _, _, _, (ends, _), _ = compiled._next_entry(q)
            nxt = next((int(e) for e in ends if compiled.distance(int(e)) <= left - 1), None)
            assert nxt is not None, (state, q, left)
            q, left = nxt, compiled.distance(nxt)


def test_a_budget_check_searches_nothing_once_states_are_known(default_vocab) -> None:
    """Bounds belong to the compiled constraint: a second decode over the same states
    (another matcher) runs no search at all."""
    compiled = compile_json_schema(SCHEMAS[0], default_vocab, budget_s=30)
    rng = random.Random(7)
    _, states, tokens = walk_under_budget(compiled, 200, rng)
    searched = len(compiled._pruned), len(compiled._bound)
    matcher = compiled.matcher()
    mask = torch.zeros(compiled.vocab.size, dtype=torch.bool)
    for state, token in zip(states, tokens, strict=True):
        assert matcher.state == state
        matcher.fill_mask(mask)
        matcher.restrict_to_budget(mask, 200)
        matcher.advance(token)
    assert (len(compiled._pruned), len(compiled._bound)) == searched


@pytest.mark.parametrize("case", range(len(SCHEMAS)))
def test_exact_checks_decide_where_a_bound_is_loose(default_vocab, monkeypatch, case: int) -> None:
    """A first-met bound may exceed the shortest completion; then within() searches,
    and budgets the full search allows still finish. Bounds are inflated here so that
    every budget check near the end goes to that search."""
    from grammars.lazy_dfa import CompiledLazyDFA

    exact = CompiledLazyDFA.distance
    monkeypatch.setattr(
        CompiledLazyDFA, "distance", lambda self, q: exact(self, q) + (0 if self.dfa.final[q] else 3)
    )
    compiled = compile_json_schema(SCHEMAS[case], default_vocab, budget_s=30)
    start = full_search(compiled, compiled.initial_state)
    rng = random.Random(200 + case)
    met: set[int] = set()
    for slack in (0, 0, 1, 2, 5):
        accepted, states, _ = walk_under_budget(compiled, start + slack, rng)
        assert accepted, (case, start, slack)
        met.update(states)
    for state in sorted(met)[:30]:
        reference = full_search(compiled, state)
        if reference < _FAR:
            assert compiled.within(state, reference)


def _budget_masked(
    model, constraint, prompt_ids: list[int], eos: int, budget: int, temperature: float
) -> dict:
    """Masked decoding's distribution over outputs when every step's mask is restricted
    to the budget first (what the decode loop did before choosing lazily), enumerated."""
    from tests.exact_distributions import _probs

    out: dict[tuple[int, ...], float] = {}

    def walk(matcher, seq: list[int], p: float) -> None:
        if matcher.is_finished() or len(seq) == budget:
            out[tuple(seq)] = out.get(tuple(seq), 0.0) + p
            return
        probs = torch.softmax(torch.log(_probs(model, prompt_ids + seq)) / temperature, dim=-1)
        mask = torch.zeros(probs.numel(), dtype=torch.bool)
        matcher.fill_mask(mask)
        matcher.restrict_to_budget(mask, budget - len(seq))
        total = float(probs[mask].sum())
        for t in torch.nonzero(mask).flatten().tolist():
            if t == eos:
                out[tuple(seq)] = out.get(tuple(seq), 0.0) + p * float(probs[t]) / total
                continue
            kid = matcher.fork()
            kid.advance(t)
            walk(kid, [*seq, t], p * float(probs[t]) / total)

    walk(constraint.matcher(), [], 1.0)
    return out


@pytest.mark.parametrize("sampler", ["mask", "awrs"])
def test_choosing_before_restricting_keeps_the_budget_restricted_distribution(
    sharp_tiny_model, default_tokenizer, sampler: str
) -> None:
    """The decode loop draws from the full mask and restricts to the budget only when the
    draw is a token the restriction clears (then it draws again from the restricted
    mask). Its outputs must follow the eagerly restricted distribution, enumerated."""
    from collections import Counter

    from plugin import constrained_generate
    from plugin.api import build_constraint
    from tests.exact_distributions import chi_square_pvalue

    constraint = build_constraint(default_tokenizer, regex="x[ab]{0,5}!")  # "!" must come in time
    prompt_ids = default_tokenizer.encode("ab ba c", add_special_tokens=False)
    budget = 3
    target = _budget_masked(
        sharp_tiny_model, constraint, prompt_ids, default_tokenizer.eos_token_id, budget, temperature=4.0
    )
    runs, counts, redrawn = 1200, Counter(), 0
    for seed in range(runs):
        gen = constrained_generate(
            sharp_tiny_model,
            default_tokenizer,
            prompt_ids,
            constraint=constraint,
            sampler=sampler,
            temperature=4.0,  # spread the sharp model's mass over many outputs
            seed=seed,
            max_new_tokens=budget,
            jump_forward=False,
        )
        assert gen.valid, gen.text
        counts[tuple(gen.token_ids)] += 1
        redrawn += gen.stats["budget_restricted_steps"]
    assert redrawn > runs / 4  # the restriction was needed often
    assert chi_square_pvalue(counts, target, runs) > 1e-3


# --- the grammar engine -------------------------------------------------------------


def random_budget_step(matcher, mask: torch.Tensor, remaining: int, rng: random.Random) -> int | None:
    """Advance ``matcher`` by a random token of its mask restricted to ``remaining``
    tokens of budget, EOS excluded; the token, or None when only EOS is left."""
    mask.zero_()
    matcher.fill_mask(mask)
    matcher.restrict_to_budget(mask, remaining)
    mask[sorted(matcher.vocab.eos_ids)] = False
    ids = torch.nonzero(mask).flatten()
    if not ids.numel():
        return None
    token = int(ids[rng.randrange(ids.numel())])
    matcher.advance(token)
    return token


def grammar_walk(g, budget: int, rng: random.Random, prefix: str = "") -> tuple[bool, bytes]:
    """A random decode (never choosing EOS) under restrict_to_budget; whether it ends
    where the grammar may end, and its text."""
    matcher = g.matcher_after(prefix) if prefix else g.matcher()
    mask = torch.zeros(g.vocab.size, dtype=torch.bool)
    for used in range(budget):
        if random_budget_step(matcher, mask, budget - used, rng) is None:
            break
    return matcher.is_accepting(), matcher.text()


@pytest.mark.parametrize(
    ("grammar", "prefix"),
    [("json", ""), ("sql", ""), ("sql", "SELECT a FROM t WHERE (b = "), ("python", "def f(x):\n")],
)
def test_grammar_decodes_finish_within_any_budget_the_bound_allows(default_tokenizer, grammar, prefix):
    """Random tokens, never EOS, under the grammar's budget bounds: every walk whose
    budget is at least the start state's bound plus one (the end-of-sequence token the
    bounds keep room for) ends where the grammar may end, and Lark's own parser (or
    ``ast.parse``) takes the text."""
    import ast

    import lark

    from grammars import compile as compile_grammar
    from grammars.lark_compile import GRAMMAR_DIR

    g = compile_grammar(grammar, default_tokenizer)
    start = g.matcher_after(prefix) if prefix else g.matcher()
    bound = g.bound(start._state.q, start._state.syn)
    assert bound < 64
    parser = None
    if grammar != "python":
        parser = lark.Lark((GRAMMAR_DIR / f"{grammar}.lark").read_text(), parser="lalr", start="start")
    rng = random.Random(7)
    for walk in range(8):
        accepted, text = grammar_walk(g, bound + 1 + walk % 4, rng, prefix)
        assert accepted, text
        if parser is None:
            ast.parse(text)
        else:
            parser.parse(text.decode())


def test_grammar_bounds_are_real_completions(default_tokenizer):
    """A state's bound is the length of a completion the matcher accepts: the bytes
    the walk found, spelled with vocabulary tokens, end where the grammar may end."""
    from grammars import compile as compile_grammar
    from grammars.cfg import FAR, _completion, _spelled_lengths

    g = compile_grammar("sql", default_tokenizer)
    rng = random.Random(1)
    m = g.matcher()
    for _ in range(30):
        st = m._state
        found = _completion(g, st.q, st.syn)
        assert found is not None
        data, _, tail = found
        probe = m.fork()
        spell = g.spellings()
        i = 0
        while i < len(data):  # the greedy spelling the bound counts, advanced for real
            n = next(
                n for n in range(min(len(data) - i, spell.longest), 0, -1) if data[i : i + n] in spell.ids
            )
            probe.advance(next(t for t in spell.ids[data[i : i + n]] if probe.accepts(t)))
            i += n
        if tail == 0:
            assert probe.is_accepting()
        # the bound came from a real completion too, maybe found by an earlier search
        assert g.bound(st.q, st.syn) < FAR and _spelled_lengths(g, data)[0] + tail < FAR
        mask = torch.zeros(g.vocab.size, dtype=torch.bool)
        m.fill_mask(mask)
        mask[sorted(g.vocab.eos_ids)] = False
        ids = torch.nonzero(mask).flatten().tolist()
        m.advance(rng.choice(ids))


@pytest.mark.parametrize("tail", ['"', "(", "1", "A", "[{"])
def test_python_bounds_inside_brackets_are_found_and_short(default_tokenizer, tail: str):
    """Inside a bracket Python's newlines and blanks are free, and its newline lexemes
    have a lexer state per column: a completion walk that took blanks early spent its
    4,096 visits there and bounded these states as unfinishable (so a small budget
    refused every token leading to them). The walk must close them in a few tokens."""
    from grammars import compile as compile_grammar
    from grammars.cfg import _completion

    g = compile_grammar("python", default_tokenizer)
    prefix = 'class A:\n    def f(self):\n        data = {\n            "data": {}, ' + tail
    m = g.matcher_after(prefix)
    found = _completion(g, m._state.q, m._state.syn)
    assert found is not None
    probe = g.matcher_after(prefix.encode() + found[0])
    assert found[2] > 0 or probe.is_accepting()
    assert g.bound(m._state.q, m._state.syn) <= 8


@pytest.mark.parametrize(
    ("prefix", "fits"),
    [
        ("def count_vowels(text):\n    return sum(1 for", 5),
        ("def f(xs):\n    return [x for", 5),
        ("def f(x):\n    return x if", 4),
        ("def f(d):\n    return {k: v for k, v in d.items() if", 3),
        ("def f(x):\n    with open(x) as", 4),
        ("def f(x):\n    y = lambda", 4),
    ],
)
def test_python_expressions_after_keywords_are_finishable(default_tokenizer, prefix: str, fits: int):
    """After ``sum(1 for`` a blank must come before the next name, and the byte walks
    try blanks last: they found no completion at all, so every generator expression,
    conditional expression and ``with ... as`` was refused however large the budget
    (the default model was steered from ``sum(1 for ch in text ...)`` to
    ``sum(1000000...``). The lexeme-level search finds ``A in A)`` and the like, and
    what it finds is a real completion that the matcher accepts."""
    from grammars import compile as compile_grammar
    from grammars.cfg import _lexeme_completion, _spelled_lengths

    g = compile_grammar("python_function", default_tokenizer)
    m = g.matcher_after(prefix)
    st = m._state
    assert g.within(st.q, st.syn, 40) and g.within(st.q, st.syn, fits)
    found = _lexeme_completion(g, st.q, st.syn)
    assert found is not None and _spelled_lengths(g, found[0])[0] <= fits
    done = g.matcher_after(prefix.encode() + found[0])
    assert done.is_accepting()
    # every state on the path got its bound: the next steps need no search
    for q, syn in found[1]:
        assert g.bound(q, syn) <= fits


def test_budget_refuses_agrees_with_the_restriction(default_tokenizer):
    """The decode loop asks ``budget_refuses`` for the chosen token and restricts only
    when it says so: both must read the same bounds."""
    from grammars import compile as compile_grammar

    g = compile_grammar("sql", default_tokenizer)
    m = g.matcher_after("SELECT a FROM t WHERE (b = ")
    mask = torch.zeros(g.vocab.size, dtype=torch.bool)
    m.fill_mask(mask)
    full = mask.clone()
    for remaining in (1, 2, 3, 6):
        mask.copy_(full)
        if not m.restrict_to_budget(mask, remaining):
            assert torch.equal(mask, full)  # nothing cleared: no token can meet the budget
            continue
        for t in torch.nonzero(full).flatten().tolist()[::97]:
            if t not in g.vocab.eos_ids:
                assert m.budget_refuses(t, remaining) == (not bool(mask[t]))


@pytest.mark.default_model
def test_sql_that_would_run_on_ends_stop_and_valid(default_model):
    """The issue's case: a prompt ending in ``SELECT `` makes the default model write
    ``1000000000000 …`` without end; under the grammar's budget bounds the output ends
    with end-of-sequence inside ``max_new_tokens`` and Lark's parser takes it."""
    import lark

    from grammars.lark_compile import GRAMMAR_DIR
    from plugin.api import constrained_generate

    model, tokenizer = default_model
    parser = lark.Lark((GRAMMAR_DIR / "sql.lark").read_text(), parser="lalr", start="start")
    schema = "CREATE TABLE volume(volume_id int, artist text, weeks_on_top real);"
    for question in ("How many volumes are there?", "List the artists with more than 2 weeks on top."):
        prompt = f"{schema}\n-- {question}\nSELECT "
        gen = constrained_generate(
            model, tokenizer, prompt, grammar="sql", prefix="SELECT ", max_new_tokens=24
        )
        assert gen.finish_reason == "stop", gen.text
        parser.parse("SELECT " + gen.text)


@pytest.mark.default_model
def test_budget_bounds_leave_an_output_that_fits_unchanged(default_model):
    """A function of 15 tokens under a budget of 96: the budget check must not touch it.
    With the depth-first bounds alone (far longer than needed after ``def``) the model was
    steered to ``def area():``; the breadth-first check (``CompiledGrammar.within``)
    finds the short completion, so the output equals the one without budget bounds."""
    from plugin.api import constrained_generate

    model, tokenizer = default_model
    prompt = "Write a Python function area(width, height) that returns the area of a rectangle."
    outs = [
        constrained_generate(
            model,
            tokenizer,
            prompt,
            chat=True,
            grammar="python_function",
            max_new_tokens=96,
            finish_within_budget=b,
        )
        for b in (True, False)
    ]
    assert outs[0].text == outs[1].text and outs[0].finish_reason == "stop", outs[0].text
    assert "def area(width, height):" in outs[0].text
