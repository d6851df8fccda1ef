"""The plugin class: entry point, registrations, settings schema."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from aiohttp import web

from hookway.config import ConfigError
from hookway_openai import OpenAIAdapter, OpenAIPlugin
from hookway_openai.dialect import OpenAIDialect


def test_entry_point_is_installed():
    eps = {ep.name: ep.value for ep in entry_points(group="hookway")}
    assert eps["openai"] == "hookway_openai:OpenAIPlugin"


def test_registers_dialect_and_provider_type():
    plugin = OpenAIPlugin()
    dialects, providers = [], {}
    plugin.hookway_register_dialects(register=dialects.append)
    plugin.hookway_register_providers(register=lambda name, cls: providers.__setitem__(name, cls))
    assert len(dialects) == 1 and isinstance(dialects[0], OpenAIDialect) and dialects[0].name == "openai"
    assert providers == {"openai": OpenAIAdapter}


def test_routes_registered():
    app = web.Application()
    OpenAIPlugin().hookway_register_routes(router=app.router, gateway=object())
    routes = {(r.method, r.resource.canonical) for r in app.router.routes()}
    for prefix in ("", "/openai"):
        for path in ("chat/completions", "completions", "embeddings", "responses",
                     # routed so that a provider without them answers 400 unsupported_operation
                     "images/generations", "images/edits", "images/variations", "audio/speech",
                     "audio/transcriptions", "audio/translations", "batches"):
            assert ("POST", f"{prefix}/v1/{path}") in routes
        assert ("GET", f"{prefix}/v1/models") in routes
        assert ("GET", f"{prefix}/v1/models/{{model}}") in routes


def test_settings_are_refused(start_gateway):
    with pytest.raises(ConfigError) as exc:
        start_gateway({"plugins": {"openai": {"colour": "blue"}}})
    assert any("plugins.openai.colour" in p for p in exc.value.problems)
