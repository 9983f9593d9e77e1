"""``stencil serve`` under bad input and load, over raw JSON-RPC on stdio (so malformed
messages can be sent): malformed JSON, unknown methods, bad params, a 1 MB document,
1,000 ``didChange`` in a burst, a storm of cancelled completions, many documents past
the session cap. The server must answer with the right codes, stay up, keep documents
right and its sessions bounded."""

from __future__ import annotations

import json
import queue
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

PARSE_ERROR, METHOD_NOT_FOUND, INVALID_PARAMS, REQUEST_CANCELLED = -32700, -32601, -32602, -32800


class RawClient:
    """Frames JSON-RPC messages by hand on the server's stdin; a thread reads stdout."""

    def __init__(self, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plugin.cli", "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[1],
        )
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = None
            while (line := out.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            if not line or length is None:
                return
            self.messages.put(json.loads(out.read(length)))

    def send_bytes(self, body: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: Any = None) -> None:
        self.send_bytes(json.dumps({"jsonrpc": "2.0", "method": method, "params": params}).encode())

    def request(self, method: str, params: Any = None) -> int:
        self.next_id += 1
        self.send_bytes(
            json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}).encode()
        )
        return self.next_id

    def response(self, msg_id: int | None, timeout: float = 120.0) -> dict[str, Any]:
        """The response to ``msg_id``; the server's own requests (progress) are answered."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.messages.get(timeout=max(0.1, deadline - time.monotonic()))
            if "method" in msg and "id" in msg:  # a request from the server
                self.send_bytes(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": None}).encode())
            elif "method" not in msg and msg.get("id") == msg_id:
                return msg

    def call(self, method: str, params: Any = None) -> dict[str, Any]:
        return self.response(self.request(method, params))

    def close(self) -> int:
        self.call("shutdown")
        self.notify("exit")
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def server(tmp_path):
    client = RawClient(tmp_path)
    yield client
    if client.proc.poll() is None:
        client.proc.kill()


def _initialize(client: RawClient, root: Path, **settings: Any) -> None:
    reply = client.call(
        "initialize",
        {
            "processId": None,
            "rootUri": root.as_uri(),
            "capabilities": {},
            "initializationOptions": {"stencil": settings},
        },
    )
    assert "capabilities" in reply["result"]


def _open(client: RawClient, uri: str, text: str, language: str = "python") -> None:
    client.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": language, "version": 1, "text": text}},
    )


def _server_copy(client: RawClient, uri: str) -> str:
    return client.call("workspace/executeCommand", {"command": "stencil.documentText", "arguments": [uri]})[
        "result"
    ]


def test_malformed_messages_and_unknown_methods_get_errors_and_the_server_stays_up(server, tmp_path):
    server.send_bytes(b"{this is not json")
    assert server.response(None)["error"]["code"] == PARSE_ERROR
    _initialize(server, tmp_path)  # still serving
    assert server.call("stencil/noSuchMethod", {})["error"]["code"] == METHOD_NOT_FOUND
    server.notify("stencil/noSuchNotification", {})  # ignored, as the protocol says
    reply = server.call("textDocument/completion", {"textDocument": {"uri": "file:///x.py"}})  # no position
    assert reply["error"]["code"] == INVALID_PARAMS
    reply = server.call(
        "textDocument/completion",
        {"textDocument": {"uri": "file:///never.py"}, "position": {"line": 0, "character": 0}},
    )
    assert reply["error"]["code"] == INVALID_PARAMS and "not open" in reply["error"]["message"]
    reply = server.call("workspace/executeCommand", {"command": "stencil.documentText", "arguments": [1, 2]})
    assert reply["error"]["code"] == INVALID_PARAMS
    assert server.close() == 0


def test_a_big_document_and_a_burst_of_edits_stay_in_sync(server, tmp_path):
    _initialize(server, tmp_path)
    uri = (tmp_path / "big.py").as_uri()
    text = "".join(f"value_{i} = {i}  # ünïcode 😀\n" for i in range(32_000))
    assert len(text.encode()) > 1_000_000
    _open(server, uri, text)
    rng = random.Random(3)
    lines = text.split("\n")
    for version in range(2, 1002):  # 1,000 incremental edits, no waiting in between
        line = rng.randrange(len(lines) - 1)
        insert = rng.choice(["x", "", "é", "😀", "\n"])
        old = lines[line]
        cut = rng.randint(0, len(old))
        lines[line : line + 1] = (old[:cut] + insert + old[cut:]).split("\n")
        character = len(old[:cut].encode("utf-16-le")) // 2
        position = {"line": line, "character": character}
        server.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"range": {"start": position, "end": position}, "text": insert}],
            },
        )
    assert _server_copy(server, uri) == "\n".join(lines)
    assert server.close() == 0


def test_documents_past_the_session_cap_keep_sessions_bounded(server, tmp_path):
    _initialize(server, tmp_path, max_sessions=4)
    body = "x = 1\n" * 20_000  # 120 kB each
    for i in range(60):
        uri = (tmp_path / f"doc{i}.py").as_uri()
        _open(server, uri, body)
        if i % 2:
            server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    status = server.call("workspace/executeCommand", {"command": "stencil.status", "arguments": []})["result"]
    assert status["open_documents"] == 30 and status["sessions"] <= 4 == status["max_sessions"]
    assert server.close() == 0


@pytest.mark.default_model
def test_a_storm_of_cancelled_completions(server, tmp_path):
    _initialize(server, tmp_path, max_tokens=16)
    server.notify("initialized", {})
    uri = (tmp_path / "storm.py").as_uri()
    text = "import os\n\n\ndef where(p):\n    return os.path."
    _open(server, uri, text)
    position = {"line": 4, "character": len("    return os.path.")}
    params = {"textDocument": {"uri": uri}, "position": position}
    ids = []
    for _ in range(30):
        ids.append(server.request("textDocument/completion", params))
        server.notify("$/cancelRequest", {"id": ids[-1]})
    started = time.monotonic()
    for msg_id in ids:  # every request gets exactly one answer: cancelled, or a (superseded) result
        reply = server.response(msg_id)
        assert "result" in reply or reply["error"]["code"] == REQUEST_CANCELLED, reply
    storm_seconds = time.monotonic() - started
    reply = server.call("textDocument/completion", params)  # the server still completes
    items = reply["result"]["items"]
    assert items and items[0]["textEdit"]["newText"].split("(")[0].strip().isidentifier()
    assert _server_copy(server, uri) == text
    assert server.close() == 0
    print(f"30 cancelled completions answered in {storm_seconds:.2f} s")
