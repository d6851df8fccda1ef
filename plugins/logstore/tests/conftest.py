"""Fixtures for the logstore tests: a gateway with the echo dialect/adapter (tests/echo_plugin.py)
and the logstore, its data in a temporary directory."""

from __future__ import annotations

import time

import httpx
import pytest

from echo_plugin import EchoAdapter, EchoPlugin, echo_config

HTTP = httpx.Client(timeout=10)   # one client: creating one per call costs ~100 ms (TLS setup)


@pytest.fixture
def logstore_gateway(start_gateway, tmp_path):
    """``start(settings=None, server=None, providers=None, extra_plugins=None)`` -> RunningGateway."""
    EchoAdapter.calls.clear()

    def start(settings=None, server=None, providers=None, extra_plugins=None, plugins=None):
        config = echo_config(server={"data_dir": str(tmp_path), **(server or {})})
        if providers:
            config["providers"] = {**config["providers"], **providers}
        config["plugins"]["logstore"] = settings or {}
        for name, block in (plugins or {}).items():
            config["plugins"][name] = block
        gw = start_gateway(config, {"echo": EchoPlugin, **(extra_plugins or {})})
        gw.data_dir = tmp_path
        gw.logstore = gw.gateway.plugins.instances["logstore"]
        gw.post = lambda body, **kw: post(gw, body, **kw)
        gw.wait_written = lambda count, timeout=30.0: wait_written(gw, count, timeout)
        gw.api = lambda path, **params: api(gw, path, **params)
        return gw
    return start


def post(gw, body, **kw):
    return HTTP.post(gw.url + "/echo", json=body, timeout=10, **kw)


def wait_written(gw, count: int, timeout: float = 30.0) -> None:
    """Wait until the logstore has written ``count`` records (the deadline only bounds a failure)."""
    store = gw.logstore.store
    deadline = time.monotonic() + timeout
    while store.written < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {store.written} of {count} records written after {timeout}s")
        time.sleep(0.02)


def api(gw, path, **params):
    r = HTTP.get(gw.url + path, params=params, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()
