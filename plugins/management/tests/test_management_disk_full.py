"""A full disk (or a read-only file) under the management store: a provider change is answered
507 (503) in the Bifrost error shape and changes nothing, in the store or in the running gateway.

The full disk is simulated with ``PRAGMA max_page_count`` (``hookway.testing.refuse_writes``): a
write that needs a new page fails with SQLITE_FULL as on a real full disk, so the blocks written
here carry a model list larger than a page."""

from __future__ import annotations

import httpx
import openai

from hookway.testing import accept_writes, assert_write_refused, refuse_writes

MODELS = [f"model-with-a-long-name-{i:04d}" for i in range(300)]   # ~9 KB: more than a page


def config(fake_upstream, tmp_path):
    return {"server": {"data_dir": str(tmp_path / "data")},
            "plugins": {"openai": {}, "management": {"sync_interval_seconds": 0.05}},
            "providers": {"local": {"type": "openai", "keys": [{"name": "local-key", "value": "sk-local-0123456789"}],
                                    "network_config": {"base_url": fake_upstream.url}}}}


def on_store(gw, fn, *args):
    """Run ``fn(connection, *args)`` on the management thread, which owns the store's connection."""
    plugin = gw.gateway.plugins.instances["management"]
    return plugin.executor.submit(fn, plugin.store.db, *args).result()


def chat(gw, model):
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=10)
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def new_provider(fake_upstream, name: str) -> dict:
    return {"provider": name, "type": "openai", "models": MODELS,
            "keys": [{"name": f"{name}-key", "value": "sk-new-0123456789"}],
            "network_config": {"base_url": fake_upstream.url}}


def test_provider_changes_refused_by_the_store_change_nothing(fake_upstream, start_gateway, tmp_path):
    cfg = config(fake_upstream, tmp_path)
    gw = start_gateway(cfg)
    http = httpx.Client(base_url=gw.url, timeout=10)
    before = http.get("/api/providers/local").json()
    on_store(gw, refuse_writes, "full")

    assert_write_refused(http.post("/api/providers", json=new_provider(fake_upstream, "big")), 507, "database or disk is full")
    assert_write_refused(http.put("/api/providers/local", json={"models": MODELS}), 507, "database or disk is full")
    on_store(gw, accept_writes)
    on_store(gw, refuse_writes, "read-only")
    assert_write_refused(http.delete("/api/providers/local"), 503, "readonly database")
    assert_write_refused(http.delete("/api/providers/local/keys/local-key"), 503, "readonly database")

    assert [p["name"] for p in http.get("/api/providers").json()["providers"]] == ["local"]
    assert http.get("/api/providers/local").json() == before
    assert chat(gw, "local/m").choices[0].message.content == "hello"          # still served
    assert sorted(gw.gateway.adapters) == ["local"]

    on_store(gw, accept_writes)
    assert http.post("/api/providers", json=new_provider(fake_upstream, "big")).status_code == 200
    assert sorted(gw.gateway.adapters) == ["big", "local"]
    assert chat(gw, "big/m").choices[0].message.content == "hello"
    gw.stop()

    gw = start_gateway(cfg)                    # the store holds what the running gateway had
    http = httpx.Client(base_url=gw.url, timeout=10)
    assert [p["name"] for p in http.get("/api/providers").json()["providers"]] == ["big", "local"]
    assert http.get("/api/providers/local").json() == before
