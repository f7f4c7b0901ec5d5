"""Tenant isolation and hostile input, on real PostgreSQL and Ray."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from actors import (
    execute_workflow_dag,
    get_execution_events,
    get_workflow_status,
    register_workflow,
    replay_execution,
    replay_history,
    retry_failed_workflow,
    rollback_workflow,
    wait_for_workflow,
    watch_execution,
)
from definitions import (
    ExecutionNotFoundError,
    InvalidContextError,
    InvalidWorkflowError,
    WorkflowNotFoundError,
)
from events import EventStore
from tests.integration.test_cli import wfdag

pytestmark = pytest.mark.usefixtures("ray_session")

ORG_A, ORG_B = "org-acme", "org-globex"


async def _watch(eid: str, org: str | None) -> None:
    async for _ in watch_execution(eid, organization_id=org, timeout=30):
        pass


def _calls(eid: str, org: str | None) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Every read and write call that takes ``organization_id``."""
    return {
        "status": lambda: get_workflow_status(eid, organization_id=org),
        "events": lambda: get_execution_events(eid, organization_id=org),
        "wait": lambda: wait_for_workflow(eid, timeout=30, organization_id=org),
        "watch": lambda: _watch(eid, org),
        "replay": lambda: replay_execution(eid, organization_id=org),
        "history": lambda: replay_history(eid, organization_id=org),
        "rollback": lambda: rollback_workflow(eid, "intruder", organization_id=org),
        "retry": lambda: retry_failed_workflow(eid, "intruder", organization_id=org),
    }


async def test_another_organizations_execution_is_not_found_like_a_missing_one(
    store: EventStore,
) -> None:
    eid = await execute_workflow_dag("opportunity-discovery-v1",
                                     {"organizationId": ORG_A, "projectId": "p"}, "alice")
    status = await wait_for_workflow(eid, timeout=60, organization_id=ORG_A)
    assert status.status == "completed" and status.organization_id == ORG_A
    missing = str(uuid.uuid4())
    before = await store.pool.fetchval("SELECT count(*) FROM workflow_events")
    for name, call in _calls(eid, ORG_B).items():
        with pytest.raises(ExecutionNotFoundError) as theirs:
            await call()
        with pytest.raises(ExecutionNotFoundError) as absent:
            await _calls(missing, ORG_B)[name]()
        # The same error, word for word but the id: nothing tells "exists elsewhere" apart.
        assert str(theirs.value).replace(eid, "ID") == str(absent.value).replace(missing, "ID")
    assert await store.pool.fetchval("SELECT count(*) FROM workflow_events") == before
    # The owner (and a caller that does not scope by organization) still sees it.
    owned = await get_execution_events(eid, organization_id=ORG_A)
    assert [e.seq for e in owned] == [e.seq for e in await get_execution_events(eid)]
    assert (await replay_execution(eid, organization_id=ORG_A)).status == "completed"


async def test_organization_id_on_start_sets_or_must_match_the_context(
    store: EventStore,
) -> None:
    eid = await execute_workflow_dag("opportunity-discovery-v1", {"projectId": "p"}, "bob",
                                     organization_id=ORG_B)
    status = await get_workflow_status(eid, organization_id=ORG_B)
    assert status.organization_id == ORG_B and status.context["organizationId"] == ORG_B
    before = await store.pool.fetchval("SELECT count(*) FROM workflow_events")
    with pytest.raises(InvalidContextError, match="organizationId"):
        await execute_workflow_dag("opportunity-discovery-v1", {"organizationId": ORG_A},
                                   "bob", organization_id=ORG_B)
    assert await store.pool.fetchval("SELECT count(*) FROM workflow_events") == before
    await wait_for_workflow(eid, timeout=60)


async def test_cli_org_scopes_what_it_shows() -> None:
    eid = await execute_workflow_dag("opportunity-discovery-v1",
                                     {"organizationId": ORG_A}, "alice")
    await wait_for_workflow(eid, timeout=60)
    theirs = wfdag("status", eid, "--org", ORG_B)
    assert theirs.returncode == 3 and "not found" in theirs.stderr
    assert "Traceback" not in theirs.stderr
    mine = wfdag("events", eid, "--org", ORG_A)
    assert mine.returncode == 0 and "workflow_completed" in mine.stdout


HOSTILE = ["'; DROP TABLE workflow_events; --", "1 OR 1=1", "$1", "\\x00", "💥" * 50,
           "x" * 10_000]


@pytest.mark.parametrize("text", HOSTILE)
async def test_sql_looking_ids_and_names_are_inert(text: str, database_url: str) -> None:
    with pytest.raises(ExecutionNotFoundError):
        await get_workflow_status(text)
    with pytest.raises(ExecutionNotFoundError):
        await get_execution_events(text, organization_id=text)
    with pytest.raises(WorkflowNotFoundError):
        await execute_workflow_dag(text, {}, "tester")
    conn = await asyncpg.connect(database_url)
    try:
        tables = {r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    finally:
        await conn.close()
    assert {"workflow_events", "workflow_executions", "workflow_definitions"} <= tables


async def test_a_workflow_named_like_sql_is_stored_and_run_literally() -> None:
    name = "robert'); DROP TABLE workflow_events;--"
    stages = [{"id": "a", "name": name, "agent": "tests.agents:noop", "timeout_seconds": 10}]
    with pytest.raises(InvalidWorkflowError, match="id: String should match pattern"):
        await register_workflow({"id": name, "name": name, "version": 1, "initial_stage": "a",
                                 "final_stages": ["a"], "stages": stages, "transitions": []})
    workflow_id = f"sql-named-{uuid.uuid4().hex[:6]}"
    dag = await register_workflow({
        "id": workflow_id, "name": name, "version": 1, "initial_stage": "a",
        "final_stages": ["a"], "stages": stages, "transitions": []})
    assert dag.name == name
    eid = await execute_workflow_dag(dag.id, {"note": "'; SELECT pg_sleep(10); --"}, "t")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "completed" and status.context["note"].startswith("'; SELECT")


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"d": value}
    return value


@pytest.mark.parametrize("depth", [200, 100_000])
async def test_absurdly_nested_contexts_are_refused_clearly(
    depth: int, store: EventStore
) -> None:
    before = await store.pool.fetchval("SELECT count(*) FROM workflow_events")
    with pytest.raises(InvalidContextError, match="nested"):
        await execute_workflow_dag("opportunity-discovery-v1", _deep(depth), "tester")
    assert await store.pool.fetchval("SELECT count(*) FROM workflow_events") == before


async def test_absurd_definitions_are_refused_with_the_limit() -> None:
    many = [{"id": f"s{i}", "name": f"S{i}", "agent": "tests.agents:noop",
             "timeout_seconds": 10} for i in range(5000)]
    with pytest.raises(InvalidWorkflowError, match="stages"):
        await register_workflow({
            "id": "huge-v1", "name": "huge", "version": 1, "initial_stage": "s0",
            "final_stages": ["s4999"], "stages": many,
            "transitions": [{"from_stage": f"s{i}", "to_stage": f"s{i + 1}"}
                            for i in range(4999)]})
    with pytest.raises(WorkflowNotFoundError):
        await execute_workflow_dag("huge-v1", {}, "tester")
    with pytest.raises(InvalidWorkflowError, match="nested more than 64 levels"):
        await register_workflow({
            "id": "deep-v1", "name": "deep", "version": 1, "initial_stage": "a",
            "final_stages": ["b"], "stages": [
                {"id": s, "name": s, "agent": "tests.agents:noop", "timeout_seconds": 10}
                for s in "ab"],
            "transitions": [{"from_stage": "a", "to_stage": "b", "condition": {
                "path": "x", "op": "eq", "value": _deep(100_000)}}]})
    with pytest.raises(InvalidWorkflowError, match="timeout_seconds"):
        await register_workflow({  # a schema error names the field, as an InvalidWorkflowError
            "id": "typo-v1", "name": "typo", "version": 1, "initial_stage": "a",
            "final_stages": ["a"], "stages": [{"id": "a", "name": "A", "agent": "x:y",
                                              "timeout_seconds": "soon"}], "transitions": []})
