"""The OpenAI Responses API (``POST /v1/responses``) as part of the OpenAI dialect.

To an OpenAI upstream the request is forwarded byte for byte. For any other provider it is
translated: the request becomes an :class:`hookway.ir.Request` (operation ``responses``), the
adapter answers it like a chat request, and the answer is rendered as a Response object or as
the Responses stream events (``response.created``, ``response.output_item.added``,
``response.output_text.delta``, ``response.function_call_arguments.delta``,
``response.completed``...).

The gateway keeps no state, so ``previous_response_id`` can only be honoured by an OpenAI
upstream; translated, it is refused with a 400 rather than silently ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from hookway import ir
from hookway.errors import GatewayError, invalid
from hookway.sse import SSEParser, frame

from . import fields
from .translate import parse_arguments, usage_from_openai

# Request fields with a slot in ir.Request; the rest goes to ``extra``.
KNOWN = frozenset({"model", "input", "instructions", "max_output_tokens", "temperature", "top_p",
                   "stream", "tools", "tool_choice", "parallel_tool_calls", "user", "reasoning"})


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# --- request ----------------------------------------------------------------------------------

def _tools(body: dict) -> list[ir.Tool]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid("`tools` must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        path = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise invalid(f"`{path}`: only function tools can be translated to another provider "
                          f"(found type {tool.get('type') if isinstance(tool, dict) else tool!r})", path)
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise invalid(f"`{path}.name` must be a non-empty string", f"{path}.name")
        params = tool.get("parameters")
        out.append(ir.Tool(name=tool["name"], description=tool.get("description"),
                           input_schema=params if isinstance(params, dict) else {"type": "object", "properties": {}}))
    return out


def _tool_choice(body: dict) -> Any:
    choice = body.get("tool_choice")
    if choice is None or choice in ("auto", "none"):
        return choice
    if choice == "required":
        return "any"
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "tool", "name": choice["name"]}
    raise invalid("`tool_choice` must be \"auto\", \"none\", \"required\" or "
                  "{\"type\": \"function\", \"name\": ...}", "tool_choice")


def _input(value: Any, system: list[dict]) -> list[dict]:
    """Responses ``input`` (string or items) -> canonical messages; leading system/developer
    messages are appended to ``system``."""
    if isinstance(value, str):
        return [{"role": "user", "content": [{"type": "text", "text": value}]}]
    if not isinstance(value, list) or not value:
        raise invalid("`input` is required and must be a string or a non-empty list of items", "input")
    messages: list[dict] = []
    for i, item in enumerate(value):
        path = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid(f"`{path}` must be an object", path)
        kind = item.get("type", "message")
        last = messages[-1] if messages else None
        if kind == "message":
            role = item.get("role")
            blocks = fields.content_blocks(item.get("content"), f"{path}.content")
            if role in ("system", "developer"):
                text_blocks = [b for b in blocks if b.get("type") == "text"]
                if not messages:
                    system += text_blocks
                else:
                    messages.append({"role": "system", "content": text_blocks})
            elif role in ("user", "assistant"):
                messages.append({"role": role, "content": blocks})
            else:
                raise invalid(f"`{path}.role` must be user, assistant, system or developer", f"{path}.role")
        elif kind == "function_call":
            if not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str):
                raise invalid(f"`{path}` needs string `call_id` and `name`", path)
            block = {"type": "tool_use", "id": item["call_id"], "name": item["name"],
                     "input": parse_arguments(item.get("arguments"))}
            if last is not None and last["role"] == "assistant":
                last["content"].append(block)
            else:
                messages.append({"role": "assistant", "content": [block]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise invalid(f"`{path}.call_id` must be a string", f"{path}.call_id")
            output = item.get("output")
            content = fields.content_blocks(output, f"{path}.output") if isinstance(output, list) else \
                [{"type": "text", "text": output if isinstance(output, str) else orjson.dumps(output).decode()}]
            result = {"type": "tool_result", "tool_use_id": item["call_id"], "content": content, "is_error": False}
            if last is not None and last["role"] == "user" and last["content"] and \
                    all(b.get("type") == "tool_result" for b in last["content"]):
                last["content"].append(result)
            else:
                messages.append({"role": "user", "content": [result]})
        elif kind == "reasoning":
            continue   # earlier reasoning: other providers cannot use it
        else:
            raise invalid(f"`{path}.type` {kind!r} cannot be translated to another provider", f"{path}.type")
    return messages


def parse(body: dict, model: str, stream: bool) -> ir.Request:
    if body.get("previous_response_id") is not None:
        raise invalid("`previous_response_id` needs an OpenAI upstream: the gateway keeps no "
                      "conversation state to continue it elsewhere", "previous_response_id")
    system: list[dict] = []
    instructions = fields.string(body, "instructions")
    if instructions:
        system.append({"type": "text", "text": instructions})
    messages = _input(body.get("input"), system)
    reasoning = fields.obj(body, "reasoning") or {}
    effort = reasoning.get("effort") if isinstance(reasoning.get("effort"), str) else None
    return ir.Request(
        model=model, messages=messages, system=system, operation="responses", stream=stream,
        max_tokens=fields.integer(body, "max_output_tokens"),
        temperature=fields.number(body, "temperature"), top_p=fields.number(body, "top_p"),
        tools=_tools(body), tool_choice=_tool_choice(body),
        parallel_tool_calls=fields.boolean(body, "parallel_tool_calls"),
        user=fields.string(body, "user"), reasoning_effort=effort, include_usage=True,
        extra={k: v for k, v in body.items() if k not in KNOWN})


# --- answers ----------------------------------------------------------------------------------

def usage_body(usage: ir.Usage) -> dict:
    prompt = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": usage.cache_read_input_tokens},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": prompt + usage.output_tokens}


def _envelope(response_id: str, model: str, created: int, request: ir.Request | None, status: str,
              output: list, usage: ir.Usage | None, stop_reason: str | None = None) -> dict:
    incomplete = {"reason": "max_output_tokens"} if stop_reason == "max_tokens" else None
    if incomplete and status == "completed":
        status = "incomplete"
    return {
        "id": response_id, "object": "response", "created_at": created, "status": status,
        "error": None, "incomplete_details": incomplete,
        "instructions": None, "max_output_tokens": request.max_tokens if request else None,
        "model": model, "output": output,
        "parallel_tool_calls": request.parallel_tool_calls is not False if request else True,
        "temperature": request.temperature if request else None,
        "top_p": request.top_p if request else None,
        "tool_choice": "auto", "tools": [], "metadata": {},
        "text": {"format": {"type": "text"}},
        "usage": usage_body(usage) if usage is not None else None,
    }


def _message_item(item_id: str, text: str, status: str = "completed") -> dict:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" or text else []}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def _reasoning_item(item_id: str, text: str) -> dict:
    return {"type": "reasoning", "id": item_id,
            "summary": [{"type": "summary_text", "text": text}] if text else []}


def render_response(response: ir.Response, request: ir.Request | None, model: str) -> dict:
    output = []
    for block in response.content:
        kind = block.get("type")
        if kind == "text":
            output.append(_message_item(_id("msg_"), block.get("text", "")))
        elif kind == "tool_use":
            output.append(_call_item(_id("fc_"), block["id"], block["name"],
                                     orjson.dumps(block.get("input") or {}).decode()))
        elif kind == "thinking":
            output.append(_reasoning_item(_id("rs_"), block.get("thinking", "")))
    return _envelope(_id("resp_"), model, int(time.time()), request, "completed", output,
                     response.usage, response.stop_reason)


class StreamRenderer:
    """Canonical events -> Responses API stream events (``event: <type>`` + JSON data with
    ``type`` and ``sequence_number``)."""

    def __init__(self, model: str, request: ir.Request | None):
        self.model = model
        self.request = request
        self.id = _id("resp_")
        self.created = int(time.time())
        self.seq = 0
        self.usage = ir.Usage()
        self.stop_reason: str | None = None
        self.output: list[dict] = []           # finished items, in output order
        self.current: dict | None = None       # the item being streamed
        self.parts: list[str] = []             # its text / arguments so far
        self.failed = False

    def _event(self, kind: str, data: dict) -> bytes:
        data = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return frame(orjson.dumps(data), kind)

    def _snapshot(self, status: str, usage: ir.Usage | None = None) -> dict:
        return _envelope(self.id, self.model, self.created, self.request, status, list(self.output),
                         usage, self.stop_reason)

    def __call__(self, ev: ir.Event) -> bytes:
        if self.failed:
            return b""
        t = type(ev)
        if t is ir.BlockDelta:
            item = self.current
            if item is None:
                return b""
            index = len(self.output)
            if ev.kind == "text":
                self.parts.append(ev.value)
                return self._event("response.output_text.delta", {
                    "item_id": item["id"], "output_index": index, "content_index": 0,
                    "delta": ev.value, "logprobs": []})
            if ev.kind == "json":
                self.parts.append(ev.value)
                return self._event("response.function_call_arguments.delta", {
                    "item_id": item["id"], "output_index": index, "delta": ev.value})
            if ev.kind == "thinking":
                self.parts.append(ev.value)
                return self._event("response.reasoning_summary_text.delta", {
                    "item_id": item["id"], "output_index": index, "summary_index": 0, "delta": ev.value})
            return b""
        if t is ir.BlockStart:
            return self._start_item(ev)
        if t is ir.BlockStop:
            return self._finish_item()
        if t is ir.MessageStart:
            self.usage.add(ev.usage)
            snapshot = self._snapshot("in_progress")
            return (self._event("response.created", {"response": snapshot})
                    + self._event("response.in_progress", {"response": snapshot}))
        if t is ir.MessageDelta:
            self.usage.add(ev.usage)
            self.stop_reason = ev.stop_reason
            return b""
        if t is ir.MessageStop:
            out = self._finish_item() if self.current is not None else b""
            snapshot = self._snapshot("completed", self.usage)
            kind = "response.incomplete" if snapshot["status"] == "incomplete" else "response.completed"
            return out + self._event(kind, {"response": snapshot})
        if t is ir.Ping:
            return b": ping\n\n"
        if t is ir.StreamError:
            self.failed = True
            return self.error_event(ev.error)
        return b""

    def error_event(self, err: GatewayError) -> bytes:
        from .dialect import error_body   # late import: dialect imports this module
        body = error_body(err)["error"]
        # The Responses `error` event, plus the `error` object that SDKs look for to raise.
        return self._event("error", {"code": body["code"] or body["type"], "message": body["message"],
                                     "param": body["param"], "error": body})

    def _start_item(self, ev: ir.BlockStart) -> bytes:
        index = len(self.output)
        self.parts = []
        if ev.kind == "text":
            item = _message_item(_id("msg_"), "", "in_progress")
            self.current = item
            return (self._event("response.output_item.added", {"output_index": index, "item": item})
                    + self._event("response.content_part.added", {
                        "item_id": item["id"], "output_index": index, "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []}}))
        if ev.kind == "tool_use":
            item = _call_item(_id("fc_"), ev.id or _id("call_"), ev.name or "", "", "in_progress")
            self.current = item
            return self._event("response.output_item.added", {"output_index": index, "item": item})
        item = _reasoning_item(_id("rs_"), "")
        self.current = item
        return (self._event("response.output_item.added", {"output_index": index, "item": item})
                + self._event("response.reasoning_summary_part.added", {
                    "item_id": item["id"], "output_index": index, "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""}}))

    def _finish_item(self) -> bytes:
        item = self.current
        if item is None:
            return b""
        self.current = None
        index = len(self.output)
        value = "".join(self.parts)
        out = b""
        if item["type"] == "message":
            part = {"type": "output_text", "text": value, "annotations": []}
            done = _message_item(item["id"], value)
            out += self._event("response.output_text.done", {
                "item_id": item["id"], "output_index": index, "content_index": 0, "text": value, "logprobs": []})
            out += self._event("response.content_part.done", {
                "item_id": item["id"], "output_index": index, "content_index": 0, "part": part})
        elif item["type"] == "function_call":
            done = _call_item(item["id"], item["call_id"], item["name"], value)
            out += self._event("response.function_call_arguments.done", {
                "item_id": item["id"], "output_index": index, "name": item["name"], "arguments": value})
        else:
            done = _reasoning_item(item["id"], value)
            out += self._event("response.reasoning_summary_text.done", {
                "item_id": item["id"], "output_index": index, "summary_index": 0, "text": value})
            out += self._event("response.reasoning_summary_part.done", {
                "item_id": item["id"], "output_index": index, "summary_index": 0,
                "part": {"type": "summary_text", "text": value}})
        self.output.append(done)
        return out + self._event("response.output_item.done", {"output_index": index, "item": done})


# --- reading an upstream's answer back (log sinks) -----------------------------------------------

def stop_reason_of(response: Any) -> str | None:
    """The canonical stop reason of a Response object (None when it is not finished)."""
    if not isinstance(response, dict):
        return None
    status = response.get("status")
    if status == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return "refusal" if reason == "content_filter" else "max_tokens"
    if status not in ("completed", None):
        return None
    output = response.get("output")
    if isinstance(output, list) and any(isinstance(i, dict) and i.get("type") == "function_call" for i in output):
        return "tool_use"
    return "end_turn"


def _texts(parts: Any, kinds: tuple[str, ...]) -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(p.get("text") or p.get("refusal") or "" for p in parts
                   if isinstance(p, dict) and p.get("type") in kinds)


def response_from_object(data: Any) -> ir.Response | None:
    """A Responses API ``response`` object as an :class:`ir.Response`; None when it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("output"), list):
        return None
    content: list[dict] = []
    for item in data["output"]:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            text = _texts(item.get("content"), ("output_text", "refusal"))
            if text:
                content.append({"type": "text", "text": text})
        elif kind == "function_call":
            content.append({"type": "tool_use", "id": item.get("call_id") or item.get("id") or _id("call_"),
                            "name": item.get("name") or "", "input": parse_arguments(item.get("arguments"))})
        elif kind == "reasoning":
            text = _texts(item.get("summary"), ("summary_text",)) or _texts(item.get("content"), ("reasoning_text",))
            if text:
                content.append({"type": "thinking", "thinking": text, "signature": ""})
    return ir.Response(id=data.get("id") or _id("resp_"), model=data.get("model") or "", content=content,
                       stop_reason=stop_reason_of(data), usage=usage_from_openai(data.get("usage")))


def response_from_stream(raw: bytes) -> ir.Response | None:
    """A Responses API event stream as an :class:`ir.Response`, from its final
    ``response.completed`` / ``response.incomplete`` event; None without one."""
    final = None
    for _event, payload in SSEParser().feed(raw):
        if '"response.completed"' not in payload and '"response.incomplete"' not in payload:
            continue
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("type") in ("response.completed", "response.incomplete"):
            final = data.get("response")
    return response_from_object(final)
