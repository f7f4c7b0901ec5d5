"""The execution actor: the Ray face of a runner, with nothing but read-only methods.

Anyone who holds its handle (``execution_actor(id)`` hands it out) can call what it exposes,
so it exposes only what is safe to call: ``ready``, ``node_id``, ``current`` and ``executing``.
The drive itself runs inside, started by the actor's own construction, never by a call.
"""

from __future__ import annotations

import asyncio

import ray

from actors.logs import configure
from actors.runner.serve import Runner

__all__ = ["PUBLIC_METHODS", "ExecutionActor"]

#: The methods a caller of the actor may use (a test holds the class to exactly these).
PUBLIC_METHODS = frozenset({"ready", "node_id", "current", "executing"})


class ExecutionActor:
    """A pooled execution actor, ``wfdag-runner-<k>``: adopts queued executions one at a time.

    It claims the oldest queued execution nobody runs by taking its lease, then drives it — with
    an actor task of its own named ``wfdag-exec-<execution id>`` running alongside (so the Ray
    dashboard shows which execution each runner drives) — releases the lease and claims the
    next.  Spawn the pool with :func:`actors.runner.ensure_pool`.
    """

    def __init__(self, database_url: str, name: str) -> None:
        configure()  # a runner is a process of wfdag's own: its lines go to its worker log
        self.__runner = Runner(database_url, name)
        # An async actor's __init__ runs on its running event loop: schedule the work there.
        self.__task = asyncio.get_running_loop().create_task(self.__runner.serve())

    async def ready(self) -> str:
        """This runner's name, once it is constructed (its serve loop runs)."""
        return self.__runner.name

    async def node_id(self) -> str:
        """The Ray node this runner lives on (it moves when its node is lost)."""
        return str(ray.get_runtime_context().get_node_id())

    async def current(self) -> str | None:
        """The execution this runner drives now, if any."""
        return await self.__runner.current()

    async def executing(self, execution_id: str) -> str:
        """Runs while this runner drives ``execution_id`` (as the actor task
        ``wfdag-exec-<id>``, so that the dashboard shows which execution each runner drives)."""
        driving = self.__runner.driving.get(execution_id)
        if driving is not None:
            await driving.wait()
        return execution_id
