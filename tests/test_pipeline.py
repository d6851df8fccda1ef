"""The request journey through the core, with the tiny echo dialect/adapter from conftest."""

from __future__ import annotations

import threading
import time

import httpx
import orjson
import pytest

from hookway import hookimpl, ir
from hookway.errors import GatewayError
from hookway.pipeline import Identity
from hookway.providers import Target

from echo_plugin import EchoAdapter, echo_config


def post(gw, body, **kw):
    return httpx.post(gw.url + "/echo", content=orjson.dumps(body) if not isinstance(body, bytes) else body,
                      timeout=10, **kw)


def test_non_stream_answer_goes_to_the_named_provider(echo_gateway):
    gw = echo_gateway()
    r = post(gw, {"model": "e1/some-model", "prompt": "abc"})
    assert r.status_code == 200
    assert r.json() == {"model": "e1/some-model", "text": "cba", "usage": [3, 3]}
    assert EchoAdapter.calls == [("e1", "some-model", "abc")]


def test_unprefixed_model_goes_to_the_one_provider_that_serves_it(echo_gateway):
    gw = echo_gateway()
    assert post(gw, {"model": "only-e2", "prompt": "x"}).status_code == 200
    assert EchoAdapter.calls[-1][:2] == ("e2", "only-e2")


def test_unknown_model_is_a_404_listing_the_names(echo_gateway):
    gw = echo_gateway()
    r = post(gw, {"model": "mystery", "prompt": "x"})
    assert r.status_code == 404
    message = r.json()["error"]["message"]
    assert "mystery" in message and "e1" in message and "e2/only-e2" in message


@pytest.mark.parametrize("body,status,needle", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    ({"prompt": "x"}, 400, "`model`"),
    ({"model": "e1/m", "prompt": 5}, 400, "`prompt`"),
])
def test_bad_input_gets_a_clear_error_in_the_dialect(echo_gateway, body, status, needle):
    gw = echo_gateway()
    r = post(gw, body)
    assert r.status_code == status
    assert needle in r.json()["error"]["message"]


def test_body_over_the_limit_is_a_413(echo_gateway):
    gw = echo_gateway(echo_config(server={"max_body_bytes": 2048}))
    r = post(gw, {"model": "e1/m", "prompt": "x" * 5000})
    assert r.status_code == 413
    assert r.json()["error"]["kind"] == "request_too_large"


def test_stream_is_rendered_event_by_event(echo_gateway):
    gw = echo_gateway()
    r = post(gw, {"model": "e1/m", "prompt": "hey", "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text == 'data: {"delta":"y"}\n\ndata: {"delta":"e"}\n\ndata: {"delta":"h"}\n\ndata: [DONE]\n\n'


def test_failure_after_first_byte_is_an_in_stream_error(echo_gateway):
    gw = echo_gateway(echo_config(providers={"e1": {"type": "echo", "settings": {"break_mid_stream": True}}}))
    r = post(gw, {"model": "e1/m", "prompt": "ab", "stream": True})
    assert r.status_code == 200
    assert r.text.endswith('event: error\ndata: {"error":"upstream broke"}\n\n')
    assert "[DONE]" not in r.text


def test_long_silence_gets_keepalive_pings(echo_gateway):
    gw = echo_gateway(echo_config(server={"ping_interval_seconds": 0.1},
                                  providers={"e1": {"type": "echo", "settings": {"delay": 0.35}}}))
    r = post(gw, {"model": "e1/m", "prompt": "ab", "stream": True})
    assert r.text.count(": ping") >= 2
    assert r.text.endswith("data: [DONE]\n\n")


def test_stream_headers_do_not_wait_for_the_first_token(echo_gateway):
    # The echo dialect renders nothing for the stream's start, and the first token comes after
    # 2 s: the 200 and its headers must reach the client at once all the same (the core sends a
    # stream's headers with its first write, which must happen even when it is empty).
    gw = echo_gateway(echo_config(providers={"e1": {"type": "echo", "settings": {"delay": 2.0}}}))
    started = time.monotonic()
    with httpx.stream("POST", gw.url + "/echo", content=orjson.dumps({"model": "e1/m", "prompt": "a",
                                                                       "stream": True}), timeout=10) as r:
        headers_after = time.monotonic() - started
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        body = r.read()
    assert headers_after < 1.0, f"headers came after {headers_after:.2f}s"
    assert body == b'data: {"delta":"a"}\n\ndata: [DONE]\n\n'


def test_upstream_error_before_first_byte_keeps_its_status(echo_gateway):
    gw = echo_gateway(echo_config(providers={"e1": {"type": "echo", "settings": {"fail": 503}}}))
    r = post(gw, {"model": "e1/m", "prompt": "ab", "stream": True})
    assert r.status_code == 503
    assert r.json()["error"]["message"] == "e1 failed"


class Recorder:
    """Auth, route, cache, transform, fallback and log hooks that record what they saw."""

    def __init__(self):
        self.records = []

    @hookimpl
    async def hookway_auth(self, ctx):
        key = ctx.headers.get("x-key")
        if key == "bad":
            raise GatewayError("authentication", "unknown key")
        return Identity(key_id=key) if key else None

    @hookimpl
    async def hookway_route(self, ctx):
        if ctx.model == "alias":
            ctx.rule = "alias-rule"
            return [Target("e1", "aliased"), Target("e2", "backup")]
        return None

    @hookimpl
    def hookway_cache_lookup(self, ctx):
        if ctx.body.get("prompt") == "cached":
            return ir.Response("c1", "x", [{"type": "text", "text": "from cache"}], "end_turn", usage=ir.Usage(1, 2))
        return None

    @hookimpl
    def hookway_transform_request(self, ctx, target):
        if ctx.body.get("prompt") == "shout":
            ctx.ir.messages[-1]["content"][0]["text"] = "SHOUT"

    @hookimpl
    async def hookway_fallback(self, ctx, error, attempt):
        if attempt + 1 < len(ctx.targets) and error.retryable:
            return ctx.targets[attempt + 1]
        return None

    @hookimpl
    def hookway_log(self, records):
        self.records.extend(records)


def test_hooks_run_in_order_and_short_circuit(echo_gateway):
    recorder = Recorder()
    gw = echo_gateway(echo_config(plugins={"recorder": {}}), {"recorder": lambda: recorder})
    assert post(gw, {"model": "e1/m", "prompt": "p"}, headers={"x-key": "bad"}).status_code == 401
    r = post(gw, {"model": "alias", "prompt": "shout"}, headers={"x-key": "k1"})
    assert r.json()["text"] == "TUOHS"
    request_id = r.headers["x-request-id"]
    assert EchoAdapter.calls[-1] == ("e1", "aliased", "SHOUT")
    n_calls = len(EchoAdapter.calls)
    r = post(gw, {"model": "e1/m", "prompt": "cached", "stream": True})
    assert r.text == 'data: {"delta":"from cache"}\n\ndata: [DONE]\n\n'
    assert len(EchoAdapter.calls) == n_calls      # the cache hit never reached the provider
    deadline = time.monotonic() + 30   # records are delivered in background batches
    while len(recorder.records) < 3:
        assert time.monotonic() < deadline, recorder.records
        time.sleep(0.02)
    first, second, third = recorder.records[:3]
    assert (first.status, first.error) == (401, "authentication: unknown key")
    assert (second.status, second.key_id, second.rule, second.provider, second.upstream_model) == \
        (200, "k1", "alias-rule", "e1", "aliased")
    assert second.id == request_id and first.id != request_id
    assert (second.input_tokens, second.output_tokens) == (5, 5)
    assert third.cache_hit and third.stream and third.output_tokens == 2


def test_fallback_hook_moves_to_the_next_target(echo_gateway):
    recorder = Recorder()
    config = echo_config(plugins={"recorder": {}},
                         providers={"e1": {"type": "echo", "settings": {"fail": 429}}})
    gw = echo_gateway(config, {"recorder": lambda: recorder})
    r = post(gw, {"model": "alias", "prompt": "ab"})
    assert r.status_code == 200 and r.json()["text"] == "ba"
    assert EchoAdapter.calls[-1] == ("e2", "backup", "ab")


def test_when_every_target_fails_the_first_error_is_sent(echo_gateway):
    recorder = Recorder()
    config = echo_config(plugins={"recorder": {}},
                         providers={"e1": {"type": "echo", "settings": {"fail": 429}},
                                    "e2": {"type": "echo", "settings": {"fail": 503}}})
    gw = echo_gateway(config, {"recorder": lambda: recorder})
    r = post(gw, {"model": "alias", "prompt": "ab"})
    assert r.status_code == 429


class Timing:
    seen = []
    finished = threading.Event()

    @hookimpl
    def hookway_middleware(self):
        async def around(ctx, call_next):
            Timing.seen.append(("before", ctx.model))
            response = await call_next(ctx)
            Timing.seen.append(("after", ctx.status))
            Timing.finished.set()
            return response
        return around

    @hookimpl
    def hookway_transform_stream(self, ctx):
        def upper(ev):
            if type(ev) is ir.BlockDelta:
                return ir.BlockDelta(ev.index, ev.kind, ev.value.upper())
            return ev
        return upper


def test_middleware_wraps_the_request_and_stream_transforms_apply_per_event(echo_gateway):
    Timing.seen = []
    Timing.finished.clear()
    gw = echo_gateway(echo_config(plugins={"timing": {}}), {"timing": Timing})
    r = post(gw, {"model": "e1/m", "prompt": "ab", "stream": True})
    assert r.text == 'data: {"delta":"B"}\n\ndata: {"delta":"A"}\n\ndata: [DONE]\n\n'
    # A stream is written inside call_next: the client can have the whole body before the
    # middleware's code after call_next has run.
    assert Timing.finished.wait(30)
    assert Timing.seen == [("before", "e1/m"), ("after", 200)]


def test_health_answers(echo_gateway):
    gw = echo_gateway()
    r = httpx.get(gw.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["providers"] == ["e1", "e2"]


def test_a_replaced_provider_finishes_its_streams_before_closing(echo_gateway):
    from hookway.config import provider_from_dict
    gw = echo_gateway(echo_config(providers={"e1": {"type": "echo", "settings": {"delay": 0.3}}}))
    with httpx.Client(timeout=20) as client:
        with client.stream("POST", gw.url + "/echo",
                           content=orjson.dumps({"model": "e1/m", "prompt": "abcdefgh", "stream": True})) as r:
            chunks = r.iter_text()
            first = next(chunks)
            old = gw.gateway.adapters["e1"]
            gw.call(gw.gateway.set_provider(provider_from_dict("e1", {"type": "echo"})))
            assert gw.gateway.adapters["e1"] is not old and old.in_flight == 1
            text = first + "".join(chunks)
    assert text.endswith("data: [DONE]\n\n") and text.count("delta") == 8
    deadline = time.monotonic() + 30   # the retired adapter is checked once a second
    while old in gw.gateway.retired_adapters and time.monotonic() < deadline:
        time.sleep(0.05)
    assert old not in gw.gateway.retired_adapters and old.session.closed


class StalledContentSink:
    """Stores request content and stalls until released, so records pile up in the log queue."""

    release = None   # a threading.Event, set by the test
    records: list = []

    @hookimpl
    def hookway_configure(self, settings, gateway):
        gateway.log_content = True

    @hookimpl
    async def hookway_log(self, records):
        import asyncio
        while not StalledContentSink.release.is_set():
            await asyncio.sleep(0.01)
        StalledContentSink.records.extend(records)


def test_log_queue_is_bounded_by_content_bytes_as_well_as_count(echo_gateway):
    import threading
    StalledContentSink.release, StalledContentSink.records = threading.Event(), []
    gw = echo_gateway(echo_config(server={"log_queue_bytes": 128 * 1024}, plugins={"stalled": {}}),
                      {"stalled": StalledContentSink})
    try:
        # The first record goes to the stalled sink; the next ones wait in the queue.
        assert post(gw, {"model": "e1/m", "prompt": "first"}).status_code == 200
        deadline = time.monotonic() + 30
        while gw.gateway.log_queue.items and time.monotonic() < deadline:
            time.sleep(0.01)
        big = "x" * (20 * 1024)
        for i in range(5):   # each ~40 KiB (the prompt, and its echo) against 128 KiB: 3 fit
            assert post(gw, {"model": "e1/m", "prompt": f"{i}{big}"}).status_code == 200
        queue = gw.gateway.log_queue
        assert (len(queue.items), queue.dropped) == (3, 2)
        assert 120 * 1024 < queue.bytes <= 128 * 1024
        for i in range(3):   # small records still fit beside them
            assert post(gw, {"model": "e1/m", "prompt": f"small {i}"}).status_code == 200
        assert (len(queue.items), queue.dropped) == (6, 2)
    finally:
        StalledContentSink.release.set()
    gw.stop()
    prompts = [r.request["prompt"][:7] for r in StalledContentSink.records]
    assert prompts == ["first", "0" + "x" * 6, "1" + "x" * 6, "2" + "x" * 6, "small 0", "small 1", "small 2"]
    assert queue.bytes == 0


def test_a_forked_worker_draws_its_own_request_id_prefix():
    """`hookway serve --workers N` forks after the pipeline is imported; ids must not collide."""
    import multiprocessing

    from hookway import pipeline
    mine = pipeline.new_request_id()
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=lambda: send.send(pipeline.new_request_id()))
    child.start()
    theirs = receive.recv()
    child.join()
    assert theirs[:16] != mine[:16]
