"""A local OTLP/HTTP receiver: POST /v1/traces, decoded with opentelemetry-proto."""

from __future__ import annotations

import time

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)

from hookway.testing import ThreadedApp


def _value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


class Span:
    def __init__(self, span, resource: dict, headers: dict):
        self.name = span.name
        self.trace_id = span.trace_id.hex()
        self.span_id = span.span_id.hex()
        self.parent_id = span.parent_span_id.hex()
        self.kind = span.kind          # 2 = SERVER, 3 = CLIENT
        self.start = span.start_time_unix_nano
        self.end = span.end_time_unix_nano
        self.status_code = span.status.code    # 2 = ERROR
        self.status_message = span.status.message
        self.attrs = {kv.key: _value(kv.value) for kv in span.attributes}
        self.resource = resource
        self.headers = headers

    def __repr__(self):
        return f"Span({self.name!r}, {self.attrs})"


class Receiver:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.raw: list[bytes] = []
        self.encodings: list[str | None] = []
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self.server = ThreadedApp(app).start()

    @property
    def url(self) -> str:
        return self.server.url + "/v1/traces"

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()     # aiohttp already undid Content-Encoding
        self.encodings.append(request.headers.get("Content-Encoding"))
        assert request.headers["Content-Type"] == "application/x-protobuf"
        self.raw.append(body)
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(body)
        headers = {k.lower(): v for k, v in request.headers.items()}
        for rs in msg.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    self.spans.append(Span(span, resource, headers))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def wait(self, count: int, timeout: float = 10.0, kind: int | None = 2) -> list[Span]:
        """Wait for ``count`` spans of ``kind`` (default SERVER: one per request)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [s for s in self.spans if kind is None or s.kind == kind]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} of {count} spans received: {self.spans}")
            time.sleep(0.02)

    def children(self, span: Span) -> list[Span]:
        return sorted((s for s in self.spans if s.parent_id == span.span_id), key=lambda s: s.start)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def otlp_receiver():
    receiver = Receiver()
    yield receiver
    receiver.stop()
