"""``hookway keys create|list|revoke`` — virtual keys in the same SQLite store as the gateway.

A running gateway picks the change up within ``sync_interval_seconds`` (the store's config version
is bumped), so keys can be managed without the HTTP API. The store is found from the config file:
``server.data_dir`` (relative to the file) and ``plugins.governance.database``.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
import time

from hookway.config import ConfigError, read_file

from . import periods
from .model import Invalid, entity_counters, from_doc, new_key_value, parse_virtual_key
from .store import Store


def store_path(config_path: str) -> str:
    raw = read_file(config_path)       # env.NAME references are not resolved: not needed here
    server = raw.get("server") or {}
    data_dir = server.get("data_dir") or "data"
    if not os.path.isabs(data_dir):
        data_dir = os.path.join(os.path.dirname(os.path.abspath(config_path)), data_dir)
    settings = (raw.get("plugins") or {}).get("governance") or {}
    database = settings.get("database") or "governance.db"
    return database if os.path.isabs(database) else os.path.join(data_dir, database)


_LIMIT = re.compile(r"^(\d+)/(\w+)$")


def _limit(text: str, what: str) -> tuple[int, str]:
    m = _LIMIT.match(text or "")
    if not m or not periods.is_valid(m.group(2)):
        raise Invalid(f"--{what}: expected N/PERIOD, e.g. 100/1m or 200000/1h (periods: 30s 5m 1h 1d 1w 1M 1Y)")
    return int(m.group(1)), m.group(2)


def _provider(text: str) -> dict:
    """``cerebras`` or ``cerebras:llama-3.3-70b,gpt-oss-*`` or with a weight ``cerebras@0.7``."""
    weight = 1.0
    if "@" in text:
        text, w = text.rsplit("@", 1)
        try:
            weight = float(w)
        except ValueError:
            raise Invalid(f"--provider: weight {w!r} is not a number")
    name, _, models = text.partition(":")
    return {"provider": name, "allowed_models": [m for m in models.split(",") if m] or ["*"], "weight": weight}


def cmd_create(args) -> int:
    store = Store(store_path(args.config))
    try:
        body: dict = {"name": args.name, "is_active": not args.inactive}
        if args.description:
            body["description"] = args.description
        if args.team:
            body["team_id"] = args.team
        if args.customer:
            body["customer_id"] = args.customer
        if args.bundle:
            body["bundle"] = args.bundle
        if args.expires:
            body["expires_at"] = args.expires
        if args.provider:
            body["provider_configs"] = [_provider(p) for p in args.provider]
        if args.budget is not None:
            body["budget"] = {"max_limit": args.budget, "reset_duration": args.budget_reset}
        rate = {}
        if args.requests:
            rate["request_max_limit"], rate["request_reset_duration"] = _limit(args.requests, "requests")
        if args.tokens:
            rate["token_max_limit"], rate["token_reset_duration"] = _limit(args.tokens, "tokens")
        if rate:
            body["rate_limit"] = rate
        entities, _, _, _ = store.load()
        ids = {(kind, doc["id"]) for kind, doc in entities}
        problems = []
        if args.team and ("team", args.team) not in ids:
            problems.append(f"--team: no team with id {args.team!r}")
        if args.customer and ("customer", args.customer) not in ids:
            problems.append(f"--customer: no customer with id {args.customer!r}")
        if any(kind == "virtual_key" and doc["name"] == args.name for kind, doc in entities):
            problems.append(f"--name: another virtual key is already named {args.name!r}")
        if problems:
            raise Invalid(problems)
        value = new_key_value()
        now = time.time()
        key = parse_virtual_key(body, value=value, now=now, path="key", source="cli")
        store.put("virtual_key", key.doc(), key.value_hash, [(cid, now) for cid, _ in entity_counters(key)])
    except Invalid as exc:
        for problem in exc.problems:
            print(f"hookway keys create: {problem}", file=sys.stderr)
        return 2
    finally:
        store.close()
    if args.json:
        print(json.dumps({"id": key.id, "name": key.name, "value": value}))
    else:
        print(f"created virtual key {key.name!r} (id {key.id})", file=sys.stderr)
        print("its value is shown only this once:", file=sys.stderr)
        print(value)
    return 0


def cmd_list(args) -> int:
    path = store_path(args.config)
    if not os.path.exists(path):
        print("[]" if args.json else f"no virtual keys (no store at {path} yet)")
        return 0
    store = Store(path)
    try:
        entities, counters, _, _ = store.load()
    finally:
        store.close()
    usage = {cid: (u, start) for cid, u, start in counters}
    now = time.time()
    rows = []
    for kind, doc in entities:
        if kind != "virtual_key":
            continue
        key = from_doc(kind, doc)
        spend = []
        for b in key.budgets:
            u, start = usage.get(b.id, (0.0, now))
            if b.period is not None and now >= b.period.window(start, start)[1]:
                u = 0.0
            spend.append({"used": round(u, 6), "max_limit": b.max_limit, "reset_duration": b.reset_duration})
        state = "active" if key.is_active else "inactive"
        if key.expires_at is not None and now >= key.expires_at:
            state = "expired"
        rows.append({"id": key.id, "name": key.name, "value_hint": key.value_hint, "state": state,
                     "team_id": key.team_id, "customer_id": key.customer_id, "source": key.source,
                     "providers": [r.provider for r in key.provider_configs] or ["*"], "budgets": spend})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no virtual keys")
        return 0
    print(f"{'NAME':24} {'ID':36} {'KEY':18} {'STATE':8} {'TEAM':14} SPEND")
    for r in rows:
        spend = ", ".join(f"${b['used']:.4f}/${b['max_limit']:.2f} per {b['reset_duration'] or 'lifetime'}"
                          for b in r["budgets"]) or "-"
        print(f"{r['name'][:24]:24} {r['id'][:36]:36} {r['value_hint']:18} {r['state']:8} "
              f"{(r['team_id'] or '-')[:14]:14} {spend}")
    return 0


def cmd_revoke(args) -> int:
    path = store_path(args.config)
    if not os.path.exists(path):
        print(f"hookway keys revoke: no store at {path}", file=sys.stderr)
        return 1
    store = Store(path)
    try:
        doc = store.find_key(args.key)
        if doc is None:
            print(f"hookway keys revoke: no virtual key with id or name {args.key!r}", file=sys.stderr)
            return 1
        key = from_doc("virtual_key", doc)
        if args.delete:
            store.delete("virtual_key", key.id, [cid for cid, _ in entity_counters(key)])
            print(f"deleted virtual key {key.name!r} (id {key.id})")
        else:
            doc = dict(doc, is_active=False, updated_at=time.time())
            store.put("virtual_key", doc, key.value_hash)
            print(f"revoked virtual key {key.name!r} (id {key.id}); it is refused from now on")
    finally:
        store.close()
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("keys", help="create, list and revoke governance virtual keys")
    sub = p.add_subparsers(dest="keys_command", required=True)

    c = sub.add_parser("create", help="create a virtual key and print its value (shown once)")
    c.add_argument("--config", default="gateway.yaml")
    c.add_argument("--name", required=True)
    c.add_argument("--description")
    c.add_argument("--team", help="team id")
    c.add_argument("--customer", help="customer id (a key belongs to a team or a customer)")
    c.add_argument("--provider", action="append",
                   help="allowed provider, repeatable: NAME, NAME:MODEL,GLOB..., NAME@WEIGHT (default: all)")
    c.add_argument("--budget", type=float, help="budget in USD")
    c.add_argument("--budget-reset", default=None, help="budget period: 1h 1d 1w 1M 1Y ... (default: never)")
    c.add_argument("--requests", help="request limit N/PERIOD, e.g. 100/1m")
    c.add_argument("--tokens", help="token limit N/PERIOD, e.g. 200000/1h")
    c.add_argument("--expires", help="expiry, ISO 8601 (2026-12-31 or 2026-12-31T18:00:00Z)")
    c.add_argument("--bundle", help="plugin bundle name (bundles: in the config)")
    c.add_argument("--inactive", action="store_true", help="create it disabled")
    c.add_argument("--json", action="store_true", help="print {id, name, value} as JSON")
    c.set_defaults(func=_guard(cmd_create))

    ls = sub.add_parser("list", help="list virtual keys (values are never shown)")
    ls.add_argument("--config", default="gateway.yaml")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_guard(cmd_list))

    r = sub.add_parser("revoke", help="deactivate a virtual key (or --delete it)")
    r.add_argument("key", help="id or name")
    r.add_argument("--config", default="gateway.yaml")
    r.add_argument("--delete", action="store_true", help="delete it instead of deactivating it")
    r.set_defaults(func=_guard(cmd_revoke))


def _guard(fn):
    def run(args) -> int:
        try:
            return fn(args)
        except ConfigError as exc:
            print(f"hookway keys: {exc}", file=sys.stderr)
            return 2
        except sqlite3.OperationalError as exc:   # a full disk, a read-only file
            print(f"hookway keys: the governance store failed ({exc}); nothing was changed", file=sys.stderr)
            return 1
    return run
