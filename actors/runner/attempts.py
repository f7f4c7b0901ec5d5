"""The stage calls of a drive: one attempt of a stage's agent (through its circuit breaker),
or of its compensation handler — each returns a :class:`StageOutcome` for the log."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import UTC, datetime
from typing import Any

from actors.breakers import BreakerView
from actors.logs import bound
from actors.runner.dispatch import Dispatcher
from actors.runner.protocol import AttemptSpec, StageOutcome, error_info
from definitions import WorkflowStage
from events import ExecutionState, counts_against_breaker, upstream_outputs
from events.breaker_state import breaker_owner
from events.secrets import has_sealed, open_secrets

__all__ = ["StageCalls"]


def opened(value: Any) -> Any:
    """``value`` with its sealed secrets opened (an output's secret-like keys are sealed when
    recorded; the agents after it get them back in plain)."""
    return open_secrets(value) if has_sealed(value) else value


def _now() -> datetime:
    return datetime.now(UTC)


class StageCalls:
    """What a drive needs to call stages (its attributes are the drive's)."""

    _breakers: BreakerView
    _dispatch: Dispatcher
    _log: Any
    _cancel: dict[str, asyncio.Event]
    _context: dict[str, Any]
    _database_url: str

    async def _wait_until(self, when: datetime | None, cancel: asyncio.Event) -> bool:
        """Sleep until ``when``; False when cancelled first."""
        if when is None:
            return not cancel.is_set()
        delay = (when - _now()).total_seconds()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancel.wait(), delay)
        return not cancel.is_set()

    def _spec(self, state: ExecutionState, stage: WorkflowStage, attempt: int) -> AttemptSpec:
        return AttemptSpec(
            execution_id=state.execution_id, workflow_id=state.workflow_id, stage_id=stage.id,
            stage_name=stage.name, attempt=attempt, context=self._context,
            inputs=opened(upstream_outputs(state, stage.id)),
            idempotency_key=f"{state.execution_id}:{stage.id}", agent_type=stage.agent_type,
            agent=stage.agent, capabilities=tuple(stage.capabilities),
            database_url=self._database_url,
        )

    async def _attempt(self, state: ExecutionState, stage_id: str) -> StageOutcome:
        stage = state.require_dag().stage(stage_id)
        record = state.stages[stage_id]
        attempt = record.attempts + 1
        cancel = self._cancel.setdefault(stage_id, asyncio.Event())
        if not await self._wait_until(record.retry_at, cancel):
            return StageOutcome("run", stage_id, attempt, 0, error=error_info(
                "StageCancelled", "cancelled before its retry", False))
        log = self._log.bind(stage_id=stage_id, attempt=attempt)
        owner = breaker_owner(state.workflow_id, state.organization_id, stage.breaker_scope)
        admission = await self._breakers.admit(owner, stage)
        seen: dict[str, Any] = {"state": admission.state,
                                "failure_count": admission.failure_count}
        if not admission.admitted:
            # Not a failure of the workflow: the attempt waits for the breaker (deferred).
            log.warning("stage.circuit_open", next_attempt_at=admission.next_attempt_at)
            return StageOutcome("run", stage_id, attempt, 0, breaker=seen, deferred=True,
                                retry_at=admission.next_attempt_at)
        log.info("stage.attempt_dispatched")
        with bound(stage_id=stage_id):
            result = await self._dispatch.run(("run", stage_id), state.workflow_id, stage,
                                              self._spec(state, stage, attempt), cancel)
        # Only failures that say something about the downstream count against the breaker.
        healthy = result.ok or not counts_against_breaker(stage, result.error)
        after = await self._breakers.record(owner, stage, admission, healthy)
        seen = {"state": after.state, "failure_count": after.failure_count}
        if after.transition:
            seen["transition"] = after.transition
        if result.ok:
            log.info("stage.attempt_succeeded", duration_ms=result.duration_ms)
        else:
            assert result.error is not None
            log.info("stage.attempt_failed", error_type=result.error["type"],
                     retryable=result.error["retryable"])
        return StageOutcome("run", stage_id, attempt, result.duration_ms, output=result.output,
                            error=result.error, breaker=seen)

    async def _compensate(self, state: ExecutionState, stage_id: str) -> StageOutcome:
        stage = state.require_dag().stage(stage_id)
        record = state.stages[stage_id]
        attempt = record.comp_attempts + 1
        await self._wait_until(record.comp_retry_at, asyncio.Event())
        spec = dataclasses.replace(
            self._spec(state, stage, attempt), handler=stage.compensation_handler,
            output=opened(record.output or {}),
            idempotency_key=f"{state.execution_id}:{stage_id}:compensate")
        self._log.info("compensation.dispatched", stage_id=stage_id, attempt=attempt,
                       handler=stage.compensation_handler)
        result = await self._dispatch.run(("undo", stage_id), state.workflow_id, stage, spec,
                                          None)
        return StageOutcome("undo", stage_id, attempt, result.duration_ms,
                            output=result.output, error=result.error)

