"""Monitor-guided decoding on the default model: with and without monitors, same inputs.

(a) Python: real code the project did not write (the sources of installed third-party
packages), cut right after ``obj.`` where jedi infers the receiver and lists the
original attribute. The default model completes the identifier (greedy, up to 12
tokens; an identifier the budget cuts counts as invalid) without a constraint and with
``grammar="python", monitors="python"`` (jedi over the package as the project, the
file's text up to the cut as the grammar's prefix), with the full mask and with AWRS
(same greedy output, a few ``accepts`` calls per token instead of a mask).
Reported: valid identifier rate (the identifier is among jedi's completions there, or
is a new attribute assigned at a statement's start, ``self.x = …``), exact match with
the original, and the share jedi can resolve (``goto`` finds a definition).

(b) SQL: Spider dev questions over their real SQLite schemas. The prompt gives the
schema (its ``CREATE`` statements), the question and ``SELECT``; the model completes
one statement with the ``sql_statement`` grammar, without and with the live-database
monitor. Reported: complete statements, ``EXPLAIN`` passing on the real database, and
execution match with the gold query on a copy filled with deterministic random rows
(the shipped databases are empty).

Per-token cost: the constraint time per decoding step (p50, p99) with and without the
monitor.

    ./run bench bench/monitors.py [--python-cases 40] [--sql-cases 60]

Writes ``bench/results/monitors-cpu.json`` and ``.png`` and prints the table.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import platform
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jedi  # noqa: E402

from plugin.api import constrained_generate  # noqa: E402
from plugin.decoding import percentile  # noqa: E402
from plugin.models import load_model  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
PACKAGES = ["jsonschema", "lark", "tqdm", "parso", "jedi", "click", "requests", "idna", "packaging", "attr"]
PROMPT_LINES = 60
MAX_TOKENS = 12


def python_cases(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Cuts after ``name.`` in installed packages' sources where jedi lists the original."""
    import importlib.util

    rng = random.Random(seed)
    files: list[tuple[Path, Path]] = []
    for pkg in PACKAGES:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        files += [(root, f) for f in sorted(root.rglob("*.py")) if f.stat().st_size < 60_000]
    rng.shuffle(files)
    cases: list[dict[str, Any]] = []
    for root, file in files:
        if len(cases) >= n:
            break
        source = file.read_text(encoding="utf-8", errors="replace")
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        spots = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.lineno > 15
        ]
        rng.shuffle(spots)
        lines = source.splitlines(keepends=True)
        for node in spots[:3]:
            end = node.value.end_col_offset
            line = lines[node.value.end_lineno - 1]
            if line[end : end + 1] != ".":
                continue
            prefix = "".join(lines[: node.value.end_lineno - 1]) + line[: end + 1]
            script = jedi.Script(prefix + "\n", path=str(file), project=jedi.Project(str(root.parent)))
            names = {c.name for c in script.complete(prefix.count("\n") + 1, end + 1)}
            if node.attr in names and "__getattr__" not in names:
                cases.append(
                    {
                        "root": str(root.parent),
                        "file": str(file),
                        "prefix": prefix,
                        "original": node.attr,
                        "legal": sorted(names),
                    }
                )
                break
    return cases


def leading_identifier(text: str) -> str:
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text)
    return m.group() if m else ""


def creates_attribute(case: dict[str, Any], text: str, ident: str) -> bool:
    """``obj.new = …`` (or ``obj.new: T``) at a statement's start: Python makes the
    attribute, so a name jedi does not list is legal there."""
    last_line = case["prefix"][case["prefix"].rfind("\n") + 1 :]
    at_statement_start = re.fullmatch(r"[ \t]*[A-Za-z_][A-Za-z0-9_]*\.", last_line) is not None
    return (
        bool(ident) and at_statement_start and re.match(r"[ \t]*(=(?!=)|:)", text[len(ident) :]) is not None
    )


def resolvable(case: dict[str, Any], ident: str) -> bool:
    if not ident:
        return False
    code = case["prefix"] + ident + "\n"
    script = jedi.Script(code, path=case["file"], project=jedi.Project(case["root"]))
    line = case["prefix"].count("\n") + 1
    column = len(case["prefix"]) - case["prefix"].rfind("\n") - 1 + len(ident)
    try:
        return bool(script.goto(line, column) or script.infer(line, column))
    except Exception:
        return False


def run_python(model: Any, tokenizer: Any, cases: list[dict[str, Any]]) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {"plain": [], "monitor": [], "monitor+awrs": []}
    for i, case in enumerate(cases):
        prompt = "".join(case["prefix"].splitlines(keepends=True)[-PROMPT_LINES:])
        for mode in rows:
            extra: dict[str, Any] = {}
            if mode != "plain":
                extra = {
                    "monitors": "python",
                    "project_root": case["root"],
                    "file_path": case["file"],
                    "prefix": case["prefix"],
                    "sampler": "awrs" if mode.endswith("awrs") else "mask",
                    "grammar": "python",
                }
            gen = constrained_generate(model, tokenizer, prompt, max_new_tokens=MAX_TOKENS, **extra)
            ident = leading_identifier(gen.text)
            if ident == gen.text:
                ident = ""  # the budget ended inside the identifier: not a whole identifier
            rows[mode].append(
                {
                    "case": i,
                    "identifier": ident,
                    "valid": ident in case["legal"] or creates_attribute(case, gen.text, ident),
                    "exact": ident == case["original"],
                    "resolvable": resolvable(case, ident),
                    "step_us": gen.stats.get("constraint_us_per_step_p50", 0.0),
                    "step_us_p99": gen.stats.get("constraint_us_per_step_p99", 0.0),
                    "seconds": gen.stats["seconds"],
                }
            )
        print(
            f"python {i + 1}/{len(cases)}: {case['original']!r} "
            + " ".join(f"{m}={r[-1]['identifier']!r}" for m, r in rows.items()),
            file=sys.stderr,
            flush=True,
        )
    return {mode: summarize(r, ("valid", "exact", "resolvable")) | {"rows": r} for mode, r in rows.items()}


def fill_database(src: Path, dst: Path, seed: int) -> None:
    """Copy ``src`` and add 12 deterministic random rows per table (types from the schema)."""
    shutil.copy(src, dst)
    rng = random.Random(seed)
    words = ["alpha", "beta", "France", "USA", "Paris", "red", "blue", "2014", "Smith", "A"]
    with sqlite3.connect(dst) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cols = list(conn.execute(f'PRAGMA table_info("{table}")'))
            for _ in range(12):
                values = []
                for col in cols:
                    kind = (col[2] or "").lower()
                    if (
                        "int" in kind
                        or "num" in kind
                        or "real" in kind
                        or "float" in kind
                        or "double" in kind
                    ):
                        values.append(rng.randint(1, 20))
                    else:
                        values.append(rng.choice(words))
                marks = ", ".join("?" for _ in cols)
                with contextlib.suppress(sqlite3.Error):  # a constraint the random row breaks
                    conn.execute(f'INSERT INTO "{table}" VALUES ({marks})', values)


def execute(db: Path, sql: str) -> list[tuple] | None:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return None


def explains(db: Path, sql: str) -> bool:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            conn.execute("EXPLAIN " + sql)
        return True
    except sqlite3.Error:
        return False


def run_sql(model: Any, tokenizer: Any, n: int, work: Path) -> dict[str, Any]:
    root = SHARED / "spider"
    dev = json.loads((root / "dev.json").read_text())
    step = max(1, len(dev) // n)
    items = dev[::step][:n]
    rows: dict[str, list[dict[str, Any]]] = {"grammar": [], "grammar+monitor": []}
    for i, item in enumerate(items):
        db = root / "databases" / item["db_id"] / f"{item['db_id']}.sqlite"
        filled = work / f"{item['db_id']}.sqlite"
        if not filled.exists():
            fill_database(db, filled, seed=0)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            ddl = "\n".join(
                r[0] + ";" for r in conn.execute("SELECT sql FROM sqlite_master WHERE type='table'")
            )
        prompt = f"-- SQLite schema:\n{ddl}\n-- Question: {item['question']}\nSELECT"
        gold = execute(filled, item["query"])
        for mode in rows:
            extra = {"database": db} if mode == "grammar+monitor" else {}
            gen = constrained_generate(
                model, tokenizer, prompt, grammar="sql_statement", prefix="SELECT", max_new_tokens=64, **extra
            )
            sql = "SELECT" + gen.text.rstrip().rstrip(";")
            ok = explains(db, sql)
            got = execute(filled, sql) if ok else None
            match = got is not None and gold is not None and sorted(map(repr, got)) == sorted(map(repr, gold))
            rows[mode].append(
                {
                    "question": item["question"],
                    "sql": sql,
                    "complete": gen.valid,
                    "explain": ok,
                    "execution_match": match,
                    "step_us": gen.stats.get("constraint_us_per_step_p50", 0.0),
                    "step_us_p99": gen.stats.get("constraint_us_per_step_p99", 0.0),
                    "seconds": gen.stats["seconds"],
                }
            )
        print(
            f"sql {i + 1}/{len(items)}: " + " | ".join(f"{m}: {r[-1]['explain']}" for m, r in rows.items()),
            file=sys.stderr,
            flush=True,
        )
    return {
        mode: summarize(r, ("complete", "explain", "execution_match")) | {"rows": r}
        for mode, r in rows.items()
    }


def summarize(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows)}
    for k in keys:
        out[k] = sum(bool(r[k]) for r in rows) / len(rows) if rows else 0.0
    steps = [r["step_us"] for r in rows]
    out["step_us_p50"] = percentile(steps, 0.5) if steps else 0.0
    out["step_us_p99"] = percentile([r["step_us_p99"] for r in rows], 0.99) if rows else 0.0
    out["seconds_mean"] = sum(r["seconds"] for r in rows) / len(rows) if rows else 0.0
    return out


def print_table(results: dict[str, Any]) -> None:
    print(
        "\n| task | mode | n | "
        + " | ".join(["rate 1", "rate 2", "rate 3"])
        + " | step µs p50 | step µs p99 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for task, keys in (
        ("python", ("valid", "exact", "resolvable")),
        ("sql", ("complete", "explain", "execution_match")),
    ):
        for mode, s in results.get(task, {}).items():
            rates = " | ".join(f"{k} {100 * s[k]:.0f}%" for k in keys)
            print(
                f"| {task} | {mode} | {s['n']} | {rates} | {s['step_us_p50']:.0f} | {s['step_us_p99']:.0f} |"
            )


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (task, keys) in zip(
        axes,
        (("python", ("valid", "exact", "resolvable")), ("sql", ("complete", "explain", "execution_match"))),
        strict=True,
    ):
        modes = list(results.get(task, {}))
        width = 0.8 / max(1, len(modes))
        for j, mode in enumerate(modes):
            ax.bar(
                [k + j * width for k in range(len(keys))],
                [100 * results[task][mode][k] for k in keys],
                width,
                label=mode,
            )
        ax.set_xticks([k + width * (len(modes) - 1) / 2 for k in range(len(keys))], keys)
        ax.set_ylabel("% of cases")
        ax.set_title(f"{task}: default model, greedy")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python-cases", type=int, default=40)
    ap.add_argument("--sql-cases", type=int, default=60)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "monitors-cpu.json"))
    args = ap.parse_args()
    model, tokenizer = load_model()
    start = time.time()
    results: dict[str, Any] = {}
    if args.python_cases:
        cases = python_cases(args.python_cases)
        results["python"] = run_python(model, tokenizer, cases)
    if args.sql_cases:
        if not (SHARED / "spider").exists():
            print(f"bench/monitors.py: {SHARED / 'spider'} not found; SQL part skipped", file=sys.stderr)
        else:
            with tempfile.TemporaryDirectory() as work:
                results["sql"] = run_sql(model, tokenizer, args.sql_cases, Path(work))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "seconds": time.time() - start,
        "model": "SmolLM2-135M-Instruct (default)",
        "command": " ".join(sys.argv),
    }
    out.write_text(json.dumps({"meta": meta, **results}, indent=1))
    print_table(results)
    plot(results, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
