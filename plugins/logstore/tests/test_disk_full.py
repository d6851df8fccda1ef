"""A full disk (or a read-only file) under the request log: requests are served, records wait in
memory within the log queue's bounds, and are all written, in order, once the disk has room."""

from __future__ import annotations

import sqlite3

import httpx
import pytest
import structlog

from hookway.testing import accept_writes, refuse_writes, wait_until

BIG = "x" * 6000   # more than a page: a full disk refuses it (see refuse_writes)


def on_writer(store, fn, *args):
    """Run ``fn(connection, *args)`` on the log store's writer thread, which owns the connection."""
    return store._writer.submit(fn, store._conn, *args).result()


def stored_ids(gw) -> list[str]:
    conn = sqlite3.connect(gw.data_dir / "logs.db")
    try:
        return [r[0] for r in conn.execute("SELECT id FROM logs ORDER BY seq")]
    finally:
        conn.close()


def send(gw, i: int, prompt: str = BIG) -> str:
    """One request, served while the disk is full; its record's id."""
    prompt = f"request {i} {prompt}"
    r = gw.post({"model": "e1/m", "prompt": prompt})
    assert r.status_code == 200
    assert r.json()["text"] == prompt[::-1]   # the echo adapter's answer
    return r.headers["x-request-id"]


def events(logs, prefix: str) -> list[str]:
    return [e["event"] for e in logs if e["event"].startswith(prefix)]


@pytest.mark.parametrize("how", ["full", "read-only"])
def test_records_refused_by_the_disk_are_all_written_in_order_once_it_has_room(logstore_gateway, how):
    with structlog.testing.capture_logs() as logs:
        gw = logstore_gateway()
        store = gw.logstore.store
        store.retry_first = store.retry_max = 0.05
        send(gw, -1, "before")
        gw.wait_written(1)
        on_writer(store, refuse_writes, how)

        ids = [send(gw, i) for i in range(30)]
        wait_until(lambda: len(store.backlog) == 30, "30 records waiting")
        wait_until(lambda: store.outage.failures >= 4, "retries refused by the full disk")
        assert gw.api("/api/logs")["total"] == 1
        stats = gw.api("/api/logs/stats")
        assert (stats["waiting_for_disk"], stats["dropped"]) == (30, 0)
        assert events(logs, "logstore_write") == ["logstore_write_failing"]   # once, not per attempt
        failing = next(e for e in logs if e["event"] == "logstore_write_failing")
        assert failing["log_level"] == "warning"
        assert ("database or disk is full" if how == "full" else "readonly database") in failing["error"]

        on_writer(store, accept_writes)
        wait_until(lambda: not store.backlog and gw.api("/api/logs")["total"] == 31, "every record written")
        assert events(logs, "logstore_write") == ["logstore_write_failing", "logstore_write_recovered"]
        recovered = next(e for e in logs if e["event"] == "logstore_write_recovered")
        assert recovered["dropped"] == 0 and recovered["failed_attempts"] >= 4

        ids.append(send(gw, 30, "after"))   # and the store works as before
        gw.wait_written(32)
    assert stored_ids(gw)[1:] == ids
    assert gw.api("/api/logs/stats")["dropped"] == 0


def test_the_backlog_holds_as_many_records_as_the_log_queue_and_counts_the_rest(logstore_gateway):
    with structlog.testing.capture_logs() as logs:
        gw = logstore_gateway(server={"log_queue_size": 5}, plugins={"prometheus": {}})
        store = gw.logstore.store
        store.retry_first = store.retry_max = 0.05
        on_writer(store, refuse_writes, "full")
        ids = []
        for i in range(8):
            ids.append(send(gw, i))
            wait_until(lambda: len(store.backlog) + store.dropped == i + 1, f"record {i} kept or dropped")
        assert (len(store.backlog), store.dropped) == (5, 3)
        stats = gw.api("/api/logs/stats")
        assert (stats["waiting_for_disk"], stats["dropped"]) == (5, 3)
        metrics = httpx.get(gw.url + "/metrics").text
        assert "hookway_log_records_dropped_total 3.0" in metrics
        assert events(logs, "logstore_backlog_full") == ["logstore_backlog_full"]

        on_writer(store, accept_writes)
        wait_until(lambda: not store.backlog, "the backlog written")
    assert stored_ids(gw) == ids[:5]   # the oldest are kept, the newest dropped (as the log queue does)
    recovered = next(e for e in logs if e["event"] == "logstore_write_recovered")
    assert recovered["dropped"] == 3


def test_the_backlog_is_bounded_by_content_size_like_the_log_queue(logstore_gateway):
    # Each record carries ~12,000 characters of content (the prompt and its echo): one fits in
    # 20,000, a second would not.
    gw = logstore_gateway(server={"log_queue_bytes": 20_000})
    store = gw.logstore.store
    on_writer(store, refuse_writes, "full")
    for i in range(4):
        send(gw, i)
        wait_until(lambda: len(store.backlog) + store.dropped == i + 1, f"record {i} kept or dropped")
    assert (len(store.backlog), store.dropped) == (1, 3)
    assert 10_000 < store.backlog_chars <= 20_000
    assert gw.api("/api/logs/stats")["dropped"] == 3


def test_records_waiting_at_shutdown_are_written_if_the_disk_has_room(logstore_gateway):
    gw = logstore_gateway()
    store = gw.logstore.store
    store.retry_first = store.retry_max = 3600.0   # no retry before the shutdown
    on_writer(store, refuse_writes, "full")
    ids = [send(gw, i) for i in range(3)]
    wait_until(lambda: len(store.backlog) == 3, "3 records waiting")
    on_writer(store, accept_writes)
    gw.stop()
    assert stored_ids(gw) == ids


def test_records_the_disk_still_refuses_at_shutdown_are_logged_as_lost(logstore_gateway):
    with structlog.testing.capture_logs() as logs:
        gw = logstore_gateway()
        store = gw.logstore.store
        on_writer(store, refuse_writes, "full")
        for i in range(3):
            send(gw, i)
        wait_until(lambda: len(store.backlog) == 3, "3 records waiting")
        gw.stop()
    lost = [e for e in logs if e["event"] == "logstore_records_lost"]
    assert len(lost) == 1 and lost[0]["count"] == 3 and lost[0]["log_level"] == "error"
    assert "database or disk is full" in lost[0]["error"]
    assert gw.gateway.log_queue.dropped == 3
    assert stored_ids(gw) == []
