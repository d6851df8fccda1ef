"""Fixtures for the fallbacks plugin's end-to-end tests."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from hookway.testing import FakeOpenAI, run_gateway  # noqa: E402
from fallbacks_helpers import HeaderAuth, RecordSink  # noqa: E402


@pytest.fixture
def upstreams():
    made = []

    def make() -> FakeOpenAI:
        fake = FakeOpenAI().start()
        made.append(fake)
        return fake
    yield make
    for fake in made:
        fake.stop()


@pytest.fixture
def gateway_factory(tmp_path):
    """``start(config)`` with the test sink and header auth; stopped at the end. ``stop`` lets a
    test restart a gateway on the same data directory."""
    RecordSink.records = []
    started = []

    def start(config: dict):
        config = {**config, "server": {"data_dir": str(tmp_path / "data"), **config.get("server", {})}}
        plugins = dict(config.get("plugins", {}))
        plugins.setdefault("sink", {})
        plugins.setdefault("headerauth", {})
        config["plugins"] = plugins
        gw = run_gateway(config, {"sink": RecordSink, "headerauth": HeaderAuth})
        started.append(gw)
        return gw
    yield start
    for gw in started:
        gw.stop()
