"""The service's scheduler: fires due schedules while it leads.

Every tick (at most a second apart, sooner when a slot is due) it takes or renews the leader
lease in PostgreSQL and, while it holds it, fires what is due (see :mod:`events.schedules`).
Several services on one database: one leads, the others wait for its lease to lapse (a dead
leader's lapses in :data:`LEASE_SECONDS`).  A database outage skips ticks; nothing is lost —
a slot that passed is a missed slot, fired on return as the schedule's ``catchup`` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid

from actors.logs import get_logger
from events import schedules

__all__ = ["LEASE_SECONDS", "TICK_SECONDS", "run_scheduler", "scheduler_id"]

#: How long a leader's lease lasts unrenewed (it renews every tick).
LEASE_SECONDS = float(os.environ.get("WFDAG_SCHEDULER_LEASE_SECONDS", "10"))
#: The longest wait between two ticks.
TICK_SECONDS = 1.0


def scheduler_id() -> str:
    """``host:pid:nonce``, with the service's pid (as its record names it)."""
    from actors.service.supervisor import supervisor_pid

    return f"{socket.gethostname()}:{supervisor_pid()}:{uuid.uuid4().hex[:6]}"


async def run_scheduler(stop: asyncio.Event, holder: str | None = None) -> None:
    """Tick until ``stop`` is set."""
    from actors.runtime import get_database_url, get_store

    me = holder or scheduler_id()
    log = get_logger(component="scheduler", holder=me)
    leading = False
    failing = False
    while not stop.is_set():
        try:
            store = await get_store(get_database_url())
            async with store.pool.acquire() as conn:
                now_leading = await schedules.claim_leadership(conn, me, LEASE_SECONDS)
            if now_leading != leading:
                log.warning("scheduler.leading" if now_leading else "scheduler.following")
                leading = now_leading
            if leading:
                tick = await schedules.fire_due(store, me)
                for sid, started in tick.fired.items():
                    log.info("schedule.fired", schedule_id=sid, executions=started)
                for sid, count in tick.skipped.items():
                    log.info("schedule.skipped", schedule_id=sid, slots=count,
                             why="its last execution still runs (overlap policy)")
            if failing:
                log.warning("scheduler.recovered")
                failing = False
        except schedules.NotLeaderError:
            leading = False
            log.warning("scheduler.lease_lost", next_step="following until the lease is free")
        except Exception as exc:  # a database outage: the next tick tries again
            if not failing:
                log.warning("scheduler.tick_failed", error=f"{type(exc).__name__}: {exc}"[:300],
                            next_step=f"retrying every {TICK_SECONDS:g}s")
            failing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), TICK_SECONDS)
    if leading:
        try:
            store = await get_store(get_database_url())
            async with store.pool.acquire() as conn:
                await schedules.release_leadership(conn, me)
            log.warning("scheduler.stepped_down")
        except Exception as exc:
            log.warning("scheduler.release_failed", error=f"{type(exc).__name__}: {exc}"[:300],
                        next_step=f"its lease lapses in {LEASE_SECONDS:g}s")
