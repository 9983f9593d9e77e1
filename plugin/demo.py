"""``stencil demo``: constrained generations on the default model, each checked by the
real parser (``jsonschema``, SQLite ``EXPLAIN``, ``ast.parse``), with speed figures.

* JSON Schema: a user record;
* SQL with the built-in SQLite grammar (``grammar="sql_statement"``: one statement):
  any syntactically valid statement; SQLite parses it (names are not checked against the schema by a grammar:
  the SQL monitor does that);
* SQL by a regex built from the real schema: only real tables and columns;
* Python with the ``python_function`` grammar from a chat prompt, and the ``python``
  grammar in completion mode after a ``def`` line; both end with the function
  (``stop="function"``, :mod:`plugin.stopping`), where the model would go on to write
  example calls and comment lines until the token budget ends.
"""

from __future__ import annotations

import ast
import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from plugin.api import Generation, constrained_generate

USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "email": {"type": "string", "format": "email"},
        "languages": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "email", "languages", "active"],
    "additionalProperties": False,
}

DEMO_TABLES = {
    "singer": ["singer_id", "name", "country", "age"],
    "concert": ["concert_id", "concert_name", "year", "singer_id"],
}


def demo_database() -> sqlite3.Connection:
    """An in-memory SQLite database with the demo tables."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER)")
    db.execute(
        "CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, concert_name TEXT, year INTEGER, "
        "singer_id INTEGER REFERENCES singer(singer_id))"
    )
    return db


def select_regex(tables: dict[str, list[str]]) -> str:
    """A regex of single-table SELECTs that only name real tables and their columns."""
    alternatives = []
    for table, columns in tables.items():
        col = "(" + "|".join(columns) + ")"
        select_list = rf"(\*|COUNT\(\*\)|(COUNT|MAX|MIN|AVG|SUM)\({col}\)|{col}(, {col}){{0,3}})"
        value = r"(-?(0|[1-9][0-9]{0,5})|'[A-Za-z ]{0,20}')"
        where = rf"( WHERE {col} (=|<|>|<=|>=|!=) {value}( (AND|OR) {col} (=|<|>|<=|>=|!=) {value})?)?"
        order = rf"( ORDER BY {col}( ASC| DESC)?)?"
        limit = r"( LIMIT [1-9][0-9]{0,2})?"
        alternatives.append(f"SELECT {select_list} FROM {table}{where}{order}{limit}")
    return "(" + "|".join(alternatives) + ");"


def function_regex(name: str, params: list[str]) -> str:
    """A regex of ``def name(params):`` returning an arithmetic expression over the params."""
    atom = "(" + "|".join(params) + r"|0|[1-9][0-9]{0,4}(\.[0-9]{1,3})?)"
    op = r" (\+|-|\*|/|//|%|\*\*) "
    inner = f"{atom}({op}{atom}){{0,4}}"
    term = rf"({atom}|\({inner}\))"
    expr = f"{term}({op}{term}){{0,4}}"
    return rf"def {name}\({', '.join(params)}\):\n    return {expr}\n"


def _check_json(text: str) -> tuple[bool, str]:
    import jsonschema

    try:
        checker = jsonschema.Draft202012Validator.FORMAT_CHECKER  # the draft's own formats
        jsonschema.Draft202012Validator(USER_SCHEMA, format_checker=checker).validate(json.loads(text))
        return True, "json.loads + jsonschema"
    except (ValueError, jsonschema.ValidationError) as exc:
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


def _check_sql(text: str) -> tuple[bool, str]:
    try:
        demo_database().execute("EXPLAIN " + text)
        return True, "sqlite3 EXPLAIN on the demo database"
    except sqlite3.Error as exc:
        return False, f"sqlite3: {exc}"


def _check_sql_syntax(text: str) -> tuple[bool, str]:
    """SQLite's parser on the demo database; an unknown name is not a syntax error."""
    try:
        demo_database().execute("EXPLAIN " + text)
        return True, "sqlite3 EXPLAIN on the demo database"
    except sqlite3.Error as exc:
        if str(exc).startswith(("no such table", "no such column", "no such function")):
            return True, f"sqlite3 EXPLAIN: syntax valid ({exc}; names are the monitor's job)"
        return False, f"sqlite3: {exc}"


def _check_python(text: str) -> tuple[bool, str]:
    try:
        ast.parse(text)
        return True, "ast.parse"
    except SyntaxError as exc:
        return False, f"SyntaxError: {exc.msg}"


def _report(
    title: str, gen: Generation, check: Callable[[str], tuple[bool, str]], baseline_tps: float
) -> bool:
    ok, how = check(gen.text)
    if gen.finish_reason != "stop":
        ok, how = False, f"stopped by {gen.finish_reason} before the constraint accepted"
    s = gen.stats
    per_token_us = s["constraint_seconds"] / max(1, s["tokens"]) * 1e6
    share = 100 * s["constraint_seconds"] / s["seconds"] if s["seconds"] else 0.0
    print(f"\n=== {title} ===")
    print(gen.text)
    print(f"--- valid: {ok} ({how}); finish: {gen.finish_reason}; constraint accepts: {gen.valid}")
    print(
        f"--- {s['tokens']} tokens in {s['seconds']:.2f} s = {s['tokens_per_second']:.1f} tok/s "
        f"(unconstrained: {baseline_tps:.1f} tok/s); constraint overhead {per_token_us:.0f} µs/token "
        f"({share:.1f}% of the time); {s['forced_tokens']} tokens forced by the constraint"
    )
    return ok


def run_demo(
    model_name: str | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
    max_new_tokens: int = 96,
) -> int:
    """Run the demos; exit code 0 when every output is valid."""
    from plugin.gc_pause import freeze_loaded_heap
    from plugin.models import load_model

    t0 = time.perf_counter()
    model, tok = load_model(model_name, device=device, dtype=dtype)
    freeze_loaded_heap()
    name = model_name or "SmolLM2-135M-Instruct (default)"
    print(f"loaded {name} on {model.device} in {time.perf_counter() - t0:.1f} s")
    base = constrained_generate(model, tok, "Write a haiku about parsers.", chat=True, max_new_tokens=32)
    baseline_tps = base.stats["tokens_per_second"]

    results = []
    gen = constrained_generate(
        model,
        tok,
        "Give one example user record as JSON matching this schema: " + json.dumps(USER_SCHEMA),
        json_schema=USER_SCHEMA,
        chat=True,
        max_new_tokens=max_new_tokens,
    )
    results.append(_report("JSON Schema (user record)", gen, _check_json, baseline_tps))

    tables = "; ".join(f"{t}({', '.join(c)})" for t, c in DEMO_TABLES.items())
    gen = constrained_generate(
        model,
        tok,
        f"Tables: {tables}. Write one SQLite query listing the names of singers from France.",
        grammar="sql_statement",
        chat=True,
        max_new_tokens=max_new_tokens,
    )
    results.append(_report("SQL (built-in SQLite grammar)", gen, _check_sql_syntax, baseline_tps))

    gen = constrained_generate(
        model,
        tok,
        f"Tables: {tables}. Write one SQLite query: how many singers are older than 30?",
        regex=select_regex(DEMO_TABLES),
        chat=True,
        max_new_tokens=max_new_tokens,
    )
    results.append(_report("SQL (SELECT over the real schema)", gen, _check_sql, baseline_tps))

    gen = constrained_generate(
        model,
        tok,
        "Write a Python function area(width, height) that returns the area of a rectangle.",
        grammar="python_function",
        chat=True,
        max_new_tokens=max_new_tokens,
    )
    results.append(_report("Python function (python_function grammar)", gen, _check_python, baseline_tps))

    head = "def area(width, height):\n    "
    gen = constrained_generate(
        model, tok, head, grammar="python", prefix=head, stop="function", max_new_tokens=max_new_tokens
    )
    results.append(
        _report(f"Python completion after {head!r}", gen, lambda t: _check_python(head + t), baseline_tps)
    )
    print(f"\n{sum(results)}/{len(results)} outputs valid under the real parsers")
    return 0 if all(results) else 1
