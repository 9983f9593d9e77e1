"""Decoding quality and cost of the samplers: mask, awrs, smc, asap, on the default model.

For each task (JSON Schema, SQL with the built-in grammar, a Python function by regex)
and sampler, the default model generates ``--seeds`` outputs at temperature 1 with the
chat template. Reported per (task, sampler): outputs valid; mean log-probability of the
outputs under the *unconstrained* model (per token, end-of-sequence included when the
model chose it: the quantity constrained decoding distorts); constraint checks per token
(the mask checks the whole vocabulary, AWRS a few tokens); tokens per second. ASAp keeps
learning across the seeds of a task (same model, prompt and constraint).

    ./run bench bench/samplers.py [--seeds 4] [--max-new-tokens 96] [--particles 4]

Writes ``bench/results/samplers-cpu.json`` and a plot, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from plugin.api import SAMPLERS, build_constraint, constrained_generate, encode_prompt  # noqa: E402
from plugin.demo import DEMO_TABLES, USER_SCHEMA, function_regex  # noqa: E402
from plugin.models import load_model  # noqa: E402

TABLES = "; ".join(f"{t}({', '.join(c)})" for t, c in DEMO_TABLES.items())
TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "json_schema": (
        "Give one example user record as JSON matching this schema: " + json.dumps(USER_SCHEMA),
        {"json_schema": USER_SCHEMA},
    ),
    "sql_grammar": (
        f"Tables: {TABLES}. Write one SQLite query listing the names of singers from France.",
        {"grammar": "sql_statement"},
    ),
    "python_regex": (
        "Write a Python function area(width, height) that returns the area of a rectangle.",
        {"regex": function_regex("area", ["width", "height"])},
    ),
}


@torch.inference_mode()
def unconstrained_logprob(model: Any, prompt_ids: list[int], out_ids: list[int]) -> float:
    """Sum of the unconstrained model's log-probabilities of ``out_ids`` after the prompt."""
    if not out_ids:
        return 0.0
    ids = torch.tensor([prompt_ids + out_ids], device=model.device)
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    positions = torch.arange(len(prompt_ids) - 1, len(prompt_ids) + len(out_ids) - 1, device=ids.device)
    return float(logp[positions, ids[0, len(prompt_ids) :]].sum())


def run(args: argparse.Namespace) -> dict[str, Any]:
    model, tok = load_model(device=args.device)
    eos = tok.eos_token_id
    results: dict[str, Any] = {"machine": platform.platform(), "device": str(model.device), "tasks": {}}
    for task, (prompt, kwargs) in TASKS.items():
        constraint = build_constraint(tok, **kwargs)
        prompt_ids = encode_prompt(tok, prompt, chat=True)
        rows: dict[str, Any] = {}
        for sampler in SAMPLERS:
            per_token, checks, tps, valid = [], [], [], 0
            for seed in range(args.seeds):
                extra = {"particles": args.particles} if sampler == "smc" else {}
                gen = constrained_generate(
                    model,
                    tok,
                    prompt,
                    constraint=constraint,
                    chat=True,
                    sampler=sampler,
                    temperature=1.0,
                    seed=seed,
                    max_new_tokens=args.max_new_tokens,
                    **extra,
                )
                out = gen.token_ids + ([eos] if gen.finish_reason == "stop" else [])
                per_token.append(unconstrained_logprob(model, prompt_ids, out) / max(1, len(out)))
                n = max(1, gen.stats.get("tokens", len(gen.token_ids)))
                checks.append(gen.stats.get("checks_per_token_mean", gen.stats["constraint_checks"] / n))
                tps.append(gen.stats["tokens_per_second"])
                valid += gen.valid
            rows[sampler] = {
                "valid": valid,
                "outputs": args.seeds,
                "logprob_per_token_mean": statistics.fmean(per_token),
                "checks_per_token_median": statistics.median(checks),
                "tokens_per_second_median": statistics.median(tps),
            }
            print(f"{task} {sampler}: {rows[sampler]}", flush=True)
        results["tasks"][task] = rows
    return results


def print_table(results: dict[str, Any]) -> None:
    print("\n| task | sampler | valid | log p / token (unconstrained model) | checks / token | tok/s |")
    print("|---|---|---|---|---|---|")
    for task, rows in results["tasks"].items():
        for sampler, r in rows.items():
            print(
                f"| {task} | {sampler} | {r['valid']}/{r['outputs']} | {r['logprob_per_token_mean']:.3f} "
                f"| {r['checks_per_token_median']:.1f} | {r['tokens_per_second_median']:.1f} |"
            )


def plot(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    tasks = list(results["tasks"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(SAMPLERS)
    for k, sampler in enumerate(SAMPLERS):
        xs = [i + k * width for i in range(len(tasks))]
        axes[0].bar(
            xs, [results["tasks"][t][sampler]["checks_per_token_median"] for t in tasks], width, label=sampler
        )
        axes[1].bar(
            xs,
            [results["tasks"][t][sampler]["tokens_per_second_median"] for t in tasks],
            width,
            label=sampler,
        )
    axes[0].set_yscale("log")
    axes[0].set_ylabel("constraint checks per token (log)")
    axes[1].set_ylabel("tokens per second")
    for ax in axes:
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], tasks, fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("Samplers on the default model, temperature 1, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--particles", type=int, default=4)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    results = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if "cuda" in results["device"] else "cpu"
    (out / f"samplers-{device}.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    plot(results, out / f"samplers-{device}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
