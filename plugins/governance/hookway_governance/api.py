"""The Bifrost-compatible governance API, wrapped in :func:`hookway.admin.admin_only`.

``/api/governance/virtual-keys``, ``/teams``, ``/customers``: ``GET`` (list), ``POST`` (create),
``GET|PUT|DELETE /{id}``; ``POST /api/governance/virtual-keys/{id}/rotate``. Answers use
Bifrost's envelopes (``{"virtual_keys": [...], "count": n}``, ``{"message": ..., "virtual_key":
{...}}``). A key's value appears only in the answer that created (or rotated) it; lists show
``value_hint``. PUT is a partial update: absent fields are kept, ``null`` clears.
"""

from __future__ import annotations

import dataclasses

from aiohttp import web

from hookway import storage
from hookway.admin import admin_error, admin_json, admin_only, json_object_body

from .model import Invalid, PARSERS, entity_counters, hash_value, iso, new_key_value, value_hint

ROUTES = {  # path segment -> (kind, singular, plural, title)
    "virtual-keys": ("virtual_key", "virtual_key", "virtual_keys", "Virtual key"),
    "teams": ("team", "team", "teams", "Team"),
    "customers": ("customer", "customer", "customers", "Customer"),
}


# --- views ---------------------------------------------------------------------------------------

def budget_view(engine, b) -> dict:
    usage, start = engine.usage(b.id)
    return {"id": b.id, "max_limit": b.max_limit, "reset_duration": b.reset_duration,
            "current_usage": round(usage, 10), "last_reset": iso(start)}


def rate_limit_view(engine, rl) -> dict | None:
    if rl is None:
        return None
    out = rl.doc()
    for prefix, cid, limit in (("request", rl.request_counter, rl.request_max_limit),
                               ("token", rl.token_counter, rl.token_max_limit)):
        usage, start = engine.usage(cid) if limit is not None else (0, None)
        out[f"{prefix}_current_usage"] = int(usage)
        out[f"{prefix}_last_reset"] = iso(start)
    return out


def _budgets(engine, owner) -> dict:
    budgets = [budget_view(engine, b) for b in owner.budgets]
    return {"budget": budgets[0] if budgets else None, "budgets": budgets,
            "rate_limit": rate_limit_view(engine, owner.rate_limit)}


def view(engine, entity) -> dict:
    d = entity.doc()
    d.update(_budgets(engine, entity))
    d["created_at"], d["updated_at"] = iso(entity.created_at), iso(entity.updated_at)
    if entity.kind == "virtual_key":
        d.pop("value_hash", None)
        d["expires_at"] = iso(entity.expires_at)
        d["provider_configs"] = [{"provider": r.provider, "allowed_models": r.allowed_models or ["*"],
                                  "weight": r.weight, **_budgets(engine, r)} for r in entity.provider_configs]
        team = engine.teams.get(entity.team_id) if entity.team_id else None
        d["team"] = {"id": team.id, "name": team.name} if team else None
        customer = engine.customers.get(entity.customer_id) if entity.customer_id else None
        d["customer"] = {"id": customer.id, "name": customer.name} if customer else None
    elif entity.kind == "team":
        d["virtual_keys"] = [k.id for k in engine.keys.values() if k.team_id == entity.id]
        customer = engine.customers.get(entity.customer_id) if entity.customer_id else None
        d["customer"] = {"id": customer.id, "name": customer.name} if customer else None
    else:
        d["teams"] = [t.id for t in engine.teams.values() if t.customer_id == entity.id]
        d["virtual_keys"] = [k.id for k in engine.keys.values() if k.customer_id == entity.id]
    return d


# --- handlers ------------------------------------------------------------------------------------

def register(router, plugin) -> None:
    engine = plugin.engine

    def check_refs(entity) -> list[str]:
        problems = []
        team_id = getattr(entity, "team_id", None)
        if team_id and team_id not in engine.teams:
            problems.append(f"team_id: no team with id {team_id!r}")
        customer_id = getattr(entity, "customer_id", None)
        if customer_id and customer_id not in engine.customers:
            problems.append(f"customer_id: no customer with id {customer_id!r}")
        bundle = getattr(entity, "bundle", None)
        if bundle and bundle not in plugin.bundles:
            problems.append(f"bundle: no bundle named {bundle!r} under bundles: in the config "
                            f"(declared: {', '.join(sorted(plugin.bundles)) or 'none'})")
        if entity.kind == "virtual_key":
            for k in engine.keys.values():
                if k.name == entity.name and k.id != entity.id:
                    problems.append(f"name: another virtual key is already named {entity.name!r}")
                    break
        return problems

    async def save(entities: list, now: float, delete: tuple | None = None) -> None:
        """Persist first, in one transaction (the value of a new key is shown once, so it must not
        be lost), then publish in memory. When the store refuses the write (a full disk), nothing
        is changed, in the store or in memory, and the API answers 507 (or 503)."""
        puts = [(e.kind, e.doc(), getattr(e, "value_hash", None),
                 [(cid, now) for cid, _ in entity_counters(e) if cid not in engine.counters], None)
                for e in entities]
        try:
            versions = await plugin.run(plugin.store.change, puts, delete)
        except Exception as exc:
            if storage.unwritable(exc):
                raise storage.write_refused(exc, plugin.db_path) from exc
            raise
        plugin.wrote(versions)
        for entity in entities:
            engine.put(entity, now)

    def make(segment: str):
        kind, singular, plural, title = ROUTES[segment]
        parse = PARSERS[kind]

        async def list_all(request: web.Request) -> web.Response:
            items = list(engine.table(kind).values())
            for field in ("team_id", "customer_id"):
                wanted = request.query.get(field)
                if wanted:
                    items = [e for e in items if getattr(e, field, None) == wanted]
            items.sort(key=lambda e: e.created_at)
            views = [view(engine, e) for e in items]
            return admin_json({plural: views, "count": len(views), "total_count": len(views),
                          "limit": len(views), "offset": 0})

        async def create(request: web.Request) -> web.Response:
            try:
                body = await json_object_body(request)
                async with plugin.write_lock:
                    now = engine.clock()
                    value = None
                    if kind == "virtual_key":
                        value = body.get("value") or new_key_value()
                        if not isinstance(value, str) or len(value) < 20:
                            raise Invalid("value: when given (to import an existing key), a string of at "
                                          "least 20 characters")
                        if hash_value(value) in engine.by_hash:
                            return admin_error(409, "a virtual key with this value already exists")
                    entity = parse(body, now=now, path=singular, **({"value": value} if value else {}))
                    problems = check_refs(entity)
                    if problems:
                        raise Invalid(problems)
                    await save([entity], now)
            except Invalid as exc:
                return admin_error(400, "; ".join(exc.problems), exc.problems)
            out = view(engine, entity)
            if value is not None:
                out["value"] = value      # shown once
            return admin_json({"message": f"{title} created successfully", singular: out})

        async def get_one(request: web.Request) -> web.Response:
            entity = engine.table(kind).get(request.match_info["id"])
            if entity is None:
                return admin_error(404, f"{title} not found")
            return admin_json({singular: view(engine, entity)})

        async def update(request: web.Request) -> web.Response:
            try:
                body = await json_object_body(request)
                async with plugin.write_lock:
                    existing = engine.table(kind).get(request.match_info["id"])
                    if existing is None:
                        return admin_error(404, f"{title} not found")
                    now = engine.clock()
                    entity = parse(body, existing=existing, now=now, path=singular)
                    problems = check_refs(entity)
                    if problems:
                        raise Invalid(problems)
                    await save([entity], now)
            except Invalid as exc:
                return admin_error(400, "; ".join(exc.problems), exc.problems)
            return admin_json({"message": f"{title} updated successfully", singular: view(engine, entity)})

        async def delete(request: web.Request) -> web.Response:
            async with plugin.write_lock:
                entity = engine.table(kind).get(request.match_info["id"])
                if entity is None:
                    return admin_error(404, f"{title} not found")
                now = engine.clock()
                # Detach what pointed at it (keys of a deleted team keep working, without the team).
                detached = []
                if kind == "team":
                    detached = [_replace(k, team_id=None, updated_at=now) for k in engine.keys.values()
                                if k.team_id == entity.id]
                elif kind == "customer":
                    detached = [_replace(t, customer_id=None, updated_at=now) for t in engine.teams.values()
                                if t.customer_id == entity.id]
                    detached += [_replace(k, customer_id=None, updated_at=now) for k in engine.keys.values()
                                 if k.customer_id == entity.id]
                counters = [cid for cid, _ in entity_counters(entity)]
                await save(detached, now, delete=(kind, entity.id, counters))
                engine.remove(kind, entity.id)
                for cid in counters:
                    engine.counters.pop(cid, None)
            return admin_json({"message": f"{title} deleted successfully"})

        base = f"/api/governance/{segment}"
        router.add_get(base, admin_only(list_all))
        router.add_post(base, admin_only(create))
        router.add_get(base + "/{id}", admin_only(get_one))
        router.add_put(base + "/{id}", admin_only(update))
        router.add_delete(base + "/{id}", admin_only(delete))

    for segment in ROUTES:
        make(segment)

    async def rotate(request: web.Request) -> web.Response:
        async with plugin.write_lock:
            key = engine.keys.get(request.match_info["id"])
            if key is None:
                return admin_error(404, "Virtual key not found")
            value = new_key_value()
            now = engine.clock()
            rotated = _replace(key, value_hash=hash_value(value), value_hint=value_hint(value), updated_at=now)
            await save([rotated], now)
        out = view(engine, rotated)
        out["value"] = value
        return admin_json({"message": "Virtual key rotated successfully", "virtual_key": out})

    router.add_post("/api/governance/virtual-keys/{id}/rotate", admin_only(rotate))


def _replace(entity, **changes):
    return dataclasses.replace(entity, **changes)
