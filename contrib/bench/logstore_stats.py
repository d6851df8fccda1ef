"""How fast the logstore answers ``/api/logs/stats`` (and a content search) over many records, and
how fast its writer stores a burst.

    .venv/bin/python contrib/bench/logstore_stats.py [--rows 300000] [--hours 24] [--db /tmp/logs-bench.db]

Writes ``--rows`` realistic records (request and response content included, spread over the last
``--hours``) through the store's own batch writer into a fresh database, unless ``--db`` already
holds that many, then times a few typical stats queries and searches (best of ``--repeat`` runs).
Then ``--burst`` records a second apart by the thousand (what a busy gateway hands the writer) go
into a scratch database, for the writer's throughput. A benchmark, not a test: it prints numbers
and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid

from hookway.pipeline import LogRecord
from hookway_logstore import LogFilter, LogStore

PROVIDERS = {"openai": ("gpt-4o", "gpt-4o-mini", "o3-mini"), "anthropic": ("claude-sonnet-4", "claude-haiku-4"),
             "cerebras": ("llama-3.3-70b", "qwen-3-32b"), "groq": ("llama-3.1-8b",)}
TEAMS = ("red", "blue", "green", "ops", "research", "support")
KEYS = [(f"vk-{i:02d}", f"key-{i:02d}", TEAMS[i % len(TEAMS)]) for i in range(30)]
WORDS = ("the quick brown fox jumps over a lazy dog while école élève naïve café straße "
         "summarise this contract explain the stack trace write a haiku about rain").split()


def realistic_records(n: int, hours: float, seed: int = 1) -> list[LogRecord]:
    rnd = random.Random(seed)
    now = time.time()
    out = []
    for _ in range(n):
        provider = rnd.choices(list(PROVIDERS), weights=(5, 3, 2, 1))[0]
        model = rnd.choice(PROVIDERS[provider])
        key_id, key_name, team = rnd.choice(KEYS)
        status = rnd.choices((200, 429, 500, 502, 400), weights=(950, 25, 8, 7, 10))[0]
        stream = rnd.random() < 0.6
        latency = rnd.lognormvariate(6.5, 0.8)   # median ~660 ms, long tail
        prompt = " ".join(rnd.choices(WORDS, k=rnd.randint(20, 200)))
        answer = " ".join(rnd.choices(WORDS, k=rnd.randint(10, 150))) if status == 200 else None
        input_tokens, output_tokens = rnd.randint(20, 4000), rnd.randint(0, 1500) if status == 200 else 0
        out.append(LogRecord(
            id=uuid.uuid4().hex, time=now - rnd.uniform(0, hours * 3600), dialect="openai", operation="chat",
            model=f"{provider}/{model}", provider=provider, upstream_model=model, rule=None, key_id=key_id,
            key_name=key_name, team_id=team, customer_id=None, status=status,
            error=None if status == 200 else f"upstream {status}: something went wrong", latency_ms=latency,
            ttft_ms=latency * rnd.uniform(0.1, 0.5) if stream and status == 200 else None,
            upstream_ms=latency * 0.95, input_tokens=input_tokens, output_tokens=output_tokens,
            cached_tokens=rnd.choice((0, 0, 0, 1024)), cache_hit=rnd.random() < 0.03, cache_similarity=None,
            fallback_index=1 if rnd.random() < 0.02 else 0, stream=stream, passthrough=False,
            cost=(input_tokens * 3 + output_tokens * 15) / 1e6,
            request={"model": model, "messages": [{"role": "user", "content": prompt}]},
            response=None, response_body=None if answer is None else (
                '{"id":"x","object":"chat.completion","model":"%s","choices":[{"index":0,"message":'
                '{"role":"assistant","content":"%s"},"finish_reason":"stop"}]}' % (model, answer)).encode()))
    out.sort(key=lambda r: r.time)   # the order a gateway writes them in
    return out


async def best_of(repeat: int, fn) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = await fn()
        best = min(best, time.perf_counter() - started)
    return best, result


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--hours", type=float, default=24.0, help="the records are spread over this many hours")
    ap.add_argument("--db", default="/tmp/hookway-logstore-bench.db")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--burst", type=int, default=30_000, help="records for the write-throughput run (0: skip)")
    args = ap.parse_args()

    store = LogStore(args.db)
    await store.open()
    try:
        if await store.count() != args.rows:
            await store.close()
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(args.db + suffix):
                    os.remove(args.db + suffix)
            store = LogStore(args.db)
            await store.open()
            started = time.perf_counter()
            records = realistic_records(args.rows, args.hours)
            print(f"generated {len(records):,} records in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            started = time.perf_counter()
            for i in range(0, len(records), 1000):   # batches the size the core hands over under load
                await store.write(records[i:i + 1000], lambda text: text)
            seconds = time.perf_counter() - started
            print(f"wrote {len(records):,} records in {seconds:.1f} s ({len(records) / seconds:,.0f}/s)")
            del records
        print(f"{args.db}: {await store.count():,} records, {os.path.getsize(args.db) / 1e6:.0f} MB")
        hours = f"{args.hours:g}h"
        queries = [
            ("stats", {"range": hours}),
            ("stats", {"range": hours, "provider": "openai"}),
            ("stats", {"range": hours, "status": "error"}),
            ("stats", {"range": hours, "team": "red", "model": "gpt-4o"}),
            ("stats", {"range": "1h"}),
            ("stats", {"range": hours, "stream": "true"}),          # not in the summary: exact path
            ("stats", {"range": hours, "min_latency": "1000"}),     # not in the summary: exact path
            ("stats", {"range": hours, "q": "haiku"}),
            ("list", {"range": hours, "q": "ÉCOLE"}),
            ("list", {"range": hours, "q": "stack trace"}),
            ("list", {"range": hours, "q": "zz"}),
        ]
        for kind, query in queries:
            flt = LogFilter.from_query(query)
            if kind == "stats":
                seconds, s = await best_of(args.repeat, lambda: store.stats(flt, 60))
                detail = f"count {s['count']:,}, p50 {s['latency_ms']['p50']}, p99 {s['latency_ms']['p99']}"
                if "source" in s:
                    detail += f", from {s['source']}"
            else:
                seconds, (rows, total) = await best_of(args.repeat, lambda: store.list(flt, "time DESC, seq DESC",
                                                                                      50, 0))
                detail = f"total {total:,}"
            print(f"{kind:5} {seconds * 1000:7.0f} ms  {query}  ({detail})")
    finally:
        await store.close()
    if args.burst:
        await burst(args.burst)


async def burst(n: int) -> None:
    """``n`` records, 1,000 a second, written in batches of 1,000 into a scratch database."""
    records = realistic_records(n, n / 1000 / 3600, seed=2)
    with tempfile.TemporaryDirectory() as scratch:
        store = LogStore(os.path.join(scratch, "logs.db"))
        await store.open()
        try:
            started = time.perf_counter()
            for i in range(0, n, 1000):
                await store.write(records[i:i + 1000], lambda text: text)
            seconds = time.perf_counter() - started
        finally:
            await store.close()
    print(f"burst: wrote {n:,} records (1,000 a second) in {seconds:.1f} s: {n / seconds:,.0f} records/s")


if __name__ == "__main__":
    asyncio.run(main())
