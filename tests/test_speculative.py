"""Speculative decoding under constraints (plugin.speculation): lossless by test.

* Greedy: speculative output equals non-speculative output token for token, for every
  drafter and for ``"auto"``, over prompts, constraints (regex, JSON Schema, SQL, Python,
  monitors) and seeds, on a tiny random model and on the default model.
* Sampling: on a finite language with a sharp tiny model, speculative samples follow
  masked decoding's exact distribution (enumerated), by a chi-square test.
* The tree forward scores every branch as separate sequences would, and the cache keeps
  exactly the accepted branch.
* Bad options are ``OptionError``s naming them; a drafter that fails never changes the
  output and ``stats`` says so.
"""

from __future__ import annotations

import json
from collections import Counter

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grammars.regex import compile_regex
from plugin import EditSession, OptionError, constrained_generate
from plugin.kv.cache import extend, keep_path, score
from plugin.speculation import SpeculativeConfig
from plugin.speculation.lookup import ContextLookup
from tests.exact_distributions import LANGUAGE, chi_square_pvalue, enumerate_language, exact_and_masked

DRAFTER_SETS = [
    "auto",
    "lookup",
    "recycling",
    "constraint",
    ["lookup", "recycling"],
    SpeculativeConfig(fit_cost=False),  # drafts not cut to the measured forward cost
]
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array"}},
    "required": ["name", "age"],
}


def _same(model, tokenizer, prompt, speculative, **kwargs):
    """Generate with and without ``speculative``; both generations."""
    plain = constrained_generate(model, tokenizer, prompt, **kwargs)
    fast = constrained_generate(model, tokenizer, prompt, speculative=speculative, **kwargs)
    return plain, fast


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    words=st.lists(
        st.sampled_from(["alpha", "beta", "gamma", "(", ")", ":", "def", " x", "1"]), min_size=1, max_size=12
    ),
    drafters=st.sampled_from(DRAFTER_SETS),
    route=st.sampled_from(["regex", "json", "none", "sql"]),
    max_new_tokens=st.integers(1, 40),
)
def test_greedy_speculation_is_token_for_token_on_a_tiny_model(
    tiny_model, default_tokenizer, words, drafters, route, max_new_tokens
):
    prompt = " ".join(words) * 2  # repeats give the context lookup something to copy
    constraint = {
        "regex": {"regex": r"(alpha|beta|gamma)( (alpha|beta|gamma|\d+))*\."},
        "json": {"json_schema": SCHEMA},
        "none": {},
        "sql": {"grammar": "sql"},
    }[route]
    plain, fast = _same(
        tiny_model, default_tokenizer, prompt, drafters, max_new_tokens=max_new_tokens, **constraint
    )
    assert fast.token_ids == plain.token_ids
    assert fast.finish_reason == plain.finish_reason and fast.valid == plain.valid
    spec = fast.stats["speculative"]
    assert spec["drafter_failures"] == {}
    assert spec["accepted_tokens"] <= spec["drafted_tokens"]
    assert spec["target_forwards"] <= max(1, len(plain.token_ids))


@pytest.mark.parametrize("sampler", ["mask", "awrs"])
def test_greedy_speculation_with_the_python_grammar_and_awrs(tiny_model, default_tokenizer, sampler):
    prompt = "def add(a, b):\n    return a + b\n\ndef add(a, b):\n"
    plain, fast = _same(
        tiny_model, default_tokenizer, prompt, "auto", grammar="python", sampler=sampler, max_new_tokens=30
    )
    assert fast.token_ids == plain.token_ids


def test_a_draft_model_sharing_the_vocabulary_drafts_losslessly(
    tiny_model, sharp_tiny_model, default_tokenizer
):
    prompt = "alpha beta gamma alpha beta"
    config = SpeculativeConfig(
        drafters=("constraint", "draft_model"), draft_model=sharp_tiny_model, max_draft=4, fit_cost=False
    )
    plain, fast = _same(
        tiny_model, default_tokenizer, prompt, config, regex=r"[a-z ]{1,40}\.", max_new_tokens=24
    )
    assert fast.token_ids == plain.token_ids
    assert fast.stats["speculative"]["per_drafter"]["draft_model"]["drafted"] > 0
    # the tiny model drafting for itself is always right
    self_config = SpeculativeConfig(
        drafters=("draft_model",), draft_model=tiny_model, max_draft=6, fit_cost=False
    )
    again = constrained_generate(
        tiny_model, default_tokenizer, prompt, speculative=self_config, max_new_tokens=24
    )
    plain_free = constrained_generate(tiny_model, default_tokenizer, prompt, max_new_tokens=24)
    assert again.token_ids == plain_free.token_ids
    spec = again.stats["speculative"]
    assert spec["accepted_tokens"] == spec["drafted_tokens"] > 0


def test_default_model_echo_tasks_are_identical_and_accept_drafts(default_model):
    model, tokenizer = default_model
    document = (
        "Record: the customer Alice Johnson, aged 34, is tagged premium and early-adopter. "
        "Write the record as JSON."
    )
    plain, fast = _same(model, tokenizer, document, "auto", json_schema=SCHEMA, chat=True, max_new_tokens=48)
    assert fast.token_ids == plain.token_ids and fast.valid
    jsonschema.validate(json.loads(fast.text), SCHEMA)
    code = (
        "def area(width, height):\n    return width * height\n\n\n# the same function, renamed to surface\n"
    )
    plain, fast = _same(model, tokenizer, code, "auto", grammar="python", max_new_tokens=40)
    assert fast.token_ids == plain.token_ids
    spec = fast.stats["speculative"]
    assert spec["tokens_per_forward"] > 1.0, spec  # drafts were accepted: fewer forwards than tokens
    sql = (
        "CREATE TABLE singer (id INTEGER, name TEXT, country TEXT);\n-- names of singers from France\nSELECT"
    )
    plain, fast = _same(model, tokenizer, sql, "auto", grammar="sql", prefix="SELECT", max_new_tokens=24)
    assert fast.token_ids == plain.token_ids


def test_the_constraint_drafter_spells_the_text_it_forces(default_model):
    """JSON keys are forced text that many token sequences spell, so no single token is
    forced; the constraint drafter drafts the tokenizer's own spelling of them (and the
    layout the output uses around them), and the target keeps most of it."""
    model, tokenizer = default_model
    schema = {
        "type": "object",
        "properties": {"customer_name": {"type": "string"}, "customer_email": {"type": "string"}},
        "required": ["customer_name", "customer_email"],
    }
    prompt = "Alice Johnson's email is alice@example.com. Write her record as JSON."
    plain, fast = _same(
        model, tokenizer, prompt, "constraint", json_schema=schema, chat=True, max_new_tokens=40
    )
    assert fast.token_ids == plain.token_ids and fast.valid
    drafted = fast.stats["speculative"]["per_drafter"]["constraint"]
    assert drafted["drafted"] > plain.stats["forced_tokens"] + 2, drafted
    assert drafted["accepted"] >= drafted["drafted"] // 2, drafted


def test_monitored_generations_are_identical(default_model, tmp_path):
    """Monitors (a live SQLite database; jedi over a project) with speculation."""
    import sqlite3

    model, tokenizer = default_model
    db = tmp_path / "shop.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT, city TEXT)")
        conn.execute("CREATE TABLE purchase (id INTEGER PRIMARY KEY, customer_id INTEGER, total REAL)")
    prompt = (
        "-- tables: customer(id, name, city), purchase(id, customer_id, total)\n"
        "-- names of customers from Paris\nSELECT name FROM customer WHERE city = 'Paris';\n"
        "-- totals of purchases by customer 3\nSELECT"
    )
    plain, fast = _same(
        model, tokenizer, prompt, "auto", grammar="sql", database=str(db), prefix="SELECT", max_new_tokens=24
    )
    assert fast.token_ids == plain.token_ids
    (tmp_path / "shapes.py").write_text(
        "class Circle:\n    def __init__(self, radius):\n        self.radius = radius\n\n"
        "    def area(self):\n        return 3.14159 * self.radius ** 2\n"
    )
    code = "from shapes import Circle\n\nc = Circle(2.0)\nprint(c.area())\nprint(c."
    plain, fast = _same(
        model,
        tokenizer,
        code,
        "auto",
        prefix=code,
        monitors="python",
        project_root=tmp_path,
        file_path=tmp_path / "main.py",
        max_new_tokens=12,
    )
    assert fast.token_ids == plain.token_ids


def test_speculation_over_an_edit_session_cache(default_model):
    """The language server's cache is an edit session's: speculation reads it, never writes it."""
    model, tokenizer = default_model
    text = "def total(items):\n    return sum(items)\n\n\ndef total(items):\n"
    session = EditSession(model, tokenizer, text)
    before = session.logits().clone()
    plain = session.generate(max_new_tokens=20)
    fast = session.generate(max_new_tokens=20, speculative="auto")
    assert fast.token_ids == plain.token_ids
    assert fast.stats["cached_prompt_tokens"] > 0
    assert torch.equal(session.logits(), before)


@pytest.mark.parametrize("sampler", ["mask", "awrs"])
def test_sampled_speculation_follows_masked_decoding_exactly(sharp_tiny_model, default_tokenizer, sampler):
    """Drafts copied from a prompt full of the language's words are often wrong for the
    sharp model: the accept/residual rule must leave masked decoding's distribution."""
    piece = {t: default_tokenizer.convert_tokens_to_ids(t) for t in ("x", "ab", "bb", "a", "b")}
    prompt_ids = [piece[t] for t in ("x", "bb", "b", "ab", "a", "bb", "a", "ab", "b")]
    constraint = compile_regex(LANGUAGE, default_tokenizer)
    sequences = enumerate_language(sharp_tiny_model, constraint, prompt_ids, default_tokenizer.eos_token_id)
    _, masked = exact_and_masked(sequences)
    runs = 1500
    counts: Counter = Counter()
    drafted = accepted = 0
    config = SpeculativeConfig(
        drafters=("lookup", "recycling"), ngram=1, stop_threshold=1.0, max_draft=4, fit_cost=False
    )
    for seed in range(runs):
        gen = constrained_generate(
            sharp_tiny_model,
            default_tokenizer,
            prompt_ids,
            constraint=constraint,
            sampler=sampler,
            temperature=1.0,
            seed=seed,
            max_new_tokens=8,
            speculative=config,
        )
        assert gen.valid
        counts[tuple(gen.token_ids)] += 1
        drafted += gen.stats["speculative"]["drafted_tokens"]
        accepted += gen.stats["speculative"]["accepted_tokens"]
    assert drafted > runs / 2 and 50 < accepted < drafted / 2  # both paths ran often
    assert chi_square_pvalue(counts, masked, runs) > 1e-3


def test_tree_scoring_matches_separate_sequences_and_keeps_one_branch(tiny_model, default_tokenizer):
    from transformers import DynamicCache

    context = default_tokenizer.encode("def f(x):\n    return", add_special_tokens=False)
    a, b, c = (default_tokenizer.encode(t, add_special_tokens=False)[0] for t in (" x", " y", " z"))
    cache = DynamicCache()
    extend(tiny_model, cache, context)
    rows = score(tiny_model, cache, [a, b, c], 3, parents=[-1, -1, 0])
    for seq, row in (([a], 0), ([b], 1), ([a, c], 2)):
        reference = extend(tiny_model, DynamicCache(), context + seq)
        torch.testing.assert_close(rows[row], reference, atol=1e-4, rtol=1e-4)
    keep_path(cache, len(context), [0, 2])  # keep the branch a → c
    after = extend(tiny_model, cache, [b])
    torch.testing.assert_close(
        after, extend(tiny_model, DynamicCache(), [*context, a, c, b]), atol=1e-4, rtol=1e-4
    )


def test_context_lookup_copies_the_longest_recent_match():
    lookup = ContextLookup(3, extra=[7, 8, 9, 10, 11])
    lookup.add([1, 2, 3, 1, 2])
    assert lookup.propose([], 3) == ([3, 1, 2], 2)  # "1 2" was followed by "3 1 2"
    lookup.add([3])
    assert lookup.propose([9], 2) == ([10, 11], 1)  # after a pending 9: from the extra document
    fresh = ContextLookup(3)
    fresh.add([5, 6])
    assert fresh.propose([], 4) == ([], 0)


def test_context_lookup_repeats_past_the_present_and_counts_the_agreement():
    lookup = ContextLookup(3)
    lookup.add([5, 1, 2, 3, 1, 2, 3])
    # the source "1 2 3" runs into the present: the copy goes on from what it writes
    assert lookup.propose([], 8) == ([1, 2, 3, 1, 2, 3, 1, 2], 3)
    # after a pending 1, "2 3 1" matched and 4 tokens agree (the 5 before does not)
    assert lookup.propose([1], 4) == ([2, 3, 1, 2], 4)
    document = ContextLookup(3, extra=[4, 10, 11, 12, 13, 14, 15, 16, 17, 18, 99])
    document.add([10, 11, 12, 13, 14, 15, 16, 17, 18])
    assert document.propose([], 1) == ([99], 9)  # agreement counts back past the 3-gram


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("telepathy", "unknown drafter"),
        (SpeculativeConfig.__new__(SpeculativeConfig), None),
        (42, "speculative must be"),
    ],
)
def test_bad_speculative_values_are_option_errors(tiny_model, default_tokenizer, value, message):
    if message is None:
        with pytest.raises(OptionError, match="max_draft"):
            SpeculativeConfig(max_draft=0)
        with pytest.raises(OptionError, match="stop_threshold"):
            SpeculativeConfig(stop_threshold=1.5)
        with pytest.raises(OptionError, match="needs draft_model"):
            SpeculativeConfig(drafters=("draft_model",))
        return
    with pytest.raises(OptionError, match=message):
        constrained_generate(tiny_model, default_tokenizer, "x", speculative=value, max_new_tokens=2)


def test_speculation_refuses_samplers_and_vocabularies_it_cannot_serve(tiny_model, default_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    with pytest.raises(OptionError, match="sampler='smc'"):
        constrained_generate(
            tiny_model,
            default_tokenizer,
            "x",
            regex="a+",
            sampler="smc",
            speculative="auto",
            max_new_tokens=2,
        )
    other = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=1000,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    with pytest.raises(OptionError, match="vocabulary of 1000"):
        constrained_generate(
            tiny_model, default_tokenizer, "x", speculative="auto", draft_model=other, max_new_tokens=2
        )
    with pytest.raises(OptionError, match="needs speculative"):
        constrained_generate(tiny_model, default_tokenizer, "x", draft_model=tiny_model, max_new_tokens=2)


def test_a_failing_drafter_never_changes_the_output(tiny_model, default_tokenizer, monkeypatch):
    prompt = "alpha beta alpha beta alpha"
    plain = constrained_generate(tiny_model, default_tokenizer, prompt, max_new_tokens=16)

    def broken(self, pending, limit):
        raise RuntimeError("index out of sync")

    monkeypatch.setattr(ContextLookup, "propose", broken)
    fast = constrained_generate(tiny_model, default_tokenizer, prompt, speculative="auto", max_new_tokens=16)
    assert fast.token_ids == plain.token_ids
    assert fast.stats["speculative"]["drafter_failures"] == {"lookup": "RuntimeError: index out of sync"}


def test_the_language_server_setting_names_drafters_or_is_refused_with_its_path():
    from lsp_bridge.settings import Settings
    from plugin.speculation import resolve_speculative

    assert Settings().speculative == "auto" and resolve_speculative("off") is None
    # the default follows the ASAp sampler, which samples every token itself (asking for
    # speculation with it is refused, below)
    assert Settings().updated({"sampler": "asap"}).speculative == "off"
    assert resolve_speculative(
        Settings().updated({"speculative": "lookup, recycling"}).speculative
    ).drafters == (
        "lookup",
        "recycling",
    )
    with pytest.raises(OptionError, match=r"settings\.stencil\.speculative must be 'off', 'auto'"):
        Settings().updated({"stencil": {"speculative": "draft_model"}})
    with pytest.raises(OptionError, match=r"settings\.speculative must be 'off' with sampler 'asap'"):
        Settings().updated({"sampler": "asap", "speculative": "auto"})


def test_end_when_ends_at_the_token_and_no_draft_runs_past_it(default_model, monkeypatch):
    """``end_when`` (the language server's line end) stops at the token that makes it
    true, with and without speculation, and the speculator never drafts a node after
    one that ends the generation."""
    from plugin.speculation.speculator import Speculator

    model, tokenizer = default_model
    code = "x = 1\ny = 2\nz = 3\nx = 1\ny = 2\nz = 3\nx = 1\n"

    def past_the_line(out: bytes) -> bool:
        return b"\n" in out.lstrip(b"\n")

    free = constrained_generate(model, tokenizer, code, grammar="python", prefix=code, max_new_tokens=30)
    texts = [tokenizer.decode(free.token_ids[: i + 1]).encode() for i in range(len(free.token_ids))]
    first = next(i for i, t in enumerate(texts) if past_the_line(t))
    drafts, ending = [], []
    original = Speculator.draft

    def recording(self, out, matcher, remaining, ends=None):
        tree = original(self, out, matcher, remaining, ends)
        for node, parent in enumerate(tree.parents):  # judged now: the output grows after
            ancestry = []
            while parent >= 0:
                ancestry.insert(0, tree.tokens[parent])
                parent = tree.parents[parent]
            drafts.append(bool(ancestry) and ends(ancestry))
            ending.append(ends([*ancestry, tree.tokens[node]]))
        return tree

    monkeypatch.setattr(Speculator, "draft", recording)
    eager = SpeculativeConfig(drafters=("lookup",), stop_threshold=1.0, fit_cost=False)  # up to max_draft
    for speculative in (None, "auto", eager):
        gen = constrained_generate(
            model,
            tokenizer,
            code,
            grammar="python",
            prefix=code,
            max_new_tokens=30,
            end_when=past_the_line,
            speculative=speculative,
        )
        assert gen.token_ids == free.token_ids[: first + 1]
        assert gen.finish_reason == "stop"
    assert drafts, "nothing was drafted"
    assert not any(drafts), "a node was drafted after a node that ends the output"
    assert any(ending), "no draft reached the line's end: the test shows nothing"


def test_end_when_is_refused_with_smc(tiny_model, default_tokenizer):
    with pytest.raises(OptionError, match="end_when"):
        constrained_generate(
            tiny_model, default_tokenizer, "x", regex="[ab]+", sampler="smc", end_when=lambda out: True
        )


def test_small_drafts_take_cheap_recycled_candidates_and_counts_outlive_a_generation():
    """A draft under ``CHEAP_NODES`` takes recycled candidates down to ``CHEAP_FLOOR``
    (below the usual floor), and the acceptance counts are the model's for the process."""
    from plugin.speculation.speculator import CHEAP_FLOOR, CHEAP_NODES, Speculator, verdicts_for

    class Model:  # only its identity matters here: the tables are kept per model
        pass

    model = Model()
    config = SpeculativeConfig(drafters=("recycling",), fit_cost=False)
    speculator = Speculator(config, model, vocab_size=16, stop_ids=frozenset(), prompt_ids=[1, 2])
    table = speculator.recycling.table
    table[5, 0], table[6, 0], table[7, 0], table[8, 0] = 6, 7, 8, 9
    # rank-0 candidates kept 1 time in 5 at depth 1 (under the usual 0.25 floor, above
    # the cheap one), nearly always deeper
    verdicts = verdicts_for(model)
    verdicts[("recycling", (1, 0))] = [1.0, 4.0]
    for depth in range(2, 7):
        verdicts[("recycling", (depth, 0))] = [99.0, 1.0]
    assert 1 - config.stop_threshold > 0.2 > CHEAP_FLOOR
    tree = speculator.draft([5], None, remaining=10)
    assert CHEAP_NODES == 3 and tree.tokens == [6, 7, 8] and tree.is_chain()
    again = Speculator(config, model, vocab_size=16, stop_ids=frozenset(), prompt_ids=[1, 2])
    assert again.verdicts is verdicts  # the next generation starts from these counts
