"""Pure tests of the fold, readiness, conditions and decisions: lists of events, no DB, no Ray."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from definitions import CANONICAL_WORKFLOWS, Condition, WorkflowDAG
from events import (
    Event,
    ExecutionState,
    RollbackRequested,
    StageAttempt,
    StageCompleted,
    StageStarted,
    WorkflowInitiated,
    apply,
    attempt_events,
    compensation_events,
    decide,
    event_from_row,
    event_to_row,
    fold,
    readiness,
    upstream_outputs,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EID = "00000000-0000-4000-8000-000000000001"


def initiated(dag: WorkflowDAG) -> WorkflowInitiated:
    return WorkflowInitiated(
        execution_id=EID, seq=1, at=T0, workflow_id=dag.id, workflow_version=dag.version,
        dag=dag.model_dump(mode="json"), context={"userId": "u"}, user_id="user-123",
    )


def run(state: ExecutionState, events: list[Event]) -> ExecutionState:
    for e in events:
        apply(state, e)
    return state


def complete(state: ExecutionState, stage_id: str, output: dict[str, Any] | None = None) -> None:
    run(state, attempt_events(state, stage_id, attempt=state.stages[stage_id].attempts + 1,
                              now=T0, duration_ms=5, output=output or {}))


def step(state: ExecutionState) -> list[Event]:
    events = decide(state, T0).events
    run(state, events)
    return events


def test_fold_builds_state_from_events() -> None:
    dag = CANONICAL_WORKFLOWS["opportunity-discovery-v1"]
    events: list[Event] = [
        initiated(dag),
        StageStarted(execution_id=EID, seq=2, at=T0, stage_id="opportunity_research"),
        StageAttempt(execution_id=EID, seq=3, at=T0, stage_id="opportunity_research", attempt=1,
                     outcome="succeeded", duration_ms=3),
        StageCompleted(execution_id=EID, seq=4, at=T0, stage_id="opportunity_research",
                       attempt=1, output={"x": 1}, duration_ms=3),
    ]
    state = fold(events)
    assert state.status == "in_progress"
    assert state.version == 4
    assert state.completed_stages == ["opportunity_research"]
    assert state.stages["opportunity_research"].output == {"x": 1}
    assert state.stages["opportunity_validation"].status == "pending"


def test_fold_refuses_a_gap_in_the_stream() -> None:
    dag = CANONICAL_WORKFLOWS["opportunity-discovery-v1"]
    with pytest.raises(ValueError, match="seq 3"):
        fold([initiated(dag), StageStarted(execution_id=EID, seq=3, at=T0,
                                           stage_id="opportunity_research")])


def test_events_round_trip_through_rows() -> None:
    event = StageAttempt(execution_id=EID, seq=7, at=T0, stage_id="s", attempt=2,
                         outcome="failed", duration_ms=1,
                         error={"type": "ConnectionError", "message": "x", "retryable": True},
                         retry_delay_ms=900, retry_at=T0 + timedelta(milliseconds=900))
    row = event_to_row(event)
    assert row[2] == "stage_attempt" and row[3] == "s"
    assert event_from_row(*row) == event


def test_chain_runs_in_order_and_completes() -> None:
    dag = CANONICAL_WORKFLOWS["opportunity-discovery-v1"]
    state = fold([initiated(dag)])
    order = []
    while not state.terminal:
        for e in step(state):
            if isinstance(e, StageStarted):
                order.append(e.stage_id)
                complete(state, e.stage_id)
    assert order == ["opportunity_research", "opportunity_validation", "opportunity_prioritization"]
    assert state.status == "completed"


def test_fork_starts_both_branches_and_join_waits_for_both() -> None:
    dag = CANONICAL_WORKFLOWS["parallel-value-lifecycle-v1"]
    state = fold([initiated(dag)])
    step(state)
    complete(state, "opportunity_discovery")
    started = [e.stage_id for e in step(state)]
    assert started == ["target_definition", "integrity_setup"]
    complete(state, "target_definition")
    assert step(state) == []  # the join waits for integrity_setup
    complete(state, "integrity_setup")
    assert [e.stage_id for e in step(state)] == ["realization_tracking"]


@pytest.mark.parametrize(("variance", "runs"), [(3.0, False), (25.0, True)])
def test_intervention_planning_runs_only_past_the_variance_threshold(
    variance: float, runs: bool
) -> None:
    dag = CANONICAL_WORKFLOWS["realization-tracking-v1"]
    state = fold([initiated(dag)])
    step(state)
    complete(state, "data_collection")
    step(state)
    complete(state, "performance_analysis", {"max_abs_variance_pct": variance})
    step(state)
    complete(state, "stakeholder_reporting")
    events = step(state)
    types = [(e.type, e.stage_id) for e in events]
    if runs:
        assert types == [("stage_started", "intervention_planning")]
    else:
        assert types[0] == ("stage_skipped", "intervention_planning")
        assert types[-1][0] == "workflow_completed"


def test_skipping_flows_on_to_stages_that_depend_only_on_skipped_ones() -> None:
    dag = WorkflowDAG.model_validate({
        "id": "skip-v1", "name": "s", "version": 1, "initial_stage": "a",
        "final_stages": ["d"],
        "stages": [{"id": x, "name": x, "agent_type": "target", "timeout_seconds": 5}
                   for x in "abcd"],
        "transitions": [
            {"from_stage": "a", "to_stage": "b",
             "condition": {"path": "go", "op": "eq", "value": True}},
            {"from_stage": "b", "to_stage": "c"},
            {"from_stage": "a", "to_stage": "d"},
            {"from_stage": "c", "to_stage": "d"},
        ],
    })
    state = fold([initiated(dag)])
    step(state)
    complete(state, "a", {"go": False})
    events = step(state)
    assert [(e.type, e.stage_id) for e in events] == [
        ("stage_skipped", "b"), ("stage_skipped", "c"), ("stage_started", "d")]


def test_retryable_failure_schedules_a_retry_with_recorded_delay() -> None:
    dag = CANONICAL_WORKFLOWS["opportunity-discovery-v1"]
    state = fold([initiated(dag)])
    step(state)
    error = {"type": "ConnectionError", "message": "x", "retryable": True}
    events = attempt_events(state, "opportunity_research", attempt=1, now=T0, duration_ms=1,
                            error=error, rng=random.Random(1))
    assert [e.type for e in events] == ["stage_attempt"]
    attempt = events[0]
    assert isinstance(attempt, StageAttempt)
    assert attempt.retry_delay_ms is not None and 375 <= attempt.retry_delay_ms <= 625
    assert attempt.retry_at == T0 + timedelta(milliseconds=attempt.retry_delay_ms)
    run(state, events)
    assert state.stages["opportunity_research"].status == "running"
    assert state.stages["opportunity_research"].retry_at == attempt.retry_at


def test_last_attempt_or_permanent_error_fails_the_stage_and_the_workflow() -> None:
    dag = CANONICAL_WORKFLOWS["opportunity-discovery-v1"]
    state = fold([initiated(dag)])
    step(state)
    error = {"type": "PermissionError", "message": "no", "retryable": False}
    events = attempt_events(state, "opportunity_research", attempt=1, now=T0, duration_ms=1,
                            error=error)
    assert [e.type for e in events] == ["stage_attempt", "stage_failed"]
    run(state, events)
    final = step(state)
    assert [e.type for e in final] == ["workflow_failed"]
    assert state.status == "failed"
    assert "opportunity_research" in (state.error_message or "")


def test_a_failure_cancels_running_siblings() -> None:
    dag = CANONICAL_WORKFLOWS["parallel-value-lifecycle-v1"]
    state = fold([initiated(dag)])
    step(state)
    complete(state, "opportunity_discovery")
    step(state)
    run(state, attempt_events(state, "integrity_setup", attempt=3, now=T0, duration_ms=1,
                              error={"type": "X", "message": "m", "retryable": True}))
    decision = decide(state, T0)
    assert decision.events == []
    assert decision.cancel == ["target_definition"]
    # The cancelled sibling's attempt ends in error: it is cancelled, not retried.
    run(state, attempt_events(state, "target_definition", attempt=1, now=T0, duration_ms=1,
                              error={"type": "TaskCancelledError", "message": "",
                                     "retryable": True}))
    assert state.stages["target_definition"].status == "cancelled"
    rollback = step(state)
    assert [(e.type, e.stage_id) for e in rollback] == [("rollback_started", None)]
    assert rollback[0].order == ["opportunity_discovery"]  # type: ignore[union-attr]


def test_upstream_outputs_are_all_completed_ancestors() -> None:
    dag = CANONICAL_WORKFLOWS["parallel-value-lifecycle-v1"]
    state = fold([initiated(dag)])
    step(state)
    complete(state, "opportunity_discovery", {"o": 1})
    step(state)
    complete(state, "target_definition", {"t": 1})
    complete(state, "integrity_setup", {"i": 1})
    assert upstream_outputs(state, "expansion_modeling") == {
        "opportunity_discovery": {"o": 1}, "target_definition": {"t": 1},
        "integrity_setup": {"i": 1}}


def test_condition_operators_and_missing_paths() -> None:
    out = {"a": {"b": [10, 20]}, "flag": True, "s": "x"}
    assert Condition(path="a.b.1", op="gt", value=15).evaluate(out)
    assert not Condition(path="a.b.0", op="gt", value=15).evaluate(out)
    assert Condition(path="flag", op="truthy").evaluate(out)
    assert Condition(path="s", op="in", value=["x", "y"]).evaluate(out)
    assert not Condition(path="missing", op="ne", value=1).evaluate(out)
    assert not Condition(path="s", op="gt", value=3).evaluate(out)  # type mismatch: false
    assert Condition(path="a.b", op="exists").evaluate(out)


def test_readiness_of_a_fresh_execution_is_the_initial_stage() -> None:
    dag = CANONICAL_WORKFLOWS["complete-value-lifecycle-v1"]
    assert readiness(fold([initiated(dag)])).ready == ["opportunity_discovery"]


# --- compensation ---------------------------------------------------------------------------

def _saga(policy: str = "continue_on_error") -> WorkflowDAG:
    return WorkflowDAG.model_validate({
        "id": "saga-v1", "name": "s", "version": 1, "initial_stage": "a",
        "final_stages": ["d"], "compensation_policy": policy,
        "stages": [{"id": x, "name": x, "agent_type": "target", "timeout_seconds": 5,
                    "retry_config": "NONE",
                    "compensation_handler": None if x == "b" else "compensateKpiTargets"}
                   for x in "abcd"],
        "transitions": [{"from_stage": x, "to_stage": y} for x, y in ("ab", "bc", "cd")],
    })


def _fail_at_d(policy: str = "continue_on_error") -> ExecutionState:
    state = fold([initiated(_saga(policy))])
    for sid in "abc":
        step(state)
        complete(state, sid)
    step(state)
    run(state, attempt_events(state, "d", attempt=1, now=T0, duration_ms=1,
                              error={"type": "E", "message": "m", "retryable": False}))
    return state


def _undo(state: ExecutionState, sid: str, ok: bool) -> None:
    run(state, compensation_events(
        state, sid, attempt=1, now=T0, duration_ms=1,
        output={} if ok else None,
        error=None if ok else {"type": "PermissionError", "message": "no", "retryable": False}))


def test_rollback_compensates_completed_stages_with_handlers_in_reverse() -> None:
    state = _fail_at_d()
    started = step(state)
    assert [e.type for e in started] == ["rollback_started"]
    assert started[0].order == ["c", "a"]  # type: ignore[union-attr]  # b has no handler
    assert state.status == "compensating"
    assert [(e.type, e.stage_id) for e in step(state)] == [("compensation_started", "c")]
    assert step(state) == []  # one handler at a time
    _undo(state, "c", ok=True)
    assert [(e.type, e.stage_id) for e in step(state)] == [("compensation_started", "a")]
    _undo(state, "a", ok=True)
    final = step(state)
    assert [e.type for e in final] == ["workflow_rolled_back"]
    assert state.status == "rolled_back"
    assert state.error_message is not None and "stage d failed" in state.error_message


@pytest.mark.parametrize(("policy", "runs_a"), [("continue_on_error", True),
                                                 ("halt_on_error", False)])
def test_compensation_policy_decides_what_runs_after_a_failed_handler(
    policy: str, runs_a: bool
) -> None:
    state = _fail_at_d(policy)
    step(state)
    step(state)
    _undo(state, "c", ok=False)
    assert state.stages["c"].compensation == "failed"
    nxt = step(state)
    if runs_a:
        assert [(e.type, e.stage_id) for e in nxt] == [("compensation_started", "a")]
        _undo(state, "a", ok=True)
        nxt = step(state)
    assert [e.type for e in nxt] == ["workflow_failed"]
    assert state.status == "failed"
    assert "compensation of stage c failed" in (state.error_message or "")


def test_a_second_rollback_round_retries_only_failed_handlers() -> None:
    state = _fail_at_d()
    step(state)
    step(state)
    _undo(state, "c", ok=False)
    step(state)
    _undo(state, "a", ok=True)
    step(state)
    assert state.status == "failed"
    run(state, [RollbackRequested(execution_id=EID, seq=state.version + 1, at=T0,
                                  user_id="op")])
    started = step(state)
    assert started[0].order == ["c"]  # type: ignore[union-attr]
    assert [(e.type, e.stage_id) for e in step(state)] == [("compensation_started", "c")]


def test_rollback_of_an_execution_with_nothing_to_undo_ends_rolled_back() -> None:
    dag = CANONICAL_WORKFLOWS["opportunity-discovery-v1"]
    state = fold([initiated(dag)])
    run(state, [RollbackRequested(execution_id=EID, seq=2, at=T0, user_id="op")])
    assert [e.type for e in step(state)] == ["rollback_started"]
    assert [e.type for e in step(state)] == ["workflow_rolled_back"]
