"""``compile_json_schema``: JSON Schema → guaranteed-valid JSON.

Route: the schema is loaded (dict, JSON text, pydantic model), checked against its
dialect's meta-schema, then compiled by :mod:`grammars.json_automaton` into a byte
automaton that is built lazily as decoding reaches it (:mod:`grammars.lazy_dfa`), with
token masks computed per state on first visit. Before the first mask, an *audit* builds
every reachable subschema once: a keyword this route cannot enforce raises
:class:`UnsupportedSchemaError` naming it and its JSON pointer (``strict=True``), or is
dropped with a warning naming it (``strict=False``); never silently ignored.
Compilation runs under a time budget and raises :class:`CompileTimeout` past it.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema

from grammars.json_automaton import SchemaAutomaton
from grammars.json_schema_merge import Normaliser, escape
from grammars.lazy_dfa import CompiledLazyDFA, LazyDFA
from grammars.regex import as_vocabulary, regex_problem
from plugin.errors import CompileTimeout, OptionError, SchemaError, UnsupportedSchemaError

WHITESPACE = {"flexible": r"[ \t\n\r]*", "compact": ""}
DEFAULT_BUDGET_S = 5.0

# Every supported format becomes our own pattern. RFC 3339 as JSON Schema's format
# checkers read it: a date-time needs its offset (the regex builder's pattern lacks it).
# Day ranges follow the month (29 February is left out: the route may under-accept);
# years start at 0001 (Python's date refuses 0000).
_DATE = (
    r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_HEX = "[0-9a-fA-F]"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_FORMAT_PATTERNS = {
    "date-time": f"^{_DATE}T{_TIME}$",
    "date": f"^{_DATE}$",
    "time": f"^{_TIME}$",
    # The regex builder's email and uri patterns let '"' and ',' into the string, which
    # then is not JSON at all; these are conservative and escape-free.
    "email": r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$",
    "uri": r"^[A-Za-z][A-Za-z0-9+.-]*://[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]+$",
    "uuid": f"^{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}$",
    # no leading zeros (Python's ipaddress refuses them)
    "ipv4": rf"^(?:{_OCTET}\.){{3}}{_OCTET}$",
    # the full eight-group form only: "::" compression is left out (under-accepts)
    "ipv6": f"^(?:{_HEX}{{1,4}}:){{7}}{_HEX}{{1,4}}$",
    # RFC 1123 labels, at most four, the last all letters (no numeric top-level label),
    # at most 213 characters: inside every hostname checker's definition (fqdn's too)
    "hostname": r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,60}[A-Za-z0-9])?\.){0,3}[A-Za-z]{2,24}$",
}


def _load(schema: Any) -> Any:
    if hasattr(schema, "model_json_schema"):  # a pydantic model class
        return schema.model_json_schema()
    if isinstance(schema, (bytes, str)):
        try:
            return json.loads(schema)
        except json.JSONDecodeError as exc:
            raise SchemaError(
                f"schema is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
    if isinstance(schema, (Mapping, bool)):
        return schema
    raise SchemaError(
        f"a schema must be a dict, JSON text, boolean or pydantic model, not {type(schema).__name__}"
    )


def _validator_class(schema: Any) -> Any:
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


def _meta_check(schema: Any) -> None:
    cls = _validator_class(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        pointer = "".join(f"/{escape(str(p))}" for p in exc.path)
        raise SchemaError(f"not a valid JSON Schema: {exc.message}", pointer) from None


def _audit(
    schema: Any, whitespace: str, strict: bool, deadline: float
) -> tuple[Normaliser, list[tuple[str, str]]]:
    """Meta-check ``schema`` and build all of it once (see module docstring); return the
    normaliser to share and the (keyword, pointer) pairs dropped in non-strict mode."""
    _meta_check(schema)
    # enum/const values are checked with formats too, as MaskBench's labels are
    validator = _validator_class(schema)(schema, format_checker=jsonschema.FormatChecker())
    normaliser = Normaliser(schema, validator)
    dropped: list[tuple[str, str]] = []

    def unsupported(keyword: str, pointer: str, reason: str = "") -> bool:
        if strict:
            raise UnsupportedSchemaError(keyword, pointer, reason)
        if (keyword, pointer) not in dropped:
            dropped.append((keyword, pointer))
        return True

    audit = SchemaAutomaton(schema, normaliser, whitespace, _FORMAT_PATTERNS, unsupported)
    audit.nfa.deadline = deadline
    audit.nfa.budget_label = "auditing the schema"
    audit.audit()
    return normaliser, dropped


def iter_dropped(schema: Any) -> Iterator[tuple[str, str]]:
    """The (keyword, pointer) pairs that ``strict=False`` would drop from ``schema``."""
    _, dropped = _audit(_load(schema), "", False, time.perf_counter() + DEFAULT_BUDGET_S)
    yield from dropped


EXTRA_PROPERTIES = ("schema", "declared")
_MEMORY: OrderedDict[tuple[str, str, bool, str, str], CompiledLazyDFA] = OrderedDict()
_MEMORY_CAP = 64
_LOCK = threading.Lock()


def compile_json_schema(
    schema: Any,
    tokenizer: Any,
    *,
    whitespace: str = "flexible",
    strict: bool = True,
    extra_properties: str = "schema",
    budget_s: float = DEFAULT_BUDGET_S,
) -> CompiledLazyDFA:
    """Compile ``schema`` into a constraint whose every accepted output validates.

    ``whitespace``: ``"flexible"`` (any whitespace JSON allows between tokens),
    ``"compact"`` (none), or a regex for what may stand between tokens.
    ``extra_properties``: ``"schema"`` (undeclared properties wherever the schema
    allows them; JSON Schema allows them unless ``additionalProperties`` says no) or
    ``"declared"`` (an object whose schema lists ``properties`` but says nothing of
    others holds only those: still valid output, and what generation usually wants,
    since a model otherwise invents keys).
    ``budget_s``: seconds the compile (audit and first mask) may take before
    :class:`CompileTimeout`. Compiled schemas are kept in memory (per vocabulary), and
    so are the masks they computed.
    """
    vocab = as_vocabulary(tokenizer)
    schema = _load(schema)
    ws = WHITESPACE.get(whitespace, whitespace)
    problem = regex_problem(ws)
    if problem:
        raise OptionError(f"whitespace: {problem}")
    if extra_properties not in EXTRA_PROPERTIES:
        raise OptionError(
            f"extra_properties must be one of {', '.join(EXTRA_PROPERTIES)}, got {extra_properties!r}"
        )
    key = (json.dumps(schema, sort_keys=True), ws, strict, extra_properties, vocab.fingerprint)
    with _LOCK:
        hit = _MEMORY.get(key)
        if hit is not None:
            _MEMORY.move_to_end(key)
            return hit
    deadline = time.perf_counter() + budget_s
    try:
        normaliser, dropped = _audit(schema, ws, strict, deadline)
    except CompileTimeout:
        raise CompileTimeout("the schema is too large to audit", budget_s) from None
    except RecursionError:
        raise SchemaError("the schema nests too deeply to compile") from None
    for keyword, pointer in dropped:
        warnings.warn(
            f"JSON Schema keyword {keyword!r} at {pointer or '/'!r} is not enforced and was dropped",
            stacklevel=2,
        )

    def audited(keyword: str, pointer: str, reason: str = "") -> bool:
        """The live automaton meets what the audit met: dropped ones stay dropped; in
        strict mode anything else would be an audit gap, so it is refused, not ignored."""
        if strict or (keyword, pointer) not in dropped:
            raise UnsupportedSchemaError(keyword, pointer, reason)
        return True

    implicit = extra_properties == "schema"
    automaton = SchemaAutomaton(schema, normaliser, ws, _FORMAT_PATTERNS, audited, implicit)
    start, accept = automaton.document()
    automaton.nfa.deadline = deadline
    automaton.nfa.budget_label = "building the schema's first states"
    try:
        compiled = CompiledLazyDFA(LazyDFA(automaton.nfa, start, accept), vocab, "JSON Schema")
        first = compiled.allowed_ids(compiled.initial_state)
    except CompileTimeout:
        raise CompileTimeout("the schema's first states take too long to build", budget_s) from None
    automaton.nfa.deadline = None  # later states are built as decoding reaches them
    if first.numel() == 0 and not compiled.is_final(compiled.initial_state):
        raise SchemaError("the schema allows no JSON document (unsatisfiable)")
    with _LOCK:
        _MEMORY[key] = compiled
        while len(_MEMORY) > _MEMORY_CAP:
            _MEMORY.popitem(last=False)
    return compiled
