"""Helpers for the routing plugin's end-to-end tests (imported by name: unique module name)."""

from __future__ import annotations

import time

from hookway import hookimpl
from hookway.pipeline import Identity
from hookway.testing import FakeOpenAI


class RecordSink:
    """A log sink (``hookway_log``) keeping every record, for assertions."""

    records: list = []

    @hookimpl
    def hookway_log(self, records):
        RecordSink.records.extend(records)

    @classmethod
    def wait(cls, n: int, timeout: float = 5.0) -> list:
        deadline = time.monotonic() + timeout
        while len(cls.records) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return cls.records


class HeaderAuth:
    """Identity from test headers: x-test-key, x-test-team, x-test-customer."""

    @hookimpl
    def hookway_auth(self, ctx):
        key = ctx.headers.get("x-test-key")
        team = ctx.headers.get("x-test-team")
        customer = ctx.headers.get("x-test-customer")
        bundle = ctx.headers.get("x-test-bundle")
        if key is None and team is None and customer is None and bundle is None:
            return None
        return Identity(key_id=key, team_id=team, customer_id=customer, bundle=bundle)


def provider(fake: FakeOpenAI, *keys: str, **network) -> dict:
    return {"type": "openai", "keys": [{"name": k, "value": k} for k in (keys or ("k",))],
            "network_config": {"base_url": fake.url, **network}}
