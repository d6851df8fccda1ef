"""Fixtures of the governance tests; helpers live in governance_testing.py."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from governance_testing import Admin, gateway_config  # noqa: E402


@pytest.fixture
def gov(fake_upstream, start_gateway, tmp_path):
    """Start a governed gateway: ``gw, admin = gov(governance={...}, server={...})``."""

    def start(**kwargs):
        extra = kwargs.pop("extra_plugins", None)
        token = (kwargs.get("server") or {}).get("admin_token")
        gw = start_gateway(gateway_config(fake_upstream, tmp_path, **kwargs), extra)
        return gw, Admin(gw.url, token)
    return start
