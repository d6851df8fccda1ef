"""End to end: the official ``anthropic`` SDK (and raw HTTP where the SDK would hide the wire) ->
a started gateway (plugins openai + anthropic) -> the fake OpenAI upstream (provider ``cerebras``
of type openai) or the fake Anthropic upstream (provider ``claude`` of type anthropic)."""

from __future__ import annotations

import anthropic
import httpx
import openai
import orjson
import pytest

from hookway import hookimpl
from hookway.testing import Reply
from hookway_anthropic.dialect import AnthropicDialect
from hookway_anthropic.tokens import estimate_request

MODEL = "cerebras/llama-3.3-70b"
USER = [{"role": "user", "content": "Say hi"}]
TOOLS = [{"name": "Bash", "description": "Run a command",
          "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}},
         {"name": "Read", "description": "Read a file",
          "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}}]


@pytest.fixture
def gateway(fake_upstream, fake_anthropic, start_gateway):
    return start_gateway({
        "server": {"ping_interval_seconds": 0.1},
        "plugins": {"openai": {}, "anthropic": {}},
        "providers": {
            "cerebras": {"type": "openai", "keys": [{"value": "sk-cerebras"}],
                         "network_config": {"base_url": fake_upstream.url}},
            "claude": {"type": "anthropic", "keys": [{"value": "sk-ant-upstream"}],
                       "network_config": {"base_url": fake_anthropic.url}},
        }})


@pytest.fixture
def client(gateway):
    return anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key="sk-gateway-key", max_retries=0)


def sse_events(data: bytes) -> list[tuple[str, dict]]:
    out = []
    for raw in data.strip().split(b"\n\n"):
        lines = dict(line.split(b": ", 1) for line in raw.split(b"\n"))
        out.append((lines[b"event"].decode(), orjson.loads(lines[b"data"])))
    return out


def post_raw(gateway, path: str, body, headers=None) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(gateway.url + path, content=content, timeout=30,
                      headers={"content-type": "application/json", "x-api-key": "sk-gateway-key", **(headers or {})})


# --- text -----------------------------------------------------------------------------------------

def test_text_non_stream(client, fake_upstream):
    fake_upstream.enqueue(Reply(text="Hi there ✓", usage=(12, 3, 4)))
    msg = client.messages.create(model=MODEL, max_tokens=100, messages=USER, system="Be brief.")
    assert msg.type == "message" and msg.role == "assistant" and msg.id.startswith("msg_")
    assert msg.model == MODEL
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == "Hi there ✓"
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (8, 4, 3)
    sent = fake_upstream.last.json
    assert sent["model"] == "llama-3.3-70b"
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    assert fake_upstream.last.headers["authorization"] == "Bearer sk-cerebras"


def test_text_stream(client, fake_upstream):
    fake_upstream.enqueue(Reply(text="Hello, streaming world", chunk_size=5, usage=(20, 6, 0)))
    with client.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello, streaming world"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (20, 6)
    assert fake_upstream.last.json["stream"] is True


# --- tools ----------------------------------------------------------------------------------------

def test_streamed_tool_use(client, fake_upstream):
    fake_upstream.enqueue(Reply(tool_calls=[{"id": "call_1", "name": "Bash", "arguments": '{"command": "ls -la /tmp"}'}],
                                chunk_size=4))
    events = list(client.messages.create(model=MODEL, max_tokens=100, messages=USER, tools=TOOLS, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    start = next(e for e in events if e.type == "content_block_start")
    assert start.content_block.type == "tool_use" and start.content_block.name == "Bash"
    assert start.content_block.id == "call_1" and start.content_block.input == {}
    fragments = [e.delta.partial_json for e in events if e.type == "content_block_delta"]
    assert len(fragments) > 3 and "".join(fragments) == '{"command": "ls -la /tmp"}'
    assert next(e for e in events if e.type == "message_delta").delta.stop_reason == "tool_use"
    sent = fake_upstream.last.json
    assert [t["function"]["name"] for t in sent["tools"]] == ["Bash", "Read"]


def test_several_tools_in_one_turn(client, fake_upstream):
    fake_upstream.enqueue(Reply(text="Looking.", tool_calls=[
        {"id": "call_a", "name": "Read", "arguments": '{"file_path": "/a"}'},
        {"id": "call_b", "name": "Bash", "arguments": '{"command": "pwd"}'}], chunk_size=3))
    with client.messages.stream(model=MODEL, max_tokens=100, messages=USER, tools=TOOLS) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert [(b.id, b.name, b.input) for b in final.content[1:]] == [
        ("call_a", "Read", {"file_path": "/a"}), ("call_b", "Bash", {"command": "pwd"})]
    assert final.stop_reason == "tool_use"


def test_tool_result_turn_goes_upstream_as_tool_messages(client, fake_upstream):
    client.messages.create(model=MODEL, max_tokens=100, tools=TOOLS, messages=[
        {"role": "user", "content": "list files"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "a.txt"}]}])
    sent = fake_upstream.last.json["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_1"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"}


# --- reasoning ------------------------------------------------------------------------------------

@pytest.mark.parametrize("model,effort", [("cerebras/gpt-oss-120b", "low"), (MODEL, None)])
def test_reasoning_becomes_a_thinking_block(client, fake_upstream, model, effort):
    fake_upstream.enqueue(Reply(reasoning="Six times seven.", text="42", chunk_size=4))
    with client.messages.stream(model=model, max_tokens=2000, messages=USER,
                                thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Six times seven." and final.content[1].text == "42"
    # The thinking budget becomes an effort only for a model that reasons (gpt-oss); a model
    # that does not (llama) gets no reasoning setting, which it might refuse.
    assert fake_upstream.last.json.get("reasoning_effort") == effort


def test_reasoning_non_stream(client, fake_upstream):
    fake_upstream.enqueue(Reply(reasoning="hmm", text="ok"))
    msg = client.messages.create(model=MODEL, max_tokens=100, messages=USER)
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in msg.content] == [
        ("thinking", "hmm"), ("text", "ok")]


# --- errors ---------------------------------------------------------------------------------------

def test_upstream_429_is_rate_limit_error(client, fake_upstream):
    fake_upstream.enqueue(Reply(status=429, error="Too many requests", error_type="rate_limit_exceeded",
                                headers={"retry-after": "3"}))
    with pytest.raises(anthropic.RateLimitError) as exc:
        client.messages.create(model=MODEL, max_tokens=10, messages=USER, stream=True)
    assert exc.value.status_code == 429
    assert exc.value.body["type"] == "error" and exc.value.body["error"]["type"] == "rate_limit_error"
    assert "Too many requests" in exc.value.body["error"]["message"]
    assert exc.value.response.headers["retry-after"] == "3"


def test_a_context_overflow_is_worded_as_anthropic_words_it(client, fake_upstream):
    # Cerebras' wording; Claude Code compacts the conversation on Anthropic's "prompt is too long".
    fake_upstream.enqueue(Reply(raw=orjson.dumps({
        "message": "Please reduce the length of the messages or completion.", "type": "invalid_request_error",
        "param": "messages", "code": "context_length_exceeded"}), status=400))
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(model=MODEL, max_tokens=10, messages=USER, stream=True)
    error = exc.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("prompt is too long: ")
    assert "Please reduce the length of the messages" in error["message"]


def test_an_anthropic_context_overflow_reaches_an_openai_client_with_its_code(gateway, fake_anthropic):
    fake_anthropic.enqueue(fake_anthropic.Reply(status=400, error_type="invalid_request_error",
                                                error="prompt is too long: 210118 tokens > 200000 maximum"))
    oai = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-gateway-key", max_retries=0)
    with pytest.raises(openai.BadRequestError) as exc:
        oai.chat.completions.create(model="claude/claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.code == "context_length_exceeded"
    assert "210118 tokens > 200000 maximum" in exc.value.message


def test_a_rate_limit_about_tokens_is_not_a_context_overflow(client, fake_upstream):
    fake_upstream.enqueue(Reply(status=429, error="Too many tokens per minute; reduce the length of the messages",
                                error_type="rate_limit_exceeded"))
    with pytest.raises(anthropic.RateLimitError) as exc:
        client.messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert not exc.value.body["error"]["message"].startswith("prompt is too long")


def test_upstream_500_stays_5xx(client, fake_upstream):
    fake_upstream.enqueue(Reply(status=500, error="boom"))
    with pytest.raises(anthropic.InternalServerError) as exc:
        client.messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert exc.value.status_code >= 500 and exc.value.body["error"]["type"] == "api_error"


def test_upstream_503_keeps_its_status(client, fake_upstream):
    fake_upstream.enqueue(Reply(status=503, error="down"))
    with pytest.raises(anthropic.APIStatusError) as exc:
        client.messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert exc.value.status_code == 503 and exc.value.body["error"]["type"] == "api_error"


@pytest.mark.parametrize("body, field", [
    ({"model": MODEL, "messages": USER}, "max_tokens"),
    ({"model": MODEL, "max_tokens": "ten", "messages": USER}, "max_tokens"),
    ({"model": MODEL, "max_tokens": 10}, "messages"),
    ({"max_tokens": 10, "messages": USER}, "model"),
    ({"model": MODEL, "max_tokens": 10, "messages": [{"content": "hi"}]}, "messages.0.role"),
    (b'{"model": "x", "messages": [', "JSON"),
])
def test_malformed_input_is_400_naming_the_field(gateway, fake_upstream, body, field):
    r = post_raw(gateway, "/anthropic/v1/messages", body)
    assert r.status_code == 400
    error = r.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert field in error["error"]["message"]
    assert fake_upstream.requests == []


def test_sdk_bad_request_error_names_the_field(client):
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "robot", "content": "x"}])
    assert "messages.0.role" in exc.value.body["error"]["message"]


def test_unknown_provider_is_404_not_found_error(client):
    with pytest.raises(anthropic.NotFoundError) as exc:
        client.messages.create(model="nope/model", max_tokens=10, messages=USER)
    assert exc.value.body["error"]["type"] == "not_found_error"


def test_failure_after_the_first_byte_is_an_in_stream_error(gateway, fake_upstream):
    fake_upstream.enqueue(Reply(text="abcdefghij", chunk_size=1, drop_after=4))
    r = post_raw(gateway, "/anthropic/v1/messages", {"model": MODEL, "max_tokens": 10, "messages": USER, "stream": True})
    assert r.status_code == 200
    events = sse_events(r.content)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-1] == "error"
    assert "message_stop" not in names
    assert events[-1][1]["error"]["type"] == "api_error"


def test_pings_during_a_slow_answer(gateway, fake_upstream):
    fake_upstream.enqueue(Reply(text="slow", chunk_delay=0.3))
    r = post_raw(gateway, "/anthropic/v1/messages", {"model": MODEL, "max_tokens": 10, "messages": USER, "stream": True})
    assert b'event: ping\ndata: {"type": "ping"}\n\n' in r.content
    names = [n for n, _ in sse_events(r.content)]
    assert names[0] == "message_start" and names[-1] == "message_stop"


# --- Claude Code's own requests -------------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["first-turn-2.1.197.json", "tool-result-turn-2.1.197.json"])
def test_claude_code_request_with_beta_query(gateway, fake_upstream, claude_code_request, fixture):
    request = claude_code_request(fixture)
    body = dict(request["body"], model=MODEL)
    fake_upstream.enqueue(Reply(text="hi", chunk_size=1))
    r = post_raw(gateway, "/v1/messages?beta=true", body,
                 {"anthropic-version": "2023-06-01", "anthropic-beta": "claude-code-20250219"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    names = [n for n, _ in sse_events(r.content)]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    sent = fake_upstream.last.json
    assert len(sent["tools"]) == 24 and sent["max_completion_tokens"] == 64000


def test_probes(gateway):
    assert httpx.head(gateway.url + "/").status_code == 200
    assert httpx.head(gateway.url + "/anthropic").status_code == 200
    r = httpx.get(gateway.url + "/anthropic")
    assert r.status_code == 200 and r.json()["dialect"] == "anthropic"


# --- models and count_tokens ----------------------------------------------------------------------

def test_models_list(client, gateway):
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert "cerebras/llama-3.3-70b" in ids and "cerebras/gpt-oss-120b" in ids
    assert all(m.type == "model" and m.display_name == m.id for m in page.data)
    raw = httpx.get(gateway.url + "/anthropic/v1/models").json()   # the SDK hides these fields
    assert raw["has_more"] is False and raw["first_id"] == ids[0] and raw["last_id"] == ids[-1]


def test_models_at_the_root_answer_in_the_callers_shape(gateway):
    # ANTHROPIC_BASE_URL may be the gateway's root: the SDK then asks GET /v1/models, which the
    # OpenAI SDK asks too. The anthropic-version header every Anthropic client sends tells them apart.
    root = anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0)
    page = root.models.list()
    ids = [m.id for m in page.data]
    assert "cerebras/llama-3.3-70b" in ids and all(m.type == "model" for m in page.data)
    assert root.models.retrieve("cerebras/llama-3.3-70b").display_name == "cerebras/llama-3.3-70b"
    missing = httpx.get(gateway.url + "/v1/models/nope/none", headers={"anthropic-version": "2023-06-01"})
    assert missing.status_code == 404 and missing.json()["type"] == "error"
    openai_page = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0).models.list()
    assert [m.id for m in openai_page.data] == ids and all(m.object == "model" for m in openai_page.data)


def test_model_by_id_under_the_anthropic_prefix(client):
    assert client.models.retrieve("cerebras/gpt-oss-120b").id == "cerebras/gpt-oss-120b"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("cerebras/none")


@pytest.mark.parametrize("base", ["/anthropic", ""])
def test_claude_code_model_discovery(gateway, base):
    # Claude Code (CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY=1) asks GET <base>/v1/models?limit=1000
    # with one credential header and a 3 s timeout; it reads data[].id (and display_name) and
    # keeps only the ids that begin with "claude" or "anthropic".
    r = httpx.get(gateway.url + base + "/v1/models", params={"limit": 1000},
                  headers={"authorization": "Bearer sk-gateway-key"}, timeout=3, follow_redirects=False)
    assert r.status_code == 200
    ids = [m["id"] for m in r.json()["data"]]
    assert "cerebras/gpt-oss-120b" in ids
    picked = [i for i in ids if i.startswith(("claude", "anthropic"))]
    assert picked == [i for i in ids if i.startswith("claude/")]   # a provider named "claude" shows


def test_count_tokens_of_claude_code_keeps_beta_for_an_anthropic_provider(gateway, fake_anthropic):
    # Claude Code counts with the SDK's beta.messages.countTokens: POST .../count_tokens?beta=true.
    fake_anthropic.enqueue(fake_anthropic.Reply(count=99))
    r = post_raw(gateway, "/v1/messages/count_tokens?beta=true",
                 {"model": "claude/claude-opus-4-8", "messages": USER},
                 headers={"anthropic-beta": "claude-code-20250219,context-management-2025-06-27",
                          "anthropic-version": "2023-06-01"})
    assert r.status_code == 200 and r.json() == {"input_tokens": 99}
    assert r.headers["x-hookway-token-count"] == "provider"
    seen = fake_anthropic.last
    assert seen.path == "/v1/messages/count_tokens" and seen.query == {"beta": "true"}
    assert seen.headers["anthropic-beta"] == "claude-code-20250219,context-management-2025-06-27"


def test_count_tokens_is_estimated_for_an_openai_provider(client, fake_upstream):
    result = client.messages.count_tokens(model=MODEL, messages=USER, tools=TOOLS, system="Be brief.")
    body = {"model": MODEL, "messages": USER, "tools": TOOLS, "system": "Be brief."}
    assert result.input_tokens == estimate_request(AnthropicDialect().parse(body, "count_tokens"))
    assert fake_upstream.requests == []   # nothing asked upstream


@pytest.mark.parametrize("fixture, o200k", [("first-turn-2.1.197.json", 17510),
                                            ("tool-result-turn-2.1.197.json", 17547)])
def test_count_tokens_on_claude_code_requests(gateway, claude_code_request, fixture, o200k):
    body = claude_code_request(fixture)["body"]
    body = {k: v for k, v in body.items() if k not in ("max_tokens", "stream", "metadata")}
    r = post_raw(gateway, "/v1/messages/count_tokens?beta=true", dict(body, model=MODEL))
    assert r.status_code == 200 and r.headers["x-hookway-token-count"] == "estimate"
    # o200k_base counts of the same texts (see README): the estimate stays within 10%.
    assert abs(r.json()["input_tokens"] / o200k - 1) < 0.10


def test_count_tokens_validates_like_messages(gateway):
    r = post_raw(gateway, "/anthropic/v1/messages/count_tokens", {"model": MODEL})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]


def test_count_tokens_asks_an_anthropic_provider(client, fake_anthropic):
    fake_anthropic.enqueue(fake_anthropic.Reply(count=321))
    result = client.messages.count_tokens(model="claude/claude-sonnet-4-5", messages=USER)
    assert result.input_tokens == 321
    assert fake_anthropic.last.path == "/v1/messages/count_tokens"
    assert fake_anthropic.last.json == {"model": "claude-sonnet-4-5", "messages": USER}


def test_count_tokens_falls_back_to_the_estimate_when_anthropic_fails(gateway, fake_anthropic):
    fake_anthropic.enqueue(fake_anthropic.Reply(status=500))
    r = post_raw(gateway, "/anthropic/v1/messages/count_tokens", {"model": "claude/claude-sonnet-4-5", "messages": USER})
    assert r.status_code == 200 and r.headers["x-hookway-token-count"] == "estimate"
    assert r.json()["input_tokens"] > 0


# --- an Anthropic upstream ------------------------------------------------------------------------

def test_passthrough_to_anthropic_is_byte_exact(gateway, fake_anthropic, claude_code_request):
    signature = "EqQBCkgIARABGAIiQL7p+/a/b=="
    reply = fake_anthropic.Reply(content=[{"type": "thinking", "thinking": "Let me see.", "signature": signature},
                                          {"type": "text", "text": "Hello ✓"}], chunk_size=3, usage=(9, 4, 100, 7))
    fake_anthropic.enqueue(reply)
    request = claude_code_request("first-turn-2.1.197.json")
    body = dict(request["body"], model="claude/claude-opus-4-5")
    r = post_raw(gateway, "/v1/messages?beta=true", body,
                 {"anthropic-version": request["headers"]["anthropic-version"],
                  "anthropic-beta": request["headers"]["anthropic-beta"]})
    assert r.status_code == 200
    assert r.content == b"".join(fake_anthropic.stream_events(reply, "claude-opus-4-5"))
    seen = fake_anthropic.last
    assert seen.query == {"beta": "true"}
    assert seen.json == dict(request["body"], model="claude-opus-4-5")   # only the model rewritten
    assert seen.headers["anthropic-beta"] == request["headers"]["anthropic-beta"]
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["x-api-key"] == "sk-ant-upstream"
    assert r.headers["request-id"] == "req_fake"


def test_sdk_with_betas_to_anthropic(client, fake_anthropic):
    fake_anthropic.enqueue(fake_anthropic.Reply(content=[{"type": "text", "text": "beta ok"}]))
    msg = client.beta.messages.create(model="claude/claude-sonnet-4-5", max_tokens=10, messages=USER,
                                      betas=["context-management-2025-06-27"])
    assert msg.content[0].text == "beta ok"
    assert fake_anthropic.last.headers["anthropic-beta"] == "context-management-2025-06-27"


def test_anthropic_upstream_error_keeps_529(client, fake_anthropic):
    fake_anthropic.enqueue(fake_anthropic.Reply(status=529, error_type="overloaded_error", error="Overloaded"))
    with pytest.raises(anthropic.APIStatusError) as exc:
        client.messages.create(model="claude/claude-sonnet-4-5", max_tokens=10, messages=USER)
    assert exc.value.status_code == 529
    assert exc.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "claude: Overloaded"}}


def test_openai_client_to_anthropic_is_translated(gateway, fake_anthropic):
    fake_anthropic.enqueue(fake_anthropic.Reply(content=[{"type": "text", "text": "from claude"}], chunk_size=4))
    oai = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-gateway-key", max_retries=0)
    stream = oai.chat.completions.create(model="claude/claude-sonnet-4-5", stream=True, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "from claude"
    sent = fake_anthropic.last.json
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert sent["stream"] is True and sent["max_tokens"] == 4096


class ForceTranslate:
    """Touches the canonical request, which turns the byte pass-through off."""

    @hookimpl
    def hookway_transform_request(self, ctx, target):
        ctx.ir


def test_anthropic_to_anthropic_translated_keeps_signatures_and_fields(fake_anthropic, start_gateway,
                                                                      claude_code_request):
    gw = start_gateway({"plugins": {"openai": {}, "anthropic": {}, "force_translate": {}},
                        "providers": {"claude": {"type": "anthropic", "keys": [{"value": "sk-ant"}],
                                                 "network_config": {"base_url": fake_anthropic.url}}}},
                       {"force_translate": ForceTranslate})
    signature = "EqQBCkgIARABGAIiQL7p+/a/b=="
    fake_anthropic.enqueue(fake_anthropic.Reply(
        content=[{"type": "thinking", "thinking": "Let me see.", "signature": signature},
                 {"type": "tool_use", "id": "toolu_7", "name": "Bash", "input": {"command": "ls"}}],
        stop_reason="tool_use", chunk_size=3, usage=(9, 4, 100, 7)))
    body = claude_code_request("first-turn-2.1.197.json")["body"]
    client = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
    known = {k: body[k] for k in ("messages", "system", "tools", "metadata", "max_tokens", "thinking")}
    extra = {k: body[k] for k in ("context_management", "output_config")}
    with client.messages.stream(model="claude/claude-opus-4-5", extra_body=extra, **known) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "tool_use"]
    assert final.content[0].signature == signature and final.content[0].thinking == "Let me see."
    assert final.content[1].input == {"command": "ls"} and final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens,
            final.usage.cache_creation_input_tokens, final.usage.output_tokens) == (9, 100, 7, 4)
    sent = fake_anthropic.last.json
    for field in ("system", "tools", "metadata", "context_management", "max_tokens"):
        assert sent[field] == body[field], field
    assert sent["thinking"] == {"type": "adaptive"} and sent["output_config"] == {"effort": "high"}


# --- malformed content blocks: always a 400 naming the field, never a 500 ------------------------

def _user(*blocks):
    return [{"role": "user", "content": list(blocks)}]


def _assistant(*blocks):
    return [{"role": "user", "content": "hi"}, {"role": "assistant", "content": list(blocks)}]


_TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}
_PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}

MALFORMED_BLOCKS = [
    ({"messages": _user({"type": "text", "text": 5})}, "messages.0.content.0.text", "expected a string"),
    ({"messages": _user({"type": "text", "text": None})}, "messages.0.content.0.text", "expected a string"),
    ({"messages": _user({"type": "text"})}, "messages.0.content.0.text", "field required"),
    ({"system": [{"type": "text", "text": 5}]}, "system.0.text", "expected a string"),
    ({"messages": _user({"type": "image", "source": 5})}, "messages.0.content.0.source", "expected an object"),
    ({"messages": _user({"type": "image"})}, "messages.0.content.0.source", "field required"),
    ({"messages": _user({"type": "image", "source": {"type": "base64", "media_type": "image/png"}})},
     "messages.0.content.0.source.data", "field required"),
    ({"messages": _user({"type": "image", "source": {"type": "url"}})},
     "messages.0.content.0.source.url", "field required"),
    ({"messages": _user({"type": "image", "source": {"type": "url", "url": 5}})},
     "messages.0.content.0.source.url", "expected a string"),
    ({"messages": _user({"type": "image", "source": {"media_type": "image/png"}})},
     "messages.0.content.0.source.type", "field required"),
    ({"messages": _user({"type": "document", "source": {"type": "text", "media_type": "text/plain"}})},
     "messages.0.content.0.source.data", "field required"),
    ({"messages": _user({"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": 5}]})},
     "messages.0.content.0.content.0.text", "expected a string"),
    ({"messages": _user({"type": "tool_result", "tool_use_id": "toolu_1",
                         "content": [{"type": "image", "source": {"type": "base64"}}]})},
     "messages.0.content.0.content.0.source.data", "field required"),
    ({"messages": _user({"type": "tool_result", "tool_use_id": 5, "content": "ok"})},
     "messages.0.content.0.tool_use_id", "expected a string"),
    ({"messages": _assistant(dict(_TOOL_USE, id=5))}, "messages.1.content.0.id", "expected a string"),
    ({"messages": _assistant(dict(_TOOL_USE, name=None))}, "messages.1.content.0.name", "expected a string"),
    ({"messages": _assistant(dict(_TOOL_USE, input="ls"))}, "messages.1.content.0.input", "expected an object"),
    ({"messages": _assistant(dict(_TOOL_USE, input=None))}, "messages.1.content.0.input", "expected an object"),
    ({"messages": _assistant({"type": "thinking", "thinking": 5, "signature": "s"})},
     "messages.1.content.0.thinking", "expected a string"),
    ({"messages": _assistant({"type": "thinking", "thinking": "hm", "signature": 5})},
     "messages.1.content.0.signature", "expected a string"),
]


@pytest.mark.parametrize("mode", ["non-stream", "stream", "count_tokens"])
@pytest.mark.parametrize("change, param, problem", MALFORMED_BLOCKS)
def test_malformed_content_blocks_are_400_naming_the_path(gateway, fake_upstream, mode, change, param, problem):
    body = {"model": "cerebras/m", "max_tokens": 5, "messages": USER, **change}
    path = "/anthropic/v1/messages"
    if mode == "stream":
        body["stream"] = True
    elif mode == "count_tokens":
        del body["max_tokens"]
        path += "/count_tokens"
    r = post_raw(gateway, path, body)
    assert r.status_code == 400, r.text
    assert r.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": f"{param}: {problem}"}}
    assert fake_upstream.requests == []


def test_well_formed_blocks_of_every_kind_still_pass(client, fake_upstream):
    fake_upstream.enqueue(Reply(text="ok"))
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image", "source": _PNG},
                                     {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                                     {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                                     "data": "doc"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "sig"},
                                          {"type": "redacted_thinking", "data": "xyz"}, _TOOL_USE]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "is_error": False,
                                      "content": [{"type": "text", "text": "out"}, {"type": "image", "source": _PNG}]}]},
    ]
    msg = client.messages.create(model=MODEL, max_tokens=10, messages=messages, system=[{"type": "text", "text": "s"}])
    assert msg.content[0].text == "ok"
    assert client.messages.count_tokens(model=MODEL, messages=messages).input_tokens > 0


@pytest.mark.parametrize("path", ["/anthropic/v1/messages", "/anthropic/v1/messages/count_tokens"])
@pytest.mark.parametrize("change, param, message", [
    ({"stream": "yes"}, "stream", "`stream` must be a boolean, found 'yes'"),
    ({"stream": 1}, "stream", "`stream` must be a boolean, found 1"),
    ({"messages": []}, "messages", "messages: at least one message is required"),
])
def test_stream_flag_and_empty_messages_are_400(gateway, fake_upstream, path, change, param, message):
    r = post_raw(gateway, path, {"model": MODEL, "max_tokens": 5, "messages": USER, **change})
    assert r.status_code == 400, r.text
    assert r.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    assert fake_upstream.requests == []


def test_passthrough_logs_the_stop_reason_and_a_readable_answer(fake_anthropic, start_gateway):
    from hookway.testing import RecordingSink

    class ContentSink(RecordingSink):
        @hookimpl
        def hookway_configure(self, settings, gateway):
            gateway.log_content = True

    gw = start_gateway({"plugins": {"openai": {}, "anthropic": {}, "sink": {}},
                        "providers": {"claude": {"type": "anthropic", "keys": [{"value": "sk-ant"}],
                                                 "network_config": {"base_url": fake_anthropic.url}}}},
                       {"sink": ContentSink})
    tool = {"type": "tool_use", "id": "toolu_9", "name": "Bash", "input": {"command": "ls -la"}}
    reply = fake_anthropic.Reply(content=[{"type": "text", "text": "Running it."}, tool], stop_reason="tool_use",
                                 chunk_size=4, usage=(11, 6, 0, 0))
    fake_anthropic.enqueue(reply, reply)
    for stream in (True, False):
        r = post_raw(gw, "/anthropic/v1/messages", {"model": "claude/claude-sonnet-4-5", "max_tokens": 50,
                                                    "messages": USER, "stream": stream})
        assert r.status_code == 200
    gw.stop()   # flushes the log queue
    records = RecordingSink.records
    assert [(r.passthrough, r.stream, r.stop_reason) for r in records] == [(True, True, "tool_use"),
                                                                          (True, False, "tool_use")]
    dialect = AnthropicDialect()
    for record in records:
        resp = dialect.response_from_bytes(record.response_body, "chat", record.stream)
        assert resp.content == [{"type": "text", "text": "Running it."}, tool]
        assert resp.stop_reason == "tool_use" and (resp.usage.input_tokens, resp.usage.output_tokens) == (11, 6)
