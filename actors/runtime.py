"""Process-wide plumbing: settings, the Ray session, the database URL, per-loop stores.

:func:`settings` reads every ``WFDAG_*`` variable once, into a frozen :class:`Settings`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

import ray
from ray._private import ray_constants

from actors.logs import get_logger
from definitions import (
    DEFAULT_MAX_LOG_BYTES,
    DEFAULT_MAX_PAYLOAD_BYTES,
    ClusterUnavailableError,
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
    "ensure_ray",
    "get_database_url",
    "get_store",
    "local_ray_dead",
    "new_store",
    "on_ray_restart",
    "reload_settings",
    "run_sync",
    "set_database_url",
    "settings",
    "worker_pythonpath",
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

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            pool_size=max(1, _int(env, "WFDAG_POOL_SIZE", 8)),
            local_threads=max(1, _int(env, "WFDAG_LOCAL_THREADS", 32)),
            max_recoveries=_int(env, "WFDAG_MAX_RECOVERIES", 5),
            warm_workers=_int(env, "WFDAG_WARM_WORKERS", 12),
            max_payload_bytes=_int(env, "WFDAG_MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES),
            max_log_bytes=_int(env, "WFDAG_MAX_LOG_BYTES", DEFAULT_MAX_LOG_BYTES),
            ray_dashboard=env.get("WFDAG_RAY_DASHBOARD", "1") == "1",
            ray_log_to_driver=env.get("WFDAG_RAY_LOG_TO_DRIVER") == "1",
            runner_resources=_resources(env.get("WFDAG_RUNNER_RESOURCES")),
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


_ray_lock = threading.Lock()


@ray.remote(num_cpus=0)
def _warm(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def worker_pythonpath(cwd: str, pythonpath: str | None) -> str:
    """The ``PYTHONPATH`` of a local Ray's workers: the driver's directory first (agent modules
    beside the driver import there), then the driver's own ``PYTHONPATH``."""
    paths = [p for p in (pythonpath or "").split(os.pathsep) if p]
    return os.pathsep.join([cwd, *[p for p in paths if p != cwd]])


#: Ray's switch for multi-node clusters (off: a local node's IP is 127.0.0.1).
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: The processes without which a local Ray is dead (Ray's process type names).
_VITAL = ("gcs_server", "raylet")
_local_started = False  # the Ray this process is connected to is a local one it started
_restart_hooks: list[Callable[[], None]] = []


def on_ray_restart(hook: Callable[[], None]) -> None:
    """Call ``hook`` when a dead local Ray is replaced: caches of its actor handles drop
    them."""
    _restart_hooks.append(hook)


def local_ray_dead() -> list[str]:
    """The vital processes of this process's local Ray that have died (``[]``: it is alive,
    or the Ray joined is not one this process started).  A poll of child processes: no
    round trip."""
    if not _local_started or not ray.is_initialized():
        return []
    node = getattr(ray._private.worker, "_global_node", None)
    if node is None:
        return []
    return sorted({kind for kind, _proc in node.dead_processes() if kind in _VITAL})


def _drop_dead_ray(dead: list[str]) -> None:
    """Disconnect from a local Ray whose GCS or raylet died, and forget its actor handles."""
    global _local_started
    log = get_logger()
    log.warning("ray.local_died", dead=dead, next_step="starting a new local Ray; the "
                "recovery sweep re-queues what its runners drove")
    node = getattr(ray._private.worker, "_global_node", None)
    if node is not None:  # what is left of it (workers, agents) goes too
        for _kind, proc in node.live_processes():
            proc.kill()
    ray.shutdown()
    _local_started = False
    for hook in _restart_hooks:
        hook()


@contextlib.contextmanager
def loopback_node() -> Iterator[None]:
    """Ray with this machine's node at 127.0.0.1, for the ``ray.init`` inside.

    Ray 2.60 turns a node IP of 127.0.0.1 into the machine's address (its agents, raylet and
    GCS then listen there, or on every interface, and a driver told ``127.0.0.1:port``
    dials the machine's address) — unless multi-node clusters are off, as on macOS, when the
    node's IP is the loopback one.  Processes Ray starts read the switch from the
    environment they start with; this one from the constant."""
    saved_env = os.environ.get(_CLUSTER_SWITCH)
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_CLUSTER_SWITCH, None)
        else:
            os.environ[_CLUSTER_SWITCH] = saved_env


def _is_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def ensure_ray(address: str | None = None) -> None:
    """Join ``address`` / ``RAY_ADDRESS``, or start a local Ray bound to 127.0.0.1 (a new
    one if the local Ray this process started has died).

    This process's environment is left as it was: a local Ray's workers get the driver's
    directory on their ``PYTHONPATH`` (:func:`worker_pythonpath`) without the driver's own
    ``PYTHONPATH`` being rewritten."""
    global _local_started
    with _ray_lock:
        if ray.is_initialized():
            dead = local_ray_dead()
            if not dead:
                return
            _drop_dead_ray(dead)
        log = get_logger()
        config = settings()
        target = address or os.environ.get("RAY_ADDRESS")
        if target:
            _join(target, config.ray_log_to_driver)
            log.info("ray.joined", address=target, auth=os.environ.get("RAY_AUTH_MODE"))
            return
        started = time.monotonic()
        # The local Ray's processes (and so its workers) inherit the environment at the
        # moment they start: give them the PYTHONPATH they need for that moment only.
        # (A job runtime_env would do it too, but every worker would then start through
        # Ray's runtime-env agent: a 4-way fork waited seconds for its workers.)
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = worker_pythonpath(os.getcwd(), saved)
        try:
            with loopback_node():
                ray.init(
                    # "local": always a new cluster of this process's own — never one that a
                    # `ray start` on this machine happens to have left in /tmp/ray.
                    address="local",
                    namespace=NAMESPACE,
                    dashboard_host="127.0.0.1",
                    include_dashboard=config.ray_dashboard,
                    log_to_driver=config.ray_log_to_driver,
                    configure_logging=True,
                    logging_level=logging.WARNING,
                    _system_config={"num_workers_soft_limit": config.warm_workers},
                )
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
        _local_started = True
        # Start idle workers now so that the first fork does not wait on process starts.
        try:
            ray.get([_warm.remote(0.3) for _ in range(config.warm_workers)], timeout=60)
        except ray.exceptions.GetTimeoutError:
            log.warning("ray.warm_up_slow", workers=config.warm_workers,
                        next_step="going on; the first stages may wait for worker starts")
        log.info("ray.started", seconds=round(time.monotonic() - started, 2))


def ray_auth_token_found() -> bool:
    """A Ray token is there for a client to present (``RAY_AUTH_TOKEN``, the file named by
    ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``, which Ray 2.60 writes on its first
    start)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return os.path.isfile(path)


def _join(target: str, log_to_driver: bool) -> None:
    """Join an existing cluster.  Ray 2.60's clients present a token only with
    ``RAY_AUTH_MODE=token``: when the user did not say and a token is there, wfdag says it
    for them (a cluster without auth ignores it).  A refusal is one line, not 20 s of
    retries and a traceback."""
    if "RAY_AUTH_MODE" not in os.environ and ray_auth_token_found():
        os.environ["RAY_AUTH_MODE"] = "token"
        # Ray read its config when it was imported: have it read the mode again (what Ray's
        # own token set-up does, ray 2.60 ``authentication_token_setup._enable_token_auth``).
        from ray._raylet import Config  # type: ignore[attr-defined]

        Config.initialize("")
    try:
        # A Ray on this machine's loopback (the one a wfdag process started): join it there.
        with loopback_node() if _is_loopback(target) else contextlib.nullcontext():
            ray.init(address=target, namespace=NAMESPACE, log_to_driver=log_to_driver)
    except Exception as exc:  # Ray raises ConnectionError, AuthenticationError, RuntimeError…
        text = str(exc)
        if "auth" in text.lower() or "token" in text.lower():
            hint = ("the cluster wants a token: set RAY_AUTH_MODE=token and put the cluster's "
                    "token in RAY_AUTH_TOKEN (or the file RAY_AUTH_TOKEN_PATH names, or "
                    "~/.ray/auth_token)")
        else:
            hint = ("check that the head runs and that RAY_ADDRESS is host:port of its GCS "
                    "(`ray status` on the head prints it)")
        raise ClusterUnavailableError(
            f"could not join the Ray cluster at {target}: {text.splitlines()[0][:200]}; "
            f"{hint}") from None


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
