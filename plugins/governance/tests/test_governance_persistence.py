"""SQLite persistence: restarts keep keys and spend; YAML-declared entities are applied at start;
several gateways (worker processes) sharing one database add their spend up."""

from __future__ import annotations

import sqlite3

import openai
import pytest

from governance_testing import COST, Admin, chat, client, gateway_config, plugin_of, wait_for

YAML_KEY = "sk-hw-from-the-yaml-0123456789abcdef"


def test_a_restart_keeps_keys_spend_and_request_counts(fake_upstream, start_gateway, tmp_path):
    config = gateway_config(fake_upstream, tmp_path)
    gw = start_gateway(config)
    admin = Admin(gw.url)
    team = admin.team(name="t", budget={"max_limit": 1, "reset_duration": "1d"})
    kid, value = admin.key(team_id=team, budget={"max_limit": 1, "reset_duration": "1d"},
                           rate_limit={"request_max_limit": 3, "request_reset_duration": "1h"})
    c = client(gw, value)
    chat(c)
    chat(c)
    gw.stop()

    gw = start_gateway(config)
    admin = Admin(gw.url)
    vk = admin.get(f"/api/governance/virtual-keys/{kid}").json()["virtual_key"]
    assert vk["budget"]["current_usage"] == pytest.approx(2 * COST)
    assert vk["rate_limit"]["request_current_usage"] == 2
    assert admin.get(f"/api/governance/teams/{team}").json()["team"]["budget"]["current_usage"] == \
        pytest.approx(2 * COST)
    c = client(gw, value)
    chat(c)                                   # the third request of the hour
    with pytest.raises(openai.RateLimitError):
        chat(c)
    assert "value" not in vk and vk["value_hint"].startswith("sk-hw-")


def test_the_store_keeps_only_a_hash_of_each_key(fake_upstream, start_gateway, tmp_path):
    gw = start_gateway(gateway_config(fake_upstream, tmp_path))
    _, value = Admin(gw.url).key()
    gw.stop()
    raw = (tmp_path / "data" / "governance.db").read_bytes()
    assert value.encode() not in raw
    db = sqlite3.connect(tmp_path / "data" / "governance.db")
    assert db.execute("SELECT count(*) FROM entities WHERE kind = 'virtual_key'").fetchone() == (1,)


def yaml_config(fake_upstream, tmp_path, budget=1.0, keys=None):
    return gateway_config(fake_upstream, tmp_path, governance={
        "customers": [{"id": "acme", "name": "Acme", "budget": {"max_limit": 5, "reset_duration": "1M"}}],
        "teams": [{"id": "platform", "customer_id": "acme"}],
        "virtual_keys": keys if keys is not None else [
            {"id": "ci", "name": "ci-key", "value": "env.GOV_TEST_KEY", "team_id": "platform",
             "budget": {"max_limit": budget, "reset_duration": "1d"},
             "provider_configs": [{"provider": "up", "allowed_models": ["m"]}]}]})


def test_yaml_declared_keys_work_with_their_value_from_the_environment(fake_upstream, start_gateway,
                                                                      tmp_path, monkeypatch):
    monkeypatch.setenv("GOV_TEST_KEY", YAML_KEY)
    gw = start_gateway(yaml_config(fake_upstream, tmp_path))
    c = client(gw, YAML_KEY)
    chat(c)
    with pytest.raises(openai.PermissionDeniedError):
        chat(c, "up2/m2")
    vk = Admin(gw.url).get("/api/governance/virtual-keys/ci").json()["virtual_key"]
    assert vk["source"] == "yaml" and vk["team"] == {"id": "platform", "name": "platform"}
    assert plugin_of(gw).engine.customers["acme"].name == "Acme"


def test_yaml_is_applied_at_start_and_api_edits_last_until_the_yaml_changes(fake_upstream, start_gateway,
                                                                          tmp_path, monkeypatch):
    monkeypatch.setenv("GOV_TEST_KEY", YAML_KEY)
    gw = start_gateway(yaml_config(fake_upstream, tmp_path, budget=1.0))
    admin = Admin(gw.url)
    chat(client(gw, YAML_KEY))
    assert admin.put("/api/governance/virtual-keys/ci", {"description": "edited"}).status_code == 200
    gw.stop()

    gw = start_gateway(yaml_config(fake_upstream, tmp_path, budget=1.0))     # same YAML
    vk = Admin(gw.url).get("/api/governance/virtual-keys/ci").json()["virtual_key"]
    assert vk["description"] == "edited" and vk["budget"]["current_usage"] == pytest.approx(COST)
    gw.stop()

    gw = start_gateway(yaml_config(fake_upstream, tmp_path, budget=2.0))     # the YAML changed
    vk = Admin(gw.url).get("/api/governance/virtual-keys/ci").json()["virtual_key"]
    assert vk["description"] == "" and vk["budget"]["max_limit"] == 2.0
    assert vk["budget"]["current_usage"] == pytest.approx(COST)              # same period: spend kept
    gw.stop()

    gw = start_gateway(yaml_config(fake_upstream, tmp_path, keys=[]))        # removed from the YAML
    assert Admin(gw.url).get("/api/governance/virtual-keys/ci").status_code == 404
    with pytest.raises(openai.AuthenticationError):
        chat(client(gw, YAML_KEY))


def test_two_gateways_on_one_database_share_keys_and_add_up_spend(fake_upstream, start_gateway, tmp_path):
    """Two processes' worth of state (each its own connection, memory and sync task)."""
    config = gateway_config(fake_upstream, tmp_path)
    a, b = start_gateway(config), start_gateway(config)
    kid, value = Admin(a.url).key(budget={"max_limit": 0.07, "reset_duration": "1d"})
    # b learns of the key created through a at its next sync.
    assert wait_for(lambda: kid in plugin_of(b).engine.keys)
    chat(client(a, value))
    chat(client(b, value))
    chat(client(a, value))

    def total(gw):
        return plugin_of(gw).engine.counters[f"vk:{kid}:budget:1d"].usage
    assert wait_for(lambda: total(a) == pytest.approx(3 * COST) and total(b) == pytest.approx(3 * COST))
    chat(client(b, value))           # 0.06 < 0.07: admitted
    assert wait_for(lambda: total(a) == pytest.approx(4 * COST))
    for gw in (a, b):
        with pytest.raises(openai.APIStatusError) as exc:
            chat(client(gw, value))
        assert exc.value.status_code == 402
    # Deactivated through b: a refuses it too, once synced.
    Admin(b.url).put(f"/api/governance/virtual-keys/{kid}", {"is_active": False})
    assert wait_for(lambda: not plugin_of(a).engine.keys[kid].is_active)
