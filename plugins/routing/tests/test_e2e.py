"""Routing end to end: the official openai SDK -> hookway -> fake upstreams."""

from __future__ import annotations

import collections

import httpx
import openai
import pytest

from hookway.testing import RecordingSink, provider_block

MSG = [{"role": "user", "content": "hi"}]


def client(gw, **headers) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, default_headers=headers or None)


def ask(gw, model, **headers) -> str:
    r = client(gw, **headers).chat.completions.create(model=model, messages=MSG)
    return r.choices[0].message.content


def two(upstreams):
    a, b = upstreams(), upstreams()
    a.responder = lambda rec: __import__("hookway.testing").testing.Reply(text="from-a")
    b.responder = lambda rec: __import__("hookway.testing").testing.Reply(text="from-b")
    return a, b


def base_config(a, b, rules=None, **extra) -> dict:
    config = {"plugins": {"openai": {}, "routing": {"rules": rules or []}},
              "providers": {"cerebras": provider_block(a), "backup": provider_block(b)}}
    config.update(extra)
    return config


def test_alias_rule_maps_a_model_name_and_the_log_says_which_rule(upstreams, gateway_factory):
    a, b = two(upstreams)
    gw = gateway_factory(base_config(a, b, [
        {"name": "sonnet", "match": {"model": ["sonnet-model", "claude-sonnet-*"]},
         "targets": [{"model": "cerebras/llama-3.3-70b", "weight": 1.0}],
         "fallbacks": ["backup/gpt-oss-120b"]},
    ]))
    assert ask(gw, "sonnet-model") == "from-a"
    assert a.last.json["model"] == "llama-3.3-70b"
    assert "fallbacks" not in a.last.json
    assert ask(gw, "claude-sonnet-4-6") == "from-a"
    # provider/model names bypass the rules
    assert ask(gw, "backup/some-model") == "from-b"
    assert b.last.json["model"] == "some-model"
    records = RecordingSink.wait(3)
    by_model = {r.model: r for r in records}
    assert by_model["sonnet-model"].rule == "sonnet"
    assert (by_model["sonnet-model"].provider, by_model["sonnet-model"].upstream_model) == ("cerebras", "llama-3.3-70b")
    assert by_model["sonnet-model"].extra["rule_id"] == "config:sonnet"
    assert by_model["backup/some-model"].rule is None


def test_header_key_and_team_scopes_end_to_end(upstreams, gateway_factory):
    a, b = two(upstreams)
    gw = gateway_factory(base_config(a, b, [
        {"name": "beta", "match": {"model": "m", "headers": {"x-channel": "beta*"}}, "targets": ["backup/beta"]},
        {"name": "global", "match": {"model": "m"}, "targets": ["cerebras/g"]},
        {"name": "team", "match": {"model": "m", "team": "t1"}, "targets": ["backup/t"]},
        {"name": "key", "match": {"model": "m", "key": "k1"}, "targets": ["cerebras/k"]},
    ]))
    ask(gw, "m")
    assert a.last.json["model"] == "g"
    ask(gw, "m", **{"x-test-team": "t1"})
    assert b.last.json["model"] == "t"
    ask(gw, "m", **{"x-test-team": "t1", "x-test-key": "k1"})
    assert a.last.json["model"] == "k"
    ask(gw, "m", **{"x-channel": "beta-2"})
    assert b.last.json["model"] == "beta"


def test_weighted_targets_split_traffic(upstreams, gateway_factory):
    a, b = two(upstreams)
    gw = gateway_factory(base_config(a, b, [
        {"name": "ab", "match": {"model": "m"},
         "targets": [{"model": "cerebras/x", "weight": 0.5}, {"model": "backup/y", "weight": 0.5}]}]))
    c = client(gw)
    answers = collections.Counter(c.chat.completions.create(model="m", messages=MSG).choices[0].message.content
                                  for _ in range(120))
    assert answers["from-a"] + answers["from-b"] == 120
    assert 35 <= answers["from-a"] <= 85, answers     # 60 expected; > 4 standard deviations


def test_rules_change_at_run_time_through_the_api(upstreams, gateway_factory):
    a, b = two(upstreams)
    gw = gateway_factory(base_config(a, b, [
        {"name": "sonnet", "match": {"model": "sonnet-model"}, "targets": ["cerebras/llama"]}]))
    api = gw.url + "/api/governance/routing-rules"
    listed = httpx.get(api).json()
    assert listed["count"] == 1 and listed["rules"][0]["name"] == "sonnet"
    assert listed["rules"][0]["source"] == "config"
    assert ask(gw, "sonnet-model") == "from-a"

    # Bifrost's shape: scope, priority, targets with provider + model, CEL
    r = httpx.post(api, json={"name": "opus", "scope": "global", "priority": 0,
                              "cel_expression": 'model == "opus-model"',
                              "targets": [{"provider": "backup", "model": "big", "weight": 1}],
                              "fallbacks": ["cerebras/llama"]})
    assert r.status_code == 200, r.text
    rule = r.json()["rule"]
    assert rule["id"] and rule["name"] == "opus" and rule["source"] == "api"
    assert ask(gw, "opus-model") == "from-b"
    assert b.last.json["model"] == "big"

    # switch every user of sonnet-model at once
    sonnet_id = listed["rules"][0]["id"]
    r = httpx.put(f"{api}/{sonnet_id}", json={"targets": [{"model": "backup/other"}]})
    assert r.status_code == 200, r.text
    assert ask(gw, "sonnet-model") == "from-b"
    assert b.last.json["model"] == "other"
    assert httpx.get(f"{api}/{sonnet_id}").json()["rule"]["targets"][0]["model"] == "backup/other"

    # disable, then delete
    assert httpx.put(f"{api}/{rule['id']}", json={"enabled": False}).status_code == 200
    with pytest.raises(openai.NotFoundError):
        ask(gw, "opus-model")
    assert httpx.delete(f"{api}/{rule['id']}").json()["message"]
    assert httpx.get(f"{api}/{rule['id']}").status_code == 404
    assert httpx.delete(f"{api}/{rule['id']}").status_code == 404
    # the newer path answers too
    assert httpx.get(gw.url + "/api/routing/rules").json()["count"] == 1


def test_api_rejects_bad_rules_with_every_problem(upstreams, gateway_factory):
    a, b = two(upstreams)
    gw = gateway_factory(base_config(a, b))
    api = gw.url + "/api/governance/routing-rules"
    r = httpx.post(api, json={"name": "bad", "targets": [{"provider": "nowhere", "weight": -2}],
                              "cel_expression": "model ==", "scope": "team"})
    assert r.status_code == 400
    problems = r.json()["error"]["problems"]
    assert any("nowhere" in p for p in problems) and any("weight" in p for p in problems)
    assert any("cel_expression" in p for p in problems) and any("scope_id" in p for p in problems)
    assert httpx.post(api, content=b"{nope").status_code == 400
    assert httpx.get(api).json()["count"] == 0


def test_api_needs_the_admin_token_when_one_is_set(upstreams, gateway_factory):
    a, b = two(upstreams)
    token = "t" * 40
    gw = gateway_factory(base_config(a, b, server={"admin_token": token}))
    api = gw.url + "/api/governance/routing-rules"
    assert httpx.get(api).status_code == 401
    assert httpx.get(api, headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_api_rules_survive_a_restart_and_yaml_rules_are_applied_at_start(upstreams, gateway_factory):
    a, b = two(upstreams)
    yaml_rules = [{"name": "sonnet", "match": {"model": "sonnet-model"}, "targets": ["cerebras/one"]},
                  {"name": "haiku", "match": {"model": "haiku-model"}, "targets": ["cerebras/small"]}]
    gw = gateway_factory(base_config(a, b, yaml_rules))
    api = gw.url + "/api/governance/routing-rules"
    assert httpx.post(api, json={"name": "opus", "match": {"model": "opus-model"},
                                 "targets": ["backup/big"]}).status_code == 200
    # an API change to a YAML rule
    assert httpx.put(f"{api}/config:haiku", json={"targets": ["backup/small"]}).status_code == 200
    gw.stop()

    gw = gateway_factory(base_config(a, b, yaml_rules))
    assert ask(gw, "opus-model") == "from-b"                  # API rule persisted
    assert ask(gw, "haiku-model") == "from-b"                 # API edit kept: YAML entry unchanged
    assert ask(gw, "sonnet-model") == "from-a"
    gw.stop()

    # the YAML file changes: its rules win, and a rule removed from it goes away
    yaml_rules = [{"name": "haiku", "match": {"model": "haiku-model"}, "targets": ["cerebras/small-2"]}]
    gw = gateway_factory(base_config(a, b, yaml_rules))
    assert ask(gw, "haiku-model") == "from-a"
    assert a.last.json["model"] == "small-2"
    names = {r["name"] for r in httpx.get(gw.url + "/api/governance/routing-rules").json()["rules"]}
    assert names == {"haiku", "opus"}


def test_a_deleted_yaml_rule_stays_deleted_until_the_yaml_changes(upstreams, gateway_factory):
    a, b = two(upstreams)
    yaml_rules = [{"name": "sonnet", "match": {"model": "sonnet-model"}, "targets": ["cerebras/one"]}]
    gw = gateway_factory(base_config(a, b, yaml_rules))
    assert httpx.delete(gw.url + "/api/governance/routing-rules/config:sonnet").status_code == 200
    gw.stop()
    gw = gateway_factory(base_config(a, b, yaml_rules))
    assert httpx.get(gw.url + "/api/governance/routing-rules").json()["count"] == 0


def test_changes_reach_other_workers_sharing_the_database(upstreams, gateway_factory):
    a, b = two(upstreams)
    config = base_config(a, b, plugins={"openai": {}, "routing": {"reload_interval_seconds": 0.05}})
    gw1 = gateway_factory(config)
    gw2 = gateway_factory(config)      # a second worker on the same data_dir
    r = httpx.post(gw1.url + "/api/governance/routing-rules",
                   json={"name": "x", "match": {"model": "x-model"}, "targets": ["backup/x"]})
    assert r.status_code == 200
    import time
    deadline = time.monotonic() + 30   # gw2 reloads every 0.05 s; the deadline only bounds a failure
    while httpx.get(gw2.url + "/api/governance/routing-rules").json()["count"] == 0:
        assert time.monotonic() < deadline, "the second worker never saw the new rule"
        time.sleep(0.05)
    assert ask(gw2, "x-model") == "from-b"


def test_yaml_errors_name_the_rule(upstreams, tmp_path):
    from hookway.config import ConfigError, build
    from hookway.app import Gateway
    a, b = two(upstreams)
    cfg = build(base_config(a, b, [{"match": {"model": "m"}, "targets": ["nowhere/x"], "fallbacks": ["zz"]},
                                   {"name": "d", "targets": ["cerebras/x"]},
                                   {"name": "d", "targets": ["cerebras/y"]}],
                            server={"data_dir": str(tmp_path)}))
    with pytest.raises(ConfigError) as info:
        Gateway(cfg)
    text = str(info.value)
    assert "plugins.routing.rules[0].fallbacks[0]" in text
    assert "plugins.routing.rules[2].name: 'd' is used by rules[1] too" in text


def test_a_bundle_has_its_own_rules_ahead_of_the_global_ones(upstreams, gateway_factory):
    a, b = two(upstreams)
    gw = gateway_factory(base_config(a, b, [
        {"name": "global", "match": {"model": ["m", "n"]}, "targets": ["cerebras/g"]}],
        bundles={"team-a": {"routing": {"rules": [
            {"name": "bundle", "match": {"model": "m"}, "targets": ["backup/b"]}]}}}))
    assert ask(gw, "m", **{"x-test-bundle": "team-a"}) == "from-b"
    assert ask(gw, "n", **{"x-test-bundle": "team-a"}) == "from-a"    # falls through to global
    assert ask(gw, "m") == "from-a"
    # the bundle's instance serves no API and keeps no database: the API lists the global rules
    assert [r["name"] for r in httpx.get(gw.url + "/api/governance/routing-rules").json()["rules"]] == ["global"]
