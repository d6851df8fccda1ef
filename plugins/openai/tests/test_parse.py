"""OpenAIDialect.parse: OpenAI request bodies -> canonical requests; bad fields -> 400 naming them."""

from __future__ import annotations

import pytest

from hookway import ir
from hookway.errors import GatewayError
from hookway_openai.dialect import OpenAIDialect

D = OpenAIDialect()


def parse(body, op="chat"):
    return D.parse({"model": "p/m", **body}, op)


def test_minimal_chat():
    req = parse({"messages": [{"role": "user", "content": "hi"}]})
    assert req.model == "p/m" and req.operation == "chat" and req.stream is False
    assert req.messages == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert req.system == [] and req.include_usage is True


def test_leading_system_and_developer_become_system_blocks_later_ones_stay_in_place():
    req = parse({"messages": [
        {"role": "system", "content": "S1"},
        {"role": "developer", "content": [{"type": "text", "text": "S2"}]},
        {"role": "user", "content": "u"},
        {"role": "system", "content": "mid"},
    ]})
    assert req.system == [{"type": "text", "text": "S1"}, {"type": "text", "text": "S2"}]
    assert req.messages == [
        {"role": "user", "content": [{"type": "text", "text": "u"}]},
        {"role": "system", "content": [{"type": "text", "text": "mid"}]},
    ]


def test_assistant_tool_calls_and_tool_results():
    req = parse({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "not json"}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "noon"}]},
        {"role": "user", "content": "thanks"},
    ]})
    assert req.messages[1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "c2", "name": "get_time", "input": {"_raw": "not json"}},
    ]}
    # consecutive tool messages -> one user message of tool_result blocks
    assert req.messages[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "sunny"}], "is_error": False},
        {"type": "tool_result", "tool_use_id": "c2", "content": [{"type": "text", "text": "noon"}], "is_error": False},
    ]}
    assert req.messages[3]["content"] == [{"type": "text", "text": "thanks"}]


def test_image_parts():
    req = parse({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
    ]}]})
    assert req.messages[0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
    ]


def test_sampling_limits_and_options():
    req = parse({"messages": [{"role": "user", "content": "x"}], "max_tokens": 10, "max_completion_tokens": 20,
                 "temperature": 0.5, "top_p": 0.9, "stop": "END", "stream": True,
                 "stream_options": {"include_usage": True}, "user": "u1", "reasoning_effort": "high",
                 "parallel_tool_calls": False, "seed": 7, "logit_bias": {"1": 2}})
    assert req.max_tokens == 20   # max_completion_tokens wins
    assert (req.temperature, req.top_p, req.stop, req.stream) == (0.5, 0.9, ["END"], True)
    assert req.include_usage is True and req.user == "u1" and req.reasoning_effort == "high"
    assert req.parallel_tool_calls is False
    assert req.extra == {"seed": 7, "logit_bias": {"1": 2}}


def test_stream_without_include_usage():
    req = parse({"messages": [{"role": "user", "content": "x"}], "stream": True})
    assert req.include_usage is False


def test_stop_list_and_openrouter_reasoning_budget():
    req = parse({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b"],
                 "reasoning": {"max_tokens": 2048}})
    assert req.stop == ["a", "b"] and req.reasoning_budget == 2048 and req.reasoning_effort is None


def test_tools_and_tool_choice():
    tools = [{"type": "function", "function": {"name": "Get_Weather", "description": "d",
                                               "parameters": {"type": "object", "properties": {"c": {"type": "string"}}}}},
             {"type": "function", "function": {"name": "noargs"}}]
    req = parse({"messages": [{"role": "user", "content": "x"}], "tools": tools,
                 "tool_choice": {"type": "function", "function": {"name": "Get_Weather"}}})
    assert req.tools == [ir.Tool("Get_Weather", "d", {"type": "object", "properties": {"c": {"type": "string"}}}),
                         ir.Tool("noargs", None, {"type": "object", "properties": {}})]
    assert req.tool_choice == {"type": "tool", "name": "Get_Weather"}


@pytest.mark.parametrize("choice,expected", [("auto", "auto"), ("none", "none"), ("required", "any")])
def test_tool_choice_strings(choice, expected):
    assert parse({"messages": [{"role": "user", "content": "x"}], "tool_choice": choice}).tool_choice == expected


def test_text_completions():
    req = parse({"prompt": "Once upon", "max_tokens": 5, "echo": True}, "completions")
    assert req.operation == "completions" and req.prompt == "Once upon" and req.max_tokens == 5
    assert req.messages == [{"role": "user", "content": [{"type": "text", "text": "Once upon"}]}]
    assert req.extra == {"echo": True}


def test_embeddings():
    req = parse({"input": ["a", "b"], "dimensions": 8}, "embeddings")
    assert req.operation == "embeddings" and req.input == ["a", "b"] and req.extra == {"dimensions": 8}


@pytest.mark.parametrize("body,op,field", [
    ({}, "chat", "messages"),
    ({"messages": "hi"}, "chat", "messages"),
    ({"messages": []}, "chat", "messages"),
    ({"messages": [{"content": "x"}]}, "chat", "messages[0]"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "chat", "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "chat", "messages[0].content"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "chat", "messages[0].tool_call_id"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "chat", "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": True}, "chat", "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5}, "chat", "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": 3}, "chat", "stop"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": {}}, "chat", "tools"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {}}]},
     "chat", "tools[0].function.name"),
    ({"messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"}, "chat", "tool_choice"),
    ({"messages": [{"role": "user", "content": "x"}], "stream_options": []}, "chat", "stream_options"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "chat", "stream"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}]}, "chat",
     "messages[0].tool_calls[0].function"),
    ({}, "completions", "prompt"),
    ({}, "embeddings", "input"),
])
def test_bad_fields_are_400_naming_the_field(body, op, field):
    with pytest.raises(GatewayError) as exc:
        parse(body, op)
    assert exc.value.status == 400 and exc.value.kind == "invalid_request"
    assert exc.value.param == field and field.split("[")[0].split(".")[0] in exc.value.message


def test_missing_model_is_400():
    with pytest.raises(GatewayError) as exc:
        D.peek({"messages": []}, "chat")
    assert exc.value.status == 400 and exc.value.param == "model"
