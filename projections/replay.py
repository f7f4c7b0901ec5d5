"""Replay: an execution's state folded from its log, up to any event, as a readable model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from events import ExecutionState

__all__ = ["ExecutionSnapshot", "snapshot"]


class ExecutionSnapshot(BaseModel):
    """What ``replay_execution`` returns: the state after event ``last_seq``."""

    model_config = ConfigDict(frozen=True)

    execution_id: str
    workflow_id: str
    workflow_version: int
    status: str
    last_seq: int
    current_stage: str | None
    completed_stages: list[str]
    running_stages: list[str]
    failed_stages: list[str]
    skipped_stages: list[str]
    cancelled_stages: list[str]
    compensated_stages: list[str]
    attempts: dict[str, int]
    stage_status: dict[str, str]
    error_message: str | None
    started_at: datetime | None
    completed_at: datetime | None
    outputs: dict[str, dict[str, Any]]


def snapshot(state: ExecutionState) -> ExecutionSnapshot:
    return ExecutionSnapshot(
        execution_id=state.execution_id,
        workflow_id=state.workflow_id,
        workflow_version=state.workflow_version,
        status=state.status,
        last_seq=state.version,
        current_stage=state.current_stage,
        completed_stages=state.completed_stages,
        running_stages=state.stages_in("running"),
        failed_stages=state.stages_in("failed"),
        skipped_stages=state.stages_in("skipped"),
        cancelled_stages=state.stages_in("cancelled"),
        compensated_stages=[s for s, st in state.stages.items() if st.compensation == "completed"],
        attempts={s: st.attempts for s, st in state.stages.items()},
        stage_status={s: st.status for s, st in state.stages.items()},
        error_message=state.error_message,
        started_at=state.started_at,
        completed_at=state.completed_at,
        outputs={s: st.output for s, st in state.stages.items() if st.output is not None},
    )
