"""The service proper: a long-lived local Ray that owns the runners.

``wfdag server start`` runs it under its supervisor (:mod:`actors.service.supervisor`), in a
new session detached from the terminal; ``--foreground`` runs it in the calling process, for a
supervisor of the user's.  It starts a local Ray bound to 127.0.0.1 (its processes are children
of this one and end with it), applies migrations, registers the canonical workflows, starts
the pool and the projection actor, runs the recovery sweep, writes
:class:`~actors.service.record.ServiceRecord`, and then keeps the pool whole (a runner killed
for good is replaced) and runs the scheduler (:mod:`actors.service.scheduler`) until SIGTERM
or SIGINT.  On the way out it stops Ray and hands back, uncounted, the executions its runners
were driving: they resume on the next start.  When its local Ray dies (its GCS or raylet is
gone: checked every second) it exits with ``RESTART_CODE`` (75) to be started afresh, as Ray
would end it anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from actors.logs import configure, get_logger

__all__ = ["SWEEP_SECONDS", "main", "run_service"]

#: How often the service looks for runners to replace and executions nobody drives.
SWEEP_SECONDS = 30.0


async def _start_console(log: Any) -> tuple[Any, str | None]:
    """Serve the console (``WFDAG_UI_HOST:WFDAG_UI_PORT``); a port that is taken is said, and
    the service runs on without it."""
    from actors.console import console_token, start_console
    from actors.runtime import settings

    config = settings()
    token = console_token()
    assert token is not None
    try:
        runner = await start_console(config.ui_host, config.ui_port, token)
    except OSError as exc:
        log.warning("console.not_started", host=config.ui_host, port=config.ui_port,
                    error=str(exc), next_step="set WFDAG_UI_PORT to a free port and restart")
        return None, None
    port = config.ui_port
    for site in runner.sites:
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            port = sockets[0].getsockname()[1]
    host = config.ui_host if ":" not in config.ui_host else f"[{config.ui_host}]"
    url = f"http://{host}:{port}/"
    log.warning("console.ready", url=url)
    return runner, url


async def _serve(stop: asyncio.Event) -> bool:
    """Serve until ``stop``; True when the local Ray died (start again)."""
    import ray

    from actors.api import initialize_workflow_system
    from actors.ray_session import local_ray_dead
    from actors.runner import runner_name
    from actors.runtime import close_stores, get_database_url, get_store, settings
    from actors.service.record import (
        EMBEDDED_ENV,
        ServiceRecord,
        database_fingerprint,
        live_service,
    )
    from actors.service.supervisor import supervisor_pid
    from events import redact_url
    from events.leases import hand_back_unheld

    log = get_logger(component="service")
    url = get_database_url()
    me = supervisor_pid()
    other = live_service()
    if other is not None and other.pid != me:
        from actors.service.control import ServiceError

        raise ServiceError(f"the wfdag service is already running (pid {other.pid}, Ray at "
                           f"{other.ray_address}); `wfdag server stop` stops it")
    report = await initialize_workflow_system()  # starts the local Ray (this process's)
    # ray.init installed its own SIGTERM handler (it exits at once): ours again, so that a
    # stop hands back what ran and removes the record.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    console, console_url = await _start_console(log)
    record = ServiceRecord(
        pid=me, started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        ray_address=str(ray.get_runtime_context().gcs_address), database=redact_url(url),
        database_fingerprint=database_fingerprint(url), pool_size=report["pool"],
        console_url=console_url, embedded=os.environ.get(EMBEDDED_ENV) == "1")
    record.save()
    log.warning("service.ready", pid=record.pid, ray_address=record.ray_address,
                pool=record.pool_size, resumed=len(report["resumed"]))
    from actors.service.scheduler import run_scheduler

    scheduler = asyncio.create_task(run_scheduler(stop))
    restart: list[str] = []
    try:
        next_sweep = loop.time() + SWEEP_SECONDS
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
                continue
            except TimeoutError:
                pass
            restart = local_ray_dead()  # a poll of child processes: checked every second
            if restart:
                break  # Ray ends a driver whose raylet died: start afresh, as a new process
            if loop.time() < next_sweep:
                continue
            next_sweep = loop.time() + SWEEP_SECONDS
            try:
                await initialize_workflow_system()  # replace dead runners, sweep
            except Exception as exc:  # a database outage: the next turn tries again
                log.warning("service.sweep_failed", error=f"{type(exc).__name__}: {exc}",
                            next_step=f"retrying in {SWEEP_SECONDS:g}s")
    finally:
        stop.set()
        if console is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(console.cleanup(), 10)
        try:
            await asyncio.wait_for(scheduler, 10)
        except Exception as exc:
            log.warning("service.scheduler_stop_failed", error=f"{type(exc).__name__}: {exc}")
        if restart:
            log.warning("service.ray_died", dead=restart, pid=os.getpid(),
                        next_step="exiting to be started again (the supervisor does it; "
                        "under --foreground, your supervisor)")
        else:
            log.warning("service.stopping", pid=record.pid)
            ray.shutdown()  # ends the runners (and their leases) with the local Ray
        try:
            store = await get_store(url)
            async with store.pool.acquire() as conn:
                given = await hand_back_unheld(
                    conn, [runner_name(k) for k in range(settings().pool_size)])
            log.warning("service.stopped", handed_back=len(given))
        except Exception as exc:
            log.warning("service.hand_back_failed", error=f"{type(exc).__name__}: {exc}",
                        next_step="the next start's sweep resumes them (counted once)")
        finally:
            await close_stores()
            if not restart:  # restarting: the supervisor is still there, and so is the record
                ServiceRecord.remove(record.pid)
    return bool(restart)


async def run_service() -> int:
    """Run the service in the running event loop until SIGTERM/SIGINT (``wfdag server start
    --foreground`` runs it so, in the CLI's loop); 1 when it could not start."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        restart = await _serve(stop)
    except Exception as exc:
        from definitions import WfdagError

        if not isinstance(exc, WfdagError):
            get_logger(component="service").exception("service.crashed")
        print(f"error: the wfdag service could not start: {exc}", file=sys.stderr, flush=True)
        return 1
    if restart:
        from actors.service.supervisor import RESTART_CODE

        print("error: the service's local Ray died; the service exits to be started again",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(RESTART_CODE)  # not Ray's exit handlers: they would wait on the dead Ray
    return 0


def main() -> int:
    """The detached service's entry point (``python -m actors.service.process``)."""
    configure()
    return asyncio.run(run_service())


if __name__ == "__main__":
    sys.exit(main())
