"""Stage workers: long-lived processes, started and owned through Ray, that run task stages.

A task stage that asks for no resources runs on one of its runner's stage workers, one attempt
at a time each.  The worker is a Ray actor — Ray starts it, places it on the runner's node,
and kills it with its owner — but attempts travel over a private Unix socket between the
runner and the worker (JSON frames), not as Ray calls: a Ray task or actor call costs ~1.5 ms
of CPU on this machine's two cores, more than the rest of a stage's durable work; a frame
costs tens of microseconds.  What a task stage promised stays:

* isolation — a worker is a process of its own, never the runner's;
* killable timeouts and cancellation — a worker whose attempt must stop is killed
  (``ray.kill``), and the attempt ends only once its death is seen;
* fate sharing — a worker is owned by the runner that started it (not detached): a runner
  that dies or retires takes its workers with it, as it took its stage tasks; a worker whose
  runner hangs up ends itself too;
* placement — a stage that asks for resources (CPUs, GPUs, memory, custom) still runs as a Ray
  task of its own, which holds them only while it runs.

The socket lives in a directory only its user can open, takes one connection, which must
first send the worker's random token, and is unlinked once taken.  A node holds at most
``WFDAG_STAGE_WORKERS`` stage workers, all its runners together (:mod:`actors.runner.slots`);
a runner starts one at a time, keeps at most half of the node's number idle, and stops its
most recently used worker once idle for ``WFDAG_STAGE_WORKER_IDLE_SECONDS``, any other after
``SPARE_IDLE_SECONDS``.  An attempt that finds no idle worker
runs as a Ray task — it never waits for a process to start.  ``WFDAG_STAGE_WORKERS=0`` runs
every task stage as a Ray task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.logs import configure
from actors.runner.attempt import run_guarded_attempt
from actors.runner.frames import (
    HEADER,
    MAX_FRAME,
    Listener,
    frame,
    result_from_json,
    spec_to_json,
)
from actors.runner.protocol import AttemptResult, AttemptSpec, error_info
from actors.runner.slots import NodeSlots, Slot

__all__ = ["StageWorker", "StageWorkers", "Worker", "WorkerLostError", "lost_result"]

#: How long a runner keeps an idle worker beyond its most recently used one (a wide fork's).
SPARE_IDLE_SECONDS = 5.0

class StageWorker:
    """The Ray actor class of a stage worker.  ``address`` once, then ``serve`` until the
    runner hangs up; attempts run in ``serve``'s thread (the worker's main thread, where a
    Ray task would have run them)."""

    def __init__(self) -> None:
        configure()
        self._listener = Listener()

    def address(self) -> tuple[str, str, int]:
        """Where to connect, the token to send first, and this process's pid."""
        return self._listener.path, self._listener.token, os.getpid()

    def serve(self) -> int:
        """Run the attempts that come over the runner's connection; when it hangs up (or never
        comes), this worker ends."""
        self._listener.serve(run_guarded_attempt)
        ray.actor.exit_actor()  # type: ignore[no-untyped-call]
        return 0  # pragma: no cover - exit_actor does not return


@cache
def _worker_remote() -> Any:
    # Not detached and never restarted: it lives and dies with the runner that owns it.
    return ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(StageWorker)


# --- the runner's side -----------------------------------------------------------------------

class WorkerLostError(Exception):
    """The stage worker died (or could not start) under an attempt."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(message)
        self.type = type_


@dataclass(eq=False)
class Worker:
    """A connected stage worker, as its runner holds it."""

    handle: Any
    pid: int
    serving: asyncio.Future[Any]  # its ``serve`` call: done once the worker has ended
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    slot: Slot  # its place among the node's stage workers, given back when it is closed
    idle_since: float = field(default=0.0)
    killed: bool = field(default=False)

    def alive(self) -> bool:
        return not self.serving.done() and not self.writer.is_closing()

    async def call(self, spec: AttemptSpec) -> AttemptResult:
        """One attempt on this worker (``WorkerLostError`` when it dies under it)."""
        try:
            self.writer.write(frame(spec_to_json(spec)))
            await self.writer.drain()
            (size,) = HEADER.unpack(await self.reader.readexactly(HEADER.size))
            if size > MAX_FRAME:
                raise ValueError(f"a stage worker announced a {size}-byte answer")
            return result_from_json(await self.reader.readexactly(size))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            raise WorkerLostError("WorkerCrashedError", await self._death(exc)) from None

    async def _death(self, exc: BaseException) -> str:
        """What Ray says of this worker's end (it is seen soon after its socket closes)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self.serving), 5.0)
        if self.serving.done() and not self.serving.cancelled() and self.serving.exception():
            return f"the stage worker (pid {self.pid}) died: {self.serving.exception()}"[:2000]
        return f"the stage worker (pid {self.pid}) hung up: {type(exc).__name__}: {exc}"

    def kill(self) -> None:
        """End the worker's process (what it answered before it died is still read).  Once:
        a stop, its close and the cancel grace's hang-up each ask, one Ray call is enough."""
        if not self.killed:
            self.killed = True
            with contextlib.suppress(Exception):
                ray.kill(self.handle, no_restart=True)

    def close(self) -> None:
        self.kill()
        self.writer.close()
        self.slot.release()


class StageWorkers:
    """One runner's stage workers: the idle ones, kept for the next attempts."""

    def __init__(self, *, per_node: int, idle_seconds: float, log: Any) -> None:
        self.per_node = per_node
        self.keep_idle = max(1, per_node // 2)
        self._idle_seconds = idle_seconds
        self._log = log
        self._idle: list[Worker] = []  # most recently used last
        self._sweep: asyncio.TimerHandle | None = None
        self._slots: NodeSlots | None = None
        self._starting: asyncio.Future[Worker] | None = None

    @property
    def enabled(self) -> bool:
        return self.per_node > 0

    def take(self) -> Worker | None:
        """An idle worker, ready now — or None, and one more is started in the background
        when none is starting and the node has a slot free (an attempt never waits for a
        process to start: it runs as a Ray task meanwhile)."""
        while self._idle:
            worker = self._idle.pop()
            if worker.alive():
                return worker
            worker.close()
        self.replenish()
        return None

    def replenish(self) -> None:
        """Start one more worker in the background — unless one is starting, or the node has
        no slot free.  Called by an attempt that found none idle, and at once when a worker
        was killed under its attempt (a lost lease, a timeout, a cancel): its replacement
        starts while the runner reconnects or decides, off the next attempt's path."""
        if self._starting is None:
            if self._slots is None:
                self._slots = NodeSlots(self.per_node, ray.get_runtime_context().get_node_id())
            slot = self._slots.acquire()
            if slot is not None:
                self._starting = asyncio.ensure_future(self._start(slot))
                self._starting.add_done_callback(lambda started: self._started(started, slot))

    def _started(self, starting: asyncio.Future[Worker], slot: Slot) -> None:
        self._starting = None
        if starting.cancelled() or starting.exception() is not None:
            slot.release()  # here, not in _start: a start cancelled before it ran never ran
        if starting.cancelled():
            return
        if starting.exception() is not None:
            self._log.warning("stage_worker.start_failed", error=str(starting.exception()),
                              next_step="task stages run as Ray tasks until one starts")
            return
        self.release(starting.result())

    async def _start(self, slot: Slot) -> Worker:
        handle: Any = None
        try:
            handle = _worker_remote().options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                node_id=ray.get_runtime_context().get_node_id(), soft=False)).remote()
            path, token, pid = await handle.address.remote()
            serving = asyncio.ensure_future(asyncio.wrap_future(handle.serve.remote().future()))
            serving.add_done_callback(lambda f: f.cancelled() or f.exception())  # no warning
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(frame(token.encode()))
            await writer.drain()
        except BaseException as exc:  # cancelled too: no worker is left behind
            if handle is not None:
                with contextlib.suppress(Exception):
                    ray.kill(handle, no_restart=True)
            if not isinstance(exc, Exception):
                raise
            raise WorkerLostError(type(exc).__name__,
                                  f"a stage worker could not start: {exc}"[:2000]) from None
        self._log.info("stage_worker.started", pid=pid, idle=len(self._idle), slot=slot.index)
        return Worker(handle=handle, pid=pid, serving=serving, reader=reader, writer=writer,
                      slot=slot)

    def release(self, worker: Worker) -> None:
        """A worker whose attempt ended normally: kept for the next one, or stopped."""
        if len(self._idle) >= self.keep_idle or not worker.alive():
            worker.close()
            return
        loop = asyncio.get_running_loop()
        worker.idle_since = loop.time()
        self._idle.append(worker)
        self._schedule(loop)

    def _limit(self, index: int, count: int) -> float:
        """How long the idle worker at ``index`` is kept: the most recently used one
        ``idle_seconds``, the spares a wide fork left at most SPARE_IDLE_SECONDS — their slots
        go back to the node soon, for the other runners."""
        if index == count - 1:
            return self._idle_seconds
        return min(self._idle_seconds, SPARE_IDLE_SECONDS)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """The next sweep, when the first idle worker is due."""
        count = len(self._idle)
        if not count:
            return
        due = min(w.idle_since + self._limit(i, count) for i, w in enumerate(self._idle))
        if self._sweep is not None:
            if self._sweep.when() <= due:
                return
            self._sweep.cancel()
        self._sweep = loop.call_at(due, self._expire)

    def _expire(self) -> None:
        """Stop the workers idle for longer than they are kept; look again when the next one
        is due."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        count = len(self._idle)
        keep = []
        for index, worker in enumerate(self._idle):
            if now - worker.idle_since >= self._limit(index, count):
                worker.close()
            else:
                keep.append(worker)
        self._idle = keep
        self._schedule(loop)


def lost_result(exc: WorkerLostError, duration_ms: int) -> AttemptResult:
    """A worker that died under its attempt: a system failure, retryable."""
    return AttemptResult(ok=False, duration_ms=duration_ms,
                         error=error_info(exc.type, str(exc), True))
