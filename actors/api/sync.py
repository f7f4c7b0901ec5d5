"""The blocking ``*_sync`` twins of the async API, for plain scripts."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from actors.api.admin import (
    get_workflow_circuit_breaker_status,
    initialize_workflow_system,
    list_circuit_breakers,
    register_workflow,
    reset_workflow_circuit_breaker,
)
from actors.api.evidence import (
    export_execution,
    import_execution,
    rebuild_projections,
    verify_execution,
    verify_log,
)
from actors.api.executions import (
    cancel_workflow,
    execute_workflow_dag,
    retry_failed_workflow,
    rollback_workflow,
)
from actors.api.queries import (
    get_execution_events,
    get_stage_output,
    get_workflow,
    get_workflow_metrics,
    get_workflow_status,
    list_executions,
    list_workflows,
    replay_execution,
    wait_for_workflow,
)
from actors.api.schedules import (
    create_schedule,
    delete_schedule,
    get_schedule,
    get_schedule_history,
    list_schedules,
    pause_schedule,
    resume_schedule,
    trigger_schedule,
)
from actors.api.waiting import approve_stage, reject_stage, send_signal
from actors.runtime import run_sync

__all__ = [
    "approve_stage_sync",
    "cancel_workflow_sync",
    "create_schedule_sync",
    "delete_schedule_sync",
    "execute_workflow_dag_sync",
    "export_execution_sync",
    "get_execution_events_sync",
    "get_schedule_history_sync",
    "get_schedule_sync",
    "get_stage_output_sync",
    "get_workflow_circuit_breaker_status_sync",
    "get_workflow_metrics_sync",
    "get_workflow_status_sync",
    "get_workflow_sync",
    "import_execution_sync",
    "initialize_workflow_system_sync",
    "list_circuit_breakers_sync",
    "list_executions_sync",
    "list_schedules_sync",
    "list_workflows_sync",
    "pause_schedule_sync",
    "rebuild_projections_sync",
    "register_workflow_sync",
    "reject_stage_sync",
    "replay_execution_sync",
    "reset_workflow_circuit_breaker_sync",
    "resume_schedule_sync",
    "retry_failed_workflow_sync",
    "rollback_workflow_sync",
    "send_signal_sync",
    "trigger_schedule_sync",
    "verify_execution_sync",
    "verify_log_sync",
    "wait_for_workflow_sync",
]

P = ParamSpec("P")
T = TypeVar("T")


def _twin(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    def blocking(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(fn(*args, **kwargs))

    blocking.__name__ = f"{fn.__name__}_sync"
    blocking.__doc__ = f"Blocking twin of :func:`{fn.__name__}` (same arguments).\n\n{fn.__doc__}"
    return blocking


initialize_workflow_system_sync = _twin(initialize_workflow_system)
rollback_workflow_sync = _twin(rollback_workflow)
retry_failed_workflow_sync = _twin(retry_failed_workflow)
get_workflow_circuit_breaker_status_sync = _twin(get_workflow_circuit_breaker_status)
get_workflow_metrics_sync = _twin(get_workflow_metrics)
rebuild_projections_sync = _twin(rebuild_projections)
replay_execution_sync = _twin(replay_execution)
import_execution_sync = _twin(import_execution)
export_execution_sync = _twin(export_execution)
reset_workflow_circuit_breaker_sync = _twin(reset_workflow_circuit_breaker)
list_circuit_breakers_sync = _twin(list_circuit_breakers)
register_workflow_sync = _twin(register_workflow)
execute_workflow_dag_sync = _twin(execute_workflow_dag)
get_workflow_status_sync = _twin(get_workflow_status)
get_execution_events_sync = _twin(get_execution_events)
wait_for_workflow_sync = _twin(wait_for_workflow)
list_workflows_sync = _twin(list_workflows)
list_executions_sync = _twin(list_executions)
cancel_workflow_sync = _twin(cancel_workflow)
approve_stage_sync = _twin(approve_stage)
reject_stage_sync = _twin(reject_stage)
send_signal_sync = _twin(send_signal)
get_workflow_sync = _twin(get_workflow)
create_schedule_sync = _twin(create_schedule)
list_schedules_sync = _twin(list_schedules)
get_schedule_sync = _twin(get_schedule)
get_schedule_history_sync = _twin(get_schedule_history)
pause_schedule_sync = _twin(pause_schedule)
resume_schedule_sync = _twin(resume_schedule)
delete_schedule_sync = _twin(delete_schedule)
trigger_schedule_sync = _twin(trigger_schedule)
get_stage_output_sync = _twin(get_stage_output)
verify_execution_sync = _twin(verify_execution)
verify_log_sync = _twin(verify_log)
