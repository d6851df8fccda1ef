"""401/403 decisions, key headers, allowed providers and models, routing weights, anonymity."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from governance_testing import chat, client


def test_the_issue_walkthrough_a_created_key_is_accepted_and_others_are_refused(gov):
    gw, admin = gov()
    r = admin.post("/api/governance/virtual-keys", {
        "name": "claude-code-up", "is_active": True,
        "provider_configs": [{"provider": "up", "allowed_models": ["*"], "weight": 1.0}]})
    assert r.status_code == 200
    value = r.json()["virtual_key"]["value"]
    assert value.startswith("sk-hw-") and len(value) > 40
    assert chat(client(gw, value)).choices[0].message.content == "hello"
    with pytest.raises(openai.AuthenticationError) as exc:
        chat(client(gw, None))
    assert exc.value.status_code == 401 and "virtual key is required" in exc.value.message
    with pytest.raises(openai.AuthenticationError) as exc:
        chat(client(gw, "sk-hw-not-a-real-key-at-all-000000000000"))
    assert "invalid virtual key" in exc.value.message


@pytest.mark.parametrize("header,template", [
    ("Authorization", "Bearer {}"), ("x-api-key", "{}"), ("x-bf-vk", "{}"), ("api-key", "{}"),
    ("x-goog-api-key", "{}")])
def test_the_key_is_accepted_from_every_header(gov, header, template):
    gw, admin = gov()
    _, value = admin.key()
    body = {"model": "up/m", "messages": [{"role": "user", "content": "x"}]}
    assert httpx.post(gw.url + "/v1/chat/completions", json=body, headers={header: template.format(value)},
                      timeout=10).status_code == 200
    assert httpx.post(gw.url + "/v1/chat/completions", json=body,
                      headers={header: template.format(value + "x")}, timeout=10).status_code == 401


def test_the_virtual_key_wins_over_another_value_in_a_second_header(gov):
    gw, admin = gov()
    _, value = admin.key()
    r = httpx.post(gw.url + "/v1/chat/completions", timeout=10,
                   json={"model": "up/m", "messages": [{"role": "user", "content": "x"}]},
                   headers={"Authorization": "Bearer some-provider-key", "x-bf-vk": value})
    assert r.status_code == 200


def test_inactive_key_is_403_until_reactivated(gov):
    gw, admin = gov()
    kid, value = admin.key(is_active=False)
    with pytest.raises(openai.PermissionDeniedError) as exc:
        chat(client(gw, value))
    assert exc.value.status_code == 403 and "inactive" in exc.value.message
    assert admin.put(f"/api/governance/virtual-keys/{kid}", {"is_active": True}).status_code == 200
    assert chat(client(gw, value)).choices[0].message.content == "hello"


def test_expired_key_is_403(gov):
    gw, admin = gov()
    _, past = admin.key(expires_at="2020-01-01T00:00:00Z")
    _, future = admin.key(expires_at=time.time() + 3600)
    with pytest.raises(openai.PermissionDeniedError) as exc:
        chat(client(gw, past))
    assert "expired" in exc.value.message
    assert chat(client(gw, future)).choices[0].message.content == "hello"


def test_allowed_providers_and_models_with_globs(gov, fake_upstream):
    gw, admin = gov()
    _, value = admin.key(provider_configs=[{"provider": "up", "allowed_models": ["llama-*", "m"]}])
    c = client(gw, value)
    assert chat(c, "up/llama-3.3-70b").choices[0].message.content == "hello"
    assert chat(c, "up/m").choices[0].message.content == "hello"
    with pytest.raises(openai.PermissionDeniedError) as exc:
        chat(c, "up/gpt-4o")
    assert "may not use model 'gpt-4o'" in exc.value.message
    with pytest.raises(openai.PermissionDeniedError) as exc:
        chat(c, "up2/m2")
    assert "may not use provider 'up2'" in exc.value.message
    assert [r.json["model"] for r in fake_upstream.requests] == ["llama-3.3-70b", "m"]


def test_provider_globs_and_empty_configs_allow_everything(gov):
    gw, admin = gov()
    _, glob = admin.key(provider_configs=[{"provider": "up*"}])
    _, open_key = admin.key()
    for value in (glob, open_key):
        assert chat(client(gw, value), "up2/m2").choices[0].message.content == "hello"


def test_unprefixed_model_follows_the_keys_provider_weights(gov, fake_upstream):
    gw, admin = gov()
    _, only_up2 = admin.key(provider_configs=[{"provider": "up", "weight": 0},
                                              {"provider": "up2", "weight": 1}])
    c = client(gw, only_up2)
    for _ in range(3):
        chat(c, "llama-3.3-70b")
    # up2's upstream key was used every time, and the model name went through unchanged.
    assert {r.headers["authorization"] for r in fake_upstream.requests} == {"Bearer sk-upstream-2"}
    assert {r.json["model"] for r in fake_upstream.requests} == {"llama-3.3-70b"}
    fake_upstream.requests.clear()
    _, both = admin.key(provider_configs=[{"provider": "up", "weight": 1}, {"provider": "up2", "weight": 1}])
    c = client(gw, both)
    for _ in range(40):
        chat(c, "x-model")
    used = {r.headers["authorization"] for r in fake_upstream.requests}
    assert used == {"Bearer sk-upstream-1", "Bearer sk-upstream-2"}


def test_model_list_shows_only_what_the_key_may_use(gov):
    gw, admin = gov()
    _, value = admin.key(provider_configs=[{"provider": "up", "allowed_models": ["llama-*"]}])
    _, open_key = admin.key()
    everything = {m.id for m in client(gw, open_key).models.list()}
    assert {"up/llama-3.3-70b", "up/m", "up2/m2"} <= everything
    assert {m.id for m in client(gw, value).models.list()} == {"up/llama-3.3-70b"}
    with pytest.raises(openai.AuthenticationError):
        client(gw, None).models.list()


def test_anonymous_requests_only_when_the_config_allows_them(gov):
    gw, admin = gov(server={"allow_anonymous": True})
    assert chat(client(gw, None)).choices[0].message.content == "hello"
    # A value that is not a hookway key may be a provider key sent on purpose: anonymous.
    assert chat(client(gw, "some-provider-key")).choices[0].message.content == "hello"
    with pytest.raises(openai.AuthenticationError):
        chat(client(gw, "sk-hw-unknown-key-000000000000000000000"))
    _, value = admin.key(is_active=False)
    with pytest.raises(openai.PermissionDeniedError):
        chat(client(gw, value))


def test_anthropic_sdk_gets_the_decisions_in_its_own_error_shape(gov):
    anthropic = pytest.importorskip("anthropic")
    gw, admin = gov(plugins={"anthropic": {}})
    c = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="sk-hw-nope-0000000000000000000000",
                            max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as exc:
        c.messages.create(model="up/m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert exc.value.body["type"] == "error"
    assert exc.value.body["error"]["type"] == "authentication_error"
    _, value = admin.key(budget={"max_limit": 0.0, "reset_duration": "1d"})
    c = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key=value, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as exc:
        c.messages.create(model="up/m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 402 and exc.value.body["error"]["type"] == "billing_error"
    _, value = admin.key(rate_limit={"request_max_limit": 1, "request_reset_duration": "1h"})
    c = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key=value, max_retries=0)
    assert c.messages.create(model="up/m", max_tokens=10,
                             messages=[{"role": "user", "content": "hi"}]).content[0].text == "hello"
    with pytest.raises(anthropic.RateLimitError) as exc:
        c.messages.create(model="up/m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert exc.value.body["error"]["type"] == "rate_limit_error"
    assert 3500 <= int(exc.value.response.headers["retry-after"]) <= 3600
