"""Admission control, the recovery sweep and dead-lettering, on real Ray + PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from actors import (
    execute_workflow_dag,
    get_workflow_status,
    initialize_workflow_system,
    wait_for_workflow,
)
from actors.runtime import get_database_url, settings
from events import EventStore, WorkflowFailed, WorkflowInitiated, connect_pool
from projections import project_executions
from tests.integration.helpers import assert_gapless, events_of, register_chain, stage

pytestmark = pytest.mark.usefixtures("ray_session")

POOL_SIZE = settings().pool_size
MAX_RECOVERIES = settings().max_recoveries


def _alive_execution_actors() -> int:
    # The GCS actor table (the state API needs the dashboard, which the suite's Ray runs without).
    from ray._private import state

    return sum(1 for a in state.actors().values()
               if a["ActorClassName"] == "ExecutionActor" and a["State"] == "ALIVE")


async def test_200_executions_under_a_cap_of_10_live_actors(store: EventStore) -> None:
    assert POOL_SIZE == 10, "tests/conftest.py sets WFDAG_POOL_SIZE=10"
    dag = await register_chain("cap", [stage("a", "noop"), stage("b", "noop")])
    await initialize_workflow_system()
    ids = await asyncio.gather(*[execute_workflow_dag(dag.id, {"n": i}, "tester")
                                 for i in range(200)])
    peak_running, peak_actors, peak_driving, saw_queued = 0, 0, 0, False
    deadline = time.monotonic() + 240
    while True:
        counts = dict(await store.pool.fetch(
            "SELECT status, count(*) FROM workflow_executions "
            "WHERE workflow_definition_id = $1 GROUP BY status", dag.id))
        queued = await store.pool.fetchval(
            "SELECT count(*) FROM execution_queue q JOIN workflow_executions e "
            "ON e.id = q.execution_id WHERE e.workflow_definition_id = $1 AND q.runner IS NULL",
            dag.id)
        saw_queued = saw_queued or queued > 0
        # Executions claimed by a runner now (the pool itself always has 10 actors alive).
        driving = await store.pool.fetchval(
            "SELECT count(*) FROM execution_queue q JOIN workflow_executions e "
            "ON e.id = q.execution_id WHERE e.workflow_definition_id = $1 "
            "AND q.runner IS NOT NULL", dag.id)
        peak_driving = max(peak_driving, driving)
        peak_running = max(peak_running, counts.get("in_progress", 0))
        peak_actors = max(peak_actors, await asyncio.to_thread(_alive_execution_actors))
        if counts.get("completed", 0) == 200:
            break
        assert time.monotonic() < deadline, f"not all 200 completed in time: {counts}"
        await asyncio.sleep(0.2)
    assert peak_running <= 10, f"{peak_running} executions ran at once under a cap of 10"
    assert 0 < peak_actors <= 10, f"{peak_actors} execution actors were alive at once"
    assert 0 < peak_driving <= 10, f"{peak_driving} executions were claimed at once"
    assert saw_queued, "with 200 submitted and 10 slots, some must have waited in the queue"
    statuses = {(await get_workflow_status(eid)).status for eid in ids}
    assert statuses == {"completed"}


async def test_status_is_queued_until_an_execution_actor_takes_it(tmp_dir: Path) -> None:
    dag = await register_chain("queued", [stage("wait", "timed")])
    await initialize_workflow_system()
    ids = [await execute_workflow_dag(dag.id, {"seconds": 1.5}, "tester")
           for _ in range(POOL_SIZE + 3)]
    statuses = [(await get_workflow_status(eid)).status for eid in ids]
    assert "queued" in statuses, statuses
    assert set(statuses) <= {"queued", "initiated", "in_progress"}
    for eid in ids:
        assert (await wait_for_workflow(eid, timeout=60)).status == "completed"


async def test_a_poison_execution_is_dead_lettered_after_bounded_recoveries(
    tmp_dir: Path,
) -> None:
    dag = await register_chain("poison", [stage("boom", "kill_my_runner")])
    await initialize_workflow_system()
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "tester")
    status = await wait_for_workflow(eid, timeout=120)
    assert status.status == "failed"
    assert status.error_message is not None
    # Each restarted runner certifies its own death; a certificate can land after the next
    # adoption, so the bound is reached at the (MAX+1)th crash or, at worst, one later.
    found = re.search(r"dead-lettered after (\d+) runner crashes", status.error_message)
    assert found is not None, status.error_message
    crashes = int(found.group(1))
    assert MAX_RECOVERIES + 1 <= crashes <= MAX_RECOVERIES + 2
    assert f"wfdag retry {eid}" in status.error_message
    events = await events_of(eid)
    assert_gapless(events)
    last = events[-1]
    assert isinstance(last, WorkflowFailed) and last.dead_lettered
    assert last.failed_stage == "boom"
    # Every adoption ran the stage once and lost its runner; then it stopped.  A crash counts
    # once its runner, restarted, certifies it — which can land after the next adoption or
    # two (adopting takes one round trip, a restart about a second).
    kills = (tmp_dir / "runner-kills").read_text().splitlines()
    assert crashes <= len(kills) <= crashes + 2
    # Nothing is left queued for it, and the pool is whole again.
    report = await initialize_workflow_system()
    assert eid not in report["resumed"] and eid not in report["dead_lettered"]


async def test_the_sweep_requeues_an_execution_nobody_drives(database_url: str) -> None:
    """An execution whose queue entry is gone (written by a process without the queue read
    model, or a queue row lost) is found by the sweep and completed by the pool."""
    dag = await register_chain("sweep", [stage("a", "noop"), stage("b", "noop")])
    pool = await connect_pool(get_database_url())
    try:
        # Write the stream with a store that does not maintain the queue: no runner sees it.
        quiet = EventStore(pool, projectors=[project_executions])
        eid = str(uuid.uuid4())
        await quiet.append([WorkflowInitiated(
            execution_id=eid, seq=1, at=datetime.now(UTC), workflow_id=dag.id,
            workflow_version=dag.version, dag=dag.model_dump(mode="json"), context={"x": 1},
            user_id="tester")], expected_version=0)
        assert await pool.fetchval(
            "SELECT count(*) FROM execution_queue WHERE execution_id = $1::uuid", eid) == 0
        report = await initialize_workflow_system()
        assert eid in report["resumed"]
        assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
    finally:
        await pool.close()
