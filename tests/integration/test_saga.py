"""Saga compensation, rollback, retry and artifacts on real Ray + PostgreSQL (issue 3)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import ray

from actors import (
    execute_workflow_dag,
    execution_actor,
    get_workflow_status,
    retry_failed_workflow,
    rollback_workflow,
    wait_for_workflow,
)
from definitions import ExecutionStateError, InvalidContextError
from tests.integration.helpers import (
    assert_gapless,
    events_of,
    register_chain,
    stage,
    types_of,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("ray_session")

UNDO = "tests.agents:undo_recorder"
SEED = {"userId": "user-123", "organizationId": "org-456", "projectId": "project-789"}


def undo_stage(
    stage_id: str, agent: str = "noop", handler: str = UNDO, **kw: Any
) -> dict[str, Any]:
    return stage(stage_id, agent, compensation_handler=handler, **kw)


def order(tmp_dir: Path) -> list[str]:
    path = tmp_dir / "undo-order"
    return path.read_text().split() if path.exists() else []


def of_type(events: list, kind: str) -> list[str]:  # type: ignore[type-arg]
    return [e.stage_id for e in events if e.type == kind]


async def test_failure_at_stage_k_compensates_earlier_stages_in_reverse(tmp_dir: Path) -> None:
    dag = await register_chain("saga", [undo_stage("s1"), undo_stage("s2"), undo_stage("s3"),
                                        undo_stage("s4", "forbidden")])
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "tester")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "rolled_back"
    assert "stage s4 failed: PermissionError" in (status.error_message or "")
    events = await events_of(eid)
    assert_gapless(events)
    assert of_type(events, "compensation_completed") == ["s3", "s2", "s1"]
    assert of_type(events, "compensation_started") == ["s3", "s2", "s1"]
    assert order(tmp_dir) == ["s3", "s2", "s1"]
    assert types_of(events)[-1] == "workflow_rolled_back"
    assert "workflow_failed" not in types_of(events)
    assert status.audit_context is not None
    assert status.audit_context["compensations"] == {"s1": "completed", "s2": "completed",
                                                     "s3": "completed"}


@pytest.mark.parametrize("policy", ["continue_on_error", "halt_on_error"])
async def test_compensation_policy_with_a_failing_handler(tmp_dir: Path, policy: str) -> None:
    dag = await register_chain(
        f"policy-{policy}",
        [undo_stage("a"), undo_stage("b", handler="tests.agents:undo_fails"), undo_stage("c"),
         undo_stage("d", "forbidden")],
    )
    dag_data = dag.model_dump(mode="json")
    dag_data["compensation_policy"] = policy
    dag_data["id"] = dag.id + "-p"
    from actors import register_workflow

    await register_workflow(dag_data)
    eid = await execute_workflow_dag(dag_data["id"], {"dir": str(tmp_dir)}, "tester")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "failed"
    assert "compensation of stage b failed: PermissionError" in (status.error_message or "")
    events = await events_of(eid)
    assert of_type(events, "compensation_failed") == ["b"]
    calls = (tmp_dir / "undo-calls").read_text().split()
    if policy == "continue_on_error":
        assert calls == ["c", "b", "a"]
        assert of_type(events, "compensation_completed") == ["c", "a"]
    else:
        assert calls == ["c", "b"]
        assert of_type(events, "compensation_completed") == ["c"]
        assert "halt_on_error" in (status.error_message or "")
    assert types_of(events)[-1] == "workflow_failed"


async def test_explicit_rollback_of_a_completed_execution_runs_once(tmp_dir: Path) -> None:
    dag = await register_chain("rollback", [undo_stage("x"), undo_stage("y")])
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "tester")
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
    requested = await rollback_workflow(eid, "operator-1")
    assert requested.status in ("compensating", "rolled_back")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "rolled_back"
    events = await events_of(eid)
    assert of_type(events, "compensation_completed") == ["y", "x"]
    count = len(events)
    again = await rollback_workflow(eid, "operator-2")
    assert again.status == "rolled_back"
    assert len(await events_of(eid)) == count, "a second request compensates nothing again"
    assert order(tmp_dir) == ["y", "x"]
    first_request = next(e for e in events if e.type == "rollback_requested")
    assert first_request.user_id == "operator-1"  # type: ignore[union-attr]


async def test_rollback_of_a_running_execution_is_refused(tmp_dir: Path) -> None:
    dag = await register_chain("busy", [undo_stage("slow", "timed")])
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir), "seconds": 3}, "tester")
    with pytest.raises(ExecutionStateError, match="completed or failed"):
        await rollback_workflow(eid, "operator")
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"


async def test_killing_the_actor_during_compensation_compensates_each_stage_once(
    tmp_dir: Path,
) -> None:
    dag = await register_chain("kill-undo", [undo_stage("p"), undo_stage("q"), undo_stage("r")])
    ctx = {"dir": str(tmp_dir), "undo_seconds": 1.5}
    eid = await execute_workflow_dag(dag.id, ctx, "tester")
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
    await wait_until(lambda: execution_actor(eid) is None, timeout=30,
                     what="the first actor to exit")
    await rollback_workflow(eid, "operator")
    calls = tmp_dir / "undo-calls"
    await wait_until(lambda: calls.exists() and "q" in calls.read_text().split(), timeout=30,
               what="the compensation of q to be running")
    handle = execution_actor(eid)
    assert handle is not None
    ray.kill(handle, no_restart=False)
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "rolled_back"
    events = await events_of(eid)
    assert_gapless(events)
    assert of_type(events, "compensation_completed") == ["r", "q", "p"]
    assert order(tmp_dir) == ["r", "q", "p"], "each handler's effect happened once"
    assert calls.read_text().split().count("q") >= 2, "q's handler was interrupted and re-run"


async def test_a_failing_fork_branch_cancels_its_sibling_and_never_joins(tmp_dir: Path) -> None:
    dag = await register_chain(
        "fork-fail",
        [undo_stage("start"), undo_stage("fails", "forbidden"), undo_stage("slow", "timed"),
         undo_stage("join")],
        transitions=[
            {"from_stage": "start", "to_stage": "fails"},
            {"from_stage": "start", "to_stage": "slow"},
            {"from_stage": "fails", "to_stage": "join"},
            {"from_stage": "slow", "to_stage": "join"},
        ],
    )
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir), "seconds": 20}, "tester")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "rolled_back"
    events = await events_of(eid)
    assert "join" not in of_type(events, "stage_started")
    assert of_type(events, "stage_cancelled") == ["slow"]
    assert of_type(events, "compensation_completed") == ["start"]
    rolled = next(e for e in events if e.type == "workflow_rolled_back")
    slow = next(e for e in events if e.type == "stage_started" and e.stage_id == "slow")
    assert rolled.at < slow.at + timedelta(seconds=20), \
        "rolled back before the 20 s sibling could have finished: it was not awaited"


async def test_retry_failed_workflow_after_the_cause_is_fixed(tmp_dir: Path) -> None:
    dag = await register_chain("retry", [stage("first", "noop"), stage("ledger", "toggle")])
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "tester")
    assert (await wait_for_workflow(eid, timeout=60)).status == "failed"
    with pytest.raises(InvalidContextError, match="user_id"):
        await retry_failed_workflow(eid, "")
    (tmp_dir / "fixed").touch()
    new_id = await retry_failed_workflow(eid, "operator")
    assert new_id != eid
    status = await wait_for_workflow(new_id, timeout=60)
    assert status.status == "completed"
    first = (await events_of(new_id))[0]
    assert first.retry_of == eid  # type: ignore[union-attr]
    assert first.context == {"dir": str(tmp_dir)}  # type: ignore[union-attr]
    assert (await get_workflow_status(eid)).status == "failed"
    completed = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "tester")
    await wait_for_workflow(completed, timeout=60)
    with pytest.raises(ExecutionStateError, match="failed or rolled_back"):
        await retry_failed_workflow(completed, "operator")


async def _artifacts(database_url: str, eid: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT kind || ':' || status AS k, count(*) AS n FROM workflow_artifacts "
            "WHERE execution_id = $1::uuid GROUP BY 1", eid)
        return {r["k"]: r["n"] for r in rows}
    finally:
        await conn.close()


async def test_rolling_back_the_complete_lifecycle_leaves_no_active_artifact(
    database_url: str,
) -> None:
    eid = await execute_workflow_dag("complete-value-lifecycle-v1", SEED, "user-123")
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
    before = await _artifacts(database_url, eid)
    assert before["opportunity:active"] >= 1
    assert before["kpi_target:active"] >= 1
    assert before["value_commit:active"] == 1 and before["target:active"] == 1
    assert before["integrity_certificate:active"] == 1
    await rollback_workflow(eid, "user-123")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "rolled_back"
    after = await _artifacts(database_url, eid)
    assert not [k for k in after if k.endswith(":active")]
    assert after == {"value_commit:cancelled": 1, "target:draft": 1}
    events = await events_of(eid)
    assert of_type(events, "compensation_completed") == [
        "integrity_controls", "expansion_modeling", "realization_tracking", "value_commit",
        "opportunity_discovery"]
