"""Issue 16, the attacks as tests, on real PostgreSQL and Ray."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from actors import (
    approve_stage,
    cancel_workflow,
    execute_workflow_dag,
    execution_actor,
    get_execution_events,
    get_workflow_circuit_breaker_status,
    get_workflow_metrics,
    get_workflow_status,
    import_execution,
    initialize_workflow_system,
    list_circuit_breakers,
    register_workflow,
    wait_for_workflow,
)
from definitions import (
    ExecutionNotFoundError,
    InvalidArgumentError,
    InvalidWorkflowError,
    WorkflowDAG,
)
from events import EventStore
from events.ids import execution_id_for
from tests.integration.helpers import events_of, eventually, register_chain, stage
from tests.integration.test_children import gate, status_is

pytestmark = pytest.mark.usefixtures("ray_session")


def _one_stage(agent: str, executor: str) -> WorkflowDAG:
    return WorkflowDAG.model_validate({
        "id": f"hostile-{uuid.uuid4().hex[:8]}", "name": "hostile", "version": 1,
        "initial_stage": "a", "final_stages": ["a"], "transitions": [],
        "stages": [{"id": "a", "name": "A", "agent": agent, "timeout_seconds": 20,
                    "retry_config": "STANDARD", "executor": executor}]})


@pytest.mark.parametrize("agent", ["os:system", "builtins:print", "sys:exit"])
async def test_registration_refuses_a_hostile_agent_and_stores_nothing(
    agent: str, store: EventStore,
) -> None:
    dag = _one_stage(agent, "task")
    with pytest.raises(InvalidWorkflowError, match="stage 'a': agent refused"):
        await register_workflow(dag)
    assert await store.pool.fetchval(
        "SELECT count(*) FROM workflow_definitions WHERE name = $1", dag.id) == 0


@pytest.mark.parametrize("executor", ["task", "local"])
async def test_a_definition_that_slipped_past_registration_is_refused_on_the_worker(
    executor: str, store: EventStore,
) -> None:
    """A definition written straight into the table (an old row, a hand edit): the worker
    checks again before the call, and the refusal is final, not retried."""
    dag = _one_stage("builtins:print", executor)
    await store.register_definition(dag)  # bypasses register_workflow's checks on purpose
    eid = await execute_workflow_dag(dag.id, {"password": "hunter2"}, user_id="mallory")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status in ("failed", "rolled_back"), status
    failures = [e for e in await events_of(eid) if e.type == "stage_failed"]
    assert len(failures) == 1, "a refusal must not be retried"
    error = failures[0].error
    assert error["type"] == "AgentNotAllowedError", error
    assert "builtins" in error["message"]


async def test_eight_exiting_local_agents_leave_the_pool_serving_another_organization(
) -> None:
    """The attack of issue 16: eight executions whose local agent raises SystemExit.  Each
    fails its own stage; a run of another organization started right after completes within
    seconds (before the fix they killed their runners and wedged the pool)."""
    # A breaker that stays closed: with the default (5 failures) the executions the runners
    # reach after five have failed wait out its cooldown instead — how many depends on how
    # fast the pool takes them up, which is not what this test is about.
    exiting = await register_chain("exits", [
        stage("boom", "raises_base", executor="local", retry="NONE",
              circuit_breaker={"failure_threshold": 100, "cooldown_seconds": 60})])
    plain = await register_chain("plain", [stage("a", "noop")])
    await initialize_workflow_system()
    ids = [await execute_workflow_dag(exiting.id, {"raise": "SystemExit"}, "mallory",
                                      organization_id="org-evil") for _ in range(8)]
    started = time.monotonic()
    other = await execute_workflow_dag(plain.id, {}, "alice", organization_id="org-good")
    status = await wait_for_workflow(other, timeout=60, organization_id="org-good")
    served_in = time.monotonic() - started
    assert status.status == "completed", status
    assert served_in < 20, f"another organization's run took {served_in:.1f} s"
    for eid in ids:
        done = await wait_for_workflow(eid, timeout=60, organization_id="org-evil")
        assert done.status == "failed", done
        failed = [e for e in await events_of(eid) if e.type == "stage_failed"]
        assert [e.error["type"] for e in failed] == ["SystemExit"]


async def test_a_database_out_of_connections_is_an_outage_and_opens_no_breaker(
    server_url: str, store: EventStore,
) -> None:
    """The workflow database refusing connections (``too many connections``, for real: a
    role whose connection limit is 0) fails the reference agents' artifact writes.  That is
    an outage, not the downstream's fault: the attempts are retried and the breaker, with a
    threshold of 1, stays closed."""
    role = f"full_{uuid.uuid4().hex[:8]}"
    await store.pool.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    parts = urlsplit(server_url)
    full = urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rsplit('@', 1)[-1]}"))
    with pytest.raises(asyncpg.TooManyConnectionsError):  # the server really says so
        await asyncpg.connect(full)
    dag = await register_chain("exhausted", [
        stage("write", "persists_to", retry="STANDARD",
              circuit_breaker={"failure_threshold": 1, "cooldown_seconds": 60})])
    eid = await execute_workflow_dag(dag.id, {"artifact_db": full}, "tester")
    status = await wait_for_workflow(eid, timeout=90)
    assert status.status == "failed", status
    attempts = [e for e in await events_of(eid) if e.type in ("stage_attempt", "stage_failed")]
    errors = [e.error for e in attempts if getattr(e, "error", None)]
    assert errors and all(err["outage"] is True for err in errors), errors
    assert any("refused a connection" in err["message"] for err in errors), errors
    assert len([e for e in attempts if e.type == "stage_attempt"]) >= 2, "retried"
    breaker = await get_workflow_circuit_breaker_status(dag.id, "write")
    assert breaker.state == "closed", breaker


async def test_the_same_key_in_two_organizations_names_two_unguessable_executions() -> None:
    """Issue 16: organization B's keyed start was handed A's execution, and B's input never
    ran; and keyed ids were a public function of workflow and key."""
    dag = await register_chain("tenant-key", [stage("a", "noop")])
    key = f"order-{uuid.uuid4().hex[:6]}"
    a = await execute_workflow_dag(dag.id, {"who": "a"}, "ann", idempotency_key=key,
                                   organization_id="org-a")
    b = await execute_workflow_dag(dag.id, {"who": "b"}, "bob", idempotency_key=key,
                                   organization_id="org-b")
    assert a != b
    assert await execute_workflow_dag(dag.id, {"who": "a"}, "ann", idempotency_key=key,
                                      organization_id="org-a") == a
    for eid, org, who in ((a, "org-a", "a"), (b, "org-b", "b")):
        status = await wait_for_workflow(eid, timeout=60, organization_id=org)
        assert status.status == "completed" and status.context["who"] == who, status
    # Not the name-based UUID of workflow and key that anyone could compute.
    assert {a, b}.isdisjoint({execution_id_for(dag.id, key),
                              execution_id_for(dag.id, key, secret=b"",
                                               organization_id="org-a")})


@pytest.mark.parametrize("scope", ["organization", "global"])
async def test_one_organizations_failures_open_only_its_own_breaker(
    scope: str, tmp_dir: Path,
) -> None:
    """Issue 16: three failures in A made B fail at once.  Now A's failures open A's breaker;
    B's first call goes through — unless the stage says ``breaker_scope: "global"``."""
    dag = await register_chain(f"tenant-breaker-{scope}", [stage(
        "call", "breaker_agent", breaker_scope=scope, breaker_wait_seconds=1,
        circuit_breaker={"failure_threshold": 3, "cooldown_seconds": 300})])
    for _ in range(3):
        eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "ann",
                                         organization_id="org-a")
        assert (await wait_for_workflow(eid, timeout=60)).status == "failed"
    opened = await get_workflow_circuit_breaker_status(dag.id, "call", organization_id="org-a")
    assert opened.state == "open", opened
    (tmp_dir / "healthy").touch()
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "bob",
                                     organization_id="org-b")
    status = await wait_for_workflow(eid, timeout=60)
    b_breaker = await get_workflow_circuit_breaker_status(dag.id, "call",
                                                          organization_id="org-b")
    if scope == "organization":
        assert status.status == "completed", status
        assert b_breaker.state == "closed" and b_breaker.organization_id == "org-b"
        listed = await list_circuit_breakers(organization_id="org-b")
        assert all(b.organization_id in (None, "org-b") for b in listed)
        assert not [b for b in listed if b.workflow_id == dag.id and b.state == "open"]
    else:
        assert status.status == "failed", status
        failed = next(e for e in await events_of(eid) if e.type == "stage_failed")
        assert failed.error["type"] == "CircuitOpenError"
        assert b_breaker.state == "open" and b_breaker.organization_id is None
    metrics_a = await get_workflow_metrics(dag.id, organization_id="org-a")
    metrics_b = await get_workflow_metrics(dag.id, organization_id="org-b")
    everyone = await get_workflow_metrics(dag.id)
    assert (metrics_a["total"], metrics_b["total"], everyone["total"]) == (3, 1, 4)
    assert everyone["breaker_opens"] == 1  # once, whoever's breaker it was
    if scope == "organization":
        assert (metrics_a["breaker_opens"], metrics_b["breaker_opens"]) == (1, 0)


async def _forged(org: str, approval_flow: WorkflowDAG) -> list[str]:
    """The export of a real execution waiting at its approval gate, rewritten by an attacker:
    a fresh id, the victim's organization, a forged creator."""
    eid = await execute_workflow_dag(approval_flow.id, {"organizationId": "org-mallory"},
                                     "mallory")
    await status_is(eid, "waiting")
    await cancel_workflow(eid, "mallory")  # the source is not needed any more
    forged_id = str(uuid.uuid4())
    lines = []
    for event in await get_execution_events(eid):
        if event.type == "cancel_requested":
            break  # up to its park, before the cancel
        data = json.loads(event.model_dump_json())
        data["execution_id"] = forged_id
        if data["type"] == "workflow_initiated":
            data["context"]["organizationId"] = org
            data["user_id"] = "forged-admin"
        lines.append(json.dumps(data))
    return lines


async def _parked_by_a_runner(store: EventStore, eid: str) -> None:
    async def parked() -> bool:
        row = await store.pool.fetchrow(
            "SELECT runner, not_before FROM execution_queue WHERE execution_id = $1::uuid", eid)
        return row is None or (row["runner"] is None and row["not_before"] is not None)

    await eventually(parked, timeout=30, what=f"a runner to look at {eid} and let it be")


async def test_a_forged_import_is_evidence_and_never_runs_unless_resumed(
    store: EventStore,
) -> None:
    """Issue 16: a forged non-terminal log was adopted and run by the pool as the victim
    organization.  Now it is kept, marked imported, and not run: an approval wakes it and a
    runner lets it be.  Only an operator of its organization resuming it makes it run."""
    flow = await register_chain("forgeable", [gate(), stage("after", "noop")])
    await initialize_workflow_system()
    lines = await _forged("org-victim", flow)
    with pytest.raises(InvalidArgumentError, match="belongs to organization 'org-victim'"):
        await import_execution(lines, user_id="mallory", organization_id="org-mallory")
    eid = await import_execution(lines, user_id="ops", organization_id="org-victim")
    status = await get_workflow_status(eid, organization_id="org-victim")
    assert status.status == "waiting" and status.audit_context is not None
    assert status.audit_context["imported"]["resume"] is False
    await approve_stage(eid, "gate", "victim-boss", organization_id="org-victim")
    await _parked_by_a_runner(store, eid)
    types = [e.type for e in await events_of(eid)]
    assert types[-2:] == ["execution_imported", "stage_approved"], types
    assert "stage_started" not in types[len(lines):], "an evidence log was run"

    with pytest.raises(InvalidArgumentError, match="operator of that organization"):
        await import_execution(await _forged("org-victim", flow), resume=True)
    resumed = await import_execution(await _forged("org-victim", flow), user_id="ops",
                                     organization_id="org-victim", resume=True)
    await status_is(resumed, "waiting")
    await approve_stage(resumed, "gate", "victim-boss", organization_id="org-victim")
    done = await wait_for_workflow(resumed, timeout=60, organization_id="org-victim")
    assert done.status == "completed", done


async def test_an_import_cannot_bring_its_own_version_of_a_registered_workflow(
    store: EventStore,
) -> None:
    flow = await register_chain("canonical-like", [gate(), stage("after", "noop")])
    lines = await _forged("org-victim", flow)
    first = json.loads(lines[0])
    first["dag"]["stages"][1]["agent"] = "tests.agents:effectful"  # a swapped agent
    with pytest.raises(InvalidArgumentError, match="not the definition registered here"):
        await import_execution([json.dumps(first), *lines[1:]], organization_id="org-victim")
    first["dag"]["stages"][1]["agent"] = "subprocess:getoutput"
    first["workflow_id"] = first["dag"]["id"] = f"never-registered-{uuid.uuid4().hex[:6]}"
    with pytest.raises(InvalidArgumentError, match="agent refused"):
        await import_execution([json.dumps(first), *lines[1:]], organization_id="org-victim")
    assert await store.pool.fetchval(
        "SELECT count(*) FROM workflow_events WHERE execution_id = $1::uuid",
        first["execution_id"]) == 0


@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt", "CancelledError"])
async def test_a_task_agent_that_raises_a_base_exception_fails_its_attempt(kind: str) -> None:
    """The same attack on a task stage: the attempt fails, once, recorded; nothing else."""
    dag = await register_chain(f"task-base-{kind.lower()}", [
        stage("boom", "raises_base", retry="NONE")])
    eid = await execute_workflow_dag(dag.id, {"raise": kind}, "tester")
    status = await wait_for_workflow(eid, timeout=90)
    assert status.status == "failed", status
    failed = [e for e in await events_of(eid) if e.type == "stage_failed"]
    assert [e.error["type"] for e in failed] == [kind], failed[0].error


async def test_an_actor_handle_is_not_given_for_another_organizations_execution() -> None:
    flow = await register_chain("tenant-actor", [gate(), stage("after", "noop")])
    eid = await execute_workflow_dag(flow.id, {}, "ann", organization_id="org-a")
    await status_is(eid, "waiting")
    with pytest.raises(ExecutionNotFoundError):
        execution_actor(eid, organization_id="org-b")
    assert execution_actor(eid, organization_id="org-a") is None  # parked: no runner holds it
    await approve_stage(eid, "gate", "boss", organization_id="org-a")
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"


async def test_an_export_with_its_chain_is_checked_by_the_import(
    server_url: str, tmp_dir: Path,
) -> None:
    """`wfdag events ID --json --chain` carries each event's hash; the importing database
    recomputes the chain and refuses a file changed on the way, naming the line."""
    from tests.conftest import create_database
    from tests.integration.test_projections import wfdag

    flow = await register_chain("exported", [stage("a", "noop"), stage("b", "noop")])
    eid = await execute_workflow_dag(flow.id, {}, "t")
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
    export = wfdag("events", eid, "--json", "--chain")
    assert export.returncode == 0, export.stderr
    lines = export.stdout.splitlines()
    assert all(len(json.loads(line)["chain"]) == 64 for line in lines)
    good, bad = tmp_dir / "good.jsonl", tmp_dir / "bad.jsonl"
    good.write_text(export.stdout)
    changed = [json.loads(line) for line in lines]
    done = next(e for e in changed if e["type"] == "stage_completed")
    done["output"] = {"forged": True}
    bad.write_text("\n".join(json.dumps(e) for e in changed) + "\n")

    other = {"WFDAG_DATABASE_URL": await create_database(server_url, "wfdag_evidence")}
    refused = wfdag("import", str(bad), env=other)
    assert refused.returncode == 2, refused.stderr
    assert f"hash chain breaks at seq {done['seq']}" in refused.stderr
    imported = wfdag("import", str(good), env=other)
    assert imported.returncode == 0 and "as evidence" in imported.stdout, imported.stderr
    there = wfdag("events", eid, "--json", env=other)
    marker = json.loads(there.stdout.splitlines()[-1])
    assert marker["type"] == "execution_imported" and marker["chain_verified"] is True
    assert wfdag("verify", eid, env=other).returncode == 0


async def test_a_runner_leaves_a_log_edited_under_it_unrun(store: EventStore) -> None:
    """A waiting execution's first event edited in the table: the API refuses to act on it,
    and a runner that takes it up (woken by hand) parks it again without running anything;
    restored, it runs on."""
    from definitions import BrokenChainError

    flow = await register_chain("edited", [gate(), stage("after", "noop")])
    eid = await execute_workflow_dag(flow.id, {"amount": 10}, "ann")
    await status_is(eid, "waiting")
    original = await store.pool.fetchval(
        "SELECT metadata FROM workflow_events WHERE execution_id = $1::uuid AND seq = 1", eid)
    forged = {**original, "context": {**original["context"], "amount": 10_000}}
    await store.pool.execute("UPDATE workflow_events SET metadata = $2 WHERE execution_id = "
                             "$1::uuid AND seq = 1", eid, forged)
    try:
        with pytest.raises(BrokenChainError, match="broken at seq 1"):
            await approve_stage(eid, "gate", "boss")
        before = len(await store.read(eid, check_chain=False))
        await store.pool.execute(  # wake it as a request would
            "UPDATE execution_queue SET not_before = NULL WHERE execution_id = $1::uuid;", eid)
        await store.pool.execute("SELECT pg_notify('wfdag_queue', $1)", eid)

        async def parked_again() -> bool:
            row = await store.pool.fetchrow(
                "SELECT runner, not_before FROM execution_queue WHERE execution_id = "
                "$1::uuid", eid)
            return row is not None and row["runner"] is None and row["not_before"] is not None

        await eventually(parked_again, timeout=30, what="a runner to park the edited log")
        assert len(await store.read(eid, check_chain=False)) == before  # nothing was run
    finally:
        await store.pool.execute("UPDATE workflow_events SET metadata = $2 WHERE "
                                 "execution_id = $1::uuid AND seq = 1", eid, original)
    await approve_stage(eid, "gate", "boss")
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
