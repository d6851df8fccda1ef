"""/api/logs/stats from the summary tables, checked against a brute-force computation over the same
records: counts, sums and breakdowns exactly, percentiles within the documented bound; the exact
path where the summaries cannot answer; a database from before the summaries (backfill); pruning.

The speed is measured by contrib/bench/logstore_stats.py, not here.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
import uuid

import pytest

from hookway.pipeline import LogRecord
from hookway_logstore import LogFilter, LogStore
from hookway_logstore import store as store_module
from hookway_logstore.summary import PERCENTILE_ERROR, Dist

KEYS = [("k1", "alice", "red"), ("k2", "bob", "blue"), ("k3", None, "red"), (None, None, None)]
# p1/a usually goes to a, sometimes to x (say a routing rule), so model=a is not a set of asked models.
ROUTES = [("p1", "p1/a", "a"), ("p1", "p1/a", "x"), ("p1", "p1/b", "b"), ("p2", "p2/a", "a"), ("p3", "c", "c"),
          (None, "nowhere", None)]


def make_records(n: int, now: float, span: float, seed: int = 3) -> list[LogRecord]:
    """Records over [now - span, now + 20 s] with every awkward value: no provider, no key name,
    in-stream errors with status 200, missing and zero latencies, missing costs."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        provider, model, upstream = rnd.choice(ROUTES)
        key_id, key_name, team = rnd.choice(KEYS)
        status = 404 if provider is None else rnd.choice((200,) * 12 + (429, 500, 502, 400))
        error = None
        if status >= 400:
            error = f"failed with {status}"
        elif rnd.random() < 0.03:
            error = "stream: upstream went away"   # an in-stream error: status 200, still an error
        latency = None if i % 89 == 0 else 0.0 if i % 997 == 0 else round(rnd.lognormvariate(5.5, 1.1), 3)
        out.append(LogRecord(
            id=uuid.uuid4().hex, time=now - rnd.uniform(-20, span), dialect="echo", operation="chat", model=model,
            provider=provider, upstream_model=upstream, rule=None, key_id=key_id, key_name=key_name, team_id=team,
            customer_id=rnd.choice(("c1", "c2", None)), status=status, error=error, latency_ms=latency,
            ttft_ms=rnd.uniform(0.5, 400) if i % 3 else None, upstream_ms=None,
            input_tokens=rnd.randint(0, 900), output_tokens=rnd.randint(0, 300), cached_tokens=rnd.choice((0, 64)),
            cache_hit=rnd.random() < 0.05, cache_similarity=None, fallback_index=1 if rnd.random() < 0.03 else 0,
            stream=rnd.random() < 0.5, passthrough=False, cost=rnd.choice((None, 0.001, 0.0125)),
            request={"prompt": f"request {i}"}))
    return out


def as_row(r: LogRecord) -> dict:
    return {"time": r.time, "provider": r.provider, "model": r.model, "upstream_model": r.upstream_model,
            "key_id": r.key_id, "key_name": r.key_name, "team_id": r.team_id, "customer_id": r.customer_id,
            "status": r.status, "error": r.error, "latency_ms": r.latency_ms, "ttft_ms": r.ttft_ms,
            "total_tokens": r.input_tokens + r.output_tokens, "cost": r.cost, "cache_hit": r.cache_hit,
            "fallback_index": r.fallback_index, "stream": r.stream,
            "request": f'{{"prompt": "{r.request["prompt"]}"}}', "response": None, "dialect": r.dialect,
            "operation": r.operation, "rule": r.rule}


def nearest_rank(values: list, p: int):
    values = sorted(values)
    return values[max(0, min(len(values) - 1, -(-p * len(values) // 100) - 1))] if values else None


def failed(r: LogRecord) -> bool:
    return r.status >= 400 or r.error is not None


def check_against_records(s: dict, records: list[LogRecord], flt: LogFilter) -> None:
    """Every figure of the stats answer ``s``, recomputed from the matching ``records``."""
    rows = [r for r in records if flt.match(as_row(r))]
    estimated = s["source"] == "summary"

    def pct(got, want):
        if want is None or not estimated:
            assert got == want
        else:   # within the bound (or a microsecond, for values near zero)
            assert got == pytest.approx(want, rel=PERCENTILE_ERROR + 1e-9, abs=1e-3)

    latencies = [r.latency_ms for r in rows if r.latency_ms is not None]
    ttfts = [r.ttft_ms for r in rows if r.ttft_ms is not None]
    assert s["count"] == len(rows)
    assert s["errors"] == sum(failed(r) for r in rows)
    assert s["input_tokens"] == sum(r.input_tokens for r in rows)
    assert s["output_tokens"] == sum(r.output_tokens for r in rows)
    assert s["cached_tokens"] == sum(r.cached_tokens for r in rows)
    assert s["cost"] == pytest.approx(sum(r.cost or 0 for r in rows))
    assert s["cache_hits"] == sum(r.cache_hit for r in rows)
    assert s["fallbacks"] == sum(r.fallback_index > 0 for r in rows)
    assert s["latency_ms"]["max"] == (max(latencies) if latencies else None)
    assert s["latency_ms"]["avg"] == (pytest.approx(sum(latencies) / len(latencies)) if latencies else None)
    assert s["ttft_ms"]["avg"] == (pytest.approx(sum(ttfts) / len(ttfts)) if ttfts else None)
    for p in (50, 90, 99):
        pct(s["latency_ms"][f"p{p}"], nearest_rank(latencies, p))
        pct(s["ttft_ms"][f"p{p}"], nearest_rank(ttfts, p))

    # The series: the buckets the answer declares, each filled with its records.
    series, step = s["series"], s["bucket_seconds"]
    start = series[0]["t"]
    assert start <= s["since"] and start + len(series) * step >= s["until"] - 1e-6
    assert [b["t"] for b in series] == pytest.approx([start + i * step for i in range(len(series))])
    buckets: list[list] = [[] for _ in series]
    for r in rows:
        buckets[min(len(series) - 1, max(0, int((r.time - start) / step)))].append(r)
    for got, in_bucket in zip(series, buckets):
        lat = [r.latency_ms for r in in_bucket if r.latency_ms is not None]
        assert got["count"] == len(in_bucket)
        assert got["errors"] == sum(failed(r) for r in in_bucket)
        assert got["latency_avg"] == (pytest.approx(sum(lat) / len(lat)) if lat else None)
        pct(got["latency_p50"], nearest_rank(lat, 50))
        pct(got["latency_p90"], nearest_rank(lat, 90))

    # The breakdowns.
    by = {"provider": lambda r: r.provider, "model": lambda r: r.model, "team": lambda r: r.team_id,
          "key": lambda r: r.key_name if r.key_name is not None else r.key_id, "status": lambda r: r.status}
    for name, value_of in by.items():
        want: dict = {}
        for r in rows:
            want.setdefault(value_of(r), []).append(r)
        got = {g["value"]: g for g in s[f"by_{name}"]}
        assert set(got) == set(want), name
        counts = [g["count"] for g in s[f"by_{name}"]]
        assert counts == sorted(counts, reverse=True)
        for value, group in want.items():
            lat = [r.latency_ms for r in group if r.latency_ms is not None]
            g = got[value]
            assert g["count"] == len(group) and g["errors"] == sum(failed(r) for r in group), (name, value)
            assert g["tokens"] == sum(r.input_tokens + r.output_tokens for r in group)
            assert g["cost"] == pytest.approx(sum(r.cost or 0 for r in group))
            assert g["latency_avg"] == (pytest.approx(sum(lat) / len(lat)) if lat else None)


async def open_store(path) -> LogStore:
    store = LogStore(str(path))
    await store.open()
    return store


async def write_all(store: LogStore, records: list, batch: int = 1000) -> None:
    for i in range(0, len(records), batch):
        await store.write(records[i:i + batch], lambda text: text)


NOW = time.time()
# (query, where the answer must come from: "summary", "records", or None when either is right)
QUERIES = [
    ({"range": "24h"}, "summary"),
    ({"range": "1h"}, "summary"),
    ({"range": "7d"}, "summary"),                                       # hour buckets
    ({"since": str(NOW - 5 * 86400), "until": str(NOW - 5 * 3600 + 17.3)}, "summary"),
    ({"since": str(NOW - 7200.5), "until": str(NOW - 60.25)}, "summary"),
    ({"since": str(NOW - 1000.5), "until": str(NOW - 990.25)}, "summary"),   # inside one minute
    ({"range": "24h", "provider": "p1"}, "summary"),
    ({"range": "7d", "provider": "p1,p2"}, "summary"),
    ({"range": "24h", "model": "p1/a"}, "summary"),
    ({"range": "24h", "model": "a"}, "records"),                         # upstream a: some p1/a, all p2/a
    ({"range": "24h", "model": "x"}, "records"),
    ({"range": "24h", "status": "error"}, "summary"),
    ({"range": "24h", "status": "ok"}, "summary"),
    ({"range": "24h", "status": "4xx"}, "summary"),
    ({"range": "24h", "status": "200"}, "summary"),                      # ok ones and in-stream errors
    ({"range": "24h", "key": "alice"}, "summary"),
    ({"range": "24h", "key": "k3"}, "summary"),                          # a key without a name
    ({"range": "24h", "team": "red"}, "summary"),
    ({"range": "24h", "team": "red", "provider": "p1"}, "records"),
    ({"range": "24h", "provider": "nobody"}, "summary"),                 # nothing matches
    ({"range": "24h", "customer": "c1"}, "records"),
    ({"range": "24h", "min_ttft": "50", "max_ttft": "300"}, "records"),
    ({"range": "24h", "stream": "true"}, "records"),
    ({"range": "24h", "q": "request 1"}, "records"),
]


@pytest.fixture(scope="module")
def dataset():
    return make_records(8000, NOW, 3 * 86400)


@pytest.fixture(scope="module")
def written(dataset, tmp_path_factory):
    """A database holding the dataset, written once for the module's read-only tests."""
    path = tmp_path_factory.mktemp("stats") / "logs.db"

    async def write():
        store = await open_store(path)
        try:
            await write_all(store, dataset)
            await store.write(dataset[:300], lambda text: text)   # delivered twice: stored and counted once
        finally:
            await store.close()
    asyncio.run(write())
    return path


@pytest.mark.parametrize("query,source", QUERIES, ids=[repr(q) for q, _ in QUERIES])
async def test_stats_match_a_brute_force_computation(written, dataset, query, source):
    store = await open_store(written)
    try:
        flt = LogFilter.from_query(query)
        s = await store.stats(flt, 60)
        assert s["source"] == source
        check_against_records(s, dataset, flt)
        assert len(s["series"]) <= 61
        exact = await store.stats(flt, 60, exact=True)
        assert exact["source"] == "records"
        check_against_records(exact, dataset, flt)
    finally:
        await store.close()


def test_the_percentile_estimate_stays_within_the_bound():
    rnd = random.Random(11)
    for sample in ([rnd.lognormvariate(4, 2) for _ in range(5000)], [rnd.uniform(0, 1e6) for _ in range(999)],
                   [1.0, 1.04, 1.0816, 250.0], [0.0, 0.0005, 3.0, 7.0, 7.0]):
        dist = Dist()
        for v in sample:
            dist.add(v)
        got = dist.percentiles(range(1, 101))
        for p in range(1, 101):
            want = nearest_rank(sample, p)
            assert got[f"p{p}"] == pytest.approx(want, rel=PERCENTILE_ERROR + 1e-9, abs=1e-3), (p, want)
        assert got["p100"] == max(sample)   # the largest and (rank 1) the smallest are exact
        assert got["p1"] == min(sample) or len(sample) > 100


async def test_a_database_from_before_the_summaries_is_summarised_in_the_background(tmp_path, dataset, monkeypatch):
    path = tmp_path / "logs.db"
    store = await open_store(path)
    await write_all(store, dataset[:6000])
    await store.close()
    conn = sqlite3.connect(path)   # back to schema 1: the logs table alone
    conn.executescript("DROP TABLE stats_scope; DROP TABLE stats_rollup; DROP TABLE stats_combos; "
                       "UPDATE meta SET value = '1' WHERE key = 'schema_version';")
    conn.close()

    async def no_background(self):   # steps are run one by one below
        pass

    monkeypatch.setattr(LogStore, "_backfill", no_background)
    monkeypatch.setattr(store_module, "BACKFILL_CHUNK", 1500)
    store = await open_store(path)
    try:
        flt = LogFilter.from_query({"range": "24h"})
        assert (await store.stats(flt, 60))["source"] == "records"   # not summarised yet: exact
        steps = 0
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(store._writer, store._backfill_step):   # on the writer thread
            steps += 1
            await store.write(dataset[6000 + steps * 300:6300 + steps * 300], lambda text: text)   # meanwhile
        assert steps == 4   # 6,000 records, 1,500 at a time
        await write_all(store, dataset[6000:])
        s = await store.stats(flt, 60)
        assert s["source"] == "summary"
        check_against_records(s, dataset, flt)
        s = await store.stats(LogFilter.from_query({"range": "7d", "status": "error"}), 60)
        assert s["source"] == "summary"
        check_against_records(s, dataset, LogFilter.from_query({"range": "7d", "status": "error"}))
    finally:
        await store.close()
    assert sqlite3.connect(path).execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)


async def test_the_background_backfill_finishes_on_its_own(tmp_path, dataset):
    path = tmp_path / "logs.db"
    store = await open_store(path)
    await write_all(store, dataset[:3000])
    await store.close()
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE stats_scope; DROP TABLE stats_rollup; DROP TABLE stats_combos; "
                       "UPDATE meta SET value = '1' WHERE key = 'schema_version';")
    conn.close()
    store = await open_store(path)
    try:
        flt = LogFilter.from_query({"range": "7d"})
        await store._backfill_task   # the task open() started
        s = await store.stats(flt, 60)
        assert s["source"] == "summary"
        check_against_records(s, dataset[:3000], flt)
    finally:
        await store.close()


@pytest.mark.parametrize("how", ["retention", "max_rows"])
async def test_stats_stay_right_after_old_records_are_pruned(tmp_path, dataset, how):
    store = await open_store(tmp_path / "logs.db")
    try:
        await write_all(store, dataset)
        if how == "retention":
            cutoff = NOW - 1.5 * 86400 + 17.3   # mid-minute, mid-hour
            assert await store.prune(cutoff, None) > 0
            left = [r for r in dataset if r.time >= cutoff]
        else:
            assert await store.prune(None, 3000) == len(dataset) - 3000
            left = sorted(dataset, key=lambda r: r.time)[-3000:]
        for query in ({"range": "7d"}, {"range": "7d", "provider": "p2"},
                      {"since": str(NOW - 2 * 86400), "until": str(NOW - 86400 + 3.5)}):
            flt = LogFilter.from_query(query)
            s = await store.stats(flt, 60)
            assert s["source"] == "summary"
            check_against_records(s, left, flt)
    finally:
        await store.close()


async def test_an_hour_of_summaries_is_one_row_per_value(tmp_path, dataset):
    """What makes the stats fast: a granule holds one row per dimension value, however many records."""
    store = await open_store(tmp_path / "logs.db")
    try:
        hour = [r for r in dataset if NOW - 3600 <= r.time < NOW - 60]
        await write_all(store, hour)
    finally:
        await store.close()
    conn = sqlite3.connect(tmp_path / "logs.db")
    rows = dict(conn.execute("SELECT dim, COUNT(*) FROM stats_scope WHERE level = 3600 GROUP BY dim").fetchall())
    (granules,) = conn.execute("SELECT COUNT(DISTINCT t) FROM stats_scope WHERE level = 3600").fetchone()
    assert len(hour) > 100 and granules <= 2
    assert rows[""] == granules and rows["provider"] <= 4 * granules and rows["failed"] <= 2 * granules
    assert sum(n for (n,) in conn.execute("SELECT n FROM stats_scope WHERE level = 3600 AND dim = ''")) == len(hour)
