"""The event store on a real PostgreSQL: round-trip, concurrency, atomicity, definitions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import pytest

from definitions import (
    CANONICAL_WORKFLOWS,
    ConcurrencyError,
    DatabaseConfigError,
    DefinitionConflictError,
    ExecutionNotFoundError,
    WorkflowDAG,
    WorkflowNotFoundError,
)
from events import (
    Event,
    EventStore,
    StageStarted,
    WorkflowInitiated,
    connect_pool,
    event_to_row,
    migrate,
)
from projections import fetch_status, project_executions

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _initiated(eid: str) -> WorkflowInitiated:
    dag = CANONICAL_WORKFLOWS["opportunity-discovery-v1"]
    return WorkflowInitiated(execution_id=eid, seq=1, at=NOW, workflow_id=dag.id,
                             workflow_version=1, dag=dag.model_dump(mode="json"),
                             context={"projectId": "p"}, user_id="user-123")


def _started(eid: str, seq: int, stage: str = "opportunity_research") -> StageStarted:
    return StageStarted(execution_id=eid, seq=seq, at=NOW, stage_id=stage)


async def _count(store: EventStore, eid: str) -> int:
    async with store.pool.acquire() as conn:
        return int(await conn.fetchval(
            "SELECT count(*) FROM workflow_events WHERE execution_id = $1::uuid", eid))


async def test_append_and_read_round_trip(store: EventStore) -> None:
    eid = str(uuid.uuid4())
    events: list[Event] = [_initiated(eid), _started(eid, 2)]
    await store.append(events, expected_version=0)
    assert await store.read(eid) == events
    assert await store.read(eid, after_seq=1) == events[1:]
    assert await store.read(eid, until_seq=1) == events[:1]
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT event_type, stage_id, metadata FROM workflow_events "
            "WHERE execution_id = $1::uuid AND seq = 2", eid)
    assert row["event_type"] == "stage_started"
    assert row["stage_id"] == "opportunity_research"


async def test_append_keeps_the_read_model_in_step(store: EventStore) -> None:
    eid = str(uuid.uuid4())
    await store.append([_initiated(eid)], expected_version=0)
    status = await fetch_status(store.pool, eid)
    assert (status.status, status.created_by, status.workflow_id) == (
        "initiated", "user-123", "opportunity-discovery-v1")
    await store.append([_started(eid, 2)], expected_version=1)
    status = await fetch_status(store.pool, eid)
    assert (status.status, status.current_stage, status.last_seq) == (
        "in_progress", "opportunity_research", 2)


async def test_a_row_remembered_from_the_log_is_the_row_read_back(store: EventStore) -> None:
    """A runner that adopts an execution remembers its row from the log it read instead of
    reading the row back: the next append writes the same row either way."""
    from events import StageAttempt, StageCompleted

    def log_of(eid: str) -> list[Event]:
        return [_initiated(eid), _started(eid, 2),
                StageAttempt(execution_id=eid, seq=3, at=NOW, stage_id="opportunity_research",
                             attempt=1, outcome="succeeded", duration_ms=5),
                StageCompleted(execution_id=eid, seq=4, at=NOW, stage_id="opportunity_research",
                               attempt=1, output={"n": 1}, duration_ms=5)]

    rows = []
    for remember in (True, False):
        eid = str(uuid.uuid4())
        await store.append(log_of(eid)[:2], expected_version=0)
        project_executions.forget()  # another process wrote it
        if remember:
            store.prime(await store.read(eid))
        await store.append(log_of(eid)[2:], expected_version=2)
        status = await fetch_status(store.pool, eid)
        rows.append(status.model_dump(exclude={"execution_id"}))
    assert rows[0] == rows[1]
    assert rows[0]["last_seq"] == 4


async def test_appends_write_the_row_the_whole_log_gives(store: EventStore) -> None:
    """Whatever the read-model write sends (the whole row, or less when the row before it is
    known), after every append the row is the one ``execution_row`` computes from the whole
    log — what a rebuild writes — across breakers, waiting, parking, a request and a bounded
    output."""
    from events import (
        CancelRequested,
        ExecutionParked,
        StageAttempt,
        StageCompleted,
        StageWaiting,
        WorkflowCompleted,
    )
    from projections.executions import COLUMNS, execution_row

    eid = str(uuid.uuid4())
    stage = "opportunity_research"
    batches: list[list[Event]] = [
        [_initiated(eid)],
        [_started(eid, 2)],
        [StageAttempt(execution_id=eid, seq=3, at=NOW, stage_id=stage, attempt=1,
                      outcome="succeeded", duration_ms=5, breaker={"state": "closed"}),
         StageCompleted(execution_id=eid, seq=4, at=NOW, stage_id=stage, attempt=1,
                        output={"n": 1, "text": "ünïcode"}, duration_ms=5)],
        [_started(eid, 5, "second"),
         StageWaiting(execution_id=eid, seq=6, at=NOW, stage_id="second",
                      waiting_for="approval", approvers=["ana"]),
         ExecutionParked(execution_id=eid, seq=7, at=NOW, waiting=["second"])],
        [CancelRequested(execution_id=eid, seq=8, at=NOW, user_id="ana", reason="r")],
        [StageCompleted(execution_id=eid, seq=9, at=NOW, stage_id="second", attempt=1,
                        output={"big": "x" * 5000}, duration_ms=7),
         StageCompleted(execution_id=eid, seq=10, at=NOW, stage_id="third", attempt=1,
                        output={"list": [1, 2]}, duration_ms=1)],
        [WorkflowCompleted(execution_id=eid, seq=11, at=NOW, duration_ms=20)],
    ]
    log: list[Event] = []
    for batch in batches:
        await store.append(batch, expected_version=len(log))
        log += batch
        expected = execution_row(None, [event_to_row(e) for e in log])
        async with store.pool.acquire() as conn:
            row = dict(await conn.fetchrow(
                f"SELECT {', '.join(COLUMNS)} FROM workflow_executions WHERE id = $1::uuid",
                eid))
        row["id"] = str(row["id"])
        assert row == expected, f"after seq {len(log)}"
    assert len(row["context"]["executed_steps"]) == 3
    assert row["status"] == "completed"


async def test_conflicting_append_raises_and_writes_nothing(store: EventStore) -> None:
    eid = str(uuid.uuid4())
    await store.append([_initiated(eid), _started(eid, 2)], expected_version=0)
    with pytest.raises(ConcurrencyError) as info:
        await store.append([_started(eid, 2, "opportunity_validation"),
                            _started(eid, 3, "opportunity_prioritization")], expected_version=1)
    assert info.value.expected_version == 1
    assert await _count(store, eid) == 2
    assert (await fetch_status(store.pool, eid)).current_stage == "opportunity_research"


async def test_append_ahead_of_the_stream_is_a_conflict(store: EventStore) -> None:
    eid = str(uuid.uuid4())
    await store.append([_initiated(eid)], expected_version=0)
    with pytest.raises(ConcurrencyError):
        await store.append([_started(eid, 5)], expected_version=4)
    assert await _count(store, eid) == 1


async def test_concurrent_writers_at_one_version_exactly_one_wins(store: EventStore) -> None:
    eid = str(uuid.uuid4())
    await store.append([_initiated(eid)], expected_version=0)
    results = await asyncio.gather(
        *[store.append([_started(eid, 2)], expected_version=1) for _ in range(8)],
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, ConcurrencyError) for r in results if r is not None), results
    assert await _count(store, eid) == 2


async def test_a_batch_is_all_or_nothing(database_url: str) -> None:
    async def failing_projector(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        await project_executions(conn, events)
        if len(events) > 1:
            raise RuntimeError("projector broke after the insert")

    pool = await connect_pool(database_url)
    try:
        breaking = EventStore(pool, projectors=[failing_projector])
        eid = str(uuid.uuid4())
        await breaking.append([_initiated(eid)], expected_version=0)
        with pytest.raises(RuntimeError, match="projector broke"):
            await breaking.append([_started(eid, 2), _started(eid, 3, "opportunity_validation")],
                                  expected_version=1)
        assert await _count(breaking, eid) == 1
        assert (await fetch_status(pool, eid)).status == "initiated"
    finally:
        await pool.close()


async def test_seqs_must_continue_the_expected_version(store: EventStore) -> None:
    eid = str(uuid.uuid4())
    with pytest.raises(ValueError, match="without gaps"):
        await store.append([_initiated(eid), _started(eid, 3)], expected_version=0)
    assert await _count(store, eid) == 0


async def test_unknown_or_malformed_execution_ids_are_not_found(store: EventStore) -> None:
    assert await store.read(str(uuid.uuid4())) == []
    with pytest.raises(ExecutionNotFoundError):
        await store.read_existing(str(uuid.uuid4()))
    with pytest.raises(ExecutionNotFoundError):
        await store.read("1'; DROP TABLE workflow_events; --")
    with pytest.raises(ExecutionNotFoundError):
        await fetch_status(store.pool, "not-a-uuid")


async def test_definitions_register_idempotently_and_refuse_changed_content(
    store: EventStore,
) -> None:
    data = CANONICAL_WORKFLOWS["opportunity-discovery-v1"].model_dump(mode="json")
    data["id"] = f"store-test-{uuid.uuid4().hex[:8]}"
    dag = WorkflowDAG.model_validate(data)
    assert await store.register_definition(dag) is True
    assert await store.register_definition(dag) is False
    assert await store.get_definition(dag.id) == dag
    changed = WorkflowDAG.model_validate({**data, "description": "something else"})
    with pytest.raises(DefinitionConflictError, match="version 1"):
        await store.register_definition(changed)
    v2 = WorkflowDAG.model_validate({**data, "version": 2, "description": "v2"})
    await store.register_definition(v2)
    assert (await store.get_definition(dag.id)).version == 2
    assert (await store.get_definition(dag.id, 1)).version == 1
    with pytest.raises(WorkflowNotFoundError, match="nope"):
        await store.get_definition("nope")


async def test_a_definition_stored_by_an_older_version_is_the_same_definition(
    store: EventStore,
) -> None:
    """A definition registered before a field existed (stored without it) is not a conflict
    with the same definition now (the field at its default); a real change still is."""
    dag = WorkflowDAG.model_validate({
        **CANONICAL_WORKFLOWS["opportunity-discovery-v1"].model_dump(mode="json"),
        "id": f"older-{uuid.uuid4().hex[:8]}"})
    old_schema = dag.model_dump(mode="json")
    for stage in old_schema["stages"]:
        del stage["executor"]  # what wfdag stored before stages had an executor
    async with store.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO workflow_definitions (name, description, version, dag_schema) "
            "VALUES ($1, '', 1, $2)", dag.id, old_schema)
    assert await store.register_definition(dag) is False  # the same: nothing to do
    changed = WorkflowDAG.model_validate({**dag.model_dump(mode="json"), "name": "renamed"})
    with pytest.raises(DefinitionConflictError):
        await store.register_definition(changed)


async def test_migrations_are_idempotent_and_safe_in_parallel(server_url: str) -> None:
    """On a database nobody migrated: three at once apply every migration exactly once
    between them, and a later run applies nothing."""
    from events.migrations import MIGRATIONS
    from tests.conftest import create_database

    fresh = await create_database(server_url, "wfdag_migrate")
    conns = [await asyncpg.connect(fresh) for _ in range(3)]
    try:
        applied = await asyncio.gather(*[migrate(c) for c in conns])
        every = [version for version, _ in MIGRATIONS]
        assert sorted(v for a in applied for v in a) == every, applied
        assert sum(1 for a in applied if a) == 1, "one migrator did it all, under its lock"
        assert await migrate(conns[0]) == []
        tables = {r[0] for r in await conns[0].fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        assert {"workflow_events", "workflow_executions", "execution_queue"} <= tables
    finally:
        for c in conns:
            await c.close()


async def test_the_row_cache_of_one_database_is_not_used_for_another(server_url: str) -> None:
    """The same execution id in two databases (an import, a copy): a store's remembered row
    of one database must not be the base of the other's next row."""
    from actors.runtime import new_store
    from tests.conftest import create_database

    stores = []
    for _ in range(2):
        url = await create_database(server_url, "wfdag_cache")
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        stores.append(await new_store(url))
    try:
        eid = str(uuid.uuid4())
        for store, project in zip(stores, ("first", "second"), strict=True):
            first = _initiated(eid).model_copy(update={"context": {"projectId": project}})
            await store.append([first], expected_version=0)
        # The first database's next append comes after the second database's row was written.
        await stores[0].append([_started(eid, 2)], expected_version=1)
        first_row = await fetch_status(stores[0].pool, eid)
        assert first_row.context["projectId"] == "first"
        assert (first_row.status, first_row.last_seq) == ("in_progress", 2)
    finally:
        for store in stores:
            await store.close()


async def test_wrong_database_url_is_a_clear_error() -> None:
    with pytest.raises(DatabaseConfigError, match=r"cannot connect .*127\.0\.0\.1:1") as info:
        await connect_pool("postgresql://wfdag:hunter2@127.0.0.1:1/nope", timeout=3)
    assert "hunter2" not in str(info.value)
    assert "WFDAG_DATABASE_URL" in str(info.value)
    with pytest.raises(DatabaseConfigError):
        await connect_pool("not a url at all", timeout=3)


async def test_a_store_listens_only_while_someone_waits(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that waits no more is not woken by every append of the cluster."""
    import events.store

    monkeypatch.setattr(events.store, "IDLE_UNLISTEN_SECONDS", 0.1)
    pool = await connect_pool(database_url, max_size=3)
    store = EventStore(pool, projectors=[project_executions])
    try:
        eid = str(uuid.uuid4())

        async def listening_sessions() -> int:
            # This process's sessions only: the runners' node leader and the projection actor
            # of a live pool listen, unlisten and check their sessions on their own schedule.
            return int(await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%' "
                "AND application_name = $1", f"wfdag:{os.getpid()}"))

        before = await listening_sessions()
        async with store.subscribe(eid) as woken:
            assert await listening_sessions() == before + 1
            await store.append([_initiated(eid)], expected_version=0)
            await asyncio.wait_for(woken.wait(), 10)  # notified while it waits
        deadline = asyncio.get_running_loop().time() + 10
        while await listening_sessions() > before:
            assert asyncio.get_running_loop().time() < deadline, "still listening"
            await asyncio.sleep(0.05)
        async with store.subscribe(eid) as woken:  # waits again: listens again
            await store.append([_started(eid, 2)], expected_version=1)
            await asyncio.wait_for(woken.wait(), 10)
    finally:
        await store.close()


async def test_a_waiter_for_the_end_is_woken_by_the_end_only(database_url: str) -> None:
    """``subscribe(only=…)`` (how ``wait_for_workflow`` waits): not woken by the events on the
    way, woken by the end; a waiter for everything beside it hears each append."""
    from events import TERMINAL_EVENT_TYPES, WorkflowCompleted

    pool = await connect_pool(database_url, max_size=3)
    store = EventStore(pool, projectors=[project_executions])
    try:
        eid = str(uuid.uuid4())
        async with store.subscribe(eid) as every, \
                store.subscribe(eid, only=TERMINAL_EVENT_TYPES) as end:
            await store.append([_initiated(eid)], expected_version=0)
            await store.append([_started(eid, 2)], expected_version=1)
            await asyncio.wait_for(every.wait(), 10)
            deadline = asyncio.get_running_loop().time() + 10
            while store.last_notified_type(eid) != "stage_started":  # both appends heard
                assert asyncio.get_running_loop().time() < deadline, "never notified"
                every.clear()
                await asyncio.wait_for(every.wait(), 10)
            assert not end.is_set()  # the same notifications, filtered out
            await store.append([WorkflowCompleted(execution_id=eid, seq=3, at=NOW,
                                                  duration_ms=1)], expected_version=2)
            await asyncio.wait_for(end.wait(), 10)
            assert store.last_notified_type(eid) == "workflow_completed"
    finally:
        await store.close()


async def test_a_tap_hears_every_append_and_listens_again_after_its_connection_dies(
    database_url: str,
) -> None:
    """The console's feed: a tap gets the notifications of every execution, and a listening
    connection killed under it (a database restart, a cut) is made again by itself."""
    import os

    pool = await connect_pool(database_url, max_size=3)
    async with pool.acquire() as conn:
        await migrate(conn)
    store = EventStore(pool, projectors=[project_executions])
    heard: list[str] = []
    try:
        async with store.tap(heard.append):
            first = str(uuid.uuid4())
            await store.append([_initiated(first)], expected_version=0)
            deadline = asyncio.get_running_loop().time() + 10
            while not any(p.startswith(first) for p in heard):
                assert asyncio.get_running_loop().time() < deadline, heard
                await asyncio.sleep(0.05)
            cut = await pool.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM "
                "pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'",
                f"wfdag:{os.getpid()}")
            assert cut >= 1
            second = str(uuid.uuid4())
            deadline = asyncio.get_running_loop().time() + 20
            while not any(p.startswith(second) for p in heard):
                assert asyncio.get_running_loop().time() < deadline, "the tap went deaf"
                # appended again and again: a notification sent before it listens is lost
                with contextlib.suppress(ConcurrencyError):
                    await store.append([_initiated(second)], expected_version=0)
                await asyncio.sleep(0.2)
                if not any(p.startswith(second) for p in heard):
                    second = str(uuid.uuid4())
    finally:
        await pool.close()
