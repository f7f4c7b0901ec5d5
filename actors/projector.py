"""The projection actor: keeps the read models live (LISTEN/NOTIFY, catch-up on start)."""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from actors.logs import get_logger
from actors.runtime import NAMESPACE, new_store
from projections import ProjectionRunner

__all__ = ["PROJECTOR_NAME", "ProjectionActor", "ensure_projector"]

PROJECTOR_NAME = "wfdag-projections"


class ProjectionActor:
    """Runs :meth:`ProjectionRunner.run` until killed; restarted by Ray if it dies."""

    def __init__(self, database_url: str) -> None:
        self._stop = asyncio.Event()
        self._log = get_logger(component="projections")
        self._task = asyncio.get_running_loop().create_task(self._main(database_url))

    async def _main(self, database_url: str) -> None:
        store = await new_store(database_url, max_size=3)
        self._log.info("projections.started")
        try:
            await ProjectionRunner(store.pool).run(self._stop)
        except Exception:
            self._log.exception("projections.crashed")
            raise
        finally:
            await store.close()

    async def ready(self) -> bool:
        return not self._task.done()


def ensure_projector(database_url: str) -> Any:
    """Start the projection actor of this cluster if it is not running."""
    return ray.remote(ProjectionActor).options(
        name=PROJECTOR_NAME, namespace=NAMESPACE, lifetime="detached", max_restarts=-1,
        num_cpus=0, get_if_exists=True,
    ).remote(database_url)
