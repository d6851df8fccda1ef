"""The three stores behave alike: exact lookup, vector search, expiry, deletion."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import numpy as np
import openai
import pytest

from hookway_semantic_cache.stores import Entry, MemoryStore, RedisStore, SQLiteStore, unit

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PARAPHRASE = [{"role": "user", "content": "Tell me France's capital, please"}]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request, tmp_path):
    if request.param == "memory":
        s = MemoryStore(max_entries=100)
    elif request.param == "sqlite":
        s = SQLiteStore(str(tmp_path / "sub" / "cache.db"))
    else:
        s = RedisStore(request.getfixturevalue("redis_url"), prefix=f"test:{uuid.uuid4().hex}:")
    await s.start()
    yield s
    await s.clear()
    await s.close()


def entry(key="k", partition="p", hash_="h", vector=(1.0, 0.0, 0.0), ttl=60.0, text=b"{}") -> Entry:
    now = time.time()
    return Entry(uuid.uuid4().hex, key, partition, hash_, unit(vector) if vector is not None else None,
                 text, now, now + ttl)


async def test_exact_lookup_and_vector_search(store):
    a = entry(hash_="a", vector=(1, 0, 0), text=b"A")
    b = entry(hash_="b", vector=(0, 1, 0), text=b"B")
    await store.put(a)
    await store.put(b)
    found = await store.get_exact("p", "a")
    assert found.id == a.id and found.response == b"A" and found.cache_key == "k"
    assert await store.get_exact("p", "zzz") is None
    assert await store.get_exact("other", "a") is None
    hit, sim = await store.search("p", unit((0.96, 0.28, 0)), 0.9)
    assert hit.id == a.id and sim == pytest.approx(0.96, abs=1e-4)
    hit, sim = await store.search("p", unit((0.2, 0.98, 0)), 0.9)
    assert hit.id == b.id
    assert await store.search("p", unit((0.6, 0.8, 0)), 0.9) is None       # below the threshold
    assert await store.search("other", unit((1, 0, 0)), 0.5) is None       # another partition
    assert await store.search("p", unit((1, 0)), 0.5) is None               # another dimension
    assert await store.count() == 2


async def test_entries_without_vector_are_exact_only(store):
    await store.put(entry(hash_="a", vector=None))
    assert await store.get_exact("p", "a") is not None
    assert await store.search("p", unit((1, 0, 0)), 0.0) is None


async def test_same_hash_replaces_the_entry(store):
    await store.put(entry(hash_="a", vector=(1, 0, 0), text=b"old"))
    new = entry(hash_="a", vector=(1, 0, 0), text=b"new")
    await store.put(new)
    assert (await store.get_exact("p", "a")).response == b"new"
    hit, _ = await store.search("p", unit((1, 0, 0)), 0.9)
    assert hit.id == new.id
    assert await store.count() == 1


async def test_expiry(store):
    # Found while fresh (a second is ample for a put and a get, even on a loaded machine)...
    await store.put(entry(hash_="a", ttl=1.0))
    assert await store.get_exact("p", "a") is not None
    await asyncio.sleep(1.1)    # ...and not once its time is up
    assert await store.get_exact("p", "a") is None
    assert await store.search("p", unit((1, 0, 0)), 0.5) is None


async def test_sweep_removes_expired_entries(tmp_path):
    # Redis expires its keys itself; the other two stores are swept periodically.
    for store in (MemoryStore(), SQLiteStore(str(tmp_path / "sweep.db"))):
        await store.start()
        await store.put(entry(hash_="a", ttl=0.05))
        await store.put(entry(hash_="b", ttl=60, vector=(0, 1, 0)))
        await asyncio.sleep(0.1)
        result = store.sweep()
        assert (await result if asyncio.iscoroutine(result) else result) == 1
        assert await store.count() == 1
        await store.close()


async def test_delete_by_key_by_id_and_clear(store):
    e1 = entry(key="one", hash_="a")
    e2 = entry(key="one", hash_="b", vector=(0, 1, 0))
    e3 = entry(key="two", hash_="c", vector=(0, 0, 1))
    e4 = entry(key="two", hash_="d", vector=(1, 1, 0))
    for e in (e1, e2, e3, e4):
        await store.put(e)
    assert await store.delete("one") == 2
    assert await store.get_exact("p", "a") is None
    assert await store.search("p", unit((0, 1, 0)), 0.99) is None
    assert await store.delete(e3.id) == 1
    assert await store.get_exact("p", "c") is None
    assert await store.delete("nothing") == 0
    assert await store.clear() == 1
    assert await store.count() == 0


async def test_memory_store_evicts_the_oldest_past_max_entries():
    s = MemoryStore(max_entries=3)
    entries = [entry(hash_=str(i), vector=(1, i, 0)) for i in range(5)]
    for e in entries:
        await s.put(e)
    assert await s.count() == 3
    assert await s.get_exact("p", "0") is None and await s.get_exact("p", "4") is not None
    hit, _ = await s.search("p", unit((1, 0, 0)), 0.0)
    assert hit.id in {e.id for e in entries[2:]}


async def test_memory_index_grows_and_shrinks():
    s = MemoryStore()
    rng = np.random.default_rng(1)
    vectors = [unit(v) for v in rng.normal(size=(50, 16))]
    entries = [entry(hash_=str(i), vector=v) for i, v in enumerate(vectors)]
    for e in entries:
        await s.put(e)
    for e in entries[::2]:
        await s.delete(e.id)
    for i, e in enumerate(entries):
        found = await s.search("p", vectors[i], 0.999)
        assert (found is not None and found[0].id == e.id) == (i % 2 == 1)


# --- stores through gateways ------------------------------------------------------------------

def _ask(gw, messages=QUESTION):
    raw = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0).chat.completions.with_raw_response.create(
        model="up/m", messages=messages, extra_headers={"x-bf-cache-key": "shared"})
    return raw.headers, raw.parse()


def test_redis_store_is_shared_by_two_gateways(cache_gateway, fake_upstream, sc, redis_url):
    store = {"type": "redis", "url": redis_url, "prefix": f"gw:{uuid.uuid4().hex}:"}
    a = cache_gateway(store=store, threshold=0.9)
    b = cache_gateway(store=store, threshold=0.9)
    assert _ask(a)[0]["x-hookway-cache"] == "miss"
    # a stores the answer after sending it: b can only find it once it is in Redis.
    deadline = time.monotonic() + 30
    while httpx.get(b.url + "/api/cache").json()["entries"] == 0:
        assert time.monotonic() < deadline, "a's answer never reached the shared store"
        time.sleep(0.02)
    h, answer = _ask(b)
    assert (h["x-hookway-cache"], h["x-hookway-cache-type"]) == ("hit", "direct")
    assert answer.choices[0].message.content == sc.ANSWER
    h, _ = _ask(b, PARAPHRASE)
    assert (h["x-hookway-cache"], h["x-hookway-cache-type"]) == ("hit", "semantic")
    assert len(sc.chat_calls(fake_upstream)) == 1
    # Deleting through one replica empties the cache for the other.
    assert httpx.delete(b.url + "/api/cache/shared").json()["deleted"] == 1
    assert _ask(a)[0]["x-hookway-cache"] == "miss"


def test_sqlite_store_survives_a_restart(cache_gateway, fake_upstream, sc, tmp_path):
    first = cache_gateway(store={"type": "sqlite"}, threshold=0.9)
    _ask(first)
    first.stop()
    assert (tmp_path / "semantic-cache.db").exists()
    second = cache_gateway(store={"type": "sqlite"}, threshold=0.9)
    assert _ask(second)[0]["x-hookway-cache"] == "hit"
    assert _ask(second, PARAPHRASE)[0]["x-hookway-cache-type"] == "semantic"
    assert len(sc.chat_calls(fake_upstream)) == 1


def test_an_unreachable_redis_is_a_miss_not_an_error(cache_gateway, fake_upstream, sc, refused_port):
    gw = cache_gateway(store={"type": "redis", "url": f"redis://127.0.0.1:{refused_port}/0", "timeout_ms": 300},
                       embeddings=None)
    h, answer = _ask(gw)
    assert h["x-hookway-cache"] == "miss" and answer.choices[0].message.content == sc.ANSWER
    assert _ask(gw)[0]["x-hookway-cache"] == "miss"
