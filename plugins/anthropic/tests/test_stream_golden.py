"""Golden stream tests, CONFORMANCE.md points 11-17 and 23: OpenAI-compatible chunk streams go
through the openai plugin's ``ChunkTranslator`` and this plugin's stream renderer; the Anthropic
SSE that comes out is compared event by event with the exact expected sequence.

The input streams are written by hand in the shapes these upstreams send (Cerebras: usage on the
finishing chunk; OpenAI: a trailing usage-only chunk, ``content: null`` with tool calls; vLLM:
``reasoning_content`` and the matched ``stop_reason``; gpt-oss: ``reasoning``)."""

import orjson

from hookway import ir
from hookway_anthropic.dialect import AnthropicDialect
from hookway_openai.stream import ChunkTranslator, SSEChunkReader
from hookway_openai.translate import response_from_openai

D = AnthropicDialect()
MODEL = "cerebras/llama-3.3-70b"   # what the client asked for: every message_start names it


# --- the OpenAI side -----------------------------------------------------------------------------

def chunk(delta=None, finish=None, usage=None, cid="chatcmpl-a1", choices=True, **extra_choice) -> bytes:
    data = {"id": cid, "object": "chat.completion.chunk", "created": 1764000000, "model": "llama-3.3-70b",
            "system_fingerprint": "fp_1", "choices": []}
    if choices:
        choice = {"index": 0, "delta": delta if delta is not None else {}, "finish_reason": finish}
        choice.update(extra_choice)
        data["choices"] = [choice]
    if usage is not None:
        data["usage"] = usage
    return b"data: " + orjson.dumps(data) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def tool_delta(index, *, id=None, name=None, args=None) -> dict:
    call: dict = {"index": index}
    if id is not None:
        call["id"] = id
        call["type"] = "function"
    fn = {}
    if name is not None:
        fn["name"] = name
    if args is not None:
        fn["arguments"] = args
    call["function"] = fn
    return {"tool_calls": [call]}


def run(stream: list[bytes], *, start_first=False) -> bytes:
    """Upstream SSE bytes -> Anthropic SSE bytes. ``start_first`` does what the openai adapter
    does: the message starts as soon as the upstream answered, before any chunk."""
    translator = ChunkTranslator(model="llama-3.3-70b", provider="cerebras")
    reader = SSEChunkReader(translator)
    render = D.stream_renderer(None, "chat", MODEL)
    out = b"".join(render(e) for e in translator.start()) if start_first else b""
    for data in stream:
        out += b"".join(render(e) for e in reader.feed(data))
    return out + b"".join(render(e) for e in reader.finish())


def events_of(data: bytes) -> list[tuple[str, dict]]:
    """Strictly framed SSE -> (event, data); fails on anything else."""
    out = []
    assert data.endswith(b"\n\n")
    for raw in data[:-2].split(b"\n\n"):
        lines = raw.split(b"\n")
        assert len(lines) == 2 and lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), raw
        name, payload = lines[0][7:].decode(), orjson.loads(lines[1][6:])
        assert payload["type"] == name
        out.append((name, payload))
    return out


# --- the expected Anthropic side -------------------------------------------------------------------

def usage(inp=0, out=0, cache_read=0):
    return {"input_tokens": inp, "cache_creation_input_tokens": 0, "cache_read_input_tokens": cache_read,
            "output_tokens": out}


def message_start(inp=0, cache_read=0, mid="msg_chatcmpl-a1"):
    return ("message_start", {"type": "message_start", "message": {
        "id": mid, "type": "message", "role": "assistant", "model": MODEL, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": usage(inp, 0, cache_read)}})


def block_start(index, block):
    return ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


TEXT_BLOCK = {"type": "text", "text": ""}
THINKING_BLOCK = {"type": "thinking", "thinking": "", "signature": ""}


def tool_block(tool_id, name):
    return {"type": "tool_use", "id": tool_id, "name": name, "input": {}}


def delta(index, kind, value):
    field = {"text_delta": "text", "input_json_delta": "partial_json", "thinking_delta": "thinking"}[kind]
    return ("content_block_delta", {"type": "content_block_delta", "index": index,
                                    "delta": {"type": kind, field: value}})


def block_stop(index):
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(stop_reason, out, inp=0, cache_read=0, stop_sequence=None):
    return ("message_delta", {"type": "message_delta",
                              "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                              "usage": usage(inp, out, cache_read)})


MESSAGE_STOP = ("message_stop", {"type": "message_stop"})


def check_invariants(evs):
    """Point 11 on any output: one message_start first, message_stop last, one block open at a
    time, indices contiguous from 0, every opened block closed."""
    names = [n for n, _ in evs]
    assert names[0] == "message_start" and names.count("message_start") == 1
    assert names[-1] == "message_stop" and names.count("message_stop") == 1
    assert names[-2] == "message_delta" and names.count("message_delta") == 1
    open_index, next_index = None, 0
    for name, data in evs:
        if name == "content_block_start":
            assert open_index is None, "two blocks open"
            assert data["index"] == next_index
            open_index, next_index = data["index"], next_index + 1
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        elif name == "message_delta":
            assert open_index is None, "message_delta with a block open"


# --- 11 and 12: one message, text and reasoning blocks ----------------------------------------------

CEREBRAS_TEXT = [
    chunk({"role": "assistant"}),
    chunk({"content": "Hello"}),
    chunk({"content": " there"}),
    # Cerebras puts the usage on the finishing chunk (plus its own time_info).
    chunk({}, "stop", usage={"prompt_tokens": 25, "completion_tokens": 3, "total_tokens": 28}),
    DONE,
]


def test_point_11_12_text_stream_exact():
    evs = events_of(run(CEREBRAS_TEXT))
    assert evs == [
        message_start(),
        block_start(0, TEXT_BLOCK), delta(0, "text_delta", "Hello"), delta(0, "text_delta", " there"), block_stop(0),
        message_delta("end_turn", 3, inp=25),
        MESSAGE_STOP,
    ]
    check_invariants(evs)


def test_point_11_input_tokens_in_message_start_when_the_first_chunk_has_them():
    stream = [chunk({"role": "assistant", "content": ""},
                    usage={"prompt_tokens": 40, "completion_tokens": 0, "total_tokens": 40}),
              chunk({"content": "ok"}), chunk({}, "stop"), DONE]
    evs = events_of(run(stream))
    assert evs[0] == message_start(inp=40)
    assert evs[-2] == message_delta("end_turn", 0, inp=40)


def test_point_11_adapter_order_message_start_before_any_chunk():
    # The openai adapter starts the message as soon as the upstream answered 200: the input
    # tokens are not known yet, so the final message_delta carries them.
    evs = events_of(run(CEREBRAS_TEXT, start_first=True))
    assert evs[0][0] == "message_start" and evs[0][1]["message"]["id"].startswith("msg_")
    assert evs[0][1]["message"]["usage"]["input_tokens"] == 0
    assert evs[-2] == message_delta("end_turn", 3, inp=25)
    check_invariants(evs)


def test_point_12_reasoning_content_goes_to_a_thinking_block_before_the_text():
    stream = [chunk({"role": "assistant"}),
              chunk({"reasoning_content": "The user "}), chunk({"reasoning_content": "greets."}),
              chunk({"content": "Hi!"}), chunk({}, "stop"),
              chunk(choices=False, usage={"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}),
              DONE]
    evs = events_of(run(stream))
    assert evs == [
        message_start(),
        block_start(0, THINKING_BLOCK), delta(0, "thinking_delta", "The user "),
        delta(0, "thinking_delta", "greets."), block_stop(0),
        block_start(1, TEXT_BLOCK), delta(1, "text_delta", "Hi!"), block_stop(1),
        message_delta("end_turn", 7, inp=9),
        MESSAGE_STOP,
    ]


def test_point_12_reasoning_field_of_gpt_oss_never_mixed_into_text():
    stream = [chunk({"role": "assistant", "content": ""}), chunk({"reasoning": "think"}),
              chunk({"reasoning": "ing"}), chunk({"content": "Answer"}), chunk({}, "stop"), DONE]
    evs = events_of(run(stream))
    texts = "".join(d["delta"].get("text", "") for n, d in evs if n == "content_block_delta")
    thinking = "".join(d["delta"].get("thinking", "") for n, d in evs if n == "content_block_delta")
    assert texts == "Answer" and thinking == "thinking"
    assert [d["content_block"]["type"] for n, d in evs if n == "content_block_start"] == ["thinking", "text"]
    check_invariants(evs)


# --- 13: tool calls -------------------------------------------------------------------------------

OPENAI_TWO_TOOLS = [
    chunk({"role": "assistant", "content": None}),
    chunk(tool_delta(0, id="call_a", name="Read", args="")),
    chunk(tool_delta(0, args='{"file_')),
    chunk(tool_delta(0, args='path": "/a.py"}')),
    chunk(tool_delta(1, id="call_b", name="Bash", args="")),
    chunk(tool_delta(1, args='{"command": ')),
    chunk(tool_delta(1, args='"ls -la"}')),
    chunk({}, "tool_calls"),
    chunk(choices=False, usage={"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                                "prompt_tokens_details": {"cached_tokens": 100}}),
    DONE,
]


def test_point_13_two_tool_calls_exact():
    evs = events_of(run(OPENAI_TWO_TOOLS))
    assert evs == [
        message_start(),
        block_start(0, tool_block("call_a", "Read")),
        delta(0, "input_json_delta", '{"file_'), delta(0, "input_json_delta", 'path": "/a.py"}'),
        block_stop(0),
        block_start(1, tool_block("call_b", "Bash")),
        delta(1, "input_json_delta", '{"command": '), delta(1, "input_json_delta", '"ls -la"}'),
        block_stop(1),
        message_delta("tool_use", 30, inp=20, cache_read=100),
        MESSAGE_STOP,
    ]


def test_point_13_arguments_stream_as_they_arrive():
    translator = ChunkTranslator(model="llama-3.3-70b", provider="cerebras")
    reader = SSEChunkReader(translator)
    render = D.stream_renderer(None, "chat", MODEL)
    seen = b""
    for data in OPENAI_TWO_TOOLS[:3]:   # up to the first fragment of the first call's arguments
        seen += b"".join(render(e) for e in reader.feed(data))
    # The fragment is out before the call (let alone the message) is complete: not buffered.
    assert events_of(seen)[-1] == delta(0, "input_json_delta", '{"file_')


def test_point_13_text_then_tool_call_and_ids_made_unique_and_non_empty():
    stream = [chunk({"role": "assistant", "content": "Let me look."}),
              chunk(tool_delta(0, id="", name="Glob", args='{"pattern": "*.py"}')),
              chunk(tool_delta(1, id="dup", name="Grep", args='{"q": 1}')),
              chunk(tool_delta(2, id="dup", name="Grep", args='{"q": 2}')),
              chunk({}, "tool_calls"), DONE]
    evs = events_of(run(stream))
    check_invariants(evs)
    starts = [d["content_block"] for n, d in evs if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["text", "tool_use", "tool_use", "tool_use"]
    ids = [b["id"] for b in starts[1:]]
    assert all(ids) and len(set(ids)) == 3
    assert [b["name"] for b in starts[1:]] == ["Glob", "Grep", "Grep"]
    assert all(b["input"] == {} for b in starts[1:])
    args = {}
    for n, d in evs:
        if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta":
            args[d["index"]] = args.get(d["index"], "") + d["delta"]["partial_json"]
    assert [orjson.loads(args[i]) for i in (1, 2, 3)] == [{"pattern": "*.py"}, {"q": 1}, {"q": 2}]


def test_point_13_interleaved_tool_calls_each_get_their_own_block():
    stream = [chunk({"role": "assistant"}),
              chunk({"tool_calls": [{"index": 0, "id": "c0", "type": "function", "function": {"name": "A", "arguments": ""}},
                                    {"index": 1, "id": "c1", "type": "function", "function": {"name": "B", "arguments": ""}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}},
                                    {"index": 1, "function": {"arguments": '{"y":'}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": '1}'}},
                                    {"index": 1, "function": {"arguments": '2}'}}]}),
              chunk({}, "tool_calls"), DONE]
    evs = events_of(run(stream))
    check_invariants(evs)
    blocks, args = {}, {}
    for n, d in evs:
        if n == "content_block_start":
            blocks[d["index"]] = d["content_block"]
        elif n == "content_block_delta":
            args[d["index"]] = args.get(d["index"], "") + d["delta"]["partial_json"]
    assert [(b["id"], b["name"]) for b in blocks.values()] == [("c0", "A"), ("c1", "B")]
    assert [orjson.loads(args[i]) for i in (0, 1)] == [{"x": 1}, {"y": 2}]


# --- 14: stop reasons -----------------------------------------------------------------------------

def test_point_14_tool_use_even_when_the_upstream_says_stop():
    stream = [chunk({"role": "assistant"}), chunk(tool_delta(0, id="call_1", name="Write", args="{}")),
              chunk({}, "stop"), DONE]
    assert events_of(run(stream))[-2] == message_delta("tool_use", 0)


def test_point_14_length_is_max_tokens():
    stream = [chunk({"content": "trunc"}), chunk({}, "length"), DONE]
    assert events_of(run(stream))[-2] == message_delta("max_tokens", 0)


def test_point_14_stop_with_the_matched_sequence():
    # vLLM names the matched stop string in choices[0].stop_reason.
    stream = [chunk({"content": "a, b"}), chunk({}, "stop", stop_reason="STOP"), DONE]
    assert events_of(run(stream))[-2] == message_delta("stop_sequence", 0, stop_sequence="STOP")


def test_point_14_stop_is_end_turn_and_nothing_is_invented():
    stream = [chunk({"content": "x"}), chunk({}, "stop"), DONE]
    assert events_of(run(stream))[-2] == message_delta("end_turn", 0)


# --- 15: usage ------------------------------------------------------------------------------------

def test_point_15_trailing_usage_chunk_and_cached_tokens():
    stream = [chunk({"role": "assistant", "content": ""}), chunk({"content": "ok"}), chunk({}, "stop"),
              chunk(choices=False, usage={"prompt_tokens": 1000, "completion_tokens": 12, "total_tokens": 1012,
                                          "prompt_tokens_details": {"cached_tokens": 768}}),
              DONE]
    evs = events_of(run(stream))
    # Anthropic's input_tokens exclude the cached part, which is cache_read_input_tokens.
    assert evs[-2] == message_delta("end_turn", 12, inp=232, cache_read=768)


def test_point_15_usage_survives_when_the_message_started_without_it():
    evs = events_of(run(OPENAI_TWO_TOOLS, start_first=True))
    assert evs[-2][1]["usage"] == usage(20, 30, 100)


# --- 16: pings ------------------------------------------------------------------------------------

def test_point_16_ping_events_between_blocks():
    translator = ChunkTranslator(model="llama-3.3-70b", provider="cerebras")
    render = D.stream_renderer(None, "chat", MODEL)
    out = b"".join(render(e) for e in translator.start())
    out += render(ir.Ping())   # what the core's keep-alive sends during a slow first token
    out += b"".join(render(e) for e in translator.feed(orjson.loads(chunk({"content": "late"})[6:])))
    out += render(ir.Ping())
    out += b"".join(render(e) for e in translator.finish(saw_done=True))
    assert b'event: ping\ndata: {"type": "ping"}\n\n' in out
    evs = events_of(out)
    assert [n for n, _ in evs] == ["message_start", "ping", "content_block_start", "content_block_delta",
                                   "ping", "content_block_stop", "message_delta", "message_stop"]


# --- 17: non-streaming ----------------------------------------------------------------------------

def fold(evs) -> dict:
    """An Anthropic SSE event list folded into a Message, as the SDKs do."""
    message = dict(evs[0][1]["message"])
    message["content"] = []
    args = {}
    for name, data in evs[1:]:
        if name == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, d = message["content"][data["index"]], data["delta"]
            if d["type"] == "text_delta":
                block["text"] += d["text"]
            elif d["type"] == "thinking_delta":
                block["thinking"] += d["thinking"]
            elif d["type"] == "input_json_delta":
                args[data["index"]] = args.get(data["index"], "") + d["partial_json"]
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"] = data["usage"]
    for index, raw in args.items():
        message["content"][index]["input"] = orjson.loads(raw)
    return message


def test_point_17_non_streaming_returns_the_equivalent_message():
    completion = {
        "id": "chatcmpl-a1", "object": "chat.completion", "created": 1764000000, "model": "llama-3.3-70b",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": "call_a", "type": "function",
                            "function": {"name": "Read", "arguments": '{"file_path": "/a.py"}'}},
                           {"id": "call_b", "type": "function",
                            "function": {"name": "Bash", "arguments": '{"command": "ls -la"}'}}]}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                  "prompt_tokens_details": {"cached_tokens": 100}}}
    req = D.parse({"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "go"}]}, "chat")
    response = response_from_openai(completion)
    response.model = MODEL   # as the core does: the client sees the name it asked for
    message = D.render_response(response, req, "chat")
    assert message == {
        "id": "msg_chatcmpl-a1", "type": "message", "role": "assistant", "model": MODEL,
        "content": [{"type": "tool_use", "id": "call_a", "name": "Read", "input": {"file_path": "/a.py"}},
                    {"type": "tool_use", "id": "call_b", "name": "Bash", "input": {"command": "ls -la"}}],
        "stop_reason": "tool_use", "stop_sequence": None, "usage": usage(20, 30, 100)}
    # The same answer streamed folds into the same message.
    assert fold(events_of(run(OPENAI_TWO_TOOLS))) == message


# --- 23: failures after the first byte ------------------------------------------------------------

def test_point_23_a_cut_stream_ends_with_an_error_event_not_message_stop():
    cut = CEREBRAS_TEXT[:3]   # no finish_reason, no [DONE]: the connection dropped
    evs = events_of(run(cut))
    assert [n for n, _ in evs] == ["message_start", "content_block_start", "content_block_delta",
                                   "content_block_delta", "error"]
    assert evs[-1][1]["error"]["type"] == "api_error"
    assert "ended before it finished" in evs[-1][1]["error"]["message"]


def test_point_23_an_error_chunk_mid_stream():
    stream = [chunk({"content": "par"}),
              b'data: {"error": {"message": "model overloaded", "status": 529}}\n\n']
    evs = events_of(run(stream))
    assert [n for n, _ in evs] == ["message_start", "content_block_start", "content_block_delta", "error"]
    assert evs[-1][1]["error"] == {"type": "overloaded_error", "message": "cerebras: model overloaded"}


def test_point_23_garbage_in_the_stream():
    evs = events_of(run([chunk({"content": "a"}), b"data: {not json\n\n"]))
    assert evs[-1][0] == "error" and "message_stop" not in [n for n, _ in evs]
