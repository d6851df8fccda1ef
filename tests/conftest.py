"""Fixtures for the core tests."""

import pytest

from echo_plugin import EchoAdapter, EchoPlugin, echo_config


@pytest.fixture
def echo_gateway(start_gateway):
    EchoAdapter.calls.clear()

    def start(config=None, extra_plugins=None):
        return start_gateway(config or echo_config(), {"echo": EchoPlugin, **(extra_plugins or {})})
    return start
