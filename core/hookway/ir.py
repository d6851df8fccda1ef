"""The canonical request, response and stream-event types.

Every inbound dialect parses into these and every provider adapter speaks them, so a dialect and
an adapter never need to know each other.

* Messages use the shape of Anthropic's Messages API, the richest of the wire formats, normalised:
  ``{"role": "user"|"assistant"|"system", "content": [block, ...]}`` where a block is a plain dict
  ``{"type": "text", "text": ...}``, ``{"type": "image", "source": {...}}``,
  ``{"type": "tool_use", "id", "name", "input": {...}}``,
  ``{"type": "tool_result", "tool_use_id", "content": [blocks], "is_error": bool}``,
  ``{"type": "thinking", "thinking", "signature"}``. Tool results live in user messages.
* The stream is modelled on Anthropic's block events (see the classes below). An adapter for an
  OpenAI-compatible upstream turns chunks into these with a state machine; each dialect renders
  them in its own wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

Operation = Literal["chat", "completions", "embeddings", "responses", "count_tokens",
                    "images", "speech", "transcription", "batch"]


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, other: "Usage") -> None:
        """Fold a later usage report in: providers repeat totals, so the larger value wins."""
        self.input_tokens = max(self.input_tokens, other.input_tokens)
        self.output_tokens = max(self.output_tokens, other.output_tokens)
        self.cache_read_input_tokens = max(self.cache_read_input_tokens, other.cache_read_input_tokens)
        self.cache_creation_input_tokens = max(self.cache_creation_input_tokens,
                                               other.cache_creation_input_tokens)
        self.reasoning_tokens = max(self.reasoning_tokens, other.reasoning_tokens)


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    input_schema: dict = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(slots=True)
class Request:
    """One inference request, whatever dialect it arrived in.

    ``extra`` keeps fields this type has no slot for (``context_management``, ``output_config``,
    OpenAI's ``logit_bias``...): an adapter that understands them may use them, the others ignore
    them. ``reasoning_effort`` is one of ``low|medium|high`` (or None); ``reasoning_budget`` is a
    token budget when the client gave one.
    """

    model: str
    messages: list[dict]
    system: list[dict] = field(default_factory=list)
    operation: str = "chat"
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    tools: list[Tool] = field(default_factory=list)
    # "auto" | "any" | "none" | {"type": "tool", "name": ...}; None = not given
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    reasoning_effort: str | None = None
    reasoning_budget: int | None = None
    include_usage: bool = True
    # Text completions (operation "completions") carry a prompt instead of messages.
    prompt: str | list | None = None
    # Embeddings carry their input here.
    input: Any = None
    extra: dict = field(default_factory=dict)


@dataclass(slots=True)
class Response:
    """A whole (non-streamed) answer."""

    id: str
    model: str
    content: list[dict]
    stop_reason: str | None = "end_turn"
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)


# --- stream events -------------------------------------------------------------------------------
# ``stop_reason`` values are Anthropic's: end_turn, max_tokens, stop_sequence, tool_use, refusal,
# pause_turn. Dialects map them to their own.

@dataclass(slots=True)
class MessageStart:
    id: str
    model: str
    usage: Usage = field(default_factory=Usage)


@dataclass(slots=True)
class BlockStart:
    index: int
    kind: Literal["text", "tool_use", "thinking"]
    id: str | None = None      # tool_use only
    name: str | None = None    # tool_use only


@dataclass(slots=True)
class BlockDelta:
    index: int
    kind: Literal["text", "json", "thinking", "signature"]
    value: str


@dataclass(slots=True)
class BlockStop:
    index: int


@dataclass(slots=True)
class MessageDelta:
    stop_reason: str | None
    usage: Usage
    stop_sequence: str | None = None


@dataclass(slots=True)
class MessageStop:
    pass


@dataclass(slots=True)
class StreamError:
    """A failure after the stream started; rendered in-stream, never as a silent end."""

    error: Any  # hookway.errors.GatewayError


@dataclass(slots=True)
class Ping:
    """Keep-alive during long upstream silences."""


Event = MessageStart | BlockStart | BlockDelta | BlockStop | MessageDelta | MessageStop | StreamError | Ping


def response_events(resp: Response) -> list[Event]:
    """The event sequence that streams ``resp`` (used to replay cached or non-streamed answers)."""
    events: list[Event] = [MessageStart(resp.id, resp.model,
                                        Usage(input_tokens=resp.usage.input_tokens,
                                              cache_read_input_tokens=resp.usage.cache_read_input_tokens,
                                              cache_creation_input_tokens=resp.usage.cache_creation_input_tokens))]
    for i, block in enumerate(resp.content):
        kind = block.get("type")
        if kind == "text":
            events += [BlockStart(i, "text"), BlockDelta(i, "text", block.get("text", ""))]
        elif kind == "tool_use":
            events += [BlockStart(i, "tool_use", block["id"], block["name"]),
                       BlockDelta(i, "json", orjson.dumps(block.get("input") or {}).decode())]
        elif kind == "thinking":
            events += [BlockStart(i, "thinking"), BlockDelta(i, "thinking", block.get("thinking", ""))]
            if block.get("signature"):
                events.append(BlockDelta(i, "signature", block["signature"]))
        else:
            continue
        events.append(BlockStop(i))
    events += [MessageDelta(resp.stop_reason, resp.usage, resp.stop_sequence), MessageStop()]
    return events


class ResponseCollector:
    """Folds a stream of events back into a :class:`Response` (for non-streaming callers of a
    streaming-only source, for caches and for logs)."""

    __slots__ = ("id", "model", "blocks", "json_parts", "stop_reason", "stop_sequence", "usage", "error")

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.blocks: dict[int, dict] = {}
        self.json_parts: dict[int, list[str]] = {}
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.usage = Usage()
        self.error = None

    def feed(self, ev: Event) -> None:
        t = type(ev)
        if t is BlockDelta:
            block = self.blocks[ev.index]
            if ev.kind == "text":
                block["text"] += ev.value
            elif ev.kind == "json":
                self.json_parts[ev.index].append(ev.value)
            elif ev.kind == "thinking":
                block["thinking"] += ev.value
            else:
                block["signature"] = block.get("signature", "") + ev.value
        elif t is BlockStart:
            if ev.kind == "text":
                self.blocks[ev.index] = {"type": "text", "text": ""}
            elif ev.kind == "tool_use":
                self.blocks[ev.index] = {"type": "tool_use", "id": ev.id, "name": ev.name, "input": {}}
                self.json_parts[ev.index] = []
            else:
                self.blocks[ev.index] = {"type": "thinking", "thinking": "", "signature": ""}
        elif t is MessageStart:
            self.id, self.model = ev.id, ev.model
            self.usage.add(ev.usage)
        elif t is MessageDelta:
            self.stop_reason = ev.stop_reason
            self.stop_sequence = ev.stop_sequence
            self.usage.add(ev.usage)
        elif t is StreamError:
            self.error = ev.error

    def response(self) -> Response:
        for index, parts in self.json_parts.items():
            raw = "".join(parts)
            try:
                self.blocks[index]["input"] = orjson.loads(raw) if raw.strip() else {}
            except orjson.JSONDecodeError:
                self.blocks[index]["input"] = {"_raw": raw}
        content = [self.blocks[i] for i in sorted(self.blocks)]
        return Response(self.id, self.model, content, self.stop_reason, self.stop_sequence, self.usage)


def text_of(blocks: list[dict] | str | None) -> str:
    """The plain text of a content value (string or block list)."""
    if blocks is None:
        return ""
    if isinstance(blocks, str):
        return blocks
    return "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
