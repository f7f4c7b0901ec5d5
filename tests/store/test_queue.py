"""The execution queue's leases on a real PostgreSQL, in a database of their own (no runner of
this suite's pool takes work from it): claiming in one round trip, lock keys, appends on the
lease connection, and pooled connections released without a reset round trip."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from events import EventStore, connect_pool, execution_lock_key, lease_is_free, migrate
from events.database import LeanResetConnection
from events.leases import claim_next, enqueue, project_queue, release
from projections import project_executions
from tests.conftest import create_database

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
async def queue_url(server_url: str) -> str:
    return await create_database(server_url, "wfdag_queue")


@pytest.fixture
async def pool(queue_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await connect_pool(queue_url, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn)
    yield pool
    try:  # a failed test may leave a connection out: never hang the suite on it
        await asyncio.wait_for(pool.close(), 10)
    except TimeoutError:
        pool.terminate()


async def test_the_sql_lock_key_is_the_python_one(pool: asyncpg.Pool) -> None:
    ids = [str(uuid.uuid4()) for _ in range(50)]
    ids += ["ffffffff-ffff-ffff-0000-000000000000", "80000000-0000-0000-0000-000000000000",
            "00000000-0000-0001-ffff-ffffffffffff"]
    rows = await pool.fetch("SELECT id::text AS id, wfdag_lock_key(id) AS key "
                            "FROM unnest($1::uuid[]) AS id", ids)
    assert {r["id"]: r["key"] for r in rows} == {i: execution_lock_key(i) for i in ids}


async def test_claims_take_the_oldest_free_execution_and_its_lease(pool: asyncpg.Pool) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    async with pool.acquire() as conn:
        for k, eid in enumerate(ids):
            await enqueue(conn, eid, T0 + timedelta(seconds=k))
    a = await pool.acquire()
    b = await pool.acquire()
    try:
        first = await claim_next(a, "runner-a")
        assert first is not None and first.execution_id == ids[0]
        assert (first.recoveries, first.last_error) == (0, None)
        # The lease is the session's lock: another session sees it held and skips it.
        assert not await lease_is_free(b, ids[0])
        second = await claim_next(b, "runner-b")
        assert second is not None and second.execution_id == ids[1]
        row = await pool.fetchrow("SELECT runner FROM execution_queue WHERE execution_id = $1",
                                  uuid.UUID(ids[1]))
        assert row is not None and row["runner"] == "runner-b"
        # Released, the first is free again and the next claim takes it (the oldest).
        await release(a, ids[0])
        assert await lease_is_free(b, ids[0])
        again = await claim_next(a, "runner-a")
        assert again is not None and again.execution_id == ids[0]
        # The second ends (its terminal append deletes its queue row); its runner releases it.
        await pool.execute("DELETE FROM execution_queue WHERE execution_id = $1",
                           uuid.UUID(ids[1]))
        await release(b, ids[1])
        third = await claim_next(b, "runner-b")
        assert third is not None and third.execution_id == ids[2]
        async with pool.acquire() as c:
            assert await claim_next(c, "runner-c") is None  # nothing left that nobody runs
    finally:
        for conn in (a, b):
            await conn.execute("SELECT pg_advisory_unlock_all()")
            await pool.release(conn)


async def test_an_append_on_a_lease_connection_that_died_writes_nothing(
    pool: asyncpg.Pool,
) -> None:
    from tests.store.test_store import _initiated

    store = EventStore(pool, projectors=[project_executions, project_queue])
    eid = str(uuid.uuid4())
    await store.append([_initiated(eid)], expected_version=0)
    lease = await pool.acquire()
    try:
        claim = await claim_next(lease, "runner-a")
        assert claim is not None and claim.execution_id == eid
        from events import StageStarted

        first = [StageStarted(execution_id=eid, seq=2, at=T0, stage_id="discover")]
        await store.append(first, expected_version=1, conn=lease)
        assert [e.seq for e in await store.read(eid, conn=lease)] == [1, 2]
        # The session that holds the lease ends (a partition, a restart): its writer is fenced.
        ended = asyncio.Event()
        lease.add_termination_listener(lambda _conn: ended.set())
        await pool.execute("SELECT pg_terminate_backend($1)", lease.get_server_pid())
        await asyncio.wait_for(ended.wait(), 10)  # the client has seen its session end
        late = [StageStarted(execution_id=eid, seq=3, at=T0, stage_id="discover")]
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await store.append(late, expected_version=2, conn=lease)
    finally:
        with contextlib.suppress(asyncpg.InterfaceError):  # released with its end already
            await pool.release(lease)
    assert [e.seq for e in await store.read(eid)] == [1, 2]
    async with pool.acquire() as conn:
        assert await lease_is_free(conn, eid)  # the lease died with its session


async def test_a_released_connection_costs_no_reset_unless_it_listened(queue_url: str) -> None:
    statements: list[str] = []
    one = await connect_pool(queue_url, min_size=1, max_size=1)
    try:
        async with one.acquire() as conn:
            raw = conn._con  # the pooled connection behind the proxy
            assert isinstance(raw, LeanResetConnection)
            raw.add_query_logger(lambda record: statements.append(record.query))
            await conn.fetchval("SELECT 1")
        assert not any("RESET ALL" in q for q in statements)  # released without a reset
        with pytest.warns(asyncpg.InterfaceWarning, match="notification listener"):
            async with one.acquire() as conn:
                assert conn._con is raw
                await conn.add_listener("wfdag_test_channel", lambda *_a: None)
                assert "UNLISTEN" in raw.get_reset_query()
        assert any("UNLISTEN" in q for q in statements)  # it listened: reset on release
        async with one.acquire() as conn:
            assert raw.get_reset_query() == ""
            assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
    finally:
        await one.close()


async def test_every_runner_that_died_on_an_execution_counts_once_it_certifies(
    pool: asyncpg.Pool,
) -> None:
    """Runners a and b die holding the execution, one after the other, before either is back:
    both deaths count when they certify; a runner that was only cut off counts nothing."""
    from events.leases import certify_restart, hand_back

    eid = str(uuid.uuid4())
    async with pool.acquire() as conn:
        await enqueue(conn, eid, T0)

    async def claim_and_die(runner: str) -> int:
        conn = await pool.acquire()
        try:
            claim = await claim_next(conn, runner)
            assert claim is not None and claim.execution_id == eid
            await conn.close()  # the process dies: its session, and the lease, end
        finally:
            await pool.release(conn)
        # Nobody may take it over while the dead runner's heartbeat is fresh ...
        async with pool.acquire() as other:
            assert await claim_next(other, "early") is None
        # ... which it stops being once the takeover wait has passed.
        await pool.execute(
            "UPDATE execution_queue SET heartbeat_at = now() - interval '1 minute'")
        return claim.recoveries

    assert await claim_and_die("a") == 0
    assert await claim_and_die("b") == 0  # a has not certified yet
    assert await claim_and_die("cut-off") == 0
    row = await pool.fetchrow("SELECT runner, orphaned_by, recoveries FROM execution_queue")
    assert (row["runner"], row["orphaned_by"], row["recoveries"]) == ("cut-off", ["a", "b"], 0)
    async with pool.acquire() as conn:
        assert await certify_restart(conn, "b") == [eid]
        assert await certify_restart(conn, "a") == [eid]
        await hand_back(conn, "cut-off")  # its database connection was lost: uncounted
        assert await certify_restart(conn, "a") == []  # counted once
    row = await pool.fetchrow("SELECT runner, orphaned_by, recoveries FROM execution_queue")
    assert (row["runner"], row["orphaned_by"], row["recoveries"]) == (None, [], 2)
    async with pool.acquire() as conn:
        claim = await claim_next(conn, "c")
        assert claim is not None and claim.recoveries == 2
        await release(conn, eid)


async def test_a_request_that_commits_while_its_runner_parks_keeps_it_claimable(
    pool: asyncpg.Pool,
) -> None:
    """The runner parks an execution at the log's version it drove; a request (an approval, a
    cancel) appended just then must still wake it.  The bad interleaving, made deterministic:
    the request's statement holds the queue row when the park's UPDATE reaches it, and
    commits; the park then goes on with the version it read before that commit.  It must not
    leave the execution parked past the request (claimable never again, before this test:
    an approval lost, the execution waiting for good)."""
    from events import CancelRequested, StageStarted
    from events.leases import park
    from tests.store.test_store import _initiated

    store = EventStore(pool, projectors=[project_executions, project_queue])
    eid = str(uuid.uuid4())
    await store.append([_initiated(eid)], expected_version=0)
    runner = await pool.acquire()
    requester = await pool.acquire()
    try:
        claim = await claim_next(runner, "runner-a")
        assert claim is not None and claim.execution_id == eid
        await store.append([StageStarted(execution_id=eid, seq=2, at=T0,
                                          stage_id="opportunity_research")],
                           expected_version=1, conn=runner)
        request = CancelRequested(execution_id=eid, seq=3, at=T0, user_id="ops")
        async with requester.transaction():
            await store.append([request], expected_version=2, conn=requester)
            # The runner parks at version 2 meanwhile; its UPDATE waits for the request's
            # row lock on the queue.
            parking = asyncio.ensure_future(park(runner, eid, None, 2))
            await asyncio.sleep(0)

            async def blocked() -> bool:
                return bool(await pool.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = $1",
                    runner.get_server_pid()))

            deadline = asyncio.get_running_loop().time() + 10
            while not await blocked():
                assert asyncio.get_running_loop().time() < deadline, "the park never waited"
                await asyncio.sleep(0.01)
        assert not await asyncio.wait_for(parking, 10), "parked past a request"
        row = await pool.fetchrow("SELECT not_before FROM execution_queue "
                                  "WHERE execution_id = $1", uuid.UUID(eid))
        assert row is not None and row["not_before"] is None  # claimable: the request wakes it
    finally:
        for conn in (runner, requester):
            await conn.execute("SELECT pg_advisory_unlock_all()")
            await pool.release(conn)


async def test_the_append_of_an_end_gives_the_lease_up_only_when_it_goes_in(
    pool: asyncpg.Pool,
) -> None:
    """A runner's last append carries its release (``release_with_end``): the lock and the queue
    row go with the end, in one statement — and neither goes when the append is refused (a
    request got there first), nor with an append that is not an end."""
    from definitions import ConcurrencyError
    from events import CancelRequested, StageStarted, WorkflowCompleted
    from events.leases import release_with_end
    from tests.store.test_store import _initiated

    store = EventStore(pool, projectors=[project_executions, project_queue])
    eid = str(uuid.uuid4())
    await store.append([_initiated(eid)], expected_version=0)
    runner = await pool.acquire()
    released: list[bool] = []
    try:
        claim = await claim_next(runner, "runner-a")
        assert claim is not None and claim.execution_id == eid
        started = [StageStarted(execution_id=eid, seq=2, at=T0, stage_id="discover")]
        assert release_with_end(started, lambda: released.append(True)) == []  # not an end
        await store.append(started, expected_version=1, conn=runner)
        await store.append([CancelRequested(execution_id=eid, seq=3, at=T0, user_id="ops")],
                           expected_version=2)
        end = [WorkflowCompleted(execution_id=eid, seq=3, at=T0, duration_ms=1)]
        with pytest.raises(ConcurrencyError):  # written at version 2: the request is seq 3
            await store.append(end, expected_version=2, conn=runner,
                               also=release_with_end(end, lambda: released.append(True)))
        assert released == []
        async with pool.acquire() as conn:
            assert not await lease_is_free(conn, eid)  # still this runner's
        end = [WorkflowCompleted(execution_id=eid, seq=4, at=T0, duration_ms=1)]
        await store.append(end, expected_version=3, conn=runner,
                           also=release_with_end(end, lambda: released.append(True)))
        assert released == [True]
        async with pool.acquire() as conn:
            assert await lease_is_free(conn, eid)  # given up with the end
            assert await conn.fetchval("SELECT count(*) FROM execution_queue "
                                       "WHERE execution_id = $1", uuid.UUID(eid)) == 0
        # Nothing is left to release on the runner's session.
        assert await runner.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                     "AND pid = pg_backend_pid()") == 0
    finally:
        await runner.execute("SELECT pg_advisory_unlock_all()")
        await pool.release(runner)
