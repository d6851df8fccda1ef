"""Fixtures for the routing plugin's end-to-end tests (shared tools from hookway.testing)."""

import pytest


@pytest.fixture
def upstreams(fake_upstreams):
    return fake_upstreams


@pytest.fixture
def gateway_factory(start_test_gateway):
    return start_test_gateway
