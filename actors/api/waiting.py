"""What ends a wait: approvals, rejections and signals, appended to an execution's log.

Each is a request: durable when the call returns, absorbed by the runner that drives the
execution, or — when the execution is parked (it holds no runner while it waits) — putting
it back in the queue, where any runner resumes it from its log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from actors.api.common import check_owner, check_user, ready_store
from actors.api.executions import ensure_runners
from actors.logs import get_logger
from actors.runtime import check_payload_size
from definitions import (
    ConcurrencyError,
    ExecutionStateError,
    InvalidArgumentError,
    StageNotFoundError,
    StageStateError,
)
from events import (
    Event,
    EventStore,
    ExecutionState,
    SignalReceived,
    StageApproved,
    StageRejected,
    fold,
    parse_execution_id,
)
from events.secrets import seal_secrets
from projections import WorkflowStatus, fetch_status

__all__ = ["approve_stage", "reject_stage", "send_signal"]

MAX_TEXT_CHARS = 2000


def _text(value: str | None, what: str, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT_CHARS:
        raise InvalidArgumentError(f"{what} must be text of 1 to {MAX_TEXT_CHARS} characters")
    return value


def _object(value: Mapping[str, Any] | None, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"{what} must be a JSON object, got {type(value).__name__}")
    try:
        text = json.dumps(dict(value), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{what} is not JSON: {exc}") from None
    check_payload_size(what, text)
    # A person's data or a signal's payload may carry secrets too: sealed like a context's.
    sealed: dict[str, Any] = seal_secrets(dict(json.loads(text)))
    return sealed


async def _append(store: EventStore, execution_id: str, organization_id: str | None,
                  make: Callable[[ExecutionState], Event]) -> WorkflowStatus:
    """Fold the log, let ``make`` check it and build the request, append it (again on a
    race with the execution's runner), then make sure runners will take it."""
    eid = parse_execution_id(execution_id)
    await check_owner(store, eid, organization_id)
    for _ in range(50):
        state = fold(await store.read_existing(eid))
        event = make(state)
        try:
            await store.append([event], expected_version=state.version)
        except ConcurrencyError:
            continue  # its runner appended meanwhile: look again
        get_logger(execution_id=eid).info(f"execution.{event.type}", stage_id=event.stage_id)
        await ensure_runners()
        return await fetch_status(store.pool, eid)
    raise ExecutionStateError(eid, "busy", "the request", "settled for a moment")


def _waiting_approval(state: ExecutionState, stage_id: str, action: str) -> None:
    if state.terminal:
        raise ExecutionStateError(state.execution_id, state.status, action,
                                  "waiting on its approval stage")
    dag = state.require_dag()
    if not dag.has_stage(stage_id):
        raise StageNotFoundError(state.workflow_id, stage_id)
    stage = dag.stage(stage_id)
    if stage.kind != "approval":
        raise StageStateError(f"stage {stage_id!r} of workflow {state.workflow_id!r} is "
                              f"a{'n' if stage.kind == 'agent' else ''} {stage.kind} stage, "
                              f"not an approval stage")
    record = state.stages[stage_id]
    if record.approval is not None or record.rejection is not None:
        decided = "approved" if record.approval is not None else "rejected"
        raise StageStateError(f"stage {stage_id!r} of execution {state.execution_id} was "
                              f"{decided} already")
    if record.status != "running":
        raise StageStateError(
            f"stage {stage_id!r} of execution {state.execution_id} is {record.status}: "
            + ("it has not been reached yet; it can be decided once it waits"
               if record.status == "pending" else "it no longer waits"))


def _decider(state: ExecutionState, stage_id: str, user_id: str, action: str) -> None:
    """The stage waits for a decision, and ``user_id`` may make it."""
    _waiting_approval(state, stage_id, action)
    stage_approvers = state.require_dag().stage(stage_id).approvers
    if stage_approvers is not None and user_id not in stage_approvers:
        raise StageStateError(f"user {user_id[:100]!r} may not decide stage {stage_id!r}: "
                              f"its approvers are {', '.join(stage_approvers)}")


async def approve_stage(
    execution_id: str, stage_id: str, user_id: str, *, comment: str | None = None,
    data: Mapping[str, Any] | None = None, organization_id: str | None = None,
) -> WorkflowStatus:
    """Approve a waiting approval stage: it completes with output ``{"approved": true, "by":
    user_id, "comment": …, "data": …}``.  Refused, naming why: an ended execution, an unknown
    stage, a stage that is not an approval or does not wait (yet, or any more), a user who is
    not one of its ``approvers``."""
    check_user(user_id)
    text = _text(comment, "comment")
    payload = _object(data, "data")
    store = await ready_store()

    def make(state: ExecutionState) -> Event:
        _decider(state, stage_id, user_id, "an approval")
        return StageApproved(execution_id=state.execution_id, seq=state.version + 1,
                             at=datetime.now(UTC), stage_id=stage_id, user_id=user_id,
                             comment=text, data=payload)

    return await _append(store, execution_id, organization_id, make)


async def reject_stage(
    execution_id: str, stage_id: str, user_id: str, *, reason: str,
    organization_id: str | None = None,
) -> WorkflowStatus:
    """Reject a waiting approval stage: it fails for good (``ApprovalRejectedError``, not
    retried), and the execution compensates as on any failure.  Refused as
    :func:`approve_stage` is."""
    check_user(user_id)
    why = _text(reason, "reason", required=True)
    assert why is not None
    store = await ready_store()

    def make(state: ExecutionState) -> Event:
        _decider(state, stage_id, user_id, "a rejection")
        return StageRejected(execution_id=state.execution_id, seq=state.version + 1,
                             at=datetime.now(UTC), stage_id=stage_id, user_id=user_id,
                             reason=why)

    return await _append(store, execution_id, organization_id, make)


async def send_signal(
    execution_id: str, name: str, payload: Mapping[str, Any] | None = None, *, user_id: str,
    organization_id: str | None = None,
) -> WorkflowStatus:
    """Send the signal ``name`` (with a JSON-object ``payload``) to an execution.  A signal
    stage of that name takes it as its output — now, or when it is reached (a signal sent
    early is kept in the log).  A signal nobody waits for is an error naming why: the
    execution ended, it has no signal stage of that name, or each such stage is done."""
    check_user(user_id)
    label = _text(name, "signal name")
    assert label is not None
    body = _object(payload, "payload") or {}
    store = await ready_store()

    def make(state: ExecutionState) -> Event:
        if state.terminal:
            raise ExecutionStateError(state.execution_id, state.status, "a signal",
                                      "running (or waiting)")
        dag = state.require_dag()
        takers = [s.id for s in dag.stages if s.kind == "signal" and s.signal == label]
        if not takers:
            known = sorted({s.signal for s in dag.stages if s.signal}) or ["none"]
            raise StageStateError(f"workflow {state.workflow_id!r} has no stage waiting for "
                                  f"signal {label!r} (its signals: {', '.join(known)})")
        open_takers = [s for s in takers if state.stages[s].status in ("pending", "running")]
        kept = sum(1 for received, _ in state.signals if received == label)
        if len(open_takers) <= kept:
            raise StageStateError(f"no stage of execution {state.execution_id} still waits for "
                                  f"signal {label!r}: {', '.join(takers)} "
                                  f"{'has' if len(takers) == 1 else 'have'} taken one already "
                                  f"or will not run")
        return SignalReceived(execution_id=state.execution_id, seq=state.version + 1,
                              at=datetime.now(UTC), name=label, payload=body, user_id=user_id)

    return await _append(store, execution_id, organization_id, make)
