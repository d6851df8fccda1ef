"""A full disk (or a read-only file) under routing.db: a rule change is answered 507 (503) in the
Bifrost error shape and changes nothing, in the store or in the rules requests follow.

The full disk is simulated with ``PRAGMA max_page_count`` (``hookway.testing.refuse_writes``): a
write that needs a new page fails with SQLITE_FULL as on a real full disk, so the rules written
here match a list of model names larger than a page."""

from __future__ import annotations

import httpx
import openai
import pytest

from hookway.testing import Reply, accept_writes, assert_write_refused, provider_block, refuse_writes

API = "/api/governance/routing-rules"
MANY = [f"a-model-with-a-long-name-{i:04d}" for i in range(300)]   # ~9 KB: more than a page


def on_store(gw, fn, *args):
    """Run ``fn(connection, *args)`` under the store's lock (it is used from worker threads)."""
    store = gw.gateway.plugins.instances["routing"].store
    with store._lock:
        return fn(store._db, *args)


def ask(gw, model) -> str:
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=10)
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}]).choices[0].message.content


def test_rule_changes_refused_by_the_store_change_nothing(fake_upstreams, gateway_factory):
    a, b = fake_upstreams(), fake_upstreams()
    a.responder = lambda rec: Reply(text="from-a")
    b.responder = lambda rec: Reply(text="from-b")
    config = {"plugins": {"openai": {}, "routing": {"rules": [
                  {"name": "sonnet", "match": {"model": "sonnet-model"}, "targets": ["a/m"]}]}},
              "providers": {"a": provider_block(a), "b": provider_block(b)}}
    gw = gateway_factory(config)
    http = httpx.Client(base_url=gw.url, timeout=10)
    before = http.get(API).json()
    on_store(gw, refuse_writes, "full")

    assert_write_refused(http.post(API, json={"name": "many", "match": {"model": ["opus-model", *MANY]}, "targets": ["b/m"]}),
            507, "database or disk is full")
    assert_write_refused(http.put(f"{API}/config:sonnet", json={"match": {"model": ["sonnet-model", *MANY]}, "targets": ["b/m"]}),
            507, "database or disk is full")
    on_store(gw, accept_writes)
    on_store(gw, refuse_writes, "read-only")
    assert_write_refused(http.delete(f"{API}/config:sonnet"), 503, "readonly database")

    assert http.get(API).json() == before
    assert ask(gw, "sonnet-model") == "from-a"          # the rule requests follow is the old one
    with pytest.raises(openai.NotFoundError):            # no rule was added for it
        ask(gw, "opus-model")

    on_store(gw, accept_writes)
    r = http.post(API, json={"name": "many", "match": {"model": ["opus-model", *MANY]}, "targets": ["b/m"]})
    assert r.status_code == 200, r.text
    assert ask(gw, "opus-model") == "from-b"
    after = http.get(API).json()
    gw.stop()

    gw = gateway_factory(config)                        # the store holds what was running
    assert httpx.get(gw.url + API).json() == after
