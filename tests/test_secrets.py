"""A provider key echoed back by an upstream never reaches the client or the gateway's log."""

import io
import logging

import httpx
import orjson
import pytest
import structlog

from hookway.app import configure_logging

from echo_plugin import echo_config

SECRET = "sk-provider-SECRET-0123456789"


@pytest.fixture
def json_logs():
    out = io.StringIO()
    configure_logging("info", "json", cache=False, stream=out)
    yield out
    structlog.reset_defaults()
    logging.getLogger().handlers = []


@pytest.mark.parametrize("stream", [False, True])
def test_echoed_provider_key_is_scrubbed_from_answers_and_logs(echo_gateway, json_logs, stream):
    failing = {"type": "echo", "keys": [{"name": "k", "value": SECRET}],
               "settings": {"fail": 502, "fail_message": f"e1: bad key {SECRET}"}}
    gw = echo_gateway(echo_config(providers={"e1": failing}))
    r = httpx.post(gw.url + "/echo", content=orjson.dumps({"model": "e1/m", "prompt": "x", "stream": stream}))
    assert r.status_code == 502
    assert r.json()["error"]["message"] == "e1: bad key [redacted]"
    structlog.get_logger("hookway").error("upstream_said", detail=f"echo of {SECRET}")
    logging.getLogger("hookway.test").error("stdlib line with %s", SECRET)
    lines = json_logs.getvalue()
    assert '"event": "upstream_said"' in lines and '"event": "stdlib line with [redacted]"' in lines
    assert SECRET not in lines
    assert '"detail": "echo of [redacted]"' in lines
