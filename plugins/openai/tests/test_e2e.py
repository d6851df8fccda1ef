"""End to end: the official ``openai`` SDK -> a started gateway -> the fake OpenAI upstream.

Most tests run twice: ``passthrough`` (bytes forwarded, the fast path) and ``translated`` (a test
plugin touches ``ctx.ir``, which forces parse -> adapter.complete/stream -> ChunkTranslator ->
render), so both paths of this plugin are exercised with the same client.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from hookway import hookimpl, ir
from hookway.testing import RecordingSink, Reply
from hookway_openai import OpenAIAdapter


class ForceTranslate:
    """Touches the canonical request, which turns the byte pass-through off."""

    @hookimpl
    def hookway_transform_request(self, ctx, target):
        ctx.ir


def config(fake_upstream, translated=False, **network):
    cfg = {"plugins": {"openai": {}},
           "providers": {"up": {"type": "openai", "keys": [{"value": "sk-upstream"}],
                                "network_config": {"base_url": fake_upstream.url, **network}}}}
    if translated:
        cfg["plugins"]["force_translate"] = {}
    return cfg


@pytest.fixture(params=["passthrough", "translated"])
def mode(request):
    return request.param


@pytest.fixture
def gateway(fake_upstream, start_gateway, mode):
    return start_gateway(config(fake_upstream, mode == "translated"), {"force_translate": ForceTranslate})


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0)


USER = [{"role": "user", "content": "Say hi"}]


def test_non_stream_chat(client, fake_upstream, mode):
    fake_upstream.enqueue(Reply(text="Hi there ✓", usage=(12, 3, 4)))
    r = client.chat.completions.create(model="up/gpt-x", messages=USER)
    assert r.choices[0].message.content == "Hi there ✓"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (12, 3)
    assert r.usage.prompt_tokens_details.cached_tokens == 4
    sent = fake_upstream.last
    assert sent.path == "/v1/chat/completions" and sent.json["model"] == "gpt-x"
    assert sent.headers["authorization"] == "Bearer sk-upstream"
    assert sent.json["messages"] == [{"role": "user", "content": "Say hi"}]


def test_stream_text_with_usage(client, fake_upstream, mode):
    fake_upstream.enqueue(Reply(text="Hello, wörld! 🌍 streaming", chunk_size=3, usage=(20, 7, 0)))
    stream = client.chat.completions.create(model="up/gpt-x", messages=USER, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, wörld! 🌍 streaming"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 20
    assert chunks[-1].usage.completion_tokens == 7


def test_stream_without_include_usage_sends_no_usage_chunk(client, fake_upstream, mode):
    fake_upstream.enqueue(Reply(text="abc"))
    chunks = list(client.chat.completions.create(model="up/gpt-x", messages=USER, stream=True))
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "abc"
    # ...while the gateway itself always asks the upstream for usage, on both paths.
    assert fake_upstream.last.json["stream_options"] == {"include_usage": True}


def test_usage_is_logged_even_when_the_client_did_not_ask_for_it(fake_upstream, start_gateway, mode):
    cfg = config(fake_upstream, mode == "translated")
    cfg["plugins"]["sink"] = {}
    gw = start_gateway(cfg, {"force_translate": ForceTranslate, "sink": RecordingSink})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    fake_upstream.enqueue(Reply(text="abcdef", chunk_size=2, usage=(31, 9, 0)))
    chunks = list(client.chat.completions.create(model="up/gpt-x", messages=USER, stream=True))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    gw.stop()   # a graceful stop flushes the log queue
    (record,) = RecordingSink.records
    assert (record.input_tokens, record.output_tokens, record.passthrough) == (31, 9, mode == "passthrough")


def _logged_stream(fake_upstream, start_gateway, mode, reply, read):
    cfg = config(fake_upstream, mode == "translated")
    cfg["plugins"]["sink"] = {}
    gw = start_gateway(cfg, {"force_translate": ForceTranslate, "sink": RecordingSink})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    fake_upstream.enqueue(reply)
    read(client.chat.completions.create(model="up/gpt-x", messages=USER, stream=True))
    return RecordingSink.wait(1)[0]


def test_a_client_that_closes_after_done_is_a_finished_request(fake_upstream, start_gateway, mode):
    # The SDK closes its connection at [DONE]; this upstream holds its own open far longer (the
    # gateway stops reading it when the client leaves), so the gateway sees the client leave
    # before the upstream ends, however slow the machine. That is not a cancellation.
    record = _logged_stream(fake_upstream, start_gateway, mode,
                            Reply(text="abcdef", chunk_size=2, usage=(31, 9, 0), eof_delay=30), list)
    assert (record.status, record.stop_reason) == (200, "end_turn")
    assert (record.input_tokens, record.output_tokens) == (31, 9)


def test_a_client_that_closes_before_the_end_is_a_cancelled_request(fake_upstream, start_gateway, mode):
    def read_two(stream):
        it = iter(stream)
        next(it)
        next(it)
        stream.close()

    record = _logged_stream(fake_upstream, start_gateway, mode,
                            Reply(text="x" * 50, chunk_size=1, chunk_delay=0.05, eof_delay=60), read_two)
    assert record.status == 499 and record.stop_reason is None


def test_usage_chunk_filter_keeps_everything_else_byte_for_byte():
    from hookway_openai.adapter import DropUsageOnlyChunk
    events = [b'data: {"choices":[{"delta":{"content":"a"}}],"usage":null}\n\n',
              b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n',
              b"data: [DONE]\n\n"]
    raw = b"".join(events)
    for cut in range(1, len(raw)):
        flt = DropUsageOnlyChunk()
        out = flt(raw[:cut]) + flt(raw[cut:]) + flt(None)
        assert out == events[0] + events[2], cut


def test_streamed_tool_calls(client, fake_upstream, mode):
    fake_upstream.enqueue(Reply(tool_calls=[
        {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'},
        {"id": "call_2", "name": "mcp__Files__Read_File", "arguments": '{"path": "/tmp/ä.txt"}'},
    ], chunk_size=5))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}},
             {"type": "function", "function": {"name": "mcp__Files__Read_File", "parameters": {"type": "object"}}}]
    stream = client.chat.completions.create(model="up/gpt-x", messages=USER, tools=tools, stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for c in stream:
        if not c.choices:
            continue
        for tc in c.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": None, "name": None, "args": ""})
            entry["id"] = entry["id"] or tc.id
            entry["name"] = entry["name"] or (tc.function.name if tc.function else None)
            entry["args"] += (tc.function.arguments or "") if tc.function else ""
        finish = c.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [(calls[i]["id"], calls[i]["name"]) for i in sorted(calls)] == [
        ("call_1", "get_weather"), ("call_2", "mcp__Files__Read_File")]
    assert json.loads(calls[0]["args"]) == {"city": "Paris", "unit": "c"}
    assert json.loads(calls[1]["args"]) == {"path": "/tmp/ä.txt"}
    assert [t["function"]["name"] for t in fake_upstream.last.json["tools"]] == ["get_weather", "mcp__Files__Read_File"]


def test_non_stream_tool_calls(client, fake_upstream, mode):
    fake_upstream.enqueue(Reply(tool_calls=[{"id": "call_9", "name": "f", "arguments": '{"x": 1}'}]))
    r = client.chat.completions.create(model="up/gpt-x", messages=USER,
                                       tools=[{"type": "function", "function": {"name": "f"}}])
    call = r.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == ("call_9", "f", {"x": 1})
    assert r.choices[0].finish_reason == "tool_calls"


def test_tool_result_turn_reaches_upstream(client, fake_upstream, mode):
    messages = USER + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "result"}]
    client.chat.completions.create(model="up/gpt-x", messages=messages,
                                   tools=[{"type": "function", "function": {"name": "f"}}])
    sent = fake_upstream.last.json["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "result"}


def test_reasoning_is_streamed_as_reasoning(client, fake_upstream, mode):
    fake_upstream.enqueue(Reply(text="42", reasoning="Let me think", chunk_size=4))
    chunks = list(client.chat.completions.create(model="up/gpt-x", messages=USER, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or (d.model_extra or {}).get("reasoning") or ""
                        for d in deltas)
    assert reasoning == "Let me think"
    assert "".join(d.content or "" for d in deltas) == "42"


def test_upstream_ignoring_stream_true_is_replayed_as_a_stream(fake_upstream, start_gateway):
    gw = start_gateway(config(fake_upstream, translated=True), {"force_translate": ForceTranslate})
    whole = {"id": "chatcmpl-w", "object": "chat.completion", "model": "gpt-x", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "all at once"}}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 3}}
    fake_upstream.enqueue(Reply(raw=json.dumps(whole).encode()))
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    chunks = list(c.chat.completions.create(model="up/gpt-x", messages=USER, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "all at once"
    assert chunks[-1].usage.completion_tokens == 3


def test_text_completions(client, fake_upstream, mode):
    fake_upstream.enqueue(Reply(text=" there was"), Reply(text=" a fox", chunk_size=2))
    r = client.completions.create(model="up/gpt-x", prompt="Once upon a time", max_tokens=5)
    assert r.choices[0].text == " there was" and r.object == "text_completion"
    assert fake_upstream.last.path == "/v1/completions" and fake_upstream.last.json["prompt"] == "Once upon a time"
    stream = client.completions.create(model="up/gpt-x", prompt="x", max_tokens=5, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == " a fox"


def test_embeddings(client, fake_upstream, mode):
    fake_upstream.enqueue(Reply(embedding=[0.5, 0.25]))
    r = client.embeddings.create(model="up/text-embed", input=["a", "b"])
    assert [d.embedding for d in r.data] == [[0.5, 0.25], [0.5, 0.25]]
    assert fake_upstream.last.path == "/v1/embeddings" and fake_upstream.last.json["model"] == "text-embed"


def test_upstream_429_keeps_status_and_retry_after(client, fake_upstream, mode):
    fake_upstream.enqueue(Reply(status=429, error="Rate limit reached", headers={"retry-after": "7"}))
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="up/gpt-x", messages=USER)
    assert exc.value.status_code == 429
    assert exc.value.response.headers["retry-after"] == "7"
    assert "Rate limit reached" in exc.value.message


def test_upstream_500_is_5xx(client, fake_upstream, mode):
    fake_upstream.enqueue(Reply(status=500, error="boom"))
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="up/gpt-x", messages=USER, stream=True)
    assert exc.value.status_code >= 500 and "boom" in exc.value.message


def test_upstream_400_keeps_its_message(client, fake_upstream, mode):
    fake_upstream.enqueue(Reply(status=400, error="temperature out of range", error_type="invalid_request_error"))
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="up/gpt-x", messages=USER)
    assert "temperature out of range" in exc.value.message


def test_stream_cut_mid_way_is_an_error_not_a_silent_end(client, fake_upstream, mode):
    fake_upstream.enqueue(Reply(text="abcdefghij", chunk_size=1, drop_after=4))
    got = []
    with pytest.raises(openai.APIError):
        for c in client.chat.completions.create(model="up/gpt-x", messages=USER, stream=True):
            got.append(c)
    assert got   # the error came after the stream had started


def test_models_list_and_retrieve(gateway, fake_upstream):
    for prefix in ("/v1", "/openai/v1"):
        c = openai.OpenAI(base_url=gateway.url + prefix, api_key="k", max_retries=0)
        ids = [m.id for m in c.models.list()]
        assert ids == ["up/llama-3.3-70b", "up/gpt-oss-120b"]
        assert c.models.retrieve("up/gpt-oss-120b").owned_by == "up"
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("up/nope")
    # GET /models upstream once, then cached.
    assert [r.path for r in fake_upstream.requests].count("/v1/models") == 1


def test_openai_prefixed_inference_route(gateway, fake_upstream):
    c = openai.OpenAI(base_url=gateway.url + "/openai/v1", api_key="k", max_retries=0)
    assert c.chat.completions.create(model="up/m", messages=USER).choices[0].message.content == "hello"


def test_malformed_json_and_bad_fields_are_400_naming_the_problem(gateway):
    url = gateway.url + "/v1/chat/completions"
    r = httpx.post(url, content=b'{"model": "up/m", "messages": [', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert "JSON" in r.json()["error"]["message"]
    r = httpx.post(url, json={"messages": USER})
    assert r.status_code == 400 and "model" in r.json()["error"]["message"] and r.json()["error"]["param"] == "model"
    r = httpx.post(url, json={"model": "up/m", "messages": USER, "stream": "yes"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"


def test_bad_fields_are_400_on_the_translated_path(fake_upstream, start_gateway):
    gw = start_gateway(config(fake_upstream, translated=True), {"force_translate": ForceTranslate})
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.BadRequestError) as exc:
        c.chat.completions.create(model="up/m", messages=USER, temperature="hot")
    assert "temperature" in exc.value.message and exc.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as exc:
        c.chat.completions.create(model="up/m", messages="hello")
    assert "messages" in exc.value.message
    assert fake_upstream.requests == []


def test_unknown_model_is_an_openai_shaped_error(fake_upstream, start_gateway):
    cfg = config(fake_upstream)
    cfg["providers"]["other"] = {"type": "openai", "network_config": {"base_url": fake_upstream.url}}
    gw = start_gateway(cfg)
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.NotFoundError) as exc:
        c.chat.completions.create(model="nobody/m", messages=USER)
    assert exc.value.body["type"] == "not_found_error" and exc.value.body["code"] == "model_not_found"
    assert fake_upstream.requests == []


def test_connection_refused_is_502(start_gateway, refused_port):
    gw = start_gateway({"plugins": {"openai": {}}, "providers": {
        "up": {"type": "openai", "network_config": {"base_url": f"http://127.0.0.1:{refused_port}/v1"}}}})
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIStatusError) as exc:
        c.chat.completions.create(model="up/m", messages=USER)
    assert exc.value.status_code == 502


def test_timeout_is_504(fake_upstream, start_gateway):
    gw = start_gateway(config(fake_upstream, default_request_timeout_in_seconds=0.3))
    fake_upstream.enqueue(Reply(text="late", first_byte_delay=5))   # far past the timeout; cancelled at it
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIStatusError) as exc:
        c.chat.completions.create(model="up/m", messages=USER)
    assert exc.value.status_code == 504


def test_retries_transient_upstream_errors_when_configured(fake_upstream, start_gateway):
    gw = start_gateway(config(fake_upstream, max_retries=2, retry_backoff_initial=1, retry_backoff_max=2))
    fake_upstream.enqueue(Reply(status=503, error="busy"), Reply(status=429, error="slow"), Reply(text="finally"))
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    assert c.chat.completions.create(model="up/m", messages=USER).choices[0].message.content == "finally"
    assert len(fake_upstream.requests) == 3


def test_extra_headers_and_no_key(fake_upstream, start_gateway):
    gw = start_gateway({"plugins": {"openai": {}}, "providers": {"local": {
        "type": "openai", "network_config": {"base_url": fake_upstream.url, "extra_headers": {"X-Org": "acme"}}}}})
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    c.chat.completions.create(model="local/m", messages=USER)
    assert fake_upstream.last.headers["x-org"] == "acme"
    assert "authorization" not in fake_upstream.last.headers


class QuirkyAdapter(OpenAIAdapter):
    def prepare_body(self, body, operation):
        body["quirk"] = operation
        return body


class QuirkyPlugin:
    @hookimpl
    def hookway_register_providers(self, register):
        register("quirky", QuirkyAdapter)


def test_prepare_body_applies_on_both_paths(fake_upstream, start_gateway, mode):
    cfg = {"plugins": {"openai": {}, "quirky": {}},
           "providers": {"q": {"type": "quirky", "network_config": {"base_url": fake_upstream.url}}}}
    if mode == "translated":
        cfg["plugins"]["force_translate"] = {}
    gw = start_gateway(cfg, {"quirky": QuirkyPlugin, "force_translate": ForceTranslate})
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    c.chat.completions.create(model="q/m", messages=USER)
    assert fake_upstream.last.json["quirk"] == "chat"
    list(c.chat.completions.create(model="q/m", messages=USER, stream=True))
    assert fake_upstream.last.json["quirk"] == "chat"


def test_models_fall_back_to_config_when_upstream_fails(start_gateway, refused_port):
    gw = start_gateway({"plugins": {"openai": {}}, "providers": {"up": {
        "type": "openai", "models": ["m1", "m2", "gpt-*"],
        "network_config": {"base_url": f"http://127.0.0.1:{refused_port}/v1"}}}})
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    assert [m.id for m in c.models.list()] == ["up/m1", "up/m2"]


# --- Responses API (translated to chat completions upstream) -------------------------------------

@pytest.fixture
def translated_client(fake_upstream, start_gateway):
    gw = start_gateway(config(fake_upstream, translated=True), {"force_translate": ForceTranslate})
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)


def test_responses_non_stream(translated_client, fake_upstream):
    fake_upstream.enqueue(Reply(text="Paris.", usage=(9, 2, 0)))
    r = translated_client.responses.create(model="up/gpt-x", instructions="Be brief.", input="Capital of France?",
                                           max_output_tokens=50)
    assert r.output_text == "Paris."
    assert (r.usage.input_tokens, r.usage.output_tokens) == (9, 2)
    sent = fake_upstream.last
    assert sent.path == "/v1/chat/completions"
    assert sent.json["messages"] == [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Capital of France?"}]
    assert sent.json["max_completion_tokens"] == 50


def test_responses_stream_text_and_function_call(translated_client, fake_upstream):
    fake_upstream.enqueue(Reply(text="Checking", tool_calls=[{"id": "call_7", "name": "get", "arguments": '{"q": "x"}'}],
                                chunk_size=3, usage=(30, 8, 0)))
    stream = translated_client.responses.create(
        model="up/gpt-x", input=[{"role": "user", "content": "look it up"}], stream=True,
        tools=[{"type": "function", "name": "get", "parameters": {"type": "object", "properties": {}}}])
    events = list(stream)
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Checking"
    assert "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta") == '{"q": "x"}'
    done = events[-1].response
    assert done.usage.input_tokens == 30 and done.usage.output_tokens == 8
    assert [o.type for o in done.output] == ["message", "function_call"]
    assert done.output[1].call_id == "call_7" and done.output[1].name == "get"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_responses_function_call_output_turn(translated_client, fake_upstream):
    translated_client.responses.create(model="up/gpt-x", input=[
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "call_1", "name": "get", "arguments": '{"q": 1}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "found"},
    ], tools=[{"type": "function", "name": "get", "parameters": {"type": "object", "properties": {}}}])
    sent = fake_upstream.last.json["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_1"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "found"}


def test_responses_previous_response_id_cannot_be_translated(translated_client):
    with pytest.raises(openai.BadRequestError) as exc:
        translated_client.responses.create(model="up/gpt-x", input="x", previous_response_id="resp_1")
    assert "previous_response_id" in exc.value.message


def test_responses_pass_through_reaches_upstream_responses_path(fake_upstream, start_gateway):
    gw = start_gateway(config(fake_upstream))
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    # The fake upstream has no /v1/responses (and records nothing for unknown paths): its 404
    # coming back as an OpenAI-shaped error shows the request went there and not to chat.
    with pytest.raises(openai.NotFoundError) as exc:
        c.responses.create(model="up/gpt-x", input="x")
    assert exc.value.status_code == 404 and exc.value.body["type"] == "not_found_error"


def test_sdk_stream_helpers_accumulate_translated_streams(translated_client, fake_upstream):
    """The SDK's .stream() helpers rebuild whole answers from the events and check their order."""
    tools = [{"type": "function", "name": "get", "parameters": {"type": "object", "properties": {}}}]
    fake_upstream.enqueue(Reply(text="Checking", reasoning="hmm", chunk_size=3,
                                tool_calls=[{"id": "call_7", "name": "get", "arguments": '{"q": "x"}'}]))
    with translated_client.responses.stream(model="up/m", input="hi", tools=tools) as s:
        final = s.get_final_response()
    assert [o.type for o in final.output] == ["reasoning", "message", "function_call"]
    assert final.output[0].summary[0].text == "hmm" and final.output_text == "Checking"
    assert (final.output[2].call_id, final.output[2].arguments) == ("call_7", '{"q": "x"}')

    fake_upstream.enqueue(Reply(text="Checking", chunk_size=3,
                                tool_calls=[{"id": "call_8", "name": "get", "arguments": '{"q": "y"}'}]))
    chat_tools = [{"type": "function", "function": {"name": "get", "parameters": {"type": "object", "properties": {}}}}]
    with translated_client.chat.completions.stream(model="up/m", messages=USER, tools=chat_tools) as s:
        done = s.get_final_completion()
    message = done.choices[0].message
    assert message.content == "Checking" and done.choices[0].finish_reason == "tool_calls"
    assert (message.tool_calls[0].id, message.tool_calls[0].function.arguments) == ("call_8", '{"q": "y"}')


class RecordKey:
    """Keeps the key the adapter says it used, as a fallbacks plugin would read it."""

    seen: list = []

    @hookimpl
    def hookway_fallback(self, ctx, error, attempt):
        RecordKey.seen.append(ctx.state.get("provider_key"))
        return None


def test_adapter_records_the_key_it_used(fake_upstream, start_gateway):
    RecordKey.seen = []
    cfg = config(fake_upstream)
    cfg["plugins"]["record_key"] = {}
    gw = start_gateway(cfg, {"record_key": RecordKey})
    fake_upstream.enqueue(Reply(status=503, error="busy"))
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIStatusError):
        c.chat.completions.create(model="up/m", messages=USER)
    assert [k.value for k in RecordKey.seen] == ["sk-upstream"]


def test_no_own_retries_when_a_plugin_does_them(fake_upstream, start_gateway):
    gw = start_gateway(config(fake_upstream, max_retries=3, retry_backoff_initial=1))
    gw.gateway.retries_by_plugin = True
    fake_upstream.enqueue(Reply(status=503, error="busy"), Reply(text="second"))
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIStatusError) as exc:
        c.chat.completions.create(model="up/m", messages=USER)
    assert exc.value.status_code == 503 and len(fake_upstream.requests) == 1


# --- pass-through: cheap type checks before anything is sent ---------------------------------------

@pytest.mark.parametrize("path,body,field", [
    ("chat/completions", {"model": "up/m"}, "messages"),
    ("chat/completions", {"model": "up/m", "messages": "hi"}, "messages"),
    ("chat/completions", {"model": "up/m", "messages": {"role": "user", "content": "hi"}}, "messages"),
    ("chat/completions", {"model": "up/m", "messages": USER, "max_tokens": "5"}, "max_tokens"),
    ("chat/completions", {"model": "up/m", "messages": USER, "max_tokens": True}, "max_tokens"),
    ("chat/completions", {"model": "up/m", "messages": USER, "max_completion_tokens": 1.5}, "max_completion_tokens"),
    ("chat/completions", {"model": "up/m", "messages": USER, "temperature": "hot"}, "temperature"),
    ("chat/completions", {"model": "up/m", "messages": USER, "top_p": False}, "top_p"),
    ("chat/completions", {"model": "up/m", "messages": USER, "stream": "yes"}, "stream"),
    ("chat/completions", {"model": "up/m", "messages": USER, "stream": 1}, "stream"),
    ("completions", {"model": "up/m"}, "prompt"),
    ("completions", {"model": "up/m", "prompt": 5}, "prompt"),
    ("completions", {"model": "up/m", "prompt": "x", "max_tokens": "3"}, "max_tokens"),
    ("completions", {"model": "up/m", "prompt": "x", "temperature": [1]}, "temperature"),
])
def test_passthrough_bad_field_types_are_400_and_never_sent(fake_upstream, start_gateway, path, body, field):
    gw = start_gateway(config(fake_upstream))
    r = httpx.post(f"{gw.url}/v1/{path}", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == field and f"`{field}`" in err["message"]
    assert fake_upstream.requests == []


def test_passthrough_type_checks_accept_valid_and_null_values(fake_upstream, start_gateway):
    gw = start_gateway(config(fake_upstream))
    r = httpx.post(gw.url + "/v1/chat/completions", json={
        "model": "up/m", "messages": USER, "max_tokens": 5, "max_completion_tokens": None, "temperature": 0,
        "top_p": 0.5, "stream": False})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "hello"
    r = httpx.post(gw.url + "/v1/completions", json={"model": "up/m", "prompt": ["a", "b"], "temperature": 1.0})
    assert r.status_code == 200
    assert len(fake_upstream.requests) == 2


# --- reasoning effort only to models that reason ---------------------------------------------------

@pytest.mark.parametrize("model,kept", [("gpt-4o", False), ("llama-3.3-70b", False), ("o3-mini", True),
                                        ("gpt-5.1", True), ("gpt-oss-120b", True), ("openai/o4-mini", True)])
def test_reasoning_effort_translated_only_for_reasoning_models(fake_upstream, start_gateway, model, kept):
    gw = start_gateway(config(fake_upstream, translated=True), {"force_translate": ForceTranslate})
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    c.chat.completions.create(model=f"up/{model}", messages=USER, reasoning_effort="high")
    sent = fake_upstream.last.json
    assert sent.get("reasoning_effort") == ("high" if kept else None)


def test_reasoning_effort_of_the_client_is_kept_on_the_passthrough(client, fake_upstream, mode):
    client.chat.completions.create(model="up/gpt-4o", messages=USER, reasoning_effort="low")
    # Pass-through: the client's own choice. Translated: gpt-4o does not reason, so dropped.
    assert fake_upstream.last.json.get("reasoning_effort") == ("low" if mode == "passthrough" else None)


def test_reasoning_models_setting_overrides_the_defaults(fake_upstream, start_gateway):
    cfg = config(fake_upstream, translated=True)
    cfg["providers"]["up"]["settings"] = {"reasoning_models": ["my-thinker*"]}
    gw = start_gateway(cfg, {"force_translate": ForceTranslate})
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    c.chat.completions.create(model="up/my-thinker-2", messages=USER, reasoning_effort="medium")
    assert fake_upstream.last.json["reasoning_effort"] == "medium"
    c.chat.completions.create(model="up/o3", messages=USER, reasoning_effort="medium")
    assert "reasoning_effort" not in fake_upstream.last.json


# --- what a log sink gets from a pass-through answer ----------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("reply,stop", [(Reply(text="cut short", finish_reason="length"), "max_tokens"),
                                        (Reply(tool_calls=[{"id": "c1", "name": "f", "arguments": "{}"}]), "tool_use"),
                                        (Reply(text="done"), "end_turn")])
def test_stop_reason_is_logged(fake_upstream, start_gateway, mode, stream, reply, stop):
    cfg = config(fake_upstream, mode == "translated")
    cfg["plugins"]["sink"] = {}
    gw = start_gateway(cfg, {"force_translate": ForceTranslate, "sink": RecordingSink})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    fake_upstream.enqueue(reply)
    result = client.chat.completions.create(model="up/gpt-x", messages=USER, stream=stream)
    if stream:
        list(result)
    gw.stop()   # a graceful stop flushes the log queue
    (record,) = RecordingSink.records
    assert (record.passthrough, record.stop_reason) == (mode == "passthrough", stop)


@pytest.mark.parametrize("stream", [False, True])
def test_passthrough_response_body_reads_back_as_a_response(fake_upstream, start_gateway, stream):
    cfg = config(fake_upstream)
    cfg["plugins"]["sink"] = {}
    gw = start_gateway(cfg, {"sink": RecordingSink})
    gw.gateway.log_content = True   # as a sink that stores content would set it
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    fake_upstream.enqueue(Reply(text="Hi ✓", reasoning="think", chunk_size=2, usage=(7, 3, 0),
                                tool_calls=[{"id": "call_a", "name": "f", "arguments": '{"x": 1}'}]))
    result = client.chat.completions.create(model="up/gpt-x", messages=USER, stream=stream,
                                            stream_options={"include_usage": True} if stream else None)
    if stream:
        list(result)
    gw.stop()
    (record,) = RecordingSink.records
    assert record.passthrough and record.response_body
    from hookway_openai.dialect import OpenAIDialect
    got = OpenAIDialect().response_from_bytes(record.response_body, "chat", stream)
    assert got.content == [{"type": "thinking", "thinking": "think", "signature": ""},
                           {"type": "text", "text": "Hi ✓"},
                           {"type": "tool_use", "id": "call_a", "name": "f", "input": {"x": 1}}]
    assert got.stop_reason == "tool_use" and got.usage == ir.Usage(input_tokens=7, output_tokens=3)
