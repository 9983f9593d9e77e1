"""JSON-RPC errors answered the way the specification asks, where pygls does not.

pygls reports a message it cannot read (bad JSON, a request whose params do not fit its
type, a JSON value that is not a message) with a ``window/showMessage`` and sends no
response: a client waiting on that request would wait forever. Here every such request
gets its error response (``ParseError`` -32700 and ``InvalidRequest`` -32600 with a null
id, ``InvalidParams`` -32602 with the request's id), and the server goes on.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from cattrs import ClassValidationError, transform_error
from pygls.exceptions import JsonRpcException, JsonRpcInvalidRequest, JsonRpcParseError
from pygls.protocol import LanguageServerProtocol

log = logging.getLogger("stencil.lsp")


class _Answered:
    """Stands for a request whose error response has already been sent."""


ANSWERED = _Answered()


class StencilProtocol(LanguageServerProtocol):
    """pygls's protocol, answering unreadable requests with their JSON-RPC error."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if "method" in data and "id" in data:  # a request: its client waits for an answer
                log.warning("request %r: params do not fit %s", data.get("method"), data.get("params"))
                cause = exc.__cause__
                detail = (
                    "; ".join(transform_error(cause)) if isinstance(cause, ClassValidationError) else cause
                )
                self._send_response(
                    data["id"], error=type(exc)(f"{data['method']}: {detail or exc}").to_response_error()
                )
                return ANSWERED
            raise

    def handle_message(self, message: Any) -> None:
        if message is ANSWERED:
            return
        if not hasattr(message, "jsonrpc"):  # valid JSON, but not a JSON-RPC message
            text = json.dumps(message)[:200]
            self.answer_unreadable(JsonRpcInvalidRequest(f"not a JSON-RPC message: {text}"))
            return
        super().handle_message(message)

    def answer_unreadable(self, error: JsonRpcException) -> None:
        """The error response with a null id, for a message whose id cannot be read."""
        log.warning("unreadable message: %s", error)
        # a plain dict: pygls's types leave out the null id the specification asks for
        self._send_data(
            {"jsonrpc": "2.0", "id": None, "error": {"code": error.code, "message": error.message}}
        )


def parse_error(error: Exception) -> JsonRpcParseError | None:
    """The ParseError for ``error`` when reading a message's JSON raised it."""
    if isinstance(error, json.JSONDecodeError | UnicodeDecodeError):
        return JsonRpcParseError(f"message is not JSON: {error}")
    return None
