"""Rate limits (429 with retry-after): requests and tokens per period, per key, per provider
config, per team."""

from __future__ import annotations

import httpx
import openai
import pytest

from governance_testing import chat, client, set_clock


def test_request_limit_is_429_with_retry_after_and_resets(gov):
    gw, admin = gov()
    clock = set_clock(gw)
    _, value = admin.key(rate_limit={"request_max_limit": 3, "request_reset_duration": "1m"})
    c = client(gw, value)
    for _ in range(3):
        chat(c)
    with pytest.raises(openai.RateLimitError) as exc:
        chat(c)
    assert exc.value.status_code == 429 and "3 requests per 1m" in exc.value.message
    assert 1 <= int(exc.value.response.headers["retry-after"]) <= 60
    clock.advance(30)
    with pytest.raises(openai.RateLimitError) as exc:
        chat(c)
    assert int(exc.value.response.headers["retry-after"]) <= 30
    clock.advance(30)
    chat(c)


def test_token_limit_counts_the_tokens_of_finished_requests(gov):
    gw, admin = gov()
    clock = set_clock(gw)
    kid, value = admin.key(rate_limit={"token_max_limit": 20, "token_reset_duration": "1h"})
    c = client(gw, value)
    chat(c)                          # 15 tokens (10 in, 5 out)
    chat(c)                          # 15 < 20 before it: admitted -> 30
    with pytest.raises(openai.RateLimitError) as exc:
        chat(c)
    assert "token limit" in exc.value.message
    rl = admin.get(f"/api/governance/virtual-keys/{kid}").json()["virtual_key"]["rate_limit"]
    assert rl["token_current_usage"] == 30 and rl["token_max_limit"] == 20
    clock.advance(3600)
    chat(c)


def test_provider_config_rate_limit_applies_to_that_provider_only(gov):
    gw, admin = gov()
    _, value = admin.key(provider_configs=[
        {"provider": "up", "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}},
        {"provider": "up2"}])
    c = client(gw, value)
    chat(c, "up/m")
    with pytest.raises(openai.RateLimitError) as exc:
        chat(c, "up/m")
    assert "on up" in exc.value.message
    chat(c, "up2/m2")
    chat(c, "up2/m2")


def test_team_rate_limit_is_shared_by_its_keys(gov):
    gw, admin = gov()
    team = admin.team(name="t", rate_limit={"request_max_limit": 2, "request_reset_duration": "1d"})
    _, a = admin.key(team_id=team)
    _, b = admin.key(team_id=team)
    chat(client(gw, a))
    chat(client(gw, b))
    with pytest.raises(openai.RateLimitError):
        chat(client(gw, a))


def test_refused_requests_do_not_reach_the_provider(gov, fake_upstream):
    gw, admin = gov()
    _, value = admin.key(rate_limit={"request_max_limit": 1, "request_reset_duration": "1h"})
    body = {"model": "up/m", "messages": [{"role": "user", "content": "x"}]}
    with httpx.Client(base_url=gw.url, headers={"x-bf-vk": value}) as http:
        assert http.post("/v1/chat/completions", json=body).status_code == 200
        r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    assert len(fake_upstream.requests) == 1
