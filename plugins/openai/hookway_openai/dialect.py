"""The OpenAI API dialect: chat completions, text completions, embeddings (and the Responses API,
see :mod:`hookway_openai.responses`).

Requests are parsed into :class:`hookway.ir.Request` with messages normalised to the canonical
(Anthropic-shaped) blocks; answers, stream events and errors are rendered in OpenAI's wire format.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import orjson

from hookway import ir
from hookway.dialects import Dialect
from hookway.errors import GatewayError, invalid
from hookway.sse import frame

from . import fields, responses
from .stream import ChunkTranslator, SSEChunkReader, TextCompletionTranslator
from .translate import FINISH_TO_STOP, STOP_TO_FINISH, new_message_id, parse_arguments, response_from_openai, usage_from_openai, usage_to_openai

# GatewayError.kind -> OpenAI error type.
ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "unsupported_operation": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "rate_limit": "rate_limit_error",
    "billing": "insufficient_quota",
    "timeout": "timeout",
}
# Default codes where OpenAI has a well-known one and the error carries none.
ERROR_CODES = {"billing": "insufficient_quota", "rate_limit": "rate_limit_exceeded",
               "unsupported_operation": "unsupported_operation"}

# Chat request fields with a slot in ir.Request; everything else goes to ``extra``.
CHAT_FIELDS = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
    "stop", "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls", "user",
    "reasoning_effort", "reasoning", "functions", "function_call",
})
COMPLETIONS_FIELDS = frozenset({"model", "prompt", "max_tokens", "temperature", "top_p", "top_k",
                                "stop", "stream", "stream_options", "user"})
EMBEDDINGS_FIELDS = frozenset({"model", "input", "user"})

# Checked by ``peek`` when present (``null`` counts as absent).
_INTEGER_FIELDS = ("max_tokens", "max_completion_tokens")
_NUMBER_FIELDS = ("temperature", "top_p")
# Operations this dialect routes but no adapter translates (an adapter that does not list them
# answers 400 unsupported_operation): parsed to a bare request, the body kept in ``extra``.
_OPAQUE_OPERATIONS = frozenset({"images", "speech", "transcription", "batch"})


def _json_type(value: Any) -> str:
    if value is True or value is False:
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def _tool_use(call: Any, path: str) -> dict:
    if not isinstance(call, dict):
        raise invalid(f"`{path}` must be an object", path)
    fn = call.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise invalid(f"`{path}.function.name` must be a string", f"{path}.function")
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid(f"`{path}.id` must be a non-empty string", f"{path}.id")
    return {"type": "tool_use", "id": call_id, "name": fn["name"],
            "input": parse_arguments(fn.get("arguments"))}


def parse_messages(messages: Any) -> tuple[list[dict], list[dict]]:
    """OpenAI chat messages -> (system blocks, canonical messages)."""
    if not isinstance(messages, list):
        raise invalid("`messages` is required and must be a list of messages", "messages")
    if not messages:
        raise invalid("`messages` must contain at least one message", "messages")
    system: list[dict] = []
    out: list[dict] = []
    leading = True
    for i, msg in enumerate(messages):
        path = f"messages[{i}]"
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise invalid(f"`{path}` must be an object with a string `role`", path)
        role = msg["role"]
        if role in ("system", "developer"):
            blocks = [b for b in fields.content_blocks(msg.get("content"), f"{path}.content") if b.get("type") == "text"]
            if leading:
                system += blocks
            else:   # kept in place, as a system message (CONFORMANCE 1)
                out.append({"role": "system", "content": blocks})
            continue
        leading = False
        if role == "user":
            out.append({"role": "user", "content": fields.content_blocks(msg.get("content"), f"{path}.content")})
        elif role == "assistant":
            blocks: list[dict] = []
            reasoning = msg.get("reasoning_content") or msg.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                blocks.append({"type": "thinking", "thinking": reasoning, "signature": ""})
            blocks += fields.content_blocks(msg.get("content"), f"{path}.content")
            calls = msg.get("tool_calls")
            if calls is not None:
                if not isinstance(calls, list):
                    raise invalid(f"`{path}.tool_calls` must be a list", f"{path}.tool_calls")
                blocks += [_tool_use(c, f"{path}.tool_calls[{j}]") for j, c in enumerate(calls)]
            legacy = msg.get("function_call")
            if isinstance(legacy, dict) and isinstance(legacy.get("name"), str):
                # The legacy API has no call ids: the function name links call and result.
                blocks.append({"type": "tool_use", "id": legacy["name"], "name": legacy["name"],
                               "input": parse_arguments(legacy.get("arguments"))})
            out.append({"role": "assistant", "content": blocks})
        elif role in ("tool", "function"):
            call_id = msg.get("tool_call_id") if role == "tool" else msg.get("name")
            if not isinstance(call_id, str) or not call_id:
                field = "tool_call_id" if role == "tool" else "name"
                raise invalid(f"`{path}.{field}` is required for a {role} message", f"{path}.{field}")
            content = [b for b in fields.content_blocks(msg.get("content"), f"{path}.content")
                       if b.get("type") in ("text", "image")]
            result = {"type": "tool_result", "tool_use_id": call_id, "content": content, "is_error": False}
            # Consecutive tool messages answer one assistant turn: one user message holds them all.
            last = out[-1] if out else None
            if last is not None and last.get("role") == "user" and last["content"] and \
                    all(b.get("type") == "tool_result" for b in last["content"]):
                last["content"].append(result)
            else:
                out.append({"role": "user", "content": [result]})
        else:
            raise invalid(f"`{path}.role` must be one of system, developer, user, assistant, tool; "
                          f"found {role!r}", f"{path}.role")
    return system, out


def parse_tools(body: dict) -> list[ir.Tool]:
    tools = body.get("tools")
    if tools is None and isinstance(body.get("functions"), list):   # legacy functions API
        tools = [{"type": "function", "function": f} for f in body["functions"]]
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid("`tools` must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        path = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise invalid(f"`{path}` must be an object", path)
        if tool.get("type", "function") != "function":
            raise invalid(f"`{path}.type` {tool.get('type')!r} is not supported when translating to "
                          "another provider; only function tools are", f"{path}.type")
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise invalid(f"`{path}.function.name` must be a non-empty string", f"{path}.function.name")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise invalid(f"`{path}.function.parameters` must be an object", f"{path}.function.parameters")
        out.append(ir.Tool(name=fn["name"], description=fn.get("description"),
                           input_schema=params or {"type": "object", "properties": {}}))
    return out


def parse_tool_choice(body: dict) -> Any:
    choice = body.get("tool_choice")
    if choice is None:
        legacy = body.get("function_call")
        if isinstance(legacy, str):
            choice = legacy
        elif isinstance(legacy, dict):
            choice = {"type": "function", "function": legacy}
    if choice is None:
        return None
    if choice in ("auto", "none"):
        return choice
    if choice == "required":
        return "any"
    if isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function") if isinstance(choice.get("function"), dict) else choice
        if isinstance(fn.get("name"), str):
            return {"type": "tool", "name": fn["name"]}
    raise invalid("`tool_choice` must be \"auto\", \"none\", \"required\" or "
                  "{\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice")


def _reasoning(body: dict) -> tuple[str | None, int | None]:
    effort = fields.string(body, "reasoning_effort")
    budget = None
    reasoning = body.get("reasoning")   # OpenRouter style: {"effort": ..., "max_tokens": ...}
    if isinstance(reasoning, dict):
        if effort is None and isinstance(reasoning.get("effort"), str):
            effort = reasoning["effort"]
        if isinstance(reasoning.get("max_tokens"), int) and not isinstance(reasoning["max_tokens"], bool):
            budget = reasoning["max_tokens"]
    return effort, budget


def _include_usage(body: dict, stream: bool) -> bool:
    options = fields.obj(body, "stream_options") or {}
    if not stream:
        return True   # a whole answer always carries usage
    return options.get("include_usage") is True


# --- usage taps for the byte pass-through ----------------------------------------------------

def _stop_of_finish(finish: Any) -> str | None:
    if not isinstance(finish, str) or not finish:
        return None
    return FINISH_TO_STOP.get(finish, "end_turn")


_stop_of_response = responses.stop_reason_of


class StreamUsageTap:
    """Reads usage and the stop reason from OpenAI SSE chunks as they pass. Cheap: only complete
    lines with a usage object are parsed (with ``include_usage`` every chunk carries
    ``"usage":null``, skipped by the substring test); the rest is a few bounded substring searches
    per network read. ``finish_reason`` is read in place from its bytes (``"finish_reason":null``
    on the other chunks does not match), mapped to Anthropic's values (stop -> end_turn, length
    -> max_tokens, tool_calls -> tool_use, content_filter -> refusal). For a Responses stream it
    comes from the ``response.completed`` event, parsed anyway for its usage."""

    __slots__ = ("usage", "stop_reason", "done", "_partial", "_mark", "_finishes")

    def __init__(self, finishes: bool = True) -> None:
        self.usage = ir.Usage()
        self.stop_reason: str | None = None
        self.done = False   # the final event passed: [DONE], or response.completed
        self._partial = b""
        # The finish_reason pattern, compact or spaced JSON: decided on the first read that shows
        # the key (every chunk carries it, null until the end), so later reads search once.
        self._mark: bytes | None = None
        self._finishes = finishes   # False for a Responses stream: no finish_reason there

    def feed(self, chunk: bytes) -> None:
        buf = self._partial + chunk if self._partial else chunk
        end = buf.rfind(b"\n")
        if end < 0:
            self._partial = buf
            return
        self._partial = buf[end + 1:] if end + 1 < len(buf) else b""
        # Bounded searches: no copy of the chunk unless it holds a usage object.
        mark = self._mark
        if mark is None and self._finishes:
            mark = self._finish_mark(buf, end)
        if mark is not None:
            at = buf.find(mark, 0, end)
            if at >= 0:   # once per answer
                self._finish(buf, at + len(mark), end)
        if self.stop_reason is not None and not self.done and self._finishes:
            self.done = buf.find(b"[DONE]", 0, end) >= 0   # only searched after the finish
        # Only the lines holding a usage object are cut out and parsed (usually one per answer).
        for pattern in (b'"usage":{', b'"usage": {'):
            at = buf.find(pattern, 0, end)
            while at >= 0:
                start = buf.rfind(b"\n", 0, at) + 1
                stop = buf.find(b"\n", at, end)
                stop = end if stop < 0 else stop
                self._read_line(buf[start:stop])
                at = buf.find(pattern, stop, end)

    def _read_line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        try:
            data = orjson.loads(line[5:])
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        usage = data.get("usage")
        if usage is None and isinstance(data.get("response"), dict):
            response = data["response"]   # Responses API: response.completed / incomplete
            usage = response.get("usage")
            stop = _stop_of_response(response)
            if stop is not None:
                self.stop_reason = stop
                self.done = True
        if isinstance(usage, dict):
            self.usage = usage_from_openai(usage)

    def _finish_mark(self, buf: bytes, end: int) -> bytes | None:
        at = buf.find(b'"finish_reason":', 0, end)
        if at >= 0:
            self._mark = b'"finish_reason": "' if buf[at + 16:at + 17] == b" " else b'"finish_reason":"'
        return self._mark

    def _finish(self, buf: bytes, at: int, end: int) -> None:
        close = buf.find(b'"', at, end)
        if close > at:
            self.stop_reason = FINISH_TO_STOP.get(buf[at:close].decode("ascii", "replace"), "end_turn")


class BodyUsageTap:
    """Reads usage and the stop reason from a whole JSON answer (parsed once, when read)."""

    __slots__ = ("_parts", "_usage", "_stop")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._usage: ir.Usage | None = None
        self._stop: str | None = None

    def feed(self, chunk: bytes) -> None:
        self._parts.append(chunk)
        self._usage = None

    def _read(self) -> None:
        try:
            data = orjson.loads(b"".join(self._parts))
        except orjson.JSONDecodeError:
            data = None
        self._stop = None
        if not isinstance(data, dict):
            self._usage = ir.Usage()
            return
        self._usage = usage_from_openai(data.get("usage"))
        choices = data.get("choices")
        if isinstance(choices, list):
            choice = choices[0] if choices and isinstance(choices[0], dict) else {}
            message = choice.get("message")
            if isinstance(message, dict) and message.get("tool_calls"):
                self._stop = "tool_use"   # whatever the upstream said (some say "stop")
            else:
                self._stop = _stop_of_finish(choice.get("finish_reason"))
        elif data.get("object") == "response":
            self._stop = _stop_of_response(data)

    @property
    def usage(self) -> ir.Usage:
        if self._usage is None:
            self._read()
        return self._usage

    @property
    def stop_reason(self) -> str | None:
        if self._usage is None:
            self._read()
        return self._stop


# --- stream renderers ------------------------------------------------------------------------

class ChatStreamRenderer:
    """Canonical events -> ``chat.completion.chunk`` SSE (or ``text_completion`` chunks)."""

    def __init__(self, model: str, include_usage: bool, text_completion: bool = False):
        self.model = model
        self.include_usage = include_usage
        self.text_completion = text_completion
        self.id = new_message_id()
        self.created = int(time.time())
        self.usage = ir.Usage()
        self.tool_of_block: dict[int, int] = {}   # canonical block index -> OpenAI tool call index
        self.failed = False

    def _chunk(self, delta: dict | None = None, finish_reason: str | None = None, text: str | None = None) -> bytes:
        if self.text_completion:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
            obj = "text_completion"
        else:
            choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}
            obj = "chat.completion.chunk"
        return frame(orjson.dumps({"id": self.id, "object": obj, "created": self.created,
                                   "model": self.model, "choices": [choice]}))

    def __call__(self, ev: ir.Event) -> bytes:
        if self.failed:
            return b""
        t = type(ev)
        if t is ir.BlockDelta:
            if ev.kind == "text":
                return self._chunk({"content": ev.value}, text=ev.value)
            if self.text_completion:
                return b""
            if ev.kind == "json":
                return self._chunk({"tool_calls": [{"index": self.tool_of_block.get(ev.index, 0),
                                                    "function": {"arguments": ev.value}}]})
            if ev.kind == "thinking":
                return self._chunk({"reasoning_content": ev.value})
            return b""   # signatures have no OpenAI form
        if t is ir.BlockStart:
            if ev.kind != "tool_use" or self.text_completion:
                return b""
            index = len(self.tool_of_block)
            self.tool_of_block[ev.index] = index
            return self._chunk({"tool_calls": [{"index": index, "id": ev.id, "type": "function",
                                                "function": {"name": ev.name, "arguments": ""}}]})
        if t is ir.MessageStart:
            if ev.id:
                self.id = ev.id
            self.usage.add(ev.usage)
            if self.text_completion:
                return b""
            return self._chunk({"role": "assistant", "content": ""})
        if t is ir.MessageDelta:
            self.usage.add(ev.usage)
            out = self._chunk({}, STOP_TO_FINISH.get(ev.stop_reason or "end_turn", "stop"))
            if self.include_usage:
                obj = "text_completion" if self.text_completion else "chat.completion.chunk"
                out += frame(orjson.dumps({"id": self.id, "object": obj, "created": self.created,
                                           "model": self.model, "choices": [],
                                           "usage": usage_to_openai(self.usage)}))
            return out
        if t is ir.MessageStop:
            return b"data: [DONE]\n\n"
        if t is ir.Ping:
            return b": ping\n\n"
        if t is ir.StreamError:
            self.failed = True   # no [DONE] after an error: the client must see it failed
            return stream_error_bytes(ev.error)
        return b""   # BlockStop: OpenAI has no block end


def error_body(err: GatewayError) -> dict:
    code = err.code or ERROR_CODES.get(err.kind)
    if code is None and err.kind == "not_found" and err.param == "model":
        code = "model_not_found"
    return {"error": {"message": err.message, "type": ERROR_TYPES.get(err.kind, "api_error"),
                      "code": code, "param": err.param}}


def stream_error_bytes(err: GatewayError) -> bytes:
    return frame(orjson.dumps(error_body(err)))


# --- the dialect -------------------------------------------------------------------------------

class OpenAIDialect(Dialect):
    name = "openai"

    def parse(self, body: dict, operation: str) -> ir.Request:
        if not isinstance(body, dict):
            raise invalid("request body must be a JSON object")
        model, stream = self.peek(body, operation)
        if operation == "responses":
            return responses.parse(body, model, stream)
        if operation == "embeddings":
            return self._parse_embeddings(body, model)
        if operation == "completions":
            return self._parse_completions(body, model, stream)
        if operation in _OPAQUE_OPERATIONS:
            return ir.Request(model=model, messages=[], operation=operation, stream=stream,
                              extra={k: v for k, v in body.items() if k != "model"})
        return self._parse_chat(body, model, stream)

    def peek(self, body: dict, operation: str) -> tuple[str, bool]:
        """``(model, stream)`` plus the cheap type checks the byte pass-through relies on (it runs
        on every request, so a handful of ``get`` and type tests, no parsing): a body the upstream
        would refuse for a wrong type is answered 400 here, naming the field, and never sent."""
        model = body.get("model")
        if type(model) is not str or not model:
            raise invalid("`model` is required and must be a non-empty string", "model")
        stream = body.get("stream")
        if stream is not None and stream is not True and stream is not False:
            raise invalid("`stream` must be true or false", "stream")
        if operation == "chat":
            messages = body.get("messages")
            if type(messages) is not list or not messages:
                raise invalid("`messages` is required and must be a non-empty list of messages", "messages")
        elif operation == "completions":
            prompt = body.get("prompt")
            if not isinstance(prompt, (str, list)):
                raise invalid("`prompt` is required and must be a string or a list", "prompt")
        elif operation == "embeddings":
            return model, False
        for name in _INTEGER_FIELDS:
            value = body.get(name)
            if value is not None and type(value) is not int:
                raise invalid(f"`{name}` must be an integer, found {_json_type(value)}", name)
        for name in _NUMBER_FIELDS:
            value = body.get(name)
            if value is not None and type(value) is not float and type(value) is not int:
                raise invalid(f"`{name}` must be a number, found {_json_type(value)}", name)
        return model, stream is True

    def _common(self, body: dict) -> dict:
        max_tokens = fields.integer(body, "max_completion_tokens")
        if max_tokens is None:
            max_tokens = fields.integer(body, "max_tokens")
        top_k = fields.number(body, "top_k")
        return {"max_tokens": max_tokens, "temperature": fields.number(body, "temperature"),
                "top_p": fields.number(body, "top_p"), "top_k": int(top_k) if top_k is not None else None,
                "stop": fields.stop(body), "user": fields.string(body, "user")}

    def _parse_chat(self, body: dict, model: str, stream: bool) -> ir.Request:
        system, messages = parse_messages(body.get("messages"))
        effort, budget = _reasoning(body)
        return ir.Request(
            model=model, messages=messages, system=system, operation="chat", stream=stream,
            tools=parse_tools(body), tool_choice=parse_tool_choice(body),
            parallel_tool_calls=fields.boolean(body, "parallel_tool_calls"),
            reasoning_effort=effort, reasoning_budget=budget,
            include_usage=_include_usage(body, stream),
            extra={k: v for k, v in body.items() if k not in CHAT_FIELDS},
            **self._common(body))

    def _parse_completions(self, body: dict, model: str, stream: bool) -> ir.Request:
        prompt = body.get("prompt")
        if not isinstance(prompt, (str, list)):
            raise invalid("`prompt` is required and must be a string or a list", "prompt")
        # A single text prompt also becomes a user message, so chat-only providers can answer.
        text = prompt if isinstance(prompt, str) else (prompt[0] if len(prompt) == 1 and isinstance(prompt[0], str) else None)
        messages = [{"role": "user", "content": [{"type": "text", "text": text}]}] if text is not None else []
        return ir.Request(model=model, messages=messages, operation="completions", stream=stream,
                          prompt=prompt, include_usage=_include_usage(body, stream),
                          extra={k: v for k, v in body.items() if k not in COMPLETIONS_FIELDS},
                          **self._common(body))

    def _parse_embeddings(self, body: dict, model: str) -> ir.Request:
        value = body.get("input")
        if not isinstance(value, (str, list)) or (isinstance(value, list) and not value):
            raise invalid("`input` is required and must be a string or a non-empty list", "input")
        return ir.Request(model=model, messages=[], operation="embeddings", input=value,
                          user=fields.string(body, "user"),
                          extra={k: v for k, v in body.items() if k not in EMBEDDINGS_FIELDS})

    # --- answers ---

    def render_response(self, response: ir.Response, request: ir.Request | None, operation: str) -> dict:
        model = response.model or (request.model if request else "")
        if operation == "responses":
            return responses.render_response(response, request, model)
        finish = STOP_TO_FINISH.get(response.stop_reason or "end_turn", "stop")
        created = int(time.time())
        if operation == "completions":
            return {"id": response.id, "object": "text_completion", "created": created, "model": model,
                    "choices": [{"index": 0, "text": ir.text_of(response.content), "logprobs": None,
                                 "finish_reason": finish}],
                    "usage": usage_to_openai(response.usage)}
        message: dict = {"role": "assistant", "content": None}
        texts = [b.get("text", "") for b in response.content if b.get("type") == "text"]
        if texts:
            message["content"] = "".join(texts)
        thinking = "".join(b.get("thinking", "") for b in response.content if b.get("type") == "thinking")
        if thinking:
            message["reasoning_content"] = thinking
        calls = [{"id": b["id"], "type": "function",
                  "function": {"name": b["name"], "arguments": orjson.dumps(b.get("input") or {}).decode()}}
                 for b in response.content if b.get("type") == "tool_use"]
        if calls:
            message["tool_calls"] = calls
        return {"id": response.id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage_to_openai(response.usage)}

    def stream_renderer(self, request: ir.Request | None, operation: str, model: str) -> Callable[[ir.Event], bytes]:
        if operation == "responses":
            return responses.StreamRenderer(model, request)
        # Without the parsed request (a cache replay) the client's wish is unknown: no usage
        # chunk, since a client that did not ask may trip on a chunk with no choices.
        include_usage = request.include_usage if request is not None else False
        return ChatStreamRenderer(model, include_usage, text_completion=operation == "completions")

    def render_error(self, error: GatewayError) -> tuple[int, dict]:
        return error.status, error_body(error)

    def render_stream_error(self, error: GatewayError) -> bytes:
        return stream_error_bytes(error)

    def usage_tap(self, operation: str, stream: bool) -> Any:
        if operation not in ("chat", "completions", "embeddings", "responses"):
            return None
        return StreamUsageTap(finishes=operation != "responses") if stream else BodyUsageTap()

    def response_from_bytes(self, raw: bytes, operation: str, stream: bool) -> ir.Response | None:
        """A pass-through answer (chat/text completions or Responses API; SSE stream or JSON
        body, told apart by the bytes, since a server may ignore ``stream: true``) as an
        :class:`ir.Response`. A cut stream gives what arrived, with ``stop_reason`` None; None
        when the bytes are no such answer (an error body, embeddings...). Off the hot path."""
        if not raw or operation not in ("chat", "completions", "responses"):
            return None
        if raw[:64].lstrip()[:1] == b"{":
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return None
            if operation == "responses":
                return responses.response_from_object(data)
            if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
                return None
            return response_from_openai(data, operation)
        if operation == "responses":
            return responses.response_from_stream(raw)
        translator = TextCompletionTranslator() if operation == "completions" else ChunkTranslator()
        reader = SSEChunkReader(translator)
        events = reader.feed(raw)
        if not translator.started:
            return None   # not one chunk read: not an OpenAI stream
        collector = ir.ResponseCollector()
        for ev in events + reader.finish():
            collector.feed(ev)
        return collector.response()
