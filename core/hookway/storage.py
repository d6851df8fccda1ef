"""What the plugins with an embedded SQLite store (logstore, governance, management, routing,
semantic-cache) share for the day the disk refuses a write: full (``SQLITE_FULL``, "database or
disk is full"), read-only, an I/O error, or locked by another process for too long.

* :func:`unwritable` tells such a refusal (the store may accept the same write later) from a bug;
* :func:`rollback` ends a failed transaction without hiding why it failed (on a full disk SQLite
  has often rolled back already, and a second ``ROLLBACK`` would raise "no transaction is active");
* :func:`write_refused` is the management API's answer: 507 Insufficient Storage when the disk is
  full, 503 otherwise, in the Bifrost error shape (:class:`hookway.admin.AdminError`);
* :class:`Outage` lets a writer log once when its writes start failing and once when they work
  again, rather than once per attempt;
* :func:`use_wal` switches a connection to WAL even while other workers open the same new file.
"""

from __future__ import annotations

import sqlite3
import time

from .admin import AdminError


def use_wal(conn: sqlite3.Connection, seconds: float = 30.0) -> None:
    """``PRAGMA journal_mode=WAL`` on ``conn``. With ``--workers N`` every worker opens the same
    new database at once, and SQLite answers this pragma "database is locked" at once rather than
    waiting its busy timeout: try again until ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def unwritable(exc: BaseException) -> bool:
    """The store refused a write for a reason outside the gateway (full disk, read-only file, I/O
    error, lock held too long): the same write may succeed later."""
    return isinstance(exc, sqlite3.OperationalError)


def disk_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_FULL


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the transaction still open on ``conn``, if any. Call it while handling the error
    that interrupted the transaction: it never raises, so that error is the one reported."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def write_refused(exc: BaseException, store: str) -> AdminError:
    """The API error for a change that ``store`` (its file) could not write: nothing was changed."""
    if disk_full(exc):
        return AdminError(f"the store could not be written ({exc}: {store}); nothing was changed, "
                          "try again once the disk has room", 507)
    return AdminError(f"the store could not be written ({exc}: {store}); nothing was changed", 503)


class Outage:
    """Whether a store's writes are failing. :meth:`failed` is True for the first failure of an
    outage (log a warning then), :meth:`recovered` says how long it lasted at the first success
    after one (log that it is over); the failures in between are only counted."""

    __slots__ = ("since", "failures", "error")

    def __init__(self) -> None:
        self.since: float | None = None
        self.failures = 0
        self.error = ""

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> bool:
        self.failures += 1
        self.error = f"{type(exc).__name__}: {exc}"
        if self.since is None:
            self.since = time.monotonic()
            return True
        return False

    def recovered(self) -> tuple[float, int] | None:
        """``(seconds, failures)`` of the outage this success ends, or None if there was none."""
        if self.since is None:
            return None
        ended = (time.monotonic() - self.since, self.failures)
        self.since = None
        self.failures = 0
        return ended
