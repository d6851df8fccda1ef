"""Upstream faults on the OpenAI byte pass-through: a broken whole answer is a clean 502 (and can
fall back), never a 500."""

import openai
import pytest

from hookway import hookimpl
from hookway.providers import Target
from hookway.testing import Reply, provider_block


class NextTarget:
    @hookimpl
    def hookway_fallback(self, ctx, error, attempt):
        return Target("b", "m") if attempt == 0 and error.retryable else None


def test_a_whole_answer_cut_mid_body_is_a_502_not_a_500(fake_upstream, start_gateway):
    fake_upstream.enqueue(Reply(drop_after=10))
    gw = start_gateway({"plugins": {"openai": {}}, "providers": {"a": provider_block(fake_upstream)}})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="a/m", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert "a: upstream connection failed" in info.value.message


def test_a_whole_answer_cut_mid_body_falls_back(fake_upstreams, start_gateway):
    a, b = fake_upstreams(), fake_upstreams()
    a.enqueue(Reply(drop_after=10))
    b.enqueue(Reply(text="from b"))
    gw = start_gateway({"plugins": {"openai": {}, "next": {}},
                        "providers": {"a": provider_block(a), "b": provider_block(b)}}, {"next": NextTarget})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    r = client.chat.completions.create(model="a/m", messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].message.content == "from b"


def test_first_byte_timeout_applies_to_whole_translated_answers(fake_upstreams, start_gateway):
    a, b = fake_upstreams(), fake_upstreams()
    a.enqueue(Reply(text="too late", first_byte_delay=5))   # far past the 0.3 s limit
    b.enqueue(Reply(text="from b"))

    class Translate:
        @hookimpl
        def hookway_transform_request(self, ctx, target):
            ctx.ir   # forces the translated path

    gw = start_gateway({"plugins": {"openai": {}, "next": {}, "translate": {}},
                        "providers": {"a": provider_block(a, first_byte_timeout_in_seconds=0.3),
                                      "b": provider_block(b)}},
                       {"next": NextTarget, "translate": Translate})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=10)
    r = client.chat.completions.create(model="a/m", messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].message.content == "from b"
