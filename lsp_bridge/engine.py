"""Completions for a document at a cursor: which constraint, which prompt, one generation.

Python documents get the Python grammar in completion mode plus the jedi monitors rooted
at the workspace folder; JSON documents the schema their leading ``"$schema"`` names (a
local file), else the one set in the settings, else the JSON grammar; SQL documents the
SQL grammar plus the database monitor when a database is set. The constraint consumes
the whole text before the cursor (so indentation and open brackets are known); the
model sees its last ``context_tokens`` tokens, read from the document's edit-aware KV
cache (:class:`plugin.kv.EditSession`, owned by its :class:`DocumentSession`), so only
the edited tokens and the few after the cache's end are encoded. When the tokenizer has
fill-in-the-middle tokens (and ``fim`` is on), the model reads the prefix and the suffix
(:class:`plugin.kv.FimSession`) as long as the document fits ``context_tokens``. Runs off the server's
message loop; ``stop`` ends it between two decoding steps.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lsp_bridge.sessions import DocumentSession
from lsp_bridge.settings import LanguageSettings, Settings
from plugin.errors import OptionError
from plugin.stopping import stop_rule

LANGUAGES = ("python", "json", "sql")


@dataclass
class Completion:
    """One constrained completion: ``text`` to insert at the cursor; ``valid``: the
    constraint accepts the text before the cursor followed by it as a prefix of a valid
    document (always, unless generation was cancelled before the first token)."""

    text: str
    finish_reason: str
    tokens: int
    seconds: float  # from the request's start (constraint building included)
    first_token_seconds: float | None  # the same start to the first token chosen
    stats: dict[str, Any] = field(default_factory=dict)


class Engine:
    """The model (loaded once, lazily) and the constraints per language."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._model: tuple[Any, Any] | None = None
        self._loaded_for: tuple[str | None, str | None] | None = None
        self._lock = threading.Lock()

    def configure(self, settings: Settings) -> None:
        """New settings; the model reloads on next use if ``model``/``device`` changed."""
        self.settings = settings

    @property
    def loaded(self) -> bool:
        return self._model is not None and self._loaded_for == (self.settings.model, self.settings.device)

    def model(self, progress: Callable[[str], None] | None = None) -> tuple[Any, Any]:
        """``(model, tokenizer)``, loading them on first use (``progress`` hears about it)."""
        from plugin.gc_pause import freeze_loaded_heap
        from plugin.models import load_model

        with self._lock:
            wanted = (self.settings.model, self.settings.device)
            if self._model is None or self._loaded_for != wanted:
                if progress is not None:
                    progress(f"loading model {self.settings.model or 'SmolLM2-135M (bundled)'}")
                self._model = load_model(self.settings.model, device=self.settings.device)
                if self.settings.speculative not in (None, "off"):
                    from plugin.speculation.forward_cost import forward_cost

                    if progress is not None:
                        progress("timing the model's forwards (once per machine)")
                    forward_cost(self._model[0])  # sizes drafts; read from disk after the first time
                freeze_loaded_heap()  # a long-lived server: see plugin.gc_pause
                self._loaded_for = wanted
            return self._model

    def complete(
        self,
        *,
        language: str,
        text: str,
        offset: int,
        path: Path | None,
        root: Path | None,
        stop: threading.Event,
        session: DocumentSession,
        progress: Callable[[str], None] | None = None,
    ) -> Completion:
        """A constrained completion of ``text`` at ``offset`` (see module docstring): the
        document's edit-aware cache is brought up to date with the edits queued since the
        last completion, and the prompt's cache comes from it."""
        from plugin.kv import FimSession, fim_spelling
        from plugin.speculation import resolve_speculative

        if language not in LANGUAGES:
            raise OptionError(
                f"no constrained completion for language {language!r}; have {', '.join(LANGUAGES)}"
            )
        model, tokenizer = self.model(progress)
        started = time.perf_counter()  # latency counts applying edits and building the constraint
        s = self.settings
        edits, current = session.take_edits()
        cache, edit_seconds = session.edit_session(
            model,
            tokenizer,
            text if current is None else current,
            edits,
            s.context_tokens,
            cursor=offset,
            fim=s.fim and fim_spelling(tokenizer) is not None,
        )
        if cache.text != text:  # the document moved on: this request is stale
            return Completion("", "cancelled", 0, time.perf_counter() - started, None)
        constraint = self._constraint(tokenizer, language, text, offset, path, root)
        prefix = text[:offset]
        options: dict[str, Any] = {
            "prefix": prefix,
            "analysis_timeout": s.analysis_timeout,
            "constraint": constraint,
            "sampler": s.sampler,
            "max_new_tokens": s.max_tokens,
            "should_stop": stop.is_set,
        }
        line = stop_rule("line", None) if s.stop_at_newline else None
        if line is not None:
            # the line's end, checked at every token, so no draft is scored past it; not
            # stop="line", which would check the cut text against the whole document again
            options["end_when"] = line.end_when()
        speculative = resolve_speculative(s.speculative)
        if speculative is not None:
            # the context lookup may copy from the whole document, the text after the cursor too
            document = () if isinstance(cache, FimSession) else tuple(cache.token_ids)
            options["speculative"] = replace(speculative, lookup_ids=document)
        ready = time.perf_counter() - started
        gen = cache.generate(offset, **options)
        out = gen.text
        cut = line.cut(out) if line is not None else None
        out = out if cut is None else out[:cut]
        stats = dict(gen.stats)
        elapsed = time.perf_counter() - started
        first = stats.get("first_token_seconds")
        if first is not None:  # from the request's start: edits, constraint, prefix, prefill, first step
            first = elapsed - (stats["seconds"] - first)
        kept = ("monitors", "prefill_seconds", "prompt_tokens", "cached_prompt_tokens", "speculative")
        return Completion(
            text=out,
            finish_reason="cancelled" if stop.is_set() else gen.finish_reason,
            tokens=len(gen.token_ids),
            seconds=elapsed,
            first_token_seconds=first,
            stats={k: v for k, v in stats.items() if k in kept}
            | {"constraint_build_seconds": ready - edit_seconds, "edit_seconds": edit_seconds},
        )

    def _constraint(
        self,
        tokenizer: Any,
        language: str,
        text: str,
        offset: int,
        path: Path | None,
        root: Path | None,
    ) -> Any:
        """The compiled constraint for a completion at ``offset`` (grammar or schema plus
        monitors)."""
        from monitors import build_monitors, with_monitors
        from plugin.api import build_constraint

        s = self.settings
        lang: LanguageSettings = getattr(s, language)
        suffix = text[offset:]
        constraint_args: dict[str, Any] = {}
        schema = _document_schema(text, path) if language == "json" else None
        if schema is None and language == "json" and lang.schema is not None:
            schema = _schema(lang.schema, path)
        if schema is not None:
            # the document's own layout (indentation, line breaks) must be readable
            constraint_args |= {"json_schema": schema, "whitespace": "flexible"}
        else:
            constraint_args["grammar"] = lang.grammar or language  # the built-in grammar of that name
        names = []
        if lang.monitors and language == "python" and root is not None:
            names.append("python")
        database = lang.database if lang.monitors and language == "sql" else None
        monitors = build_monitors(
            names,
            project_root=root,
            file_path=path,
            suffix=suffix,
            database=database,
            timeout=s.analysis_timeout,
        )
        compiled = build_constraint(tokenizer, **constraint_args)
        compiled = with_monitors(compiled, monitors, compiled.vocab)
        if not hasattr(compiled, "matcher_after"):
            raise OptionError(f"the {language} constraint cannot continue a document (no completion mode)")
        return compiled


_SCHEMA_KEY = re.compile(r'^\s*\{\s*"\$schema"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _document_schema(text: str, path: Path | None) -> Any:
    """The schema a JSON document names with a leading ``"$schema"`` member: a local path
    (relative to the document) or ``file:`` URI. Remote schemas are not fetched (the
    server makes no network requests): the error says to set ``json.schema`` instead."""
    found = _SCHEMA_KEY.match(text)
    if found is None:
        return None
    where = json.loads(f'"{found.group(1)}"')
    parsed = urlparse(where)
    if parsed.scheme in ("http", "https"):
        raise OptionError(
            f"the document's $schema {where!r} is remote and the server does not fetch schemas; "
            "point $schema at a local copy or set stencil.json.schema"
        )
    if parsed.scheme == "file":
        where = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        raise OptionError(f"the document's $schema {where!r}: only local paths and file: URIs are read")
    return _schema(where, path)


def _schema(schema: dict[str, Any] | str, path: Path | None) -> Any:
    """A schema given inline or as a file path (relative to the document's folder)."""
    if isinstance(schema, dict):
        return schema
    candidate = Path(schema)
    if not candidate.is_absolute() and path is not None:
        candidate = path.parent / candidate
    if not candidate.is_file():
        raise OptionError(f"JSON schema file {str(candidate)!r} not found")
    return candidate.read_text(encoding="utf-8")
