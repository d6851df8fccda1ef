"""hookway-prometheus: ``GET /metrics`` in the Prometheus text format.

Metrics are fed by the ``hookway_log`` sink (batches of finished request records, off the hot
path) into a :class:`prometheus_client.CollectorRegistry` owned by this plugin instance, so two
gateways in one process (tests) never share counters. Log-queue health (dropped records, queue
length) is read from the gateway at scrape time.

Label values never carry secrets: the key label is the caller's key *name* (or id) as set by the
auth plugin, never the key itself.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from hookway import hookimpl
from hookway.admin import admin_only

__all__ = ["PrometheusPlugin", "Metrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string", "pattern": "^/", "description": "where to serve the metrics (default /metrics)"},
        "require_admin": {"type": "boolean",
                          "description": "guard with server.admin_token / loopback like other management "
                                         "endpoints (default true; Prometheus can send the token as a bearer)"},
        "key_labels": {"type": "boolean", "description": "label by key and team (default true)"},
        "latency_buckets": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1},
    },
}



def _kind(error: str | None) -> str:
    """The error kind of a record's ``"kind: message"`` error string (a small, fixed set)."""
    if not error:
        return ""
    kind, sep, _ = error.partition(":")
    return kind if sep and kind.isidentifier() else "error"


class _QueueCollector:
    """Log-queue health, read from the gateway at scrape time."""

    def __init__(self, gateway) -> None:
        self.gateway = gateway

    def collect(self):
        queue = self.gateway.log_queue
        dropped = queue.dropped if queue is not None else 0
        yield CounterMetricFamily("hookway_log_records_dropped",
                                  "Request records dropped because the log queue was full, or a sink's store "
                                  "refused them for longer than it could keep them", value=dropped)
        yield CounterMetricFamily("hookway_log_records_delivered",
                                  "Request records delivered to the log sinks",
                                  value=queue.delivered if queue is not None else 0)
        yield GaugeMetricFamily("hookway_log_queue_length", "Request records waiting for the log sinks",
                                value=len(queue.items) if queue is not None else 0)


class Metrics:
    """Every metric of one gateway, in its own registry."""

    def __init__(self, gateway=None, key_labels: bool = True, latency_buckets=LATENCY_BUCKETS) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.key_labels = key_labels
        r = self.registry
        who = ["key", "team"] if key_labels else []
        base = ["provider", "model"]
        self.requests = Counter("hookway_requests", "Requests answered by the gateway",
                                base + ["status"] + who, registry=r)
        self.errors = Counter("hookway_request_errors", "Requests that ended in an error (status >= 400 or "
                              "an in-stream error)", base + ["status", "kind"] + who, registry=r)
        self.duration = Histogram("hookway_request_duration_seconds", "Whole request time, as the client saw it",
                                  base, buckets=latency_buckets, registry=r)
        self.upstream = Histogram("hookway_upstream_latency_seconds", "Time spent waiting on the provider",
                                  base, buckets=latency_buckets, registry=r)
        self.overhead = Histogram("hookway_gateway_overhead_seconds",
                                  "Request time not spent upstream (parsing, hooks, rendering)",
                                  ["provider"], buckets=OVERHEAD_BUCKETS, registry=r)
        self.ttft = Histogram("hookway_time_to_first_token_seconds", "Time until the first byte of the answer",
                              base + ["stream"], buckets=latency_buckets, registry=r)
        self.input_tokens = Counter("hookway_input_tokens", "Input (prompt) tokens", base + who, registry=r)
        self.output_tokens = Counter("hookway_output_tokens", "Output (completion) tokens", base + who, registry=r)
        self.cached_tokens = Counter("hookway_cached_input_tokens", "Input tokens read from the provider's "
                                     "prompt cache", base + who, registry=r)
        self.cost = Counter("hookway_cost_usd", "Cost in US dollars, as priced by the governance plugin",
                            base + who, registry=r)
        self.cache_hits = Counter("hookway_cache_hits", "Requests answered from the gateway's cache", base,
                                  registry=r)
        self.cache_lookups = Counter("hookway_cache_lookups", "Cache lookups by result (hit, miss, skip)",
                                     base + ["result"], registry=r)
        self.fallbacks = Counter("hookway_fallbacks", "Requests answered after one or more fallbacks "
                                 "(labels: the target that answered)", base, registry=r)
        self.fallback_attempts = Counter("hookway_fallback_attempts", "Failed attempts before the answering "
                                         "target", base, registry=r)
        if gateway is not None:
            r.register(_QueueCollector(gateway))

    def observe(self, records) -> None:
        key_labels = self.key_labels
        for rec in records:
            provider = rec.provider or ""
            # Only resolved names become labels: a client's made-up model name must not create series.
            model = (rec.upstream_model if rec.provider else "") or ""
            base = (provider, model)
            who = (rec.key_name or rec.key_id or "", rec.team_id or "") if key_labels else ()
            status = str(rec.status)
            self.requests.labels(*base, status, *who).inc()
            if rec.status >= 400 or rec.error:
                self.errors.labels(*base, status, _kind(rec.error), *who).inc()
            latency = rec.latency_ms / 1000
            self.duration.labels(*base).observe(latency)
            if rec.upstream_ms is not None:
                upstream = rec.upstream_ms / 1000
                self.upstream.labels(*base).observe(upstream)
                self.overhead.labels(provider).observe(max(0.0, latency - upstream))
            if rec.ttft_ms is not None:
                self.ttft.labels(*base, "true" if rec.stream else "false").observe(rec.ttft_ms / 1000)
            if rec.input_tokens:
                self.input_tokens.labels(*base, *who).inc(rec.input_tokens)
            if rec.output_tokens:
                self.output_tokens.labels(*base, *who).inc(rec.output_tokens)
            if rec.cached_tokens:
                self.cached_tokens.labels(*base, *who).inc(rec.cached_tokens)
            cost = rec.cost
            if cost:
                self.cost.labels(*base, *who).inc(cost)
            if rec.cache_hit:
                self.cache_hits.labels(*base).inc()
            if rec.cache_status:
                self.cache_lookups.labels(*base, rec.cache_status).inc()
            if rec.fallback_index:
                self.fallbacks.labels(*base).inc()
            if rec.attempts:
                self.fallback_attempts.labels(*base).inc(len(rec.attempts))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class PrometheusPlugin:
    def __init__(self) -> None:
        self.metrics: Metrics | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    @hookimpl
    def hookway_config_schema(self):
        return SCHEMA

    @hookimpl
    def hookway_configure(self, settings, gateway):
        self.gateway = gateway
        self.path = settings.get("path", "/metrics")
        self.require_admin = settings.get("require_admin", True)
        buckets = tuple(sorted(settings.get("latency_buckets") or LATENCY_BUCKETS))
        self.metrics = Metrics(gateway, key_labels=settings.get("key_labels", True), latency_buckets=buckets)
        # One thread updates the counters, so a big batch never holds the event loop.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="prometheus")

    @hookimpl
    async def hookway_log(self, records):
        if self._closed:      # records the core delivers while shutting down
            self.metrics.observe(records)
            return
        await asyncio.get_running_loop().run_in_executor(self._executor, self.metrics.observe, records)

    @hookimpl
    def hookway_register_routes(self, router, gateway):
        async def metrics(request: web.Request) -> web.Response:
            if self._closed:
                body = self.metrics.exposition()
            else:
                body = await asyncio.get_running_loop().run_in_executor(self._executor, self.metrics.exposition)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
        metrics.__name__ = "prometheus_metrics"
        router.add_get(self.path, admin_only(metrics) if self.require_admin else metrics)

    @hookimpl
    def hookway_cleanup_ctx(self, gateway):
        async def lifecycle(app):
            yield
            self._closed = True
            self._executor.shutdown(wait=True)
        return lifecycle
