"""Semantic hits with the local embedding model (the ``[local]`` extra), no embeddings provider."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from hookway_semantic_cache.embedders import local_model_available

available, why_not = local_model_available()
pytestmark = pytest.mark.skipif(not available, reason=why_not)


def test_local_model_finds_a_real_paraphrase(cache_gateway, fake_upstream, sc, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gw = cache_gateway(embeddings={"type": "local", "timeout_ms": 5000}, threshold=0.8)
    deadline = time.monotonic() + 180   # importing PyTorch and loading the model, in the background
    while (status := httpx.get(gw.url + "/api/cache").json()["embedder"]) == "loading":
        assert time.monotonic() < deadline, "the local model did not load in 3 minutes"
        time.sleep(0.2)
    assert status == "ready"
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)

    def ask(question):
        raw = client.chat.completions.with_raw_response.create(
            model="up/m", messages=[{"role": "user", "content": question}],
            extra_headers={"x-bf-cache-key": "local"})
        return raw.headers

    assert ask("How do I reset my password?")["x-hookway-cache"] == "miss"
    h = ask("How can I reset my password?")
    assert (h["x-hookway-cache"], h["x-hookway-cache-type"]) == ("hit", "semantic")
    assert 0.8 <= float(h["x-hookway-cache-similarity"]) < 1.0
    assert ask("What is the boiling point of water at sea level?")["x-hookway-cache"] == "miss"
    assert len(sc.chat_calls(fake_upstream)) == 2
    assert sc.embedding_calls(fake_upstream) == []
