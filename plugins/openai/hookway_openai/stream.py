"""OpenAI chat-completion chunks -> canonical stream events, as an explicit state machine.

The rules it keeps are CONFORMANCE.md points 11-15:

* one ``MessageStart`` first, ``MessageStop`` last; one block open at a time; block indices
  contiguous from 0; every opened block closed;
* reasoning deltas (``reasoning_content`` or ``reasoning``) go to a ``thinking`` block, text to a
  ``text`` block, never mixed;
* each OpenAI tool call (matched by its ``index``) is its own ``tool_use`` block whose arguments
  are streamed as ``json`` deltas as they arrive; ids are non-empty and unique;
* ``stop_reason`` is ``tool_use`` whenever a tool block was emitted, ``length`` -> ``max_tokens``,
  ``stop`` -> ``end_turn``; usage from any chunk (typically a trailing usage-only chunk) ends up in
  the final ``MessageDelta``, cached prompt tokens as ``cache_read_input_tokens``;
* a stream that ends with neither a ``finish_reason`` nor ``[DONE]`` was cut: it ends with a
  :class:`hookway.ir.StreamError`, never with a normal stop.

Parallel tool calls: OpenAI-compatible servers send them one after the other (all of index 0,
then index 1...), but some interleave fragments of several indices. Since only one block may be
open and a closed block cannot be reopened, a tool call that appears while another one is still
streaming is buffered; the switch happens as soon as the open call's arguments form a complete
JSON value (which is immediate in the sequential case, so streaming stays live), and whatever is
still buffered is flushed, one block per call, when the message ends.
"""

from __future__ import annotations

from typing import Any

import orjson

from hookway import ir
from hookway.errors import GatewayError, upstream_error
from hookway.sse import SSEParser

from .translate import new_message_id, new_tool_id, stop_reason_for, usage_from_openai


# A delta with only one of these fields, a string, is a piece of this block kind (the fast path).
_SOLE_FIELD_KIND = {"content": "text", "reasoning": "thinking", "reasoning_content": "thinking"}


class _ToolCall:
    __slots__ = ("key", "id", "name", "buffered", "args", "block", "closed")

    def __init__(self, key: Any):
        self.key = key
        self.id: str | None = None
        self.name: str | None = None
        self.buffered: list[str] = []    # fragments received before its block opened
        self.args: list[str] = []        # every fragment, to tell when the arguments are complete
        self.block: int | None = None    # canonical block index once opened
        self.closed = False

    def complete(self) -> bool:
        raw = "".join(self.args).strip()
        # Cheap test first: tool arguments are JSON objects, so a complete value ends with "}".
        if not raw or raw[-1] not in "}]":
            return False
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError:
            return False
        return True


class ChunkTranslator:
    """Feed parsed OpenAI chunks (dicts); get canonical events.

    ``start()`` emits the ``MessageStart`` (call it as soon as the upstream answered 200; ``feed``
    calls it itself otherwise). ``finish(saw_done)`` ends the message: pass ``saw_done=True``
    when the ``data: [DONE]`` line was read."""

    def __init__(self, model: str = "", message_id: str | None = None, provider: str = "upstream"):
        self.model = model
        self.message_id = message_id
        self.provider = provider
        self.started = False
        self.ended = False
        self.next_index = 0
        self.open_index: int | None = None
        self.open_kind: str | None = None          # "text" | "thinking" | "tool_use"
        self.active_tool: _ToolCall | None = None
        self.tools: dict[Any, _ToolCall] = {}
        self.waiting: list[_ToolCall] = []         # tool calls not opened yet, in arrival order
        self.key_of_id: dict[str, Any] = {}
        self.used_ids: set[str] = set()
        self.last_key: Any = None
        self.emitted_tool = False
        self.finish_reason: str | None = None
        self.stop_sequence: str | None = None
        self.usage = ir.Usage()

    # --- public API ---

    def start(self, usage: ir.Usage | None = None) -> list[ir.Event]:
        if self.started:
            return []
        self.started = True
        return [ir.MessageStart(self.message_id or new_message_id(), self.model, usage or ir.Usage())]

    def feed(self, chunk: dict) -> list[ir.Event]:
        if self.ended:
            return []
        out: list[ir.Event] = []
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage_from_openai(usage)
        if not self.started:
            self.message_id = self.message_id or chunk.get("id")
            self.model = self.model or chunk.get("model") or ""
            # Usage on the first chunk (some servers repeat it on every chunk) is the real input.
            out += self.start(ir.Usage(input_tokens=self.usage.input_tokens,
                                       cache_read_input_tokens=self.usage.cache_read_input_tokens))
        error = chunk.get("error")
        if error is not None:
            out.append(ir.StreamError(self._error_of(error)))
            self.ended = True
            return out
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue   # n > 1 is not representable in one canonical message: choice 0 only
            delta = choice.get("delta")
            if delta:
                kind = None
                if len(delta) == 1:
                    # The usual chunk, one piece of text or reasoning: no other field to look for.
                    (field, value), = delta.items()
                    kind = _SOLE_FIELD_KIND.get(field) if type(value) is str else None
                if kind is None:
                    self._delta(delta, out)
                elif value:
                    self._append(kind, value, out)
            finish = choice.get("finish_reason")
            if finish:
                self.finish_reason = finish
                if isinstance(choice.get("stop_reason"), str):   # vLLM names the matched stop string
                    self.stop_sequence = choice["stop_reason"]
                self._close_all(out)   # blocks end now; usage may still follow in a later chunk
        return out

    def _delta(self, delta: dict, out: list) -> None:
        reasoning = delta.get("reasoning_content")
        if not reasoning:
            reasoning = delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._append("thinking", reasoning, out)
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._append("text", content, out)
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for position, call in enumerate(tool_calls):
                if isinstance(call, dict):
                    self._tool_fragment(call, position, out)
        legacy = delta.get("function_call")   # the pre-tools function calling API
        if isinstance(legacy, dict):
            self._tool_fragment({"index": "function_call", "function": legacy}, 0, out)

    def finish(self, saw_done: bool = False) -> list[ir.Event]:
        if self.ended:
            return []
        self.ended = True
        out = self.start()
        if self.finish_reason is None and not saw_done:
            out.append(ir.StreamError(GatewayError(
                "bad_gateway", f"{self.provider}: the upstream stream ended before it finished "
                "(no finish_reason and no [DONE]); the answer is incomplete", status=502,
                provider=self.provider)))
            return out
        self._close_all(out)
        stop = stop_reason_for(self.finish_reason, self.emitted_tool)
        stop_sequence = None
        if stop == "end_turn" and self.stop_sequence:
            stop, stop_sequence = "stop_sequence", self.stop_sequence
        out.append(ir.MessageDelta(stop, self.usage, stop_sequence))
        out.append(ir.MessageStop())
        return out

    # --- blocks ---

    def _open(self, kind: str, out: list, tool: _ToolCall | None = None) -> int:
        self._close_open(out)
        index = self.next_index
        self.next_index += 1
        self.open_index, self.open_kind = index, kind
        if tool is None:
            out.append(ir.BlockStart(index, kind))
        else:
            if not tool.id:
                tool.id = self._unique_id(None)
            tool.block = index
            self.active_tool = tool
            self.emitted_tool = True
            out.append(ir.BlockStart(index, "tool_use", tool.id, tool.name or ""))
        return index

    def _close_open(self, out: list) -> None:
        if self.open_index is None:
            return
        out.append(ir.BlockStop(self.open_index))
        if self.active_tool is not None:
            self.active_tool.closed = True
            self.active_tool = None
        self.open_index = self.open_kind = None

    def _close_all(self, out: list) -> None:
        """Close the open block and flush every buffered tool call, one block each."""
        self._close_open(out)
        while self.waiting:
            tool = self.waiting.pop(0)
            self._open("tool_use", out, tool)
            if tool.buffered:
                out.append(ir.BlockDelta(tool.block, "json", "".join(tool.buffered)))
                tool.buffered.clear()
            self._close_open(out)

    def _append(self, kind: str, value: str, out: list) -> None:
        if self.open_kind != kind:
            self._open(kind, out)
        out.append(ir.BlockDelta(self.open_index, kind, value))

    # --- tool calls ---

    def _unique_id(self, wanted: str | None) -> str:
        call_id = wanted if wanted and wanted not in self.used_ids else new_tool_id()
        self.used_ids.add(call_id)
        return call_id

    def _key(self, call: dict, position: int) -> Any:
        key = call.get("index")
        if isinstance(key, (int, str)) and not isinstance(key, bool):
            return key
        # No index (a few servers): match by id, else continue the last call.
        call_id = call.get("id")
        if call_id:
            return self.key_of_id.get(call_id, ("id", call_id))
        return self.last_key if self.last_key is not None else position

    def _tool_fragment(self, call: dict, position: int, out: list) -> None:
        key = self._key(call, position)
        self.last_key = key
        tool = self.tools.get(key)
        if tool is None:
            tool = self.tools[key] = _ToolCall(key)
            self.waiting.append(tool)
        fn = call.get("function") or {}
        if call.get("id") and tool.id is None:
            tool.id = self._unique_id(call["id"])
            self.key_of_id[call["id"]] = key
        name = fn.get("name")
        if isinstance(name, str) and name and not tool.name:
            tool.name = name
        args = fn.get("arguments")
        if isinstance(args, dict):   # a few servers send the arguments as an object
            args = orjson.dumps(args).decode()
        elif not isinstance(args, str):
            args = ""
        if args:
            tool.args.append(args)

        if tool.block is not None and not tool.closed:
            if args:
                out.append(ir.BlockDelta(tool.block, "json", args))
        elif tool.closed:
            # A fragment for a call whose block was already closed (text arrived in between).
            # A closed block cannot be reopened; providers do not do this in practice.
            return
        elif args:
            tool.buffered.append(args)
        self._advance(out)

    def _advance(self, out: list) -> None:
        """Open the next buffered tool call when nothing else is streaming, or when the open
        call's arguments are complete."""
        while self.waiting:
            active = self.active_tool
            if active is not None and not active.complete():
                return
            nxt = next((t for t in self.waiting if t.name), None)
            if nxt is None:
                return   # the next call has no name yet: wait for it
            self.waiting.remove(nxt)
            self._open("tool_use", out, nxt)
            if nxt.buffered:
                out.append(ir.BlockDelta(nxt.block, "json", "".join(nxt.buffered)))
                nxt.buffered.clear()

    def _error_of(self, error: Any) -> GatewayError:
        if isinstance(error, dict):
            message = str(error.get("message") or error)
            status = error.get("status") or error.get("code")
        else:
            message, status = str(error), None
        if isinstance(status, int) and 400 <= status < 600:
            return upstream_error(status, message, provider=self.provider)
        return GatewayError("bad_gateway", f"{self.provider}: {message}", status=502, provider=self.provider)


class TextCompletionTranslator(ChunkTranslator):
    """Text-completion chunks (``choices[0].text``) read with the same state machine."""

    def feed(self, chunk: dict) -> list[ir.Event]:
        choices = chunk.get("choices")
        if isinstance(choices, list):
            chunk = dict(chunk)
            chunk["choices"] = [{**c, "delta": {"content": c.get("text")}} if isinstance(c, dict) else c
                                for c in choices]
        return super().feed(chunk)


class SSEChunkReader:
    """Raw upstream SSE bytes -> canonical events: byte-exact SSE parsing (a UTF-8 character
    split across network reads is never mangled) feeding a :class:`ChunkTranslator`."""

    def __init__(self, translator: ChunkTranslator):
        self.translator = translator
        self.parser = SSEParser()
        self.saw_done = False

    def feed(self, data: bytes) -> list[ir.Event]:
        out: list[ir.Event] = []
        translator = self.translator
        if self.saw_done:
            return out
        for _event, payload in self.parser.feed_raw(data):
            if translator.ended:
                break
            payload = payload.strip()
            if not payload:
                continue
            if payload == b"[DONE]":
                self.saw_done = True
                break
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                translator.ended = True
                out.append(ir.StreamError(GatewayError(
                    "bad_gateway", f"{translator.provider}: the upstream sent a stream chunk that is not JSON: "
                    f"{payload[:200]!r}", status=502, provider=translator.provider)))
                break
            if isinstance(chunk, dict):
                out += translator.feed(chunk)
        return out

    def finish(self) -> list[ir.Event]:
        return self.translator.finish(saw_done=self.saw_done)
