"""The pure decision: given an execution's state, which events come next.

No Ray, no asyncpg, no clock inside: the caller passes ``now``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from definitions import WorkflowDAG, backoff_delay_ms
from events.models import (
    Event,
    StageAttempt,
    StageCancelled,
    StageCompleted,
    StageFailed,
    StageSkipped,
    StageStarted,
    WorkflowCompleted,
    WorkflowFailed,
)
from events.state import SETTLED_STAGE, ExecutionState

__all__ = ["Readiness", "attempt_events", "decide", "readiness", "upstream_outputs"]


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: list[str]
    skipped: list[tuple[str, str]]


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
    reasons: list[str] = []
    for transition in incoming:
        source = status.get(transition.from_stage)
        if source not in SETTLED_STAGE:
            return None
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
    dag = state.require_dag()
    seen: set[str] = set()
    todo = [stage_id]
    while todo:
        for transition in dag.incoming(todo.pop()):
            if transition.from_stage not in seen:
                seen.add(transition.from_stage)
                todo.append(transition.from_stage)
    return {
        sid: state.stages[sid].output or {}
        for sid in state.completion_order
        if sid in seen
    }


def _ms_between(start: datetime | None, end: datetime) -> int:
    if start is None:
        return 0
    return max(0, int((end - start).total_seconds() * 1000))


def decide(state: ExecutionState, now: datetime) -> list[Event]:
    """The events that follow from ``state``: stages to start or skip, and the workflow's end.

    When a stage has failed, running stages are cancelled and the workflow fails.  When every
    reachable stage is completed or skipped, the workflow completes.  Returns ``[]`` when the
    execution must wait for running stages (or is already over).
    """
    if state.terminal or state.dag is None:
        return []
    events: list[Event] = []
    seq = state.version
    eid = state.execution_id

    def nxt() -> int:
        nonlocal seq
        seq += 1
        return seq

    failed = state.stages_in("failed")
    if failed:
        first = failed[0]
        for sid in state.stages_in("running"):
            events.append(
                StageCancelled(
                    execution_id=eid, seq=nxt(), at=now, stage_id=sid,
                    reason=f"stage {first} failed",
                )
            )
        error = state.stages[first].error or {}
        message = f"stage {first} failed: {error.get('type', 'Error')}: {error.get('message', '')}"
        events.append(
            WorkflowFailed(
                execution_id=eid, seq=nxt(), at=now, error_message=message,
                failed_stage=first, duration_ms=_ms_between(state.started_at, now),
            )
        )
        return events

    plan = readiness(state)
    for sid, reason in plan.skipped:
        events.append(
            StageSkipped(execution_id=eid, seq=nxt(), at=now, stage_id=sid, reason=reason)
        )
    for sid in plan.ready:
        events.append(StageStarted(execution_id=eid, seq=nxt(), at=now, stage_id=sid))

    skipped_now = {sid for sid, _ in plan.skipped}
    unsettled = [
        sid
        for sid in state.dag.reachable()
        if state.stages[sid].status not in ("completed", "skipped") and sid not in skipped_now
    ]
    if not unsettled:
        events.append(
            WorkflowCompleted(
                execution_id=eid, seq=nxt(), at=now,
                duration_ms=_ms_between(state.started_at, now),
            )
        )
    return events


def attempt_events(
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
    """The events that record one attempt's end: succeeded, retry scheduled, or given up.

    A failed attempt is retried when its error is retryable and the stage's retry config has
    attempts left; the jittered delay (drawn from ``rng``) and the time of the next attempt are
    recorded, so a restarted actor waits out the same delay instead of drawing a new one.
    """
    dag = state.require_dag()
    eid = state.execution_id
    seq = state.version
    if error is None:
        return [
            StageAttempt(execution_id=eid, seq=seq + 1, at=now, stage_id=stage_id,
                         attempt=attempt, outcome="succeeded", duration_ms=duration_ms),
            StageCompleted(execution_id=eid, seq=seq + 2, at=now, stage_id=stage_id,
                           attempt=attempt, output=output or {}, duration_ms=duration_ms),
        ]
    config = dag.stage(stage_id).retry
    if bool(error.get("retryable")) and attempt < config.max_attempts:
        delay = backoff_delay_ms(config, attempt, rng)
        return [
            StageAttempt(execution_id=eid, seq=seq + 1, at=now, stage_id=stage_id,
                         attempt=attempt, outcome="failed", duration_ms=duration_ms, error=error,
                         retry_delay_ms=delay, retry_at=now + timedelta(milliseconds=delay)),
        ]
    return [
        StageAttempt(execution_id=eid, seq=seq + 1, at=now, stage_id=stage_id, attempt=attempt,
                     outcome="failed", duration_ms=duration_ms, error=error),
        StageFailed(execution_id=eid, seq=seq + 2, at=now, stage_id=stage_id, attempts=attempt,
                    error=error),
    ]
