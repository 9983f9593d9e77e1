"""JSON Schema: clear errors, honest refusal of unenforced keywords, no false accepts."""

from __future__ import annotations

import json
import warnings

import jsonschema
import pytest

from grammars.json_schema import compile_json_schema, iter_dropped
from plugin.errors import SchemaError, UnsupportedSchemaError
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
        ({"type": "integer", "minimum": 30}, "minimum", "/minimum"),
        (
            {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 3}}},
            "multipleOf",
            "/properties/n/multipleOf",
        ),
        ({"type": "array", "uniqueItems": True}, "uniqueItems", "/uniqueItems"),
        ({"type": "object", "patternProperties": {"^x": {}}}, "patternProperties", "/patternProperties"),
        ({"not": {"type": "string"}}, "not", "/not"),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "oneOf", "/oneOf"),
        ({"allOf": [{"type": "integer"}, {"type": "number"}]}, "allOf", "/allOf"),
        ({"type": "string", "format": "ipv4"}, "format", "/format"),
        (
            {"$defs": {"p": {"type": "integer", "maximum": 3}}, "$ref": "#/$defs/p"},
            "maximum",
            "/$defs/p/maximum",
        ),
        ({"type": "object", "required": ["x"]}, "required", "/required"),
        ({"type": "string", "pattern": "(?=a)"}, "pattern", "/pattern"),
    ],
)
def test_unenforced_keywords_are_refused_with_their_pointer(default_tokenizer, schema, keyword, pointer):
    with pytest.raises(UnsupportedSchemaError) as info:
        compile_json_schema(schema, default_tokenizer)
    assert info.value.keyword == keyword
    assert info.value.pointer == pointer
    assert keyword in str(info.value) and pointer in str(info.value)


def test_non_strict_drops_with_a_warning_naming_the_keyword(default_tokenizer):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 30}}, "required": ["n"]}
    assert list(iter_dropped(schema)) == [("minimum", "/properties/n/minimum")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compile_json_schema(schema, default_tokenizer, strict=False)
    assert any("'minimum'" in str(w.message) and "/properties/n/minimum" in str(w.message) for w in caught)


@pytest.mark.parametrize(
    ("schema", "message", "pointer"),
    [
        ({"type": "strng"}, "not a valid JSON Schema", "/type"),
        ({"$ref": "#/$defs/missing"}, "does not resolve", "/$ref"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "unsatisfiable", ""),
        ({"type": "string", "minLength": 5, "maxLength": 1}, "unsatisfiable", ""),
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
        validator = jsonschema.Draft202012Validator(case["schema"], format_checker=jsonschema.FormatChecker())
        for test in case["tests"]:
            if accepts_text(compiled, default_tokenizer, json.dumps(test["data"])):
                assert validator.is_valid(test["data"]), (path.name, test["data"])
    assert compiled_count >= 20


def test_non_strict_cleans_referenced_definitions_too(default_tokenizer):
    """A dropped keyword inside $defs must not reach the regex builder either: outlines-core
    would turn this allOf into a concatenation and accept "12" for an integer."""
    schema = {
        "$defs": {"n": {"allOf": [{"type": "integer"}, {"type": "integer", "maximum": 9}]}},
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/n"}},
        "required": ["a"],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = compile_json_schema(schema, default_tokenizer, strict=False)
    assert not accepts_text(compiled, default_tokenizer, '{"a": 12}')
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
    from plugin.errors import UnsupportedSchemaError

    schema = {
        "type": "object",
        "properties": {"b": {"enum": ["X", "Y"], "type": "object"}},
        "required": ["b"],
    }
    with pytest.raises(UnsupportedSchemaError, match="/properties/b/enum"):
        compile_json_schema(schema, default_tokenizer)
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
