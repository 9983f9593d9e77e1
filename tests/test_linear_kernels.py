"""The few-row linear routes (plugin.linear_kernels): same products, same greedy text,
a per-machine plan that is measured once and read back, and a clean undo."""

from __future__ import annotations

import copy

import pytest
import torch

from plugin.linear_kernels import FEW_ROWS, LinearPlan, _gemm, tune_linears, untune_linears


@pytest.fixture()
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STENCIL_CACHE", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("rows", [1, 2, 3, 4, FEW_ROWS, FEW_ROWS + 1])
@pytest.mark.parametrize("bias", [False, True])
def test_gemm_route_computes_linear(rows, bias):
    torch.manual_seed(rows)
    layer = torch.nn.Linear(96, 160, bias=bias)
    x = torch.randn(1, rows, 96)
    expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
    got = _gemm(layer.weight, layer.bias, x)
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def _force_routes(model: torch.nn.Module, own_cache) -> LinearPlan:
    """Measure, then rewrite the cached plan so that every shape takes the GEMM route
    (whatever this machine measured) and tune again from the cache."""
    tune_linears(model)
    import json

    path = own_cache / "linear-plan.json"
    entries = json.loads(path.read_text())
    for entry in entries.values():
        for buckets in entry["routes"].values():
            buckets.update(one="gemm", few="gemm")
    path.write_text(json.dumps(entries))
    return tune_linears(model)


def test_plan_is_measured_once_then_read_back(tiny_model, own_cache):
    model = copy.deepcopy(tiny_model)
    first = tune_linears(model)
    assert first.source == "measured"
    shapes = {
        f"{m.weight.shape[0]}x{m.weight.shape[1]}:float32"
        for m in model.modules()
        if type(m) is torch.nn.Linear
    }
    assert set(first.routes) == shapes
    for shape in shapes:
        assert set(first.routes[shape]) == {"one", "few"}
        assert all(len(pair) == 2 and min(pair) > 0 for pair in first.milliseconds[shape].values())
    second = tune_linears(model)
    assert second.source == "cache" and second.routes == first.routes
    assert model._stencil_linear_plan is second


def test_routed_model_gives_the_same_logits_and_undoes_cleanly(tiny_model, own_cache):
    model = copy.deepcopy(tiny_model)
    ids = torch.tensor([[1, 5, 9, 200, 3000]])
    with torch.no_grad():
        plain_prefill = model(ids).logits
        plain_step = model(ids[:, :1]).logits
    plan = _force_routes(model, own_cache)
    assert plan.source == "cache" and plan.modules == sum(
        1 for m in model.modules() if type(m) is torch.nn.Linear
    )
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, plain_prefill, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model(ids[:, :1]).logits, plain_step, rtol=1e-4, atol=1e-4)
    clone = copy.deepcopy(model)  # the copy's routes read the copy's weights
    with torch.no_grad():
        for p in clone.parameters():
            p.mul_(0)
        assert torch.count_nonzero(clone(ids[:, :1]).logits) == 0
        torch.testing.assert_close(model(ids[:, :1]).logits, plain_step, rtol=1e-4, atol=1e-4)
    untune_linears(model)
    assert all("forward" not in vars(m) for m in model.modules())


def test_default_model_greedy_text_unchanged_by_routes(default_model, own_cache):
    from plugin import constrained_generate

    model, tokenizer = default_model
    prompt = tokenizer("def add(a, b):\n", return_tensors=None).input_ids
    options = dict(grammar="python", max_new_tokens=24, temperature=0.0, prefix="def add(a, b):\n")
    untune_linears(model)
    try:
        plain = constrained_generate(model, tokenizer, prompt, **options)
        _force_routes(model, own_cache)
        routed = constrained_generate(model, tokenizer, prompt, **options)
        assert routed.token_ids == plain.token_ids
    finally:
        tune_linears(model, use_cache=False)  # this machine's own routes, not the forced ones


def test_a_cache_file_that_is_not_a_plan_is_measured_over(tiny_model, own_cache):
    (own_cache / "linear-plan.json").write_text("not json")
    model = copy.deepcopy(tiny_model)
    assert tune_linears(model).source == "measured"
    assert tune_linears(model).source == "cache"
