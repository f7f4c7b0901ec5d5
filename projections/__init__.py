"""Read models derived from the event log."""

from projections.executions import (
    TERMINAL_STATUSES,
    WorkflowStatus,
    fetch_status,
    project_executions,
)

__all__ = ["TERMINAL_STATUSES", "WorkflowStatus", "fetch_status", "project_executions"]
