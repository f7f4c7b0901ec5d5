"""A runner's serve loop: connect, claim the oldest queued execution, drive it, release it.

Its lease connection is the session that holds the advisory lock of the execution it drives;
reads and appends go through it (no pool round trips, and a runner whose lease session died
cannot write).  When the database goes away the loop hands back what it drove (uncounted) and
reconnects with backoff.  A restarted runner first certifies its previous process's death,
which counts one recovery of what it drove — unless that process retired on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import ray

from actors.breakers import BreakerView
from actors.logs import get_logger
from actors.metrics import record_events, set_live
from actors.runner.dispatch import Dispatcher, retire, retire_marker
from actors.runner.drive import Drive, LeaseLostError
from actors.runner.node_listen import RESYNC, NodeListener, listen_group
from actors.runner.protocol import DriveOutcome
from actors.runner.workers import StageWorkers
from actors.runtime import new_store, settings
from events import EventStore, connect_pool, is_database_outage
from events.breaker_state import BREAKER_CHANNEL
from events.leases import (
    CANCEL_CHANNEL,
    FENCE_SECONDS,
    HEARTBEAT_SECONDS,
    QUEUE_CHANNEL,
    Claim,
    certify_restart,
    claim_next,
    dead_letter,
    hand_back,
    heartbeat,
    park,
    record_crash,
    release,
)

__all__ = [
    "DASHBOARD_TASK_AFTER_S", "IDLE_RECHECK_SECONDS", "LEASE_IO_SECONDS", "Runner",
    "SelfFencedError", "bounded",
]

T = TypeVar("T")

#: An idle runner looks at the queue again this often (leases freed by dead runners).
IDLE_RECHECK_SECONDS = 2.0
#: A drive that lasts this long shows in the Ray dashboard as the task ``wfdag-exec-<id>``.
DASHBOARD_TASK_AFTER_S = 2.0
#: The longest a park or a release may take on the lease connection before the runner takes
#: the connection for lost (it reconnects).
LEASE_IO_SECONDS = 5.0


class SelfFencedError(Exception):
    """This runner fenced itself (cut off from the database): it drops its connections."""


async def bounded(work: Awaitable[T], seconds: float) -> T:
    """``work``, or ``TimeoutError`` after ``seconds`` — without waiting for the cancelled
    work to wind down (``asyncio.wait_for`` would: a query cancelled on a connection cut off
    without a word hangs in asyncpg's cancel request)."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # no warning
        raise TimeoutError(f"no answer from the database in {seconds:g}s")
    return task.result()


class Runner:
    """The work of one pooled execution actor (:class:`actors.runner.ExecutionActor`)."""

    def __init__(self, database_url: str, name: str) -> None:
        self.name = name
        self._database_url = database_url
        self._log = get_logger(runner=name)
        config = settings()
        self._dispatch = Dispatcher(config.local_threads, self._log, StageWorkers(
            per_node=config.stage_workers, idle_seconds=config.stage_worker_idle_seconds,
            log=self._log))
        self._breakers = BreakerView(database_url)
        self._lost = False  # the execution driven was lost with the database connection
        self._wake = asyncio.Event()
        self.running: str | None = None  # the execution driven now
        #: Clear while a claim is in flight: its commit (which names this runner on the lease)
        #: can be seen by others before its reply reaches this loop.
        self._claimed = asyncio.Event()
        self._claimed.set()
        self.driving: dict[str, asyncio.Event] = {}  # execution id → set when its drive ends
        self._requests: dict[str, asyncio.Event] = {}  # execution id → a request was appended

    async def current(self) -> str | None:
        """The execution driven now — after the claim in flight, if any, has come back (so
        that it agrees with a lease that already names this runner)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._claimed.wait(), LEASE_IO_SECONDS)
        return self.running

    def _on_notify(self, channel: str, payload: str) -> None:
        """A notification the node's LISTEN session heard (``node_listen``)."""
        if channel == QUEUE_CHANNEL:
            self._wake.set()
        elif channel == CANCEL_CHANNEL:  # a request (cancel, approval, signal…) was appended
            requested = self._requests.get(payload)
            if requested is not None:
                requested.set()
        elif channel == BREAKER_CHANNEL:
            self._breakers.changed(payload)
        elif channel == RESYNC:  # some may have gone unheard: look again at everything
            self._wake.set()
            for requested in self._requests.values():
                requested.set()
            self._breakers.resync()

    async def _listen_session(self) -> tuple[Any, Callable[[], object]]:
        pool = await connect_pool(self._database_url, min_size=1, max_size=1)
        try:
            return await pool.acquire(), pool.terminate
        except BaseException:
            pool.terminate()  # its one connection, however far it got
            raise

    async def _after_restart(self, lease_conn: Any) -> None:
        """This runner's previous process died: what it drove counts a recovery."""
        marker = retire_marker()
        if marker.exists():
            # It retired itself on purpose (a local stage had to stop): uncounted.
            await hand_back(lease_conn, self.name)
            marker.unlink(missing_ok=True)
        else:
            orphans = await certify_restart(lease_conn, self.name)
            if orphans:
                self._log.warning("runner.restarted", orphaned=orphans)

    async def serve(self) -> None:
        """Serve until the process ends (reconnecting through database outages)."""
        context = ray.get_runtime_context()
        listening = asyncio.ensure_future(NodeListener(
            group=listen_group(context.get_node_id(), self._database_url),
            channels=(QUEUE_CHANNEL, CANCEL_CHANNEL, BREAKER_CHANNEL),
            connect=self._listen_session, on_notify=self._on_notify, log=self._log).run())
        listening.add_done_callback(self._listener_ended)
        try:
            await self._serve(bool(context.was_current_actor_reconstructed))
        finally:
            listening.cancel()

    def _listener_ended(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._log.error("runner.node_listen_failed", error=repr(task.exception())[:300],
                            next_step="restart the service; meanwhile runners look at the "
                                      f"queue every {IDLE_RECHECK_SECONDS:g}s")

    async def _serve(self, restarted: bool) -> None:
        backoff = 0.5
        while True:
            store: EventStore | None = None
            try:
                store = await new_store(self._database_url, max_size=4)
                lease_conn = await store.pool.acquire()
                lease_lost = asyncio.Event()
                lease_conn.add_termination_listener(lambda _conn, ev=lease_lost: ev.set())
                if restarted:
                    await self._after_restart(lease_conn)
                    restarted = False
                if self._lost:
                    # Lost with the database connection: give it back, uncounted.
                    await hand_back(lease_conn, self.name)
                    self._lost = False
                await self._breakers.load(lease_conn)
                self._log.info("runner.ready", reconnect=backoff > 0.5)
                backoff = 0.5
                await self._claim_loop(store, lease_conn, lease_lost)
            except Exception as exc:
                outage = is_database_outage(exc) or isinstance(
                    exc, SelfFencedError | LeaseLostError | TimeoutError)
                self._lost = self._lost or outage
                self._log.warning("runner.reconnecting" if outage else "runner.serve_failed",
                                  error=f"{type(exc).__name__}: {exc}"[:300], retry_in_s=backoff,
                                  exc_info=not outage)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if store is not None:
                    # terminate(): closing politely would wait on connections the outage broke.
                    store.pool.terminate()

    async def _claim_loop(self, store: EventStore, lease_conn: Any,
                          lease_lost: asyncio.Event) -> None:
        wake = self._wake
        set_live(self.name, 0)
        while True:
            wake.clear()
            if self._breakers.stale:  # notifications went unheard since it was loaded
                await self._breakers.load(lease_conn)
            self._claimed.clear()
            try:
                claim = await claim_next(lease_conn, self.name)
            finally:
                self._claimed.set()
            if claim is None:
                # Woken by an enqueue; the timeout covers leases freed by dead runners.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), IDLE_RECHECK_SECONDS)
                continue
            # Named at once: from the claim on, the lease (so execution_actor) names this
            # runner, and `current` must agree while the claim's bookkeeping awaits.
            self.running = claim.execution_id
            if claim.recoveries > settings().max_recoveries:
                try:
                    await self._dead_letter(store, claim, lease_conn)
                finally:
                    await release(lease_conn, claim.execution_id)
                    self.running = None
                continue
            await self._drive(store, claim, lease_conn, lease_lost)

    async def _dead_letter(self, store: EventStore, claim: Claim, lease_conn: Any) -> None:
        done = await dead_letter(store, claim, lease_conn)
        if done is not None:
            record_events(done.workflow_id, done.events)
            self._log.error("execution.dead_lettered", execution_id=claim.execution_id,
                            recoveries=claim.recoveries, reason=done.reason[:500],
                            next_step=f"fix the cause, then `wfdag retry {claim.execution_id}`")

    async def _drive(self, store: EventStore, claim: Claim, lease_conn: Any,
                     lease_lost: asyncio.Event) -> None:
        eid = claim.execution_id  # self.running names it since the claim
        set_live(self.name, 1)
        outcome: DriveOutcome | None = None
        driving = self.driving[eid] = asyncio.Event()
        # Registered before the drive reads the log: a request appended after that read is
        # notified to this event.
        requested = self._requests[eid] = asyncio.Event()
        # The Ray dashboard's view of this drive: an actor task named after the execution,
        # running as long as the drive — for a drive that lasts (one that parks or ends within
        # DASHBOARD_TASK_AFTER_S is gone before anyone could look, and each task name costs the
        # runner's Ray ~60 KB that it never gives back: 10,000 parked executions were 590 MB).
        me = ray.get_runtime_context().current_actor
        shown = asyncio.get_running_loop().call_later(
            DASHBOARD_TASK_AFTER_S,
            lambda: me.executing.options(name=f"wfdag-exec-{eid}").remote(eid))
        fenced = asyncio.Event()
        beating = asyncio.create_task(self._heartbeat(store, eid, lease_lost, fenced))
        drive: Drive | None = None
        try:
            drive = Drive(
                execution_id=eid, store=store, lease_conn=lease_conn, lease_lost=lease_lost,
                dispatcher=self._dispatch, breakers=self._breakers,
                database_url=self._database_url, log=self._log, requested=requested)
            running = asyncio.ensure_future(drive.run())
            stop = asyncio.ensure_future(fenced.wait())
            await asyncio.wait({running, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not running.done():  # fenced while the drive waits on the cut-off connection
                running.cancel()
                running.add_done_callback(lambda t: t.cancelled() or t.exception())
                raise SelfFencedError(eid)
            outcome = running.result()
            if outcome is DriveOutcome.PARKED and drive.parked is not None:
                await bounded(park(lease_conn, eid, *drive.parked), LEASE_IO_SECONDS)
        except SelfFencedError:
            raise
        except Exception as exc:
            self._log.exception("runner.execution_crashed", execution_id=eid,
                                recoveries=claim.recoveries)
            await record_crash(lease_conn, eid, f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(1.0)  # don't spin on an execution that keeps failing
        finally:
            shown.cancel()
            beating.cancel()
            driving.set()
            del self.driving[eid]
            self._requests.pop(eid, None)
            set_live(self.name, 0)
            if outcome is not None and outcome.hand_back:
                self._lost = True
            try:
                if fenced.is_set():
                    raise SelfFencedError(eid)  # a new connection, once the database answers
                if lease_lost.is_set():
                    # The lease session is gone (a database restart, a cut connection), and
                    # the lease with it: nothing to release on it (asyncpg refuses a call on
                    # a terminated connection).  Reconnect; the execution is handed back.
                    raise LeaseLostError()
                # Bounded: on a connection cut off without a word (a partition) it would hang.
                # (The append of its end gave the lease up already: nothing left to release.)
                if drive is None or not drive.released:
                    await bounded(release(lease_conn, eid), LEASE_IO_SECONDS)
                self._lost = False
            finally:
                # Cleared once the lease is given up: while this runner holds it, `current`
                # names the execution (as lease_holder, and so execution_actor, do).
                self.running = None

    async def _heartbeat(self, store: EventStore, eid: str, lease_lost: asyncio.Event,
                         fenced: asyncio.Event) -> None:
        """Renew the hold on ``eid`` every HEARTBEAT_SECONDS (on a connection of the pool, not
        the lease's: that one is busy with the drive).  Unable to for FENCE_SECONDS — cut off
        from the database — the runner fences itself: ``lease_lost`` stops the drive and its
        stages, well before TAKEOVER_SECONDS let another runner claim the execution."""
        last = asyncio.get_running_loop().time()  # the claim set the first beat
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await bounded(heartbeat(store.pool, eid, self.name), HEARTBEAT_SECONDS * 2)
                last = asyncio.get_running_loop().time()
            except Exception as exc:
                silent = asyncio.get_running_loop().time() - last
                if silent >= FENCE_SECONDS:
                    self._log.warning("runner.self_fenced", execution_id=eid,
                                      silent_s=round(silent, 1), error=type(exc).__name__,
                                      next_step="stages stopped; another runner takes the "
                                                "execution over, this one reconnects")
                    # Its stages stop now, whatever the drive is waiting on.
                    self._dispatch.stop_tasks()
                    await self._dispatch.settle_local()
                    if self._dispatch.local_still_running():
                        retire("cut off from the database while a local stage ran", eid,
                               self._log)
                    fenced.set()
                    lease_lost.set()
                    return
