"""Fork/join, retries, timeouts, crashes and bad input on real Ray + PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import asyncpg
import pytest
import ray

from actors import (
    execute_workflow_dag,
    execution_actor,
    get_workflow_status,
    initialize_workflow_system,
    register_workflow,
    wait_for_workflow,
)
from definitions import (
    ExecutionNotFoundError,
    InvalidContextError,
    InvalidWorkflowError,
    PayloadTooLargeError,
    WorkflowNotFoundError,
)
from events import EventStore, StageAttempt, lease_is_free
from tests.integration.helpers import (
    assert_gapless,
    events_of,
    eventually,
    register_chain,
    stage,
    types_of,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("ray_session")


def attempts_of(events: list, stage_id: str) -> list[StageAttempt]:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, StageAttempt) and e.stage_id == stage_id]


async def test_fork_join_really_overlaps() -> None:
    branches = ["b1", "b2", "b3", "b4"]
    dag = await register_chain(
        "fork",
        [stage("start", "noop"), *[stage(b, "timed") for b in branches], stage("join", "noop")],
        transitions=[
            *[{"from_stage": "start", "to_stage": b} for b in branches],
            *[{"from_stage": b, "to_stage": "join"} for b in branches],
        ],
    )
    eid = await execute_workflow_dag(dag.id, {"seconds": 4}, "tester")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "completed", status.error_message
    events = await events_of(eid)
    outputs = {e.stage_id: e.output for e in events if e.type == "stage_completed"}
    starts = [outputs[b]["start"] for b in branches]
    ends = [outputs[b]["end"] for b in branches]
    assert max(starts) < min(ends), "all four branches start before any finishes"
    assert all(end - start >= 4 for start, end in zip(starts, ends, strict=True))
    assert len({outputs[b]["pid"] for b in branches}) == 4
    join_started = next(e for e in events if e.type == "stage_started" and e.stage_id == "join")
    last_branch = max(
        e.seq for e in events if e.type == "stage_completed" and e.stage_id in branches)
    assert join_started.seq > last_branch


async def test_flaky_agent_succeeds_on_third_attempt_with_standard_backoff() -> None:
    dag = await register_chain("flaky", [stage("call", "flaky_connection", retry="STANDARD")])
    eid = await execute_workflow_dag(dag.id, {}, "tester")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "completed"
    attempts = attempts_of(await events_of(eid), "call")
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert [a.outcome for a in attempts] == ["failed", "failed", "succeeded"]
    assert attempts[0].error is not None and attempts[0].error["type"] == "ConnectionError"
    assert attempts[0].error["retryable"] is True
    first, second = attempts[0].retry_delay_ms, attempts[1].retry_delay_ms
    assert first is not None and 375 <= first <= 625
    assert second is not None and 750 <= second <= 1250
    # The recorded delay was really waited: attempt 2 ended at least `first` ms after attempt 1.
    gap_ms = (attempts[1].at - attempts[0].at).total_seconds() * 1000
    assert gap_ms >= first


@pytest.mark.parametrize(
    ("agent", "retry", "error_type", "tries"),
    [
        ("forbidden", "STANDARD", "PermissionError", 1),
        ("not_found", "STANDARD", "HttpError", 1),
        ("unavailable", "CONSERVATIVE", "HttpError", 2),
    ],
)
async def test_retry_follows_the_classification(
    agent: str, retry: str, error_type: str, tries: int
) -> None:
    dag = await register_chain(agent, [stage("call", agent, retry=retry)])
    eid = await execute_workflow_dag(dag.id, {}, "tester")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "failed"
    assert error_type in (status.error_message or "")
    events = await events_of(eid)
    attempts = attempts_of(events, "call")
    assert len(attempts) == tries
    assert all(a.error is not None and a.error["type"] == error_type for a in attempts)
    assert types_of(events)[-2:] == ["stage_failed", "workflow_failed"]


async def test_hung_agent_is_cancelled_at_its_timeout(tmp_dir: Path) -> None:
    dag = await register_chain("hung", [stage("stuck", "hung", timeout=2)])
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "tester")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "failed"
    attempts = attempts_of(await events_of(eid), "stuck")
    assert len(attempts) == 1
    assert attempts[0].error is not None
    assert attempts[0].error["type"] == "StageTimeoutError"
    assert attempts[0].error["retryable"] is True
    pid = int((tmp_dir / "hung.pid").read_text().split()[0])

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await wait_until(gone, timeout=20, what=f"the hung agent's worker {pid} to be killed")
    assert not (tmp_dir / "finished").exists()


def _effects(tmp_dir: Path) -> list[str]:
    return sorted(p.name for p in tmp_dir.glob("effect-*"))


@pytest.mark.parametrize("restart", [True, False], ids=["ray-restarts", "runner-gone-for-good"])
async def test_killing_the_actor_mid_stage_still_completes_once(
    tmp_dir: Path, restart: bool, store: EventStore
) -> None:
    dag = await register_chain(
        "kill", [stage("one", "effectful"), stage("two", "effectful"), stage("three", "effectful")])
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir), "seconds": 1.5}, "tester")
    await wait_until(lambda: (tmp_dir / "calls-two").exists(), timeout=30,
               what="stage two to be running")
    handle = execution_actor(eid)
    assert handle is not None
    killed = await handle.ready.remote()
    assert killed.startswith("wfdag-runner-")
    ray.kill(handle, no_restart=not restart)
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "completed", status.error_message
    events = await events_of(eid)
    assert_gapless(events)
    completed = [e.stage_id for e in events if e.type == "stage_completed"]
    assert completed == ["one", "two", "three"]
    # The interrupted stage ran again (same idempotency key); its side effect happened once.
    assert len((tmp_dir / "calls-two").read_text().splitlines()) >= 2
    assert _effects(tmp_dir) == sorted(f"effect-{eid}_{s}" for s in ("one", "two", "three"))
    assert execution_actor(eid) is None
    if not restart:
        # The runner is gone for good; initialize_workflow_system() brings the pool back.
        with pytest.raises(ValueError):
            ray.get_actor(killed, namespace="wfdag")
        report = await initialize_workflow_system()
        assert report["pool"] >= 1
        assert await ray.get_actor(killed, namespace="wfdag").ready.remote() == killed


async def test_async_agents_and_upstream_inputs() -> None:
    dag = await register_chain("async", [stage("first", "noop"), stage("second", "async_agent")])
    eid = await execute_workflow_dag(dag.id, {}, "tester")
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
    events = await events_of(eid)
    second = next(e for e in events if e.type == "stage_completed" and e.stage_id == "second")
    assert second.output == {"async": True, "inputs": ["first"]}  # type: ignore[union-attr]


async def test_execution_actor_is_found_while_running_and_none_after() -> None:
    dag = await register_chain("actor", [stage("slow", "timed")])
    eid = await execute_workflow_dag(dag.id, {"seconds": 2}, "tester")
    # execution_actor is called from inside this test's running event loop.
    await wait_until(lambda: execution_actor(eid) is not None, timeout=30,
                     what="a runner to adopt it")
    handle = execution_actor(eid)
    assert await handle.current.remote() == eid
    await wait_for_workflow(eid, timeout=60)
    assert execution_actor(eid) is None


# --- bad input -----------------------------------------------------------------------------

async def _row_counts(database_url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(database_url)
    try:
        events = await conn.fetchval("SELECT count(*) FROM workflow_events")
        executions = await conn.fetchval("SELECT count(*) FROM workflow_executions")
        return int(events), int(executions)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("workflow", "context", "error", "match"),
    [
        ("no-such-workflow-v1", {}, WorkflowNotFoundError, "no-such-workflow-v1"),
        ("opportunity-discovery-v1", [1, 2], InvalidContextError, "JSON object"),
        ("opportunity-discovery-v1", "text", InvalidContextError, "JSON object"),
        ("opportunity-discovery-v1", {"s": {1, 2}}, InvalidContextError, "JSON-serialisable"),
        ("opportunity-discovery-v1", {"x": float("nan")}, InvalidContextError, "JSON"),
        ("opportunity-discovery-v1", {"blob": "x" * (1024 * 1024 + 1)}, PayloadTooLargeError,
         "1048576"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_written(
    database_url: str, store: EventStore, workflow: str, context: object,
    error: type[Exception], match: str,
) -> None:
    before = await _row_counts(database_url)
    with pytest.raises(error, match=match):
        await execute_workflow_dag(workflow, context, "tester")  # type: ignore[arg-type]
    assert await _row_counts(database_url) == before


@pytest.mark.parametrize("agent", ["returns_string", "returns_unserialisable", "returns_nan"])
async def test_agent_returning_non_json_fails_the_stage_clearly(agent: str) -> None:
    dag = await register_chain(agent, [stage("bad", agent, retry="STANDARD")])
    eid = await execute_workflow_dag(dag.id, {}, "tester")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "failed"
    attempts = attempts_of(await events_of(eid), "bad")
    assert len(attempts) == 1, "non-JSON output is not retried"
    assert attempts[0].error is not None
    assert attempts[0].error["type"] == "AgentOutputError"
    assert "JSON" in attempts[0].error["message"]
    assert status.executed_steps == []


async def test_invalid_definition_is_refused_with_every_problem(database_url: str) -> None:
    bad = {
        "id": "broken-v1", "name": "broken", "version": 1, "initial_stage": "nowhere",
        "final_stages": ["a"],
        "stages": [{"id": "a", "name": "A", "agent_type": "target", "timeout_seconds": 5},
                   {"id": "b", "name": "B", "agent_type": "target", "timeout_seconds": 5}],
        "transitions": [{"from_stage": "a", "to_stage": "b"}, {"from_stage": "b", "to_stage": "a"},
                        {"from_stage": "a", "to_stage": "ghost"}],
    }
    with pytest.raises(InvalidWorkflowError) as info:
        await register_workflow(bad)
    text = " ".join(info.value.errors)
    assert "nowhere" in text and "ghost" in text and "cycle" in text
    with pytest.raises(WorkflowNotFoundError):
        await execute_workflow_dag("broken-v1", {}, "tester")


async def test_unknown_execution_is_not_found() -> None:
    with pytest.raises(ExecutionNotFoundError):
        await get_workflow_status("5b0c1a52-0000-4000-8000-000000000000")
    with pytest.raises(ExecutionNotFoundError):
        await wait_for_workflow("' OR 1=1 --", timeout=1)


async def test_resume_sweep_leaves_an_execution_whose_lease_is_held(
    tmp_dir: Path, store: EventStore
) -> None:
    """A live runner (here or in another Ray cluster) holds the lease; the sweep leaves it."""
    dag = await register_chain("lease", [stage("slow", "timed")])
    eid = await execute_workflow_dag(dag.id, {"seconds": 3}, "tester")

    async def lease_held() -> bool:
        async with store.pool.acquire() as conn:
            return not await lease_is_free(conn, eid)

    await eventually(lease_held, timeout=30, what="the actor to take its lease")
    assert eid not in (await initialize_workflow_system())["resumed"]
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
    events = await events_of(eid)
    assert types_of(events).count("stage_started") == 1


async def test_more_concurrent_waiters_than_pool_connections_all_return() -> None:
    """Waiters share one LISTEN connection; one connection each would starve the pool (5)."""
    dag = await register_chain("waiters", [stage("slow", "timed")])
    ids = [await execute_workflow_dag(dag.id, {"seconds": 2}, "tester") for _ in range(12)]
    statuses = await asyncio.wait_for(
        asyncio.gather(*[wait_for_workflow(eid, timeout=60) for eid in ids]), timeout=90)
    assert [s.status for s in statuses] == ["completed"] * 12


async def test_idempotent_start_twenty_concurrent_callers_one_execution(store: EventStore) -> None:
    key = f"order-{uuid.uuid4().hex}"
    ids = await asyncio.gather(*[
        execute_workflow_dag("opportunity-discovery-v1", {"projectId": "idem"}, "t",
                             idempotency_key=key) for _ in range(20)])
    assert len(set(ids)) == 1
    eid = ids[0]
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
    initiated = await store.pool.fetchval(
        "SELECT count(*) FROM workflow_events WHERE execution_id = $1::uuid "
        "AND event_type = 'workflow_initiated'", eid)
    assert initiated == 1
    again = await execute_workflow_dag("opportunity-discovery-v1", {}, "t", idempotency_key=key)
    assert again == eid  # later calls too
    other = await execute_workflow_dag("target-value-commit-v1", {}, "t", idempotency_key=key)
    assert other != eid  # a key is scoped to its workflow
    await wait_for_workflow(other, timeout=60)


async def test_a_runner_handle_offers_no_way_to_drive_an_execution() -> None:
    """``execution_actor`` hands out the runner's handle: it has the read-only methods only."""
    dag = await register_chain("handle", [stage("wait", "timed")])
    eid = await execute_workflow_dag(dag.id, {"seconds": 3}, "tester")
    await wait_until(lambda: execution_actor(eid) is not None, timeout=30,
                     what="a runner to adopt it")
    handle = execution_actor(eid)
    # The lease names the runner as its claim commits; the runner's own `current` follows
    # once the claim's reply reaches its event loop (an actor call can come in between).
    async def names_it() -> bool:
        return bool(await handle.current.remote() == eid)

    await eventually(names_it, timeout=10, what="the runner's `current` to name it")
    for name in ("run", "_serve", "_drive", "serve"):
        with pytest.raises(AttributeError):
            getattr(handle, name)
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
