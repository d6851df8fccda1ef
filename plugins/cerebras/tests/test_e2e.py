"""End to end with the official openai SDK: gateway -> CerebrasAdapter -> the fake upstream, on
the pass-through and the translated path; what reached the upstream is asserted."""

from __future__ import annotations

import httpx
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
    events = list(client.responses.create(model="cerebras/gpt-oss-120b", input="hi", user=LONG_USER,
                                          reasoning={"effort": "minimal"}, stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Bonjour"
    assert events[-1].type == "response.completed"
    sent = fake_upstream.last
    assert sent.path == "/v1/chat/completions"
    assert sent.json["messages"] == [{"role": "user", "content": "hi"}]
    assert "user" not in sent.json and sent.json["reasoning_effort"] == "low"


def test_responses_api_reasoning_dropped_for_a_model_that_does_not_reason(client, fake_upstream):
    client.responses.create(model="cerebras/llama-3.3-70b", input="hi", reasoning={"effort": "high"})
    assert "reasoning_effort" not in fake_upstream.last.json   # always translated for Cerebras


def test_reasoning_effort_to_a_model_that_does_not_reason(client, fake_upstream, request):
    client.chat.completions.create(model="cerebras/llama-3.3-70b", messages=USER, reasoning_effort="xhigh")
    sent = fake_upstream.last.json
    if request.node.callspec.params["client"] == "passthrough":
        assert sent["reasoning_effort"] == "high"   # the client's own choice, normalised
    else:
        assert "reasoning_effort" not in sent       # translated: only models that reason get one


def test_effort_none_is_not_forwarded(client, fake_upstream):
    client.chat.completions.create(model="cerebras/gpt-oss-120b", messages=USER, reasoning_effort="none")
    assert "reasoning_effort" not in fake_upstream.last.json


# --- operations Cerebras does not have: 400 unsupported_operation in the caller's dialect --------

WAV = ("a.wav", b"RIFF" + b"\0" * 200_000, "audio/wav")


@pytest.mark.parametrize("op,call", [
    ("images", lambda c: c.images.generate(model="cerebras/dall-e-3", prompt="a cat")),
    ("speech", lambda c: c.audio.speech.create(model="cerebras/tts-1", voice="alloy", input="hi")),
    ("transcription", lambda c: c.audio.transcriptions.create(model="cerebras/whisper-1", file=WAV)),
    ("batch", lambda c: c.batches.create(completion_window="24h", endpoint="/v1/chat/completions",
                                         input_file_id="file-abc")),
])
@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1"])
def test_unsupported_operations_answer_400_in_openai_shape(fake_upstream, start_gateway, op, call, prefix):
    gw = start_gateway({"plugins": {"openai": {}, "cerebras": {}},
                        "providers": {"cerebras": {"type": "cerebras", "keys": [{"value": "csk-test"}],
                                                   "models": ["llama-3.3-70b"],
                                                   "network_config": {"base_url": fake_upstream.url}}}})
    c = openai.OpenAI(base_url=gw.url + prefix, api_key="k", max_retries=0)
    with pytest.raises(openai.BadRequestError) as exc:
        call(c)
    assert exc.value.status_code == 400
    assert exc.value.body["code"] == "unsupported_operation"
    assert exc.value.body["type"] == "invalid_request_error"
    assert exc.value.body["message"] == f"{op} is not supported by cerebras provider"
    assert fake_upstream.requests == []


def test_unsupported_operations_name_the_provider_the_model_resolves_to(fake_upstream, start_gateway):
    gw = start_gateway({"plugins": {"openai": {}, "cerebras": {}}, "providers": {
        "cerebras": {"type": "cerebras", "network_config": {"base_url": fake_upstream.url}},
        "up": {"type": "openai", "network_config": {"base_url": fake_upstream.url}}}})
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.BadRequestError) as exc:
        c.audio.transcriptions.create(model="up/whisper-1", file=WAV)
    assert exc.value.body["message"] == "transcription is not supported by up provider"
    with pytest.raises(openai.BadRequestError) as exc:
        c.batches.create(completion_window="24h", endpoint="/v1/chat/completions", input_file_id="file-abc")
    assert exc.value.body["code"] == "unsupported_operation"
    assert exc.value.body["message"] == "batch is not supported by any configured provider (cerebras, up)"
    with pytest.raises(openai.NotFoundError):   # an unknown model is still a 404 naming it
        c.images.generate(model="nobody/dall-e-3", prompt="x")
    r = httpx.post(gw.url + "/v1/audio/transcriptions", json={"model": "up/whisper-1"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]["message"]
    assert fake_upstream.requests == []
