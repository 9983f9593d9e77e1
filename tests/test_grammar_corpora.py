"""The built-in grammars against real corpora and real parsers.

* No false rejects: every valid text is accepted token by token and ends accepting:
  MaskBench's valid instances (JSON), Spider's gold queries (SQL), CPython's standard
  library (Python), for the default tokenizer and the four shared ones.
* No false accepts: thousands of random walks through the masks (each step a uniformly
  random allowed token: a random "model" that explores far more of the grammar than a
  trained one) end only in texts that ``json.loads``, SQLite's parser, ``ast.parse`` and
  Lark's own Earley parser accept.
"""

from __future__ import annotations

import ast
import glob
import json
import random
import sqlite3
import sysconfig
from pathlib import Path

import lark
import pytest
import torch
from transformers import AutoTokenizer

from grammars import compile as compile_grammar
from grammars.lark_compile import GRAMMAR_DIR
from plugin.errors import PromptError
from tests.conftest import SHARED_TOKENIZERS, shared_path

STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Files of the standard library the Python grammar does not cover, and why.
PYTHON_NOT_COVERED = {
    "dataclasses.py": "uses a match statement (not in the grammar)",
    "traceback.py": "uses a match statement (not in the grammar)",
}


def _tokenizers(default_tokenizer):
    yield "default", default_tokenizer
    for name in SHARED_TOKENIZERS:
        yield name, AutoTokenizer.from_pretrained(str(shared_path("tokenizers", name)))


def _accepts_text(grammar, tokenizer, text: str) -> bool | None:
    """True/False: accepted token by token; None: the tokenizer cannot spell ``text``."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if grammar.vocab.decode(ids) != text.encode():
        return None
    m = grammar.matcher()
    for t in ids:
        if not m.accepts(t):
            return False
        m.advance(t)  # walks the token again; cheap next to the test's other costs
    return m.is_accepting()


def _check_corpus(default_tokenizer, grammar_name: str, texts: list[str], limit_shared: int) -> None:
    failures: list[str] = []
    for tok_name, tokenizer in _tokenizers(default_tokenizer):
        g = compile_grammar(grammar_name, tokenizer)
        corpus = texts if tok_name == "default" else texts[:limit_shared]
        spelled = 0
        for text in corpus:
            verdict = _accepts_text(g, tokenizer, text)
            if verdict is None:
                continue
            spelled += 1
            if not verdict:
                failures.append(f"{tok_name}: {text[:120]!r}")
        print(f"{grammar_name} / {tok_name}: {spelled} texts accepted token by token")
    assert not failures, f"{len(failures)} false rejects, e.g. {failures[:5]}"


def test_json_accepts_every_valid_maskbench_instance(default_tokenizer):
    files = sorted(shared_path("maskbench").glob("*.json"))
    texts = []
    for f in files:
        for case in json.loads(f.read_text())["tests"]:
            if case["valid"]:
                texts.append(json.dumps(case["data"]))
    assert len(texts) > 3000
    _check_corpus(default_tokenizer, "json", texts, limit_shared=len(texts))


def test_sql_accepts_every_spider_gold_query(default_tokenizer):
    queries = [d["query"] for d in json.loads(shared_path("spider", "dev.json").read_text())]
    _check_corpus(default_tokenizer, "sql", queries, limit_shared=len(queries))


def _stdlib_sources() -> list[tuple[str, str]]:
    out = []
    for path in sorted(glob.glob(str(STDLIB / "*.py"))):
        source = Path(path).read_text(encoding="utf-8")
        try:
            ast.parse(source)
        except SyntaxError:
            continue
        out.append((Path(path).name, source))
    return out


def test_python_accepts_the_standard_library(default_tokenizer):
    """Every top-level stdlib module byte by byte; the 30 smallest token by token per tokenizer."""
    sources = _stdlib_sources()
    assert len(sources) > 150
    g = compile_grammar("python", default_tokenizer)
    rejected = []
    for name, src in sources:
        if name in PYTHON_NOT_COVERED:  # the list stays honest: these really fail
            with pytest.raises(PromptError):
                g.matcher_after(src)
            continue
        try:
            if not g.matcher_after(src).is_accepting():
                rejected.append(name)
        except PromptError as exc:
            rejected.append(f"{name}: {exc}")
    assert not rejected, rejected
    print(f"python: {len(sources) - len(PYTHON_NOT_COVERED)} stdlib modules accepted byte by byte")
    covered = sorted((src for name, src in sources if name not in PYTHON_NOT_COVERED), key=len)[:30]
    _check_corpus(default_tokenizer, "python", covered, limit_shared=30)


# --- no false accepts -------------------------------------------------------------------


def _random_walks(grammar, n: int, max_tokens: int, seed: int) -> list[str]:
    """Texts that random walks through the masks end (with EOS) within ``max_tokens``."""
    rng = random.Random(seed)
    vocab = grammar.vocab
    eos = next(iter(vocab.eos_ids))
    # Favour short tokens so walks reach acceptance: weight 1/len(bytes)^2.
    weight = torch.tensor([1.0 / max(1, len(b)) ** 2 for b in vocab.token_bytes])
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        m = grammar.matcher()
        for _step in range(max_tokens):
            mask = torch.zeros(vocab.size, dtype=torch.bool)
            m.fill_mask(mask)
            if mask[eos] and rng.random() < 0.35:
                m.advance(eos)
                break
            mask[list(vocab.eos_ids)] = False
            if not mask.any():
                break
            t = int(torch.multinomial(weight * mask, 1, generator=gen))
            m.advance(t)
        if m.is_finished():
            out.append(m.text().decode("utf-8"))
    return out


def _earley(name: str, start: str = "start") -> lark.Lark:
    return lark.Lark(
        (GRAMMAR_DIR / f"{name}.lark").read_text(), parser="earley", lexer="dynamic", start=start
    )


def test_random_json_walks_parse(default_tokenizer):
    g = compile_grammar("json", default_tokenizer)
    earley = _earley("json")
    texts = _random_walks(g, 600, 40, seed=1)
    assert len(texts) > 300
    for text in texts:
        json.loads(text)
        earley.parse(text)


_SYNTAX_ERRORS = ("syntax error", "incomplete input", "unrecognized token")


def _sqlite_statements_ok(sql: str) -> bool:
    """Every statement passes SQLite's parser (``EXPLAIN``; unknown tables are fine).

    Statements are split where SQLite's own ``complete_statement`` says one ends.
    """
    statements, buf = [], ""
    pieces = sql.split(";")
    for i, piece in enumerate(pieces):
        buf += piece + (";" if i < len(pieces) - 1 else "\n;")  # a newline ends a trailing -- comment
        if sqlite3.complete_statement(buf):
            statements.append(buf)
            buf = ""
    if buf.strip(" \t\r\n\f;"):
        statements.append(buf)
    con = sqlite3.connect(":memory:")
    try:
        for stmt in statements:
            if not sqlite3.complete_statement(stmt):
                return False
            try:
                con.execute("EXPLAIN " + stmt)
            except sqlite3.Error as exc:
                if any(e in str(exc) for e in _SYNTAX_ERRORS):
                    return False
        return True
    finally:
        con.close()


def test_random_sql_walks_pass_sqlites_parser(default_tokenizer):
    g = compile_grammar("sql", default_tokenizer)
    earley = _earley("sql")
    texts = _random_walks(g, 300, 60, seed=2)
    assert len(texts) > 50
    for text in texts:
        earley.parse(text)
        assert _sqlite_statements_ok(text), text


def test_random_python_walks_parse(default_tokenizer):
    g = compile_grammar("python", default_tokenizer)
    texts = _random_walks(g, 300, 40, seed=3)
    assert len(texts) > 100
    for text in texts:
        ast.parse(text)


def test_python_grammar_alone_before_the_final_check(default_tokenizer):
    """How often the LALR grammar alone over-accepts (the final ast.parse gate covers it)."""
    g = compile_grammar("python", default_tokenizer)
    g_free = type(g)(g.name, g.lexer, g.syntax, g.vocab, g.tokens, final_check=None)
    texts = _random_walks(g_free, 300, 40, seed=4)
    bad = []
    for text in texts:
        try:
            ast.parse(text)
        except SyntaxError:
            bad.append(text)
    print(f"python: {len(bad)} of {len(texts)} grammar-only outputs fail ast.parse, e.g. {bad[:3]!r}")
    assert len(texts) > 100
