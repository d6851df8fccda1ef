"""Shared helpers for the governance tests (imported as ``governance_testing``; conftest.py puts
this directory on sys.path): a gateway in front of the fake OpenAI upstream with
two providers (``up`` and ``up2``), simple prices, and small clients for the management API."""

from __future__ import annotations

import time

import httpx
import openai

ADMIN_TOKEN = "t" * 40
# 10 prompt tokens at $1000/M + 5 completion tokens at $2000/M: every default request costs $0.02.
PRICING = {"up/*": {"input": 1000, "output": 2000}, "up2/*": {"input": 1000, "output": 2000}}
COST = 0.02


def gateway_config(fake_upstream, tmp_path, governance=None, server=None, plugins=None, bundles=None):
    cfg = {
        "server": {"data_dir": str(tmp_path / "data"), **(server or {})},
        "plugins": {"openai": {}, "governance": {"pricing": PRICING, "sync_interval_seconds": 0.05,
                                                 **(governance or {})}, **(plugins or {})},
        "providers": {
            "up": {"type": "openai", "keys": [{"value": "sk-upstream-1"}],
                   "network_config": {"base_url": fake_upstream.url}, "models": ["m", "llama-3.3-70b"]},
            "up2": {"type": "openai", "keys": [{"value": "sk-upstream-2"}],
                    "network_config": {"base_url": fake_upstream.url}, "models": ["m2"]},
        },
    }
    if bundles:
        cfg["bundles"] = bundles
    return cfg


class Admin:
    """The management API, as curl would use it."""

    def __init__(self, url: str, token: str | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=10)

    def post(self, path, body):
        return self.http.post(path, json=body)

    def get(self, path):
        return self.http.get(path)

    def put(self, path, body):
        return self.http.put(path, json=body)

    def delete(self, path):
        return self.http.delete(path)

    def key(self, **body) -> tuple[str, str]:
        """Create a virtual key; (id, value)."""
        body.setdefault("name", f"key-{time.monotonic_ns()}")
        r = self.post("/api/governance/virtual-keys", body)
        assert r.status_code == 200, r.text
        vk = r.json()["virtual_key"]
        return vk["id"], vk["value"]

    def team(self, **body) -> str:
        r = self.post("/api/governance/teams", body)
        assert r.status_code == 200, r.text
        return r.json()["team"]["id"]

    def customer(self, **body) -> str:
        r = self.post("/api/governance/customers", body)
        assert r.status_code == 200, r.text
        return r.json()["customer"]["id"]


def plugin_of(gw):
    return gw.gateway.plugins.instances["governance"]


def client(gw, key: str | None) -> openai.OpenAI:
    """The official SDK with ``key`` as its api key; None sends no Authorization header at all."""
    if key is None:
        def strip(request: httpx.Request) -> None:
            request.headers.pop("Authorization", None)
        return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10,
                             http_client=httpx.Client(event_hooks={"request": [strip]}))
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10)


def chat(c: openai.OpenAI, model: str = "up/m", **kw):
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}], **kw)


class Clock:
    """A settable clock for the engine: resets without sleeping."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def set_clock(gw) -> Clock:
    clock = Clock()
    plugin_of(gw).engine.clock = clock
    return clock


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.02):
    """Poll until ``predicate()`` is truthy (for effects of the background sync, or of a request
    that finishes after its answer reached the client). The deadline only bounds a failure."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)
