"""Process-wide plumbing: the Ray connection, the database URL, per-loop stores, limits."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

import ray

from actors.logs import get_logger
from definitions import PayloadTooLargeError
from events import EventStore, connect_pool, resolve_database_url
from projections import project_executions
from projections.queue import project_queue

__all__ = [
    "NAMESPACE",
    "ensure_ray",
    "get_database_url",
    "get_store",
    "max_payload_bytes",
    "new_store",
    "run_sync",
]

NAMESPACE = "wfdag"
WARM_WORKERS = int(os.environ.get("WFDAG_WARM_WORKERS", "12"))
T = TypeVar("T")


def max_payload_bytes() -> int:
    """The size limit of a context or an agent output (``WFDAG_MAX_PAYLOAD_BYTES``, 1 MiB)."""
    return int(os.environ.get("WFDAG_MAX_PAYLOAD_BYTES", str(1024 * 1024)))


def check_payload_size(what: str, encoded: str) -> None:
    size = len(encoded.encode())
    limit = max_payload_bytes()
    if size > limit:
        raise PayloadTooLargeError(what, size, limit)


_ray_lock = threading.Lock()


@ray.remote(num_cpus=0)
def _warm(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def ensure_ray(address: str | None = None) -> None:
    """Join ``address`` / ``RAY_ADDRESS``, or start a local Ray bound to 127.0.0.1."""
    with _ray_lock:
        if ray.is_initialized():
            return
        log = get_logger()
        target = address or os.environ.get("RAY_ADDRESS")
        log_to_driver = os.environ.get("WFDAG_RAY_LOG_TO_DRIVER") == "1"
        if target:
            ray.init(address=target, namespace=NAMESPACE, log_to_driver=log_to_driver)
            log.info("ray.joined", address=target)
            return
        # Agent modules next to the driver must import on the workers of this local Ray.
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if os.getcwd() not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *paths])
        started = time.monotonic()
        ray.init(
            namespace=NAMESPACE,
            dashboard_host="127.0.0.1",
            include_dashboard=os.environ.get("WFDAG_RAY_DASHBOARD", "1") == "1",
            log_to_driver=log_to_driver,
            configure_logging=True,
            logging_level=logging.WARNING,
            _system_config={"num_workers_soft_limit": WARM_WORKERS},
        )
        # Start idle workers now so that the first fork does not wait on process starts.
        ray.get([_warm.remote(0.3) for _ in range(WARM_WORKERS)])
        log.info("ray.started", seconds=round(time.monotonic() - started, 2))


_url_lock = threading.Lock()
_database_url: str | None = None


def get_database_url(explicit: str | None = None) -> str:
    """The database URL this process uses (resolved once; the embedded server started once)."""
    global _database_url
    if explicit:
        return explicit
    with _url_lock:
        if _database_url is None:
            _database_url = resolve_database_url()
        return _database_url


def set_database_url(url: str | None) -> None:
    """Forget (or replace) the resolved URL; later calls resolve again."""
    global _database_url
    with _url_lock:
        _database_url = url


_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, EventStore]] = (
    weakref.WeakKeyDictionary()
)


async def new_store(url: str, *, max_size: int = 5) -> EventStore:
    pool = await connect_pool(url, min_size=1, max_size=max_size)
    return EventStore(pool, projectors=[project_executions, project_queue])


async def get_store(database_url: str | None = None) -> EventStore:
    """A store on this event loop's pool (pools are bound to the loop that opened them)."""
    url = get_database_url(database_url)
    loop = asyncio.get_running_loop()
    per_loop = _stores.setdefault(loop, {})
    store = per_loop.get(url)
    if store is None:
        store = await new_store(url)
        per_loop[url] = store
    return store


async def close_stores() -> None:
    """Close this loop's pools."""
    per_loop = _stores.pop(asyncio.get_running_loop(), {})
    for store in per_loop.values():
        await store.close()


class _LoopThread:
    """One background event loop for the blocking twins of the async API."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="wfdag-sync", daemon=True)
                thread.start()
                self._loop = loop
            return self._loop


_loop_thread = _LoopThread()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from plain (or async) code on the background loop."""
    return asyncio.run_coroutine_threadsafe(coro, _loop_thread.loop()).result()

