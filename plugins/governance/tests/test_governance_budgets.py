"""Budgets (402) at every level, charged after each request, with reset periods."""

from __future__ import annotations

import openai
import pytest

from hookway import hookimpl

from governance_testing import COST, chat, client, set_clock, wait_for


def test_key_budget_refuses_with_402_once_spent_and_resets_after_its_period(gov):
    gw, admin = gov()
    clock = set_clock(gw)
    kid, value = admin.key(budget={"max_limit": 0.05, "reset_duration": "1h"})
    c = client(gw, value)
    for _ in range(3):              # 0.00, 0.02, 0.04 spent before each: all under 0.05
        chat(c)
    with pytest.raises(openai.APIStatusError) as exc:
        chat(c)
    assert exc.value.status_code == 402
    assert "budget exceeded for virtual key" in exc.value.message and "resets in 1h" in exc.value.message
    assert exc.value.body["type"] == "insufficient_quota"
    vk = admin.get(f"/api/governance/virtual-keys/{kid}").json()["virtual_key"]
    assert vk["budget"]["current_usage"] == pytest.approx(3 * COST)
    assert vk["budget"]["max_limit"] == 0.05 and vk["budget"]["reset_duration"] == "1h"
    clock.advance(3600)
    chat(c)
    vk = admin.get(f"/api/governance/virtual-keys/{kid}").json()["virtual_key"]
    assert vk["budget"]["current_usage"] == pytest.approx(COST)


@pytest.mark.parametrize("options", [{"include_usage": True}, None])
def test_streamed_answers_are_charged_from_their_usage(gov, options):
    gw, admin = gov()
    kid, value = admin.key(budget={"max_limit": 0.03, "reset_duration": "1d"})
    c = client(gw, value)
    for _ in range(2):
        chunks = list(chat(c, stream=True, **({"stream_options": options} if options else {})))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "hello"
        # A client that did not ask for usage does not get the usage chunk.
        assert any(ch.usage for ch in chunks) == bool(options)
    usage = admin.get(f"/api/governance/virtual-keys/{kid}").json()["virtual_key"]["budget"]["current_usage"]
    assert usage == pytest.approx(2 * COST)
    with pytest.raises(openai.APIStatusError) as exc:
        chat(c, stream=True)
    assert exc.value.status_code == 402


def test_team_budget_covers_every_key_of_the_team(gov):
    gw, admin = gov()
    team = admin.team(name="platform", budget={"max_limit": 0.03, "reset_duration": "1M"})
    other = admin.team(name="research")
    _, a = admin.key(team_id=team)
    _, b = admin.key(team_id=team)
    _, c = admin.key(team_id=other)
    chat(client(gw, a))
    chat(client(gw, b))             # 0.02 < 0.03: admitted, brings the team to 0.04
    for value in (a, b):
        with pytest.raises(openai.APIStatusError) as exc:
            chat(client(gw, value))
        assert exc.value.status_code == 402 and "team 'platform'" in exc.value.message
    chat(client(gw, c))             # another team is not affected
    t = admin.get(f"/api/governance/teams/{team}").json()["team"]
    assert t["budget"]["current_usage"] == pytest.approx(2 * COST)


def test_customer_budget_covers_its_teams_and_its_direct_keys(gov):
    gw, admin = gov()
    customer = admin.customer(name="acme", budget={"max_limit": 0.03, "reset_duration": "1d"})
    team = admin.team(name="acme-eng", customer_id=customer)
    _, via_team = admin.key(team_id=team)
    _, direct = admin.key(customer_id=customer)
    chat(client(gw, via_team))
    chat(client(gw, direct))
    for value in (via_team, direct):
        with pytest.raises(openai.APIStatusError) as exc:
            chat(client(gw, value))
        assert exc.value.status_code == 402 and "customer 'acme'" in exc.value.message
    cust = admin.get(f"/api/governance/customers/{customer}").json()["customer"]
    assert cust["budget"]["current_usage"] == pytest.approx(2 * COST)
    assert cust["teams"] == [team]


def test_every_level_is_checked_and_every_level_is_charged(gov):
    gw, admin = gov()
    clock = set_clock(gw)
    customer = admin.customer(name="c", budget={"max_limit": 10, "reset_duration": "1d"})
    team = admin.team(name="t", customer_id=customer, budget={"max_limit": 10, "reset_duration": "1d"})
    kid, value = admin.key(team_id=team, budgets=[{"max_limit": 0.03, "reset_duration": "1h"},
                                                  {"max_limit": 10, "reset_duration": "1d"}])
    c = client(gw, value)
    chat(c)
    chat(c)
    with pytest.raises(openai.APIStatusError) as exc:
        chat(c)
    assert "per 1h" in exc.value.message
    clock.advance(3600)             # the hourly budget resets; the daily ones keep counting
    chat(c)
    vk = admin.get(f"/api/governance/virtual-keys/{kid}").json()["virtual_key"]
    assert [b["current_usage"] for b in vk["budgets"]] == [pytest.approx(COST), pytest.approx(3 * COST)]
    for path, name in ((f"/api/governance/teams/{team}", "team"), (f"/api/governance/customers/{customer}", "customer")):
        assert admin.get(path).json()[name]["budget"]["current_usage"] == pytest.approx(3 * COST)


def test_provider_config_budget_applies_to_that_provider_only(gov):
    gw, admin = gov()
    _, value = admin.key(provider_configs=[
        {"provider": "up", "allowed_models": ["*"], "budget": {"max_limit": 0.01, "reset_duration": "1d"}},
        {"provider": "up2", "allowed_models": ["*"]}])
    c = client(gw, value)
    chat(c, "up/m")
    with pytest.raises(openai.APIStatusError) as exc:
        chat(c, "up/m")
    assert exc.value.status_code == 402 and "on up" in exc.value.message
    chat(c, "up2/m2")


def test_lifetime_budget_and_zero_budget(gov):
    gw, admin = gov()
    _, zero = admin.key(budget={"max_limit": 0})
    with pytest.raises(openai.APIStatusError) as exc:
        chat(client(gw, zero))
    assert exc.value.status_code == 402 and "does not reset" in exc.value.message


def test_raising_a_limit_keeps_what_was_spent(gov):
    gw, admin = gov()
    kid, value = admin.key(budget={"max_limit": 0.01, "reset_duration": "1d"})
    c = client(gw, value)
    chat(c)
    with pytest.raises(openai.APIStatusError):
        chat(c)
    r = admin.put(f"/api/governance/virtual-keys/{kid}", {"budget": {"max_limit": 0.05}})
    assert r.status_code == 200
    budget = r.json()["virtual_key"]["budget"]
    assert budget["max_limit"] == 0.05 and budget["reset_duration"] == "1d"
    assert budget["current_usage"] == pytest.approx(COST)
    chat(c)


def test_default_prices_apply_by_provider_type(gov, fake_upstream):
    from hookway.testing import Reply
    gw, admin = gov(governance={"pricing": {}})
    kid, value = admin.key(budget={"max_limit": 100, "reset_duration": "1d"})
    fake_upstream.enqueue(Reply(text="hi", usage=(1_000_000, 1_000_000, 400_000)))
    # Provider "up" is of type openai, so openai/gpt-4o-mini* prices it: 600k fresh input tokens at
    # $0.15/M, 400k cached at $0.075/M, 1M output at $0.60/M.
    chat(client(gw, value), "up/gpt-4o-mini")
    usage = admin.get(f"/api/governance/virtual-keys/{kid}").json()["virtual_key"]["budget"]["current_usage"]
    assert usage == pytest.approx(0.6 * 0.15 + 0.4 * 0.075 + 0.60)


class Sink:
    records: list = []

    @hookimpl
    def hookway_log(self, records):
        Sink.records.extend(records)


def test_log_records_carry_the_identity_and_the_cost_and_the_fast_path_stays_on(gov):
    Sink.records = []
    gw, admin = gov(plugins={"sink": {}}, extra_plugins={"sink": Sink})
    team = admin.team(name="t")
    kid, value = admin.key(name="logged", team_id=team)
    chat(client(gw, value))
    assert wait_for(lambda: Sink.records)
    record = Sink.records[0]
    assert (record.key_id, record.key_name, record.team_id, record.status) == (kid, "logged", team, 200)
    assert record.cost == pytest.approx(COST)
    assert record.passthrough          # governance does not turn the byte pass-through off
