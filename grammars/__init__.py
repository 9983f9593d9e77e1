"""Constraints compiled against a vocabulary: regex, JSON Schema and Lark grammars.

Every compiled constraint offers ``.matcher()`` returning a :class:`plugin.matcher.Matcher`.
"""

from __future__ import annotations

from typing import Any

from grammars.json_schema import compile_json_schema
from grammars.lark_compile import BUILTINS, compile_grammar
from grammars.regex import compile_regex


def compile(grammar: Any, tokenizer: Any, *, start: str | None = None) -> Any:
    """Compile a Lark grammar: a built-in name (``"json"``, ``"sql"``, ``"python"``), Lark
    text, or a path to a ``.lark`` file. See :mod:`grammars.lark_compile`."""
    return compile_grammar(grammar, tokenizer, start=start)


__all__ = ["BUILTINS", "compile", "compile_grammar", "compile_json_schema", "compile_regex"]
