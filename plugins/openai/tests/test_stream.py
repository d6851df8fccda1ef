"""ChunkTranslator: recorded OpenAI chunk sequences in, exact canonical event lists out.
One test per CONFORMANCE.md point 11-15, plus the awkward streams real servers send."""

from __future__ import annotations

import orjson
import pytest

from hookway import ir
from hookway_openai.stream import ChunkTranslator, SSEChunkReader

from hookway.ir import BlockDelta, BlockStart, BlockStop, MessageDelta, MessageStart, MessageStop, Usage


def chunk(delta=None, finish=None, usage=None, choices=True, **extra):
    data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m"}
    data["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []
    if usage is not None:
        data["usage"] = usage
    data.update(extra)
    return data


def tool(index, id=None, name=None, args=None):
    call = {"index": index, "function": {}}
    if id is not None:
        call["id"] = id
        call["type"] = "function"
    if name is not None:
        call["function"]["name"] = name
    if args is not None:
        call["function"]["arguments"] = args
    return {"tool_calls": [call]}


def run(chunks, saw_done=True, **kw):
    t = ChunkTranslator(model="m", message_id="msg_1", **kw)
    events = []
    for c in chunks:
        events += t.feed(c)
    events += t.finish(saw_done=saw_done)
    return events


def check_invariants(events):
    """CONFORMANCE 11: one MessageStart first, MessageStop last, one block open at a time,
    indices contiguous from 0, every opened block closed."""
    assert type(events[0]) is MessageStart
    assert sum(type(e) is MessageStart for e in events) == 1
    assert type(events[-1]) is MessageStop and type(events[-2]) is MessageDelta
    open_index = None
    expected_next = 0
    for ev in events:
        if type(ev) is BlockStart:
            assert open_index is None, f"block {ev.index} opened while {open_index} is open"
            assert ev.index == expected_next
            open_index, expected_next = ev.index, expected_next + 1
        elif type(ev) is BlockDelta:
            assert ev.index == open_index
        elif type(ev) is BlockStop:
            assert ev.index == open_index
            open_index = None
    assert open_index is None


# --- point 11 --------------------------------------------------------------------------------

def test_point11_envelope_and_text_block_exact():
    events = run([chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}),
                  chunk({"content": "lo"}), chunk(finish="stop"),
                  chunk(choices=False, usage={"prompt_tokens": 7, "completion_tokens": 2})])
    assert events == [
        MessageStart("msg_1", "m", Usage()),
        BlockStart(0, "text"), BlockDelta(0, "text", "Hel"), BlockDelta(0, "text", "lo"), BlockStop(0),
        MessageDelta("end_turn", Usage(input_tokens=7, output_tokens=2)),
        MessageStop(),
    ]
    check_invariants(events)


def test_point11_start_emitted_once_even_when_called_early():
    t = ChunkTranslator(model="m")
    first = t.start()
    assert len(first) == 1 and type(first[0]) is MessageStart and first[0].id
    events = first + t.feed(chunk({"content": "x"})) + t.feed(chunk(finish="stop")) + t.finish(saw_done=True)
    check_invariants(events)
    assert t.start() == []


def test_point11_first_chunk_usage_goes_into_message_start():
    t = ChunkTranslator(model="m")
    events = t.feed(chunk({"content": "x"}, usage={"prompt_tokens": 40, "completion_tokens": 1,
                                                   "prompt_tokens_details": {"cached_tokens": 30}}))
    assert events[0] == MessageStart("chatcmpl-1", "m", Usage(input_tokens=10, cache_read_input_tokens=30))


def test_point11_empty_answer_still_well_formed():
    events = run([chunk({"role": "assistant"}), chunk(finish="stop")])
    assert events == [MessageStart("msg_1", "m", Usage()), MessageDelta("end_turn", Usage()), MessageStop()]


# --- point 12 --------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_point12_reasoning_goes_to_a_thinking_block_before_text(field):
    events = run([chunk({"role": "assistant"}), chunk({field: "Let me "}), chunk({field: "think."}),
                  chunk({"content": "Answer"}), chunk(finish="stop")])
    assert events[1:-2] == [
        BlockStart(0, "thinking"), BlockDelta(0, "thinking", "Let me "), BlockDelta(0, "thinking", "think."),
        BlockStop(0),
        BlockStart(1, "text"), BlockDelta(1, "text", "Answer"), BlockStop(1),
    ]
    check_invariants(events)


def test_point12_reasoning_and_content_in_one_delta_are_not_mixed():
    events = run([chunk({"reasoning_content": "hmm", "content": "ok"}), chunk(finish="stop")])
    assert [e for e in events if type(e) is BlockDelta] == [BlockDelta(0, "thinking", "hmm"),
                                                             BlockDelta(1, "text", "ok")]
    check_invariants(events)


def test_point12_null_and_empty_deltas_open_no_block():
    events = run([chunk({"content": None, "reasoning_content": None, "tool_calls": None}),
                  chunk({"content": ""}), chunk(finish="stop")])
    assert not any(type(e) is BlockStart for e in events)


# --- point 13 --------------------------------------------------------------------------------

def test_point13_tool_call_streams_arguments_as_they_arrive():
    t = ChunkTranslator(model="m", message_id="msg_1")
    assert t.feed(chunk({"role": "assistant", "content": None})) == [MessageStart("msg_1", "m", Usage())]
    assert t.feed(chunk(tool(0, "call_a", "get_weather", ""))) == [
        BlockStart(0, "tool_use", "call_a", "get_weather")]
    # Each fragment comes out at once, not buffered to the end.
    assert t.feed(chunk(tool(0, args='{"city"'))) == [BlockDelta(0, "json", '{"city"')]
    assert t.feed(chunk(tool(0, args=': "Paris"}'))) == [BlockDelta(0, "json", ': "Paris"}')]
    assert t.feed(chunk(finish="tool_calls")) == [BlockStop(0)]
    assert t.finish(saw_done=True) == [MessageDelta("tool_use", Usage()), MessageStop()]


def test_point13_text_then_two_sequential_tool_calls_each_own_block():
    events = run([
        chunk({"content": "Checking."}),
        chunk(tool(0, "call_a", "Read", "")), chunk(tool(0, args='{"path": "a"}')),
        chunk(tool(1, "call_b", "Read", "")), chunk(tool(1, args='{"path": ')), chunk(tool(1, args='"b"}')),
        chunk(finish="tool_calls"),
    ])
    assert events[1:-2] == [
        BlockStart(0, "text"), BlockDelta(0, "text", "Checking."), BlockStop(0),
        BlockStart(1, "tool_use", "call_a", "Read"), BlockDelta(1, "json", '{"path": "a"}'), BlockStop(1),
        BlockStart(2, "tool_use", "call_b", "Read"), BlockDelta(2, "json", '{"path": '),
        BlockDelta(2, "json", '"b"}'), BlockStop(2),
    ]
    check_invariants(events)


def test_point13_parallel_tool_calls_interleaved_by_index():
    # Fragments of three calls interleaved: each call's arguments must end up whole in its own block.
    events = run([
        chunk(tool(0, "call_a", "A", '{"x": ')),
        chunk(tool(1, "call_b", "B", '{"y": ')),
        chunk(tool(0, args='1}')),
        chunk(tool(2, "call_c", "C", '{"z"')),
        chunk(tool(1, args='2}')),
        chunk(tool(2, args=': 3}')),
        chunk(finish="tool_calls"),
    ])
    check_invariants(events)
    starts = [e for e in events if type(e) is BlockStart]
    assert [(s.id, s.name) for s in starts] == [("call_a", "A"), ("call_b", "B"), ("call_c", "C")]
    collector = ir.ResponseCollector()
    for e in events:
        collector.feed(e)
    resp = collector.response()
    assert [b["input"] for b in resp.content] == [{"x": 1}, {"y": 2}, {"z": 3}]
    assert resp.stop_reason == "tool_use"


def test_point13_several_calls_in_one_chunk():
    calls = {"tool_calls": [
        {"index": 0, "id": "c0", "type": "function", "function": {"name": "A", "arguments": "{}"}},
        {"index": 1, "id": "c1", "type": "function", "function": {"name": "B", "arguments": '{"k": "v"}'}},
    ]}
    events = run([chunk(calls), chunk(finish="tool_calls")])
    assert events[1:-2] == [
        BlockStart(0, "tool_use", "c0", "A"), BlockDelta(0, "json", "{}"), BlockStop(0),
        BlockStart(1, "tool_use", "c1", "B"), BlockDelta(1, "json", '{"k": "v"}'), BlockStop(1),
    ]


def test_point13_missing_and_duplicate_ids_are_replaced_by_unique_ones():
    events = run([
        chunk(tool(0, None, "A", "{}")),
        chunk(tool(1, "dup", "B", "{}")),
        chunk(tool(2, "dup", "C", "{}")),
        chunk(finish="tool_calls"),
    ])
    ids = [e.id for e in events if type(e) is BlockStart]
    assert len(ids) == 3 and all(ids) and len(set(ids)) == 3
    assert ids[1] == "dup" and ids[2] != "dup"


def test_point13_name_arriving_after_the_id_is_waited_for():
    events = run([
        chunk(tool(0, "call_a", None, "")),
        chunk(tool(0, name="late_name", args='{"a": 1}')),
        chunk(finish="tool_calls"),
    ])
    assert events[1:-2] == [BlockStart(0, "tool_use", "call_a", "late_name"),
                            BlockDelta(0, "json", '{"a": 1}'), BlockStop(0)]


def test_point13_tool_calls_without_index_matched_by_id():
    no_index = lambda **call: {"tool_calls": [call]}   # noqa: E731
    events = run([
        chunk(no_index(id="c1", type="function", function={"name": "A", "arguments": '{"a"'})),
        chunk(no_index(function={"arguments": ": 1}"})),
        chunk(no_index(id="c2", type="function", function={"name": "B", "arguments": "{}"})),
        chunk(finish="tool_calls"),
    ])
    check_invariants(events)
    assert [e for e in events if type(e) is BlockDelta] == [
        BlockDelta(0, "json", '{"a"'), BlockDelta(0, "json", ": 1}"), BlockDelta(1, "json", "{}")]


def test_point13_arguments_sent_as_an_object():
    call = {"index": 0, "id": "c", "type": "function", "function": {"name": "A", "arguments": {"k": "v"}}}
    events = run([chunk({"tool_calls": [call]}), chunk(finish="tool_calls")])
    assert events[1:-2] == [BlockStart(0, "tool_use", "c", "A"), BlockDelta(0, "json", '{"k":"v"}'), BlockStop(0)]


# --- point 14 --------------------------------------------------------------------------------

@pytest.mark.parametrize("finish,expected", [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
    ("content_filter", "refusal"), ("something_new", "end_turn"),
])
def test_point14_finish_reason_mapping(finish, expected):
    events = run([chunk({"content": "x"}), chunk(finish=finish)])
    assert events[-2].stop_reason == expected


def test_point14_tool_use_whenever_a_tool_block_was_emitted_even_if_upstream_says_stop():
    events = run([chunk(tool(0, "c", "A", "{}")), chunk(finish="stop")])
    assert events[-2].stop_reason == "tool_use"


def test_point14_matched_stop_string_gives_stop_sequence():
    c = chunk(finish="stop")
    c["choices"][0]["stop_reason"] = "END"
    events = run([chunk({"content": "x"}), c])
    assert events[-2] == MessageDelta("stop_sequence", Usage(), "END")


def test_point14_done_without_finish_reason_ends_normally():
    events = run([chunk({"content": "x"})], saw_done=True)
    assert events[-2] == MessageDelta("end_turn", Usage()) and events[-1] == MessageStop()


# --- point 15 --------------------------------------------------------------------------------

def test_point15_trailing_usage_only_chunk_is_read_with_cached_tokens():
    events = run([
        chunk({"content": "hi"}), chunk(finish="stop"),
        chunk(choices=False, usage={"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112,
                                    "prompt_tokens_details": {"cached_tokens": 64},
                                    "completion_tokens_details": {"reasoning_tokens": 5}}),
    ])
    assert events[-2] == MessageDelta("end_turn", Usage(input_tokens=36, output_tokens=12,
                                                        cache_read_input_tokens=64, reasoning_tokens=5))


def test_point15_usage_null_on_every_chunk_does_not_erase_the_final_usage():
    events = run([chunk({"content": "a"}, usage=None), chunk(finish="stop", usage={"prompt_tokens": 3, "completion_tokens": 1}),
                  chunk({}, usage=None, choices=False)])
    assert events[-2].usage == Usage(input_tokens=3, output_tokens=1)


# --- truncation and errors (CONFORMANCE 23) --------------------------------------------------

def test_stream_ending_without_finish_reason_or_done_is_an_error():
    events = run([chunk({"content": "partial"})], saw_done=False)
    assert type(events[-1]) is ir.StreamError
    assert events[-1].error.status == 502
    assert not any(type(e) in (MessageDelta, MessageStop) for e in events)


def test_error_chunk_mid_stream_becomes_stream_error_and_ends():
    t = ChunkTranslator(model="m", provider="up")
    events = t.feed(chunk({"content": "x"}))
    events += t.feed({"error": {"message": "overloaded", "code": 503}})
    assert type(events[-1]) is ir.StreamError
    assert events[-1].error.status == 503 and "overloaded" in events[-1].error.message
    assert t.feed(chunk({"content": "more"})) == [] and t.finish(saw_done=True) == []


# --- bytes in: SSE framing, UTF-8 and [DONE] -------------------------------------------------

def sse(*chunks) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def test_utf8_character_split_across_network_reads():
    raw = sse(chunk({"content": "héllo 🌍"}), chunk(finish="stop"))
    cut = raw.index("🌍".encode()) + 2    # in the middle of the 4-byte emoji
    reader = SSEChunkReader(ChunkTranslator(model="m"))
    events = reader.feed(raw[:cut]) + reader.feed(raw[cut:]) + reader.finish()
    assert [e.value for e in events if type(e) is BlockDelta] == ["héllo 🌍"]
    assert type(events[-1]) is MessageStop


def test_byte_by_byte_feed_gives_the_same_events():
    raw = sse(chunk({"reasoning": "r"}), chunk({"content": "ça"}), chunk(tool(0, "c", "A", '{"é": 1}')),
              chunk(finish="tool_calls"), chunk(choices=False, usage={"prompt_tokens": 2, "completion_tokens": 3}))
    whole = SSEChunkReader(ChunkTranslator(model="m", message_id="x"))
    expected = whole.feed(raw) + whole.finish()
    split = SSEChunkReader(ChunkTranslator(model="m", message_id="x"))
    events = []
    for i in range(len(raw)):
        events += split.feed(raw[i:i + 1])
    events += split.finish()
    assert events == expected
    check_invariants(events)


def test_reader_without_done_and_without_finish_is_an_error():
    raw = b"data: " + orjson.dumps(chunk({"content": "x"})) + b"\n\n"
    reader = SSEChunkReader(ChunkTranslator(model="m"))
    events = reader.feed(raw) + reader.finish()
    assert type(events[-1]) is ir.StreamError


def test_reader_rejects_a_chunk_that_is_not_json():
    reader = SSEChunkReader(ChunkTranslator(model="m"))
    events = reader.feed(b"data: {not json\n\n")
    assert type(events[-1]) is ir.StreamError and "not JSON" in events[-1].error.message
    assert reader.finish() == []
