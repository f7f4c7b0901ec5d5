"""Issue 15's Ray-death case, run as its own process (``test_ray_death.py`` starts it).

This process starts a local Ray and its pool, starts executions of a two-stage workflow whose
stages perform a side effect once per idempotency key, and kills every process of its local
Ray (GCS, raylet, workers, agents: SIGKILL) while the first stages run.  It then calls
``initialize_workflow_system()`` — which must notice the dead Ray, start a new one and a new
pool within a bounded time — and waits for every execution.  It prints one JSON line of
figures: what completed, how long recovery took, each stage's completions and each key's side
effects.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

EXECUTIONS = 8
STAGE_SECONDS = 3.0


def log(message: str) -> None:
    print(f"[raydeath {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def kill_local_ray() -> list[str]:
    """SIGKILL every process this one started (all of them are its local Ray's)."""
    import psutil

    killed: list[str] = []
    victims = psutil.Process().children(recursive=True)
    for child in victims:
        try:
            name = child.name()
            child.send_signal(signal.SIGKILL)
            killed.append(name)
        except psutil.NoSuchProcess:
            continue
    # Dead, not dying: the scenario is "Ray died, then the driver calls again".
    _gone, alive = psutil.wait_procs(victims, timeout=30)
    assert not alive, f"still alive after SIGKILL: {alive}"
    return killed


def _calls(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def main_async(work: Path) -> dict[str, Any]:
    import actors

    await actors.initialize_workflow_system()
    stages = [{"id": s, "name": s, "agent": "tests.agents:effectful", "timeout_seconds": 60,
               "retry_config": "STANDARD"} for s in ("one", "two")]
    dag = await actors.register_workflow({
        "id": "raydeath-v1", "name": "raydeath", "version": 1, "initial_stage": "one",
        "final_stages": ["two"], "stages": stages,
        "transitions": [{"from_stage": "one", "to_stage": "two"}]})
    ids = [await actors.execute_workflow_dag(
        dag.id, {"dir": str(work), "seconds": STAGE_SECONDS, "n": n}, "raydeath",
        idempotency_key=f"raydeath-{n}") for n in range(EXECUTIONS)]
    deadline = time.monotonic() + 60
    while _calls(work / "calls-one") < 2:  # first stages are running: now
        assert time.monotonic() < deadline, "no first stage started"
        await asyncio.sleep(0.1)
    killed = await asyncio.to_thread(kill_local_ray)
    from actors.ray_session import local_ray_dead

    log(f"killed the local Ray: {Counter(killed)}; seen dead: {local_ray_dead()}")
    started = time.monotonic()
    report = await asyncio.wait_for(actors.initialize_workflow_system(), 180)
    recovered_s = time.monotonic() - started
    log(f"initialize_workflow_system returned in {recovered_s:.1f} s: pool {report['pool']}")
    ended = {eid: (await actors.wait_for_workflow(eid, timeout=180)).status for eid in ids}
    completions: Counter[str] = Counter()
    for eid in ids:
        for event in await actors.get_execution_events(eid):
            if event.type == "stage_completed":
                completions[f"{eid}:{event.stage_id}"] += 1
    effects = sorted(p.name for p in await asyncio.to_thread(lambda: list(work.glob("effect-*"))))
    return {
        "executions": len(ids),
        "killed_processes": len(killed),
        "recovered_s": round(recovered_s, 1),
        "pool": report["pool"],
        "completed": sum(1 for s in ended.values() if s == "completed"),
        "not_completed": {e: s for e, s in ended.items() if s != "completed"},
        "stage_completions": sorted(set(completions.values())),
        "stages_completed": len(completions),
        "side_effects": len(effects),
        "distinct_effect_keys": len(set(effects)),
    }


def main() -> int:
    work = Path(os.environ["WFDAG_RAYDEATH_DIR"])
    result: dict[str, Any] = {}
    started = time.monotonic()
    try:
        result = asyncio.run(main_async(work))
    finally:
        result["seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(result), flush=True)
        import ray

        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
