"""/metrics, fed by the log hook: requests, errors, latency, tokens, cost, cache, fallbacks, drops."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hookway import hookimpl, ir
from hookway.pipeline import Identity
from hookway.providers import Target
from hookway.testing import GatedSink

from echo_plugin import EchoPlugin, echo_config

HTTP = httpx.Client(timeout=10)   # one client: creating one per call costs ~100 ms (TLS setup)


def scrape(gw, **kw) -> dict:
    """{(sample name, frozenset(labels)): value} from /metrics."""
    r = HTTP.get(gw.url + "/metrics", timeout=10, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(samples: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def wait_for(gw, n: int, timeout: float = 30) -> dict:
    """The samples once ``n`` request records went through every log sink. The metrics plugin is
    one of those sinks: it counts a batch before the queue counts it delivered, so waiting for
    the requests alone could see ``hookway_log_records_delivered_total`` still behind."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(gw)
        if (total(samples, "hookway_requests_total") >= n
                and total(samples, "hookway_log_records_delivered_total") >= n):
            return samples
        assert time.monotonic() < deadline, f"metrics never reached {n} delivered requests"
        time.sleep(0.03)


@pytest.fixture
def prom_gateway(start_gateway, tmp_path):
    def start(settings=None, extra_plugins=None, plugins=None, server=None, providers=None):
        config = echo_config(server={"data_dir": str(tmp_path), **(server or {})})
        config["providers"] = {**config["providers"], "bad": {"type": "echo", "settings": {"fail": 503}},
                               **(providers or {})}
        config["plugins"]["prometheus"] = settings or {}
        config["plugins"].update(plugins or {})
        return start_gateway(config, {"echo": EchoPlugin, **(extra_plugins or {})})
    return start


def post(gw, body):
    return HTTP.post(gw.url + "/echo", json=body, timeout=10)


def test_requests_errors_latency_and_tokens(prom_gateway):
    gw = prom_gateway()
    assert post(gw, {"model": "e1/m", "prompt": "abc"}).status_code == 200
    assert post(gw, {"model": "e1/m", "prompt": "abcd", "stream": True}).status_code == 200
    assert post(gw, {"model": "bad/m", "prompt": "x"}).status_code == 503
    assert post(gw, {"model": "nowhere", "prompt": "x"}).status_code == 404
    s = wait_for(gw, 4)
    ok = dict(provider="e1", model="m", status="200", key="", team="")
    assert total(s, "hookway_requests_total", **ok) == 2
    assert total(s, "hookway_requests_total", provider="bad", status="503") == 1
    assert total(s, "hookway_request_errors_total", provider="bad", status="503", kind="api_error") == 1
    assert total(s, "hookway_request_errors_total", provider="", model="", status="404",
                 kind="not_found") == 1
    assert total(s, "hookway_request_errors_total") == 2
    assert total(s, "hookway_input_tokens_total", provider="e1", model="m") == 7
    assert total(s, "hookway_output_tokens_total", provider="e1", model="m") == 7
    assert total(s, "hookway_request_duration_seconds_count", provider="e1", model="m") == 2
    assert total(s, "hookway_upstream_latency_seconds_count", provider="e1", model="m") == 2
    assert total(s, "hookway_gateway_overhead_seconds_count", provider="e1") == 2
    assert total(s, "hookway_time_to_first_token_seconds_count", provider="e1", stream="true") == 1
    assert total(s, "hookway_time_to_first_token_seconds_count", provider="e1", stream="false") == 1
    assert total(s, "hookway_request_duration_seconds_sum", provider="e1") > 0
    assert total(s, "hookway_log_records_dropped_total") == 0
    assert total(s, "hookway_log_records_delivered_total") == 4


class Extras:
    """Identity, cost, a cache and a fallback, as governance/cache/fallback plugins would add."""

    @hookimpl
    def hookway_auth(self, ctx):
        return Identity(key_id="vk_1", key_name="alice", team_id="red")

    @hookimpl
    def hookway_middleware(self):
        async def cost(ctx, call_next):
            try:
                return await call_next(ctx)
            finally:
                ctx.cost = 0.25
        return cost

    @hookimpl
    def hookway_cache_lookup(self, ctx):
        if ctx.body.get("prompt") == "cached":
            return ir.Response("c", "x", [{"type": "text", "text": "hit"}], "end_turn", usage=ir.Usage(2, 1, 1))
        ctx.cache_status = "miss"
        return None

    @hookimpl
    def hookway_fallback(self, ctx, error, attempt):
        return Target("e2", "backup") if attempt == 0 else None


def test_identity_cost_cache_hits_and_fallbacks(prom_gateway):
    gw = prom_gateway(plugins={"extras": {}}, extra_plugins={"extras": Extras})
    assert post(gw, {"model": "e1/m", "prompt": "abc"}).status_code == 200
    assert post(gw, {"model": "e1/m", "prompt": "cached"}).status_code == 200
    assert post(gw, {"model": "bad/m", "prompt": "xy"}).status_code == 200     # fell back to e2
    s = wait_for(gw, 3)
    assert total(s, "hookway_requests_total", key="alice", team="red") == 3
    assert total(s, "hookway_cost_usd_total", key="alice", team="red") == 0.75
    assert total(s, "hookway_cache_hits_total", provider="e1", model="m") == 1
    assert total(s, "hookway_cache_lookups_total", provider="e1", model="m", result="hit") == 1
    assert total(s, "hookway_cache_lookups_total", provider="e1", model="m", result="miss") == 1
    assert total(s, "hookway_cached_input_tokens_total", provider="e1") == 1
    assert total(s, "hookway_fallbacks_total", provider="e2", model="backup") == 1
    assert total(s, "hookway_fallback_attempts_total", provider="e2") == 1
    assert not any("vk_1" in str(labels) for (_, labels) in s)   # the key label is its name


def test_key_labels_can_be_turned_off(prom_gateway):
    gw = prom_gateway({"key_labels": False, "latency_buckets": [0.5, 1]}, plugins={"extras": {}},
                      extra_plugins={"extras": Extras})
    post(gw, {"model": "e1/m", "prompt": "abc"})
    s = wait_for(gw, 1)
    assert all(("key", "alice") not in labels for (_, labels) in s)
    assert total(s, "hookway_request_duration_seconds_bucket", le="0.5") == 1
    assert total(s, "hookway_request_duration_seconds_bucket", le="+Inf") == 1


def test_dropped_log_records_are_counted_at_scrape_time(prom_gateway):
    # A sink that holds its first batch: the queue (3 records) fills and the rest is dropped.
    gw = prom_gateway(server={"log_queue_size": 3}, plugins={"gate": {}}, extra_plugins={"gate": GatedSink})
    for i in range(40):
        assert post(gw, {"model": "e1/m", "prompt": str(i)}).status_code == 200
    dropped = gw.gateway.log_queue.dropped
    assert dropped > 0
    assert total(scrape(gw), "hookway_log_records_dropped_total") >= dropped


def test_each_gateway_has_its_own_registry(prom_gateway):
    one, two = prom_gateway(), prom_gateway()
    post(one, {"model": "e1/m", "prompt": "a"})
    post(one, {"model": "e1/m", "prompt": "b"})
    post(two, {"model": "e1/m", "prompt": "c"})
    assert total(wait_for(one, 2), "hookway_requests_total") == 2
    assert total(wait_for(two, 1), "hookway_requests_total") == 1


def test_metrics_need_the_admin_token_unless_made_public(prom_gateway):
    token = "m" * 40
    gw = prom_gateway(server={"admin_token": token})
    assert HTTP.get(gw.url + "/metrics").status_code == 401
    scrape(gw, headers={"Authorization": f"Bearer {token}"})
    public = prom_gateway({"require_admin": False, "path": "/prom"}, server={"admin_token": token})
    assert HTTP.get(public.url + "/prom").status_code == 200
    assert HTTP.get(public.url + "/metrics").status_code == 404


def test_unknown_model_names_do_not_create_series(prom_gateway):
    gw = prom_gateway()
    for name in ("made-up-1", "made-up-2", "made-up-3"):
        assert post(gw, {"model": name, "prompt": "x"}).status_code == 404
    s = wait_for(gw, 3)
    assert total(s, "hookway_requests_total", provider="", model="", status="404") == 3
    assert not any("made-up" in str(labels) for (_, labels) in s)
