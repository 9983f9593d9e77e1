"""The demo's cases as a fresh process first meets them: constraint share of decode time.

``stencil demo`` compiles each constraint and decodes once, so what it shows includes
every first-visit cost (new automaton states, their masks and completion bounds). This
runs the demo's JSON Schema, SQL grammar and SQL regex cases the same way (default
model, chat template, greedy, ``max_new_tokens`` 96), each twice: the first decode
(cold per-state caches, compile excluded) and a second, identical one (warm), against
an unconstrained generation. The constraint's share is ``constraint_seconds`` over
decode time (``seconds - prefill_seconds``).

    flock /tmp/bench.lock .venv/bin/python bench/demo_decode.py [--threads N] [--tag NAME]

Writes ``bench/results/demo-decode-cpu[-NAME].json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugin.api import build_constraint, constrained_generate
from plugin.demo import DEMO_TABLES, USER_SCHEMA, select_regex
from plugin.gc_pause import freeze_loaded_heap
from plugin.models import load_model

RESULTS = Path(__file__).resolve().parent / "results"
_TABLES = "; ".join(f"{t}({', '.join(c)})" for t, c in DEMO_TABLES.items())
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "unconstrained": ("Write a haiku about parsers.", {}),
    "json_schema": (
        "Give one example user record as JSON matching this schema: " + json.dumps(USER_SCHEMA),
        {"json_schema": USER_SCHEMA},
    ),
    "sql_grammar": (
        f"Tables: {_TABLES}. Write one SQLite query listing the names of singers from France.",
        {"grammar": "sql_statement"},
    ),
    "sql_regex": (
        f"Tables: {_TABLES}. Write one SQLite query: how many singers are older than 30?",
        {"regex": select_regex(DEMO_TABLES)},
    ),
}


def run_case(model: Any, tokenizer: Any, prompt: str, kind: dict[str, Any], max_new: int) -> dict[str, Any]:
    """Compile (timed apart), then decode twice with the same compiled constraint."""
    start = time.perf_counter()
    constraint = build_constraint(tokenizer, **kind) if kind else None
    compile_s = time.perf_counter() - start
    runs = []
    for _ in range(2):
        gen = constrained_generate(
            model, tokenizer, prompt, constraint=constraint, chat=True, max_new_tokens=max_new
        )
        s = gen.stats
        decode_s = s["seconds"] - s["prefill_seconds"]
        runs.append(
            {
                "tokens": s["tokens"],
                "tokens_per_second": s["tokens_per_second"],
                "decode_seconds": decode_s,
                "constraint_seconds": s["constraint_seconds"],
                "constraint_share": s["constraint_seconds"] / decode_s if decode_s > 0 else 0.0,
                "budget_restricted_steps": s["budget_restricted_steps"],
                "finish_reason": gen.finish_reason,
                "text": gen.text,
            }
        )
    return {"compile_seconds": compile_s, "first": runs[0], "second": runs[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--tag", default="", help="suffix of the results file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(None)
    freeze_loaded_heap()  # as `stencil demo` does
    constrained_generate(model, tokenizer, "Hi.", chat=True, max_new_tokens=4)  # warm the model
    results = {
        name: run_case(model, tokenizer, prompt, kind, args.max_new_tokens)
        for name, (prompt, kind) in CASES.items()
    }
    print(f"{'case':14} {'run':6} {'tokens':>6} {'tok/s':>6} {'constraint s':>12} {'share':>6}  finish")
    for name, r in results.items():
        for run in ("first", "second"):
            x = r[run]
            print(
                f"{name:14} {run:6} {x['tokens']:6d} {x['tokens_per_second']:6.1f} "
                f"{x['constraint_seconds']:12.3f} {100 * x['constraint_share']:5.1f}%  {x['finish_reason']}"
            )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"demo-decode-cpu{'-' + args.tag if args.tag else ''}.json"
    meta = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "max_new_tokens": args.max_new_tokens,
    }
    out.write_text(json.dumps({"meta": meta, "cases": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
