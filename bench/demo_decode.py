"""The demo's cases as a fresh process first meets them: constraint share of decode time.

``stencil demo`` compiles each constraint and decodes once, so what it shows includes
every first-visit cost (new automaton states, their masks and completion bounds). This
runs the demo's five cases the same way (default model, greedy, ``max_new_tokens``
96; the chat template except for the Python completion, which continues its prefix as
the demo does), each twice: the first decode
(cold per-state caches, compile excluded) and a second, identical one (warm), against
an unconstrained generation. The constraint's share is ``constraint_seconds`` over
decode time (``seconds - prefill_seconds``).

    flock /tmp/bench.lock .venv/bin/python bench/demo_decode.py [--threads N] [--tag NAME] [--cold]

``--cold``: once the model is loaded, Stencil's constraint caches on disk (compiled
grammars, token tables, automaton indexes) start empty, as in a fresh clone.

Writes ``bench/results/demo-decode-cpu[-NAME].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
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
_HEAD = "def area(width, height):\n    "
# name -> (prompt, constraint keywords, other generation keywords)
CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "unconstrained": ("Write a haiku about parsers.", {}, {"chat": True}),
    "json_schema": (
        "Give one example user record as JSON matching this schema: " + json.dumps(USER_SCHEMA),
        {"json_schema": USER_SCHEMA},
        {"chat": True},
    ),
    "sql_grammar": (
        f"Tables: {_TABLES}. Write one SQLite query listing the names of singers from France.",
        {"grammar": "sql_statement"},
        {"chat": True},
    ),
    "sql_regex": (
        f"Tables: {_TABLES}. Write one SQLite query: how many singers are older than 30?",
        {"regex": select_regex(DEMO_TABLES)},
        {"chat": True},
    ),
    "python_function": (
        "Write a Python function area(width, height) that returns the area of a rectangle.",
        {"grammar": "python_function"},
        {"chat": True, "stop": "function"},  # the demo's default for this grammar
    ),
    "python_completion": (_HEAD, {"grammar": "python"}, {"prefix": _HEAD, "stop": "function"}),
}


def run_case(
    model: Any, tokenizer: Any, prompt: str, kind: dict[str, Any], options: dict[str, Any], max_new: int
) -> dict[str, Any]:
    """Compile (timed apart), then decode twice with the same compiled constraint."""
    start = time.perf_counter()
    constraint = build_constraint(tokenizer, **kind) if kind else None
    compile_s = time.perf_counter() - start
    runs = []
    for _ in range(2):
        gen = constrained_generate(
            model, tokenizer, prompt, constraint=constraint, max_new_tokens=max_new, **options
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
    parser.add_argument("--cold", action="store_true", help="empty constraint caches on disk (a fresh clone)")
    parser.add_argument(
        "--linear", action="store_true", help="torch's linear everywhere (load_model(tune=False))"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(None, tune=not args.linear)
    freeze_loaded_heap()  # as `stencil demo` does
    cold = tempfile.TemporaryDirectory(prefix="stencil-cold-") if args.cold else None
    if cold is not None:
        os.environ["STENCIL_CACHE"] = cold.name  # the model is loaded: only constraints start cold
    constrained_generate(model, tokenizer, "Hi.", chat=True, max_new_tokens=4)  # warm the model
    results = {
        name: run_case(model, tokenizer, prompt, kind, options, args.max_new_tokens)
        for name, (prompt, kind, options) in CASES.items()
    }
    print(f"{'case':17} {'run':6} {'tokens':>6} {'tok/s':>6} {'constraint s':>12} {'share':>6}  finish")
    for name, r in results.items():
        for run in ("first", "second"):
            x = r[run]
            print(
                f"{name:17} {run:6} {x['tokens']:6d} {x['tokens_per_second']:6.1f} "
                f"{x['constraint_seconds']:12.3f} {100 * x['constraint_share']:5.1f}%  {x['finish_reason']}"
            )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"demo-decode-cpu{'-' + args.tag if args.tag else ''}.json"
    meta = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "max_new_tokens": args.max_new_tokens,
        "cold_constraint_caches": args.cold,
        "linear_routes": plan.to_json() if (plan := getattr(model, "_stencil_linear_plan", None)) else None,
    }
    out.write_text(json.dumps({"meta": meta, "cases": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
