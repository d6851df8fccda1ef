"""Checks are atomic under concurrency: 50 parallel requests overrun a limit only by what was
already in flight when it was reached, never more."""

from __future__ import annotations

import asyncio
import random

import openai
import pytest

from hookway.testing import Reply
from hookway_governance.engine import Engine
from hookway_governance.model import parse_virtual_key

from governance_testing import COST, chat, client, plugin_of


async def burst(gw, value: str, n: int, concurrency: int | None = None) -> list:
    """``n`` chat requests through the async SDK, at most ``concurrency`` at a time; the status
    of each (200, or the error's status)."""
    c = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=value, max_retries=0, timeout=30)
    gate = asyncio.Semaphore(concurrency or n)

    async def one():
        async with gate:
            try:
                await c.chat.completions.create(model="up/m", messages=[{"role": "user", "content": "x"}])
                return 200
            except openai.APIStatusError as exc:
                return exc.status_code
    try:
        return await asyncio.gather(*(one() for _ in range(n)))
    finally:
        await c.close()


@pytest.mark.parametrize("multi_process", [False, True], ids=["in-memory", "in-the-database"])
def test_a_request_limit_of_10_lets_exactly_10_of_50_parallel_requests_through(gov, fake_upstream, multi_process):
    gw, admin = gov(governance={"multi_process": multi_process})
    # Every answer takes a moment, so the 50 requests really are in flight together.
    fake_upstream.responder = lambda rec: Reply(text="hello", first_byte_delay=0.05)
    _, value = admin.key(rate_limit={"request_max_limit": 10, "request_reset_duration": "1h"})
    statuses = asyncio.run(burst(gw, value, 50))
    assert statuses.count(200) == 10 and statuses.count(429) == 40
    assert len(fake_upstream.requests) == 10


def test_a_budget_is_overrun_only_by_the_requests_in_flight_when_it_was_reached(gov, fake_upstream):
    gw, admin = gov()
    rng = random.Random(7)
    fake_upstream.responder = lambda rec: Reply(text="hello", first_byte_delay=rng.uniform(0, 0.03))
    kid, value = admin.key(budget={"max_limit": 0.09, "reset_duration": "1d"})
    engine = plugin_of(gw).engine
    events = []                      # the event loop's own order of admissions and charges
    admit, settle = engine.admit, engine.settle

    def recording_admit(ticket, now):
        admit(ticket, now)
        events.append("admit")

    def recording_settle(ticket, provider, cost, tokens, now):
        settle(ticket, provider, cost, tokens, now)
        events.append(("spent", engine.counters[f"vk:{kid}:budget:1d"].usage))
    engine.admit, engine.settle = recording_admit, recording_settle

    in_flight = 10
    statuses = asyncio.run(burst(gw, value, 50, concurrency=in_flight))
    ok = statuses.count(200)
    assert statuses.count(402) == 50 - ok
    # At least ceil(0.09 / 0.02) = 5 pass; at most 5 plus the others that were in flight then.
    assert 5 <= ok <= 5 + in_flight - 1
    # Nothing is admitted once the charged spend reached the budget.
    reached = next(i for i, e in enumerate(events) if e != "admit" and e[1] >= 0.09)
    assert "admit" not in events[reached:]
    # No charge was lost: the spend is exactly what the admitted requests cost.
    usage = admin.get(f"/api/governance/virtual-keys/{kid}").json()["virtual_key"]["budget"]["current_usage"]
    assert usage == pytest.approx(ok * COST)
    with pytest.raises(openai.APIStatusError) as exc:
        chat(client(gw, value))
    assert exc.value.status_code == 402


def test_engine_interleaving_admits_until_spend_reaches_the_budget():
    """The same rule without a network: admissions and charges interleaved by hand."""
    engine = Engine(clock=lambda: 1000.0)
    key = parse_virtual_key({"name": "k", "budget": {"max_limit": 0.05, "reset_duration": "1h"}},
                            value="sk-hw-" + "x" * 30, now=1000.0)
    engine.put(key)
    tickets = []
    for _ in range(3):               # three in flight, nothing charged yet
        t = engine.identify(key.value_hash, 1000.0)
        engine.admit(t, 1000.0)
        tickets.append(t)
    for t in tickets:                # they finish: 0.06 spent, over 0.05 by what was in flight
        engine.settle(t, "p", 0.02, 15, 1000.0)
    t = engine.identify(key.value_hash, 1000.0)
    with pytest.raises(Exception) as exc:
        engine.admit(t, 1000.0)
    assert exc.value.status == 402
    assert engine.counters[f"vk:{key.id}:budget:1h"].usage == pytest.approx(0.06)
    assert engine.take_pending() == {f"vk:{key.id}:budget:1h": {1000.0: pytest.approx(0.06)}}
