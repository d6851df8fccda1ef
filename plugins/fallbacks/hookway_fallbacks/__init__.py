"""hookway-fallbacks: retries, key rotation and provider fallbacks.

Implements ``hookway_fallback``, which the core calls when an attempt failed before any byte
reached the client. For each failure, in this order:

1. a **429** or an upstream **401/403** retries the same provider and model with *another key* of
   that provider (the adapter records the key it used in ``ctx.state["provider_key"]``), at once;
2. a transient failure (429, 408, 409, 5xx, 529, connection error, timeout) **retries** the same
   target up to ``network_config.max_retries`` times, after an exponential backoff with jitter
   (``retry_backoff_initial`` doubling, capped by ``retry_backoff_max``, both in milliseconds),
   waiting at least the upstream's ``retry-after`` (still capped);
3. then the **next target**: the routing rule's fallbacks (``ctx.targets[1:]``), then the
   request's own ``fallbacks: ["provider/model", ...]`` (Bifrost's convention).

An error the gateway decided itself (``error.provider is None``: a governance rate limit, budget or
refusal of that provider or model, a provider that is not configured) is neither retried nor
rotated to another key — the answer would be the same — and goes to the next target at once; such
a refusal of a fallback target does not end the chain.

The client's own mistakes (400, 404, 413, 422...) are never retried. When every target fails the
core answers with the first target's error, in the client's dialect.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time

from hookway import hookimpl
from hookway.errors import GatewayError
from hookway.providers import Target

__all__ = ["FallbacksPlugin", "backoff_delay", "retry_after_seconds"]

log = logging.getLogger("hookway.fallbacks")

# Refusals the gateway itself makes about one target (``error.provider is None``) that another
# target may not share: 402 a provider config's budget, 403 provider or model not allowed (or no
# key of the provider allows the model), 404 provider not configured. With the retryable ones
# (429 a provider config's rate limit, 5xx), they move on to the next target at once.
GATEWAY_REFUSALS = frozenset({402, 403, 404})

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "request_fallbacks": {"type": "boolean"},
        "max_request_fallbacks": {"type": "integer", "minimum": 0},
        "rotate_keys": {"type": "boolean"},
        "fallback_on_auth_error": {"type": "boolean"},
        "max_attempts": {"type": "integer", "minimum": 1},
    },
}


def retry_after_seconds(value) -> float | None:
    """Seconds from a ``retry-after`` header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - time.time(), 0.0)


def backoff_delay(retry: int, initial_ms: float, max_ms: float, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``retry`` (0-based): exponential with equal jitter,
    at least ``retry_after``, never more than ``max_ms``."""
    cap = max_ms / 1000
    base = min(initial_ms / 1000 * (2 ** retry), cap)
    delay = base / 2 + (rng or random).uniform(0, base / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, cap)


class _State:
    """Per request, in ``ctx.state["fallbacks"]``."""

    __slots__ = ("chain", "index", "retries", "tried_keys")

    def __init__(self, chain: list[Target]):
        self.chain = chain
        self.index = 0
        self.retries = 0
        self.tried_keys: set[str] = set()


class FallbacksPlugin:
    def __init__(self) -> None:
        self.gateway = None
        self.request_fallbacks = True
        self.max_request_fallbacks = 5
        self.rotate_keys = True
        self.fallback_on_auth_error = True
        self.max_attempts = 20
        # How a backoff is waited; tests replace it to see the delays chosen without a stopwatch.
        self.sleep = asyncio.sleep

    @hookimpl
    def hookway_config_schema(self):
        return SCHEMA

    @hookimpl
    def hookway_configure(self, settings, gateway):
        self.gateway = gateway
        self.request_fallbacks = settings.get("request_fallbacks", True)
        self.max_request_fallbacks = settings.get("max_request_fallbacks", 5)
        self.rotate_keys = settings.get("rotate_keys", True)
        self.fallback_on_auth_error = settings.get("fallback_on_auth_error", True)
        self.max_attempts = settings.get("max_attempts", 20)
        # Retries are done here (with key rotation and retry-after); adapters that see this flag
        # skip their own retry loop so `max_retries` is not applied twice.
        gateway.retries_by_plugin = True

    # --- the hook ---

    @hookimpl
    async def hookway_fallback(self, ctx, error, attempt):
        state = ctx.state.get("fallbacks")
        if state is None:
            state = ctx.state["fallbacks"] = _State(self._chain(ctx))
        failed = ctx.target or state.chain[state.index]
        used_key = ctx.state.pop("provider_key", None) or failed.key
        status = error.status
        if error.provider is None:
            # The gateway's own verdict on this target (a governance limit or refusal of the
            # provider, a provider that is not configured, no key allowed for the model...):
            # another key or a retry would get the same answer; only another target may not.
            if not (error.retryable or status in GATEWAY_REFUSALS):
                return None     # the client's own mistake: never retried
            if attempt + 1 >= self.max_attempts:
                log.warning("request %s: giving up after %d attempts", ctx.id, attempt + 1)
                return None
            return self._next_target(state)
        upstream_auth = status in (401, 403)
        if not (error.retryable or upstream_auth):
            return None     # the client's own mistake: never retried
        if attempt + 1 >= self.max_attempts:
            log.warning("request %s: giving up after %d attempts", ctx.id, attempt + 1)
            return None
        adapter = self.gateway.adapters.get(failed.provider)

        # 1. another key of the same provider
        if adapter is not None and self.rotate_keys and (status == 429 or upstream_auth):
            if used_key is None:
                # The adapter did not say which key it used: with one allowed key, it was that one.
                allowed = [k for k in adapter.config.keys if k.allows(failed.model)]
                if len(allowed) == 1:
                    used_key = allowed[0]
            if used_key is not None:
                state.tried_keys.add(used_key.name)
            other = self._other_key(adapter, failed.model, state.tried_keys)
            if other is not None:
                state.tried_keys.add(other.name)
                return Target(failed.provider, failed.model, other)

        # 2. the same target again, after a backoff
        if adapter is not None and not upstream_auth:
            net = adapter.config.network
            if state.retries < net.max_retries:
                delay = backoff_delay(state.retries, net.retry_backoff_initial, net.retry_backoff_max,
                                      retry_after_seconds(error.headers.get("retry-after")
                                                          or error.headers.get("Retry-After")))
                state.retries += 1
                if delay > 0:
                    await self.sleep(delay)
                return state.chain[state.index]

        # 3. the next target
        if upstream_auth and not self.fallback_on_auth_error:
            return None
        return self._next_target(state)

    # --- helpers ---

    @staticmethod
    def _next_target(state: _State) -> Target | None:
        if state.index + 1 < len(state.chain):
            state.index += 1
            state.retries = 0
            state.tried_keys = set()
            return state.chain[state.index]
        return None

    def _chain(self, ctx) -> list[Target]:
        chain = list(ctx.targets) or ([ctx.target] if ctx.target is not None else [])
        if not self.request_fallbacks:
            return chain
        body = ctx.body
        extra = body.get("fallbacks") if isinstance(body, dict) else None
        if not isinstance(extra, list) or not extra:
            return chain
        seen = {(t.provider, t.model) for t in chain}
        for item in extra[:self.max_request_fallbacks]:
            if isinstance(item, dict) and isinstance(item.get("provider"), str) and isinstance(item.get("model"), str):
                item = f"{item['provider']}/{item['model']}"
            if not isinstance(item, str) or not item:
                continue
            try:
                target = self.gateway.resolve_model(item)
            except GatewayError as err:
                log.warning("request %s: fallback %r ignored: %s", ctx.id, item, err.message)
                continue
            if (target.provider, target.model) not in seen:
                seen.add((target.provider, target.model))
                chain.append(target)
        return chain

    @staticmethod
    def _other_key(adapter, model: str, tried: set[str]):
        try:
            key = adapter.keys.pick(model, exclude=tried)
        except GatewayError:
            return None
        if key is None or key.name in tried:
            return None
        return key
