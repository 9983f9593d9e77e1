"""``grammars.compile``: a Lark grammar (built-in name, text or path) to a CompiledGrammar.

Lark parses the grammar and builds its LALR(1) tables; we build the byte-level lexer
DFA from its terminals and convert the tables (:mod:`grammars.lalr`). The result is
cached in memory per (grammar text, start, vocabulary) and on disk per (grammar text,
start), the vocabulary-independent part, so a cached compile costs milliseconds.
Lark's errors become :class:`GrammarError` with the line and rule, the Lark message kept.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lark
from lark.exceptions import GrammarError as LarkGrammarError
from lark.exceptions import LarkError, UnexpectedInput

from grammars.byte_nfa import UnsupportedPattern
from grammars.cfg import CompiledGrammar
from grammars.lalr import ParseTables, tables_from_lark
from grammars.lexer_dfa import LexerDFA, TerminalSpec, build_lexer_dfa
from grammars.native import trie_of
from grammars.python_indent import NEWLINE, PythonSyntax, newline_terminals, parses_as_python
from grammars.syntax import IGNORED, UNUSED, Syntax
from grammars.token_tables import TokenBytes
from plugin.errors import GrammarError
from plugin.paths import cache_dir
from plugin.vocabulary import Vocabulary

GRAMMAR_DIR = Path(__file__).parent
_FORMAT = "cfg-v2"


@dataclass(frozen=True)
class BuiltinGrammar:
    file: str
    start: str
    python_indentation: bool = False


BUILTINS = {
    "json": BuiltinGrammar("json.lark", "start"),
    "sql": BuiltinGrammar("sql.lark", "start"),
    "sql_statement": BuiltinGrammar("sql.lark", "one_statement"),
    "python": BuiltinGrammar("python.lark", "file_input", python_indentation=True),
    "python_function": BuiltinGrammar("python.lark", "function_input", python_indentation=True),
}


@dataclass
class _Tables:
    """The vocabulary-independent part of a compiled grammar (what goes to disk)."""

    lexer: LexerDFA
    parse: ParseTables
    parser_term: list[int]
    columns: dict[int, int]
    whitespace: set[int]


_MEMORY: dict[tuple[str, str, str], CompiledGrammar] = {}


def resolve(grammar: str | Path) -> tuple[str, str, str, bool]:
    """(name, text, start, python_indentation) for a built-in name, a path or Lark text."""
    if isinstance(grammar, Path) or (
        isinstance(grammar, str) and grammar.endswith(".lark") and "\n" not in grammar
    ):
        path = Path(grammar)
        if not path.is_file():
            raise GrammarError(f"grammar file not found: {path}")
        return path.name, path.read_text(encoding="utf-8"), "start", False
    if not isinstance(grammar, str):
        raise GrammarError(
            f"a grammar must be a built-in name, Lark text or a path, not {type(grammar).__name__}"
        )
    builtin = BUILTINS.get(grammar)
    if builtin is not None:
        text = (GRAMMAR_DIR / builtin.file).read_text(encoding="utf-8")
        return grammar, text, builtin.start, builtin.python_indentation
    if re.fullmatch(r"\w+", grammar):
        raise GrammarError(
            f"unknown built-in grammar {grammar!r}; built-ins are {', '.join(sorted(BUILTINS))}"
        )
    return "<grammar>", grammar, "start", False


def compile_grammar(grammar: str | Path, tokenizer: Any, *, start: str | None = None) -> CompiledGrammar:
    """Compile ``grammar`` for ``tokenizer`` (see module docstring)."""
    vocab = tokenizer if isinstance(tokenizer, Vocabulary) else Vocabulary.from_tokenizer(tokenizer)
    name, text, default_start, python = resolve(grammar)
    start = start or default_start
    key = (text, start, vocab.fingerprint)
    hit = _MEMORY.get(key)
    if hit is not None:
        return hit
    tables, digest = _load_or_build(name, text, start, python)
    if python:
        syntax: Syntax = PythonSyntax(
            tables.parse, tables.lexer, tables.parser_term, tables.columns, tables.whitespace
        )
    else:
        syntax = Syntax(tables.parse, tables.lexer, tables.parser_term)
    tokens = TokenBytes.of(vocab)
    # set-up that the first mask or step would otherwise pay belongs to compiling:
    trie_of(tokens)  # the vocabulary's token trie (once per process)
    vocab.text_tokens()  # what forced bytes are spelled with (once per process)
    _ = tables.lexer.rows, tables.lexer.best_list  # the lexer as lists, for walks from Python
    compiled = CompiledGrammar(
        name,
        tables.lexer,
        syntax,
        vocab,
        tokens,
        final_check=parses_as_python if python else None,
        table_dir=cache_dir() / "grammars" / f"{digest}-tables3-{vocab.fingerprint[:16]}",
    )
    _MEMORY[key] = compiled
    return compiled


def _load_or_build(name: str, text: str, start: str, python: bool) -> tuple[_Tables, str]:
    digest = hashlib.sha256(f"{_FORMAT}\0{start}\0{python}\0{text}".encode()).hexdigest()[:32]
    path = cache_dir() / "grammars" / f"{digest}.pkl"
    if path.is_file():
        try:
            with path.open("rb") as fh:
                return pickle.load(fh), digest
        except Exception:
            path.unlink(missing_ok=True)
    tables = build_tables(name, text, start, python)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        pickle.dump(tables, fh, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return tables, digest


def _line_of(text: str, name: str) -> int | None:
    """The line defining ``name`` in the grammar text, else the first line using it."""
    lines = text.splitlines()
    for i, line in enumerate(lines, 1):
        if re.match(rf"\s*[?!]?{re.escape(name)}\s*(?:\.-?\d+)?\s*:", line):
            return i
    for i, line in enumerate(lines, 1):
        if re.search(rf"\b{re.escape(name)}\b", line.split("//")[0]):
            return i
    return None


def _lark_error(name: str, text: str, exc: Exception) -> GrammarError:
    message = str(exc).strip()
    found = re.findall(r"'([A-Za-z_]\w*)'|<(\w+) :", message)
    rule = next((a or b for a, b in found if (a or b) not in ("RULE", "TERMINAL")), None)
    line = getattr(exc, "line", None)
    in_message = re.search(r"\bline (\d+)", message)
    if not (isinstance(line, int) and line > 0) and in_message:
        line = int(in_message.group(1))
    if not (isinstance(line, int) and line > 0) and rule is not None:
        line = _line_of(text, rule)
    where = f" (line {line})" if isinstance(line, int) and line > 0 else ""
    what = f", rule {rule}" if rule else ""
    return GrammarError(f"grammar {name}{where}{what}: {message}")


class _KeepRejectTerminals:
    """A Lark post-lexer that only asks Lark to keep the ``_REJECT*`` terminals.

    A terminal named ``_REJECT...`` is used by no rule: it exists so that a lexeme
    matching it (say ``1if``: a number run into a name) is one bad lexeme the parser
    refuses, instead of being split into two acceptable ones.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        self.always_accept = names

    def process(self, stream: Any) -> Any:
        return stream


def build_tables(name: str, text: str, start: str, python: bool) -> _Tables:
    """Run Lark on ``text`` and build the lexer DFA and integer parse tables."""
    reject = tuple(sorted(set(re.findall(r"^\s*(_REJECT\w*)\s*(?:\.-?\d+)?\s*:", text, re.M))))
    try:
        parser = lark.Lark(
            text,
            parser="lalr",
            lexer="contextual",
            start=start,
            postlex=_KeepRejectTerminals(reject) if reject else None,
        )
    except (LarkGrammarError, UnexpectedInput, LarkError) as exc:
        raise _lark_error(name, text, exc) from None
    ignore = set(parser.ignore_tokens)
    specs: list[TerminalSpec] = []
    columns: dict[int, int] = {}
    for term in parser.terminals:
        pattern = term.pattern
        spec = TerminalSpec(
            name=term.name,
            regex=pattern.to_regexp(),  # inline flags such as (?i:...) included
            ignore_case=False,
            priority=term.priority,
            is_literal=pattern.type == "str",
            max_width=min(pattern.max_width, 1 << 30),
        )
        if python and term.name == NEWLINE:
            for nl_spec, column in newline_terminals(spec):
                columns[len(specs)] = column
                specs.append(nl_spec)
            continue
        specs.append(spec)
    try:
        lexer = build_lexer_dfa(specs)
    except UnsupportedPattern as exc:
        term = str(exc).split(":")[0].removeprefix("terminal ").strip()
        line = _line_of(text, term)
        where = f" (line {line})" if line else ""
        raise GrammarError(f"grammar {name}{where}: {exc}") from None
    parse = tables_from_lark(parser, start)
    parser_term: list[int] = []
    for spec in specs:
        if spec.name in ignore:
            parser_term.append(IGNORED)
        elif spec.name in parse.terminal_ids:
            parser_term.append(parse.terminal_ids[spec.name])
        else:
            parser_term.append(UNUSED)
    whitespace = {i for i, s in enumerate(specs) if s.name in ignore and re.fullmatch(s.regex, " ")}
    if python:
        for tid in columns:
            parser_term[tid] = parse.terminal_ids.get(NEWLINE, UNUSED)
        missing = [t for t in ("_NEWLINE", "_INDENT", "_DEDENT") if t not in parse.terminal_ids]
        if missing:
            raise GrammarError(f"grammar {name}: Python indentation needs terminals {', '.join(missing)}")
    return _Tables(lexer, parse, parser_term, columns, whitespace)
