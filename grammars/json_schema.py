"""``compile_json_schema``: JSON Schema → guaranteed-valid JSON.

Route: the schema is validated (``jsonschema``'s meta-schema check, local ``$ref``
resolution, obvious unsatisfiability), then *audited*: every keyword must be one this
route really enforces. outlines-core's regex builder silently drops many keywords
(``minimum``, ``multipleOf``, ``uniqueItems``, ``patternProperties`` …), turns ``allOf``
into a concatenation and ``oneOf`` into a plain alternation, so relying on it blindly
would emit JSON that the schema rejects. With ``strict=True`` (the default) such a
keyword raises :class:`UnsupportedSchemaError` naming it and its JSON pointer; with
``strict=False`` it is dropped with a warning that names it. Only then is the schema
turned into a regex (outlines-core) and indexed over the vocabulary.

What the route may *under*-accept (never over-accept): properties appear in schema
order, extra properties are not generated, unanchored ``pattern``s are matched whole,
and recursive ``$ref``s are unrolled to a bounded depth.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jsonschema
from outlines_core.json_schema import build_regex_from_schema

from grammars import json_regex_size
from grammars.dfa import CompiledDFA, compile_dfa
from grammars.json_numbers import BOUND_KEYWORDS, integer_bounds, integer_range_regex
from grammars.regex import as_vocabulary, regex_problem
from plugin.errors import RegexError, SchemaError, UnsupportedSchemaError

WHITESPACE = {"flexible": r"[ \t\n\r]*", "compact": ""}
# Beyond this estimated regex size (grammars.json_regex_size) outlines-core's builder may
# allocate gigabytes and abort the process; indexing would not finish anyway.
MAX_REGEX_CHARS = 50_000_000

# Keywords that only annotate (they never change what validates); keywords the
# dialect's validator does not know are treated the same way (see _Auditor).
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$id",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentMediaType",
        "contentEncoding",
        "nullable",
        "example",
        "discriminator",
        "xml",
        "externalDocs",
    }
)
# Keywords this route enforces exactly (checked further below where values matter).
_ENFORCED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "$defs",
        "definitions",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "uniqueItems",
        *BOUND_KEYWORDS,
    }
)
_FORMATS = frozenset({"date-time", "date", "time", "uuid", "email", "uri", "ipv4", "ipv6", "hostname"})
_KNOWN_FORMATS = frozenset(jsonschema.FormatChecker().checkers)
_TYPES = ("null", "boolean", "object", "array", "number", "string")


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _resolve_pointer(root: Any, ref: str, at: str) -> Any:
    if not ref.startswith("#"):
        raise UnsupportedSchemaError("$ref", at, f"only local references are supported, not {ref!r}")
    node = root
    fragment = ref[1:]
    if fragment and not fragment.startswith("/"):
        raise UnsupportedSchemaError("$ref", at, f"anchor references like {ref!r} are not supported")
    for raw in fragment.split("/")[1:] if fragment else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise SchemaError(f"$ref {ref!r} does not resolve", at)
    return node


def _json_types(schema: Any) -> set[str] | None:
    """The JSON types a subschema can produce, if evident (None when unknown)."""
    if not isinstance(schema, Mapping):
        return None
    if "const" in schema:
        return {_type_of(schema["const"])}
    if "enum" in schema and isinstance(schema["enum"], list):
        return {_type_of(v) for v in schema["enum"]}
    t = schema.get("type")
    if isinstance(t, str):
        return {"number" if t == "integer" else t}
    if isinstance(t, list):
        return {"number" if x == "integer" else x for x in t}
    return None


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _has_type(value: Any, types: Any) -> bool:
    """Whether ``value`` is an instance of the JSON Schema ``type`` (a name or a list)."""
    for t in [types] if isinstance(types, str) else list(types):
        kind = _type_of(value)
        if t == kind or (t == "integer" and kind == "number" and float(value).is_integer()):
            return True
    return False


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


def _rewrite(node: Any, rule: Callable[[dict[str, Any]], Any]) -> Any:
    """A copy of ``node`` with ``rule`` applied to every subschema, innermost first
    (values under ``enum``, ``const``, ``default`` and ``examples`` are not schemas)."""
    if isinstance(node, list):
        return [_rewrite(v, rule) for v in node]
    if not isinstance(node, Mapping):
        return node
    literal = ("enum", "const", "default", "examples")
    return rule({k: v if k in literal else _rewrite(v, rule) for k, v in node.items()})


def _format_as_pattern(out: dict[str, Any]) -> dict[str, Any]:
    """A supported ``format`` replaced by our exact pattern."""
    fmt = out.get("format")
    if isinstance(fmt, str) and fmt in _FORMAT_PATTERNS and "pattern" not in out:
        del out["format"]
        out["pattern"] = _FORMAT_PATTERNS[fmt]
    return out


def _fits(value: Any, schema: Mapping[str, Any]) -> bool:
    """Whether an ``enum``/``const`` value has ``schema``'s type and, for integers, lies
    within its bounds."""
    if not _has_type(value, schema["type"]):
        return False
    if schema["type"] != "integer" or not any(k in schema for k in BOUND_KEYWORDS):
        return True
    lo, hi = integer_bounds(schema)
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _allows_nothing(schema: Any) -> bool:
    """Whether no value is valid against ``schema`` by a test this route can make
    locally: ``false``, or an ``enum``/``const`` none of whose values fits (``_fits``)."""
    if schema is False:
        return True
    if not isinstance(schema, Mapping) or "type" not in schema:
        return False
    values = schema["enum"] if "enum" in schema else [schema["const"]] if "const" in schema else None
    return isinstance(values, list) and not any(_fits(v, schema) for v in values)


def _bounds_as_placeholder(out: dict[str, Any], found: dict[str, str], marker: str) -> dict[str, Any]:
    """A bounded integer schema as a ``const`` placeholder string (its regex, by
    :func:`integer_range_regex`, goes into ``found``); an ``enum`` or ``const`` next to
    bounds is filtered by them instead."""
    if out.get("type") != "integer" or not any(k in out for k in BOUND_KEYWORDS):
        return out
    lo, hi = integer_bounds(out)
    bounded = dict(out)
    for key in BOUND_KEYWORDS:
        out.pop(key, None)
    if "enum" in out or "const" in out:
        values = out.pop("enum") if "enum" in out else [out.pop("const")]
        out["enum"] = [v for v in values if _fits(v, bounded)]
        return out
    name = f"{marker}{len(found)}"
    found[name] = integer_range_regex(lo, hi)
    return {"const": name}


class _Auditor:
    """Walks the reachable schema; raises or records what the route cannot enforce."""

    def __init__(self, root: Any, strict: bool) -> None:
        self.root = root
        self.strict = strict
        # Keywords the validator of this schema's dialect asserts; any other keyword
        # is ignored by validators (an annotation or a typo) and needs no enforcing.
        self.asserting = frozenset(_validator_class(root).VALIDATORS)
        self.dropped: list[tuple[str, str]] = []
        self._seen_refs: set[str] = set()
        self.cleaned_refs: dict[str, Any] = {}  # $ref → its target with drops removed

    def unsupported(self, keyword: str, pointer: str, reason: str = "") -> bool:
        """Raise in strict mode; otherwise record it and tell the caller to drop it."""
        if self.strict:
            raise UnsupportedSchemaError(keyword, pointer, reason)
        self.dropped.append((keyword, pointer))
        return True

    def walk(self, schema: Any, pointer: str) -> Any:
        """Return the schema with unsupported keywords removed (non-strict mode)."""
        if isinstance(schema, bool):
            if schema is False:
                self.unsupported("false", pointer, "a false schema allows nothing")
            return schema
        if not isinstance(schema, Mapping):
            raise SchemaError(
                f"a schema must be an object or a boolean, not {type(schema).__name__}", pointer
            )
        self._check_bounds(schema, pointer)
        out: dict[str, Any] = {}
        for key, value in schema.items():
            at = f"{pointer}/{_escape(key)}"
            if key in _ANNOTATIONS or key in ("$defs", "definitions"):
                out[key] = value  # definitions are audited when a $ref reaches them
                continue
            if key not in _ENFORCED:
                if key not in self.asserting:
                    out[key] = value
                    continue
                if self.unsupported(key, at):
                    continue
            keep = self._check(key, value, schema, at)
            if keep is not None:
                out[key] = keep
        self._check_required(schema, pointer)
        return out

    def _check(self, key: str, value: Any, schema: Mapping[str, Any], at: str) -> Any:
        """Audit one enforced keyword; return its (cleaned) value, or None to drop it."""
        if key == "properties":
            required = set(schema.get("required") or [])
            return {
                k: self.walk(v, f"{at}/{_escape(k)}")
                for k, v in value.items()
                if k in required or not _allows_nothing(v)  # never present: the route omits it
            }
        if key in ("items", "additionalProperties"):
            if isinstance(value, list):
                return None if self.unsupported(key, at, "the array (tuple) form is not supported") else value
            if key == "additionalProperties" and isinstance(value, bool):
                return value
            if key == "additionalProperties" and "properties" in schema:
                drop = self.unsupported(key, at, "a schema for extra properties next to 'properties'")
                return None if drop else value
            return self.walk(value, at)
        if key in ("anyOf", "prefixItems"):
            return [self.walk(v, f"{at}/{i}") for i, v in enumerate(value)]
        if key == "oneOf":
            kinds = [_json_types(v) for v in value]
            disjoint = all(k is not None for k in kinds) and sum(len(k) for k in kinds) == len(
                set().union(*kinds)  # type: ignore[arg-type]
            )
            if not disjoint:
                drop = self.unsupported(key, at, "branches that may overlap (exactly-one cannot be enforced)")
                return None if drop else value
            return [self.walk(v, f"{at}/{i}") for i, v in enumerate(value)]
        if key == "allOf":
            if len(value) != 1:
                return None if self.unsupported(key, at, "more than one branch") else value
            return [self.walk(value[0], f"{at}/0")]
        if key == "$ref":
            target = _resolve_pointer(self.root, value, at)
            if value not in self._seen_refs:
                self._seen_refs.add(value)
                self.cleaned_refs[value] = self.walk(target, value[1:] or "")
            return value
        if key == "format":
            if value in _FORMATS or value not in _KNOWN_FORMATS:
                return value if value in _FORMATS else None  # unknown formats only annotate
            return None if self.unsupported(key, at, f"format {value!r} is not enforced") else value
        if key == "uniqueItems":
            if value is True and schema.get("maxItems", 2) > 1:
                return None if self.unsupported(key, at) else value
            return None
        if key == "pattern":
            problem = regex_problem(value)
            if problem:
                return None if self.unsupported(key, at, problem) else value
            return value
        if key in ("enum", "const") and "type" in schema:
            values = value if key == "enum" else [value]
            kept = [v for v in values if _fits(v, schema)] if isinstance(values, list) else values
            if not kept:
                reason = "no value has the schema's type and bounds: this subschema allows nothing"
                drop = self.unsupported(key, at, reason)
                return None if drop else value
            return kept if key == "enum" else value
        if key in BOUND_KEYWORDS:
            if schema.get("type") != "integer":
                drop = self.unsupported(key, at, "numeric bounds are enforced for integers only")
                return None if drop else value
            lo, hi = integer_bounds(schema)
            if lo is not None and hi is not None and lo > hi:
                raise SchemaError(f"unsatisfiable: no integer lies in {lo}..{hi}", at.rsplit("/", 1)[0])
            return value
        if key == "type":
            names = [value] if isinstance(value, str) else value
            bad = [n for n in names if n not in _TYPES and n != "integer"]
            if bad:
                raise SchemaError(f"unknown type {bad[0]!r}", at)
        return value

    def cleaned(self, walked_root: Any) -> Any:
        """``walked_root`` with every referenced definition replaced by its cleaned form.

        ``walk`` copies ``$defs`` untouched (they are audited where a ``$ref`` reaches
        them), so without this a keyword dropped inside a definition would still reach
        the regex builder. Works on a deep copy: the caller's schema is never changed.
        """
        if not self.dropped:
            return walked_root
        result = copy.deepcopy(walked_root)
        for ref in sorted(self.cleaned_refs, key=lambda r: r.count("/")):
            parts = [p.replace("~1", "/").replace("~0", "~") for p in ref[1:].split("/")[1:]]
            if not parts:  # "#": the root itself, already walked
                continue
            node = result
            for part in parts[:-1]:
                node = node[int(part)] if isinstance(node, list) else node[part]
            last = parts[-1]
            node[int(last) if isinstance(node, list) else last] = copy.deepcopy(self.cleaned_refs[ref])
        return result

    def _check_required(self, schema: Mapping[str, Any], pointer: str) -> None:
        required = schema.get("required") or []
        props = schema.get("properties") or {}
        missing = [r for r in required if r not in props]
        if missing:
            if schema.get("additionalProperties") is False:
                raise SchemaError(
                    f"required property {missing[0]!r} is forbidden by additionalProperties: false", pointer
                )
            self.unsupported(
                "required",
                f"{pointer}/required",
                f"required property {missing[0]!r} has no schema in 'properties'",
            )

    def _check_bounds(self, schema: Mapping[str, Any], pointer: str) -> None:
        for lo, hi in (
            ("minimum", "maximum"),
            ("minLength", "maxLength"),
            ("minItems", "maxItems"),
            ("minProperties", "maxProperties"),
        ):
            a, b = schema.get(lo), schema.get(hi)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > b:
                raise SchemaError(f"unsatisfiable: {lo} {a} > {hi} {b}", pointer)


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
        pointer = "".join(f"/{_escape(str(p))}" for p in exc.path)
        raise SchemaError(f"not a valid JSON Schema: {exc.message}", pointer) from None


def iter_dropped(schema: Any) -> Iterator[tuple[str, str]]:
    """The (keyword, pointer) pairs that ``strict=False`` would drop from ``schema``."""
    auditor = _Auditor(schema, strict=False)
    auditor.walk(schema, "")
    yield from auditor.dropped


def schema_to_regex(schema: Any, *, whitespace: str = "flexible", strict: bool = True) -> str:
    """Validate and audit ``schema``, then build the regex of its JSON documents."""
    schema = _load(schema)
    _meta_check(schema)
    auditor = _Auditor(schema, strict)
    cleaned = auditor.cleaned(auditor.walk(schema, ""))
    for keyword, pointer in auditor.dropped:
        warnings.warn(
            f"JSON Schema keyword {keyword!r} at {pointer or '/'!r} is not enforced and was dropped",
            stacklevel=3,
        )
    size, where = json_regex_size.estimate(cleaned, cleaned, lambda ref: _resolve_pointer(cleaned, ref, ref))
    if size > MAX_REGEX_CHARS:
        raise UnsupportedSchemaError(
            "properties",
            where,
            f"the regex route would build a regex of about {size / 1e6:,.0f} million characters "
            "(optional properties multiply through nesting); too large to index",
        )
    ws = WHITESPACE.get(whitespace, whitespace)
    text = json.dumps(cleaned)
    marker = "ZqStencilInteger"
    while marker in text:  # a placeholder no schema string contains
        marker += "Q"
    ranges: dict[str, str] = {}
    prepared = _rewrite(
        cleaned, lambda node: _bounds_as_placeholder(_format_as_pattern(node), ranges, marker)
    )
    try:
        regex = build_regex_from_schema(json.dumps(prepared), ws)
    except ValueError as exc:
        raise UnsupportedSchemaError("schema", "", str(exc).splitlines()[0]) from None
    for name, numerals in ranges.items():
        regex = regex.replace(f'"{name}"', numerals)
    return regex


def compile_json_schema(
    schema: Any, tokenizer: Any, *, whitespace: str = "flexible", strict: bool = True
) -> CompiledDFA:
    """Compile ``schema`` into a constraint whose every accepted output validates.

    ``whitespace``: ``"flexible"`` (any whitespace JSON allows between tokens),
    ``"compact"`` (none), or a regex for what may stand between tokens.
    """
    pattern = schema_to_regex(schema, whitespace=whitespace, strict=strict)
    try:
        return compile_dfa(pattern, as_vocabulary(tokenizer))
    except RegexError as exc:
        raise UnsupportedSchemaError("pattern", "", str(exc)) from None
