"""A stream the client cancels (Claude Code's Esc) is still charged: with no usage known, an
estimate from the request's size, so budgets and token limits cannot be bypassed by cancelling."""

from __future__ import annotations

import pytest

from hookway.testing import RecordingSink, Reply

from governance_testing import chat, client, wait_for


def cancel_after_two_chunks(c, **kw):
    stream = chat(c, stream=True, **kw)
    it = iter(stream)
    next(it)
    next(it)
    stream.close()


@pytest.mark.parametrize("options", [None, {"include_usage": True}], ids=["plain", "include_usage"])
def test_a_cancelled_stream_is_charged_an_estimate(gov, fake_upstream, options):
    gw, admin = gov(extra_plugins={"sink": RecordingSink}, plugins={"sink": {}})
    kid, value = admin.key(budget={"max_limit": 10, "reset_duration": "1d"},
                           rate_limit={"token_max_limit": 1_000_000, "token_reset_duration": "1h"})
    fake_upstream.enqueue(Reply(text="x" * 200, chunk_size=1, chunk_delay=0.05))
    cancel_after_two_chunks(client(gw, value), **({"stream_options": options} if options else {}))

    def charged():
        vk = admin.get(f"/api/governance/virtual-keys/{kid}").json()["virtual_key"]
        return vk if vk["budget"]["current_usage"] > 0 else None

    vk = wait_for(charged)
    assert vk, "a cancelled stream was charged nothing"
    assert vk["budget"]["current_usage"] > 0
    assert vk["rate_limit"]["token_current_usage"] > 0
    record = RecordingSink.wait(1)[0]
    assert record.status == 499 and record.cost > 0
    estimate = record.extra["governance_usage_estimate"]
    assert estimate["input_tokens"] > 0 and estimate["output_tokens"] == 0
    # The estimate is the request body's JSON size / 4: a couple of dozen tokens here.
    assert vk["rate_limit"]["token_current_usage"] == estimate["input_tokens"]


def test_the_estimate_follows_the_request_size(gov, fake_upstream):
    gw, admin = gov()
    kid, value = admin.key(rate_limit={"token_max_limit": 1_000_000, "token_reset_duration": "1h"})
    fake_upstream.enqueue(Reply(text="x" * 200, chunk_size=1, chunk_delay=0.05))
    c = client(gw, value)
    stream = c.chat.completions.create(model="up/m", stream=True,
                                       messages=[{"role": "user", "content": "y" * 4000}])
    it = iter(stream)
    next(it)
    next(it)
    stream.close()

    def tokens():
        return admin.get(f"/api/governance/virtual-keys/{kid}").json()["virtual_key"]["rate_limit"][
            "token_current_usage"]

    assert wait_for(lambda: tokens() >= 1000), tokens()
    assert tokens() < 1100


def test_finished_requests_are_charged_their_real_usage(gov):
    gw, admin = gov(extra_plugins={"sink": RecordingSink}, plugins={"sink": {}})
    kid, value = admin.key(rate_limit={"token_max_limit": 1_000_000, "token_reset_duration": "1h"})
    list(chat(client(gw, value), stream=True))

    def tokens():
        return admin.get(f"/api/governance/virtual-keys/{kid}").json()["virtual_key"]["rate_limit"][
            "token_current_usage"]

    assert wait_for(tokens) == 15                # 10 in + 5 out, as the upstream said
    record = RecordingSink.wait(1)[0]
    assert record.status == 200 and "governance_usage_estimate" not in record.extra
