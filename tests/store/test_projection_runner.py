"""The projection runner on a real PostgreSQL: late commits, exactly once, checkpoints."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import pytest

from definitions import CANONICAL_WORKFLOWS
from events import (
    Event,
    EventRow,
    EventStore,
    StageStarted,
    WorkflowInitiated,
    connect_pool,
    event_to_row,
)
from events.database import DBConnection
from projections import ProjectionRunner, project_executions

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def _initiated(eid: str) -> WorkflowInitiated:
    dag = CANONICAL_WORKFLOWS["opportunity-discovery-v1"]
    return WorkflowInitiated(execution_id=eid, seq=1, at=NOW, workflow_id=dag.id,
                             workflow_version=1, dag=dag.model_dump(mode="json"), context={},
                             user_id="u")


class SeenProjection:
    """Records every (execution, seq) it is given; its primary key refuses a second apply."""

    tables: tuple[str, ...] = ()

    def __init__(self, table: str) -> None:
        self.name = table
        self.table = table

    async def apply(self, conn: DBConnection, events: Sequence[EventRow]) -> None:
        await conn.executemany(
            f"INSERT INTO {self.table} (execution_id, seq) VALUES ($1::uuid, $2)",
            [(e.execution_id, e.seq) for e in events])

    async def rebuild(self, conn: DBConnection, events: object) -> None:
        raise NotImplementedError


@pytest.fixture
async def seen(database_url: str, store: EventStore) -> SeenProjection:
    table = f"seen_{uuid.uuid4().hex[:10]}"
    async with store.pool.acquire() as conn:
        await conn.execute(f"CREATE TABLE {table} (execution_id UUID, seq INT, "
                           f"PRIMARY KEY (execution_id, seq))")
    return SeenProjection(table)


async def _seen(pool: asyncpg.Pool, projection: SeenProjection, ids: list[str]) -> set[str]:
    rows = await pool.fetch(f"SELECT execution_id FROM {projection.table} "
                            f"WHERE execution_id = ANY($1::uuid[])", ids)
    return {str(r["execution_id"]) for r in rows}


async def test_an_event_that_commits_late_is_neither_skipped_nor_applied_twice(
    database_url: str, store: EventStore, seen: SeenProjection
) -> None:
    pool = await connect_pool(database_url, max_size=10)
    entered, release = asyncio.Event(), asyncio.Event()
    late: asyncio.Task[None] | None = None
    try:
        async def hold_open(conn: DBConnection, events: Sequence[Event]) -> None:
            await project_executions(conn, events)
            entered.set()
            await release.wait()  # the transaction stays open, its events uncommitted

        slow = EventStore(pool, projectors=[hold_open])
        late_id = str(uuid.uuid4())
        late = asyncio.create_task(slow.append([_initiated(late_id)], expected_version=0))
        await asyncio.wait_for(entered.wait(), 10)
        early_ids = [str(uuid.uuid4()) for _ in range(5)]
        for eid in early_ids:  # later positions, committed first
            await store.append([_initiated(eid)], expected_version=0)

        runner = ProjectionRunner(pool, [seen], batch_size=3)
        await runner.catch_up()
        # A position-ordered reader would have applied the five and moved past the late one.
        assert await _seen(pool, seen, [late_id, *early_ids]) == set()

        release.set()
        await late
        await runner.catch_up()
        assert await _seen(pool, seen, [late_id, *early_ids]) == {late_id, *early_ids}
        # Each first event once (a second apply would have broken the primary key). Runners of
        # a live pool in this test session may be appending more events to these executions.
        count = await pool.fetchval(f"SELECT count(*) FROM {seen.table} WHERE seq = 1 AND "
                                    f"execution_id = ANY($1::uuid[])", [late_id, *early_ids])
        assert count == 6
    finally:
        release.set()  # on any failure, let the held transaction end before closing
        if late is not None:
            await asyncio.wait_for(late, 10)
        await pool.close()


async def test_concurrent_runners_apply_each_event_once(
    database_url: str, store: EventStore, seen: SeenProjection
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(20)]
    for eid in ids:
        await store.append([_initiated(eid)], expected_version=0)
    runners = [ProjectionRunner(store.pool, [seen], batch_size=4) for _ in range(3)]
    await asyncio.gather(*[r.catch_up() for r in runners])  # a duplicate would raise
    assert await _seen(store.pool, seen, ids) == set(ids)
    checkpoint = await store.pool.fetchrow(
        "SELECT events_applied FROM projection_checkpoints WHERE name = $1", seen.name)
    applied = await store.pool.fetchval(f"SELECT count(*) FROM {seen.table}")
    assert checkpoint["events_applied"] == applied


async def test_global_order_holds_across_a_power_of_ten_in_transaction_ids(
    store: EventStore, seen: SeenProjection
) -> None:
    """Transaction ids must be compared as numbers: "1000" sorts before "999" as text.

    The log is written with transaction ids that straddle a power of ten below the server's
    current one (they are past, so every reader sees them committed): no transaction ids
    are burnt, so the test takes as long on a server that has run for years as on a new one."""
    async with store.pool.acquire() as conn:
        await conn.execute(f"ALTER TABLE {seen.table} ADD COLUMN ord BIGSERIAL")
        current = int(await conn.fetchval("SELECT pg_current_xact_id()::text"))
        while current < 1200:  # a new server: move just past the first boundary, 10**3
            current = int(await conn.fetchval("SELECT pg_current_xact_id()::text"))
        boundary = 10 ** (len(str(current - 100)) - 1)
        eid = str(uuid.uuid4())
        events = [_initiated(eid)] + [
            StageStarted(execution_id=eid, seq=seq, at=NOW, stage_id="opportunity_research")
            for seq in range(2, 13)]
        txids = [boundary - 6 + i for i in range(len(events))]  # …, 999, 1000, 1001, …
        rows = [event_to_row(e) for e in events]
        await conn.executemany(
            "INSERT INTO workflow_events (execution_id, seq, event_type, stage_id, metadata, "
            "created_at, txid) VALUES ($1::uuid, $2, $3, $4, $5, $6, $7::text::xid8)",
            [(*row, str(txid)) for row, txid in zip(rows, txids, strict=True)])
    try:
        assert min(txids) < boundary <= max(txids) < current
        seq = len(events)
        await ProjectionRunner(store.pool, [seen], batch_size=3).catch_up()
        applied = [r["seq"] for r in await store.pool.fetch(
            f"SELECT seq FROM {seen.table} WHERE execution_id = $1::uuid ORDER BY ord", eid)]
        assert applied == list(range(1, seq + 1))
    finally:
        # A log written past the store (no read-model row, no chain) is not left behind for
        # the tests after this one: a rebuild there would add its row.
        await store.pool.execute("DELETE FROM workflow_events WHERE execution_id = $1::uuid",
                                 eid)


async def test_the_rebuild_reads_only_the_declared_keys_of_an_event(store: EventStore) -> None:
    """The rebuild's SELECT (projections.runner._metadata_sql): of the declared types, the
    declared keys, each present exactly when the event has it; other types whole."""
    from projections import MetricsProjection
    from projections.runner import _metadata_sql, rebuild_reads

    eid = str(uuid.uuid4())
    stored = [
        ("workflow_initiated", {"workflow_id": "w", "dag": {"stages": [1, 2]}, "context": {},
                                "user_id": "u", "retry_of": None}),
        ("stage_started", {"note": "x"}),
        ("stage_attempt", {"attempt": 1, "outcome": "succeeded"}),  # no breaker key at all
        ("stage_attempt", {"attempt": 2, "breaker": None}),
        ("stage_attempt", {"attempt": 3, "breaker": {"transition": "open"}}),
        ("stage_completed", {"attempt": 3, "output": {"n": 1}, "duration_ms": 1}),
    ]
    async with store.pool.acquire() as conn:
        written = conn.transaction()  # rolled back: a log without its hash chain stays out
        await written.start()
        await conn.executemany(
            "INSERT INTO workflow_events (execution_id, seq, event_type, stage_id, metadata) "
            "VALUES ($1::uuid, $2, $3, 's', $4::jsonb)",
            [(eid, seq, kind, data) for seq, (kind, data) in enumerate(stored, start=1)])
        reads = rebuild_reads([MetricsProjection()])
        metadata, params = _metadata_sql(reads)
        got = [r[0] for r in await conn.fetch(
            f"SELECT {metadata} FROM workflow_events WHERE execution_id = "
            f"${len(params) + 1}::uuid ORDER BY seq", *params, eid)]
        await written.rollback()
    assert got == [
        {"workflow_id": "w", "context": {}, "user_id": "u", "retry_of": None},
        {},
        {},
        {"breaker": None},
        {"breaker": {"transition": "open"}},
        {"attempt": 3, "output": {"n": 1}, "duration_ms": 1},
    ]


async def test_live_projection_polls_while_busy_and_hears_again_when_idle(
    store: EventStore, seen: SeenProjection
) -> None:
    """A burst is applied while the runner looks every batch window without listening; idle
    again, it listens: one later append is applied long before the safety interval."""
    stop = asyncio.Event()
    runner = ProjectionRunner(store.pool, [seen], batch_size=7)
    live = asyncio.create_task(runner.run(stop, safety_interval=120, batch_window=0.05))
    try:
        burst = [str(uuid.uuid4()) for _ in range(40)]
        for eid in burst:
            await store.append([_initiated(eid)], expected_version=0)
        deadline = asyncio.get_running_loop().time() + 20
        while await _seen(store.pool, seen, burst) != set(burst):
            assert asyncio.get_running_loop().time() < deadline, "the burst was not applied"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # quiet for 20 batch windows: listening again
        late = str(uuid.uuid4())
        await store.append([_initiated(late)], expected_version=0)
        deadline = asyncio.get_running_loop().time() + 10
        while await _seen(store.pool, seen, [late]) != {late}:
            assert asyncio.get_running_loop().time() < deadline, "not heard when idle"
            await asyncio.sleep(0.05)
        assert not live.done()
    finally:
        stop.set()
        await asyncio.wait_for(live, 10)
