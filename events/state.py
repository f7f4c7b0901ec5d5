"""The pure fold: an execution's state from its events.  No Ray, no asyncpg, no clock."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from definitions import WorkflowDAG
from events.models import (
    REQUEST_EVENT_TYPES,
    CancelRequested,
    ChildWorkflowEnded,
    CompensationAttempt,
    CompensationCompleted,
    CompensationFailed,
    CompensationStarted,
    Event,
    ExecutionImported,
    ExecutionParked,
    RollbackRequested,
    RollbackStarted,
    SignalReceived,
    StageApproved,
    StageAttempt,
    StageCancelled,
    StageCompleted,
    StageDeferred,
    StageFailed,
    StageRejected,
    StageSkipped,
    StageStarted,
    StageWaiting,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowInitiated,
    WorkflowRolledBack,
)

__all__ = [
    "ExecutionState",
    "ExecutionStatus",
    "StageState",
    "StageStatus",
    "apply",
    "fold",
]

ExecutionStatus = Literal[
    "initiated", "in_progress", "waiting", "compensating", "completed", "failed",
    "rolled_back", "cancelled",
]
StageStatus = Literal["pending", "running", "completed", "failed", "skipped", "cancelled"]
CompensationStatus = Literal["running", "completed", "failed"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "rolled_back",
                                               "cancelled"})
SETTLED_STAGE: frozenset[str] = frozenset({"completed", "skipped", "failed", "cancelled"})


@dataclass(slots=True)
class StageState:
    status: StageStatus = "pending"
    attempts: int = 0
    """Attempts that have ended (an attempt cut short by a crash is not counted)."""
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    retry_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: int | None = None
    completed_attempt: int | None = None
    breaker: dict[str, Any] | None = None
    compensation: CompensationStatus | None = None
    comp_attempts: int = 0
    comp_retry_at: datetime | None = None
    comp_error: dict[str, Any] | None = None
    comp_output: dict[str, Any] | None = None
    waiting: str | None = None
    """approval, signal or timer: what a waiting stage waits for (from ``stage_waiting``)."""
    wake_at: datetime | None = None
    """A timer's wake time; an approval's or signal's deadline."""
    approval: dict[str, Any] | None = None
    rejection: dict[str, Any] | None = None
    child_execution_id: str | None = None
    """A ``workflow`` stage's child execution."""
    child_status: str | None = None
    """How its child last ended (from ``child_workflow_ended``): completed, failed, …"""
    child_outputs: dict[str, Any] | None = None
    child_error: str | None = None
    deferred_since: datetime | None = None
    """When its breaker first refused the attempt that waits now (``stage_deferred``)."""


@dataclass(slots=True)
class ExecutionState:
    execution_id: str
    workflow_id: str = ""
    workflow_version: int = 0
    dag: WorkflowDAG | None = None
    context: dict[str, Any] = field(default_factory=dict)
    #: Set by ``execution_imported``: who imported the log, and whether it may run here.
    imported: dict[str, Any] | None = None
    user_id: str = ""
    retry_of: str | None = None
    parent: tuple[str, str] | None = None
    """A child workflow's parent: (execution id, stage id)."""
    depth: int = 0
    status: ExecutionStatus = "initiated"
    resume_status: ExecutionStatus = "in_progress"
    """While ``waiting``: the status it resumes with (``compensating`` when it parked while
    its rollback waits for a child workflow's)."""
    stages: dict[str, StageState] = field(default_factory=dict)
    completion_order: list[str] = field(default_factory=list)
    current_stage: str | None = None
    error_message: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    rollback_requested_by: str | None = None
    """Set by a rollback request until the rollback it asked for starts."""
    rollback_reason: str | None = None
    rollback_order: list[str] = field(default_factory=list)
    rollback_started_at: datetime | None = None
    cancel_requested_by: str | None = None
    """Set by a cancel request (and kept: the end it leads to says who asked)."""
    cancel_compensate: bool = False
    cancel_reason: str | None = None
    signals: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """Signals received and not yet taken by a signal stage, oldest first."""
    version: int = 0
    """The seq of the last event applied."""

    @property
    def evidence(self) -> bool:
        """Imported from elsewhere and not to be run here (no ``resume`` was asked for)."""
        return self.imported is not None and not self.imported["resume"]

    @property
    def organization_id(self) -> str | None:
        """The organization the execution belongs to (its context's ``organizationId``)."""
        org = self.context.get("organizationId")
        return org if isinstance(org, str) and org else None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def phase(self) -> ExecutionStatus:
        """The status, with a parked execution's the one it resumes with."""
        return self.resume_status if self.status == "waiting" else self.status

    @property
    def completed_stages(self) -> list[str]:
        return list(self.completion_order)

    def stage(self, stage_id: str) -> StageState:
        return self.stages[stage_id]

    def stages_in(self, *statuses: StageStatus) -> list[str]:
        return [sid for sid, st in self.stages.items() if st.status in statuses]

    @property
    def compensated_stages(self) -> list[str]:
        return [s for s in self.rollback_order if self.stages[s].compensation == "completed"]

    def require_dag(self) -> WorkflowDAG:
        if self.dag is None:
            raise ValueError(f"execution {self.execution_id} has no workflow_initiated event")
        return self.dag


def apply(state: ExecutionState, event: Event) -> ExecutionState:
    """Apply one event to ``state`` (which the fold owns and updates in place) and return it.

    Events must come in stream order: ``event.seq == state.version + 1``.
    """
    if event.seq != state.version + 1:
        raise ValueError(
            f"event seq {event.seq} does not follow version {state.version} "
            f"of execution {state.execution_id}"
        )
    state.version = event.seq
    if (state.status == "waiting" and event.type not in REQUEST_EVENT_TYPES
            and not isinstance(event, ExecutionParked | ExecutionImported)):
        state.status = state.resume_status  # a runner took it up again
    if isinstance(event, WorkflowInitiated):
        dag = WorkflowDAG.model_validate(event.dag)
        state.dag = dag
        state.workflow_id = event.workflow_id
        state.workflow_version = event.workflow_version
        state.context = event.context
        state.user_id = event.user_id
        state.retry_of = event.retry_of
        if event.parent_execution_id is not None:
            state.parent = (event.parent_execution_id, event.parent_stage_id or "")
        state.depth = event.depth
        state.started_at = event.at
        state.stages = {stage.id: StageState() for stage in dag.stages}
        return state
    stage = state.stages.get(event.stage_id) if event.stage_id is not None else None
    if isinstance(event, StageStarted):
        assert stage is not None
        stage.status = "running"
        stage.started_at = event.at
        state.status = "in_progress"
        state.current_stage = event.stage_id
    elif isinstance(event, StageDeferred):
        assert stage is not None
        stage.retry_at = event.retry_at
        stage.breaker = event.breaker or stage.breaker
        stage.deferred_since = stage.deferred_since or event.at
    elif isinstance(event, StageAttempt):
        assert stage is not None
        stage.attempts = max(stage.attempts, event.attempt)
        stage.deferred_since = None
        if event.breaker is not None:
            stage.breaker = event.breaker
        if event.outcome == "failed":
            stage.error = event.error
            stage.retry_at = event.retry_at
    elif isinstance(event, StageCompleted):
        assert stage is not None
        stage.status = "completed"
        stage.output = event.output
        stage.error = None
        stage.retry_at = None
        stage.ended_at = event.at
        stage.duration_ms = event.duration_ms
        stage.completed_attempt = event.attempt
        stage.wake_at = None
        state.completion_order.append(event.stage_id)
        name = state.require_dag().stage(event.stage_id).signal
        if name is not None:  # a signal stage took the oldest signal of its name
            for i, (received, _) in enumerate(state.signals):
                if received == name:
                    del state.signals[i]
                    break
    elif isinstance(event, StageFailed):
        assert stage is not None
        stage.status = "failed"
        stage.error = event.error
        stage.retry_at = None
        stage.wake_at = None
        stage.ended_at = event.at
    elif isinstance(event, StageSkipped):
        assert stage is not None
        stage.status = "skipped"
        stage.ended_at = event.at
    elif isinstance(event, StageCancelled):
        assert stage is not None
        stage.status = "cancelled"
        stage.retry_at = None
        stage.wake_at = None
        stage.ended_at = event.at
    elif isinstance(event, RollbackRequested):
        state.status = "compensating"
        state.rollback_requested_by = event.user_id
        state.completed_at = None
    elif isinstance(event, StageWaiting):
        assert stage is not None
        stage.waiting = event.waiting_for
        stage.wake_at = event.until
        if event.child_execution_id is not None:
            stage.child_execution_id = event.child_execution_id
    elif isinstance(event, ChildWorkflowEnded):
        assert stage is not None
        stage.child_status = event.status
        stage.child_outputs = dict(event.outputs)
        stage.child_error = event.error_message
    elif isinstance(event, StageApproved):
        assert stage is not None
        stage.approval = {"approved": True, "by": event.user_id, "comment": event.comment,
                          "data": event.data}
    elif isinstance(event, StageRejected):
        assert stage is not None
        stage.rejection = {"by": event.user_id, "reason": event.reason}
    elif isinstance(event, SignalReceived):
        state.signals.append((event.name, dict(event.payload)))
    elif isinstance(event, ExecutionImported):
        state.imported = {"by": event.user_id, "organization_id": event.organization_id,
                          "resume": event.resume, "definition": event.definition,
                          "events": event.events}
    elif isinstance(event, ExecutionParked):
        if state.status != "waiting":
            state.resume_status = state.status
        state.status = "waiting"
    elif isinstance(event, CancelRequested):
        if state.cancel_requested_by is None:  # the first request stands; others are no-ops
            state.cancel_requested_by = event.user_id
            state.cancel_compensate = event.compensate
            state.cancel_reason = event.reason
    elif isinstance(event, RollbackStarted):
        state.status = "compensating"
        state.rollback_requested_by = None
        state.rollback_reason = event.reason
        state.rollback_order = list(event.order)
        state.rollback_started_at = event.at
        if event.error_message is not None:
            state.error_message = event.error_message
        for sid in event.order:
            undo = state.stages[sid]
            if undo.compensation != "completed":  # a new round retries failed handlers
                undo.compensation = None
                undo.comp_attempts = 0
                undo.comp_retry_at = None
                undo.comp_error = None
    elif isinstance(event, CompensationStarted):
        assert stage is not None
        stage.compensation = "running"
        if stage.child_execution_id is not None:
            stage.child_status = None  # its child's rollback is what it waits for now
    elif isinstance(event, CompensationAttempt):
        assert stage is not None
        stage.comp_attempts = max(stage.comp_attempts, event.attempt)
        if event.outcome == "failed":
            stage.comp_error = event.error
            stage.comp_retry_at = event.retry_at
    elif isinstance(event, CompensationCompleted):
        assert stage is not None
        stage.compensation = "completed"
        stage.comp_output = event.output
        stage.comp_retry_at = None
        stage.comp_error = None
    elif isinstance(event, CompensationFailed):
        assert stage is not None
        stage.compensation = "failed"
        stage.comp_error = event.error
        stage.comp_retry_at = None
    elif isinstance(event, WorkflowRolledBack):
        state.status = "rolled_back"
        state.completed_at = event.at
    elif isinstance(event, WorkflowCancelled):
        state.status = "cancelled"
        state.completed_at = event.at
    elif isinstance(event, WorkflowCompleted):
        state.status = "completed"
        state.completed_at = event.at
    elif isinstance(event, WorkflowFailed):
        state.status = "failed"
        state.error_message = event.error_message
        state.completed_at = event.at
    return state


def fold(events: Iterable[Event], state: ExecutionState | None = None) -> ExecutionState:
    """The state after ``events``; continue from ``state`` when given."""
    current = state
    for event in events:
        if current is None:
            current = ExecutionState(execution_id=event.execution_id)
        apply(current, event)
    if current is None:
        raise ValueError("fold of no events: an execution starts with workflow_initiated")
    return current
