"""The Anthropic provider adapter (provider ``type: anthropic``).

* Same-dialect clients (Anthropic SDK, Claude Code) get the byte pass-through: the body goes out
  with only ``model`` rewritten, ``anthropic-version`` and ``anthropic-beta`` are forwarded as the
  client sent them, and the answer's bytes (thinking signatures included) come back untouched.
* Other clients (an OpenAI SDK asking for ``anthropic/claude-...``) are translated: canonical
  request -> Messages body, Message JSON or Messages SSE -> canonical response or events.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import aiohttp
import orjson

from hookway import ir
from hookway.errors import GatewayError, upstream_error
from hookway.providers import ProviderAdapter, Target, UpstreamStream
from hookway.sse import SSEParser

DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096   # Anthropic requires max_tokens; OpenAI clients may leave it out

# Anthropic error type -> HTTP status, for errors that arrive inside a stream.
STATUS_OF_ERROR = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
    "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
    "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529,
}

# Request fields from ``Request.extra`` that the Messages API understands. Other extras came from
# another dialect (OpenAI's logit_bias...) and would earn a 400.
MESSAGES_EXTRAS = frozenset({"output_config", "context_management", "container", "mcp_servers"})
ANTHROPIC_SERVICE_TIERS = frozenset({"auto", "standard_only"})
# Fields the count_tokens endpoint accepts.
COUNT_TOKENS_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking",
                                 "mcp_servers", "context_management", "output_config"})
# A reasoning effort (from an OpenAI client) as a thinking budget; each maps back to the same
# effort through hookway_anthropic.dialect.effort_for_budget.
BUDGET_OF_EFFORT = {"low": 2048, "medium": 8192, "high": 24576}
MIN_THINKING_BUDGET = 1024
# Content parts of OpenAI's own that the Messages API has no block for.
_OPENAI_ONLY_PARTS = frozenset({"input_audio", "file"})


# --- canonical request -> Messages body ---------------------------------------------------------

def _sendable(block: dict) -> bool:
    kind = block.get("type")
    if kind == "thinking":
        # Anthropic verifies signatures: thinking produced by another model (no signature) is refused.
        return bool(block.get("signature"))
    return kind not in _OPENAI_ONLY_PARTS


def _tool_choice(req: ir.Request) -> dict | None:
    choice = req.tool_choice
    if choice in ("auto", "any", "none"):
        out = {"type": choice}
    elif isinstance(choice, dict) and choice.get("type") == "tool":
        out = {"type": "tool", "name": choice.get("name", "")}
    else:
        out = None
    if req.parallel_tool_calls is False:
        out = out or {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


def request_to_messages(req: ir.Request, model: str, *, stream: bool | None = None,
                        default_max_tokens: int = DEFAULT_MAX_TOKENS) -> dict:
    """The Messages API body for ``req`` sent to ``model``."""
    body: dict = {"model": model, "max_tokens": req.max_tokens or default_max_tokens}
    system = list(req.system)
    messages = []
    for msg in req.messages:
        content = msg.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}] if content else []
        content = [b for b in content or () if isinstance(b, dict) and _sendable(b)]
        if not content:
            continue   # the API refuses empty messages (e.g. a turn that only held foreign thinking)
        if msg.get("role") == "system" and not messages:
            system += content   # leading system messages (OpenAI style) belong in `system`
            continue
        messages.append({"role": msg.get("role", "user"), "content": content})
    body["messages"] = messages
    if system:
        body["system"] = system

    tools = []
    for tool in req.tools:
        spec: dict = {"name": tool.name}
        if tool.description:
            spec["description"] = tool.description
        spec["input_schema"] = tool.input_schema or {"type": "object", "properties": {}}
        tools.append(spec)
    tools += req.extra.get("server_tools") or []
    if tools:
        body["tools"] = tools
        choice = _tool_choice(req)
        if choice is not None:
            body["tool_choice"] = choice

    for key in MESSAGES_EXTRAS:
        if key in req.extra:
            body[key] = req.extra[key]
    if req.extra.get("service_tier") in ANTHROPIC_SERVICE_TIERS:
        body["service_tier"] = req.extra["service_tier"]

    _add_thinking(req, body)
    thinking = "thinking" in body
    # With thinking on, Anthropic refuses a temperature other than 1, any top_k and a top_p
    # below 0.95: the client's sampling settings yield to the reasoning it asked for.
    if req.temperature is not None and (not thinking or req.temperature == 1):
        body["temperature"] = req.temperature
    if req.top_p is not None and (not thinking or req.top_p >= 0.95):
        body["top_p"] = req.top_p
    if req.top_k is not None and not thinking:
        body["top_k"] = req.top_k
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if stream if stream is not None else req.stream:
        body["stream"] = True
    return body


def _add_thinking(req: ir.Request, body: dict) -> None:
    budget = req.reasoning_budget
    if budget is None:
        if (req.extra.get("thinking") or {}).get("type") == "adaptive" and req.reasoning_effort:
            body["thinking"] = {"type": "adaptive"}
            config = dict(body.get("output_config") or {})
            config.setdefault("effort", req.reasoning_effort)
            body["output_config"] = config
            return
        # An effort with no output_config came from an OpenAI client, where effort means
        # "reason". (An Anthropic client's output_config.effort alone does not turn thinking on.)
        if req.reasoning_effort and "output_config" not in req.extra:
            budget = BUDGET_OF_EFFORT.get(req.reasoning_effort)
    if budget:
        budget = min(budget, body["max_tokens"] - 1)   # the API wants budget_tokens < max_tokens
        if budget >= MIN_THINKING_BUDGET:
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}


def count_tokens_body(req: ir.Request, model: str) -> dict:
    body = request_to_messages(req, model, stream=False)
    return {k: v for k, v in body.items() if k in COUNT_TOKENS_FIELDS}


# --- Messages answers -> canonical ---------------------------------------------------------------

def usage_from_anthropic(data: Any) -> ir.Usage:
    if not isinstance(data, dict):
        return ir.Usage()
    return ir.Usage(input_tokens=data.get("input_tokens") or 0,
                    output_tokens=data.get("output_tokens") or 0,
                    cache_read_input_tokens=data.get("cache_read_input_tokens") or 0,
                    cache_creation_input_tokens=data.get("cache_creation_input_tokens") or 0)


def response_from_message(data: dict) -> ir.Response:
    """A whole Message JSON as an :class:`ir.Response` (blocks kept as Anthropic sent them)."""
    return ir.Response(id=data.get("id") or "", model=data.get("model") or "",
                       content=[b for b in data.get("content") or () if isinstance(b, dict)],
                       stop_reason=data.get("stop_reason") or "end_turn",
                       stop_sequence=data.get("stop_sequence"),
                       usage=usage_from_anthropic(data.get("usage")))


def error_message(raw: bytes) -> str:
    """``error.message`` of an Anthropic error body, or the start of whatever was sent."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:500].decode("utf-8", "replace").strip() or "no error message"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return raw[:500].decode("utf-8", "replace")


class EventReader:
    """Anthropic SSE events -> canonical events (one reader per stream).

    Block kinds the canonical stream has no place for (``redacted_thinking``, server tool
    blocks) are skipped, with their deltas and stop."""

    __slots__ = ("provider", "finished", "skipped")

    def __init__(self, provider: str):
        self.provider = provider
        self.finished = False
        self.skipped: set[int] = set()

    def feed(self, event: str | None, data: str) -> list[ir.Event]:
        if self.finished:
            return []
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.finished = True
            return [ir.StreamError(GatewayError("bad_gateway", f"{self.provider}: the upstream sent an "
                                                f"event that is not JSON: {data[:200]!r}", provider=self.provider))]
        if not isinstance(msg, dict):
            return []
        kind = msg.get("type") or event
        index = msg.get("index")
        if kind == "content_block_delta":
            if index in self.skipped:
                return []
            delta = msg.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                return [ir.BlockDelta(index, "text", delta.get("text", ""))]
            if dtype == "input_json_delta":
                return [ir.BlockDelta(index, "json", delta.get("partial_json", ""))]
            if dtype == "thinking_delta":
                return [ir.BlockDelta(index, "thinking", delta.get("thinking", ""))]
            if dtype == "signature_delta":
                return [ir.BlockDelta(index, "signature", delta.get("signature", ""))]
            return []   # citations_delta and future delta kinds
        if kind == "content_block_start":
            return self._block_start(index, msg.get("content_block") or {})
        if kind == "content_block_stop":
            return [] if index in self.skipped else [ir.BlockStop(index)]
        if kind == "message_start":
            message = msg.get("message") or {}
            return [ir.MessageStart(message.get("id") or "", message.get("model") or "",
                                    usage_from_anthropic(message.get("usage")))]
        if kind == "message_delta":
            delta = msg.get("delta") or {}
            return [ir.MessageDelta(delta.get("stop_reason"), usage_from_anthropic(msg.get("usage")),
                                    delta.get("stop_sequence"))]
        if kind == "message_stop":
            self.finished = True
            return [ir.MessageStop()]
        if kind == "ping":
            return [ir.Ping()]
        if kind == "error":
            self.finished = True
            err = msg.get("error") or {}
            status = STATUS_OF_ERROR.get(err.get("type"), 500)
            return [ir.StreamError(upstream_error(status, str(err.get("message") or "stream error"),
                                                  provider=self.provider))]
        return []

    def _block_start(self, index: int, block: dict) -> list[ir.Event]:
        btype = block.get("type")
        if btype == "text":
            out: list[ir.Event] = [ir.BlockStart(index, "text")]
            if block.get("text"):
                out.append(ir.BlockDelta(index, "text", block["text"]))
            return out
        if btype == "tool_use":
            out = [ir.BlockStart(index, "tool_use", block.get("id"), block.get("name"))]
            if block.get("input"):
                out.append(ir.BlockDelta(index, "json", orjson.dumps(block["input"]).decode()))
            return out
        if btype == "thinking":
            out = [ir.BlockStart(index, "thinking")]
            if block.get("thinking"):
                out.append(ir.BlockDelta(index, "thinking", block["thinking"]))
            if block.get("signature"):
                out.append(ir.BlockDelta(index, "signature", block["signature"]))
            return out
        self.skipped.add(index)
        return []


# --- the adapter ---------------------------------------------------------------------------------

class AnthropicAdapter(ProviderAdapter):
    native_dialect = "anthropic"
    default_base_url = "https://api.anthropic.com/v1"
    operations = frozenset({"chat", "count_tokens"})
    passthrough = frozenset({"chat", "count_tokens"})
    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"default_max_tokens": {"type": "integer", "minimum": 1}},
    }

    @property
    def default_max_tokens(self) -> int:
        return int(self.config.settings.get("default_max_tokens", DEFAULT_MAX_TOKENS))

    def _headers(self, target: Target, ctx: Any) -> dict:
        client = getattr(ctx, "headers", None) or {}
        headers = {"content-type": "application/json",
                   "anthropic-version": client.get("anthropic-version") or DEFAULT_VERSION}
        beta = client.get("anthropic-beta")
        if beta:
            headers["anthropic-beta"] = beta
        key = target.key or self.keys.pick(target.model)
        state = getattr(ctx, "state", None)
        if state is not None:
            state["provider_key"] = key   # for the fallbacks plugin's key rotation
        if key is not None and key.value:
            headers["x-api-key"] = key.value
        headers.update(self.config.network.extra_headers)
        return headers

    async def _post(self, path: str, body: dict, target: Target, ctx: Any) -> aiohttp.ClientResponse:
        """POST to the upstream; retries transient failures (network_config.max_retries) and
        raises :class:`GatewayError` for any refusal, before anything reached the client."""
        url = self.base_url + path
        request = getattr(ctx, "request", None)
        # Claude Code calls /v1/messages?beta=true; Anthropic expects the same query back.
        params = {"beta": "true"} if request is not None and request.query.get("beta") == "true" else None
        headers = self._headers(target, ctx)
        data = orjson.dumps(body)
        net = self.config.network
        # The fallbacks plugin, when enabled, does the retries itself (with key rotation).
        max_retries = 0 if getattr(self.gateway, "retries_by_plugin", False) else net.max_retries
        delay = net.retry_backoff_initial / 1000
        attempt = 0
        while True:
            try:
                resp = await self.session.post(url, data=data, headers=headers, params=params)
            except asyncio.TimeoutError:
                err = GatewayError("timeout", f"{self.name}: upstream timed out", provider=self.name)
            except aiohttp.ClientError as exc:
                err = GatewayError("bad_gateway", f"{self.name}: upstream connection failed: "
                                   f"{type(exc).__name__}: {exc}", status=502, provider=self.name)
            else:
                if resp.status < 400:
                    if ctx is not None and resp.headers.get("request-id"):
                        ctx.response_headers["request-id"] = resp.headers["request-id"]
                    return resp
                raw = await resp.read()
                resp.release()
                err = upstream_error(resp.status, error_message(raw), provider=self.name,
                                     retry_after=resp.headers.get("retry-after"))
            if attempt >= max_retries or not err.retryable:
                raise err
            attempt += 1
            await asyncio.sleep(min(delay, net.retry_backoff_max / 1000))
            delay *= 2

    async def forward(self, body: dict, operation: str, target: Target, ctx: Any) -> UpstreamStream:
        path = "/messages/count_tokens" if operation == "count_tokens" else "/messages"
        return UpstreamStream(await self._post(path, body, target, ctx))

    async def complete(self, request: ir.Request, target: Target, ctx: Any) -> ir.Response:
        body = request_to_messages(request, target.model, stream=False,
                                   default_max_tokens=self.default_max_tokens)
        resp = await self._post("/messages", body, target, ctx)
        return response_from_message(await self.read_json(resp))

    async def stream(self, request: ir.Request, target: Target, ctx: Any) -> AsyncIterator[ir.Event]:
        body = request_to_messages(request, target.model, stream=True,
                                   default_max_tokens=self.default_max_tokens)
        resp = await self._post("/messages", body, target, ctx)   # raises before the first event
        reader = EventReader(self.name)
        parser = SSEParser()
        clean = False   # read to the end: the connection may go back to the pool
        try:
            async for chunk in resp.content.iter_any():
                for event, data in parser.feed(chunk):
                    for ev in reader.feed(event, data):
                        yield ev
                if reader.finished:
                    clean = True
                    return
            yield ir.StreamError(GatewayError(
                "bad_gateway", f"{self.name}: the upstream stream ended before message_stop; "
                "the answer is incomplete", status=502, provider=self.name))
        except asyncio.TimeoutError:
            yield ir.StreamError(GatewayError("timeout", f"{self.name}: upstream timed out mid-stream",
                                              provider=self.name))
        except aiohttp.ClientError as exc:
            yield ir.StreamError(GatewayError("bad_gateway", f"{self.name}: upstream connection failed "
                                              f"mid-stream: {type(exc).__name__}: {exc}", status=502,
                                              provider=self.name))
        finally:
            resp.release() if clean else resp.close()

    async def count_tokens(self, request: ir.Request | None, target: Target, ctx: Any) -> int | None:
        """Anthropic's own count. ``request`` None means: count ``ctx.body``, an Anthropic body."""
        if request is None:
            # An Anthropic client's own body, untouched by any plugin: sent as it came, with
            # the model rewritten, so fields this gateway does not know are counted too.
            body = {k: v for k, v in ctx.body.items() if k != "fallbacks"}
            body["model"] = target.model
        else:
            body = count_tokens_body(request, target.model)
        resp = await self._post("/messages/count_tokens", body, target, ctx)
        try:
            data = orjson.loads(await resp.read())
        except (orjson.JSONDecodeError, aiohttp.ClientError, asyncio.TimeoutError):
            return None
        finally:
            resp.release()
        count = data.get("input_tokens") if isinstance(data, dict) else None
        return count if isinstance(count, int) else None
