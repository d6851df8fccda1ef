"""Fallbacks, retries and key rotation end to end: the official openai SDK -> hookway -> fake
upstreams that fail in scripted ways."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import openai
import orjson
import pytest

from hookway.testing import RecordingSink, Reply, provider_block
from hookway_fallbacks import backoff_delay, retry_after_seconds


MSG = [{"role": "user", "content": "hi"}]
FAST = {"retry_backoff_initial": 10, "retry_backoff_max": 40}


def client(gw, timeout=20.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=timeout)


def labelled(fake, label):
    fake.responder = lambda rec: Reply(text=f"from-{label}")
    return fake


def config(providers: dict, rules=None, fallbacks: dict | None = None, **extra) -> dict:
    plugins = {"openai": {}, "routing": {"rules": rules or []}}
    if fallbacks is not None:
        plugins["fallbacks"] = fallbacks
    return {"plugins": plugins, "providers": providers, **extra}


def chain_config(a, b, c=None, **network):
    providers = {"primary": provider_block(a, **network), "backup": provider_block(b, **network)}
    targets = ["backup/m2"]
    if c is not None:
        providers["third"] = provider_block(c, **network)
        targets.append("third/m3")
    rules = [{"name": "chain", "match": {"model": "m"}, "targets": ["primary/m1"], "fallbacks": targets}]
    return config(providers, rules, {})


@pytest.mark.parametrize("failure", [
    Reply(status=429, error="slow down", headers={"retry-after": "1"}),
    Reply(status=500), Reply(status=502), Reply(status=503), Reply(status=529, error="overloaded"),
])
def test_transient_failure_falls_back_to_the_rule_fallback(upstreams, gateway_factory, failure):
    a, b = upstreams(), labelled(upstreams(), "b")
    a.enqueue(failure)
    gw = gateway_factory(chain_config(a, b))
    r = client(gw).chat.completions.create(model="m", messages=MSG)
    assert r.choices[0].message.content == "from-b"
    assert len(a.requests) == 1 and b.last.json["model"] == "m2"
    record = RecordingSink.wait(1)[0]
    assert record.rule == "chain" and record.fallback_index == 1
    assert (record.provider, record.upstream_model, record.status) == ("backup", "m2", 200)
    assert record.attempts[0]["status"] == failure.status


@pytest.mark.parametrize("status", [400, 404, 422])
def test_client_mistakes_are_not_retried_nor_sent_elsewhere(upstreams, gateway_factory, status):
    a, b = upstreams(), labelled(upstreams(), "b")
    a.enqueue(Reply(status=status, error="your request is wrong"))
    gw = gateway_factory(chain_config(a, b, max_retries=3, **FAST))
    with pytest.raises(openai.APIStatusError) as info:
        client(gw).chat.completions.create(model="m", messages=MSG)
    assert info.value.status_code == status
    assert "your request is wrong" in str(info.value)
    assert len(a.requests) == 1 and b.requests == []


def test_every_target_failing_sends_the_first_targets_error(upstreams, gateway_factory):
    a, b, c = upstreams(), upstreams(), upstreams()
    a.enqueue(Reply(status=429, error="primary is rate limited", headers={"retry-after": "7"}))
    b.enqueue(Reply(status=500, error="backup broke"))
    c.enqueue(Reply(status=503, error="third unavailable"))
    gw = gateway_factory(chain_config(a, b, c))
    with pytest.raises(openai.RateLimitError) as info:
        client(gw).chat.completions.create(model="m", messages=MSG)
    assert "primary is rate limited" in str(info.value)
    assert info.value.response.headers.get("retry-after") == "7"
    assert [len(x.requests) for x in (a, b, c)] == [1, 1, 1]
    record = RecordingSink.wait(1)[0]
    assert record.status == 429 and [x["status"] for x in record.attempts] == [429, 500, 503]


def test_request_body_fallbacks_bifrost_convention(upstreams, gateway_factory):
    a, b = upstreams(), labelled(upstreams(), "b")
    a.enqueue(Reply(status=503))
    gw = gateway_factory(config({"primary": provider_block(a), "backup": provider_block(b)}, fallbacks={}))
    r = client(gw).chat.completions.create(model="primary/m1", messages=MSG,
                                           extra_body={"fallbacks": ["nowhere/x", "backup/m2"]})
    assert r.choices[0].message.content == "from-b"
    assert b.last.json["model"] == "m2" and "fallbacks" not in b.last.json
    assert "fallbacks" not in a.last.json


def test_rule_fallbacks_come_before_request_fallbacks(upstreams, gateway_factory):
    a, b, c = upstreams(), upstreams(), labelled(upstreams(), "c")
    a.enqueue(Reply(status=500))
    b.enqueue(Reply(status=500))
    providers = {"primary": provider_block(a), "backup": provider_block(b), "third": provider_block(c)}
    rules = [{"name": "r", "match": {"model": "m"}, "targets": ["primary/m1"], "fallbacks": ["backup/m2"]}]
    gw = gateway_factory(config(providers, rules, {}))
    r = client(gw).chat.completions.create(model="m", messages=MSG, extra_body={"fallbacks": ["third/m3"]})
    assert r.choices[0].message.content == "from-c"
    assert [len(x.requests) for x in (a, b, c)] == [1, 1, 1]


def test_connection_refused_falls_back(upstreams, gateway_factory, refused_port):
    b = labelled(upstreams(), "b")
    providers = {"primary": {"type": "openai", "keys": [{"value": "k"}],
                             "network_config": {"base_url": f"http://127.0.0.1:{refused_port}/v1"}},
                 "backup": provider_block(b)}
    rules = [{"name": "r", "match": {"model": "m"}, "targets": ["primary/m1"], "fallbacks": ["backup/m2"]}]
    gw = gateway_factory(config(providers, rules, {}))
    assert client(gw).chat.completions.create(model="m", messages=MSG).choices[0].message.content == "from-b"
    assert RecordingSink.wait(1)[0].attempts[0]["status"] == 502


def primary_times_out(cfg: dict, seconds: float) -> dict:
    """A read timeout on the primary only: the backup keeps the default, so that it answers
    however slowly a loaded machine runs it (the timeout also applies between stream reads)."""
    cfg["providers"]["primary"]["network_config"]["default_request_timeout_in_seconds"] = seconds
    return cfg


# Slow: the answer would still come within the client's timeout; hangs: it would not.
@pytest.mark.parametrize("delay", [5.0, 30.0], ids=["slow-first-byte", "hangs"])
def test_slow_or_hanging_upstream_times_out_and_falls_back(upstreams, gateway_factory, delay):
    a, b = upstreams(), labelled(upstreams(), "b")
    a.enqueue(Reply(text="late", first_byte_delay=delay))
    gw = gateway_factory(primary_times_out(chain_config(a, b), 0.3))
    stream = client(gw).chat.completions.create(model="m", messages=MSG, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "from-b"
    attempt = RecordingSink.wait(1)[0].attempts[0]
    assert attempt["status"] == 504
    # Given up at the 0.3 s timeout, as the gateway measured it (the client's stopwatch would also
    # count the backup's answer and the SDK).
    assert attempt["end_ms"] - attempt["start_ms"] < 3000


def test_retries_the_same_provider_then_falls_back(upstreams, gateway_factory):
    a, b = upstreams(), labelled(upstreams(), "b")
    a.enqueue(Reply(status=500), Reply(status=502), Reply(status=503))
    gw = gateway_factory(chain_config(a, b, max_retries=2, **FAST))
    assert client(gw).chat.completions.create(model="m", messages=MSG).choices[0].message.content == "from-b"
    assert len(a.requests) == 3          # one try and max_retries=2 retries, not more
    assert len(b.requests) == 1


def test_a_retry_that_succeeds_stays_on_the_provider(upstreams, gateway_factory):
    a, b = labelled(upstreams(), "a"), upstreams()
    a.enqueue(Reply(status=500))
    gw = gateway_factory(chain_config(a, b, max_retries=2, **FAST))
    assert client(gw).chat.completions.create(model="m", messages=MSG).choices[0].message.content == "from-a"
    assert len(a.requests) == 2 and b.requests == []
    record = RecordingSink.wait(1)[0]
    # A retry is not a fallback: the answer came from the first target, after one failed attempt.
    assert record.fallback_index == 0 and record.provider == "primary"
    assert [(a["provider"], a["status"]) for a in record.attempts] == [("primary", 500)]


def test_retry_after_is_honoured(upstreams, gateway_factory, record_waits):
    a = labelled(upstreams(), "a")
    a.enqueue(Reply(status=429, headers={"retry-after": "1"}))
    gw = gateway_factory(config({"primary": provider_block(a, max_retries=1, retry_backoff_initial=10,
                                                     retry_backoff_max=3000)}, fallbacks={}))
    waits = record_waits(gw)
    r = client(gw).chat.completions.create(model="primary/m", messages=MSG)
    assert r.choices[0].message.content == "from-a"
    assert waits == [1.0]          # the upstream's retry-after, not the backoff of 5 to 10 ms


def test_retry_after_is_capped_by_retry_backoff_max(upstreams, gateway_factory, record_waits):
    a = labelled(upstreams(), "a")
    a.enqueue(Reply(status=503, headers={"retry-after": "30"}))
    gw = gateway_factory(config({"primary": provider_block(a, max_retries=1, retry_backoff_initial=10,
                                                     retry_backoff_max=200)}, fallbacks={}))
    waits = record_waits(gw)
    assert client(gw).chat.completions.create(model="primary/m", messages=MSG).choices[0].message.content == "from-a"
    assert waits == [0.2]          # retry-after 30 s, capped


@pytest.mark.parametrize("status", [429, 401, 403])
def test_rate_limit_or_auth_failure_rotates_to_another_key_first(upstreams, gateway_factory, status):
    a, b = labelled(upstreams(), "a"), labelled(upstreams(), "b")
    a.enqueue(Reply(status=status, error="this key is refused"))
    providers = {"primary": provider_block(a, "key-one", "key-two"), "backup": provider_block(b)}
    rules = [{"name": "r", "match": {"model": "m"}, "targets": ["primary/m1"], "fallbacks": ["backup/m2"]}]
    gw = gateway_factory(config(providers, rules, {}))
    assert client(gw).chat.completions.create(model="m", messages=MSG).choices[0].message.content == "from-a"
    used = [rec.headers["authorization"] for rec in a.requests]
    assert len(used) == 2 and used[0] != used[1], used
    assert b.requests == []


def test_when_every_key_is_refused_the_next_provider_answers(upstreams, gateway_factory):
    a, b = upstreams(), labelled(upstreams(), "b")
    a.responder = lambda rec: Reply(status=401, error="bad key")
    providers = {"primary": provider_block(a, "key-one", "key-two", "key-three"), "backup": provider_block(b)}
    rules = [{"name": "r", "match": {"model": "m"}, "targets": ["primary/m1"], "fallbacks": ["backup/m2"]}]
    gw = gateway_factory(config(providers, rules, {}))
    assert client(gw).chat.completions.create(model="m", messages=MSG).choices[0].message.content == "from-b"
    assert sorted(rec.headers["authorization"] for rec in a.requests) == \
        ["Bearer key-one", "Bearer key-three", "Bearer key-two"]


def test_without_the_plugin_the_first_error_is_sent(upstreams, gateway_factory):
    a, b = upstreams(), labelled(upstreams(), "b")
    a.enqueue(Reply(status=500, error="primary broke"))
    cfg = chain_config(a, b)
    del cfg["plugins"]["fallbacks"]
    gw = gateway_factory(cfg)
    with pytest.raises(openai.InternalServerError, match="primary broke"):
        client(gw).chat.completions.create(model="m", messages=MSG)
    assert b.requests == []


def test_connection_reset_mid_stream_is_an_in_stream_error_and_no_fallback(upstreams, gateway_factory):
    a, b = upstreams(), labelled(upstreams(), "b")
    a.enqueue(Reply(text="abcdefghij", chunk_size=1, drop_after=4))
    gw = gateway_factory(chain_config(a, b))
    stream = client(gw).chat.completions.create(model="m", messages=MSG, stream=True)
    got = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            if chunk.choices:
                got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "abc"
    assert b.requests == []      # bytes had reached the client: no fallback


def wait_cancelled(fake, timeout: float = 30.0) -> None:
    """Until ``fake``'s stream was cancelled and has ended. A stream that ran to its end is not
    counted as cancelled, so a long deadline cannot let a missing cancellation pass."""
    deadline = time.monotonic() + timeout
    while not (fake.cancelled_streams == 1 and fake.open_streams == 0):
        assert time.monotonic() < deadline, "the upstream stream was not cancelled"
        time.sleep(0.01)


def test_client_disconnect_cancels_the_upstream_call(upstreams, gateway_factory):
    a, b = upstreams(), upstreams()
    a.enqueue(Reply(text="x" * 400, chunk_size=1, chunk_delay=0.02, eof_delay=60))
    gw = gateway_factory(chain_config(a, b))
    with httpx.stream("POST", gw.url + "/v1/chat/completions",
                      json={"model": "m", "messages": MSG, "stream": True}, timeout=10) as r:
        assert r.status_code == 200
        next(r.iter_raw())
    wait_cancelled(a)
    assert b.requests == []


def test_disconnect_during_a_backoff_wait_stops_the_retries(upstreams, gateway_factory, record_waits):
    a = upstreams()
    a.responder = lambda rec: Reply(status=503)
    gw = gateway_factory(config({"primary": provider_block(a, max_retries=5, retry_backoff_initial=20_000,
                                                     retry_backoff_max=20_000)}, fallbacks={}))
    waiting = threading.Event()
    waits = record_waits(gw, waiting)
    body = orjson.dumps({"model": "primary/m", "messages": MSG})
    with socket.create_connection(("127.0.0.1", gw.server.port)) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert waiting.wait(30), "the gateway never began a backoff wait"
    # The client left during the wait (10 to 20 s): the request ends there, logged as cancelled.
    record = RecordingSink.wait(1)[0]
    assert record.status == 499 and len(waits) == 1
    assert len(a.requests) == 1      # the waiting retry was cancelled with the request


# --- unit tests of the timing helpers ---

def test_backoff_is_exponential_with_jitter_and_capped():
    import random
    rng = random.Random(7)
    for retry, (lo, hi) in enumerate([(0.05, 0.1), (0.1, 0.2), (0.2, 0.4), (0.25, 0.5), (0.25, 0.5)]):
        for _ in range(50):
            d = backoff_delay(retry, 100, 500, rng=rng)
            assert lo <= d <= hi, (retry, d)
    assert backoff_delay(0, 100, 5000, retry_after=2.0) == 2.0
    assert backoff_delay(0, 100, 1000, retry_after=30.0) == 1.0
    assert backoff_delay(3, 0, 0) == 0


def test_retry_after_forms():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    import email.utils
    future = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= retry_after_seconds(future) <= 10.5


# --- Claude Code's path: the anthropic SDK, translated to OpenAI-compatible upstreams ---

def anthropic_client(gw):
    anthropic = pytest.importorskip("anthropic")
    pytest.importorskip("hookway_anthropic")
    return anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="x", max_retries=0, timeout=20)


def claude_config(a, b, **network):
    cfg = chain_config(a, b, **network)
    cfg["plugins"]["anthropic"] = {}
    cfg["plugins"]["routing"]["rules"] = [
        {"name": "claude-code", "match": {"model": ["sonnet-model", "claude-*"]},
         "targets": ["primary/llama-3.3-70b"], "fallbacks": ["backup/gpt-oss-120b"]}]
    return cfg


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_claude_code_model_names_are_served_by_the_fallback_on_429(upstreams, gateway_factory, stream):
    a, b = upstreams(), labelled(upstreams(), "b")
    a.enqueue(Reply(status=429, error="cerebras is busy"))
    gw = gateway_factory(claude_config(a, b))
    c = anthropic_client(gw)
    if stream:
        with c.messages.stream(model="claude-sonnet-4-6", max_tokens=50, messages=MSG) as s:
            text = "".join(s.text_stream)
    else:
        text = c.messages.create(model="claude-sonnet-4-6", max_tokens=50, messages=MSG).content[0].text
    assert text == "from-b"
    assert a.last.json["model"] == "llama-3.3-70b" and b.last.json["model"] == "gpt-oss-120b"


def test_claude_code_gets_the_first_error_in_its_dialect_when_all_fail(upstreams, gateway_factory):
    anthropic = pytest.importorskip("anthropic")
    a, b = upstreams(), upstreams()
    a.enqueue(Reply(status=429, error="cerebras is busy", headers={"retry-after": "3"}))
    b.enqueue(Reply(status=503, error="backup down"))
    gw = gateway_factory(claude_config(a, b))
    with pytest.raises(anthropic.RateLimitError) as info:
        anthropic_client(gw).messages.create(model="sonnet-model", max_tokens=50, messages=MSG)
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "rate_limit_error"
    assert "cerebras is busy" in info.value.body["error"]["message"]
    assert info.value.response.headers.get("retry-after") == "3"


def test_claude_code_slow_first_byte_falls_back(upstreams, gateway_factory):
    a, b = upstreams(), labelled(upstreams(), "b")
    a.enqueue(Reply(text="late", first_byte_delay=5.0))
    gw = gateway_factory(primary_times_out(claude_config(a, b), 0.3))
    with anthropic_client(gw).messages.stream(model="claude-opus-4-8", max_tokens=50, messages=MSG) as s:
        assert "".join(s.text_stream) == "from-b"


def test_claude_code_connection_reset_mid_stream_is_an_error_event(upstreams, gateway_factory):
    anthropic = pytest.importorskip("anthropic")
    a, b = upstreams(), labelled(upstreams(), "b")
    a.enqueue(Reply(text="abcdefghij", chunk_size=1, drop_after=4))
    gw = gateway_factory(claude_config(a, b))
    got = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with anthropic_client(gw).messages.stream(model="claude-haiku-4-5", max_tokens=50, messages=MSG) as s:
            for text in s.text_stream:
                got.append(text)
    assert "".join(got) == "abc"
    assert info.value.body["type"] == "error"
    assert b.requests == []


def test_the_readme_example_is_a_valid_configuration(monkeypatch, tmp_path):
    import pathlib
    import re as _re

    import yaml

    from hookway.app import Gateway
    from hookway.config import build

    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = _re.search(r"```yaml\n(.*?)```", text, _re.S).group(1)
    for var in ("CEREBRAS_KEY_1", "CEREBRAS_KEY_2", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(var, "k")
    raw = yaml.safe_load(block)
    raw["server"] = {"data_dir": str(tmp_path)}
    gateway = Gateway(build(raw))
    assert gateway.retries_by_plugin is True
    assert gateway.plugins.instances["fallbacks"].max_attempts == 20


def test_claude_code_disconnect_cancels_the_translated_upstream_stream(upstreams, gateway_factory):
    pytest.importorskip("hookway_anthropic")
    a, b = upstreams(), upstreams()
    a.enqueue(Reply(text="x" * 400, chunk_size=1, chunk_delay=0.02, eof_delay=60))
    gw = gateway_factory(claude_config(a, b))
    with httpx.stream("POST", gw.url + "/anthropic/v1/messages", timeout=10,
                      headers={"anthropic-version": "2023-06-01", "x-api-key": "x"},
                      json={"model": "claude-sonnet-4-6", "max_tokens": 50, "messages": MSG, "stream": True}) as r:
        assert r.status_code == 200
        next(r.iter_raw())
    wait_cancelled(a)
