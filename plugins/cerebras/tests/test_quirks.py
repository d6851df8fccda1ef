"""CerebrasAdapter quirks, unit level: prepare_body (both paths) and the translated body."""

from __future__ import annotations

import pytest

from hookway import ir
from hookway.providers import ProviderConfig, Target
from hookway_cerebras import CerebrasAdapter

LONG_USER = '{"device_id":"' + "a" * 64 + '","session_id":"b"}'   # Claude Code's metadata.user_id is this long


@pytest.fixture
def adapter():
    return CerebrasAdapter(ProviderConfig(name="cerebras", type="cerebras"))


def test_defaults(adapter):
    assert adapter.base_url == "https://api.cerebras.ai/v1"
    assert adapter.operations == {"chat", "completions", "responses"}
    assert adapter.passthrough == {"chat", "completions"}   # no Responses API at Cerebras: translated
    assert adapter.native_dialect == "openai"


@pytest.mark.parametrize("op", ["embeddings", "images", "speech", "transcription", "batch"])
def test_unsupported_operations(adapter, op):
    assert op not in adapter.operations
    err = adapter.unsupported(op)
    assert err.status == 400 and err.kind == "unsupported_operation" and err.code == "unsupported_operation"
    assert err.message == f"{op} is not supported by cerebras provider"


def test_long_user_dropped_short_kept(adapter):
    assert "user" not in adapter.prepare_body({"user": LONG_USER, "messages": []}, "chat")
    assert adapter.prepare_body({"user": "u" * 64, "messages": []}, "chat")["user"] == "u" * 64
    assert "user" not in adapter.prepare_body({"user": LONG_USER, "prompt": "x"}, "completions")


@pytest.mark.parametrize("given,sent", [("minimal", "low"), ("low", "low"), ("medium", "medium"), ("high", "high"),
                                        ("xhigh", "high"), ("max", "high"), ("HIGH", "high"),
                                        ("none", None), ("None", None), ("extreme", None)])
def test_effort_normalised(adapter, given, sent):
    body = adapter.prepare_body({"messages": [], "reasoning_effort": given}, "chat")
    assert body.get("reasoning_effort") == sent


@pytest.mark.parametrize("budget_body,effort", [
    ({"reasoning": {"max_tokens": 2000}}, "low"),
    ({"thinking": {"type": "enabled", "budget_tokens": 10000}}, "medium"),
    ({"reasoning_budget": 31999}, "high"),
    ({"reasoning": {"effort": "minimal", "max_tokens": 50000}}, "low"),      # an explicit effort wins
    ({"reasoning_effort": "medium", "thinking": {"budget_tokens": 1024}}, "medium"),
])
def test_budget_cleared_and_mapped_to_effort(adapter, budget_body, effort):
    body = adapter.prepare_body({"messages": [], **budget_body}, "chat")
    assert body["reasoning_effort"] == effort
    for field in ("reasoning", "thinking", "reasoning_budget", "budget_tokens"):
        assert field not in body


def test_system_parts_flattened_without_touching_the_original(adapter):
    original = {"messages": [{"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                             {"role": "user", "content": [{"type": "text", "text": "u"}]}]}
    body = adapter.prepare_body(dict(original), "chat")
    assert body["messages"][0] == {"role": "system", "content": "a\n\nb"}
    assert body["messages"][1] is original["messages"][1]     # user parts are fine as they are
    assert isinstance(original["messages"][0]["content"], list)   # the client's body is unchanged


def test_translated_body_from_an_anthropic_style_request(adapter):
    req = ir.Request(model="cerebras/gpt-oss-120b", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                     system=[{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
                     user=LONG_USER, reasoning_budget=10000, top_k=5, max_tokens=64000, stream=True,
                     extra={"context_management": {}, "metadata": {"user_id": LONG_USER}})
    body = adapter.build_body(req, Target("cerebras", "gpt-oss-120b"), stream=True)
    assert body == {"model": "gpt-oss-120b",
                    "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
                    "max_completion_tokens": 64000, "reasoning_effort": "medium", "stream": True}


def test_translated_body_effort_beats_budget(adapter):
    req = ir.Request(model="m", messages=[], reasoning_effort="max", reasoning_budget=1000)
    assert adapter.build_body(req, Target("cerebras", "gpt-oss-120b"), stream=False)["reasoning_effort"] == "high"


def test_reasoning_models_defaults(adapter):
    assert adapter.reasoning_models == ("gpt-oss*", "qwen-3*", "zai-glm*")
    for model in ("gpt-oss-120b", "qwen-3-235b-a22b-thinking-2507", "qwen-3-32b", "zai-glm-4.6", "GPT-OSS-120B"):
        assert adapter.reasons(model), model
    for model in ("llama-3.3-70b", "llama3.1-8b", "llama-4-scout-17b-16e-instruct"):
        assert not adapter.reasons(model), model


@pytest.mark.parametrize("request_kw", [{"reasoning_effort": "high"}, {"reasoning_budget": 20000},
                                        {"reasoning_effort": "none"}])
def test_translated_body_has_no_effort_for_a_model_that_does_not_reason(adapter, request_kw):
    # Claude Code's `thinking: {type: adaptive}` arrives as reasoning_effort "high": llama-3.3-70b
    # may refuse the field, so it is dropped (CONFORMANCE 8: never a 4xx).
    req = ir.Request(model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}], **request_kw)
    body = adapter.build_body(req, Target("cerebras", "llama-3.3-70b"), stream=True)
    assert "reasoning_effort" not in body


def test_translated_effort_none_is_not_forwarded_to_a_reasoning_model(adapter):
    req = ir.Request(model="m", messages=[], reasoning_effort="none")
    assert "reasoning_effort" not in adapter.build_body(req, Target("cerebras", "gpt-oss-120b"), stream=False)


def test_reasoning_models_setting_overrides():
    adapter = CerebrasAdapter(ProviderConfig(name="c", type="cerebras", settings={"reasoning_models": ["llama-4*"]}))
    assert adapter.reasons("llama-4-maverick") and not adapter.reasons("gpt-oss-120b")
    req = ir.Request(model="m", messages=[], reasoning_effort="low")
    assert adapter.build_body(req, Target("c", "llama-4-maverick"), stream=False)["reasoning_effort"] == "low"
    assert "reasoning_effort" not in adapter.build_body(req, Target("c", "gpt-oss-120b"), stream=False)


@pytest.mark.parametrize("op", ["chat", "completions"])
def test_no_stream_options_is_sent(adapter, op):
    # Usage comes on the last chunk of every Cerebras stream; the field itself is reported to
    # be refused (422), so even a client's own is removed.
    body = adapter.prepare_body({"stream": True, "stream_options": {"include_usage": True}, "messages": []}, op)
    assert "stream_options" not in body
    assert adapter.usage_in_every_stream
    req = ir.Request(model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert "stream_options" not in adapter.build_body(req, Target("cerebras", "gpt-oss-120b"), stream=True)


def test_reasoning_content_removed_from_assistant_messages(adapter):
    # Cerebras: "messages.2.assistant.reasoning_content: property ... is unsupported" (400).
    turn = {"role": "assistant", "content": "4", "reasoning_content": "2+2"}
    original = {"messages": [{"role": "user", "content": "2+2?"}, turn, {"role": "user", "content": "ok"}]}
    body = adapter.prepare_body(dict(original), "chat")
    assert body["messages"][1] == {"role": "assistant", "content": "4"}
    assert body["messages"][0] is original["messages"][0]
    assert turn["reasoning_content"] == "2+2"      # the client's message is left as it was


@pytest.mark.parametrize("model,sent", [("zai-glm-4.7", "none"), ("qwen-3.8-27b", "none"),
                                        ("gpt-oss-120b", None), ("llama-3.3-70b", None)])
def test_effort_none_kept_only_for_models_that_take_it(adapter, model, sent):
    body = adapter.prepare_body({"model": model, "messages": [], "reasoning_effort": "none"}, "chat")
    assert body.get("reasoning_effort") == sent


class _Resp:
    def __init__(self, status, headers):
        self.status, self.headers = status, headers


@pytest.mark.parametrize("status,headers,expected", [
    (429, {"x-ratelimit-reset-tokens-minute": "11.382867097854614"}, "12"),
    (429, {"x-ratelimit-reset-tokens-minute": "0.2"}, "1"),
    (429, {"retry-after": "3", "x-ratelimit-reset-tokens-minute": "40"}, "3"),   # a given one wins
    (429, {"x-ratelimit-reset-tokens-minute": "soon"}, None),
    (429, {}, None),
    (500, {"x-ratelimit-reset-tokens-minute": "11"}, None),
])
def test_retry_after_of_a_429_comes_from_the_token_quota_reset(adapter, status, headers, expected):
    assert adapter.retry_after(_Resp(status, headers)) == expected
