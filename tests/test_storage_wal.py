"""hookway.storage.use_wal: workers opening one new database at once."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from hookway import storage


def test_use_wal_waits_for_another_connection_that_holds_the_new_file(tmp_path):
    path = str(tmp_path / "new.db")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")   # as another worker creating the same file
    other = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("PRAGMA journal_mode=WAL")   # what SQLite itself answers meanwhile
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    storage.use_wal(other)
    release.join()
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_use_wal_gives_up_after_its_deadline(tmp_path):
    path = str(tmp_path / "held.db")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        storage.use_wal(other, seconds=0.2)
    holder.execute("COMMIT")
