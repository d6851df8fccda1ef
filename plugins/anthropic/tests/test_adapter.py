"""The Anthropic adapter against a local fake Anthropic API (tests/conftest.py): byte
pass-through, translation both ways, streams, errors, retries and count_tokens."""

from types import SimpleNamespace

import pytest
from multidict import CIMultiDict

from hookway import ir
from hookway.errors import GatewayError
from hookway.providers import NetworkConfig, ProviderConfig, ProviderKey, Target
from hookway_anthropic.adapter import AnthropicAdapter, request_to_messages
from hookway_anthropic.dialect import AnthropicDialect

D = AnthropicDialect()
FIRST_TURN = "first-turn-2.1.197.json"
TARGET = Target("claude", "claude-sonnet-4-5")
SIGNATURE = "EqQBCkgIARABGAIiQL7p+/a/b=="   # opaque bytes that must come back untouched


@pytest.fixture
async def adapter(fake_anthropic):
    made = []

    async def make(**network):
        config = ProviderConfig(name="claude", type="anthropic", keys=[ProviderKey("k1", "sk-upstream")],
                                network=NetworkConfig(base_url=fake_anthropic.url, **network))
        a = AnthropicAdapter(config)
        await a.start()
        made.append(a)
        return a

    yield make
    for a in made:
        await a.close()


def context(headers=None, query=None, body=None):
    return SimpleNamespace(headers=CIMultiDict(headers or {}), request=SimpleNamespace(query=query or {}),
                           response_headers={}, body=body or {}, dialect=D, parsed=False)


# --- pass-through ----------------------------------------------------------------------------------

async def test_forward_is_byte_exact_and_forwards_version_beta_and_query(adapter, fake_anthropic,
                                                                       claude_code_request):
    reply = fake_anthropic.Reply(content=[
        {"type": "thinking", "thinking": "Let me think about the greeting.", "signature": SIGNATURE},
        {"type": "text", "text": "Hi! How can I help?"}], chunk_size=7)
    fake_anthropic.enqueue(reply)
    request = claude_code_request(FIRST_TURN)
    body = dict(request["body"], model=TARGET.model)
    ctx = context(request["headers"], {"beta": "true"})
    upstream = await (await adapter()).forward(body, "chat", TARGET, ctx)
    data = b"".join([c async for c in upstream.chunks()])
    upstream.release()
    assert upstream.status == 200
    assert data == b"".join(fake_anthropic.stream_events(reply, TARGET.model))
    assert SIGNATURE.encode() in data
    seen = fake_anthropic.last
    assert seen.query == {"beta": "true"}
    assert seen.json == body
    assert seen.headers["x-api-key"] == "sk-upstream"
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["anthropic-beta"] == request["headers"]["anthropic-beta"]
    assert "authorization" not in seen.headers   # the client's gateway key never goes upstream
    assert ctx.response_headers == {"request-id": "req_fake"}


async def test_forward_defaults_version_and_sends_no_beta(adapter, fake_anthropic):
    body = {"model": TARGET.model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    upstream = await (await adapter()).forward(body, "chat", TARGET, context())
    await upstream.response.read()
    upstream.release()
    seen = fake_anthropic.last
    assert seen.headers["anthropic-version"] == "2023-06-01" and "anthropic-beta" not in seen.headers
    assert seen.query == {}


@pytest.mark.parametrize("status, error_type, kind", [
    (429, "rate_limit_error", "rate_limit"),
    (529, "overloaded_error", "overloaded"),
    (500, "api_error", "api_error"),
    (400, "invalid_request_error", "invalid_request"),
    (401, "authentication_error", "authentication"),
])
async def test_forward_relays_upstream_errors(adapter, fake_anthropic, status, error_type, kind):
    fake_anthropic.enqueue(fake_anthropic.Reply(status=status, error_type=error_type, error="upstream says no",
                                                headers={"retry-after": "7"}))
    body = {"model": TARGET.model, "max_tokens": 5, "messages": []}
    with pytest.raises(GatewayError) as exc:
        await (await adapter()).forward(body, "chat", TARGET, context())
    err = exc.value
    assert (err.status, err.kind) == (status, kind)
    assert err.message == "claude: upstream says no"
    assert err.headers == {"retry-after": "7"}
    status_out, rendered = D.render_error(err)
    assert status_out == status and rendered["error"]["type"] == error_type


async def test_retries_transient_failures(adapter, fake_anthropic):
    fake_anthropic.enqueue(fake_anthropic.Reply(status=529, error_type="overloaded_error"),
                           fake_anthropic.Reply(content=[{"type": "text", "text": "second try"}]))
    a = await adapter(max_retries=1, retry_backoff_initial=1)
    resp = await a.complete(D.parse({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
                                    "chat"), TARGET, context())
    assert resp.content == [{"type": "text", "text": "second try"}]
    assert len(fake_anthropic.requests) == 2


async def test_connection_refused_is_502(fake_anthropic):
    config = ProviderConfig(name="claude", type="anthropic",
                            network=NetworkConfig(base_url="http://127.0.0.1:9/v1"))
    a = AnthropicAdapter(config)
    await a.start()
    try:
        with pytest.raises(GatewayError) as exc:
            await a.forward({"model": "m"}, "chat", TARGET, context())
        assert exc.value.status == 502 and exc.value.kind == "bad_gateway"
    finally:
        await a.close()


# --- translation (OpenAI clients -> Anthropic) ------------------------------------------------------

def openai_like_request(**kw) -> ir.Request:
    req = ir.Request(
        model="claude/claude-sonnet-4-5",
        system=[],
        messages=[{"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
                  {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                  {"role": "assistant", "content": [
                      {"type": "thinking", "thinking": "from another model", "signature": ""},
                      {"type": "tool_use", "id": "call_1", "name": "get_Weather", "input": {"city": "Oslo"}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1",
                                                "content": [{"type": "text", "text": "-3C"}], "is_error": False}]}],
        max_tokens=2000, temperature=0.5, stop=["END"], user="u-7",
        tools=[ir.Tool("get_Weather", "weather", {"type": "object", "properties": {"city": {"type": "string"}}})],
        tool_choice="any", parallel_tool_calls=False, extra={"logit_bias": {"1": 2}, "seed": 3})
    for k, v in kw.items():
        setattr(req, k, v)
    return req


def test_request_to_messages_field_by_field():
    body = request_to_messages(openai_like_request(), "claude-sonnet-4-5", stream=True)
    assert body == {
        "model": "claude-sonnet-4-5", "max_tokens": 2000, "stream": True,
        "system": [{"type": "text", "text": "Be terse."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            # thinking without a signature (another model's) is dropped: Anthropic would refuse it
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "get_Weather",
                                               "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1",
                                          "content": [{"type": "text", "text": "-3C"}], "is_error": False}]}],
        "tools": [{"name": "get_Weather", "description": "weather",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "temperature": 0.5, "stop_sequences": ["END"], "metadata": {"user_id": "u-7"}}


@pytest.mark.parametrize("budget, effort, max_tokens, thinking", [
    (5000, None, 16000, {"type": "enabled", "budget_tokens": 5000}),
    (5000, None, 3000, {"type": "enabled", "budget_tokens": 2999}),   # budget < max_tokens
    (None, "medium", 16000, {"type": "enabled", "budget_tokens": 8192}),   # an OpenAI client's effort
    (None, "high", 1000, None),   # no room for the 1024-token minimum
    (None, None, 16000, None),
])
def test_thinking_from_reasoning(budget, effort, max_tokens, thinking):
    req = openai_like_request(reasoning_budget=budget, reasoning_effort=effort, max_tokens=max_tokens)
    body = request_to_messages(req, "c")
    assert body.get("thinking") == thinking
    if thinking:   # Anthropic refuses a temperature other than 1 with thinking
        assert "temperature" not in body


def test_anthropic_client_fields_survive_a_translated_round_trip(claude_code_request):
    # An Anthropic client whose request a plugin changed goes through translation: its
    # adaptive thinking, effort, context_management and server tools reach Anthropic again.
    body = claude_code_request(FIRST_TURN)["body"]
    body = dict(body, tools=body["tools"] + [{"type": "web_search_20250305", "name": "web_search"}])
    out = request_to_messages(D.parse(body, "chat"), "claude-opus-4-5")
    assert out["thinking"] == {"type": "adaptive"}
    assert out["output_config"] == {"effort": "high"}
    assert out["context_management"] == body["context_management"]
    assert out["system"] == body["system"]
    assert out["metadata"] == body["metadata"] and out["max_tokens"] == 64000
    assert [t["name"] for t in out["tools"]] == [t["name"] for t in body["tools"]]
    assert out["messages"][1] == {"role": "system", "content": [{"type": "text", "text": body["messages"][1]["content"]}]}


async def test_complete_translates_both_ways(adapter, fake_anthropic):
    fake_anthropic.enqueue(fake_anthropic.Reply(
        content=[{"type": "text", "text": "Checking."},
                 {"type": "tool_use", "id": "toolu_9", "name": "get_Weather", "input": {"city": "Oslo"}}],
        stop_reason="tool_use", usage=(50, 20, 30, 4)))
    resp = await (await adapter()).complete(openai_like_request(), TARGET, context())
    assert fake_anthropic.last.json["model"] == "claude-sonnet-4-5"
    assert "stream" not in fake_anthropic.last.json
    assert resp == ir.Response(id="msg_fake0001", model="claude-sonnet-4-5", content=[
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_9", "name": "get_Weather", "input": {"city": "Oslo"}}],
        stop_reason="tool_use", stop_sequence=None, usage=ir.Usage(50, 20, 30, 4))


async def collect(gen):
    return [ev async for ev in gen]


async def test_stream_translates_the_messages_sse(adapter, fake_anthropic):
    fake_anthropic.enqueue(fake_anthropic.Reply(content=[
        {"type": "thinking", "thinking": "hmm", "signature": SIGNATURE},
        {"type": "redacted_thinking", "data": "xyz"},
        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}],
        stop_reason="tool_use", usage=(10, 8, 2, 0)))
    events = await collect((await adapter()).stream(openai_like_request(), TARGET, context()))
    assert fake_anthropic.last.json["stream"] is True
    assert events == [
        ir.MessageStart("msg_fake0001", "claude-sonnet-4-5", ir.Usage(10, 1, 2, 0)),
        ir.BlockStart(0, "thinking"), ir.Ping(), ir.BlockDelta(0, "thinking", "hmm"),
        ir.BlockDelta(0, "signature", SIGNATURE), ir.BlockStop(0),
        # the redacted_thinking block (index 1) has no canonical form and is skipped
        ir.BlockStart(2, "tool_use", "toolu_1", "Bash"), ir.BlockDelta(2, "json", '{"command":"ls"}'),
        ir.BlockStop(2),
        ir.MessageDelta("tool_use", ir.Usage(output_tokens=8)), ir.MessageStop()]


async def test_stream_error_event_becomes_stream_error(adapter, fake_anthropic):
    fake_anthropic.enqueue(fake_anthropic.Reply(stream_error=(3, "overloaded_error", "Overloaded")))
    events = await collect((await adapter()).stream(openai_like_request(), TARGET, context()))
    assert type(events[0]) is ir.MessageStart
    assert type(events[-1]) is ir.StreamError
    assert (events[-1].error.status, events[-1].error.kind) == (529, "overloaded")
    assert events[-1].error.message == "claude: Overloaded"


async def test_stream_cut_before_message_stop_is_an_error(adapter, fake_anthropic):
    fake_anthropic.enqueue(fake_anthropic.Reply(cut_after=4))
    events = await collect((await adapter()).stream(openai_like_request(), TARGET, context()))
    assert type(events[-1]) is ir.StreamError and events[-1].error.status == 502
    assert not any(type(e) is ir.MessageStop for e in events)


async def test_stream_refusal_raises_before_the_first_event(adapter, fake_anthropic):
    fake_anthropic.enqueue(fake_anthropic.Reply(status=429, error_type="rate_limit_error", error="slow down"))
    gen = (await adapter()).stream(openai_like_request(), TARGET, context())
    with pytest.raises(GatewayError) as exc:
        await gen.__anext__()
    assert exc.value.status == 429


# --- count_tokens ----------------------------------------------------------------------------------

async def test_count_tokens_sends_the_clients_body(adapter, fake_anthropic):
    fake_anthropic.enqueue(fake_anthropic.Reply(count=1234))
    body = {"model": "claude/claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}],
            "tools": [], "fallbacks": ["x/y"]}
    ctx = context({"anthropic-beta": "token-counting-2024-11-01"}, body=body)
    assert await (await adapter()).count_tokens(None, TARGET, ctx) == 1234
    seen = fake_anthropic.last
    assert seen.path == "/v1/messages/count_tokens"
    assert seen.json == {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}], "tools": []}
    assert seen.headers["anthropic-beta"] == "token-counting-2024-11-01"


async def test_count_tokens_from_a_canonical_request(adapter, fake_anthropic):
    fake_anthropic.enqueue(fake_anthropic.Reply(count=77))
    assert await (await adapter()).count_tokens(openai_like_request(), TARGET, context()) == 77
    sent = fake_anthropic.last.json
    assert set(sent) == {"model", "messages", "system", "tools", "tool_choice"}
