"""Layer skipping (SWIFT self-speculation, ``plugin.speculation.layer_skip``): how often the
default model with some of its layers skipped picks the full model's greedy token, and
what one such draft token costs against a full forward.

For each prompt (2 each of the ``edit``, ``free`` and ``sql`` tasks of
``bench/speculative.py``) the full model first writes 48 greedy tokens; then, for every
layer set below, each of those positions is drafted once by the skipping model reading
the full model's cache of everything before it (what the drafter does), and we count
how often its greedy token equals the full model's (``match``) and time it. Sets: none
skipped (the custom forward's own cost), every 2nd / 3rd / 4th middle layer, blocks of
middle and late layers, and the set the drafter chooses from the context
(``choose_layers``, with its estimated gain). Plain decoding costs one forward per token;
a draft of 3 such tokens pays only if ``1 + m + m^2 + m^3`` tokens per draft beat the
cost of 3 draft tokens plus one verification (``expected_gain`` prints the estimate).

    .venv/bin/python bench/layer_skip.py [--tokens 48] [--threads 2] [--out DIR]

Writes ``bench/results/layer-skip-cpu.json`` and ``.png`` and prints the table.
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
sys.path.insert(0, str(REPO / "bench"))

from run_meta import model_run_meta  # noqa: E402
from speculative import build_prompts  # noqa: E402

from plugin.kv.cache import cache_over, extend, layers_of  # noqa: E402
from plugin.models import load_model  # noqa: E402
from plugin.speculation.layer_skip import choose_layers, expected_gain, skipping_forward  # noqa: E402


def layer_sets(layers: int) -> dict[str, tuple[int, ...]]:
    middle = range(4, layers - 4)
    return {
        "none": (),
        "every 2nd": tuple(i for i in middle if i % 2 == 1),
        "every 3rd": tuple(i for i in range(3, layers - 3) if i % 3 == 0),
        "every 4th": tuple(i for i in range(4, layers - 2) if i % 4 == 1),
        "middle block": tuple(range(layers // 3, 2 * layers // 3)),
        "late block": tuple(range(layers - 10, layers - 2)),
    }


@torch.inference_mode()
def greedy_tokens(model: Any, ids: list[int], n: int) -> tuple[list[int], Any]:
    """``n`` greedy tokens after ``ids`` by the full model, and its cache over all of them."""
    from transformers import DynamicCache

    cache = DynamicCache()
    logits = extend(model, cache, ids)
    out: list[int] = []
    for _ in range(n):
        out.append(int(torch.argmax(logits)))
        logits = extend(model, cache, out[-1:])
    return out, cache


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model()
    device = next(model.parameters()).device
    layers = model.config.num_hidden_layers
    sets = layer_sets(layers)
    prompts = build_prompts(tokenizer, ["edit", "free", "sql"], 2)
    rows: list[dict[str, Any]] = []
    full_ms: list[float] = []
    for p in prompts:
        out, cache = greedy_tokens(model, p.ids, args.tokens)
        keys, values = layers_of(cache)
        seq = p.ids + out
        start = len(p.ids)
        # the forward the loop runs for one token, timed over the same positions
        t0 = time.perf_counter()
        for t in range(start, start + 8):
            extend(model, cache_over(keys, values, t), [seq[t]])
        full_ms.append((time.perf_counter() - t0) / 8 * 1000)
        chosen = choose_layers(model, cache_over(keys, values, start), start, p.ids)
        named = dict(sets)
        if chosen is not None:
            named["chosen from the context"] = chosen.skipped
        for name, skipped in named.items():
            hits = 0
            t0 = time.perf_counter()
            for t in range(start, start + len(out) - 1):
                logits = skipping_forward(model, cache_over(keys, values, t), t, [seq[t]], frozenset(skipped))
                hits += int(torch.argmax(logits[-1])) == seq[t + 1]
            ms = (time.perf_counter() - t0) / (len(out) - 1) * 1000
            rows.append(
                {
                    "task": p.task,
                    "prompt": p.name,
                    "set": name,
                    "skipped": list(skipped),
                    "match": hits / (len(out) - 1),
                    "ms_per_draft_token": ms,
                    "chosen_estimate": None
                    if name != "chosen from the context" or chosen is None
                    else chosen.gain,
                }
            )
        print(f"[{p.task} {p.name}] done", file=sys.stderr, flush=True)
    full = sorted(full_ms)[len(full_ms) // 2]
    summary = []
    print(f"\nfull forward over one token: {full:.1f} ms (median over prompts)\n")
    print("| layer set | skipped | match (median) | ms per draft token | × a full forward | estimated gain |")
    print("|---|---|---|---|---|---|")
    for name in [*sets, "chosen from the context"]:
        mine = [r for r in rows if r["set"] == name]
        if not mine:
            continue
        match = sorted(r["match"] for r in mine)[len(mine) // 2]
        ms = sorted(r["ms_per_draft_token"] for r in mine)[len(mine) // 2]
        count = len(mine[0]["skipped"])
        gain = expected_gain(match, ms / full)
        summary.append(
            {"set": name, "skipped_count": count, "match": match, "ms": ms, "cost": ms / full, "gain": gain}
        )
        print(f"| {name} | {count} of {layers} | {match:.2f} | {ms:.1f} | {ms / full:.2f} | {gain:.2f} |")
    folder = Path(args.out) if args.out else REPO / "bench" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    tag = "cuda" if device.type == "cuda" else "cpu"
    meta = {**model_run_meta("layer_skip", model, device), "arguments": vars(args), "full_forward_ms": full}
    path = folder / f"layer-skip-{tag}.json"
    path.write_text(json.dumps({"meta": meta, "summary": summary, "runs": rows}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for s in summary:
        ax.scatter(s["cost"], s["match"], s=40)
        ax.annotate(s["set"], (s["cost"], s["match"]), fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("draft token cost (× a full forward)")
    ax.set_ylabel("greedy match with the full model")
    ax.set_title(f"Layer skipping on {Path(str(meta.get('model', 'the model'))).name} ({tag})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)
    print(f"\nwrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
