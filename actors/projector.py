"""The projection actor: keeps the read models live (LISTEN/NOTIFY, catch-up on start)."""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from actors.logs import get_logger
from actors.runtime import NAMESPACE, new_store
from events import is_database_outage
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
        backoff = 0.5
        while not self._stop.is_set():
            store = None
            try:
                store = await new_store(database_url, max_size=3)
                self._log.info("projections.started", reconnect=backoff > 0.5)
                backoff = 0.5
                await ProjectionRunner(store.pool).run(self._stop)
            except Exception as exc:
                # A database restart ends the LISTEN connection: reconnect and catch up (the
                # checkpoint is in the database: nothing is skipped or applied twice).
                outage = is_database_outage(exc)
                self._log.warning("projections.reconnecting" if outage else "projections.crashed",
                                  error=f"{type(exc).__name__}: {exc}"[:300],
                                  retry_in_s=backoff, exc_info=not outage)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if store is not None:
                    store.pool.terminate()

    async def ready(self) -> bool:
        return not self._task.done()


def ensure_projector(database_url: str) -> Any:
    """Start the projection actor of this cluster if it is not running."""
    return ray.remote(ProjectionActor).options(
        name=PROJECTOR_NAME, namespace=NAMESPACE, lifetime="detached", max_restarts=-1,
        num_cpus=0, get_if_exists=True,
    ).remote(database_url)
