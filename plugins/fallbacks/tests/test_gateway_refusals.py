"""Errors the gateway decided itself (``error.provider is None``: a governance rate limit or
refusal of one provider, a provider that is not configured...) are not the provider's fault:
no other key, no retry of the same target, the next target at once — and the chain goes on."""

from __future__ import annotations

from types import SimpleNamespace

import openai
import pytest

from hookway.errors import GatewayError
from hookway.providers import Target
from hookway.testing import RecordingSink, Reply, provider_block
from hookway_fallbacks import FallbacksPlugin

MSG = [{"role": "user", "content": "hi"}]
VK = "sk-hw-fallbacks-test-key-0000000000"


def labelled(fake, label):
    fake.responder = lambda rec: Reply(text=f"from-{label}")
    return fake


def governed(start_gateway, providers: dict, targets: list[str], fallbacks: list[str], provider_configs: list):
    """A gateway with governance (one YAML virtual key) and a routing rule m -> targets + fallbacks."""
    cfg = {
        "plugins": {
            "openai": {}, "fallbacks": {}, "sink": {},
            "routing": {"rules": [{"name": "chain", "match": {"model": "m"}, "targets": targets,
                                   "fallbacks": fallbacks}]},
            "governance": {"sync_interval_seconds": 0.05, "virtual_keys": [
                {"id": "vk", "value": VK, "provider_configs": provider_configs}]},
        },
        "providers": providers,
    }
    return start_gateway(cfg, {"sink": RecordingSink})


def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=VK, max_retries=0, timeout=30)


def test_a_provider_rate_limit_of_the_gateway_goes_to_the_next_target_at_once(fake_upstreams, start_gateway,
                                                                             record_waits):
    # pa has two keys and max_retries 2, with the default backoff (up to 5 s, retry-after honoured):
    # the gateway's own 429 (retry-after: 3600) must neither rotate keys nor be retried.
    a, b = labelled(fake_upstreams(), "a"), labelled(fake_upstreams(), "b")
    providers = {"pa": provider_block(a, "key-one", "key-two", max_retries=2), "pb": provider_block(b)}
    gw = governed(start_gateway, providers, ["pa/m1"], ["pb/m2"], [
        {"provider": "pa", "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}},
        {"provider": "pb"}])
    c = client(gw)
    assert c.chat.completions.create(model="m", messages=MSG).choices[0].message.content == "from-a"
    waits = record_waits(gw)
    assert c.chat.completions.create(model="m", messages=MSG).choices[0].message.content == "from-b"
    assert waits == [], "the gateway's own 429 was waited on, to be retried"
    assert len(a.requests) == 1 and len(b.requests) == 1
    record = RecordingSink.wait(2)[1]
    assert (record.provider, record.status, record.fallback_index) == ("pb", 200, 1)
    assert [(x["provider"], x["status"]) for x in record.attempts] == [("pa", 429)]


def test_a_fallback_refused_by_the_gateway_does_not_end_the_chain(fake_upstreams, start_gateway):
    a, b, c = fake_upstreams(), labelled(fake_upstreams(), "b"), labelled(fake_upstreams(), "c")
    a.enqueue(Reply(status=429, error="pa is busy"))
    providers = {"pa": provider_block(a), "pb": provider_block(b), "pc": provider_block(c)}
    gw = governed(start_gateway, providers, ["pa/m1"], ["pb/m2", "pc/m3"],
                  [{"provider": "pa"}, {"provider": "pc"}])
    assert client(gw).chat.completions.create(model="m", messages=MSG).choices[0].message.content == "from-c"
    assert [len(x.requests) for x in (a, b, c)] == [1, 0, 1]
    record = RecordingSink.wait(1)[0]
    assert record.provider == "pc" and record.status == 200
    assert [(x["provider"], x["status"]) for x in record.attempts] == [("pa", 429), ("pb", 403)]


def test_when_every_target_fails_the_first_targets_error_is_sent(fake_upstreams, start_gateway):
    a, b, c = fake_upstreams(), fake_upstreams(), fake_upstreams()
    a.enqueue(Reply(status=429, error="pa is busy", headers={"retry-after": "7"}))
    c.enqueue(Reply(status=503, error="pc is down"))
    providers = {"pa": provider_block(a), "pb": provider_block(b), "pc": provider_block(c)}
    gw = governed(start_gateway, providers, ["pa/m1"], ["pb/m2", "pc/m3"],
                  [{"provider": "pa"}, {"provider": "pc"}])
    with pytest.raises(openai.RateLimitError) as info:
        client(gw).chat.completions.create(model="m", messages=MSG)
    assert "pa is busy" in str(info.value)
    assert info.value.response.headers.get("retry-after") == "7"
    assert [len(x.requests) for x in (a, b, c)] == [1, 0, 1]
    record = RecordingSink.wait(1)[0]
    assert record.status == 429 and record.provider == "pa"
    assert [x["status"] for x in record.attempts] == [429, 403, 503]


# --- the hook alone, for the gateway's other verdicts ---

class _Keys:
    def __init__(self, keys):
        self.keys = keys

    def pick(self, model, exclude=None):
        rest = [k for k in self.keys if k.name not in (exclude or set())]
        return rest[0] if rest else self.keys[0]


def _stub(chain: list[Target]):
    key = lambda name: SimpleNamespace(name=name, allows=lambda m: True)  # noqa: E731
    net = SimpleNamespace(max_retries=3, retry_backoff_initial=2000, retry_backoff_max=2000)
    adapter = SimpleNamespace(config=SimpleNamespace(keys=[key("k1"), key("k2")], network=net),
                              keys=_Keys([key("k1"), key("k2")]))
    plugin = FallbacksPlugin()
    plugin.gateway = SimpleNamespace(adapters={t.provider: adapter for t in chain})
    ctx = SimpleNamespace(id="r", state={}, targets=chain, target=chain[0], body={})
    return plugin, ctx


@pytest.mark.parametrize("error", [
    GatewayError("rate_limit", "request limit reached for virtual key 'k' on pa",
                 headers={"retry-after": "3600"}),
    GatewayError("permission", "virtual key 'k' may not use provider 'pa'", code="provider_not_allowed"),
    GatewayError("permission", "no key of this provider is allowed to use model 'm1'"),
    GatewayError("not_found", "provider 'pa' is not configured"),
    GatewayError("billing", "budget exceeded for virtual key 'k' on pa", code="budget_exceeded"),
    GatewayError("bad_gateway", "pa: empty answer"),
], ids=["429", "403-provider", "403-keys", "404-provider", "402-provider-budget", "502-gateway"])
async def test_gateway_verdicts_skip_keys_and_retries(error):
    chain = [Target("pa", "m1"), Target("pb", "m2"), Target("pc", "m3")]
    plugin, ctx = _stub(chain)
    waits = []

    async def no_wait(delay):
        waits.append(delay)
    plugin.sleep = no_wait
    nxt = await plugin.hookway_fallback(ctx, error, 0)
    assert (nxt.provider, nxt.model, nxt.key) == ("pb", "m2", None)
    ctx.target = nxt
    nxt = await plugin.hookway_fallback(ctx, error, 1)
    assert (nxt.provider, nxt.model, nxt.key) == ("pc", "m3", None)
    ctx.target = nxt
    assert await plugin.hookway_fallback(ctx, error, 2) is None
    assert waits == []               # the stub's backoff would be 1 to 2 s per retry


async def test_the_clients_own_mistakes_still_end_the_chain():
    plugin, ctx = _stub([Target("pa", "m1"), Target("pb", "m2")])
    assert await plugin.hookway_fallback(ctx, GatewayError("invalid_request", "bad body"), 0) is None
    assert await plugin.hookway_fallback(ctx, GatewayError("request_too_large", "too big"), 0) is None
