"""The SQL monitor against real SQLite databases: one built here, and Spider's."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch

from monitors import MonitoredConstraint, SQLiteMonitor, build_monitors
from plugin.errors import OptionError
from tests.conftest import shared_path

SCHEMA = """
CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, concert_name TEXT, year INTEGER);
CREATE TABLE singer_in_concert (concert_id INTEGER, singer_id INTEGER);
"""


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("db") / "music.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.close()
    return path


@pytest.fixture(scope="module")
def monitor(database) -> SQLiteMonitor:
    return SQLiteMonitor(database)


def allowed(monitor: SQLiteMonitor, text: str):
    r = monitor.restriction(text.encode())
    return None if r is None else r


def test_tables_after_from_and_join(monitor):
    for text in ("SELECT name FROM ", "SELECT * FROM singer AS T1 JOIN ", "SELECT * FROM singer, "):
        r = allowed(monitor, text)
        assert r.complete_ok(b"singer", ord(" ")) and r.complete_ok(b"CONCERT", ord(" "))
        assert not r.complete_ok(b"singers", ord(" ")) and not r.prefix_ok(b"stadium")


def test_columns_of_an_alias(monitor):
    r = allowed(monitor, "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T2.")
    assert r.complete_ok(b"concert_name", ord(" ")) and not r.complete_ok(b"name", ord(" "))
    r = allowed(monitor, "SELECT s.name FROM singer s WHERE s.")
    assert r.complete_ok(b"age", ord(" ")) and not r.complete_ok(b"year", ord(" "))


def test_alias_bound_later_allows_any_column(monitor):
    r = allowed(monitor, "SELECT T1.")
    assert r.complete_ok(b"year", ord(",")) and r.complete_ok(b"name", ord(","))
    assert not r.complete_ok(b"salary", ord(","))


def test_statement_ends_only_once_forward_qualifiers_are_bound(monitor):
    """``SELECT T1.name FROM singer`` names a ``T1`` nothing binds: neither ``;`` nor
    the end of the output may come until an alias or table binds it."""
    assert not monitor.accepts_end(b"SELECT T1.name FROM singer")
    assert monitor.refused(b"SELECT T1.name FROM singer AS x\n-- done\n") == frozenset(b";")
    assert monitor.accepts_end(b"SELECT T1.name FROM singer AS T1")
    assert monitor.refused(b"SELECT T1.name FROM singer AS T1") == frozenset()
    assert monitor.accepts_end(b"SELECT name FROM singer WHERE age > 30")


def test_expressions_use_the_tables_in_scope(monitor):
    r = allowed(monitor, "SELECT name FROM singer WHERE ")
    assert r.complete_ok(b"age", ord(" ")) and r.complete_ok(b"count", ord("("))
    assert r.complete_ok(b"NOT", ord(" "))  # keywords stay for the grammar to judge
    assert not r.complete_ok(b"year", ord(" "))  # concert's column, not in scope
    assert r.complete_ok(b"singer", ord(".")) and not r.complete_ok(b"concert", ord("."))
    # a subquery sees its own FROM and the enclosing one
    r = allowed(monitor, "SELECT name FROM singer WHERE age > (SELECT avg(year) FROM concert WHERE ")
    assert r.complete_ok(b"year", ord(" ")) and r.complete_ok(b"age", ord(" "))
    # result aliases may be ordered by
    assert allowed(monitor, "SELECT count(*) AS n FROM singer ORDER BY ").complete_ok(b"n", ord(" "))


def test_no_restriction_in_strings_aliases_and_ddl(monitor):
    assert allowed(monitor, "SELECT name FROM singer WHERE name = 'abc ") is None
    assert allowed(monitor, "SELECT name FROM singer AS ") is None
    assert allowed(monitor, "SELECT name FROM singer ") is None
    assert allowed(monitor, "CREATE TABLE t (") is None
    assert allowed(monitor, 'SELECT "odd name') is None


def test_connection_and_bad_databases(database, tmp_path):
    with sqlite3.connect(database) as conn:
        assert "singer" in SQLiteMonitor(conn).schema.tables
    with pytest.raises(OptionError, match="does not exist"):
        SQLiteMonitor(tmp_path / "missing.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_text("this is not a database, just text " * 100)
    with pytest.raises(OptionError, match="not a readable SQLite database"):
        SQLiteMonitor(junk)
    with pytest.raises(OptionError, match="needs database"):
        build_monitors("sql")


def _token(vocab, text: bytes) -> int:
    return next(i for i, b in enumerate(vocab.token_bytes) if b == text)


def test_budget_restriction_never_empties_a_monitored_mask(database, default_tokenizer, default_vocab):
    """At the last token of a budget the grammar would keep only the end, but the monitor
    refuses the end while ``T1`` is unbound: the restriction must then leave the mask as
    it is (an empty mask has no token to choose)."""
    from grammars import compile as compile_grammar

    grammar = compile_grammar("sql", default_tokenizer)
    constraint = MonitoredConstraint(grammar, [SQLiteMonitor(database)], default_vocab)
    matcher = constraint.matcher_after("SELECT T1.name FROM singer")
    assert grammar.matcher_after("SELECT T1.name FROM singer").is_accepting()
    assert not matcher.is_accepting()
    mask = torch.zeros(default_vocab.size, dtype=torch.bool)
    matcher.fill_mask(mask)
    before = mask.clone()
    assert not matcher.restrict_to_budget(mask, 1)
    assert torch.equal(mask, before) and mask.any()


def test_matcher_with_the_sql_grammar(database, default_tokenizer, default_vocab):
    from grammars import compile as compile_grammar

    grammar = compile_grammar("sql_statement", default_tokenizer)
    constraint = MonitoredConstraint(grammar, [SQLiteMonitor(database)], default_vocab)
    matcher = constraint.matcher_after("SELECT name FROM")
    assert matcher.accepts(_token(default_vocab, b" singer"))
    assert not matcher.accepts(_token(default_vocab, b" users"))
    mask = torch.zeros(default_vocab.size, dtype=torch.bool)
    matcher.fill_mask(mask)
    wrong = [t for t in range(default_vocab.size) if bool(mask[t]) != matcher.accepts(t)]
    assert wrong == []
    plain = torch.zeros(default_vocab.size, dtype=torch.bool)
    grammar.matcher_after("SELECT name FROM").fill_mask(plain)
    assert bool((mask <= plain).all()) and int(mask.sum()) < int(plain.sum())
    assert not bool(mask[_token(default_vocab, b" users")]) and bool(plain[_token(default_vocab, b" users")])


def _spider():
    root = shared_path("spider")
    dev = json.loads((root / "dev.json").read_text())
    return root, dev


@pytest.mark.shared_data
def test_spider_gold_queries_are_never_refused(default_tokenizer, default_vocab):
    """Soundness: every Spider dev gold query (written by others), token by token, is
    accepted by ``sql grammar ∧ monitor`` on its real database."""
    from grammars import compile as compile_grammar

    root, dev = _spider()
    grammar = compile_grammar("sql", default_tokenizer)
    monitors: dict[str, SQLiteMonitor] = {}
    restricted = 0
    for item in dev:
        db = item["db_id"]
        if db not in monitors:
            monitors[db] = SQLiteMonitor(root / "databases" / db / f"{db}.sqlite")
        matcher = MonitoredConstraint(grammar, [monitors[db]], default_vocab).matcher()
        for tok in default_tokenizer(item["query"], add_special_tokens=False).input_ids:
            assert matcher.accepts(tok), (item["query"], matcher.text(), default_vocab.token_bytes[tok])
            matcher.advance(tok)
        assert matcher.is_accepting()
    restricted = sum(m.stats.restricted for m in monitors.values())
    assert restricted > 3 * len(dev)


@pytest.mark.shared_data
def test_spider_alias_columns(default_vocab):
    root, _ = _spider()
    monitor = SQLiteMonitor(root / "databases" / "concert_singer" / "concert_singer.sqlite")
    r = monitor.restriction(b"SELECT T2.name FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.")
    assert r.complete_ok(b"concert_id", ord(" ")) and not r.complete_ok(b"name", ord(" "))


@pytest.mark.default_model
def test_generated_sql_names_are_real(database, default_model):
    """Every name the model writes is the schema's (or an alias it binds); a complete
    statement passes EXPLAIN on the real database."""
    import re

    from monitors.sql import SQLITE_KEYWORDS
    from plugin import constrained_generate

    model, tokenizer = default_model
    prompt = (
        f"-- SQLite schema:\n{SCHEMA}\n-- Question: which countries are singers from?\n"
        "SELECT country FROM singer;\n-- Question: list the names of singers older than 30.\nSELECT"
    )
    monitor = SQLiteMonitor(database)
    gen = constrained_generate(
        model,
        tokenizer,
        prompt,
        grammar="sql_statement",
        monitors=monitor,
        max_new_tokens=48,
        prefix="SELECT",
    )
    schema = monitor.schema
    known = set(schema.tables) | set(schema.all_columns) | set(schema.functions) | SQLITE_KEYWORDS
    text = gen.text.lower()
    bound = set(re.findall(r"\bas\s+(\w+)", text)) | set(re.findall(r"(\w+)\.", text))
    code = re.sub(r"--[^\n]*|'[^']*'", "", text)  # comments and strings hold free text
    words = set(re.findall(r"[a-z_][a-z0-9_]*", code))
    assert words <= known | bound, words - known - bound
    assert gen.stats["monitors"]["sql"]["restricted"] >= 1
    if gen.valid:
        with sqlite3.connect(database) as conn:
            conn.execute("EXPLAIN SELECT" + gen.text.rstrip().rstrip(";"))  # raises on unknown names
