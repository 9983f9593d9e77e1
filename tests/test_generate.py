"""The decode loop and constrained_generate on a tiny random Llama with the real tokenizer."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grammars.regex import compile_regex
from plugin import OptionError, PromptError, StencilLogitsProcessor, constrained_generate
from plugin.errors import GrammarError

PATTERN = r"(red|green|blue)( and (red|green|blue)){0,3}\."
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "n": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "n", "tags", "ok"],
}
FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    temperature=st.sampled_from([0.7, 1.0, 1.5]),
    sampler=st.sampled_from(["mask", "awrs", "smc", "asap"]),
)
def test_regex_outputs_always_match(tiny_model, default_tokenizer, seed, temperature, sampler):
    gen = constrained_generate(
        tiny_model,
        default_tokenizer,
        "Colours:",
        regex=PATTERN,
        temperature=temperature,
        seed=seed,
        max_new_tokens=40,
        sampler=sampler,
    )
    assert gen.finish_reason == "stop" and gen.valid
    assert re.fullmatch(PATTERN, gen.text)
    for particle in gen.particles or []:
        assert particle["valid"] and re.fullmatch(PATTERN, particle["text"])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), sampler=st.sampled_from(["mask", "awrs", "smc", "asap"]))
def test_every_sampler_ends_valid_under_the_json_grammar(tiny_model, default_tokenizer, seed, sampler):
    """The grammar engine's guarantee for each sampler: a "stop" output parses; the
    random model may ramble to the budget, which is reported; an output the constraint
    accepts parses even then (a budget may end inside a number whose digits could go on)."""
    gen = constrained_generate(
        tiny_model,
        default_tokenizer,
        "JSON:",
        grammar="json",
        temperature=1.0,
        seed=seed,
        max_new_tokens=30,
        sampler=sampler,
    )
    if gen.finish_reason == "stop":
        json.loads(gen.text)
    else:
        assert gen.finish_reason == "length"
        if gen.valid:
            json.loads(gen.text)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), slack=st.integers(0, 25))
def test_json_outputs_validate_even_on_a_tight_budget(tiny_model, default_tokenizer, seed, slack):
    """A random model rambles; finish_within_budget still closes the JSON in time.

    The guarantee holds for any budget at least the compiled constraint's bound on the
    shortest completion (counted in single-byte tokens).
    """
    from grammars.json_schema import compile_json_schema

    compiled = compile_json_schema(SCHEMA, default_tokenizer, whitespace=r"[ ]?")
    budget = compiled.distance(compiled.initial_state) + slack
    gen = constrained_generate(
        tiny_model,
        default_tokenizer,
        "JSON:",
        json_schema=SCHEMA,
        temperature=1.0,
        seed=seed,
        max_new_tokens=budget,
    )
    assert gen.finish_reason == "stop", gen
    assert gen.stats["tokens"] <= budget
    jsonschema.validate(json.loads(gen.text), SCHEMA)


def test_without_budget_guard_a_random_model_runs_out(tiny_model, default_tokenizer):
    outcomes = {
        constrained_generate(
            tiny_model,
            default_tokenizer,
            "JSON:",
            json_schema={"type": "string"},
            temperature=1.0,
            seed=s,
            max_new_tokens=8,
            finish_within_budget=False,
        ).finish_reason
        for s in range(5)
    }
    assert "length" in outcomes


def test_length_finish_is_reported_invalid(tiny_model, default_tokenizer):
    gen = constrained_generate(
        tiny_model, default_tokenizer, "x", regex=r"[a-z]{30}", max_new_tokens=3, temperature=1.0, seed=0
    )
    assert gen.finish_reason == "length" and not gen.valid and len(gen.token_ids) == 3


def test_greedy_is_deterministic_and_seeded_sampling_reproducible(tiny_model, default_tokenizer):
    a = constrained_generate(tiny_model, default_tokenizer, "Hi", regex=PATTERN)
    b = constrained_generate(tiny_model, default_tokenizer, "Hi", regex=PATTERN)
    assert a.token_ids == b.token_ids
    c = constrained_generate(tiny_model, default_tokenizer, "Hi", regex=PATTERN, temperature=1.0, seed=7)
    d = constrained_generate(tiny_model, default_tokenizer, "Hi", regex=PATTERN, temperature=1.0, seed=7)
    assert c.token_ids == d.token_ids


def test_top_k_one_equals_greedy(tiny_model, default_tokenizer):
    greedy = constrained_generate(tiny_model, default_tokenizer, "Hi", regex=PATTERN)
    topk = constrained_generate(
        tiny_model, default_tokenizer, "Hi", regex=PATTERN, temperature=1.0, top_k=1, seed=3
    )
    tiny_p = constrained_generate(
        tiny_model, default_tokenizer, "Hi", regex=PATTERN, temperature=1.0, top_p=1e-6, seed=3
    )
    assert greedy.token_ids == topk.token_ids == tiny_p.token_ids


def test_jump_forward_does_not_change_greedy_output(tiny_model, default_tokenizer):
    pattern = r"SELECT (name|age) FROM singer WHERE age > [0-9]{1,2};"
    a = constrained_generate(tiny_model, default_tokenizer, "SQL:", regex=pattern)
    b = constrained_generate(tiny_model, default_tokenizer, "SQL:", regex=pattern, jump_forward=False)
    assert a.text == b.text and re.fullmatch(pattern, a.text)
    assert a.stats["forced_tokens"] > 0 and b.stats["forced_tokens"] == 0


def test_stats_have_the_documented_keys(tiny_model, default_tokenizer):
    gen = constrained_generate(tiny_model, default_tokenizer, "Hi", regex=PATTERN)
    for key in ("tokens", "seconds", "constraint_seconds", "constraint_checks", "tokens_per_second"):
        assert key in gen.stats
    assert gen.stats["constraint_checks"] >= len(default_tokenizer)
    assert set(gen.to_dict()) == {"text", "token_ids", "finish_reason", "valid", "stats", "particles"}
    assert gen.stats["sampler"] == "mask" and gen.particles is None


def test_unconstrained_generation_and_cancellation(tiny_model, default_tokenizer):
    gen = constrained_generate(tiny_model, default_tokenizer, "Hi", max_new_tokens=5, temperature=1.0, seed=1)
    assert len(gen.token_ids) <= 5
    calls = []
    gen = constrained_generate(
        tiny_model,
        default_tokenizer,
        "Hi",
        regex=r"[a-z ]{0,200}",
        max_new_tokens=50,
        should_stop=lambda: len(calls) > 3 or calls.append(1),
    )
    assert gen.finish_reason == "cancelled" and len(gen.token_ids) == 4


def test_chat_template_wraps_the_prompt(tiny_model, default_tokenizer):
    gen = constrained_generate(tiny_model, default_tokenizer, "Pick:", regex=PATTERN, chat=True)
    assert gen.stats["prompt_tokens"] > len(default_tokenizer("Pick:").input_ids)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"prompt": ""}, PromptError, "empty"),
        ({"prompt": "word " * 1100}, PromptError, "context is 1024"),
        ({"max_new_tokens": 2000}, PromptError, "at most"),
        ({"regex": "a", "json_schema": {}}, OptionError, "at most one"),
        ({"sampler": "beam"}, OptionError, "unknown sampler"),
        ({"regex": "a", "particles": 3}, OptionError, "option of sampler='smc'"),
        ({"regex": "a", "sampler": "smc", "particles": 0}, OptionError, "particles"),
        ({"regex": "a", "sampler": "asap", "top_k": 5, "temperature": 1.0}, OptionError, "top_p and top_k"),
        ({"sampler": "asap"}, OptionError, "needs a constraint"),
        ({"temperature": -1}, OptionError, "temperature"),
        ({"top_p": 0}, OptionError, "top_p"),
        ({"max_new_tokens": 0}, OptionError, "max_new_tokens"),
        ({"colour": "red"}, OptionError, "unknown option"),
        ({"grammar": "jsn"}, GrammarError, "unknown built-in grammar"),
    ],
)
def test_bad_arguments_get_clear_errors(tiny_model, default_tokenizer, kwargs, error, message):
    args = {"prompt": "Hi", **kwargs}
    prompt = args.pop("prompt")
    with pytest.raises(error, match=message):
        constrained_generate(tiny_model, default_tokenizer, prompt, **args)


def test_logits_processor_with_assisted_generation(tiny_model, default_tokenizer):
    """Prompt lookup scores candidates and drops the rejected ones: the processor's
    matcher must follow, and the output must be the plain greedy one."""
    constraint = compile_regex(PATTERN, default_tokenizer)
    ids = default_tokenizer("Colours: red, green, blue, red, green, blue. Colours:", return_tensors="pt")
    outputs = []
    for lookup in (None, 6):
        extra = {"prompt_lookup_num_tokens": lookup} if lookup else {}
        out = tiny_model.generate(
            **ids,
            logits_processor=[StencilLogitsProcessor(constraint)],
            do_sample=False,
            max_new_tokens=30,
            pad_token_id=default_tokenizer.eos_token_id,
            **extra,
        )
        outputs.append(out[0, ids.input_ids.shape[1] :].tolist())
    assert outputs[0] == outputs[1]
    text = constraint.vocab.decode([t for t in outputs[1] if t != default_tokenizer.eos_token_id]).decode()
    assert re.fullmatch(PATTERN, text), text


def test_logits_processor_with_model_generate(tiny_model, default_tokenizer):
    constraint = compile_regex(PATTERN, default_tokenizer)
    ids = default_tokenizer(["Colours:", "Some colours:"], return_tensors="pt", padding=True)
    processor = StencilLogitsProcessor(constraint)
    torch.manual_seed(0)
    out = tiny_model.generate(
        **ids,
        logits_processor=[processor],
        do_sample=True,
        max_new_tokens=40,
        pad_token_id=default_tokenizer.eos_token_id,
    )
    vocab = constraint.vocab
    for row in out[:, ids.input_ids.shape[1] :].tolist():
        text = vocab.decode(row).decode()
        assert re.fullmatch(PATTERN, text), text
