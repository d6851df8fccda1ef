"""request_to_openai / response_from_openai: CONFORMANCE.md "Request: Anthropic -> OpenAI"."""

from __future__ import annotations

import orjson
import pytest

from hookway import ir
from hookway_openai.dialect import OpenAIDialect
from hookway_openai.translate import (effort_for_budget, request_to_openai, response_from_openai,
                                      usage_from_openai, usage_to_openai)


def req(**kw):
    kw.setdefault("messages", [{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    return ir.Request(model="client/model", **kw)


def test_point1_system_blocks_become_one_leading_system_message_cache_control_dropped():
    body = request_to_openai(req(system=[{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
                                         {"type": "text", "text": "B"}],
                                 messages=[{"role": "user", "content": [{"type": "text", "text": "u"}]},
                                           {"role": "system", "content": [{"type": "text", "text": "mid"}]}]),
                             "up-model")
    assert body["model"] == "up-model"
    assert body["messages"] == [{"role": "system", "content": "A\n\nB"}, {"role": "user", "content": "u"},
                                {"role": "system", "content": "mid"}]


def test_point2_tool_use_and_results_in_order_right_after_the_assistant_turn():
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "go"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "secret", "signature": "sig"},
            {"type": "text", "text": "Running."},
            {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
            {"type": "tool_use", "id": "toolu_2", "name": "mcp__srv__Read_File", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "text", "text": "before"},
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a.txt"}]},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True, "content": "no such file"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QQ=="}},
        ]},
    ]
    body = request_to_openai(req(messages=messages), "m")
    assert body["messages"] == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "Running.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "Bash", "arguments": '{"command":"ls"}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "mcp__srv__Read_File", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "a.txt"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such file"},
        {"role": "user", "content": [{"type": "text", "text": "before"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ=="}}]},
    ]


def test_point2_thinking_only_assistant_turn_is_dropped_for_openai():
    body = request_to_openai(req(messages=[
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}]},
        {"role": "user", "content": [{"type": "text", "text": "b"}]}]), "m")
    assert [m["role"] for m in body["messages"]] == ["user", "user"]


def test_keep_thinking_sends_reasoning_content_back():
    body = request_to_openai(req(messages=[
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}, {"type": "text", "text": "x"}]}]),
        "m", keep_thinking=True)
    assert body["messages"] == [{"role": "assistant", "content": "x", "reasoning_content": "t"}]


def test_image_url_source_and_tool_result_images():
    body = request_to_openai(req(messages=[{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "text", "text": "shot"},
            {"type": "image", "source": {"type": "url", "url": "https://x.test/i.png"}}]}]}]), "m")
    assert body["messages"] == [
        {"role": "tool", "tool_call_id": "t", "content": "shot"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/i.png"}}]},
    ]


def test_point3_tools_byte_exact_names():
    tools = [ir.Tool("mcp__GitHub__create_PR", "Create", {"type": "object", "properties": {"t": {"type": "string"}}}),
             ir.Tool("x", None)]
    body = request_to_openai(req(tools=tools), "m")
    assert body["tools"] == [
        {"type": "function", "function": {"name": "mcp__GitHub__create_PR", "description": "Create",
                                          "parameters": {"type": "object", "properties": {"t": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "x", "parameters": {"type": "object", "properties": {}}}},
    ]


@pytest.mark.parametrize("choice,expected", [
    ("auto", "auto"), ("any", "required"), ("none", "none"), ({"type": "auto"}, "auto"),
    ({"type": "any"}, "required"),
    ({"type": "tool", "name": "Bash"}, {"type": "function", "function": {"name": "Bash"}}),
])
def test_point4_tool_choice(choice, expected):
    body = request_to_openai(req(tools=[ir.Tool("Bash")], tool_choice=choice), "m")
    assert body["tool_choice"] == expected


def test_point4_disable_parallel_only_with_tools():
    assert request_to_openai(req(tools=[ir.Tool("a")], parallel_tool_calls=False), "m")["parallel_tool_calls"] is False
    assert "parallel_tool_calls" not in request_to_openai(req(parallel_tool_calls=False), "m")


def test_point5_6_sampling_stop_max_tokens_top_k():
    body = request_to_openai(req(stop=["\n\nHuman:"], temperature=0.2, top_p=0.8, top_k=40, max_tokens=64000), "m")
    assert body["stop"] == ["\n\nHuman:"] and body["temperature"] == 0.2 and body["top_p"] == 0.8
    assert "top_k" not in body and body["max_completion_tokens"] == 64000
    body = request_to_openai(req(top_k=40, max_tokens=10), "m", supports_top_k=True, max_tokens_field="max_tokens")
    assert body["top_k"] == 40 and body["max_tokens"] == 10 and "max_completion_tokens" not in body


def test_point8_reasoning_effort_and_budget_mapping():
    assert request_to_openai(req(reasoning_effort="high"), "m")["reasoning_effort"] == "high"
    # A budget alone is dropped unless the target takes an effort for it.
    assert "reasoning_effort" not in request_to_openai(req(reasoning_budget=10000), "m")
    assert request_to_openai(req(reasoning_budget=10000), "m", budget_to_effort=True)["reasoning_effort"] == "medium"


def test_point8_no_reasoning_effort_for_a_target_that_does_not_reason():
    for kw in ({"reasoning_effort": "high"}, {"reasoning_budget": 30000}):
        body = request_to_openai(req(**kw), "gpt-4o", budget_to_effort=True, reasoning=False)
        assert "reasoning_effort" not in body


def test_openai_adapter_reasoning_models():
    from hookway.config import ConfigError
    from hookway.providers import ProviderConfig, Target
    from hookway_openai import OpenAIAdapter

    adapter = OpenAIAdapter(ProviderConfig(name="openai", type="openai"))
    assert adapter.reasoning_models == ("o1*", "o3*", "o4*", "gpt-5*", "gpt-oss*")
    for model in ("o1", "o3-mini", "o4-mini-2025-04-16", "gpt-5", "gpt-5-mini", "gpt-oss-20b", "openai/gpt-5", "O3"):
        assert adapter.reasons(model), model
    for model in ("gpt-4o", "gpt-4.1-mini", "llama-3.3-70b", "meta/llama-3"):
        assert not adapter.reasons(model), model
    thinking = req(reasoning_effort="high")   # e.g. Claude Code's `thinking: {type: adaptive}`
    assert "reasoning_effort" not in adapter.build_body(thinking, Target("openai", "gpt-4o"), stream=False)
    assert adapter.build_body(thinking, Target("openai", "o3"), stream=False)["reasoning_effort"] == "high"
    custom = OpenAIAdapter(ProviderConfig(name="local", type="openai", settings={"reasoning_models": "qwq*"}))
    assert custom.reasons("qwq-32b") and not custom.reasons("o3")
    with pytest.raises(ConfigError):
        OpenAIAdapter(ProviderConfig(name="bad", type="openai", settings={"reasoning_models": [1]}))


@pytest.mark.parametrize("budget,effort", [(None, None), (0, None), (1024, "low"), (4096, "low"),
                                           (10000, "medium"), (31999, "high")])
def test_effort_for_budget(budget, effort):
    assert effort_for_budget(budget) == effort


def test_point9_foreign_extras_dropped_openai_ones_kept():
    body = request_to_openai(req(extra={"context_management": {"x": 1}, "output_config": {}, "metadata": {"user_id": "u"},
                                        "service_tier": "standard_only", "seed": 3,
                                        "response_format": {"type": "json_object"}}), "m")
    assert body["seed"] == 3 and body["response_format"] == {"type": "json_object"}
    for key in ("context_management", "output_config", "metadata", "service_tier"):
        assert key not in body
    assert request_to_openai(req(extra={"service_tier": "flex"}), "m")["service_tier"] == "flex"


def test_stream_always_asks_for_usage_and_user_passed():
    body = request_to_openai(req(stream=True, include_usage=False, user="abc"), "m")
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True} and body["user"] == "abc"
    assert "stream" not in request_to_openai(req(stream=True), "m", stream=False)


def test_completions_and_embeddings_bodies():
    body = request_to_openai(ir.Request(model="x", messages=[], operation="completions", prompt="Once",
                                        max_tokens=5, extra={"echo": True, "tools": 1}), "m")
    assert body == {"model": "m", "prompt": "Once", "max_tokens": 5, "echo": True}
    body = request_to_openai(ir.Request(model="x", messages=[], operation="embeddings", input=["a"],
                                        extra={"dimensions": 4, "foo": 1}), "m")
    assert body == {"model": "m", "input": ["a"], "dimensions": 4}


def test_raw_arguments_round_trip_unchanged():
    dialect = OpenAIDialect()
    parsed = dialect.parse({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{broken"}}]}]}, "chat")
    body = request_to_openai(parsed, "m")
    assert body["messages"][0]["tool_calls"][0]["function"]["arguments"] == "{broken"


def test_openai_request_round_trips_through_the_canonical_form():
    original = {"model": "m", "messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "r"},
        {"role": "assistant", "content": "done"},
    ], "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": "required", "temperature": 0.1, "max_completion_tokens": 9, "stop": ["x"]}
    body = request_to_openai(OpenAIDialect().parse(original, "chat"), "m")
    assert body == original


# --- response ---------------------------------------------------------------------------------

def test_response_with_reasoning_text_and_tool_calls():
    data = {"id": "chatcmpl-9", "model": "up", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Let me check.", "reasoning_content": "thinking...",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"k": [1]}'}},
                       {"id": "call_1", "type": "function", "function": {"name": "get2", "arguments": ""}}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 8, "prompt_tokens_details": {"cached_tokens": 5}}}
    resp = response_from_openai(data)
    assert resp.id == "chatcmpl-9" and resp.model == "up" and resp.stop_reason == "tool_use"
    assert resp.content[:3] == [
        {"type": "thinking", "thinking": "thinking...", "signature": ""},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "get", "input": {"k": [1]}},
    ]
    dup = resp.content[3]
    assert dup["name"] == "get2" and dup["input"] == {} and dup["id"] and dup["id"] != "call_1"
    assert resp.usage == ir.Usage(input_tokens=15, output_tokens=8, cache_read_input_tokens=5)


@pytest.mark.parametrize("finish,stop", [("stop", "end_turn"), ("length", "max_tokens"), (None, "end_turn"),
                                         ("content_filter", "refusal")])
def test_response_finish_mapping(finish, stop):
    data = {"choices": [{"finish_reason": finish, "message": {"content": "x"}}]}
    assert response_from_openai(data).stop_reason == stop


def test_text_completion_response():
    resp = response_from_openai({"id": "cmpl-1", "choices": [{"text": "abc", "finish_reason": "length"}]}, "completions")
    assert resp.content == [{"type": "text", "text": "abc"}] and resp.stop_reason == "max_tokens"


def test_usage_round_trip():
    u = usage_from_openai({"prompt_tokens": 50, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 20},
                           "completion_tokens_details": {"reasoning_tokens": 3}})
    assert u == ir.Usage(input_tokens=30, output_tokens=7, cache_read_input_tokens=20, reasoning_tokens=3)
    assert usage_to_openai(u) == {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57,
                                  "prompt_tokens_details": {"cached_tokens": 20},
                                  "completion_tokens_details": {"reasoning_tokens": 3}}
    assert usage_from_openai({"input_tokens": 9, "output_tokens": 2}) == ir.Usage(input_tokens=9, output_tokens=2)
    assert usage_from_openai(None) == ir.Usage()
    assert orjson.dumps(usage_to_openai(ir.Usage()))   # serialisable
