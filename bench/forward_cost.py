"""What one target forward costs by the number of tokens it reads: the curve that decides
how long a speculative draft may be (docs/speculative.md, *How much to draft*).

Two measurements, medians of ``--repeats``, in the same run:
- the default model's forward over 1..16 new tokens after ``--cached`` cached tokens,
  scoring every new position (what ``plugin.kv.cache.score`` does for a draft), with
  torch's ``linear`` everywhere (``linear``), with the few-row products routed to
  ``linear`` or ``weight @ x.T`` only (``gemm``, the routes before oneDNN's reordered
  weights were a choice) and routed as ``load_model`` routes them on this machine
  (``routed``, ``plugin.linear_kernels``); the three are timed in rotation, one forward
  of each per size per round, so a machine whose speed drifts drifts for all three;
- a prompt's prefill over 64 and 300 tokens from an empty cache, the same three
  settings in rotation (5 rounds);
- one matrix product with the model's own weights, by rows and kernel (``linear``,
  ``gemm``, ``packed``): the MLP gate projection and the LM head (where the CPU's BLAS
  changes kernels, the curve steps).

    .venv/bin/python bench/forward_cost.py [--cached 300] [--repeats 15] [--threads 2] [--out DIR]

Writes ``bench/results/forward-cost-<device>.json`` and ``.png`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from run_meta import model_run_meta  # noqa: E402  (bench/run_meta.py)

from plugin.linear_kernels import (  # noqa: E402
    _gemm,
    _pack,
    _packed,
    _packed_unavailable,
    tune_linears,
    untune_linears,
)
from plugin.models import load_model  # noqa: E402
from plugin.speculation.forward_cost import forward_cost, time_forwards  # noqa: E402

TOKENS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16)
ROWS = (1, 2, 3, 4, 5, 6, 8, 12, 16)
SETTINGS = ("linear", "gemm", "routed")
PREFILLS = (64, 300)  # prompt lengths whose prefill (from an empty cache) is timed too
PREFILL_ROUNDS = 5


def _median(samples: list[float]) -> float:
    samples = sorted(samples)
    return samples[len(samples) // 2]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _use(model: Any, setting: str) -> None:
    """Install ``setting``'s routes (both tuned plans are read from the machine's cache
    after their first measurement)."""
    if setting == "linear":
        untune_linears(model)
    else:
        tune_linears(model, kernels=("gemm",) if setting == "gemm" else ("gemm", "packed"))


def forward_costs(
    model: Any, ids: list[int], repeats: int, settings: list[str]
) -> dict[str, dict[int, float]]:
    """Median seconds of a forward over ``n`` new tokens after ``ids[:-1]`` cached, per
    setting, timed in rotation (one forward per size, setting and round)."""
    samples: dict[str, dict[int, list[float]]] = {s: {n: [] for n in TOKENS} for s in settings}
    for _ in range(repeats):
        for setting in settings:
            _use(model, setting)
            for n, seconds in time_forwards(model, ids[:-1], TOKENS, 1, warm=1).items():
                samples[setting][n].append(seconds)
    return {s: {n: _median(v) for n, v in by_n.items()} for s, by_n in samples.items()}


@torch.inference_mode()
def prefill_costs(model: Any, ids: list[int], settings: list[str]) -> dict[str, dict[int, float]]:
    """Median seconds of a prompt's prefill (``plugin.kv.cache.extend`` from an empty
    cache, as a generation's first forward) over ``PREFILLS`` tokens, per setting, in
    rotation over ``PREFILL_ROUNDS`` rounds."""
    from transformers import DynamicCache

    from plugin.kv.cache import extend

    device = next(model.parameters()).device
    sizes = [n for n in PREFILLS if n <= len(ids)]
    samples: dict[str, dict[int, list[float]]] = {s: {n: [] for n in sizes} for s in settings}
    for _ in range(PREFILL_ROUNDS):
        for setting in settings:
            _use(model, setting)
            for n in sizes:
                _synchronize(device)
                t0 = time.perf_counter()
                extend(model, DynamicCache(), ids[:n])
                _synchronize(device)
                samples[setting][n].append(time.perf_counter() - t0)
    return {s: {n: _median(v) for n, v in by_n.items()} for s, by_n in samples.items()}


@torch.inference_mode()
def matmul_costs(weight: torch.Tensor, repeats: int, kernel: str) -> dict[int, float]:
    """Median seconds of ``x @ weight.T`` for ``x`` of 1..16 rows by ``kernel``."""
    packed = _pack(weight) if kernel == "packed" else None
    out: dict[int, float] = {}
    for rows in ROWS:
        x = torch.randn(rows, weight.shape[1], dtype=weight.dtype, device=weight.device)
        samples = []
        for _ in range(repeats * 4):
            _synchronize(weight.device)
            t0 = time.perf_counter()
            if kernel == "gemm":
                _gemm(weight, None, x)
            elif packed is not None:
                _packed(packed, None, x)
            else:
                torch.nn.functional.linear(x, weight)
            _synchronize(weight.device)
            samples.append(time.perf_counter() - t0)
        out[rows] = _median(samples)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cached", type=int, default=300, help="tokens in the cache before the forward")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=None, help="folder for the JSON and PNG (default bench/results)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(device=args.device)
    device = next(model.parameters()).device
    text = "def f(x):\n    return x * 2\n" * (args.cached // 8 + 8)
    ids = tokenizer(text, add_special_tokens=False).input_ids[: args.cached + 1]
    settings = list(SETTINGS) if device.type == "cpu" else ["linear"]
    for setting in settings:  # measure (or read) each plan, and warm up
        _use(model, setting)
        time_forwards(model, ids[:-1], TOKENS, 1)
    forwards = forward_costs(model, ids, args.repeats, settings)
    prefills = prefill_costs(model, ids, settings)
    _use(model, "routed" if device.type == "cpu" else "linear")
    plan = getattr(model, "_stencil_linear_plan", None)
    kernels = ["linear", "gemm"] + (["packed"] if _packed_unavailable() is None else [])
    if device.type != "cpu":
        kernels = ["linear"]
    gate_w = model.model.layers[0].mlp.gate_proj.weight
    head_w = model.get_output_embeddings().weight
    gate = {k: matmul_costs(gate_w, args.repeats, k) for k in kernels}
    head = {k: matmul_costs(head_w, args.repeats, k) for k in kernels}

    one = forwards[settings[-1]][1]
    print(f"forward after {len(ids) - 1} cached tokens ({device.type}, {args.threads} threads)")
    print(
        "| tokens read | " + " | ".join(f"{s} ms" for s in settings) + f" | {settings[-1]} × its one token |"
    )
    print("|---" * (len(settings) + 2) + "|")
    for n in TOKENS:
        cells = " | ".join(f"{forwards[s][n] * 1e3:.1f}" for s in settings)
        print(f"| {n} | {cells} | {forwards[settings[-1]][n] / one:.2f} |")
    print("\n| prefill tokens | " + " | ".join(f"{s} ms" for s in settings) + " |")
    print("|---" * (len(settings) + 1) + "|")
    for n in prefills[settings[0]]:
        print(f"| {n} | " + " | ".join(f"{prefills[s][n] * 1e3:.0f}" for s in settings) + " |")
    names = " / ".join(kernels)
    print(f"\n| rows | MLP gate µs: {names} | LM head ms: {names} |\n|---|---|---|")
    for rows in ROWS:
        g = " / ".join(f"{gate[k][rows] * 1e6:.0f}" for k in kernels)
        h = " / ".join(f"{head[k][rows] * 1e3:.2f}" for k in kernels)
        print(f"| {rows} | {g} | {h} |")
    print(f"\nroutes on this machine ({plan.source if plan else 'none'}): {plan.routes if plan else {}}")
    # what a fresh machine pays once (both are then read from $STENCIL_CACHE)
    t0 = time.perf_counter()
    tune_linears(model, use_cache=False)
    tune_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    forward_cost(model, use_cache=False)
    curve_seconds = time.perf_counter() - t0
    print(
        f"one-time measurements: linear routes {tune_seconds:.2f} s, forward-cost curve {curve_seconds:.2f} s"
    )

    tag = "cuda" if device.type == "cuda" else "cpu"
    folder = Path(args.out) if args.out else REPO / "bench" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"forward-cost-{tag}.json"
    payload = {
        "meta": {**model_run_meta("forward_cost", model, device), "arguments": vars(args)},
        "forward_seconds": forwards,
        "prefill_seconds": prefills,
        "gate_seconds": gate,
        "lm_head_seconds": head,
        "one_time_seconds": {"linear_routes": tune_seconds, "forward_cost_curve": curve_seconds},
        "routes": plan.to_json() if plan else None,
    }
    out.write_text(json.dumps(payload, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for kernels, curve in forwards.items():
        ax.plot(list(curve), [s * 1e3 for s in curve.values()], marker="o", label=kernels)
    ax.legend()
    ax.set_xlabel("tokens read by one forward")
    ax.set_ylabel("ms (median)")
    ax.set_title(f"default model forward cost, {tag}, {args.threads} threads")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
