"""The pure rules of waiting stages (approval, signal, timer, workflow): when a wait starts,
what ends it, and when an execution has nothing to do but wait (it is parked: it holds no
runner) — a rollback waiting for a child workflow's rollback parks too.

A waiting stage's start is recorded with its deadline (a timer's wake time, or an approval's
or signal's ``timeout_seconds`` from its start): replay and a restarted runner read the time
from the log and never restart a clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from events.children import child_execution_id
from events.models import (
    CompensationCompleted,
    CompensationFailed,
    Event,
    ExecutionParked,
    StageCompleted,
    StageFailed,
    StageWaiting,
)
from events.state import ExecutionState

__all__ = ["child_compensation_step", "next_wake", "parked_event", "resolve_until",
           "waiting_step"]

_WAITED_FOR = {"approval": "an approval", "signal": "its signal",
               "workflow": "its child workflow"}


def resolve_until(state: ExecutionState, path: str) -> datetime:
    """The ISO time at ``context.<path>`` or ``<stage>.<path>`` (an upstream output); naive
    times are UTC.  ``ValueError`` names what is missing or wrong."""
    head, _, rest = path.partition(".")
    if head == "context":
        value: Any = state.context
    elif head in state.stages:
        value = state.stages[head].output or {}
    else:
        raise ValueError(f"until path {path!r}: {head!r} is neither 'context' nor a stage")
    for part in rest.split(".") if rest else []:
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"until path {path!r}: no {part!r} there")
        value = value[part]
    if not isinstance(value, str):
        raise ValueError(f"until path {path!r} is {type(value).__name__}, not an ISO time")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"until path {path!r} is {value[:60]!r}, not an ISO time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _error(type_: str, message: str) -> dict[str, Any]:
    return {"type": type_, "message": message, "retryable": False}


def waiting_step(state: ExecutionState, now: datetime) -> list[Event]:
    """The next event of one waiting stage that has something to say, or none."""
    dag = state.require_dag()
    eid, seq = state.execution_id, state.version + 1
    for sid in state.stages_in("running"):
        stage = dag.stage(sid)
        if not stage.waits:
            continue
        record = state.stages[sid]
        started = record.started_at or now
        since = max(0, int((now - started).total_seconds() * 1000))
        if record.waiting is None:
            if stage.kind == "workflow":
                assert stage.workflow is not None
                return [StageWaiting(
                    execution_id=eid, seq=seq, at=now, stage_id=sid, waiting_for="workflow",
                    until=started + timedelta(seconds=stage.timeout_seconds),
                    child_execution_id=child_execution_id(eid, sid, stage.workflow))]
            if stage.kind == "timer":
                if stage.until is not None:
                    try:
                        until = resolve_until(state, stage.until)
                    except ValueError as exc:
                        return [StageFailed(execution_id=eid, seq=seq, at=now, stage_id=sid,
                                            attempts=1, error=_error("ValidationError", str(exc)))]
                else:
                    until = now + timedelta(seconds=stage.delay_seconds or 0)
            else:
                until = started + timedelta(seconds=stage.timeout_seconds)
            return [StageWaiting(execution_id=eid, seq=seq, at=now, stage_id=sid,
                                 waiting_for=stage.kind, until=until, signal=stage.signal,
                                 approvers=list(stage.approvers) if stage.approvers else None)]
        if record.rejection is not None:
            return [StageFailed(
                execution_id=eid, seq=seq, at=now, stage_id=sid, attempts=1,
                error=_error("ApprovalRejectedError",
                             f"rejected by {record.rejection['by']}: "
                             f"{record.rejection['reason']}"))]
        if record.approval is not None:
            return [StageCompleted(execution_id=eid, seq=seq, at=now, stage_id=sid, attempt=1,
                                   output=record.approval, duration_ms=since)]
        if stage.kind == "workflow" and record.child_status is not None:
            if record.child_status == "completed":
                return [StageCompleted(execution_id=eid, seq=seq, at=now, stage_id=sid,
                                       attempt=1, output=record.child_outputs or {},
                                       duration_ms=since)]
            return [StageFailed(
                execution_id=eid, seq=seq, at=now, stage_id=sid, attempts=1,
                error=_error("ChildWorkflowError",
                             f"child execution {record.child_execution_id} "
                             f"{record.child_status.replace('_', ' ')}"
                             + (f": {record.child_error}" if record.child_error else "")))]
        if stage.kind == "signal":
            payload = next((p for name, p in state.signals if name == stage.signal), None)
            if payload is not None:
                return [StageCompleted(execution_id=eid, seq=seq, at=now, stage_id=sid,
                                       attempt=1, output=payload, duration_ms=since)]
        due = record.wake_at
        if due is not None and now >= due:
            if stage.kind == "timer":
                return [StageCompleted(execution_id=eid, seq=seq, at=now, stage_id=sid,
                                       attempt=1, duration_ms=since,
                                       output={"due": due.isoformat(), "woke": now.isoformat()})]
            return [StageFailed(
                execution_id=eid, seq=seq, at=now, stage_id=sid, attempts=1,
                error=_error("StageTimeoutError",
                             f"stage {sid} waited {stage.timeout_seconds:g}s for "
                             f"{_WAITED_FOR[stage.kind]}"))]
    return []


def next_wake(state: ExecutionState) -> datetime | None:
    """The earliest time a waiting stage acts on its own (a timer wakes, a deadline passes)."""
    times = [st.wake_at for st in state.stages.values()
             if st.status == "running" and st.wake_at is not None]
    return min(times) if times else None


def child_compensation_step(state: ExecutionState, stage_id: str,
                            now: datetime) -> list[Event]:
    """A ``workflow`` stage's compensation (its child's rollback): ended when the child's
    rollback ended (``rolled_back``, or ``failed`` when a handler of the child failed)."""
    record = state.stages[stage_id]
    common = {"execution_id": state.execution_id, "seq": state.version + 1, "at": now,
              "stage_id": stage_id}
    if record.child_status == "rolled_back":
        return [CompensationCompleted(**common, attempt=1, duration_ms=0, output={
            "child_execution_id": record.child_execution_id, "status": "rolled_back"})]
    if record.child_status == "failed":
        return [CompensationFailed(**common, attempts=1, error=_error(
            "ChildWorkflowError", f"the rollback of child execution {record.child_execution_id}"
            f" failed" + (f": {record.child_error}" if record.child_error else "")))]
    return []


def parked_event(state: ExecutionState, now: datetime) -> ExecutionParked | None:
    """``execution_parked`` when every running stage waits (and has begun to), none can end
    now, and the execution is not parked already; or when it compensates and each running
    compensation waits for a child workflow's rollback."""
    dag = state.require_dag()
    if state.status == "compensating":
        undoing = [s for s, st in state.stages.items() if st.compensation == "running"]
        if (not undoing or state.rollback_requested_by is not None
                or any(dag.stage(s).kind != "workflow" for s in undoing)):
            return None
        return ExecutionParked(execution_id=state.execution_id, seq=state.version + 1, at=now,
                               waiting=undoing)
    if state.status != "in_progress":
        return None
    running = state.stages_in("running")
    if not running or any(not dag.stage(s).waits or state.stages[s].waiting is None
                          for s in running):
        return None
    return ExecutionParked(execution_id=state.execution_id, seq=state.version + 1, at=now,
                           waiting=running, wake_at=next_wake(state))
