"""The compiled matcher, in process: globs, headers, scopes and their order, weights, CEL."""

from __future__ import annotations

import collections
import random

import pytest

from hookway.pipeline import Identity
from hookway_routing.cel import CELError, compile_expression
from hookway_routing.rules import RuleError, RuleSet, normalize


def ruleset(*raws):
    rules = []
    for i, raw in enumerate(raws):
        rule = normalize(raw, f"rules[{i}]", default_priority=i)
        rule["id"] = raw.get("name") or f"r{i}"
        rules.append(rule)
    return RuleSet(rules)


def match(rs, model, headers=None, identity=None, prefixed=None, variables=None):
    if prefixed is None:
        prefixed = "/" in model
    rule = rs.match(model, prefixed, headers or {}, identity, lambda: variables or {})
    return rule.name if rule else None


def test_exact_model_and_glob_first_match_wins():
    rs = ruleset(
        {"name": "sonnet", "match": {"model": "sonnet-model"}, "targets": [{"model": "c/llama"}]},
        {"name": "claude", "match": {"model": "claude-*"}, "targets": [{"model": "c/llama"}]},
        {"name": "haiku", "match": {"model": "claude-haiku-4-5"}, "targets": [{"model": "c/small"}]},
    )
    assert match(rs, "sonnet-model") == "sonnet"
    assert match(rs, "claude-opus-4-8") == "claude"
    assert match(rs, "claude-haiku-4-5") == "claude"      # the earlier glob wins
    assert match(rs, "gpt-4o") is None
    assert match(rs, "sonnet-model-2") is None            # exact is exact


def test_glob_forms_and_model_lists():
    rs = ruleset({"name": "g", "match": {"model": ["gpt-4?", "o[13]-*", "exact"]}, "targets": ["c/m"]})
    assert match(rs, "gpt-4o") == "g"
    assert match(rs, "gpt-4") is None
    assert match(rs, "o1-mini") == "g" and match(rs, "o3-pro") == "g" and match(rs, "o2-x") is None
    assert match(rs, "exact") == "g"


def test_provider_model_names_bypass_rules_unless_a_rule_names_them():
    rs = ruleset(
        {"name": "everything", "match": {"model": "*"}, "targets": ["c/m"]},
        {"name": "header-only", "match": {"headers": {"x-a": "1"}}, "targets": ["c/m"]},
        {"name": "named", "match": {"model": "cerebras/*"}, "targets": ["c/m"]},
    )
    assert match(rs, "anything") == "everything"
    assert match(rs, "openai/gpt-4o", {"x-a": "1"}) is None
    assert match(rs, "cerebras/llama-3.3-70b") == "named"
    # a name with a slash whose prefix is no provider is an ordinary model name
    assert match(rs, "meta-llama/Llama-3", prefixed=False) == "everything"


def test_header_conditions_exact_glob_and_missing():
    rs = ruleset(
        {"name": "premium", "match": {"model": "m", "headers": {"X-Tier": ["premium", "gold-*"]}},
         "targets": ["c/big"]},
        {"name": "default", "match": {"model": "m"}, "targets": ["c/small"]},
    )
    assert match(rs, "m", {"x-tier": "premium"}) == "premium"
    assert match(rs, "m", {"x-tier": "gold-plus"}) == "premium"
    assert match(rs, "m", {"x-tier": "free"}) == "default"
    assert match(rs, "m", {}) == "default"


def test_scope_order_key_then_team_then_global_whatever_the_priority():
    rs = ruleset(
        {"name": "global", "match": {"model": "m"}, "targets": ["c/g"], "priority": -100},
        {"name": "team", "match": {"model": "m", "team": "t1"}, "targets": ["c/t"], "priority": 50},
        {"name": "key", "match": {"model": "m", "key": ["k1", "k2"]}, "targets": ["c/k"], "priority": 99},
        {"name": "customer", "scope": "customer", "scope_id": "cu", "match": {"model": "m"}, "targets": ["c/cu"]},
    )
    assert match(rs, "m", identity=Identity(key_id="k1", team_id="t1")) == "key"
    assert match(rs, "m", identity=Identity(key_id="k2")) == "key"
    assert match(rs, "m", identity=Identity(key_id="k3", team_id="t1")) == "team"
    assert match(rs, "m", identity=Identity(key_id="k3", team_id="t2", customer_id="cu")) == "customer"
    assert match(rs, "m", identity=Identity(key_id="k3", team_id="t2")) == "global"
    assert match(rs, "m", identity=None) == "global"
    assert match(rs, "m", identity=object()) == "global"      # an identity without these attributes


def test_priority_orders_rules_within_a_scope():
    rs = ruleset(
        {"name": "late", "match": {"model": "m"}, "targets": ["c/a"], "priority": 10},
        {"name": "early", "match": {"model": "m"}, "targets": ["c/b"], "priority": 1},
    )
    assert match(rs, "m") == "early"


def test_disabled_rules_are_skipped_and_explicit_scope_with_extra_conditions():
    rs = ruleset(
        {"name": "off", "enabled": False, "match": {"model": "m"}, "targets": ["c/a"]},
        {"name": "vk", "scope": "virtual_key", "scope_id": "k1", "match": {"model": "m", "team": "t9"},
         "targets": ["c/b"]},
    )
    assert match(rs, "m") is None
    assert match(rs, "m", identity=Identity(key_id="k1", team_id="t1")) is None
    assert match(rs, "m", identity=Identity(key_id="k1", team_id="t9")) == "vk"


def test_weights_follow_the_configured_distribution():
    rs = ruleset({"name": "ab", "match": {"model": "m"},
                  "targets": [{"model": "a/x", "weight": 0.8}, {"model": "b/y", "weight": 0.2}]})
    rule = rs.match("m", False, {}, None, dict)
    random.seed(1234)
    counts = collections.Counter(rule.pick()["model"] for _ in range(1000))
    assert set(counts) == {"a/x", "b/y"}
    assert 740 <= counts["a/x"] <= 860, counts       # 800 expected; ~4.5 standard deviations


def test_zero_weights_are_uniform_and_zero_weight_target_is_never_picked_otherwise():
    rs = ruleset({"name": "u", "match": {"model": "m"},
                  "targets": [{"model": "a/x", "weight": 0}, {"model": "b/y", "weight": 0}]},
                 {"name": "z", "match": {"model": "n"},
                  "targets": [{"model": "a/x", "weight": 0}, {"model": "b/y", "weight": 3}]})
    u = rs.match("m", False, {}, None, dict)
    counts = collections.Counter(u.pick()["model"] for _ in range(400))
    assert counts["a/x"] > 100 and counts["b/y"] > 100
    z = rs.match("n", False, {}, None, dict)
    assert {z.pick()["model"] for _ in range(200)} == {"b/y"}


def test_candidates_are_cached_per_scope_and_model():
    rs = ruleset({"name": "g", "match": {"model": "claude-*"}, "targets": ["c/m"]})
    assert match(rs, "claude-x") == "g"
    assert (("global", None), "claude-x") in rs._candidates
    first = rs._candidates[(("global", None), "claude-x")]
    assert match(rs, "claude-x") == "g"
    assert rs._candidates[(("global", None), "claude-x")] is first


def test_cel_rules_bifrost_shape():
    rs = ruleset(
        {"name": "premium", "cel_expression": 'headers["x-tier"] == "premium" && model.startsWith("gpt-")',
         "targets": [{"provider": "openai", "model": "gpt-4o", "weight": 1}]},
        {"name": "by-provider", "cel_expression": 'provider == "openai"', "targets": [{"provider": "c"}]},
    )
    v = {"headers": {"x-tier": "premium"}, "model": "gpt-4o-mini", "provider": ""}
    assert match(rs, "gpt-4o-mini", variables=v, prefixed=False) == "premium"
    v = {"headers": {}, "model": "gpt-4o-mini", "provider": ""}
    assert match(rs, "gpt-4o-mini", variables=v, prefixed=False) is None    # missing header: no match
    v = {"headers": {}, "model": "gpt-4o", "provider": "openai"}
    assert match(rs, "openai/gpt-4o", variables=v, prefixed=True) == "by-provider"


@pytest.mark.parametrize("src,variables,expected", [
    ('model == "a"', {"model": "a"}, True),
    ('model in ["a", "b"] && !(team_id == "x")', {"model": "b", "team_id": "y"}, True),
    ('model.matches("^claude-(opus|sonnet)")', {"model": "claude-sonnet-4-6"}, True),
    ('model.endsWith("-mini") || model.contains("haiku")', {"model": "claude-haiku-4-5"}, True),
    ('budget_used > 80.5', {"budget_used": 90.0}, True),
    ('size(model) > 3 ? headers.tier == "x" : false', {"model": "abcd", "headers": {"tier": "x"}}, True),
    ('has(headers.tier)', {"headers": {}}, False),
    ('"x-a" in headers', {"headers": {"x-a": "1"}}, True),
    ('headers["x-missing"] == "1" || model == "m"', {"headers": {}, "model": "m"}, True),
    ('model.lowerAscii() == "abc"', {"model": "ABC"}, True),
    ('', {}, True),
])
def test_cel_subset(src, variables, expected):
    assert compile_expression(src).evaluate(variables) is expected


@pytest.mark.parametrize("src,needle", [
    ('model ==', "expected"),
    ('unknown_var == "a"', "unknown variable"),
    ('model.frobnicate()', "unsupported method"),
    ('model.matches("(")', "regular expression"),
    ('model = "a"', "unexpected character"),
])
def test_cel_errors_are_reported_at_compile_time(src, needle):
    with pytest.raises(CELError, match=needle):
        compile_expression(src)


def test_validation_lists_every_problem_with_its_path():
    with pytest.raises(RuleError) as info:
        normalize({"match": {"model": 5, "colour": "red"}, "targets": [{"model": "x/y", "weight": -1},
                                                                       {"provider": "nope"}],
                   "fallbacks": ["nothing"], "scope": "team", "cel_expression": "model =="},
                  "plugins.routing.rules[0]", providers={"x"})
    text = "\n".join(info.value.problems)
    for needle in ("rules[0].match.model: expected a string", "rules[0].match.colour: unknown key",
                   "targets[0].weight: expected a number >= 0", "targets[1].provider: 'nope' is not a configured",
                   "fallbacks[0]: expected provider/model", "scope_id: required",
                   "cel_expression: expected a value at position 8, found the end"):
        assert needle in text, text


def test_targets_are_required():
    with pytest.raises(RuleError, match="targets"):
        normalize({"match": {"model": "m"}})


def test_the_readme_example_is_a_valid_configuration(monkeypatch, tmp_path):
    import pathlib
    import re as _re

    import yaml

    from hookway.app import Gateway
    from hookway.config import build

    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = _re.search(r"```yaml\n(.*?)```", text, _re.S).group(1)
    for var in ("CEREBRAS_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(var, "k")
    raw = yaml.safe_load(block)
    raw["server"] = {"data_dir": str(tmp_path)}
    gateway = Gateway(build(raw))
    plugin = gateway.plugins.instances["routing"]
    assert [r["name"] for r in plugin.rules] == ["claude-code", "ab-test", "premium-header", "team-a"]
