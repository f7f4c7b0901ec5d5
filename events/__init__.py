"""The facts: event models, the pure fold and decision, and the PostgreSQL event store."""

from events.database import (
    connect_pool,
    embedded_database_url,
    redact_url,
    resolve_database_url,
    wfdag_home,
)
from events.decide import Readiness, attempt_events, decide, readiness, upstream_outputs
from events.migrations import migrate
from events.models import (
    TERMINAL_EVENT_TYPES,
    Event,
    StageAttempt,
    StageCancelled,
    StageCompleted,
    StageFailed,
    StageSkipped,
    StageStarted,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowInitiated,
    event_from_row,
    event_to_row,
)
from events.state import ExecutionState, ExecutionStatus, StageState, StageStatus, apply, fold
from events.store import (
    NOTIFY_CHANNEL,
    EventStore,
    Projector,
    execution_lock_key,
    lease_is_free,
    parse_execution_id,
)

__all__ = [
    "NOTIFY_CHANNEL",
    "TERMINAL_EVENT_TYPES",
    "Event",
    "EventStore",
    "ExecutionState",
    "ExecutionStatus",
    "Projector",
    "Readiness",
    "StageAttempt",
    "StageCancelled",
    "StageCompleted",
    "StageFailed",
    "StageSkipped",
    "StageStarted",
    "StageState",
    "StageStatus",
    "WorkflowCompleted",
    "WorkflowFailed",
    "WorkflowInitiated",
    "apply",
    "attempt_events",
    "connect_pool",
    "decide",
    "embedded_database_url",
    "event_from_row",
    "event_to_row",
    "execution_lock_key",
    "fold",
    "lease_is_free",
    "migrate",
    "parse_execution_id",
    "readiness",
    "redact_url",
    "resolve_database_url",
    "upstream_outputs",
    "wfdag_home",
]
