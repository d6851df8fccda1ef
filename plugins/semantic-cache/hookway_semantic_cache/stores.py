"""Where cached answers live: in-process (default), SQLite (persistent, embedded) or Redis (shared
by several gateway replicas).

Every store keeps :class:`Entry` objects and answers two questions: the entry whose exact hash
matches (within a partition), and the most similar vector (cosine, exact search in numpy) within a
partition. Vectors are stored unit-length, so cosine similarity is a dot product. Expiry is a
wall-clock time per entry (``expires``); expired entries never answer and are swept away.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from hookway import storage


@dataclass(slots=True)
class Entry:
    id: str
    cache_key: str
    partition: str
    hash: str
    vector: np.ndarray | None     # float32, unit length; None: exact matching only
    response: bytes               # keys.dump_response
    created: float
    expires: float


def unit(vector: Any) -> np.ndarray | None:
    """A float32 unit vector, or None for an empty or zero vector."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not v.size or norm == 0.0 or not np.isfinite(norm):
        return None
    return v / norm


def best_match(vectors: np.ndarray, query: np.ndarray, threshold: float) -> tuple[int, float] | None:
    """Index and similarity of the row of ``vectors`` most similar to ``query`` when it reaches
    ``threshold``."""
    if vectors.shape[0] == 0 or vectors.shape[1] != query.shape[0]:
        return None
    sims = vectors @ query
    i = int(np.argmax(sims))
    sim = float(sims[i])
    if sim + 1e-6 < threshold:
        return None
    return i, min(sim, 1.0)


class Store:
    """The store contract (all methods are coroutines)."""

    name = "store"

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def get_exact(self, partition: str, hash_: str) -> Entry | None:
        raise NotImplementedError

    async def search(self, partition: str, vector: np.ndarray, threshold: float) -> tuple[Entry, float] | None:
        raise NotImplementedError

    async def put(self, entry: Entry) -> None:
        raise NotImplementedError

    async def delete(self, key: str) -> int:
        """Delete the entries whose cache key is ``key``, or the entry whose id is ``key``."""
        raise NotImplementedError

    async def clear(self) -> int:
        raise NotImplementedError

    async def count(self) -> int:
        raise NotImplementedError


# --- in-process ------------------------------------------------------------------------------

class _Index:
    """The vectors of one partition: a growable float32 matrix with row ids and expiries."""

    __slots__ = ("ids", "rows", "matrix", "expires", "n")

    def __init__(self, dim: int):
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.matrix = np.empty((8, dim), dtype=np.float32)
        self.expires = np.empty(8, dtype=np.float64)
        self.n = 0

    def add(self, entry_id: str, vector: np.ndarray, expires: float) -> None:
        if self.n == self.matrix.shape[0]:
            self.matrix = np.concatenate([self.matrix, np.empty_like(self.matrix)])
            self.expires = np.concatenate([self.expires, np.empty_like(self.expires)])
        self.matrix[self.n] = vector
        self.expires[self.n] = expires
        self.ids.append(entry_id)
        self.rows[entry_id] = self.n
        self.n += 1

    def remove(self, entry_id: str) -> None:
        i = self.rows.pop(entry_id, None)
        if i is None:
            return
        last = self.n - 1
        if i != last:   # move the last row into the hole
            self.matrix[i] = self.matrix[last]
            self.expires[i] = self.expires[last]
            self.ids[i] = self.ids[last]
            self.rows[self.ids[i]] = i
        self.ids.pop()
        self.n = last

    def search(self, query: np.ndarray, threshold: float, now: float) -> tuple[str, float] | None:
        if self.n == 0 or self.matrix.shape[1] != query.shape[0]:
            return None
        sims = self.matrix[:self.n] @ query
        sims[self.expires[:self.n] <= now] = -2.0
        i = int(np.argmax(sims))
        sim = float(sims[i])
        if sim + 1e-6 < threshold:
            return None
        return self.ids[i], min(sim, 1.0)


class MemoryStore(Store):
    """Entries in a dict, vectors in one numpy matrix per partition; oldest entries are evicted
    past ``max_entries``. Nothing survives a restart and each process has its own."""

    name = "memory"

    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max_entries
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.exact: dict[tuple[str, str], str] = {}
        self.indexes: dict[str, _Index] = {}

    def _drop(self, entry_id: str) -> Entry | None:
        entry = self.entries.pop(entry_id, None)
        if entry is None:
            return None
        if self.exact.get((entry.partition, entry.hash)) == entry_id:
            del self.exact[(entry.partition, entry.hash)]
        if entry.vector is not None:
            index = self.indexes.get(entry.partition)
            if index is not None:
                index.remove(entry_id)
                if index.n == 0:
                    del self.indexes[entry.partition]
        return entry

    def sweep(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        expired = [e.id for e in self.entries.values() if e.expires <= now]
        for entry_id in expired:
            self._drop(entry_id)
        return len(expired)

    async def get_exact(self, partition, hash_):
        entry_id = self.exact.get((partition, hash_))
        if entry_id is None:
            return None
        entry = self.entries.get(entry_id)
        if entry is None or entry.expires <= time.time():
            self._drop(entry_id)
            return None
        return entry

    async def search(self, partition, vector, threshold):
        index = self.indexes.get(partition)
        if index is None:
            return None
        found = index.search(vector, threshold, time.time())
        if found is None:
            return None
        return self.entries[found[0]], found[1]

    async def put(self, entry):
        old = self.exact.get((entry.partition, entry.hash))
        if old is not None:
            self._drop(old)
        self.entries[entry.id] = entry
        self.exact[(entry.partition, entry.hash)] = entry.id
        if entry.vector is not None:
            index = self.indexes.get(entry.partition)
            if index is None or index.matrix.shape[1] != entry.vector.shape[0]:
                index = self.indexes[entry.partition] = _Index(entry.vector.shape[0])
            index.add(entry.id, entry.vector, entry.expires)
        while len(self.entries) > self.max_entries:   # the oldest go first
            self._drop(next(iter(self.entries)))

    async def delete(self, key):
        ids = [e.id for e in self.entries.values() if e.cache_key == key or e.id == key]
        for entry_id in ids:
            self._drop(entry_id)
        return len(ids)

    async def clear(self):
        n = len(self.entries)
        self.entries.clear()
        self.exact.clear()
        self.indexes.clear()
        return n

    async def count(self):
        return len(self.entries)


# --- SQLite ----------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_entries (
    id TEXT PRIMARY KEY,
    cache_key TEXT NOT NULL,
    partition TEXT NOT NULL,
    hash TEXT NOT NULL,
    dim INTEGER,
    vector BLOB,
    response BLOB NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_exact ON cache_entries (partition, hash);
CREATE INDEX IF NOT EXISTS cache_key ON cache_entries (cache_key);
CREATE INDEX IF NOT EXISTS cache_expires ON cache_entries (expires);
"""


class SQLiteStore(Store):
    """One SQLite file (WAL), queried from one worker thread so the event loop never waits on
    disk. Survives restarts; several worker processes on one machine may share the file."""

    name = "sqlite"

    def __init__(self, path: str):
        self.path = path
        self.db: sqlite3.Connection | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semantic-cache-sqlite")

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5)
        storage.use_wal(db)
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self.db = db

    async def start(self):
        await self._run(self._open)

    async def close(self):
        if self.db is not None:
            await self._run(self.db.close)
            self.db = None
        self.pool.shutdown(wait=False)

    @staticmethod
    def _entry(row) -> Entry:
        entry_id, cache_key, partition, hash_, dim, vector, response, created, expires = row
        vec = np.frombuffer(vector, dtype=np.float32) if vector is not None else None
        return Entry(entry_id, cache_key, partition, hash_, vec, bytes(response), created, expires)

    def _get_exact(self, partition, hash_, now):
        row = self.db.execute(
            "SELECT id, cache_key, partition, hash, dim, vector, response, created, expires FROM cache_entries "
            "WHERE partition = ? AND hash = ? AND expires > ? ORDER BY created DESC LIMIT 1",
            (partition, hash_, now)).fetchone()
        return self._entry(row) if row else None

    async def get_exact(self, partition, hash_):
        return await self._run(self._get_exact, partition, hash_, time.time())

    def _search(self, partition, vector, threshold, now):
        rows = self.db.execute(
            "SELECT id, vector FROM cache_entries WHERE partition = ? AND dim = ? AND expires > ?",
            (partition, int(vector.shape[0]), now)).fetchall()
        if not rows:
            return None
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        found = best_match(matrix, vector, threshold)
        if found is None:
            return None
        row = self.db.execute(
            "SELECT id, cache_key, partition, hash, dim, vector, response, created, expires FROM cache_entries "
            "WHERE id = ?", (rows[found[0]][0],)).fetchone()
        return (self._entry(row), found[1]) if row else None

    async def search(self, partition, vector, threshold):
        return await self._run(self._search, partition, vector, threshold, time.time())

    def _put(self, e: Entry):
        vec = e.vector.astype(np.float32).tobytes() if e.vector is not None else None
        dim = int(e.vector.shape[0]) if e.vector is not None else None
        db = self.db
        db.execute("BEGIN")
        try:
            db.execute("DELETE FROM cache_entries WHERE partition = ? AND hash = ?", (e.partition, e.hash))
            db.execute("INSERT OR REPLACE INTO cache_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (e.id, e.cache_key, e.partition, e.hash, dim, vec, e.response, e.created, e.expires))
            db.execute("COMMIT")
        except BaseException:
            storage.rollback(db)   # never hides why it failed (a full disk)
            raise

    async def put(self, entry):
        await self._run(self._put, entry)

    def _execute_count(self, sql, args=()):
        return self.db.execute(sql, args).rowcount

    async def delete(self, key):
        return await self._run(self._execute_count,
                               "DELETE FROM cache_entries WHERE cache_key = ? OR id = ?", (key, key))

    async def clear(self):
        return await self._run(self._execute_count, "DELETE FROM cache_entries")

    async def sweep(self) -> int:
        return await self._run(self._execute_count, "DELETE FROM cache_entries WHERE expires <= ?",
                               (time.time(),))

    async def count(self):
        return await self._run(lambda: self.db.execute(
            "SELECT count(*) FROM cache_entries WHERE expires > ?", (time.time(),)).fetchone()[0])


# --- Redis -----------------------------------------------------------------------------------

class RedisStore(Store):
    """Entries in Redis, shared by every gateway replica that points at the same server.

    Keys (under ``prefix``): ``e:{id}`` a hash per entry (expires with its TTL), ``x:{partition}:{hash}``
    the id of the exact match, ``p:{partition}`` a sorted set of ids scored by expiry (the semantic
    candidates), ``k:{cache_key}`` the ids under a cache key. Vectors never change, so each replica
    keeps the ones it has fetched in a local LRU and only asks Redis for new ids.
    """

    name = "redis"

    def __init__(self, url: str, prefix: str = "hookway:cache:", vector_cache: int = 50_000,
                 connect_timeout: float = 1.0):
        self.url = url
        self.prefix = prefix
        self.vector_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.vector_cache_size = vector_cache
        self.connect_timeout = connect_timeout
        self.redis = None

    async def start(self):
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:   # pragma: no cover - guarded in configure
            raise RuntimeError("the redis store needs the redis package: "
                               "pip install 'hookway-semantic-cache[redis]'") from exc
        self.redis = aioredis.from_url(self.url, socket_connect_timeout=self.connect_timeout,
                                       socket_timeout=max(self.connect_timeout, 2.0))

    async def close(self):
        if self.redis is not None:
            await self.redis.aclose()

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def _load(self, entry_id: str) -> Entry | None:
        data = await self.redis.hgetall(self._k("e", entry_id))
        if not data:
            return None
        expires = float(data[b"expires"])
        if expires <= time.time():
            return None
        vec = data.get(b"vector")
        return Entry(entry_id, data[b"cache_key"].decode(), data[b"partition"].decode(), data[b"hash"].decode(),
                     np.frombuffer(vec, dtype=np.float32) if vec else None, data[b"response"],
                     float(data[b"created"]), expires)

    async def get_exact(self, partition, hash_):
        entry_id = await self.redis.get(self._k("x", partition, hash_))
        if entry_id is None:
            return None
        return await self._load(entry_id.decode())

    async def search(self, partition, vector, threshold):
        now = time.time()
        pkey = self._k("p", partition)
        ids = [i.decode() for i in await self.redis.zrangebyscore(pkey, now, "+inf")]
        if not ids:
            return None
        missing = [i for i in ids if i not in self.vector_cache]
        if missing:
            async with self.redis.pipeline(transaction=False) as pipe:
                for entry_id in missing:
                    pipe.hget(self._k("e", entry_id), "vector")
                fetched = await pipe.execute()
            for entry_id, raw in zip(missing, fetched):
                if raw:
                    self.vector_cache[entry_id] = np.frombuffer(raw, dtype=np.float32)
            while len(self.vector_cache) > self.vector_cache_size:
                self.vector_cache.popitem(last=False)
        rows = [(i, self.vector_cache[i]) for i in ids
                if i in self.vector_cache and self.vector_cache[i].shape[0] == vector.shape[0]]
        if not rows:
            return None
        found = best_match(np.stack([r[1] for r in rows]), vector, threshold)
        if found is None:
            return None
        entry = await self._load(rows[found[0]][0])
        return (entry, found[1]) if entry is not None else None

    async def put(self, e):
        old = await self.redis.get(self._k("x", e.partition, e.hash))
        if old is not None and old.decode() != e.id:
            await self._remove([old.decode()])   # the same question answered again replaces it
        ttl_ms = max(int((e.expires - time.time()) * 1000), 1)
        mapping = {"cache_key": e.cache_key, "partition": e.partition, "hash": e.hash,
                   "response": e.response, "created": repr(e.created), "expires": repr(e.expires)}
        if e.vector is not None:
            mapping["vector"] = e.vector.astype(np.float32).tobytes()
        ekey = self._k("e", e.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(ekey, mapping=mapping)
            pipe.pexpire(ekey, ttl_ms)
            pipe.set(self._k("x", e.partition, e.hash), e.id, px=ttl_ms)
            if e.vector is not None:
                pkey = self._k("p", e.partition)
                pipe.zremrangebyscore(pkey, "-inf", time.time())
                pipe.zadd(pkey, {e.id: e.expires})
                pipe.pexpire(pkey, ttl_ms, gt=True)
                pipe.pexpire(pkey, ttl_ms, nx=True)
            kkey = self._k("k", e.cache_key)
            pipe.sadd(kkey, e.id)
            pipe.pexpire(kkey, ttl_ms, gt=True)
            pipe.pexpire(kkey, ttl_ms, nx=True)
            await pipe.execute()

    async def _remove(self, entry_ids: list[str]) -> int:
        removed = 0
        for entry_id in entry_ids:
            data = await self.redis.hmget(self._k("e", entry_id), "cache_key", "partition", "hash")
            if data[0] is None:
                continue
            cache_key, partition, hash_ = (d.decode() for d in data)
            xkey = self._k("x", partition, hash_)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._k("e", entry_id))
                pipe.zrem(self._k("p", partition), entry_id)
                pipe.srem(self._k("k", cache_key), entry_id)
                pipe.get(xkey)
                results = await pipe.execute()
            if results[3] is not None and results[3].decode() == entry_id:
                await self.redis.delete(xkey)
            self.vector_cache.pop(entry_id, None)
            removed += results[0]
        return removed

    async def delete(self, key):
        ids = [i.decode() for i in await self.redis.smembers(self._k("k", key))]
        if not ids and await self.redis.exists(self._k("e", key)):
            ids = [key]
        n = await self._remove(ids)
        await self.redis.delete(self._k("k", key))
        return n

    async def clear(self):
        n = 0
        batch = []
        async for key in self.redis.scan_iter(match=self.prefix + "*", count=500):
            if key.startswith((self.prefix + "e:").encode()):
                n += 1
            batch.append(key)
            if len(batch) >= 500:
                await self.redis.unlink(*batch)
                batch = []
        if batch:
            await self.redis.unlink(*batch)
        self.vector_cache.clear()
        return n

    async def count(self):
        n = 0
        async for _ in self.redis.scan_iter(match=self.prefix + "e:*", count=500):
            n += 1
        return n
