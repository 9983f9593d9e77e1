"""One generation session per open document, at most ``max_sessions`` of them.

The session is the seam between the editor's document and decoding: it knows the
generation in flight for its document (a newer request supersedes it) and is where the
edit-aware KV cache will live (it sees every edit through :meth:`DocumentSession.edited`).
Past the cap the least recently used session is dropped; its document stays open in
the workspace and gets a fresh session on its next request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class DocumentSession:
    """Generation state of one document (see module docstring)."""

    uri: str
    language: str
    edits: int = 0
    _running: threading.Event | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def edited(self) -> None:
        """The document changed: a generation for the old text is stale."""
        self.edits += 1
        self.supersede()

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

    def __len__(self) -> int:
        return len(self._sessions)
