"""hookway-openai: the OpenAI API dialect and the OpenAI-compatible provider adapter.

Routes (also under ``/openai``): ``POST /v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/responses``; ``GET /v1/models`` and ``/v1/models/{model}``.

``POST /v1/images/generations``, ``/v1/images/edits``, ``/v1/images/variations``,
``/v1/audio/speech``, ``/v1/audio/transcriptions``, ``/v1/audio/translations`` and
``/v1/batches`` (operations ``images``, ``speech``, ``transcription``, ``batch``) are routed too,
so that a provider without them answers ``400 unsupported_operation`` in OpenAI's error shape
rather than a bare 404. No adapter forwards them yet.
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from hookway import hookimpl
from hookway.errors import GatewayError, invalid

from .adapter import OpenAIAdapter
from .dialect import OpenAIDialect
from .stream import ChunkTranslator
from .translate import request_to_openai, response_from_openai

__all__ = ["OpenAIPlugin", "OpenAIAdapter", "OpenAIDialect", "ChunkTranslator", "request_to_openai",
           "response_from_openai"]

log = logging.getLogger("hookway.openai")

OPERATIONS = {"chat/completions": "chat", "completions": "completions", "embeddings": "embeddings",
              "responses": "responses",
              # JSON bodies with a `model`: through the pipeline, which answers unsupported_operation
              # for an adapter that does not list the operation.
              "images/generations": "images", "audio/speech": "speech"}
# multipart/form-data bodies (the pipeline reads JSON): the model is read from the form.
FORM_OPERATIONS = {"audio/transcriptions": "transcription", "audio/translations": "transcription",
                   "images/edits": "images", "images/variations": "images"}
# JSON bodies without a model (a batch names an uploaded file).
MODELLESS_OPERATIONS = {"batches": "batch"}

_MAX_MODEL_FIELD = 1024   # bytes: a `model` form field is a name, not a payload


async def _form_model(request: web.Request) -> str | None:
    """The ``model`` field of a multipart form, reading only that field; the other parts (the
    audio or image file) are drained, not kept, so the client can read the answer."""
    if not request.content_type.startswith("multipart/"):
        raise invalid("this endpoint takes multipart/form-data with a `model` field")
    try:
        reader = await request.multipart()
        model = None
        while True:
            part = await reader.next()
            if part is None:
                break
            if model is None and getattr(part, "name", None) == "model":
                data = b""
                while True:
                    chunk = await part.read_chunk(256)
                    if not chunk:
                        break
                    data += chunk
                    if len(data) > _MAX_MODEL_FIELD:
                        raise invalid("`model` must be a model name", "model")
                model = data.decode("utf-8", "replace").strip()
            else:
                await part.release()
    except (GatewayError, web.HTTPException):
        raise
    except Exception as exc:   # aiohttp raises several kinds for a malformed form
        raise invalid(f"request body is not valid multipart/form-data: {type(exc).__name__}: {exc}")
    return model


def _unsupported(gateway, operation: str, model: str | None) -> GatewayError:
    """The answer to an operation no adapter forwards: ``unsupported_operation`` naming the
    provider the model resolves to (or every configured provider when there is no model)."""
    if model:
        target = gateway.resolve_model(model)
        adapter = gateway.adapters[target.provider]
        if operation not in adapter.operations:
            return adapter.unsupported(operation)
        return GatewayError("unsupported_operation", f"{operation} requests are not forwarded by "
                            f"hookway yet ({adapter.name} provider)", code="unsupported_operation",
                            provider=adapter.name)
    lacking = sorted(name for name, a in gateway.adapters.items() if operation not in a.operations)
    if len(gateway.adapters) == 1 and lacking:
        return gateway.adapters[lacking[0]].unsupported(operation)
    if lacking and len(lacking) == len(gateway.adapters):
        return GatewayError("unsupported_operation", f"{operation} is not supported by any configured "
                            f"provider ({', '.join(lacking)})", code="unsupported_operation")
    return GatewayError("unsupported_operation", f"{operation} requests are not forwarded by hookway yet",
                        code="unsupported_operation")


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

        def unsupported(operation: str, form: bool):
            async def handler(request: web.Request) -> web.Response:
                try:
                    await gateway.authenticate(request, dialect)
                    if form:
                        model = await _form_model(request)
                    else:
                        model = None
                        raw = await request.read()
                        try:
                            body = orjson.loads(raw) if raw.strip() else {}
                        except orjson.JSONDecodeError as exc:
                            raise invalid(f"request body is not valid JSON: {exc}")
                        if isinstance(body, dict) and isinstance(body.get("model"), str):
                            model = body["model"]
                    err = _unsupported(gateway, operation, model)
                except web.HTTPRequestEntityTooLarge:
                    err = GatewayError("request_too_large", "request body is too large (server.max_body_bytes)")
                except GatewayError as exc:
                    err = exc
                return gateway.error_response(dialect, err)
            handler.__name__ = f"openai_{operation}_unsupported"
            return handler

        async def list_models(request: web.Request) -> web.Response:
            # The root path serves every SDK: an Anthropic client gets Anthropic's list shape.
            caller = gateway.dialect_of(request, dialect) if request.path == "/v1/models" else dialect
            try:
                ctx = await gateway.authenticate(request, caller)
                ids = await gateway.model_ids(ctx)
            except GatewayError as err:
                return gateway.error_response(caller, err)
            return web.Response(body=orjson.dumps(caller.render_model_list(ids)), content_type="application/json")

        async def get_model(request: web.Request) -> web.Response:
            wanted = request.match_info["model"]
            caller = gateway.dialect_of(request, dialect) if request.path.startswith("/v1/") else dialect
            try:
                ctx = await gateway.authenticate(request, caller)
                ids = await gateway.model_ids(ctx)
                if wanted not in ids:
                    raise GatewayError("not_found", f"model {wanted!r} not found", param="model")
            except GatewayError as err:
                return gateway.error_response(caller, err)
            return web.Response(body=orjson.dumps(caller.render_model(wanted)), content_type="application/json")

        for prefix in ("", "/openai"):
            for path, operation in OPERATIONS.items():
                router.add_post(f"{prefix}/v1/{path}", inference(operation))
            for path, operation in FORM_OPERATIONS.items():
                router.add_post(f"{prefix}/v1/{path}", unsupported(operation, form=True))
            for path, operation in MODELLESS_OPERATIONS.items():
                router.add_post(f"{prefix}/v1/{path}", unsupported(operation, form=False))
            for path, handler in (("/v1/models", list_models), ("/v1/models/{model:.+}", get_model)):
                try:
                    router.add_get(f"{prefix}{path}", handler)
                except RuntimeError:
                    # Another dialect plugin (anthropic) may already answer GET /v1/models.
                    log.warning("GET %s%s is already registered by another plugin; keeping it", prefix, path)
