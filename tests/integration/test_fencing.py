"""Zombie fencing: a runner that lost its lease (a partition: its lease connection is cut)
stops its stage at once and can write nothing; the runner that takes over finishes the
execution, and no stage ever runs twice at the same time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from actors import execute_workflow_dag, initialize_workflow_system, wait_for_workflow
from events import EventStore, execution_lock_key
from tests.integration.helpers import (
    assert_gapless,
    events_of,
    process_alive,
    register_chain,
    stage,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("ray_session")


def _runs(path: Path) -> list[tuple[str, float, int]]:
    if not path.exists():
        return []
    return [(kind, float(at), int(pid)) for kind, at, pid in
            (line.split() for line in path.read_text().splitlines())]



@pytest.mark.parametrize("executor", ["task", "local"])
async def test_a_runner_that_lost_its_lease_is_fenced_and_stops(
    tmp_dir: Path, store: EventStore, executor: str
) -> None:
    """A task stage is stopped by killing its worker; a local stage (a thread of the runner)
    by the runner ending its own process."""
    dag = await register_chain("fence", [stage("slow", "logged_sleep", retry="STANDARD",
                                               executor=executor),
                                         stage("after", "noop")])
    await initialize_workflow_system()
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir), "seconds": 4}, "tester")
    runs = tmp_dir / "runs-slow"
    await wait_until(lambda: len(_runs(runs)) == 1, timeout=30, what="the slow stage to start")
    old_pid = _runs(runs)[0][2]

    # Cut the old runner off: end its lease connection from the server side.
    key = execution_lock_key(eid)
    holder = await store.pool.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1",
        (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)
    assert holder is not None, "the execution's lease is held by its runner"
    cut_at = time.time()
    assert await store.pool.fetchval("SELECT pg_terminate_backend($1)", holder)

    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "completed", status.error_message
    events = await events_of(eid)
    assert_gapless(events)
    assert [e.stage_id for e in events if e.type == "stage_completed"] == ["slow", "after"]
    # The old runner wrote nothing about its cut-short attempt; the new one ran it once.
    slow_attempts = [e for e in events if e.type == "stage_attempt" and e.stage_id == "slow"]
    assert len(slow_attempts) == 1 and slow_attempts[0].outcome == "succeeded"

    lines = _runs(runs)
    starts = [(at, pid) for kind, at, pid in lines if kind == "start"]
    ends = [(at, pid) for kind, at, pid in lines if kind == "end"]
    assert len(starts) == 2, lines
    assert len(ends) == 1 and ends[0][1] != old_pid, "the old stage must not run to its end"
    assert starts[1][0] > cut_at, "the new attempt starts only after the lease was lost"
    # The old stage's process was ended when its runner lost the lease.
    await wait_until(lambda: not process_alive(old_pid), timeout=20,
               what=f"the old stage's process {old_pid} to be stopped")

