"""Budgets and rate limits exact across processes (``hookway serve --workers N``, or several
gateways on one database: the ``multi_process`` setting).

In one process the in-memory :class:`~hookway_governance.engine.Engine` decides, in one
synchronous step per request (see engine.py). With several processes, each one's memory learns of
the others' traffic only at its next sync, so the decision moves into the database: the same rules
(:class:`~hookway_governance.engine.Limits`) run against the counters as the database has them,
inside one ``BEGIN IMMEDIATE`` transaction. SQLite admits one writer at a time, so no other process
can check or count between this transaction's read and its write. A refused request writes
nothing; an admitted one has its request counted before the commit, and a finished one is charged
the same way, at once rather than at the next sync.

The transactions run on the governance thread, never on the event loop. Requests that arrive
while one runs wait for the next, which takes them all, in order (a group commit): under load a
process pays for one transaction and one thread hop per batch, not per request.
"""

from __future__ import annotations

import sqlite3
import asyncio
import logging
from typing import Callable

from hookway import storage
from hookway.errors import GatewayError

from .engine import Counter, Engine, Limits

log = logging.getLogger("hookway.governance")

# The counter rows written by one transaction: (id, usage, window start), for Engine.merge.
Rows = list[tuple[str, float, float]]


class DatabaseCounters(Limits):
    """The counters one transaction touches, read from the database on first use and written
    back, as absolute values, before the commit (nobody else can write in between)."""

    def __init__(self, db: sqlite3.Connection, engine: Engine):
        self.db = db
        self.engine = engine          # read only: the counters' reset periods
        self.read: dict[str, Counter] = {}
        self.changed: dict[str, Counter] = {}

    def counter(self, cid: str, now: float) -> Counter:
        c = self.read.get(cid)
        if c is None:
            known = self.engine.counters.get(cid)
            period = known.period if known is not None else None
            row = self.db.execute("SELECT usage, window_start FROM counters WHERE id = ?", (cid,)).fetchone()
            if row is not None:
                c = Counter(cid, row[0], row[1], period)
            else:
                c = Counter(cid, 0.0, known.start if known is not None else now, period)
            self.read[cid] = c
        c.roll(now)
        return c

    def charge(self, cid: str, amount: float, now: float) -> None:
        c = self.counter(cid, now)
        c.usage += amount
        self.changed[cid] = c

    def write(self) -> Rows:
        if not self.changed:
            return []
        # A new counter_seq, so the other processes' syncs read these rows back.
        self.db.execute("UPDATE meta SET v = v + 1 WHERE k = 'counter_seq'")
        seq = self.db.execute("SELECT v FROM meta WHERE k = 'counter_seq'").fetchone()[0]
        rows = [(c.id, c.usage, c.start) for c in self.changed.values()]
        self.db.executemany(
            "INSERT INTO counters (id, usage, window_start, seq) VALUES (?, ?, ?, ?) ON CONFLICT (id) "
            "DO UPDATE SET usage = excluded.usage, window_start = excluded.window_start, seq = excluded.seq",
            [(cid, usage, start, seq) for cid, usage, start in rows])
        return rows


def apply(store, engine: Engine, batch: list[tuple[Callable, tuple]]) -> tuple[list, Rows]:
    """Each ``rule(counters, *args)`` of the batch (``Limits.admit``, ``Limits.admit_target``,
    ``Limits.settle``), in order, on the database's counters, in one write transaction. Returns
    each one's refusal (a GatewayError, raised before it counted anything) or None, and the rows
    written."""
    counters = DatabaseCounters(store.db, engine)
    outcomes: list[GatewayError | None] = []
    with store.write_transaction():
        for rule, args in batch:
            try:
                rule(counters, *args)
                outcomes.append(None)
            except GatewayError as refused:
                outcomes.append(refused)
        return outcomes, counters.write()


class InDatabase:
    """This process's decisions made in the database (see the module docstring): ``decide``
    queues one and returns a future for its outcome; one batch runs at a time."""

    def __init__(self, run: Callable, store, engine: Engine):
        self.run = run                # runs a function on the governance thread
        self.store = store
        self.engine = engine
        self.waiting: list[tuple[Callable, tuple, asyncio.Future]] = []
        self.batch: asyncio.Task | None = None
        self.outage = storage.Outage()

    def decide(self, rule: Callable, *args) -> asyncio.Future:
        """The future's result is None; a refusal is its exception."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((rule, args, future))
        if self.batch is None:
            self.batch = asyncio.ensure_future(self._run_batches())
        return future

    async def _run_batches(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    outcomes, rows = await self.run(apply, self.store, self.engine,
                                                    [(rule, args) for rule, args, _ in batch])
                except Exception as exc:
                    if not storage.unwritable(exc):
                        log.exception("governance: deciding in the database failed; this batch is decided "
                                      "from this worker's memory (its charges reach the database at the next sync)")
                    elif self.outage.failed(exc):   # once per outage, not per batch
                        log.warning("governance: the database refuses writes (%s: %s); until it accepts them "
                                    "again, decisions are made from this worker's memory and their charges "
                                    "reach the database at the first sync that succeeds", type(exc).__name__, exc)
                    outcomes, rows = [_in_memory(self.engine, rule, args) for rule, args, _ in batch], []
                else:
                    ended = self.outage.recovered()
                    if ended is not None:
                        log.warning("governance: decisions are made in the database again, after %.1f s and "
                                    "%d batches decided in memory", *ended)
                for (_, _, future), refused in zip(batch, outcomes):
                    if future.done():     # its request was cancelled while it waited
                        continue
                    if refused is None:
                        future.set_result(None)
                    else:
                        future.set_exception(refused)
                self.engine.merge(rows)
        finally:
            self.batch = None

    async def drain(self) -> None:
        """Until every queued decision is made (at shutdown)."""
        while self.batch is not None:
            await asyncio.shield(self.batch)


def _in_memory(engine: Engine, rule: Callable, args: tuple) -> Exception | None:
    try:
        rule(engine, *args)
    except Exception as refused:      # a GatewayError; anything else is a bug, for that request only
        return refused
    return None
