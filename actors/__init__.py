"""The Ray runtime of wfdag and its public API.

Async API (each has a blocking ``*_sync`` twin): ``initialize_workflow_system``,
``register_workflow``, ``execute_workflow_dag``, ``get_workflow_status``, ``wait_for_workflow``,
``get_execution_events``.  Synchronous: ``get_available_workflows``, ``execution_actor``.
"""

from actors.agents import StageContext
from actors.api import (
    WaitTimeoutError,
    execute_workflow_dag,
    execute_workflow_dag_sync,
    execution_actor,
    get_available_workflows,
    get_execution_events,
    get_execution_events_sync,
    get_workflow_status,
    get_workflow_status_sync,
    initialize_workflow_system,
    initialize_workflow_system_sync,
    register_workflow,
    register_workflow_sync,
    wait_for_workflow,
    wait_for_workflow_sync,
    watch_execution,
)
from actors.execution import ExecutionActor
from projections import WorkflowStatus

__all__ = [
    "ExecutionActor",
    "StageContext",
    "WaitTimeoutError",
    "WorkflowStatus",
    "execute_workflow_dag",
    "execute_workflow_dag_sync",
    "execution_actor",
    "get_available_workflows",
    "get_execution_events",
    "get_execution_events_sync",
    "get_workflow_status",
    "get_workflow_status_sync",
    "initialize_workflow_system",
    "initialize_workflow_system_sync",
    "register_workflow",
    "register_workflow_sync",
    "wait_for_workflow",
    "wait_for_workflow_sync",
    "watch_execution",
]
