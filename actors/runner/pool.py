"""The pool of execution actors: ``WFDAG_POOL_SIZE`` detached, restartable runners."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError

from actors.logs import get_logger
from actors.ray_session import on_ray_restart
from actors.runner.actor import ExecutionActor
from actors.runtime import NAMESPACE, settings
from definitions import ClusterUnavailableError, DatabaseConfigError
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
on_ray_restart(_pool_ready.clear)  # a new local Ray: the old handles name nothing

#: How long a runner may take to answer ``ready`` (it connects to the database and certifies
#: its restart) before it is replaced.
READY_SECONDS = 60.0


async def _until_ready(handle: Any, timeout: float = READY_SECONDS) -> None:
    """Wait for a runner, riding out a restart (Ray restarts a killed or crashed runner);
    ``TimeoutError`` when it has not answered in ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await asyncio.wait_for(handle.ready.remote(), max(0.1, deadline - loop.time()))
            return
        except ActorUnavailableError:
            if loop.time() > deadline:
                raise TimeoutError from None
            await asyncio.sleep(0.2)


def _start_runner(database_url: str, index: int) -> Any:
    return _actor_remote().options(
        name=runner_name(index), namespace=NAMESPACE, lifetime="detached", max_restarts=-1,
        num_cpus=0, get_if_exists=True, **runner_placement(),
    ).remote(database_url, runner_name(index))


async def _ready_runner(database_url: str, index: int) -> Any:
    """Runner ``index``, answering: one that does not answer in READY_SECONDS is killed and
    started again once; if the new one does not answer either, the pool cannot start."""
    handle = _start_runner(database_url, index)
    try:
        await _until_ready(handle)
        return handle
    except (TimeoutError, ray.exceptions.RayActorError) as exc:
        get_logger(runner=runner_name(index)).warning(
            "runner.not_ready", seconds=READY_SECONDS, error=type(exc).__name__,
            next_step="replacing it")
        ray.kill(handle, no_restart=True)
    loop = asyncio.get_running_loop()
    until = loop.time() + 10
    while True:  # the killed actor's name is freed once Ray has noted its death
        handle = _start_runner(database_url, index)
        try:
            await _until_ready(handle)
            return handle
        except ray.exceptions.ActorDiedError:
            if loop.time() > until:
                raise
            await asyncio.sleep(0.2)
        except TimeoutError:
            raise ClusterUnavailableError(
                f"runner {runner_name(index)} did not answer within {READY_SECONDS:g}s, twice "
                f"(it was replaced once): Ray may lack the resources to place it "
                f"(`ray status`), or it cannot reach the database; see its log in Ray's "
                f"session directory (logs/worker-*.err)") from None


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
    handles = list(await asyncio.gather(*[_ready_runner(database_url, k)
                                          for k in range(count)]))
    _pool_ready[database_url] = handles
    return handles
