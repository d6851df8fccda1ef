"""hookway-otel: one OpenTelemetry span per request, exported over OTLP/HTTP.

Spans are built from the finished request records the core hands to ``hookway_log`` (off the hot
path), in a worker thread, and exported by the SDK's ``BatchSpanProcessor``. Each request is a
``SERVER`` span named ``"{gen_ai.operation.name} {model}"`` carrying the GenAI semantic-convention
attributes, with one ``CLIENT`` child span per upstream attempt.

* start and end times come from the record (``time`` is the end, ``latency_ms`` the duration);
* a client's W3C ``traceparent`` header makes the request span a child of the client's trace;
* failed attempts (retries and fallbacks) come from the record's ``attempts``, kept by the core.

No secret reaches an attribute: the key attributes carry the caller's key id and name from the
auth plugin, and provider key values are replaced by ``[redacted]`` in error messages and content.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import orjson
import structlog

from hookway import hookimpl, ir

__all__ = ["OtelPlugin", "span_attributes"]

log = structlog.get_logger("hookway.otel")

OPERATION_NAMES = {"chat": "chat", "responses": "chat", "count_tokens": "chat",
                   "completions": "text_completion", "embeddings": "embeddings"}

# hookway provider types -> gen_ai.provider.name well-known values
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "cerebras": "cerebras", "groq": "groq",
                  "mistral": "mistral_ai", "gemini": "gcp.gemini", "vertex": "gcp.vertex_ai",
                  "bedrock": "aws.bedrock", "azure": "azure.ai.openai", "deepseek": "deepseek",
                  "xai": "x_ai", "perplexity": "perplexity", "cohere": "cohere"}

# request fields copied by the middleware for gen_ai.request.* attributes
REQUEST_PARAMS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "temperature", "top_p", "top_k",
                  "seed", "frequency_penalty", "presence_penalty", "stop", "stop_sequences")

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "endpoint": {"type": "string", "pattern": "^https?://",
                     "description": "OTLP/HTTP traces URL (default $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "
                                    "$OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces, or http://localhost:4318/v1/traces)"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"},
                    "description": "sent with every export (e.g. an API key: env.OTEL_KEY)"},
        "service_name": {"type": "string"},
        "resource_attributes": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
        "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
        "flush_interval_ms": {"type": "number", "exclusiveMinimum": 0},
        "max_queue_size": {"type": "integer", "minimum": 1},
        "max_export_batch_size": {"type": "integer", "minimum": 1},
        "compression": {"enum": ["none", "gzip", "deflate"]},
        "capture_content": {"type": "boolean",
                            "description": "add gen_ai.input.messages / gen_ai.output.messages (default false)"},
        "record_attempts": {"type": "boolean", "description": "child spans for failed attempts before a "
                                                              "fallback (default true)"},
    },
}


def default_endpoint() -> str:
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if base:
        return base.rstrip("/") + "/v1/traces"
    return "http://localhost:4318/v1/traces"


def _stop_reason(rec) -> str | None:
    if rec.stop_reason:
        return rec.stop_reason
    resp = rec.response
    if isinstance(resp, ir.Response):
        return resp.stop_reason
    if rec.response_body:
        # a byte pass-through answer (OpenAI or Anthropic shape), kept when content is logged
        try:
            body = orjson.loads(rec.response_body)
        except (orjson.JSONDecodeError, TypeError):
            return None
        if isinstance(body, dict):
            choices = body.get("choices")
            if choices and isinstance(choices[0], dict):
                return choices[0].get("finish_reason")
            return body.get("stop_reason")
    return None


def _clean(attrs: dict) -> dict:
    return {k: v for k, v in attrs.items() if v is not None and v != ""}


def span_attributes(rec, provider_name: str | None, redact=None) -> dict:
    """The request span's attributes (GenAI semantic conventions + ``hookway.*``)."""
    redact = redact or (lambda s: s)
    op = OPERATION_NAMES.get(rec.operation, rec.operation)
    extra = rec.extra or {}
    attrs = {
        "gen_ai.operation.name": op,
        "gen_ai.provider.name": provider_name,
        "gen_ai.request.model": rec.model,
        "gen_ai.response.model": rec.upstream_model,
        # hookway counts uncached input apart from cache reads (Anthropic style); the GenAI
        # conventions count every input token, cached ones included.
        "gen_ai.usage.input_tokens": (rec.input_tokens or 0) + (rec.cached_tokens or 0),
        "gen_ai.usage.output_tokens": rec.output_tokens,
        "http.response.status_code": rec.status,
        "hookway.request_id": rec.id,
        "hookway.dialect": rec.dialect,
        "hookway.operation": rec.operation,
        "hookway.provider": rec.provider,
        "hookway.rule": rec.rule,
        "hookway.key.id": rec.key_id,
        "hookway.key.name": rec.key_name,
        "hookway.team.id": rec.team_id,
        "hookway.customer.id": rec.customer_id,
        "hookway.stream": rec.stream,
        "hookway.passthrough": rec.passthrough,
        "hookway.cache_hit": rec.cache_hit,
        "hookway.fallback_index": rec.fallback_index,
        "hookway.latency_ms": rec.latency_ms,
        "hookway.ttft_ms": rec.ttft_ms,
        "hookway.upstream_ms": rec.upstream_ms,
        "hookway.cost_usd": rec.cost,
    }
    if rec.cached_tokens:
        attrs["gen_ai.usage.cache_read.input_tokens"] = rec.cached_tokens
    if rec.cache_similarity is not None:
        attrs["hookway.cache_similarity"] = rec.cache_similarity
    stop = _stop_reason(rec)
    if stop:
        attrs["gen_ai.response.finish_reasons"] = [stop]
    if isinstance(rec.response, ir.Response) and rec.response.id:
        attrs["gen_ai.response.id"] = rec.response.id
    body = rec.request if isinstance(rec.request, dict) else extra.get("otel")
    if isinstance(body, dict):
        for field, name in (("max_tokens", "gen_ai.request.max_tokens"),
                            ("max_completion_tokens", "gen_ai.request.max_tokens"),
                            ("max_output_tokens", "gen_ai.request.max_tokens"),
                            ("temperature", "gen_ai.request.temperature"), ("top_p", "gen_ai.request.top_p"),
                            ("top_k", "gen_ai.request.top_k"), ("seed", "gen_ai.request.seed"),
                            ("frequency_penalty", "gen_ai.request.frequency_penalty"),
                            ("presence_penalty", "gen_ai.request.presence_penalty")):
            value = body.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attrs[name] = value
        stop_seq = body.get("stop") or body.get("stop_sequences")
        if isinstance(stop_seq, str):
            stop_seq = [stop_seq]
        if isinstance(stop_seq, list) and all(isinstance(s, str) for s in stop_seq):
            attrs["gen_ai.request.stop_sequences"] = stop_seq
    if rec.error:
        kind = rec.error.partition(":")[0]
        attrs["error.type"] = kind if kind.isidentifier() else "error"
    elif rec.status >= 400:
        attrs["error.type"] = str(rec.status)
    return _clean(attrs)


class OtelPlugin:
    def __init__(self) -> None:
        self.provider = None
        self.tracer = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    # --- start-up ---

    @hookimpl
    def hookway_config_schema(self):
        return SCHEMA

    @hookimpl
    def hookway_configure(self, settings, gateway):
        self.gateway = gateway
        self.settings = settings
        self.endpoint = settings.get("endpoint") or default_endpoint()
        self.capture_content = settings.get("capture_content", False)
        self.record_attempts = settings.get("record_attempts", True)
        if self.capture_content:
            gateway.log_content = True

    def _start(self) -> None:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        s = self.settings
        resource = Resource.create({"service.name": s.get("service_name", "hookway"),
                                    **(s.get("resource_attributes") or {})})
        exporter = OTLPSpanExporter(endpoint=self.endpoint, headers=dict(s.get("headers") or {}),
                                    timeout=s.get("timeout_seconds", 10),
                                    compression=Compression(s.get("compression", "none")))
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=s.get("max_queue_size", 8192),
            schedule_delay_millis=s.get("flush_interval_ms", 2000),
            max_export_batch_size=s.get("max_export_batch_size", 512)))
        self.tracer = self.provider.get_tracer("hookway.otel", "0.1.0")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="otel-spans")

    @hookimpl
    def hookway_cleanup_ctx(self, gateway):
        async def lifecycle(app):
            self._start()
            log.info("otel_exporting", endpoint=self.endpoint)
            yield   # the core has flushed its log queue into this sink before this point
            self._closed = True
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._shutdown)
        return lifecycle

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True)
        self.provider.shutdown()    # flushes the batch processor

    # --- per request: only what the record cannot tell ---

    @hookimpl
    def hookway_middleware(self):
        params = REQUEST_PARAMS

        async def trace_context(ctx, call_next):
            # What the record will not carry without content logging: the client's trace context
            # and the request parameters the GenAI conventions name (a few dict look-ups).
            body = ctx.body
            info = {k: body[k] for k in params if k in body}
            parent = ctx.headers.get("traceparent")
            if parent:
                info["traceparent"] = parent
                state = ctx.headers.get("tracestate")
                if state:
                    info["tracestate"] = state
            if info:
                ctx.state.setdefault("log", {})["otel"] = info
            return await call_next(ctx)
        return trace_context

    # --- the sink ---

    @hookimpl
    async def hookway_log(self, records):
        if self.tracer is None:
            return
        redact = self.gateway.redactor()
        if self._closed:
            self._emit(records, redact)
            return
        await asyncio.get_running_loop().run_in_executor(self._executor, self._emit, records, redact)

    def _provider_info(self, name: str | None) -> tuple[str | None, str | None, int | None]:
        adapter = self.gateway.adapters.get(name) if name else None
        if adapter is None:
            return name, None, None
        ptype = adapter.config.type
        url = getattr(adapter.config.network, "base_url", None) or ""
        parts = urlsplit(url) if url else None
        host = parts.hostname if parts else None
        port = (parts.port or (443 if parts.scheme == "https" else 80)) if parts and host else None
        return PROVIDER_NAMES.get(ptype, ptype), host, port

    def _emit(self, records, redact) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        tracer = self.tracer
        propagator = TraceContextTextMapPropagator()
        for rec in records:
            try:
                end = int(rec.time * 1e9)
                start = end - int(rec.latency_ms * 1e6)
                provider_name, host, port = self._provider_info(rec.provider)
                attrs = span_attributes(rec, provider_name, redact)
                if self.capture_content:
                    attrs.update(_content_attributes(rec, redact))
                info = (rec.extra or {}).get("otel") or {}
                parent = None
                if info.get("traceparent"):
                    carrier = {"traceparent": info["traceparent"]}
                    if info.get("tracestate"):
                        carrier["tracestate"] = info["tracestate"]
                    parent = propagator.extract(carrier)
                op = attrs["gen_ai.operation.name"]
                name = f"{op} {rec.model}" if rec.model else op
                span = tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attrs,
                                         start_time=start)
                if rec.status >= 400 or rec.error:
                    span.set_status(Status(StatusCode.ERROR, redact(rec.error) or f"HTTP {rec.status}"))
                child_ctx = trace.set_span_in_context(span)
                for a in self._attempts(rec, start, end):
                    child_attrs = _clean({
                        "gen_ai.operation.name": op, "gen_ai.provider.name": self._provider_info(a["provider"])[0],
                        "gen_ai.request.model": a["model"], "hookway.provider": a["provider"],
                        "hookway.attempt": a["index"], "server.address": a.get("host"), "server.port": a.get("port"),
                        "http.response.status_code": a.get("status"), "error.type": a.get("error_type")})
                    if a.get("final"):
                        for key in ("gen_ai.response.model", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
                                    "gen_ai.usage.cache_read.input_tokens", "gen_ai.response.finish_reasons",
                                    "gen_ai.response.id"):
                            if key in attrs:
                                child_attrs[key] = attrs[key]
                    child = tracer.start_span(f"{op} {a['model']}" if a["model"] else op, context=child_ctx,
                                              kind=SpanKind.CLIENT, attributes=child_attrs, start_time=a["start"])
                    if a.get("error"):
                        child.set_status(Status(StatusCode.ERROR, redact(a["error"])))
                    child.end(end_time=a["end"])
                span.end(end_time=end)
            except Exception:
                log.exception("otel_span_failed", request_id=getattr(rec, "id", None))

    def _attempts(self, rec, start: int, end: int) -> list[dict]:
        """Upstream attempts as ``{provider, model, start, end, status, error, final}`` (ns)."""
        out = []
        # The core records every failed attempt (retries and fallbacks) on the record.
        recorded = rec.attempts if self.record_attempts else []
        for i, a in enumerate(recorded):
            _, host, port = self._provider_info(a.get("provider"))
            err = a.get("error") or ""
            kind = err.partition(":")[0]
            out.append({"index": i, "provider": a.get("provider"), "model": a.get("model"),
                        "start": start + int((a.get("start_ms") or 0) * 1e6),
                        "end": min(end, start + int((a.get("end_ms") or 0) * 1e6)),
                        "status": a.get("status"), "error": err,
                        "error_type": kind if kind.isidentifier() else None, "host": host, "port": port})
        answered = rec.status < 400 and not rec.error
        if rec.provider and rec.upstream_ms is not None and not rec.cache_hit and (answered or not recorded):
            # The answering attempt: the record holds its duration; it ended with the request
            # (the answer is relayed as it arrives), so it started upstream_ms before the end.
            _, host, port = self._provider_info(rec.provider)
            failed = rec.status >= 400 or bool(rec.error)
            kind = (rec.error or "").partition(":")[0]
            out.append({"index": len(recorded), "provider": rec.provider, "model": rec.upstream_model,
                        "start": max(start, end - int(rec.upstream_ms * 1e6)), "end": end, "status": rec.status,
                        "error": rec.error if failed else None,
                        "error_type": (kind if kind.isidentifier() else str(rec.status)) if failed else None,
                        "host": host, "port": port, "final": True})
        return out


def _content_attributes(rec, redact) -> dict:
    """gen_ai.input.messages / gen_ai.output.messages as JSON strings (opt-in)."""
    out = {}
    body = rec.request if isinstance(rec.request, dict) else None
    if body:
        messages = body.get("messages")
        if messages is None:
            messages = body.get("input", body.get("prompt"))
        if body.get("system") is not None:
            out["gen_ai.system_instructions"] = redact(orjson.dumps(body["system"], default=str).decode())
        if messages is not None:
            out["gen_ai.input.messages"] = redact(orjson.dumps(messages, default=str).decode())
    resp = rec.response
    if isinstance(resp, ir.Response):
        out["gen_ai.output.messages"] = redact(orjson.dumps(
            [{"role": "assistant", "content": resp.content, "finish_reason": resp.stop_reason}], default=str).decode())
    return out
