"""The execution queue: the executions that need a runner (every one not yet ended).

A read model like the others, kept in each append's transaction: ``workflow_initiated`` and
``rollback_requested`` put an execution in the queue (and notify channel ``wfdag_queue``), a
terminal event takes it out.  Runners claim from it by taking the execution's lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from events import TERMINAL_EVENT_TYPES, Event, execution_lock_key
from events.database import DBConnection

__all__ = [
    "QUEUE_CHANNEL",
    "Claim",
    "claim_next",
    "project_queue",
    "record_crash",
    "release",
    "runner_of",
]

QUEUE_CHANNEL = "wfdag_queue"


async def project_queue(conn: DBConnection, events: Sequence[Event]) -> None:
    """Store projector: keep ``execution_queue`` in step with the log."""
    last = events[-1]
    if last.type in TERMINAL_EVENT_TYPES:
        await conn.execute("DELETE FROM execution_queue WHERE execution_id = $1::uuid",
                           last.execution_id)
        return
    if any(e.type in ("workflow_initiated", "rollback_requested") for e in events):
        await conn.execute(
            "INSERT INTO execution_queue (execution_id, enqueued_at) VALUES ($1::uuid, $2) "
            "ON CONFLICT (execution_id) DO NOTHING", last.execution_id, last.at)
        await conn.execute("SELECT pg_notify($1, $2)", QUEUE_CHANNEL, last.execution_id)


class Claim(NamedTuple):
    """A claimed execution: ``claims`` counts every claim of it so far, this one included (more
    than one means runners died or crashed while driving it); ``last_error`` is the last crash
    recorded by :func:`record_crash`."""

    execution_id: str
    claims: int
    last_error: str | None


async def claim_next(lease_conn: DBConnection, runner: str, *, scan: int = 64) -> Claim | None:
    """Take the lease of the oldest queued execution that nobody runs; record the runner.

    ``lease_conn`` is the runner's own connection: the advisory lock taken on it is the lease,
    held until :func:`release` or until the runner's process dies.
    """
    rows = await lease_conn.fetch(
        "SELECT execution_id FROM execution_queue ORDER BY enqueued_at LIMIT $1", scan)
    for row in rows:
        eid = str(row["execution_id"])
        if await lease_conn.fetchval("SELECT pg_try_advisory_lock($1)", execution_lock_key(eid)):
            claimed = await lease_conn.fetchrow(
                "UPDATE execution_queue SET runner = $2, claimed_at = now(), claims = claims + 1 "
                "WHERE execution_id = $1::uuid RETURNING claims, last_error", eid, runner)
            if claimed is not None:
                return Claim(eid, claimed["claims"], claimed["last_error"])
            await release(lease_conn, eid)  # it ended between the scan and the lock
    return None


async def release(lease_conn: DBConnection, execution_id: str) -> None:
    await lease_conn.execute(
        "UPDATE execution_queue SET runner = NULL WHERE execution_id = $1::uuid", execution_id)
    await lease_conn.execute("SELECT pg_advisory_unlock($1)", execution_lock_key(execution_id))


async def record_crash(conn: DBConnection, execution_id: str, error: str) -> None:
    """Remember why a runner failed to drive an execution (shown when it is dead-lettered)."""
    await conn.execute("UPDATE execution_queue SET last_error = $2 WHERE execution_id = $1::uuid",
                       execution_id, error[:2000])


async def runner_of(conn: Any, execution_id: str) -> str | None:
    """The runner that last claimed a queued execution (``None`` when it has ended)."""
    value = await conn.fetchval(
        "SELECT runner FROM execution_queue WHERE execution_id = $1::uuid", execution_id)
    return str(value) if value is not None else None
