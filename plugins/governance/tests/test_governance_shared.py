"""Decisions made in the database (several processes): batches, windows, a failing database."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from hookway.errors import GatewayError
from hookway_governance import shared
from hookway_governance.engine import Engine, Limits
from hookway_governance.model import entity_counters, parse_virtual_key
from hookway_governance.store import Store

T0 = 1_000_000.0


@pytest.fixture
def setup(tmp_path):
    """A store, an engine and a key with 2 requests a minute and a $0.05 budget a day; returns
    (store, engine, key)."""
    store = Store(str(tmp_path / "governance.db"))
    engine = Engine(clock=lambda: T0)
    key = parse_virtual_key({"name": "k", "budget": {"max_limit": 0.05, "reset_duration": "1d"},
                             "rate_limit": {"request_max_limit": 2, "request_reset_duration": "1m"}},
                            value="sk-hw-" + "x" * 30, now=T0)
    engine.put(key, T0)
    store.put("virtual_key", key.doc(), key.value_hash, [(cid, T0) for cid, _ in entity_counters(key)])
    yield store, engine, key
    store.close()


def stored(store, cid):
    return store.db.execute("SELECT usage, window_start FROM counters WHERE id = ?", (cid,)).fetchone()


def test_a_batch_decides_in_order_and_a_refusal_counts_nothing(setup):
    store, engine, key = setup
    t = engine.identify(key.value_hash, T0)
    outcomes, rows = shared.apply(store, engine, [(Limits.admit, (t, T0))] * 3)
    assert outcomes[:2] == [None, None]
    assert isinstance(outcomes[2], GatewayError) and outcomes[2].status == 429
    requests = key.rate_limit.request_counter
    assert stored(store, requests) == (2, T0)
    assert rows == [(requests, 2, T0)]
    # A charge in the same transaction as admissions sees them, and the refusal in between.
    outcomes, _ = shared.apply(store, engine, [(Limits.settle, (t, None, 0.06, 15, T0)), (Limits.admit, (t, T0))])
    assert outcomes[0] is None and outcomes[1].status == 402
    assert stored(store, key.budgets[0].id) == (pytest.approx(0.06), T0)
    assert stored(store, requests) == (2, T0)          # the refused admission left it alone


def test_a_window_that_ended_starts_again_from_nothing(setup):
    store, engine, key = setup
    t = engine.identify(key.value_hash, T0)
    shared.apply(store, engine, [(Limits.admit, (t, T0)), (Limits.admit, (t, T0 + 10))])
    outcomes, _ = shared.apply(store, engine, [(Limits.admit, (t, T0 + 59))])
    assert outcomes[0].status == 429 and outcomes[0].headers == {"retry-after": "1"}
    outcomes, _ = shared.apply(store, engine, [(Limits.admit, (t, T0 + 130))])
    assert outcomes == [None]
    assert stored(store, key.rate_limit.request_counter) == (1, T0 + 120)


def test_what_a_batch_wrote_reaches_this_process_memory_and_other_processes_sync(setup, tmp_path):
    store, engine, key = setup
    t = engine.identify(key.value_hash, T0)
    other = Store(str(tmp_path / "governance.db"))
    try:
        _, seq_before, _ = other.sync({}, 0, 0)

        async def decide():
            in_db = shared.InDatabase(lambda fn, *args: asyncio.to_thread(fn, *args), store, engine)
            await in_db.decide(Limits.admit, t, T0)
            await in_db.decide(Limits.settle, t, None, 0.02, 15, T0)
        asyncio.run(decide())
        assert engine.counters[key.budgets[0].id].usage == pytest.approx(0.02)
        assert engine.pending == {}                     # nothing left for the periodic sync to add
        rows, _, _ = other.sync({}, seq_before, 0)
        assert sorted(rows) == sorted([(key.rate_limit.request_counter, 1, T0), (key.budgets[0].id, 0.02, T0)])
    finally:
        other.close()


def test_when_the_database_fails_the_batch_is_decided_in_memory(setup):
    store, engine, key = setup
    t = engine.identify(key.value_hash, T0)

    def broken(fn, *args):
        raise sqlite3.OperationalError("database is locked")

    async def decide():
        in_db = shared.InDatabase(lambda fn, *args: asyncio.to_thread(broken, fn, *args), store, engine)
        results = await asyncio.gather(*(in_db.decide(Limits.admit, t, T0) for _ in range(3)),
                                       return_exceptions=True)
        return results
    results = asyncio.run(decide())
    assert results[:2] == [None, None] and results[2].status == 429
    # Counted in memory, as with one process: the periodic sync writes it.
    assert engine.pending == {key.rate_limit.request_counter: {T0: 2}}
