"""The governance plugin: virtual keys, customers -> teams -> keys, budgets, rate limits.

Hooks used:

* ``hookway_auth``: find the key, refuse 401/403, check every budget and rate limit of the key,
  its team and customer, count the request — one synchronous step in one process (engine.py), one
  database transaction with several (shared.py).
* ``hookway_route`` (trylast): an unprefixed model goes to the key's allowed providers by weight.
* ``hookway_transform_request`` (tryfirst): the provider/model of each attempt must be allowed;
  the provider config's own budgets and limits are checked and counted, the same way.
* ``hookway_middleware``: when the request is over (``ctx.usage`` known), its cost and tokens are
  charged at every level — in memory at once and in SQLite by the sync task (one process), or in
  SQLite at once (several).
* ``hookway_cleanup_ctx``: opens the store, applies the YAML, loads, runs the sync task; flushes
  on shutdown. ``hookway_register_routes``: the Bifrost-compatible management API.

The two hooks that decide are ``async def`` for the several-process case; with one process they
never await, so a check and the count that follows stay one step of the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import math
import os
import random
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import orjson

from hookway import hookimpl, ir, storage
from hookway.config import ConfigError
from hookway.errors import GatewayError
from hookway.pipeline import Identity
from hookway.providers import Target

from . import api, shared
from .engine import BILLABLE, Engine, Limits, Ticket
from .model import KEY_PREFIX, Invalid, PARSERS, entity_counters, from_doc, hash_value
from .pricing import PRICE_SCHEMA, Pricing, price_from_dict
from .store import Store

log = logging.getLogger("hookway.governance")

# Where a virtual key may arrive, in this order. A value with the sk-hw- prefix wins over others,
# so a client sending a provider key in one header and the virtual key in another works.
KEY_HEADERS = ("x-bf-vk", "authorization", "x-api-key", "api-key", "x-goog-api-key")

_ENTITY_LIST = {"type": "array", "items": {"type": "object"}}

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "database": {"type": "string", "description": "SQLite file, relative to server.data_dir"},
        "sync_interval_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 60},
        "multi_process": {"type": "boolean",
                          "description": "other processes share the database: check and count in it "
                                         "(default: true when server.workers > 1)"},
        "pricing": {"type": "object", "additionalProperties": PRICE_SCHEMA},
        "customers": _ENTITY_LIST,
        "teams": _ENTITY_LIST,
        "virtual_keys": _ENTITY_LIST,
    },
}


def key_from_headers(headers) -> str | None:
    first = None
    for name in KEY_HEADERS:
        value = headers.get(name)
        if not value:
            continue
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer" or not token:
                continue
            value = token
        value = value.strip()
        if value.startswith(KEY_PREFIX):
            return value
        if first is None:
            first = value
    return first


def yaml_hash(block: dict) -> str:
    clean = dict(block)
    if clean.get("value") is not None:
        clean["value"] = hash_value(str(clean["value"]))
    return hashlib.sha256(json.dumps(clean, sort_keys=True, default=str).encode()).hexdigest()


class GovernancePlugin:
    def __init__(self) -> None:
        self.engine = Engine()
        self.store: Store | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.task: asyncio.Task | None = None
        self.version = 0          # config version of the store this process has loaded
        self.seq = 0              # counter_seq read back so far
        self.write_lock: asyncio.Lock | None = None
        self.gateway = None
        self.multi_process = False
        self.in_database: shared.InDatabase | None = None   # several processes: decide in the database
        self.sync_outage = storage.Outage()   # while the store refuses the counters (a full disk)

    # --- start-up ---------------------------------------------------------------------------

    @hookimpl
    def hookway_config_schema(self):
        return SCHEMA

    @hookimpl
    def hookway_configure(self, settings, gateway):
        self.gateway = gateway
        server = gateway.config.server
        self.anonymous = server.allow_anonymous is True
        database = settings.get("database", "governance.db")
        self.db_path = database if os.path.isabs(database) else os.path.join(server.data_dir, database)
        self.sync_interval = float(settings.get("sync_interval_seconds", 0.5))
        self.multi_process = settings.get("multi_process", server.workers > 1)
        self.pricing = Pricing({k: price_from_dict(v) for k, v in (settings.get("pricing") or {}).items()})
        self.bundles = set(gateway.config.bundles)
        self.declared = self._declared(settings)

    def _declared(self, settings: dict) -> list:
        """The YAML's customers, teams and keys, validated now so `hookway check` reports them."""
        problems: list[str] = []
        out = []
        now = time.time()
        ids: dict[str, set] = {"customer": set(), "team": set(), "virtual_key": set()}
        names = set()
        for section, kind in (("customers", "customer"), ("teams", "team"), ("virtual_keys", "virtual_key")):
            for i, block in enumerate(settings.get(section) or []):
                path = f"plugins.governance.{section}[{i}]"
                eid = block.get("id") or block.get("name")
                if not isinstance(eid, str) or not eid:
                    problems.append(f"{path}: needs an id (or a name, used as the id)")
                    continue
                if eid in ids[kind]:
                    problems.append(f"{path}.id: {eid!r} is declared twice")
                    continue
                ids[kind].add(eid)
                kwargs = {}
                if kind == "virtual_key":
                    value = block.get("value")
                    if value is None:
                        if block.get("optional"):
                            log.warning("%s: its value is not set (optional key skipped)", path)
                            continue
                        problems.append(f"{path}.value: required (a literal or env.NAME)")
                        continue
                    if not isinstance(value, str) or len(value) < 16:
                        problems.append(f"{path}.value: expected a string of at least 16 characters")
                        continue
                    kwargs["value"] = value
                    if block.get("name", eid) in names:
                        problems.append(f"{path}.name: another virtual key is named {block.get('name', eid)!r}")
                    names.add(block.get("name", eid))
                body = {"name": eid, **{k: v for k, v in block.items() if k not in ("id", "value", "optional")}}
                try:
                    entity = PARSERS[kind](body, id=eid, now=now, path=path, source="yaml", **kwargs)
                except Invalid as exc:
                    problems += exc.problems
                    continue
                bundle = getattr(entity, "bundle", None)
                if bundle is not None and bundle not in self.bundles:
                    problems.append(f"{path}.bundle: no bundle named {bundle!r} under bundles: "
                                    f"(declared: {', '.join(sorted(self.bundles)) or 'none'})")
                out.append((entity, yaml_hash(block)))
        if problems:
            raise ConfigError(problems)
        return out

    @hookimpl
    def hookway_filter_models(self, ctx, ids):
        """GET /v1/models shows a key only the providers and models it may use."""
        key = self.engine.keys.get(getattr(getattr(ctx, "identity", None), "key_id", None) or "")
        if key is None or not key.provider_configs:
            return None
        return [i for i in ids if "/" in i and key.allows(*i.split("/", 1))]

    @hookimpl
    def hookway_register_routes(self, router, gateway):
        api.register(router, self)

    @hookimpl
    def hookway_cleanup_ctx(self, gateway):
        async def lifecycle(app):
            await self.open()
            try:
                yield
            finally:
                await self.close()
        return lifecycle

    async def run(self, fn, *args, **kwargs):
        """Run a store call on the governance thread (never on the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, functools.partial(fn, *args, **kwargs))

    async def open(self) -> None:
        self.write_lock = asyncio.Lock()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="hookway-governance")
        try:
            self.store = await self.run(Store, self.db_path)
        except (sqlite3.Error, OSError) as exc:
            raise RuntimeError(f"governance: cannot open its store {self.db_path} "
                               f"(server.data_dir, plugins.governance.database): {exc}") from exc
        now = self.engine.clock()
        declared = [(e.kind, e.doc(), getattr(e, "value_hash", None), h,
                     [(cid, now) for cid, _ in entity_counters(e)]) for e, h in self.declared]
        for line in await self.run(self.store.apply_yaml, declared):
            log.info("governance: %s", line)
        await self.reload()
        self._warn_dangling()
        if self.multi_process:
            self.in_database = shared.InDatabase(self.run, self.store, self.engine)
        self.stopping = asyncio.Event()
        self.task = asyncio.ensure_future(self._sync_loop())

    async def reload(self) -> None:
        entities, counters, version, seq = await self.run(self.store.load)
        self.engine.merge(counters)
        self.engine.replace_all([from_doc(kind, doc) for kind, doc in entities])
        self.version = version
        self.seq = max(self.seq, seq)

    def _warn_dangling(self) -> None:
        e = self.engine
        for key in e.keys.values():
            if key.team_id and key.team_id not in e.teams:
                log.warning("governance: virtual key %r names team %r, which does not exist", key.name, key.team_id)
            if key.customer_id and key.customer_id not in e.customers:
                log.warning("governance: virtual key %r names customer %r, which does not exist",
                            key.name, key.customer_id)
        for team in e.teams.values():
            if team.customer_id and team.customer_id not in e.customers:
                log.warning("governance: team %r names customer %r, which does not exist", team.name, team.customer_id)
        for entity in (*e.keys.values(), *e.teams.values()):
            if entity.bundle and entity.bundle not in self.bundles:
                log.warning("governance: %s %r names bundle %r, which is not under bundles: any more; "
                            "its requests will fail until it is declared again or changed",
                            entity.kind.replace("_", " "), entity.name, entity.bundle)

    async def close(self) -> None:
        if self.task is not None:
            # Not cancelled: a write in progress on the store thread would complete anyway, and
            # its batch must be neither lost nor written twice. The loop ends after one last sync.
            self.stopping.set()
            await self.task
        if self.in_database is not None:
            await self.in_database.drain()
        if self.store is not None:
            try:
                await self.sync()
            except Exception as exc:
                if storage.unwritable(exc):
                    log.error("governance: at shutdown, %s still refuses writes (%s); the usage of %d counters "
                              "counted since it started failing is lost", self.db_path, exc,
                              len(self.engine.pending))
                else:
                    log.exception("governance: final flush failed")
            await self.run(self.store.close)
            self.store = None
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    async def _sync_loop(self) -> None:
        outage = self.sync_outage
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), self.sync_interval)
            except asyncio.TimeoutError:
                pass
            try:
                await self.sync()
            except Exception as exc:
                if not storage.unwritable(exc):
                    log.exception("governance: sync with the store failed; will retry")
                elif outage.failed(exc):
                    # Once per outage, not every sync_interval_seconds.
                    log.warning("governance: usage counters cannot be written to %s (%s: %s); budgets and "
                                "rate limits are still enforced from memory, and what was counted is written "
                                "once the store accepts it (retried every %ss)",
                                self.db_path, type(exc).__name__, exc, self.sync_interval)
            else:
                ended = outage.recovered()
                if ended is not None:
                    log.warning("governance: usage counters written to %s again, after %.1f s and %d failed "
                                "attempts", self.db_path, *ended)

    async def sync(self) -> None:
        """Write this process's counter deltas, read back everyone's, reload entities when
        another process (a worker, the CLI) changed them."""
        batch = self.engine.take_pending()
        try:
            rows, seq, version = await self.run(self.store.sync, batch, self.seq, self.version)
        except Exception:
            self._restore(batch)     # the transaction was rolled back: try these deltas again
            raise
        self.seq = seq
        self.engine.merge(rows)
        if version != self.version:
            # Under the API's lock, so a key created meanwhile is not dropped by an older load.
            async with self.write_lock:
                await self.reload()

    def _restore(self, batch) -> None:
        pending = self.engine.pending
        for cid, windows in batch.items():
            mine = pending.setdefault(cid, {})
            for start, delta in windows.items():
                mine[start] = mine.get(start, 0.0) + delta

    def wrote(self, versions: tuple[int, int]) -> None:
        """After an entity write: skip the reload for our own change, unless someone else
        wrote in between."""
        before, after = versions
        if before == self.version:
            self.version = after

    # --- per request ------------------------------------------------------------------------

    @hookimpl
    async def hookway_auth(self, ctx):
        value = key_from_headers(ctx.headers)
        if value is None:
            if self.anonymous:
                return None
            raise GatewayError("authentication", "a virtual key is required: send it as Authorization: "
                               "Bearer sk-hw-..., x-api-key or x-bf-vk", code="virtual_key_required")
        engine = self.engine
        now = engine.clock()
        ticket = engine.identify(hash_value(value), now)
        if ticket is None:
            if self.anonymous and not value.startswith(KEY_PREFIX):
                return None       # not one of ours: maybe a provider key sent on purpose
            raise GatewayError("authentication", "invalid virtual key", code="virtual_key_invalid")
        if ctx.operation in BILLABLE:
            if self.multi_process:
                if _counted(ticket.key, ticket.team, ticket.customer):
                    await self.in_database.decide(Limits.admit, ticket, now)
            else:
                engine.admit(ticket, now)
            ctx.state["governance"] = ticket
        key, team = ticket.key, ticket.team
        return Identity(key_id=key.id, key_name=key.name, team_id=key.team_id,
                        customer_id=ticket.customer.id if ticket.customer else key.customer_id,
                        bundle=key.bundle or (team.bundle if team is not None else None))

    @hookimpl(trylast=True)
    def hookway_route(self, ctx):
        ticket: Ticket | None = ctx.state.get("governance")
        if ticket is None or not ticket.key.provider_configs:
            return None
        model = ctx.model
        adapters = self.gateway.adapters
        prefix, sep, _ = model.partition("/")
        if sep and prefix in adapters:
            return None
        rules = [r for r in ticket.key.provider_configs
                 if not r.is_glob and r.provider in adapters and r.weight > 0 and r.allows(model)]
        served = [r for r in rules if _serves(adapters[r.provider], model)]
        rules = served or rules
        if not rules:
            return None
        if len(rules) > 1:
            first = random.choices(rules, weights=[r.weight for r in rules])[0]
            rules = [first] + sorted((r for r in rules if r is not first), key=lambda r: -r.weight)
        ctx.rule = ctx.rule or "governance:provider_weights"
        return [Target(r.provider, model) for r in rules]

    @hookimpl(tryfirst=True)
    async def hookway_transform_request(self, ctx, target):
        ticket = ctx.state.get("governance")
        if ticket is None:
            return
        engine = self.engine
        if self.multi_process:
            rule = ticket.key.rule_for(target.provider) if ticket.key.provider_configs else None
            if _counted(rule):
                await self.in_database.decide(Limits.admit_target, ticket, target.provider, target.model,
                                              engine.clock())
                return
        engine.admit_target(ticket, target.provider, target.model, engine.clock())

    @hookimpl
    def hookway_middleware(self):
        async def governance(ctx, call_next):
            cancelled = False
            try:
                return await call_next(ctx)
            except (asyncio.CancelledError, ConnectionResetError):
                cancelled = True      # the client went away (the core logs it as 499)
                raise
            finally:
                ticket = ctx.state.get("governance")
                if ticket is not None:
                    charging = self.settle(ctx, ticket, cancelled)
                    if charging is not None and not cancelled:
                        # A whole answer is sent once the handler returns: the next request, on
                        # any worker, is checked against this one's cost.
                        await asyncio.shield(charging)
        return governance

    def settle(self, ctx, ticket: Ticket, cancelled: bool = False) -> asyncio.Future | None:
        """Charge a finished request; with several processes, the future of the charge's write."""
        target = ctx.target
        if target is None or ctx.cache_hit:
            return None
        u = ctx.usage
        if (cancelled or ctx.status == 499) and not (
                u.input_tokens or u.cache_read_input_tokens or u.cache_creation_input_tokens):
            # A request the client cancelled before its usage arrived (usage comes at the end of a
            # stream): the provider has still read the prompt and generated something, so charge
            # an estimate rather than nothing, or cancelling would bypass budgets and token limits.
            u = estimated_usage(ctx.body, u)
            log_extra = ctx.state.get("log")
            if log_extra is None:
                log_extra = ctx.state["log"] = {}
            log_extra["governance_usage_estimate"] = {"input_tokens": u.input_tokens,
                                                      "output_tokens": u.output_tokens}
        tokens = u.input_tokens + u.output_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens
        adapter = self.gateway.adapters.get(target.provider)
        cost = self.pricing.cost(target.provider, adapter.config.type if adapter is not None else None,
                                 target.model, u)
        ctx.cost = cost
        now = self.engine.clock()
        if self.multi_process:
            return self.charge_in_database(ticket, target.provider, cost, tokens, now)
        self.engine.settle(ticket, target.provider, cost, tokens, now)
        return None

    # --- several processes (shared.py) ------------------------------------------------------

    def charge_in_database(self, ticket: Ticket, provider: str, cost: float, tokens: int,
                           now: float) -> asyncio.Future | None:
        if (cost <= 0 and tokens <= 0) or not _counted(ticket.key, ticket.team, ticket.customer,
                                                       ticket.rules.get(provider)):
            return None
        return self.in_database.decide(Limits.settle, ticket, provider, cost, tokens, now)


def estimated_usage(body, known: ir.Usage) -> ir.Usage:
    """An estimate for a request whose usage is unknown: input tokens ~ the request body's JSON
    size / 4 (about four bytes a token), output tokens as far as known (0 if nothing is)."""
    try:
        size = len(orjson.dumps(body))
    except (TypeError, orjson.JSONEncodeError):
        size = len(json.dumps(body, default=str))
    return ir.Usage(input_tokens=math.ceil(size / 4), output_tokens=known.output_tokens,
                    reasoning_tokens=known.reasoning_tokens)


def _counted(*owners) -> bool:
    """Has any of these (key, team, customer, provider config) a budget or a rate limit?"""
    return any(o is not None and (o.budgets or o.rate_limit is not None) for o in owners)


def _serves(adapter, model: str) -> bool:
    import fnmatch
    return any(m == model or fnmatch.fnmatchcase(model, m) for m in adapter.config.models)
