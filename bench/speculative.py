"""Speculative decoding under constraints (issue 18): speed-up over plain greedy decoding.

Four tasks, a few prompts each, all greedy (temperature 0) on the default model, run in
one process on the same prompts:

- ``extract``: JSON extraction from a short record in prose (chat template, a JSON Schema
  whose fields match the record): the output echoes the document;
- ``sql``: a question over a Spider dev schema (its CREATE TABLE statements read from
  ``../shared/data/spider``; inline ones without it), ``grammar="sql"``: the output
  names the schema's tables and columns;
- ``edit``: rewrite a given Python function (rename it, add a parameter, fix a bug); the
  prompt is the chat turn followed by the assistant's opening fence ``` ```python ```, and
  ``grammar="python_function"`` (one definition) with its default ``stop="function"``;
- ``free``: HumanEval prompts (``../shared/data/python-problems``; inline ones without
  it) completed with ``grammar="python"`` in completion mode (``prefix=`` the prompt):
  nothing to copy.

Configurations: ``plain`` (``speculative=None``), each drafter alone (``constraint``:
forced tokens; ``lookup``: n-gram context lookup; ``recycling``: Token Recycling;
``layer_skip``: the target drafting with the layers of ``--skip-layers`` skipped, SWIFT's
self-speculation, drafting always, which its own layer choice does not on this model),
``auto``, ``auto_unfitted`` (``auto`` with ``fit_cost=False``: drafts not sized against
the measured forward-cost curve), and Hugging Face's ``model.generate`` with Stencil's
:class:`plugin.StencilLogitsProcessor` for the same constraint: ``hf_plain`` (plain
greedy) and ``hf_lookup`` (``prompt_lookup_num_tokens=10``, HF's assisted generation).
An HF configuration that raises is recorded with its error and left out of the table's
figures. (Prompt lookup calls processors on candidate continuations and drops the
rejected ones; the processor follows ``input_ids`` on every call, so it stays in step.)

Protocol. ``torch.set_num_threads(--threads)`` (2). Per prompt the constraint is compiled
once, then warmed: one ``plain`` and one ``auto`` generation run untimed first, so the
automaton states the timed runs visit are already built (the first visit of a state is
slow; that is issue 19's subject, not this one's) and Token Recycling's table has seen
this prompt. Recycling's table is process-wide (one per model) and learns across
generations: its figures are those of a repeated or similar request, its first run on
each prompt (in the warm-up, after the previous prompts only) is kept in the JSON as
``warmup``. Then every configuration runs ``--repeats`` times in rotation (plain,
constraint, …, plain, constraint, …) and we report the median decoding tokens/s
(``stats["tokens_per_second"]``: prefill excluded; for HF: tokens after the first one
over the time since the streamer received the first one), the speed-up over ``plain``'s
median, tokens per target forward, and the acceptance rate (accepted / drafted). Every
Stencil configuration's greedy output must be ``plain``'s, token for token: the ``same``
column says so, and a mismatch is printed loudly (an HF output that differs is reported
the same way, but HF has no jump-forward and no finish-within-budget, so its tokens may
legitimately differ near a budget's end).

    .venv/bin/python bench/speculative.py [--tasks extract sql edit free] [--configs plain ...]
        [--repeats 3] [--max-new-tokens 96] [--prompts-per-task 3] [--threads 2] [--out DIR]
        [--skip-layers 5 9 13 17 21 25]

Writes ``speculative-cpu.json`` (every run's raw figures, the medians, the machine) and
``speculative-cpu.png`` (speed-up over plain per task and configuration) to
``bench/results/`` (or ``--out``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sqlite3
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from run_meta import model_run_meta  # noqa: E402  (bench/run_meta.py)

from plugin.api import build_constraint, constrained_generate  # noqa: E402
from plugin.logits_processor import StencilLogitsProcessor  # noqa: E402
from plugin.models import load_model  # noqa: E402
from plugin.speculation import SpeculativeConfig  # noqa: E402

DATA = REPO.parent / "shared" / "data"
# The layers the layer_skip configuration skips: of those tried on the default model
# (every 2nd, 3rd or 4th middle layer, blocks of 8-10), this set kept the most greedy
# tokens (60-85% on the edit, free and sql prompts); --skip-layers changes it.
SKIP_LAYERS = (5, 9, 13, 17, 21, 25)
STENCIL_CONFIGS: dict[str, Any] = {
    "plain": None,
    "constraint": "constraint",
    "lookup": "lookup",
    "recycling": "recycling",
    "layer_skip": SpeculativeConfig(drafters=("layer_skip",), skip_layers=SKIP_LAYERS),
    "auto": "auto",
    "auto_unfitted": SpeculativeConfig(fit_cost=False),  # auto without sizing drafts by the cost curve
}
HF_CONFIGS = ("hf_plain", "hf_lookup")
CONFIGS = (*STENCIL_CONFIGS, *HF_CONFIGS)
TASKS = ("extract", "sql", "edit", "free")
TASK_NOTES = {
    "extract": "JSON Schema",
    "sql": 'grammar="sql"',
    "edit": 'grammar="python_function"',
    "free": 'grammar="python", prefix=',
}


@dataclass
class Prompt:
    task: str
    name: str
    ids: list[int]  # the exact prompt token ids both Stencil and HF get
    constraint_kw: dict[str, Any]  # for build_constraint
    prefix: str | None = None  # completion mode: the matcher consumes it first
    constraint: Any = field(default=None, repr=False)


# ---------------------------------------------------------------------------- prompts
EXTRACT = [
    (
        "customer",
        "Maria Gonzalez (customer ID C-20931) lives at 14 Elm Street, Springfield, IL 62704. "
        "Her email is maria.gonzalez@example.com and her phone number is +1-217-555-0143. "
        "She has been a premium member since 2019.",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "customer_id": {"type": "string"},
                "street": {"type": "string"},
                "city": {"type": "string"},
                "state": {"type": "string"},
                "zip": {"type": "string"},
                "email": {"type": "string"},
                "phone": {"type": "string"},
                "premium": {"type": "boolean"},
                "member_since": {"type": "integer"},
            },
            "required": [
                "name",
                "customer_id",
                "street",
                "city",
                "state",
                "zip",
                "email",
                "phone",
                "premium",
                "member_since",
            ],
        },
    ),
    (
        "order",
        "Order A-77812 was placed on 2024-03-18 by Daniel Okafor. He bought two USB-C cables at "
        "9.99 each and one wireless mouse at 24.50. The parcel ships to 88 Harbor Road, Portland, "
        "with carrier UPS and tracking number 1Z999AA10123456784.",
        {
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "date": {"type": "string"},
                "customer": {"type": "string"},
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "product": {"type": "string"},
                            "quantity": {"type": "integer"},
                            "unit_price": {"type": "number"},
                        },
                        "required": ["product", "quantity", "unit_price"],
                    },
                },
                "address": {"type": "string"},
                "carrier": {"type": "string"},
                "tracking_number": {"type": "string"},
            },
            "required": ["order_id", "date", "customer", "items", "address", "carrier", "tracking_number"],
        },
    ),
    (
        "paper",
        'The paper "Sparse Attention for Long Legal Documents" by Lena Fischer, Tomas Berg and '
        "Aiko Tanaka appeared at ACL 2023. It proposes a block-sparse attention pattern for "
        "contracts longer than 10,000 tokens. Keywords: sparse attention, legal NLP, long "
        "documents.",
        {
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "authors": {"type": "array", "items": {"type": "string"}},
                "venue": {"type": "string"},
                "year": {"type": "integer"},
                "keywords": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["title", "authors", "venue", "year", "keywords"],
        },
    ),
]

SQL_QUESTIONS = [
    (
        "concert_singer",
        "Show the stadium name and capacity with most number of concerts in year 2014 or after.",
    ),
    ("pets_1", "Find the number of dog pets that are raised by female students (with sex F)."),
    (
        "orchestra",
        "Please show the name of the conductor that has conducted orchestras founded after 2008.",
    ),
]
SQL_FALLBACK = {  # used only when ../shared/data/spider is absent
    "concert_singer": (
        "CREATE TABLE stadium (Stadium_ID int, Location text, Name text, Capacity int, Highest int, "
        "Lowest int, Average int, PRIMARY KEY (Stadium_ID));\n"
        "CREATE TABLE concert (concert_ID int, concert_Name text, Theme text, Stadium_ID text, "
        "Year text, PRIMARY KEY (concert_ID), FOREIGN KEY (Stadium_ID) REFERENCES stadium(Stadium_ID));"
    ),
    "pets_1": (
        "CREATE TABLE Student (StuID INTEGER PRIMARY KEY, LName VARCHAR(12), Fname VARCHAR(12), "
        "Age INTEGER, Sex VARCHAR(1), Major INTEGER, Advisor INTEGER, city_code VARCHAR(3));\n"
        "CREATE TABLE Has_Pet (StuID INTEGER, PetID INTEGER, FOREIGN KEY(PetID) REFERENCES Pets(PetID), "
        "FOREIGN KEY(StuID) REFERENCES Student(StuID));\n"
        "CREATE TABLE Pets (PetID INTEGER PRIMARY KEY, PetType VARCHAR(20), pet_age INTEGER, weight REAL);"
    ),
    "orchestra": (
        "CREATE TABLE conductor (Conductor_ID int, Name text, Age int, Nationality text, "
        "Year_of_Work int, PRIMARY KEY (Conductor_ID));\n"
        "CREATE TABLE orchestra (Orchestra_ID int, Orchestra text, Conductor_ID int, Record_Company text, "
        "Year_of_Founded real, Major_Record_Format text, PRIMARY KEY (Orchestra_ID), "
        "FOREIGN KEY (Conductor_ID) REFERENCES conductor(Conductor_ID));"
    ),
}

EDITS = [
    (
        "rename",
        "def avg(xs):\n"
        '    """Return the mean of a non-empty list of numbers."""\n'
        "    total = 0\n"
        "    for x in xs:\n"
        "        total += x\n"
        "    return total / len(xs)\n",
        "Rename the function to `mean_of` and keep everything else the same.",
    ),
    (
        "add_parameter",
        "def greet(name):\n"
        '    """Build a greeting for a user."""\n'
        '    message = "Hello, " + name + "!"\n'
        "    if len(name) > 20:\n"
        '        message = "Hello there!"\n'
        "    return message\n",
        'Add a parameter `greeting` with default value "Hello" and use it instead of the fixed '
        '"Hello" in both messages.',
    ),
    (
        "fix_bug",
        "def count_vowels(text):\n"
        '    """Count the vowels in text, ignoring case."""\n'
        "    count = 0\n"
        "    for ch in text:\n"
        '        if ch in "aeiou":\n'
        "            count += 1\n"
        "    return count\n",
        "Fix the bug: upper-case vowels are not counted. Convert each character to lower case "
        "before the test.",
    ),
]

HUMAN_EVAL = ("HumanEval/13", "HumanEval/16", "HumanEval/24")
FREE_FALLBACK = [  # used only when ../shared/data/python-problems is absent
    (
        "HumanEval/13",
        'def greatest_common_divisor(a: int, b: int) -> int:\n    """ Return a greatest common '
        "divisor of two integers a and b\n    >>> greatest_common_divisor(3, 5)\n    1\n    "
        '>>> greatest_common_divisor(25, 15)\n    5\n    """\n',
    ),
    (
        "HumanEval/16",
        'def count_distinct_characters(string: str) -> int:\n    """ Given a string, find out how '
        "many distinct characters (regardless of case) does it consist of\n    >>> "
        "count_distinct_characters('xyzXYZ')\n    3\n    >>> count_distinct_characters('Jerry')\n"
        '    4\n    """\n',
    ),
    (
        "HumanEval/24",
        'def largest_divisor(n: int) -> int:\n    """ For a given number n, find the largest number '
        'that divides n evenly, smaller than n\n    >>> largest_divisor(15)\n    5\n    """\n',
    ),
]


def chat_ids(tokenizer: Any, text: str, assistant_start: str = "") -> list[int]:
    """The user turn ``text`` in the chat template, the assistant's turn opened (and
    begun with ``assistant_start``)."""
    wrapped = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )
    return list(tokenizer(wrapped + assistant_start, add_special_tokens=False).input_ids)


def spider_schema(db: str) -> str:
    path = DATA / "spider" / "databases" / db / f"{db}.sqlite"
    if not path.exists():
        return SQL_FALLBACK[db]
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        query = "SELECT sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL"
        rows = con.execute(query).fetchall()
    finally:
        con.close()
    return "\n".join(" ".join(sql.split()) + ";" for (sql,) in rows)


def human_eval_prompts() -> list[tuple[str, str]]:
    path = DATA / "python-problems" / "HumanEval.jsonl.gz"
    if not path.exists():
        return FREE_FALLBACK
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = {r["task_id"]: r["prompt"] for r in map(json.loads, f) if r}
    return [(task_id, rows[task_id]) for task_id in HUMAN_EVAL]


def build_prompts(tokenizer: Any, tasks: list[str], per_task: int) -> list[Prompt]:
    prompts: list[Prompt] = []
    if "extract" in tasks:
        for name, doc, schema in EXTRACT[:per_task]:
            fields = ", ".join(schema["properties"])
            text = f"Extract the record below as JSON with the fields {fields}.\n\nDocument:\n{doc}"
            prompts.append(Prompt("extract", name, chat_ids(tokenizer, text), {"json_schema": schema}))
    if "sql" in tasks:
        for db, question in SQL_QUESTIONS[:per_task]:
            text = (
                f"Database schema:\n{spider_schema(db)}\n\nWrite one SQLite query that answers this "
                f"question: {question}"
            )
            prompts.append(Prompt("sql", db, chat_ids(tokenizer, text), {"grammar": "sql"}))
    if "edit" in tasks:
        for name, code, instruction in EDITS[:per_task]:
            text = f"```python\n{code}```\n\n{instruction} Reply with the whole new function only."
            ids = chat_ids(tokenizer, text, "```python\n")
            prompts.append(Prompt("edit", name, ids, {"grammar": "python_function"}))
    if "free" in tasks:
        for task_id, code in human_eval_prompts()[:per_task]:
            ids = list(tokenizer(code).input_ids)
            prompts.append(Prompt("free", task_id, ids, {"grammar": "python"}, prefix=code))
    return prompts


# ---------------------------------------------------------------------------- running
class _Clock:
    """An HF streamer that notes when the first generated token(s) arrive."""

    def __init__(self) -> None:
        self.puts = 0
        self.first_at: float | None = None
        self.first_tokens = 0

    def put(self, value: torch.Tensor) -> None:
        self.puts += 1
        if self.puts == 2:  # the first put is the prompt
            self.first_at = time.perf_counter()
            self.first_tokens = int(value.numel())

    def end(self) -> None:
        pass


def run_stencil(model: Any, tokenizer: Any, p: Prompt, config: str, max_new: int) -> dict[str, Any]:
    options: dict[str, Any] = {"constraint": p.constraint}
    if p.prefix is not None:
        options["prefix"] = p.prefix
    gen = constrained_generate(
        model,
        tokenizer,
        p.ids,
        max_new_tokens=max_new,
        temperature=0.0,
        speculative=STENCIL_CONFIGS[config],
        **options,
    )
    s = gen.stats
    spec = s.get("speculative")
    return {
        "token_ids": gen.token_ids,
        "tokens": len(gen.token_ids),
        "finish_reason": gen.finish_reason,
        "valid": gen.valid,
        "tokens_per_second": s["tokens_per_second"],
        "seconds": s["seconds"],
        "prefill_seconds": s["prefill_seconds"],
        "forced_tokens": s["forced_tokens"],
        "constraint_seconds": s["constraint_seconds"],
        "speculative": spec,
    }


def run_hf(model: Any, p: Prompt, config: str, max_new: int) -> dict[str, Any]:
    processor = StencilLogitsProcessor(p.constraint, p.prefix)
    input_ids = torch.tensor([p.ids], dtype=torch.long, device=model.device)
    extra = {"prompt_lookup_num_tokens": 10} if config != "hf_plain" else {}
    eos = sorted(p.constraint.vocab.eos_ids)
    clock = _Clock()
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            max_new_tokens=max_new,
            logits_processor=LogitsProcessorList([processor]),
            pad_token_id=eos[0],
            streamer=clock,
            **extra,
        )
    end = time.perf_counter()
    ids = out[0, len(p.ids) :].tolist()
    stop = set(eos) | set(_config_eos(model))
    finish = "length"
    if ids and ids[-1] in stop:
        ids = ids[:-1]
        finish = "stop"
    first_at = clock.first_at if clock.first_at is not None else end
    decoded = len(ids) + (finish == "stop") - clock.first_tokens
    return {
        "token_ids": ids,
        "tokens": len(ids),
        "finish_reason": finish,
        "valid": _valid(p, ids),
        "tokens_per_second": decoded / (end - first_at) if end > first_at and decoded > 0 else 0.0,
        "seconds": end - start,
        "prefill_seconds": first_at - start,
        "speculative": None,
    }


def _config_eos(model: Any) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    return [eos] if isinstance(eos, int) else list(eos or [])


def _valid(p: Prompt, ids: list[int]) -> bool:
    """Whether the constraint accepts ``ids`` as a whole output (refuses none on the way)."""
    m = p.constraint.matcher_after(p.prefix) if p.prefix is not None else p.constraint.matcher()
    for t in ids:
        if not m.accepts(t):
            return False
        m.advance(t)
    return m.is_accepting()


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def run_one(model: Any, tokenizer: Any, p: Prompt, config: str, max_new: int) -> dict[str, Any]:
    try:
        if config in STENCIL_CONFIGS:
            return run_stencil(model, tokenizer, p, config, max_new)
        return run_hf(model, p, config, max_new)
    except Exception as exc:  # recorded, reported, and left out of the figures
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}


# ---------------------------------------------------------------------------- reporting
def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(prompts: list[Prompt], runs: list[dict[str, Any]], configs: list[str]) -> list[dict[str, Any]]:
    """One row per (task, config): medians over prompts of the per-prompt medians."""
    rows = []
    tasks = list(dict.fromkeys(p.task for p in prompts))
    for task in tasks:
        names = [p.name for p in prompts if p.task == task]
        plain_tps = {
            n: _median([r["tokens_per_second"] for r in runs if r["prompt"] == n and r["config"] == "plain"])
            for n in names
        }
        for config in configs:
            mine = [r for r in runs if r["task"] == task and r["config"] == config]
            ok = [r for r in mine if "error" not in r]
            per_prompt_tps = {
                n: _median([r["tokens_per_second"] for r in ok if r["prompt"] == n]) for n in names
            }
            per_prompt_speedup = {
                n: per_prompt_tps[n] / plain_tps[n] for n in names if per_prompt_tps[n] == per_prompt_tps[n]
            }
            speedups = list(per_prompt_speedup.values())
            spec = [r["speculative"] for r in ok if r.get("speculative")]
            drafted = sum(s["drafted_tokens"] for s in spec)
            accepted = sum(s["accepted_tokens"] for s in spec)
            forwards = sum(s["target_forwards"] for s in spec)
            tokens = sum(r["tokens"] for r in ok if r.get("speculative"))
            errors = sorted({r["error"] for r in mine if "error" in r})
            rows.append(
                {
                    "task": task,
                    "config": config,
                    "runs": len(mine),
                    "ok_runs": len(ok),
                    "errors": errors,
                    "tokens_mean": _mean([r["tokens"] for r in ok]),
                    "tokens_per_second_median": _median(list(v for v in per_prompt_tps.values() if v == v)),
                    "per_prompt_tokens_per_second": per_prompt_tps,
                    "speedup_vs_plain": statistics.geometric_mean(speedups) if speedups else float("nan"),
                    "per_prompt_speedup": per_prompt_speedup,
                    # the loop's forwards after the prefill (plain: at most one per token; fewer
                    # where jump-forward feeds a forced run at once; it keeps no count)
                    "tokens_per_forward": tokens / forwards if forwards else None,
                    "acceptance_rate": accepted / drafted if drafted else None,
                    "drafted_per_forward": drafted / forwards if forwards else None,
                    "same_as_plain": all(r["same_as_plain"] for r in ok) if ok else None,
                    "mismatches": sum(not r["same_as_plain"] for r in ok),
                    "valid": sum(bool(r["valid"]) for r in ok),
                    "drafter_failures": sorted(
                        {f"{k}: {v}" for s in spec for k, v in s.get("drafter_failures", {}).items()}
                    ),
                }
            )
    return rows


def _where(r: dict[str, Any]) -> str:
    return f"{r['task']}/{r['prompt']}/{r['config']}@{r['first_difference']}"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _f(value: Any, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and value != value) else format(value, spec)


def print_table(rows: list[dict[str, Any]], repeats: int, prompts: list[Prompt]) -> None:
    counts = {t: sum(p.task == t for p in prompts) for t in TASKS}
    print(
        "| task (constraint) | config | tok/s (median) | × plain | tokens/forward | acceptance "
        "| mean tokens | valid | same as plain |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        same = "–" if r["same_as_plain"] is None else "yes"
        if r["same_as_plain"] is False:
            same = f"**NO** ({r['mismatches']}/{r['ok_runs']} runs differ)"
        if r["errors"]:
            same = "error: " + "; ".join(e[:80] for e in r["errors"])
        print(
            f"| {r['task']} ({TASK_NOTES[r['task']]}) | {r['config']} "
            f"| {_f(r['tokens_per_second_median'], '.1f')} "
            f"| {_f(r['speedup_vs_plain'], '.2f')}× | {_f(r['tokens_per_forward'], '.2f')} "
            f"| {_f(r['acceptance_rate'], '.2f')} | {_f(r['tokens_mean'], '.0f')} "
            f"| {r['valid']}/{r['ok_runs']} | {same} |"
        )
    print(
        f"\n{repeats} repeats per configuration and prompt, in rotation; prompts per task: "
        + ", ".join(f"{t} {n}" for t, n in counts.items() if n)
        + ". tok/s: median over prompts of each prompt's median decoding speed (prefill excluded); "
        "× plain: geometric mean over prompts of (median tok/s / plain's median tok/s). Constraint "
        "states are warm (one plain and one auto generation per prompt before timing); Token "
        "Recycling's table is process-wide and has seen each prompt in the warm-up. tokens/forward "
        "and acceptance: Stencil's loop counters (HF reports none). same as plain: greedy token ids "
        "equal to plain's in every run."
    )


def plot(rows: list[dict[str, Any]], configs: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    shown = [c for c in configs if c != "plain"]
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(tasks) * max(1, len(shown)) / 3), 4))
    width = 0.8 / max(1, len(shown))
    for j, config in enumerate(shown):
        values = []
        for task in tasks:
            row = next((r for r in rows if r["task"] == task and r["config"] == config), None)
            value = row["speedup_vs_plain"] if row else float("nan")
            values.append(value if value == value else 0)
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(tasks))]
        bars = ax.bar(xs, values, width=width, label=config)
        for bar, value in zip(bars, values, strict=True):
            if value == 0:
                ax.annotate("err", (bar.get_x() + bar.get_width() / 2, 0.02), ha="center", fontsize=7)
    finite = [r["speedup_vs_plain"] for r in rows if r["speedup_vs_plain"] == r["speedup_vs_plain"]]
    top = max(finite, default=1.0)
    ax.set_ylim(0, max(1.2, top) * 1.3)  # room for the legend above the bars
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(tasks)), [f"{t}\n({TASK_NOTES[t]})" for t in tasks], fontsize=8)
    ax.set_ylabel("decoding speed-up vs plain (×)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=min(6, len(shown)))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--prompts-per-task", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", default=None, help="folder for the JSON and PNG (default bench/results)")
    ap.add_argument("--skip-layers", nargs="+", type=int, default=list(SKIP_LAYERS), help="for layer_skip")
    args = ap.parse_args()
    skip = tuple(args.skip_layers)
    STENCIL_CONFIGS["layer_skip"] = SpeculativeConfig(drafters=("layer_skip",), skip_layers=skip)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    configs = ["plain", *[c for c in args.configs if c != "plain"]]  # plain is the reference
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    load_before = os.getloadavg()
    model, tokenizer = load_model()
    device = next(model.parameters()).device
    tag = "cuda" if device.type == "cuda" else "cpu"
    prompts = build_prompts(tokenizer, args.tasks, args.prompts_per_task)
    runs: list[dict[str, Any]] = []
    warmups: list[dict[str, Any]] = []
    for p in prompts:
        t0 = time.perf_counter()
        p.constraint = build_constraint(tokenizer, **p.constraint_kw)
        compile_s = time.perf_counter() - t0
        for config in ("plain", "auto"):
            t0 = time.perf_counter()
            w = run_one(model, tokenizer, p, config, args.max_new_tokens)
            w.update(task=p.task, prompt=p.name, config=config, wall_seconds=time.perf_counter() - t0)
            w.pop("token_ids", None)
            warmups.append(w)
        print(
            f"[{p.task} {p.name}] {len(p.ids)} prompt tokens, compile {compile_s:.2f} s, warm-up plain "
            f"{warmups[-2].get('wall_seconds', 0):.1f} s, auto {warmups[-1].get('wall_seconds', 0):.1f} s",
            file=sys.stderr,
            flush=True,
        )
        reference: list[int] | None = None
        for repeat in range(args.repeats):
            for config in configs:
                r = run_one(model, tokenizer, p, config, args.max_new_tokens)
                load = os.getloadavg()[0]
                r.update(task=p.task, prompt=p.name, config=config, repeat=repeat, load_1min=load)
                if "error" in r:
                    print(f"  {config}: ERROR {r['error']}", file=sys.stderr, flush=True)
                else:
                    if config == "plain" and reference is None:
                        reference = r["token_ids"]
                    diff = first_difference(r["token_ids"], reference or [])
                    r["same_as_plain"] = diff is None
                    r["first_difference"] = diff
                    spec = r.get("speculative") or {}
                    print(
                        f"  r{repeat} {config:<10} {r['tokens']:>4} tok {r['tokens_per_second']:>6.1f} tok/s "
                        f"{r['finish_reason']:<7}"
                        + (
                            f" tok/fwd {spec['tokens_per_forward']:.2f} acc {spec['acceptance_rate']:.2f}"
                            if spec
                            else ""
                        )
                        + ("" if diff is None else f"  ** MISMATCH vs plain at token {diff} **"),
                        file=sys.stderr,
                        flush=True,
                    )
                runs.append(r)
    rows = summarize(prompts, runs, configs)
    print_table(rows, args.repeats, prompts)
    mismatched = [r for r in runs if "error" not in r and not r["same_as_plain"]]
    stencil_bad = [r for r in mismatched if r["config"] in STENCIL_CONFIGS]
    if stencil_bad:
        print(
            f"\n*** {len(stencil_bad)} Stencil run(s) differ from plain greedy output: "
            + ", ".join(_where(r) for r in stencil_bad)
            + " ***"
        )
    hf_bad = [r for r in mismatched if r["config"] not in STENCIL_CONFIGS]
    if hf_bad:
        print(
            "\nHF runs whose tokens differ from Stencil plain's (task/prompt/config@first differing token): "
            + ", ".join(_where(r) for r in hf_bad)
        )
    folder = Path(args.out) if args.out else REPO / "bench" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"speculative-{tag}.json"
    meta = {
        **model_run_meta("speculative", model, device),
        # other processes on the machine slow every configuration alike (rotation), not evenly
        "load_average_1_5_15_min_at_start": load_before,
        "load_average_1_5_15_min_at_end": os.getloadavg(),
        "arguments": vars(args),
        "configs": configs,
        "seconds": time.perf_counter() - began,
        "warm": "one plain and one auto generation per prompt before timing",
    }
    prompts_out = [
        {
            "task": p.task,
            "name": p.name,
            "prompt_tokens": len(p.ids),
            "prompt_text": tokenizer.decode(p.ids),
            "constraint": {k: v for k, v in p.constraint_kw.items()},
            "prefix": p.prefix is not None,
        }
        for p in prompts
    ]
    texts = {
        f"{r['task']}/{r['prompt']}/{r['config']}": tokenizer.decode(r["token_ids"])
        for r in runs
        if "error" not in r and r.get("repeat") == 0
    }
    payload = {
        "meta": meta,
        "prompts": prompts_out,
        "summary": rows,
        # token ids are checked above (same_as_plain, first_difference); the texts are kept
        "runs": [{k: v for k, v in r.items() if k != "token_ids"} for r in runs],
        "warmup": warmups,
        "outputs": texts,
    }
    out.write_text(json.dumps(payload, indent=2))
    try:
        title = f"Speculative decoding under constraints, greedy ({tag}, {args.threads} threads)"
        plot(rows, configs, out.with_suffix(".png"), title)
        print(f"\nwrote {out} and {out.with_suffix('.png')}")
    except ImportError:
        print(f"\nwrote {out} (matplotlib not installed: no plot)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
