"""The provider adapter for OpenAI and any OpenAI-compatible server (vLLM, llama.cpp, Ollama,
Groq...). Subclasses (e.g. Cerebras) change class attributes and override :meth:`prepare_body`
for their quirks.

Two paths:

* **pass-through** (:meth:`forward`): an OpenAI client calling an OpenAI-compatible provider; the
  body goes upstream as it came (model rewritten by the core, quirks applied by
  :meth:`prepare_body`) and the answer's bytes go back untouched.
* **translation** (:meth:`complete`, :meth:`stream`, :meth:`embed`): a canonical request from
  any dialect, sent as a chat-completions body; the answer comes back as canonical events.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from typing import Any, AsyncIterator

import aiohttp
import orjson

from hookway import ir
from hookway.config import ConfigError
from hookway.errors import GatewayError, upstream_error
from hookway.providers import ProviderAdapter, ProviderKey, Target, UpstreamStream

from .stream import ChunkTranslator, SSEChunkReader, TextCompletionTranslator
from .translate import request_to_openai, response_from_openai

PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings",
         "responses": "/responses", "images": "/images/generations", "speech": "/audio/speech"}


def error_message(raw: bytes, fallback: str) -> tuple[str, str | None, str | None]:
    """``(message, param, code)`` from an upstream error body, whatever its shape."""
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or err.get("error")
            param = err.get("param") if isinstance(err.get("param"), str) else None
            code = err.get("code") if isinstance(err.get("code"), str) else None
            if isinstance(message, str) and message:
                return message, param, code
            if message:
                return orjson.dumps(message).decode()[:500], param, code
        elif isinstance(err, str) and err:
            return err, None, None
    text = raw.decode("utf-8", "replace").strip()[:500] if raw else ""
    return text or fallback, None, None


class OpenAIAdapter(ProviderAdapter):
    native_dialect = "openai"
    default_base_url = "https://api.openai.com/v1"
    operations = frozenset({"chat", "completions", "embeddings", "responses"})
    passthrough = frozenset({"chat", "completions", "embeddings", "responses"})

    # Quirks; subclasses set them, a provider's `settings:` block may override them.
    supports_top_k = False              # OpenAI refuses top_k
    budget_to_effort = False            # a thinking budget becomes reasoning_effort (only where taken)
    keep_thinking = False               # send earlier reasoning back as reasoning_content
    max_tokens_field = "max_completion_tokens"
    # The upstream puts usage on the last chunk of every stream unasked (Cerebras): no
    # stream_options is added to pass-through streams, and none is needed to read the usage.
    usage_in_every_stream = False
    models_ttl = 300.0                  # seconds a GET /models answer is reused
    # Models that take ``reasoning_effort`` (globs, case-insensitive, matched against the upstream
    # model name and against its last ``/`` segment). A translated request carries an effort only
    # to these: a non-reasoning model may refuse the field with a 400 (CONFORMANCE 8).
    reasoning_models: tuple[str, ...] = ("o1*", "o3*", "o4*", "gpt-5*", "gpt-oss*")
    # What a provider's `settings:` block may override (see README).
    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "supports_top_k": {"type": "boolean"},
            "budget_to_effort": {"type": "boolean"},
            "keep_thinking": {"type": "boolean"},
            "max_tokens_field": {"enum": ["max_completion_tokens", "max_tokens"]},
            "reasoning_models": {"oneOf": [{"type": "string"},
                                           {"type": "array", "items": {"type": "string"}}]},
        },
    }

    def __init__(self, config, gateway: Any = None):
        super().__init__(config, gateway)
        settings = config.settings or {}
        for name in ("supports_top_k", "budget_to_effort", "keep_thinking", "max_tokens_field"):
            if name in settings:
                setattr(self, name, settings[name])
        if "reasoning_models" in settings:
            patterns = settings["reasoning_models"]
            if isinstance(patterns, str):
                patterns = [patterns]
            if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
                raise ConfigError(f"providers.{config.name}.settings.reasoning_models must be a list "
                                  "of model name globs")
            self.reasoning_models = tuple(patterns)
        self._reasoning_patterns = tuple(p.lower() for p in self.reasoning_models)
        self._reasons: dict[str, bool] = {}
        self._headers_of: dict[str | None, dict] = {}   # upstream headers per key name
        self._models: tuple[float, list[str]] | None = None
        self._models_lock: asyncio.Lock | None = None

    # --- hooks for subclasses ---

    def prepare_body(self, body: dict, operation: str) -> dict:
        """Provider quirks, applied to every body sent upstream on both paths (``body`` is a
        fresh shallow copy the method may change). The default changes nothing."""
        return body

    def reasons(self, model: str) -> bool:
        """Whether ``model`` takes ``reasoning_effort`` (see :attr:`reasoning_models`)."""
        known = self._reasons.get(model)
        if known is None:
            name = model.lower()
            tail = name.rsplit("/", 1)[-1]
            known = any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(tail, p)
                        for p in self._reasoning_patterns)
            if len(self._reasons) < 4096:   # bounded: model names come from clients
                self._reasons[model] = known
        return known

    def build_body(self, request: ir.Request, target: Target, stream: bool) -> dict:
        """The upstream body for a canonical request (translation path). ``reasoning_effort``
        (given, or derived from a thinking budget) is sent only to a model that reasons."""
        body = request_to_openai(request, target.model, stream=stream, supports_top_k=self.supports_top_k,
                                 budget_to_effort=self.budget_to_effort, max_tokens_field=self.max_tokens_field,
                                 keep_thinking=self.keep_thinking, reasoning=self.reasons(target.model))
        return self.prepare_body(body, self._wire_operation(request.operation))

    # --- HTTP ---

    def headers(self, key: ProviderKey | None) -> dict:
        headers = {"Content-Type": "application/json"}
        if key is not None and key.value:
            headers["Authorization"] = f"Bearer {key.value}"
        headers.update(self.config.network.extra_headers or {})
        return headers

    @staticmethod
    def _wire_operation(operation: str) -> str:
        # A translated Responses request is answered through chat completions.
        return "chat" if operation == "responses" else operation

    async def post(self, operation: str, body: dict, target: Target, ctx: Any = None) -> aiohttp.ClientResponse:
        """POST ``body`` to the operation's path; the response for a 2xx, otherwise a
        :class:`GatewayError` (connection error 502, timeout 504, upstream status kept).

        Retries transient failures ``network_config.max_retries`` times, unless a plugin does the
        retries (``gateway.retries_by_plugin``, set by the fallbacks plugin, which also rotates
        keys): then it must not happen twice. The key used is recorded in
        ``ctx.state["provider_key"]`` for that plugin."""
        key = target.key or self.keys.pick(target.model)
        if ctx is not None:
            ctx.state["provider_key"] = key
        url = self.base_url + PATHS[operation]
        data = orjson.dumps(body)
        headers = self._headers_of.get(key.name if key is not None else None)
        if headers is None:   # built once per key: the same for every request
            headers = self._headers_of[key.name if key is not None else None] = self.headers(key)
        net = self.config.network
        max_retries = 0 if getattr(self.gateway, "retries_by_plugin", False) else net.max_retries
        attempt = 0
        while True:
            try:
                resp = await self.session.post(url, data=data, headers=headers)
            except asyncio.TimeoutError:
                err = GatewayError("timeout", f"{self.name}: the upstream did not answer in time",
                                   status=504, provider=self.name)
            except aiohttp.ClientError as exc:
                err = GatewayError("bad_gateway", f"{self.name}: cannot reach the upstream: "
                                   f"{type(exc).__name__}: {exc}", status=502, provider=self.name)
            else:
                if resp.status < 400:
                    return resp
                err = await self._error_from(resp)
            if attempt >= max_retries or not err.retryable:
                raise err
            backoff_ms = min(net.retry_backoff_initial * (2 ** attempt), net.retry_backoff_max)
            await asyncio.sleep(backoff_ms / 1000)
            attempt += 1

    async def _error_from(self, resp: aiohttp.ClientResponse) -> GatewayError:
        try:
            raw = await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            raw = b""
        finally:
            resp.release()
        message, param, code = error_message(raw, resp.reason or f"HTTP {resp.status}")
        err = upstream_error(resp.status, message, provider=self.name, retry_after=self.retry_after(resp),
                             code=code)
        err.param = param
        return err

    def retry_after(self, resp: aiohttp.ClientResponse) -> str | None:
        """The ``retry-after`` to pass on with an upstream error (subclasses may derive one)."""
        return resp.headers.get("retry-after")

    # --- pass-through ---

    async def forward(self, body: dict, operation: str, target: Target, ctx: Any) -> UpstreamStream:
        if operation not in self.passthrough:
            raise self.unsupported(operation)
        body = self.prepare_body(body, operation)   # the core hands over a fresh copy
        injected = False
        if (body.get("stream") is True and operation in ("chat", "completions")
                and not self.usage_in_every_stream):
            # Usage is needed for logs, budgets and limits even when the client did not ask for it:
            # ask the upstream, and remove the extra chunk before it reaches the client.
            options = body.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage") is True):
                body["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                          "include_usage": True}
                injected = True
        upstream = UpstreamStream(await self.post(operation, body, target, ctx))
        if injected:
            upstream.filter = DropUsageOnlyChunk()
        return upstream

    # --- translation ---

    async def complete(self, request: ir.Request, target: Target, ctx: Any) -> ir.Response:
        op = request.operation
        if op not in ("chat", "completions", "responses"):
            raise self.unsupported(op)
        wire_op = self._wire_operation(op)
        resp = await self.post(wire_op, self.build_body(request, target, stream=False), target, ctx)
        return self._response_of(await self.read_json(resp), wire_op, target)

    def _response_of(self, data: dict, wire_op: str, target: Target) -> ir.Response:
        if not data.get("choices") and data.get("error"):
            # Some servers answer 200 with an error body.
            message, _, _ = error_message(orjson.dumps(data), "error")
            raise GatewayError("bad_gateway", f"{self.name}: {message}", status=502, provider=self.name)
        response = response_from_openai(data, wire_op)
        response.model = response.model or target.model
        return response

    async def stream(self, request: ir.Request, target: Target, ctx: Any) -> AsyncIterator[ir.Event]:
        op = request.operation
        if op not in ("chat", "completions", "responses"):
            raise self.unsupported(op)
        wire_op = self._wire_operation(op)
        # Raised before the first yield: the core's fallbacks can still act.
        resp = await self.post(wire_op, self.build_body(request, target, stream=True), target, ctx)
        if resp.content_type == "application/json":
            # A server that ignored `stream: true` and answered whole: replay it as events.
            response = self._response_of(await self.read_json(resp), wire_op, target)
            for ev in ir.response_events(response):
                yield ev
            return
        translator = ChunkTranslator(model=target.model, provider=self.name)
        if wire_op == "completions":
            translator = TextCompletionTranslator(model=target.model, provider=self.name)
        reader = SSEChunkReader(translator)
        finished = False
        try:
            # Events are yielded as one list per network read: the core writes each list at once.
            yield translator.start()   # at once: the client's stream starts while the model thinks
            events = []
            async for data in resp.content.iter_any():
                events = reader.feed(data)
                if reader.saw_done or translator.ended:
                    break   # this read's events go out with the end of the message, in one batch
                if events:
                    yield events
                events = []
            events += reader.finish()
            if events:
                yield events
            finished = True
        except asyncio.TimeoutError:
            yield ir.StreamError(GatewayError("timeout", f"{self.name}: the upstream stream stalled",
                                              status=504, provider=self.name))
        except aiohttp.ClientError as exc:
            yield ir.StreamError(GatewayError("bad_gateway", f"{self.name}: the upstream stream broke: "
                                              f"{type(exc).__name__}: {exc}", status=502, provider=self.name))
        finally:
            # A stream read to its end goes back to the pool; a cut one must not.
            if finished and reader.saw_done:
                resp.release()
            else:
                resp.close()

    async def embed(self, request: ir.Request, target: Target, ctx: Any) -> dict:
        if "embeddings" not in self.operations:
            raise self.unsupported("embeddings")
        body = self.prepare_body(request_to_openai(request, target.model), "embeddings")
        return await self.read_json(await self.post("embeddings", body, target, ctx))

    # --- models ---

    async def list_models(self) -> list[str]:
        """The upstream's ``GET /models`` (cached for ``models_ttl``) plus the models the config
        declares; only the declared ones when the upstream cannot be asked."""
        now = time.monotonic()
        if self._models is not None and now < self._models[0]:
            return list(self._models[1])
        if self._models_lock is None:
            self._models_lock = asyncio.Lock()
        async with self._models_lock:
            if self._models is not None and time.monotonic() < self._models[0]:
                return list(self._models[1])
            declared = [m for m in self.config.models if "*" not in m and "?" not in m]
            try:
                ids = await self._fetch_models()
                ttl = self.models_ttl
            except Exception:   # any failure: the declared list still answers
                ids, ttl = [], 30.0
            ids += [m for m in declared if m not in ids]
            self._models = (time.monotonic() + ttl, ids)
            return list(ids)

    async def _fetch_models(self) -> list[str]:
        if self.session is None:
            raise RuntimeError("adapter not started")
        key = self.config.keys[0] if self.config.keys else None
        async with self.session.get(self.base_url + "/models", headers=self.headers(key),
                                    timeout=aiohttp.ClientTimeout(total=10)) as resp:
            if resp.status >= 400:
                raise RuntimeError(f"GET /models answered {resp.status}")
            data = orjson.loads(await resp.read())
        return [m["id"] for m in data.get("data") or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]


class DropUsageOnlyChunk:
    """Removes the usage-only chunk (``"choices": []``) that hookway asked for on the client's
    behalf, so the client gets exactly the stream it asked for. Events are passed on whole; only a
    chunk holding a usage object is parsed. ``None`` flushes what is held at the end."""

    __slots__ = ("_partial", "_off")

    def __init__(self) -> None:
        self._partial = b""
        self._off = False

    def __call__(self, chunk: bytes | None) -> bytes:
        if chunk is None:
            rest, self._partial = self._partial, b""
            return rest
        if self._off:
            return chunk
        buf = self._partial + chunk if self._partial else chunk
        if b"\r" in buf:   # CRLF framing: rare; pass it untouched rather than mis-split
            self._off, self._partial = True, b""
            return buf
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._partial = buf
            return b""
        end += 2
        self._partial = buf[end:]
        if buf.find(b'"usage":{', 0, end) < 0 and buf.find(b'"usage": {', 0, end) < 0:
            return buf if end == len(buf) else buf[:end]
        events = buf[:end - 2].split(b"\n\n")
        return b"".join(e + b"\n\n" for e in events if not _is_usage_only(e))


def _is_usage_only(event: bytes) -> bool:
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                data = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return False
            return isinstance(data, dict) and not data.get("choices") and isinstance(data.get("usage"), dict)
    return False


# Kept for code that imported it from here.
_TextCompletionTranslator = TextCompletionTranslator
