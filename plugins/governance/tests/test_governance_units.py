"""Periods, prices and key parsing, without a gateway."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hookway import ir
from hookway_governance import periods
from hookway_governance.model import Invalid, parse_virtual_key
from hookway_governance.plugin import key_from_headers
from hookway_governance.pricing import Price, Pricing


def ts(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("text,start,now,window", [
    ("1m", 0, 59, (0, 60)),
    ("1m", 0, 60, (60, 120)),
    ("30s", 100, 1000, (1000, 1030)),
    ("30s", 100, 999, (970, 1000)),
    ("5m", 1000, 10, (1000, 1300)),                     # a clock behind the start
    ("1h", 0, 7200.5, (7200, 10800)),
    ("1w", 0, 8 * 86400, (7 * 86400, 14 * 86400)),
])
def test_fixed_windows(text, start, now, window):
    assert periods.parse(text).window(start, now) == window


def test_calendar_windows_clamp_the_day():
    month = periods.parse("1M")
    start = ts(2028, 1, 31)
    assert month.window(start, ts(2028, 2, 15)) == (start, ts(2028, 2, 29))
    assert month.window(start, ts(2028, 3, 30)) == (ts(2028, 2, 29), ts(2028, 3, 31))
    assert month.window(start, ts(2029, 1, 31)) == (ts(2029, 1, 31), ts(2029, 2, 28))
    year = periods.parse("1Y")
    assert year.window(ts(2024, 2, 29), ts(2026, 6, 1)) == (ts(2026, 2, 28), ts(2027, 2, 28))


@pytest.mark.parametrize("bad", ["", "1", "0d", "1x", "d1", "1 d", None])
def test_bad_periods_are_refused(bad):
    with pytest.raises(ValueError):
        periods.parse(bad)


def test_prices_overrides_types_globs_and_cache_tokens():
    p = Pricing({"cerebras/llama-3.3-70b": Price(1, 2), "*/custom-*": Price(10, 20)})
    assert p.price("cerebras", "cerebras", "llama-3.3-70b") == Price(1, 2)            # override wins
    assert p.price("cerebras", "cerebras", "gpt-oss-120b") == Price(0.35, 0.75)        # shipped default
    assert p.price("my-anthropic", "anthropic", "claude-sonnet-4-6").input == 3.0      # by provider type
    assert p.price("my-anthropic", "anthropic", "claude-opus-4-6").output == 25.0
    assert p.price("my-anthropic", "anthropic", "claude-opus-4-1-20250805").output == 75.0
    assert p.price("cerebras", "cerebras", "llama3.1-8b") == Price(0.10, 0.10)      # Cerebras' own id
    assert p.price("cerebras", "cerebras", "llama-3.1-8b") is None                  # not a Cerebras id
    assert p.price("my-anthropic", "anthropic", "claude-haiku-4-5").input == 1.0
    assert p.price("x", "openai", "custom-model") == Price(10, 20)
    assert p.price("x", "openai", "gpt-4.1").cached_input == 0.5
    assert p.price("x", "openai", "unknown") is None
    usage = ir.Usage(input_tokens=1000, output_tokens=100, cache_read_input_tokens=10_000,
                     cache_creation_input_tokens=2000)
    cost = p.cost("a", "anthropic", "claude-sonnet-4-6", usage)
    assert cost == pytest.approx((1000 * 3 + 100 * 15 + 10_000 * 0.30 + 2000 * 3.75) / 1e6)
    assert p.cost("x", "openai", "unknown", usage) == 0.0


NEW_OPUS = Price(5.00, 25.00, 0.50, 6.25)
OLD_OPUS = Price(15.00, 75.00, 1.50, 18.75)


@pytest.mark.parametrize("model,price", [
    ("claude-opus-4-8", NEW_OPUS), ("claude-opus-4-6", NEW_OPUS), ("claude-opus-4-5", NEW_OPUS),
    ("claude-opus-4-5-20251101", NEW_OPUS),
    ("claude-opus-4-0", OLD_OPUS), ("claude-opus-4-20250514", OLD_OPUS), ("claude-opus-4", OLD_OPUS),
    ("claude-opus-4-1", OLD_OPUS), ("claude-opus-4-1-20250805", OLD_OPUS),
])
def test_opus_4_5_and_later_are_priced_5_25_opus_4_and_4_1_are_15_75(model, price):
    p = Pricing()
    assert p.price("anthropic", "anthropic", model) == price
    usage = ir.Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert p.cost("anthropic", "anthropic", model, usage) == pytest.approx(price.input + price.output)


@pytest.mark.parametrize("model,price", [
    ("gpt-4o-2024-05-13", Price(5.00, 15.00)),            # the first snapshot kept its launch price
    ("gpt-4o-2024-08-06", Price(2.50, 10.00, 1.25)), ("gpt-4o-2024-11-20", Price(2.50, 10.00, 1.25)),
    ("gpt-4o", Price(2.50, 10.00, 1.25)), ("gpt-4o-mini-2024-07-18", Price(0.15, 0.60, 0.075)),
])
def test_gpt_4o_snapshots(model, price):
    assert Pricing().price("openai", "openai", model) == price


@pytest.mark.parametrize("model,price", [
    ("claude-opus-5-5", Price(4.00, 20.00, 0.20, 5.00)), ("claude-opus-5", Price(5.00, 25.00, 0.50, 6.25)),
    ("claude-sonnet-5-5", Price(2.00, 10.00, 0.10, 2.50)), ("claude-sonnet-5", Price(2.00, 10.00, 0.20, 2.50)),
    ("claude-haiku-5-5", Price(0.10, 0.50, 0.01, 0.125)),
    ("claude-fable-5-1", Price(10.00, 50.00, 0.25, 12.50)), ("claude-fable-5", Price(10.00, 50.00, 1.00, 12.50)),
    ("claude-mythos-5-1", Price(10.00, 50.00, 0.25, 12.50)), ("claude-mythos-5", Price(10.00, 50.00, 1.00, 12.50)),
])
def test_claude_5_family_point_releases_are_not_priced_as_their_base(model, price):
    assert Pricing().price("anthropic", "anthropic", model) == price


def test_current_cerebras_models_are_priced():
    p = Pricing()
    assert p.price("cerebras", "cerebras", "zai-glm-4.7") == Price(2.25, 2.75)
    assert p.price("cerebras", "cerebras", "qwen-3-235b-a22b-instruct-2507") == Price(0.60, 1.20)
    assert p.price("cerebras", "cerebras", "qwen-3.8-27b") == Price(0.99, 1.49)


def test_key_headers_prefer_a_hookway_key():
    assert key_from_headers({"authorization": "Bearer sk-hw-abc"}) == "sk-hw-abc"
    assert key_from_headers({"authorization": "Basic xyz", "x-api-key": "k"}) == "k"
    assert key_from_headers({"x-api-key": "provider-key", "x-goog-api-key": "sk-hw-1"}) == "sk-hw-1"
    assert key_from_headers({"authorization": "Bearer "}) is None
    assert key_from_headers({}) is None


def test_every_problem_of_a_key_body_is_reported_at_once():
    with pytest.raises(Invalid) as exc:
        parse_virtual_key({"name": "", "budget": {"max_limit": "x", "reset_duration": "1q"},
                           "provider_configs": [{"provider": "a", "weight": -1}, {"provider": "a"}]},
                          value="sk-hw-" + "x" * 30, now=0)
    text = "\n".join(exc.value.problems)
    for needle in ("name: required", "max_limit", "provider_configs[0].weight", "listed twice"):
        assert needle in text


def test_allowed_models_may_name_the_provider():
    key = parse_virtual_key({"name": "k", "provider_configs": [
        {"provider": "cerebras", "allowed_models": ["cerebras/llama-3.3-70b"]}]}, value="sk-hw-" + "y" * 30, now=0)
    assert key.allows("cerebras", "llama-3.3-70b") and not key.allows("cerebras", "gpt-oss-120b")
    assert not key.allows("openai", "llama-3.3-70b")


def test_yaml_problems_stop_the_start_with_their_paths(fake_upstream, tmp_path):
    from hookway.app import Gateway
    from hookway.config import ConfigError, build

    from governance_testing import gateway_config
    cfg = gateway_config(fake_upstream, tmp_path, governance={
        "virtual_keys": [{"id": "a", "value": "short", "budget": {"max_limit": 1, "reset_duration": "1d"}},
                         {"id": "b", "value": "sk-hw-long-enough-value-000", "budget": {"max_limit": 1,
                                                                                      "reset_duration": "1q"}},
                         {"id": "b", "value": "sk-hw-long-enough-value-001"}],
        "teams": [{"name": "t", "colour": "red"}]})
    with pytest.raises(ConfigError) as exc:
        Gateway(build(cfg))
    problems = "\n".join(exc.value.problems)
    assert "plugins.governance.virtual_keys[0].value: expected a string of at least 16 characters" in problems
    assert "plugins.governance.virtual_keys[1].budget.reset_duration: invalid reset duration '1q'" in problems
    assert "plugins.governance.virtual_keys[2].id: 'b' is declared twice" in problems
    assert "plugins.governance.teams[0].colour: unknown key" in problems
