"""Issue 18's new workloads: executions parked on approvals (what the runners gain, and how
soon an approval starts the next stage), a long log adopted by a fresh runner, and `wfdag
status` as a whole process — each beside its floor."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from synthetic import append_log, synthetic_log

from definitions import WorkflowDAG

PARKED = "bench-parked-v1"
ROOT = Path(__file__).resolve().parent.parent


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def parked_dag() -> WorkflowDAG:
    """An approval, then a task stage whose agent stamps the time it started."""
    return WorkflowDAG.model_validate({
        "id": PARKED, "name": "bench parked on an approval", "version": 1,
        "initial_stage": "gate", "final_stages": ["after"],
        "stages": [{"id": "gate", "name": "gate", "kind": "approval", "timeout_seconds": 86400},
                   {"id": "after", "name": "after", "agent": "bench.agents:stamp",
                    "timeout_seconds": 60, "retry_config": "NONE"}],
        "transitions": [{"from_stage": "gate", "to_stage": "after"}],
    })


def runner_rss() -> tuple[int, int]:
    """(how many, summed resident bytes) of the execution actors' processes."""
    count = total = 0
    for proc in psutil.process_iter(["cmdline", "memory_info"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith("ray::ExecutionActor") and proc.info["memory_info"] is not None:
            count += 1
            total += proc.info["memory_info"].rss
    return count, total


async def _count(pool: Any, status: str) -> int:
    return int(await pool.fetchval(
        "SELECT count(*) FROM workflow_executions WHERE workflow_definition_id = $1 "
        "AND status = $2",
        PARKED, status))


async def parked(n: int, approvals: int) -> dict[str, float]:
    """``n`` executions parked on approvals: what the runners' resident memory gains; then
    ``approvals`` of them approved one at a time: approve call → the next stage's agent."""
    from actors import (
        approve_stage,
        execute_workflow_dag,
        get_stage_output,
        register_workflow,
        wait_for_workflow,
    )
    from actors.api import ready_store

    await register_workflow(parked_dag())
    pool = (await ready_store()).pool
    # Warm the runners (each has driven an execution) before the first figure.
    warm = [await execute_workflow_dag(PARKED, {}, "bench") for _ in range(8)]
    await _until(lambda: _count(pool, "waiting"), len(warm), 120, "warm-up")
    for eid in warm:
        await approve_stage(eid, "gate", "bench")
        await wait_for_workflow(eid, timeout=120)
    runners, before = runner_rss()
    sem = asyncio.Semaphore(50)
    t = time.perf_counter()

    async def submit(_i: int) -> str:
        async with sem:
            return await execute_workflow_dag(PARKED, {}, "bench")

    ids = await asyncio.gather(*[submit(i) for i in range(n)])
    _log(f"  {n} submitted in {time.perf_counter() - t:.1f}s")
    await _until(lambda: _count(pool, "waiting"), n, 1800, "parked")
    parked_s = time.perf_counter() - t
    _, after = runner_rss()
    latencies = []
    for eid in ids[:approvals]:
        t0 = time.time()
        await approve_stage(eid, "gate", "bench")
        status = await wait_for_workflow(eid, timeout=120)
        assert status.status == "completed", status.error_message
        latencies.append((float((await get_stage_output(eid, "after"))["t"]) - t0) * 1000)
    return {"parked": n, "parked_in_s": parked_s, "runners": runners,
            "runner_rss_before_mb": before / 2**20, "runner_rss_after_mb": after / 2**20,
            "runner_rss_growth_mb": (after - before) / 2**20, "approvals": len(latencies),
            "approve_to_next_stage_p50_ms": _p50(latencies),
            "approve_to_next_stage_p95_ms": (sorted(latencies)[int(len(latencies) * 0.95)]
                                             if latencies else float("nan"))}


async def _until(measure: Any, wanted: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    shown = time.monotonic()
    while True:
        have = await measure()
        if have >= wanted:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {have} of {wanted} after {timeout}s")
        if time.monotonic() - shown > 10:
            _log(f"  {what}: {have} of {wanted}")
            shown = time.monotonic()
        await asyncio.sleep(0.05)


async def _resume_once(store: Any, events: int, snapshot: bool) -> tuple[float, float, int]:
    """One long log queued for the pool: (seconds until its next stage was dispatched, seconds
    to read its raw rows, its length)."""
    from events import fold
    from events.leases import enqueue
    from events.snapshots import SNAPSHOT_EVERY, save_snapshot

    eid = str(uuid.uuid4())
    log_events = synthetic_log(eid, events, stages=500, finish=False)
    await append_log(store, log_events, chunk=5000)
    if snapshot:
        # As the runners that wrote it leave it: a snapshot every SNAPSHOT_EVERY events —
        # the worst case, its latest one SNAPSHOT_EVERY - 1 events before the end.
        cut = len(log_events) - (SNAPSHOT_EVERY - 1)
        async with store.pool.acquire() as conn:
            assert await save_snapshot(conn, fold(log_events[:cut]), 0)
    t = time.perf_counter()
    await store.pool.fetch("SELECT seq, event_type, metadata FROM workflow_events "
                           "WHERE execution_id = $1::uuid ORDER BY seq", eid)
    read_s = time.perf_counter() - t
    async with store.pool.acquire() as conn:
        t0 = await conn.fetchval("SELECT clock_timestamp()")
        await enqueue(conn, eid, t0)
    started = None
    deadline = time.monotonic() + 120
    while started is None:
        started = await store.pool.fetchval(
            "SELECT created_at FROM workflow_events WHERE execution_id = $1::uuid AND "
            "event_type = 'stage_started' AND stage_id = 'st499'", eid)
        assert time.monotonic() < deadline, "the long log was not resumed within 120 s"
        await asyncio.sleep(0.002)
    return (started - t0).total_seconds(), read_s, len(log_events)


async def long_log(store: Any, events: int, rounds: int = 3) -> dict[str, float]:
    """An execution of ``events`` events, its last stage not yet started, queued for the pool:
    the time until a runner that never saw it has dispatched that stage (its ``stage_started``
    written) — with the fold's snapshot the runners leave, and without one (a log from before
    snapshots) — beside reading the raw rows of its log."""
    with_snap, whole, reads = [], [], []
    length = 0
    for _ in range(rounds):
        took, read_s, length = await _resume_once(store, events, snapshot=True)
        with_snap.append(took)
        reads.append(read_s)
        took, _read, length = await _resume_once(store, events, snapshot=False)
        whole.append(took)
    return {"log_events": length, "resume_p50_ms": _p50(with_snap) * 1000,
            "resume_whole_log_p50_ms": _p50(whole) * 1000,
            "raw_read_p50_ms": _p50(reads) * 1000, "rounds": rounds}


def cli_status(database_url: str, eid: str, rounds: int) -> dict[str, float]:
    """`wfdag status ID` as a whole process with the service up, beside `python -c pass`."""
    home = tempfile.mkdtemp(prefix="wfdag-bench-home-")
    env = {**os.environ, "WFDAG_HOME": home, "WFDAG_DATABASE_URL": database_url,
           "WFDAG_POOL_SIZE": "1", "WFDAG_RAY_DASHBOARD": "0", "WFDAG_UI_PORT": "0"}
    env.pop("RAY_ADDRESS", None)
    wfdag = [sys.executable, "-m", "actors.cli"]
    script = Path(sys.executable).parent / "wfdag"
    if script.exists():
        wfdag = [str(script)]

    def run(args: list[str]) -> float:
        t = time.perf_counter()
        done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=120, check=False)
        took = time.perf_counter() - t
        assert done.returncode == 0, done.stderr[-2000:]
        return took

    started = subprocess.run([*wfdag, "server", "start"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=300, check=False)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        floor, status = [], []
        for _ in range(rounds):
            floor.append(run([sys.executable, "-c", "pass"]))
            status.append(run([*wfdag, "status", eid]))
    finally:
        subprocess.run([*wfdag, "server", "stop"], env=env, cwd=ROOT, capture_output=True,
                       timeout=300, check=False)
    return {"python_pass_p50_ms": _p50(floor) * 1000, "status_p50_ms": _p50(status) * 1000,
            "rounds": rounds}
