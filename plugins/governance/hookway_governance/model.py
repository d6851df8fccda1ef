"""Governance entities (customers, teams, virtual keys, budgets, rate limits) and how they are
read from API bodies, YAML and the CLI, stored, and shown.

One parser serves the management API, the YAML block and the CLI, so the three accept the same
shapes (Bifrost's: ``budget`` or ``budgets``, ``rate_limit``, ``provider_configs``...). Budget and
rate-limit ids are derived from their owner and reset period (``vk:<id>:budget:1M``), so editing a
limit keeps what was spent, while changing a period starts a fresh counter.
"""

from __future__ import annotations

import fnmatch
import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from hookway.admin import AdminError

from . import periods

KEY_PREFIX = "sk-hw-"
KINDS = ("customer", "team", "virtual_key")


class Invalid(AdminError):
    """A body or YAML block with problems; ``problems`` has one line each (a 400 in the API)."""


def new_key_value() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_value(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def value_hint(value: str) -> str:
    """What lists show instead of a key: ``sk-hw-AbCd…wxyz``."""
    if len(value) <= 16:
        return value[:4] + "…"
    return value[:10] + "…" + value[-4:]


def new_id() -> str:
    return str(uuid.uuid4())


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def parse_time(value: Any, path: str, problems: list[str]) -> float | None:
    """ISO 8601 (``2026-01-31``, ``2026-01-31T12:00:00Z``) or a Unix timestamp; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        problems.append(f"{path}: expected an ISO 8601 date or a Unix timestamp, found {value!r}")
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    try:
        from datetime import date
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp()
    except Exception:  # pragma: no cover
        pass
    problems.append(f"{path}: expected an ISO 8601 date or a Unix timestamp, found {value!r}")
    return None


# --- entities ----------------------------------------------------------------------------------

@dataclass(slots=True)
class Budget:
    id: str
    max_limit: float
    reset_duration: str | None = None     # None: never resets

    @property
    def period(self) -> periods.Period | None:
        return periods.parse(self.reset_duration) if self.reset_duration else None

    def doc(self) -> dict:
        return {"id": self.id, "max_limit": self.max_limit, "reset_duration": self.reset_duration}


@dataclass(slots=True)
class RateLimit:
    id: str
    request_max_limit: int | None = None
    request_reset_duration: str | None = None
    token_max_limit: int | None = None
    token_reset_duration: str | None = None

    @property
    def request_counter(self) -> str:
        return f"{self.id}:requests:{self.request_reset_duration or 'total'}"

    @property
    def token_counter(self) -> str:
        return f"{self.id}:tokens:{self.token_reset_duration or 'total'}"

    def doc(self) -> dict:
        return {"id": self.id, "request_max_limit": self.request_max_limit,
                "request_reset_duration": self.request_reset_duration,
                "token_max_limit": self.token_max_limit, "token_reset_duration": self.token_reset_duration}


@dataclass(slots=True)
class ProviderRule:
    """One entry of a key's ``provider_configs``: a provider (name or glob), the models allowed
    there (globs; empty or ``*`` = all), a routing weight, and optional budgets and rate limit."""

    provider: str
    allowed_models: list[str] = field(default_factory=list)
    weight: float = 1.0
    budgets: list[Budget] = field(default_factory=list)
    rate_limit: RateLimit | None = None

    def matches(self, provider: str) -> bool:
        p = self.provider
        return p == provider or p == "*" or (any(c in p for c in "*?[") and fnmatch.fnmatchcase(provider, p))

    @property
    def is_glob(self) -> bool:
        return any(c in self.provider for c in "*?[")

    def allows(self, model: str) -> bool:
        if not self.allowed_models:
            return True
        for pattern in self.allowed_models:
            if pattern == "*" or pattern == model or fnmatch.fnmatchcase(model, pattern):
                return True
        return False

    def doc(self) -> dict:
        return {"provider": self.provider, "allowed_models": list(self.allowed_models), "weight": self.weight,
                "budgets": [b.doc() for b in self.budgets],
                "rate_limit": self.rate_limit.doc() if self.rate_limit else None}


@dataclass(slots=True)
class Customer:
    id: str
    name: str
    budgets: list[Budget] = field(default_factory=list)
    rate_limit: RateLimit | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    source: str = "api"
    kind = "customer"

    def doc(self) -> dict:
        return {"id": self.id, "name": self.name, "budgets": [b.doc() for b in self.budgets],
                "rate_limit": self.rate_limit.doc() if self.rate_limit else None,
                "created_at": self.created_at, "updated_at": self.updated_at, "source": self.source}


@dataclass(slots=True)
class Team:
    id: str
    name: str
    customer_id: str | None = None
    bundle: str | None = None
    budgets: list[Budget] = field(default_factory=list)
    rate_limit: RateLimit | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    source: str = "api"
    kind = "team"

    def doc(self) -> dict:
        return {"id": self.id, "name": self.name, "customer_id": self.customer_id, "bundle": self.bundle,
                "budgets": [b.doc() for b in self.budgets],
                "rate_limit": self.rate_limit.doc() if self.rate_limit else None,
                "created_at": self.created_at, "updated_at": self.updated_at, "source": self.source}


@dataclass(slots=True)
class VirtualKey:
    id: str
    name: str
    value_hash: str
    value_hint: str
    description: str = ""
    is_active: bool = True
    expires_at: float | None = None
    team_id: str | None = None
    customer_id: str | None = None
    bundle: str | None = None
    provider_configs: list[ProviderRule] = field(default_factory=list)
    budgets: list[Budget] = field(default_factory=list)
    rate_limit: RateLimit | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    source: str = "api"
    kind = "virtual_key"

    def rule_for(self, provider: str) -> ProviderRule | None:
        for rule in self.provider_configs:
            if rule.matches(provider):
                return rule
        return None

    def allows(self, provider: str, model: str) -> bool:
        if not self.provider_configs:
            return True
        rule = self.rule_for(provider)
        return rule is not None and rule.allows(model)

    def doc(self) -> dict:
        return {"id": self.id, "name": self.name, "value_hash": self.value_hash, "value_hint": self.value_hint,
                "description": self.description, "is_active": self.is_active, "expires_at": self.expires_at,
                "team_id": self.team_id, "customer_id": self.customer_id, "bundle": self.bundle,
                "provider_configs": [r.doc() for r in self.provider_configs],
                "budgets": [b.doc() for b in self.budgets],
                "rate_limit": self.rate_limit.doc() if self.rate_limit else None,
                "created_at": self.created_at, "updated_at": self.updated_at, "source": self.source}

    def counters(self) -> list[tuple[str, str | None]]:
        """Every counter this key charges directly: (counter id, reset duration)."""
        out = [(b.id, b.reset_duration) for b in self.budgets]
        out += _rate_limit_counters(self.rate_limit)
        for rule in self.provider_configs:
            out += [(b.id, b.reset_duration) for b in rule.budgets]
            out += _rate_limit_counters(rule.rate_limit)
        return out


def _rate_limit_counters(rl: RateLimit | None) -> list[tuple[str, str | None]]:
    if rl is None:
        return []
    out = []
    if rl.request_max_limit is not None:
        out.append((rl.request_counter, rl.request_reset_duration))
    if rl.token_max_limit is not None:
        out.append((rl.token_counter, rl.token_reset_duration))
    return out


def entity_counters(entity) -> list[tuple[str, str | None]]:
    if isinstance(entity, VirtualKey):
        return entity.counters()
    return [(b.id, b.reset_duration) for b in entity.budgets] + _rate_limit_counters(entity.rate_limit)


# --- from stored documents ---------------------------------------------------------------------

def _budgets_from_doc(items) -> list[Budget]:
    return [Budget(b["id"], float(b["max_limit"]), b.get("reset_duration")) for b in items or []]


def _rate_limit_from_doc(d) -> RateLimit | None:
    if not d:
        return None
    return RateLimit(d["id"], d.get("request_max_limit"), d.get("request_reset_duration"),
                     d.get("token_max_limit"), d.get("token_reset_duration"))


def from_doc(kind: str, d: dict):
    if kind == "customer":
        return Customer(d["id"], d["name"], _budgets_from_doc(d.get("budgets")),
                        _rate_limit_from_doc(d.get("rate_limit")), d.get("created_at", 0.0),
                        d.get("updated_at", 0.0), d.get("source", "api"))
    if kind == "team":
        return Team(d["id"], d["name"], d.get("customer_id"), d.get("bundle"), _budgets_from_doc(d.get("budgets")),
                    _rate_limit_from_doc(d.get("rate_limit")), d.get("created_at", 0.0), d.get("updated_at", 0.0),
                    d.get("source", "api"))
    rules = [ProviderRule(r["provider"], list(r.get("allowed_models") or []), float(r.get("weight", 1.0)),
                          _budgets_from_doc(r.get("budgets")), _rate_limit_from_doc(r.get("rate_limit")))
             for r in d.get("provider_configs") or []]
    return VirtualKey(d["id"], d["name"], d["value_hash"], d.get("value_hint", ""), d.get("description", ""),
                      bool(d.get("is_active", True)), d.get("expires_at"), d.get("team_id"), d.get("customer_id"),
                      d.get("bundle"), rules, _budgets_from_doc(d.get("budgets")),
                      _rate_limit_from_doc(d.get("rate_limit")), d.get("created_at", 0.0), d.get("updated_at", 0.0),
                      d.get("source", "api"))


# --- from API bodies, YAML and the CLI ---------------------------------------------------------

def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _opt_str(body: dict, name: str, path: str, problems: list[str]) -> str | None:
    v = body.get(name)
    if v is None or isinstance(v, str):
        return v or None
    problems.append(f"{path}.{name}: expected a string, found {v!r}")
    return None


def _duration(v, path: str, problems: list[str]) -> str | None:
    if v is None or v == "":
        return None
    try:
        periods.parse(v)
    except ValueError as exc:
        problems.append(f"{path}: {exc}")
        return None
    return v


def parse_budgets(body: dict, owner: str, existing: list[Budget] | None, path: str,
                  problems: list[str]) -> list[Budget] | None:
    """``budget: {...}`` or ``budgets: [{...}]``; None when neither is given (unchanged)."""
    if "budget" not in body and "budgets" not in body:
        return None
    items = []
    if "budgets" in body and body["budgets"] is not None:
        if not isinstance(body["budgets"], list):
            problems.append(f"{path}.budgets: expected a list, found {body['budgets']!r}")
            return []
        items = [(f"{path}.budgets[{i}]", b) for i, b in enumerate(body["budgets"])]
    if "budget" in body and body["budget"] is not None:
        items.insert(0, (f"{path}.budget", body["budget"]))
    out: list[Budget] = []
    seen = set()
    for p, b in items:
        if not isinstance(b, dict):
            problems.append(f"{p}: expected an object with max_limit and reset_duration, found {b!r}")
            continue
        if not b:            # {} removes, as Bifrost's "budget removal request"
            continue
        unknown = set(b) - {"max_limit", "reset_duration", "id", "current_usage", "last_reset",
                            "calendar_aligned", "created_at", "updated_at", "config_hash"}
        for k in sorted(unknown):
            problems.append(f"{p}.{k}: unknown key (known keys: max_limit, reset_duration)")
        reset = b.get("reset_duration", ...)
        limit = b.get("max_limit", ...)
        if (reset is ... or limit is ...) and existing:
            # A partial update of the (first) existing budget.
            if reset is ...:
                reset = existing[0].reset_duration
            if limit is ...:
                limit = existing[0].max_limit
        if limit is ... or not _is_number(limit) or limit < 0:
            problems.append(f"{p}.max_limit: expected a number of USD >= 0, found "
                            f"{'nothing' if limit is ... else repr(limit)}")
            continue
        reset = _duration(None if reset is ... else reset, f"{p}.reset_duration", problems)
        key = reset or "total"
        if key in seen:
            problems.append(f"{p}.reset_duration: two budgets with the same period {key!r}")
            continue
        seen.add(key)
        out.append(Budget(f"{owner}:budget:{key}", float(limit), reset))
    return out


_RL_FIELDS = ("request_max_limit", "request_reset_duration", "token_max_limit", "token_reset_duration")


def parse_rate_limit(body: dict, owner: str, existing: RateLimit | None, path: str,
                     problems: list[str]) -> RateLimit | None | type(...):
    """The ``rate_limit`` block merged onto ``existing``; ``...`` when absent (unchanged)."""
    if "rate_limit" not in body:
        return ...
    block = body["rate_limit"]
    if block is None or block == {}:
        return None
    p = f"{path}.rate_limit"
    if not isinstance(block, dict):
        problems.append(f"{p}: expected an object, found {block!r}")
        return None
    values = existing.doc() if existing else {}
    ignored = {"id", "token_current_usage", "request_current_usage", "token_last_reset",
               "request_last_reset", "created_at", "updated_at", "config_hash"}
    for k in sorted(set(block) - set(_RL_FIELDS) - ignored):
        problems.append(f"{p}.{k}: unknown key (known keys: {', '.join(_RL_FIELDS)})")
    for k in _RL_FIELDS:
        if k in block:
            values[k] = block[k]
    for k in ("request_max_limit", "token_max_limit"):
        v = values.get(k)
        if v is not None and (not _is_number(v) or v < 0 or int(v) != v):
            problems.append(f"{p}.{k}: expected a whole number >= 0, found {v!r}")
            values[k] = None
        elif v is not None:
            values[k] = int(v)
    for k in ("request_reset_duration", "token_reset_duration"):
        values[k] = _duration(values.get(k), f"{p}.{k}", problems)
    if values.get("request_max_limit") is None and values.get("token_max_limit") is None:
        return None
    return RateLimit(f"{owner}:rate_limit", values.get("request_max_limit"), values.get("request_reset_duration"),
                     values.get("token_max_limit"), values.get("token_reset_duration"))


def _parse_rules(body: dict, key_id: str, existing: list[ProviderRule] | None, path: str,
                 problems: list[str]) -> list[ProviderRule] | None:
    if "provider_configs" not in body:
        return None
    items = body["provider_configs"]
    if items is None:
        return []
    if not isinstance(items, list):
        problems.append(f"{path}.provider_configs: expected a list, found {items!r}")
        return []
    old = {r.provider: r for r in existing or []}
    out, seen = [], set()
    for i, item in enumerate(items):
        p = f"{path}.provider_configs[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{p}: expected an object with provider, allowed_models, weight")
            continue
        provider = item.get("provider")
        if not isinstance(provider, str) or not provider:
            problems.append(f"{p}.provider: required, a provider name or glob")
            continue
        if provider in seen:
            problems.append(f"{p}.provider: {provider!r} is listed twice")
            continue
        seen.add(provider)
        known = {"provider", "allowed_models", "weight", "budget", "budgets", "rate_limit", "id",
                 "virtual_key_id", "keys", "key_ids", "budget_id", "rate_limit_id"}
        for k in sorted(set(item) - known):
            problems.append(f"{p}.{k}: unknown key (known keys: provider, allowed_models, weight, budget, "
                            "budgets, rate_limit)")
        models = item.get("allowed_models")
        if models is None:
            models = []
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            problems.append(f"{p}.allowed_models: expected a list of model names or globs")
            models = []
        # "cerebras/llama-3.3-70b" under provider cerebras means "llama-3.3-70b".
        models = [m[len(provider) + 1:] if m.startswith(provider + "/") else m for m in models]
        weight = item.get("weight", 1.0)
        if weight is None:
            weight = 1.0
        if not _is_number(weight) or weight < 0:
            problems.append(f"{p}.weight: expected a number >= 0, found {weight!r}")
            weight = 1.0
        prev = old.get(provider)
        owner = f"vk:{key_id}:pc:{provider}"
        budgets = parse_budgets(item, owner, prev.budgets if prev else None, p, problems)
        if budgets is None:
            budgets = prev.budgets if prev else []
        rl = parse_rate_limit(item, owner, prev.rate_limit if prev else None, p, problems)
        if rl is ...:
            rl = prev.rate_limit if prev else None
        out.append(ProviderRule(provider, models, float(weight), budgets, rl))
    return out


def _check_keys(body: dict, allowed: set[str], path: str, problems: list[str]) -> None:
    for k in sorted(set(body) - allowed):
        problems.append(f"{path}.{k}: unknown key (known keys: {', '.join(sorted(allowed))})")


_READ_ONLY = {"id", "created_at", "updated_at", "source", "config_hash", "value_hint", "teams", "virtual_keys",
              "customer", "team", "value", "calendar_aligned", "mcp_configs", "rate_limit_id", "budget_id"}


def _name(body, existing, path, problems) -> str:
    name = body.get("name", existing.name if existing else None)
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{path}.name: required, a non-empty string")
        return ""
    return name.strip()


def _opt_ref(body: dict, name: str, existing, path: str, problems: list[str]) -> str | None:
    if name not in body:
        return getattr(existing, name) if existing else None
    return _opt_str(body, name, path, problems)


def parse_customer(body: dict, *, existing: Customer | None = None, id: str | None = None,
                   now: float, path: str = "customer", source: str = "api") -> Customer:
    problems: list[str] = []
    if not isinstance(body, dict):
        raise Invalid(f"{path}: expected a JSON object")
    _check_keys(body, {"name", "budget", "budgets", "rate_limit"} | _READ_ONLY, path, problems)
    cid = existing.id if existing else (id or new_id())
    name = _name(body, existing, path, problems)
    budgets = parse_budgets(body, f"customer:{cid}", existing.budgets if existing else None, path, problems)
    if budgets is None:
        budgets = existing.budgets if existing else []
    rl = parse_rate_limit(body, f"customer:{cid}", existing.rate_limit if existing else None, path, problems)
    if rl is ...:
        rl = existing.rate_limit if existing else None
    if problems:
        raise Invalid(problems)
    return Customer(cid, name, budgets, rl, existing.created_at if existing else now, now,
                    existing.source if existing else source)


def parse_team(body: dict, *, existing: Team | None = None, id: str | None = None, now: float,
               path: str = "team", source: str = "api") -> Team:
    problems: list[str] = []
    if not isinstance(body, dict):
        raise Invalid(f"{path}: expected a JSON object")
    _check_keys(body, {"name", "customer_id", "bundle", "budget", "budgets", "rate_limit"} | _READ_ONLY,
                path, problems)
    tid = existing.id if existing else (id or new_id())
    name = _name(body, existing, path, problems)
    budgets = parse_budgets(body, f"team:{tid}", existing.budgets if existing else None, path, problems)
    if budgets is None:
        budgets = existing.budgets if existing else []
    rl = parse_rate_limit(body, f"team:{tid}", existing.rate_limit if existing else None, path, problems)
    if rl is ...:
        rl = existing.rate_limit if existing else None
    team = Team(tid, name, _opt_ref(body, "customer_id", existing, path, problems),
                _opt_ref(body, "bundle", existing, path, problems), budgets, rl,
                existing.created_at if existing else now, now, existing.source if existing else source)
    if problems:
        raise Invalid(problems)
    return team


_KEY_FIELDS = {"name", "description", "is_active", "expires_at", "team_id", "customer_id", "bundle",
               "provider_configs", "budget", "budgets", "rate_limit", "value", "optional"} | _READ_ONLY


def parse_virtual_key(body: dict, *, existing: VirtualKey | None = None, id: str | None = None,
                      value: str | None = None, now: float, path: str = "virtual_key",
                      source: str = "api") -> VirtualKey:
    """A key from a body. ``value`` is the secret when creating (hashed here, never kept)."""
    problems: list[str] = []
    if not isinstance(body, dict):
        raise Invalid(f"{path}: expected a JSON object")
    _check_keys(body, _KEY_FIELDS, path, problems)
    kid = existing.id if existing else (id or new_id())
    name = _name(body, existing, path, problems)
    description = body.get("description", existing.description if existing else "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        problems.append(f"{path}.description: expected a string")
        description = ""
    active = body.get("is_active", existing.is_active if existing else True)
    if active is None:
        active = True
    if not isinstance(active, bool):
        problems.append(f"{path}.is_active: expected true or false, found {active!r}")
        active = True
    if "expires_at" in body:
        expires = parse_time(body["expires_at"], f"{path}.expires_at", problems)
    else:
        expires = existing.expires_at if existing else None
    team_id = _opt_ref(body, "team_id", existing, path, problems)
    customer_id = _opt_ref(body, "customer_id", existing, path, problems)
    if "team_id" in body and body["team_id"] and "customer_id" not in body:
        customer_id = None          # attaching to a team detaches from a customer (Bifrost)
    elif "customer_id" in body and body["customer_id"] and "team_id" not in body:
        team_id = None
    if team_id and customer_id:
        problems.append(f"{path}: a virtual key belongs to a team or to a customer, not both "
                        "(the team's customer applies through the team)")
    rules = _parse_rules(body, kid, existing.provider_configs if existing else None, path, problems)
    if rules is None:
        rules = existing.provider_configs if existing else []
    budgets = parse_budgets(body, f"vk:{kid}", existing.budgets if existing else None, path, problems)
    if budgets is None:
        budgets = existing.budgets if existing else []
    rl = parse_rate_limit(body, f"vk:{kid}", existing.rate_limit if existing else None, path, problems)
    if rl is ...:
        rl = existing.rate_limit if existing else None
    if existing is not None:
        vhash, vhint = existing.value_hash, existing.value_hint
    else:
        if value is None:
            problems.append(f"{path}.value: a key needs a value")
            vhash = vhint = ""
        else:
            vhash, vhint = hash_value(value), value_hint(value)
    bundle = _opt_ref(body, "bundle", existing, path, problems)
    if problems:
        raise Invalid(problems)
    return VirtualKey(kid, name, vhash, vhint, description, active, expires, team_id, customer_id,
                      bundle, rules, budgets, rl,
                      existing.created_at if existing else now, now, existing.source if existing else source)


PARSERS = {"customer": parse_customer, "team": parse_team, "virtual_key": parse_virtual_key}
