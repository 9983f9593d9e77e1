"""Constraints compiled against a vocabulary: regex, JSON Schema, (soon) Lark grammars.

Every compiled constraint offers ``.matcher()`` returning a :class:`plugin.matcher.Matcher`.
"""

from __future__ import annotations

from typing import Any

from grammars.json_schema import compile_json_schema
from grammars.regex import compile_regex
from plugin.errors import GrammarError


def compile(grammar: Any, tokenizer: Any) -> Any:
    """Compile a Lark grammar (built-in name, Lark text or path).

    The Lark engine is the subject of its own issue and is not built yet: this raises a
    clear :class:`GrammarError` instead of pretending to constrain.
    """
    raise GrammarError(
        "Lark grammars are not supported yet (the grammar engine is not built); use json_schema= or regex="
    )


__all__ = ["compile", "compile_json_schema", "compile_regex"]
