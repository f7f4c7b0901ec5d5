"""The service process: a long-lived local Ray that owns the runners.

``wfdag server start`` runs this in a new session (detached from the terminal); ``--foreground``
runs it in the calling process, for a supervisor.  It starts a local Ray bound to 127.0.0.1 (its
processes are children of this one and end with it), applies migrations, registers the
canonical workflows, starts the pool and the projection actor, runs the recovery sweep, writes
:class:`~actors.service.record.ServiceRecord`, and then keeps the pool whole (a runner killed
for good is replaced) and runs the scheduler (:mod:`actors.service.scheduler`) until SIGTERM
or SIGINT.  On the way out it stops Ray and hands back,
uncounted, the executions its runners were driving: they resume on the next start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime

from actors.logs import configure, get_logger

__all__ = ["SWEEP_SECONDS", "main", "run_service"]

#: How often the service looks for runners to replace and executions nobody drives.
SWEEP_SECONDS = 30.0


async def _serve(stop: asyncio.Event) -> None:
    import ray

    from actors.api import initialize_workflow_system
    from actors.runner import runner_name
    from actors.runtime import close_stores, get_database_url, get_store, settings
    from actors.service.record import ServiceRecord, database_fingerprint, live_service
    from events import redact_url
    from events.leases import hand_back_unheld

    log = get_logger(component="service")
    url = get_database_url()
    other = live_service()
    if other is not None and other.pid != os.getpid():
        from actors.service.control import ServiceError

        raise ServiceError(f"the wfdag service is already running (pid {other.pid}, Ray at "
                           f"{other.ray_address}); `wfdag server stop` stops it")
    report = await initialize_workflow_system()  # starts the local Ray (this process's)
    # ray.init installed its own SIGTERM handler (it exits at once): ours again, so that a
    # stop hands back what ran and removes the record.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    record = ServiceRecord(
        pid=os.getpid(), started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        ray_address=str(ray.get_runtime_context().gcs_address), database=redact_url(url),
        database_fingerprint=database_fingerprint(url), pool_size=report["pool"])
    record.save()
    log.warning("service.ready", pid=record.pid, ray_address=record.ray_address,
                pool=record.pool_size, resumed=len(report["resumed"]))
    from actors.service.scheduler import run_scheduler

    scheduler = asyncio.create_task(run_scheduler(stop))
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), SWEEP_SECONDS)
            except TimeoutError:
                try:
                    await initialize_workflow_system()  # replace dead runners, sweep
                except Exception as exc:  # a database outage: the next turn tries again
                    log.warning("service.sweep_failed", error=f"{type(exc).__name__}: {exc}",
                                next_step=f"retrying in {SWEEP_SECONDS:g}s")
    finally:
        log.warning("service.stopping", pid=record.pid)
        stop.set()
        try:
            await asyncio.wait_for(scheduler, 10)
        except Exception as exc:
            log.warning("service.scheduler_stop_failed", error=f"{type(exc).__name__}: {exc}")
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
            ServiceRecord.remove(record.pid)


async def run_service() -> int:
    """Run the service in the running event loop until SIGTERM/SIGINT (``wfdag server start
    --foreground`` runs it so, in the CLI's loop); 1 when it could not start."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await _serve(stop)
    except Exception as exc:
        from definitions import WfdagError

        if not isinstance(exc, WfdagError):
            get_logger(component="service").exception("service.crashed")
        print(f"error: the wfdag service could not start: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def main() -> int:
    """The detached service's entry point (``python -m actors.service.process``)."""
    configure()
    return asyncio.run(run_service())


if __name__ == "__main__":
    sys.exit(main())
