"""End to end with the official openai SDK: gateway -> CerebrasAdapter -> the fake upstream, on
the pass-through and the translated path; what reached the upstream is asserted."""

from __future__ import annotations

import openai
import pytest

from hookway import hookimpl
from hookway.testing import Reply

LONG_USER = "user-" + "x" * 80


class ForceTranslate:
    @hookimpl
    def hookway_transform_request(self, ctx, target):
        ctx.ir   # touching the canonical request turns the byte pass-through off


@pytest.fixture(params=["passthrough", "translated"])
def client(request, fake_upstream, start_gateway):
    cfg = {"plugins": {"openai": {}, "cerebras": {}},
           "providers": {"cerebras": {"type": "cerebras", "keys": [{"value": "csk-test"}],
                                      "network_config": {"base_url": fake_upstream.url}}}}
    if request.param == "translated":
        cfg["plugins"]["force_translate"] = {}
    gw = start_gateway(cfg, {"force_translate": ForceTranslate})
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)


USER = [{"role": "user", "content": "hi"}]


def test_long_user_dropped_and_effort_mapped(client, fake_upstream):
    r = client.chat.completions.create(model="cerebras/gpt-oss-120b", messages=USER, user=LONG_USER,
                                       reasoning_effort="minimal")
    assert r.choices[0].message.content == "hello"
    sent = fake_upstream.last
    assert sent.path == "/v1/chat/completions" and sent.json["model"] == "gpt-oss-120b"
    assert "user" not in sent.json and sent.json["reasoning_effort"] == "low"
    assert sent.headers["authorization"] == "Bearer csk-test"


def test_short_user_kept_and_xhigh_mapped_in_a_stream(client, fake_upstream):
    fake_upstream.enqueue(Reply(text="ok", reasoning="thinking", chunk_size=2))
    chunks = list(client.chat.completions.create(model="cerebras/gpt-oss-120b", messages=USER, user="alice",
                                                 reasoning_effort="xhigh", stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ok"
    assert fake_upstream.last.json["user"] == "alice" and fake_upstream.last.json["reasoning_effort"] == "high"


def test_reasoning_budget_becomes_an_effort(client, fake_upstream):
    client.chat.completions.create(model="cerebras/gpt-oss-120b", messages=USER,
                                   extra_body={"reasoning": {"max_tokens": 20000}})
    sent = fake_upstream.last.json
    assert sent["reasoning_effort"] == "high" and "reasoning" not in sent


def test_embeddings_unsupported(client, fake_upstream):
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model="cerebras/some-embedder", input="x")
    assert exc.value.status_code == 400
    assert exc.value.body["code"] == "unsupported_operation"
    assert exc.value.body["message"] == "embeddings is not supported by cerebras provider"
    assert fake_upstream.requests == []


def test_text_completions_with_long_user(client, fake_upstream):
    fake_upstream.enqueue(Reply(text=" done"))
    r = client.completions.create(model="cerebras/llama-3.3-70b", prompt="x", user=LONG_USER, max_tokens=3)
    assert r.choices[0].text == " done"
    assert fake_upstream.last.path == "/v1/completions" and "user" not in fake_upstream.last.json


def test_responses_api_is_translated_to_chat_completions(client, fake_upstream):
    fake_upstream.enqueue(Reply(text="Bonjour", chunk_size=2))
    events = list(client.responses.create(model="cerebras/llama-3.3-70b", input="hi", user=LONG_USER,
                                          reasoning={"effort": "minimal"}, stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Bonjour"
    assert events[-1].type == "response.completed"
    sent = fake_upstream.last
    assert sent.path == "/v1/chat/completions"
    assert sent.json["messages"] == [{"role": "user", "content": "hi"}]
    assert "user" not in sent.json and sent.json["reasoning_effort"] == "low"
