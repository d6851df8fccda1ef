"""hookway-semantic-cache: answer repeated or similar questions from a cache.

Exact mode (a hash of the normalised request) is checked first, then semantic mode (an embedding
of the conversation, cosine similarity >= threshold). A hit is an :class:`hookway.ir.Response`
that the core replays in the caller's dialect, streamed when the caller asked for a stream.

Caching is opt-in per request, with Bifrost's headers (``x-bf-cache-key``, ``x-bf-cache-ttl``,
``x-bf-cache-threshold``, ``x-bf-cache-type: direct|semantic``, ``x-bf-cache-no-store``) or
hookway's (``x-hookway-cache-key``...), unless ``always: true`` or ``default_cache_key`` is set.
See README.md for the settings.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import structlog
from aiohttp import web

from hookway import hookimpl, storage
from hookway.config import ConfigError

from . import keys
from .embedders import LocalEmbedder, ProviderEmbedder, local_model_available
from .stores import Entry, MemoryStore, RedisStore, SQLiteStore, Store

__all__ = ["SemanticCachePlugin", "MemoryStore", "SQLiteStore", "RedisStore", "Entry",
           "ProviderEmbedder", "LocalEmbedder"]

log = structlog.get_logger("hookway.semantic_cache")

STATE = "semantic_cache"
HIT, MISS, SKIP = "hit", "miss", "skip"

_DURATION = {"oneOf": [{"type": "number", "exclusiveMinimum": 0},
                       {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d|w)?\s*$"}]}

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "ttl": _DURATION,
        "threshold": {"type": "number", "minimum": 0, "maximum": 1},
        "allow_lower_threshold": {"type": "boolean"},
        "always": {"type": "boolean"},
        "default_cache_key": {"type": ["string", "null"], "minLength": 1},
        "mode": {"enum": ["both", "direct", "semantic"]},
        "cache_by_model": {"type": "boolean"},
        "cache_by_provider": {"type": "boolean"},
        "exclude_system_prompt": {"type": "boolean"},
        "conversation_history_threshold": {"type": "integer", "minimum": 1},
        "cache_tool_calls": {"type": "boolean"},
        "scope": {"enum": ["key", "team", "customer", "none"]},
        "operations": {"type": "array", "items": {"enum": ["chat", "completions", "responses"]}},
        "max_text_chars": {"type": "integer", "minimum": 100},
        "embeddings": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "type": {"enum": ["provider", "local"]},
                "provider": {"type": "string"},
                "model": {"type": "string"},
                "model_path": {"type": "string"},
                "device": {"type": "string"},
                "timeout_ms": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "store": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "type": {"enum": ["memory", "sqlite", "redis"]},
                "max_entries": {"type": "integer", "minimum": 1},
                "path": {"type": "string"},
                "url": {"type": "string", "pattern": r"^(redis|rediss|unix)://"},
                "prefix": {"type": "string"},
                "timeout_ms": {"type": "number", "exclusiveMinimum": 0},
                "sweep_interval_seconds": {"type": "number", "exclusiveMinimum": 0},
            },
        },
    },
}


def _header(headers: Any, name: str) -> str | None:
    """``x-bf-cache-<name>`` or ``x-hookway-cache-<name>`` (Bifrost's name wins when both)."""
    value = headers.get("x-bf-cache-" + name)
    if value is None:
        value = headers.get("x-hookway-cache-" + name)
    return value.strip() if isinstance(value, str) else value


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(slots=True)
class Plan:
    """What the lookup decided for one request; the store hook finishes the job."""

    entry_id: str
    cache_key: str
    partition: str
    hash: str
    ttl: float
    no_store: bool
    vector: np.ndarray | None = None


class SemanticCachePlugin:
    """The ``semantic-cache`` plugin (see the module docstring and README.md)."""

    def __init__(self) -> None:
        self.store: Store | None = None
        self.embedder: Any = None
        self.pending: set[asyncio.Task] = set()
        self.stats = {"hits_direct": 0, "hits_semantic": 0, "misses": 0, "skips": 0, "stored": 0,
                      "embedding_timeouts": 0, "embedding_errors": 0, "store_errors": 0}
        self.outages = {what: storage.Outage() for what in ("lookup", "store", "embedding")}

    # --- start-up ---

    @hookimpl
    def hookway_config_schema(self):
        return SCHEMA

    @hookimpl
    def hookway_configure(self, settings: dict, gateway: Any) -> None:
        self.gateway = gateway
        s = settings
        problems = []
        self.ttl = keys.parse_duration(s.get("ttl", 300)) or 300.0
        self.threshold = float(s.get("threshold", 0.8))
        self.allow_lower_threshold = bool(s.get("allow_lower_threshold", False))
        self.default_key = s.get("default_cache_key") or ("default" if s.get("always") else None)
        self.mode = s.get("mode", "both")
        self.cache_by_model = s.get("cache_by_model", True)
        self.cache_by_provider = s.get("cache_by_provider", True)
        self.include_system = not s.get("exclude_system_prompt", False)
        self.max_messages = s.get("conversation_history_threshold", 3)
        self.cache_tool_calls = s.get("cache_tool_calls", False)
        self.scope = s.get("scope", "key")
        self.operations = frozenset(s.get("operations", ["chat", "completions"]))
        self.max_text_chars = s.get("max_text_chars", 8000)

        emb = s.get("embeddings")
        self.embed_budget = 0.5
        self.embedder = None
        if emb:
            self.embed_budget = emb.get("timeout_ms", 500) / 1000
            kind = emb.get("type") or ("local" if "provider" not in emb else "provider")
            if kind == "local":
                ok, why = local_model_available()
                if not ok:
                    problems.append(f"plugins.semantic-cache.embeddings: {why}")
                self.embedder = LocalEmbedder(emb.get("model_path"), emb.get("device", "cpu"))
                if "timeout_ms" not in emb:
                    self.embed_budget = 1.0
            else:
                provider, model = emb.get("provider"), emb.get("model")
                if not provider or not model:
                    problems.append("plugins.semantic-cache.embeddings: `provider` and `model` are required "
                                    "(or `type: local` for the local model)")
                elif provider not in gateway.config.providers:
                    problems.append(f"plugins.semantic-cache.embeddings.provider: {provider!r} is not a "
                                    f"configured provider (configured: "
                                    f"{', '.join(sorted(gateway.config.providers)) or 'none'})")
                self.embedder = ProviderEmbedder(gateway, provider, model)
        if self.mode == "semantic" and self.embedder is None:
            problems.append("plugins.semantic-cache.mode: semantic needs an `embeddings:` block")

        st = s.get("store") or {}
        kind = st.get("type", "memory")
        self.store_budget = st.get("timeout_ms", 500) / 1000
        self.sweep_interval = st.get("sweep_interval_seconds", 60)
        if kind == "memory":
            self.store = MemoryStore(st.get("max_entries", 10_000))
        elif kind == "sqlite":
            path = st.get("path") or "semantic-cache.db"
            if not os.path.isabs(path):
                path = os.path.join(gateway.config.server.data_dir, path)
            self.store = SQLiteStore(path)
        else:
            if not st.get("url"):
                problems.append("plugins.semantic-cache.store.url: the redis store needs a url "
                                "(redis://host:6379/0)")
            try:
                import redis.asyncio  # noqa: F401
            except ImportError:
                problems.append("plugins.semantic-cache.store: the redis store needs the redis package "
                                "(pip install 'hookway-semantic-cache[redis]')")
            self.store = RedisStore(st.get("url", ""), st.get("prefix", "hookway:cache:"))
        if problems:
            raise ConfigError(problems)

    @hookimpl
    def hookway_cleanup_ctx(self, gateway: Any):
        async def lifecycle(app):
            await self.store.start()
            if self.embedder is not None:
                await self.embedder.start()
            sweeper = None
            if hasattr(self.store, "sweep"):
                sweeper = asyncio.ensure_future(self._sweep())
            yield
            if sweeper is not None:
                sweeper.cancel()
            if self.pending:
                await asyncio.wait(set(self.pending), timeout=5)
            await self.store.close()
            if self.embedder is not None:
                await self.embedder.close()
        return lifecycle

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                result = self.store.sweep()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.warning("semantic_cache_sweep_failed", exc_info=True)

    @hookimpl
    def hookway_register_routes(self, router: Any, gateway: Any) -> None:
        from hookway.admin import admin_only

        def answer(data: dict, status: int = 200) -> web.Response:
            return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")

        def failed(exc: Exception) -> web.Response:
            if storage.unwritable(exc):   # the SQLite store on a full disk: 507 (or 503)
                raise storage.write_refused(exc, getattr(self.store, "path", self.store.name))
            return answer({"error": {"message": f"cache store failed: {exc}", "type": "api_error"}}, 502)

        async def delete_key(request: web.Request) -> web.Response:
            key = request.match_info["key"]
            try:
                n = await self.store.delete(key)
            except Exception as exc:
                return failed(exc)
            return answer({"deleted": n, "key": key})

        async def clear(request: web.Request) -> web.Response:
            try:
                n = await self.store.clear()
            except Exception as exc:
                return failed(exc)
            return answer({"deleted": n})

        async def stats(request: web.Request) -> web.Response:
            try:
                entries = await self.store.count()
            except Exception:
                entries = None
            return answer({"store": self.store.name, "entries": entries,
                           "embedder": self.embedder.status if self.embedder is not None else None,
                           **self.stats})

        router.add_get("/api/cache", admin_only(stats))
        router.add_delete("/api/cache", admin_only(clear))
        # Bifrost's paths, for tools written against it.
        router.add_delete("/api/cache/clear/{key}", admin_only(delete_key))
        router.add_delete("/api/cache/clear-by-key/{key}", admin_only(delete_key))
        router.add_delete("/api/cache/{key}", admin_only(delete_key))

    # --- per request ---

    def _skip(self, ctx: Any, reason: str) -> None:
        self.stats["skips"] += 1
        ctx.response_headers["x-hookway-cache"] = SKIP
        ctx.response_headers["x-hookway-cache-reason"] = reason
        ctx.cache_status = SKIP
        ctx.state.setdefault("log", {})["cache_reason"] = reason

    async def _guard(self, coro, budget: float, what: str):
        """``(ok, result)`` of a store or embedding call bounded by ``budget`` seconds; failures
        are counted, never raised: a broken cache is a cache miss, a store that fails (a full
        disk) is skipped. ``what``: ``lookup`` and ``store`` (the store's reads and writes, which
        fail apart: a full disk still reads) or ``embedding``. Logged once when one starts failing
        and once when it works again, not once per request."""
        outage = self.outages[what]
        try:
            result = await asyncio.wait_for(coro, budget)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            timeout = isinstance(exc, asyncio.TimeoutError)
            if what == "embedding":
                self.stats["embedding_timeouts" if timeout else "embedding_errors"] += 1
            else:
                self.stats["store_errors"] += 1
            if outage.failed(exc):
                log.warning("semantic_cache_failing", what=what,
                            error=f"timed out after {round(budget * 1000)} ms" if timeout
                            else f"{type(exc).__name__}: {exc}",
                            detail="skipped while it fails (answers are served as usual); logged again "
                                   "when it works")
            return False, None
        ended = outage.recovered()
        if ended is not None:
            log.warning("semantic_cache_recovered", what=what, seconds=round(ended[0], 1), failures=ended[1])
        return True, result

    def _scope(self, identity: Any) -> str | None:
        if identity is None or self.scope == "none":
            return None
        attr = {"key": "key_id", "team": "team_id", "customer": "customer_id"}[self.scope]
        value = getattr(identity, attr, None)
        return f"{attr}={value}" if value is not None else None

    @hookimpl
    async def hookway_cache_lookup(self, ctx: Any):
        headers = ctx.headers
        cache_key = _header(headers, "key") or self.default_key
        if not cache_key or ctx.operation not in self.operations:
            return None
        kind = (_header(headers, "type") or "").lower()
        if kind in ("none", "off", "bypass"):
            return None
        req = ctx.ir   # needed for a dialect-neutral key; also keeps the answer collectable
        if len(req.messages) > self.max_messages:
            self._skip(ctx, "history")
            return None
        if not self.cache_tool_calls and keys.has_tool_calls(req):
            self._skip(ctx, "tool_calls")
            return None

        ttl = keys.parse_duration(_header(headers, "ttl")) or self.ttl
        threshold = self.threshold
        raw_threshold = _header(headers, "threshold")
        if raw_threshold:
            try:
                wanted = float(raw_threshold)
            except ValueError:
                wanted = None
            if wanted is not None and 0 <= wanted <= 1:
                threshold = wanted if self.allow_lower_threshold else max(wanted, self.threshold)
        target = ctx.targets[0] if ctx.targets else None
        partition = keys.partition_of(
            req, cache_key=cache_key, scope=self._scope(ctx.identity), operation=ctx.operation,
            model=(target.model if target else ctx.model) if self.cache_by_model else None,
            provider=(target.provider if target else None) if self.cache_by_provider else None)
        plan = Plan(entry_id=uuid.uuid4().hex, cache_key=cache_key, partition=partition,
                    hash=keys.exact_hash(req, partition, include_system=self.include_system),
                    ttl=ttl, no_store=_truthy(_header(headers, "no-store")))
        ctx.state[STATE] = plan
        mode = kind if kind in ("direct", "semantic") else self.mode

        if mode in ("both", "direct"):
            ok, entry = await self._guard(self.store.get_exact(plan.partition, plan.hash),
                                          self.store_budget, "lookup")
            if ok and entry is not None:
                return self._hit(ctx, entry, 1.0, "direct")

        if mode in ("both", "semantic") and self.embedder is not None:
            text = keys.conversation_text(req, include_system=self.include_system,
                                          max_chars=self.max_text_chars)
            if text:
                ok, vector = await self._guard(self.embedder.embed(text, ctx), self.embed_budget, "embedding")
                if ok and vector is not None:
                    plan.vector = vector
                    ok, found = await self._guard(self.store.search(plan.partition, vector, threshold),
                                                  self.store_budget, "lookup")
                    if ok and found is not None:
                        return self._hit(ctx, found[0], found[1], "semantic")

        self.stats["misses"] += 1
        ctx.response_headers["x-hookway-cache"] = MISS
        if not plan.no_store:
            ctx.response_headers["x-hookway-cache-id"] = plan.entry_id
        ctx.cache_status = MISS
        return None

    def _hit(self, ctx: Any, entry: Entry, similarity: float, kind: str):
        try:
            response = keys.load_response(entry.response)
        except Exception as exc:   # a damaged entry is a miss
            log.warning("semantic_cache_bad_entry", id=entry.id, error=str(exc))
            return None
        plan = ctx.state.get(STATE)
        if plan is not None:
            plan.no_store = True   # the answer is not fresh: nothing to store
        self.stats["hits_" + kind] += 1
        ctx.cache_similarity = round(similarity, 4)
        h = ctx.response_headers
        h["x-hookway-cache"] = HIT
        h["x-hookway-cache-type"] = kind
        h["x-hookway-cache-similarity"] = f"{similarity:.4f}"
        h["x-hookway-cache-id"] = entry.id
        h["x-hookway-cache-age"] = str(max(int(time.time() - entry.created), 0))
        ctx.state.setdefault("log", {}).update({"cache_type": kind, "cache_id": entry.id})
        return response

    @hookimpl
    async def hookway_cache_store(self, ctx: Any, response: Any) -> None:
        plan: Plan | None = ctx.state.get(STATE)
        if plan is None or plan.no_store or not response.content:
            return
        if not self.cache_tool_calls and keys.response_has_tool_calls(response):
            return
        now = time.time()
        entry = Entry(plan.entry_id, plan.cache_key, plan.partition, plan.hash, plan.vector,
                      keys.dump_response(response), now, now + plan.ttl)
        task = asyncio.ensure_future(self._put(entry))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)
        # Wait a little so the next request sees the entry; a slow store finishes in the background.
        await asyncio.wait({task}, timeout=self.store_budget)

    async def _put(self, entry: Entry) -> None:
        ok, _ = await self._guard(self.store.put(entry), max(self.store_budget, 5.0), "store")
        if ok:
            self.stats["stored"] += 1
