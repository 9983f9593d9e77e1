"""Tokens/s unconstrained vs constrained on the default model, and constraint overhead.

For each task (JSON Schema, SQL regex, Python regex) the default model generates with
the chat template, greedy, several times; we report tokens/s (median) against an
unconstrained run of similar length, and the constraint's time per decoding step
(median, p99) in our decode loop. The same token sequences are then replayed through
our Matcher (mask + advance, warm caches) and through outlines-core's own ``Guide``
(``write_mask_into`` + ``advance``), the peer measured side by side on identical input.

    .venv/bin/python bench/throughput.py [--runs 3] [--max-new-tokens 96] [--device cpu]

Writes ``bench/results/throughput-<device>.json`` (and a PNG if matplotlib is present).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugin.api import build_constraint, encode_prompt
from plugin.decoding import decode, percentile
from plugin.demo import DEMO_TABLES, USER_SCHEMA, function_regex, select_regex
from plugin.gc_pause import freeze_loaded_heap
from plugin.models import load_model
from plugin.samplers.sampling import SamplingParams
from plugin.vocabulary import Vocabulary

RESULTS = Path(__file__).resolve().parent / "results"
TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "json_schema": (
        "Give one example user record as JSON matching this schema: " + json.dumps(USER_SCHEMA),
        {"json_schema": USER_SCHEMA},
    ),
    "sql_regex": (
        "Tables: singer(singer_id, name, country, age). Write one SQLite query: how many singers "
        "are older than 30?",
        {"regex": select_regex(DEMO_TABLES)},
    ),
    "python_regex": (
        "Write a Python function area(width, height) that returns the area of a rectangle.",
        {"regex": function_regex("area", ["width", "height"])},
    ),
}


def replay_ours(constraint: Any, tokens: list[int], size: int) -> list[float]:
    """µs per step for fill_mask + advance over ``tokens`` (caches already warm)."""
    m = constraint.matcher()
    mask = torch.zeros(size, dtype=torch.bool)
    out = []
    for t in tokens:
        start = time.perf_counter()
        mask.zero_()
        m.fill_mask(mask)
        m.advance(t)
        out.append((time.perf_counter() - start) * 1e6)
    return out


def replay_outlines(index: Any, tokens: list[int], size: int) -> list[float]:
    """µs per step for outlines-core's Guide: write_mask_into + advance (stops at the
    first token its index refuses: its JSON Schema regex is not ours)."""
    import outlines_core

    guide = outlines_core.Guide(index)
    words = torch.zeros((size + 1 + 31) // 32, dtype=torch.int32)
    out = []
    for t in tokens:
        start = time.perf_counter()
        guide.write_mask_into(words.data_ptr(), words.numel(), 4)
        try:
            guide.advance(t, False)
        except ValueError:
            break
        out.append((time.perf_counter() - start) * 1e6)
    return out


def outlines_index(constraint: Any, kw: dict[str, Any], vocab: Vocabulary) -> Any:
    """The peer's index: ours for a regex; for a JSON Schema, outlines' own regex of it."""
    if hasattr(constraint, "index"):
        return constraint.index
    import outlines_core
    from outlines_core.json_schema import build_regex_from_schema

    from grammars.dfa import _outlines_vocabulary

    regex = build_regex_from_schema(json.dumps(kw["json_schema"]), r"[ ]?")
    return outlines_core.Index(regex, _outlines_vocabulary(vocab))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--device")
    args = parser.parse_args()

    model, tok = load_model(device=args.device)
    freeze_loaded_heap()  # as `stencil demo` does
    vocab = Vocabulary.from_tokenizer(tok)
    device = str(model.device)
    params = SamplingParams()
    rows: list[dict[str, Any]] = []

    def run(prompt: str, constraint: Any, max_new: int) -> Any:
        ids = encode_prompt(tok, prompt, chat=True)
        return decode(model, vocab, ids, constraint.matcher() if constraint else None, params, max_new)

    for name, (prompt, kw) in TASKS.items():
        compile_start = time.perf_counter()
        constraint = build_constraint(tok, whitespace=r"[ ]?", **kw)
        compile_s = time.perf_counter() - compile_start
        run(prompt, constraint, 4)  # warm-up
        results = [run(prompt, constraint, args.max_new_tokens) for _ in range(args.runs)]
        n_tokens = len(results[0].token_ids)
        free = [run(prompt, None, max(1, n_tokens)) for _ in range(args.runs)]
        steps = [us for r in results for us in r.step_constraint_us]
        tokens = results[0].token_ids
        ours = replay_ours(constraint, tokens, vocab.size)
        peer = replay_outlines(outlines_index(constraint, kw, vocab), tokens, vocab.size)
        row = {
            "task": name,
            "compile_seconds": compile_s,
            "tokens": n_tokens,
            "finish_reason": results[0].finish_reason,
            "tokens_per_second_constrained_median": statistics.median(
                r.stats["tokens_per_second"] for r in results
            ),
            "tokens_per_second_unconstrained_median": statistics.median(
                r.stats["tokens_per_second"] for r in free
            ),
            "constraint_us_per_step_p50": percentile(steps, 0.5),
            "constraint_us_per_step_p99": percentile(steps, 0.99),
            "replay_ours_us_p50": percentile(ours, 0.5),
            "replay_ours_us_p99": percentile(ours, 0.99),
            "replay_outlines_core_guide_us_p50": percentile(peer, 0.5),
            "replay_outlines_core_guide_us_p99": percentile(peer, 0.99),
            "forced_tokens": results[0].stats["forced_tokens"],
        }
        row["slowdown_vs_unconstrained"] = (
            row["tokens_per_second_unconstrained_median"] / row["tokens_per_second_constrained_median"]
        )
        rows.append(row)

    header = (
        f"{'task':<14}{'tok/s free':>11}{'tok/s cons':>11}{'step p50 µs':>12}{'step p99 µs':>12}"
        f"{'ours p50':>10}{'outlines p50':>13}{'compile s':>10}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['task']:<14}{r['tokens_per_second_unconstrained_median']:>11.1f}"
            f"{r['tokens_per_second_constrained_median']:>11.1f}{r['constraint_us_per_step_p50']:>12.0f}"
            f"{r['constraint_us_per_step_p99']:>12.0f}{r['replay_ours_us_p50']:>10.0f}"
            f"{r['replay_outlines_core_guide_us_p50']:>13.0f}{r['compile_seconds']:>10.2f}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = "cuda" if device.startswith("cuda") else "cpu"
    out = {
        "benchmark": "throughput",
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "runs": args.runs,
        "max_new_tokens": args.max_new_tokens,
        "rows": rows,
    }
    path = RESULTS / f"throughput-{tag}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no plot written")
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [r["task"] for r in rows]
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [r["replay_ours_us_p50"] for r in rows], width=0.4, label="Stencil matcher")
    ax.bar(
        [i + 0.2 for i in x],
        [r["replay_outlines_core_guide_us_p50"] for r in rows],
        width=0.4,
        label="outlines-core Guide",
    )
    ax.set_xticks(list(x), names)
    ax.set_ylabel("µs per step (median)")
    ax.set_title(f"Constraint cost per decoding step, 49k vocab ({tag})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"throughput-{tag}.png", dpi=120)
    print(f"wrote {RESULTS / f'throughput-{tag}.png'}")


if __name__ == "__main__":
    main()
