"""Child workflows on real Ray and PostgreSQL (issue 14): a ``workflow`` stage starts a child
execution, waits for it on no runner, and completes with its outputs, fails with it, rolls it
back and cancels it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from actors import (
    approve_stage,
    cancel_workflow,
    execute_workflow_dag,
    get_workflow_status,
    rollback_workflow,
    wait_for_workflow,
)
from actors.api import get_execution_runner, recover_executions
from actors.api.common import ready_store
from definitions import ExecutionNotFoundError
from events import WorkflowCancelled, fold
from events.children import ChildAction, child_execution_id, execute
from events.leases import holding_lease
from tests.integration.helpers import events_of, eventually, register_chain, stage

pytestmark = pytest.mark.usefixtures("ray_session")

UNDO = "tests.agents:undo_recorder"


def child_stage(stage_id: str, workflow: str, **fields: Any) -> dict[str, Any]:
    return {"id": stage_id, "name": stage_id.title(), "kind": "workflow", "workflow": workflow,
            "timeout_seconds": fields.pop("timeout", 3600), **fields}


def gate(stage_id: str = "gate") -> dict[str, Any]:
    return {"id": stage_id, "name": "Gate", "kind": "approval", "timeout_seconds": 3600}


async def status_is(eid: str, wanted: str, timeout: float = 60) -> Any:
    async def reached() -> bool:
        try:
            return (await get_workflow_status(eid)).status == wanted
        except ExecutionNotFoundError:  # a child its parent has not started yet
            return False

    await eventually(reached, timeout=timeout, what=f"{eid} to be {wanted}")
    return await get_workflow_status(eid)


def undo_order(tmp_dir: Path) -> list[str]:
    path = tmp_dir / "undo-order"
    return path.read_text().split() if path.exists() else []


async def test_a_parent_completes_with_its_childs_outputs(tmp_dir: Path) -> None:
    child = await register_chain("child", [stage("c1", "noop"), stage("c2", "noop")])
    parent = await register_chain("parent", [
        stage("p1", "noop"), child_stage("sub", child.id), stage("p2", "noop")])
    eid = await execute_workflow_dag(parent.id, {"dir": str(tmp_dir), "k": 1}, "tester")
    done = await wait_for_workflow(eid, timeout=60)
    assert done.status == "completed", done.error_message
    kid = child_execution_id(eid, "sub", child.id)
    assert done.children == {"sub": kid}
    sub = next(s for s in done.executed_steps if s["stage_id"] == "sub")
    assert set(sub["output"]) == {"c1", "c2"}
    assert sub["output"]["c1"] == {"stage": "c1", "attempt": 1}
    child_status = await get_workflow_status(kid)
    assert child_status.status == "completed"
    assert child_status.parent == {"execution_id": eid, "stage_id": "sub"}
    first = (await events_of(kid))[0]
    assert first.type == "workflow_initiated"
    assert first.context["k"] == 1 and first.context["p1"] == {"stage": "p1", "attempt": 1}
    assert first.idempotency_key == f"parent:{eid}:sub"
    kinds = [e.type for e in await events_of(eid)]
    assert "execution_parked" in kinds and "child_workflow_ended" in kinds
    waiting = next(e for e in await events_of(eid) if e.type == "stage_waiting")
    assert waiting.child_execution_id == kid  # the parent's stage event names the child


async def test_a_failing_child_fails_the_parents_stage_and_both_roll_back(
    tmp_dir: Path,
) -> None:
    child = await register_chain("badchild", [
        stage("c1", "noop", compensation_handler=UNDO), stage("c2", "forbidden")])
    parent = await register_chain("badparent", [
        stage("p1", "noop", compensation_handler=UNDO), child_stage("sub", child.id)])
    eid = await execute_workflow_dag(parent.id, {"dir": str(tmp_dir)}, "tester")
    done = await wait_for_workflow(eid, timeout=60)
    assert done.status == "rolled_back"
    kid = child_execution_id(eid, "sub", child.id)
    assert f"child execution {kid} rolled back" in (done.error_message or "")
    assert "ChildWorkflowError" in (done.error_message or "")
    assert (await get_workflow_status(kid)).status == "rolled_back"
    assert undo_order(tmp_dir) == ["c1", "p1"]


async def test_rolling_the_parent_back_rolls_the_child_back(tmp_dir: Path) -> None:
    child = await register_chain("rbchild", [stage("c1", "noop", compensation_handler=UNDO)])
    parent = await register_chain("rbparent", [
        stage("p1", "noop", compensation_handler=UNDO), child_stage("sub", child.id),
        stage("p2", "noop", compensation_handler=UNDO)])
    eid = await execute_workflow_dag(parent.id, {"dir": str(tmp_dir)}, "tester")
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
    await rollback_workflow(eid, "tester")
    done = await wait_for_workflow(eid, timeout=60)
    assert done.status == "rolled_back", done.error_message
    kid = child_execution_id(eid, "sub", child.id)
    assert (await get_workflow_status(kid)).status == "rolled_back"
    assert undo_order(tmp_dir) == ["p2", "c1", "p1"]
    kinds = [e.type for e in await events_of(eid)]
    assert kinds.count("child_workflow_ended") == 2  # completed, then rolled back


async def test_cancelling_the_parent_cancels_the_child_and_neither_holds_a_runner(
    tmp_dir: Path,
) -> None:
    child = await register_chain("cxchild", [gate()])
    parent = await register_chain("cxparent", [child_stage("sub", child.id)])
    eid = await execute_workflow_dag(parent.id, {"dir": str(tmp_dir)}, "tester")
    kid = child_execution_id(eid, "sub", child.id)
    await status_is(eid, "waiting")
    await status_is(kid, "waiting")
    assert await get_execution_runner(eid) is None and await get_execution_runner(kid) is None
    await cancel_workflow(eid, "operator", reason="no longer needed")
    assert (await wait_for_workflow(eid, timeout=60)).status == "cancelled"
    ended = await wait_for_workflow(kid, timeout=60)
    assert ended.status == "cancelled"
    last = (await events_of(kid))[-1]
    assert isinstance(last, WorkflowCancelled)
    assert f"its parent {eid} stopped waiting for it" in (last.reason or "")


async def test_a_child_started_twice_is_one_child_and_an_unknown_one_fails_the_stage(
    tmp_dir: Path,
) -> None:
    child = await register_chain("twice", [gate()])
    parent = await register_chain("twiceparent", [child_stage("sub", child.id)])
    eid = await execute_workflow_dag(parent.id, {"dir": str(tmp_dir)}, "tester")
    kid = child_execution_id(eid, "sub", child.id)
    await status_is(kid, "waiting")
    store = await ready_store()
    state = fold(await store.read(eid))
    before = len(await events_of(kid))
    # A runner that crashed between recording the child and starting it starts it again.
    await execute(store, state, [ChildAction("start", "sub", kid)])
    assert len(await events_of(kid)) == before
    await approve_stage(kid, "gate", "alice")
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"

    orphan = await register_chain("orphan", [child_stage("sub", f"nope-{child.id}")])
    bad = await execute_workflow_dag(orphan.id, {"dir": str(tmp_dir)}, "tester")
    failed = await wait_for_workflow(bad, timeout=60)
    assert failed.status == "failed"
    assert "child workflow not started: unknown workflow" in (failed.error_message or "")


async def test_the_sweep_tells_a_parked_parent_of_a_child_that_ended_unreported(
    tmp_dir: Path,
) -> None:
    """A child's end whose report to its parent was lost (its writer died between the two
    appends) reaches the parent at the next sweep."""
    child = await register_chain("lost", [gate()])
    parent = await register_chain("lostparent", [child_stage("sub", child.id)])
    eid = await execute_workflow_dag(parent.id, {"dir": str(tmp_dir)}, "tester")
    kid = child_execution_id(eid, "sub", child.id)
    await status_is(eid, "waiting")
    await status_is(kid, "waiting")
    store = await ready_store()

    async def ended_unreported() -> bool:
        """The child's end written under its lease — once no runner holds it: the one that
        parked it gives it back just after its row says waiting, and any runner may take it
        up again for a look (a wake-up, the idle recheck) and let it be."""
        async with store.pool.acquire() as conn, holding_lease(conn, kid) as free:
            if not free:
                return False
            state = fold(await store.read(kid, conn=conn))
            await store.append([WorkflowCancelled(
                execution_id=kid, seq=state.version + 1, at=datetime.now(UTC), user_id="ghost",
                duration_ms=0)], expected_version=state.version, conn=conn)
            return True

    await eventually(ended_unreported, timeout=30, what=f"the lease of {kid} to be free")
    assert (await get_workflow_status(eid)).status == "waiting"  # nobody told it
    await recover_executions()
    done = await wait_for_workflow(eid, timeout=60)
    assert done.status == "failed"
    assert f"child execution {kid} cancelled" in (done.error_message or "")
