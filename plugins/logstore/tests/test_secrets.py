"""Provider keys and virtual keys never appear in a log, a record, a metric label or an API answer.

One gateway with the OpenAI plugin, the logstore, Prometheus and OpenTelemetry; a client sends
its virtual key in ``Authorization``; the provider key is used upstream (and even echoed back in an
upstream error message, as OpenAI does). Then every place the observability plugins write to is
searched for both secrets.
"""

from __future__ import annotations

import sqlite3
import time

import httpx
import openai
import pytest
import structlog

from hookway import hookimpl
from hookway.errors import GatewayError
from hookway.pipeline import Identity
from hookway.testing import Reply

HTTP = httpx.Client(timeout=10)

PROVIDER_KEY = "sk-prov-SECRET-abcdef1234567890"
VIRTUAL_KEY = "sk-hw-VIRTUAL-secret-0987654321"


class VirtualKeys:
    """Accepts the virtual key and names the caller, as the governance plugin does."""

    @hookimpl
    def hookway_auth(self, ctx):
        header = ctx.headers.get("Authorization", "")
        if header != f"Bearer {VIRTUAL_KEY}":
            raise GatewayError("authentication", "invalid virtual key")
        return Identity(key_id="vk_01", key_name="dev-key", team_id="team-x")


@pytest.fixture
def otlp():
    from importlib import util
    # the OTLP receiver of the otel plugin's tests
    spec = util.spec_from_file_location("otel_receiver", __file__.replace("logstore/tests/test_secrets.py",
                                                                          "otel/tests/conftest.py"))
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    receiver = module.Receiver()
    yield receiver
    receiver.stop()


def test_secrets_appear_nowhere(start_gateway, fake_upstream, otlp, tmp_path):
    with structlog.testing.capture_logs() as events:
        gw = start_gateway({
            "server": {"data_dir": str(tmp_path)},
            "plugins": {"openai": {}, "auth": {}, "logstore": {}, "prometheus": {},
                        "otel": {"endpoint": otlp.url, "flush_interval_ms": 50, "capture_content": True}},
            "providers": {"up": {"type": "openai", "keys": [{"value": PROVIDER_KEY}],
                                 "network_config": {"base_url": fake_upstream.url}}},
        }, {"auth": VirtualKeys})
        fake_upstream.enqueue(
            Reply(text="fine"),
            Reply(text="streamed fine", chunk_size=3),
            Reply(status=401, error_type="invalid_request_error",
                  error=f"Incorrect API key provided: {PROVIDER_KEY}. You can find your API key at ..."))
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=VIRTUAL_KEY, max_retries=0)
        messages = [{"role": "user", "content": "hello"}]
        client.chat.completions.create(model="up/m", messages=messages)
        list(client.chat.completions.create(model="up/m", messages=messages, stream=True,
                                            stream_options={"include_usage": True}))
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="up/m", messages=messages)
        # the provider key really was used upstream
        assert all(r.headers.get("authorization") == f"Bearer {PROVIDER_KEY}" for r in fake_upstream.requests)

        # Every sink (logstore, metrics, spans) has had the three records once the queue counts
        # them delivered; the logstore's own count would not say the metrics have them too.
        queue = gw.gateway.log_queue
        deadline = time.monotonic() + 30
        while queue.delivered < 3:
            assert time.monotonic() < deadline, queue.delivered
            time.sleep(0.02)
        otlp.wait(3)

        api_text = HTTP.get(gw.url + "/api/logs").text
        rows = HTTP.get(gw.url + "/api/logs").json()["data"]
        assert len(rows) == 3 and {r["key_name"] for r in rows} == {"dev-key"}
        details = [HTTP.get(gw.url + f"/api/logs/{r['id']}").text for r in rows]
        stats = HTTP.get(gw.url + "/api/logs/stats").text
        metrics = HTTP.get(gw.url + "/metrics").text
        assert 'key="dev-key"' in metrics
        error_row = next(r for r in rows if r["status"] == 401)
        assert "[redacted]" in error_row["error"]       # the upstream echoed the key: it was scrubbed
        gw.stop()

    db = sqlite3.connect(tmp_path / "logs.db")
    db_text = repr(db.execute("SELECT * FROM logs").fetchall())
    db.close()
    files = b"".join(p.read_bytes() for p in tmp_path.glob("logs.db*"))
    span_attrs = repr([(s.name, s.attrs, s.status_message) for s in otlp.spans])
    logs = repr(events)
    for secret in (PROVIDER_KEY, VIRTUAL_KEY):
        for where, text in (("SQLite rows", db_text), ("/api/logs", api_text), ("/api/logs/{id}", "".join(details)),
                            ("/api/logs/stats", stats), ("/metrics", metrics), ("OTLP spans", span_attrs),
                            ("gateway logs", logs)):
            assert secret not in text, f"{secret[:8]}... found in {where}"
        assert secret.encode() not in files, "secret found in the SQLite files"
        assert all(secret.encode() not in raw for raw in otlp.raw), "secret found in an OTLP export"
