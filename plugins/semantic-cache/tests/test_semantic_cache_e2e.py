"""The semantic cache end to end: real gateways, the official SDKs, the fake upstream."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import openai
import pytest
import structlog
from aiohttp import web

from hookway import hookimpl
from hookway.plugins import discover
from hookway.testing import Reply, ThreadedApp

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PARAPHRASE = [{"role": "user", "content": "Tell me France's capital, please"}]
FAR = [{"role": "user", "content": "And what is the capital of Spain?"}]
KEY = {"x-bf-cache-key": "tests"}

needs_anthropic = pytest.mark.skipif("anthropic" not in discover(),
                                     reason="the anthropic plugin (hookway-anthropic) is not installed")


def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=20)


def ask(gw, messages=QUESTION, headers=KEY, **kw):
    """A non-streamed chat request; returns (headers, completion)."""
    raw = client(gw).chat.completions.with_raw_response.create(
        model="up/m", messages=messages, extra_headers=headers, **kw)
    return raw.headers, raw.parse()


# --- exact ------------------------------------------------------------------------------------

def test_exact_hit_does_not_call_the_upstream_again(cache_gateway, fake_upstream, sc):
    gw = cache_gateway()
    h1, first = ask(gw)
    assert h1["x-hookway-cache"] == "miss"
    assert first.choices[0].message.content == sc.ANSWER
    h2, second = ask(gw)
    assert len(sc.chat_calls(fake_upstream)) == 1
    assert h2["x-hookway-cache"] == "hit"
    assert h2["x-hookway-cache-type"] == "direct"
    assert h2["x-hookway-cache-similarity"] == "1.0000"
    assert h2["x-hookway-cache-id"] == h1["x-hookway-cache-id"]
    assert second.choices[0].message.content == sc.ANSWER
    assert second.choices[0].finish_reason == "stop"
    assert second.model == "up/m"
    assert (second.usage.prompt_tokens, second.usage.completion_tokens) == (12, 7)
    # The exact hit needed no embedding: only the first request embedded its text.
    assert len(sc.embedding_calls(fake_upstream)) == 1


def test_without_the_opt_in_header_nothing_is_cached(cache_gateway, fake_upstream, sc):
    gw = cache_gateway()
    h1, _ = ask(gw, headers={})
    h2, _ = ask(gw, headers={})
    assert "x-hookway-cache" not in h1 and "x-hookway-cache" not in h2
    assert len(sc.chat_calls(fake_upstream)) == 2
    assert sc.embedding_calls(fake_upstream) == []


def test_always_caches_without_the_header_and_hookway_header_names_work(cache_gateway, fake_upstream, sc):
    gw = cache_gateway(always=True, embeddings=None)
    ask(gw, headers={})
    h2, _ = ask(gw, headers={})
    assert h2["x-hookway-cache"] == "hit"
    # A hookway-named key is another cache: a miss, then a hit.
    h3, _ = ask(gw, headers={"x-hookway-cache-key": "other"})
    h4, _ = ask(gw, headers={"x-hookway-cache-key": "other"})
    assert (h3["x-hookway-cache"], h4["x-hookway-cache"]) == ("miss", "hit")
    assert len(sc.chat_calls(fake_upstream)) == 2


def test_parameters_and_model_are_part_of_the_key(cache_gateway, fake_upstream, sc):
    gw = cache_gateway(embeddings=None)
    ask(gw)
    h, _ = ask(gw, temperature=0.1)
    assert h["x-hookway-cache"] == "miss"
    raw = client(gw).chat.completions.with_raw_response.create(model="up/other-model", messages=QUESTION,
                                                               extra_headers=KEY)
    assert raw.headers["x-hookway-cache"] == "miss"
    # Whitespace and the string-vs-blocks shape of the content do not matter.
    h, _ = ask(gw, messages=[{"role": "user", "content": [{"type": "text",
                                                           "text": "  What is the capital of France?\n"}]}])
    assert h["x-hookway-cache"] == "hit"
    assert len(sc.chat_calls(fake_upstream)) == 3


# --- semantic ---------------------------------------------------------------------------------

def test_semantic_hit_on_a_paraphrase(cache_gateway, fake_upstream, sc):
    gw = cache_gateway(threshold=0.9)
    ask(gw)
    h, answer = ask(gw, messages=PARAPHRASE)
    assert h["x-hookway-cache"] == "hit"
    assert h["x-hookway-cache-type"] == "semantic"
    assert h["x-hookway-cache-similarity"] == "0.9600"
    assert answer.choices[0].message.content == sc.ANSWER
    assert len(sc.chat_calls(fake_upstream)) == 1
    # The embeddings went through hookway's own adapter to the configured model.
    embeds = sc.embedding_calls(fake_upstream)
    assert [e.json["model"] for e in embeds] == ["text-embedding-3-small"] * 2
    assert embeds[1].json["input"] == ["user: Tell me France's capital, please"]
    assert embeds[0].headers["authorization"] == "Bearer k"


def test_miss_below_the_threshold(cache_gateway, fake_upstream, sc):
    gw = cache_gateway(threshold=0.9)
    ask(gw)
    h, _ = ask(gw, messages=FAR)   # similarity 0.6
    assert h["x-hookway-cache"] == "miss"
    assert len(sc.chat_calls(fake_upstream)) == 2


def test_threshold_header_can_raise_but_not_lower_the_threshold(cache_gateway, fake_upstream, sc):
    gw = cache_gateway(threshold=0.9)
    ask(gw)
    h, _ = ask(gw, messages=PARAPHRASE, headers={**KEY, "x-bf-cache-threshold": "0.99"})
    assert h["x-hookway-cache"] == "miss"          # 0.96 < 0.99
    h, _ = ask(gw, messages=FAR, headers={**KEY, "x-bf-cache-threshold": "0.5"})
    assert h["x-hookway-cache"] == "miss"          # floored at the configured 0.9


def test_cache_type_direct_skips_the_embedding_and_semantic_skips_the_hash(cache_gateway, fake_upstream, sc):
    gw = cache_gateway(threshold=0.9)
    ask(gw, headers={**KEY, "x-bf-cache-type": "direct"})
    h, _ = ask(gw, headers={**KEY, "x-bf-cache-type": "direct"})
    assert h["x-hookway-cache"] == "hit"
    assert sc.embedding_calls(fake_upstream) == []
    # Stored without a vector, so a semantic-only lookup finds nothing and stores its own.
    h, _ = ask(gw, headers={**KEY, "x-bf-cache-type": "semantic"})
    assert h["x-hookway-cache"] == "miss"
    h, _ = ask(gw, messages=PARAPHRASE, headers={**KEY, "x-bf-cache-type": "semantic"})
    assert (h["x-hookway-cache"], h["x-hookway-cache-type"]) == ("hit", "semantic")


def test_no_store_reads_but_does_not_write(cache_gateway, fake_upstream, sc):
    gw = cache_gateway()
    h, _ = ask(gw, headers={**KEY, "x-bf-cache-no-store": "true"})
    assert h["x-hookway-cache"] == "miss" and "x-hookway-cache-id" not in h
    h, _ = ask(gw)
    assert h["x-hookway-cache"] == "miss"
    h, _ = ask(gw, headers={**KEY, "x-hookway-cache-no-store": "1"})
    assert h["x-hookway-cache"] == "hit"


def test_ttl_expiry(cache_gateway, fake_upstream, sc):
    gw = cache_gateway(ttl="1h")
    # Long enough for the next request to come in time on a loaded machine, and waited out.
    ask(gw, headers={**KEY, "x-bf-cache-ttl": "2s"})
    h, _ = ask(gw)
    assert h["x-hookway-cache"] == "hit"
    time.sleep(2.1)
    h, _ = ask(gw)
    assert h["x-hookway-cache"] == "miss"           # expired: exact and semantic
    assert len(sc.chat_calls(fake_upstream)) == 2


# --- what is not cached -----------------------------------------------------------------------

TOOLS = [{"type": "function", "function": {"name": "weather", "description": "Weather in a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]
TOOL_CONVERSATION = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
]


def test_tool_call_conversations_are_not_cached_by_default(cache_gateway, fake_upstream, sc):
    gw = cache_gateway()
    h1, _ = ask(gw, messages=TOOL_CONVERSATION, tools=TOOLS)
    h2, _ = ask(gw, messages=TOOL_CONVERSATION, tools=TOOLS)
    assert (h1["x-hookway-cache"], h1["x-hookway-cache-reason"]) == ("skip", "tool_calls")
    assert h2["x-hookway-cache"] == "skip"
    assert len(sc.chat_calls(fake_upstream)) == 2
    assert sc.embedding_calls(fake_upstream) == []


def test_answers_that_call_tools_are_not_stored_by_default(cache_gateway, fake_upstream, sc):
    gw = cache_gateway()
    call = Reply(tool_calls=[{"id": "call_9", "name": "weather", "arguments": '{"city":"Paris"}'}])
    fake_upstream.responder = lambda rec: sc.responder(rec) if rec.path.endswith("/embeddings") else call
    question = [{"role": "user", "content": "Weather in Paris?"}]
    h1, first = ask(gw, messages=question, tools=TOOLS)
    assert first.choices[0].message.tool_calls[0].function.name == "weather"
    h2, _ = ask(gw, messages=question, tools=TOOLS)
    assert (h1["x-hookway-cache"], h2["x-hookway-cache"]) == ("miss", "miss")
    assert len(sc.chat_calls(fake_upstream)) == 2


def test_tool_calls_are_cached_when_configured(cache_gateway, fake_upstream, sc):
    gw = cache_gateway(cache_tool_calls=True, embeddings=None)
    ask(gw, messages=TOOL_CONVERSATION, tools=TOOLS)
    h, answer = ask(gw, messages=TOOL_CONVERSATION, tools=TOOLS)
    assert h["x-hookway-cache"] == "hit"
    assert answer.choices[0].message.content == sc.ANSWER


def test_long_conversations_are_not_cached(cache_gateway, fake_upstream, sc):
    gw = cache_gateway(conversation_history_threshold=2)
    long = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "What is the capital of France?"}]
    h, _ = ask(gw, messages=long)
    assert (h["x-hookway-cache"], h["x-hookway-cache-reason"]) == ("skip", "history")


# --- streamed replay --------------------------------------------------------------------------

def _stream(gw, include_usage=True, messages=QUESTION):
    raw = client(gw).chat.completions.with_raw_response.create(
        model="up/m", messages=messages, extra_headers=KEY, stream=True,
        stream_options={"include_usage": True} if include_usage else None)
    return raw.headers, list(raw.parse())


def test_streamed_replay_in_the_openai_dialect_event_by_event(cache_gateway, fake_upstream, sc):
    gw = cache_gateway()
    h1, live = _stream(gw)
    assert h1["x-hookway-cache"] == "miss"
    assert "".join(c.choices[0].delta.content or "" for c in live if c.choices) == sc.ANSWER
    h2, replay = _stream(gw)
    assert h2["x-hookway-cache"] == "hit"
    assert h2["content-type"].startswith("text/event-stream")
    assert len(sc.chat_calls(fake_upstream)) == 1
    # Chunk by chunk: the role, the text, the finish reason, then the usage chunk.
    assert [c.object for c in replay] == ["chat.completion.chunk"] * len(replay)
    assert replay[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in replay if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == sc.ANSWER
    finishes = [c.choices[0].finish_reason for c in replay if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert replay[-1].choices == []
    assert (replay[-1].usage.prompt_tokens, replay[-1].usage.completion_tokens) == (12, 7)
    assert {c.id for c in replay} == {replay[0].id}
    assert all(c.model == "up/m" for c in replay)


def test_a_non_streamed_answer_is_replayed_as_a_stream_and_back(cache_gateway, fake_upstream, sc):
    gw = cache_gateway()
    ask(gw)                                             # stored from a whole answer
    h, replay = _stream(gw, include_usage=False)
    assert h["x-hookway-cache"] == "hit"
    assert "".join(c.choices[0].delta.content or "" for c in replay if c.choices) == sc.ANSWER
    assert all(c.usage is None for c in replay)         # the caller did not ask for usage
    h, _ = _stream(gw, messages=PARAPHRASE)             # a stream stored, a whole answer replayed
    assert h["x-hookway-cache"] == "hit"
    assert len(sc.chat_calls(fake_upstream)) == 1


@needs_anthropic
def test_streamed_replay_in_the_anthropic_dialect_event_by_event(cache_gateway, fake_upstream, sc):
    import anthropic

    gw = cache_gateway()
    ac = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0, timeout=20)

    h1, live = stream_once(ac)
    assert h1["x-hookway-cache"] == "miss"
    h2, events = stream_once(ac)
    assert h2["x-hookway-cache"] == "hit"
    assert len(sc.chat_calls(fake_upstream)) == 1
    assert [e.type for e in events] == ["message_start", "content_block_start", "content_block_delta",
                                        "content_block_stop", "message_delta", "message_stop"]
    start = events[0].message
    assert start.role == "assistant" and start.model == "up/m" and start.usage.input_tokens == 12
    assert events[1].content_block.type == "text"
    assert events[2].delta.type == "text_delta" and events[2].delta.text == sc.ANSWER
    assert events[4].delta.stop_reason == "end_turn"
    assert events[4].usage.output_tokens == 7
    # A whole answer from the same entry.
    raw = ac.messages.with_raw_response.create(model="up/m", max_tokens=100, messages=QUESTION,
                                               extra_headers=KEY)
    message = raw.parse()
    assert raw.headers["x-hookway-cache"] == "hit"
    assert message.content[0].text == sc.ANSWER and message.stop_reason == "end_turn"


def stream_once(ac):
    raw = ac.messages.with_raw_response.create(model="up/m", max_tokens=100, messages=QUESTION,
                                               stream=True, extra_headers=KEY)
    return raw.headers, list(raw.parse())


@needs_anthropic
def test_the_key_is_dialect_neutral(cache_gateway, fake_upstream, sc):
    import anthropic

    gw = cache_gateway()
    ask(gw, max_tokens=100)
    ac = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0, timeout=20)
    raw = ac.messages.with_raw_response.create(model="up/m", max_tokens=100, messages=QUESTION,
                                               extra_headers=KEY)
    assert raw.headers["x-hookway-cache"] == "hit"
    assert raw.headers["x-hookway-cache-type"] == "direct"
    assert raw.parse().content[0].text == sc.ANSWER


# --- embeddings budget and failures -----------------------------------------------------------

@pytest.fixture
def slow_embeddings():
    """An OpenAI-compatible embeddings server that answers only once the test is over;
    ``.requests`` counts what it was asked."""
    release = threading.Event()
    server = None

    async def embeddings(request):
        server.requests += 1
        while not release.is_set():
            await asyncio.sleep(0.01)
        return web.json_response({"data": [{"embedding": [1.0, 0.0]}]})
    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    server = ThreadedApp(app).start()
    server.requests = 0
    yield server
    release.set()
    server.stop()


def test_a_slow_embedding_never_blocks_a_miss_past_its_budget(cache_gateway, fake_upstream, sc, slow_embeddings):
    providers = {"up": {"type": "openai", "keys": [{"value": "k"}],
                        "network_config": {"base_url": fake_upstream.url}},
                 "slow": {"type": "openai", "network_config": {"base_url": slow_embeddings.url + "/v1"}}}
    with structlog.testing.capture_logs() as logs:
        gw = cache_gateway(providers=providers, embeddings={"provider": "slow", "model": "e", "timeout_ms": 150})
        h, answer = ask(gw)
    assert h["x-hookway-cache"] == "miss" and answer.choices[0].message.content == sc.ANSWER
    # Answered while the embedding was still pending (it never comes during the test), because the
    # lookup gave up on it at its 150 ms budget (checked exactly rather than with a stopwatch).
    deadline = time.monotonic() + 30   # the embedding request may reach its server after the answer
    while slow_embeddings.requests < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slow_embeddings.requests == 1
    timeouts = [(e["what"], e["error"]) for e in logs if e["event"] == "semantic_cache_failing"]
    assert timeouts == [("embedding", "timed out after 150 ms")]
    # Stored without a vector: the exact path still hits.
    h, _ = ask(gw)
    assert h["x-hookway-cache"] == "hit"
    stats = httpx.get(gw.url + "/api/cache").json()
    assert stats["embedding_timeouts"] == 1 and stats["hits_direct"] == 1


def test_a_failing_embeddings_provider_is_a_miss_not_an_error(cache_gateway, fake_upstream, sc):
    gw = cache_gateway()
    fake_upstream.enqueue(Reply(status=500, error="embeddings down"))
    h, answer = ask(gw)
    assert h["x-hookway-cache"] == "miss" and answer.choices[0].message.content == sc.ANSWER
    h, _ = ask(gw)
    assert h["x-hookway-cache"] == "hit"


# --- management API, log records --------------------------------------------------------------

def test_delete_a_key_and_everything(cache_gateway, fake_upstream, sc):
    gw = cache_gateway(embeddings=None)
    ask(gw)
    ask(gw, headers={"x-bf-cache-key": "keep"})
    r = httpx.delete(gw.url + "/api/cache/tests")
    assert r.status_code == 200 and r.json()["deleted"] == 1
    assert ask(gw)[0]["x-hookway-cache"] == "miss"
    assert ask(gw, headers={"x-bf-cache-key": "keep"})[0]["x-hookway-cache"] == "hit"
    # One entry by its id (the id a miss announced).
    h, _ = ask(gw, headers={"x-bf-cache-key": "third"})
    assert httpx.delete(gw.url + "/api/cache/clear/" + h["x-hookway-cache-id"]).json()["deleted"] == 1
    assert ask(gw, headers={"x-bf-cache-key": "third"})[0]["x-hookway-cache"] == "miss"
    r = httpx.delete(gw.url + "/api/cache")
    assert r.status_code == 200 and r.json()["deleted"] == 3
    assert ask(gw, headers={"x-bf-cache-key": "keep"})[0]["x-hookway-cache"] == "miss"
    assert httpx.get(gw.url + "/api/cache").json()["entries"] == 1


def test_management_api_needs_the_admin_token_when_one_is_set(fake_upstream, start_gateway, tmp_path):
    token = "t" * 40
    gw = start_gateway({"server": {"admin_token": token, "data_dir": str(tmp_path)},
                        "plugins": {"openai": {}, "semantic-cache": {}},
                        "providers": {"up": {"type": "openai", "network_config": {"base_url": fake_upstream.url}}}})
    assert httpx.delete(gw.url + "/api/cache").status_code == 401
    assert httpx.delete(gw.url + "/api/cache", headers={"Authorization": f"Bearer {token}"}).status_code == 200


class Sink:
    records: list = []

    @hookimpl
    def hookway_log(self, records):
        Sink.records.extend(records)


def test_the_log_record_marks_the_hit(cache_gateway, fake_upstream, sc):
    Sink.records = []
    gw = cache_gateway(extra_plugins={"sink": Sink}, threshold=0.9)
    ask(gw)
    ask(gw, messages=PARAPHRASE)
    deadline = time.monotonic() + 30   # records are delivered in background batches
    while len(Sink.records) < 2:
        assert time.monotonic() < deadline, Sink.records
        time.sleep(0.02)
    miss, hit = Sink.records[:2]
    assert (miss.cache_hit, miss.cache_status) == (False, "miss")
    assert (hit.cache_hit, hit.cache_similarity, hit.extra["cache_type"]) == (True, 0.96, "semantic")
    assert hit.output_tokens == 7


class KeyAuth:
    """Callers are told apart by an x-test-key header."""

    @hookimpl
    def hookway_auth(self, ctx):
        from hookway.pipeline import Identity
        key = ctx.headers.get("x-test-key")
        return Identity(key_id=key) if key else None


def test_callers_do_not_share_entries_unless_scope_is_none(cache_gateway, fake_upstream, sc):
    gw = cache_gateway(extra_plugins={"keyauth": KeyAuth}, embeddings=None)
    ask(gw, headers={**KEY, "x-test-key": "alice"})
    assert ask(gw, headers={**KEY, "x-test-key": "bob"})[0]["x-hookway-cache"] == "miss"
    assert ask(gw, headers={**KEY, "x-test-key": "alice"})[0]["x-hookway-cache"] == "hit"
    shared = cache_gateway(extra_plugins={"keyauth": KeyAuth}, embeddings=None, scope="none")
    ask(shared, headers={**KEY, "x-test-key": "alice"})
    assert ask(shared, headers={**KEY, "x-test-key": "bob"})[0]["x-hookway-cache"] == "hit"


def test_text_completions_are_cached(cache_gateway, fake_upstream, sc):
    gw = cache_gateway(embeddings=None)
    c = client(gw)
    for expected in ("miss", "hit"):
        raw = c.completions.with_raw_response.create(model="up/m", prompt="Once upon a time", extra_headers=KEY)
        assert raw.headers["x-hookway-cache"] == expected
        assert raw.parse().choices[0].text == sc.ANSWER
    assert len([r for r in fake_upstream.requests if r.path.endswith("/v1/completions")]) == 1
