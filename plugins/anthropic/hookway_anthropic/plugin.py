"""The ``anthropic`` plugin: the Messages dialect, the Anthropic provider adapter and the
Anthropic-shaped endpoints (messages, count_tokens, models, the probes Claude Code sends)."""

from __future__ import annotations

from aiohttp import web

from hookway import hookimpl
from hookway.errors import GatewayError

from .adapter import AnthropicAdapter
from .dialect import AnthropicDialect
from .tokens import estimate_request

PREFIXES = ("/anthropic/v1", "/v1")


class AnthropicPlugin:
    def __init__(self) -> None:
        self.dialect = AnthropicDialect()

    @hookimpl
    def hookway_config_schema(self):
        return {"type": "object", "additionalProperties": False, "properties": {}}

    @hookimpl
    def hookway_register_dialects(self, register):
        register(self.dialect)

    @hookimpl
    def hookway_register_providers(self, register):
        register("anthropic", AnthropicAdapter)

    @hookimpl
    def hookway_register_routes(self, router, gateway):
        dialect = self.dialect

        async def messages(request: web.Request) -> web.StreamResponse:
            # ?beta=true (Claude Code) needs nothing here: the adapter forwards it upstream.
            return await gateway.handle(request, dialect, "chat")

        async def count_tokens(request: web.Request) -> web.Response:
            try:
                ctx = await gateway.prepare(request, dialect, "count_tokens")
                count, source = await self._count(gateway, ctx)
            except GatewayError as err:
                return gateway.error_response(dialect, err)
            except Exception as exc:  # a bug must still answer in the caller's dialect
                gateway.log.exception("count_tokens_failed")
                return gateway.error_response(dialect, GatewayError(
                    "api_error", f"internal error: {type(exc).__name__}"))
            return web.json_response({"input_tokens": count}, headers={"x-hookway-token-count": source})

        async def models(request: web.Request) -> web.Response:
            try:
                ctx = await gateway.authenticate(request, dialect)
                ids = await gateway.model_ids(ctx)
            except GatewayError as err:
                return gateway.error_response(dialect, err)
            return web.json_response(dialect.render_model_list(ids))

        async def model(request: web.Request) -> web.Response:
            wanted = request.match_info["model"]
            try:
                ctx = await gateway.authenticate(request, dialect)
                if wanted not in await gateway.model_ids(ctx):
                    raise GatewayError("not_found", f"model {wanted!r} not found", param="model")
            except GatewayError as err:
                return gateway.error_response(dialect, err)
            return web.json_response(dialect.render_model(wanted))

        async def ok(request: web.Request) -> web.Response:
            # Claude Code probes HEAD / before its first request.
            return web.Response(status=200)

        async def about(request: web.Request) -> web.Response:
            return web.json_response({"name": "hookway", "dialect": "anthropic",
                                      "endpoints": ["POST /anthropic/v1/messages",
                                                    "POST /anthropic/v1/messages/count_tokens",
                                                    "GET /anthropic/v1/models"]})

        # HEAD / first: aiohttp merges consecutive routes of one path into one resource, and a
        # later plugin's GET / (which adds HEAD too) would then clash with this one.
        try:
            router.add_route("HEAD", "/", ok)
        except RuntimeError:
            pass   # another plugin already serves GET /, and with it HEAD /
        for prefix in PREFIXES:
            router.add_post(prefix + "/messages", messages)
            router.add_post(prefix + "/messages/count_tokens", count_tokens)
        router.add_get("/anthropic/v1/models", models)
        router.add_get("/anthropic/v1/models/{model:.+}", model)
        router.add_get("/anthropic", about)   # aiohttp answers HEAD /anthropic from it too

    async def _count(self, gateway, ctx) -> tuple[int, str]:
        """The provider's own count when it is an Anthropic upstream, else a local estimate.
        The count is advisory, so a provider that cannot count (or fails to) is never an error."""
        target = ctx.targets[0] if ctx.targets else None
        adapter = gateway.adapters.get(target.provider) if target is not None else None
        if adapter is not None and adapter.native_dialect == "anthropic" and "count_tokens" in adapter.operations:
            ctx.target = target
            try:
                count = await adapter.count_tokens(ctx.ir if ctx.parsed else None, target, ctx)
            except GatewayError as err:
                gateway.log.warning("count_tokens_fallback", provider=target.provider, error=err.message)
                count = None
            if count is not None:
                return count, "provider"
        return estimate_request(ctx.ir), "estimate"
