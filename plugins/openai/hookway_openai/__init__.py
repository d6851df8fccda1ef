"""hookway-openai: the OpenAI API dialect and the OpenAI-compatible provider adapter.

Routes (also under ``/openai``): ``POST /v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/responses``; ``GET /v1/models`` and ``/v1/models/{model}``.
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from hookway import hookimpl
from hookway.errors import GatewayError

from .adapter import OpenAIAdapter
from .dialect import OpenAIDialect
from .stream import ChunkTranslator
from .translate import request_to_openai, response_from_openai

__all__ = ["OpenAIPlugin", "OpenAIAdapter", "OpenAIDialect", "ChunkTranslator", "request_to_openai",
           "response_from_openai"]

log = logging.getLogger("hookway.openai")

OPERATIONS = {"chat/completions": "chat", "completions": "completions", "embeddings": "embeddings",
              "responses": "responses"}


def _model_entry(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": model_id.split("/", 1)[0]}


class OpenAIPlugin:
    def __init__(self) -> None:
        self.dialect = OpenAIDialect()

    @hookimpl
    def hookway_config_schema(self):
        return {"type": "object", "additionalProperties": False, "properties": {}}

    @hookimpl
    def hookway_register_dialects(self, register):
        register(self.dialect)

    @hookimpl
    def hookway_register_providers(self, register):
        register("openai", OpenAIAdapter)

    @hookimpl
    def hookway_register_routes(self, router, gateway):
        dialect = self.dialect

        def inference(operation: str):
            async def handler(request: web.Request) -> web.StreamResponse:
                return await gateway.handle(request, dialect, operation)
            handler.__name__ = f"openai_{operation}"
            return handler

        async def list_models(request: web.Request) -> web.Response:
            try:
                ctx = await gateway.authenticate(request, dialect)
                ids = await gateway.model_ids(ctx)
            except GatewayError as err:
                return gateway.error_response(dialect, err)
            return web.Response(body=orjson.dumps({"object": "list", "data": [_model_entry(i) for i in ids]}),
                                content_type="application/json")

        async def get_model(request: web.Request) -> web.Response:
            wanted = request.match_info["model"]
            try:
                ctx = await gateway.authenticate(request, dialect)
                ids = await gateway.model_ids(ctx)
                if wanted not in ids:
                    raise GatewayError("not_found", f"model {wanted!r} not found", param="model")
            except GatewayError as err:
                return gateway.error_response(dialect, err)
            return web.Response(body=orjson.dumps(_model_entry(wanted)), content_type="application/json")

        for prefix in ("", "/openai"):
            for path, operation in OPERATIONS.items():
                router.add_post(f"{prefix}/v1/{path}", inference(operation))
            for path, handler in (("/v1/models", list_models), ("/v1/models/{model:.+}", get_model)):
                try:
                    router.add_get(f"{prefix}{path}", handler)
                except RuntimeError:
                    # Another dialect plugin (anthropic) may already answer GET /v1/models.
                    log.warning("GET %s%s is already registered by another plugin; keeping it", prefix, path)
