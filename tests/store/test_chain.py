"""The tamper-evident log (issue 16): each tampering of the issue, detected by verify and
refused by every reader that replays — on a database of its own (the tampered logs must not
meet the other tests' rebuilds)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from definitions import CANONICAL_WORKFLOWS, BrokenChainError
from events import (
    EventStore,
    StageCompleted,
    StageStarted,
    WorkflowInitiated,
    connect_pool,
    migrate,
)
from events.chain import verify_chains
from projections import project_executions, rebuild_projections
from tests.conftest import create_database

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
DAG = CANONICAL_WORKFLOWS["opportunity-discovery-v1"]
FIRST, SECOND = DAG.stages[0].id, DAG.stages[1].id


@pytest.fixture
async def chained_url(server_url: str) -> str:
    return await create_database(server_url, "wfdag_chain")


@pytest.fixture
async def chained(chained_url: str) -> AsyncIterator[EventStore]:
    pool = await connect_pool(chained_url, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn)
    yield EventStore(pool, projectors=[project_executions])
    try:
        await asyncio.wait_for(pool.close(), 10)
    except TimeoutError:
        pool.terminate()


async def _log(store: EventStore, org: str = "org-victim") -> str:
    """An execution in progress: started, its first stage completed, the second started
    (appended in three appends, as a runner would)."""
    eid = str(uuid.uuid4())
    at = [T0 + timedelta(seconds=n) for n in range(5)]
    await store.append([WorkflowInitiated(
        execution_id=eid, seq=1, at=at[0], workflow_id=DAG.id, workflow_version=DAG.version,
        dag=DAG.model_dump(mode="json"), context={"organizationId": org, "amount": 10},
        user_id="ann")], expected_version=0)
    await store.append([StageStarted(execution_id=eid, seq=2, at=at[1], stage_id=FIRST),
                        StageCompleted(execution_id=eid, seq=3, at=at[2], stage_id=FIRST,
                                       attempt=1, output={"score": 1}, duration_ms=5)],
                       expected_version=1)
    await store.append([StageStarted(execution_id=eid, seq=4, at=at[3], stage_id=SECOND)],
                       expected_version=3)
    return eid


async def _report(store: EventStore, eid: str) -> dict[str, object]:
    [report] = await verify_chains(store.pool, eid)
    return report.to_json()


async def test_an_untouched_log_holds_and_reads(chained: EventStore) -> None:
    eid = await _log(chained)
    assert (await _report(chained, eid))["ok"] is True
    assert [e.seq for e in await chained.read(eid)] == [1, 2, 3, 4]
    assert [e.seq for e in await chained.read(eid, after_seq=2)] == [3, 4]
    chains = await chained.pool.fetch(
        "SELECT chain FROM workflow_events WHERE execution_id = $1::uuid ORDER BY seq", eid)
    assert len({r["chain"] for r in chains}) == 4 and all(len(r["chain"]) == 64 for r in chains)


async def _edit(conn: asyncpg.Connection, eid: str, seq: int, metadata: dict[str, object],
                ) -> None:
    await conn.execute("UPDATE workflow_events SET metadata = $3 WHERE execution_id = "
                       "$1::uuid AND seq = $2", eid, seq, metadata)


async def _metadata(conn: asyncpg.Connection, eid: str, seq: int) -> dict[str, object]:
    value = await conn.fetchval("SELECT metadata FROM workflow_events WHERE execution_id = "
                                "$1::uuid AND seq = $2", eid, seq)
    return dict(value)


async def _move_to_another_organization(conn: asyncpg.Connection, eid: str) -> int:
    meta = await _metadata(conn, eid, 1)
    meta["context"] = {**meta["context"], "organizationId": "org-thief"}  # type: ignore[dict-item]
    await _edit(conn, eid, 1, meta)
    return 1


async def _forge_an_output(conn: asyncpg.Connection, eid: str) -> int:
    meta = await _metadata(conn, eid, 3)
    meta["output"] = {"score": 1_000_000}
    await _edit(conn, eid, 3, meta)
    return 3


async def _insert_a_completion(conn: asyncpg.Connection, eid: str) -> int:
    """A ``stage_completed`` slipped in before the running stage's start (later events moved
    up one seq to make room), as if the stage had run."""
    await conn.execute("UPDATE workflow_events SET seq = seq + 1 WHERE execution_id = "
                       "$1::uuid AND seq = 4", eid)
    await conn.execute(
        "INSERT INTO workflow_events (execution_id, seq, event_type, stage_id, metadata, "
        "created_at, chain) VALUES ($1::uuid, 4, 'stage_completed', $2, $3, $4, repeat('0', "
        "64))", eid, SECOND, {"attempt": 1, "output": {"forged": True}, "duration_ms": 1},
        T0 + timedelta(seconds=3))
    return 4


async def _swap_a_pending_agent(conn: asyncpg.Connection, eid: str) -> int:
    meta = await _metadata(conn, eid, 1)
    text = json.dumps(meta).replace('"agent_type": "opportunity"', '"agent": "evil.mod:run", '
                                    '"agent_type": null', 1)
    await _edit(conn, eid, 1, json.loads(text))
    return 1


async def _delete_an_event(conn: asyncpg.Connection, eid: str) -> int:
    await conn.execute("DELETE FROM workflow_events WHERE execution_id = $1::uuid AND seq = 2",
                       eid)
    return 3


@pytest.mark.parametrize("tamper", [_move_to_another_organization, _forge_an_output,
                                    _insert_a_completion, _swap_a_pending_agent,
                                    _delete_an_event])
async def test_each_tampering_is_detected_by_verify_and_refused_by_readers(
    tamper: object, chained: EventStore,
) -> None:
    eid = await _log(chained)
    async with chained.pool.acquire() as conn:
        at = await tamper(conn, eid)  # type: ignore[operator]
    report = await _report(chained, eid)
    assert report["ok"] is False and report["broken_at"] == at, report
    assert isinstance(report["problem"], str) and str(at) in report["problem"]
    with pytest.raises(BrokenChainError, match=f"broken at seq {at}") as raised:
        await chained.read(eid)
    assert f"wfdag verify {eid}" in str(raised.value)
    # The evidence can still be exported as it is.
    assert len(await chained.read(eid, check_chain=False)) >= 3
    others = await _log(chained)  # other logs are not affected
    assert (await _report(chained, others))["ok"] is True


async def test_a_rebuild_reports_the_broken_logs_as_verify_does(
    chained: EventStore,
) -> None:
    """The rebuild checks the chains on a second connection while it projects: for every
    tampering, and for logs left whole, it reports exactly what ``verify_chains`` reports."""
    tampered = {}
    for tamper in (_move_to_another_organization, _forge_an_output, _insert_a_completion,
                   _swap_a_pending_agent, _delete_an_event):
        eid = await _log(chained)
        async with chained.pool.acquire() as conn:
            tampered[eid] = await tamper(conn, eid)
    whole = [await _log(chained) for _ in range(3)]
    report = await rebuild_projections(chained.pool)
    by_sql = [r.to_json() for r in await verify_chains(chained.pool) if not r.ok]
    assert report["broken"] == by_sql
    assert {b["execution_id"]: b["broken_at"] for b in report["broken"]} == tampered
    assert not {b["execution_id"] for b in report["broken"]} & set(whole)


async def test_a_read_model_moved_to_another_organization_is_reported(
    chained: EventStore,
) -> None:
    eid = await _log(chained)
    await chained.pool.execute("UPDATE workflow_executions SET organization_id = 'org-thief' "
                               "WHERE id = $1::uuid", eid)
    report = await _report(chained, eid)
    assert report["ok"] is False and "org-thief" in str(report["problem"])
    assert "projections rebuild" in str(report["problem"])


async def test_appends_after_a_tampering_do_not_mend_it(chained: EventStore) -> None:
    eid = await _log(chained)
    async with chained.pool.acquire() as conn:
        await _forge_an_output(conn, eid)
    await chained.append([StageCompleted(execution_id=eid, seq=5, at=T0 + timedelta(seconds=9),
                                         stage_id=SECOND, attempt=1, output={},
                                         duration_ms=1)], expected_version=4)
    assert (await _report(chained, eid))["broken_at"] == 3


async def test_the_cli_reports_a_broken_log_and_refuses_to_replay_it(
    chained: EventStore, chained_url: str,
) -> None:
    from tests.integration.test_projections import wfdag

    broken, whole = await _log(chained), await _log(chained)
    async with chained.pool.acquire() as conn:
        await _forge_an_output(conn, broken)
    env = {"WFDAG_DATABASE_URL": chained_url}
    one = wfdag("verify", broken, env=env)
    assert one.returncode == 1 and "BROKEN at seq 3" in one.stdout, one.stdout + one.stderr
    assert wfdag("verify", whole, env=env).returncode == 0
    every = wfdag("verify", "--all", "--json", env=env)
    assert every.returncode == 1, every.stderr
    report = json.loads(every.stdout)
    assert [b["execution_id"] for b in report["broken"]] == [broken]
    rebuilt = wfdag("projections", "rebuild", env=env)
    assert rebuilt.returncode == 1 and broken in rebuilt.stdout, rebuilt.stdout
    for verb in (["events", broken], ["replay", broken], ["status", whole, "--json"]):
        done = wfdag(*verb, env=env)
        if verb[0] == "status":
            assert done.returncode == 0, done.stderr
        else:
            assert done.returncode == 1 and "broken at seq 3" in done.stderr, done.stderr
            assert "Traceback" not in done.stderr
    raw = wfdag("events", broken, "--unchecked", "--json", env=env)
    assert raw.returncode == 0 and len(raw.stdout.splitlines()) == 4
    usage = wfdag("verify", env=env)
    assert usage.returncode == 2 and "wfdag verify ID" in usage.stderr


async def test_the_snapshot_and_the_events_after_it_are_read_in_one_statement(
    chained: EventStore,
) -> None:
    """``read_from_snapshot`` (a runner's adoption): no snapshot → the whole log; one that
    holds → it and the events after it, each link checked from its event on; an edited one →
    the whole log, and its fate; a link broken after it → ``BrokenChainError``.  The same as
    load_snapshot() and read() apart."""
    from events import fold
    from events.snapshots import load_snapshot, read_from_snapshot, save_snapshot

    eid = await _log(chained)
    log = await chained.read(eid)
    async with chained.pool.acquire() as conn:
        assert await read_from_snapshot(conn, eid) == (None, "none", log)
        assert await save_snapshot(conn, fold(log[:2]), 100)
        snap, fate, events = await read_from_snapshot(conn, eid)
        assert fate == "used" and snap is not None
        assert (snap, fate) == await load_snapshot(conn, eid)
        assert snap.state.version == 2 and events == log[2:]
        assert fold(events, snap.state) == fold(log)
        # The snapshot edited: not used, and the whole log is read in the same statement.
        await conn.execute("UPDATE workflow_snapshots SET state = state || ' ' "
                           "WHERE execution_id = $1::uuid", eid)
        assert await read_from_snapshot(conn, eid) == (None, "broken", log)
        # A snapshot that holds, and an event after it edited: the reader refuses the log.
        assert await save_snapshot(conn, fold(log[:3]), 100)
        assert (await read_from_snapshot(conn, eid))[1] == "used"
        await conn.execute("UPDATE workflow_events SET metadata = metadata || '{\"x\": 1}' "
                           "WHERE execution_id = $1::uuid AND seq = 4", eid)
        with pytest.raises(BrokenChainError) as info:
            await read_from_snapshot(conn, eid)
        assert info.value.seq == 4
