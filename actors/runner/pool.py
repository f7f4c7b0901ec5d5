"""The pool of execution actors: ``WFDAG_POOL_SIZE`` detached, restartable runners."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError

from actors.runner.actor import ExecutionActor
from actors.runtime import NAMESPACE, settings
from definitions import DatabaseConfigError
from events import is_embedded_default

__all__ = [
    "check_database_reachable_by_cluster",
    "ensure_pool",
    "runner_name",
    "runner_placement",
]


def runner_name(index: int) -> str:
    return f"wfdag-runner-{index}"


@cache
def _actor_remote() -> Any:
    return ray.remote(ExecutionActor)


_pool_ready: dict[str, list[Any]] = {}


async def _until_ready(handle: Any, timeout: float = 60.0) -> None:
    """Wait for a runner, riding out a restart (Ray restarts a killed or crashed runner)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await handle.ready.remote()
            return
        except ActorUnavailableError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


def runner_placement() -> dict[str, Any]:
    """Extra Ray options of the runners: ``WFDAG_RUNNER_RESOURCES`` (a JSON object of custom
    resources, e.g. ``{"wfdag": 0.01}``) keeps them on the nodes that offer those resources."""
    resources = settings().runner_resources
    return {"resources": dict(resources)} if resources else {}


def check_database_reachable_by_cluster(database_url: str) -> None:
    """Refuse the embedded default database on a multi-node cluster: it lives on one machine."""
    if not is_embedded_default(database_url):
        return
    alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    if len(alive) > 1:
        raise DatabaseConfigError(
            f"the embedded PostgreSQL lives on this machine only, and this Ray cluster has "
            f"{len(alive)} nodes: set WFDAG_DATABASE_URL to a PostgreSQL server that every "
            f"node reaches (see README, 'From one machine to a cluster')")


async def ensure_pool(
    database_url: str, size: int | None = None, *, refresh: bool = False
) -> list[Any]:
    """Start the runners this cluster lacks (``WFDAG_POOL_SIZE``, default 8) and wait for them.

    The pool size is the admission cap: at most that many executions run at once; the rest
    wait, durably, in ``execution_queue`` (status ``queued``).  ``refresh`` looks again
    instead of trusting the handles of a pool seen ready before (a runner may have died)."""
    count = size or settings().pool_size
    ready = None if refresh else _pool_ready.get(database_url)
    if ready is not None and len(ready) >= count:
        return ready  # started already: no round trip to Ray on the hot path
    check_database_reachable_by_cluster(database_url)
    handles = [
        _actor_remote().options(
            name=runner_name(k), namespace=NAMESPACE, lifetime="detached", max_restarts=-1,
            num_cpus=0, get_if_exists=True, **runner_placement(),
        ).remote(database_url, runner_name(k))
        for k in range(count)
    ]
    await asyncio.gather(*[_until_ready(h) for h in handles])
    _pool_ready[database_url] = handles
    return handles
