"""The language server as a subprocess over stdio, driven by pytest-lsp's real client."""

from __future__ import annotations

import ast
import asyncio
import json
import random
import sys

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient

pytestmark = pytest.mark.default_model

SOURCE = (
    "class Rect:\n    def __init__(self, w, h):\n        self.w = w\n        self.h = h\n\n"
    "    def area(self):\n        return self.w * self.h\n\n\nr = Rect(1, 2)\nprint(r."
)


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "plugin.cli", "serve"]),
)
async def client(lsp_client: LanguageClient, tmp_path):
    (tmp_path / "shapes.py").write_text(SOURCE)
    params = lsp.InitializeParams(
        capabilities=lsp.ClientCapabilities(window=lsp.WindowClientCapabilities(work_done_progress=True)),
        root_uri=tmp_path.as_uri(),
        initialization_options={"stencil": {"max_tokens": 8, "analysis_timeout": 120.0}},
    )
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


def _open(client: LanguageClient, uri: str, text: str, language: str = "python") -> None:
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri, language, 1, text)))


def _end(text: str) -> lsp.Position:
    lines = text.split("\n")
    return lsp.Position(len(lines) - 1, len(lines[-1]))


@pytest.mark.asyncio
async def test_completion_is_a_real_attribute_and_parses(client: LanguageClient, tmp_path):
    uri = (tmp_path / "shapes.py").as_uri()
    _open(client, uri, SOURCE)
    result = await client.text_document_completion_async(
        lsp.CompletionParams(lsp.TextDocumentIdentifier(uri), _end(SOURCE))
    )
    assert result.items, "no completion"
    text = result.items[0].text_edit.new_text
    ident = text.split("(")[0].split(")")[0].strip()
    assert ident in {"area", "w", "h"} or ident.startswith("__"), text
    inline = await client.text_document_inline_completion_async(
        lsp.InlineCompletionParams(
            context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Invoked),
            text_document=lsp.TextDocumentIdentifier(uri),
            position=_end(SOURCE),
        )
    )
    assert inline.items and inline.items[0].insert_text.startswith(ident)
    closing = ")" * (SOURCE.count("(") - SOURCE.count(")") - text.count("(") + text.count(")"))
    if ident == text.strip():
        ast.parse(SOURCE + text + closing + "\n")


@pytest.mark.asyncio
async def test_bad_requests_get_lsp_errors(client: LanguageClient, tmp_path):
    missing = (tmp_path / "never_opened.py").as_uri()
    with pytest.raises(Exception, match="not open"):
        await client.text_document_completion_async(
            lsp.CompletionParams(lsp.TextDocumentIdentifier(missing), lsp.Position(0, 0))
        )
    uri = (tmp_path / "shapes.py").as_uri()
    _open(client, uri, SOURCE)
    with pytest.raises(Exception, match=r"past the end of line|outside"):
        await client.text_document_completion_async(
            lsp.CompletionParams(lsp.TextDocumentIdentifier(uri), lsp.Position(0, 500))
        )
    with pytest.raises(Exception, match="prompt"):
        await client.workspace_execute_command_async(
            lsp.ExecuteCommandParams("stencil.generate", [{"grammar": "json"}])
        )
    # the server is still up
    text = await client.workspace_execute_command_async(
        lsp.ExecuteCommandParams("stencil.documentText", [uri])
    )
    assert text == SOURCE


@pytest.mark.asyncio
async def test_incremental_edits_keep_the_servers_copy_right(client: LanguageClient, tmp_path):
    uri = (tmp_path / "edited.py").as_uri()
    text = "x = 1\ny = 2\n"
    _open(client, uri, text)
    rng = random.Random(7)
    for version in range(2, 60):
        lines = text.split("\n")
        line = rng.randrange(len(lines))
        a = rng.randint(0, len(lines[line]))
        b = rng.randint(a, len(lines[line]))
        insert = rng.choice(["", "z", "é", "\n", "ab\ncd", "😀"])
        start = sum(len(s) + 1 for s in lines[:line])
        # positions in UTF-16 code units, as LSP counts them
        units = lambda s: len(s.encode("utf-16-le")) // 2  # noqa: E731
        rng_ = lsp.Range(
            lsp.Position(line, units(lines[line][:a])), lsp.Position(line, units(lines[line][:b]))
        )
        text = text[: start + a] + insert + text[start + b :]
        client.text_document_did_change(
            lsp.DidChangeTextDocumentParams(
                lsp.VersionedTextDocumentIdentifier(version=version, uri=uri),
                [lsp.TextDocumentContentChangePartial(range=rng_, text=insert)],
            )
        )
    server_copy = await client.workspace_execute_command_async(
        lsp.ExecuteCommandParams("stencil.documentText", [uri])
    )
    assert server_copy == text


@pytest.mark.asyncio
async def test_edits_reach_the_kv_cache_without_a_reencode(client: LanguageClient, tmp_path):
    uri = (tmp_path / "noted.py").as_uri()
    text = "# notes: \n" + SOURCE
    _open(client, uri, text)
    end = lambda: lsp.CompletionParams(lsp.TextDocumentIdentifier(uri), _end(text))  # noqa: E731
    await client.text_document_completion_async(end())  # encodes the document once
    rng = random.Random(3)
    for version in range(2, 22):  # typing and deleting inside the first line's comment
        line = text.split("\n")[0]
        a = rng.randint(len("# notes: "), len(line))
        b = rng.randint(a, min(len(line), a + 2))
        insert = rng.choice(["", "z", "é", "😀", "ab"])
        units = lambda s: len(s.encode("utf-16-le")) // 2  # noqa: E731
        client.text_document_did_change(
            lsp.DidChangeTextDocumentParams(
                lsp.VersionedTextDocumentIdentifier(version=version, uri=uri),
                [
                    lsp.TextDocumentContentChangePartial(
                        range=lsp.Range(lsp.Position(0, units(line[:a])), lsp.Position(0, units(line[:b]))),
                        text=insert,
                    )
                ],
            )
        )
        text = text[:a] + insert + text[b:]
    result = await client.text_document_completion_async(end())
    assert result.items and result.items[0].data["cached_prompt_tokens"] > 0
    status = await client.workspace_execute_command_async(lsp.ExecuteCommandParams("stencil.status", []))
    cache = status["edit_caches"][uri]
    assert cache["in_step"] and cache["resyncs"] == 0 and cache["edits"] >= 1
    assert cache["tokens_encoded"] < 2 * cache["tokens"]  # one encode, then edited tokens only
    assert cache["rotation"].startswith("exact") and cache["refreshes"] == 0
    await asyncio.sleep(3)  # idle: after refresh_every (4) edits the cache is re-encoded
    status = await client.workspace_execute_command_async(lsp.ExecuteCommandParams("stencil.status", []))
    assert status["edit_caches"][uri]["refreshes"] == (1 if cache["edits"] >= 4 else 0)


@pytest.mark.asyncio
async def test_generate_command_returns_valid_json(client: LanguageClient):
    out = await client.workspace_execute_command_async(
        lsp.ExecuteCommandParams(
            "stencil.generate",
            [{"prompt": "A JSON list of two numbers: ", "grammar": "json", "max_tokens": 24}],
        )
    )
    assert out["finish_reason"] in ("stop", "length")
    if out["valid"]:
        json.loads(out["text"])


PERSON = {
    "type": "object",
    "properties": {"$schema": {"type": "string"}, "name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.mark.asyncio
async def test_json_documents_follow_the_schema_they_name(client: LanguageClient, tmp_path):
    import jsonschema

    from plugin.api import build_constraint
    from plugin.models import load_tokenizer

    (tmp_path / "person.schema.json").write_text(json.dumps(PERSON))
    text = '{\n  "$schema": "./person.schema.json",\n  "name": "Ada",\n  "age": '
    uri = (tmp_path / "ada.json").as_uri()
    _open(client, uri, text, "json")
    result = await client.text_document_completion_async(
        lsp.CompletionParams(lsp.TextDocumentIdentifier(uri), _end(text))
    )
    assert result.items, "no completion"
    completed = text + result.items[0].text_edit.new_text
    # what the schema allows: the text continues to a valid document (or is one)
    build_constraint(load_tokenizer(), json_schema=PERSON, whitespace="flexible").matcher_after(completed)
    if completed.rstrip().endswith("}"):
        jsonschema.validate(json.loads(completed), PERSON)

    remote = '{"$schema": "https://example.com/person.json", "name": '
    uri = (tmp_path / "remote.json").as_uri()
    _open(client, uri, remote, "json")
    with pytest.raises(Exception, match="remote"):
        await client.text_document_completion_async(
            lsp.CompletionParams(lsp.TextDocumentIdentifier(uri), _end(remote))
        )
