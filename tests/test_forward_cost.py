"""Drafts sized against the measured forward cost (plugin.speculation.forward_cost):
the curve is measured once and read back, and fitting keeps whole paths of the most
likely nodes where the expected tokens per unit of cost is highest."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin.errors import OptionError
from plugin.speculation import SpeculativeConfig
from plugin.speculation.forward_cost import MAX_ROWS, fit_to_cost, forward_cost, node_reaches
from plugin.speculation.tree import DraftTree

STEP = [1.0, 1.1, 1.3, 1.33, 2.3, 2.3, 2.4, 2.5]  # a curve with a step at 5 tokens


def _chain(n: int) -> DraftTree:
    tree = DraftTree()
    for i in range(n):
        tree.add(100 + i, i - 1, "lookup", (i,))
    return tree


def test_a_step_in_the_cost_cuts_the_draft_before_it():
    tree = _chain(6)
    reach = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    fitted = fit_to_cost(tree, reach, lambda rows: STEP[rows - 1])
    # 3 nodes: (1 + 2.4) / 1.33 = 2.56 beats 4 nodes (4.0 / 2.3) and 6 (4.9 / 2.4)
    assert fitted.tokens == [100, 101, 102] and fitted.parents == [-1, 0, 1]
    assert fitted.features == [(0,), (1,), (2,)]


def test_a_flat_cost_keeps_every_node_and_a_steep_one_none():
    tree = _chain(5)
    reach = [0.9, 0.5, 0.3, 0.2, 0.1]
    assert fit_to_cost(tree, reach, lambda rows: 1.0) is tree
    assert len(fit_to_cost(tree, reach, lambda rows: float(rows))) == 0


@st.composite
def trees(draw):
    n = draw(st.integers(1, 14))
    tree = DraftTree()
    for i in range(n):
        tree.add(1000 + i, draw(st.integers(-1, i - 1)), "recycling", (i,))
    rates = draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n))
    steps = draw(st.lists(st.floats(0.0, 1.5), min_size=n + 1, max_size=n + 1))
    return tree, rates, steps


@settings(max_examples=200, deadline=None)
@given(trees())
def test_fitting_keeps_whole_paths_and_the_best_value(case):
    tree, rates, steps = case
    curve = [1.0]
    for step in steps[1:]:
        curve.append(curve[-1] + step)
    reach = node_reaches(tree, lambda i: rates[i])
    fitted = fit_to_cost(tree, reach, lambda rows: curve[rows - 1])
    kept = {t: i for i, t in enumerate(tree.tokens) if t in fitted.tokens}
    for j, token in enumerate(fitted.tokens):  # every kept node's parent is kept, as its parent
        i = tree.tokens.index(token)
        parent = tree.parents[i]
        assert (fitted.parents[j] == -1) == (parent == -1)
        if parent >= 0:
            assert fitted.tokens[fitted.parents[j]] == tree.tokens[parent]
    value = (1 + sum(reach[i] for i in kept.values())) / curve[len(kept)]
    best_any = max((1 + sum(sorted(reach, reverse=True)[:k])) / curve[k] for k in range(len(tree) + 1))
    assert value == pytest.approx(best_any)


def test_the_curve_is_measured_once_per_machine_then_read(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("STENCIL_CACHE", str(tmp_path))
    model = copy.deepcopy(tiny_model)
    first = forward_cost(model)
    assert first.source == "measured" and len(first.seconds) == MAX_ROWS
    assert all(s > 0 for s in first.seconds)
    assert first.relative(1) == 1.0 and first.relative(2 * MAX_ROWS) == pytest.approx(
        2 * first.relative(MAX_ROWS)
    )
    assert forward_cost(model) is first  # per process
    again = forward_cost(copy.deepcopy(tiny_model))  # another process would read the file
    assert again.source == "cache" and again.seconds == first.seconds


def test_fit_cost_must_be_a_bool():
    with pytest.raises(OptionError, match="fit_cost"):
        SpeculativeConfig(fit_cost="yes")


def test_a_model_whose_forwards_cannot_be_timed_drafts_unfitted():
    from plugin.speculation.speculator import Speculator

    class Model:  # no parameters, no config: timing it fails
        pass

    speculator = Speculator(SpeculativeConfig(drafters=("recycling",)), Model(), 16, frozenset(), [1, 2])
    assert speculator.cost is None and "fit_cost" in speculator.failures
