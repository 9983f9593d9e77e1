"""One generation session per open document, at most ``max_sessions`` of them.

The session is the seam between the editor's document and decoding. It knows the
generation in flight for its document (a newer request or an edit supersedes it) and
owns the document's :class:`plugin.kv.EditSession`: the KV cache that follows edits.

Every incremental ``didChange`` is turned into character edits against the session's own
copy of the text (a pygls ``TextDocument`` kept in step with the workspace's), queued on
the message loop, and applied to the edit session by the next completion, in the
generation thread, so the model never runs on the message loop. Keystrokes that extend or
trim the text the previous edit wrote are merged into one edit first. A full-text change
becomes one edit (the span between the common prefix and suffix). If the edited text ever
disagrees with the document, the cache is rebuilt and ``stats["resyncs"]`` counts it.

Past the cap the least recently used session is dropped (with its cache); its document
stays open in the workspace and gets a fresh session on its next request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from lsprotocol import types as lsp
from pygls.workspace import TextDocument

from plugin.errors import OptionError

log = logging.getLogger("stencil.lsp")


@dataclass(frozen=True)
class Edit:
    """Characters ``[start, end)`` replaced by ``text``."""

    start: int
    end: int
    text: str


def merged(edits: list[Edit]) -> list[Edit]:
    """``edits`` with each one that lies inside the text the previous one wrote folded into
    it (typing and backspacing become one edit); the result applies to the same text."""
    out: list[Edit] = []
    for e in edits:
        if out:
            prev = out[-1]
            written_end = prev.start + len(prev.text)
            if prev.start <= e.start and e.end <= written_end:
                a, b = e.start - prev.start, e.end - prev.start
                out[-1] = Edit(prev.start, prev.end, prev.text[:a] + e.text + prev.text[b:])
                continue
        out.append(e)
    return out


def diff_edit(old: str, new: str) -> Edit | None:
    """The one edit that turns ``old`` into ``new`` between their common prefix and suffix."""
    if old == new:
        return None
    limit = min(len(old), len(new))
    lo, hi = 0, limit  # binary search on slice equality: C-speed comparisons
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if old[:mid] == new[:mid]:
            lo = mid
        else:
            hi = mid - 1
    head = lo
    lo, hi = 0, limit - head
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if old[len(old) - mid :] == new[len(new) - mid :]:
            lo = mid
        else:
            hi = mid - 1
    return Edit(head, len(old) - lo, new[head : len(new) - lo])


@dataclass
class DocumentSession:
    """Generation state of one document (see module docstring)."""

    uri: str
    language: str
    edits: int = 0
    cache: Any = field(default=None, repr=False)  # the plugin.kv.EditSession, built on first use
    stats: dict[str, int] = field(default_factory=lambda: {"resyncs": 0, "merged_edits": 0})
    fim_refused: bool = False  # the document outgrew fill-in-the-middle once: prefix only
    _shadow: TextDocument | None = field(default=None, repr=False)
    _pending: list[Edit] = field(default_factory=list, repr=False)
    _out_of_step: bool = field(default=False, repr=False)
    _running: threading.Event | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def opened(self, text: str) -> None:
        """The document's text as the session starts following it."""
        with self._lock:
            self._shadow = TextDocument(self.uri, text)
            self._pending = []
            self._out_of_step = self.cache is not None

    @property
    def following(self) -> bool:
        """Whether the session has a copy of the text to turn changes into edits."""
        return self._shadow is not None

    def changed(self, changes: list[Any], text_now: str) -> None:
        """``didChange``'s content changes, in order; ``text_now`` is the workspace's text
        after them (a check that the session's copy stays in step)."""
        self.edits += 1
        self.supersede()
        with self._lock:
            shadow = self._shadow
            if shadow is None:  # a session made after the document opened: start from now
                self._shadow = TextDocument(self.uri, text_now)
                self._pending = []
                self._out_of_step = self.cache is not None
                return
            for change in changes:
                if isinstance(change, lsp.TextDocumentContentChangePartial):
                    start = shadow.offset_at_position(change.range.start)
                    end = shadow.offset_at_position(change.range.end)
                    shadow.apply_change(change)
                    self._pending.append(Edit(start, max(start, end), change.text))
                else:
                    found = diff_edit(shadow.source, change.text)
                    shadow.apply_change(change)
                    if found is not None:
                        self._pending.append(found)
            if shadow.source != text_now:
                log.warning("session copy of %s fell out of step; it follows the workspace again", self.uri)
                self._shadow = TextDocument(self.uri, text_now)
                self._pending = []
                self._out_of_step = True

    def take_edits(self) -> tuple[list[Edit] | None, str | None]:
        """The queued edits (merged; None when the cache must be rebuilt) and the text they
        lead to; the queue empties."""
        with self._lock:
            pending, self._pending = self._pending, []
            text = self._shadow.source if self._shadow is not None else None
            rebuild, self._out_of_step = self._out_of_step, False
        if rebuild:
            return None, text
        folded = merged(pending)
        self.stats["merged_edits"] += len(pending) - len(folded)
        return folded, text

    def edit_session(
        self,
        model: Any,
        tokenizer: Any,
        text: str,
        edits: list[Edit] | None,
        context_tokens: int,
        *,
        cursor: int | None = None,
        fim: bool = False,
    ) -> tuple[Any, float]:
        """The document's cache with ``edits`` applied, so that it holds ``text``: a
        :class:`plugin.kv.FimSession` when ``fim`` (the tokenizer has FIM tokens and the
        document fits the context; ``cursor`` places it), else a
        :class:`plugin.kv.EditSession` (the prefix alone). Built (encoding the document)
        when there is none, when the model, context or mode changed, or when the edits do
        not lead to ``text``. Returns it and the seconds spent applying edits."""
        from plugin.kv import EditSession, FimSession

        started = time.perf_counter()
        cache = self.cache
        want_fim = fim and not self.fim_refused
        kind = FimSession if want_fim else EditSession
        usable = isinstance(cache, kind) and cache.model is model and cache.context_tokens == context_tokens
        if usable:
            try:
                if edits is None:
                    raise ValueError("the session's copy of the text fell out of step")
                for e in edits:
                    cache.edit(e.start, e.end, e.text)
                if cache.text != text:
                    raise ValueError("the edits do not lead to the document's text")
            except Exception as exc:  # an edit that does not fit the cached text
                log.warning("edits of %s did not apply (%s); re-encoding", self.uri, exc)
                self.stats["resyncs"] += 1
                usable = False
        if not usable:
            cache = self.cache = None  # drop the old cache before building the new one
            if want_fim:
                try:
                    cache = FimSession(
                        model,
                        tokenizer,
                        text,
                        len(text) if cursor is None else cursor,
                        context_tokens=context_tokens,
                        refresh_every=None,  # the server refreshes when the editor is idle
                    )
                except OptionError as exc:  # longer than the context: the prefix alone
                    log.info("%s: %s; completing from the prefix", self.uri, exc)
                    self.fim_refused = True
            if cache is None:
                cache = EditSession(model, tokenizer, text, context_tokens=context_tokens, refresh_every=None)
            self.cache = cache
        return cache, time.perf_counter() - started

    def refresh_if_stale(self, after: int) -> bool:
        """Re-encode the cache in full when ``after`` or more edits reached it since its last
        refresh and none are waiting (run when the editor is idle: the re-encode costs a
        prefill, seconds on a CPU, and a completion arriving meanwhile waits for it)."""
        with self._lock:
            waiting = bool(self._pending) or self._out_of_step or self._running is not None
        cache = self.cache
        if cache is None or waiting or cache.stats["edits_since_refresh"] < after:
            return False
        cache.refresh()
        return True

    def start(self) -> threading.Event:
        """A new generation for this document: the one in flight is told to stop; the
        returned event is set when this one must stop."""
        stop = threading.Event()
        with self._lock:
            if self._running is not None:
                self._running.set()
            self._running = stop
        return stop

    def finish(self, stop: threading.Event) -> None:
        with self._lock:
            if self._running is stop:
                self._running = None

    def supersede(self) -> None:
        with self._lock:
            if self._running is not None:
                self._running.set()


class SessionPool:
    """Sessions by document URI, least recently used dropped beyond ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._sessions: OrderedDict[str, DocumentSession] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, uri: str, language: str) -> DocumentSession:
        with self._lock:
            session = self._sessions.get(uri)
            if session is None:
                session = self._sessions[uri] = DocumentSession(uri, language)
            self._sessions.move_to_end(uri)
            self._evict()
            return session

    def peek(self, uri: str) -> DocumentSession | None:
        with self._lock:
            return self._sessions.get(uri)

    def close(self, uri: str) -> None:
        with self._lock:
            session = self._sessions.pop(uri, None)
        if session is not None:
            session.supersede()

    def resize(self, capacity: int) -> None:
        with self._lock:
            self.capacity = capacity
            self._evict()

    def _evict(self) -> None:
        """Drop least recently used sessions beyond the capacity (lock held)."""
        while len(self._sessions) > self.capacity:
            _, dropped = self._sessions.popitem(last=False)
            dropped.supersede()

    def items(self) -> list[tuple[str, DocumentSession]]:
        with self._lock:
            return list(self._sessions.items())

    def __len__(self) -> int:
        return len(self._sessions)
