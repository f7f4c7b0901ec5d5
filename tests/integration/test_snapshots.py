"""Snapshots of the fold (issue 18) on real PostgreSQL and Ray: a runner snapshots a long log,
a runner that adopts it starts from the snapshot and carries on exactly as the whole log says,
and a snapshot that is not the log's fold (edited, or its log rewritten) is never used."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from actors import get_execution_events, wait_for_workflow
from actors.runtime import get_database_url
from events import EventStore, connect_pool, fold
from events.leases import enqueue
from events.snapshots import SNAPSHOT_EVERY, load_snapshot, save_snapshot
from projections import project_executions
from tests.integration.helpers import assert_gapless
from tests.unit.test_snapshots_unit import retry_log

pytestmark = pytest.mark.usefixtures("ray_session")

STAGES = 30


@pytest.fixture
async def quiet(store: object) -> AsyncIterator[EventStore]:
    """A store without the queue read model: what it writes, no runner sees until queued
    (``store``: the system's, ready — migrated, its runners up)."""
    from actors import initialize_workflow_system

    await initialize_workflow_system()
    pool = await connect_pool(get_database_url())
    try:
        yield EventStore(pool, projectors=[project_executions])
    finally:
        await pool.close()


async def _long_unfinished(quiet: EventStore, failures: int, done: int) -> str:
    eid = str(uuid.uuid4())
    events = retry_log(eid, STAGES, failures, done=done)
    for i in range(0, len(events), 500):
        part = events[i:i + 500]
        await quiet.append(part, expected_version=part[0].seq - 1)
    return eid


async def _run_to_end(quiet: EventStore, eid: str) -> list[object]:
    async with quiet.pool.acquire() as conn:
        await enqueue(conn, eid, await conn.fetchval("SELECT now()"))
    status = await wait_for_workflow(eid, timeout=120)
    assert status.status == "completed", status.error_message
    events = await get_execution_events(eid)
    assert_gapless(events)  # type: ignore[arg-type]
    return list(events)


def _started(events: list[object], stage_id: str) -> int:
    return sum(1 for e in events
               if getattr(e, "type", "") == "stage_started" and e.stage_id == stage_id)  # type: ignore[attr-defined]


async def test_a_runner_snapshots_a_long_log_and_the_snapshot_is_its_fold(
        quiet: EventStore) -> None:
    # 28 of 30 stages done, 40 failed attempts each: ~1,200 events, no snapshot yet.
    eid = await _long_unfinished(quiet, failures=40, done=STAGES - 2)
    async with quiet.pool.acquire() as conn:
        assert (await load_snapshot(conn, eid))[1] == "none"
    events = await _run_to_end(quiet, eid)
    assert _started(events, f"st{STAGES - 2}") == 1 and _started(events, f"st{STAGES - 1}") == 1
    # The runner that adopted the whole log (over SNAPSHOT_EVERY events) snapshotted it at its
    # first append; the snapshot is exactly the fold of the log up to its event.
    async with quiet.pool.acquire() as conn:
        snap, fate = await load_snapshot(conn, eid)
    assert fate == "used" and snap is not None
    assert snap.state.version > SNAPSHOT_EVERY
    assert snap.state == fold(events[:snap.state.version])  # type: ignore[arg-type]


async def test_an_execution_resumes_from_its_snapshot_as_from_its_whole_log(
        quiet: EventStore) -> None:
    eid = await _long_unfinished(quiet, failures=40, done=STAGES - 2)
    log = await quiet.read(eid)
    cut = len(log) - 300  # a snapshot 300 events before the end, as a runner leaves them
    async with quiet.pool.acquire() as conn:
        assert await save_snapshot(conn, fold(log[:cut]), 10_000)
        assert (await load_snapshot(conn, eid))[1] == "used"
    events = await _run_to_end(quiet, eid)
    # Nothing before the snapshot ran again; what was left ran once, in order.
    assert [_started(events, f"st{i}") for i in range(STAGES)] == [1] * STAGES
    assert fold(events).stages[f"st{STAGES - 3}"].output == log[-1].output  # type: ignore[attr-defined]


async def test_an_edited_snapshot_is_never_used(quiet: EventStore) -> None:
    eid = await _long_unfinished(quiet, failures=2, done=STAGES - 1)
    log = await quiet.read(eid)
    cut = len(log) - 10
    state = fold(log[:cut])
    async with quiet.pool.acquire() as conn:
        assert await save_snapshot(conn, state, 0)
        # Someone edits the snapshot: a stage that has run is said not to have, and an output
        # is changed.  The digest no longer holds: the whole log is read instead.
        await conn.execute(
            "UPDATE workflow_snapshots SET state = replace(state, $2, $3) "
            "WHERE execution_id = $1::uuid", eid, '"attempts":3', '"attempts":0')
        assert (await load_snapshot(conn, eid))[1] == "broken"
    events = await _run_to_end(quiet, eid)
    assert [_started(events, f"st{i}") for i in range(STAGES)] == [1] * STAGES
    whole = fold(events)
    assert all(whole.stages[f"st{i}"].attempts == 3 for i in range(STAGES - 1))
