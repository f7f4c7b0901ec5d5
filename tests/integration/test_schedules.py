"""Schedules on real PostgreSQL and Ray (issue 14): the scheduler's clock is driven (each
tick is given its ``now``), so minute slots take no minutes; the executions run for real."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from actors import (
    approve_stage,
    cancel_workflow,
    create_schedule,
    delete_schedule,
    get_schedule,
    get_schedule_history,
    list_executions,
    list_schedules,
    pause_schedule,
    resume_schedule,
    trigger_schedule,
    wait_for_workflow,
)
from actors.api.common import ready_store
from actors.api.executions import ensure_runners
from definitions import (
    InvalidArgumentError,
    InvalidContextError,
    ScheduleNotFoundError,
    WorkflowNotFoundError,
)
from events import schedules
from tests.integration.helpers import eventually, register_chain, stage
from tests.integration.test_children import gate, status_is

pytestmark = pytest.mark.usefixtures("ray_session")

LEADER = "test-scheduler-a"


@pytest.fixture
async def leader() -> AsyncIterator[Any]:
    """A scheduler that leads (a dead service's lease taken over) beside runners, as in the
    service; and no schedule left behind."""
    await ensure_runners()
    store = await ready_store()
    async with store.pool.acquire() as conn:
        await conn.execute("DELETE FROM wfdag_leases")
        assert await schedules.claim_leadership(conn, LEADER, 60)
    yield store
    async with store.pool.acquire() as conn:
        await conn.execute("DELETE FROM workflow_schedules")
        await conn.execute("DELETE FROM wfdag_leases")


async def test_bad_schedules_are_refused_naming_the_problem_and_nothing_is_stored(
    leader: Any,
) -> None:
    dag = await register_chain("sched-bad", [stage("a", "noop")])
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"cron": "61 * * * *"}, InvalidArgumentError, "is not valid"),
        ({"cron": "* * *"}, InvalidArgumentError, "has 3 fields"),
        ({"timezone": "Mars/Olympus"}, InvalidArgumentError, "unknown time zone"),
        ({"overlap": "sometimes"}, InvalidArgumentError, "overlap 'sometimes' is not one of"),
        ({"schedule_id": "has space"}, InvalidArgumentError, "schedule_id must be"),
        ({"workflow_id": "no-such-flow"}, WorkflowNotFoundError, "unknown workflow"),
        ({"context": ["not", "an", "object"]}, InvalidContextError, "JSON object"),
    ]
    for change, error, message in cases:
        args: dict[str, Any] = {"workflow_id": dag.id, "cron": "* * * * *", "context": {},
                                "user_id": "ops", **change}
        with pytest.raises(error, match=message):
            await create_schedule(args.pop("workflow_id"), args.pop("cron"), **args)
    assert await list_schedules(workflow_id=dag.id) == []
    await create_schedule(dag.id, "* * * * *", context={}, user_id="ops", schedule_id="once")
    with pytest.raises(InvalidArgumentError, match="exists already"):
        await create_schedule(dag.id, "0 * * * *", context={}, user_id="ops", schedule_id="once")
    assert (await get_schedule("once")).cron == "* * * * *"
    with pytest.raises(ScheduleNotFoundError, match="schedule 'nope' not found"):
        await pause_schedule("nope")


async def test_every_minute_fires_once_per_slot_and_a_second_scheduler_fires_none(
    leader: Any, tmp_dir: Path,
) -> None:
    store = leader
    dag = await register_chain("sched-min", [stage("a", "noop")])
    made = await create_schedule(dag.id, "* * * * *", context={"dir": str(tmp_dir)},
                                 user_id="ops", schedule_id="every-minute")
    slot = made.next_fire_at
    assert slot.second == 0 and slot.microsecond == 0
    # A second scheduler (another service) does not lead, and cannot fire.
    async with store.pool.acquire() as conn:
        assert not await schedules.claim_leadership(conn, "test-scheduler-b", 60)
    with pytest.raises(schedules.NotLeaderError):
        await schedules.fire_due(store, "test-scheduler-b", slot + timedelta(seconds=1))
    early = await schedules.fire_due(store, LEADER, slot - timedelta(seconds=1))
    assert early.fired == {}
    first = await schedules.fire_due(store, LEADER, slot + timedelta(seconds=1))
    assert list(first.fired) == ["every-minute"] and len(first.fired["every-minute"]) == 1
    eid = first.fired["every-minute"][0]
    assert eid == await store.keyed_execution_id(
        dag.id, f"schedule:every-minute:{slot.isoformat()}", None)
    again = await schedules.fire_due(store, LEADER, slot + timedelta(seconds=30))
    assert again.fired == {}  # the slot fired: never twice
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
    second = await schedules.fire_due(store, LEADER, slot + timedelta(seconds=61))
    assert len(second.fired["every-minute"]) == 1
    assert (await wait_for_workflow(second.fired["every-minute"][0], timeout=60)
            ).status == "completed"
    page = await list_executions(schedule_id="every-minute")
    assert sorted(s.execution_id for s in page.items) == sorted(
        [eid, second.fired["every-minute"][0]])
    assert page.items[0].audit_context is not None
    assert page.items[0].audit_context["schedule_id"] == "every-minute"
    now = await get_schedule("every-minute")
    assert now.fires == 2 and now.next_fire_at == slot + timedelta(minutes=2)
    actions = [r["action"] for r in await get_schedule_history("every-minute")]
    assert actions == ["created", "fired", "fired"]


async def test_missed_slots_fire_once_each_with_catchup_else_only_the_latest(
    leader: Any,
) -> None:
    store = leader
    dag = await register_chain("sched-miss", [stage("a", "noop")])
    for catchup in (False, True):
        sid = f"miss-{catchup}"
        made = await create_schedule(dag.id, "* * * * *", context={}, user_id="ops",
                                     schedule_id=sid, catchup=catchup, overlap="allow")
        back = made.next_fire_at + timedelta(minutes=4, seconds=5)  # five slots passed
        tick = await schedules.fire_due(store, LEADER, back)
        assert len(tick.fired[sid]) == (5 if catchup else 1)
        assert len(set(tick.fired[sid])) == len(tick.fired[sid])
        again = await schedules.fire_due(store, LEADER, back)
        assert sid not in again.fired
        history = [r["action"] for r in await get_schedule_history(sid)]
        assert ("missed" in history) == (not catchup)
        for eid in tick.fired[sid]:
            assert (await wait_for_workflow(eid, timeout=60)).status == "completed"


async def test_overlap_skip_and_buffer_one_wait_for_the_last_execution(leader: Any) -> None:
    store = leader
    dag = await register_chain("sched-gate", [gate()])
    for overlap in ("skip", "buffer_one"):
        sid = f"gate-{overlap}"
        made = await create_schedule(dag.id, "* * * * *", context={}, user_id="ops",
                                     schedule_id=sid, overlap=overlap)
        slot = made.next_fire_at
        first = (await schedules.fire_due(store, LEADER, slot))
        eid = first.fired[sid][0]
        await status_is(eid, "waiting")
        for minute in (1, 2):  # two slots while it waits on its approval
            tick = await schedules.fire_due(store, LEADER, slot + timedelta(minutes=minute))
            assert sid not in tick.fired
        now = await get_schedule(sid)
        if overlap == "skip":
            assert now.skipped == 2 and now.buffered_fire_at is None
        else:  # the newer slot took the buffer: one skipped, one waiting
            assert now.skipped == 1 and now.buffered_fire_at == slot + timedelta(minutes=2)
        await approve_stage(eid, "gate", "ops")
        assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
        after = await schedules.fire_due(store, LEADER, slot + timedelta(minutes=2, seconds=5))
        if overlap == "skip":
            assert sid not in after.fired
        else:
            buffered = after.fired[sid]
            assert buffered == [await store.keyed_execution_id(
                dag.id, f"schedule:{sid}:{(slot + timedelta(minutes=2)).isoformat()}", None)]
            assert (await get_schedule(sid)).buffered_fire_at is None
            await status_is(buffered[0], "waiting")
            await cancel_workflow(buffered[0], "ops")


async def test_pause_resume_trigger_and_delete(leader: Any, tmp_dir: Path) -> None:
    store = leader
    dag = await register_chain("sched-ops", [stage("a", "noop")])
    made = await create_schedule(dag.id, "*/5 * * * *", context={"dir": str(tmp_dir)},
                                 user_id="ops", schedule_id="ops-five")
    paused = await pause_schedule("ops-five", user_id="alice")
    assert paused.paused
    tick = await schedules.fire_due(store, LEADER, made.next_fire_at + timedelta(minutes=30))
    assert "ops-five" not in tick.fired  # paused: nothing fires
    # A trigger runs it now, paused or not.
    eid = await trigger_schedule("ops-five", user_id="alice")
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
    resumed = await resume_schedule("ops-five", user_id="bob")
    assert not resumed.paused and resumed.next_fire_at > made.next_fire_at - timedelta(
        minutes=5)
    assert resumed.next_fire_at.minute % 5 == 0
    await delete_schedule("ops-five", user_id="carol")
    with pytest.raises(ScheduleNotFoundError):
        await get_schedule("ops-five")
    async with store.pool.acquire() as conn:  # the audit trail outlives the schedule
        rows = await conn.fetch("SELECT action, user_id FROM workflow_schedule_audit WHERE "
                                "schedule_id = 'ops-five' ORDER BY id")
    assert [(r["action"], r["user_id"]) for r in rows] == [
        ("created", "ops"), ("paused", "alice"), ("triggered", "alice"), ("resumed", "bob"),
        ("deleted", "carol")]

    async def listed() -> bool:
        return [s.execution_id for s in (await list_executions(schedule_id="ops-five")).items
                ] == [eid]

    await eventually(listed, timeout=10, what="the triggered execution listed by schedule")
