"""SQLite persistence of provider blocks changed at run time (stdlib ``sqlite3``, called from one
worker thread, never from the event loop).

``providers(name, block, source, yaml_hash, deleted)``: ``block`` is the provider block as given
(``env.NAME`` references are stored as references, so secrets kept in the environment never reach
the file; literal key values do — the file is created mode 0600). ``yaml_hash`` makes the YAML win
at start only when its block for that provider changed; ``deleted`` is a tombstone for a
YAML-declared provider deleted through the API. ``meta.config_version`` lets other worker
processes notice a change.
"""

from __future__ import annotations

import json
import os
import sqlite3

from hookway import storage

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS providers (
    name TEXT PRIMARY KEY, block TEXT NOT NULL, source TEXT NOT NULL DEFAULT 'api', yaml_hash TEXT,
    deleted INTEGER NOT NULL DEFAULT 0);
INSERT OR IGNORE INTO meta (k, v) VALUES ('schema_version', 1), ('config_version', 0);
"""


class Store:
    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        new = not os.path.exists(path)
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        if new:
            try:
                os.chmod(path, 0o600)
            except OSError:
                pass
        storage.use_wal(self.db)
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def version(self) -> int:
        return self.db.execute("SELECT v FROM meta WHERE k = 'config_version'").fetchone()[0]

    def _bump(self) -> int:
        self.db.execute("UPDATE meta SET v = v + 1 WHERE k = 'config_version'")
        return self.version()

    def load(self) -> tuple[dict[str, dict | None], int]:
        """name -> block (None for a deleted YAML provider), and the config version."""
        self.db.execute("BEGIN")
        try:
            rows = self.db.execute("SELECT name, block, deleted FROM providers").fetchall()
            return {n: (None if d else json.loads(b)) for n, b, d in rows}, self.version()
        finally:
            self.db.execute("COMMIT")

    def apply_yaml(self, declared: dict[str, tuple[dict, str]]) -> list[str]:
        """``declared``: name -> (YAML block, its hash). Insert new ones, overwrite those whose
        YAML changed, keep the rest, drop YAML providers no longer declared."""
        done = []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for name, (block, h) in declared.items():
                row = self.db.execute("SELECT yaml_hash FROM providers WHERE name = ?", (name,)).fetchone()
                if row is not None and row[0] == h:
                    continue
                self.db.execute(
                    "INSERT INTO providers (name, block, source, yaml_hash, deleted) VALUES (?, ?, 'yaml', ?, 0) "
                    "ON CONFLICT (name) DO UPDATE SET block = excluded.block, source = 'yaml', "
                    "yaml_hash = excluded.yaml_hash, deleted = 0", (name, json.dumps(block), h))
                done.append(f"{'updated' if row else 'recorded'} provider {name} from the YAML")
            for (name,) in self.db.execute("SELECT name FROM providers WHERE source = 'yaml'").fetchall():
                if name not in declared:
                    self.db.execute("DELETE FROM providers WHERE name = ?", (name,))
                    done.append(f"forgot provider {name} (no longer in the YAML)")
            if done:
                self._bump()
            self.db.execute("COMMIT")
        except BaseException:
            storage.rollback(self.db)   # never hides why it failed (a full disk)
            raise
        return done

    def put(self, name: str, block: dict) -> tuple[int, int]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            before = self.version()
            self.db.execute(
                "INSERT INTO providers (name, block, source, deleted) VALUES (?, ?, 'api', 0) "
                "ON CONFLICT (name) DO UPDATE SET block = excluded.block, deleted = 0", (name, json.dumps(block)))
            after = self._bump()
            self.db.execute("COMMIT")
        except BaseException:
            storage.rollback(self.db)   # never hides why it failed (a full disk)
            raise
        return before, after

    def delete(self, name: str) -> tuple[int, int]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            before = self.version()
            row = self.db.execute("SELECT yaml_hash FROM providers WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] is not None:
                self.db.execute("UPDATE providers SET deleted = 1 WHERE name = ?", (name,))
            else:
                self.db.execute("DELETE FROM providers WHERE name = ?", (name,))
            after = self._bump()
            self.db.execute("COMMIT")
        except BaseException:
            storage.rollback(self.db)   # never hides why it failed (a full disk)
            raise
        return before, after
