"""Task stages on stage workers (issue 18): warm processes of the runner's, reused stage after
stage, killed on timeout and with their runner, and a Ray task of its own for a stage that asks
for resources."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
import ray

from actors import execute_workflow_dag, execution_actor, wait_for_workflow
from tests.integration.helpers import (
    assert_gapless,
    events_of,
    process_alive,
    register_chain,
    stage,
    wait_until,
)
from tests.integration.test_runtime import attempts_of

pytestmark = pytest.mark.usefixtures("ray_session")


async def test_a_chain_of_task_stages_reuses_one_warm_worker(tmp_dir: Path) -> None:
    # A runner without an idle worker runs the attempt as a Ray task while one starts: the
    # first stage lasts long enough for the worker to be ready for the next ones.
    dag = await register_chain("workers-reuse", [
        stage("warm", "long_running"), stage("one", "where"), stage("two", "where"),
        stage("three", "where"), stage("placed", "where", resources={"CPU": 0.01}),
    ])
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir), "seconds": 4}, "tester")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "completed", status.error_message
    outputs = {e.stage_id: e.output for e in await events_of(eid) if e.type == "stage_completed"}
    # One process ran the three stages one after the other: a stage worker (an actor)...
    assert outputs["one"]["pid"] == outputs["two"]["pid"] == outputs["three"]["pid"]
    assert outputs["one"]["actor_id"] is not None
    assert "StageWorker" in " ".join(psutil.Process(outputs["one"]["pid"]).cmdline())
    # ...and a stage that asks for resources is a Ray task of its own (no actor).
    assert outputs["placed"]["actor_id"] is None
    assert outputs["placed"]["pid"] != outputs["one"]["pid"]


async def test_a_worker_that_dies_under_its_attempt_is_a_retryable_system_failure(
    tmp_dir: Path,
) -> None:
    retry = {"max_attempts": 2, "initial_delay_ms": 50, "max_delay_ms": 50}
    dag = await register_chain("workers-die", [stage("fragile", "dies_once", retry=retry)])
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "tester")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "completed", status.error_message
    events = await events_of(eid)
    assert_gapless(events)
    attempts = attempts_of(events, "fragile")
    assert len(attempts) == 2
    assert attempts[0].error is not None
    assert attempts[0].error["type"] == "WorkerCrashedError"
    assert attempts[0].error["retryable"] is True
    calls = (tmp_dir / "dies-once").read_text().split("\n")
    first_pid, second_pid = int(calls[0].split()[0]), int(calls[1].split()[0])
    assert first_pid != second_pid  # a new worker for the retry
    assert not process_alive(first_pid)


async def test_a_killed_runner_takes_its_stage_worker_with_it(tmp_dir: Path) -> None:
    dag = await register_chain("workers-fate", [stage("warm", "long_running"),
                                                stage("slow", "long_running", timeout=120)])
    eid = await execute_workflow_dag(
        dag.id, {"dir": str(tmp_dir), "seconds_warm": 4, "seconds": 6}, "tester")
    pid_file = tmp_dir / "slow.pid"
    await wait_until(pid_file.exists, timeout=30, what="the slow stage to start")
    worker_pid = int(pid_file.read_text().split()[0])
    assert "StageWorker" in " ".join(psutil.Process(worker_pid).cmdline())
    handle = execution_actor(eid)
    assert handle is not None
    ray.kill(handle, no_restart=False)
    # The worker goes with its runner, long before its 6 s stage could finish.
    await wait_until(lambda: not process_alive(worker_pid), timeout=4,
                     what=f"the stage worker {worker_pid} to end with its runner")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "completed", status.error_message
    pids = [int(line.split()[0]) for line in pid_file.read_text().splitlines()]
    assert len(pids) == 2 and pids[0] == worker_pid and os.getpid() not in pids
    # Only the second run finished: the first never ran on beside it.
    assert len((tmp_dir / "finished-slow").read_text().splitlines()) == 1
