from hookway.sse import SSEParser, frame


def collect(chunks):
    parser = SSEParser()
    out = []
    for c in chunks:
        out += list(parser.feed(c))
    return out, parser


def test_events_split_anywhere_come_out_whole():
    raw = "event: message_start\ndata: {\"a\": \"héllo ✓ 你好\"}\n\n: comment\n\ndata: [DONE]\n\n".encode()
    for cut in range(1, len(raw)):
        events, parser = collect([raw[:cut], raw[cut:]])
        assert events == [("message_start", '{"a": "héllo ✓ 你好"}'), (None, "[DONE]")], cut
        assert parser.pending == b""


def test_byte_by_byte_utf8_is_not_mangled():
    raw = 'data: {"t":"€😀"}\n\n'.encode()
    events, _ = collect([raw[i:i + 1] for i in range(len(raw))])
    assert events == [(None, '{"t":"€😀"}')]


def test_crlf_and_multiline_data():
    events, _ = collect([b"data: a\r\ndata: b\r", b"\n\r\n"])
    assert events == [(None, "a\nb")]


def test_frame():
    assert frame(b'{"x":1}') == b'data: {"x":1}\n\n'
    assert frame(b"{}", "ping") == b"event: ping\ndata: {}\n\n"


def test_feed_raw_matches_feed_wherever_the_stream_is_cut():
    raw = ("event: message_start\ndata: {\"a\": \"héllo ✓\"}\n\n: comment\n\ndata: {\"b\":1}\r\n\r\n"
           "data: line1\ndata: line2\n\ndata: [DONE]\n\n").encode()
    expected = [("message_start", '{"a": "héllo ✓"}'), (None, '{"b":1}'), (None, "line1\nline2"), (None, "[DONE]")]
    for cut in range(1, len(raw)):
        parser = SSEParser()
        got = parser.feed_raw(raw[:cut]) + parser.feed_raw(raw[cut:])
        assert [(e, d.decode()) for e, d in got] == expected, cut
        assert parser.pending == b""
