"""End to end with the official openai SDK: gateway -> CerebrasAdapter -> the fake upstream, on
the pass-through and the translated path; what reached the upstream is asserted."""

from __future__ import annotations

import anthropic
import httpx
import openai
import orjson
import pytest

from hookway import hookimpl
from hookway.testing import RecordingSink, Reply

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


# --- streams, usage and errors as Cerebras sends them ----------------------------------------------

def cerebras_stream(text: str, usage: dict) -> bytes:
    """A stream shaped like Cerebras' own: usage (and time_info) on the finish chunk, no
    usage-only chunk, whether or not usage was asked for."""
    base = {"id": "chatcmpl-c1", "created": 1779147581, "model": "gpt-oss-120b",
            "system_fingerprint": "fp_a33c042689e969567008", "object": "chat.completion.chunk"}
    events = [{**base, "choices": [{"delta": {"role": "assistant"}, "index": 0}]},
              {**base, "choices": [{"delta": {"content": text}, "index": 0}]},
              {**base, "choices": [{"delta": {}, "finish_reason": "stop", "index": 0}], "usage": usage,
               "time_info": {"queue_time": 0.003, "prompt_time": 0.01, "completion_time": 0.16}}]
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


CEREBRAS_USAGE = {"total_tokens": 426, "completion_tokens": 104, "prompt_tokens": 322,
                  "prompt_tokens_details": {"cached_tokens": 256},
                  "completion_tokens_details": {"reasoning_tokens": 97}}


def cerebras_like(rec):
    # Reported by clients: a stream request carrying stream_options is refused with a 422.
    if "stream_options" in (rec.json or {}):
        return Reply(status=422, raw=b'{"message":"stream_options is unsupported","type":"invalid_request_error",'
                                     b'"param":"validation_error","code":"wrong_api_format"}')
    return Reply(raw=cerebras_stream("Hello", CEREBRAS_USAGE), headers={"Content-Type": "text/event-stream"})


@pytest.fixture(params=["passthrough", "translated"])
def logged(request, fake_upstream, start_gateway):
    cfg = {"plugins": {"openai": {}, "anthropic": {}, "cerebras": {}, "sink": {}},
           "providers": {"cerebras": {"type": "cerebras", "keys": [{"value": "csk-test"}],
                                      "network_config": {"base_url": fake_upstream.url}}}}
    if request.param == "translated":
        cfg["plugins"]["force_translate"] = {}
    fake_upstream.responder = cerebras_like
    return start_gateway(cfg, {"force_translate": ForceTranslate, "sink": RecordingSink}), request.param


@pytest.mark.parametrize("asked", [False, True])
def test_stream_usage_is_read_from_the_finish_chunk_and_no_stream_options_is_sent(logged, fake_upstream, asked):
    gw, mode = logged
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    extra = {"stream_options": {"include_usage": True}} if asked else {}
    chunks = list(client.chat.completions.create(model="cerebras/gpt-oss-120b", messages=USER, stream=True, **extra))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert "stream_options" not in fake_upstream.last.json
    (record,) = RecordingSink.wait(1)
    # OpenAI's convention: prompt_tokens include the cached ones; canonical input excludes them.
    assert (record.input_tokens, record.cached_tokens, record.output_tokens) == (66, 256, 104)
    assert record.status == 200 and record.passthrough == (mode == "passthrough")


def test_claude_code_stream_gets_the_usage_of_the_finish_chunk(logged, fake_upstream):
    gw, _ = logged
    client = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
    with client.messages.stream(model="cerebras/gpt-oss-120b", max_tokens=100,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        message = stream.get_final_message()
    assert message.content[0].text == "Hello"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) \
        == (66, 256, 104)
    assert "stream_options" not in fake_upstream.last.json


def test_a_429_passes_on_a_retry_after_from_the_token_quota_reset(client, fake_upstream):
    fake_upstream.enqueue(Reply(status=429, headers={"x-ratelimit-reset-tokens-minute": "11.382867097854614",
                                                     "x-ratelimit-remaining-tokens-minute": "0"},
                                raw=b'{"message":"Tokens per minute limit exceeded - too many tokens processed.",'
                                    b'"type":"too_many_requests_error","param":"quota","code":"token_quota_exceeded"}'))
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="cerebras/gpt-oss-120b", messages=USER)
    assert exc.value.response.headers["retry-after"] == "12"
    assert "Tokens per minute limit exceeded" in exc.value.body["message"]


def test_reasoning_content_of_earlier_turns_is_not_sent(client, fake_upstream):
    history = [{"role": "user", "content": "2+2?"},
               {"role": "assistant", "content": "4", "reasoning_content": "two and two"},
               {"role": "user", "content": "and 3+3?"}]
    client.chat.completions.create(model="cerebras/gpt-oss-120b", messages=history)
    assert [m.get("reasoning_content") for m in fake_upstream.last.json["messages"]] == [None, None, None]
    assert fake_upstream.last.json["messages"][1]["content"] == "4"


def test_effort_none_reaches_a_model_that_takes_it(client, fake_upstream):
    client.chat.completions.create(model="cerebras/zai-glm-4.7", messages=USER, reasoning_effort="none")
    assert fake_upstream.last.json["reasoning_effort"] == "none"
