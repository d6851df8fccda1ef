"""Cost of a request from its token usage: a table of USD prices per million tokens.

Keys are ``provider/model`` where ``provider`` is a configured provider's name or its type
(``cerebras``, ``openai``, ``anthropic``) or ``*``, and ``model`` may be a glob. Overrides from the
config are looked up before the shipped defaults. Canonical usage (``hookway.ir.Usage``) counts
``input_tokens`` without the cached part, so each part is priced once:

    cost = (input * input_price + cache_read * cached_input_price
            + cache_creation * cache_write_price + output * output_price) / 1e6

A missing ``cached_input`` or ``cache_write`` price falls back to the input price.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass

log = logging.getLogger("hookway.governance")


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None

    def cost(self, usage) -> float:
        cached = self.cached_input if self.cached_input is not None else self.input
        write = self.cache_write if self.cache_write is not None else self.input
        return (usage.input_tokens * self.input + usage.output_tokens * self.output
                + usage.cache_read_input_tokens * cached
                + usage.cache_creation_input_tokens * write) / 1_000_000


# USD per million tokens, as published by the providers when this table was written (checked
# November 2026; sources in the plugin README). Override any of them under `pricing:` in the
# plugin's settings. A glob must come after the more specific globs it would also match: within
# the table, exact names are looked up first, then globs in the order written here.
DEFAULT_PRICES: dict[str, Price] = {
    # Cerebras publishes no cached-input price: cached tokens are priced as input.
    # gpt-oss-120b: $0.35/$0.75 (LiteLLM's table, Cerebras' pricing page as cited by Braintrust's
    # proxy); models.dev lists $0.25/$0.69. The table keeps the first.
    "cerebras/gpt-oss-120b": Price(0.35, 0.75),
    # qwen-3.8-27b: one source only (LiteLLM's table); not confirmed on Cerebras' own pages.
    "cerebras/qwen-3.8-27b": Price(0.99, 1.49),
    "cerebras/zai-glm-4.7": Price(2.25, 2.75),
    # Deprecated by Cerebras (llama-3.3-70b and qwen-3-32b on 2026-02-16; llama3.1-8b and
    # qwen-3-235b-a22b-instruct-2507 off on 2026-05-27), kept for older logs and configs.
    "cerebras/llama-3.3-70b": Price(0.85, 1.20),
    "cerebras/qwen-3-32b": Price(0.40, 0.80),
    "cerebras/qwen-3-235b-a22b-instruct-2507": Price(0.60, 1.20),
    "cerebras/llama3.1-8b": Price(0.10, 0.10),      # Cerebras' id has no dash after "llama"
    "openai/gpt-4.1": Price(2.00, 8.00, 0.50),
    "openai/gpt-4.1-2025-*": Price(2.00, 8.00, 0.50),
    "openai/gpt-4.1-mini*": Price(0.40, 1.60, 0.10),
    "openai/gpt-4.1-nano*": Price(0.10, 0.40, 0.025),
    "openai/gpt-4o-mini*": Price(0.15, 0.60, 0.075),
    "openai/gpt-4o": Price(2.50, 10.00, 1.25),
    "openai/gpt-4o-2024-05-13": Price(5.00, 15.00),   # the first gpt-4o snapshot: $5/$15, no cache price
    "openai/gpt-4o-2024-*": Price(2.50, 10.00, 1.25),
    # Sonnet 4 and 4.5 cost $6/$22.50 for prompts over 200k tokens; this table has one tier.
    "anthropic/claude-sonnet-4*": Price(3.00, 15.00, 0.30, 3.75),
    # Opus 4.5 and later are priced $5/$25; only Opus 4 and 4.1 (claude-opus-4-0, -4-1,
    # claude-opus-4-20250514, claude-opus-4-1-20250805) cost $15/$75.
    "anthropic/claude-opus-4-5*": Price(5.00, 25.00, 0.50, 6.25),
    "anthropic/claude-opus-4-6*": Price(5.00, 25.00, 0.50, 6.25),
    "anthropic/claude-opus-4-8*": Price(5.00, 25.00, 0.50, 6.25),
    "anthropic/claude-opus-4": Price(15.00, 75.00, 1.50, 18.75),
    "anthropic/claude-opus-4-0*": Price(15.00, 75.00, 1.50, 18.75),
    "anthropic/claude-opus-4-1*": Price(15.00, 75.00, 1.50, 18.75),
    "anthropic/claude-opus-4-2025*": Price(15.00, 75.00, 1.50, 18.75),
    "anthropic/claude-opus-4*": Price(5.00, 25.00, 0.50, 6.25),      # later Opus 4.x: as 4.5+
    "anthropic/claude-haiku-4*": Price(1.00, 5.00, 0.10, 1.25),
    "anthropic/claude-3-5-haiku*": Price(0.80, 4.00, 0.08, 1.00),
    # The Claude 5 family. Cache writes are the 5-minute price (1-hour writes cost more).
    "anthropic/claude-opus-5-5*": Price(4.00, 20.00, 0.20, 5.00),
    "anthropic/claude-opus-5*": Price(5.00, 25.00, 0.50, 6.25),
    # Sonnet 5.5 cache reads: $0.10 since 2026-10-07 (several price trackers citing Anthropic's
    # page); the stored copy of Anthropic's Sonnet 5.5 page still shows $0.20.
    "anthropic/claude-sonnet-5-5*": Price(2.00, 10.00, 0.10, 2.50),
    "anthropic/claude-sonnet-5*": Price(2.00, 10.00, 0.20, 2.50),
    # Haiku 5.5 is priced by prompt length: these are the rates up to 100,000 prompt tokens;
    # longer prompts cost 5x on every token of the request (underestimated here).
    "anthropic/claude-haiku-5-5*": Price(0.10, 0.50, 0.01, 0.125),
    "anthropic/claude-fable-5-1*": Price(10.00, 50.00, 0.25, 12.50),
    "anthropic/claude-fable-5*": Price(10.00, 50.00, 1.00, 12.50),
    "anthropic/claude-mythos-5-1*": Price(10.00, 50.00, 0.25, 12.50),
    "anthropic/claude-mythos-5*": Price(10.00, 50.00, 1.00, 12.50),
}

PRICE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["input", "output"],
    "properties": {
        "input": {"type": "number", "minimum": 0},
        "output": {"type": "number", "minimum": 0},
        "cached_input": {"type": "number", "minimum": 0},
        "cache_write": {"type": "number", "minimum": 0},
    },
}


def price_from_dict(block: dict) -> Price:
    return Price(float(block["input"]), float(block["output"]),
                 None if block.get("cached_input") is None else float(block["cached_input"]),
                 None if block.get("cache_write") is None else float(block["cache_write"]))


class Pricing:
    """Looks prices up by (provider name, provider type, model); answers are cached."""

    def __init__(self, overrides: dict[str, Price] | None = None):
        # Overrides first, then defaults; within each, exact names before globs.
        self.table: list[tuple[str, str, Price]] = []
        for source in (overrides or {}, DEFAULT_PRICES):
            exact, globs = [], []
            for key, price in source.items():
                provider, _, model = key.partition("/")
                (globs if any(c in model for c in "*?[") else exact).append((provider, model, price))
            self.table += exact + globs
        self._cache: dict[tuple[str, str, str], Price | None] = {}
        self._warned: set[str] = set()

    def price(self, provider: str, provider_type: str | None, model: str) -> Price | None:
        key = (provider, provider_type or provider, model)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = None
        for name in (provider, provider_type or provider, "*"):
            for p, pattern, price in self.table:
                if p == name and (pattern == model or fnmatch.fnmatchcase(model, pattern)):
                    found = price
                    break
            if found is not None:
                break
        if found is None and f"{provider}/{model}" not in self._warned:
            self._warned.add(f"{provider}/{model}")
            log.warning("governance: no price for %s/%s; its requests cost 0 against budgets "
                        "(add it under plugins.governance.pricing)", provider, model)
        if len(self._cache) < 10_000:
            self._cache[key] = found
        return found

    def cost(self, provider: str, provider_type: str | None, model: str, usage) -> float:
        price = self.price(provider, provider_type, model)
        return price.cost(usage) if price is not None else 0.0
