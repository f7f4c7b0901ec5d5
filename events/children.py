"""Child workflows: what a ``workflow`` stage does to another execution, and how the parent
hears of its child's end.

Every link goes through the logs.  The parent records ``stage_waiting`` naming its child
first (the child's id follows from the parent's and the stage's, so a child started twice is
the same child), then starts it; a crash between the two is mended by the next runner, which
starts it again (a no-op when it exists).  Whoever ends the child appends
``child_workflow_ended`` to the parent's log (a request: it wakes a parked parent).  A
stage of the parent that stops waiting (cancelled, failed, timed out) cancels its child; a
compensation of such a stage asks the child to roll back.  :func:`reconcile` mends what a
crash between two logs left undone.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from definitions import ConcurrencyError, WorkflowNotFoundError
from events.ids import execution_id_for
from events.models import (
    CancelRequested,
    ChildWorkflowEnded,
    CompensationStarted,
    Event,
    RollbackRequested,
    StageCancelled,
    StageFailed,
    StageWaiting,
    WorkflowInitiated,
)
from events.state import TERMINAL_STATUSES, ExecutionState, fold
from events.store import EventStore

__all__ = [
    "ChildAction",
    "adopt_actions",
    "after_append",
    "child_execution_id",
    "child_outputs",
    "execute",
    "execution_id_for",
    "plan",
    "reconcile",
    "report_end",
]

_RETRIES = 50


def child_key(parent_id: str, stage_id: str) -> str:
    """The idempotency key a ``workflow`` stage starts its child under."""
    return f"parent:{parent_id}:{stage_id}"


def child_execution_id(parent_id: str, stage_id: str, workflow_id: str) -> str:
    return execution_id_for(workflow_id, child_key(parent_id, stage_id))


def child_outputs(state: ExecutionState) -> dict[str, Any]:
    """A completed child's outputs by stage id (what its parent's stage completes with)."""
    return {sid: state.stages[sid].output or {} for sid in state.completion_order}


@dataclass(frozen=True, slots=True)
class ChildAction:
    """One thing to do to another execution after an append: ``start`` a stage's child,
    ``cancel`` it, ask it to ``rollback``, or ``report`` this (child) execution's end."""

    kind: Literal["start", "cancel", "rollback", "report"]
    stage_id: str
    child_id: str
    compensate: bool = False
    reason: str = ""


def _stopped_reason(state: ExecutionState, stage_id: str) -> str:
    return f"its parent {state.execution_id} stopped waiting for it (stage {stage_id})"


def plan(state: ExecutionState, events: Sequence[Event]) -> list[ChildAction]:
    """What the appended ``events`` ask of other executions (pure)."""
    actions: list[ChildAction] = []
    for event in events:
        sid = event.stage_id or ""
        record = state.stages.get(sid)
        if isinstance(event, StageWaiting) and event.child_execution_id is not None:
            actions.append(ChildAction("start", sid, event.child_execution_id))
        elif (isinstance(event, CompensationStarted) and record is not None
              and record.child_execution_id is not None):
            actions.append(ChildAction("rollback", sid, record.child_execution_id))
        elif (isinstance(event, StageCancelled | StageFailed) and record is not None
              and record.child_execution_id is not None and record.child_status is None):
            plain_cancel = (state.cancel_requested_by is not None
                            and not state.cancel_compensate)
            actions.append(ChildAction("cancel", sid, record.child_execution_id,
                                       compensate=not plain_cancel,
                                       reason=_stopped_reason(state, sid)))
    if state.terminal and state.parent is not None and any(
            e.type in ("workflow_completed", "workflow_failed", "workflow_cancelled",
                       "workflow_rolled_back") for e in events):
        actions.append(ChildAction("report", state.parent[1], state.execution_id))
    return actions


def adopt_actions(state: ExecutionState) -> list[ChildAction]:
    """What a runner that adopts ``state`` makes sure of (each is a no-op when done): the
    children its waiting stages named are started, the rollbacks its compensations asked
    for are asked."""
    actions: list[ChildAction] = []
    for sid, record in state.stages.items():
        if record.child_execution_id is None:
            continue
        if record.status == "running" and record.child_status is None:
            actions.append(ChildAction("start", sid, record.child_execution_id))
        elif record.compensation == "running" and record.child_status not in (
                "rolled_back", "failed"):
            actions.append(ChildAction("rollback", sid, record.child_execution_id))
    return actions


async def execute(store: EventStore, state: ExecutionState, actions: Sequence[ChildAction],
                  ) -> None:
    """Carry ``actions`` out (``state``: the execution that asked for them)."""
    for action in actions:
        if action.kind == "start":
            await _start(store, state, action.stage_id, action.child_id)
        elif action.kind == "report":
            await report_end(store, state)
        else:
            await _request(store, state, action)


async def after_append(store: EventStore, before: ExecutionState,
                       events: Sequence[Event]) -> None:
    """What ``events`` (just appended after ``before``) ask of other executions, done: for
    writers other than a runner's drive (a cancel of an undriven execution, a dead-letter)."""
    state = fold(events, copy.deepcopy(before))
    await execute(store, state, plan(state, events))


async def _start(store: EventStore, parent: ExecutionState, stage_id: str,
                 child_id: str) -> None:
    from definitions import MAX_CHILD_DEPTH
    from events.decide import upstream_outputs

    stage = parent.require_dag().stage(stage_id)
    assert stage.workflow is not None
    now = datetime.now(UTC)
    problem: str | None = None
    try:
        if parent.depth + 1 > MAX_CHILD_DEPTH:
            raise ValueError(f"child workflows nest at most {MAX_CHILD_DEPTH} deep")
        dag = await store.get_definition(stage.workflow, stage.version)
    except (WorkflowNotFoundError, ValueError) as exc:
        problem = f"child workflow not started: {exc}"
    if problem is not None:
        await _append_to(store, parent.execution_id, lambda p: _child_end(
            p, stage_id, child_id, "failed", {}, problem, now))
        return
    event = WorkflowInitiated(
        execution_id=child_id, seq=1, at=now, workflow_id=dag.id, workflow_version=dag.version,
        dag=dag.model_dump(mode="json"),
        context={**parent.context, **upstream_outputs(parent, stage_id)},
        user_id=parent.user_id, idempotency_key=child_key(parent.execution_id, stage_id),
        parent_execution_id=parent.execution_id, parent_stage_id=stage_id,
        depth=parent.depth + 1)
    with contextlib.suppress(ConcurrencyError):  # started already (a crash came between)
        await store.append([event], expected_version=0)


def _child_end(parent: ExecutionState, stage_id: str, child_id: str, status: str,
               outputs: dict[str, Any], error: str | None, now: datetime) -> Event | None:
    """``child_workflow_ended`` for the parent, or None when it no longer wants to hear it:
    it ended, or its stage neither waits for this child nor for its rollback, or it knows."""
    record = parent.stages.get(stage_id)
    if (parent.terminal or record is None or record.child_execution_id != child_id
            or record.child_status == status
            or not (record.status == "running" or record.compensation == "running")):
        return None
    return ChildWorkflowEnded(execution_id=parent.execution_id, seq=parent.version + 1, at=now,
                              stage_id=stage_id, child_execution_id=child_id,
                              status=status,
                              outputs=outputs, error_message=error)


async def _append_to(store: EventStore, execution_id: str, make: Any) -> bool:
    """Append ``make(state)`` to an execution's log (again on a race with its runner)."""
    for _ in range(_RETRIES):
        events = await store.read(execution_id)
        if not events:
            return False
        state = fold(events)
        event = make(state)
        if event is None:
            return False
        try:
            await store.append([event], expected_version=state.version)
        except ConcurrencyError:
            continue
        return True
    return False


async def report_end(store: EventStore, child: ExecutionState) -> bool:
    """Tell an ended child's parent how it ended (a no-op when it knows, or no longer
    waits for it).  True when something was appended."""
    if child.parent is None or child.status not in TERMINAL_STATUSES:
        return False
    parent_id, stage_id = child.parent
    outputs = child_outputs(child) if child.status == "completed" else {}
    error = child.error_message
    if child.status == "cancelled":
        error = f"cancelled by {child.cancel_requested_by}" + (
            f": {child.cancel_reason}" if child.cancel_reason else "")
    now = datetime.now(UTC)
    return await _append_to(store, parent_id, lambda p: _child_end(
        p, stage_id, child.execution_id, child.status, outputs, error, now))


async def _request(store: EventStore, parent: ExecutionState, action: ChildAction) -> None:
    """Ask a child to stop (``cancel``) or to undo itself (``rollback``); a child that has
    ended already is reported to its parent instead."""
    by = parent.cancel_requested_by or parent.user_id
    now = datetime.now(UTC)

    def make(child: ExecutionState) -> Event | None:
        if action.kind == "rollback":
            if child.status == "completed":
                return RollbackRequested(execution_id=child.execution_id,
                                         seq=child.version + 1, at=now, user_id=by)
            return None
        if child.terminal or child.cancel_requested_by is not None:
            return None
        return CancelRequested(execution_id=child.execution_id, seq=child.version + 1, at=now,
                               user_id=by, compensate=action.compensate, reason=action.reason)

    if not await _append_to(store, action.child_id, make):
        events = await store.read(action.child_id)
        if events:
            child = fold(events)
            if (child.terminal and child.status != "completed") or action.kind == "cancel":
                await report_end(store, child)


async def reconcile(store: EventStore, *, limit: int = 200) -> int:
    """Mend what a crash between two logs left undone: ended children whose parked parent
    was not told, and children still running under an ended parent (cancelled).  Returns
    how many it mended."""
    async with store.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT c.id, p.status AS parent_status FROM workflow_executions c "
            "JOIN workflow_executions p ON p.id = (c.audit_context->'parent'->>'execution_id')"
            "::uuid WHERE c.audit_context ? 'parent' AND ("
            " (c.status = ANY($1::text[]) AND p.status = 'waiting') OR"
            " (c.status <> ALL($1::text[]) AND p.status = ANY($1::text[])))"
            " LIMIT $2", sorted(TERMINAL_STATUSES), limit)
        stalled = await conn.fetch(
            "SELECT DISTINCT p.id FROM workflow_executions p, "
            "jsonb_each_text(p.audit_context->'children') AS ch(stage_id, child_id) "
            "LEFT JOIN workflow_executions c ON c.id = ch.child_id::uuid "
            "WHERE p.status = 'waiting' AND p.audit_context ? 'children' AND (c.id IS NULL OR "
            " (p.audit_context->'waiting'->>'resume' = 'compensating' AND c.status = "
            "'completed')) LIMIT $1", limit)
    mended = 0
    for row in stalled:  # a child never started, or a rollback never asked for
        events = await store.read(str(row["id"]))
        parent = fold(events)
        actions = adopt_actions(parent)
        await execute(store, parent, actions)
        mended += len(actions)
    for row in rows:
        events = await store.read(str(row["id"]))
        if not events:
            continue
        child = fold(events)
        if child.terminal:
            mended += await report_end(store, child)
        elif child.parent is not None:
            mended += await _append_to(store, child.execution_id, _orphan_cancel(
                f"its parent {child.parent[0]} ended ({row['parent_status']})"))
    return mended


def _orphan_cancel(reason: str) -> Any:
    now = datetime.now(UTC)

    def make(child: ExecutionState) -> Event | None:
        if child.terminal or child.cancel_requested_by is not None:
            return None
        return CancelRequested(execution_id=child.execution_id, seq=child.version + 1, at=now,
                               user_id="wfdag", compensate=True, reason=reason)

    return make
