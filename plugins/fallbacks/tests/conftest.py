"""Fixtures for the fallbacks plugin's end-to-end tests (shared tools from hookway.testing)."""

import threading

import pytest


@pytest.fixture
def upstreams(fake_upstreams):
    return fake_upstreams


@pytest.fixture
def gateway_factory(start_test_gateway):
    return start_test_gateway


@pytest.fixture
def record_waits():
    """``record_waits(gw, waiting=None)``: the list of backoff waits the fallbacks plugin of ``gw``
    begins from then on (it still waits them); ``waiting``, a threading.Event, is set when one
    begins. The delays chosen are checked exactly, with no stopwatch to trip on a slow machine."""
    def record(gw, waiting: threading.Event | None = None) -> list[float]:
        plugin = gw.gateway.plugins.instances["fallbacks"]
        waits, sleep = [], plugin.sleep

        async def recording(delay):
            waits.append(delay)
            if waiting is not None:
                waiting.set()
            await sleep(delay)
        plugin.sleep = recording
        return waits
    return record
