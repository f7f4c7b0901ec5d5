"""The ``workflow_executions`` read model, kept from the events.

:func:`project_executions` is a store projector: it runs in the append's transaction, so the
row never disagrees with the log.  :func:`fetch_status` reads it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from definitions import ExecutionNotFoundError
from events import (
    CompensationCompleted,
    CompensationFailed,
    Event,
    RollbackRequested,
    RollbackStarted,
    StageAttempt,
    StageCompleted,
    StageStarted,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowInitiated,
    WorkflowRolledBack,
    parse_execution_id,
)
from events.database import DBConnection, DBReader

__all__ = ["TERMINAL_STATUSES", "WorkflowStatus", "fetch_status", "project_executions"]

TERMINAL_STATUSES = frozenset({"completed", "failed", "rolled_back"})

_INSERT = """
INSERT INTO workflow_executions
  (id, workflow_definition_id, workflow_version, status, started_at, context, audit_context,
   created_by, last_seq, updated_at)
VALUES ($1::uuid, $2, $3, 'initiated', $4, $5, $6, $7, $8, $4)
"""

_UPDATE = """
UPDATE workflow_executions SET
  status = COALESCE($2, status),
  current_stage = COALESCE($3, current_stage),
  context = CASE WHEN $4::jsonb = '[]'::jsonb THEN context
                 ELSE jsonb_set(context, '{executed_steps}',
                                COALESCE(context->'executed_steps', '[]'::jsonb) || $4::jsonb)
            END,
  error_message = COALESCE($5, error_message),
  completed_at = CASE WHEN $9 THEN NULL ELSE COALESCE($6, completed_at) END,
  last_seq = $7,
  updated_at = $8,
  circuit_breaker_state = CASE WHEN $10::jsonb = '{}'::jsonb THEN circuit_breaker_state
                               ELSE COALESCE(circuit_breaker_state, '{}'::jsonb) || $10::jsonb END,
  audit_context = CASE WHEN $11::jsonb = '{}'::jsonb THEN audit_context
                       ELSE COALESCE(audit_context, '{}'::jsonb) || $11::jsonb END
WHERE id = $1::uuid
"""


async def project_executions(conn: DBConnection, events: Sequence[Event]) -> None:
    """Apply one append's events to ``workflow_executions`` (one INSERT and/or one UPDATE)."""
    rest = list(events)
    first = rest[0]
    if isinstance(first, WorkflowInitiated):
        context = dict(first.context)
        context["executed_steps"] = []
        initial_audit = {"user_id": first.user_id, "retry_of": first.retry_of,
                         "idempotency_key": first.idempotency_key}
        await conn.execute(
            _INSERT, first.execution_id, first.workflow_id, first.workflow_version, first.at,
            context, initial_audit, first.user_id, first.seq,
        )
        rest = rest[1:]
        if not rest:
            return
    status: str | None = None
    current: str | None = None
    steps: list[dict[str, Any]] = []
    error: str | None = None
    ended: datetime | None = None
    reopened = False
    breakers: dict[str, Any] = {}
    audit: dict[str, Any] = {}
    compensations: dict[str, str] = {}
    for event in rest:
        if isinstance(event, StageStarted):
            status = "in_progress" if status in (None, "initiated") else status
            current = event.stage_id
        elif isinstance(event, StageAttempt):
            if event.breaker is not None:
                breakers[event.stage_id] = event.breaker
        elif isinstance(event, RollbackRequested):
            status, ended, reopened = "compensating", None, True
            audit["rollback_requested_by"] = event.user_id
        elif isinstance(event, RollbackStarted):
            status = "compensating"
            audit["rollback"] = {"reason": event.reason, "order": event.order}
            if event.error_message is not None:
                error = event.error_message
        elif isinstance(event, CompensationCompleted | CompensationFailed):
            compensations[event.stage_id] = (
                "completed" if isinstance(event, CompensationCompleted) else "failed"
            )
        elif isinstance(event, WorkflowRolledBack):
            status, ended, reopened = "rolled_back", event.at, False
        elif isinstance(event, StageCompleted):
            steps.append({
                "stage_id": event.stage_id, "attempt": event.attempt,
                "completed_at": event.at.isoformat(), "duration_ms": event.duration_ms,
                "output": event.output,
            })
        elif isinstance(event, WorkflowCompleted):
            status, ended = "completed", event.at
        elif isinstance(event, WorkflowFailed):
            status, ended, error = "failed", event.at, event.error_message
    last = rest[-1]
    if compensations:
        merged = await conn.fetchval(
            "SELECT COALESCE(audit_context->'compensations', '{}'::jsonb) FROM "
            "workflow_executions WHERE id = $1::uuid", last.execution_id)
        audit["compensations"] = {**(merged or {}), **compensations}
    await conn.execute(
        _UPDATE, last.execution_id, status, current, steps, error, ended, last.seq, last.at,
        reopened and ended is None, breakers, audit,
    )


class WorkflowStatus(BaseModel):
    """What ``get_workflow_status`` returns: the ``workflow_executions`` row."""

    model_config = ConfigDict(frozen=True)

    execution_id: str
    workflow_id: str
    workflow_version: int | None
    status: str
    current_stage: str | None
    context: dict[str, Any]
    error_message: str | None
    started_at: datetime | None
    completed_at: datetime | None
    created_by: str
    last_seq: int
    circuit_breaker_state: dict[str, Any] | None = None
    audit_context: dict[str, Any] | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def executed_steps(self) -> list[dict[str, Any]]:
        steps = self.context.get("executed_steps", [])
        return steps if isinstance(steps, list) else []


async def fetch_status(conn: DBReader, execution_id: str) -> WorkflowStatus:
    eid = parse_execution_id(execution_id)
    row = await conn.fetchrow("SELECT * FROM workflow_executions WHERE id = $1::uuid", eid)
    if row is None:
        raise ExecutionNotFoundError(execution_id)
    return WorkflowStatus(
        execution_id=str(row["id"]),
        workflow_id=row["workflow_definition_id"],
        workflow_version=row["workflow_version"],
        status=row["status"],
        current_stage=row["current_stage"],
        context=row["context"] or {},
        error_message=row["error_message"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        created_by=row["created_by"],
        last_seq=row["last_seq"],
        circuit_breaker_state=row["circuit_breaker_state"],
        audit_context=row["audit_context"],
    )
