"""Monitors leave their part of the mask to ``accepts`` on the picked token
(``Matcher.fill_candidates``): the decode loop draws from the constraint's mask, checks
the pick, clears a refused one and draws again. That must be the same decoding as the
full monitored mask: the same greedy tokens, and, sampled, the distribution of masked
decoding enumerated exactly over a small language (a real monitor class over a fixed
set of names, a tiny random model that puts mass on the names it refuses)."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import torch

from monitors.base import Monitor
from monitors.matcher import MonitoredConstraint
from monitors.restriction import Restriction
from plugin import constrained_generate
from plugin.api import build_constraint
from tests.exact_distributions import chi_square_pvalue, enumerate_language, exact_and_masked

NAMES = frozenset({b"ab", b"b", b"aba", b"bba"})


class FixedNames(Monitor):
    """Identifiers at the start of the output are among :data:`NAMES`."""

    name = "fixed-names"

    def analyse(self, text: bytes) -> Restriction | None:
        return Restriction(NAMES, kind="name") if text == b"" else None


class FirstNameFixed(Monitor):
    """The output's first identifier, wherever it starts, is among :data:`NAMES`."""

    name = "first-name-fixed"

    def analyse(self, text: bytes) -> Restriction | None:
        return None if re.search(rb"[A-Za-z0-9_]", text) else Restriction(NAMES, kind="name")


@pytest.fixture(scope="module")
def monitored(default_tokenizer, default_vocab):
    inner = build_constraint(default_tokenizer, regex="[ab]{1,3}")
    return MonitoredConstraint(inner, [FixedNames()], default_vocab)


def _greedy_by_full_masks(model, constraint, prompt_ids: list[int], eos: int) -> list[int]:
    matcher, out = constraint.matcher(), []
    for _ in range(8):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt_ids + out])).logits[0, -1].float()
        mask = torch.zeros(logits.numel(), dtype=torch.bool)
        matcher.fill_mask(mask)
        token = int(torch.argmax(logits.masked_fill(~mask, float("-inf"))))
        if token == eos:
            break
        matcher.advance(token)
        out.append(token)
    return out


def test_candidates_hold_every_allowed_token(monitored, default_vocab):
    matcher = monitored.matcher()
    full = torch.zeros(default_vocab.size, dtype=torch.bool)
    lazy = torch.zeros(default_vocab.size, dtype=torch.bool)
    matcher.fill_mask(full)
    assert matcher.fill_candidates(lazy)  # unchecked: the caller confirms its pick
    assert bool((lazy | ~full).all())  # every allowed token is a candidate
    assert bool((lazy & ~full).any())  # and some refused ones are too (checked later)


def test_greedy_output_equals_the_full_mask(sharp_tiny_model, default_tokenizer, monitored):
    for prompt in ("ab ba c", "b", "a a a", "x"):
        prompt_ids = default_tokenizer.encode(prompt, add_special_tokens=False)
        gen = constrained_generate(
            sharp_tiny_model, default_tokenizer, prompt_ids, constraint=monitored, max_new_tokens=8
        )
        want = _greedy_by_full_masks(sharp_tiny_model, monitored, prompt_ids, default_tokenizer.eos_token_id)
        assert gen.token_ids == want
        assert gen.text.encode() in NAMES


def test_sampled_outputs_follow_masked_decoding(sharp_tiny_model, default_tokenizer, monitored):
    prompt_ids = default_tokenizer.encode("ab ba c", add_special_tokens=False)
    eos = default_tokenizer.eos_token_id
    _, target = exact_and_masked(enumerate_language(sharp_tiny_model, monitored, prompt_ids, eos))
    assert {bytes(default_tokenizer.decode(list(s)), "utf-8") for s in target} <= NAMES
    runs, counts = 800, Counter()
    for seed in range(runs):
        gen = constrained_generate(
            sharp_tiny_model,
            default_tokenizer,
            prompt_ids,
            constraint=monitored,
            temperature=1.0,  # the enumerated target is at temperature 1
            seed=seed,
            max_new_tokens=6,
            jump_forward=False,
        )
        assert gen.valid and gen.text.encode() in NAMES, gen.text
        counts[tuple(gen.token_ids)] += 1
    assert len(counts) > 1
    assert chi_square_pvalue(counts, target, runs) > 1e-3


def test_a_monitor_refusing_nearly_everything_gives_the_full_mask_choice(
    sharp_tiny_model, default_tokenizer, default_vocab
):
    """Monitors alone (no grammar): every token is a candidate and the output's first
    identifier must be one of four names, so most picks are refused; after a few
    refusals the loop builds the full mask instead of checking tens of thousands of
    candidates."""
    alone = MonitoredConstraint(None, [FirstNameFixed()], default_vocab)
    for prompt in ("ab ba c", "x"):
        prompt_ids = default_tokenizer.encode(prompt, add_special_tokens=False)
        gen = constrained_generate(
            sharp_tiny_model, default_tokenizer, prompt_ids, constraint=alone, max_new_tokens=8
        )
        want = _greedy_by_full_masks(sharp_tiny_model, alone, prompt_ids, default_tokenizer.eos_token_id)
        assert gen.token_ids == want
