"""The Anthropic Messages dialect: parse a Messages request into :class:`hookway.ir.Request`,
render answers, stream events and errors exactly as the Anthropic API does.

The canonical message shape *is* Anthropic's, so parsing mostly validates and normalises (string
content -> one text block). Fields the canonical request has no slot for (``context_management``,
``output_config``, betas...) go into ``Request.extra``: they are never a reason to reject a
request, and an Anthropic upstream gets them back.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

import orjson

from hookway import ir
from hookway.dialects import Dialect
from hookway.errors import CONTEXT_OVERFLOW, GatewayError, invalid
from hookway.sse import SSEParser, frame

from .adapter import EventReader, response_from_message

# Canonical error kind -> Anthropic error type (ARCHITECTURE.md "Errors").
ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "unsupported_operation": "invalid_request_error",
    "authentication": "authentication_error",
    "billing": "billing_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "api_error": "api_error",
    "bad_gateway": "api_error",
    "unavailable": "api_error",
    "timeout": "timeout_error",
    "overloaded": "overloaded_error",
}

# Fields this module maps onto the canonical request; everything else goes to ``extra``.
_MAPPED = frozenset({"model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k",
                     "stop_sequences", "stream", "tools", "tool_choice", "metadata", "thinking"})
_ROLES = ("user", "assistant", "system")
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "high"}


def effort_for_budget(budget: int) -> str:
    """A reasoning effort for a thinking budget, for providers that take an effort only. Same
    thresholds as the openai plugin (Claude Code's "think" ~4k, "think hard" ~10k, "ultrathink" ~32k)."""
    if budget <= 4096:
        return "low"
    if budget <= 16384:
        return "medium"
    return "high"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _string(block: dict, key: str, where: str, required: bool = True) -> None:
    """``block[key]`` must be a string (``required``: and present)."""
    if key not in block:
        if required:
            raise invalid(f"{where}.{key}: field required", f"{where}.{key}")
        return
    if not isinstance(block[key], str):
        raise invalid(f"{where}.{key}: expected a string", f"{where}.{key}")


# The field each known media source type carries (image and document blocks).
_SOURCE_FIELD = {"base64": "data", "text": "data", "url": "url", "file": "file_id"}


def _source(block: dict, where: str) -> None:
    if "source" not in block:
        raise invalid(f"{where}.source: field required", f"{where}.source")
    source = block["source"]
    where = f"{where}.source"
    if not isinstance(source, dict):
        raise invalid(f"{where}: expected an object", where)
    _string(source, "type", where)
    kind = source["type"]
    if kind in _SOURCE_FIELD:
        _string(source, _SOURCE_FIELD[kind], where)
        _string(source, "media_type", where, required=False)
    elif kind == "content":   # a document made of content blocks
        if "content" not in source:
            raise invalid(f"{where}.content: field required", f"{where}.content")
        _blocks(source["content"], f"{where}.content")
    # Other source types are left to the upstream: a newer API may know them.


def _block(block: Any, where: str) -> dict:
    """One content block, checked field by field so that a malformed block is a 400 naming its
    path (``messages.0.content.1.text``), never a crash further on. A ``tool_result`` comes back
    normalised (a copy: the client's dicts are never changed, since the raw body may still be
    forwarded or logged): content as a block list, ``is_error`` a bool."""
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise invalid(f"{where}: each content block must be an object with a `type`", f"{where}.type")
    kind = block["type"]
    if kind == "text":
        _string(block, "text", where)
    elif kind in ("image", "document"):
        _source(block, where)
    elif kind == "tool_use":
        _string(block, "id", where)
        _string(block, "name", where)
        if "input" in block and not isinstance(block["input"], dict):
            raise invalid(f"{where}.input: expected an object", f"{where}.input")
    elif kind == "tool_result":
        _string(block, "tool_use_id", where)
        block = dict(block)
        inner = block.get("content")
        block["content"] = [] if inner is None else _blocks(inner, f"{where}.content")
        block["is_error"] = bool(block.get("is_error", False))
    elif kind == "thinking":
        _string(block, "thinking", where)
        _string(block, "signature", where, required=False)
    elif kind == "redacted_thinking":
        _string(block, "data", where)
    # Other block kinds (server tool blocks, search results...) travel as they came.
    return block


def _blocks(value: Any, where: str) -> list[dict]:
    """A content value as a list of checked blocks: a string becomes one text block."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}] if value else []
    if not isinstance(value, list):
        raise invalid(f"{where}: expected a string or a list of content blocks", where)
    return [_block(block, f"{where}.{j}") for j, block in enumerate(value)]


class AnthropicDialect(Dialect):
    name = "anthropic"

    # --- requests ---

    def peek(self, body: dict, operation: str) -> tuple[str, bool]:
        model, stream = super().peek(body, operation)
        # Cheap shape checks on the hot path, so even the byte pass-through answers a malformed
        # request with a 400 naming the field instead of spending an upstream call on it.
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise invalid("`messages` is required and must be a list of messages", "messages")
        if not messages:
            raise invalid("messages: at least one message is required", "messages")
        flag = body.get("stream")
        if flag is not None and not isinstance(flag, bool):
            raise invalid(f"`stream` must be a boolean, found {flag!r}", "stream")
        if operation != "chat":
            return model, False   # count_tokens takes no max_tokens and never streams
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise invalid("`max_tokens` is required", "max_tokens")
        if not _is_int(max_tokens) or max_tokens < 1:
            raise invalid(f"`max_tokens` must be a positive integer, found {max_tokens!r}", "max_tokens")
        return model, stream

    def parse(self, body: dict, operation: str) -> ir.Request:
        model, stream = self.peek(body, operation)

        messages = []
        for i, msg in enumerate(body["messages"]):
            where = f"messages.{i}"
            if not isinstance(msg, dict):
                raise invalid(f"{where}: each message must be an object with `role` and `content`", where)
            role = msg.get("role")
            if role not in _ROLES:
                raise invalid(f"{where}.role: expected one of user, assistant, system, found {role!r}",
                              f"{where}.role")
            if "content" not in msg:
                raise invalid(f"{where}.content: field required", f"{where}.content")
            # A {"role": "system"} entry (Claude Code sends one) stays where it is.
            messages.append({"role": role, "content": _blocks(msg["content"], f"{where}.content")})

        system = body.get("system")
        system = [] if system is None else _blocks(system, "system")

        req = ir.Request(model=model, messages=messages, system=system, operation=operation,
                         stream=stream, max_tokens=body.get("max_tokens"),
                         extra={k: v for k, v in body.items() if k not in _MAPPED})

        for field in ("temperature", "top_p"):
            value = body.get(field)
            if value is not None:
                if not _is_number(value):
                    raise invalid(f"`{field}` must be a number, found {value!r}", field)
                setattr(req, field, value)
        top_k = body.get("top_k")
        if top_k is not None:
            if not _is_int(top_k):
                raise invalid(f"`top_k` must be an integer, found {top_k!r}", "top_k")
            req.top_k = top_k

        stop = body.get("stop_sequences")
        if stop is not None:
            if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
                raise invalid("`stop_sequences` must be a list of strings", "stop_sequences")
            req.stop = list(stop)

        self._parse_tools(body, req)
        self._parse_tool_choice(body.get("tool_choice"), req)

        metadata = body.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
            req.user = metadata["user_id"]

        self._parse_reasoning(body.get("thinking"), req)
        return req

    @staticmethod
    def _parse_tools(body: dict, req: ir.Request) -> None:
        tools = body.get("tools")
        if tools is None:
            return
        if not isinstance(tools, list):
            raise invalid("`tools` must be a list", "tools")
        server_tools = []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
                raise invalid(f"tools.{i}.name: each tool needs a non-empty `name`", f"tools.{i}.name")
            if tool.get("type") not in (None, "custom"):
                # Anthropic server tools (web_search_..., bash_...) have no schema; only an
                # Anthropic upstream can run them, so they travel in ``extra``.
                server_tools.append(tool)
                continue
            schema = tool.get("input_schema")
            if schema is not None and not isinstance(schema, dict):
                raise invalid(f"tools.{i}.input_schema: expected an object", f"tools.{i}.input_schema")
            req.tools.append(ir.Tool(name=tool["name"], description=tool.get("description"),
                                     input_schema=schema or {"type": "object", "properties": {}}))
        if server_tools:
            req.extra["server_tools"] = server_tools

    @staticmethod
    def _parse_tool_choice(choice: Any, req: ir.Request) -> None:
        if choice is None:
            return
        if not isinstance(choice, dict):
            raise invalid("`tool_choice` must be an object such as {\"type\": \"auto\"}", "tool_choice")
        kind = choice.get("type")
        if kind in ("auto", "any", "none"):
            req.tool_choice = kind
        elif kind == "tool":
            if not isinstance(choice.get("name"), str):
                raise invalid("tool_choice.name: required when tool_choice.type is \"tool\"", "tool_choice.name")
            req.tool_choice = {"type": "tool", "name": choice["name"]}
        else:
            raise invalid(f"tool_choice.type: expected auto, any, tool or none, found {kind!r}",
                          "tool_choice.type")
        if choice.get("disable_parallel_tool_use") is True:
            req.parallel_tool_calls = False

    @staticmethod
    def _parse_reasoning(thinking: Any, req: ir.Request) -> None:
        output_config = req.extra.get("output_config")
        effort = output_config.get("effort") if isinstance(output_config, dict) else None
        if isinstance(thinking, dict):
            kind = thinking.get("type")
            if kind == "enabled":
                budget = thinking.get("budget_tokens")
                if not _is_int(budget):
                    raise invalid("thinking.budget_tokens: an integer is required when thinking is enabled",
                                  "thinking.budget_tokens")
                req.reasoning_budget = budget
                req.reasoning_effort = _EFFORTS.get(effort) or effort_for_budget(budget)
                return
            if kind == "adaptive":
                # The model chooses its budget; kept so an Anthropic upstream gets "adaptive" back.
                req.extra["thinking"] = thinking
                req.reasoning_effort = _EFFORTS.get(effort, "high")   # Anthropic's default effort
                return
            if kind == "disabled":
                return
        if effort in _EFFORTS:
            req.reasoning_effort = _EFFORTS[effort]

    # --- answers ---

    def render_response(self, response: ir.Response, request: ir.Request | None, operation: str) -> dict:
        content = []
        has_tool_use = False
        for block in response.content:
            kind = block.get("type")
            if kind == "tool_use":
                has_tool_use = True
                block = {**block, "input": block.get("input") or {}}
            elif kind == "thinking" and "signature" not in block:
                block = {**block, "signature": ""}
            content.append(block)
        return {
            "id": message_id(response.id),
            "type": "message",
            "role": "assistant",
            "model": response.model,   # the core sets it to the name the client asked for
            "content": content,
            "stop_reason": final_stop_reason(response.stop_reason, has_tool_use),
            "stop_sequence": response.stop_sequence,
            "usage": usage_json(response.usage),
        }

    def stream_renderer(self, request: ir.Request | None, operation: str, model: str) -> Callable[[ir.Event], bytes]:
        return StreamRenderer(model, self).render

    # --- errors ---

    def error_json(self, error: GatewayError) -> dict:
        kind = ERROR_TYPES.get(error.kind)
        if kind is None:
            kind = "api_error" if error.status >= 500 else "invalid_request_error"
        message = error.message
        if error.code == CONTEXT_OVERFLOW and "prompt is too long" not in message.lower():
            # Claude Code recognises Anthropic's wording and compacts the conversation.
            message = "prompt is too long: " + message
        return {"type": "error", "error": {"type": kind, "message": message}}

    def recognizes(self, headers) -> bool:
        return "anthropic-version" in headers   # every Anthropic SDK and Claude Code send it

    def render_model_list(self, ids: list[str]) -> dict:
        return {"data": [self.render_model(i) for i in ids], "has_more": False,
                "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}

    def render_model(self, model_id: str) -> dict:
        # The gateway knows no creation dates.
        return {"type": "model", "id": model_id, "display_name": model_id,
                "created_at": "1970-01-01T00:00:00Z"}

    def render_error(self, error: GatewayError) -> tuple[int, dict]:
        return error.status, self.error_json(error)

    def render_stream_error(self, error: GatewayError) -> bytes:
        return frame(orjson.dumps(self.error_json(error)), "error")

    def usage_tap(self, operation: str, stream: bool) -> Any:
        if operation != "chat":
            return None
        return StreamUsageTap() if stream else JSONUsageTap()

    def response_from_bytes(self, raw: bytes, operation: str, stream: bool) -> ir.Response | None:
        """A pass-through answer (SSE stream or Message JSON) as a :class:`ir.Response`, or None.
        The bytes decide between the two (an upstream may answer a stream request with JSON)."""
        if operation != "chat" or not isinstance(raw, (bytes, bytearray, memoryview)):
            return None
        raw = bytes(raw)
        if raw.lstrip()[:1] == b"{":
            return response_from_json(raw)
        return response_from_sse(raw)


# --- shared pieces -----------------------------------------------------------------------------------

def message_id(upstream_id: str | None) -> str:
    """An Anthropic-looking id; the upstream's id is kept inside it for tracing."""
    if upstream_id and upstream_id.startswith("msg_"):
        return upstream_id
    return "msg_" + (upstream_id or uuid.uuid4().hex)


def final_stop_reason(stop_reason: str | None, has_tool_use: bool) -> str:
    """CONFORMANCE 14: ``tool_use`` whenever a tool_use block was sent (some upstreams say
    "stop" after tool calls); a truncated or refused answer keeps its own reason."""
    if has_tool_use and stop_reason in (None, "end_turn", "stop_sequence"):
        return "tool_use"
    return stop_reason or "end_turn"


def usage_json(usage: ir.Usage) -> dict:
    return {"input_tokens": usage.input_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens,
            "output_tokens": usage.output_tokens}


_PING = b'event: ping\ndata: {"type": "ping"}\n\n'

_START_BLOCK = {
    "text": {"type": "text", "text": ""},
    # The SDKs model ``signature`` as a required field: an empty one until a signature_delta.
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
}
_DELTA_FIELDS = {"text": ("text_delta", "text"), "json": ("input_json_delta", "partial_json"),
                 "thinking": ("thinking_delta", "thinking"), "signature": ("signature_delta", "signature")}
# Which block kind each delta kind belongs to.
_DELTA_BLOCK = {"text": "text", "json": "tool_use", "thinking": "thinking", "signature": "thinking"}


def _event(name: str, data: dict) -> bytes:
    return frame(orjson.dumps(data), name)


class StreamRenderer:
    """Canonical events -> Anthropic SSE bytes, for one stream.

    It guards the wire invariants itself, whatever the event source does: exactly one
    ``message_start`` first; one block open at a time (a new block closes the open one); block
    indices contiguous from 0 whatever the canonical indices were; the open block closed before
    ``message_delta``; ``message_delta`` before ``message_stop``; nothing after ``message_stop`` or
    after an ``error`` event, so a failed stream never ends like a successful one."""

    __slots__ = ("model", "dialect", "started", "ended", "sent_delta", "next_index", "open_wire",
                 "open_source", "open_kind", "saw_tool_use", "usage", "prefixes")

    def __init__(self, model: str, dialect: AnthropicDialect):
        self.model = model
        self.dialect = dialect
        self.started = False
        self.ended = False
        self.sent_delta = False
        self.next_index = 0
        self.open_wire: int | None = None     # wire index of the open block
        self.open_source: int | None = None   # its canonical index
        self.open_kind: str | None = None
        self.saw_tool_use = False
        self.usage = ir.Usage()
        self.prefixes: dict[str, bytes] = {}   # delta kind -> event bytes up to the value (open block)

    def render(self, ev: ir.Event) -> bytes:
        if self.ended:
            return b""
        t = type(ev)
        if t is ir.BlockDelta:
            # The hot path (one event per token): a delta of the open block, whose bytes up to
            # the value were built by its first delta (see _delta).
            prefix = self.prefixes.get(ev.kind) if ev.index == self.open_source else None
            if prefix is not None:
                return prefix + orjson.dumps(ev.value) + b"}}\n\n"
            return self._delta(ev)
        if t is ir.BlockStart:
            return self._start() + self._open(ev)
        if t is ir.BlockStop:
            if ev.index == self.open_source:
                return self._close()
            return b""
        if t is ir.MessageStart:
            if self.started:
                return b""
            return self._start(ev)
        if t is ir.MessageDelta:
            return self._start() + self._message_delta(ev)
        if t is ir.MessageStop:
            out = self._start()
            if not self.sent_delta:
                out += self._message_delta(ir.MessageDelta(None, ir.Usage()))
            self.ended = True
            return out + _event("message_stop", {"type": "message_stop"})
        if t is ir.Ping:
            return _PING
        if t is ir.StreamError:
            self.ended = True
            return self.dialect.render_stream_error(ev.error)
        return b""

    def _start(self, ev: ir.MessageStart | None = None) -> bytes:
        if self.started:
            return b""
        self.started = True
        if ev is None:
            ev = ir.MessageStart("", self.model)
        self.usage.add(ev.usage)
        message = {"id": message_id(ev.id), "type": "message", "role": "assistant", "model": self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage_json(ev.usage)}
        return _event("message_start", {"type": "message_start", "message": message})

    def _open(self, ev: ir.BlockStart) -> bytes:
        out = self._close()
        index = self.next_index
        self.next_index += 1
        if ev.kind == "tool_use":
            self.saw_tool_use = True
            block = {"type": "tool_use", "id": ev.id or "toolu_" + uuid.uuid4().hex[:24],
                     "name": ev.name or "", "input": {}}
        else:
            block = _START_BLOCK.get(ev.kind) or _START_BLOCK["text"]
        self.open_wire, self.open_source, self.open_kind = index, ev.index, ev.kind
        self.prefixes = {}
        return out + _event("content_block_start", {"type": "content_block_start", "index": index,
                                                    "content_block": block})

    def _close(self) -> bytes:
        if self.open_wire is None:
            return b""
        index = self.open_wire
        self.open_wire = self.open_source = self.open_kind = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _delta(self, ev: ir.BlockDelta) -> bytes:
        out = b""
        if ev.index != self.open_source or _DELTA_BLOCK.get(ev.kind) != self.open_kind:
            # A delta without its open block: text and thinking get a block of their own; tool
            # arguments or a signature without their block cannot be placed and are dropped.
            if ev.kind not in ("text", "thinking"):
                return b""
            out = self._start() + self._open(ir.BlockStart(ev.index, ev.kind))
        # The bytes before the value are the same for every delta of the open block, so they are
        # built once (render() reuses them); orjson writes exactly these bytes.
        prefix = self.prefixes.get(ev.kind)
        if prefix is None:
            delta_type, field = _DELTA_FIELDS[ev.kind]
            prefix = self.prefixes[ev.kind] = (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
                + str(self.open_wire).encode() + b',"delta":{"type":"' + delta_type.encode()
                + b'","' + field.encode() + b'":')
        return out + prefix + orjson.dumps(ev.value) + b"}}\n\n"

    def _message_delta(self, ev: ir.MessageDelta) -> bytes:
        if self.sent_delta:
            return b""
        self.sent_delta = True
        out = self._close()
        self.usage.add(ev.usage)
        delta = {"stop_reason": final_stop_reason(ev.stop_reason, self.saw_tool_use),
                 "stop_sequence": ev.stop_sequence}
        return out + _event("message_delta", {"type": "message_delta", "delta": delta,
                                               "usage": usage_json(self.usage)})


# --- usage taps for the byte pass-through --------------------------------------------------------

def _usage_from(data: dict, usage: ir.Usage) -> None:
    if not isinstance(data, dict):
        return
    usage.add(ir.Usage(input_tokens=data.get("input_tokens") or 0,
                       output_tokens=data.get("output_tokens") or 0,
                       cache_read_input_tokens=data.get("cache_read_input_tokens") or 0,
                       cache_creation_input_tokens=data.get("cache_creation_input_tokens") or 0))


class StreamUsageTap:
    """Reads usage and the stop reason from Anthropic SSE bytes: ``message_start`` (input and
    cache tokens) and ``message_delta`` (output tokens, ``delta.stop_reason``). Other events are
    not decoded as JSON."""

    __slots__ = ("parser", "usage", "stop_reason", "done")

    def __init__(self) -> None:
        self.parser = SSEParser()
        self.usage = ir.Usage()
        self.stop_reason: str | None = None
        self.done = False   # message_stop passed

    def feed(self, chunk: bytes) -> None:
        for event, data in self.parser.feed(chunk):
            if event == "message_stop":
                self.done = True
            elif event == "message_start":
                try:
                    _usage_from(orjson.loads(data).get("message", {}).get("usage"), self.usage)
                except (orjson.JSONDecodeError, AttributeError):
                    pass
            elif event == "message_delta":
                try:
                    msg = orjson.loads(data)
                    _usage_from(msg.get("usage"), self.usage)
                    reason = (msg.get("delta") or {}).get("stop_reason")
                except (orjson.JSONDecodeError, AttributeError):
                    continue
                if isinstance(reason, str):
                    self.stop_reason = reason


class JSONUsageTap:
    """Reads usage and the stop reason from a whole Message JSON body."""

    __slots__ = ("usage", "stop_reason")

    def __init__(self) -> None:
        self.usage = ir.Usage()
        self.stop_reason: str | None = None

    def feed(self, chunk: bytes) -> None:
        try:
            data = orjson.loads(chunk)
        except orjson.JSONDecodeError:
            return
        if isinstance(data, dict):
            _usage_from(data.get("usage"), self.usage)
            reason = data.get("stop_reason")
            if isinstance(reason, str):
                self.stop_reason = reason


# --- pass-through answers as canonical responses (for logs) -------------------------------------

def response_from_sse(raw: bytes) -> ir.Response | None:
    """An Anthropic Messages SSE stream as a :class:`ir.Response`: the adapter's event reader
    (Anthropic SSE -> canonical events) folded by :class:`ir.ResponseCollector`. A stream cut
    short or ended by an ``error`` event gives what was received; None when no ``message_start``
    was found (not a Messages stream)."""
    parser = SSEParser()
    reader = EventReader("anthropic")
    collector = ir.ResponseCollector()
    started = False
    # The final "\n\n" completes a last event whose blank line was cut off.
    for event, data in list(parser.feed(raw)) + list(parser.feed(b"\n\n")):
        try:
            for ev in reader.feed(event, data):
                if type(ev) is ir.MessageStart:
                    started = True
                collector.feed(ev)
        except (KeyError, TypeError, AttributeError):
            continue   # e.g. a delta without its block: skipped, as a client would
    if not started:
        return None
    try:
        return collector.response()
    except (KeyError, TypeError):   # block indices that are not integers
        return None


def response_from_json(raw: bytes) -> ir.Response | None:
    """A Messages JSON body as a :class:`ir.Response`; None for anything else (an error body...)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("type", "message") != "message" or not isinstance(data.get("content"), list):
        return None
    resp = response_from_message(data)
    resp.stop_reason = data.get("stop_reason") if isinstance(data.get("stop_reason"), str) else None
    return resp
