"""Every hook a hookway plugin can implement. Each docstring is the plugin author's contract.

A plugin is a class registered under the entry-point group ``hookway``::

    [project.entry-points.hookway]
    myplugin = "hookway_myplugin:MyPlugin"

hookway instantiates it with no arguments for each place it is enabled (the global ``plugins:``
block and every bundle that lists it), then hands it its settings through
:func:`hookway_configure`. Mark implementations with ``@hookimpl``::

    from hookway import hookimpl

    class MyPlugin:
        @hookimpl
        async def hookway_auth(self, ctx):
            ...

Two kinds of hooks:

* **Start-up hooks** run once, through pluggy, while the gateway is being built. Their cost does
  not matter.
* **Per-request hooks** are *compiled* at start-up into a plain tuple of functions per plugin
  bundle; pluggy is not involved per request, and never per chunk. They may be ``def`` or
  ``async def``. For "first result" hooks, implementations run in pluggy's order
  (``tryfirst``/``trylast`` respected, later-registered first) and the first one that returns
  something other than ``None`` wins, *after awaiting it*: an async implementation that declines
  by returning ``None`` lets the next one run.

Per-request hooks receive one :class:`hookway.pipeline.RequestContext` (``ctx``); new data arrives
as new attributes on it, never as new arguments. See ``docs/plugins.md`` for examples.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("hookway")
hookimpl = pluggy.HookimplMarker("hookway")

# Names of the per-request hooks; plugins.py compiles these instead of calling them through pluggy.
PER_REQUEST_HOOKS = ("hookway_auth", "hookway_route", "hookway_cache_lookup", "hookway_cache_store",
                     "hookway_transform_request", "hookway_transform_stream", "hookway_fallback")


# --- start-up hooks --------------------------------------------------------------------------------

@hookspec
def hookway_config_schema() -> dict | None:
    """Return the JSON Schema of this plugin's settings block (``plugins: {name: {...}}``).

    ``hookway check`` and ``serve`` validate the block against it and report every problem with
    its key path. Return None to accept any mapping. Called once per plugin, with no settings yet.
    """


@hookspec
def hookway_configure(settings: dict, gateway: Any) -> None:
    """Receive this plugin's settings (already validated) and the :class:`hookway.app.Gateway`.

    Called once per enabled instance: a plugin enabled in two bundles is two instances, each
    configured with its own settings. Keep what you need on ``self``. Raise
    :class:`hookway.config.ConfigError` for a problem the schema cannot express.
    """


@hookspec
def hookway_register_dialects(register: Any) -> None:
    """Register inbound API dialects: ``register(dialect)``.

    A dialect (:class:`hookway.dialects.Dialect`) parses its wire format into
    :class:`hookway.ir.Request` and renders responses, stream events and errors back. Its HTTP
    endpoints are registered with :func:`hookway_register_routes`.
    """


@hookspec
def hookway_register_providers(register: Any) -> None:
    """Register provider adapter classes: ``register("openai", OpenAIAdapter)``.

    The name is the provider ``type:`` in the config. One adapter instance is created per
    configured provider (see :class:`hookway.providers.ProviderAdapter`) and owns one pooled HTTP
    session for its whole life.
    """


@hookspec
def hookway_register_routes(router: Any, gateway: Any) -> None:
    """Add HTTP routes: ``router.add_post("/v1/chat/completions", handler)`` and the like.

    ``router`` is the aiohttp application's ``UrlDispatcher``. Inference handlers normally call
    ``gateway.handle(request, dialect, operation)`` so the whole pipeline runs; admin APIs and pages
    may answer directly. Wrap management endpoints in :func:`hookway.admin.admin_only`; inside, raise
    :class:`hookway.admin.AdminError` for a refusal and read bodies with
    :func:`hookway.admin.json_object_body`.
    """


@hookspec
def hookway_cleanup_ctx(gateway: Any) -> Any:
    """Return an async generator function for aiohttp's ``cleanup_ctx`` (code before ``yield`` runs
    at start-up inside the event loop, code after it at shutdown), or None.

    Use it to start background tasks, open databases and flush on graceful shutdown.
    """


@hookspec
def hookway_middleware() -> Any:
    """Return an "around" middleware ``async def mw(ctx, call_next)`` or None.

    ``await call_next(ctx)`` runs the rest of the request (routing, upstream call, rendering) and
    returns the response: a stream has been fully written by then; a whole (non-streamed) answer
    is sent by aiohttp after the middleware returns, so work done before returning happens before
    the client sees it. Use it for timing, spans, accounting. The chain is composed once at
    start-up, outermost first in hook order.
    """


@hookspec
def hookway_log(records: list) -> Any:
    """Receive a batch of finished request records (:class:`hookway.pipeline.LogRecord`).

    Called off the hot path by a background task draining a bounded queue; may be async. Every
    implementation gets every record. Exceptions are logged and do not stop other sinks. If the
    queue is full, records are dropped and counted (``gateway.log_queue.dropped``).
    """


@hookspec
def hookway_filter_models(ctx: Any, ids: list) -> Any:
    """Narrow the ``provider/model`` ids a caller sees in ``GET /v1/models`` (and the other model
    lists). Return the new list, or None to leave it as is. Every implementation of the caller's
    bundle is applied in turn. Not on the inference path: cost does not matter.
    """


# --- per-request hooks (compiled, see module docstring) --------------------------------------------

@hookspec(firstresult=True)
def hookway_auth(ctx: Any) -> Any:
    """Decide who is calling. First result wins.

    Read ``ctx.headers``; return an identity object (any value; conventionally
    :class:`hookway.pipeline.Identity`) to accept, raise :class:`hookway.errors.GatewayError`
    (``authentication``/``permission``/``billing``/``rate_limit``) to reject, or return None to
    let the next plugin decide. When every plugin declines, the request goes on anonymous
    (``ctx.identity`` None). The identity's ``bundle`` selects the plugin bundle for the rest of the
    request.
    """


@hookspec(firstresult=True)
def hookway_route(ctx: Any) -> Any:
    """Choose where the request goes. First result wins.

    Return a list of :class:`hookway.providers.Target` (the first is tried first, the others are
    fallbacks), or None to let the next plugin decide. When all decline, the core resolves
    ``ctx.model`` itself: ``provider/model``, or an unprefixed name served by exactly one provider.
    Set ``ctx.rule`` to name the rule that matched (it is logged).
    """


@hookspec(firstresult=True)
def hookway_cache_lookup(ctx: Any) -> Any:
    """Return a cached :class:`hookway.ir.Response` to answer without calling the provider, or
    None. The answer is replayed in the caller's dialect (as a stream if it asked for one). The core
    sets ``ctx.cache_hit`` and ``ctx.cache_status = "hit"``; set ``ctx.cache_similarity``,
    ``ctx.response_headers`` and, when you looked and found nothing, ``ctx.cache_status = "miss"``
    (or ``"skip"`` when the request cannot be cached) yourself: metrics count lookups by it.
    """


@hookspec
def hookway_cache_store(ctx: Any, response: Any) -> None:
    """A fresh :class:`hookway.ir.Response` was produced for ``ctx``: store it if you cache.

    Called after the response has been sent; every implementation is called.
    """


@hookspec
def hookway_transform_request(ctx: Any, target: Any) -> None:
    """Rewrite the request before it goes to ``target`` (all implementations, in order).

    Read and change ``ctx.ir`` (the canonical :class:`hookway.ir.Request`). Touching ``ctx.ir``
    turns off the same-dialect byte pass-through for this request, so only touch it when you
    change something. Raise :class:`hookway.errors.GatewayError` to reject.
    """


@hookspec
def hookway_transform_stream(ctx: Any) -> Any:
    """Return a per-stream transform, or None. All implementations are asked once per stream.

    The transform is a plain callable ``f(event) -> event | list[event] | None`` over
    :mod:`hookway.ir` events (None drops the event). The returned callables are composed once,
    then applied per event without any hook dispatch. Returning one turns off the byte
    pass-through for this request.
    """


@hookspec(firstresult=True)
def hookway_fallback(ctx: Any, error: Any, attempt: int) -> Any:
    """The attempt number ``attempt`` (0-based) failed with ``error``
    (:class:`hookway.errors.GatewayError`) before any byte reached the client.

    Return the next :class:`hookway.providers.Target` to try (possibly the same one, to retry),
    or None to give up and send the error. Only called for failures before the first byte;
    ``ctx.targets`` holds what routing chose.
    """
