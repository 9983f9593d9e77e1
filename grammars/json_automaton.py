"""JSON Schema → a lazily built byte NFA of the JSON texts that validate.

Each subschema becomes a fragment of a :class:`grammars.lazy_dfa.LazyNFA`; nested values
are *deferred*, so only the parts a decode reaches are ever built, and a recursive
``$ref`` is an NFA as deep as the text goes (no unrolling bound). What is built, per
keyword, is listed in the README's coverage table. The rules that keep it sound:

* Objects: declared properties in schema order (each optional one may be skipped: one
  copy of each value, so the automaton stays linear in the number of properties), and
  extra properties (``additionalProperties`` not ``false``) between any two of them,
  with keys spelled raw and never equal to a declared name.
  ``patternProperties`` keys come from their pattern (JSON escapes allowed).
* Strings: ``pattern``/``format`` search the decoded text (:mod:`grammars.json_string`).
* A keyword this route cannot enforce goes to ``unsupported`` (raise, or drop with a
  warning when not strict). :meth:`SchemaAutomaton.audit` builds every reachable
  subschema once at compile time, so that happens before the first token, never in
  the middle of a decode.

What it may under-accept (never over-accept): property order, escaped spellings of
names and ``enum`` strings, numbers with exponents where bounds apply, strings whose
``$`` precedes a final newline.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import re._parser as sre_parse
from collections.abc import Callable, Mapping
from typing import Any

from grammars.byte_nfa import MAX_UNICODE, UnsupportedPattern, _Builder, _negate, add_pattern, fragment
from grammars.json_numbers import integer_range_regex, number_range_regex
from grammars.json_schema_merge import FALSE, AllOf, Normaliser, escape, schema_key
from grammars.json_string import JsonStringBuilder, add_string_chars, add_string_pattern, pattern_width
from grammars.lazy_dfa import LazyNFA
from plugin.errors import SchemaError

NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
INTEGER = r"-?(?:0|[1-9][0-9]*)"
_TYPES = ("null", "boolean", "object", "array", "number", "integer", "string")
_KEYWORDS = {
    "object": {
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "unevaluatedProperties",
    },
    "array": {
        "items",
        "prefixItems",
        "additionalItems",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "unevaluatedItems",
    },
    "string": {"minLength", "maxLength", "pattern", "format", "contentMediaType", "contentEncoding"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
}
# keywords of a type this route cannot enforce (refused, or dropped when not strict)
_REFUSED = {
    "propertyNames", "dependentRequired", "dependentSchemas", "dependencies", "unevaluatedProperties",
    "contains", "minContains", "maxContains", "unevaluatedItems",
}  # fmt: skip
_GENERAL = {"type", "enum", "const", "anyOf", "oneOf", "$defs", "definitions"}
_RAW_KEY_CHARS = [(0x20, 0x21), (0x23, 0x5B), (0x5D, MAX_UNICODE)]  # what a key may hold unescaped
Fragment = tuple[int, int]


def plain(schema: Any) -> Any:
    """``schema`` with synthesised :class:`AllOf` parts spelled as ``allOf`` (for jsonschema)."""
    if isinstance(schema, AllOf):
        return {"allOf": [plain(s) for s in schema]}
    if isinstance(schema, Mapping):
        return {k: plain(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [plain(v) for v in schema]
    return schema


class SchemaAutomaton:
    """Builds the fragments of one schema into one :class:`LazyNFA` (module docstring)."""

    def __init__(
        self,
        root: Any,
        normaliser: Normaliser,
        whitespace: str,
        formats: Mapping[str, str],
        unsupported: Callable[[str, str, str], bool],
        implicit_extras: bool = True,
    ) -> None:
        self.root = root
        # False: an object whose schema declares properties but says nothing of others
        # (no additionalProperties/patternProperties) gets only the declared ones
        self.implicit_extras = implicit_extras
        self.norm = normaliser
        self.formats = formats
        self.unsupported = unsupported
        self.nfa = LazyNFA()
        self._ws = sre_parse.parse(whitespace) if whitespace else None
        self._ws_key = ("ws", whitespace)
        self._ws_builder = _Builder(self.nfa, False, False, False)
        self._eager: list[int] | None = None  # audit mode: placeholders still to build
        self.dry = False  # audit mode: scalars are checked, not spelled out byte by byte
        self._built: set[Any] = set()

    # --- plumbing ------------------------------------------------------------------

    def new(self) -> int:
        return self.nfa.new_state()

    def link(self, a: int, b: int) -> None:
        self.nfa.eps[a].append(b)

    def seq(self, *frags: Fragment) -> Fragment:
        for (_, e), (s, _) in itertools.pairwise(frags):
            self.link(e, s)
        return frags[0][0], frags[-1][1]

    def union(self, frags: list[Fragment]) -> Fragment:
        start, end = self.new(), self.new()
        for s, e in frags:
            self.link(start, s)
            self.link(e, end)
        return start, end

    def lit(self, data: bytes) -> Fragment:
        start = cur = self.new()
        for byte in data:
            nxt = self.new()
            self.nfa.edges[cur].append((byte, byte, nxt))
            cur = nxt
        return start, cur

    def ws(self) -> Fragment:
        if self._ws is None or self.dry:
            s = self.new()
            return s, s
        ws = self._ws
        return fragment(self.nfa, self._ws_key, lambda: self._ws_builder.seq(list(ws)))

    def regex(self, pattern: str) -> Fragment:
        if self.dry:
            return self.lit(b"0")
        return add_pattern(self.nfa, pattern)

    def nothing(self) -> Fragment:
        return self.new(), self.new()

    def value(self, schema: Any, at: str) -> Fragment:
        """The fragment of ``schema``'s values, built when first reached."""
        if self._eager is not None:
            key = schema_key(schema)
            if key in self._built:
                return self.nothing()
            self._built.add(key)
            frag = self.nfa.defer(lambda: self.build(schema, at))
            self._eager.append(frag[0])
            return frag
        return self.nfa.defer(lambda: self.build(schema, at))

    def document(self) -> Fragment:
        """The whole output: one value, no whitespace around it (so the matcher is
        finished at the value's end, and the model cannot trail blanks)."""
        return self.value(self.root, "")

    def audit(self) -> None:
        """Build every reachable subschema once, in a throwaway automaton, so that
        unsupported keywords and bad references surface at compile time."""
        self._eager = []
        self.dry = True
        self.value(self.root, "")
        while self._eager:
            state = self._eager.pop()
            if state in self.nfa.pending:
                self.nfa.expand(state)

    # --- values -------------------------------------------------------------------

    def build(self, schema: Any, at: str) -> Fragment:
        norm = self.norm.normalise(schema, at)
        if norm is FALSE:
            return self.nothing()
        if "enum" in norm or "const" in norm:
            return self.literals(norm, at)  # exact whatever else is there: values are validated
        for key in norm:
            if (
                key in self.norm.asserting
                and key not in _GENERAL
                and not any(key in k for k in _KEYWORDS.values())
            ):
                self.unsupported(key, where(norm, key, at), "")
        if "anyOf" in norm or "oneOf" in norm:
            return self.branches(norm, at)
        types = norm.get("type", list(_TYPES))
        types = [types] if isinstance(types, str) else list(types)
        for t in types:
            if t not in _TYPES:
                raise SchemaError(f"unknown type {t!r}", f"{at}/type")
        if "number" in types and "integer" in types:
            types.remove("integer")
        frags = [self.typed(t, norm, at) for t in types]
        return self.union(frags)

    def branches(self, norm: dict[str, Any], at: str) -> Fragment:
        key = "anyOf" if "anyOf" in norm else "oneOf"
        rest = {k: v for k, v in norm.items() if k != key}
        parts = [AllOf((rest, b)) if rest else b for b in norm[key]]
        if key == "oneOf" and not self._disjoint(parts, where(norm, "oneOf", at)):
            reason = "branches that may overlap (exactly-one cannot be enforced)"
            self.unsupported("oneOf", where(norm, "oneOf", at), reason)
        return self.union([self.value(p, f"{at}/{key}/{i}") for i, p in enumerate(parts)])

    def _disjoint(self, parts: list[Any], at: str) -> bool:
        """Whether no value can satisfy two of ``parts``: their types differ, or each is an
        object requiring one same property whose ``const``/``enum`` values differ."""
        if len(parts) < 2:
            return True
        normed = [self.norm.normalise(p, at) for p in parts]
        kinds = [_json_kinds(n) for n in normed]
        if all(k is not None for k in kinds) and sum(map(len, kinds)) == len(set().union(*kinds)):  # type: ignore[arg-type]
            return True
        if not all(n.get("type") == "object" or "properties" in n for n in normed):
            return False
        common = set.intersection(*(set(n.get("required", ())) for n in normed))
        for name in common:
            seen: list[Any] = []
            for n in normed:
                prop = self.norm.normalise(n.get("properties", {}).get(name, True), at)
                values = prop.get("enum", [prop["const"]] if "const" in prop else None)
                if values is None:
                    break
                if any(self.norm.is_valid(v, {"enum": seen}) for v in values):
                    break
                seen += values
            else:
                return True
        return False

    def literals(self, norm: dict[str, Any], at: str) -> Fragment:
        values = norm["enum"] if "enum" in norm else [norm["const"]]
        if not isinstance(values, list):
            raise SchemaError("enum must be an array", f"{at}/enum")
        check = plain(norm)
        kept = [v for v in values if self.norm.is_valid(v, check)]
        return self.union([self.literal(v) for v in kept])

    def literal(self, value: Any) -> Fragment:
        """One JSON value, with whitespace allowed between its tokens."""
        if isinstance(value, Mapping):
            parts = [self.lit(b"{"), self.ws()]
            for i, (k, v) in enumerate(value.items()):
                if i:
                    parts += [self.lit(b","), self.ws()]
                parts += [
                    self.string_literal(k),
                    self.ws(),
                    self.lit(b":"),
                    self.ws(),
                    self.literal(v),
                    self.ws(),
                ]
            return self.seq(*parts, self.lit(b"}"))
        if isinstance(value, list):
            parts = [self.lit(b"["), self.ws()]
            for i, v in enumerate(value):
                if i:
                    parts += [self.lit(b","), self.ws()]
                parts += [self.literal(v), self.ws()]
            return self.seq(*parts, self.lit(b"]"))
        if isinstance(value, str):
            return self.string_literal(value)
        return self.lit(json.dumps(value).encode())

    def string_literal(self, text: str) -> Fragment:
        """``text`` as ``json.dumps`` spells it, or with its non-ASCII characters raw."""
        spellings = {json.dumps(text).encode(), json.dumps(text, ensure_ascii=False).encode()}
        return self.union([self.lit(s) for s in sorted(spellings)])

    def typed(self, kind: str, norm: dict[str, Any], at: str) -> Fragment:
        group = "number" if kind == "integer" else kind
        for key in _KEYWORDS.get(group, ()):
            if key in norm and key in _REFUSED and key in self.norm.asserting:
                self.unsupported(key, where(norm, key, at), "")
        if kind == "null":
            return self.lit(b"null")
        if kind == "boolean":
            return self.union([self.lit(b"true"), self.lit(b"false")])
        if kind in ("integer", "number"):
            return self.number(kind, norm, at)
        if kind == "string":
            return self.string(norm, at)
        if kind == "array":
            return self.array(norm, at)
        return self.object(norm, at)

    # --- scalars ------------------------------------------------------------------

    def number(self, kind: str, norm: dict[str, Any], at: str) -> Fragment:
        step = norm.get("multipleOf")
        if step == 1:
            kind = "integer"
        elif step is not None:
            self.unsupported("multipleOf", where(norm, "multipleOf", at), "only multipleOf 1 is enforced")
        lo, lo_excl = _bound(norm.get("minimum"), norm.get("exclusiveMinimum"), lower=True)
        hi, hi_excl = _bound(norm.get("maximum"), norm.get("exclusiveMaximum"), lower=False)
        if lo is None and hi is None:
            return self.regex(INTEGER if kind == "integer" else NUMBER)
        if kind == "integer":
            ilo = (
                None
                if lo is None
                else (math.floor(lo) + 1 if lo_excl and float(lo).is_integer() else math.ceil(lo))
            )
            ihi = (
                None
                if hi is None
                else (math.ceil(hi) - 1 if hi_excl and float(hi).is_integer() else math.floor(hi))
            )
            if ilo is not None and ihi is not None and ilo > ihi:
                raise SchemaError(f"unsatisfiable: no integer lies in {ilo}..{ihi}", at)
            return self.regex(integer_range_regex(ilo, ihi))
        pattern = number_range_regex(lo, lo_excl, hi, hi_excl)
        return self.regex(pattern) if pattern else self.nothing()

    def string(self, norm: dict[str, Any], at: str) -> Fragment:
        patterns = []
        if isinstance(norm.get("pattern"), str):
            patterns.append(("pattern", norm["pattern"]))
        fmt = norm.get("format")
        if isinstance(fmt, str) and "format" in self.norm.asserting:
            if fmt in self.formats:
                patterns.append(("format", self.formats[fmt]))
            elif fmt in _known_formats() or fmt in DEFINED_FORMATS:
                # defined by some draft (``iri`` in a draft-04 schema too): a user reading
                # "valid" expects it checked, so it is refused, not taken as an annotation
                self.unsupported("format", where(norm, "format", at), f"format {fmt!r} is not enforced")
        lo, hi = norm.get("minLength", 0), norm.get("maxLength")
        if hi is not None and lo > hi:
            raise SchemaError(f"unsatisfiable: minLength {lo} > maxLength {hi}", at)
        if len(patterns) > 1:
            self.unsupported("format", where(norm, "format", at), "format together with pattern")
            patterns = patterns[:1]
        if patterns:
            keyword, pattern = patterns[0]
            if lo or hi is not None:
                width = pattern_width(pattern)
                if width is None or width[0] < lo or (hi is not None and width[1] > hi):
                    which = "minLength" if lo and (width is None or width[0] < lo) else "maxLength"
                    self.unsupported(which, where(norm, which, at), f"length bounds together with {keyword}")
            try:
                content = add_string_pattern(self.nfa, pattern, dry=self.dry)
            except UnsupportedPattern as exc:
                self.unsupported(keyword, where(norm, keyword, at), str(exc))
                content = self.lit(b"")
        elif self.dry:
            content = self.lit(b"")
        else:
            content = add_string_chars(self.nfa, int(lo), None if hi is None else int(hi))
        return self.seq(self.lit(b'"'), content, self.lit(b'"'))

    # --- arrays -------------------------------------------------------------------

    def array(self, norm: dict[str, Any], at: str) -> Fragment:
        items = norm.get("items", True)
        if isinstance(items, list):  # draft <= 2019 tuple form
            prefix, rest, rest_at = items, norm.get("additionalItems", True), f"{at}/additionalItems"
        else:
            prefix, rest, rest_at = norm.get("prefixItems", []), items, f"{at}/items"
        lo, hi = int(norm.get("minItems", 0)), norm.get("maxItems")
        if norm.get("uniqueItems") is True and (hi is None or hi > 1):
            self.unsupported("uniqueItems", where(norm, "uniqueItems", at), "")
        if self._eager is not None:  # the audit reaches every element schema now, not per index
            for i, item in enumerate(prefix):
                self.value(item, f"{at}/prefixItems/{i}")
            if rest is not False:
                self.value(rest, rest_at)
        start, end = self.new(), self.new()
        self.seq(
            (start, start), self.lit(b"["), self.ws(), self._items(0, prefix, rest, rest_at, lo, hi, at, end)
        )
        return start, end

    def _items(
        self, i: int, prefix: list, rest: Any, rest_at: str, lo: int, hi: Any, at: str, end: int
    ) -> Fragment:
        """Elements from index ``i`` on, then ``]`` into ``end``; the next index is
        deferred, so ``minItems``/``maxItems`` cost nothing until reached."""
        entry = self.new()
        here = (entry, entry)
        if i >= lo:
            self.seq(here, self.lit(b"]"), (end, end))
        schema = prefix[i] if i < len(prefix) else rest
        if schema is False or (hi is not None and i >= hi):
            return here
        item_at = f"{at}/prefixItems/{i}" if i < len(prefix) else rest_at
        if i >= len(prefix) and i >= lo and hi is None:  # from here on, a loop
            if i == 0:
                loop = self.new()
                self.seq(here, self.value(schema, item_at), self.ws(), (loop, loop))
                self.seq((loop, loop), self.lit(b"]"), (end, end))
                here = (loop, loop)
            self.seq(here, self.lit(b","), self.ws(), self.value(schema, item_at), self.ws(), here)
            return entry, entry
        comma = [self.lit(b","), self.ws()] if i else []
        nxt = self.nfa.defer(lambda: self._items(i + 1, prefix, rest, rest_at, lo, hi, at, end))
        self.seq(here, *comma, self.value(schema, item_at), self.ws(), nxt)
        return entry, entry

    # --- objects ------------------------------------------------------------------

    def object(self, norm: dict[str, Any], at: str) -> Fragment:
        props: dict[str, Any] = dict(norm.get("properties", {}))
        required = list(norm.get("required", []))
        extra = norm.get("additionalProperties", True)
        patterns: dict[str, Any] = norm.get("patternProperties", {})
        for name in required:
            if name not in props:
                if extra is False and not any(re.search(p, name) for p in patterns):
                    raise SchemaError(
                        f"required property {name!r} is forbidden by additionalProperties: false", at
                    )
                props[name] = True if patterns else extra
        if not self.implicit_extras and props and "additionalProperties" not in norm and not patterns:
            extra = False  # declared properties only: a subset of what the schema allows
        members: list[tuple[str, Any, bool]] = []
        for name, schema in props.items():
            matching = [s for p, s in patterns.items() if re.search(p, name)]
            if matching:
                schema = AllOf((schema, *matching))
            prop_at = f"{at}/properties/{escape(name)}"
            if self._allows_nothing(schema, prop_at):
                if name in required:
                    raise SchemaError(f"required property {name!r} allows no value", prop_at)
                continue  # an optional property no value satisfies is left out
            members.append((name, schema, name in required))
        extra_keys = self._extra_keys(norm, members, patterns, extra, at)
        n_required = sum(r for _, _, r in members)
        allow_empty = n_required > 0 or norm.get("minProperties", 0) == 0
        if norm.get("minProperties", 0) > max(n_required, 1):
            reason = "more than the required properties"
            self.unsupported("minProperties", where(norm, "minProperties", at), reason)
        if "maxProperties" in norm and (extra_keys or len(members) > norm["maxProperties"]):
            reason = "fewer than the properties allowed"
            self.unsupported("maxProperties", where(norm, "maxProperties", at), reason)
        start, end = self.new(), self.new()
        none = [self.new() for _ in range(len(members) + 1)]  # before member k, none written yet
        some = [self.new() for _ in range(len(members) + 1)]  # before member k, some written
        self.seq((start, start), self.lit(b"{"), self.ws(), (none[0], none[0]))
        for k, (name, schema, is_required) in enumerate(members):
            entry = self.new()
            self.link(none[k], entry)
            self.seq((some[k], some[k]), self.lit(b","), self.ws(), (entry, entry))
            prop_at = f"{at}/properties/{escape(name)}"
            self.seq(
                (entry, entry),
                self.string_literal(name),
                self._member_value(schema, prop_at),
                (some[k + 1], some[k + 1]),
            )
            if not is_required:
                self.link(none[k], none[k + 1])
                self.link(some[k], some[k + 1])
        for k in range(len(members) + 1):
            for key_frag, schema, extra_at in extra_keys:
                entry = self.new()
                self.link(none[k], entry)
                self.seq((some[k], some[k]), self.lit(b","), self.ws(), (entry, entry))
                self.seq((entry, entry), key_frag(), self._member_value(schema, extra_at), (some[k], some[k]))
        self.seq((some[-1], some[-1]), self.lit(b"}"), (end, end))
        if allow_empty and n_required == 0:
            self.seq((none[-1], none[-1]), self.lit(b"}"), (end, end))
        return start, end

    def _allows_nothing(self, schema: Any, at: str) -> bool:
        """Whether no value satisfies ``schema``, by a local test: ``false`` (after
        merging), or an ``enum``/``const`` none of whose values passes the rest."""
        norm = self.norm.normalise(schema, at)
        if norm is FALSE:
            return True
        if "enum" not in norm and "const" not in norm:
            return False
        values = norm["enum"] if "enum" in norm else [norm["const"]]
        check = plain(norm)
        return isinstance(values, list) and not any(self.norm.is_valid(v, check) for v in values)

    def _member_value(self, schema: Any, value_at: str) -> Fragment:
        return self.seq(self.ws(), self.lit(b":"), self.ws(), self.value(schema, value_at), self.ws())

    def _extra_keys(
        self, norm: dict[str, Any], members: list, patterns: dict[str, Any], extra: Any, at: str
    ) -> list[tuple[Callable[[], Fragment], Any, str]]:
        """(key fragment maker, value schema, pointer) for properties beyond the members."""
        names = [*norm.get("properties", {}), *norm.get("required", [])]
        if patterns:
            schemas = list(patterns.values())
            if any(s != schemas[0] for s in schemas):
                reason = "patterns with different schemas"
                self.unsupported("patternProperties", where(norm, "patternProperties", at), reason)
            clash = [n for n in names for p in patterns if re.search(p, n)]
            if clash:
                self.unsupported(
                    "patternProperties",
                    where(norm, "patternProperties", at),
                    f"a pattern also matches property {clash[0]!r}",
                )
            out = []
            for p, s in patterns.items():
                key_at = f"{at}/patternProperties/{escape(p)}"
                out.append((lambda p=p, key_at=key_at: self._pattern_key(p, key_at), s, key_at))
            return out
        if extra is False:
            return []
        return [(lambda: self._other_key(names), extra, f"{at}/additionalProperties")]

    def _pattern_key(self, pattern: str, key_at: str) -> Fragment:
        try:
            content = add_string_pattern(self.nfa, pattern)
        except UnsupportedPattern as exc:
            self.unsupported("patternProperties", key_at, str(exc))
            return self.nothing()
        return self.seq(self.lit(b'"'), content, self.lit(b'"'))

    def _other_key(self, names: list[str]) -> Fragment:
        """A key spelled without escapes whose text is none of ``names``.

        A trie over ``names`` whose every node may leave it by a character no name
        continues with, into one shared ``free`` loop (any key characters, then ``"``).
        Nodes are built when reached; the loop and its non-ASCII entry are built once
        per key, because a token walk from a key's start reaches every node one token
        long, for every gap of every object."""
        start, quote, end, free = self.new(), self.new(), self.new(), self.new()
        self.nfa.edges[start].append((0x22, 0x22, quote))
        builder = JsonStringBuilder(self.nfa)
        s, e = builder.raw_chars(_RAW_KEY_CHARS)
        self.link(free, s)
        self.link(e, free)
        self.nfa.edges[free].append((0x22, 0x22, end))
        wide, wide_end = builder.raw_chars([(0x80, MAX_UNICODE)])
        self.link(wide_end, free)
        first, _ = self.nfa.defer(lambda: self._key_node("", frozenset(names), end, free, wide))
        self.link(quote, first)
        return start, end

    def _key_node(self, prefix: str, names: frozenset[str], end: int, free: int, wide: int) -> Fragment:
        """Key text after ``prefix`` (a prefix of some name): children follow the names,
        any other character leaves them for ``free``; ``"`` ends unless ``prefix`` is a name."""
        builder = JsonStringBuilder(self.nfa)
        state, dead_end = self.new(), self.new()
        nexts = sorted({n[len(prefix)] for n in names if n.startswith(prefix) and len(n) > len(prefix)})
        for ch in nexts:
            s, e = builder.raw_chars([(ord(ch), ord(ch))])
            self.link(state, s)
            child, _ = self.nfa.defer(lambda ch=ch: self._key_node(prefix + ch, names, end, free, wide))
            self.link(e, child)
        others = _negate([(ord(c), ord(c)) for c in nexts] + [(0, 0x1F), (0x22, 0x22), (0x5C, 0x5C)])
        if any(ord(c) >= 0x80 for c in nexts):  # a name goes on with a non-ASCII character
            s, e = builder.raw_chars(others)
            self.link(state, s)
            self.link(e, free)
        else:  # ASCII exits are single bytes; every non-ASCII character exits
            for lo, hi in others:
                if lo < 0x80:
                    self.nfa.edges[state].append((lo, min(hi, 0x7F), free))
            self.link(state, wide)
        if prefix not in names:
            self.nfa.edges[state].append((0x22, 0x22, end))
        return state, dead_end


def where(norm: Mapping[str, Any], key: str, at: str) -> str:
    """The JSON pointer of ``key`` in the schema it came from (through ``$ref``/``allOf``)."""
    origin = getattr(norm, "origin", {}).get(key, at)
    return f"{origin}/{escape(key)}"


def _bound(inclusive: Any, exclusive: Any, lower: bool) -> tuple[Any, bool]:
    """The tighter of an inclusive and an exclusive bound: (value or None, is_exclusive)."""
    a = inclusive if _is_number(inclusive) else None
    b = exclusive if _is_number(exclusive) else None
    if a is None or b is None:
        return (a, False) if b is None else (b, True)
    return (b, True) if (b >= a if lower else b <= a) else (a, False)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_kinds(norm: Mapping[str, Any]) -> set[str] | None:
    if "const" in norm:
        return {_kind(norm["const"])}
    if isinstance(norm.get("enum"), list):
        return {_kind(v) for v in norm["enum"]}
    t = norm.get("type")
    if t is None or norm is FALSE:
        return None
    names = [t] if isinstance(t, str) else list(t)
    return {"number" if x == "integer" else x for x in names}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


# Every format some JSON Schema draft defines (draft 3 to 2020-12). A format outside
# these and outside the validator's checkers (``int32``, ``topic``) has no definition
# anywhere, so no validator checks it: it stays an annotation, as the drafts say.
DEFINED_FORMATS = frozenset(
    {
        "date-time", "date", "time", "duration", "email", "idn-email", "hostname",
        "idn-hostname", "ipv4", "ipv6", "uri", "uri-reference", "iri", "iri-reference",
        "uuid", "uri-template", "json-pointer", "relative-json-pointer", "regex",
        "utc-millisec", "color", "style", "phone", "host-name", "ip-address",
    }
)  # fmt: skip


@functools.cache
def _known_formats() -> frozenset[str]:
    import jsonschema

    return frozenset(jsonschema.FormatChecker().checkers)
