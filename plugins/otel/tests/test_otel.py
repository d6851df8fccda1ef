"""Spans with the GenAI semantic conventions, exported over OTLP/HTTP to a local receiver."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from hookway import hookimpl
from hookway.providers import Target
from hookway.testing import Reply

from echo_plugin import EchoPlugin, echo_config

HTTP = httpx.Client(timeout=10)   # one client: creating one per call costs ~100 ms (TLS setup)

SERVER, CLIENT, ERROR = 2, 3, 2


@pytest.fixture
def otel_gateway(start_gateway, otlp_receiver, tmp_path):
    def start(settings=None, plugins=None, extra_plugins=None):
        config = echo_config(server={"data_dir": str(tmp_path)})
        config["providers"] = {**config["providers"], "bad": {"type": "echo", "settings": {"fail": 503}}}
        config["plugins"]["otel"] = {"endpoint": otlp_receiver.url, "flush_interval_ms": 50,
                                     "headers": {"x-collector-key": "collector-secret"},
                                     "service_name": "gw-under-test", **(settings or {})}
        config["plugins"].update(plugins or {})
        return start_gateway(config, {"echo": EchoPlugin, **(extra_plugins or {})})
    return start


def post(gw, body, **kw):
    return HTTP.post(gw.url + "/echo", json=body, **kw)


def test_one_span_per_request_with_genai_attributes(otel_gateway, otlp_receiver):
    gw = otel_gateway()
    started = time.time()
    assert post(gw, {"model": "e1/m", "prompt": "abc", "max_tokens": 50, "temperature": 0.2}).status_code == 200
    assert post(gw, {"model": "e2/m", "prompt": "abcd", "stream": True}).status_code == 200
    assert post(gw, {"model": "bad/m", "prompt": "x"}).status_code == 503
    spans = sorted(otlp_receiver.wait(3), key=lambda s: s.start)
    plain, streamed, failed = spans
    assert plain.name == "chat e1/m"
    a = plain.attrs
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "echo" and a["hookway.provider"] == "e1"
    assert a["gen_ai.request.model"] == "e1/m" and a["gen_ai.response.model"] == "m"
    assert a["gen_ai.usage.input_tokens"] == 3 and a["gen_ai.usage.output_tokens"] == 3
    assert a["gen_ai.request.max_tokens"] == 50 and a["gen_ai.request.temperature"] == 0.2
    assert a["http.response.status_code"] == 200 and a["hookway.stream"] is False
    assert len(a["hookway.request_id"]) == 32
    assert plain.resource["service.name"] == "gw-under-test"
    assert plain.headers["x-collector-key"] == "collector-secret"
    assert started * 1e9 <= plain.start < plain.end <= time.time() * 1e9
    assert plain.end - plain.start == pytest.approx(a["hookway.latency_ms"] * 1e6, abs=1000)

    (upstream,) = otlp_receiver.children(plain)
    assert upstream.kind == CLIENT and upstream.trace_id == plain.trace_id
    assert upstream.attrs["gen_ai.request.model"] == "m" and upstream.attrs["gen_ai.usage.output_tokens"] == 3
    assert plain.start <= upstream.start <= upstream.end <= plain.end

    assert streamed.attrs["hookway.stream"] is True and streamed.attrs["gen_ai.usage.output_tokens"] == 4
    assert streamed.attrs["hookway.ttft_ms"] > 0

    assert failed.status_code == ERROR and failed.attrs["error.type"] == "api_error"
    assert failed.attrs["http.response.status_code"] == 503 and "bad failed" in failed.status_message
    (attempt,) = otlp_receiver.children(failed)
    assert attempt.status_code == ERROR and attempt.attrs["http.response.status_code"] == 503


class Fallback:
    @hookimpl
    def hookway_fallback(self, ctx, error, attempt):
        return Target("e2", "backup") if attempt == 0 else None


def test_fallback_attempts_are_child_spans(otel_gateway, otlp_receiver):
    gw = otel_gateway(plugins={"fb": {}}, extra_plugins={"fb": Fallback})
    assert post(gw, {"model": "bad/m", "prompt": "hey"}).status_code == 200
    (root,) = otlp_receiver.wait(1)
    assert root.attrs["hookway.fallback_index"] == 1 and root.status_code != ERROR
    assert root.attrs["hookway.provider"] == "e2" and root.attrs["gen_ai.response.model"] == "backup"
    first, second = otlp_receiver.children(root)
    assert (first.attrs["hookway.provider"], first.attrs["gen_ai.request.model"]) == ("bad", "m")
    assert first.status_code == ERROR and first.attrs["error.type"] == "api_error"
    assert first.attrs["hookway.attempt"] == 0 and second.attrs["hookway.attempt"] == 1
    assert (second.attrs["hookway.provider"], second.attrs["gen_ai.request.model"]) == ("e2", "backup")
    assert second.status_code != ERROR and first.end <= second.end


def test_a_client_traceparent_makes_the_request_part_of_its_trace(otel_gateway, otlp_receiver):
    gw = otel_gateway({"compression": "gzip"})
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    post(gw, {"model": "e1/m", "prompt": "x"}, headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    post(gw, {"model": "e1/m", "prompt": "y"})
    joined, alone = sorted(otlp_receiver.wait(2), key=lambda s: s.start)
    assert joined.trace_id == trace_id and joined.parent_id == parent
    assert otlp_receiver.encodings[0] == "gzip"
    assert alone.trace_id != trace_id and alone.parent_id == ""


def test_content_is_captured_only_when_asked(otel_gateway, otlp_receiver):
    gw = otel_gateway({"capture_content": True})
    post(gw, {"model": "e1/m", "prompt": "what is up"})
    (span,) = otlp_receiver.wait(1)
    assert span.attrs["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert span.attrs["gen_ai.response.id"] == "r1"
    assert "what is up" in span.attrs["gen_ai.input.messages"]
    assert "pu si tahw" in span.attrs["gen_ai.output.messages"]


def test_no_content_by_default(otel_gateway, otlp_receiver):
    gw = otel_gateway()
    post(gw, {"model": "e1/m", "prompt": "private words"})
    otlp_receiver.wait(1)
    assert all(b"private words" not in raw for raw in otlp_receiver.raw)


def test_spans_through_the_openai_plugin(start_gateway, fake_upstream, otlp_receiver, tmp_path):
    gw = start_gateway({
        "server": {"data_dir": str(tmp_path)},
        "plugins": {"openai": {}, "otel": {"endpoint": otlp_receiver.url, "flush_interval_ms": 50}},
        "providers": {"up": {"type": "openai", "keys": [{"value": "sk-provider-1234567"}],
                             "network_config": {"base_url": fake_upstream.url}}},
    })
    fake_upstream.enqueue(Reply(text="hi", usage=(9, 4, 2)))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client", max_retries=0)
    client.chat.completions.create(model="up/llama", messages=[{"role": "user", "content": "x"}])
    (span,) = otlp_receiver.wait(1)
    assert span.name == "chat up/llama"
    assert span.attrs["gen_ai.provider.name"] == "openai" and span.attrs["hookway.passthrough"] is True
    # hookway's usage counts uncached input apart (Anthropic style); GenAI's input_tokens include it
    assert (span.attrs["gen_ai.usage.input_tokens"], span.attrs["gen_ai.usage.output_tokens"]) == (9, 4)
    assert span.attrs["gen_ai.usage.cache_read.input_tokens"] == 2
    (upstream,) = otlp_receiver.children(span)
    port = int(fake_upstream.url.split(":")[2].split("/")[0])
    assert upstream.attrs["server.address"] == "127.0.0.1" and upstream.attrs["server.port"] == port


def test_spans_queued_at_shutdown_are_exported(otel_gateway, otlp_receiver):
    gw = otel_gateway({"flush_interval_ms": 60_000})     # nothing exported until shutdown
    for i in range(5):
        post(gw, {"model": "e1/m", "prompt": str(i)})
    gw.stop()
    assert len(otlp_receiver.wait(5, timeout=5)) == 5
