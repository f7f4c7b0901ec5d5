"""Per-stage circuit breakers shared by every execution, on real Ray + PostgreSQL (issue 3;
issue 15: a refused attempt waits for the breaker instead of failing the workflow, and only
failures that say something about the downstream count)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import ray

from actors import (
    execute_workflow_dag,
    get_workflow_circuit_breaker_status,
    get_workflow_metrics,
    get_workflow_status,
    list_circuit_breakers,
    reset_workflow_circuit_breaker,
    wait_for_workflow,
)
from actors.breakers import REGISTRY_NAME
from actors.runtime import NAMESPACE
from definitions import WorkflowDAG
from tests.integration.helpers import events_of, register_chain, stage, wait_until

pytestmark = pytest.mark.usefixtures("ray_session")


def calls(tmp_dir: Path) -> int:
    path = tmp_dir / "breaker-calls"
    return len(path.read_text().splitlines()) if path.exists() else 0


async def breaker_flow(cooldown: float = 2.0, wait: float = 0.5) -> WorkflowDAG:
    """A stage whose attempts wait at most ``wait`` seconds for an open breaker."""
    return await register_chain("breaker", [stage(
        "call", "breaker_agent", retry="NONE", breaker_wait_seconds=wait,
        circuit_breaker={"failure_threshold": 3, "cooldown_seconds": cooldown})])


async def run(dag: WorkflowDAG, tmp_dir: Path, seconds: float = 0) -> str:
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir), "seconds": seconds}, "t")
    await wait_for_workflow(eid, timeout=60)
    return eid


async def first_error(eid: str) -> str:
    """The first attempt's error type; ``CircuitOpenError`` when the breaker never let an
    attempt through (the stage failed after waiting for it); ``none`` when it succeeded."""
    events = await events_of(eid)
    attempt = next((e for e in events if e.type == "stage_attempt"), None)
    if attempt is None:
        failed = next(e for e in events if e.type == "stage_failed")
        assert any(e.type == "stage_deferred" for e in events)
        return str(failed.error["type"])  # type: ignore[union-attr]
    return attempt.error["type"] if attempt.error else "none"  # type: ignore[union-attr]


async def wait_past(moment: datetime | None) -> None:
    assert moment is not None
    await wait_until(lambda: datetime.now(UTC) > moment, timeout=30,
               what=f"the cooldown to end at {moment}")


async def test_breaker_opens_refuses_half_opens_once_and_closes(tmp_dir: Path) -> None:
    dag = await breaker_flow()
    for _ in range(3):
        assert await first_error(await run(dag, tmp_dir)) == "HttpError"
    status = await get_workflow_circuit_breaker_status(dag.id, "call")
    assert (status.state, status.failure_count) == ("open", 3)
    assert status.opened_at is not None and status.opened_at.tzinfo is not None
    assert status.next_attempt_at is not None

    # Open: the attempt waits for the breaker (no attempt used up, the agent not called),
    # and fails once its breaker_wait_seconds (0.5 s here) are used up.
    refused = await run(dag, tmp_dir)
    assert calls(tmp_dir) == 3
    events = await events_of(refused)
    assert not any(e.type == "stage_attempt" for e in events)
    deferred = [e for e in events if e.type == "stage_deferred"]
    assert deferred and all(e.attempt == 1 for e in deferred)  # type: ignore[union-attr]
    failed = next(e for e in events if e.type == "stage_failed")
    assert failed.error["type"] == "CircuitOpenError"  # type: ignore[union-attr]
    assert "breaker_wait_seconds" in failed.error["message"]  # type: ignore[union-attr]
    assert (await get_workflow_status(refused)).circuit_breaker_state == {
        "call": {"state": "open", "failure_count": 3}}

    # After the cooldown it is half-open, with no call needed to say so; among many
    # concurrent executions exactly one trial reaches the agent.
    await wait_past(status.next_attempt_at)
    assert (await get_workflow_circuit_breaker_status(dag.id, "call")).state == "half_open"
    (tmp_dir / "healthy").touch()
    ids = await asyncio.gather(*[
        execute_workflow_dag(dag.id, {"dir": str(tmp_dir), "seconds": 6}, "t") for _ in range(6)])
    results = await asyncio.gather(*[wait_for_workflow(i, timeout=60) for i in ids])
    assert sorted(r.status for r in results) == ["completed"] + ["failed"] * 5
    assert calls(tmp_dir) == 4
    errors = sorted([await first_error(i) for i in ids])
    assert errors == ["CircuitOpenError"] * 5 + ["none"]
    closed = await get_workflow_circuit_breaker_status(dag.id, "call")
    assert (closed.state, closed.failure_count) == ("closed", 0)


async def test_breaker_reopens_when_the_trial_fails_and_reset_closes_it(tmp_dir: Path) -> None:
    dag = await breaker_flow(cooldown=1.0)
    for _ in range(3):
        await run(dag, tmp_dir)
    opened = await get_workflow_circuit_breaker_status(dag.id, "call")
    assert opened.state == "open"
    await wait_past(opened.next_attempt_at)
    trial = await run(dag, tmp_dir)  # still unhealthy: the trial fails
    assert await first_error(trial) == "HttpError"
    reopened = await get_workflow_circuit_breaker_status(dag.id, "call")
    assert reopened.state == "open"
    assert reopened.opened_at is not None and opened.opened_at is not None
    assert reopened.opened_at > opened.opened_at
    events = await events_of(trial)
    attempt = next(e for e in events if e.type == "stage_attempt")
    assert attempt.breaker is not None and attempt.breaker["transition"] == "open"  # type: ignore[union-attr]

    reset = await reset_workflow_circuit_breaker(dag.id, "call")
    assert (reset.state, reset.failure_count) == ("closed", 0)
    (tmp_dir / "healthy").touch()
    assert (await get_workflow_status(await run(dag, tmp_dir))).status == "completed"
    assert any(b.workflow_id == dag.id for b in await list_circuit_breakers())


async def test_breaker_state_survives_killing_the_registry(tmp_dir: Path) -> None:
    dag = await breaker_flow(cooldown=300)
    for _ in range(3):
        await run(dag, tmp_dir)
    registry = ray.get_actor(REGISTRY_NAME, namespace=NAMESPACE)
    ray.kill(registry, no_restart=False)
    view = None
    for _ in range(200):  # calls during the restart raise ActorUnavailableError
        try:
            view = await registry.status.remote(dag.id, "call")
            break
        except ray.exceptions.RayError:
            await asyncio.sleep(0.05)
    assert view is not None
    assert (view["state"], view["failure_count"]) == ("open", 3)
    refused = await run(dag, tmp_dir)
    assert await first_error(refused) == "CircuitOpenError"
    assert calls(tmp_dir) == 3


async def test_unknown_breaker_names_the_problem() -> None:
    from definitions import WorkflowNotFoundError

    with pytest.raises(WorkflowNotFoundError, match="nope"):
        await get_workflow_circuit_breaker_status("opportunity-discovery-v1", "nope")
    fresh = await get_workflow_circuit_breaker_status("opportunity-discovery-v1",
                                                      "opportunity_research")
    assert (fresh.state, fresh.failure_threshold, fresh.cooldown_seconds) == ("closed", 5, 60)


async def test_reset_closes_the_breaker_as_stored_even_when_a_registry_missed_a_change(
    tmp_dir: Path,
) -> None:
    """Reset and status go one path: the breaker's row.  A registry that holds the breaker
    closed while the row says open (a notification lost in a reconnect) must not turn the
    reset into a no-op; and the registry hears of the reset."""
    from actors.api import ready_store

    dag = await breaker_flow(cooldown=600)
    (tmp_dir / "healthy").touch()
    assert (await get_workflow_status(await run(dag, tmp_dir))).status == "completed"
    registry = ray.get_actor(REGISTRY_NAME, namespace=NAMESPACE)
    assert (await registry.status.remote(dag.id, "call"))["state"] == "closed"
    store = await ready_store()
    await store.pool.execute(  # written without the notification
        "INSERT INTO circuit_breakers (key, workflow_id, stage_id, state, failure_count, "
        "opened_at, next_attempt_at, failure_threshold, cooldown_seconds) "
        "VALUES ($1, $2, 'call', 'open', 3, now(), now() + interval '600 s', 3, 600) "
        "ON CONFLICT (key) DO UPDATE SET state = 'open', failure_count = 3",
        f"{dag.id}:call", dag.id)
    assert (await get_workflow_circuit_breaker_status(dag.id, "call")).state == "open"
    reset = await reset_workflow_circuit_breaker(dag.id, "call")
    assert (reset.state, reset.failure_count) == ("closed", 0)
    after = await get_workflow_circuit_breaker_status(dag.id, "call")
    assert (after.state, after.failure_count) == ("closed", 0)
    transitions = await store.pool.fetch(
        "SELECT from_state, to_state FROM circuit_breaker_transitions WHERE key = $1",
        f"{dag.id}:call")
    assert [(r["from_state"], r["to_state"]) for r in transitions][-1:] == [("open", "closed")]

    async def registry_closed() -> bool:
        view = await registry.status.remote(dag.id, "call")
        return bool((view["state"], view["failure_count"]) == ("closed", 0))

    from tests.integration.helpers import eventually

    await eventually(registry_closed, timeout=10, what="the registry to hear of the reset")


async def test_concurrent_flaky_runs_complete_while_the_breaker_opens_and_half_opens(
    tmp_dir: Path,
) -> None:
    """Four runs of a stage that fails twice with ConnectionError, then succeeds: together
    their failures open the shared breaker; the refused attempts wait for it and every run
    completes — the breaker protects the downstream instead of failing the workflows."""
    dag = await register_chain("flaky-breaker", [stage(
        "call", "flaky_connection",
        retry={"max_attempts": 4, "initial_delay_ms": 50, "max_delay_ms": 200},
        circuit_breaker={"failure_threshold": 3, "cooldown_seconds": 1.0})])
    # Each failing call takes 0.4 s, so the four runs' failures overlap as concurrent calls
    # to a troubled downstream do (with instant failures a run that got ahead could succeed
    # first and reset the count: the breaker would never open).
    ids = await asyncio.gather(*[
        execute_workflow_dag(dag.id, {"dir": str(tmp_dir), "fail_seconds": 0.4}, "t")
        for _ in range(4)])
    results = await asyncio.gather(*[wait_for_workflow(i, timeout=90) for i in ids])
    assert [r.status for r in results] == ["completed"] * 4, [r.error_message for r in results]
    everything = [e for i in ids for e in await events_of(i)]
    assert any(e.type == "stage_deferred" for e in everything), "the breaker never opened"
    transitions = {e.breaker.get("transition") for e in everything  # type: ignore[union-attr]
                   if e.type == "stage_attempt" and e.breaker}  # type: ignore[union-attr]
    assert {"open", "closed"} <= transitions
    # Each opening is recorded once: by one attempt's event, in the registry's transitions,
    # and in the metrics — however many attempts failed at once.
    logs = [await events_of(i) for i in ids]
    opened_by = sum(1 for log in logs for e in log
                    if e.type == "stage_attempt" and e.breaker  # type: ignore[union-attr]
                    and e.breaker.get("transition") == "open")  # type: ignore[union-attr]
    from actors.api import ready_store
    store = await ready_store()
    recorded = await store.pool.fetchval(
        "SELECT count(*) FROM circuit_breaker_transitions WHERE workflow_id = $1 AND "
        "to_state = 'open'", dag.id)
    assert opened_by == recorded >= 1
    assert (await get_workflow_metrics(dag.id))["breaker_opens"] == recorded


async def test_errors_that_say_nothing_of_the_downstream_do_not_open_the_breaker(
    tmp_dir: Path,
) -> None:
    """A bad input (a non-retryable error) is the downstream answering: it does not count,
    so it cannot block every other user of the stage behind CircuitOpenError."""
    dag = await register_chain("bad-input", [stage(
        "call", "forbidden", circuit_breaker={"failure_threshold": 2, "cooldown_seconds": 60})])
    for _ in range(4):
        eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "t")
        assert (await wait_for_workflow(eid, timeout=60)).status == "failed"
        assert await first_error(eid) == "PermissionError"
    status = await get_workflow_circuit_breaker_status(dag.id, "call")
    assert (status.state, status.failure_count) == ("closed", 0)
    counting = await register_chain("bad-input-all", [stage(
        "call", "forbidden", circuit_breaker={"failure_threshold": 2, "cooldown_seconds": 60,
                                              "count": "all"})])
    for _ in range(2):
        await wait_for_workflow(
            await execute_workflow_dag(counting.id, {"dir": str(tmp_dir)}, "t"), timeout=60)
    assert (await get_workflow_circuit_breaker_status(counting.id, "call")).state == "open"
