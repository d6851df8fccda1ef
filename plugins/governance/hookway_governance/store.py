"""SQLite persistence of governance entities and counters (stdlib ``sqlite3``).

The gateway calls these methods from one dedicated worker thread, never from the event loop; the
``hookway keys`` CLI calls them directly. Tables:

* ``entities(kind, id, doc, value_hash, source, yaml_hash, deleted)`` — customers, teams, virtual
  keys as JSON documents. ``yaml_hash`` is the hash of the YAML block an entity came from: the
  YAML is applied again at start only when that block changed, so edits made through the API to a
  YAML-declared entity last until the YAML itself changes (Bifrost's config-hash rule). A
  YAML-declared entity deleted through the API leaves a tombstone (``deleted = 1``) for the same
  reason.
* ``counters(id, usage, window_start, seq)`` — spend, request and token counts per window.
  Processes add their *deltas* in ``BEGIN IMMEDIATE`` transactions, so several workers sharing the
  file never overwrite one another; ``seq`` lets each process read back only rows that changed.
* ``meta(k, v)`` — ``config_version`` (bumped by every entity change, so other processes and a
  running gateway notice the CLI's changes) and ``counter_seq``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Iterable

from hookway import storage

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entities (
    kind TEXT NOT NULL, id TEXT NOT NULL, doc TEXT NOT NULL, value_hash TEXT,
    source TEXT NOT NULL DEFAULT 'api', yaml_hash TEXT, deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, id));
CREATE INDEX IF NOT EXISTS entities_value_hash ON entities (value_hash);
CREATE TABLE IF NOT EXISTS counters (
    id TEXT PRIMARY KEY, usage REAL NOT NULL, window_start REAL NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS counters_seq ON counters (seq);
INSERT OR IGNORE INTO meta (k, v) VALUES ('schema_version', 1), ('config_version', 0), ('counter_seq', 0);
"""


def _dumps(doc: dict) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


class Store:
    def __init__(self, path: str):
        self.path = path
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        new = not os.path.exists(path)
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        if new:
            try:
                os.chmod(path, 0o600)   # key hashes and spend: not for every local user
            except OSError:
                pass
        storage.use_wal(self.db)
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # --- helpers ---

    def _meta(self, k: str) -> int:
        return self.db.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()[0]

    def _bump(self) -> int:
        self.db.execute("UPDATE meta SET v = v + 1 WHERE k = 'config_version'")
        return self._meta("config_version")

    def _tx(self, immediate: bool = False) -> "_Transaction":
        return _Transaction(self.db, immediate)

    def write_transaction(self) -> "_Transaction":
        """``BEGIN IMMEDIATE``: holds the database's write lock from the first read (shared.py)."""
        return _Transaction(self.db, True)

    # --- reads ---

    def config_version(self) -> int:
        return self._meta("config_version")

    def load(self) -> tuple[list[tuple[str, dict]], list[tuple[str, float, float]], int, int]:
        """(entities as (kind, doc), counters as (id, usage, start), config_version, counter_seq)."""
        with self._tx():
            entities = [(kind, json.loads(doc)) for kind, doc in
                        self.db.execute("SELECT kind, doc FROM entities WHERE deleted = 0 ORDER BY rowid")]
            counters = self.db.execute("SELECT id, usage, window_start FROM counters").fetchall()
            return entities, counters, self._meta("config_version"), self._meta("counter_seq")

    def find_key(self, id_or_name: str) -> dict | None:
        for (doc,) in self.db.execute("SELECT doc FROM entities WHERE kind = 'virtual_key' AND deleted = 0"):
            d = json.loads(doc)
            if d["id"] == id_or_name or d["name"] == id_or_name:
                return d
        return None

    def counter_rows(self, ids: Iterable[str]) -> dict[str, tuple[float, float]]:
        out = {}
        for cid in ids:
            row = self.db.execute("SELECT usage, window_start FROM counters WHERE id = ?", (cid,)).fetchone()
            if row:
                out[cid] = row
        return out

    # --- entity writes ---

    def put(self, kind: str, doc: dict, value_hash: str | None = None,
            counters: Iterable[tuple[str, float]] = (), source: str | None = None) -> tuple[int, int]:
        """Insert or replace one entity (and create its new counters). Returns the config
        version before and after, so the caller knows whether anyone else wrote in between."""
        return self.change([(kind, doc, value_hash, counters, source)])

    def delete(self, kind: str, entity_id: str, counter_ids: Iterable[str] = ()) -> tuple[int, int]:
        return self.change([], (kind, entity_id, counter_ids))

    def change(self, puts: list[tuple], delete: tuple | None = None) -> tuple[int, int]:
        """Entities ``(kind, doc, value_hash, new counters, source)`` inserted or replaced, then
        ``(kind, id, counter ids)`` deleted: in one transaction, so either all of it is stored or,
        when the disk refuses the write, none of it. Returns the config versions before and after."""
        with self._tx(immediate=True):
            before = self._meta("config_version")
            for kind, doc, value_hash, counters, source in puts:
                self.db.execute(
                    "INSERT INTO entities (kind, id, doc, value_hash, source, deleted) VALUES (?, ?, ?, ?, ?, 0) "
                    "ON CONFLICT (kind, id) DO UPDATE SET doc = excluded.doc, value_hash = excluded.value_hash, "
                    "deleted = 0",
                    (kind, doc["id"], _dumps(doc), value_hash, source or doc.get("source", "api")))
                self._insert_counters(counters)
            if delete is not None:
                kind, entity_id, counter_ids = delete
                row = self.db.execute("SELECT yaml_hash FROM entities WHERE kind = ? AND id = ?",
                                      (kind, entity_id)).fetchone()
                if row is not None and row[0] is not None:
                    self.db.execute("UPDATE entities SET deleted = 1 WHERE kind = ? AND id = ?", (kind, entity_id))
                else:
                    self.db.execute("DELETE FROM entities WHERE kind = ? AND id = ?", (kind, entity_id))
                self.db.executemany("DELETE FROM counters WHERE id = ?", [(c,) for c in counter_ids])
            return before, self._bump()

    def _insert_counters(self, counters: Iterable[tuple[str, float]]) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO counters (id, usage, window_start, seq) VALUES (?, 0, ?, 0)",
            [(cid, start) for cid, start in counters])

    def apply_yaml(self, declared: list[tuple[str, dict, str | None, str, list[tuple[str, float]]]]) -> list[str]:
        """Apply the YAML-declared entities ``(kind, doc, value_hash, yaml_hash, counters)``:
        insert new ones, replace those whose YAML block changed, keep the others (API edits
        survive), and drop YAML entities no longer declared. Returns what was done, for the log."""
        done = []
        with self._tx(immediate=True):
            wanted = set()
            for kind, doc, value_hash, yaml_hash, counters in declared:
                wanted.add((kind, doc["id"]))
                row = self.db.execute("SELECT yaml_hash FROM entities WHERE kind = ? AND id = ?",
                                      (kind, doc["id"])).fetchone()
                if row is not None and row[0] == yaml_hash:
                    continue
                self.db.execute(
                    "INSERT INTO entities (kind, id, doc, value_hash, source, yaml_hash, deleted) "
                    "VALUES (?, ?, ?, ?, 'yaml', ?, 0) ON CONFLICT (kind, id) DO UPDATE SET doc = excluded.doc, "
                    "value_hash = excluded.value_hash, source = 'yaml', yaml_hash = excluded.yaml_hash, deleted = 0",
                    (kind, doc["id"], _dumps(doc), value_hash, yaml_hash))
                self._insert_counters(counters)
                done.append(f"{'updated' if row else 'added'} {kind} {doc['id']}")
            for kind, eid in self.db.execute("SELECT kind, id FROM entities WHERE source = 'yaml'").fetchall():
                if (kind, eid) not in wanted:
                    self.db.execute("DELETE FROM entities WHERE kind = ? AND id = ?", (kind, eid))
                    done.append(f"removed {kind} {eid} (no longer in the YAML)")
            if done:
                self._bump()
        return done

    # --- counters ---

    def sync(self, batch: dict[str, dict[float, float]], last_seq: int, known_version: int):
        """Add this process's deltas, then read back every counter changed since ``last_seq``
        (by anyone) and the config version. Returns (rows, new last_seq, config_version)."""
        with self._tx(immediate=bool(batch)):
            seq = self._meta("counter_seq")
            if batch:
                seq += 1
                for cid, windows in batch.items():
                    for start in sorted(windows):
                        delta = windows[start]
                        row = self.db.execute("SELECT window_start FROM counters WHERE id = ?", (cid,)).fetchone()
                        if row is None:
                            self.db.execute("INSERT INTO counters (id, usage, window_start, seq) VALUES (?, ?, ?, ?)",
                                            (cid, delta, start, seq))
                        elif row[0] < start:      # first delta of a new window: the old usage is over
                            self.db.execute("UPDATE counters SET usage = ?, window_start = ?, seq = ? WHERE id = ?",
                                            (delta, start, seq, cid))
                        elif row[0] == start:
                            self.db.execute("UPDATE counters SET usage = usage + ?, seq = ? WHERE id = ?",
                                            (delta, seq, cid))
                        # row[0] > start: a delta of a window another process already closed
                self.db.execute("UPDATE meta SET v = ? WHERE k = 'counter_seq'", (seq,))
            rows = self.db.execute("SELECT id, usage, window_start FROM counters WHERE seq > ?",
                                   (last_seq,)).fetchall() if seq > last_seq else []
            return rows, seq, self._meta("config_version")


class _Transaction:
    def __init__(self, db: sqlite3.Connection, immediate: bool):
        self.db = db
        self.immediate = immediate

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE" if self.immediate else "BEGIN")
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.db.execute("COMMIT")   # where a full disk is usually found (WAL mode)
            except BaseException:
                storage.rollback(self.db)
                raise
        else:
            storage.rollback(self.db)
        return False
