"""The few-row linear routes (plugin.linear_kernels): same products, same greedy text,
a per-machine plan that is measured once and read back, and a clean undo."""

from __future__ import annotations

import copy

import pytest
import torch

from plugin.linear_kernels import (
    BUCKETS,
    FEW_ROWS,
    KERNELS,
    LinearPlan,
    _gemm,
    _pack,
    _packed,
    _packed_unavailable,
    route_for,
    tune_linears,
    untune_linears,
)

needs_packed = pytest.mark.skipif(
    _packed_unavailable() is not None, reason=f"oneDNN kernel unavailable: {_packed_unavailable()}"
)


@pytest.fixture()
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STENCIL_CACHE", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("kernel", ["gemm", pytest.param("packed", marks=needs_packed)])
@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, FEW_ROWS, FEW_ROWS + 1, 80])
@pytest.mark.parametrize("bias", [False, True])
def test_routes_compute_linear(kernel, rows, bias):
    torch.manual_seed(rows)
    layer = torch.nn.Linear(96, 160, bias=bias)
    x = torch.randn(1, rows, 96)
    with torch.no_grad():
        expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
        if kernel == "gemm":
            got = _gemm(layer.weight, layer.bias, x)
        else:
            got = _packed(_pack(layer.weight), layer.bias, x)
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_every_row_count_has_one_bucket():
    routes = dict(zip(BUCKETS, ["gemm", "packed", "linear", "packed", "linear", "packed"], strict=True))
    for rows in [*range(1, 300), 4096, 100_000]:
        owners = [name for name, (low, high, _) in BUCKETS.items() if low <= rows <= high]
        assert len(owners) == 1 and route_for(routes, rows) == routes[owners[0]]
    assert route_for(routes, 0) == "linear"
    assert all(low <= timed <= high for low, high, timed in BUCKETS.values())


def _force_routes(model: torch.nn.Module, own_cache, kernel: str = "gemm") -> LinearPlan:
    """Measure, then rewrite the cached plan so that every shape and bucket takes
    ``kernel`` (whatever this machine measured) and tune again from the cache."""
    tune_linears(model)
    import json

    path = own_cache / "linear-plan.json"
    entries = json.loads(path.read_text())
    for entry in entries.values():
        for buckets in entry["routes"].values():
            buckets.update(dict.fromkeys(BUCKETS, kernel))
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
        assert set(first.routes[shape]) == set(BUCKETS)
        assert set(first.routes[shape].values()) <= set(KERNELS)
        for bucket, times in first.milliseconds[shape].items():
            assert set(times) <= set(KERNELS) and min(times.values()) > 0
            few = BUCKETS[bucket][2] <= FEW_ROWS  # prefill buckets: linear or the reordered weights
            assert "linear" in times and ("gemm" in times) == few
            assert few or first.routes[shape][bucket] != "gemm"
    fewer = tune_linears(model, kernels=("gemm",))  # another plan, measured and kept apart
    assert fewer.source == "measured"
    assert all(set(b.values()) <= {"linear", "gemm"} for b in fewer.routes.values())
    second = tune_linears(model)
    assert second.source == "cache" and second.routes == first.routes
    assert model._stencil_linear_plan is second


@pytest.mark.parametrize("kernel", ["gemm", pytest.param("packed", marks=needs_packed)])
def test_routed_model_gives_the_same_logits_and_undoes_cleanly(tiny_model, own_cache, kernel):
    model = copy.deepcopy(tiny_model)
    ids = torch.tensor([[1, 5, 9, 200, 3000]])
    prompt = torch.arange(100, 180)[None]  # a prefill-sized call (the 65+ bucket)
    with torch.no_grad():
        plain_prefill = model(ids).logits
        plain_step = model(ids[:, :1]).logits
        plain_prompt = model(prompt).logits
    plan = _force_routes(model, own_cache, kernel)
    assert plan.source == "cache" and plan.modules == sum(
        1 for m in model.modules() if type(m) is torch.nn.Linear
    )
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, plain_prefill, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model(ids[:, :1]).logits, plain_step, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model(prompt).logits, plain_prompt, rtol=1e-4, atol=1e-4)
    clone = copy.deepcopy(model)  # the copy's routes read the copy's weights
    with torch.no_grad():
        for p in clone.parameters():
            p.mul_(0)  # changed in place: a reordered copy is made again
        assert torch.count_nonzero(clone(ids[:, :1]).logits) == 0
        assert torch.count_nonzero(clone(ids).logits) == 0
        torch.testing.assert_close(model(ids[:, :1]).logits, plain_step, rtol=1e-4, atol=1e-4)
    untune_linears(model)
    assert all("forward" not in vars(m) for m in model.modules())


@pytest.mark.parametrize("kernel", ["gemm", pytest.param("packed", marks=needs_packed)])
def test_default_model_greedy_text_unchanged_by_routes(default_model, own_cache, kernel):
    from plugin import constrained_generate

    model, tokenizer = default_model
    prompt = tokenizer("def add(a, b):\n", return_tensors=None).input_ids
    options = dict(grammar="python", max_new_tokens=24, temperature=0.0, prefix="def add(a, b):\n")
    untune_linears(model)
    try:
        plain = constrained_generate(model, tokenizer, prompt, **options)
        _force_routes(model, own_cache, kernel)
        routed = constrained_generate(model, tokenizer, prompt, **options)
        assert routed.token_ids == plain.token_ids
    finally:
        tune_linears(model, use_cache=False)  # this machine's own routes, not the forced ones


def test_unknown_kernel_is_refused(tiny_model):
    with pytest.raises(ValueError, match="unknown linear kernels"):
        tune_linears(copy.deepcopy(tiny_model), kernels=("blas",))


def test_a_cache_file_that_is_not_a_plan_is_measured_over(tiny_model, own_cache):
    (own_cache / "linear-plan.json").write_text("not json")
    model = copy.deepcopy(tiny_model)
    assert tune_linears(model).source == "measured"
    assert tune_linears(model).source == "cache"


@needs_packed
def test_packed_route_keeps_gradients_to_linear(tiny_model, own_cache):
    """A call that needs gradients takes ``linear`` (oneDNN's op has no backward)."""
    model = copy.deepcopy(tiny_model)
    _force_routes(model, own_cache, "packed")
    loss = model(torch.tensor([[1, 5, 9, 200]])).logits.sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.dim() == 2)
