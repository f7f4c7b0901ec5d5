"""Local stages: agents run as threads of the execution actor that drives them (no Ray task),
and still end cleanly — a local agent that overruns its timeout takes its runner's process with
it (Ray restarts the runner), so it can never run beside its own retry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray

from actors import execute_workflow_dag, initialize_workflow_system, wait_for_workflow
from actors.runner import runner_name
from actors.runtime import NAMESPACE
from tests.integration.helpers import (
    assert_gapless,
    events_of,
    process_alive,
    register_chain,
    stage,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("ray_session")



async def test_a_local_stage_runs_in_its_runner_and_a_task_stage_does_not() -> None:
    dag = await register_chain("local-where", [
        stage("here", "where", executor="local"),
        stage("there", "where"),
        stage("placed", "where", resources={"CPU": 0.01}),
        stage("coro", "async_agent", executor="local"),
    ])
    await initialize_workflow_system()
    eid = await execute_workflow_dag(dag.id, {}, "tester")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "completed", status.error_message
    events = await events_of(eid)
    assert_gapless(events)
    outputs = {e.stage_id: e.output for e in events if e.type == "stage_completed"}
    runners = {
        ray.get_actor(runner_name(k), namespace=NAMESPACE)._actor_id.hex()
        for k in range(int(os.environ["WFDAG_POOL_SIZE"]))
    }
    assert outputs["here"]["actor_id"] in runners  # a thread of a runner
    # A task stage runs in a process of its own, never a runner's: a stage worker of the runner
    # (issue 18), or — when it asks for resources — a Ray task of its own (no actor).
    assert outputs["there"]["actor_id"] not in runners
    assert outputs["placed"]["actor_id"] is None
    assert outputs["here"]["pid"] != outputs["there"]["pid"]
    assert outputs["here"]["pid"] != outputs["placed"]["pid"]
    assert outputs["coro"]["async"] is True  # a coroutine agent runs locally too


async def test_a_local_coroutine_agent_runs_on_its_runners_loop_and_is_cancelled_at_timeout(
    tmp_dir: Path,
) -> None:
    """An ``async def`` agent of a local stage is awaited on its runner's event loop (no
    thread); at its timeout it is cancelled — it can be, unlike a thread — so its runner's
    process lives on, and its retry runs in that same process."""
    retry = {"max_attempts": 2, "initial_delay_ms": 50, "max_delay_ms": 50}
    dag = await register_chain("local-coro", [
        stage("here", "async_where", executor="local"),
        stage("stuck", "async_hung", timeout=1, retry=retry, executor="local"),
    ])
    await initialize_workflow_system()
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "tester")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "failed"
    events = await events_of(eid)
    assert_gapless(events)
    here = next(e.output for e in events if e.type == "stage_completed")
    assert not here["thread"].startswith("wfdag-local")  # not a thread of the pool
    attempts = [e for e in events if e.type == "stage_attempt" and e.stage_id == "stuck"]
    assert [a.attempt for a in attempts] == [1, 2]
    assert all(a.error is not None and a.error["type"] == "StageTimeoutError" for a in attempts)
    pids = [int(p) for p in (tmp_dir / "hung.pid").read_text().split()]
    cancelled = [int(p) for p in (tmp_dir / "cancelled").read_text().split()]
    assert len(pids) == 2 and cancelled == pids  # each attempt was cancelled, then retried
    assert pids[0] == pids[1] == here["pid"]  # in the runner's own process, which lived on
    assert process_alive(pids[0])
    assert not (tmp_dir / "finished").exists()


async def test_a_local_coroutine_agent_that_ignores_cancellation_ends_with_its_process(
    tmp_dir: Path,
) -> None:
    """A coroutine agent that will not stop when cancelled is abandoned like a thread: its
    runner ends its own process before the retry could run beside it."""
    retry = {"max_attempts": 2, "initial_delay_ms": 50, "max_delay_ms": 50}
    dag = await register_chain("local-coro-stubborn", [
        stage("stuck", "async_stubborn", timeout=1, retry=retry, executor="local"),
    ])
    await initialize_workflow_system()
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "tester")
    status = await wait_for_workflow(eid, timeout=90)
    assert status.status == "failed"
    attempts = [e for e in await events_of(eid) if e.type == "stage_attempt"]
    assert [a.attempt for a in attempts] == [1, 2]
    assert all(a.error is not None and a.error["type"] == "StageTimeoutError" for a in attempts)
    pids = [int(p) for p in (tmp_dir / "hung.pid").read_text().split()]
    assert len(pids) == 2 and pids[0] != pids[1]
    for pid in pids:
        await wait_until(lambda pid=pid: not process_alive(pid), timeout=30,
                         what=f"the runner process {pid} of the stubborn agent to end")
    assert not (tmp_dir / "finished").exists()


async def test_a_local_agent_that_overruns_its_timeout_is_stopped_with_its_process(
    tmp_dir: Path,
) -> None:
    retry = {"max_attempts": 2, "initial_delay_ms": 50, "max_delay_ms": 50}
    dag = await register_chain("local-hung", [
        stage("stuck", "hung", timeout=1, retry=retry, executor="local"),
    ])
    await initialize_workflow_system()
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "tester")
    pid_file = tmp_dir / "hung.pid"
    await wait_until(pid_file.exists, timeout=30, what="the hung agent to start")
    first_pid = int(pid_file.read_text().split()[0])
    status = await wait_for_workflow(eid, timeout=90)
    assert status.status == "failed"
    events = await events_of(eid)
    assert_gapless(events)
    attempts = [e for e in events if e.type == "stage_attempt"]
    assert [a.attempt for a in attempts] == [1, 2]
    assert all(a.error is not None and a.error["type"] == "StageTimeoutError" for a in attempts)
    failed = events[-1]
    assert failed.type == "workflow_failed"
    # Two timeouts recorded by the log's retry policy, not counted as runner crashes: the
    # execution failed on its attempts, it was not dead-lettered.
    assert failed.dead_lettered is False
    # Each overrunning thread ended with its runner's process: never beside its retry.
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2
    for pid in pids:
        await wait_until(lambda pid=pid: not process_alive(pid), timeout=30,
                   what=f"the runner process {pid} of the hung agent to end")
    assert first_pid == pids[0]
    assert not (tmp_dir / "finished").exists()



async def test_a_local_agent_that_exits_or_is_interrupted_fails_its_stage_not_its_runner(
) -> None:
    """SystemExit, KeyboardInterrupt and CancelledError from a local agent fail its attempt,
    classified by name; the runner hosting it lives on (issue 16)."""
    dag = await register_chain("local-base", [
        stage("boom", "raises_base", executor="local", retry="NONE")])
    await initialize_workflow_system()
    kinds = ["SystemExit", "KeyboardInterrupt", "CancelledError"]
    ids = [await execute_workflow_dag(dag.id, {"raise": kind}, "tester") for kind in kinds]
    for eid, kind in zip(ids, kinds, strict=True):
        status = await wait_for_workflow(eid, timeout=60)
        assert status.status == "failed", status
        failed = [e for e in await events_of(eid) if e.type == "stage_failed"]
        # Its own error, once: a runner that died would have been re-adopted, and the
        # execution dead-lettered after WFDAG_MAX_RECOVERIES, under another error.
        assert [e.error["type"] for e in failed] == [kind]  # type: ignore[attr-defined]
