"""Read models derived from the event log, and replay of it."""

from projections.executions import (
    TERMINAL_STATUSES,
    ExecutionsProjector,
    WorkflowStatus,
    execution_row,
    fetch_status,
    project_executions,
)
from projections.listing import (
    EXECUTION_STATUSES,
    ExecutionPage,
    activity,
    has_executions,
    list_executions,
)
from projections.metrics import MetricsProjection, apply_metrics, workflow_metrics
from projections.replay import ExecutionSnapshot, snapshot
from projections.runner import PROJECTIONS, Projection, ProjectionRunner, rebuild_projections

__all__ = [
    "EXECUTION_STATUSES",
    "PROJECTIONS",
    "TERMINAL_STATUSES",
    "ExecutionPage",
    "ExecutionSnapshot",
    "ExecutionsProjector",
    "MetricsProjection",
    "Projection",
    "ProjectionRunner",
    "WorkflowStatus",
    "activity",
    "apply_metrics",
    "execution_row",
    "fetch_status",
    "has_executions",
    "list_executions",
    "project_executions",
    "rebuild_projections",
    "snapshot",
    "workflow_metrics",
]
