"""The partition scenario, run as its own process by ``test_partition.py`` (its own local
Ray; the suite's PostgreSQL, a database of its own).

Four runners ("A") reach PostgreSQL through a TCP proxy of this process; each drives one
execution whose first stage ticks (writes its pid and the time every 0.1 s) for 20 s.  Then
the proxy cuts them off: it closes their server-side connections (PostgreSQL ends their
sessions, so their advisory locks — the leases — are free) and drops everything from and to
them (a partition: the runners hear nothing).  Four runners ("B") with a direct connection
take the executions over.  The bar: no stage ticks in two processes at the same time; every
execution completes once; after the partition heals, A's runners serve again on their own.
Prints one JSON line with the figures.
"""

from __future__ import annotations

import asyncio
import glob
import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

EXECUTIONS = 4
STAGE_SECONDS = 20.0  # unfenced, A's attempts would still run when B takes over


def log(message: str) -> None:
    print(f"[partition {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Proxy:
    """TCP on 127.0.0.1 → the server's Unix socket, in a thread with its own event loop;
    :meth:`cut` partitions every client, :meth:`heal` lets new clients through again."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.cut_off = False
        self.port = 0
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = []
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            self._pairs.append((writer, None))  # a black hole: accepted, never answered
            return
        up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
        self._pairs.append((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if self.cut_off:
                        return  # dropped on the floor
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        def do() -> None:
            self.cut_off = True
            for _client, upstream in self._pairs:
                if upstream is not None:
                    upstream.close()  # the server ends the session (and frees its locks)
        self._loop.call_soon_threadsafe(do)

    def heal(self) -> None:
        def do() -> None:
            self.cut_off = False
            for client, _upstream in self._pairs:
                client.close()  # the old connections are gone for good: they reconnect
            self._pairs.clear()
        self._loop.call_soon_threadsafe(do)


def ticks(work: Path) -> dict[str, dict[int, tuple[float, float]]]:
    """Per execution: each pid's first and last tick."""
    found: dict[str, dict[int, tuple[float, float]]] = {}
    for path in work.glob("ticks-*"):
        eid = path.name.removeprefix("ticks-")
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 2:
                continue
            pid, at = int(parts[0]), float(parts[1])
            first, last = found.setdefault(eid, {}).get(pid, (at, at))
            found[eid][pid] = (min(first, at), max(last, at))
    return found


def overlaps(spans: dict[int, tuple[float, float]]) -> int:
    items = sorted(spans.values())
    return sum(1 for (_, end), (start, _) in itertools.pairwise(items) if start < end)


async def main_async(direct: str, proxied: str, proxy: Proxy, work: Path) -> dict[str, Any]:
    import ray

    from actors import execute_workflow_dag, register_workflow, wait_for_workflow
    from actors.runner.actor import ExecutionActor
    from actors.runner.pool import _until_ready, ensure_pool
    from actors.runtime import NAMESPACE
    from definitions import WorkflowDAG

    dag = WorkflowDAG.model_validate({
        "id": "partition-v1", "name": "partition", "version": 1, "initial_stage": "tick",
        "final_stages": ["after"],
        "stages": [{"id": "tick", "name": "Tick", "agent": "tests.agents:ticker",
                    "timeout_seconds": 120, "retry_config": "STANDARD"},
                   {"id": "after", "name": "After", "agent": "tests.agents:noop",
                    "timeout_seconds": 30}],
        "transitions": [{"from_stage": "tick", "to_stage": "after"}]})
    await register_workflow(dag)
    await ensure_pool(proxied, size=EXECUTIONS)  # A: through the proxy
    ids = [await execute_workflow_dag(dag.id, {"dir": str(work), "seconds": STAGE_SECONDS},
                                      "partition") for _ in range(EXECUTIONS)]
    deadline = time.monotonic() + 60
    while len(ticks(work)) < EXECUTIONS:
        assert time.monotonic() < deadline, "A's runners did not start every stage"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # well into the stage
    log("cutting A's runners off")
    cut_at = time.time()
    proxy.cut()
    b_runners = [ray.remote(ExecutionActor).options(
        name=f"b-runner-{k}", namespace=NAMESPACE, lifetime="detached", max_restarts=-1,
        num_cpus=0).remote(direct, f"b-runner-{k}") for k in range(EXECUTIONS)]
    await asyncio.gather(*[_until_ready(h) for h in b_runners])
    log("B's runners are up")
    results = [await wait_for_workflow(i, timeout=180) for i in ids]
    log("every execution ended; healing the partition")
    proxy.heal()
    for handle in b_runners:
        ray.kill(handle, no_restart=True)
    # A's runners serve again on their own: a new execution completes on them.
    again = await execute_workflow_dag(dag.id, {"dir": str(work), "seconds": 0.5}, "partition")
    healed = await wait_for_workflow(again, timeout=120)
    spans = ticks(work)
    takeover = [min(s for s, _ in spans[i].values() if s > cut_at) for i in ids
                if any(s > cut_at for s, _ in spans[i].values())]
    return {
        "executions": len(ids),
        "completed": sum(r.status == "completed" for r in results),
        "overlapping": sum(overlaps(spans.get(i, {})) for i in ids),
        "processes_per_stage": [len(spans.get(i, {})) for i in ids],
        "takeover_after_s": [round(t - cut_at, 1) for t in takeover],
        "fenced_after_s": [round(max(e for s, e in spans[i].values() if s < cut_at) - cut_at, 1)
                           for i in ids if any(s < cut_at for s, _ in spans[i].values())],
        "healed_runner_completed": healed.status == "completed",
        "spans": {i[:8]: sorted((round(a - cut_at, 1), round(b - cut_at, 1))
                               for a, b in spans.get(i, {}).values()) for i in ids},
    }


def main() -> int:
    direct = os.environ["WFDAG_DATABASE_URL"]
    parts = urlsplit(direct)
    host = parse_qs(parts.query)["host"][0]
    socket_path = sorted(glob.glob(os.path.join(host, ".s.PGSQL.*")))[0]
    proxy = Proxy(socket_path)
    user = parts.username or "postgres"
    proxied = f"postgresql://{user}@127.0.0.1:{proxy.port}{parts.path}"
    work = Path(os.environ["WFDAG_PARTITION_DIR"])
    result: dict[str, Any] = {}
    started = time.monotonic()
    try:
        from actors.ray_session import ensure_ray

        ensure_ray()
        result = asyncio.run(main_async(direct, proxied, proxy, work))
    finally:
        result["seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(result), flush=True)
        import ray

        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
