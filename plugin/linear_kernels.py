"""The model's matrix products routed to the kernel this CPU runs fastest for their row
count, chosen by measurement.

Why: decoding multiplies every weight matrix by one row (plain decoding) or a few rows
(a speculative draft's verification). On some CPUs the BLAS behind
``torch.nn.functional.linear`` runs those shapes on a slow path: on the 2-core AMD EPYC
(AVX-512) of the benches, MKL reads the default model's weights at about 10 GB/s for one
row and once per row for two or three rows, while the same product written as
``weight @ x.T`` (one row padded to two) is a small-N GEMM that reads them once at about
29 GB/s; from about 6 rows on, that GEMM slows down as much as ``linear``, while
oneDNN's product over a weight reordered once into its own blocked layout
(``torch.ops.mkldnn``, what ``torch.compile``'s CPU freezing uses) keeps 4 to 16 rows
close to the cost of one. In one run of ``bench/forward_cost.py`` there, a forward over
one token of the default model took 60 ms with ``linear`` and 38 ms routed; over 8
tokens, 93 ms with ``weight @ x.T`` as the only route and 53 ms with the reordered
weights too. On other CPUs ``linear`` is as fast or faster. So nothing is assumed:
:func:`tune_linears` times the kernels on the model's own weights (grouped by shape, at
1, 2, 5, 12, 32 and 128 rows, each group read from memory as a forward reads it) and
routes a module's calls of each row bucket to the fastest kernel, where it beats ``linear`` by
:data:`MIN_GAIN`. The choice depends on the machine, torch and thread count, not on the
weights' values, so it is kept in ``$STENCIL_CACHE/linear-plan.json`` and a fresh process
pays the measurement (a few seconds on the default model) once per machine.

Kernels (:data:`KERNELS`): ``"linear"`` (torch's own), ``"gemm"`` (``weight @ x.T``),
``"packed"`` (oneDNN over the reordered weight). A routed module holds its reordered copy
beside its weight (one more copy of the weights of those shapes, in memory only); a
weight changed in place after tuning is reordered again at its next call (its version
counter is checked), and calls that need gradients always use ``linear``.

The routed products sum in another order than ``linear``, so logits can differ in the
last bits, as they already do between one-row and many-row calls of ``linear``.
Prefill (more than :data:`FEW_ROWS` rows) is routed too, between ``linear`` and the
reordered weights only (a prompt's prefill, an edit's re-encoded tail: on the bench's
CPU a prefill of 64 tokens took 0.67 of ``linear``'s time, of 300 tokens 0.87); non-CPU
devices are left to ``linear``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from plugin.machine_cache import machine_key, read_entry, write_entry

log = logging.getLogger(__name__)

FEW_ROWS = 16
"""Calls over up to this many rows (decoding, a draft's verification) may take the GEMM
route; longer ones (prefill) choose between ``linear`` and the reordered weights."""
_ANY = 1 << 62  # no upper bound
MIN_GAIN = 0.9
"""Another kernel is taken where it costs at most this fraction of ``linear``'s time."""
KERNELS = ("linear", "gemm", "packed")
BUCKETS: dict[str, tuple[int, int, int]] = {
    # name: (fewest rows, most rows, rows timed)
    "1": (1, 1, 1),
    "2-3": (2, 3, 2),
    "4-7": (4, 7, 5),
    "8-16": (8, FEW_ROWS, 12),
    "17-64": (FEW_ROWS + 1, 64, 32),
    "65+": (65, _ANY, 128),
}
"""Row buckets: each is timed once and routed as a whole."""
_PACK_HINT = 8  # the batch size oneDNN's reorder is told to expect
_REPEATS = 3
_FLUSH_BYTES = 64 << 20  # groups smaller than this would stay in cache between passes
_PLAN_FILE = "linear-plan.json"
_PLAN_VERSION = 3  # 1: "one"/"few" buckets and two kernels; 2: no prefill buckets
_ATTR = "_stencil_linear_route"


@dataclass
class LinearPlan:
    """Which kernel each weight shape's calls use, per row bucket.

    ``routes[shape][bucket]`` is one of :data:`KERNELS`; ``milliseconds[shape][bucket]``
    maps each timed kernel to its time over the whole group; ``source`` is
    ``"measured"``, ``"cache"`` or ``"skipped: <why>"``; ``modules`` counts routed
    modules; ``unavailable`` names a kernel this machine's torch cannot run, and why.
    """

    routes: dict[str, dict[str, str]] = field(default_factory=dict)
    milliseconds: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    source: str = "measured"
    modules: int = 0
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "routes": self.routes,
            "milliseconds": self.milliseconds,
            "source": self.source,
            "modules": self.modules,
            "unavailable": self.unavailable,
        }


def tune_linears(
    model: torch.nn.Module, *, use_cache: bool = True, kernels: Sequence[str] = KERNELS
) -> LinearPlan:
    """Measure (or read from the per-machine cache) and install the routes.

    ``kernels``: the ones to choose from (``"linear"`` is always among them; benches
    pass fewer to compare). Safe to call again: earlier routes are removed first.
    Returns the plan; it is also kept as ``model._stencil_linear_plan`` so benches can
    record it.
    """
    unknown = set(kernels) - set(KERNELS)
    if unknown:
        raise ValueError(f"unknown linear kernels {sorted(unknown)}; choose from {list(KERNELS)}")
    chosen = tuple(k for k in KERNELS if k in kernels or k == "linear")
    untune_linears(model)
    groups = _linear_groups(model)
    packed: dict[int, torch.Tensor] = {}
    if not groups:
        plan = LinearPlan(source="skipped: no float nn.Linear on the CPU")
    else:
        key = _plan_key(groups, chosen)
        plan = _read_cached(key) if use_cache else None
        if plan is None:
            plan = _measure(groups, packed, chosen)
            if use_cache:
                _write_cached(key, plan)
        for shape, modules in groups.items():
            routes = plan.routes.get(shape, {})
            if any(kernel != "linear" for kernel in routes.values()):
                for module in modules:
                    _install(module, routes, packed.get(id(module)))
                    plan.modules += 1
    model._stencil_linear_plan = plan  # type: ignore[assignment]
    log.info("linear routes (%s): %s", plan.source, plan.routes)
    return plan


def untune_linears(model: torch.nn.Module) -> None:
    """Give every module back its own ``forward`` (and drop any reordered weights)."""
    for module in model.modules():
        if getattr(module, _ATTR, None) is not None:
            del module.forward
            delattr(module, _ATTR)


def route_for(routes: dict[str, str], rows: int) -> str:
    """The kernel ``routes`` (one shape's buckets) gives a call over ``rows`` rows."""
    for bucket, (low, high, _) in BUCKETS.items():
        if low <= rows <= high:
            return routes.get(bucket, "linear")
    return "linear"


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


# --------------------------------------------------------------------------- kernels
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


def _pack(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` reordered once into oneDNN's blocked layout for few-row products."""
    with torch.no_grad():
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), _PACK_HINT)


def _packed(packed: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``linear(x, weight, bias)`` by oneDNN over ``packed`` (``_pack(weight)``)."""
    rows = x.numel() // x.shape[-1]
    flat = x.reshape(rows, x.shape[-1]).contiguous()
    out = torch.ops.mkldnn._linear_pointwise(flat, packed, bias, "none", [], "")
    return out.view(*x.shape[:-1], out.shape[-1])


def _packed_unavailable() -> str | None:
    """Why this torch cannot run the ``packed`` kernel, or None when it can."""
    if not torch.backends.mkldnn.is_available():
        return "torch was built without oneDNN"
    try:
        weight, x = torch.randn(8, 16), torch.randn(3, 16)
        got = _packed(_pack(weight), None, x)
        if not torch.allclose(got, F.linear(x, weight), rtol=1e-4, atol=1e-4):
            return "oneDNN's product disagreed with linear on a test"
    except (RuntimeError, AttributeError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


class _RoutedForward:
    """A routed module's ``forward``: an object, not a closure, so ``copy.deepcopy`` of
    the model gives the copy a forward over the copy's own weights (its reordered copy
    is made again at its first call)."""

    def __init__(self, module: torch.nn.Linear, routes: dict[str, str], packed: torch.Tensor | None) -> None:
        self.module, self.routes = module, dict(routes)
        self.by_rows = [route_for(self.routes, rows) for rows in range(FEW_ROWS + 1)]
        self._packed = packed
        self._packed_version = module.weight._version if packed is not None else -1

    def __deepcopy__(self, memo: dict[int, Any]) -> _RoutedForward:
        return _RoutedForward(copy.deepcopy(self.module, memo), self.routes, None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        rows = x.numel() // x.shape[-1] if x.dim() else 0
        if not m.weight.is_cpu or rows == 0:
            kernel = "linear"
        else:
            kernel = self.by_rows[rows] if rows <= FEW_ROWS else route_for(self.routes, rows)
        if kernel == "gemm":
            return _gemm(m.weight, m.bias, x)
        if kernel == "packed" and not (torch.is_grad_enabled() and m.weight.requires_grad):
            return _packed(self._current_pack(), m.bias, x)
        return F.linear(x, m.weight, m.bias)

    def _current_pack(self) -> torch.Tensor:
        weight = self.module.weight
        if self._packed is None or self._packed_version != weight._version:
            self._packed, self._packed_version = _pack(weight), weight._version
        return self._packed


def _install(module: torch.nn.Linear, routes: dict[str, str], packed: torch.Tensor | None) -> None:
    if "packed" not in routes.values():
        packed = None
    elif packed is None:
        packed = _pack(module.weight)  # now, not in the first generation's first forward
    module.forward = _RoutedForward(module, routes, packed)  # type: ignore[method-assign]
    setattr(module, _ATTR, dict(routes))


# ------------------------------------------------------------------------- measuring
def _measure(
    groups: dict[str, list[torch.nn.Linear]], packed: dict[int, torch.Tensor], chosen: tuple[str, ...]
) -> LinearPlan:
    """Time the ``chosen`` kernels per shape group and bucket; ``packed`` receives the
    reordered weights made for the timing, keyed by module id, so installing does not
    redo them."""
    start = time.perf_counter()
    plan = LinearPlan(source="measured")
    why = _packed_unavailable() if "packed" in chosen else None
    if why is not None:
        plan.unavailable["packed"] = why
    use_packed = "packed" in chosen and why is None
    flush = torch.empty(_FLUSH_BYTES // 4, dtype=torch.float32)
    with torch.inference_mode():
        for shape, modules in groups.items():
            weights = [m.weight for m in modules]
            small = sum(w.numel() * w.element_size() for w in weights) < _FLUSH_BYTES
            kernels: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
                "linear": lambda w, x: F.linear(x, w)
            }
            if "gemm" in chosen:
                kernels["gemm"] = lambda w, x: _gemm(w, None, x)
            packs: dict[int, torch.Tensor] = {}
            if use_packed:
                packs = {id(w): _pack(w) for w in weights}
                kernels["packed"] = lambda w, x, packs=packs: _packed(packs[id(w)], None, x)
            plan.routes[shape], plan.milliseconds[shape] = {}, {}
            for bucket, (_, _, rows) in BUCKETS.items():
                x = torch.randn(rows, weights[0].shape[1], dtype=weights[0].dtype)
                repeats = _REPEATS if rows <= FEW_ROWS else 1  # a prefill-sized pass is long
                times = {
                    name: round(
                        _time_pass(
                            lambda w, k=kernel, x=x: k(w, x), weights, flush if small else None, repeats
                        ),
                        3,
                    )
                    for name, kernel in kernels.items()
                    if name != "gemm" or rows <= FEW_ROWS
                }
                plan.milliseconds[shape][bucket] = times
                best = min(times, key=times.__getitem__)
                plan.routes[shape][bucket] = best if times[best] <= MIN_GAIN * times["linear"] else "linear"
            if "packed" in plan.routes[shape].values():
                packed.update({id(m): packs[id(m.weight)] for m in modules})
    log.info("timed linear kernels in %.2fs", time.perf_counter() - start)
    return plan


def _time_pass(
    kernel: Callable[[torch.Tensor], torch.Tensor],
    weights: list[torch.Tensor],
    flush: torch.Tensor | None,
    repeats: int = _REPEATS,
) -> float:
    """Fastest of ``repeats`` passes over ``weights`` in milliseconds (after one that
    warms the kernel), caches flushed before each."""
    best = float("inf")
    for i in range(repeats + 1):
        if flush is not None:
            flush.fill_(float(i))
        t = time.perf_counter()
        for w in weights:
            kernel(w)
        if i:  # the first pass warms the kernel's code paths
            best = min(best, (time.perf_counter() - t) * 1e3)
    return best


# --------------------------------------------------------------------- per-machine cache
def _plan_key(groups: dict[str, list[torch.nn.Linear]], chosen: tuple[str, ...]) -> str:
    return machine_key(
        plan_version=_PLAN_VERSION,
        kernels=list(chosen),
        shapes=sorted(f"{shape}*{len(modules)}" for shape, modules in groups.items()),
    )


def _read_cached(key: str) -> LinearPlan | None:
    entry = read_entry(_PLAN_FILE, key)
    if entry is None:
        return None
    routes = entry.get("routes", {})
    valid = isinstance(routes, dict) and all(
        isinstance(buckets, dict) and set(buckets) <= set(BUCKETS) and set(buckets.values()) <= set(KERNELS)
        for buckets in routes.values()
    )
    if not valid:
        return None
    return LinearPlan(
        routes=routes,
        milliseconds=entry.get("milliseconds", {}),
        source="cache",
        unavailable=entry.get("unavailable", {}),
    )


def _write_cached(key: str, plan: LinearPlan) -> None:
    write_entry(
        _PLAN_FILE,
        key,
        {"routes": plan.routes, "milliseconds": plan.milliseconds, "unavailable": plan.unavailable},
    )
