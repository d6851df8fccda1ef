"""SQLite persistence of routing rules (``<server.data_dir>/routing.db``).

One row per rule, its canonical dict as JSON. Rules from the YAML file are stored too (``source``
= ``config``) with a hash of their YAML text, so a change made through the API to a YAML rule
lasts until that rule is changed in the YAML file, and a rule removed from the YAML file goes
away. A ``version`` counter lets every worker process notice another one's change.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time

import orjson

from hookway import storage

SCHEMA = """
CREATE TABLE IF NOT EXISTS routing_rules (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    source TEXT NOT NULL,           -- 'config' (from the YAML file) or 'api'
    yaml_hash TEXT,                 -- config rules: hash of the YAML entry last applied
    edited INTEGER NOT NULL DEFAULT 0,   -- config rules changed through the API since
    deleted INTEGER NOT NULL DEFAULT 0,  -- config rules deleted through the API
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS routing_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO routing_meta (k, v) VALUES ('version', 0);
"""


def yaml_hash(entry: dict) -> str:
    return hashlib.sha256(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


class RuleStore:
    """Thread-safe, synchronous; the plugin calls it through ``asyncio.to_thread``."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        storage.use_wal(self._db)
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- reads ---

    def version(self) -> int:
        with self._lock:
            return self._db.execute("SELECT v FROM routing_meta WHERE k='version'").fetchone()[0]

    def load(self) -> tuple[int, list[dict]]:
        """``(version, rules)``: every live rule in creation order, with ``source``."""
        with self._lock:
            cur = self._db.execute("BEGIN")
            try:
                version = cur.execute("SELECT v FROM routing_meta WHERE k='version'").fetchone()[0]
                rows = cur.execute("SELECT data, source FROM routing_rules WHERE deleted=0 ORDER BY seq").fetchall()
            finally:
                self._db.execute("COMMIT")
        out = []
        for data, source in rows:
            rule = orjson.loads(data)
            rule["source"] = source
            out.append(rule)
        return version, out

    # --- writes (each bumps the version) ---

    def _bump(self, cur) -> None:
        cur.execute("UPDATE routing_meta SET v = v + 1 WHERE k='version'")

    def _next_seq(self, cur) -> int:
        return cur.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM routing_rules").fetchone()[0]

    def put(self, rule: dict) -> None:
        """Insert or replace a rule (keeps its creation order and, for a config rule, marks it
        edited)."""
        data = orjson.dumps({k: v for k, v in rule.items() if k != "source"}).decode()
        with self._lock:
            cur = self._db.execute("BEGIN IMMEDIATE")
            try:
                row = cur.execute("SELECT seq, source FROM routing_rules WHERE id=?", (rule["id"],)).fetchone()
                if row is None:
                    cur.execute("INSERT INTO routing_rules (id, seq, source, data) VALUES (?, ?, 'api', ?)",
                                (rule["id"], self._next_seq(cur), data))
                else:
                    cur.execute("UPDATE routing_rules SET data=?, edited=1, deleted=0 WHERE id=?",
                                (data, rule["id"]))
                self._bump(cur)
                self._db.execute("COMMIT")   # where a full disk is usually found (WAL mode)
            except BaseException:
                storage.rollback(self._db)   # never hides why it failed
                raise

    def delete(self, rule_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("BEGIN IMMEDIATE")
            try:
                row = cur.execute("SELECT source FROM routing_rules WHERE id=? AND deleted=0", (rule_id,)).fetchone()
                if row is None:
                    self._db.execute("ROLLBACK")
                    return False
                if row[0] == "config":   # remembered, so a restart does not bring it back
                    cur.execute("UPDATE routing_rules SET deleted=1, edited=1 WHERE id=?", (rule_id,))
                else:
                    cur.execute("DELETE FROM routing_rules WHERE id=?", (rule_id,))
                self._bump(cur)
                self._db.execute("COMMIT")   # where a full disk is usually found (WAL mode)
            except BaseException:
                storage.rollback(self._db)   # never hides why it failed
                raise
            return True

    def sync_config(self, entries: list[tuple[dict, str]]) -> None:
        """Apply the YAML rules at start: ``entries`` are ``(canonical rule with id, yaml hash)``.

        A YAML rule replaces the stored one unless the stored one was changed (or deleted)
        through the API after this very YAML entry was applied; config rules no longer in the
        YAML file are removed. YAML rules keep the YAML order, ahead of API rules."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._lock:
            cur = self._db.execute("BEGIN IMMEDIATE")
            try:
                stored = {r[0]: r[1:] for r in cur.execute(
                    "SELECT id, yaml_hash, edited, seq FROM routing_rules WHERE source='config'")}
                wanted = set()
                changed = False
                for i, (rule, h) in enumerate(entries):
                    wanted.add(rule["id"])
                    seq = -len(entries) + i
                    prev = stored.get(rule["id"])
                    if prev is not None and prev[0] == h:
                        # unchanged in the YAML file (an API change to it, if any, stands)
                        if prev[2] != seq:
                            cur.execute("UPDATE routing_rules SET seq=? WHERE id=?", (seq, rule["id"]))
                        continue
                    data = dict(rule)
                    data.setdefault("created_at", now)
                    data["updated_at"] = now
                    blob = orjson.dumps({k: v for k, v in data.items() if k != "source"}).decode()
                    cur.execute("INSERT OR REPLACE INTO routing_rules (id, seq, source, yaml_hash, edited, deleted, data) "
                                "VALUES (?, ?, 'config', ?, 0, 0, ?)", (rule["id"], seq, h, blob))
                    changed = True
                for rule_id in set(stored) - wanted:
                    cur.execute("DELETE FROM routing_rules WHERE id=?", (rule_id,))
                    changed = True
                if changed:
                    self._bump(cur)
                self._db.execute("COMMIT")   # where a full disk is usually found (WAL mode)
            except BaseException:
                storage.rollback(self._db)   # never hides why it failed
                raise
