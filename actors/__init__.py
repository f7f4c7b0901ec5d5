"""The Ray runtime of wfdag and its public API.

Async API (each has a blocking ``*_sync`` twin): ``initialize_workflow_system``,
``register_workflow``, ``execute_workflow_dag``, ``get_workflow_status``, ``wait_for_workflow``,
``get_execution_events``.  Synchronous: ``get_available_workflows``, ``execution_actor``.

Every name is imported on first use (PEP 562): ``import actors`` alone imports neither Ray nor
the store, so that a command that needs neither (``wfdag status`` with the service up) starts
at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.agents import StageContext
    from actors.api import (
        BreakerStatus,
        ExecutionPage,
        ExecutionSnapshot,
        Schedule,
        WaitTimeoutError,
        approve_stage,
        approve_stage_sync,
        cancel_workflow,
        cancel_workflow_sync,
        create_schedule,
        create_schedule_sync,
        delete_schedule,
        delete_schedule_sync,
        execute_workflow_dag,
        execute_workflow_dag_sync,
        execution_actor,
        export_execution,
        export_execution_sync,
        get_available_workflows,
        get_execution_events,
        get_execution_events_sync,
        get_schedule,
        get_schedule_history,
        get_schedule_history_sync,
        get_schedule_sync,
        get_stage_output,
        get_stage_output_sync,
        get_workflow,
        get_workflow_circuit_breaker_status,
        get_workflow_circuit_breaker_status_sync,
        get_workflow_metrics,
        get_workflow_metrics_sync,
        get_workflow_status,
        get_workflow_status_sync,
        get_workflow_sync,
        import_execution,
        import_execution_sync,
        initialize_workflow_system,
        initialize_workflow_system_sync,
        list_circuit_breakers,
        list_circuit_breakers_sync,
        list_executions,
        list_executions_sync,
        list_schedules,
        list_schedules_sync,
        list_workflows,
        list_workflows_sync,
        pause_schedule,
        pause_schedule_sync,
        rebuild_projections,
        rebuild_projections_sync,
        recover_executions,
        register_workflow,
        register_workflow_sync,
        reject_stage,
        reject_stage_sync,
        replay_execution,
        replay_execution_sync,
        replay_history,
        reset_workflow_circuit_breaker,
        reset_workflow_circuit_breaker_sync,
        resume_schedule,
        resume_schedule_sync,
        retry_failed_workflow,
        retry_failed_workflow_sync,
        rollback_workflow,
        rollback_workflow_sync,
        send_signal,
        send_signal_sync,
        trigger_schedule,
        trigger_schedule_sync,
        verify_execution,
        verify_execution_sync,
        verify_log,
        verify_log_sync,
        wait_for_workflow,
        wait_for_workflow_sync,
        watch_execution,
    )
    from actors.runner import ExecutionActor
    from projections import WorkflowStatus

__all__ = [
    "BreakerStatus",
    "ExecutionActor",
    "ExecutionPage",
    "ExecutionSnapshot",
    "Schedule",
    "StageContext",
    "WaitTimeoutError",
    "WorkflowStatus",
    "approve_stage",
    "approve_stage_sync",
    "cancel_workflow",
    "cancel_workflow_sync",
    "create_schedule",
    "create_schedule_sync",
    "delete_schedule",
    "delete_schedule_sync",
    "execute_workflow_dag",
    "execute_workflow_dag_sync",
    "execution_actor",
    "export_execution",
    "export_execution_sync",
    "get_available_workflows",
    "get_execution_events",
    "get_execution_events_sync",
    "get_schedule",
    "get_schedule_history",
    "get_schedule_history_sync",
    "get_schedule_sync",
    "get_stage_output",
    "get_stage_output_sync",
    "get_workflow",
    "get_workflow_circuit_breaker_status",
    "get_workflow_circuit_breaker_status_sync",
    "get_workflow_metrics",
    "get_workflow_metrics_sync",
    "get_workflow_status",
    "get_workflow_status_sync",
    "get_workflow_sync",
    "import_execution",
    "import_execution_sync",
    "initialize_workflow_system",
    "initialize_workflow_system_sync",
    "list_circuit_breakers",
    "list_circuit_breakers_sync",
    "list_executions",
    "list_executions_sync",
    "list_schedules",
    "list_schedules_sync",
    "list_workflows",
    "list_workflows_sync",
    "pause_schedule",
    "pause_schedule_sync",
    "rebuild_projections",
    "rebuild_projections_sync",
    "recover_executions",
    "register_workflow",
    "register_workflow_sync",
    "reject_stage",
    "reject_stage_sync",
    "replay_execution",
    "replay_execution_sync",
    "replay_history",
    "reset_workflow_circuit_breaker",
    "reset_workflow_circuit_breaker_sync",
    "resume_schedule",
    "resume_schedule_sync",
    "retry_failed_workflow",
    "retry_failed_workflow_sync",
    "rollback_workflow",
    "rollback_workflow_sync",
    "send_signal",
    "send_signal_sync",
    "trigger_schedule",
    "trigger_schedule_sync",
    "verify_execution",
    "verify_execution_sync",
    "verify_log",
    "verify_log_sync",
    "wait_for_workflow",
    "wait_for_workflow_sync",
    "watch_execution",
]

#: Where each name lives; the rest are in :mod:`actors.api`.
_HOMES = {"StageContext": "actors.agents", "ExecutionActor": "actors.runner",
          "WorkflowStatus": "projections"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        try:  # a subpackage (``actors.api``) that was not imported yet
            return importlib.import_module(f"actors.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module 'actors' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(_HOMES.get(name, "actors.api")), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
