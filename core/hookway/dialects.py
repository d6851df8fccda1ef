"""Inbound API dialects: the contract.

A dialect is the wire format a client speaks (OpenAI chat completions, Anthropic Messages...). It
is registered by a plugin (:func:`hookway.hookspecs.hookway_register_dialects`) and used by the
pipeline to read requests and write answers. Rendering a stream is a per-stream state machine:
:meth:`Dialect.stream_renderer` returns a fresh one for each response.
"""

from __future__ import annotations

from typing import Any, Callable

from . import ir
from .errors import GatewayError


class Dialect:
    name: str = ""

    def peek(self, body: dict, operation: str) -> tuple[str, bool]:
        """``(model, stream)`` read cheaply from the body, without full parsing (hot path).
        Raise :class:`GatewayError` naming the field when the model is missing or not a string."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            from .errors import invalid
            raise invalid("`model` is required and must be a non-empty string", "model")
        return model, body.get("stream") is True

    def parse(self, body: dict, operation: str) -> ir.Request:
        """The canonical request. Raise :class:`GatewayError` (400) naming the bad field."""
        raise NotImplementedError

    def render_response(self, response: ir.Response, request: ir.Request | None, operation: str) -> dict:
        """A whole answer as this dialect's JSON body."""
        raise NotImplementedError

    def stream_renderer(self, request: ir.Request | None, operation: str, model: str) -> Callable[[ir.Event], bytes]:
        """A fresh renderer for one stream: called once per event, returns the bytes to send
        (possibly empty). ``model`` is the name the client asked for."""
        raise NotImplementedError

    def recognizes(self, headers) -> bool:
        """Whether a request's headers show a client of this dialect (e.g. Anthropic SDKs always
        send ``anthropic-version``). Used where one path serves several dialects: the root
        ``GET /v1/models`` answers in the caller's shape."""
        return False

    def render_model_list(self, ids: list[str]) -> dict:
        """The model list body for ``provider/model`` ids."""
        return {"object": "list", "data": [self.render_model(i) for i in ids]}

    def render_model(self, model_id: str) -> dict:
        """One model's body."""
        return {"id": model_id, "object": "model", "created": 0, "owned_by": model_id.split("/", 1)[0]}

    def render_error(self, error: GatewayError) -> tuple[int, dict]:
        """``(status, body)`` for an error answered before the stream started."""
        return error.status, {"error": {"message": error.message, "type": error.kind}}

    def render_stream_error(self, error: GatewayError) -> bytes:
        """The in-stream error event for a failure after the first byte."""
        raise NotImplementedError

    def usage_tap(self, operation: str, stream: bool) -> Any:
        """For the byte pass-through: an object with ``feed(chunk: bytes)``, ``usage``
        (:class:`hookway.ir.Usage`) and ``stop_reason`` (Anthropic's values: end_turn, max_tokens,
        tool_use, stop_sequence...) read from the upstream bytes, or None. An optional ``done``
        attribute turns True once the stream's final event has passed: a client that closes after
        it is logged with the upstream's status, not as a cancellation (499)."""
        return None

    def response_from_bytes(self, raw: bytes, operation: str, stream: bool) -> ir.Response | None:
        """A pass-through answer's bytes in this dialect's wire format (an SSE stream or a JSON
        body) as a :class:`hookway.ir.Response`, or None when they cannot be read. Used off the hot
        path by log sinks (``LogRecord.response_body``)."""
        return None
