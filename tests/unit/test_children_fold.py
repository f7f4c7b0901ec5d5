"""The pure side of child workflows (issue 14): the stage's wait, its end by the child's, the
rollback it waits for, and what the appends ask of other executions."""

from __future__ import annotations

from typing import Any

from definitions import WorkflowDAG
from events import (
    CancelRequested,
    ChildWorkflowEnded,
    ExecutionState,
    RollbackRequested,
    fold,
)
from events.children import child_execution_id, plan
from tests.unit.test_fold import EID, T0, complete, initiated, run, step

UNDO = "tests.agents:undo_recorder"


def parent_dag() -> WorkflowDAG:
    return WorkflowDAG.model_validate({
        "id": "parent-v1", "name": "p", "version": 1, "initial_stage": "a",
        "final_stages": ["sub"],
        "stages": [{"id": "a", "name": "A", "agent": "x:y", "compensation_handler": UNDO,
                    "timeout_seconds": 30},
                   {"id": "sub", "name": "Sub", "kind": "workflow", "workflow": "child-v1",
                    "timeout_seconds": 600}],
        "transitions": [{"from_stage": "a", "to_stage": "sub"}],
    })


def settle(state: ExecutionState) -> list[Any]:
    """Every event decide gives, step after step, until it gives none."""
    events: list[Any] = []
    while batch := step(state):
        events.extend(batch)
    return events


def ended(state: ExecutionState, status: str, **extra: Any) -> ChildWorkflowEnded:
    return ChildWorkflowEnded(
        execution_id=EID, seq=state.version + 1, at=T0, stage_id="sub",
        child_execution_id=state.stages["sub"].child_execution_id or "",
        status=status, **extra)  # type: ignore[arg-type]


def waiting_parent() -> ExecutionState:
    state = fold([initiated(parent_dag())])
    step(state)  # a starts
    complete(state, "a", {"v": 1})
    started = step(state)  # sub starts
    assert [e.type for e in started] == ["stage_started"]
    waits = settle(state)
    assert [e.type for e in waits] == ["stage_waiting", "execution_parked"]
    assert waits[0].child_execution_id == child_execution_id(EID, "sub", "child-v1")
    assert state.status == "waiting"
    return state


def test_a_workflow_stage_names_its_child_parks_and_asks_for_its_start() -> None:
    state = fold([initiated(parent_dag())])
    step(state)
    complete(state, "a")
    step(state)
    waits = settle(state)
    actions = plan(state, waits)
    assert [(a.kind, a.stage_id, a.child_id) for a in actions] == [
        ("start", "sub", child_execution_id(EID, "sub", "child-v1"))]


def test_the_childs_completion_completes_the_stage_with_its_outputs() -> None:
    state = waiting_parent()
    run(state, [ended(state, "completed", outputs={"c1": {"x": 2}})])
    assert state.status == "waiting"  # a request does not resume it by itself
    events = settle(state)
    assert [e.type for e in events] == ["stage_completed", "workflow_completed"]
    assert events[0].output == {"c1": {"x": 2}}


def test_a_failed_child_fails_the_stage_and_the_parent_rolls_back_without_it() -> None:
    state = waiting_parent()
    run(state, [ended(state, "failed", error_message="boom")])
    failed = step(state)
    assert failed[0].type == "stage_failed"
    assert failed[0].error["type"] == "ChildWorkflowError"
    assert "boom" in failed[0].error["message"] and not failed[0].error["retryable"]
    assert plan(state, failed) == []  # it ended: nothing to cancel
    rollback = settle(state)
    assert rollback[0].type == "rollback_started" and rollback[0].order == ["a"]


def test_rolling_back_a_completed_child_stage_waits_for_the_childs_rollback_parked() -> None:
    state = waiting_parent()
    run(state, [ended(state, "completed", outputs={})])
    settle(state)
    assert state.status == "completed"
    run(state, [RollbackRequested(execution_id=EID, seq=state.version + 1, at=T0,
                                  user_id="op")])
    begun = settle(state)
    assert [e.type for e in begun] == ["rollback_started", "compensation_started",
                                       "execution_parked"]
    assert [a.kind for a in plan(state, begun)] == ["rollback"]
    assert state.status == "waiting" and state.phase == "compensating"
    run(state, [ended(state, "completed")])  # a stale report changes nothing
    assert settle(state) == []
    run(state, [ended(state, "rolled_back")])
    undone = settle(state)
    assert [e.type for e in undone][:2] == ["compensation_completed", "compensation_started"]
    assert state.status == "compensating"  # it took the rest up again: stage a's handler


def test_a_cancelled_parent_cancels_its_waiting_child() -> None:
    state = waiting_parent()
    run(state, [CancelRequested(execution_id=EID, seq=state.version + 1, at=T0,
                                user_id="op", compensate=False, reason="stop")])
    events = settle(state)
    assert [e.type for e in events] == ["stage_cancelled", "workflow_cancelled"]
    actions = plan(state, events)
    assert [(a.kind, a.compensate) for a in actions] == [("cancel", False)]
