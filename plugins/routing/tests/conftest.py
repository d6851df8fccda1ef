"""Fixtures for the routing plugin's end-to-end tests."""

from __future__ import annotations

import pytest

from hookway.testing import HeaderIdentity, RecordingSink


@pytest.fixture
def upstreams(fake_upstreams):
    return fake_upstreams


@pytest.fixture
def gateway_factory(start_gateway, tmp_path):
    """``start(config)`` with a recording log sink and header identities, on one data directory
    for the whole test (so a test can restart a gateway on the same stores)."""

    def start(config: dict):
        config = {**config, "server": {"data_dir": str(tmp_path / "data"), **config.get("server", {})}}
        plugins = dict(config.get("plugins", {}))
        plugins.setdefault("sink", {})
        plugins.setdefault("headerauth", {})
        config["plugins"] = plugins
        return start_gateway(config, {"sink": RecordingSink, "headerauth": HeaderIdentity})
    return start
