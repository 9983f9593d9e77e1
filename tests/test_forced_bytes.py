"""``Matcher.forced_bytes``: the text a constraint leaves no choice about (what the
speculative constraint drafter spells), on the JSON Schema automaton and the Lark
grammar engine, as a property over random valid texts: every token the constraint
allows agrees with the forced bytes (one is a prefix of the other), and a text that
leaves them out is refused."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grammars.json_schema import compile_json_schema
from grammars.lark_compile import compile_grammar
from plugin.matcher import Layout

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "customer_id": {"type": "string"},
        "premium": {"type": "boolean"},
        "member_since": {"type": "integer"},
    },
    "required": ["name", "customer_id", "premium", "member_since"],
}
RECORD = st.fixed_dictionaries(
    {
        "name": st.text(alphabet="abc XYZ", max_size=6),
        "customer_id": st.text(alphabet="C-0123", max_size=5),
        "premium": st.booleans(),
        "member_since": st.integers(0, 3000),
    }
)


@pytest.fixture(scope="module")
def json_route(default_tokenizer):
    return compile_json_schema(SCHEMA, default_tokenizer, whitespace="[ ]?", extra_properties="declared")


@pytest.fixture(scope="module")
def sql_route(default_tokenizer):
    return compile_grammar("sql", default_tokenizer)


def _check_along(route, tokenizer, text: str) -> int:
    """Walk ``text``'s tokens; at every state check the property. Returns how many
    states forced at least one byte."""
    matcher = route.matcher()
    vocab = matcher.vocab
    forcing = 0
    for token in tokenizer(text, add_special_tokens=False).input_ids:
        forced = matcher.forced_bytes()
        if forced:
            forcing += 1
            data = vocab.token_bytes[token]
            assert data.startswith(forced) or forced.startswith(data), (forced, data)
            wrong = bytes([forced[0] ^ 0x01])  # a first byte the forced text rules out
            refused = [t for t in vocab.text_tokens().get(wrong, ()) if matcher.accepts(t)]
            assert not refused, (forced, wrong)
        matcher.advance(token)
    return forcing


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=RECORD, spaced=st.booleans())
def test_json_forced_bytes_agree_with_every_allowed_token(json_route, default_tokenizer, record, spaced):
    ordered = {key: record[key] for key in SCHEMA["properties"]}  # the route keeps the declared order
    text = json.dumps(ordered, separators=(", ", ": ") if spaced else (",", ":"))
    assert _check_along(json_route, default_tokenizer, text) >= 4  # the keys at least


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    column=st.sampled_from(["name", "age", "country", "*"]),
    table=st.sampled_from(["singer", "concert"]),
    limit=st.integers(1, 99),
)
def test_sql_forced_bytes_agree_with_every_allowed_token(sql_route, default_tokenizer, column, table, limit):
    text = f"SELECT {column} FROM {table} ORDER BY {column if column != '*' else 'id'} LIMIT {limit}"
    _check_along(sql_route, default_tokenizer, text)


def test_layout_guesses_the_blank_the_text_used(json_route, default_tokenizer):
    """After ``{"name": "x", `` the key's closing quote is forced; the blank after the colon
    is a choice, which the layout guesses from how the text so far did it."""
    tokenizer = default_tokenizer
    matcher = json_route.matcher()
    text = '{"name": "x", "c'
    for token in tokenizer(text, add_special_tokens=False).input_ids:
        matcher.advance(token)
    assert matcher.forced_bytes() == b'ustomer_id"'
    layout = Layout()
    layout.read(text.encode())
    assert matcher.forced_bytes(layout) == b'ustomer_id": "'  # a space after ":", as before
    compact = Layout()
    compact.read(b'{"name":"x","c')
    assert matcher.forced_bytes(compact) == b'ustomer_id":"'
    assert Layout().pick([ord(" "), ord("a"), ord("b")], ord(":")) is None  # not a blank-or-one choice
