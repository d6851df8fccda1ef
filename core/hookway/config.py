"""Configuration: YAML or JSON, ``env.NAME`` secrets, validation that lists every problem.

Shape::

    server:    {host, port, workers, max_body_bytes, admin_token, log_level, ...}
    plugins:   {name: settings}        only plugins listed here are loaded
    providers: {name: {type, keys, network_config, models}}   Bifrost-compatible
    bundles:   {name: {plugin: settings}}   extra plugins for a team or key (see docs)

Validation is JSON Schema (the ``jsonschema`` package) at load time only; each problem is reported
as ``path: expected ..., found ...``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .providers import NetworkConfig, ProviderConfig, ProviderKey


class ConfigError(Exception):
    """One or more configuration problems; ``problems`` holds one line each."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


_ENV_REF = re.compile(r"^env\.([A-Za-z_][A-Za-z0-9_]*)$")

DURATION = {"type": "string", "pattern": r"^\d+(s|m|h|d|w|M|Y)$"}

_KEY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["value"],
    "properties": {
        "name": {"type": "string"},
        "id": {"type": "string"},
        "value": {"type": ["string", "null"]},
        "models": {"type": "array", "items": {"type": "string"}},
        "weight": {"type": "number", "minimum": 0},
        "optional": {"type": "boolean"},
    },
}

NETWORK_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "base_url": {"type": "string", "pattern": r"^https?://"},
        "extra_headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "default_request_timeout_in_seconds": {"type": "number", "exclusiveMinimum": 0},
        "connect_timeout_in_seconds": {"type": "number", "exclusiveMinimum": 0},
        "first_byte_timeout_in_seconds": {"type": "number", "exclusiveMinimum": 0},
        "max_retries": {"type": "integer", "minimum": 0},
        "retry_backoff_initial": {"type": "integer", "minimum": 0},
        "retry_backoff_max": {"type": "integer", "minimum": 0},
        "max_connections": {"type": "integer", "minimum": 1},
    },
}

PROVIDER_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string"},
        "keys": {"type": "array", "items": _KEY_SCHEMA},
        "network_config": NETWORK_SCHEMA,
        "models": {"type": "array", "items": {"type": "string"}},
        "settings": {"type": "object"},
        # Accepted for Bifrost config.json compatibility; hookway streams without a buffer.
        "concurrency_and_buffer_size": {"type": "object"},
        "send_back_raw_response": {"type": "boolean"},
    },
}

CORE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "server": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "host": {"type": "string"},
                "port": {"type": "integer", "minimum": 0, "maximum": 65535},
                "workers": {"type": "integer", "minimum": 1},
                "max_body_bytes": {"type": "integer", "minimum": 1024},
                "admin_token": {"type": ["string", "null"]},
                "log_level": {"enum": ["debug", "info", "warning", "error"]},
                "log_format": {"enum": ["json", "console"]},
                "ping_interval_seconds": {"type": "number", "exclusiveMinimum": 0},
                "log_queue_size": {"type": "integer", "minimum": 1},
                "log_queue_bytes": {"type": "integer", "minimum": 1024},
                "allow_anonymous": {"type": "boolean"},
                "data_dir": {"type": "string"},
            },
        },
        "plugins": {"type": "object", "additionalProperties": {"type": ["object", "null"]}},
        "providers": {"type": "object", "additionalProperties": PROVIDER_SCHEMA},
        "bundles": {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": {"type": ["object", "null"]}},
        },
    },
}


@dataclass(slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 64 * 1024 * 1024
    admin_token: str | None = None
    log_level: str = "info"
    log_format: str = "console"
    ping_interval_seconds: float = 10.0
    log_queue_size: int = 100_000         # records waiting for the log sinks, at most...
    log_queue_bytes: int = 256 * 1024 * 1024   # ...and at most this much logged content (bodies)
    allow_anonymous: bool | None = None   # None: plugins decide (governance requires keys)
    data_dir: str = "data"                # plugins' embedded stores (SQLite files) live here


@dataclass(slots=True)
class Config:
    server: ServerConfig
    plugins: dict[str, dict]
    providers: dict[str, ProviderConfig]
    bundles: dict[str, dict[str, dict]]
    raw: dict
    path: str | None = None
    warnings: list[str] | None = None


def read_file(path: str | os.PathLike) -> dict:
    """Parse a YAML or JSON file into a dict (ConfigError when it cannot be read)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}")
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {exc}")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


def _path(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema_problems(instance: Any, schema: dict, prefix: list) -> list[str]:
    """Every JSON Schema violation as ``path: expected X, found Y``."""
    problems = []
    validator = jsonschema.Draft202012Validator(schema)
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        path = _path(prefix + list(err.absolute_path))
        v = err.validator
        if v == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            extra = sorted(set(err.instance) - set(allowed))
            for key in extra:
                hint = f" (known keys: {', '.join(allowed)})" if allowed else ""
                problems.append(f"{_path(prefix + list(err.absolute_path) + [key])}: unknown key{hint}")
        elif v == "required":
            problems.append(f"{path}: missing required key {err.message.split(' ')[0]}")
        elif v == "type":
            expected = err.validator_value if isinstance(err.validator_value, str) else " or ".join(err.validator_value)
            problems.append(f"{path}: expected {expected}, found {_kind(err.instance)} {err.instance!r}")
        elif v == "enum":
            problems.append(f"{path}: expected one of {err.validator_value}, found {err.instance!r}")
        elif v == "pattern":
            problems.append(f"{path}: expected a value matching {err.validator_value}, found {err.instance!r}")
        else:
            problems.append(f"{path}: {err.message}")
    return problems


def resolve_env(value: Any, path: list, problems: list[str], optional: bool = False) -> Any:
    """Replace every ``env.NAME`` string with the variable's value, recording missing ones."""
    if isinstance(value, dict):
        opt = bool(value.get("optional")) if "value" in value else optional
        return {k: resolve_env(v, path + [k], problems, opt) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, path + [i], problems, optional) for i, v in enumerate(value)]
    if isinstance(value, str):
        m = _ENV_REF.match(value)
        if m:
            found = os.environ.get(m.group(1))
            if found is None:
                if not optional:
                    problems.append(f"{_path(path)}: environment variable {m.group(1)} is not set")
                return None
            return found
    return value


def normalise_base_url(url: str | None) -> str | None:
    """A URL with no path gets ``/v1`` appended (``https://api.cerebras.ai`` -> ``.../v1``)."""
    if not url:
        return url
    url = url.rstrip("/")
    scheme_end = url.find("://")
    if scheme_end >= 0 and "/" not in url[scheme_end + 3:]:
        url += "/v1"
    return url


def provider_from_dict(name: str, block: dict) -> ProviderConfig:
    """A :class:`ProviderConfig` from an already-validated, env-resolved provider block."""
    keys = []
    for i, k in enumerate(block.get("keys") or []):
        keys.append(ProviderKey(name=k.get("name") or k.get("id") or f"{name}-key-{i + 1}",
                                value=k.get("value"), models=list(k.get("models") or ["*"]),
                                weight=float(k.get("weight", 1.0))))
    keys = [k for k in keys if k.value is not None]   # optional keys whose variable is unset
    net_block = dict(block.get("network_config") or {})
    net_block["base_url"] = normalise_base_url(net_block.get("base_url"))
    net = NetworkConfig(**{k: v for k, v in net_block.items() if v is not None})
    return ProviderConfig(name=name, type=block.get("type") or name, keys=keys, network=net,
                          models=list(block.get("models") or []), settings=dict(block.get("settings") or {}))


def build(raw: dict, path: str | None = None) -> Config:
    """Validate the core part of a raw config and build a :class:`Config`. Plugin settings are
    validated later, against the schemas the plugins declare (see plugins.py)."""
    problems = schema_problems(raw, CORE_SCHEMA, [])
    resolved = resolve_env(raw, [], problems)
    if problems:
        raise ConfigError(problems)
    server_block = dict(resolved.get("server") or {})
    server = ServerConfig(**server_block)
    if server.admin_token is not None and len(server.admin_token) < 32:
        raise ConfigError("server.admin_token: expected at least 32 characters, "
                          f"found {len(server.admin_token)}")
    providers = {name: provider_from_dict(name, block or {})
                 for name, block in (resolved.get("providers") or {}).items()}
    warnings = []
    for name, block in (resolved.get("providers") or {}).items():
        declared = (block or {}).get("keys") or []
        if declared and not providers[name].keys:
            warnings.append(f"providers.{name}: no key is set (optional keys whose variables are "
                            "missing); requests go upstream without one")
    plugins = {k: (v or {}) for k, v in (resolved.get("plugins") or {}).items()}
    bundles = {b: {k: (v or {}) for k, v in (block or {}).items()}
               for b, block in (resolved.get("bundles") or {}).items()}
    if path and not os.path.isabs(server.data_dir):
        # Relative to the config file, so `serve` finds the same data from any working directory.
        server.data_dir = os.path.join(os.path.dirname(os.path.abspath(path)), server.data_dir)
    return Config(server=server, plugins=plugins, providers=providers, bundles=bundles, raw=raw,
                  path=path, warnings=warnings)


def load(path: str | os.PathLike) -> Config:
    return build(read_file(path), str(path))
