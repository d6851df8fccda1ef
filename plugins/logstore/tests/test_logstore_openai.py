"""The logstore behind the OpenAI plugin, driven by the official ``openai`` SDK."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from hookway.testing import Reply

HTTP = httpx.Client(timeout=10)   # one client: creating one per call costs ~100 ms (TLS setup)


@pytest.fixture
def openai_gateway(start_gateway, fake_upstream, tmp_path):
    def start(settings=None):
        gw = start_gateway({
            "server": {"data_dir": str(tmp_path)},
            "plugins": {"openai": {}, "logstore": settings or {}},
            "providers": {"up": {"type": "openai", "keys": [{"value": "sk-upstream-provider-key-123"}],
                                 "network_config": {"base_url": fake_upstream.url}}},
        })
        gw.client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
        gw.store = gw.gateway.plugins.instances["logstore"].store
        return gw
    return start


def _rows(gw, n):
    deadline = time.monotonic() + 30
    while gw.store.written < n:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return HTTP.get(gw.url + "/api/logs", params={"sort": "time"}).json()["data"]


def test_pass_through_answers_are_recorded_with_their_content(openai_gateway, fake_upstream):
    gw = openai_gateway()
    fake_upstream.enqueue(Reply(text="the answer", usage=(12, 3, 0)),
                          Reply(text="streamed answer", chunk_size=4, usage=(7, 2, 0)),
                          Reply(status=429, error="slow down"))
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the question"}]
    answer = gw.client.chat.completions.create(model="up/llama", messages=messages)
    assert answer.choices[0].message.content == "the answer"
    stream = gw.client.chat.completions.create(model="up/llama", messages=messages, stream=True,
                                               stream_options={"include_usage": True})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "streamed answer"
    with pytest.raises(openai.RateLimitError):
        gw.client.chat.completions.create(model="up/llama", messages=messages)

    plain, streamed, limited = _rows(gw, 3)
    assert (plain["provider"], plain["upstream_model"], plain["passthrough"]) == ("up", "llama", True)
    assert (plain["input_tokens"], plain["output_tokens"]) == (12, 3)
    assert plain["finish_reason"] == "end_turn"
    detail = HTTP.get(gw.url + f"/api/logs/{plain['id']}").json()
    assert detail["request"]["messages"] == messages
    assert detail["response"]["content"] == [{"type": "text", "text": "the answer"}]

    assert streamed["stream"] is True and (streamed["input_tokens"], streamed["output_tokens"]) == (7, 2)
    assert streamed["ttft_ms"] is not None
    # A streamed pass-through answer is stored as the answer, not as the SSE text it came in.
    assert streamed["finish_reason"] == "end_turn"
    detail = HTTP.get(gw.url + f"/api/logs/{streamed['id']}").json()
    assert detail["response"]["content"] == [{"type": "text", "text": "streamed answer"}]
    assert limited["status"] == 429 and "slow down" in limited["error"]

    found = HTTP.get(gw.url + "/api/logs", params={"q": "the question", "status": "ok"}).json()
    assert found["total"] == 2
