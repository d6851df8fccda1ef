"""A full disk (or a read-only file) under the governance store: API writes answer 507 (503) and
change nothing, in the store or in memory; usage counted meanwhile is enforced from memory and
written once the store accepts it.

The full disk is simulated with ``PRAGMA max_page_count`` (``hookway.testing.refuse_writes``): a
write that needs a new page fails with SQLITE_FULL, as on a real full disk; the documents below
are made larger than a page so that they need one. Counter updates rewrite rows in place and need
no new page, so their tests use the read-only simulation, where every write fails."""

from __future__ import annotations

import logging
import sqlite3

import openai
import pytest

from hookway.testing import accept_writes, assert_write_refused, refuse_writes

from governance_testing import COST, Admin, chat, client, gateway_config, plugin_of, wait_for

LONG = "d" * 6000   # a description larger than a page


def on_store(gw, fn, *args):
    """Run ``fn(connection, *args)`` on the governance thread, which owns the store's connection."""
    plugin = plugin_of(gw)
    return plugin.executor.submit(fn, plugin.store.db, *args).result()


def test_api_writes_refused_by_a_full_disk_change_nothing(fake_upstream, start_gateway, tmp_path):
    config = gateway_config(fake_upstream, tmp_path)
    gw = start_gateway(config)
    admin = Admin(gw.url)
    kid, value = admin.key(name="before", description="short")
    on_store(gw, refuse_writes, "full")

    r = admin.post("/api/governance/virtual-keys", {"name": "during", "description": LONG})
    assert_write_refused(r, 507, "database or disk is full")
    assert "value" not in r.text                                      # no key value shown for nothing
    r = admin.put(f"/api/governance/virtual-keys/{kid}", {"description": LONG, "is_active": False})
    assert_write_refused(r, 507, "database or disk is full")
    names = [k["name"] for k in admin.get("/api/governance/virtual-keys").json()["virtual_keys"]]
    assert names == ["before"]
    vk = admin.get(f"/api/governance/virtual-keys/{kid}").json()["virtual_key"]
    assert (vk["description"], vk["is_active"]) == ("short", True)
    chat(client(gw, value))                                           # requests are served as before

    on_store(gw, accept_writes)
    kid2, value2 = admin.key(name="after", description=LONG)
    chat(client(gw, value2))
    gw.stop()

    gw = start_gateway(config)                                        # the store holds what memory held
    admin = Admin(gw.url)
    keys = {k["name"]: k for k in admin.get("/api/governance/virtual-keys").json()["virtual_keys"]}
    assert sorted(keys) == ["after", "before"]
    assert keys["before"]["description"] == "short" and keys["before"]["is_active"] is True


def test_a_delete_or_rotate_refused_by_a_read_only_store_changes_nothing(fake_upstream, start_gateway, tmp_path):
    config = gateway_config(fake_upstream, tmp_path)
    gw = start_gateway(config)
    admin = Admin(gw.url)
    team = admin.team(name="t")
    keys = [admin.key(name=f"k{i}", team_id=team) for i in range(3)]
    on_store(gw, refuse_writes, "read-only")

    # Deleting a team detaches its keys and deletes the team: all of it or nothing.
    assert_write_refused(admin.delete(f"/api/governance/teams/{team}"), 503, "readonly database")
    assert_write_refused(admin.post(f"/api/governance/virtual-keys/{keys[0][0]}/rotate", {}), 503, "readonly database")
    assert admin.get(f"/api/governance/teams/{team}").status_code == 200
    assert sorted(admin.get(f"/api/governance/teams/{team}").json()["team"]["virtual_keys"]) == \
        sorted(kid for kid, _ in keys)
    chat(client(gw, keys[0][1]))                                      # the old value still works
    gw.stop()

    gw = start_gateway(config)
    admin = Admin(gw.url)
    members = admin.get(f"/api/governance/teams/{team}").json()["team"]["virtual_keys"]
    assert sorted(members) == sorted(kid for kid, _ in keys)
    chat(client(gw, keys[0][1]))


@pytest.mark.parametrize("multi_process", [False, True])
def test_usage_counted_while_the_store_refuses_writes_is_enforced_then_written(
        fake_upstream, start_gateway, tmp_path, caplog, multi_process):
    caplog.set_level(logging.WARNING, logger="hookway.governance")
    config = gateway_config(fake_upstream, tmp_path, governance={"multi_process": multi_process})
    gw = start_gateway(config)
    admin = Admin(gw.url)
    kid, value = admin.key(budget={"max_limit": 10, "reset_duration": "1d"},
                           rate_limit={"request_max_limit": 3, "request_reset_duration": "1h"})
    plugin = plugin_of(gw)
    on_store(gw, refuse_writes, "read-only")

    c = client(gw, value)
    for _ in range(3):
        chat(c)
    with pytest.raises(openai.RateLimitError):                        # enforced from memory
        chat(c)
    assert wait_for(lambda: plugin.sync_outage.failures >= 4)         # several syncs refused...
    db = sqlite3.connect(tmp_path / "data" / "governance.db")
    stored = dict(db.execute("SELECT id, usage FROM counters WHERE id LIKE 'vk:%'").fetchall())
    assert sum(stored.values()) == 0                                  # ...nothing reached the store
    warnings = [r.getMessage() for r in caplog.records if "refuses writes" in r.getMessage()
                or "cannot be written" in r.getMessage()]
    assert len(warnings) == (2 if multi_process else 1), warnings    # once each, not per attempt
    assert all("readonly database" in w for w in warnings)

    on_store(gw, accept_writes)
    assert wait_for(lambda: not plugin.sync_outage.active and not plugin.engine.pending)
    assert any("written to" in r.getMessage() and "again" in r.getMessage() for r in caplog.records)
    stored = dict(db.execute("SELECT id, usage FROM counters WHERE id LIKE 'vk:%'").fetchall())
    assert stored[f"vk:{kid}:rate_limit:requests:1h"] == 3
    assert stored[f"vk:{kid}:budget:1d"] == pytest.approx(3 * COST)
    gw.stop()

    gw = start_gateway(config)
    vk = Admin(gw.url).get(f"/api/governance/virtual-keys/{kid}").json()["virtual_key"]
    assert vk["rate_limit"]["request_current_usage"] == 3
    assert vk["budget"]["current_usage"] == pytest.approx(3 * COST)
    with pytest.raises(openai.RateLimitError):
        chat(client(gw, value))


def test_a_change_of_several_entities_is_stored_whole_or_not_at_all(tmp_path):
    from hookway_governance.store import Store

    store = Store(str(tmp_path / "governance.db"))
    store.put("team", {"id": "t", "name": "t"})
    refuse_writes(store.db, "full")
    small = ("virtual_key", {"id": "small", "name": "small"}, "h1", [], None)    # fits in the page there
    large = ("virtual_key", {"id": "large", "name": "large", "description": LONG}, "h2", [], None)
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        store.change([small, large], delete=("team", "t", []))
    assert not store.db.in_transaction
    accept_writes(store.db)
    entities, _, version, _ = store.load()
    assert [doc["id"] for _, doc in entities] == ["t"] and version == 1
    store.change([small], delete=("team", "t", []))                  # and the store works as before
    assert [doc["id"] for _, doc in store.load()[0]] == ["small"]
    store.close()
