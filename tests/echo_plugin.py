"""A tiny dialect and adapter so the core can be tested without any provider plugin."""

from __future__ import annotations

import asyncio

import orjson

from hookway import hookimpl, ir
from hookway.dialects import Dialect
from hookway.errors import GatewayError, invalid
from hookway.providers import ProviderAdapter
from hookway.sse import frame


class EchoDialect(Dialect):
    """A minimal dialect: {"model", "prompt", "stream"} in; {"text", "usage"} or SSE out."""

    name = "echo"

    def parse(self, body, operation):
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise invalid("`prompt` must be a string", "prompt")
        return ir.Request(model=body["model"], messages=[{"role": "user", "content": [{"type": "text", "text": prompt}]}],
                          stream=body.get("stream") is True)

    def render_response(self, response, request, operation):
        return {"model": response.model, "text": ir.text_of(response.content),
                "usage": [response.usage.input_tokens, response.usage.output_tokens]}

    def stream_renderer(self, request, operation, model):
        def render(ev):
            t = type(ev)
            if t is ir.BlockDelta:
                return frame(orjson.dumps({"delta": ev.value}))
            if t is ir.Ping:
                return b": ping\n\n"
            if t is ir.StreamError:
                return frame(orjson.dumps({"error": ev.error.message}), "error")
            if t is ir.MessageStop:
                return b"data: [DONE]\n\n"
            return b""
        return render

    def render_error(self, error):
        return error.status, {"error": {"kind": error.kind, "message": error.message}}

    def render_stream_error(self, error):
        return frame(orjson.dumps({"error": error.message}), "error")


class EchoAdapter(ProviderAdapter):
    """Answers with the prompt reversed; ``settings.fail`` makes it fail with that status."""

    operations = frozenset({"chat"})
    calls: list = []

    async def complete(self, request, target, ctx):
        self._maybe_fail(target)
        text = ir.text_of(request.messages[-1]["content"])
        EchoAdapter.calls.append((self.name, target.model, text))
        return ir.Response("r1", target.model, [{"type": "text", "text": text[::-1]}], "end_turn",
                           usage=ir.Usage(len(text), len(text)))

    def _maybe_fail(self, target):
        status = self.config.settings.get("fail")
        if status:
            message = self.config.settings.get("fail_message", f"{self.name} failed")
            raise GatewayError("api_error" if status >= 500 else "rate_limit", message,
                               status=status, provider=self.name)

    async def stream(self, request, target, ctx):
        self._maybe_fail(target)
        text = ir.text_of(request.messages[-1]["content"])
        EchoAdapter.calls.append((self.name, target.model, text))
        yield ir.MessageStart("r1", target.model, ir.Usage(input_tokens=len(text)))
        yield ir.BlockStart(0, "text")
        delay = self.config.settings.get("delay", 0)
        for ch in text[::-1]:
            if delay:
                await asyncio.sleep(delay)
            yield ir.BlockDelta(0, "text", ch)
        if self.config.settings.get("break_mid_stream"):
            yield ir.StreamError(GatewayError("bad_gateway", "upstream broke", status=502))
            return
        yield ir.BlockStop(0)
        yield ir.MessageDelta("end_turn", ir.Usage(output_tokens=len(text)))
        yield ir.MessageStop()


class EchoPlugin:
    @hookimpl
    def hookway_register_dialects(self, register):
        register(EchoDialect())

    @hookimpl
    def hookway_register_providers(self, register):
        register("echo", EchoAdapter)

    @hookimpl
    def hookway_register_routes(self, router, gateway):
        dialect = gateway.dialects["echo"]

        async def handler(request):
            return await gateway.handle(request, dialect, "chat")
        router.add_post("/echo", handler)


def echo_config(**extra) -> dict:
    config = {"plugins": {"echo": {}},
              "providers": {"e1": {"type": "echo"}, "e2": {"type": "echo", "models": ["only-e2"]}}}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


