"""Schedules: a workflow started on a cron expression, by the service's scheduler.

Each slot starts one execution with idempotency key ``schedule:<id>:<slot>`` (never two, even
with two services on one database: one scheduler leads, under a lease in PostgreSQL).  A
schedule fires while a service runs; a slot that passes while none does is a missed slot:
with ``catchup`` the missed slots fire on return (the latest 100 at most), without it only the
latest one does.  ``overlap`` says what a slot does while the schedule's last execution still
runs: ``skip`` it, ``allow`` a second one, or ``buffer_one`` (run it once the last one ends;
one slot waits at most).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from actors.api.common import check_context, check_org, check_user, ready_store
from actors.api.executions import ensure_runners
from actors.logs import get_logger
from actors.runtime import check_payload_size
from definitions import InvalidArgumentError, InvalidContextError
from definitions.schedules import OVERLAP_POLICIES, check_cron, check_timezone, next_slot
from events import schedules as rows
from events.schedules import Schedule
from events.secrets import seal_secrets

__all__ = ["Schedule", "create_schedule", "delete_schedule", "get_schedule",
           "get_schedule_history", "list_schedules", "pause_schedule", "resume_schedule",
           "trigger_schedule"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")


def _check_id(schedule_id: Any) -> str:
    if not isinstance(schedule_id, str) or not _ID.match(schedule_id):
        raise InvalidArgumentError(
            "schedule_id must be 1 to 200 letters, digits, '.', '_' or '-' (starting with a "
            "letter or digit)")
    return schedule_id


async def create_schedule(
    workflow_id: str, cron: str, *, context: Mapping[str, Any], user_id: str,
    schedule_id: str | None = None, timezone: str = "UTC", overlap: str = "skip",
    catchup: bool = False, version: int | None = None, organization_id: str | None = None,
) -> Schedule:
    """Start ``workflow_id`` (its latest active version, or ``version``) at every slot of
    ``cron`` in ``timezone``, with ``context`` (secrets sealed, as an execution's are).
    Everything is checked first — the workflow, the cron expression, the zone, the policy, the
    context, a taken ``schedule_id`` — and nothing is stored when anything is wrong."""
    check_user(user_id)
    expression = check_cron(cron)
    check_timezone(timezone)
    if overlap not in OVERLAP_POLICIES:
        raise InvalidArgumentError(f"overlap {str(overlap)[:40]!r} is not one of "
                                   f"{', '.join(OVERLAP_POLICIES)}")
    if not isinstance(catchup, bool):
        raise InvalidArgumentError("catchup must be true or false")
    sid = _check_id(schedule_id) if schedule_id is not None else (
        f"{workflow_id[:150]}-{uuid.uuid4().hex[:8]}")
    ctx = seal_secrets(check_context(context))
    check_payload_size("context (secrets sealed)", json.dumps(ctx))
    if organization_id is not None:
        check_org(organization_id)
        given = ctx.setdefault("organizationId", organization_id)
        if given != organization_id:
            raise InvalidContextError(f"the context's organizationId {str(given)[:100]!r} is "
                                      f"not the caller's organization {organization_id!r}")
    store = await ready_store()
    dag = await store.get_definition(workflow_id, version)  # unknown → WorkflowNotFoundError
    org = ctx.get("organizationId") if isinstance(ctx.get("organizationId"), str) else None
    async with store.pool.acquire() as conn:
        now = await rows.db_now(conn)
        made = await rows.insert(conn, {
            "schedule_id": sid, "workflow_id": dag.id, "version": version, "cron": expression,
            "timezone": timezone, "context": ctx, "user_id": user_id, "organization_id": org,
            "overlap": overlap, "catchup": catchup,
            "next_fire_at": next_slot(expression, timezone, now)})
    if made is None:
        raise InvalidArgumentError(f"schedule {sid!r} exists already; pick another "
                                   f"schedule_id, or delete that one first")
    get_logger().info("schedule.created", schedule_id=sid, workflow_id=dag.id,
                      cron=expression, next_fire_at=str(made.next_fire_at))
    return made


async def list_schedules(*, organization_id: str | None = None,
                         workflow_id: str | None = None) -> list[Schedule]:
    """Every schedule (of one organization, of one workflow, when given), by id."""
    store = await ready_store()
    return await rows.fetch_all(store.pool, organization_id=organization_id,
                                workflow_id=workflow_id)


async def get_schedule(schedule_id: str, *, organization_id: str | None = None) -> Schedule:
    store = await ready_store()
    return await rows.fetch(store.pool, _check_id(schedule_id), organization_id)


async def get_schedule_history(schedule_id: str, *, limit: int = 100,
                               organization_id: str | None = None) -> list[dict[str, Any]]:
    """The schedule's audit rows, oldest first: each change and each fire, skip and miss."""
    store = await ready_store()
    await rows.fetch(store.pool, _check_id(schedule_id), organization_id)
    return await rows.history(store.pool, schedule_id, limit)


async def pause_schedule(schedule_id: str, *, user_id: str | None = None,
                         organization_id: str | None = None) -> Schedule:
    """Stop firing (a slot waiting in the buffer is dropped); the executions it started run
    on."""
    store = await ready_store()
    async with store.pool.acquire() as conn:
        done = await rows.set_paused(conn, _check_id(schedule_id), True, user_id, None,
                                     organization_id)
    get_logger().info("schedule.paused", schedule_id=schedule_id)
    return done


async def resume_schedule(schedule_id: str, *, user_id: str | None = None,
                          organization_id: str | None = None) -> Schedule:
    """Fire again from the next slot after now (slots passed while paused do not fire)."""
    store = await ready_store()
    current = await rows.fetch(store.pool, _check_id(schedule_id), organization_id)
    async with store.pool.acquire() as conn:
        now = await rows.db_now(conn)
        done = await rows.set_paused(conn, schedule_id, False, user_id,
                                     next_slot(current.cron, current.timezone, now),
                                     organization_id)
    get_logger().info("schedule.resumed", schedule_id=schedule_id,
                      next_fire_at=str(done.next_fire_at))
    return done


async def delete_schedule(schedule_id: str, *, user_id: str | None = None,
                          organization_id: str | None = None) -> None:
    """Remove the schedule (its audit rows stay); the executions it started run on."""
    store = await ready_store()
    async with store.pool.acquire() as conn:
        await rows.delete(conn, _check_id(schedule_id), user_id, organization_id)
    get_logger().info("schedule.deleted", schedule_id=schedule_id)


async def trigger_schedule(schedule_id: str, *, user_id: str | None = None,
                           organization_id: str | None = None) -> str:
    """Run the schedule's workflow now (paused or not, whatever its overlap policy); returns
    the execution id."""
    store = await ready_store()
    eid = await rows.fire_now(store, _check_id(schedule_id), user_id, organization_id)
    get_logger(execution_id=eid).info("schedule.triggered", schedule_id=schedule_id,
                                      at=datetime.now(UTC).isoformat())
    await ensure_runners()
    return eid
