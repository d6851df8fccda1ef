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
                                        ("xhigh", "high"), ("max", "high"), ("HIGH", "high"), ("none", "none"),
                                        ("extreme", None)])
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
                    "max_completion_tokens": 64000, "reasoning_effort": "medium", "stream": True,
                    "stream_options": {"include_usage": True}}


def test_translated_body_effort_beats_budget(adapter):
    req = ir.Request(model="m", messages=[], reasoning_effort="max", reasoning_budget=1000)
    assert adapter.build_body(req, Target("cerebras", "m"), stream=False)["reasoning_effort"] == "high"
