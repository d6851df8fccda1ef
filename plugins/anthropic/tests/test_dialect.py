"""The Messages dialect on its own: parse, validation errors, rendering, error mapping, usage taps."""

import orjson
import pytest

from hookway import ir
from hookway.errors import GatewayError, upstream_error
from hookway_anthropic.dialect import AnthropicDialect

D = AnthropicDialect()


def body(**kw):
    b = {"model": "cerebras/llama-3.3-70b", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    b.update(kw)
    return b


def events_of(data: bytes) -> list[tuple[str, dict]]:
    """Strictly framed SSE -> (event, data) pairs; fails on anything not `event:`+`data:` framed."""
    out = []
    assert data.endswith(b"\n\n"), data[-40:]
    for raw in data[:-2].split(b"\n\n"):
        lines = raw.split(b"\n")
        assert len(lines) == 2 and lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), raw
        name = lines[0][7:].decode()
        payload = orjson.loads(lines[1][6:])
        assert payload["type"] == name
        out.append((name, payload))
    return out


# --- parse ---------------------------------------------------------------------------------------

def test_parse_normalises_content_and_system():
    req = D.parse(body(system="be brief", messages=[
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "mid-conversation note"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {"c": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
    ]), "chat")
    assert req.system == [{"type": "text", "text": "be brief"}]
    assert req.messages[0] == {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    assert req.messages[1] == {"role": "system", "content": [{"type": "text", "text": "mid-conversation note"}]}
    assert req.messages[3]["content"][0] == {"type": "tool_result", "tool_use_id": "t1",
                                             "content": [{"type": "text", "text": "ok"}], "is_error": False}
    assert req.max_tokens == 100 and req.stream is False and req.operation == "chat"


def test_parse_keeps_system_blocks_with_cache_control_and_does_not_touch_the_body():
    system = [{"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}}]
    tool_result = {"type": "tool_result", "tool_use_id": "t1", "content": "out"}
    b = body(system=system, messages=[{"role": "user", "content": [tool_result]}])
    req = D.parse(b, "chat")
    assert req.system == system
    assert tool_result == {"type": "tool_result", "tool_use_id": "t1", "content": "out"}   # not mutated


def test_parse_sampling_tools_and_choice():
    req = D.parse(body(temperature=0.2, top_p=0.9, top_k=40, stop_sequences=["END"], stream=True,
                       metadata={"user_id": "u-1"},
                       tools=[{"name": "get_Weather", "description": "d", "input_schema": {"type": "object"}},
                              {"type": "web_search_20250305", "name": "web_search"}],
                       tool_choice={"type": "any", "disable_parallel_tool_use": True}), "chat")
    assert (req.temperature, req.top_p, req.top_k, req.stop, req.stream) == (0.2, 0.9, 40, ["END"], True)
    assert req.user == "u-1"
    assert [t.name for t in req.tools] == ["get_Weather"]
    assert req.tools[0].input_schema == {"type": "object"}
    assert req.extra["server_tools"] == [{"type": "web_search_20250305", "name": "web_search"}]
    assert req.tool_choice == "any" and req.parallel_tool_calls is False
    req = D.parse(body(tool_choice={"type": "tool", "name": "x"}), "chat")
    assert req.tool_choice == {"type": "tool", "name": "x"} and req.parallel_tool_calls is None


@pytest.mark.parametrize("thinking, output_config, budget, effort", [
    ({"type": "enabled", "budget_tokens": 2048}, None, 2048, "low"),
    ({"type": "enabled", "budget_tokens": 10000}, None, 10000, "medium"),
    ({"type": "enabled", "budget_tokens": 32000}, None, 32000, "high"),
    ({"type": "adaptive"}, {"effort": "low"}, None, "low"),
    ({"type": "adaptive"}, None, None, "high"),
    (None, {"effort": "medium"}, None, "medium"),
    ({"type": "disabled"}, None, None, None),
])
def test_parse_reasoning(thinking, output_config, budget, effort):
    extra = {}
    if thinking:
        extra["thinking"] = thinking
    if output_config:
        extra["output_config"] = output_config
    req = D.parse(body(**extra), "chat")
    assert (req.reasoning_budget, req.reasoning_effort) == (budget, effort)


def test_parse_puts_unknown_fields_in_extra():
    req = D.parse(body(context_management={"edits": []}, output_config={"effort": "high"}, betas=["x"],
                       service_tier="auto"), "chat")
    assert req.extra == {"context_management": {"edits": []}, "output_config": {"effort": "high"},
                         "betas": ["x"], "service_tier": "auto"}


def test_count_tokens_needs_no_max_tokens():
    b = body()
    del b["max_tokens"]
    req = D.parse(b, "count_tokens")
    assert req.max_tokens is None and req.operation == "count_tokens"
    assert D.peek(dict(b, stream=True), "count_tokens") == ("cerebras/llama-3.3-70b", False)


@pytest.mark.parametrize("change, param", [
    ({"messages": None}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": "100"}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"model": None}, "model"),
    ({"messages": [{"content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user"}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages.0.content.0.type"),
    ({"system": 5}, "system"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_k": 1.5}, "top_k"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"tools": {"name": "x"}}, "tools"),
    ({"tools": [{"description": "no name"}]}, "tools.0.name"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
])
def test_validation_errors_are_400_naming_the_field(change, param):
    b = body()
    for k, v in change.items():
        if v is None:
            b.pop(k)
        else:
            b[k] = v
    with pytest.raises(GatewayError) as exc:
        D.parse(b, "chat")
    err = exc.value
    assert err.status == 400 and err.param == param
    assert param.split(".")[0] in err.message
    status, rendered = D.render_error(err)
    assert status == 400
    assert rendered == {"type": "error", "error": {"type": "invalid_request_error", "message": err.message}}


# --- non-stream answers ----------------------------------------------------------------------------

def test_render_response_is_a_message():
    resp = ir.Response(id="chatcmpl-9", model="cerebras/llama-3.3-70b", content=[
        {"type": "thinking", "thinking": "hmm"},
        {"type": "text", "text": "hi"},
        {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}}],
        stop_reason="end_turn", usage=ir.Usage(10, 3, 4, 0))
    req = D.parse(body(), "chat")
    out = D.render_response(resp, req, "chat")
    assert out == {
        "id": "msg_chatcmpl-9", "type": "message", "role": "assistant", "model": "cerebras/llama-3.3-70b",
        "content": [{"type": "thinking", "thinking": "hmm", "signature": ""}, {"type": "text", "text": "hi"},
                    {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4,
                  "output_tokens": 3}}


# --- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("err, status, kind", [
    (GatewayError("invalid_request", "m"), 400, "invalid_request_error"),
    (GatewayError("unsupported_operation", "m"), 400, "invalid_request_error"),
    (GatewayError("authentication", "m"), 401, "authentication_error"),
    (GatewayError("billing", "m"), 402, "billing_error"),
    (GatewayError("permission", "m"), 403, "permission_error"),
    (GatewayError("not_found", "m"), 404, "not_found_error"),
    (GatewayError("request_too_large", "m"), 413, "request_too_large"),
    (GatewayError("rate_limit", "m"), 429, "rate_limit_error"),
    (GatewayError("api_error", "m"), 500, "api_error"),
    (GatewayError("bad_gateway", "m"), 502, "api_error"),
    (GatewayError("unavailable", "m"), 503, "api_error"),
    (GatewayError("timeout", "m"), 504, "timeout_error"),
    (GatewayError("overloaded", "m"), 529, "overloaded_error"),
    (upstream_error(529, "busy", provider="p"), 529, "overloaded_error"),
    (upstream_error(503, "down", provider="p"), 503, "api_error"),
    (GatewayError("something_new", "m", status=507), 507, "api_error"),
])
def test_error_mapping(err, status, kind):
    got_status, got = D.render_error(err)
    assert got_status == status
    assert got == {"type": "error", "error": {"type": kind, "message": err.message}}


def test_render_stream_error_bytes():
    data = D.render_stream_error(GatewayError("overloaded", "busy"))
    assert data == b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n'


# --- stream renderer guards ------------------------------------------------------------------------

def render(events, model="m"):
    r = D.stream_renderer(None, "chat", model)
    return b"".join(r(e) for e in events)


def test_renderer_exact_bytes_of_a_simple_stream():
    data = render([ir.MessageStart("abc", "up", ir.Usage(input_tokens=7)), ir.BlockStart(0, "text"),
                   ir.BlockDelta(0, "text", "Hi"), ir.BlockStop(0),
                   ir.MessageDelta("end_turn", ir.Usage(output_tokens=2)), ir.MessageStop()], model="cerebras/x")
    usage_start = b'{"input_tokens":7,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0}'
    usage_end = b'{"input_tokens":7,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":2}'
    assert data == (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_abc","type":"message",'
        b'"role":"assistant","model":"cerebras/x","content":[],"stop_reason":null,"stop_sequence":null,'
        b'"usage":' + usage_start + b'}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
        b'"usage":' + usage_end + b'}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_renderer_block_shapes():
    evs = events_of(render([ir.MessageStart("m1", "up"), ir.BlockStart(0, "thinking"),
                            ir.BlockDelta(0, "thinking", "t"), ir.BlockDelta(0, "signature", "sig=="),
                            ir.BlockStop(0), ir.BlockStart(1, "tool_use", "toolu_1", "Bash"),
                            ir.BlockDelta(1, "json", '{"a":'), ir.BlockStop(1),
                            ir.MessageDelta("tool_use", ir.Usage(output_tokens=1)), ir.MessageStop()]))
    assert evs[1][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert evs[2][1]["delta"] == {"type": "thinking_delta", "thinking": "t"}
    assert evs[3][1]["delta"] == {"type": "signature_delta", "signature": "sig=="}
    assert evs[5][1]["content_block"] == {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}
    assert evs[6][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"a":'}


def test_renderer_guards_the_invariants():
    # No MessageStart, two blocks with no stop in between, odd canonical indices, a delta for
    # a closed block, a message end with a block still open, no MessageDelta.
    evs = events_of(render([ir.BlockStart(3, "text"), ir.BlockDelta(3, "text", "a"),
                            ir.BlockStart(7, "tool_use", "t1", "f"), ir.BlockDelta(7, "json", "{}"),
                            ir.BlockDelta(3, "json", "lost"), ir.BlockStop(3),
                            ir.MessageStop(), ir.BlockStart(9, "text")]))
    names = [n for n, _ in evs]
    assert names == ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
                     "message_stop"]
    assert [d["index"] for n, d in evs if n.startswith("content_block")] == [0, 0, 0, 1, 1, 1]
    assert evs[7][1]["delta"]["stop_reason"] == "tool_use"


def test_renderer_sends_nothing_after_an_error():
    data = render([ir.MessageStart("x", "m"), ir.BlockStart(0, "text"), ir.BlockDelta(0, "text", "par"),
                   ir.StreamError(GatewayError("bad_gateway", "cut")), ir.MessageDelta("end_turn", ir.Usage()),
                   ir.MessageStop(), ir.Ping()])
    names = [n for n, _ in events_of(data)]
    assert names[-1] == "error" and "message_stop" not in names and "message_delta" not in names


def test_ping_bytes():
    assert D.stream_renderer(None, "chat", "m")(ir.Ping()) == b'event: ping\ndata: {"type": "ping"}\n\n'


# --- usage taps ------------------------------------------------------------------------------------

def test_stream_usage_tap_reads_split_chunks(fake_anthropic):
    data = b"".join(fake_anthropic.stream_events(fake_anthropic.Reply(usage=(30, 9, 20, 5)), "claude"))
    tap = D.usage_tap("chat", True)
    for i in range(0, len(data), 7):   # byte chunks that split events and lines
        tap.feed(data[i:i + 7])
    assert tap.usage == ir.Usage(input_tokens=30, output_tokens=9, cache_read_input_tokens=20,
                                 cache_creation_input_tokens=5)


def test_json_usage_tap():
    tap = D.usage_tap("chat", False)
    tap.feed(orjson.dumps({"usage": {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 1}}))
    assert tap.usage == ir.Usage(3, 4, 1, 0)
    assert D.usage_tap("count_tokens", False) is None


def test_usage_taps_expose_the_stop_reason(fake_anthropic):
    reply = fake_anthropic.Reply(content=[{"type": "text", "text": "abc"}], stop_reason="max_tokens")
    data = b"".join(fake_anthropic.stream_events(reply, "claude"))
    tap = D.usage_tap("chat", True)
    assert tap.stop_reason is None
    for i in range(0, len(data), 5):
        tap.feed(data[i:i + 5])
    assert tap.stop_reason == "max_tokens"
    tap = D.usage_tap("chat", False)
    assert tap.stop_reason is None
    tap.feed(orjson.dumps({"type": "message", "content": [], "stop_reason": "tool_use", "usage": {"output_tokens": 2}}))
    assert tap.stop_reason == "tool_use" and tap.usage.output_tokens == 2


def test_stream_usage_tap_is_done_only_after_message_stop(fake_anthropic):
    events = fake_anthropic.stream_events(fake_anthropic.Reply(), "claude")
    assert events[-1].startswith(b"event: message_stop")
    tap = D.usage_tap("chat", True)
    tap.feed(b"".join(events[:-1]))
    assert tap.stop_reason == "end_turn" and not tap.done
    tap.feed(events[-1])
    assert tap.done


# --- malformed content blocks (see also test_e2e.py) ---------------------------------------------

@pytest.mark.parametrize("content, param, message", [
    ([{"type": "text", "text": 5}], "messages.0.content.0.text", "messages.0.content.0.text: expected a string"),
    ([{"type": "text", "text": None}], "messages.0.content.0.text", "messages.0.content.0.text: expected a string"),
    ([{"type": "image", "source": 5}], "messages.0.content.0.source", "messages.0.content.0.source: expected an object"),
    ([{"type": "image", "source": {"type": "base64", "media_type": 5, "data": "x"}}],
     "messages.0.content.0.source.media_type", "messages.0.content.0.source.media_type: expected a string"),
    ([{"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": 1}]}}],
     "messages.0.content.0.source.content.0.text", "messages.0.content.0.source.content.0.text: expected a string"),
    ([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": 5}]}],
     "messages.0.content.0.content.0.text", "messages.0.content.0.content.0.text: expected a string"),
    ([{"type": "tool_result", "tool_use_id": "t", "content": 5}],
     "messages.0.content.0.content", "messages.0.content.0.content: expected a string or a list of content blocks"),
    ([{"type": "tool_use", "id": "t", "name": "x", "input": []}],
     "messages.0.content.0.input", "messages.0.content.0.input: expected an object"),
    ([{"type": "redacted_thinking"}], "messages.0.content.0.data", "messages.0.content.0.data: field required"),
])
def test_malformed_blocks_are_400_naming_the_path(content, param, message):
    for operation in ("chat", "count_tokens"):
        with pytest.raises(GatewayError) as exc:
            D.parse(body(messages=[{"role": "user", "content": content}]), operation)
        err = exc.value
        assert (err.status, err.kind, err.param, err.message) == (400, "invalid_request", param, message)


def test_unknown_block_and_source_kinds_travel_as_they_came():
    content = [{"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {"q": "x"}},
               {"type": "image", "source": {"type": "some_future_source", "ref": 1}},
               {"type": "document", "source": {"type": "file", "file_id": "file_1"}}]
    req = D.parse(body(messages=[{"role": "user", "content": content}]), "chat")
    assert req.messages[0]["content"] == content


@pytest.mark.parametrize("change, param", [
    ({"stream": "yes"}, "stream"), ({"stream": 0}, "stream"), ({"messages": []}, "messages"),
])
def test_peek_checks_the_stream_flag_and_empty_messages(change, param):
    for operation in ("chat", "count_tokens"):
        with pytest.raises(GatewayError) as exc:
            D.peek(body(**change), operation)
        assert exc.value.status == 400 and exc.value.param == param
    assert D.peek(body(stream=None), "chat") == ("cerebras/llama-3.3-70b", False)
    assert D.peek(body(stream=False), "chat") == ("cerebras/llama-3.3-70b", False)


def test_estimate_skips_values_of_the_wrong_type():
    from hookway_anthropic.tokens import estimate_request
    req = D.parse(body(), "count_tokens")
    # A plugin may change the canonical request after parsing: the estimate never fails on it.
    req.messages.append({"role": "user", "content": [{"type": "text", "text": 5}, "junk",
                                                     {"type": "tool_use", "name": None, "input": {}}]})
    req.system = [{"type": "text", "text": None}]
    assert estimate_request(req) > 0


# --- pass-through answers read back (response_from_bytes) -----------------------------------------

# A Messages stream as the API sends it (thinking with a signature, text, a tool call whose input
# arrives in pieces), cut into arbitrary chunks by the test.
RECORDED_STREAM = (
    b'event: message_start\n'
    b'data: {"type":"message_start","message":{"id":"msg_01XYZ","type":"message","role":"assistant",'
    b'"model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,'
    b'"output_tokens":2}}}\n\n'
    b'event: content_block_start\n'
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}\n\n'
    b'event: ping\n'
    b'data: {"type": "ping"}\n\n'
    b'event: content_block_delta\n'
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"The user wants "}}\n\n'
    b'event: content_block_delta\n'
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"the files."}}\n\n'
    b'event: content_block_delta\n'
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCkgIARAB=="}}\n\n'
    b'event: content_block_stop\n'
    b'data: {"type":"content_block_stop","index":0}\n\n'
    b'event: content_block_start\n'
    b'data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\n'
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Listing them \xe2\x9c\x93"}}\n\n'
    b'event: content_block_stop\n'
    b'data: {"type":"content_block_stop","index":1}\n\n'
    b'event: content_block_start\n'
    b'data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01A",'
    b'"name":"Bash","input":{}}}\n\n'
    b'event: content_block_delta\n'
    b'data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}\n\n'
    b'event: content_block_delta\n'
    b'data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\\"command\\": \\"ls"}}\n\n'
    b'event: content_block_delta\n'
    b'data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":" -la\\"}"}}\n\n'
    b'event: content_block_stop\n'
    b'data: {"type":"content_block_stop","index":2}\n\n'
    b'event: message_delta\n'
    b'data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},'
    b'"usage":{"output_tokens":87}}\n\n'
    b'event: message_stop\n'
    b'data: {"type":"message_stop"}\n\n'
)

EXPECTED_CONTENT = [
    {"type": "thinking", "thinking": "The user wants the files.", "signature": "EqQBCkgIARAB=="},
    {"type": "text", "text": "Listing them ✓"},
    {"type": "tool_use", "id": "toolu_01A", "name": "Bash", "input": {"command": "ls -la"}},
]


def test_response_from_a_recorded_stream():
    resp = D.response_from_bytes(RECORDED_STREAM, "chat", True)
    assert (resp.id, resp.model) == ("msg_01XYZ", "claude-sonnet-4-5-20250929")
    assert resp.content == EXPECTED_CONTENT
    assert resp.stop_reason == "tool_use" and resp.stop_sequence is None
    assert resp.usage == ir.Usage(input_tokens=472, output_tokens=87, cache_read_input_tokens=2048)
    # The same through the fake API's wire format, and CRLF line endings.
    assert D.response_from_bytes(RECORDED_STREAM.replace(b"\n", b"\r\n"), "chat", True).content == EXPECTED_CONTENT


def test_response_from_a_json_body():
    raw = orjson.dumps({"id": "msg_01ABC", "type": "message", "role": "assistant", "model": "claude-opus-4-5",
                        "content": EXPECTED_CONTENT, "stop_reason": "tool_use", "stop_sequence": None,
                        "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 3,
                                  "cache_creation_input_tokens": 4}})
    for stream in (False, True):   # a stream request may still be answered with JSON
        resp = D.response_from_bytes(raw, "chat", stream)
        assert (resp.id, resp.model, resp.stop_reason) == ("msg_01ABC", "claude-opus-4-5", "tool_use")
        assert resp.content == EXPECTED_CONTENT
        assert resp.usage == ir.Usage(10, 20, 3, 4)


def test_response_from_a_stream_cut_short_or_failed():
    cut = RECORDED_STREAM[:RECORDED_STREAM.index(b"event: message_delta")] + b'event: content_block_stop\ndata: {"type"'
    resp = D.response_from_bytes(cut, "chat", True)
    assert resp.content == EXPECTED_CONTENT and resp.stop_reason is None
    failed = RECORDED_STREAM[:RECORDED_STREAM.index(b"event: content_block_start")] + \
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    resp = D.response_from_bytes(failed, "chat", True)
    assert resp.content == [] and resp.usage.input_tokens == 472


@pytest.mark.parametrize("raw, operation", [
    (b"", "chat"),
    (b"not json at all", "chat"),
    (b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', "chat"),
    (b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"x"}}\n\n', "chat"),
    (b'{"content": 5}', "chat"),
    (b'[1, 2]', "chat"),
    (b'{"input_tokens": 12}', "count_tokens"),
])
def test_response_from_unreadable_bytes_is_none(raw, operation):
    assert D.response_from_bytes(raw, operation, False) is None
    assert D.response_from_bytes(raw, operation, True) is None


def test_response_from_a_garbled_stream_keeps_what_it_can_read():
    raw = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"c"}}\n\n'
           b'event: content_block_start\ndata: {"type":"content_block_start","index":[1],"content_block":{"type":"text"}}\n\n'
           b'event: content_block_delta\ndata: {"type":"content_block_delta","index":7,"delta":{"type":"text_delta","text":"x"}}\n\n'
           b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text"}}\n\n'
           b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ok"}}\n\n')
    resp = D.response_from_bytes(raw, "chat", True)
    assert (resp.id, resp.content, resp.stop_reason) == ("m", [{"type": "text", "text": "ok"}], None)


def test_delta_fast_path_writes_the_same_bytes_as_the_event_json():
    import orjson as _orjson
    from hookway import ir as _ir
    from hookway.sse import frame as _frame
    from hookway_anthropic.dialect import AnthropicDialect as _Dialect
    render = _Dialect().stream_renderer(None, "chat", "m")
    render(_ir.MessageStart("x", "m"))
    cases = [(_ir.BlockStart(0, "thinking"), [("thinking", "thinking_delta", "thinking", 'a "q" é\n'),
                                             ("signature", "signature_delta", "signature", "c2ln")]),
             (_ir.BlockStart(1, "text"), [("text", "text_delta", "text", "héllo ✓")]),
             (_ir.BlockStart(2, "tool_use", "toolu_1", "Bash"), [("json", "input_json_delta", "partial_json", '{"a":')])]
    for wire, (start, deltas) in enumerate(cases):
        render(start)
        for kind, delta_type, field, value in deltas:
            got = render(_ir.BlockDelta(start.index, kind, value))
            want = _frame(_orjson.dumps({"type": "content_block_delta", "index": wire,
                                         "delta": {"type": delta_type, field: value}}), "content_block_delta")
            assert got == want
