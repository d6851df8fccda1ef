"""Bifrost-compatible provider management: ``/api/providers`` at run time.

``GET|POST /api/providers`` (a POST of a provider declared only in the YAML, not yet created or
changed through the API, takes it over as a create; otherwise an existing provider is a 409),
``GET|PUT|DELETE /api/providers/{provider}``, and the keys of one
provider: ``GET|POST /api/providers/{provider}/keys``, ``PUT|DELETE .../keys/{key_id}``. A change
takes effect for the next request (``gateway.set_provider`` / ``remove_provider``), is stored in
SQLite and applied again at the next start. Key values are never returned in clear: ``env.NAME``
references are shown as they are, literal values redacted (``sk-p****…****abcd``); a redacted value
sent back in a PUT keeps the stored one, so GET-edit-PUT round trips work.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor


from hookway import hookimpl, storage
from hookway.admin import AdminError, admin_json, admin_only, json_object_body
from hookway.config import NETWORK_SCHEMA, PROVIDER_SCHEMA, provider_from_dict, resolve_env, schema_problems

from .store import Store

log = logging.getLogger("hookway.management")

_KEY_FIELDS = ("id", "name", "value", "models", "weight", "optional")
_NETWORK_FIELDS = set(NETWORK_SCHEMA["properties"])
# Bifrost provider fields hookway accepts and ignores (it streams without buffers, has no proxy...).
_IGNORED = {"concurrency_and_buffer_size", "proxy_config", "send_back_raw_request", "send_back_raw_response",
            "store_raw_request_response", "openai_config", "prompt_cache", "provider_status", "status",
            "description", "config_hash", "name"}


def block_hash(block: dict) -> str:
    return hashlib.sha256(json.dumps(block, sort_keys=True, default=str).encode()).hexdigest()


def redact(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value.startswith("env."):
        return value                       # a variable's name is not a secret
    value = str(value)
    if len(value) <= 12:
        return "*" * len(value)
    return value[:4] + "*" * min(len(value) - 8, 24) + value[-4:]


def _key_id(provider: str, key: dict, i: int) -> str:
    return key.get("id") or key.get("name") or f"{provider}-key-{i + 1}"


class ManagementPlugin:
    def __init__(self) -> None:
        self.blocks: dict[str, dict] = {}        # provider name -> stored block (env refs kept)
        self.applied: dict[str, str] = {}        # provider name -> hash of the block now running
        self.version = 0
        self.store: Store | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.task: asyncio.Task | None = None
        self.lock: asyncio.Lock | None = None

    @hookimpl
    def hookway_config_schema(self):
        return {"type": "object", "additionalProperties": False, "properties": {
            "database": {"type": "string"},
            "sync_interval_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 60}}}

    @hookimpl
    def hookway_configure(self, settings, gateway):
        self.gateway = gateway
        database = settings.get("database", "management.db")
        data_dir = gateway.config.server.data_dir
        self.db_path = database if os.path.isabs(database) else os.path.join(data_dir, database)
        self.interval = float(settings.get("sync_interval_seconds", 1.0))
        # The YAML's blocks as written (env.NAME unresolved), what the store compares against.
        self.yaml = {name: dict(block or {}) for name, block in (gateway.config.raw.get("providers") or {}).items()}

    # --- life cycle ---

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args))

    @hookimpl
    def hookway_cleanup_ctx(self, gateway):
        async def lifecycle(app):
            self.lock = asyncio.Lock()
            self.executor = ThreadPoolExecutor(1, thread_name_prefix="hookway-management")
            self.store = await self.run(Store, self.db_path)
            self.applied = {name: block_hash(block) for name, block in self.yaml.items()}
            declared = {name: (block, block_hash(block)) for name, block in self.yaml.items()}
            for line in await self.run(self.store.apply_yaml, declared):
                log.info("management: %s", line)
            await self.reload()
            self.task = asyncio.ensure_future(self._poll())
            try:
                yield
            finally:
                self.task.cancel()
                try:
                    await self.task
                except asyncio.CancelledError:
                    pass
                await self.run(self.store.close)
                self.executor.shutdown(wait=True)
        return lifecycle

    async def _poll(self) -> None:
        """Notice changes made by another worker process sharing the store."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                if await self.run(self.store.version) != self.version:
                    async with self.lock:
                        await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("management: reading the store failed; will retry")

    async def reload(self) -> None:
        blocks, self.version = await self.run(self.store.load)
        for name, block in blocks.items():
            try:
                if block is None:
                    if name in self.gateway.adapters:
                        await self.gateway.remove_provider(name)
                    self.applied.pop(name, None)
                elif self.applied.get(name) != block_hash(block):
                    await self.gateway.set_provider(self.build(name, block))
                    self.applied[name] = block_hash(block)
            except AdminError as exc:
                log.error("management: provider %s from the store cannot be applied: %s", name, exc)
        for name in [n for n in self.applied if n not in blocks]:
            await self.gateway.remove_provider(name)
            del self.applied[name]
        self.blocks = {n: b for n, b in blocks.items() if b is not None}

    def wrote(self, versions: tuple[int, int]) -> None:
        before, after = versions
        if before == self.version:
            self.version = after

    # --- blocks ---

    def build(self, name: str, block: dict):
        """The running config of a stored block: env.NAME resolved, type known."""
        problems: list[str] = []
        resolved = resolve_env(block, ["providers", name], problems)
        if problems:
            raise AdminError(problems)
        pconf = provider_from_dict(name, resolved)
        if pconf.type not in self.gateway.adapter_types:
            raise AdminError(f"providers.{name}.type: {pconf.type!r} is provided by no enabled plugin "
                          f"(enabled types: {', '.join(sorted(self.gateway.adapter_types))}); set \"type\" "
                          "or custom_provider_config.base_provider_type for a custom provider")
        problems = self.gateway.provider_settings_problems(pconf)
        if problems:
            raise AdminError(problems)
        return pconf

    def merge(self, name: str, body: dict, existing: dict | None) -> tuple[dict, list[str]]:
        """A Bifrost-shaped body onto a stored block (absent fields kept). (block, warnings)."""
        if not isinstance(body, dict):
            raise AdminError("the request body must be a JSON object")
        block = json.loads(json.dumps(existing)) if existing else {}
        warnings = []
        for field, value in body.items():
            if field == "provider":
                continue
            if field == "keys":
                if value is None:
                    value = []
                if not isinstance(value, list):
                    raise AdminError(f"providers.{name}.keys: expected a list of keys")
                block["keys"] = [self._key(name, k, i, (existing or {}).get("keys") or [])
                                 for i, k in enumerate(value)]
            elif field == "network_config":
                if value is None:
                    block.pop("network_config", None)
                    continue
                if not isinstance(value, dict):
                    raise AdminError(f"providers.{name}.network_config: expected an object")
                for k in sorted(set(value) - _NETWORK_FIELDS):
                    warnings.append(f"network_config.{k}: ignored (hookway has no such setting)")
                block["network_config"] = {k: v for k, v in value.items() if k in _NETWORK_FIELDS and v is not None}
            elif field in ("type", "models", "settings"):
                if value is None:
                    block.pop(field, None)
                else:
                    block[field] = value
            elif field == "custom_provider_config":
                base = (value or {}).get("base_provider_type") if isinstance(value, dict) else None
                if base and "type" not in body:
                    block["type"] = base
            elif field in _IGNORED:
                continue
            else:
                warnings.append(f"{field}: ignored (hookway has no such setting)")
        problems = schema_problems(block, PROVIDER_SCHEMA, ["providers", name])
        if problems:
            raise AdminError(problems)
        return block, warnings

    @staticmethod
    def _key(provider: str, key, i: int, old_keys: list[dict]) -> dict:
        if not isinstance(key, dict):
            raise AdminError(f"providers.{provider}.keys[{i}]: expected an object with name, value, models, weight")
        out = {k: key[k] for k in _KEY_FIELDS if key.get(k) is not None}
        value = key.get("value")
        if isinstance(value, dict):              # Bifrost's {"value", "env_var", "from_env"}
            value = value.get("env_var") if value.get("from_env") and value.get("env_var") else value.get("value")
            if isinstance(value, str) and value and not value.startswith("env.") and key["value"].get("from_env"):
                value = "env." + value
            out["value"] = value
        kid = _key_id(provider, key, i)
        for j, old in enumerate(old_keys):
            if _key_id(provider, old, j) == kid:
                if out.get("value") is None or out.get("value") == redact(old.get("value")):
                    out["value"] = old.get("value")     # a redacted value sent back: keep the real one
                out.setdefault("id", old.get("id") or kid)
                break
        out.setdefault("id", str(uuid.uuid4()))
        if "value" not in out:
            raise AdminError(f"providers.{provider}.keys[{i}].value: required (a literal or env.NAME)")
        return out

    def view(self, name: str) -> dict:
        block = self.blocks[name]
        keys = [{"id": _key_id(name, k, i), "name": k.get("name") or _key_id(name, k, i),
                 "value": redact(k.get("value")), "models": k.get("models") or ["*"],
                 "weight": k.get("weight", 1.0)} for i, k in enumerate(block.get("keys") or [])]
        return {"name": name, "type": block.get("type") or name, "keys": keys,
                "network_config": block.get("network_config") or {}, "models": block.get("models") or [],
                "concurrency_and_buffer_size": block.get("concurrency_and_buffer_size") or {},
                "send_back_raw_response": bool(block.get("send_back_raw_response", False)),
                "provider_status": "active" if name in self.gateway.adapters else "error",
                "source": "yaml" if name in self.yaml else "api"}

    def yaml_only(self, name: str) -> bool:
        """The provider exists only because the YAML declares it: its running block is the YAML's,
        not created nor changed through the API. A POST of it takes it over, as a create."""
        return (name in self.blocks and name in self.yaml
                and block_hash(self.blocks[name]) == block_hash(self.yaml[name]))

    async def write(self, fn, *args):
        """A store write; when the store refuses it (a full disk), the API's 507 (or 503)."""
        try:
            return await self.run(fn, *args)
        except Exception as exc:
            if storage.unwritable(exc):
                raise storage.write_refused(exc, self.db_path) from exc
            raise

    async def save(self, name: str, block: dict) -> None:
        pconf = self.build(name, block)          # refuse before storing anything
        self.wrote(await self.write(self.store.put, name, block))   # stored first, then applied
        await self.gateway.set_provider(pconf)
        self.applied[name] = block_hash(block)
        self.blocks[name] = block

    # --- routes ---

    @hookimpl
    def hookway_register_routes(self, router, gateway):
        def existing(name: str) -> dict:
            if name not in self.blocks:
                raise AdminError(f"provider {name!r} not found", status=404)
            return self.blocks[name]

        async def list_providers(request):
            views = [self.view(n) for n in sorted(self.blocks)]
            return admin_json({"providers": views, "total": len(views)})

        async def add_provider(request):
            body = await json_object_body(request)
            name = body.get("provider")
            if not isinstance(name, str) or not name or "/" in name:
                raise AdminError("provider: required, a provider name without '/' (e.g. \"cerebras\")")
            async with self.lock:
                takeover = self.yaml_only(name)
                if name in self.blocks and not takeover:
                    raise AdminError(f"provider {name!r} already exists; update it with PUT /api/providers/{name}",
                                  status=409)
                block, warnings = self.merge(name, body, None)
                await self.save(name, block)
            if takeover:
                warnings.append(f"provider {name!r} was declared in the YAML: this block replaces it "
                                "(until its YAML block changes)")
            return admin_json({**self.view(name), "warnings": warnings})

        async def get_provider(request):
            name = request.match_info["provider"]
            existing(name)
            return admin_json(self.view(name))

        async def update_provider(request):
            name = request.match_info["provider"]
            body = await json_object_body(request)
            async with self.lock:
                block, warnings = self.merge(name, body, self.blocks.get(name))
                await self.save(name, block)
            return admin_json({**self.view(name), "warnings": warnings})

        async def delete_provider(request):
            name = request.match_info["provider"]
            async with self.lock:
                existing(name)
                self.wrote(await self.write(self.store.delete, name))
                await self.gateway.remove_provider(name)
                self.applied.pop(name, None)
                del self.blocks[name]
            return admin_json({"name": name, "message": "Provider deleted successfully"})

        async def list_keys(request):
            name = request.match_info["provider"]
            existing(name)
            keys = self.view(name)["keys"]
            return admin_json({"keys": keys, "total": len(keys)})

        async def add_key(request):
            name = request.match_info["provider"]
            body = await json_object_body(request)
            async with self.lock:
                block = existing(name)
                keys = list(block.get("keys") or [])
                ids = {_key_id(name, k, i) for i, k in enumerate(keys)}
                if _key_id(name, body, len(keys)) in ids and (body.get("id") or body.get("name")):
                    raise AdminError(f"provider {name!r} already has a key {_key_id(name, body, len(keys))!r}",
                                  status=409)
                new, _ = self.merge(name, {"keys": keys + [body]}, block)
                await self.save(name, new)
            key = self.view(name)["keys"][-1]
            return admin_json({"key": key, "message": "Key added successfully"})

        def key_index(name: str, key_id: str) -> int:
            for i, k in enumerate(existing(name).get("keys") or []):
                if key_id in (_key_id(name, k, i), k.get("name")):
                    return i
            raise AdminError(f"provider {name!r} has no key {key_id!r}", status=404)

        async def update_key(request):
            name, key_id = request.match_info["provider"], request.match_info["key_id"]
            body = await json_object_body(request)
            async with self.lock:
                i = key_index(name, key_id)
                keys = [dict(k) for k in self.blocks[name]["keys"]]
                keys[i] = {**keys[i], **body, "id": keys[i].get("id") or key_id}
                if "name" not in body and "name" not in keys[i]:
                    keys[i]["name"] = key_id
                new, _ = self.merge(name, {"keys": keys}, self.blocks[name])
                await self.save(name, new)
            return admin_json({"key": self.view(name)["keys"][i], "message": "Key updated successfully"})

        async def delete_key(request):
            name, key_id = request.match_info["provider"], request.match_info["key_id"]
            async with self.lock:
                i = key_index(name, key_id)
                keys = [k for j, k in enumerate(self.blocks[name]["keys"]) if j != i]
                new, _ = self.merge(name, {"keys": keys}, self.blocks[name])
                await self.save(name, new)
            return admin_json({"message": "Key deleted successfully"})

        router.add_get("/api/providers", admin_only(list_providers))
        router.add_post("/api/providers", admin_only(add_provider))
        router.add_get("/api/providers/{provider}", admin_only(get_provider))
        router.add_put("/api/providers/{provider}", admin_only(update_provider))
        router.add_delete("/api/providers/{provider}", admin_only(delete_provider))
        router.add_get("/api/providers/{provider}/keys", admin_only(list_keys))
        router.add_post("/api/providers/{provider}/keys", admin_only(add_key))
        router.add_put("/api/providers/{provider}/keys/{key_id}", admin_only(update_key))
        router.add_delete("/api/providers/{provider}/keys/{key_id}", admin_only(delete_key))
