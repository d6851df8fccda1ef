from importlib.metadata import entry_points

from hookway_cerebras import CerebrasAdapter, CerebrasPlugin
from hookway_openai.adapter import OpenAIAdapter


def test_entry_point_and_registration():
    assert {ep.name: ep.value for ep in entry_points(group="hookway")}["cerebras"] == "hookway_cerebras:CerebrasPlugin"
    registered = {}
    CerebrasPlugin().hookway_register_providers(register=lambda name, cls: registered.__setitem__(name, cls))
    assert registered == {"cerebras": CerebrasAdapter} and issubclass(CerebrasAdapter, OpenAIAdapter)


def test_base_url_without_path_gets_v1(fake_upstream, start_gateway):
    gw = start_gateway({"plugins": {"openai": {}, "cerebras": {}}, "providers": {
        "cerebras": {"type": "cerebras", "network_config": {"base_url": "https://api.cerebras.ai"}}}})
    assert gw.gateway.adapters["cerebras"].base_url == "https://api.cerebras.ai/v1"
