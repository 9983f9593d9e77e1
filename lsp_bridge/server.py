"""``stencil serve``: a language server (pygls) giving editors constrained completions.

* Documents stay in sync through incremental ``didOpen``/``didChange``/``didClose``
  (pygls's workspace); each open document gets a :class:`lsp_bridge.sessions.DocumentSession`.
* ``textDocument/inlineCompletion`` (LSP 3.18, VS Code) and ``textDocument/completion``
  (every other editor) answer with one constrained completion from
  :class:`lsp_bridge.engine.Engine`, generated in a worker thread: the message loop never
  waits on the model. A newer request or an edit of the same document supersedes a
  generation in flight, and ``$/cancelRequest`` stops it within one decoding step.
* ``workspace/executeCommand`` ``stencil.generate``: structured generation with an
  explicit ``grammar``, ``json_schema`` or ``regex``; returns ``{text, valid, finish_reason}``.
  ``stencil.documentText`` (the server's copy of a document) and ``stencil.status``
  (documents, sessions, memory) are for clients and tests.
* Settings come from ``initializationOptions`` and ``workspace/didChangeConfiguration``;
  the model is loaded after ``initialized`` with ``window/workDoneProgress``.

The server reads the documents the client sends (and, for jedi, the project on disk);
it never writes files and never runs the user's code.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from lsp_bridge.engine import LANGUAGES, Completion, Engine
from lsp_bridge.protocol import StencilProtocol, parse_error
from lsp_bridge.sessions import SessionPool
from lsp_bridge.settings import Settings
from plugin.errors import StencilError

log = logging.getLogger("stencil.lsp")
COMMAND_GENERATE = "stencil.generate"
COMMAND_DOCUMENT_TEXT = "stencil.documentText"
COMMAND_STATUS = "stencil.status"
_LANGUAGE_IDS = {"python": "python", "json": "json", "jsonc": "json", "sql": "sql"}
_SUFFIXES = {".py": "python", ".json": "json", ".sql": "sql"}
IDLE_SECONDS = 1.0  # a pause this long lets a document's cache be re-encoded


class StencilServer(LanguageServer):
    """The server's state: settings, the engine, the sessions, the generation threads."""

    def __init__(self) -> None:
        super().__init__(
            "stencil",
            "0.1.0",
            protocol_cls=StencilProtocol,
            text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental,
        )
        self.settings = Settings()
        self.engine = Engine(self.settings)
        self.sessions = SessionPool(self.settings.max_sessions)
        self.generations = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stencil-generate")
        self._idle: dict[str, asyncio.TimerHandle] = {}  # pending idle refreshes by document URI

    def quiet(self, uri: str) -> None:
        """Activity on ``uri``: its pending idle refresh waits for the next pause."""
        handle = self._idle.pop(uri, None)
        if handle is not None:
            handle.cancel()

    def refresh_when_idle(self, uri: str) -> None:
        """After ``IDLE_SECONDS`` without edits or requests for ``uri``, re-encode its cache in
        the generation thread if ``refresh_every`` edits reached it (PIE's suffix keys and
        values drift from a full encode as edits pile up; see plugin.kv)."""
        self.quiet(uri)
        every = self.settings.refresh_every
        if every < 1:
            return

        def refresh() -> None:
            session = self.sessions.peek(uri)
            if session is None:
                return
            try:
                if session.refresh_if_stale(every):
                    log.info("re-encoded the cache of %s after %d edits", uri, every)
            except Exception:  # a failed refresh leaves the old cache, still in step with its text
                log.exception("idle refresh of %s failed", uri)

        def submit() -> None:
            self._idle.pop(uri, None)
            self.generations.submit(refresh)

        self._idle[uri] = asyncio.get_running_loop().call_later(IDLE_SECONDS, submit)

    def report_server_error(self, error: Exception, source: Any) -> None:
        """A message that is not JSON gets its ParseError response (see
        :mod:`lsp_bridge.protocol`); other errors as pygls reports them."""
        parse = parse_error(error)
        if parse is not None:
            self.protocol.answer_unreadable(parse)
            return
        super().report_server_error(error, source)

    def configure(self, raw: Any, where: str) -> None:
        try:
            self.settings = self.settings.updated(raw, where)
        except StencilError as exc:
            self.window_show_message(lsp.ShowMessageParams(lsp.MessageType.Error, f"Stencil: {exc}"))
            return
        self.engine.configure(self.settings)
        self.sessions.resize(self.settings.max_sessions)

    def language_of(self, uri: str, language_id: str | None) -> str | None:
        if language_id in _LANGUAGE_IDS:
            return _LANGUAGE_IDS[language_id]
        return _SUFFIXES.get(Path(urlparse(uri).path).suffix)

    def root(self) -> Path | None:
        root = self.workspace.root_path
        return Path(root) if root else None


server = StencilServer()


def _path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


def _document(ls: StencilServer, uri: str) -> Any:
    if uri not in ls.workspace.text_documents:
        raise JsonRpcInvalidParams(f"document {uri} is not open (send textDocument/didOpen first)")
    return ls.workspace.get_text_document(uri)


def _offset(doc: Any, position: lsp.Position) -> int:
    lines = doc.lines
    if position.line < 0 or position.character < 0 or position.line > len(lines):
        raise JsonRpcInvalidParams(f"position {position.line}:{position.character} is outside {doc.uri}")
    if position.line < len(lines):
        line = lines[position.line].rstrip("\r\n")
        units = len(line.encode("utf-16-le")) // 2
        if position.character > units:
            raise JsonRpcInvalidParams(
                f"position {position.line}:{position.character} is past the end of line {position.line} "
                f"({units} characters)"
            )
    elif position.character > 0:
        raise JsonRpcInvalidParams(f"position {position.line}:{position.character} is outside {doc.uri}")
    return doc.offset_at_position(position)


async def _complete(ls: StencilServer, uri: str, position: lsp.Position) -> Completion | None:
    doc = _document(ls, uri)
    language = ls.language_of(uri, doc.language_id)
    if language is None:
        return None
    offset = _offset(doc, position)
    text = doc.source
    session = ls.sessions.get(uri, language)
    ls.quiet(uri)
    if not session.following:  # evicted earlier, or opened before the server knew its language
        session.opened(text)
    stop = session.start()
    path = _path(uri)
    root = ls.root()
    if path is not None and (root is None or not path.is_relative_to(root)):
        root = path.parent
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(
            ls.generations,
            lambda: ls.engine.complete(
                language=language, text=text, offset=offset, path=path, root=root, stop=stop, session=session
            ),
        )
    except asyncio.CancelledError:
        stop.set()
        raise
    except StencilError as exc:
        raise JsonRpcException(str(exc), code=lsp.LSPErrorCodes.RequestFailed.value) from None
    finally:
        session.finish(stop)
        ls.refresh_when_idle(uri)


@server.feature(lsp.INITIALIZE)
def _initialize(ls: StencilServer, params: lsp.InitializeParams) -> None:
    ls.configure(params.initialization_options, "initializationOptions")


@server.feature(lsp.INITIALIZED)
async def _initialized(ls: StencilServer, params: lsp.InitializedParams) -> None:
    """Load the model now (not at the first completion), with ``window/workDoneProgress``
    when the client supports it."""
    caps = ls.client_capabilities.window
    token: str | None = None
    if caps is not None and caps.work_done_progress:
        token = str(uuid.uuid4())
        try:
            await ls.work_done_progress.create_async(token)
            ls.work_done_progress.begin(
                token, lsp.WorkDoneProgressBegin(title="Stencil", message="loading model")
            )
        except Exception:  # a client that refuses progress still gets a server
            token = None
    try:
        await asyncio.get_running_loop().run_in_executor(ls.generations, ls.engine.model)
        message = "model ready"
    except StencilError as exc:
        message = f"model failed to load: {exc}"
        ls.window_show_message(lsp.ShowMessageParams(lsp.MessageType.Error, f"Stencil: {message}"))
    if token is not None:
        ls.work_done_progress.end(token, lsp.WorkDoneProgressEnd(message=message))


@server.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)
def _configuration(ls: StencilServer, params: lsp.DidChangeConfigurationParams) -> None:
    ls.configure(params.settings, "settings")


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def _opened(ls: StencilServer, params: lsp.DidOpenTextDocumentParams) -> None:
    doc = params.text_document
    language = ls.language_of(doc.uri, doc.language_id)
    if language is not None:
        ls.sessions.get(doc.uri, language).opened(doc.text)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def _changed(ls: StencilServer, params: lsp.DidChangeTextDocumentParams) -> None:
    """Each change becomes an edit of the document's KV cache (applied at the next completion)."""
    uri = params.text_document.uri
    ls.quiet(uri)
    session = ls.sessions.peek(uri)
    if session is not None:
        session.changed(list(params.content_changes), ls.workspace.get_text_document(uri).source)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def _closed(ls: StencilServer, params: lsp.DidCloseTextDocumentParams) -> None:
    ls.quiet(params.text_document.uri)
    ls.sessions.close(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=[".", " ", "("]))
async def _completion(ls: StencilServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    found = await _complete(ls, params.text_document.uri, params.position)
    if found is None or not found.text:
        return lsp.CompletionList(is_incomplete=True, items=[])
    pos = params.position
    item = lsp.CompletionItem(
        label=found.text.strip() or found.text,
        kind=lsp.CompletionItemKind.Text,
        detail=f"Stencil ({found.finish_reason}, {found.tokens} tokens, {found.seconds * 1e3:.0f} ms)",
        text_edit=lsp.TextEdit(range=lsp.Range(pos, pos), new_text=found.text),
        filter_text=found.text.strip(),
        sort_text="0",
        data=_timings(found),
    )
    return lsp.CompletionList(is_incomplete=True, items=[item])


def _timings(found: Completion) -> dict[str, Any]:
    """What the server measured, for clients and the latency bench (bench/lsp_latency.py)."""
    return {
        "tokens": found.tokens,
        "finish_reason": found.finish_reason,
        "seconds": found.seconds,
        "first_token_seconds": found.first_token_seconds,
        "prompt_tokens": found.stats.get("prompt_tokens"),
        "prefill_seconds": found.stats.get("prefill_seconds"),
        "cached_prompt_tokens": found.stats.get("cached_prompt_tokens"),
        "edit_seconds": found.stats.get("edit_seconds"),
        "constraint_build_seconds": found.stats.get("constraint_build_seconds"),
    }


@server.feature(lsp.TEXT_DOCUMENT_INLINE_COMPLETION, lsp.InlineCompletionOptions())
async def _inline(ls: StencilServer, params: lsp.InlineCompletionParams) -> lsp.InlineCompletionList:
    found = await _complete(ls, params.text_document.uri, params.position)
    if found is None or not found.text:
        return lsp.InlineCompletionList(items=[])
    pos = params.position
    return lsp.InlineCompletionList(
        items=[lsp.InlineCompletionItem(insert_text=found.text, range=lsp.Range(pos, pos))]
    )


@server.command(COMMAND_GENERATE)
async def _generate(ls: StencilServer, *args: Any) -> dict[str, Any]:
    """``stencil.generate`` with one object: ``prompt`` and one of ``grammar``,
    ``json_schema``, ``regex``; optional ``max_tokens``, ``sampler``, ``temperature``."""
    request = args[0] if len(args) == 1 and isinstance(args[0], dict) else None
    if request is None or not isinstance(request.get("prompt"), str):
        raise JsonRpcInvalidParams(f"{COMMAND_GENERATE} takes one object with a string 'prompt'")
    allowed = {"prompt", "grammar", "json_schema", "regex", "max_tokens", "sampler", "temperature", "seed"}
    unknown = set(request) - allowed
    if unknown:
        raise JsonRpcInvalidParams(f"{COMMAND_GENERATE}: unknown field(s) {', '.join(sorted(unknown))}")
    stop = threading.Event()

    def run() -> dict[str, Any]:
        from plugin.api import constrained_generate

        model, tokenizer = ls.engine.model()
        gen = constrained_generate(
            model,
            tokenizer,
            request["prompt"],
            grammar=request.get("grammar"),
            json_schema=request.get("json_schema"),
            regex=request.get("regex"),
            sampler=request.get("sampler", ls.settings.sampler),
            max_new_tokens=request.get("max_tokens", 256),
            temperature=request.get("temperature", 0.0),
            seed=request.get("seed"),
            should_stop=stop.is_set,
        )
        return {
            "text": gen.text,
            "valid": gen.valid,
            "finish_reason": gen.finish_reason,
            "tokens": len(gen.token_ids),
        }

    try:
        return await asyncio.get_running_loop().run_in_executor(ls.generations, run)
    except asyncio.CancelledError:
        stop.set()
        raise
    except StencilError as exc:
        raise JsonRpcInvalidParams(str(exc)) from None


@server.command(COMMAND_DOCUMENT_TEXT)
def _document_text(ls: StencilServer, *args: Any) -> str:
    """``stencil.documentText`` with a URI: the server's copy of an open document (for
    clients and tests checking that incremental sync kept it right)."""
    if len(args) != 1 or not isinstance(args[0], str):
        raise JsonRpcInvalidParams(f"{COMMAND_DOCUMENT_TEXT} takes one document URI")
    return _document(ls, args[0]).source


@server.command(COMMAND_STATUS)
def _status(ls: StencilServer, *args: Any) -> dict[str, Any]:
    """``stencil.status``: what the server holds (open documents, sessions and their
    cap, each document's edit-aware KV cache: tokens, edits applied, tokens encoded and
    re-rotated, rebuilds; whether the model is loaded, peak resident memory), for clients
    and tests."""
    try:
        import resource

        peak: int | None = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    except ImportError:  # Windows
        peak = None
    caches = {}
    for uri, session in ls.sessions.items():
        cache = session.cache
        if cache is None:
            continue
        doc = ls.workspace.text_documents.get(uri)
        caches[uri] = {
            "tokens": len(cache.token_ids),
            "window": list(cache.window),
            "in_step": doc is not None and doc.source == cache.text,
            "resyncs": session.stats["resyncs"],
            "refreshes": cache.stats["refreshes"],
            "merged_edits": session.stats["merged_edits"],
            **{k: cache.stats[k] for k in ("edits", "tokens_encoded", "tokens_rerotated", "rotation")},
        }
    return {
        "open_documents": len(ls.workspace.text_documents),
        "sessions": len(ls.sessions),
        "edit_caches": caches,
        "max_sessions": ls.sessions.capacity,
        "model_loaded": ls.engine.loaded,
        "peak_rss_bytes": peak,
    }


def serve(tcp: str | None = None) -> None:
    """Run the server on stdio, or on ``HOST:PORT`` for debugging."""
    if tcp is None:
        server.start_io()
        return
    host, _, port = tcp.rpartition(":")
    server.start_tcp(host or "127.0.0.1", int(port))


__all__ = [
    "COMMAND_DOCUMENT_TEXT",
    "COMMAND_GENERATE",
    "COMMAND_STATUS",
    "LANGUAGES",
    "StencilServer",
    "serve",
    "server",
]
