"""The in-memory state and the decisions: who is calling, may they, and what it cost.

Everything here runs in the event loop and never awaits, so a check and the reservation that
follows it are one atomic step for every request of this process: with a request limit of 10, 50
concurrent requests let exactly 10 through. Costs and tokens are only known when a request ends;
they are charged then, so a budget or a token limit is overrun at most by what was in flight when
it was reached, and every later request is refused.

Counters (spend, requests, tokens) are persisted by :mod:`hookway_governance.store` as *deltas*:
``pending`` collects what this process charged since its last flush, keyed by window, so several
processes sharing the database add up instead of overwriting one another.

With several processes the rules (:class:`Limits`) run against the database's counters instead,
one transaction at a time (:mod:`hookway_governance.shared`); the engine then keeps the entities
and a copy of the counters.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from hookway.errors import GatewayError

from . import periods
from .model import Budget, Customer, RateLimit, Team, VirtualKey, entity_counters
from .periods import FOREVER

# Operations that reach a provider and are checked and charged. Listing models and counting
# tokens only need a valid key.
BILLABLE = frozenset({"chat", "completions", "responses", "embeddings", "images", "speech",
                      "transcription", "batch"})


class Counter:
    """Usage of one budget (USD), request limit or token limit within its current window."""

    __slots__ = ("id", "usage", "start", "end", "period")

    def __init__(self, cid: str, usage: float, start: float, period: periods.Period | None):
        self.id = cid
        self.usage = usage
        self.start = start
        self.period = period
        self.end = period.window(start, start)[1] if period is not None else FOREVER

    def set_period(self, period: periods.Period | None) -> None:
        self.period = period
        self.end = period.window(self.start, self.start)[1] if period is not None else FOREVER

    def roll(self, now: float) -> None:
        """Once its window is over, the current one starts with nothing used."""
        if now >= self.end:
            self.start, self.end = self.period.window(self.start, now)
            self.usage = 0.0


class Ticket:
    """What the auth hook decided for a request, read again by routing, the per-target check
    and the final charge."""

    __slots__ = ("key", "team", "customer", "rules")

    def __init__(self, key: VirtualKey, team: Team | None, customer: Customer | None):
        self.key = key
        self.team = team
        self.customer = customer
        self.rules: dict = {}     # provider name -> ProviderRule used for it


class Limits:
    """The rules: which budgets and limits a request must pass, what it counts and what it is
    charged. Where the counters live is up to a subclass: :class:`Engine` keeps them in memory;
    :class:`hookway_governance.shared.DatabaseCounters` reads and writes them inside one database
    transaction, so the same rules hold across processes."""

    def counter(self, cid: str, now: float) -> Counter:
        raise NotImplementedError

    def charge(self, cid: str, amount: float, now: float) -> None:
        raise NotImplementedError

    def _check_budgets(self, budgets: list[Budget], what: str, now: float) -> None:
        for b in budgets:
            c = self.counter(b.id, now)
            if c.usage >= b.max_limit:
                when = (f"resets in {periods.human(c.end - now)}" if c.end != FOREVER else "does not reset")
                raise GatewayError("billing", f"budget exceeded for {what}: ${c.usage:.4f} spent of "
                                   f"${b.max_limit:.2f} per {b.reset_duration or 'lifetime'} ({when})",
                                   code="budget_exceeded")

    def _check_rate(self, rl: RateLimit | None, what: str, now: float) -> list[str]:
        """Raise 429 when a limit is reached; return the request counters to increment."""
        if rl is None:
            return []
        out = []
        if rl.request_max_limit is not None:
            c = self.counter(rl.request_counter, now)
            if c.usage >= rl.request_max_limit:
                raise _rate_error(f"request limit reached for {what}: {rl.request_max_limit} requests per "
                                  f"{rl.request_reset_duration or 'lifetime'}", c, now)
            out.append(rl.request_counter)
        if rl.token_max_limit is not None:
            c = self.counter(rl.token_counter, now)
            if c.usage >= rl.token_max_limit:
                raise _rate_error(f"token limit reached for {what}: {c.usage:.0f} of {rl.token_max_limit} tokens "
                                  f"per {rl.token_reset_duration or 'lifetime'}", c, now)
        return out

    def admit(self, t: Ticket, now: float) -> None:
        """Every budget and rate limit of the key, its team and customer; then count the request.
        Synchronous: no other request of this process runs between the check and the count."""
        key, team, customer = t.key, t.team, t.customer
        counts = []
        if customer is not None:
            self._check_budgets(customer.budgets, f"customer {customer.name!r}", now)
        if team is not None:
            self._check_budgets(team.budgets, f"team {team.name!r}", now)
        self._check_budgets(key.budgets, f"virtual key {key.name!r}", now)
        if customer is not None and customer.rate_limit is not None:
            counts += self._check_rate(customer.rate_limit, f"customer {customer.name!r}", now)
        if team is not None and team.rate_limit is not None:
            counts += self._check_rate(team.rate_limit, f"team {team.name!r}", now)
        if key.rate_limit is not None:
            counts += self._check_rate(key.rate_limit, f"virtual key {key.name!r}", now)
        for cid in counts:
            self.charge(cid, 1, now)

    def admit_target(self, t: Ticket, provider: str, model: str, now: float) -> None:
        """The provider/model chosen for one attempt: allowed by the key? Its provider config's
        budgets and rate limits; count the request there."""
        key = t.key
        if not key.provider_configs:
            return
        rule = key.rule_for(provider)
        if rule is None:
            allowed = ", ".join(r.provider for r in key.provider_configs)
            raise GatewayError("permission", f"virtual key {key.name!r} may not use provider {provider!r} "
                               f"(allowed: {allowed})", code="provider_not_allowed")
        if not rule.allows(model):
            raise GatewayError("permission", f"virtual key {key.name!r} may not use model {model!r} of "
                               f"{provider} (allowed: {', '.join(rule.allowed_models)})",
                               code="model_not_allowed")
        what = f"virtual key {key.name!r} on {provider}"
        self._check_budgets(rule.budgets, what, now)
        counts = self._check_rate(rule.rate_limit, what, now)
        for cid in counts:
            self.charge(cid, 1, now)
        t.rules[provider] = rule

    def settle(self, t: Ticket, provider: str | None, cost: float, tokens: int, now: float) -> None:
        """Charge what a finished request cost to every level, and its tokens to the limits."""
        key, team, customer = t.key, t.team, t.customer
        rule = t.rules.get(provider) if provider is not None else None
        if cost > 0:
            for owner in (key, team, customer, rule):
                if owner is not None:
                    for b in owner.budgets:
                        self.charge(b.id, cost, now)
        if tokens > 0:
            for owner in (key, team, customer, rule):
                rl = owner.rate_limit if owner is not None else None
                if rl is not None and rl.token_max_limit is not None:
                    self.charge(rl.token_counter, tokens, now)


class Engine(Limits):
    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.keys: dict[str, VirtualKey] = {}
        self.by_hash: dict[str, VirtualKey] = {}
        self.teams: dict[str, Team] = {}
        self.customers: dict[str, Customer] = {}
        self.counters: dict[str, Counter] = {}
        self.pending: dict[str, dict[float, float]] = {}   # counter id -> {window start: delta}

    # --- entities ---------------------------------------------------------------------------

    def table(self, kind: str) -> dict:
        return {"customer": self.customers, "team": self.teams, "virtual_key": self.keys}[kind]

    def put(self, entity, now: float | None = None) -> None:
        """Add or replace an entity (its new counters start at ``now``: the same start the store
        was given, so every process tiles the same windows)."""
        table = self.table(entity.kind)
        if entity.kind == "virtual_key":
            old = self.keys.get(entity.id)
            if old is not None and self.by_hash.get(old.value_hash) is old:
                del self.by_hash[old.value_hash]
            self.by_hash[entity.value_hash] = entity
        table[entity.id] = entity
        self.ensure_counters(entity, now)

    def remove(self, kind: str, entity_id: str):
        entity = self.table(kind).pop(entity_id, None)
        if entity is not None and kind == "virtual_key" and self.by_hash.get(entity.value_hash) is entity:
            del self.by_hash[entity.value_hash]
        return entity

    def replace_all(self, entities: list) -> None:
        """Swap every entity at once (a reload after another process changed them)."""
        keys, by_hash, teams, customers = {}, {}, {}, {}
        for e in entities:
            if e.kind == "virtual_key":
                keys[e.id] = e
                by_hash[e.value_hash] = e
            elif e.kind == "team":
                teams[e.id] = e
            else:
                customers[e.id] = e
        self.keys, self.by_hash, self.teams, self.customers = keys, by_hash, teams, customers
        for e in entities:
            self.ensure_counters(e)

    def ensure_counters(self, entity, now: float | None = None) -> list[tuple[str, float]]:
        """Create missing counters of an entity; the new ones as (id, window start)."""
        if now is None:
            now = self.clock()
        created = []
        for cid, duration in entity_counters(entity):
            period = periods.parse(duration) if duration else None
            c = self.counters.get(cid)
            if c is None:
                self.counters[cid] = Counter(cid, 0.0, now, period)
                created.append((cid, now))
            elif c.period != period:
                c.set_period(period)
        return created

    # --- the hot path -----------------------------------------------------------------------

    def identify(self, value_hash: str, now: float) -> Ticket | None:
        """The key with this hash, its team and customer; 403 when it cannot be used."""
        key = self.by_hash.get(value_hash)
        if key is None:
            return None
        if not key.is_active:
            raise GatewayError("permission", f"virtual key {key.name!r} is inactive", code="virtual_key_inactive")
        if key.expires_at is not None and now >= key.expires_at:
            raise GatewayError("permission", f"virtual key {key.name!r} has expired", code="virtual_key_expired")
        team = self.teams.get(key.team_id) if key.team_id else None
        customer_id = team.customer_id if team is not None else key.customer_id
        customer = self.customers.get(customer_id) if customer_id else None
        return Ticket(key, team, customer)

    def counter(self, cid: str, now: float) -> Counter:
        c = self.counters.get(cid)
        if c is None:   # an entity changed under a request; start it now
            c = self.counters[cid] = Counter(cid, 0.0, now, None)
        c.roll(now)
        return c

    def charge(self, cid: str, amount: float, now: float) -> None:
        c = self.counter(cid, now)
        c.usage += amount
        windows = self.pending.get(cid)
        if windows is None:
            self.pending[cid] = {c.start: amount}
        else:
            windows[c.start] = windows.get(c.start, 0.0) + amount

    # --- persistence -----------------------------------------------------------------------

    def take_pending(self) -> dict[str, dict[float, float]]:
        batch, self.pending = self.pending, {}
        return batch

    def merge(self, rows) -> None:
        """Counter rows read back from the database (``id, usage, window start``): the totals of
        every process, plus what this process charged since it took its last batch."""
        for cid, usage, start in rows:
            pending = self.pending.get(cid)
            extra = pending.get(start, 0.0) if pending else 0.0
            c = self.counters.get(cid)
            if c is None:
                self.counters[cid] = Counter(cid, usage + extra, start, None)
                continue
            if start > c.start:
                c.start = start
                c.end = c.period.window(start, start)[1] if c.period is not None else FOREVER
                c.usage = usage + extra
            elif start == c.start:
                c.usage = usage + extra
            # else: this process already moved to a later window; its next flush moves the row.

    def usage(self, cid: str) -> tuple[float, float | None]:
        """(usage in the current window, window start) for the API."""
        c = self.counters.get(cid)
        if c is None:
            return 0.0, None
        now = self.clock()
        if now >= c.end:
            return 0.0, c.period.window(c.start, now)[0]
        return c.usage, c.start


def _rate_error(message: str, c: Counter, now: float) -> GatewayError:
    if c.end == FOREVER:
        return GatewayError("rate_limit", message + " (does not reset)", code="rate_limit_exceeded")
    wait = max(int(math.ceil(c.end - now)), 1)
    return GatewayError("rate_limit", f"{message}; retry in {periods.human(wait)}", code="rate_limit_exceeded",
                        headers={"retry-after": str(wait)})
