"""``compile_regex``: a regular expression as a token-level constraint."""

from __future__ import annotations

import re
from typing import Any

from grammars.dfa import CompiledDFA, compile_dfa
from plugin.errors import RegexError
from plugin.vocabulary import Vocabulary


def as_vocabulary(tokenizer_or_vocab: Any) -> Vocabulary:
    """Accept either a Hugging Face tokenizer or an already built :class:`Vocabulary`."""
    if isinstance(tokenizer_or_vocab, Vocabulary):
        return tokenizer_or_vocab
    return Vocabulary.from_tokenizer(tokenizer_or_vocab)


def compile_regex(pattern: str, tokenizer: Any) -> CompiledDFA:
    """Compile ``pattern`` so the whole output must match it (implicitly anchored).

    Syntax errors are located with Python's ``re`` (which names the position) before
    the pattern reaches the Rust engine; patterns Python accepts but the engine cannot
    build (look-around, back-references) get a message saying so.
    """
    problem = regex_problem(pattern)
    if problem:
        raise RegexError(problem)
    return compile_dfa(pattern, as_vocabulary(tokenizer))


def regex_problem(pattern: Any) -> str | None:
    """Why ``pattern`` cannot be compiled to an automaton, or None if it can.

    Python's ``re`` locates syntax errors (the Rust engine's messages do not); features a
    finite automaton cannot express are named explicitly.
    """
    if not isinstance(pattern, str):
        return f"regex must be a string, got {type(pattern).__name__}"
    try:
        re.compile(pattern)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        return f"invalid regex {pattern!r}: {exc.msg}{where}"
    if _NON_REGULAR.search(pattern):
        return (
            f"regex {pattern!r} uses look-around or back-references, which a finite automaton cannot enforce"
        )
    return None


_NON_REGULAR = re.compile(r"\(\?<?[=!]|\\[1-9]|\(\?P=")
