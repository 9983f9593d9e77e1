"""JSON Schema: clear errors, honest refusal of unenforced keywords, no false accepts."""

from __future__ import annotations

import json
import warnings

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grammars.json_schema import compile_json_schema, iter_dropped
from plugin.errors import OptionError, SchemaError, UnsupportedSchemaError
from tests.conftest import shared_path


def accepts_text(compiled, tokenizer, text: str) -> bool:
    m = compiled.matcher()
    for i in tokenizer(text, add_special_tokens=False).input_ids:
        if not m.accepts(i):
            return False
        m.advance(i)
    return m.is_accepting()


@pytest.mark.parametrize(
    ("schema", "keyword", "pointer"),
    [
        ({"type": "number", "multipleOf": 0.5}, "multipleOf", "/multipleOf"),
        (
            {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 3}}},
            "multipleOf",
            "/properties/n/multipleOf",
        ),
        ({"type": "array", "uniqueItems": True}, "uniqueItems", "/uniqueItems"),
        (
            {"type": "object", "patternProperties": {"^x": {"type": "string"}, "^y": {}}},
            "patternProperties",
            "/patternProperties",
        ),
        ({"not": {"type": "string"}}, "not", "/not"),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "oneOf", "/oneOf"),
        ({"allOf": [{"type": "string", "pattern": "a"}, {"pattern": "b"}]}, "allOf", "/allOf"),
        ({"type": "string", "format": "idn-hostname"}, "format", "/format"),
        # a format a later draft defines, in a draft-04 schema (no draft-04 checker exists)
        (
            {"$schema": "http://json-schema.org/draft-04/schema#", "type": "string", "format": "iri"},
            "format",
            "/format",
        ),
        ({"type": "object", "properties": {"d": {"format": "duration"}}}, "format", "/properties/d/format"),
        (
            {"$defs": {"p": {"type": "number", "multipleOf": 3}}, "$ref": "#/$defs/p"},
            "multipleOf",
            "/$defs/p/multipleOf",
        ),
        ({"type": "object", "propertyNames": {"maxLength": 3}}, "propertyNames", "/propertyNames"),
        ({"type": "string", "pattern": "(?=a)"}, "pattern", "/pattern"),
        ({"if": {"type": "string"}, "then": {"maxLength": 3}}, "if", "/if"),
        (
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"format": "idn-email", "type": "string"}],
            },
            "format",
            "/prefixItems/1/format",
        ),
    ],
)
def test_unenforced_keywords_are_refused_with_their_pointer(default_tokenizer, schema, keyword, pointer):
    with pytest.raises(UnsupportedSchemaError) as info:
        compile_json_schema(schema, default_tokenizer)
    assert info.value.keyword == keyword
    assert info.value.pointer == pointer
    assert keyword in str(info.value) and pointer in str(info.value)


def test_a_format_no_draft_defines_is_an_annotation(default_tokenizer):
    """``int32`` (OpenAPI's) is defined by no JSON Schema draft, so no validator checks
    it: the schema compiles and the format constrains nothing."""
    c = compile_json_schema({"type": "string", "format": "int32"}, default_tokenizer)
    m = c.matcher()
    for t in default_tokenizer.encode('"not a number"', add_special_tokens=False):
        m.advance(t)
    assert m.is_accepting()


def test_non_strict_drops_with_a_warning_naming_the_keyword(default_tokenizer):
    schema = {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 3}}, "required": ["n"]}
    assert list(iter_dropped(schema)) == [("multipleOf", "/properties/n/multipleOf")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compile_json_schema(schema, default_tokenizer, strict=False)
    messages = [str(w.message) for w in caught]
    assert any("'multipleOf'" in m and "/properties/n/multipleOf" in m for m in messages)


@pytest.mark.parametrize(
    ("schema", "message", "pointer"),
    [
        ({"type": "strng"}, "not a valid JSON Schema", "/type"),
        ({"$ref": "#/$defs/missing"}, "does not resolve", "/$ref"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "unsatisfiable", ""),
        ({"type": "string", "minLength": 5, "maxLength": 1}, "unsatisfiable", ""),
        ({"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 2}, "no integer lies in 2..1", ""),
        (
            {"type": "object", "properties": {}, "required": ["a"], "additionalProperties": False},
            "forbidden",
            "",
        ),
    ],
)
def test_invalid_schemas_get_schema_error_with_pointer(default_tokenizer, schema, message, pointer):
    with pytest.raises(SchemaError, match=message) as info:
        compile_json_schema(schema, default_tokenizer)
    assert info.value.pointer == pointer


def test_schema_as_json_text_pydantic_and_bad_json(default_tokenizer):
    from pydantic import BaseModel

    class Point(BaseModel):
        x: int
        y: int

    compiled = compile_json_schema(Point, default_tokenizer)
    assert accepts_text(compiled, default_tokenizer, '{"x": 1, "y": -2}')
    compiled = compile_json_schema('{"type": "boolean"}', default_tokenizer)
    assert accepts_text(compiled, default_tokenizer, "true")
    with pytest.raises(SchemaError, match="line 1 column"):
        compile_json_schema('{"type": ', default_tokenizer)


def test_whitespace_modes(default_tokenizer):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    flexible = compile_json_schema(schema, default_tokenizer)
    compact = compile_json_schema(schema, default_tokenizer, whitespace="compact")
    assert accepts_text(flexible, default_tokenizer, '{ "a" :\n 1 }')
    assert accepts_text(flexible, default_tokenizer, json.dumps({"a": 1}))
    assert accepts_text(compact, default_tokenizer, '{"a":1}')
    assert not accepts_text(compact, default_tokenizer, '{"a": 1}')


def test_disjoint_one_of_is_enforced(default_tokenizer):
    schema = {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "integer"}]}
    compiled = compile_json_schema(schema, default_tokenizer)
    assert accepts_text(compiled, default_tokenizer, '"abc"')
    assert accepts_text(compiled, default_tokenizer, "42")
    assert not accepts_text(compiled, default_tokenizer, "4.5")


def _maskbench_sample(n: int, stride: int) -> list:
    files = sorted(shared_path("maskbench").glob("*.json"))
    return files[::stride][:n]


@pytest.mark.shared_data
def test_maskbench_no_instance_accepted_that_jsonschema_rejects(default_tokenizer):
    """Invalidation errors must be zero: every accepted instance validates.

    Each MaskBench instance is serialized with ``json.dumps`` (its protocol) and walked
    token by token; schemas we refuse must be refused with our clear errors.
    """
    from plugin.errors import StencilError

    compiled_count = 0
    for path in _maskbench_sample(60, 45):
        case = json.loads(path.read_text())
        try:
            compiled = compile_json_schema(case["schema"], default_tokenizer)
        except StencilError:
            continue
        compiled_count += 1
        # the schema's draft, with that draft's format checker (FormatChecker() mixes drafts)
        cls = jsonschema.validators.validator_for(case["schema"], default=jsonschema.Draft202012Validator)
        validator = cls(case["schema"], format_checker=cls.FORMAT_CHECKER)
        for test in case["tests"]:
            if accepts_text(compiled, default_tokenizer, json.dumps(test["data"])):
                assert validator.is_valid(test["data"]), (path.name, test["data"])
    assert compiled_count >= 20


def test_all_of_in_a_definition_is_merged(default_tokenizer):
    """``allOf`` branches are intersected (outlines-core's builder concatenated them and
    accepted "12" here); the caller's schema is not changed."""
    schema = {
        "$defs": {"n": {"allOf": [{"type": "integer"}, {"type": "integer", "maximum": 9}]}},
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/n"}},
        "required": ["a"],
    }
    compiled = compile_json_schema(schema, default_tokenizer)
    assert not accepts_text(compiled, default_tokenizer, '{"a": 12}')
    assert accepts_text(compiled, default_tokenizer, '{"a": 7}')
    assert "allOf" in schema["$defs"]["n"]  # the caller's schema is left untouched


def test_date_time_needs_its_offset_and_dates_their_month_lengths(default_tokenizer):
    """Found by bench/maskbench.py: the regex builder's date-time took "2022-01-01T12:00:00"
    (no offset), which RFC 3339 and MaskBench reject."""
    from grammars.json_schema import compile_json_schema

    c = compile_json_schema({"type": "string", "format": "date-time"}, default_tokenizer)
    for text, ok in [
        ('"2022-01-01T12:00:00Z"', True),
        ('"2022-01-01T12:00:00.5+02:00"', True),
        ('"2022-01-01T12:00:00"', False),
        ('"2022-01-01 12:00:00Z"', False),
        ('"2022-02-30T12:00:00Z"', False),
    ]:
        m = c.matcher()
        ids = default_tokenizer.encode(text, add_special_tokens=False)
        accepted = all(m.accepts(t) and (m.advance(t) or True) for t in ids) and m.is_accepting()
        assert accepted == ok, text


def test_enum_values_of_the_wrong_type_are_not_generated(default_tokenizer):
    """Found by bench/maskbench.py: {"enum": [strings], "type": "object"} allows nothing."""
    from grammars.json_schema import compile_json_schema

    schema = {
        "type": "object",
        "properties": {"b": {"enum": ["X", "Y"], "type": "object"}},
        "required": ["b"],
    }
    with pytest.raises(SchemaError, match="required property 'b' allows no value") as info:
        compile_json_schema(schema, default_tokenizer)
    assert info.value.pointer == "/properties/b"
    # optional, it can never appear: the route leaves it out (so does `"c": false`)
    optional = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": schema["properties"]["b"], "c": False},
    }
    m = compile_json_schema(optional, default_tokenizer, whitespace="compact").matcher()
    for t in default_tokenizer.encode('{"a":1}', add_special_tokens=False):
        assert m.accepts(t)
        m.advance(t)
    assert m.is_accepting()
    m = compile_json_schema(optional, default_tokenizer, whitespace="compact").matcher()
    refused = False
    for t in default_tokenizer.encode('{"b"', add_special_tokens=False):
        if not m.accepts(t):
            refused = True
            break
        m.advance(t)
    assert refused
    mixed = compile_json_schema({"enum": ["X", 3], "type": "integer"}, default_tokenizer)
    assert mixed.matcher().accepts(default_tokenizer.encode("3", add_special_tokens=False)[0])
    assert not mixed.matcher().accepts(default_tokenizer.encode('"', add_special_tokens=False)[0])


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("email", '"ann.lee@example.co.uk"', '"",@forward.io"'),
        ("uri", '"https://example.com/a?b=1"', '"http://a b"'),
        ("uuid", '"123e4567-e89b-12d3-a456-426614174000"', '"123e4567"'),
        ("ipv4", '"192.168.0.255"', '"192.168.00.1"'),
        ("ipv6", '"2001:db8:0:0:0:0:2:1"', '"2001:db8::g"'),
        ("hostname", '"api.example.com"', '"-bad-.example.com"'),
    ],
)
def test_formats_stay_inside_the_json_string(default_tokenizer, fmt, good, bad):
    """Found with AWRS on the default model: the regex builder's email pattern let '"'
    and ',' into the value, so the output was not JSON."""
    from grammars.json_schema import compile_json_schema

    c = compile_json_schema({"type": "string", "format": fmt}, default_tokenizer)
    for text, ok in ((good, True), (bad, False)):
        m = c.matcher()
        ids = default_tokenizer.encode(text, add_special_tokens=False)
        accepted = all(m.accepts(t) and (m.advance(t) or True) for t in ids) and m.is_accepting()
        assert accepted == ok, text


@pytest.mark.parametrize("fmt", ["ipv4", "ipv6", "hostname", "email", "uuid", "date", "date-time"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_format_patterns_only_produce_what_the_checkers_accept(fmt, data):
    """Every string our format pattern allows passes jsonschema's checker (where one is
    installed) or, for hostname, RFC 1123's label rules and a letters-only last label;
    dates and date-times also parse with Python's ``datetime``."""
    import re as re_

    from grammars.json_schema import _FORMAT_PATTERNS

    text = data.draw(st.from_regex(_FORMAT_PATTERNS[fmt], fullmatch=True))
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    if fmt in checker.checkers:
        assert checker.conforms(text, fmt), text
    if fmt in ("date", "date-time"):
        import datetime

        (datetime.date if fmt == "date" else datetime.datetime).fromisoformat(text.replace("Z", "+00:00"))
    if fmt == "hostname":
        labels = text.split(".")
        assert len(text) <= 253 and labels[-1].isalpha()
        assert all(
            re_.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?", x) and len(x) <= 63 for x in labels
        )


@settings(max_examples=150, deadline=None)
@given(
    lo=st.none() | st.integers(-3000, 3000),
    span=st.none() | st.integers(0, 4000),
    exclusive=st.booleans(),
    value=st.integers(-10_000, 10_000),
)
def test_integer_bounds_accept_exactly_the_integers_jsonschema_accepts(
    default_vocab, lo, span, exclusive, value
):
    """A bounded integer schema against jsonschema on the same number, for inclusive and
    exclusive bounds, one-sided and two-sided (and negative numbers)."""
    schema: dict = {"type": "integer"}
    if lo is not None:
        schema["exclusiveMinimum" if exclusive else "minimum"] = lo
    if span is not None:
        schema["exclusiveMaximum" if exclusive else "maximum"] = (lo or 0) + span + (1 if exclusive else 0)
    try:
        compiled = compile_json_schema(schema, default_vocab, whitespace="compact")
    except SchemaError:
        return  # an empty range, said so
    valid = jsonschema.Draft202012Validator(schema).is_valid(value)
    assert accepts_bytes(compiled, json.dumps(value).encode()) == valid, (schema, value)
    assert not accepts_bytes(compiled, b"01")


@settings(max_examples=150, deadline=None)
@given(
    lo=st.none() | st.sampled_from([-10, -1, -0.5, 0, 0.5, 1, 2.5, 100]),
    hi=st.none() | st.sampled_from([-10, -1, 0, 0.25, 1, 3, 99.5, 1000]),
    exclusive=st.booleans(),
    value=st.floats(-2000, 2000, allow_nan=False) | st.integers(-2000, 2000),
)
def test_number_bounds_never_accept_what_jsonschema_rejects(default_vocab, lo, hi, exclusive, value):
    """Bounded numbers (non-integer bounds tightened inward): an accepted numeral is
    valid, and integers inside integer bounds are accepted."""
    schema: dict = {"type": "number"}
    if lo is not None:
        schema["exclusiveMinimum" if exclusive else "minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    validator = jsonschema.Draft202012Validator(schema)
    try:
        compiled = compile_json_schema(schema, default_vocab, whitespace="compact")
    except SchemaError:
        return  # nothing in range, said so
    text = json.dumps(value)
    if accepts_bytes(compiled, text.encode()):
        assert validator.is_valid(value), (schema, text)
    elif (
        isinstance(value, int)
        and validator.is_valid(value)
        and all(float(b).is_integer() for b in (lo or 0, hi or 0))
    ):
        pytest.fail(f"{text} is valid for {schema} but refused")


def accepts_bytes(compiled, data: bytes) -> bool:
    """Byte-level membership (the automaton is over bytes, whatever the tokenization)."""
    from plugin.errors import PromptError

    try:
        return compiled.matcher_after(data).is_accepting()
    except PromptError:
        return False


def test_integer_bounds_in_objects_and_enums(default_tokenizer):
    schema = {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 0, "maximum": 130},
            "level": {"type": "integer", "enum": [1, 5, 9], "minimum": 5},
        },
        "required": ["age", "level"],
    }
    c = compile_json_schema(schema, default_tokenizer, whitespace="compact")
    for text, ok in (
        ('{"age":42,"level":9}', True),
        ('{"age":131,"level":9}', False),
        ('{"age":4,"level":1}', False),
    ):
        m = c.matcher()
        accepted = True
        for t in default_tokenizer.encode(text, add_special_tokens=False):
            if not m.accepts(t):
                accepted = False
                break
            m.advance(t)
        assert (accepted and m.is_accepting()) == ok, text
        assert jsonschema.Draft202012Validator(schema).is_valid(json.loads(text)) == ok


@pytest.mark.shared_data
def test_a_schema_whose_regex_would_explode_compiles_lazily(default_vocab):
    """MaskBench's audit-log schema (hundreds of optional properties through $refs): as
    one regex it was ~2 trillion characters and crashed outlines-core's builder; built
    lazily it compiles within the budget and accepts its valid instances."""
    case = json.loads(shared_path("maskbench", "Github_ultra---o13934.json").read_text())
    compiled = compile_json_schema(case["schema"], default_vocab, budget_s=30)
    validator = jsonschema.Draft202012Validator(case["schema"])
    for test in case["tests"]:
        text = json.dumps(test["data"]).encode()
        if accepts_bytes(compiled, text):
            assert validator.is_valid(test["data"])
        else:
            assert not test["valid"], "a valid instance was refused"


def test_compile_budget_raises_compile_timeout(default_vocab):
    from plugin.errors import CompileTimeout

    wide = {
        "type": "object",
        "properties": {
            f"p{i}": {
                "type": "object",
                "properties": {
                    f"q{j}": {"type": "string", "pattern": f"^{'[a-z]' * 40}$"} for j in range(60)
                },
            }
            for i in range(60)
        },
    }
    with pytest.raises(CompileTimeout, match=r"compile budget exceeded within 0\.05 s"):
        compile_json_schema(wide, default_vocab, budget_s=0.05)


def test_extra_properties_declared_keeps_to_the_listed_properties(default_tokenizer):
    listed = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a", "b"]}
    schema_mode = compile_json_schema(listed, default_tokenizer)
    declared = compile_json_schema(listed, default_tokenizer, extra_properties="declared")
    for text in ['{"a": 1, "b": 2}', '{"a": 1, "b": null}']:  # required names count as listed
        assert accepts_text(declared, default_tokenizer, text)
    assert accepts_text(schema_mode, default_tokenizer, '{"a": 1, "b": 2, "zz": 3}')
    assert not accepts_text(declared, default_tokenizer, '{"a": 1, "b": 2, "zz": 3}')
    # where the schema speaks of other properties, or lists none, "declared" follows it
    for schema, text in [
        (
            {"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "string"}},
            '{"z": "x"}',
        ),
        ({"type": "object", "properties": {"a": {}}, "patternProperties": {"^x": {}}}, '{"x1": 0}'),
        ({"type": "object"}, '{"anything": [1]}'),
    ]:
        assert accepts_text(
            compile_json_schema(schema, default_tokenizer, extra_properties="declared"),
            default_tokenizer,
            text,
        )
    with pytest.raises(OptionError, match="extra_properties"):
        compile_json_schema(listed, default_tokenizer, extra_properties="none")
