"""Schema normalisation: ``$ref`` and ``allOf`` resolved into one flat subschema.

The automaton builder (:mod:`grammars.json_automaton`) wants one schema per value: no
``$ref`` to follow and no ``allOf`` to intersect. :func:`normalise` gives it that, by
merging the branches keyword by keyword where the intersection is again a plain
subschema (``properties`` and ``required`` unite, bounds tighten, types intersect,
``enum``s filter each other). Where it is not (two different ``pattern``s, two
``oneOf``s), it raises :class:`UnsupportedSchemaError` naming ``allOf`` and why, so the
route never guesses.

Subschemas built by merging are :class:`AllOf` tuples (their parts kept unmerged until
the builder reaches them), so a recursive schema merges lazily, level by level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from plugin.errors import SchemaError, UnsupportedSchemaError

FALSE: dict[str, Any] = {"not": {}}  # the normal form of a schema nothing satisfies
_LEGACY_REF = {
    "http://json-schema.org/draft-03/schema#",
    "http://json-schema.org/draft-04/schema#",
    "http://json-schema.org/draft-06/schema#",
    "http://json-schema.org/draft-07/schema#",
}


class Flat(dict):
    """A normalised subschema; ``origin`` maps each keyword to the pointer of the
    subschema it came from, so errors name where the user wrote it."""

    origin: dict[str, str]


def _flat(items: Mapping[str, Any], origin: dict[str, str]) -> Flat:
    out = Flat(items)
    out.origin = origin
    return out


class AllOf(tuple):
    """Subschemas that must all hold (a synthesised ``allOf``), merged when reached."""


def escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def schema_key(schema: Any) -> Any:
    """An identity for a (possibly synthesised) subschema, for memoising its fragment."""
    if isinstance(schema, AllOf):
        return ("allOf", *(schema_key(s) for s in schema))
    return id(schema)


def resolve_pointer(root: Any, ref: str, at: str) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise UnsupportedSchemaError("$ref", at, f"only local references are supported, not {ref!r}")
    fragment = ref[1:]
    if fragment and not fragment.startswith("/"):
        raise UnsupportedSchemaError("$ref", at, f"anchor references like {ref!r} are not supported")
    node = root
    for raw in fragment.split("/")[1:] if fragment else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise SchemaError(f"$ref {ref!r} does not resolve", at)
    return node


class Normaliser:
    """Flattens subschemas of one root (see module docstring)."""

    def __init__(self, root: Any, validator: Any) -> None:
        self.root = root
        self.validator = validator  # the root's validator: ``evolve`` keeps its $ref resolver
        self.asserting = frozenset(type(validator).VALIDATORS)
        dialect = root.get("$schema") if isinstance(root, Mapping) else None
        self.legacy_ref = dialect in _LEGACY_REF or (
            isinstance(dialect, str) and dialect.rstrip("#") + "#" in _LEGACY_REF
        )

    def is_valid(self, value: Any, schema: Any) -> bool:
        return bool(self.validator.evolve(schema=schema).is_valid(value))

    def normalise(self, schema: Any, at: str, seen: frozenset[str] = frozenset()) -> dict[str, Any]:
        """``schema`` without ``$ref``/``allOf`` (``FALSE`` if nothing satisfies it)."""
        if isinstance(schema, AllOf):
            out: dict[str, Any] = {}
            for part in schema:
                out = self.merge(out, self.normalise(part, at, seen), at)
            return out
        if schema is True:
            return {}
        if schema is False:
            return FALSE
        if not isinstance(schema, Mapping):
            raise SchemaError(f"a schema must be an object or a boolean, not {type(schema).__name__}", at)
        out = _flat(schema, dict.fromkeys(schema, at))
        ref = out.pop("$ref", None)
        all_of = out.pop("allOf", None)
        _draft4_exclusive(out)
        if ref is not None:
            if ref in seen:
                raise SchemaError(f"$ref {ref!r} refers to itself without reading any input", at)
            target = self.normalise(resolve_pointer(self.root, ref, f"{at}/$ref"), ref[1:], seen | {ref})
            out = target if self.legacy_ref else self.merge(out, target, at)
        if all_of is not None:
            if not isinstance(all_of, list) or not all_of:
                raise SchemaError("allOf must be a non-empty array", f"{at}/allOf")
            for i, part in enumerate(all_of):
                out = self.merge(out, self.normalise(part, f"{at}/allOf/{i}", seen), f"{at}/allOf")
        return out

    def merge(self, a: dict[str, Any], b: dict[str, Any], at: str) -> dict[str, Any]:
        """The flat schema of ``a`` and ``b`` both holding."""
        if a is FALSE or b is FALSE:
            return FALSE
        if not a:
            return b
        if not b:
            return a
        out = _flat(a, {**getattr(b, "origin", {}), **getattr(a, "origin", {})})
        for key, value in b.items():
            if key not in out or out[key] == value:
                out[key] = value
                continue
            merged = self._merge_keyword(key, out[key], value, a, b, at)
            if merged is FALSE:
                return FALSE
            out[key] = merged
        if ("additionalProperties" in a or "additionalProperties" in b) and (
            set(a.get("properties", {})) != set(b.get("properties", {}))
        ):
            self._merge_extra_properties(out, a, b, at)
        return out

    def _merge_keyword(self, key: str, x: Any, y: Any, a: Any, b: Any, at: str) -> Any:
        if key == "type":
            return _intersect_types(x, y)
        if key == "required":
            return list(dict.fromkeys([*x, *y]))
        if key in ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"):
            return max(x, y)
        if key in ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"):
            return min(x, y)
        if key == "properties":
            return {k: AllOf((x[k], y[k])) if k in x and k in y else x.get(k, y.get(k)) for k in {**x, **y}}
        if (
            key in ("items", "additionalProperties")
            and isinstance(x, (Mapping, bool))
            and isinstance(y, (Mapping, bool))
        ):
            return AllOf((x, y))
        if key == "enum":
            return [v for v in x if self.is_valid(v, {"enum": y})] or FALSE
        if key == "const":
            return x if self.is_valid(x, {"const": y}) else FALSE
        if key == "anyOf":
            if len(x) * len(y) > 64:
                raise UnsupportedSchemaError("allOf", at, "two anyOf lists too long to distribute")
            return [AllOf((p, q)) for p in x for q in y]
        if key == "uniqueItems":
            return bool(x or y)
        if key == "multipleOf" and all(isinstance(v, int) for v in (x, y)):
            return x * y // math.gcd(x, y)
        if key not in self.asserting or key in ("definitions", "$defs"):
            return x  # annotations and definitions: either will do
        raise UnsupportedSchemaError("allOf", at, f"branches with different {key!r} cannot be merged")

    def _merge_extra_properties(self, out: dict[str, Any], a: Any, b: Any, at: str) -> None:
        """``additionalProperties`` speaks of the properties its own schema names, so a
        property named by one branch only must also satisfy the other's extras schema."""
        if a.get("patternProperties") or b.get("patternProperties"):
            raise UnsupportedSchemaError(
                "allOf", at, "additionalProperties next to patternProperties in branches"
            )
        pa, pb = a.get("properties", {}), b.get("properties", {})
        xa, xb = a.get("additionalProperties", True), b.get("additionalProperties", True)
        props = {}
        for k in {**pa, **pb}:
            parts = tuple(s for s in (pa.get(k, xa), pb.get(k, xb)) if s is not True)
            props[k] = AllOf(parts) if len(parts) != 1 else parts[0]
        out["properties"] = props
        extras = tuple(s for s in (xa, xb) if s is not True)
        if extras:
            out["additionalProperties"] = AllOf(extras) if len(extras) > 1 else extras[0]
        else:
            out.pop("additionalProperties", None)


def _draft4_exclusive(schema: dict[str, Any]) -> None:
    """Draft-04's boolean ``exclusiveMinimum``/``Maximum`` in their later numeric form."""
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(schema.get(flag), bool) and schema.pop(flag) and bound in schema:
            schema[flag] = schema.pop(bound)


def _types(value: Any) -> set[str]:
    return {value} if isinstance(value, str) else set(value)


def _intersect_types(x: Any, y: Any) -> Any:
    a, b = _types(x), _types(y)
    both = a & b
    if ("integer" in a and "number" in b) or ("integer" in b and "number" in a):
        both.add("integer")
    return sorted(both) if both else FALSE
