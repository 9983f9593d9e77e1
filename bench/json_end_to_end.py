"""End to end on MaskBench: the default model writes JSON for real schemas; jsonschema judges.

For a deterministic spread of ``--schemas`` files of ``../shared/data/maskbench/`` (every
source represented, sorted by name): compile the schema with the generation defaults of
``constrained_generate`` (one optional space between tokens, declared properties only);
a schema we refuse must be refused with a clear ``StencilError`` (counted by class). A
schema whose shortest instance needs more than ``--max-tokens`` tokens (the compiled
distance bound) is reported, not generated. Otherwise the default model generates,
chat-templated, greedy, with a budget of that bound plus 64 (``finish_within_budget``
guarantees completion within it), and the output is validated by ``jsonschema`` with
the schema's own draft and that draft's format checker (``rfc3339-validator``, in the
test extra, makes it check ``date-time`` and ``time``). Every output must validate (its
``finish_reason`` is kept: ``length`` where the budget ended inside a value that could
go on, such as a number's digits, leaving a complete document).

    ./run bench bench/json_end_to_end.py [--schemas 300] [--max-tokens 448]

Writes ``bench/results/json-end-to-end-cpu.json`` (summary and a row per schema) and
prints the summary. ``tests/test_default_model.py`` runs a sample of it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from plugin.api import JSON_GENERATION_WHITESPACE, build_constraint, constrained_generate  # noqa: E402
from plugin.errors import StencilError  # noqa: E402

MASKBENCH = REPO.parent / "shared" / "data" / "maskbench"
PROMPT = "Give one example JSON instance of this schema: "


@dataclass
class SchemaRun:
    """What happened to one schema: ``outcome`` is ``valid``, ``invalid``, ``refused``
    (a clear error at compile time; ``detail`` names its class) or ``too_long``."""

    file: str
    outcome: str
    detail: str = ""
    tokens: int = 0
    seconds: float = 0.0
    text: str = ""


def spread(files: list[Path], count: int) -> list[Path]:
    """Every ``len/count``-th file: a deterministic sample with every source in it."""
    return files[:: max(1, len(files) // count)][:count]


def run_schema(model: Any, tokenizer: Any, path: Path, max_tokens: int) -> SchemaRun:
    import jsonschema

    schema = json.loads(path.read_text())["schema"]
    try:
        constraint = build_constraint(tokenizer, json_schema=schema, whitespace=JSON_GENERATION_WHITESPACE)
    except StencilError as exc:
        return SchemaRun(path.name, "refused", f"{type(exc).__name__}: {str(exc)[:160]}")
    assert constraint is not None
    bound = constraint.distance(constraint.initial_state)
    if bound > max_tokens:
        found = f"{bound} tokens" if bound < constraint.max_distance else "more than the search explores"
        return SchemaRun(path.name, "too_long", f"shortest instance needs {found}")
    start = time.perf_counter()
    gen = constrained_generate(
        model,
        tokenizer,
        PROMPT + json.dumps(schema)[:1500],
        constraint=constraint,
        chat=True,
        max_new_tokens=bound + 64,
        repetition_penalty=1.1,
    )
    seconds = time.perf_counter() - start
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    # the draft's own format checker: FormatChecker() mixes drafts, and its "time" is
    # draft 3's %H:%M:%S, which refuses RFC 3339 times ("20:00:00Z")
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    try:
        errors = list(validator.iter_errors(json.loads(gen.text)))
        detail = "; ".join(e.message[:120] for e in errors[:2])
    except json.JSONDecodeError as exc:
        errors, detail = [exc], f"not JSON: {exc}"
    # the judge is jsonschema; a budget that ends inside a value that can go on (digits)
    # still leaves a complete document, reported with its finish reason
    detail = f"finish_reason={gen.finish_reason} {detail}".strip()
    outcome = "invalid" if errors else "valid"
    return SchemaRun(path.name, outcome, detail, len(gen.token_ids), seconds, gen.text)


def summarise(runs: list[SchemaRun]) -> dict[str, Any]:
    generated = [r for r in runs if r.outcome in ("valid", "invalid")]
    refusals: dict[str, int] = {}
    for r in runs:
        if r.outcome == "refused":
            kind = r.detail.split(":")[0]
            refusals[kind] = refusals.get(kind, 0) + 1
    return {
        "schemas": len(runs),
        "generated": len(generated),
        "valid": sum(r.outcome == "valid" for r in runs),
        "invalid": [r.file for r in runs if r.outcome == "invalid"],
        "refused": refusals,
        "too_long": [r.file for r in runs if r.outcome == "too_long"],
        "tokens_median": statistics.median(r.tokens for r in generated) if generated else 0,
        "tokens_per_second_median": statistics.median(r.tokens / r.seconds for r in generated if r.seconds)
        if generated
        else 0.0,
    }


def main() -> int:
    import torch

    from plugin.models import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--schemas", type=int, default=300)
    ap.add_argument("--max-tokens", type=int, default=448)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    if not MASKBENCH.is_dir():
        print(f"MaskBench data not found: {MASKBENCH}")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model()
    files = spread(sorted(MASKBENCH.glob("*.json")), args.schemas)
    runs: list[SchemaRun] = []
    start = time.perf_counter()
    for i, path in enumerate(files, 1):
        runs.append(run_schema(model, tokenizer, path, args.max_tokens))
        r = runs[-1]
        line = f"[{i}/{len(files)}] {r.file}: {r.outcome} {r.tokens} tok {r.seconds:.1f} s {r.detail}"
        print(line, flush=True)
    summary = summarise(runs)
    summary["wall_s"] = time.perf_counter() - start
    device = "cuda" if model.device.type == "cuda" else "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "machine": platform.processor() or platform.machine(),
        "device": str(model.device),
        "summary": summary,
        "rows": [asdict(r) for r in runs],
    }
    (out / f"json-end-to-end-{device}.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(summary, indent=2))
    return 0 if not summary["invalid"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
