"""The facts: frozen, past-tense events in one envelope, one discriminated union.

In the database an event is a row of ``workflow_events``: ``event_type`` is ``type``,
``stage_id`` is ``stage_id``, ``created_at`` is ``at``, and every other field is in
``metadata``.  Anything random or time-dependent (a jittered delay, an error, a deadline) is a
field of the event, so replay never recomputes it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "REQUEST_EVENT_TYPES",
    "TERMINAL_EVENT_TYPES",
    "CancelRequested",
    "ChildWorkflowEnded",
    "CompensationAttempt",
    "CompensationCompleted",
    "CompensationFailed",
    "CompensationStarted",
    "Event",
    "ExecutionImported",
    "ExecutionParked",
    "RollbackRequested",
    "RollbackStarted",
    "SignalReceived",
    "StageApproved",
    "StageAttempt",
    "StageCancelled",
    "StageCompleted",
    "StageDeferred",
    "StageFailed",
    "StageRejected",
    "StageSkipped",
    "StageStarted",
    "StageWaiting",
    "WorkflowCancelled",
    "WorkflowCompleted",
    "WorkflowFailed",
    "WorkflowInitiated",
    "WorkflowRolledBack",
]


class _EventBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    execution_id: str
    seq: int = Field(ge=1)
    at: datetime
    stage_id: str | None = None


class WorkflowInitiated(_EventBase):
    """An execution was accepted: the definition it runs (a snapshot) and its input."""

    type: Literal["workflow_initiated"] = "workflow_initiated"
    workflow_id: str
    workflow_version: int
    dag: dict[str, Any]
    context: dict[str, Any]
    user_id: str
    retry_of: str | None = None
    idempotency_key: str | None = None
    #: A child workflow's: the execution and the ``workflow`` stage that started it, and how
    #: deep it is nested (a top-level execution is 0).
    parent_execution_id: str | None = None
    parent_stage_id: str | None = None
    depth: int = Field(default=0, ge=0)
    #: Started by a schedule (for its slot ``scheduled_for``).
    schedule_id: str | None = None
    scheduled_for: datetime | None = None


class StageStarted(_EventBase):
    """A stage's predecessors are settled and its first attempt is dispatched."""

    type: Literal["stage_started"] = "stage_started"
    stage_id: str


class _AttemptEnded(_EventBase):
    """One attempt (of a stage's agent, or of its compensation handler) ended: its outcome,
    its error, and (when retried) the delay chosen and the time of the next attempt."""

    stage_id: str
    attempt: int = Field(ge=1)
    outcome: Literal["succeeded", "failed"]
    duration_ms: int = Field(ge=0)
    error: dict[str, Any] | None = None
    retry_delay_ms: int | None = None
    retry_at: datetime | None = None


class _Succeeded(_EventBase):
    stage_id: str
    attempt: int = Field(ge=1)
    output: dict[str, Any]
    duration_ms: int = Field(ge=0)


class _GaveUp(_EventBase):
    """Out of attempts, or a non-retryable error."""

    stage_id: str
    attempts: int = Field(ge=1)
    error: dict[str, Any]


class StageAttempt(_AttemptEnded):
    """``breaker`` is the stage's circuit breaker as this attempt met it (state, failure count,
    and ``transition`` when this attempt's result moved it)."""

    type: Literal["stage_attempt"] = "stage_attempt"
    breaker: dict[str, Any] | None = None


class StageDeferred(_EventBase):
    """The stage's circuit breaker refused an attempt (open, or half-open with its one trial
    out): no attempt is used up; the attempt waits until ``retry_at`` (the breaker's half-open
    time), as long as the stage's ``breaker_wait_seconds`` allow."""

    type: Literal["stage_deferred"] = "stage_deferred"
    stage_id: str
    attempt: int = Field(ge=1)
    retry_at: datetime
    breaker: dict[str, Any] | None = None


class StageCompleted(_Succeeded):
    type: Literal["stage_completed"] = "stage_completed"


class StageFailed(_GaveUp):
    type: Literal["stage_failed"] = "stage_failed"


class StageSkipped(_EventBase):
    type: Literal["stage_skipped"] = "stage_skipped"
    stage_id: str
    reason: str


class StageCancelled(_EventBase):
    """A running stage was cancelled because the workflow failed elsewhere."""

    type: Literal["stage_cancelled"] = "stage_cancelled"
    stage_id: str
    reason: str


class StageWaiting(_EventBase):
    """A waiting stage began to wait: for whom or what, and until when (a timer's wake time,
    or an approval's or signal's deadline) — recorded once, so a restart never restarts the
    clock."""

    type: Literal["stage_waiting"] = "stage_waiting"
    stage_id: str
    waiting_for: Literal["approval", "signal", "timer", "workflow"]
    until: datetime | None = None
    signal: str | None = None
    approvers: list[str] | None = None
    #: A ``workflow`` stage's child execution (its id follows from the parent's and the
    #: stage's: started twice, it is the same child).
    child_execution_id: str | None = None


class ChildWorkflowEnded(_EventBase):
    """A ``workflow`` stage's child execution ended (completed, failed, cancelled or rolled
    back): appended to the parent's log by whoever ended the child, absorbed by the parent's
    runner like a request."""

    type: Literal["child_workflow_ended"] = "child_workflow_ended"
    stage_id: str
    child_execution_id: str
    status: Literal["completed", "failed", "cancelled", "rolled_back"]
    outputs: dict[str, Any] = Field(default_factory=dict)
    error_message: str | None = None


class StageApproved(_EventBase):
    """A person approved an approval stage (appended by the caller, absorbed by the runner)."""

    type: Literal["stage_approved"] = "stage_approved"
    stage_id: str
    user_id: str
    comment: str | None = None
    data: dict[str, Any] | None = None


class StageRejected(_EventBase):
    """A person rejected an approval stage: it fails for good."""

    type: Literal["stage_rejected"] = "stage_rejected"
    stage_id: str
    user_id: str
    reason: str


class SignalReceived(_EventBase):
    """A named signal for the execution, kept until a signal stage of that name takes it."""

    type: Literal["signal_received"] = "signal_received"
    name: str
    payload: dict[str, Any] = Field(default_factory=dict)
    user_id: str


class ExecutionParked(_EventBase):
    """Every stage that could run waits: the runner let the execution go.  An approval, a
    signal, a cancel or ``wake_at`` (the next timer or deadline) puts it back in the queue."""

    type: Literal["execution_parked"] = "execution_parked"
    waiting: list[str]
    wake_at: datetime | None = None


class ExecutionImported(_EventBase):
    """The log before this event was imported from another database (``import_execution``):
    evidence, never driven by a runner here unless ``resume`` (an operator of its organization
    asked for it).  ``definition`` says whether the workflow's definition is ``registered``
    here with the same content, or only ``carried`` in the log's snapshot."""

    type: Literal["execution_imported"] = "execution_imported"
    user_id: str
    organization_id: str | None = None
    resume: bool = False
    definition: Literal["registered", "carried"]
    events: int = Field(ge=1)
    #: The export carried its hash chain and it held (``wfdag events ID --json --chain``).
    chain_verified: bool = False


class RollbackRequested(_EventBase):
    """Someone asked to undo a completed or failed execution."""

    type: Literal["rollback_requested"] = "rollback_requested"
    user_id: str


class CancelRequested(_EventBase):
    """Someone asked to stop an execution that has not ended (appended by the caller, not by
    the runner: the runner that drives it absorbs it, stops what runs, and ends it)."""

    type: Literal["cancel_requested"] = "cancel_requested"
    user_id: str
    compensate: bool = False
    reason: str | None = None


class RollbackStarted(_EventBase):
    """Compensation begins: the stages to undo, in order (reverse order of completion)."""

    type: Literal["rollback_started"] = "rollback_started"
    reason: Literal["workflow_failed", "rollback_requested", "cancel_requested"]
    order: list[str]
    error_message: str | None = None


class CompensationStarted(_EventBase):
    type: Literal["compensation_started"] = "compensation_started"
    stage_id: str
    handler: str


class CompensationAttempt(_AttemptEnded):
    type: Literal["compensation_attempt"] = "compensation_attempt"


class CompensationCompleted(_Succeeded):
    type: Literal["compensation_completed"] = "compensation_completed"


class CompensationFailed(_GaveUp):
    """A handler gave up; what was done by the stage may still be in place."""

    type: Literal["compensation_failed"] = "compensation_failed"


class WorkflowRolledBack(_EventBase):
    type: Literal["workflow_rolled_back"] = "workflow_rolled_back"
    compensated: list[str]
    duration_ms: int = Field(ge=0)


class WorkflowCancelled(_EventBase):
    """The execution was stopped on request: ``cancelled`` lists the stages stopped while they
    ran (or waited for a retry)."""

    type: Literal["workflow_cancelled"] = "workflow_cancelled"
    user_id: str
    reason: str | None = None
    cancelled: list[str] = Field(default_factory=list)
    duration_ms: int = Field(ge=0)


class WorkflowCompleted(_EventBase):
    type: Literal["workflow_completed"] = "workflow_completed"
    duration_ms: int = Field(ge=0)


class WorkflowFailed(_EventBase):
    type: Literal["workflow_failed"] = "workflow_failed"
    error_message: str
    failed_stage: str | None = None
    duration_ms: int = Field(ge=0)
    #: Set when the recovery sweep gave up on an execution that kept crashing its runner.
    dead_lettered: bool = False


Event = Annotated[
    WorkflowInitiated
    | StageStarted
    | StageAttempt
    | StageDeferred
    | StageCompleted
    | StageFailed
    | StageSkipped
    | StageCancelled
    | StageWaiting
    | StageApproved
    | StageRejected
    | SignalReceived
    | ChildWorkflowEnded
    | ExecutionParked
    | ExecutionImported
    | RollbackRequested
    | CancelRequested
    | RollbackStarted
    | CompensationStarted
    | CompensationAttempt
    | CompensationCompleted
    | CompensationFailed
    | WorkflowRolledBack
    | WorkflowCancelled
    | WorkflowCompleted
    | WorkflowFailed,
    Field(discriminator="type"),
]

TERMINAL_EVENT_TYPES = frozenset({"workflow_completed", "workflow_failed", "workflow_rolled_back",
                                  "workflow_cancelled"})
#: Events another writer than the execution's runner may append while the runner drives it:
#: the runner absorbs them (see ``actors.runner.drive``) instead of taking them for a fence.
REQUEST_EVENT_TYPES = frozenset({"cancel_requested", "stage_approved", "stage_rejected",
                                 "signal_received", "child_workflow_ended"})
