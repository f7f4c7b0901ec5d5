"""The write side's commands of the execution queue and the leases of its executions.

``execution_queue`` holds the executions that need a runner (every one not yet ended).  It is
kept in each append's statement (:data:`project_queue`): ``workflow_initiated`` and
``rollback_requested`` put an execution in the queue (and notify channel ``wfdag_queue``), a
terminal event takes it out.  A runner claims from it by taking the execution's **lease** — an
advisory lock on the runner's own connection, held until it releases it or its process (or its
session) dies.  The queue row remembers who claimed it, how often its runners died on it
(``recoveries``) and the last crash, which is what the recovery sweep and dead-lettering read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from events.children import after_append, reconcile
from events.database import DBConnection, DBReader
from events.endings import dead_letter_events
from events.models import REQUEST_EVENT_TYPES, TERMINAL_EVENT_TYPES, Event, ExecutionImported
from events.rows import EventRow
from events.state import fold
from events.store import EventStore, Prepared, parse_execution_id

__all__ = [
    "ACTIVE_STATUSES",
    "CANCEL_CHANNEL",
    "FENCE_SECONDS",
    "HEARTBEAT_SECONDS",
    "QUEUE_CHANNEL",
    "TAKEOVER_SECONDS",
    "Claim",
    "DeadLettered",
    "SweepReport",
    "certify_restart",
    "claim_next",
    "dead_letter",
    "enqueue",
    "execution_lock_key",
    "hand_back",
    "hand_back_unheld",
    "heartbeat",
    "holding_lease",
    "lease_holder",
    "lease_is_free",
    "park",
    "project_queue",
    "record_crash",
    "recovery_sweep",
    "release",
    "release_with_end",
    "runner_of",
]

#: Statuses of an execution that has not ended (the sweep looks at these).
ACTIVE_STATUSES = ("initiated", "in_progress", "waiting", "compensating")


def execution_lock_key(execution_id: str) -> int:
    """The advisory-lock key of an execution's lease (held by the runner that drives it;
    ``wfdag_lock_key`` in SQL computes the same, a test holds them equal)."""
    return int.from_bytes(uuid.UUID(execution_id).bytes[:8], "big", signed=True)


async def lease_is_free(conn: DBConnection, execution_id: str) -> bool:
    """True when no live process holds the execution's lease (checked by taking it briefly)."""
    key = execution_lock_key(parse_execution_id(execution_id))
    taken = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))
    if taken:
        await conn.execute("SELECT pg_advisory_unlock($1)", key)
    return taken

@contextlib.asynccontextmanager
async def holding_lease(conn: DBConnection, execution_id: str) -> AsyncIterator[bool]:
    """Hold the execution's lease on ``conn`` for the block, if nobody holds it: yields True
    (no runner drives it, and none can claim it meanwhile) or False (a live runner drives it)."""
    key = execution_lock_key(parse_execution_id(execution_id))
    taken = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))
    try:
        yield taken
    finally:
        if taken:
            await conn.execute("SELECT pg_advisory_unlock($1)", key)


#: A runner renews its heartbeat this often while it drives an execution …
HEARTBEAT_SECONDS = 1.0
#: … stops its stages (fences itself) when it could not renew for this long …
FENCE_SECONDS = 5.0
#: … and nobody else claims the execution before its heartbeat is this old (``wfdag_claim``
#: in migration 11 says the same): a runner cut off by a partition has stopped by then.
TAKEOVER_SECONDS = 12.0


async def heartbeat(conn: DBReader, execution_id: str, runner: str) -> None:
    """Renew ``runner``'s hold on the execution it drives."""
    await conn.execute("UPDATE execution_queue SET heartbeat_at = now() "
                       "WHERE execution_id = $1::uuid AND runner = $2", execution_id, runner)


QUEUE_CHANNEL = "wfdag_queue"
#: Notified (payload: the execution id) when a cancel is requested: the runner driving the
#: execution wakes and absorbs the request at once instead of at its next append.
CANCEL_CHANNEL = "wfdag_cancel"
#: Appended by callers: each wakes the execution (a parked one becomes claimable at once).
_REQUESTS = tuple(sorted(REQUEST_EVENT_TYPES))
_QUEUEING = ("workflow_initiated", "rollback_requested", *_REQUESTS)


async def enqueue(conn: DBConnection, execution_id: str, at: datetime) -> None:
    """Put an execution in the queue (if it is not there) and wake the runners."""
    await conn.execute(
        "INSERT INTO execution_queue (execution_id, enqueued_at) VALUES ($1::uuid, $2) "
        "ON CONFLICT (execution_id) DO NOTHING", execution_id, at)
    await conn.execute("SELECT pg_notify($1, $2)", QUEUE_CHANNEL, execution_id)


def _evidence(event: Event) -> bool:
    """An import's marker without ``resume``: the log is evidence, not work for a runner."""
    return isinstance(event, ExecutionImported) and not event.resume


class _QueueProjector:
    """Store projector: keep ``execution_queue`` in step with the log."""

    async def __call__(self, conn: DBConnection, events: Sequence[Event]) -> None:
        last = events[-1]
        if last.type in TERMINAL_EVENT_TYPES or _evidence(last):
            await conn.execute("DELETE FROM execution_queue WHERE execution_id = $1::uuid",
                               last.execution_id)
            return
        if any(e.type in _QUEUEING for e in events):
            await enqueue(conn, last.execution_id, last.at)
            await conn.execute("UPDATE execution_queue SET not_before = NULL "
                               "WHERE execution_id = $1::uuid", last.execution_id)
        if any(e.type in _REQUESTS for e in events):
            await conn.execute("SELECT pg_notify($1, $2)", CANCEL_CHANNEL, last.execution_id)

    async def prepare(self, conn: DBConnection, events: Sequence[Event],
                      rows: Sequence[EventRow]) -> Prepared:
        """The same, inside the append's statement (applied only if the events are)."""
        last = events[-1]
        if last.type in TERMINAL_EVENT_TYPES or _evidence(last):
            return Prepared(ctes=["DELETE FROM execution_queue WHERE execution_id = {0}::uuid "
                                  "AND {ok}"], selects=[], params=[last.execution_id])
        if any(e.type in _QUEUEING for e in events):
            # A cancel requeues an execution nobody drives (the runner that takes it ends it
            # without running anything) and wakes the runner of one that runs.
            cancel = any(e.type in _REQUESTS for e in events)
            return Prepared(
                ctes=["INSERT INTO execution_queue (execution_id, enqueued_at) "
                      "SELECT {0}::uuid, {1}::timestamptz WHERE {ok} "
                      "ON CONFLICT (execution_id) DO UPDATE SET not_before = NULL"],
                selects=["CASE WHEN {ok} THEN pg_notify({2}::text, {3}::text) END",
                         *(["CASE WHEN {ok} THEN pg_notify({4}::text, {3}::text) END"]
                           if cancel else [])],
                params=[last.execution_id, last.at, QUEUE_CHANNEL, last.execution_id,
                        *([CANCEL_CHANNEL] if cancel else [])])
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


async def hand_back_unheld(conn: DBConnection, runners: Sequence[str]) -> list[str]:
    """Give back, uncounted, what ``runners`` were driving when they were stopped on purpose
    (a service stopping): rows whose lease nobody holds any more.  Returns those executions."""
    rows = await conn.fetch(
        "SELECT execution_id FROM execution_queue WHERE runner = ANY($1::text[])",
        list(runners))
    given: list[str] = []
    for row in rows:
        eid = str(row["execution_id"])
        key = execution_lock_key(eid)
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            continue  # a live runner (of another cluster, maybe) drives it
        try:
            await conn.execute(
                "UPDATE execution_queue SET runner = NULL, "
                "orphaned_by = array_remove(orphaned_by, runner) WHERE execution_id = $1::uuid",
                eid)
            given.append(eid)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", key)
    return given


async def park(lease_conn: DBConnection, execution_id: str, wake_at: datetime | None,
               version: int | None) -> bool:
    """Keep a parked execution in the queue, not claimable before ``wake_at`` (never, when
    ``None``: only a request wakes it) — unless the log moved past ``version`` meanwhile (a
    request came in: it stays claimable).  ``version`` ``None``: parked whatever came in (a
    log that must not run, such as a broken one).  True when parked."""
    status = await lease_conn.execute(
        "UPDATE execution_queue SET not_before = COALESCE($2::timestamptz, 'infinity') "
        "WHERE execution_id = $1::uuid AND ($3::int IS NULL OR (SELECT last_seq FROM "
        "workflow_executions WHERE id = $1::uuid) = $3)", execution_id, wake_at, version)
    if not status.endswith(" 1"):
        return False
    if version is None:
        return True
    # A request whose append held the queue row when the UPDATE reached it, and committed:
    # the UPDATE then went on with the version it had read before that commit (PostgreSQL
    # re-checks the row, not the subquery), parking past the request.  Looked at again with a
    # snapshot taken after both: claimable once more.  (This one only ever wakes: a request
    # racing it wakes the execution by its own append.)
    woken = await lease_conn.execute(
        "UPDATE execution_queue SET not_before = NULL WHERE execution_id = $1::uuid AND "
        "(SELECT last_seq FROM workflow_executions WHERE id = $1::uuid) IS DISTINCT FROM $2",
        execution_id, version)
    return not woken.endswith(" 1")


async def release(lease_conn: DBConnection, execution_id: str) -> None:
    """Give up the lease of an execution (its queue row, if any is left, and the lock)."""
    await lease_conn.execute(
        "WITH r AS (UPDATE execution_queue SET runner = NULL WHERE execution_id = $1::uuid) "
        "SELECT pg_advisory_unlock($2)", execution_id, execution_lock_key(execution_id))


def release_with_end(events: Sequence[Event], released: Callable[[], None]) -> list[Prepared]:
    """The release, inside the append of ``events`` when the last ends the execution (pass it
    as that append's ``also``, on the lease session): the lock goes once every event went in —
    as the queue row does — and ``released`` is called after the commit; the release's own
    round trip is not needed then.  (The lock goes just before the commit: no runner can claim
    in between, as the row still names this runner with a fresh heartbeat.)  ``[]`` when the
    last event is not an end."""
    if not events or events[-1].type not in TERMINAL_EVENT_TYPES:
        return []
    return [Prepared(ctes=[], selects=["CASE WHEN {ok} THEN pg_advisory_unlock({0}::bigint) END"],
                     params=[execution_lock_key(events[-1].execution_id)], on_success=released)]


async def record_crash(conn: DBConnection, execution_id: str, error: str) -> None:
    """Count a crash of the runner's drive of an execution, and remember why (the reason is
    shown when it is dead-lettered)."""
    await conn.execute(
        "UPDATE execution_queue SET last_error = $2, recoveries = recoveries + 1 "
        "WHERE execution_id = $1::uuid", execution_id, error[:2000])



async def runner_of(conn: DBConnection, execution_id: str) -> str | None:
    """The runner that last claimed a queued execution (``None`` when it has ended)."""
    value = await conn.fetchval(
        "SELECT runner FROM execution_queue WHERE execution_id = $1::uuid", execution_id)
    return str(value) if value is not None else None


async def lease_holder(conn: DBConnection, execution_id: str) -> str | None:
    """The runner that drives the execution now: recorded on its queue row and holding its
    lease (``None`` when it ended, waits in the queue, or its runner died)."""
    name = await runner_of(conn, execution_id)
    if name is None or await lease_is_free(conn, execution_id):
        return None
    return name


class DeadLettered(NamedTuple):
    """An execution failed by :func:`dead_letter`: its workflow, the events appended."""

    workflow_id: str
    events: list[Event]
    reason: str


async def dead_letter(store: EventStore, claim: Claim,
                      conn: DBConnection | None = None) -> DeadLettered | None:
    """Fail an execution that keeps killing its runners: its ``workflow_failed`` says
    ``dead_lettered`` and why.  ``None`` when it had ended already."""
    state = fold(await store.read(claim.execution_id, conn=conn))
    if state.terminal:
        return None
    reason = claim.last_error or "the runner process died while driving it"
    events = dead_letter_events(state, datetime.now(UTC), recoveries=claim.recoveries,
                                reason=reason)
    await store.append(events, expected_version=state.version, conn=conn)
    await after_append(store, state, events)  # a child tells its parent
    return DeadLettered(state.workflow_id, events, reason)


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one recovery sweep did: requeued (``resumed``) and dead-lettered executions, with
    the events of each dead-lettering (for the caller's metrics)."""

    resumed: list[str] = field(default_factory=list)
    dead_lettered: dict[str, DeadLettered] = field(default_factory=dict)
    #: Links between parents and children a crash had cut, mended (see events.children).
    mended: int = 0


async def recovery_sweep(store: EventStore, *, max_recoveries: int) -> SweepReport:
    """Every execution that has not ended and whose lease nobody holds (its runner is gone):
    dead-letter it when it was adopted more than ``max_recoveries`` times, else make sure it is
    queued, so that the pool adopts it.  Each is looked at while this call holds its lease, so
    no runner adopts it meanwhile.  Safe from two callers at once."""
    report = SweepReport()
    async with store.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT e.id, e.started_at, q.recoveries, q.runner, q.last_error, "
            "q.execution_id IS NOT NULL AS queued "
            "FROM workflow_executions e "
            "LEFT JOIN execution_queue q ON q.execution_id = e.id "
            "WHERE e.status = ANY($1::text[]) ORDER BY e.started_at", list(ACTIVE_STATUSES))
        for row in rows:
            if row["queued"] and row["runner"] is None:
                continue  # queued (or parked) and nobody claimed it: nothing to recover
            eid = str(row["id"])
            key = execution_lock_key(eid)
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                continue  # a live runner drives it
            try:
                # Its lease is free: a runner still recorded died holding it.
                recoveries = (row["recoveries"] or 0) + (row["runner"] is not None)
                if recoveries > max_recoveries:
                    done = await dead_letter(store, Claim(eid, recoveries, row["last_error"]))
                    if done is not None:
                        report.dead_lettered[eid] = done
                    continue
                # Make sure it is queued (an execution from before the queue existed).
                await enqueue(conn, eid, row["started_at"])
                report.resumed.append(eid)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)
    return dataclasses.replace(report, mended=await reconcile(store))
