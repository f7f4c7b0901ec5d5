"""Bounded read models and logs (issue 15): large outputs stay in the log, not in the
read-model row; a log past ``WFDAG_MAX_LOG_BYTES`` (8 MiB in this suite) fails the stage
that would take it there, naming the cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import execute_workflow_dag, get_stage_output, wait_for_workflow
from actors.api.common import ready_store
from definitions import StageNotFoundError, StageStateError
from tests.integration.helpers import register_chain, stage

pytestmark = pytest.mark.usefixtures("ray_session")

BLOB = 900_000  # each output, as JSON: under the 1 MiB payload limit


async def row_bytes(eid: str) -> int:
    store = await ready_store()
    return int(await store.pool.fetchval(
        "SELECT pg_column_size(context) FROM workflow_executions WHERE id = $1::uuid", eid))


async def test_large_outputs_stay_in_the_log_and_the_row_stays_small(tmp_dir: Path) -> None:
    dag = await register_chain("bounded", [stage(f"s{i}", "big_output") for i in range(6)])
    eid = await execute_workflow_dag(dag.id, {"bytes": BLOB}, "t")
    done = await wait_for_workflow(eid, timeout=120)
    assert done.status == "completed", done.error_message
    assert await row_bytes(eid) < 20_000  # six outputs of 0.9 MB: a few KB of summaries
    step = done.executed_steps[2]
    assert step["output_omitted"] and step["output"]["bytes"] == step["output_bytes"] > BLOB
    assert step["output"]["keys"] == ["blob", "stage"]
    whole = await get_stage_output(eid, "s2")
    assert len(whole["blob"]) == BLOB and whole["stage"] == "s2"
    with pytest.raises(StageNotFoundError):
        await get_stage_output(eid, "nope")


async def test_a_log_past_its_cap_fails_the_stage_that_would_take_it_there(
    tmp_dir: Path,
) -> None:
    dag = await register_chain("capped", [stage(f"s{i}", "big_output") for i in range(12)])
    eid = await execute_workflow_dag(dag.id, {"bytes": BLOB}, "t")
    done = await wait_for_workflow(eid, timeout=120)
    assert done.status == "failed"
    assert "PayloadTooLargeError" in (done.error_message or "")
    assert "WFDAG_MAX_LOG_BYTES" in (done.error_message or "")
    completed = [s["stage_id"] for s in done.executed_steps]
    assert 5 <= len(completed) < 12  # 8 MiB hold some of the 0.9 MB outputs, not all
    with pytest.raises(StageStateError, match="only a completed stage has an output"):
        await get_stage_output(eid, "s11")
    store = await ready_store()
    total = await store.pool.fetchval(
        "SELECT sum(length(metadata::text)) FROM workflow_events WHERE execution_id = $1::uuid",
        eid)
    assert total < 8 * 1024 * 1024, (total, completed, done.error_message)
