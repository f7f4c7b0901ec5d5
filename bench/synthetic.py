"""Synthetic event logs for the benchmarks: valid logs written straight into the store (data
for a measurement, not work done by the runners)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from definitions import WorkflowDAG

REPLAY_WORKFLOW = "bench-replay-v1"


def chain_definition(stages: int, workflow_id: str = REPLAY_WORKFLOW) -> dict[str, Any]:
    """A chain of ``stages`` no-op stages that may each be attempted 100 times."""
    ids = [f"st{i}" for i in range(stages)]
    return WorkflowDAG.model_validate({
        "id": workflow_id, "name": "replay", "version": 1, "initial_stage": ids[0],
        "final_stages": [ids[-1]],
        "stages": [{"id": s, "name": s, "agent": "actors.agents.builtin:noop",
                    "timeout_seconds": 30,
                    "retry_config": {"max_attempts": 100, "initial_delay_ms": 0,
                                     "max_delay_ms": 0}} for s in ids],
        "transitions": [{"from_stage": a, "to_stage": b} for a, b in itertools.pairwise(ids)],
    }).model_dump(mode="json")


def synthetic_log(eid: str, events_wanted: int, *, stages: int = 500, finish: bool = True,
                  workflow_id: str = REPLAY_WORKFLOW) -> list[Any]:
    """A valid log of about ``events_wanted`` events: a ``stages``-stage chain whose stages each
    fail a number of attempts before they succeed.  ``finish=False``: the last stage has not
    started yet and the execution is running (a runner that adopts it dispatches that stage)."""
    from events import (
        StageAttempt,
        StageCompleted,
        StageStarted,
        WorkflowCompleted,
        WorkflowInitiated,
    )

    done = stages if finish else stages - 1
    per_stage = max(3, events_wanted // max(1, done))
    failures = min(per_stage - 3, 98)
    dag = chain_definition(stages, workflow_id)
    t0 = datetime.now(UTC) - timedelta(hours=1) if not finish else datetime(2026, 1, 1, tzinfo=UTC)
    out: list[Any] = [WorkflowInitiated(execution_id=eid, seq=1, at=t0,
                                        workflow_id=workflow_id, workflow_version=1,
                                        dag=dag, context={}, user_id="bench")]

    def nxt() -> tuple[int, datetime]:
        return len(out) + 1, t0 + timedelta(milliseconds=len(out))

    error = {"type": "ConnectionError", "message": "reset", "retryable": True,
             "status_code": None}
    for sid in [f"st{i}" for i in range(done)]:
        seq, at = nxt()
        out.append(StageStarted(execution_id=eid, seq=seq, at=at, stage_id=sid))
        for attempt in range(1, failures + 1):
            seq, at = nxt()
            out.append(StageAttempt(execution_id=eid, seq=seq, at=at, stage_id=sid,
                                    attempt=attempt, outcome="failed", duration_ms=1,
                                    error=error, retry_delay_ms=0, retry_at=at))
        seq, at = nxt()
        out.append(StageAttempt(execution_id=eid, seq=seq, at=at, stage_id=sid,
                                attempt=failures + 1, outcome="succeeded", duration_ms=1))
        seq, at = nxt()
        out.append(StageCompleted(execution_id=eid, seq=seq, at=at, stage_id=sid,
                                  attempt=failures + 1, output={"n": seq}, duration_ms=1))
    if finish:
        seq, at = nxt()
        out.append(WorkflowCompleted(execution_id=eid, seq=seq, at=at, duration_ms=len(out)))
    return out


async def append_log(store: Any, events: list[Any], chunk: int = 1000) -> None:
    """Write a synthetic log through the store (its projections see it as any log)."""
    for i in range(0, len(events), chunk):
        part = events[i:i + chunk]
        await store.append(part, expected_version=part[0].seq - 1)
