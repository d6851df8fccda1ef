"""Provider adapters: the contract, configured providers, keys and targets.

The core knows no provider: adapters are registered by plugins
(:func:`hookway.hookspecs.hookway_register_providers`) under a type name, and the config's
``providers:`` block creates one adapter instance per provider.
"""

from __future__ import annotations

import fnmatch
import random
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import asyncio

import aiohttp
import orjson

from .errors import GatewayError
from . import ir


@dataclass(slots=True)
class ProviderKey:
    name: str
    value: str | None          # None: no key (e.g. a local server that needs none)
    models: list[str] = field(default_factory=lambda: ["*"])
    weight: float = 1.0

    def allows(self, model: str) -> bool:
        return any(p == "*" or p == model or fnmatch.fnmatchcase(model, p) for p in self.models)


@dataclass(slots=True)
class NetworkConfig:
    base_url: str | None = None
    extra_headers: dict = field(default_factory=dict)
    default_request_timeout_in_seconds: float = 60.0
    connect_timeout_in_seconds: float = 10.0
    # Longest wait for the upstream's answer to start (response headers; for a translated stream,
    # the adapter's first event). None: only default_request_timeout_in_seconds applies.
    first_byte_timeout_in_seconds: float | None = None
    max_retries: int = 0
    retry_backoff_initial: int = 500     # milliseconds, as Bifrost
    retry_backoff_max: int = 5000
    max_connections: int = 256


@dataclass(slots=True)
class ProviderConfig:
    name: str
    type: str
    keys: list[ProviderKey] = field(default_factory=list)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    models: list[str] = field(default_factory=list)   # models it serves, for unprefixed names
    settings: dict = field(default_factory=dict)      # adapter-specific extras


@dataclass(slots=True)
class Target:
    """One place to send a request: a provider and the model name it knows."""

    provider: str
    model: str
    key: ProviderKey | None = None   # None: the adapter picks one by weight

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model}"


class KeyPicker:
    """Weighted choice among a provider's keys that allow a model; choices cached per model."""

    def __init__(self, keys: list[ProviderKey]):
        self.keys = keys
        self._by_model: dict[str, tuple[list[ProviderKey], list[float]]] = {}

    def pick(self, model: str, exclude: set[str] | None = None) -> ProviderKey | None:
        if not self.keys:
            return None
        entry = self._by_model.get(model)
        if entry is None:
            allowed = [k for k in self.keys if k.allows(model)]
            entry = (allowed, [max(k.weight, 0.0) or 1e-9 for k in allowed])
            self._by_model[model] = entry
        allowed, weights = entry
        if exclude:
            pairs = [(k, w) for k, w in zip(allowed, weights) if k.name not in exclude]
            if pairs:
                allowed, weights = [p[0] for p in pairs], [p[1] for p in pairs]
        if not allowed:
            raise GatewayError("permission", f"no key of this provider is allowed to use model {model!r}")
        if len(allowed) == 1:
            return allowed[0]
        return random.choices(allowed, weights)[0]

    def invalidate(self) -> None:
        self._by_model.clear()


class UpstreamStream:
    """A same-dialect upstream answer: status, headers and the raw body chunks.

    ``filter``, when an adapter sets it, is applied to each streamed chunk after the usage tap has
    seen it: ``filter(chunk) -> bytes`` (possibly empty), and ``filter(None)`` at the end returns
    whatever it still holds. Adapters use it to remove what they added on the client's behalf."""

    filter = None

    def __init__(self, response: aiohttp.ClientResponse):
        self.response = response
        self.status = response.status
        self.headers = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self.response.content.iter_any():
            yield chunk

    def close(self) -> None:
        self.response.close()

    def release(self) -> None:
        self.response.release()


class ProviderAdapter:
    """Base class of provider adapters. Subclasses set ``native_dialect`` when the upstream speaks
    an inbound dialect's wire format (``"openai"``, ``"anthropic"``), which enables the byte
    pass-through, and implement the operations they support.

    An instance lives as long as the gateway and owns one pooled ``aiohttp.ClientSession``
    (created in :meth:`start`, closed in :meth:`close`). Never create a session per request.
    """

    native_dialect: str | None = None
    default_base_url: str | None = None
    # Operations this adapter answers; others get an ``unsupported_operation`` error.
    operations: frozenset[str] = frozenset()
    # Operations it can forward byte for byte to a client of ``native_dialect``.
    passthrough: frozenset[str] = frozenset()
    # JSON Schema of the provider block's ``settings:``, checked at start-up (and by
    # ``hookway check``) so a misspelt setting is an error, not silently ignored. None: unchecked.
    settings_schema: dict | None = None

    def __init__(self, config: ProviderConfig, gateway: Any = None):
        self.config = config
        self.name = config.name
        self.gateway = gateway
        self.keys = KeyPicker(config.keys)
        self.session: aiohttp.ClientSession | None = None
        self.in_flight = 0   # requests using this adapter now (see Gateway._retire)

    @property
    def base_url(self) -> str:
        return (self.config.network.base_url or self.default_base_url or "").rstrip("/")

    async def start(self) -> None:
        net = self.config.network
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=net.max_connections, limit_per_host=net.max_connections,
                                           keepalive_timeout=30, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None, connect=net.connect_timeout_in_seconds,
                                          sock_read=net.default_request_timeout_in_seconds),
            json_serialize=lambda o: orjson.dumps(o).decode(),
            auto_decompress=True,
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def read_json(self, resp: aiohttp.ClientResponse) -> dict:
        """A whole upstream answer as a JSON object, the connection released; a broken, timed-out
        or non-JSON answer is a :class:`GatewayError` (502/504) before anything reached the client."""
        try:
            raw = await resp.read()
        except asyncio.TimeoutError:
            raise GatewayError("timeout", f"{self.name}: the upstream answer timed out", status=504,
                               provider=self.name)
        except aiohttp.ClientError as exc:
            raise GatewayError("bad_gateway", f"{self.name}: the upstream answer broke off: {exc}",
                               status=502, provider=self.name)
        finally:
            resp.release()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise GatewayError("bad_gateway", f"{self.name}: the upstream answer is not JSON: "
                               f"{raw[:200]!r}", status=502, provider=self.name)
        if not isinstance(data, dict):
            raise GatewayError("bad_gateway", f"{self.name}: the upstream answer is not a JSON object",
                               status=502, provider=self.name)
        return data

    def unsupported(self, operation: str) -> GatewayError:
        return GatewayError("unsupported_operation",
                            f"{operation} is not supported by {self.name} provider",
                            code="unsupported_operation", provider=self.name)

    # --- operations (override what the provider supports) ---

    async def complete(self, request: ir.Request, target: Target, ctx: Any) -> ir.Response:
        """A whole answer for a chat (or text completions) request."""
        raise self.unsupported(request.operation)

    def stream(self, request: ir.Request, target: Target, ctx: Any) -> AsyncIterator[ir.Event | list[ir.Event]]:
        """The answer as canonical events. Must raise :class:`GatewayError` *before* yielding the
        first event when the upstream refuses, so fallbacks can act; after that, yield
        :class:`hookway.ir.StreamError` instead of raising. May yield a list of events (those of
        one upstream read): the core then writes them to the client in one go. ``MessageStop`` is
        the last event: the core sends it with the end of the response body, and then only reads
        the generator to its end."""
        raise self.unsupported(request.operation)

    async def forward(self, body: dict, operation: str, target: Target, ctx: Any) -> UpstreamStream:
        """Byte pass-through for a same-dialect client: send ``body`` (model already rewritten; a
        copy the adapter may change in place) and return the upstream answer unread. Raise :class:`GatewayError` for a refused request
        (status >= 400) so fallbacks can act."""
        raise self.unsupported(operation)

    async def embed(self, request: ir.Request, target: Target, ctx: Any) -> dict:
        """Embeddings, as an OpenAI-shaped ``{"data": [{"embedding": [...]}], "usage": ...}``."""
        raise self.unsupported("embeddings")

    async def count_tokens(self, request: ir.Request, target: Target, ctx: Any) -> int | None:
        """The provider's own token count, or None when it has none (the caller estimates)."""
        return None

    async def list_models(self) -> list[str]:
        """Model names this provider serves (without the provider prefix)."""
        return list(self.config.models)
