"""What the core reads from pass-through bytes: the usage taps' ``stop_reason`` and
``OpenAIDialect.response_from_bytes`` (log sinks)."""

from __future__ import annotations

import orjson
import pytest

from hookway import ir
from hookway_openai import responses
from hookway_openai.dialect import ChatStreamRenderer, OpenAIDialect

D = OpenAIDialect()


def chunk(finish=None, delta=None, spaced=False, usage=None) -> bytes:
    data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}], "usage": usage}
    if spaced:
        return b"data: " + orjson.dumps(data).replace(b'":', b'": ') + b"\n\n"
    return b"data: " + orjson.dumps(data) + b"\n\n"


# --- stop_reason of the taps -----------------------------------------------------------------------

@pytest.mark.parametrize("finish,stop", [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
                                         ("function_call", "tool_use"), ("content_filter", "refusal"),
                                         ("eos", "end_turn")])
@pytest.mark.parametrize("spaced", [False, True])
def test_stream_tap_maps_finish_reason_whatever_the_read_boundaries(finish, stop, spaced):
    raw = (chunk(delta={"content": "a"}, spaced=spaced) + chunk(finish, spaced=spaced)
           + b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\ndata: [DONE]\n\n')
    for cut in range(0, len(raw), 7):
        tap = D.usage_tap("chat", True)
        tap.feed(raw[:cut])
        tap.feed(raw[cut:])
        assert tap.stop_reason == stop, cut
        assert tap.usage == ir.Usage(input_tokens=3, output_tokens=2)


def test_stream_tap_without_a_finish_reason_has_none():
    tap = D.usage_tap("chat", True)
    tap.feed(chunk(delta={"content": "a"}) + chunk(delta={"content": "b"}))
    assert tap.stop_reason is None   # "finish_reason":null on every chunk is not a finish


def test_stream_tap_first_reads_without_the_key_then_spaced_json():
    tap = D.usage_tap("chat", True)
    tap.feed(b'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n')
    tap.feed(b'data: {"choices": [{"index": 0, "delta": {"content": "say \\"finish_reason\\":\\"stop\\""}, '
             b'"finish_reason": null}]}\n\n')
    assert tap.stop_reason is None   # the key quoted inside content does not count
    tap.feed(chunk("length", spaced=True))
    assert tap.stop_reason == "max_tokens"


def test_stream_tap_text_completions():
    tap = D.usage_tap("completions", True)
    tap.feed(b'data: {"object":"text_completion","choices":[{"index":0,"text":"x","finish_reason":null}]}\n\n'
             b'data: {"object":"text_completion","choices":[{"index":0,"text":"","finish_reason":"length"}]}\n\n')
    assert tap.stop_reason == "max_tokens"


@pytest.mark.parametrize("response,stop", [
    ({"status": "completed", "output": [{"type": "message"}]}, "end_turn"),
    ({"status": "completed", "output": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "tool_use"),
    ({"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "output": []}, "max_tokens"),
    ({"status": "incomplete", "incomplete_details": {"reason": "content_filter"}, "output": []}, "refusal"),
])
def test_stream_tap_responses_final_event(response, stop):
    tap = D.usage_tap("responses", True)
    kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
    event = {"type": kind, "response": {**response, "usage": {"input_tokens": 4, "output_tokens": 1}}}
    tap.feed(f"event: {kind}\n".encode() + b"data: " + orjson.dumps(event) + b"\n\n")
    assert tap.stop_reason == stop and tap.usage == ir.Usage(input_tokens=4, output_tokens=1)


@pytest.mark.parametrize("body,stop", [
    ({"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]}, "end_turn"),
    ({"choices": [{"message": {"content": "x"}, "finish_reason": "length"}]}, "max_tokens"),
    ({"choices": [{"message": {"content": None}, "finish_reason": "content_filter"}]}, "refusal"),
    ({"choices": [{"message": {"tool_calls": [{"id": "c"}]}, "finish_reason": "tool_calls"}]}, "tool_use"),
    ({"choices": [{"message": {"tool_calls": [{"id": "c"}]}, "finish_reason": "stop"}]}, "tool_use"),
    ({"object": "text_completion", "choices": [{"text": "x", "finish_reason": "length"}]}, "max_tokens"),
    ({"object": "response", "status": "completed", "output": []}, "end_turn"),
    ({"object": "list", "data": [{"embedding": [0.1]}]}, None),
    ({"choices": []}, None),
])
def test_body_tap_stop_reason(body, stop):
    tap = D.usage_tap("chat", False)
    raw = orjson.dumps({**body, "usage": {"prompt_tokens": 5, "completion_tokens": 1}})
    tap.feed(raw[:9])
    tap.feed(raw[9:])
    assert tap.stop_reason == stop
    assert tap.usage == ir.Usage(input_tokens=5, output_tokens=1)


def test_body_tap_unreadable():
    tap = D.usage_tap("chat", False)
    tap.feed(b"<html>")
    assert tap.stop_reason is None and tap.usage == ir.Usage()


# --- response_from_bytes ---------------------------------------------------------------------------

ANSWER = ir.Response("chatcmpl-abc", "m", [
    {"type": "thinking", "thinking": "Let me see.", "signature": ""},
    {"type": "text", "text": "Listing ✓"},
    {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"cmd": "ls"}},
    {"type": "tool_use", "id": "call_2", "name": "Read", "input": {"path": "a"}},
], "tool_use", usage=ir.Usage(input_tokens=10, output_tokens=4, cache_read_input_tokens=6))


def chat_stream_bytes(response: ir.Response, include_usage: bool = True) -> bytes:
    render = ChatStreamRenderer(response.model, include_usage)
    return b"".join(render(ev) for ev in ir.response_events(response))


@pytest.mark.parametrize("cut_into", [1, 3, 1000])
def test_chat_stream_read_back(cut_into):
    raw = chat_stream_bytes(ANSWER)
    got = D.response_from_bytes(raw, "chat", True)
    assert (got.id, got.model, got.content, got.stop_reason, got.usage) == (
        ANSWER.id, ANSWER.model, ANSWER.content, ANSWER.stop_reason, ANSWER.usage)


@pytest.mark.parametrize("stop", ["end_turn", "max_tokens"])
def test_chat_json_body_read_back(stop):
    answer = ir.Response("chatcmpl-j", "m", [{"type": "text", "text": "hi"}], stop, usage=ir.Usage(3, 1))
    raw = orjson.dumps(D.render_response(answer, None, "chat"))
    got = D.response_from_bytes(raw, "chat", False)
    assert (got.id, got.content, got.stop_reason, got.usage) == ("chatcmpl-j", answer.content, stop, ir.Usage(3, 1))
    # A server that ignored `stream: true` answered whole: still read.
    assert D.response_from_bytes(raw, "chat", True).content == answer.content


def test_text_completions_read_back():
    answer = ir.Response("cmpl-1", "m", [{"type": "text", "text": "once upon"}], "max_tokens", usage=ir.Usage(2, 2))
    render = ChatStreamRenderer("m", True, text_completion=True)
    raw = b"".join(render(ev) for ev in ir.response_events(answer))
    got = D.response_from_bytes(raw, "completions", True)
    assert got.content == answer.content and got.stop_reason == "max_tokens" and got.usage == ir.Usage(2, 2)
    body = orjson.dumps(D.render_response(answer, None, "completions"))
    assert D.response_from_bytes(body, "completions", False).content == answer.content


def test_cut_stream_gives_what_arrived_without_a_stop_reason():
    raw = chat_stream_bytes(ir.Response("c", "m", [{"type": "text", "text": "partial answer"}]))
    text_event_end = raw.index(b"\n\n", raw.index(b"partial answer")) + 2
    got = D.response_from_bytes(raw[:text_event_end + 20], "chat", True)   # cut inside the next event
    assert got is not None and got.stop_reason is None
    assert got.content == [{"type": "text", "text": "partial answer"}]


@pytest.mark.parametrize("raw,op,stream", [
    (b"", "chat", True),
    (b"<html>bad gateway</html>", "chat", False),
    (b"<html>bad gateway</html>", "chat", True),
    (b'{"error": {"message": "nope"}}', "chat", False),
    (b"[1, 2]", "chat", False),
    (b": keep-alive\n\n", "chat", True),
    (b'{"object": "list", "data": [{"embedding": [0.1]}]}', "embeddings", False),
    (b'{"error": {"message": "nope"}}', "responses", False),
    (b"event: response.created\ndata: {}\n\n", "responses", True),
])
def test_unreadable_bytes_are_none(raw, op, stream):
    assert D.response_from_bytes(raw, op, stream) is None


def test_responses_api_body_and_stream_read_back():
    answer = ir.Response("x", "m", [
        {"type": "thinking", "thinking": "hmm", "signature": ""},
        {"type": "text", "text": "Paris."},
        {"type": "tool_use", "id": "call_9", "name": "lookup", "input": {"q": "x"}},
    ], "tool_use", usage=ir.Usage(input_tokens=9, output_tokens=2, cache_read_input_tokens=1))
    body = orjson.dumps(D.render_response(answer, None, "responses"))
    render = responses.StreamRenderer("m", None)
    stream = b"".join(render(ev) for ev in ir.response_events(answer))
    for raw, is_stream in ((body, False), (stream, True)):
        got = D.response_from_bytes(raw, "responses", is_stream)
        assert got.id.startswith("resp_") and got.model == "m"
        assert (got.content, got.stop_reason, got.usage) == (answer.content, "tool_use", answer.usage)
    incomplete = ir.Response("x", "m", [{"type": "text", "text": "cut"}], "max_tokens")
    body = orjson.dumps(D.render_response(incomplete, None, "responses"))
    assert D.response_from_bytes(body, "responses", False).stop_reason == "max_tokens"
