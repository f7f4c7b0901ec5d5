"""The execution queue: the executions that need a runner (every one not yet ended).

A read model like the others, kept in each append's transaction: ``workflow_initiated`` and
``rollback_requested`` put an execution in the queue (and notify channel ``wfdag_queue``), a
terminal event takes it out.  Runners claim from it by taking the execution's lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from events import TERMINAL_EVENT_TYPES, Event, execution_lock_key
from events.database import DBConnection
from events.store import Prepared

__all__ = [
    "QUEUE_CHANNEL",
    "Claim",
    "certify_restart",
    "claim_next",
    "enqueue",
    "hand_back",
    "project_queue",
    "record_crash",
    "release",
    "runner_of",
]

QUEUE_CHANNEL = "wfdag_queue"


async def enqueue(conn: DBConnection, execution_id: str, at: datetime) -> None:
    """Put an execution in the queue (if it is not there) and wake the runners."""
    await conn.execute(
        "INSERT INTO execution_queue (execution_id, enqueued_at) VALUES ($1::uuid, $2) "
        "ON CONFLICT (execution_id) DO NOTHING", execution_id, at)
    await conn.execute("SELECT pg_notify($1, $2)", QUEUE_CHANNEL, execution_id)


class _QueueProjector:
    """Store projector: keep ``execution_queue`` in step with the log."""

    async def __call__(self, conn: DBConnection, events: Sequence[Event]) -> None:
        last = events[-1]
        if last.type in TERMINAL_EVENT_TYPES:
            await conn.execute("DELETE FROM execution_queue WHERE execution_id = $1::uuid",
                               last.execution_id)
            return
        if any(e.type in ("workflow_initiated", "rollback_requested") for e in events):
            await enqueue(conn, last.execution_id, last.at)

    async def prepare(self, conn: DBConnection, events: Sequence[Event]) -> Prepared:
        """The same, inside the append's statement (applied only if the events are)."""
        last = events[-1]
        if last.type in TERMINAL_EVENT_TYPES:
            return Prepared(ctes=["DELETE FROM execution_queue WHERE execution_id = {0}::uuid "
                                  "AND {ok}"], selects=[], params=[last.execution_id])
        if any(e.type in ("workflow_initiated", "rollback_requested") for e in events):
            return Prepared(
                ctes=["INSERT INTO execution_queue (execution_id, enqueued_at) "
                      "SELECT {0}::uuid, {1}::timestamptz WHERE {ok} "
                      "ON CONFLICT (execution_id) DO NOTHING"],
                selects=["CASE WHEN {ok} THEN pg_notify({2}::text, {3}::text) END"],
                params=[last.execution_id, last.at, QUEUE_CHANNEL, last.execution_id])
        return Prepared(ctes=[], selects=[], params=[])


project_queue = _QueueProjector()


class Claim(NamedTuple):
    """A claimed execution.  ``recoveries`` counts the times a runner died (its process) or
    crashed while driving it — a database restart counts nothing; ``last_error`` is the last
    crash recorded."""

    execution_id: str
    recoveries: int
    last_error: str | None


async def claim_next(lease_conn: DBConnection, runner: str, *, scan: int = 64) -> Claim | None:
    """Take the lease of the oldest queued execution that nobody runs; record the runner.

    ``lease_conn`` is the runner's own connection: the advisory lock taken on it is the lease,
    held until :func:`release` or until the runner's process dies.  A runner still recorded
    on the row did not hand it back: it is kept as ``orphaned_by`` until that runner (restarted)
    certifies its death (:func:`certify_restart`) or hands it back (:func:`hand_back`).
    """
    row = await lease_conn.fetchrow("SELECT * FROM wfdag_claim($1, $2)", runner, scan)
    if row is None:
        return None
    return Claim(str(row["claimed"]), row["claimed_recoveries"], row["claimed_last_error"])


async def certify_restart(conn: DBConnection, runner: str) -> list[str]:
    """A restarted runner's first act: its previous process died, so whatever execution it
    was driving counts one recovery.  Returns those executions."""
    rows = await conn.fetch(
        "UPDATE execution_queue SET recoveries = recoveries + 1, "
        "orphaned_by = array_remove(orphaned_by, $1), "
        "runner = CASE WHEN runner = $1 THEN NULL ELSE runner END "
        "WHERE runner = $1 OR $1 = ANY(orphaned_by) RETURNING execution_id", runner)
    return [str(r["execution_id"]) for r in rows]


async def hand_back(conn: DBConnection, runner: str) -> None:
    """Give back, uncounted, what ``runner`` was driving when it lost its database connection
    (the database restarted: not the execution's fault)."""
    await conn.execute(
        "UPDATE execution_queue SET orphaned_by = array_remove(orphaned_by, $1), "
        "runner = CASE WHEN runner = $1 THEN NULL ELSE runner END "
        "WHERE runner = $1 OR $1 = ANY(orphaned_by)", runner)


async def release(lease_conn: DBConnection, execution_id: str) -> None:
    """Give up the lease of an execution (its queue row, if any is left, and the lock)."""
    await lease_conn.execute(
        "WITH r AS (UPDATE execution_queue SET runner = NULL WHERE execution_id = $1::uuid) "
        "SELECT pg_advisory_unlock($2)", execution_id, execution_lock_key(execution_id))


async def record_crash(conn: DBConnection, execution_id: str, error: str) -> None:
    """Count a crash of the runner's drive of an execution, and remember why (the reason is
    shown when it is dead-lettered)."""
    await conn.execute(
        "UPDATE execution_queue SET last_error = $2, recoveries = recoveries + 1 "
        "WHERE execution_id = $1::uuid", execution_id, error[:2000])




async def runner_of(conn: Any, execution_id: str) -> str | None:
    """The runner that last claimed a queued execution (``None`` when it has ended)."""
    value = await conn.fetchval(
        "SELECT runner FROM execution_queue WHERE execution_id = $1::uuid", execution_id)
    return str(value) if value is not None else None
