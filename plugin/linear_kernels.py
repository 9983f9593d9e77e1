"""Few-row matrix products routed to the kernel this CPU runs fastest, chosen by measurement.

Why: decoding multiplies every weight matrix by one row (plain decoding) or a few rows
(a speculative draft). On some CPUs the BLAS behind ``torch.nn.functional.linear`` runs
those shapes on a slow path: on the 2-core AMD EPYC (AVX-512) of the benches, MKL reads
the default model's weights at about 10 GB/s for one row and once per row for two or
three rows, while the same product written as ``weight @ x.T`` (one row padded to two)
is a small-N GEMM that reads them once at about 29 GB/s. A forward over one token of the
default model went from 86 to 35 ms in one run of ``bench/forward_cost.py`` and from 65
to 55 ms in a later one. On other CPUs
``linear`` is as fast or faster. So nothing is assumed: :func:`tune_linears` times both
kernels on the model's own weights (grouped by shape, one row and four rows, each group
read from memory as a forward reads it) and routes a module's few-row calls to the GEMM
only where it wins by :data:`MIN_GAIN`. The choice depends on the machine, torch and
thread count, not on the weights' values, so it is kept in ``$STENCIL_CACHE/linear-plan.json``
and a fresh process pays the measurement (0.8 s on the default model) once per machine.

The routed product sums in another order than ``linear``, so logits can differ in the
last bits, as they already do between one-row and many-row calls of ``linear``.
Prefill (more than :data:`FEW_ROWS` rows) and non-CPU devices are left to ``linear``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from plugin.machine_cache import machine_key, read_entry, write_entry

log = logging.getLogger(__name__)

FEW_ROWS = 16
"""Calls over more rows than this (prefill) always use ``linear``."""
MIN_GAIN = 0.9
"""The GEMM route is taken where it costs at most this fraction of ``linear``'s time."""
_BUCKETS = {"one": 1, "few": 4}  # calls over 1 row, and over 2..FEW_ROWS rows (timed at 4)
_REPEATS = 3
_FLUSH_BYTES = 64 << 20  # groups smaller than this would stay in cache between passes
_PLAN_FILE = "linear-plan.json"
_ATTR = "_stencil_linear_route"


@dataclass
class LinearPlan:
    """Which few-row calls go to the GEMM route, per weight shape and row bucket.

    ``routes[shape][bucket]`` is ``"gemm"`` or ``"linear"``; ``milliseconds[shape][bucket]``
    holds the two kernels' times over the whole group (``[linear, gemm]``); ``source`` is
    ``"measured"``, ``"cache"`` or ``"skipped: <why>"``; ``modules`` counts routed modules.
    """

    routes: dict[str, dict[str, str]] = field(default_factory=dict)
    milliseconds: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    source: str = "measured"
    modules: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "routes": self.routes,
            "milliseconds": self.milliseconds,
            "source": self.source,
            "modules": self.modules,
        }


def tune_linears(model: torch.nn.Module, *, use_cache: bool = True) -> LinearPlan:
    """Measure (or read from the per-machine cache) and install the few-row routes.

    Safe to call again: earlier routes are removed first. Returns the plan; it is also
    kept as ``model._stencil_linear_plan`` so benches can record it.
    """
    untune_linears(model)
    groups = _linear_groups(model)
    if not groups:
        plan = LinearPlan(source="skipped: no float nn.Linear on the CPU")
    else:
        key = _plan_key(groups)
        plan = _read_cached(key) if use_cache else None
        if plan is None:
            plan = _measure(groups)
            if use_cache:
                _write_cached(key, plan)
        for shape, modules in groups.items():
            routes = plan.routes.get(shape, {})
            one, few = routes.get("one") == "gemm", routes.get("few") == "gemm"
            if one or few:
                for module in modules:
                    _install(module, one, few)
                    plan.modules += 1
    model._stencil_linear_plan = plan  # type: ignore[assignment]
    log.info("linear routes (%s): %s", plan.source, plan.routes)
    return plan


def untune_linears(model: torch.nn.Module) -> None:
    """Give every module back its own ``forward``."""
    for module in model.modules():
        if getattr(module, _ATTR, None) is not None:
            del module.forward
            delattr(module, _ATTR)


def _linear_groups(model: torch.nn.Module) -> dict[str, list[torch.nn.Linear]]:
    groups: dict[str, list[torch.nn.Linear]] = {}
    for module in model.modules():
        if type(module) is not torch.nn.Linear:  # subclasses (quantized, LoRA) keep their own
            continue
        w = module.weight
        if w.device.type != "cpu" or not w.dtype.is_floating_point or w.dim() != 2:
            continue
        groups.setdefault(_shape_name(w), []).append(module)
    return groups


def _shape_name(w: torch.Tensor) -> str:
    return f"{w.shape[0]}x{w.shape[1]}:{str(w.dtype).removeprefix('torch.')}"


def _gemm(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``linear(x, weight, bias)`` as ``weight @ x.T`` (a single row padded to two)."""
    rows = x.numel() // x.shape[-1]
    flat = x.reshape(rows, x.shape[-1])
    if rows == 1:
        flat = F.pad(flat, (0, 0, 0, 1))
    out = torch.mm(weight, flat.t()).t()[:rows]
    if bias is not None:
        out = out + bias
    return out.contiguous().view(*x.shape[:-1], weight.shape[0])


class _RoutedForward:
    """A routed module's ``forward``: an object, not a closure, so ``copy.deepcopy`` of
    the model gives the copy a forward over the copy's own weights."""

    def __init__(self, module: torch.nn.Linear, one: bool, few: bool) -> None:
        self.module, self.one, self.few = module, one, few

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        rows = x.numel() // x.shape[-1] if x.dim() else 0
        if ((rows == 1 and self.one) or (1 < rows <= FEW_ROWS and self.few)) and m.weight.is_cpu:
            return _gemm(m.weight, m.bias, x)
        return F.linear(x, m.weight, m.bias)


def _install(module: torch.nn.Linear, one: bool, few: bool) -> None:
    module.forward = _RoutedForward(module, one, few)  # type: ignore[method-assign]
    setattr(module, _ATTR, (one, few))


# ------------------------------------------------------------------------- measuring
def _measure(groups: dict[str, list[torch.nn.Linear]]) -> LinearPlan:
    start = time.perf_counter()
    plan = LinearPlan(source="measured")
    flush = torch.empty(_FLUSH_BYTES // 4, dtype=torch.float32)
    with torch.inference_mode():
        for shape, modules in groups.items():
            weights = [m.weight for m in modules]
            small = sum(w.numel() * w.element_size() for w in weights) < _FLUSH_BYTES
            plan.routes[shape], plan.milliseconds[shape] = {}, {}
            for bucket, rows in _BUCKETS.items():
                x = torch.randn(rows, weights[0].shape[1], dtype=weights[0].dtype)
                linear_ms = _time_pass(lambda w, x=x: F.linear(x, w), weights, flush if small else None)
                gemm_ms = _time_pass(lambda w, x=x: _gemm(w, None, x), weights, flush if small else None)
                plan.milliseconds[shape][bucket] = [round(linear_ms, 3), round(gemm_ms, 3)]
                plan.routes[shape][bucket] = "gemm" if gemm_ms <= MIN_GAIN * linear_ms else "linear"
    log.info("timed linear kernels in %.2fs", time.perf_counter() - start)
    return plan


def _time_pass(
    kernel: Callable[[torch.Tensor], torch.Tensor], weights: list[torch.Tensor], flush: torch.Tensor | None
) -> float:
    """Fastest of a few passes over ``weights`` in milliseconds, caches flushed before each."""
    best = float("inf")
    for i in range(_REPEATS + 1):
        if flush is not None:
            flush.fill_(float(i))
        t = time.perf_counter()
        for w in weights:
            kernel(w)
        if i:  # the first pass warms the kernel's code paths
            best = min(best, (time.perf_counter() - t) * 1e3)
    return best


# --------------------------------------------------------------------- per-machine cache
def _plan_key(groups: dict[str, list[torch.nn.Linear]]) -> str:
    return machine_key(shapes=sorted(f"{shape}*{len(modules)}" for shape, modules in groups.items()))


def _read_cached(key: str) -> LinearPlan | None:
    entry = read_entry(_PLAN_FILE, key)
    if entry is None:
        return None
    return LinearPlan(
        routes=entry.get("routes", {}), milliseconds=entry.get("milliseconds", {}), source="cache"
    )


def _write_cached(key: str, plan: LinearPlan) -> None:
    write_entry(_PLAN_FILE, key, {"routes": plan.routes, "milliseconds": plan.milliseconds})
