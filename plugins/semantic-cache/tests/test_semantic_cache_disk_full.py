"""The SQLite store on a full disk (or a read-only file): answers are served as usual, the entries
that cannot be stored are skipped and counted, the failure is logged once, and storing works
again as soon as the disk has room.

The full disk is simulated with ``PRAGMA max_page_count`` (``hookway.testing.refuse_writes``): a
write that needs a new page fails with SQLITE_FULL as on a real full disk, so the answers here are
larger than a page."""

from __future__ import annotations


import httpx
import openai
import pytest
import structlog

from hookway.testing import Reply, accept_writes, refuse_writes, wait_until

LONG_ANSWER = "Paris is the capital of France. " * 250   # ~8 KB: more than a page


def on_store(gw, fn, *args):
    """Run ``fn(connection, *args)`` on the store's thread, which owns its connection."""
    store = gw.gateway.plugins.instances["semantic-cache"].store
    return store.pool.submit(fn, store.db, *args).result()


def ask(gw, question: str):
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=10)
    raw = c.chat.completions.with_raw_response.create(
        model="up/m", messages=[{"role": "user", "content": question}], extra_headers={"x-bf-cache-key": "k"})
    return raw.headers["x-hookway-cache"], raw.parse().choices[0].message.content


def cache_stats(gw) -> dict:
    return httpx.get(gw.url + "/api/cache").json()


@pytest.mark.parametrize("how", ["full", "read-only"])
def test_answers_the_store_refuses_are_served_and_skipped(cache_gateway, fake_upstream, how):
    with structlog.testing.capture_logs() as logs:
        gw = cache_gateway(store={"type": "sqlite"}, embeddings=None)
        fake_upstream.responder = lambda rec: Reply(text=LONG_ANSWER)
        on_store(gw, refuse_writes, how)
        for i in range(3):
            assert ask(gw, f"question {i}") == ("miss", LONG_ANSWER)
        wait_until(lambda: cache_stats(gw)["store_errors"] == 3, "three failed stores")
        assert ask(gw, "question 0") == ("miss", LONG_ANSWER)        # not stored: asked upstream again
        wait_until(lambda: cache_stats(gw)["store_errors"] == 4, "a fourth failed store")
        stats = cache_stats(gw)
        assert (stats["stored"], stats["entries"]) == (0, 0)
        failing = [e for e in logs if e["event"] == "semantic_cache_failing"]
        assert len(failing) == 1 and failing[0]["what"] == "store"  # once, not per request
        reason = "database or disk is full" if how == "full" else "readonly database"
        assert reason in failing[0]["error"]

        on_store(gw, accept_writes)
        assert ask(gw, "question 0") == ("miss", LONG_ANSWER)
        wait_until(lambda: cache_stats(gw)["stored"] == 1, "the answer stored")
        assert ask(gw, "question 0") == ("hit", LONG_ANSWER)
    recovered = [e for e in logs if e["event"] == "semantic_cache_recovered"]
    assert len(recovered) == 1 and recovered[0]["what"] == "store" and recovered[0]["failures"] == 4
    assert len([r for r in fake_upstream.requests if r.path.endswith("/chat/completions")]) == 5


def test_clearing_a_read_only_store_is_a_503(cache_gateway, fake_upstream):
    gw = cache_gateway(store={"type": "sqlite"}, embeddings=None)
    fake_upstream.responder = lambda rec: Reply(text="Paris.")
    ask(gw, "question")
    wait_until(lambda: cache_stats(gw)["stored"] == 1, "the answer stored")
    on_store(gw, refuse_writes, "read-only")
    r = httpx.delete(gw.url + "/api/cache")
    assert r.status_code == 503
    body = r.json()
    assert body["status_code"] == 503 and "the store could not be written" in body["error"]["message"]
    assert "readonly database" in body["error"]["message"]
    assert cache_stats(gw)["entries"] == 1
    assert ask(gw, "question") == ("hit", "Paris.")
