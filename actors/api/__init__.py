"""The public API.  Async functions, each with a blocking ``*_sync`` twin for plain scripts.

    from actors import execute_workflow_dag_sync, wait_for_workflow_sync
    eid = execute_workflow_dag_sync("complete-value-lifecycle-v1",
                                    {"userId": "u", "organizationId": "o", "projectId": "p"},
                                    "user-123")
    print(wait_for_workflow_sync(eid, timeout=300).status)

Grouped: :mod:`~actors.api.executions` (start, roll back, retry — the calls that need
runners), :mod:`~actors.api.queries` (status, the log, waiting, replay, metrics, definitions —
PostgreSQL only, no Ray), :mod:`~actors.api.admin` (set-up and recovery, registration, breakers,
read models, import), :mod:`~actors.api.sync` (the twins).
"""

from actors.api.admin import (
    execution_actor,
    get_execution_runner,
    get_workflow_circuit_breaker_status,
    import_execution,
    initialize_workflow_system,
    list_circuit_breakers,
    rebuild_projections,
    recover_executions,
    register_workflow,
    reset_workflow_circuit_breaker,
)
from actors.api.common import ready_store
from actors.api.executions import (
    cancel_workflow,
    check_start,
    execute_workflow_dag,
    retry_failed_workflow,
    rollback_workflow,
)
from actors.api.queries import (
    get_available_workflows,
    get_execution_events,
    get_workflow,
    get_workflow_metrics,
    get_workflow_status,
    list_executions,
    list_workflows,
    replay_execution,
    replay_history,
    wait_for_workflow,
    watch_execution,
)
from actors.api.sync import (
    approve_stage_sync,
    cancel_workflow_sync,
    execute_workflow_dag_sync,
    get_execution_events_sync,
    get_workflow_circuit_breaker_status_sync,
    get_workflow_metrics_sync,
    get_workflow_status_sync,
    get_workflow_sync,
    import_execution_sync,
    initialize_workflow_system_sync,
    list_circuit_breakers_sync,
    list_executions_sync,
    list_workflows_sync,
    rebuild_projections_sync,
    register_workflow_sync,
    reject_stage_sync,
    replay_execution_sync,
    reset_workflow_circuit_breaker_sync,
    retry_failed_workflow_sync,
    rollback_workflow_sync,
    send_signal_sync,
    wait_for_workflow_sync,
)
from actors.api.waiting import approve_stage, reject_stage, send_signal
from actors.breakers import BreakerStatus
from definitions import WaitTimeoutError
from projections import ExecutionPage, ExecutionSnapshot, WorkflowStatus

#: The store with migrations applied (earlier name, kept for scripts that used it).
_ready_store = ready_store

__all__ = [
    "BreakerStatus",
    "ExecutionPage",
    "ExecutionSnapshot",
    "WaitTimeoutError",
    "WorkflowStatus",
    "approve_stage",
    "approve_stage_sync",
    "cancel_workflow",
    "cancel_workflow_sync",
    "check_start",
    "execute_workflow_dag",
    "execute_workflow_dag_sync",
    "execution_actor",
    "get_available_workflows",
    "get_execution_events",
    "get_execution_events_sync",
    "get_execution_runner",
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
    "list_workflows",
    "list_workflows_sync",
    "ready_store",
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
    "retry_failed_workflow",
    "retry_failed_workflow_sync",
    "rollback_workflow",
    "rollback_workflow_sync",
    "send_signal",
    "send_signal_sync",
    "wait_for_workflow",
    "wait_for_workflow_sync",
    "watch_execution",
]
