"""CONFORMANCE.md points 1-10 on real Claude Code traffic: the two captured requests are parsed by
the Messages dialect and translated to an OpenAI body with the openai plugin's
``request_to_openai``, then checked field by field. (Point 10, the forwarded headers, is checked
against a fake Anthropic upstream in test_adapter.py and test_e2e.py.)"""

import copy
import json

import orjson
import pytest

from hookway_anthropic.dialect import AnthropicDialect
from hookway_openai.translate import request_to_openai

D = AnthropicDialect()
FIRST_TURN, TOOL_RESULT_TURN = "first-turn-2.1.197.json", "tool-result-turn-2.1.197.json"


@pytest.fixture
def load(claude_code_request):
    return lambda name: claude_code_request(name)["body"]


@pytest.fixture(params=[FIRST_TURN, TOOL_RESULT_TURN])
def captured(request, load):
    return load(request.param)


def translate(body: dict) -> dict:
    return request_to_openai(D.parse(body, "chat"), "llama-3.3-70b")


def test_fixtures_are_the_real_captures(load):
    first = load(FIRST_TURN)
    assert len(first["tools"]) == 24 and first["thinking"] == {"type": "adaptive"}
    assert any(m["role"] == "system" for m in first["messages"])


def test_point_1_system_first_and_the_in_messages_system_entry_kept_in_place(captured):
    out = translate(captured)["messages"]
    system_text = "\n\n".join(b["text"] for b in captured["system"])
    assert out[0] == {"role": "system", "content": system_text}
    assert "cache_control" not in orjson.dumps(out).decode()
    # The {"role": "system"} entry Claude Code puts after the first user turn stays there.
    assert [m["role"] for m in captured["messages"]][:2] == ["user", "system"]
    assert out[1]["role"] == "user"
    assert out[2] == {"role": "system", "content": captured["messages"][1]["content"]}


def test_point_2_user_text_blocks(captured):
    out = translate(captured)["messages"]
    texts = [b["text"] for b in captured["messages"][0]["content"]]
    assert out[1] == {"role": "user", "content": "\n\n".join(texts)}


def test_point_2_tool_use_and_tool_result_become_tool_calls_and_a_tool_message(load):
    body = load(TOOL_RESULT_TURN)
    out = translate(body)["messages"]
    tool_use = body["messages"][2]["content"][0]
    tool_result = body["messages"][3]["content"][0]
    assert [m["role"] for m in out] == ["system", "user", "system", "assistant", "tool"]
    call = out[3]["tool_calls"][0]
    assert out[3]["content"] is None
    assert call["id"] == tool_use["id"] == "toolu_1"
    assert call["type"] == "function" and call["function"]["name"] == "Bash"
    assert json.loads(call["function"]["arguments"]) == tool_use["input"]
    # Right after the assistant message that called it, with the matching id.
    assert out[4] == {"role": "tool", "tool_call_id": "toolu_1", "content": tool_result["content"]}


def test_point_2_is_error_and_text_after_results_are_kept(load):
    body = load(TOOL_RESULT_TURN)
    body["messages"][3]["content"] = [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "boom"}],
         "is_error": True},
        {"type": "text", "text": "and now?"}]
    out = translate(body)["messages"]
    assert out[4] == {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: boom"}
    assert out[5] == {"role": "user", "content": "and now?"}


def test_point_3_all_24_tools_with_byte_exact_names_and_schemas(captured):
    tools = translate(captured)["tools"]
    assert len(tools) == 24
    for sent, got in zip(captured["tools"], tools):
        assert got["type"] == "function"
        assert got["function"]["name"] == sent["name"]   # never re-cased
        assert got["function"]["parameters"] == sent["input_schema"]
        assert got["function"]["description"] == sent["description"]


@pytest.mark.parametrize("choice, expected", [
    ({"type": "auto"}, "auto"),
    ({"type": "any"}, "required"),
    ({"type": "none"}, "none"),
    ({"type": "tool", "name": "Bash"}, {"type": "function", "function": {"name": "Bash"}}),
])
def test_point_4_tool_choice(captured, choice, expected):
    body = dict(captured, tool_choice=choice)
    out = translate(body)
    assert out["tool_choice"] == expected
    assert "parallel_tool_calls" not in out


def test_point_4_disable_parallel_tool_use(captured):
    out = translate(dict(captured, tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
    assert out["parallel_tool_calls"] is False


def test_point_5_sampling_and_stop(captured):
    body = dict(captured, stop_sequences=["</done>"], temperature=0.3, top_p=0.8, top_k=20)
    out = translate(body)
    assert (out["stop"], out["temperature"], out["top_p"]) == (["</done>"], 0.3, 0.8)
    assert "top_k" not in out   # OpenAI takes no top_k
    assert request_to_openai(D.parse(body, "chat"), "m", supports_top_k=True)["top_k"] == 20


def test_point_6_max_tokens_passed(captured):
    assert translate(captured)["max_completion_tokens"] == 64000


def test_point_7_metadata_user_id(captured):
    # An OpenAI target takes `user` (Cerebras' 64-character limit is the cerebras plugin's).
    assert translate(captured)["user"] == captured["metadata"]["user_id"]


def test_point_8_adaptive_thinking_and_effort_become_reasoning_effort(captured):
    out = translate(captured)
    assert out["reasoning_effort"] == "high"   # output_config.effort
    budget = dict(captured, thinking={"type": "enabled", "budget_tokens": 3000})
    budget.pop("output_config")
    assert translate(budget)["reasoning_effort"] == "low"


def test_point_9_provider_specific_fields_dropped_never_rejected(captured):
    body = copy.deepcopy(captured)
    body["betas"] = ["foo-2026"]
    out = translate(body)
    # Top-level fields: only OpenAI ones (context_management, output_config, thinking, betas,
    # metadata are gone), and no cache_control anywhere (the tool schemas mention "metadata").
    assert set(out) == {"model", "messages", "max_completion_tokens", "tools", "reasoning_effort", "user",
                        "stream", "stream_options"}
    assert '"cache_control"' not in orjson.dumps(out).decode()
    for message in out["messages"]:
        assert set(message) <= {"role", "content", "tool_calls", "tool_call_id"}


def test_the_captured_body_is_not_changed_by_parsing(captured):
    before = copy.deepcopy(captured)
    translate(captured)
    assert captured == before
