"""Schedules in PostgreSQL: their rows, their audit trail, the leader lease, and the fire.

A schedule is a row of ``workflow_schedules``; every change to it (created, paused, resumed,
deleted, triggered, fired, skipped, buffered, missed, failed) is a row of
``workflow_schedule_audit``.  A scheduler fires only while it holds the ``scheduler`` lease
of ``wfdag_leases`` (a row with a holder and an expiry, renewed each tick; a dead holder's
lease lapses and another scheduler takes it).  Each fire is one transaction that checks the
lease, appends the execution's ``workflow_initiated`` (idempotency key
``schedule:<id>:<slot>``, so that even two schedulers cannot start a slot twice) and moves the
row on to its next slot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from definitions import ConcurrencyError, ScheduleNotFoundError, WfdagError
from definitions.schedules import MAX_CATCHUP, slots_between
from events.database import DBConnection, DBReader
from events.models import WorkflowInitiated
from events.store import EventStore

__all__ = ["LEADER_LEASE", "NotLeaderError", "Schedule", "Tick", "audit", "claim_leadership",
           "db_now", "delete", "fetch", "fetch_all", "fire_due", "fire_now", "history", "insert",
           "release_leadership", "set_paused", "slot_key"]

LEADER_LEASE = "scheduler"
_ACTIVE = ("initiated", "in_progress", "waiting", "compensating")


class Schedule(BaseModel):
    """A schedule as stored (its context with secrets sealed)."""

    model_config = ConfigDict(frozen=True)

    schedule_id: str
    workflow_id: str
    version: int | None
    cron: str
    timezone: str
    context: dict[str, Any]
    user_id: str
    organization_id: str | None
    overlap: str
    catchup: bool
    paused: bool
    next_fire_at: datetime
    last_fire_at: datetime | None
    last_execution_id: str | None
    buffered_fire_at: datetime | None
    fires: int
    skipped: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime


def _schedule(row: Any) -> Schedule:
    data = dict(row)
    data["schedule_id"] = data.pop("id")
    eid = data.get("last_execution_id")
    data["last_execution_id"] = str(eid) if eid is not None else None
    return Schedule.model_validate(data)


async def db_now(conn: DBReader) -> datetime:
    """The database's clock (every scheduler and caller reads the same one)."""
    now: datetime = await conn.fetchval("SELECT now()")
    return now


def slot_key(schedule_id: str, slot: datetime) -> str:
    """The idempotency key of a schedule's slot: one execution per slot, whoever fires it."""
    return f"schedule:{schedule_id}:{slot.astimezone(UTC).isoformat()}"


async def audit(conn: DBConnection, schedule_id: str, action: str, user_id: str | None,
                **details: Any) -> None:
    await conn.execute(
        "INSERT INTO workflow_schedule_audit (schedule_id, action, user_id, details) "
        "VALUES ($1, $2, $3, $4::jsonb)", schedule_id, action, user_id,
        json.loads(json.dumps(details, default=str)))


async def insert(conn: DBConnection, schedule: dict[str, Any]) -> Schedule | None:
    """Store a new schedule (and its ``created`` audit row); None when the id is taken."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO workflow_schedules (id, workflow_id, version, cron, timezone, context, "
            "user_id, organization_id, overlap, catchup, next_fire_at) VALUES ($1, $2, $3, $4, "
            "$5, $6::jsonb, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING RETURNING *",
            schedule["schedule_id"], schedule["workflow_id"], schedule["version"],
            schedule["cron"], schedule["timezone"], schedule["context"],
            schedule["user_id"], schedule["organization_id"], schedule["overlap"],
            schedule["catchup"], schedule["next_fire_at"])
        if row is None:
            return None
        await audit(conn, schedule["schedule_id"], "created", schedule["user_id"],
                    workflow_id=schedule["workflow_id"], cron=schedule["cron"],
                    timezone=schedule["timezone"], overlap=schedule["overlap"],
                    catchup=schedule["catchup"])
        return _schedule(row)


async def fetch(conn: DBReader, schedule_id: str, organization_id: str | None = None,
                ) -> Schedule:
    row = await conn.fetchrow(
        "SELECT * FROM workflow_schedules WHERE id = $1 AND ($2::text IS NULL OR "
        "organization_id = $2)", schedule_id, organization_id)
    if row is None:
        raise ScheduleNotFoundError(schedule_id)
    return _schedule(row)


async def fetch_all(conn: DBReader, *, organization_id: str | None = None,
                    workflow_id: str | None = None) -> list[Schedule]:
    rows = await conn.fetch(
        "SELECT * FROM workflow_schedules WHERE ($1::text IS NULL OR organization_id = $1) "
        "AND ($2::text IS NULL OR workflow_id = $2) ORDER BY id", organization_id, workflow_id)
    return [_schedule(r) for r in rows]


async def history(conn: DBReader, schedule_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """The schedule's audit rows, oldest first (the last ``limit``)."""
    rows = await conn.fetch(
        "SELECT * FROM (SELECT id, action, user_id, at, details FROM workflow_schedule_audit "
        "WHERE schedule_id = $1 ORDER BY id DESC LIMIT $2) t ORDER BY id", schedule_id, limit)
    return [dict(r) for r in rows]


async def set_paused(conn: DBConnection, schedule_id: str, paused: bool, user_id: str | None,
                     next_fire_at: datetime | None, organization_id: str | None) -> Schedule:
    """Pause, or resume from ``next_fire_at`` (the slots passed while paused do not fire)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE workflow_schedules SET paused = $2, next_fire_at = COALESCE($3, "
            "next_fire_at), buffered_fire_at = CASE WHEN $2 THEN NULL ELSE buffered_fire_at END,"
            " updated_at = now() WHERE id = $1 AND ($4::text IS NULL OR organization_id = $4) "
            "RETURNING *", schedule_id, paused, next_fire_at, organization_id)
        if row is None:
            raise ScheduleNotFoundError(schedule_id)
        await audit(conn, schedule_id, "paused" if paused else "resumed", user_id,
                    **({} if paused else {"next_fire_at": next_fire_at}))
        return _schedule(row)


async def delete(conn: DBConnection, schedule_id: str, user_id: str | None,
                 organization_id: str | None) -> None:
    async with conn.transaction():
        status = await conn.execute(
            "DELETE FROM workflow_schedules WHERE id = $1 AND ($2::text IS NULL OR "
            "organization_id = $2)", schedule_id, organization_id)
        if not status.endswith(" 1"):
            raise ScheduleNotFoundError(schedule_id)
        await audit(conn, schedule_id, "deleted", user_id)


async def claim_leadership(conn: DBConnection, holder: str, seconds: float) -> bool:
    """Take or renew the scheduler lease for ``seconds``: True while ``holder`` leads."""
    row = await conn.fetchrow(
        "INSERT INTO wfdag_leases (name, holder, until) VALUES ($1, $2, now() + "
        "make_interval(secs => $3)) ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,"
        " until = EXCLUDED.until WHERE wfdag_leases.holder = EXCLUDED.holder OR "
        "wfdag_leases.until < now() RETURNING holder", LEADER_LEASE, holder, seconds)
    return row is not None


async def release_leadership(conn: DBConnection, holder: str) -> None:
    """Give the lease up (a service that stops): another scheduler leads at its next tick."""
    await conn.execute("DELETE FROM wfdag_leases WHERE name = $1 AND holder = $2",
                       LEADER_LEASE, holder)


class NotLeaderError(WfdagError):
    """This scheduler's lease lapsed (another took over): it fired nothing."""


def _org_of(schedule: Schedule) -> str | None:
    org = schedule.context.get("organizationId") or schedule.organization_id
    return org if isinstance(org, str) and org else None


async def _start(store: EventStore, conn: DBConnection, schedule: Schedule, slot: datetime,
                 key: str) -> str:
    """Append the slot's ``workflow_initiated`` on ``conn`` (inside the caller's transaction);
    the execution id (the same one when the slot fired already)."""
    dag = await store.get_definition(schedule.workflow_id, schedule.version)
    eid = await store.keyed_execution_id(dag.id, key, _org_of(schedule), conn)
    event = WorkflowInitiated(
        execution_id=eid, seq=1, at=datetime.now(UTC), workflow_id=dag.id,
        workflow_version=dag.version, dag=dag.model_dump(mode="json"),
        context=schedule.context, user_id=schedule.user_id, idempotency_key=key,
        schedule_id=schedule.schedule_id, scheduled_for=slot)
    try:
        async with conn.transaction():  # a savepoint: a duplicate leaves the rest standing
            await store.append([event], expected_version=0, conn=conn)
    except ConcurrencyError:
        pass  # this slot fired already (another scheduler, or a retried transaction)
    return eid


async def _running(conn: DBConnection, execution_id: str | None) -> bool:
    if execution_id is None:
        return False
    status = await conn.fetchval("SELECT status FROM workflow_executions WHERE id = $1::uuid",
                                 execution_id)
    return status in _ACTIVE


@dataclass(frozen=True, slots=True)
class Tick:
    """What one scheduler tick did: the executions it started, by schedule."""

    fired: dict[str, list[str]]
    skipped: dict[str, int]


async def fire_due(store: EventStore, holder: str, now: datetime | None = None,
                   *, limit: int = 100) -> Tick:
    """Fire every due schedule (and every buffered slot whose blocker ended) — while holding
    the leader lease, each schedule in a transaction of its own."""
    fired: dict[str, list[str]] = {}
    skipped: dict[str, int] = {}
    async with store.pool.acquire() as conn:
        when = now or await conn.fetchval("SELECT now()")
        due = await conn.fetch(
            "SELECT id FROM workflow_schedules WHERE NOT paused AND (next_fire_at <= $1 OR "
            "buffered_fire_at IS NOT NULL) ORDER BY next_fire_at LIMIT $2", when, limit)
        for row in due:
            async with conn.transaction():
                if not await conn.fetchval(
                        "SELECT true FROM wfdag_leases WHERE name = $1 AND holder = $2 AND "
                        "until > now() FOR SHARE", LEADER_LEASE, holder):
                    raise NotLeaderError(f"scheduler {holder} no longer holds the lease")
                locked = await conn.fetchrow(
                    "SELECT * FROM workflow_schedules WHERE id = $1 AND NOT paused "
                    "FOR UPDATE SKIP LOCKED", row["id"])
                if locked is None:
                    continue
                started, passed = await _fire_one(store, conn, _schedule(locked), when,
                                                  holder)
                if started:
                    fired[row["id"]] = started
                if passed:
                    skipped[row["id"]] = passed
    return Tick(fired, skipped)


async def _fire_one(store: EventStore, conn: DBConnection, schedule: Schedule,
                    now: datetime, holder: str) -> tuple[list[str], int]:
    sid = schedule.schedule_id
    started: list[str] = []
    passed = 0
    last = schedule.last_execution_id
    buffered = schedule.buffered_fire_at
    last_error: str | None = None
    slots: list[datetime] = []
    following = schedule.next_fire_at
    if schedule.next_fire_at <= now:
        slots, following = slots_between(
            schedule.cron, schedule.timezone, schedule.next_fire_at - timedelta(microseconds=1),
            now, MAX_CATCHUP if schedule.catchup else 1)
        if slots and slots[0] > schedule.next_fire_at:
            await audit(conn, sid, "missed", None, since=schedule.next_fire_at,
                        firing=slots[0], catchup=schedule.catchup)
    todo: list[tuple[datetime, bool]] = []
    if buffered is not None:
        todo.append((buffered, True))
    todo.extend((slot, False) for slot in slots)
    for slot, was_buffered in todo:
        if schedule.overlap != "allow" and await _running(conn, last):
            if was_buffered:
                continue  # it waits on
            if schedule.overlap == "buffer_one":
                if buffered is not None and buffered != slot:
                    passed += 1
                    await audit(conn, sid, "skipped", None, slot=buffered, running=last,
                                why="a newer slot took the buffer")
                buffered = slot
                await audit(conn, sid, "buffered", None, slot=slot, running=last)
            else:
                passed += 1
                await audit(conn, sid, "skipped", None, slot=slot, running=last)
            continue
        try:
            eid = await _start(store, conn, schedule, slot, slot_key(sid, slot))
        except WfdagError as exc:  # its workflow is gone: say so, try again next slot
            last_error = str(exc)[:500]
            await audit(conn, sid, "failed", None, slot=slot, error=last_error)
            if was_buffered:
                buffered = None
            continue
        started.append(eid)
        last = eid
        if was_buffered:
            buffered = None
        await audit(conn, sid, "fired", None, slot=slot, execution_id=eid,
                    buffered=was_buffered, scheduler=holder)
    await conn.execute(
        "UPDATE workflow_schedules SET next_fire_at = $2, last_fire_at = COALESCE($3, "
        "last_fire_at), last_execution_id = $4::uuid, buffered_fire_at = $5, fires = fires + "
        "$6, skipped = skipped + $7, last_error = $8, updated_at = now() WHERE id = $1",
        sid, following, slots[-1] if slots else None, last, buffered, len(started), passed,
        last_error if last_error is not None else (None if started else schedule.last_error))
    return started, passed


async def fire_now(store: EventStore, schedule_id: str, user_id: str | None,
                   organization_id: str | None) -> str:
    """``trigger``: start the schedule's workflow now, whatever its overlap policy says."""
    async with store.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT * FROM workflow_schedules WHERE id = $1 AND ($2::text IS NULL OR "
            "organization_id = $2) FOR UPDATE", schedule_id, organization_id)
        if row is None:
            raise ScheduleNotFoundError(schedule_id)
        schedule = _schedule(row)
        now = await conn.fetchval("SELECT now()")
        eid = await _start(store, conn, schedule, now, slot_key(schedule_id, now))
        await conn.execute(
            "UPDATE workflow_schedules SET last_execution_id = $2::uuid, fires = fires + 1, "
            "updated_at = now() WHERE id = $1", schedule_id, eid)
        await audit(conn, schedule_id, "triggered", user_id, execution_id=eid, at=now)
        return eid
