"""The pure side of cancelling (issue 13): the fold, the decisions and the read model."""

from __future__ import annotations

from datetime import UTC, datetime

from definitions import WorkflowDAG
from events import (
    CancelRequested,
    ExecutionState,
    WorkflowCancelled,
    attempt_events,
    decide,
    event_to_row,
    fold,
)
from projections import execution_row
from tests.unit.test_fold import EID, T0, complete, initiated, run, step

UNDO = "tests.agents:undo_recorder"


def two_stages() -> WorkflowDAG:
    return WorkflowDAG.model_validate({
        "id": "cancel-v1", "name": "c", "version": 1, "initial_stage": "a",
        "final_stages": ["b"],
        "stages": [{"id": "a", "name": "A", "agent": "x:y", "compensation_handler": UNDO,
                    "timeout_seconds": 30, "retry_config": "STANDARD"},
                   {"id": "b", "name": "B", "agent": "x:y", "compensation_handler": UNDO,
                    "timeout_seconds": 30, "retry_config": "STANDARD"}],
        "transitions": [{"from_stage": "a", "to_stage": "b"}],
    })


def requested(state: ExecutionState, *, compensate: bool = False,
              user: str = "op") -> CancelRequested:
    return CancelRequested(execution_id=EID, seq=state.version + 1, at=T0, user_id=user,
                           compensate=compensate, reason="stop")


def test_a_cancel_before_any_stage_ends_the_execution_with_nothing_run() -> None:
    state = fold([initiated(two_stages())])
    run(state, [requested(state)])
    events = step(state)
    assert [type(e) for e in events] == [WorkflowCancelled]
    assert state.status == "cancelled" and state.terminal
    assert state.stages["a"].status == "pending"


def test_a_cancel_stops_running_stages_then_ends_cancelled() -> None:
    state = fold([initiated(two_stages())])
    step(state)  # a starts
    complete(state, "a")
    step(state)  # b starts
    run(state, [requested(state)])
    decision = decide(state, T0)
    assert decision.cancel == ["b"] and decision.events == []
    # The stopped attempt is recorded as a cancellation, not retried.
    stopped = attempt_events(state, "b", attempt=1, now=T0, duration_ms=3,
                             error={"type": "StageCancelled", "message": "x", "retryable": True})
    assert [e.type for e in stopped] == ["stage_attempt", "stage_cancelled"]
    run(state, stopped)
    end = step(state)
    assert len(end) == 1 and isinstance(end[0], WorkflowCancelled)
    assert end[0].cancelled == ["b"] and end[0].user_id == "op"
    assert state.status == "cancelled"


def test_a_cancel_with_compensate_rolls_back_what_completed() -> None:
    state = fold([initiated(two_stages())])
    step(state)
    complete(state, "a")
    step(state)
    run(state, [requested(state, compensate=True)])
    run(state, attempt_events(state, "b", attempt=1, now=T0, duration_ms=3,
                              error={"type": "StageCancelled", "message": "x",
                                     "retryable": False}))
    started = step(state)
    assert started[0].type == "rollback_started"
    assert started[0].reason == "cancel_requested" and started[0].order == ["a"]
    assert state.status == "compensating"


def test_the_first_cancel_request_stands() -> None:
    state = fold([initiated(two_stages())])
    run(state, [requested(state, user="first")])
    run(state, [requested(state, compensate=True, user="second")])
    assert state.cancel_requested_by == "first" and state.cancel_compensate is False


def test_the_read_model_shows_the_request_and_the_end() -> None:
    state = fold([initiated(two_stages())])
    events = [initiated(two_stages())]
    ask = requested(state)
    run(state, [ask])
    events.append(ask)
    events += step(state)
    row = execution_row(None, [event_to_row(e) for e in events])
    assert row["status"] == "cancelled" and row["completed_at"] == T0
    assert row["audit_context"]["cancel"] == {"requested_by": "op", "compensate": False,
                                              "reason": "stop"}
    assert datetime.now(UTC) > row["completed_at"]
