"""Stages that wait for a person, a signal or a time, on real Ray and PostgreSQL (issue 14):
a waiting execution is parked — it holds no runner — and any runner resumes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors import (
    approve_stage,
    execute_workflow_dag,
    get_workflow_status,
    reject_stage,
    send_signal,
    wait_for_workflow,
)
from actors.api import get_execution_runner
from definitions import ExecutionStateError, StageStateError
from tests.integration.helpers import events_of, eventually, register_chain, stage

pytestmark = pytest.mark.usefixtures("ray_session")

UNDO = "tests.agents:undo_recorder"


def wait_stage(stage_id: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"id": stage_id, "name": stage_id.title(), "kind": kind,
            "timeout_seconds": fields.pop("timeout", 3600), **fields}


async def parked(eid: str, timeout: float = 30) -> Any:
    async def waiting() -> bool:
        return (await get_workflow_status(eid)).status == "waiting"

    await eventually(waiting, timeout=timeout, what=f"{eid} to be waiting")
    return await get_workflow_status(eid)


async def test_an_approval_waits_on_no_runner_and_completes_when_approved(
    tmp_dir: Path,
) -> None:
    dag = await register_chain("approve", [
        stage("first", "noop", compensation_handler=UNDO),
        wait_stage("gate", "approval", approvers=["alice", "bob"]),
        stage("after", "noop")])
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "tester")
    status = await parked(eid)
    assert status.waiting is not None and status.waiting["stages"] == ["gate"]
    assert status.current_stage == "gate"
    assert await get_execution_runner(eid) is None, "a waiting execution holds no runner"
    with pytest.raises(StageStateError, match="may not decide stage 'gate'"):
        await approve_stage(eid, "gate", "mallory")
    with pytest.raises(StageStateError, match="not an approval stage"):
        await approve_stage(eid, "first", "alice")
    await approve_stage(eid, "gate", "alice", comment="ok", data={"budget": 10})
    done = await wait_for_workflow(eid, timeout=30)
    assert done.status == "completed"
    step = next(s for s in done.executed_steps if s["stage_id"] == "gate")
    assert step["output"] == {"approved": True, "by": "alice", "comment": "ok",
                              "data": {"budget": 10}}
    kinds = [e.type for e in await events_of(eid)]
    assert kinds.count("execution_parked") == 1 and "stage_approved" in kinds
    with pytest.raises(ExecutionStateError, match="is completed"):
        await approve_stage(eid, "gate", "bob")


async def test_a_rejection_fails_the_stage_for_good_and_compensates(tmp_dir: Path) -> None:
    dag = await register_chain("reject", [
        stage("first", "noop", compensation_handler=UNDO), wait_stage("gate", "approval")])
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "tester")
    await parked(eid)
    await reject_stage(eid, "gate", "carol", reason="numbers do not add up")
    done = await wait_for_workflow(eid, timeout=30)
    assert done.status == "rolled_back"
    assert "ApprovalRejectedError" in (done.error_message or "")
    assert "rejected by carol: numbers do not add up" in (done.error_message or "")
    assert (tmp_dir / "undo-order").read_text().split() == ["first"]


async def test_a_signal_sent_early_is_taken_when_its_stage_is_reached(tmp_dir: Path) -> None:
    dag = await register_chain("signal", [
        stage("slow", "timed"), wait_stage("contract", "signal", signal="signed")])
    eid = await execute_workflow_dag(dag.id, {"seconds": 1.5}, "tester")
    await send_signal(eid, "signed", {"doc": 7}, user_id="crm")  # before it is reached
    with pytest.raises(StageStateError, match="no stage waiting for signal 'paid'"):
        await send_signal(eid, "paid", user_id="crm")
    done = await wait_for_workflow(eid, timeout=30)
    assert done.status == "completed"
    step = next(s for s in done.executed_steps if s["stage_id"] == "contract")
    assert step["output"] == {"doc": 7}
    with pytest.raises(ExecutionStateError, match="is completed: a signal"):
        await send_signal(eid, "signed", user_id="crm")


async def test_a_timer_sleeps_its_time_once_even_when_taken_up_again(tmp_dir: Path) -> None:
    dag = await register_chain("timer", [wait_stage("pause", "timer", delay_seconds=3),
                                         stage("after", "noop")])
    eid = await execute_workflow_dag(dag.id, {}, "tester")
    status = await parked(eid)
    assert status.waiting is not None and status.waiting["wake_at"] is not None
    done = await wait_for_workflow(eid, timeout=30)
    assert done.status == "completed", done.error_message
    events = await events_of(eid)
    waits = [e for e in events if e.type == "stage_waiting"]
    woke = next(e for e in events if e.type == "stage_completed" and e.stage_id == "pause")
    assert len(waits) == 1, "the clock started once"
    assert waits[0].until is not None and (waits[0].until - waits[0].at).total_seconds() >= 3
    assert (woke.at - waits[0].at).total_seconds() >= 3


async def test_more_waiting_executions_than_runners_leave_the_pool_free(tmp_dir: Path) -> None:
    from actors.runtime import settings

    gate = await register_chain("many", [wait_stage("gate", "approval"), stage("then", "noop")])
    ids = [await execute_workflow_dag(gate.id, {}, "tester")
           for _ in range(settings().pool_size + 2)]
    for eid in ids:
        await parked(eid, timeout=60)
    quick = await register_chain("quick", [stage("a", "noop"), stage("b", "noop")])
    other = await execute_workflow_dag(quick.id, {}, "tester")
    assert (await wait_for_workflow(other, timeout=30)).status == "completed"
    for eid in ids:
        await approve_stage(eid, "gate", "approver")
    for eid in ids:
        assert (await wait_for_workflow(eid, timeout=60)).status == "completed"


async def test_the_cli_approves_rejects_and_signals(tmp_dir: Path) -> None:
    import json

    from tests.integration.test_cli import wfdag

    dag = await register_chain("cli-wait", [
        wait_stage("gate", "approval", approvers=["dana"]),
        wait_stage("paid", "signal", signal="payment")])
    eid = await execute_workflow_dag(dag.id, {}, "tester")
    await parked(eid)
    refused = wfdag("approve", eid, "gate", "--user", "eve")
    assert refused.returncode == 1 and "may not decide stage 'gate'" in refused.stderr
    approved = wfdag("approve", eid, "gate", "--user", "dana", "--comment", "fine",
                     "--data", '{"po": "A-1"}')
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == eid
    bad = wfdag("signal", eid, "payment", "--payload", "[1]")
    assert bad.returncode == 2 and "--payload must be a JSON object" in bad.stderr
    sent = wfdag("signal", eid, "payment", "--payload", '{"amount": 5}', "--json")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["execution_id"] == eid
    done = await wait_for_workflow(eid, timeout=30)
    assert done.status == "completed"
    outputs = {s["stage_id"]: s["output"] for s in done.executed_steps}
    assert outputs["gate"]["by"] == "dana" and outputs["gate"]["data"] == {"po": "A-1"}
    assert outputs["paid"] == {"amount": 5}

    other = await execute_workflow_dag(dag.id, {}, "tester")
    await parked(other)
    rejected = wfdag("reject", other, "gate", "--user", "dana", "--reason", "no budget")
    assert rejected.returncode == 0, rejected.stderr
    assert (await wait_for_workflow(other, timeout=30)).status == "failed"
    missing = wfdag("approve", "00000000-0000-4000-8000-00000000dead", "gate")
    assert missing.returncode == 3 and "not found" in missing.stderr


async def test_a_timer_beside_a_running_stage_keeps_its_clock_when_the_runner_is_killed(
    tmp_dir: Path,
) -> None:
    import ray

    from actors import execution_actor
    from tests.integration.helpers import wait_until

    dag = await register_chain(
        "timer-kill",
        [stage("start", "noop"), stage("work", "logged_sleep"),
         wait_stage("nap", "timer", delay_seconds=3), stage("end", "noop")],
        transitions=[{"from_stage": "start", "to_stage": "work"},
                     {"from_stage": "start", "to_stage": "nap"},
                     {"from_stage": "work", "to_stage": "end"},
                     {"from_stage": "nap", "to_stage": "end"}])
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir), "seconds": 4}, "tester")
    runs = tmp_dir / "runs-work"
    await wait_until(runs.exists, timeout=30, what="the 4 s stage to start beside the timer")
    handle = execution_actor(eid)
    assert handle is not None, "a runner drives it while its agent stage runs"
    ray.kill(handle, no_restart=False)  # halfway through the timer's 3 s
    done = await wait_for_workflow(eid, timeout=60)
    assert done.status == "completed"
    events = await events_of(eid)
    waits = [e for e in events if e.type == "stage_waiting"]
    woke = next(e for e in events if e.type == "stage_completed" and e.stage_id == "nap")
    assert len(waits) == 1, "the adopting runner read the wake time from the log"
    assert (woke.at - waits[0].at).total_seconds() >= 3
    assert woke.output["due"] == waits[0].until.isoformat()
