"""Every canonical workflow completes from the seed's example context, on real Ray + PG."""

from __future__ import annotations

import asyncio

import pytest

from actors import (
    execute_workflow_dag,
    get_available_workflows,
    get_workflow_status,
    wait_for_workflow,
)
from tests.integration.helpers import assert_gapless, events_of, types_of

pytestmark = pytest.mark.usefixtures("ray_session")

SEED_CONTEXT = {"userId": "user-123", "organizationId": "org-456", "projectId": "project-789"}


async def test_all_seven_canonical_workflows_complete_with_gapless_logs() -> None:
    workflows = get_available_workflows()
    assert len(workflows) == 7
    ids = await asyncio.gather(
        *[execute_workflow_dag(w.id, SEED_CONTEXT, "user-123") for w in workflows])
    for dag, eid in zip(workflows, ids, strict=True):
        status = await wait_for_workflow(eid, timeout=120)
        assert status.status == "completed", (dag.id, status.error_message)
        assert status.workflow_id == dag.id
        assert status.created_by == "user-123"
        assert status.completed_at is not None
        events = await events_of(eid)
        assert_gapless(events)
        assert events[-1].type == "workflow_completed"
        completed = [e.stage_id for e in events if e.type == "stage_completed"]
        skipped = [e.stage_id for e in events if e.type == "stage_skipped"]
        assert sorted(completed + skipped) == sorted(s.id for s in dag.stages)
        assert len(completed) == len(set(completed))
        # One stage_attempt per attempt, and executed_steps has one entry per completed stage.
        assert types_of(events).count("stage_attempt") == len(completed)
        assert [s["stage_id"] for s in status.executed_steps] == completed


@pytest.mark.parametrize(
    ("actuals", "runs"),
    [(None, False), ({"revenue": 600_000, "operating_cost": 700_000, "nps": 12}, True)],
)
async def test_realization_runs_intervention_planning_only_for_large_variance(
    actuals: dict[str, float] | None, runs: bool
) -> None:
    context = dict(SEED_CONTEXT)
    if actuals is not None:
        context["actuals"] = actuals
    eid = await execute_workflow_dag("realization-tracking-v1", context, "user-123")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "completed"
    events = await events_of(eid)
    by_stage = {(e.type, e.stage_id) for e in events}
    analysis = next(e for e in events
                    if e.type == "stage_completed" and e.stage_id == "performance_analysis")
    variance = analysis.output["max_abs_variance_pct"]  # type: ignore[union-attr]
    if runs:
        assert variance > 10
        assert ("stage_completed", "intervention_planning") in by_stage
        assert ("stage_skipped", "intervention_planning") not in by_stage
    else:
        assert variance <= 10
        assert ("stage_skipped", "intervention_planning") in by_stage
        assert ("stage_started", "intervention_planning") not in by_stage
    assert (await get_workflow_status(eid)).status == "completed"


async def test_parallel_lifecycle_integrity_signs_prior_outputs() -> None:
    eid = await execute_workflow_dag("complete-value-lifecycle-v1", SEED_CONTEXT, "user-123")
    await wait_for_workflow(eid, timeout=60)
    events = await events_of(eid)
    final = next(e for e in events
                 if e.type == "stage_completed" and e.stage_id == "integrity_controls")
    output = final.output  # type: ignore[union-attr]
    assert output["certified"] is True
    assert [a["stage_id"] for a in output["audit_trail"]] == sorted(
        ["opportunity_discovery", "value_commit", "realization_tracking", "expansion_modeling"])
    assert len(output["attestation"]["signature"]) == 64
