"""Cancelling executions on real Ray and PostgreSQL (issue 13): durable first, then the runner
stops what runs — a task stage's worker is killed — and ends the execution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors import (
    cancel_workflow,
    execute_workflow_dag,
    get_workflow_metrics,
    get_workflow_status,
    replay_execution,
    wait_for_workflow,
)
from definitions import ExecutionStateError, InvalidArgumentError
from tests.integration.helpers import (
    assert_gapless,
    events_of,
    process_alive,
    register_chain,
    stage,
    types_of,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("ray_session")

UNDO = "tests.agents:undo_recorder"


def chain() -> list[dict[str, Any]]:
    return [stage("first", "noop", compensation_handler=UNDO),
            stage("slow", "long_running", timeout=120, compensation_handler=UNDO)]


async def _running_slow(prefix: str, tmp_dir: Path) -> tuple[str, str, int]:
    dag = await register_chain(prefix, chain())
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir), "seconds": 60}, "tester")
    pid_file = tmp_dir / "slow.pid"
    await wait_until(pid_file.exists, timeout=60, what="the 60 s stage to start")
    return dag.id, eid, int(pid_file.read_text().split()[0])


async def test_cancel_stops_a_running_task_stage_and_kills_its_agent(tmp_dir: Path) -> None:
    workflow_id, eid, pid = await _running_slow("cancel", tmp_dir)
    requested = await cancel_workflow(eid, "operator", reason="no longer needed")
    assert requested.audit_context is not None
    assert requested.audit_context["cancel"] == {
        "requested_by": "operator", "compensate": False, "reason": "no longer needed"}
    # The 60 s stage is stopped: the execution ends within seconds, not a minute.
    status = await wait_for_workflow(eid, timeout=20)
    assert status.status == "cancelled" and status.completed_at is not None
    await wait_until(lambda: not process_alive(pid), timeout=15,
                     what="the cancelled agent's process to be gone")
    assert not (tmp_dir / "finished-slow").exists()
    events = await events_of(eid)
    assert_gapless(events)
    kinds = types_of(events)
    assert "cancel_requested" in kinds and kinds[-1] == "workflow_cancelled"
    assert [e.stage_id for e in events if e.type == "stage_cancelled"] == ["slow"]
    assert events[-1].cancelled == ["slow"] and events[-1].user_id == "operator"
    assert not (tmp_dir / "undo-calls").exists(), "nothing is compensated unless asked"
    # The fold, replay and metrics know the new status.
    assert (await replay_execution(eid)).status == "cancelled"
    assert (await get_workflow_metrics(workflow_id))["cancelled"] == 1
    # A second cancel is a no-op: nothing is appended.
    again = await cancel_workflow(eid, "operator")
    assert again.status == "cancelled" and again.last_seq == status.last_seq


async def test_cancel_with_compensate_undoes_the_completed_stages(tmp_dir: Path) -> None:
    _, eid, pid = await _running_slow("cancel-comp", tmp_dir)
    await cancel_workflow(eid, "operator", compensate=True)
    status = await wait_for_workflow(eid, timeout=30)
    assert status.status == "rolled_back", status.error_message
    assert (tmp_dir / "undo-order").read_text().split() == ["first"]
    events = await events_of(eid)
    started = next(e for e in events if e.type == "rollback_started")
    assert started.reason == "cancel_requested" and started.order == ["first"]
    assert "cancelled by operator" in (status.error_message or "")
    await wait_until(lambda: not process_alive(pid), timeout=15,
                     what="the cancelled agent's process to be gone")


async def test_cancel_refuses_an_ended_execution_naming_its_status(tmp_dir: Path) -> None:
    dag = await register_chain("cancel-done", [stage("only", "noop")])
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "tester")
    await wait_for_workflow(eid, timeout=60)
    with pytest.raises(ExecutionStateError, match="is completed: a cancel needs"):
        await cancel_workflow(eid, "operator")
    with pytest.raises(InvalidArgumentError, match="reason"):
        await cancel_workflow(eid, "operator", reason="x" * 1001)
    assert (await get_workflow_status(eid)).status == "completed"
