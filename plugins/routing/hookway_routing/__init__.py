"""hookway-routing: routing rules and model aliases.

Rules come from YAML (``plugins: {routing: {rules: [...]}}``) and from the Bifrost-shaped
management API at ``/api/governance/routing-rules`` (also ``/api/routing/rules``), stored in
SQLite under ``server.data_dir``. Each request is matched once against the compiled rules (scope
order key -> team -> customer -> global, then priority, first match wins); the matched rule's
target is drawn by weight and its fallbacks follow it in ``ctx.targets``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid

from aiohttp import web

from hookway import hookimpl, storage
from hookway.admin import admin_error, admin_json, admin_only, json_object_body
from hookway.config import ConfigError
from hookway.errors import GatewayError
from hookway.providers import Target

from .cel import CELError, compile_expression
from .rules import REQUEST_TYPES, CompiledRule, RuleError, RuleSet, normalize
from .store import RuleStore, yaml_hash

__all__ = ["RoutingPlugin", "RuleSet", "CompiledRule", "normalize", "RuleError", "compile_expression",
           "CELError"]

log = logging.getLogger("hookway.routing")

API_PATHS = ("/api/governance/routing-rules", "/api/routing/rules")

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "rules": {"type": "array", "items": {"type": "object"}},
        "api": {"type": "boolean"},
        "reload_interval_seconds": {"type": "number", "exclusiveMinimum": 0},
    },
}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RoutingPlugin:
    def __init__(self) -> None:
        self.gateway = None
        self.is_global = True
        self.api = True
        self.reload_interval = 1.0
        self.config_rules: list[tuple[dict, str]] = []
        self.rules: list[dict] = []
        self.ruleset = RuleSet([])
        self.store: RuleStore | None = None
        self._version = -1
        self._write_lock: asyncio.Lock | None = None
        self._resolved: dict = {}
        self._adapters_seen = None

    # --- start-up ---

    @hookimpl
    def hookway_config_schema(self):
        return SCHEMA

    @hookimpl
    def hookway_configure(self, settings, gateway):
        self.gateway = gateway
        name = getattr(self, "hookway_name", "routing")
        # The global instance gets the very dict of `plugins:`; a bundle's instance its own block.
        self.is_global = settings is gateway.config.plugins.get(name)
        prefix = "plugins.routing" if self.is_global else "bundles.<bundle>.routing"
        self.api = settings.get("api", True)
        self.reload_interval = float(settings.get("reload_interval_seconds", 1.0))
        providers = set(gateway.config.providers)
        problems, entries, seen = [], [], {}
        for i, raw in enumerate(settings.get("rules") or []):
            where = f"{prefix}.rules[{i}]"
            try:
                rule = normalize(raw, where, providers=providers, default_priority=i)
            except RuleError as exc:
                problems += exc.problems
                continue
            rule_id = raw.get("id") if isinstance(raw.get("id"), str) and raw.get("id") else \
                f"config:{rule['name'] or f'rule-{i + 1}'}"
            if rule_id in seen:
                problems.append(f"{where}.name: {rule['name']!r} is used by rules[{seen[rule_id]}] too; "
                                "rule names must be unique")
                continue
            seen[rule_id] = i
            rule["name"] = rule["name"] or rule_id.removeprefix("config:")
            rule["id"] = rule_id
            entries.append((rule, yaml_hash(rule)))
        if problems:
            raise ConfigError(problems)
        self.config_rules = entries
        self._apply(-1, [{**r, "source": "config"} for r, _ in entries])

    @hookimpl
    def hookway_cleanup_ctx(self, gateway):
        if not self.is_global:
            return None

        async def lifecycle(app):
            path = os.path.join(gateway.config.server.data_dir, "routing.db")
            self.store = await asyncio.to_thread(RuleStore, path)
            self._write_lock = asyncio.Lock()
            await asyncio.to_thread(self.store.sync_config, self.config_rules)
            await self.reload()
            watcher = asyncio.ensure_future(self._watch())
            yield
            watcher.cancel()
            try:
                await watcher
            except asyncio.CancelledError:
                pass
            store, self.store = self.store, None
            await asyncio.to_thread(store.close)
        return lifecycle

    async def reload(self) -> None:
        version, rules = await asyncio.to_thread(self.store.load)
        if version != self._version:
            self._apply(version, rules)

    async def _watch(self) -> None:
        """Pick up changes made by other worker processes (same database)."""
        while True:
            await asyncio.sleep(self.reload_interval)
            try:
                if self.store is not None and await asyncio.to_thread(self.store.version) != self._version:
                    await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("routing rules reload failed")

    def _apply(self, version: int, rules: list[dict]) -> None:
        ruleset = RuleSet(rules)   # compiled before it replaces the old one: requests never wait
        self.rules = rules
        self.ruleset = ruleset
        self._version = version

    # --- per request ---

    @hookimpl
    def hookway_route(self, ctx):
        ruleset = self.ruleset
        if not ruleset.rules:
            return None
        model = ctx.model
        prefix, sep, _ = model.partition("/")
        prefixed = bool(sep) and prefix in self.gateway.adapters
        cache = []

        def variables():
            if not cache:
                cache.append(self._variables(ctx, prefixed))
            return cache[0]
        rule = ruleset.match(model, prefixed, ctx.headers, ctx.identity, variables)
        if rule is None:
            return None
        ctx.rule = rule.name
        targets = self._targets(rule, ctx, prefixed)
        log_extra = ctx.state.get("log")
        if log_extra is None:
            ctx.state["log"] = {"rule_id": rule.id}
        else:
            log_extra["rule_id"] = rule.id
        return targets

    def _variables(self, ctx, prefixed: bool) -> dict:
        ident = ctx.identity
        model, provider = ctx.model, ""
        if prefixed:
            provider, model = model.split("/", 1)
        extra = getattr(ident, "extra", None) or {}
        request = ctx.request
        return {
            "model": model, "provider": provider,
            "request_type": REQUEST_TYPES.get(ctx.operation, ctx.operation),
            "headers": {k.lower(): v for k, v in ctx.headers.items()},
            "params": {k.lower(): v for k, v in request.query.items()} if request is not None else {},
            "virtual_key_id": getattr(ident, "key_id", None) or "",
            "virtual_key_name": getattr(ident, "key_name", None) or "",
            "team_id": getattr(ident, "team_id", None) or "",
            "team_name": extra.get("team_name") or "",
            "customer_id": getattr(ident, "customer_id", None) or "",
            "customer_name": extra.get("customer_name") or "",
            "budget_used": float(extra.get("budget_used") or 0.0),
            "tokens_used": float(extra.get("tokens_used") or 0.0),
            "request": float(extra.get("request") or 0.0),
        }

    def _targets(self, rule: CompiledRule, ctx, prefixed: bool) -> list[Target]:
        adapters = self.gateway.adapters
        if adapters is not self._adapters_seen:   # providers changed at run time
            self._resolved = {}
            self._adapters_seen = adapters
        chosen = rule.pick()
        primary = self._resolve_target(rule, chosen, ctx.model, prefixed)
        out = [primary]
        seen = {(primary.provider, primary.model)}
        for name in rule.fallbacks:
            try:
                target = self._resolve_name(name)
            except GatewayError as err:
                log.warning("routing rule %r: fallback %r skipped: %s", rule.name, name, err.message)
                continue
            if (target.provider, target.model) not in seen:
                seen.add((target.provider, target.model))
                out.append(target)
        return out

    def _resolve_name(self, name: str) -> Target:
        target = self._resolved.get(name)
        if target is None:
            target = self.gateway.resolve_model(name)
            self._resolved[name] = target
        return target

    def _resolve_target(self, rule: CompiledRule, t: dict, requested: str, prefixed: bool) -> Target:
        provider, model, key_id = t["provider"], t["model"], t["key_id"]
        try:
            if provider:
                if not model:   # Bifrost: an empty model keeps the request's
                    model = requested.split("/", 1)[1] if prefixed else requested
                elif model.startswith(provider + "/"):
                    model = model[len(provider) + 1:]
                target = Target(provider, model)
            elif model:
                target = self._resolve_name(model)
            else:
                target = self.gateway.resolve_model(requested)
        except GatewayError as err:
            raise GatewayError(err.kind, f"routing rule {rule.name!r}: {err.message}", status=err.status,
                               param=err.param)
        if key_id:
            adapter = self.gateway.adapters.get(target.provider)
            key = next((k for k in adapter.config.keys if k.name == key_id), None) if adapter else None
            if key is None:
                log.warning("routing rule %r: key %r of provider %r not found; any key is used",
                            rule.name, key_id, target.provider)
            else:
                target = Target(target.provider, target.model, key)
        return target

    # --- the management API ---

    @hookimpl
    def hookway_register_routes(self, router, gateway):
        if not self.is_global or not self.api:
            return

        for base in API_PATHS:
            router.add_get(base, admin_only(self._list))
            router.add_post(base, admin_only(self._create))
            router.add_get(base + "/{rule_id}", admin_only(self._get))
            router.add_put(base + "/{rule_id}", admin_only(self._update))
            router.add_delete(base + "/{rule_id}", admin_only(self._delete))

    def _find(self, rule_id: str) -> dict | None:
        return next((r for r in self.rules if r["id"] == rule_id), None)

    @staticmethod
    def _public(rule: dict) -> dict:
        out = {"id": rule["id"], "name": rule.get("name") or rule["id"]}
        out.update({k: v for k, v in rule.items() if k not in ("id", "name")})
        out.setdefault("source", "api")
        out["scope_id"] = out.get("scope_id")
        return out

    async def _list(self, request: web.Request) -> web.Response:
        scope = request.query.get("scope")
        scope_id = request.query.get("scope_id")
        rules = [self._public(r) for r in self.rules
                 if (scope is None or r.get("scope") == scope) and (scope_id is None or r.get("scope_id") == scope_id)]
        return admin_json({"rules": rules, "count": len(rules)})

    async def _get(self, request: web.Request) -> web.Response:
        rule = self._find(request.match_info["rule_id"])
        if rule is None:
            return admin_error(404, f"routing rule {request.match_info['rule_id']!r} not found")
        return admin_json({"rule": self._public(rule)})

    async def _create(self, request: web.Request) -> web.Response:
        try:
            body = await json_object_body(request)
            rule = normalize(body, "rule", providers=self.gateway.adapters)
        except RuleError as exc:
            return admin_error(400, "invalid routing rule: " + "; ".join(exc.problems), exc.problems)
        rule["id"] = body["id"] if isinstance(body.get("id"), str) and body["id"] else str(uuid.uuid4())
        if self._find(rule["id"]) is not None:
            return admin_error(400, f"a routing rule with id {rule['id']!r} exists")
        rule["name"] = rule["name"] or rule["id"]
        if any(r.get("name") == rule["name"] for r in self.rules):
            return admin_error(400, f"a routing rule named {rule['name']!r} exists")
        rule["created_at"] = rule["updated_at"] = _now()
        await self._write(self.store.put, rule)
        return admin_json({"message": "Routing rule created successfully", "rule": self._public(self._find(rule["id"]) or rule)})

    async def _update(self, request: web.Request) -> web.Response:
        rule_id = request.match_info["rule_id"]
        current = self._find(rule_id)
        if current is None:
            return admin_error(404, f"routing rule {rule_id!r} not found")
        try:
            body = await json_object_body(request)
            merged = {k: v for k, v in current.items() if k not in ("id", "source", "created_at", "updated_at")}
            merged.update({k: v for k, v in body.items() if k not in ("id", "source", "created_at", "updated_at")})
            if "scope" in body and body["scope"] == "global":
                merged["scope_id"] = None
            if merged.get("scope") and merged.get("scope") != "global" and not merged.get("scope_id") \
                    and "scope" not in body:
                merged.pop("scope", None)   # a derived scope is derived again from `match`
            rule = normalize(merged, "rule", providers=self.gateway.adapters,
                             default_priority=current.get("priority", 0))
        except RuleError as exc:
            return admin_error(400, "invalid routing rule: " + "; ".join(exc.problems), exc.problems)
        rule["id"] = rule_id
        rule["name"] = rule["name"] or rule_id
        if any(r.get("name") == rule["name"] and r["id"] != rule_id for r in self.rules):
            return admin_error(400, f"a routing rule named {rule['name']!r} exists")
        rule["created_at"] = current.get("created_at") or _now()
        rule["updated_at"] = _now()
        await self._write(self.store.put, rule)
        return admin_json({"message": "Routing rule updated successfully", "rule": self._public(self._find(rule_id) or rule)})

    async def _delete(self, request: web.Request) -> web.Response:
        rule_id = request.match_info["rule_id"]
        if self._find(rule_id) is None:
            return admin_error(404, f"routing rule {rule_id!r} not found")
        await self._write(self.store.delete, rule_id)
        return admin_json({"message": "Routing rule deleted successfully"})

    async def _write(self, fn, arg) -> None:
        """Persist, then reload and recompile: effective for the next request. When the store
        refuses the write (a full disk), nothing changes and the API answers 507 (or 503)."""
        async with self._write_lock:
            try:
                await asyncio.to_thread(fn, arg)
            except Exception as exc:
                if storage.unwritable(exc):
                    raise storage.write_refused(exc, self.store.path) from exc
                raise
            await self.reload()
