"""Issue 16: a client that rides out cut connections.  Every backend of this process's pool is
terminated again and again while waiters wait: each returns by its deadline — its execution's
end, or ``WaitTimeoutError`` — and the pool ends with no connection held."""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg
import pytest

from actors import approve_stage, execute_workflow_dag, wait_for_workflow
from actors.api.common import ready_store
from definitions import WaitTimeoutError
from tests.integration.helpers import eventually, register_chain, stage
from tests.integration.test_children import gate, status_is

pytestmark = pytest.mark.usefixtures("ray_session")

WAITERS = 30  # half on executions that end during the storm, half on ones that never do
STORM_SECONDS = 12.0
CUT_EVERY = 1.0
DEADLINE = 10.0


async def _storm(server_url: str, until: float) -> int:
    """Terminate every backend of this process's pool each ``CUT_EVERY`` s (from a connection
    of its own); returns how many were cut."""
    me = f"wfdag:{os.getpid()}"
    cut = 0
    conn = await asyncpg.connect(server_url)
    try:
        while time.monotonic() < until:
            cut += int(await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1", me))
            await asyncio.sleep(CUT_EVERY)
    finally:
        await conn.close()
    return cut


async def _approve_through(eid: str, until: float) -> None:
    """Approve, trying again while the storm cuts the call off (a caller that retries)."""
    while True:
        try:
            await approve_stage(eid, "gate", "boss")
            return
        except Exception:
            if time.monotonic() > until:
                raise
            await asyncio.sleep(0.3)


async def _timed(eid: str) -> tuple[str, float]:
    started = time.monotonic()
    try:
        status = (await wait_for_workflow(eid, timeout=DEADLINE)).status
    except WaitTimeoutError:
        status = "timed out"
    return status, time.monotonic() - started


async def test_waiters_return_by_their_deadlines_through_a_storm_of_cut_connections(
    server_url: str,
) -> None:
    flow = await register_chain("storm", [gate(), stage("after", "noop")])
    ids = [await execute_workflow_dag(flow.id, {}, "t") for _ in range(WAITERS)]
    for eid in ids:
        await status_is(eid, "waiting")
    ending, parked = ids[: WAITERS // 2], ids[WAITERS // 2:]
    start = time.monotonic()
    storm = asyncio.ensure_future(_storm(server_url, start + STORM_SECONDS))
    waits = [asyncio.ensure_future(_timed(eid)) for eid in ids]
    await asyncio.sleep(1.0)  # the storm is on: approve half of them through it
    await asyncio.gather(*(_approve_through(eid, start + STORM_SECONDS) for eid in ending))
    results = await asyncio.wait_for(asyncio.gather(*waits), DEADLINE + 15)
    cut = await storm
    assert cut >= 5, f"the storm cut only {cut} connections"
    late = [(eid, took) for eid, (_, took) in zip(ids, results, strict=True)
            if took > DEADLINE + 3]
    assert not late, f"waits past their deadline: {late}"
    assert all(status == "timed out" for status, _ in results[WAITERS // 2:])
    # The approved ones end; a waiter may have run out of time first, never with an error.
    assert {status for status, _ in results[: WAITERS // 2]} <= {"completed", "timed out"}
    for eid in ending:
        assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
    pool = (await ready_store()).pool

    async def nothing_held() -> bool:
        return pool.get_size() - pool.get_idle_size() == 0

    await eventually(nothing_held, timeout=20, what="the pool to hold no connection")
    for eid in parked:  # tidy: they would wait an hour
        await approve_stage(eid, "gate", "boss")


async def test_a_wait_on_an_exhausted_pool_returns_by_its_deadline() -> None:
    """Every connection of the pool held elsewhere (the issue's leaked pool): the wait cannot
    even listen, and still says so by its deadline instead of blocking on the pool."""
    flow = await register_chain("exhausted-pool", [gate(), stage("after", "noop")])
    eid = await execute_workflow_dag(flow.id, {}, "t")
    await status_is(eid, "waiting")
    store = await ready_store()
    pool = store.pool
    await store.close_listener()  # the listening connection would be a way round the pool
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        started = time.monotonic()
        with pytest.raises(WaitTimeoutError, match="after 3s"):
            await wait_for_workflow(eid, timeout=3)
        took = time.monotonic() - started
        assert took < 3 + 2.5, f"the wait took {took:.1f}s past a 3 s deadline"
    finally:
        for conn in held:
            await pool.release(conn)
    await approve_stage(eid, "gate", "boss")
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
