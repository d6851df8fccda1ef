"""The SQLite request log: records, the query API, retention, shutdown flush, drops, SSE."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
import uuid

import aiohttp
import httpx
import orjson
import pytest
import structlog

from hookway import hookimpl
from hookway.pipeline import Identity, LogRecord
from hookway.testing import GatedSink
from hookway_logstore.summary import PERCENTILE_ERROR

HTTP = httpx.Client(timeout=10)   # one client: creating one per call costs ~100 ms (TLS setup)


def record(**kw) -> LogRecord:
    base = dict(id=uuid.uuid4().hex, time=time.time(), dialect="echo", operation="chat", model="e1/m",
                provider="e1", upstream_model="m", rule=None, key_id=None, key_name=None, team_id=None,
                customer_id=None, status=200, error=None, latency_ms=10.0, ttft_ms=5.0, upstream_ms=8.0,
                input_tokens=1, output_tokens=1, cached_tokens=0, cache_hit=False, cache_similarity=None,
                fallback_index=0, stream=False, passthrough=False, request=None, response=None, extra={})
    base.update(kw)
    return LogRecord(**base)


def feed(gw, records):
    gw.call(gw.logstore.hookway_log(records))


# --- every request is recorded ---------------------------------------------------------------------

def test_each_request_is_recorded_with_its_content(logstore_gateway):
    gw = logstore_gateway()
    assert gw.gateway.log_content is True
    assert gw.post({"model": "e1/m", "prompt": "hello there"}).status_code == 200
    assert gw.post({"model": "e2/x", "prompt": "stream me", "stream": True}).status_code == 200
    assert gw.post({"model": "nope", "prompt": "x"}).status_code == 404
    gw.wait_written(3)
    data = gw.api("/api/logs", sort="time")
    assert data["total"] == 3
    first, second, third = data["data"]
    assert (first["provider"], first["upstream_model"], first["status"], first["stream"]) == ("e1", "m", 200, False)
    assert (first["input_tokens"], first["output_tokens"], first["total_tokens"]) == (11, 11, 22)
    assert first["finish_reason"] == "end_turn" and first["latency_ms"] > 0 and first["ttft_ms"] is not None
    assert "request" not in first            # lists carry no content
    assert second["stream"] is True and second["provider"] == "e2"
    assert third["status"] == 404 and "not found" in third["error"] and third["provider"] is None

    detail = gw.api(f"/api/logs/{first['id']}")
    assert detail["request"] == {"model": "e1/m", "prompt": "hello there"}
    assert detail["response"]["content"] == [{"type": "text", "text": "ereht olleh"}]
    streamed = gw.api(f"/api/logs/{second['id']}")
    assert streamed["response"]["content"] == [{"type": "text", "text": "em maerts"}]
    assert streamed["response"]["stop_reason"] == "end_turn"


def test_unknown_id_is_a_404(logstore_gateway):
    gw = logstore_gateway()
    r = HTTP.get(gw.url + "/api/logs/nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]


def test_log_content_false_keeps_no_content(logstore_gateway):
    gw = logstore_gateway({"log_content": False})
    assert gw.gateway.log_content is False
    gw.post({"model": "e1/m", "prompt": "secret prompt"})
    gw.wait_written(1)
    (row,) = gw.api("/api/logs")["data"]
    detail = gw.api(f"/api/logs/{row['id']}")
    assert detail["request"] is None and detail["response"] is None
    assert row["input_tokens"] == 13
    assert gw.api("/api/logs", q="secret")["total"] == 0
    raw = sqlite3.connect(gw.data_dir / "logs.db").execute("SELECT * FROM logs").fetchall()
    assert "secret prompt" not in repr(raw)


def test_cost_identity_and_rule_come_from_the_record(logstore_gateway):
    class Governance:   # what a governance plugin does: identity from auth, cost on ctx.cost
        @hookimpl
        def hookway_auth(self, ctx):
            return Identity(key_id="vk-1", key_name="alice-key", team_id="team-a")

        @hookimpl
        def hookway_middleware(self):
            async def cost(ctx, call_next):
                try:
                    return await call_next(ctx)
                finally:
                    ctx.cost = 0.0125
            return cost

    gw = logstore_gateway(plugins={"gov": {}}, extra_plugins={"gov": Governance})
    gw.post({"model": "e1/m", "prompt": "x"})
    gw.wait_written(1)
    (row,) = gw.api("/api/logs", key="alice-key", team="team-a")["data"]
    assert (row["key_id"], row["key_name"], row["team_id"], row["cost"]) == ("vk-1", "alice-key", "team-a", 0.0125)
    assert gw.api("/api/logs", key="vk-1")["total"] == 1
    assert gw.api("/api/logs", min_cost="0.01", max_cost="0.02")["total"] == 1
    assert gw.api("/api/logs", min_cost="0.02")["total"] == 0
    assert gw.api("/api/logs/stats")["cost"] == pytest.approx(0.0125)


# --- filters, paging, sorting, stats ---------------------------------------------------------------

@pytest.fixture
def seeded(logstore_gateway):
    gw = logstore_gateway()
    now = time.time()
    records = [
        record(provider="cerebras", model="fast", upstream_model="llama", status=200, latency_ms=100,
               input_tokens=10, output_tokens=20, cost=0.01, key_id="k1", key_name="alice",
               team_id="red", time=now - 10, request={"messages": [{"role": "user", "content": "find the needle"}]}),
        record(provider="cerebras", model="fast", upstream_model="llama", status=429, error="rate_limit: slow down",
               latency_ms=5, input_tokens=0, output_tokens=0, key_id="k2", key_name="bob", team_id="blue",
               time=now - 20),
        record(provider="anthropic", model="claude", upstream_model="claude", status=200, latency_ms=900,
               input_tokens=1000, output_tokens=500, cost=0.5, key_id="k1", key_name="alice",
               team_id="red", time=now - 30, cache_hit=True, stream=True, ttft_ms=300),
        record(provider="anthropic", model="claude", upstream_model="claude", status=502, error="bad_gateway: down",
               latency_ms=50, fallback_index=1, time=now - 7200),
    ]
    feed(gw, records)
    gw.records = records
    return gw


@pytest.mark.parametrize("params,expected", [
    ({}, 4),
    ({"provider": "cerebras"}, 2),
    ({"provider": "cerebras,anthropic"}, 4),
    ({"model": "llama"}, 2),                      # the upstream model matches too
    ({"model": "claude"}, 2),
    ({"status": "error"}, 2),
    ({"status": "ok"}, 2),
    ({"status": "4xx"}, 1),
    ({"status": "429,502"}, 2),
    ({"status": "200"}, 2),
    ({"key": "alice"}, 2),
    ({"key": "k2"}, 1),
    ({"team": "blue"}, 1),
    ({"range": "1h"}, 3),
    ({"min_latency": "50", "max_latency": "100"}, 2),
    ({"min_tokens": "30"}, 2),
    ({"max_tokens": "0"}, 1),
    ({"min_cost": "0.1"}, 1),
    ({"min_ttft": "100"}, 1),                     # time to first token, ms
    ({"max_ttft": "10"}, 3),
    ({"min_ttft": "5", "max_ttft": "5"}, 3),
    ({"q": "NEEDLE"}, 1),
    ({"q": "slow down"}, 1),                      # errors are searched too
    ({"q": "50%_"}, 0),                           # LIKE wildcards are literal
    ({"cache_hit": "true"}, 1),
    ({"fallback": "true"}, 1),
    ({"stream": "false"}, 3),
    ({"provider": "anthropic", "status": "ok", "team": "red"}, 1),
])
def test_filters(seeded, params, expected):
    assert seeded.api("/api/logs", **params)["total"] == expected


SEARCHED = ["L'ÉCOLE est fermée", "une école ouverte", "ΟΔΟΣ ΠΑΝΕΠΙΣΤΗΜΙΟΥ", "ǅemal, Straße 5", "plain HAIKU",
            "50%_ off *[x]?", "Ｆｕｌｌ width", "日本語のテキスト"]


@pytest.mark.parametrize("q,expected", [
    ("école", 2), ("ÉCOLE", 2), ("ÉcOlE", 2),
    ("οδος", 1),                     # written with a final sigma, stored in capitals
    ("ΟΔΟΣ ΠΑΝ", 1), ("odos", 0),
    ("ǆemal", 1), ("ǄEMAL", 1),      # a letter with three cases
    ("STRASSE", 0), ("STRAẞE", 1),    # simple folding: ß is not ss, but it is ẞ
    ("haiku", 1), ("ｆＵＬＬ", 1), ("のテキ", 1),
    ("*[x]?", 1), ("50%_", 1), ("[x", 1), ("?", 1), ("%_", 1), ("*", 1),   # wildcards are plain characters
    ("fermé", 1), ("ferme", 0),      # accents matter
])
def test_search_ignores_case_in_every_script(logstore_gateway, q, expected):
    from hookway_logstore import LogFilter
    from hookway_logstore.store import record_row

    gw = logstore_gateway()
    records = [record(request={"messages": [{"role": "user", "content": text}]}) for text in SEARCHED]
    feed(gw, records)
    assert gw.api("/api/logs", q=q)["total"] == expected
    # rows pushed live are filtered the same way
    flt = LogFilter.from_query({"q": q})
    assert sum(flt.match(record_row(r, lambda t: t, 10**6)) for r in records) == expected


def test_case_variants_cover_all_of_unicode():
    """FOLD_ONLY lists every character the case mappings do not lead back to from the rest of its
    case-folding group; this checks it for every code point Python knows."""
    import sys
    from collections import defaultdict

    from hookway_logstore.filters import case_variants

    groups = defaultdict(set)   # the characters of each case fold, for those that change in it
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        folded = ch.casefold()
        if folded != ch and not 0xD800 <= cp < 0xE000:
            groups[folded].update((ch, folded) if len(folded) == 1 else (ch,))
    assert len(groups) > 1000
    for members in groups.values():
        if len(members) > 1:
            for ch in members:
                assert members <= case_variants(ch), (ch, members - case_variants(ch))


def test_time_bounds_accept_unix_seconds_and_iso(seeded):
    now = time.time()
    assert seeded.api("/api/logs", since=str(now - 25))["total"] == 2
    assert seeded.api("/api/logs", until=str(now - 25))["total"] == 2
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))
    assert seeded.api("/api/logs", since=iso)["total"] == 3


def test_paging_and_sorting(seeded):
    page1 = seeded.api("/api/logs", limit="2", offset="0", sort="-latency_ms")
    page2 = seeded.api("/api/logs", limit="2", offset="2", sort="-latency_ms")
    assert page1["total"] == page2["total"] == 4
    latencies = [r["latency_ms"] for r in page1["data"] + page2["data"]]
    assert latencies == [900, 100, 50, 5]
    oldest = seeded.api("/api/logs", sort="time", limit="1")["data"][0]
    assert oldest["status"] == 502
    assert [r["status"] for r in seeded.api("/api/logs")["data"]] == [200, 429, 200, 502]   # newest first
    by_tokens = seeded.api("/api/logs", sort="-total_tokens")["data"]
    assert by_tokens[0]["total_tokens"] == 1500


@pytest.mark.parametrize("params,needle", [
    ({"bogus": "1"}, "unknown parameter 'bogus'"),
    ({"status": "weird"}, "status"),
    ({"range": "soon"}, "range"),
    ({"since": "yesterday"}, "since"),
    ({"min_latency": "fast"}, "min_latency"),
    ({"max_ttft": "soon"}, "max_ttft"),
    ({"sort": "-secret"}, "sort"),
    ({"limit": "0"}, "limit"),
    ({"limit": "x"}, "limit"),
    ({"cache_hit": "maybe"}, "cache_hit"),
])
def test_bad_parameters_are_a_400_naming_them(seeded, params, needle):
    r = HTTP.get(seeded.url + "/api/logs", params=params)
    assert r.status_code == 400
    assert needle in r.json()["error"]["message"]


@pytest.mark.parametrize("exact", [False, True])
def test_stats(seeded, exact):
    """From the summaries (percentiles estimated: the extremes are exact, the median within the
    bound), and from the records with exact=true."""
    near = (lambda v: v) if exact else (lambda v: pytest.approx(v, rel=PERCENTILE_ERROR))
    s = seeded.api("/api/logs/stats", range="24h", buckets="10", exact=str(exact).lower())
    assert s["source"] == ("records" if exact else "summary")
    assert s["count"] == 4 and s["errors"] == 2 and s["error_rate"] == 0.5
    assert (s["input_tokens"], s["output_tokens"], s["total_tokens"]) == (1011, 521, 1532)
    assert s["cost"] == pytest.approx(0.51)
    assert s["cache_hits"] == 1 and s["fallbacks"] == 1
    assert s["latency_ms"]["p50"] == near(50) and s["latency_ms"]["p50"] != pytest.approx(100, rel=0.1)
    assert s["latency_ms"]["p90"] == 900 and s["latency_ms"]["p99"] == 900
    assert s["latency_ms"]["max"] == 900
    assert 10 <= len(s["series"]) <= 11 and sum(b["count"] for b in s["series"]) == 4
    assert sum(b["errors"] for b in s["series"]) == 2
    assert {p["value"]: p["count"] for p in s["by_provider"]} == {"cerebras": 2, "anthropic": 2}
    assert {k["value"] for k in s["by_key"]} == {"alice", "bob", None}
    assert s["dropped"] == 0
    recent = seeded.api("/api/logs/stats", range="1h", provider="cerebras", exact=str(exact).lower())
    assert recent["count"] == 2 and recent["latency_ms"]["p50"] == 5 and recent["latency_ms"]["p99"] == 100
    assert {p["value"]: p["count"] for p in recent["by_key"]} == {"alice": 1, "bob": 1}
    empty = seeded.api("/api/logs/stats", provider="nobody", exact=str(exact).lower())
    assert empty["count"] == 0 and empty["latency_ms"]["p50"] is None and empty["by_provider"] == []


def test_stats_exact_must_be_a_boolean(seeded):
    r = HTTP.get(seeded.url + "/api/logs/stats", params={"exact": "perhaps"})
    assert r.status_code == 400 and "exact" in r.json()["error"]["message"]


def test_stats_default_to_the_last_day(seeded):
    feed(seeded, [record(time=time.time() - 3 * 86400)])
    assert seeded.api("/api/logs")["total"] == 5
    assert seeded.api("/api/logs/stats")["count"] == 4


# --- retention -------------------------------------------------------------------------------------

def test_retention_deletes_old_records(logstore_gateway):
    gw = logstore_gateway({"retention": "1h", "retention_check_seconds": 0.05})
    now = time.time()
    feed(gw, [record(time=now - 7200), record(time=now - 4000), record(time=now - 60)])
    deadline = time.monotonic() + 30
    while gw.api("/api/logs")["total"] != 1:
        assert time.monotonic() < deadline, "old records were not pruned"
        time.sleep(0.05)


def test_a_new_database_gives_back_the_space_of_deleted_records(logstore_gateway):
    gw = logstore_gateway()
    conn = sqlite3.connect(gw.data_dir / "logs.db")
    assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)   # incremental: prune vacuums
    conn.close()


def test_max_rows_keeps_the_newest(logstore_gateway):
    gw = logstore_gateway({"retention": None, "max_rows": 3, "retention_check_seconds": 0.05})
    now = time.time()
    feed(gw, [record(time=now - i, model=f"m{i}") for i in range(6)])
    deadline = time.monotonic() + 30
    while gw.api("/api/logs")["total"] != 3:
        assert time.monotonic() < deadline, "max_rows was not applied"
        time.sleep(0.05)
    assert [r["model"] for r in gw.api("/api/logs")["data"]] == ["m0", "m1", "m2"]


# --- shutdown, drops, load -------------------------------------------------------------------------

class SlowSink:
    """Another log sink that takes its time, so records pile up in the core's queue."""

    delay = 0.2

    @hookimpl
    async def hookway_log(self, records):
        await asyncio.sleep(self.delay)


def _count_rows(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM logs").fetchone()[0]
    finally:
        conn.close()


def test_graceful_shutdown_writes_every_queued_record(logstore_gateway):
    gw = logstore_gateway(plugins={"gate": {}, "slow": {}},
                          extra_plugins={"gate": GatedSink, "slow": SlowSink})
    n = 300
    statuses = asyncio.run(_blast(gw.url, n, 32))
    assert statuses == {200: n}
    assert gw.logstore.store.written == 0         # every record is queued behind the closed gate
    GatedSink.open()                              # ...and behind the slow sink, when the stop begins
    gw.stop()
    assert _count_rows(gw.data_dir / "logs.db") == n


def test_full_queue_drops_and_counts_without_blocking_requests(logstore_gateway):
    with structlog.testing.capture_logs() as logs:
        gw = logstore_gateway(server={"log_queue_size": 5}, plugins={"gate": {}},
                              extra_plugins={"gate": GatedSink})
        n = 200
        # No sink takes a record until the gate opens: the requests are answered all the same.
        statuses = asyncio.run(_blast(gw.url, n, 16))
        assert statuses == {200: n}
        queue = gw.gateway.log_queue
        assert queue.dropped > 0 and gw.logstore.store.written == 0
        GatedSink.open()
        deadline = time.monotonic() + 30
        while gw.logstore.store.written + queue.dropped < n:
            assert time.monotonic() < deadline, (gw.logstore.store.written, queue.dropped)
            time.sleep(0.05)
        assert gw.logstore.store.written + queue.dropped == n
        assert gw.api("/api/logs/stats")["dropped"] == queue.dropped
    warnings = [e for e in logs if e["event"] == "log_records_dropped"]
    assert warnings and warnings[0]["log_level"] == "warning"


async def _blast(url: str, n: int, concurrency: int, stream_every: int = 4) -> dict:
    statuses: dict[int, int] = {}
    numbers = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def worker():
            for i in numbers:
                body = {"model": f"e1/m{i % 7}", "prompt": f"request {i}", "stream": i % stream_every == 0}
                async with session.post(url + "/echo", json=body) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def _load(gw, n: int, concurrency: int) -> None:
    statuses = asyncio.run(_blast(gw.url, n, concurrency))
    assert statuses == {200: n}
    gw.wait_written(n, timeout=30)
    assert gw.gateway.log_queue.dropped == 0
    assert gw.api("/api/logs", limit="1")["total"] == n
    # every request id is there once: count distinct prompts through the content search
    assert gw.api("/api/logs", q=f"request {n - 1}\"")["total"] == 1
    gw.stop()
    conn = sqlite3.connect(gw.data_dir / "logs.db")
    assert conn.execute("SELECT COUNT(DISTINCT id), COUNT(*) FROM logs").fetchone() == (n, n)
    prompts = {orjson.loads(r[0])["prompt"] for r in conn.execute("SELECT request FROM logs")}
    assert prompts == {f"request {i}" for i in range(n)}


def test_2000_concurrent_requests_all_have_a_record(logstore_gateway):
    _load(logstore_gateway(), 2000, 64)


@pytest.mark.slow
def test_20000_concurrent_requests_all_have_a_record(logstore_gateway):
    _load(logstore_gateway(), 20_000, 128)


# --- live stream -----------------------------------------------------------------------------------

def _read_events(url: str, events: list, ready: threading.Event, stop: threading.Event, headers=None):
    with HTTP.stream("GET", url, timeout=10, headers=headers) as r:
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                if event == "hello":
                    ready.set()
                else:
                    events.append((event, orjson.loads(line[5:])))
            if stop.is_set():
                return


def test_stream_pushes_new_records_matching_its_filter(logstore_gateway):
    gw = logstore_gateway()
    events: list = []
    ready, stop = threading.Event(), threading.Event()
    reader = threading.Thread(target=_read_events, daemon=True,
                              args=(gw.url + "/api/logs/stream?provider=e2&status=ok", events, ready, stop))
    reader.start()
    assert ready.wait(30)
    assert gw.post({"model": "e1/m", "prompt": "not me"}).status_code == 200
    assert gw.post({"model": "e2/m", "prompt": "me", "stream": True}).status_code == 200
    assert gw.post({"model": "e2/m", "prompt": "me too"}).status_code == 200
    deadline = time.monotonic() + 30
    while len(events) < 2:
        assert time.monotonic() < deadline, events
        time.sleep(0.02)
    stop.set()
    assert [e for e, _ in events] == ["log", "log"]
    assert [d["provider"] for _, d in events] == ["e2", "e2"]
    assert "request" not in events[0][1] and events[0][1]["status"] == 200


def test_management_api_needs_the_admin_token_when_one_is_set(logstore_gateway):
    token = "t" * 40
    gw = logstore_gateway(server={"admin_token": token})
    for path in ("/api/logs", "/api/logs/stats", "/api/logs/stream", "/api/logs/x"):
        assert HTTP.get(gw.url + path).status_code == 401, path
    assert HTTP.get(gw.url + "/api/logs", headers={"x-admin-token": token}).status_code == 200
    assert HTTP.get(gw.url + "/api/logs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    page = HTTP.get(gw.url + "/logs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "hookway" in page.text and "<script>" in page.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)   # self-contained: no CDN


def test_dashboard_can_be_turned_off(logstore_gateway):
    gw = logstore_gateway({"dashboard": False})
    assert HTTP.get(gw.url + "/logs").status_code == 404
    assert HTTP.get(gw.url + "/api/logs").status_code == 200


def test_settings_are_validated(logstore_gateway):
    from hookway.config import ConfigError
    with pytest.raises(ConfigError) as exc:
        logstore_gateway({"retention": "forever", "colour": "red"})
    text = str(exc.value)
    assert "plugins.logstore.retention" in text and "plugins.logstore.colour: unknown key" in text
