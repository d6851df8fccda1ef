"""Rendering canonical answers, events and errors in the OpenAI wire format; usage taps."""

from __future__ import annotations

import orjson
import pytest

from hookway import ir
from hookway.errors import GatewayError, upstream_error
from hookway.sse import SSEParser
from hookway_openai.dialect import BodyUsageTap, OpenAIDialect, StreamUsageTap

D = OpenAIDialect()


def sse_events(data: bytes) -> list[tuple[str | None, str]]:
    return list(SSEParser().feed(data))


def render_all(renderer, events) -> bytes:
    return b"".join(renderer(e) for e in events)


TOOL_RESPONSE = ir.Response("chatcmpl-x", "client/model", [
    {"type": "thinking", "thinking": "hmm", "signature": "s"},
    {"type": "text", "text": "Calling."},
    {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"cmd": "ls"}},
], "tool_use", usage=ir.Usage(input_tokens=10, output_tokens=4, cache_read_input_tokens=6))


def test_render_chat_completion():
    body = D.render_response(TOOL_RESPONSE, None, "chat")
    assert body["object"] == "chat.completion" and body["model"] == "client/model" and body["id"] == "chatcmpl-x"
    assert body["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Calling.", "reasoning_content": "hmm",
        "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "Bash", "arguments": '{"cmd":"ls"}'}}]}}]
    assert body["usage"] == {"prompt_tokens": 16, "completion_tokens": 4, "total_tokens": 20,
                             "prompt_tokens_details": {"cached_tokens": 6}}


@pytest.mark.parametrize("stop,finish", [("end_turn", "stop"), ("max_tokens", "length"), ("stop_sequence", "stop"),
                                         ("refusal", "content_filter"), (None, "stop")])
def test_render_finish_reasons(stop, finish):
    resp = ir.Response("i", "m", [{"type": "text", "text": "x"}], stop)
    assert D.render_response(resp, None, "chat")["choices"][0]["finish_reason"] == finish


def test_render_text_completion():
    resp = ir.Response("cmpl-1", "m", [{"type": "text", "text": "abc"}], "max_tokens", usage=ir.Usage(3, 3))
    body = D.render_response(resp, None, "completions")
    assert body["object"] == "text_completion"
    assert body["choices"] == [{"index": 0, "text": "abc", "logprobs": None, "finish_reason": "length"}]


def _stream_request(include_usage=True):
    return ir.Request(model="client/model", messages=[], stream=True, include_usage=include_usage)


def test_stream_renderer_chunks_in_order():
    render = D.stream_renderer(_stream_request(), "chat", "client/model")
    events = ir.response_events(TOOL_RESPONSE)
    out = render_all(render, events)
    frames = sse_events(out)
    assert frames[-1] == (None, "[DONE]")
    chunks = [orjson.loads(d) for _, d in frames[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["id"] for c in chunks} == {"chatcmpl-x"} and {c["model"] for c in chunks} == {"client/model"}
    deltas = [c["choices"][0]["delta"] if c["choices"] else None for c in chunks]
    assert deltas[:5] == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "hmm"},
        {"content": "Calling."},
        {"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "Bash", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"cmd":"ls"}'}}]},
    ]
    assert chunks[5]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[6]["choices"] == [] and chunks[6]["usage"]["prompt_tokens"] == 16
    assert len(chunks) == 7


def test_stream_renderer_numbers_parallel_tool_calls():
    render = D.stream_renderer(_stream_request(False), "chat", "m")
    events = [ir.MessageStart("i", "m"), ir.BlockStart(0, "text"), ir.BlockDelta(0, "text", "x"), ir.BlockStop(0),
              ir.BlockStart(1, "tool_use", "a", "A"), ir.BlockDelta(1, "json", "{}"), ir.BlockStop(1),
              ir.BlockStart(2, "tool_use", "b", "B"), ir.BlockDelta(2, "json", "{}"), ir.BlockStop(2),
              ir.MessageDelta("tool_use", ir.Usage()), ir.MessageStop()]
    chunks = [orjson.loads(d) for _, d in sse_events(render_all(render, events))[:-1]]
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if c["choices"] and "tool_calls" in c["choices"][0]["delta"]]
    assert [c["index"] for c in calls] == [0, 0, 1, 1]
    assert not any(c["choices"] == [] for c in chunks)   # no usage chunk: not asked


def test_stream_renderer_ping_and_error_without_done():
    render = D.stream_renderer(_stream_request(), "chat", "m")
    assert render(ir.Ping()) == b": ping\n\n"
    render(ir.MessageStart("i", "m"))
    out = render(ir.StreamError(GatewayError("bad_gateway", "upstream broke", status=502)))
    assert sse_events(out) == [(None, orjson.dumps({"error": {"message": "upstream broke", "type": "api_error",
                                                               "code": None, "param": None}}).decode())]
    assert render(ir.MessageStop()) == b""   # never a [DONE] after an error


def test_text_completion_stream_renderer():
    render = D.stream_renderer(ir.Request(model="m", messages=[], operation="completions", include_usage=False),
                               "completions", "m")
    out = render_all(render, [ir.MessageStart("cmpl-1", "m"), ir.BlockStart(0, "text"), ir.BlockDelta(0, "text", "ab"),
                              ir.BlockStop(0), ir.MessageDelta("end_turn", ir.Usage()), ir.MessageStop()])
    frames = sse_events(out)
    chunks = [orjson.loads(d) for _, d in frames[:-1]]
    assert [c["choices"][0]["text"] for c in chunks] == ["ab", ""]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[0]["object"] == "text_completion"
    assert frames[-1] == (None, "[DONE]")


@pytest.mark.parametrize("kind,status,type_,code", [
    ("invalid_request", 400, "invalid_request_error", None),
    ("unsupported_operation", 400, "invalid_request_error", "unsupported_operation"),
    ("authentication", 401, "authentication_error", None),
    ("billing", 402, "insufficient_quota", "insufficient_quota"),
    ("permission", 403, "permission_error", None),
    ("not_found", 404, "not_found_error", None),
    ("rate_limit", 429, "rate_limit_error", "rate_limit_exceeded"),
    ("api_error", 500, "api_error", None),
    ("bad_gateway", 502, "api_error", None),
    ("timeout", 504, "timeout", None),
    ("overloaded", 529, "api_error", None),
])
def test_render_error_shapes(kind, status, type_, code):
    got_status, body = D.render_error(GatewayError(kind, "msg", param="p"))
    assert got_status == status
    assert body == {"error": {"message": "msg", "type": type_, "code": code, "param": "p"}}


def test_render_error_model_not_found_and_upstream():
    _, body = D.render_error(GatewayError("not_found", "no", param="model"))
    assert body["error"]["code"] == "model_not_found"
    status, body = D.render_error(upstream_error(429, "slow down", provider="up", retry_after="3"))
    assert status == 429 and body["error"]["type"] == "rate_limit_error" and body["error"]["message"] == "up: slow down"


def test_render_stream_error_bytes():
    out = D.render_stream_error(GatewayError("timeout", "late"))
    assert out.startswith(b"data: ") and out.endswith(b"\n\n")
    assert orjson.loads(out[6:])["error"]["type"] == "timeout"


def test_stream_usage_tap_reads_only_usage_lines_across_reads():
    tap = D.usage_tap("chat", True)
    assert isinstance(tap, StreamUsageTap)
    raw = (b'data: {"choices":[{"delta":{"content":"x"}}],"usage":null}\n\n'
           b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":4,'
           b'"prompt_tokens_details":{"cached_tokens":3}}}\n\ndata: [DONE]\n\n')
    cut = raw.index(b"prompt_tokens") + 3
    tap.feed(raw[:cut])
    assert tap.usage == ir.Usage()
    tap.feed(raw[cut:])
    assert tap.usage == ir.Usage(input_tokens=8, output_tokens=4, cache_read_input_tokens=3)


def test_stream_usage_tap_reads_responses_completed_event():
    tap = D.usage_tap("responses", True)
    tap.feed(b'event: response.completed\ndata: {"type":"response.completed","response":{"usage":'
             b'{"input_tokens":5,"output_tokens":2}}}\n\n')
    assert tap.usage == ir.Usage(input_tokens=5, output_tokens=2)


def test_body_usage_tap():
    tap = D.usage_tap("chat", False)
    assert isinstance(tap, BodyUsageTap)
    tap.feed(b'{"choices":[],"usage":{"prompt_tokens":')
    tap.feed(b'9,"completion_tokens":1}}')
    assert tap.usage == ir.Usage(input_tokens=9, output_tokens=1)
    bad = D.usage_tap("chat", False)
    bad.feed(b"<html>")
    assert bad.usage == ir.Usage()
    assert D.usage_tap("images", False) is None


def test_stream_usage_tap_spaced_json_and_null_usage_after():
    tap = D.usage_tap("chat", True)
    tap.feed(b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}\n\n')
    tap.feed(b'data: {"choices": [], "usage": null}\n\ndata: [DONE]\n\n')
    assert tap.usage == ir.Usage(input_tokens=2, output_tokens=1)


def test_stream_usage_tap_is_done_only_after_done_marker():
    tap = D.usage_tap("chat", True)
    tap.feed(b'data: {"choices":[{"delta":{"content":"[DONE]"},"finish_reason":null}]}\n\n')
    assert not tap.done   # the marker inside content, before the finish, does not count
    tap.feed(b'data: {"choices":[{"delta":{},"finish_reason":"tool_calls"}]}\n\n')
    assert tap.stop_reason == "tool_use" and not tap.done
    tap.feed(b"data: [DONE]\n\n")
    assert tap.done
    responses = D.usage_tap("responses", True)
    responses.feed(b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"x"}\n\n')
    assert not responses.done
    responses.feed(b'event: response.completed\ndata: {"type":"response.completed","response":'
                   b'{"status":"completed","usage":{"input_tokens":5,"output_tokens":2}}}\n\n')
    assert responses.done
