"""``POST /api/providers`` of a provider that exists only because the YAML declares it takes it over
(answered as a create), so the issue's walkthrough works against a config that already declares
``cerebras`` — the shipped gateway.yaml does. A provider created or changed through the API is
still a 409."""

from __future__ import annotations

import pathlib

import httpx
import openai
import pytest
import yaml

SHIPPED = pathlib.Path(__file__).resolve().parents[3] / "gateway.yaml"
SECRET = "csk-the-real-secret-value-0123456789"


def walkthrough_body(fake_upstream) -> dict:
    return {
        "provider": "cerebras",
        "keys": [{"name": "cerebras-key-1", "value": "env.CEREBRAS_API_KEY", "models": ["*"], "weight": 1.0}],
        "network_config": {"base_url": fake_upstream.url, "default_request_timeout_in_seconds": 30,
                           "max_retries": 0, "retry_backoff_initial": 500, "retry_backoff_max": 5000}}


def chat(url, key, model):
    c = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=10)
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def yaml_config(tmp_path, governance=False) -> dict:
    plugins = {"openai": {}, "cerebras": {}, "management": {"sync_interval_seconds": 0.05}}
    if governance:
        plugins["governance"] = {"sync_interval_seconds": 0.05}
    return {"server": {"data_dir": str(tmp_path / "data")}, "plugins": plugins, "providers": {
        "cerebras": {"keys": [{"name": "cerebras-key-1", "value": "env.CEREBRAS_API_KEY", "models": ["*"],
                               "weight": 1.0, "optional": True}],
                     "network_config": {"base_url": "https://api.cerebras.ai/v1", "max_retries": 2},
                     "models": ["llama-3.3-70b", "gpt-oss-120b"]}}}


def test_post_takes_over_a_provider_declared_only_in_the_yaml(fake_upstream, start_gateway, tmp_path, monkeypatch):
    monkeypatch.setenv("CEREBRAS_API_KEY", SECRET)
    gw = start_gateway(yaml_config(tmp_path))
    http = httpx.Client(base_url=gw.url, timeout=10)
    assert http.get("/api/providers/cerebras").json()["source"] == "yaml"
    r = http.post("/api/providers", json=walkthrough_body(fake_upstream))
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["name"] == "cerebras" and view["keys"][0]["value"] == "env.CEREBRAS_API_KEY"
    assert view["network_config"]["base_url"] == fake_upstream.url
    assert any("YAML" in w for w in view["warnings"])
    # The new block is running: requests go to the base_url given in the POST.
    assert chat(gw.url, "x", "cerebras/llama-3.3-70b").choices[0].message.content == "hello"
    assert fake_upstream.last.headers["authorization"] == f"Bearer {SECRET}"
    # Now it was created through the API: a second POST is a conflict.
    r = http.post("/api/providers", json=walkthrough_body(fake_upstream))
    assert r.status_code == 409 and "already exists" in r.json()["error"]["message"]


def test_the_takeover_survives_a_restart_and_then_post_is_a_conflict(fake_upstream, start_gateway, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("CEREBRAS_API_KEY", SECRET)
    cfg = yaml_config(tmp_path)
    gw = start_gateway(cfg)
    assert httpx.post(gw.url + "/api/providers", json=walkthrough_body(fake_upstream)).status_code == 200
    gw.stop()
    gw = start_gateway(cfg)
    assert chat(gw.url, "x", "cerebras/llama-3.3-70b").choices[0].message.content == "hello"
    assert httpx.post(gw.url + "/api/providers", json=walkthrough_body(fake_upstream)).status_code == 409


def test_a_yaml_provider_changed_through_the_api_is_a_conflict(fake_upstream, start_gateway, tmp_path, monkeypatch):
    monkeypatch.setenv("CEREBRAS_API_KEY", SECRET)
    gw = start_gateway(yaml_config(tmp_path))
    http = httpx.Client(base_url=gw.url, timeout=10)
    r = http.put("/api/providers/cerebras", json={"network_config": {"base_url": fake_upstream.url}})
    assert r.status_code == 200, r.text
    r = http.post("/api/providers", json=walkthrough_body(fake_upstream))
    assert r.status_code == 409, r.text


def test_a_provider_created_through_the_api_is_still_a_conflict(fake_upstream, start_gateway, tmp_path):
    gw = start_gateway(yaml_config(tmp_path))
    http = httpx.Client(base_url=gw.url, timeout=10)
    body = {"provider": "extra", "type": "openai", "keys": [{"name": "k", "value": "sk-extra-key-00000000"}],
            "network_config": {"base_url": fake_upstream.url}}
    assert http.post("/api/providers", json=body).status_code == 200
    r = http.post("/api/providers", json=body)
    assert r.status_code == 409 and "already exists" in r.json()["error"]["message"]


def test_the_issue_walkthrough_against_the_shipped_gateway_yaml(fake_upstream, start_gateway, tmp_path,
                                                               monkeypatch):
    if not SHIPPED.exists():
        pytest.skip("gateway.yaml is not next to the plugins")
    raw = yaml.safe_load(SHIPPED.read_text())
    assert "cerebras" in raw["providers"]
    raw["server"] = {**raw.get("server", {}), "data_dir": str(tmp_path / "data")}
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HOOKWAY_ADMIN_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CEREBRAS_API_KEY", SECRET)
    gw = start_gateway(raw)
    http = httpx.Client(base_url=gw.url, timeout=10)
    # The issue's walkthrough, unchanged (but for the base_url of the fake Cerebras).
    r = http.post("/api/providers", json=walkthrough_body(fake_upstream))
    assert r.status_code == 200, r.text
    assert r.json()["keys"][0]["value"] == "env.CEREBRAS_API_KEY"
    r = http.post("/api/governance/virtual-keys", json={
        "name": "claude-code-cerebras", "is_active": True,
        "provider_configs": [{"provider": "cerebras", "allowed_models": ["*"], "weight": 1.0}]})
    assert r.status_code == 200, r.text
    value = r.json()["virtual_key"]["value"]
    assert chat(gw.url, value, "cerebras/llama-3.3-70b").choices[0].message.content == "hello"
    assert fake_upstream.last.headers["authorization"] == f"Bearer {SECRET}"
    with pytest.raises(openai.AuthenticationError):
        chat(gw.url, "sk-hw-someone-else-00000000000000000000", "cerebras/llama-3.3-70b")
    assert SECRET not in http.get("/api/providers").text
