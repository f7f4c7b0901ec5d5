"""Process-wide plumbing: settings, the database URL, per-loop stores (the Ray session is
:mod:`actors.ray_session`).

:func:`settings` reads every ``WFDAG_*`` variable once, into a frozen :class:`Settings`.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import threading
import weakref
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

from actors.logs import get_logger
from definitions import (
    DEFAULT_MAX_LOG_BYTES,
    DEFAULT_MAX_PAYLOAD_BYTES,
    InvalidArgumentError,
    PayloadTooLargeError,
)
from events import EventStore, connect_pool, resolve_database_url
from events.leases import project_queue
from projections import ExecutionsProjector

__all__ = [
    "NAMESPACE",
    "Settings",
    "check_payload_size",
    "close_stores",
    "get_database_url",
    "get_store",
    "new_store",
    "reload_settings",
    "run_sync",
    "set_database_url",
    "settings",
]

NAMESPACE = "wfdag"
T = TypeVar("T")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgumentError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise InvalidArgumentError(f"{name} must not be negative, got {value}")
    return value


def _resources(raw: str | None) -> dict[str, float]:
    if not raw:
        return {}
    try:
        resources = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgumentError(f"WFDAG_RUNNER_RESOURCES is not JSON: {exc}") from None
    if not isinstance(resources, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0
            for v in resources.values()):
        raise InvalidArgumentError(
            "WFDAG_RUNNER_RESOURCES must be a JSON object of positive numbers, "
                         f"got {raw!r}")
    return {str(k): float(v) for k, v in resources.items()}


@dataclass(frozen=True, slots=True)
class Settings:
    """Every ``WFDAG_*`` setting of this process (README, "Settings")."""

    #: Execution actors (runners) of the pool: at most this many executions run at once.
    pool_size: int = 8
    #: Threads a runner gives its local stages.
    local_threads: int = 32
    #: Re-adoptions after a runner died on an execution before it is dead-lettered.
    max_recoveries: int = 5
    #: Idle Ray workers kept warm by a local Ray, so that forks start at once.
    warm_workers: int = 12
    #: The most stage workers a node holds, all its runners together (0: a Ray task per stage).
    stage_workers: int = 12
    #: A stage worker idle this long is stopped.
    stage_worker_idle_seconds: float = 60.0
    #: Size limit of a context, an agent output or a definition (bytes of JSON).
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    #: The most an execution's log may hold.
    max_log_bytes: int = DEFAULT_MAX_LOG_BYTES
    #: A local Ray starts its dashboard.
    ray_dashboard: bool = True
    #: Ray workers' output is printed by the driver.
    ray_log_to_driver: bool = False
    #: Custom Ray resources every runner asks for (keeps runners on nodes that offer them).
    runner_resources: dict[str, float] = field(default_factory=dict)
    #: Where the service serves the console (``WFDAG_UI_HOST``, ``WFDAG_UI_PORT``; port 0: any
    #: free port, said in ``service.json`` and by ``wfdag ui``).
    ui_host: str = "127.0.0.1"
    ui_port: int = 8377

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            pool_size=max(1, _int(env, "WFDAG_POOL_SIZE", 8)),
            local_threads=max(1, _int(env, "WFDAG_LOCAL_THREADS", 32)),
            max_recoveries=_int(env, "WFDAG_MAX_RECOVERIES", 5),
            warm_workers=_int(env, "WFDAG_WARM_WORKERS", 12),
            stage_workers=max(0, _int(env, "WFDAG_STAGE_WORKERS", 12)),
            stage_worker_idle_seconds=float(
                max(1, _int(env, "WFDAG_STAGE_WORKER_IDLE_SECONDS", 60))),
            max_payload_bytes=_int(env, "WFDAG_MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES),
            max_log_bytes=_int(env, "WFDAG_MAX_LOG_BYTES", DEFAULT_MAX_LOG_BYTES),
            ray_dashboard=env.get("WFDAG_RAY_DASHBOARD", "1") == "1",
            ray_log_to_driver=env.get("WFDAG_RAY_LOG_TO_DRIVER") == "1",
            runner_resources=_resources(env.get("WFDAG_RUNNER_RESOURCES")),
            ui_host=env.get("WFDAG_UI_HOST") or "127.0.0.1",
            ui_port=max(0, _int(env, "WFDAG_UI_PORT", 8377)),
        )


@cache
def settings() -> Settings:
    """This process's settings, read from the environment on first use."""
    return Settings.from_env(os.environ)


def reload_settings() -> Settings:
    """Read the environment again (for a process that changed it on purpose)."""
    settings.cache_clear()
    return settings()


def check_payload_size(what: str, encoded: str) -> None:
    size = len(encoded.encode())
    limit = settings().max_payload_bytes
    if size > limit:
        raise PayloadTooLargeError(what, size, limit)


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
    """A store on a new pool, with the read models kept in each append (its own row cache:
    the rows belong to this database)."""
    pool = await connect_pool(url, min_size=1, max_size=max_size)
    return EventStore(pool, projectors=[ExecutionsProjector(), project_queue])


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
    """One background event loop for the blocking twins of the async API; its stores are
    closed when the process exits (asyncpg complains about pools left open)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="wfdag-sync", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
                atexit.register(self.close)
            return self._loop

    def close(self) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(close_stores(), loop).result(timeout=5)
        except Exception as exc:  # exiting anyway: say why, never raise from atexit
            get_logger().warning("runtime.close_failed", error=f"{type(exc).__name__}: {exc}")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not loop.is_running():
            loop.close()


_loop_thread = _LoopThread()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from plain (or async) code on the background loop."""
    return asyncio.run_coroutine_threadsafe(coro, _loop_thread.loop()).result()
