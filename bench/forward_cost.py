"""What one target forward costs by the number of tokens it reads: the curve that decides
how long a speculative draft may be (docs/speculative.md, *How much to draft*).

Two measurements, medians of ``--repeats``, each with torch's ``linear`` everywhere
(``linear``) and with the few-row products routed as ``load_model`` routes them on this
machine (``routed``, ``plugin.linear_kernels``), in the same run:
- the default model's forward over 1..12 new tokens after ``--cached`` cached tokens,
  scoring every new position (what ``plugin.kv.cache.score`` does for a draft);
- one matrix product with the model's own weights, by rows: the MLP gate projection
  and the LM head (where the CPU's BLAS changes kernels, the curve steps).

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

from plugin.linear_kernels import _gemm, tune_linears, untune_linears  # noqa: E402
from plugin.models import load_model  # noqa: E402
from plugin.speculation.forward_cost import forward_cost, time_forwards  # noqa: E402

TOKENS = (1, 2, 3, 4, 5, 6, 8, 10, 12)
ROWS = (1, 2, 3, 4, 5, 6, 8, 12)


def _median(samples: list[float]) -> float:
    samples = sorted(samples)
    return samples[len(samples) // 2]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_costs(model: Any, ids: list[int], repeats: int) -> dict[int, float]:
    """Median seconds of a forward over ``n`` new tokens after ``ids[:-1]`` cached."""
    return time_forwards(model, ids[:-1], TOKENS, repeats)


@torch.inference_mode()
def matmul_costs(weight: torch.Tensor, repeats: int, routed: bool) -> dict[int, float]:
    """Median seconds of ``x @ weight.T`` for ``x`` of 1..12 rows (``linear``, or the
    routed kernel ``weight @ x.T``)."""
    out: dict[int, float] = {}
    for rows in ROWS:
        x = torch.randn(rows, weight.shape[1], dtype=weight.dtype, device=weight.device)
        samples = []
        for _ in range(repeats * 4):
            _synchronize(weight.device)
            t0 = time.perf_counter()
            if routed:
                _gemm(weight, None, x)
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
    plan = getattr(model, "_stencil_linear_plan", None)
    forwards: dict[str, dict[int, float]] = {}
    for kernels in ("linear", "routed"):
        if kernels == "linear":
            untune_linears(model)
        elif device.type == "cpu":
            plan = tune_linears(model)
        forward_costs(model, ids, 2)  # warm-up
        forwards[kernels] = forward_costs(model, ids, args.repeats)
    gate_w = model.model.layers[0].mlp.gate_proj.weight
    head_w = model.get_output_embeddings().weight
    gate = {k: matmul_costs(gate_w, args.repeats, k == "routed") for k in forwards}
    head = {k: matmul_costs(head_w, args.repeats, k == "routed") for k in forwards}

    one = forwards["linear"][1]
    print(f"forward after {len(ids) - 1} cached tokens ({device.type}, {args.threads} threads)")
    print("| tokens read | linear ms | routed ms | routed × linear's one token |\n|---|---|---|---|")
    for n in TOKENS:
        lin, rout = forwards["linear"][n], forwards["routed"][n]
        print(f"| {n} | {lin * 1e3:.1f} | {rout * 1e3:.1f} | {rout / one:.2f} |")
    print("\n| rows | MLP gate µs: linear / routed | LM head ms: linear / routed |\n|---|---|---|")
    for rows in ROWS:
        print(
            f"| {rows} | {gate['linear'][rows] * 1e6:.0f} / {gate['routed'][rows] * 1e6:.0f} | "
            f"{head['linear'][rows] * 1e3:.2f} / {head['routed'][rows] * 1e3:.2f} |"
        )
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
        "gate_seconds": gate,
        "lm_head_seconds": head,
        "one_time_seconds": {"linear_routes": tune_seconds, "forward_cost_curve": curve_seconds},
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
