"""What one target forward costs by the number of tokens it reads: the curve that decides
how long a speculative draft may be (docs/speculative.md, *How much to draft*).

Two measurements, medians of ``--repeats``:
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

from plugin.kv.cache import cache_over, extend, layers_of, score  # noqa: E402
from plugin.models import load_model  # noqa: E402

TOKENS = (1, 2, 3, 4, 5, 6, 8, 10, 12)
ROWS = (1, 2, 3, 4, 5, 6, 8, 12)


def _median(samples: list[float]) -> float:
    samples = sorted(samples)
    return samples[len(samples) // 2]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def forward_costs(model: Any, ids: list[int], repeats: int) -> dict[int, float]:
    """Median seconds of a forward over ``n`` new tokens after ``ids[:-1]`` cached."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    cache = DynamicCache()
    extend(model, cache, ids[:-1])
    keys, values = layers_of(cache)
    out: dict[int, float] = {}
    for n in TOKENS:
        new = ids[-1:] + [100 + i for i in range(n - 1)]
        samples = []
        for _ in range(repeats):
            fresh = cache_over(keys, values, len(ids) - 1)
            _synchronize(device)
            t0 = time.perf_counter()
            score(model, fresh, new, n)
            _synchronize(device)
            samples.append(time.perf_counter() - t0)
        out[n] = _median(samples)
    return out


@torch.inference_mode()
def matmul_costs(weight: torch.Tensor, repeats: int) -> dict[int, float]:
    """Median seconds of ``x @ weight.T`` for ``x`` of 1..12 rows."""
    out: dict[int, float] = {}
    for rows in ROWS:
        x = torch.randn(rows, weight.shape[1], dtype=weight.dtype, device=weight.device)
        samples = []
        for _ in range(repeats * 4):
            _synchronize(weight.device)
            t0 = time.perf_counter()
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
    forward_costs(model, ids, 2)  # warm-up
    forwards = forward_costs(model, ids, args.repeats)
    gate = matmul_costs(model.model.layers[0].mlp.gate_proj.weight, args.repeats)
    head = matmul_costs(model.get_output_embeddings().weight, args.repeats)

    one = forwards[1]
    print(f"forward after {len(ids) - 1} cached tokens ({device.type}, {args.threads} threads)")
    print("| tokens read | ms | × one token |\n|---|---|---|")
    for n, s in forwards.items():
        print(f"| {n} | {s * 1e3:.1f} | {s / one:.2f} |")
    print("\n| rows | MLP gate µs | LM head ms |\n|---|---|---|")
    for rows in ROWS:
        print(f"| {rows} | {gate[rows] * 1e6:.0f} | {head[rows] * 1e3:.2f} |")

    tag = "cuda" if device.type == "cuda" else "cpu"
    folder = Path(args.out) if args.out else REPO / "bench" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"forward-cost-{tag}.json"
    payload = {
        "meta": {**model_run_meta("forward_cost", model, device), "arguments": vars(args)},
        "forward_seconds": forwards,
        "gate_seconds": gate,
        "lm_head_seconds": head,
    }
    out.write_text(json.dumps(payload, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(list(forwards), [s * 1e3 for s in forwards.values()], marker="o")
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
