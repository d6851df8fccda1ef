"""Routing rules: their stored shape, validation, and the compiled matcher.

A rule, as stored and as the API shows it (Bifrost's shape plus hookway's ``match``)::

    {"id": "...", "name": "sonnet", "description": "", "enabled": true,
     "scope": "global" | "virtual_key" | "team" | "customer", "scope_id": null, "priority": 0,
     "match": {"model": "claude-*", "headers": {"x-tier": "premium"}, "key": "...", "team": "..."},
     "cel_expression": null,
     "targets": [{"provider": null, "model": "cerebras/llama-3.3-70b", "weight": 1.0, "key_id": null}],
     "fallbacks": ["anthropic/claude-sonnet-4-6"]}

Matching happens once per request over a :class:`RuleSet` compiled when the rules load or change:
globs become compiled regular expressions, CEL expressions become closures, rules are bucketed by
scope, and the rules that can match a given model are cached per (scope, model), so a request
costs a few dict look-ups plus the header/identity checks of the candidate rules.
"""

from __future__ import annotations

import bisect
import fnmatch
import random
import re
from typing import Any, Iterable

from .cel import CELError, compile_expression

SCOPES = ("virtual_key", "team", "customer", "global")
_SCOPE_ALIASES = {"key": "virtual_key", "vk": "virtual_key", "virtual_key": "virtual_key",
                  "team": "team", "customer": "customer", "global": "global"}

# Pipeline operation -> Bifrost's request_type (for CEL expressions).
REQUEST_TYPES = {"chat": "chat_completion", "completions": "text_completion", "embeddings": "embedding",
                 "responses": "responses", "count_tokens": "count_tokens"}

_MATCH_KEYS = {"model", "models", "header", "headers", "key", "keys", "virtual_key", "team", "teams",
               "customer", "customers"}
_RULE_KEYS = {"id", "name", "description", "enabled", "scope", "scope_id", "priority", "match",
              "cel_expression", "targets", "fallbacks", "query", "chain_rule", "created_at",
              "updated_at", "source"}


class RuleError(ValueError):
    """One or more problems with a rule; ``problems`` holds one line each."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


def _strings(value: Any, where: str, problems: list[str]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return list(value)
    problems.append(f"{where}: expected a string or a list of strings, found {value!r}")
    return []


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def normalize(raw: Any, where: str = "rule", *, providers: Iterable[str] | None = None,
              default_priority: int = 0) -> dict:
    """Validate a rule as written (YAML or API body) and return its canonical dict (without
    ``id``/``source``/timestamps). Raises :class:`RuleError` listing every problem. ``providers``
    (configured provider names) lets names like ``provider/model`` be checked."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise RuleError(f"{where}: expected a mapping, found {type(raw).__name__}")
    for key in sorted(set(raw) - _RULE_KEYS):
        problems.append(f"{where}.{key}: unknown key (known keys: {', '.join(sorted(_RULE_KEYS - {'source'}))})")
    providers = set(providers) if providers is not None else None

    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        problems.append(f"{where}.name: expected a non-empty string")
        name = None
    description = raw.get("description") or ""
    if not isinstance(description, str):
        problems.append(f"{where}.description: expected a string")
        description = ""
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(f"{where}.enabled: expected true or false, found {enabled!r}")
        enabled = True
    priority = raw.get("priority", default_priority)
    if isinstance(priority, bool) or not isinstance(priority, int):
        problems.append(f"{where}.priority: expected an integer, found {priority!r}")
        priority = default_priority

    # --- conditions ---
    match_raw = raw.get("match")
    match: dict = {}
    if match_raw is not None:
        if not isinstance(match_raw, dict):
            problems.append(f"{where}.match: expected a mapping, found {match_raw!r}")
        else:
            for key in sorted(set(match_raw) - _MATCH_KEYS):
                problems.append(f"{where}.match.{key}: unknown key (known: model, headers, key, team, customer)")
            models = _strings(match_raw.get("model"), f"{where}.match.model", problems) + \
                _strings(match_raw.get("models"), f"{where}.match.models", problems)
            for m in models:
                if is_glob(m):
                    try:
                        re.compile(fnmatch.translate(m))
                    except re.error as exc:
                        problems.append(f"{where}.match.model: bad glob {m!r}: {exc}")
            if models:
                match["model"] = models
            headers_raw = {}
            for hkey in ("header", "headers"):
                block = match_raw.get(hkey)
                if block is None:
                    continue
                if not isinstance(block, dict):
                    problems.append(f"{where}.match.{hkey}: expected a mapping of header name to value(s)")
                    continue
                for hname, hval in block.items():
                    if not isinstance(hname, str) or not hname:
                        problems.append(f"{where}.match.{hkey}: header names must be strings")
                        continue
                    vals = _strings(hval, f"{where}.match.{hkey}.{hname}", problems)
                    if vals:
                        headers_raw[hname.lower()] = vals
            if headers_raw:
                match["headers"] = headers_raw
            for out_key, in_keys in (("key", ("key", "keys", "virtual_key")), ("team", ("team", "teams")),
                                     ("customer", ("customer", "customers"))):
                vals = []
                for k in in_keys:
                    vals += _strings(match_raw.get(k), f"{where}.match.{k}", problems)
                if vals:
                    match[out_key] = vals

    cel = raw.get("cel_expression")
    if cel is not None:
        if not isinstance(cel, str):
            problems.append(f"{where}.cel_expression: expected a string")
            cel = None
        elif cel.strip():
            try:
                compile_expression(cel)
            except CELError as exc:
                problems.append(f"{where}.cel_expression: {exc}")
        else:
            cel = None

    # --- scope ---
    scope = raw.get("scope")
    scope_id = raw.get("scope_id")
    if scope is not None:
        if scope not in _SCOPE_ALIASES:
            problems.append(f"{where}.scope: expected one of global, virtual_key, team, customer; found {scope!r}")
            scope = "global"
        else:
            scope = _SCOPE_ALIASES[scope]
        if scope != "global" and not (isinstance(scope_id, str) and scope_id):
            problems.append(f"{where}.scope_id: required (a string) when scope is {scope}")
        if scope == "global":
            scope_id = None
    elif scope_id:
        problems.append(f"{where}.scope_id: given without a scope")
    if scope is None:
        scope = "virtual_key" if "key" in match else "team" if "team" in match else \
            "customer" if "customer" in match else "global"
        scope_id = None   # taken from match.<key|team|customer>, possibly several ids

    # --- targets ---
    targets = []
    traw = raw.get("targets")
    if not isinstance(traw, list) or not traw:
        problems.append(f"{where}.targets: expected a non-empty list of targets "
                        "({model: provider/model, weight: 1.0})")
        traw = []
    for i, t in enumerate(traw):
        tw = f"{where}.targets[{i}]"
        if isinstance(t, str):
            t = {"model": t}
        if not isinstance(t, dict):
            problems.append(f"{tw}: expected a mapping or a provider/model string")
            continue
        for key in sorted(set(t) - {"provider", "model", "weight", "key_id"}):
            problems.append(f"{tw}.{key}: unknown key (known: provider, model, weight, key_id)")
        provider = t.get("provider") or None
        model = t.get("model") or None
        weight = t.get("weight", 1.0)
        key_id = t.get("key_id") or None
        if provider is not None and not isinstance(provider, str):
            problems.append(f"{tw}.provider: expected a string")
        if model is not None and not isinstance(model, str):
            problems.append(f"{tw}.model: expected a string")
        if key_id is not None and not isinstance(key_id, str):
            problems.append(f"{tw}.key_id: expected a string")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            problems.append(f"{tw}.weight: expected a number >= 0, found {weight!r}")
            weight = 1.0
        if providers is not None:
            if isinstance(provider, str) and provider not in providers:
                problems.append(f"{tw}.provider: {provider!r} is not a configured provider "
                                f"(configured: {', '.join(sorted(providers)) or 'none'})")
        targets.append({"provider": provider, "model": model, "weight": float(weight), "key_id": key_id})

    fallbacks = _strings(raw.get("fallbacks"), f"{where}.fallbacks", problems)
    if providers is not None:
        for i, f in enumerate(fallbacks):
            prefix, sep, rest = f.partition("/")
            if not sep or not rest or prefix not in providers:
                problems.append(f"{where}.fallbacks[{i}]: expected provider/model with a configured provider "
                                f"({', '.join(sorted(providers)) or 'none'}), found {f!r}")
    if problems:
        raise RuleError(problems)
    out = {"name": name, "description": description, "enabled": enabled, "scope": scope,
           "scope_id": scope_id, "priority": priority, "match": match or None,
           "cel_expression": cel, "targets": targets, "fallbacks": fallbacks}
    for passthrough in ("query", "chain_rule"):   # kept for Bifrost clients, not acted on
        if passthrough in raw:
            out[passthrough] = raw[passthrough]
    return out


# --- compiled form -----------------------------------------------------------------------------

class CompiledRule:
    __slots__ = ("id", "name", "data", "bucket_keys", "priority", "order", "model_exact", "model_rx",
                 "has_model", "names_prefixed", "headers", "keys", "teams", "customers", "cel",
                 "targets", "cum_weights", "fallbacks", "checks")

    def __init__(self, data: dict, order: int):
        self.data = data
        self.id = data["id"]
        self.name = data.get("name") or data["id"]
        self.priority = data.get("priority", 0)
        self.order = order
        match = data.get("match") or {}
        models = match.get("model") or []
        self.has_model = bool(models)
        self.model_exact = frozenset(m for m in models if not is_glob(m))
        globs = [m for m in models if is_glob(m)]
        self.model_rx = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)) if globs else None
        cel = data.get("cel_expression")
        self.cel = compile_expression(cel) if cel else None
        # A `provider/model` request reaches this rule only if the rule names such a model
        # (a model pattern with a "/"), or, for a CEL rule, tests `provider`.
        self.names_prefixed = any("/" in m for m in models) or (
            self.cel is not None and not models and "provider" in self.cel.names)
        self.headers = tuple((name, frozenset(v for v in vals if not is_glob(v)),
                              re.compile("|".join(f"(?:{fnmatch.translate(v)})" for v in vals if is_glob(v)))
                              if any(is_glob(v) for v in vals) else None)
                             for name, vals in (match.get("headers") or {}).items())
        self.keys = frozenset(match.get("key") or ()) or None
        self.teams = frozenset(match.get("team") or ()) or None
        self.customers = frozenset(match.get("customer") or ()) or None
        scope = data.get("scope") or "global"
        if scope == "global":
            self.bucket_keys = [("global", None)]
        elif data.get("scope_id"):
            self.bucket_keys = [(scope, data["scope_id"])]
        else:   # derived from match.<key|team|customer>: one bucket per id, no need to re-check
            ids = {"virtual_key": self.keys, "team": self.teams, "customer": self.customers}[scope]
            self.bucket_keys = [(scope, i) for i in sorted(ids)]
            if scope == "virtual_key":
                self.keys = None
            elif scope == "team":
                self.teams = None
            else:
                self.customers = None
        self.checks = bool(self.headers or self.keys or self.teams or self.customers or self.cel)
        self.targets = tuple(data["targets"])
        weights = [t["weight"] for t in self.targets]
        if sum(weights) <= 0:
            weights = [1.0] * len(weights)   # all zero: uniform, as Bifrost
        cum, total = [], 0.0
        for w in weights:
            total += w
            cum.append(total)
        self.cum_weights = cum
        self.fallbacks = tuple(data.get("fallbacks") or ())

    def model_matches(self, model: str, prefixed: bool) -> bool:
        if prefixed and not self.names_prefixed:
            return False
        if not self.has_model:
            return True
        return model in self.model_exact or (self.model_rx is not None and self.model_rx.match(model) is not None)

    def conditions_hold(self, headers, identity, variables) -> bool:
        for name, exact, rx in self.headers:
            value = headers.get(name)
            if value is None or not (value in exact or (rx is not None and rx.match(value))):
                return False
        if self.keys is not None and getattr(identity, "key_id", None) not in self.keys:
            return False
        if self.teams is not None and getattr(identity, "team_id", None) not in self.teams:
            return False
        if self.customers is not None and getattr(identity, "customer_id", None) not in self.customers:
            return False
        if self.cel is not None and not self.cel.evaluate(variables()):
            return False
        return True

    def pick(self) -> dict:
        targets = self.targets
        if len(targets) == 1:
            return targets[0]
        # what random.choices(targets, cum_weights=...) does, without its per-call set-up
        cum = self.cum_weights
        i = bisect.bisect(cum, random.random() * cum[-1])
        return targets[i if i < len(targets) else -1]


class RuleSet:
    """The enabled rules, compiled and bucketed by scope; immutable (a change builds a new one)."""

    CACHE_LIMIT = 20_000

    def __init__(self, rules: list[dict]):
        compiled = []
        for order, data in enumerate(rules):
            if data.get("enabled", True):
                compiled.append(CompiledRule(data, order))
        compiled.sort(key=lambda r: (r.priority, r.order))
        self.rules = tuple(compiled)
        buckets: dict[tuple, list[CompiledRule]] = {}
        for rule in compiled:
            for key in rule.bucket_keys:
                buckets.setdefault(key, []).append(rule)
        self.buckets = {k: tuple(v) for k, v in buckets.items()}
        self.scoped = any(k[0] != "global" for k in self.buckets)
        self._global = self.buckets.get(("global", None), ())
        self._candidates: dict[tuple, tuple] = {}

    def __len__(self) -> int:
        return len(self.rules)

    def _chain(self, identity) -> list[tuple]:
        chain = []
        if identity is not None and self.scoped:
            key_id = getattr(identity, "key_id", None)
            if key_id is not None:
                chain.append(("virtual_key", key_id))
            team_id = getattr(identity, "team_id", None)
            if team_id is not None:
                chain.append(("team", team_id))
            customer_id = getattr(identity, "customer_id", None)
            if customer_id is not None:
                chain.append(("customer", customer_id))
        chain.append(("global", None))
        return chain

    def candidates(self, bucket: tuple, model: str, prefixed: bool) -> tuple:
        """The rules of ``bucket`` whose model condition accepts ``model`` (cached)."""
        ck = (bucket, model)
        found = self._candidates.get(ck)
        if found is None:
            rules = self.buckets.get(bucket, ())
            found = tuple(r for r in rules if r.model_matches(model, prefixed))
            if len(self._candidates) >= self.CACHE_LIMIT:
                self._candidates.clear()
            self._candidates[ck] = found
        return found

    def match(self, model: str, prefixed: bool, headers, identity, variables) -> CompiledRule | None:
        """The first rule that matches, in scope order key -> team -> customer -> global, then
        by priority. ``variables`` is a callable building the CEL variables (called only when a
        CEL rule is tried)."""
        if not self.rules:
            return None
        for bucket in self._chain(identity):
            if bucket not in self.buckets:
                continue
            for rule in self.candidates(bucket, model, prefixed):
                if not rule.checks or rule.conditions_hold(headers, identity, variables):
                    return rule
        return None
