"""The Ray session of this process: join ``RAY_ADDRESS`` or start a local Ray on loopback,
notice when a local Ray this process started has died, and start a new one."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

import ray
from ray._private import ray_constants

from actors.logs import get_logger
from actors.runtime import NAMESPACE, settings
from definitions import ClusterUnavailableError

__all__ = [
    "ensure_ray",
    "local_ray_dead",
    "loopback_node",
    "on_ray_restart",
    "ray_auth_token_found",
    "worker_pythonpath",
]

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
