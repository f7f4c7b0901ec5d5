"""Ends decided outside a runner's drive, by whoever holds an execution's lease: the
dead-letter of one that kept crashing its runners, the cancel of one that no runner drives."""

from __future__ import annotations

import copy
from datetime import datetime

from events.decide import _cancel_message, _cancel_step, _ms_between, rollback_order
from events.models import CancelRequested, Event, StageCancelled, WorkflowFailed
from events.state import ExecutionState, apply

__all__ = ["cancel_undriven_events", "dead_letter_events"]


def dead_letter_events(
    state: ExecutionState, now: datetime, *, recoveries: int, reason: str
) -> list[Event]:
    """Give up on an execution that crashed its runner ``recoveries`` times: it fails, with the
    reason, instead of being adopted again forever.  Nothing is compensated automatically (the
    compensation would run in the same crashing runner); the message says what to do next."""
    running = state.stages_in("running")
    message = (
        f"dead-lettered after {recoveries} runner crashes (last: {reason}); "
        f"fix the cause, then `wfdag retry {state.execution_id}` or "
        f"`wfdag rollback {state.execution_id}`"
    )
    return [WorkflowFailed(execution_id=state.execution_id, seq=state.version + 1, at=now,
                           error_message=message, failed_stage=running[0] if running else None,
                           duration_ms=_ms_between(state.started_at, now), dead_lettered=True)]


def cancel_undriven_events(
    state: ExecutionState, now: datetime, *, user_id: str, compensate: bool,
    reason: str | None,
) -> list[Event]:
    """The events of a cancel of an execution that no runner drives (the caller holds its
    lease, so nothing of it runs anywhere): the request, then — unless there is something to
    compensate — its end at once: the stages the log shows running are cancelled and the
    execution ends ``cancelled``.  What needs compensating is left to a runner (the request
    queues it)."""
    ask = CancelRequested(execution_id=state.execution_id, seq=state.version + 1, at=now,
                          user_id=user_id, compensate=compensate, reason=reason)
    ahead = copy.deepcopy(state)  # the caller's state is left as it was
    apply(ahead, ask)
    if ahead.phase == "compensating" or (compensate and rollback_order(ahead)):
        return [ask]  # a rollback runs on (parked, it waits for a child's): a runner decides
    events: list[Event] = [ask]
    for sid in ahead.stages_in("running"):
        stop = StageCancelled(execution_id=state.execution_id, seq=ahead.version + 1, at=now,
                              stage_id=sid, reason=_cancel_message(ahead))
        apply(ahead, stop)
        events.append(stop)
    events.extend(_cancel_step(ahead, now).events)
    return events
