"""The one error hierarchy of Stencil.

Every failure a user can cause (bad model path, bad regex, bad schema, an over-long
prompt) is a :class:`StencilError` subclass whose message names what is wrong and
where, so the CLI can print one line and exit 2 instead of a deep traceback.
"""

from __future__ import annotations


class StencilError(Exception):
    """Base class of every error Stencil raises on purpose."""


class ModelLoadError(StencilError):
    """A model or tokenizer could not be found or loaded."""


class VocabularyError(StencilError):
    """A tokenizer has no vocabulary we can map to exact bytes."""


class RegexError(StencilError):
    """A regular expression is invalid or uses a feature the engine lacks."""


class SchemaError(StencilError):
    """A JSON Schema is invalid (not a schema, bad ``$ref``, unsatisfiable).

    ``pointer`` is the JSON pointer of the offending subschema ("" for the root).
    """

    def __init__(self, message: str, pointer: str = "") -> None:
        self.pointer = pointer
        where = pointer or "/"
        super().__init__(f"{message} (at schema path {where!r})")


class UnsupportedSchemaError(SchemaError):
    """A schema keyword we cannot enforce, raised instead of silently ignoring it."""

    def __init__(self, keyword: str, pointer: str, reason: str = "") -> None:
        self.keyword = keyword
        detail = f": {reason}" if reason else ""
        super().__init__(f"unsupported JSON Schema keyword {keyword!r}{detail}", pointer)


class GrammarError(StencilError):
    """A grammar could not be compiled (syntax error, undefined rule, conflict)."""


class PromptError(StencilError):
    """A prompt is empty or does not fit the model's context window."""


def prefix_error(constraint: str, data: bytes, offset: int) -> PromptError:
    """The ``PromptError`` for a completion-mode prefix that ``constraint`` cannot read
    past byte ``offset``: where (line, column) and the text just before."""
    line = data[:offset].count(b"\n") + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    before = data[:offset].decode("utf-8", errors="replace")
    tail = before if len(before) <= 60 else "..." + before[-60:]
    return PromptError(
        f"{constraint} cannot continue the prefix: it fails at line {line}, column {column}, after {tail!r}"
    )


class ConstraintViolation(StencilError):
    """A token was advanced that the constraint does not allow.

    Raised by ``Matcher.advance``; it signals a caller bug (the sampler must only pick
    allowed tokens), never a user error.
    """


class OptionError(StencilError):
    """An argument is out of range, unknown, or conflicts with another."""


class CompileTimeout(StencilError):
    """Compiling a constraint ran past its budget (a huge or pathological schema).

    Raised instead of hanging: the message names what was being built."""

    def __init__(self, what: str, budget_s: float | None = None) -> None:
        self.budget_s = budget_s
        limit = f" within {budget_s:g} s" if budget_s is not None else ""
        super().__init__(f"compile budget exceeded{limit}: {what}")
