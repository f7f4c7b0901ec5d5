"""The pure decision: given an execution's state, which events come next.

No Ray, no asyncpg, no clock inside: the caller passes ``now`` (and a random source for
jitter).  :func:`decide` takes one step at a time; the actor applies its events and asks again
until it returns none, then appends them all in one transaction.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from definitions import WorkflowDAG, backoff_delay_ms
from events.models import (
    CompensationAttempt,
    CompensationCompleted,
    CompensationFailed,
    CompensationStarted,
    Event,
    RollbackStarted,
    StageAttempt,
    StageCancelled,
    StageCompleted,
    StageFailed,
    StageSkipped,
    StageStarted,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowRolledBack,
)
from events.state import SETTLED_STAGE, ExecutionState
from events.waiting import child_compensation_step, parked_event, waiting_step

__all__ = [
    "Decision",
    "Readiness",
    "attempt_events",
    "compensation_events",
    "decide",
    "readiness",
    "rollback_order",
    "upstream_outputs",
]


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: list[str]
    skipped: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Decision:
    """The next events, and the running stages to cancel (the workflow is failing)."""

    events: list[Event] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)


def readiness(state: ExecutionState) -> Readiness:
    """Pending stages that can start now, and those that will never run (with the reason).

    A stage runs when every incoming transition is settled and at least one is true.  A
    transition from a completed stage is true when it has no condition or its condition holds
    on the named stage's output; one from a skipped (or cancelled) stage is false.  Skipping
    flows on: a stage whose inputs are all false is skipped, and so are the stages after it
    that depend only on skipped stages.
    """
    dag = state.require_dag()
    status = {sid: st.status for sid, st in state.stages.items()}
    reachable = dag.reachable()
    ready: list[str] = []
    skipped: list[tuple[str, str]] = []
    changed = True
    while changed:
        changed = False
        for sid in reachable:
            if status[sid] != "pending":
                continue
            verdict = _incoming_verdict(dag, state, status, sid)
            if verdict is None:
                continue
            if verdict is True:
                ready.append(sid)
                status[sid] = "running"
            elif isinstance(verdict, str):
                skipped.append((sid, verdict))
                status[sid] = "skipped"
            changed = True
    return Readiness(ready=ready, skipped=skipped)


def _incoming_verdict(
    dag: WorkflowDAG, state: ExecutionState, status: Mapping[str, str], stage_id: str
) -> bool | str | None:
    """True (run), a reason string (skip), or None (not settled yet)."""
    incoming = dag.incoming(stage_id)
    if not incoming:
        return True if stage_id == dag.initial_stage else None
    for transition in incoming:
        if status.get(transition.from_stage) not in SETTLED_STAGE:
            return None
    reasons: list[str] = []
    for transition in incoming:
        source = status[transition.from_stage]
        if source != "completed":
            reasons.append(f"{transition.from_stage} was {source}")
            continue
        condition = transition.condition
        if condition is None:
            return True
        read_from = condition.stage or transition.from_stage
        output = state.stages[read_from].output or {}
        if condition.evaluate(output):
            return True
        reasons.append(
            f"condition {read_from}.{condition.path} {condition.op} {condition.value!r} is false"
        )
    return "; ".join(reasons)


def upstream_outputs(state: ExecutionState, stage_id: str) -> dict[str, dict[str, Any]]:
    """Outputs of the completed stages upstream of ``stage_id`` (all ancestors), by stage id."""
    seen = state.require_dag().ancestors(stage_id)
    return {sid: state.stages[sid].output or {} for sid in state.completion_order if sid in seen}


def rollback_order(state: ExecutionState) -> list[str]:
    """Completed stages with a handler (or a child workflow, rolled back in turn), not yet
    compensated, in reverse order of completion."""
    dag = state.require_dag()
    return [
        sid
        for sid in reversed(state.completion_order)
        if (dag.stage(sid).compensation_handler or state.stages[sid].child_execution_id)
        and state.stages[sid].compensation != "completed"
    ]


def _ms_between(start: datetime | None, end: datetime) -> int:
    if start is None:
        return 0
    return max(0, int((end - start).total_seconds() * 1000))


def _failure_message(state: ExecutionState, stage_id: str) -> str:
    error = state.stages[stage_id].error or {}
    return f"stage {stage_id} failed: {error.get('type', 'Error')}: {error.get('message', '')}"


def decide(state: ExecutionState, now: datetime) -> Decision:
    """The next step of the execution (see the module docstring).

    Running: start ready stages, skip those that can no longer run, complete when every
    reachable stage is completed or skipped.  A stage failed: cancel running stages, then roll
    back the completed ones (or fail at once when there is nothing to undo).  Compensating:
    run the handlers one at a time in reverse order of completion, then end ``rolled_back``,
    or ``failed`` when a handler failed (at once under ``halt_on_error``).
    """
    if state.dag is None:
        return Decision()
    eid = state.execution_id
    seq = state.version + 1
    if state.phase == "compensating":
        undo = _rollback_step(state, now)
        parked = None if undo else parked_event(state, now)
        return Decision(undo if parked is None else [parked])
    if state.terminal:
        return Decision()

    failed = state.stages_in("failed")
    if state.cancel_requested_by is not None and not failed:
        return _cancel_step(state, now)
    if failed:
        stopped = _stop_waits(state, now, f"stage {failed[0]} failed")
        if stopped:
            return Decision(stopped)
        running = state.stages_in("running")
        if running:
            return Decision(cancel=running)
        message = _failure_message(state, failed[0])
        order = rollback_order(state)
        if order:
            return Decision([RollbackStarted(execution_id=eid, seq=seq, at=now,
                                             reason="workflow_failed", order=order,
                                             error_message=message)])
        return Decision([WorkflowFailed(execution_id=eid, seq=seq, at=now, error_message=message,
                                        failed_stage=failed[0],
                                        duration_ms=_ms_between(state.started_at, now))])

    waits = waiting_step(state, now)
    if waits:
        return Decision(waits)
    plan = readiness(state)
    events: list[Event] = []
    for sid, reason in plan.skipped:
        events.append(StageSkipped(execution_id=eid, seq=seq + len(events), at=now, stage_id=sid,
                                   reason=reason))
    for sid in plan.ready:
        events.append(StageStarted(execution_id=eid, seq=seq + len(events), at=now, stage_id=sid))
    skipped_now = {sid for sid, _ in plan.skipped}
    unsettled = [
        sid for sid in state.dag.reachable()
        if state.stages[sid].status not in ("completed", "skipped") and sid not in skipped_now
    ]
    if not unsettled:
        events.append(WorkflowCompleted(execution_id=eid, seq=seq + len(events), at=now,
                                        duration_ms=_ms_between(state.started_at, now)))
    elif not events:
        parked = parked_event(state, now)
        if parked is not None:
            events.append(parked)
    return Decision(events)


def _cancel_step(state: ExecutionState, now: datetime) -> Decision:
    """A cancel was requested: stop every running stage (each ends ``stage_cancelled``), then
    compensate what completed (``compensate``: as a rollback does) or end ``cancelled``."""
    stopped = _stop_waits(state, now, _cancel_message(state))
    if stopped:
        return Decision(stopped)
    running = state.stages_in("running")
    if running:
        return Decision(cancel=running)
    eid = state.execution_id
    seq = state.version + 1
    if state.cancel_compensate:
        order = rollback_order(state)
        if order:
            return Decision([RollbackStarted(
                execution_id=eid, seq=seq, at=now, reason="cancel_requested", order=order,
                error_message=_cancel_message(state))])
    return Decision([WorkflowCancelled(
        execution_id=eid, seq=seq, at=now, user_id=state.cancel_requested_by or "",
        reason=state.cancel_reason, cancelled=state.stages_in("cancelled"),
        duration_ms=_ms_between(state.started_at, now))])


def _stop_waits(state: ExecutionState, now: datetime, reason: str) -> list[Event]:
    """Waiting stages have no attempt in flight to stop: they are cancelled at once."""
    dag = state.require_dag()
    waits = [s for s in state.stages_in("running") if dag.stage(s).waits]
    return [StageCancelled(execution_id=state.execution_id, seq=state.version + 1 + i, at=now,
                           stage_id=sid, reason=reason) for i, sid in enumerate(waits)]


def _cancel_message(state: ExecutionState) -> str:
    why = f": {state.cancel_reason}" if state.cancel_reason else ""
    return f"cancelled by {state.cancel_requested_by}{why}"


def _rollback_step(state: ExecutionState, now: datetime) -> list[Event]:
    dag = state.require_dag()
    eid = state.execution_id
    seq = state.version + 1
    if state.rollback_requested_by is not None:
        return [RollbackStarted(execution_id=eid, seq=seq, at=now, reason="rollback_requested",
                                order=rollback_order(state))]
    failures: list[str] = []
    for sid in state.rollback_order:
        undo = state.stages[sid]
        if undo.compensation == "completed":
            continue
        if undo.compensation == "running":
            if dag.stage(sid).kind == "workflow":  # its child's rollback
                return child_compensation_step(state, sid, now)
            return []
        if undo.compensation == "failed":
            failures.append(sid)
            if dag.compensation_policy == "halt_on_error":
                break
            continue
        handler = dag.stage(sid).compensation_handler or "rollback of its child workflow"
        return [CompensationStarted(execution_id=eid, seq=seq, at=now, stage_id=sid,
                                    handler=handler)]
    duration = _ms_between(state.rollback_started_at, now)
    if failures:
        details = "; ".join(
            f"compensation of stage {sid} failed: "
            f"{(state.stages[sid].comp_error or {}).get('type', 'Error')}: "
            f"{(state.stages[sid].comp_error or {}).get('message', '')}"
            for sid in failures
        )
        if dag.compensation_policy == "halt_on_error":
            details += " (rollback halted: halt_on_error)"
        message = f"{state.error_message}; {details}" if state.error_message else details
        return [WorkflowFailed(execution_id=eid, seq=seq, at=now, error_message=message,
                               failed_stage=failures[0], duration_ms=duration)]
    return [WorkflowRolledBack(execution_id=eid, seq=seq, at=now,
                               compensated=list(state.rollback_order), duration_ms=duration)]


def _retry_delay(
    state: ExecutionState, stage_id: str, attempt: int, error: dict[str, Any],
    rng: random.Random | None,
) -> int | None:
    config = state.require_dag().stage(stage_id).retry
    if bool(error.get("retryable")) and attempt < config.max_attempts:
        return backoff_delay_ms(config, attempt, rng)
    return None


def _ended(
    state: ExecutionState, stage_id: str, kinds: tuple[type[Any], type[Any], type[Any]], *,
    attempt: int, now: datetime, duration_ms: int, output: dict[str, Any] | None,
    error: dict[str, Any] | None, rng: random.Random | None, extra: dict[str, Any],
) -> list[Event]:
    """An attempt's end: succeeded; failed with a retry scheduled; or failed for good."""
    ended, succeeded, gave_up = kinds
    common: dict[str, Any] = {"execution_id": state.execution_id, "at": now,
                              "stage_id": stage_id}
    seq = state.version
    if error is None:
        return [
            ended(**common, **extra, seq=seq + 1, attempt=attempt, outcome="succeeded",
                  duration_ms=duration_ms),
            succeeded(**common, seq=seq + 2, attempt=attempt, output=output or {},
                      duration_ms=duration_ms),
        ]
    delay = _retry_delay(state, stage_id, attempt, error, rng)
    if delay is not None:
        return [ended(**common, **extra, seq=seq + 1, attempt=attempt, outcome="failed",
                      duration_ms=duration_ms, error=error, retry_delay_ms=delay,
                      retry_at=now + timedelta(milliseconds=delay))]
    return [
        ended(**common, **extra, seq=seq + 1, attempt=attempt, outcome="failed",
              duration_ms=duration_ms, error=error),
        gave_up(**common, seq=seq + 2, attempts=attempt, error=error),
    ]


def attempt_events(
    state: ExecutionState,
    stage_id: str,
    *,
    attempt: int,
    now: datetime,
    duration_ms: int,
    output: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    breaker: dict[str, Any] | None = None,
    rng: random.Random | None = None,
) -> list[Event]:
    """The events that record one attempt's end: succeeded, retry scheduled, or given up.

    A failed attempt is retried when its error is retryable and the stage's retry config has
    attempts left; the jittered delay (drawn from ``rng``) and the time of the next attempt are
    recorded, so a restarted actor waits out the same delay instead of drawing a new one.
    Once another stage has failed, or a cancel was requested, a failed attempt is not retried:
    the stage is cancelled.
    """
    failing = [sid for sid in state.stages_in("failed") if sid != stage_id]
    if error is not None and (failing or state.cancel_requested_by is not None):
        common: dict[str, Any] = {"execution_id": state.execution_id, "at": now,
                                  "stage_id": stage_id}
        reason = f"stage {failing[0]} failed" if failing else _cancel_message(state)
        return [
            StageAttempt(**common, seq=state.version + 1, attempt=attempt, outcome="failed",
                         duration_ms=duration_ms, error=error, breaker=breaker),
            StageCancelled(**common, seq=state.version + 2, reason=reason),
        ]
    return _ended(state, stage_id, (StageAttempt, StageCompleted, StageFailed),
                  attempt=attempt, now=now, duration_ms=duration_ms, output=output,
                  error=error, rng=rng, extra={"breaker": breaker})


def compensation_events(
    state: ExecutionState,
    stage_id: str,
    *,
    attempt: int,
    now: datetime,
    duration_ms: int,
    output: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    rng: random.Random | None = None,
) -> list[Event]:
    """Like :func:`attempt_events`, for one attempt of a stage's compensation handler (which
    runs under the stage's retry config)."""
    return _ended(state, stage_id,
                  (CompensationAttempt, CompensationCompleted, CompensationFailed),
                  attempt=attempt, now=now, duration_ms=duration_ms, output=output,
                  error=error, rng=rng, extra={})
