"""The Responses API part of the dialect: parse, whole answers, stream events."""

from __future__ import annotations

import orjson
import pytest

from hookway import ir
from hookway.errors import GatewayError
from hookway.sse import SSEParser
from hookway_openai.dialect import OpenAIDialect

D = OpenAIDialect()


def parse(body):
    return D.parse({"model": "p/m", **body}, "responses")


def test_parse_items():
    req = parse({"instructions": "Be brief.", "max_output_tokens": 100, "reasoning": {"effort": "low"},
                 "store": False, "input": [
                     {"role": "developer", "content": "dev rules"},
                     {"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                                  {"type": "input_image", "image_url": "https://x.test/a.png"}]},
                     {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
                     {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a": 1}'},
                     {"type": "function_call_output", "call_id": "c1", "output": "done"},
                     {"type": "reasoning", "summary": []},
                 ]})
    assert req.operation == "responses" and req.max_tokens == 100 and req.reasoning_effort == "low"
    assert req.system == [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "dev rules"}]
    assert req.messages == [
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]},
        {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                                          {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1",
                                      "content": [{"type": "text", "text": "done"}], "is_error": False}]},
    ]
    assert req.extra == {"store": False}


@pytest.mark.parametrize("body,field", [
    ({}, "input"),
    ({"input": []}, "input"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0]"),
    ({"input": "x", "tool_choice": "maybe"}, "tool_choice"),
    ({"input": "x", "max_output_tokens": "many"}, "max_output_tokens"),
    ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
])
def test_parse_errors_name_the_field(body, field):
    with pytest.raises(GatewayError) as exc:
        parse(body)
    assert exc.value.status == 400 and exc.value.param == field


def test_whole_answer_incomplete_on_max_tokens():
    resp = ir.Response("x", "m", [{"type": "text", "text": "cut"}], "max_tokens", usage=ir.Usage(5, 9))
    body = D.render_response(resp, None, "responses")
    assert body["object"] == "response" and body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["content"][0]["text"] == "cut"
    assert body["usage"]["total_tokens"] == 14


def test_stream_events_and_error():
    render = D.stream_renderer(None, "responses", "p/m")
    out = b"".join(render(e) for e in [ir.MessageStart("i", "m"), ir.BlockStart(0, "text"),
                                       ir.BlockDelta(0, "text", "ab")])
    out += render(ir.StreamError(GatewayError("bad_gateway", "upstream broke", status=502)))
    events = list(SSEParser().feed(out))
    names = [name for name, _ in events]
    assert names == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", "response.output_text.delta", "error"]
    error = orjson.loads(events[-1][1])
    assert error["type"] == "error" and error["message"] == "upstream broke"
    assert error["error"]["type"] == "api_error"   # what SDKs look for to raise
    assert [orjson.loads(d)["sequence_number"] for _, d in events] == list(range(6))
    assert render(ir.MessageStop()) == b""
