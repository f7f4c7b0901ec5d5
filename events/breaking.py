"""The pure rules of an attempt its circuit breaker refused, and of what counts against it.

A refused attempt is not a failure of the workflow: the stage waits for the breaker to
half-open — until its ``next_attempt_at`` (open), or a few seconds (half-open, its one trial
out) — with a little jitter so that waiting executions do not all ask at once.  No attempt is
used up, and the attempt's ``timeout_seconds`` does not run while it waits.  Only when the
waits of one attempt add up to the stage's ``breaker_wait_seconds`` does the stage fail
(``CircuitOpenError``, naming the last real error).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from definitions import WorkflowStage
from events.models import Event, StageCancelled, StageDeferred, StageFailed
from events.state import ExecutionState

__all__ = ["counts_against_breaker", "deferral_events"]

#: How long an attempt refused by a half-open breaker (its trial out) waits before it asks
#: again, at most.
HALF_OPEN_POLL_SECONDS = 5.0


def counts_against_breaker(stage: WorkflowStage, error: dict[str, Any] | None) -> bool:
    """Does this failed attempt count against the stage's breaker?  With ``count:
    retryable`` (default) only failures that say something about the downstream do:
    retryable errors, timeouts, crashed workers.  A non-retryable error (a validation error,
    bad output, a refusal) is an answer from the downstream: for the breaker it is a success.
    An ``outage`` (wfdag's own database down or out of connections) never counts."""
    if error is None or error.get("outage"):
        return False  # wfdag's own database failing says nothing about the downstream
    return stage.breaker.count == "all" or bool(error.get("retryable"))


def deferral_events(
    state: ExecutionState, stage_id: str, *, attempt: int, now: datetime,
    next_attempt_at: datetime | None, breaker: dict[str, Any] | None,
    rng: random.Random | None = None,
) -> list[Event]:
    """The events of an attempt the breaker refused: a wait (``stage_deferred``), or the
    stage's failure once its breaker wait is used up (or its cancellation: the workflow is
    failing, or a cancel was requested)."""
    stage = state.require_dag().stage(stage_id)
    record = state.stages[stage_id]
    common: dict[str, Any] = {"execution_id": state.execution_id, "seq": state.version + 1,
                              "at": now, "stage_id": stage_id}
    failing = [s for s in state.stages_in("failed") if s != stage_id]
    if failing or state.cancel_requested_by is not None:
        why = f"stage {failing[0]} failed" if failing else "a cancel was requested"
        return [StageCancelled(**common, reason=why)]
    since = record.deferred_since or now
    limit = since + timedelta(seconds=stage.breaker_wait)
    if now >= limit:
        last = record.error
        message = (f"circuit {state.workflow_id}:{stage_id} did not let attempt {attempt} "
                   f"through in {stage.breaker_wait:g}s (breaker_wait_seconds)")
        if last:
            message += f"; the last error was {last.get('type')}: {last.get('message')}"
        return [StageFailed(**common, attempts=max(record.attempts, 1), error={
            "type": "CircuitOpenError", "message": message[:2000], "retryable": False})]
    cooldown = stage.breaker.cooldown_seconds
    base = next_attempt_at if next_attempt_at is not None and next_attempt_at > now else (
        now + timedelta(seconds=min(cooldown, HALF_OPEN_POLL_SECONDS)))
    jitter = (rng or random.Random()).uniform(0, min(1.0, 0.1 * cooldown))
    until = min(base + timedelta(seconds=jitter), limit)
    return [StageDeferred(**common, attempt=attempt, retry_at=until, breaker=breaker)]
