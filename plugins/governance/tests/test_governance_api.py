"""The Bifrost-compatible management API: CRUD with curl-shaped payloads, validation, admin token."""

from __future__ import annotations

import httpx
import openai
import pytest

from governance_testing import ADMIN_TOKEN, chat, client


def test_customers_teams_and_keys_crud_with_bifrost_payloads(gov):
    gw, admin = gov()
    r = admin.post("/api/governance/customers", {"name": "Acme", "budget": {"max_limit": 100, "reset_duration": "1M"}})
    assert r.status_code == 200 and r.json()["message"] == "Customer created successfully"
    customer = r.json()["customer"]
    assert customer["budget"] == {"id": f"customer:{customer['id']}:budget:1M", "max_limit": 100,
                                  "reset_duration": "1M", "current_usage": 0, "last_reset": customer["budget"]["last_reset"]}

    r = admin.post("/api/governance/teams", {"name": "platform", "customer_id": customer["id"],
                                             "budget": {"max_limit": 20.5, "reset_duration": "1w"}})
    team = r.json()["team"]
    assert team["customer_id"] == customer["id"] and team["budget"]["max_limit"] == 20.5

    r = admin.post("/api/governance/virtual-keys", {
        "name": "claude-code-cerebras", "description": "for the CLI", "is_active": True,
        "team_id": team["id"],
        "provider_configs": [{"provider": "up", "allowed_models": ["*"], "weight": 1.0}],
        "budget": {"max_limit": 10.5, "reset_duration": "1M"},
        "rate_limit": {"token_max_limit": 100000, "token_reset_duration": "1h",
                       "request_max_limit": 100, "request_reset_duration": "1m"}})
    assert r.status_code == 200 and r.json()["message"] == "Virtual key created successfully"
    vk = r.json()["virtual_key"]
    value = vk["value"]
    assert value.startswith("sk-hw-") and vk["value_hint"] == value[:10] + "…" + value[-4:]
    assert vk["team"] == {"id": team["id"], "name": "platform"}
    assert vk["rate_limit"]["request_max_limit"] == 100 and vk["rate_limit"]["token_reset_duration"] == "1h"
    assert vk["provider_configs"][0]["provider"] == "up"

    # Lists and reads never show the value again.
    listing = admin.get("/api/governance/virtual-keys").json()
    assert listing["count"] == 1 and "value" not in listing["virtual_keys"][0]
    assert value not in admin.get(f"/api/governance/virtual-keys/{vk['id']}").text
    assert admin.get(f"/api/governance/virtual-keys?team_id={team['id']}").json()["count"] == 1
    assert admin.get("/api/governance/virtual-keys?team_id=other").json()["count"] == 0
    assert admin.get(f"/api/governance/teams/{team['id']}").json()["team"]["virtual_keys"] == [vk["id"]]
    assert admin.get("/api/governance/customers").json()["customers"][0]["teams"] == [team["id"]]

    chat(client(gw, value))

    # Partial update: what is absent is kept.
    r = admin.put(f"/api/governance/virtual-keys/{vk['id']}", {"name": "renamed", "rate_limit": {"request_max_limit": 5}})
    updated = r.json()["virtual_key"]
    assert updated["name"] == "renamed" and updated["description"] == "for the CLI"
    assert updated["rate_limit"]["request_max_limit"] == 5 and updated["rate_limit"]["request_reset_duration"] == "1m"
    assert updated["rate_limit"]["request_current_usage"] == 1
    r = admin.put(f"/api/governance/teams/{team['id']}", {"budget": None})
    assert r.json()["team"]["budget"] is None

    # Deleting the team detaches its key; deleting the key revokes it.
    assert admin.delete(f"/api/governance/teams/{team['id']}").json()["message"] == "Team deleted successfully"
    assert admin.get(f"/api/governance/teams/{team['id']}").status_code == 404
    assert admin.get(f"/api/governance/virtual-keys/{vk['id']}").json()["virtual_key"]["team_id"] is None
    assert admin.delete(f"/api/governance/virtual-keys/{vk['id']}").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        chat(client(gw, value))
    assert admin.delete(f"/api/governance/virtual-keys/{vk['id']}").status_code == 404
    assert admin.delete(f"/api/governance/customers/{customer['id']}").status_code == 200
    assert admin.get("/api/governance/customers").json()["count"] == 0


@pytest.mark.parametrize("body,needle", [
    ({"name": "k", "budget": {"max_limit": 5, "reset_duration": "1x"}}, "invalid reset duration '1x'"),
    ({"name": "k", "budget": {"max_limit": -1, "reset_duration": "1d"}}, "max_limit"),
    ({"name": "k", "team_id": "t", "customer_id": "c"}, "a team or to a customer, not both"),
    ({"name": "k", "team_id": "nope"}, "no team with id 'nope'"),
    ({"name": "k", "bundle": "nope"}, "no bundle named 'nope'"),
    ({"name": "k", "rate_limit": {"request_max_limit": 1.5}}, "whole number"),
    ({"name": "k", "provider_configs": [{"allowed_models": ["*"]}]}, "provider: required"),
    ({"name": "k", "is_active": "yes"}, "is_active"),
    ({"name": "k", "expires_at": "tomorrow"}, "expires_at"),
    ({"name": "k", "colour": "red"}, "colour: unknown key"),
    ({}, "name: required"),
])
def test_invalid_bodies_are_400_naming_the_field(gov, body, needle):
    gw, admin = gov()
    r = admin.post("/api/governance/virtual-keys", body)
    assert r.status_code == 400
    assert needle in r.json()["error"]["message"]


def test_names_are_unique_and_imported_values_must_be_new(gov):
    gw, admin = gov()
    _, value = admin.key(name="one")
    assert admin.post("/api/governance/virtual-keys", {"name": "one"}).status_code == 400
    r = admin.post("/api/governance/virtual-keys", {"name": "two", "value": value})
    assert r.status_code == 409
    # Moving from Bifrost: an existing key value can be imported.
    r = admin.post("/api/governance/virtual-keys", {"name": "imported", "value": "sk-bf-0123456789abcdef0123"})
    assert r.status_code == 200
    assert chat(client(gw, "sk-bf-0123456789abcdef0123")).choices[0].message.content == "hello"


def test_rotate_gives_a_new_value_and_the_old_one_stops_working(gov):
    gw, admin = gov()
    kid, old = admin.key()
    r = admin.post(f"/api/governance/virtual-keys/{kid}/rotate", {})
    new = r.json()["virtual_key"]["value"]
    assert new != old and new.startswith("sk-hw-")
    with pytest.raises(openai.AuthenticationError):
        chat(client(gw, old))
    chat(client(gw, new))


def test_the_admin_token_is_required_when_set(gov):
    gw, admin = gov(server={"admin_token": ADMIN_TOKEN})
    assert admin.get("/api/governance/virtual-keys").status_code == 200       # Bearer token
    for headers in ({}, {"Authorization": "Bearer " + "x" * 40}, {"x-admin-token": "wrong"}):
        r = httpx.get(gw.url + "/api/governance/virtual-keys", headers=headers)
        assert r.status_code == 401
        assert httpx.post(gw.url + "/api/governance/virtual-keys", json={"name": "k"},
                          headers=headers).status_code == 401
    assert httpx.get(gw.url + "/api/governance/teams", headers={"x-admin-token": ADMIN_TOKEN}).status_code == 200
    # A virtual key is not an admin token.
    _, value = admin.key()
    assert httpx.get(gw.url + "/api/governance/teams", headers={"Authorization": f"Bearer {value}"}).status_code == 401
    # Inference still takes virtual keys, not the admin token.
    with pytest.raises(openai.AuthenticationError):
        chat(client(gw, ADMIN_TOKEN))
    chat(client(gw, value))
    assert httpx.get(gw.url + "/health").status_code == 200


def test_bad_json_is_a_400(gov):
    gw, admin = gov()
    r = admin.http.post("/api/governance/teams", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
