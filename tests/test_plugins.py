"""Plugin loading and the compiled per-request dispatch."""

import asyncio

import pytest

from hookway import hookimpl
from hookway.config import ConfigError, build
from hookway.plugins import load


class Declines:
    @hookimpl
    async def hookway_route(self, ctx):
        await asyncio.sleep(0)
        return None


class Answers:
    @hookimpl(trylast=True)
    async def hookway_route(self, ctx):
        return ["answer"]


class First:
    @hookimpl(tryfirst=True)
    def hookway_route(self, ctx):
        return ["first"] if ctx == "pick-first" else None


class Misspelled:
    @hookimpl
    def hookway_rout(self, ctx):
        return None


class WithSchema:
    @hookimpl
    def hookway_config_schema(self):
        return {"type": "object", "properties": {"ttl": {"type": "integer"}}, "additionalProperties": False}

    @hookimpl
    def hookway_configure(self, settings, gateway):
        self.ttl = settings.get("ttl")


def loaded(plugins, extra, bundles=None):
    return load(build({"plugins": plugins, "bundles": bundles or {}}), gateway=None, available={}, extra=extra)


def test_async_firstresult_that_declines_lets_the_next_one_answer():
    lp = loaded({"declines": {}, "answers": {}, "first": {}},
                {"declines": Declines, "answers": Answers, "first": First})
    route = lp.tables[None].route
    assert asyncio.run(route("anything")) == ["answer"]
    assert asyncio.run(route("pick-first")) == ["first"]


def test_unimplemented_hooks_compile_to_none():
    lp = loaded({"answers": {}}, {"answers": Answers})
    table = lp.tables[None]
    assert table.auth is None and table.cache_lookup is None and table.fallback is None
    assert table.middleware is None and table.stream_transform_factories == ()


def test_misspelled_hook_fails_loudly():
    with pytest.raises(ConfigError, match="hookway_rout"):
        loaded({"bad": {}}, {"bad": Misspelled})


def test_plugin_not_installed_names_the_package():
    with pytest.raises(ConfigError) as info:
        loaded({"routing": {}}, {})
    assert "hookway-routing" in info.value.problems[0]


def test_settings_are_validated_against_the_plugin_schema():
    with pytest.raises(ConfigError) as info:
        loaded({"cache": {"ttl": "long", "colour": 1}}, {"cache": WithSchema})
    assert info.value.problems == [
        "plugins.cache.colour: unknown key (known keys: ttl)",
        "plugins.cache.ttl: expected integer, found a string 'long'",
    ]


def test_bundles_get_their_own_instances_and_tables():
    lp = loaded({"cache": {"ttl": 1}}, {"cache": WithSchema, "answers": Answers},
                bundles={"team-a": {"cache": {"ttl": 2}, "answers": {}}})
    assert lp.instances["cache"].ttl == 1
    assert lp.instances["cache@team-a"].ttl == 2
    assert lp.tables[None].route is None
    assert asyncio.run(lp.tables["team-a"].route(None)) == ["answer"]


class Transforms:
    seen: list = []

    @hookimpl
    async def hookway_transform_request(self, ctx, target):
        Transforms.seen.append((ctx, target))


def test_one_async_implementation_is_called_without_a_wrapper():
    lp = loaded({"t": {}}, {"t": Transforms})
    transform = lp.tables[None].transform_request
    assert transform == lp.instances["t"].hookway_transform_request
    asyncio.run(transform("ctx", "target"))
    assert Transforms.seen == [("ctx", "target")]
