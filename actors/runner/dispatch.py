"""Dispatch of stage attempts: a stage worker or a Ray task (killable), or a thread of the
runner (local) — or, for a local stage whose agent is an ``async def``, a task on the runner's
event loop.

A task stage that asks for no resources is an attempt on one of the runner's idle stage
workers (:mod:`actors.runner.workers`) — or, with none idle, resources asked or
``WFDAG_STAGE_WORKERS=0``, a Ray task of its own; either is stopped on timeout or
cancellation by killing its process.  A local stage is a thread of
the runner's process, which cannot be stopped: one that outlives its attempt is *abandoned*,
and the runner ends its own process (:func:`retire`) before anything could run the stage
again beside it.  A coroutine agent is cancelled instead (at its timeout, or when its stage is
cancelled); one that has not ended :data:`COROUTINE_GRACE_SECONDS` later is abandoned like a
thread.  It shares the runner's loop, as an async Temporal activity shares its worker's: it
must not block (a blocking call belongs in a sync agent, which gets a thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import ray
from ray.exceptions import RayError

from actors.runner.attempt import (
    agent_module,
    coroutine_agent,
    run_coroutine_attempt,
    run_guarded_attempt,
)
from actors.runner.protocol import AttemptResult, AttemptSpec, error_info
from actors.runner.workers import StageWorkers, Worker, WorkerLostError, lost_result
from definitions import StageTimeoutError, WorkflowStage

__all__ = [
    "CANCEL_GRACE_SECONDS",
    "COROUTINE_GRACE_SECONDS",
    "RETIRE_EXIT_CODE",
    "Dispatcher",
    "retire",
    "retire_marker",
    "stage_task_options",
]

CANCEL_GRACE_SECONDS = 10.0
#: How long a cancelled coroutine agent has to end before it counts as abandoned.
COROUTINE_GRACE_SECONDS = 2.0
RETIRE_EXIT_CODE = 70

Key = tuple[str, str]  # ("run" | "undo", stage id)
#: A local attempt: a thread's future, or the task of a coroutine agent.
_Thread = concurrent.futures.Future[AttemptResult] | asyncio.Task[AttemptResult]


@cache
def _stage_remote() -> Any:
    return ray.remote(max_retries=0)(run_guarded_attempt)


def stage_task_options(
    workflow_id: str, stage: WorkflowStage, *, undo: bool = False
) -> dict[str, Any]:
    """Ray options of a stage task: named ``<workflow>:<stage>``; 0 CPU unless it asks."""
    resources = dict(stage.resources or {})
    options: dict[str, Any] = {
        "name": f"{workflow_id}:{stage.id}" + (":compensate" if undo else ""),
        "num_cpus": resources.pop("CPU", 0),
    }
    if "GPU" in resources:
        options["num_gpus"] = resources.pop("GPU")
    if "memory" in resources:
        options["memory"] = resources.pop("memory")
    if resources:
        options["resources"] = resources
    return options


def on_stage_worker(stage: WorkflowStage) -> bool:
    """A task stage that asks for no resources runs on a stage worker (when there are any)."""
    return stage.executor != "local" and not stage.resources


class _OnWorker:
    """One attempt on an idle stage worker it took: called, kept for the next — or killed."""

    def __init__(self, workers: StageWorkers, worker: Worker) -> None:
        self._workers = workers
        self._worker = worker
        self.stopped = False
        self.lost = False  # its worker died under it

    async def run(self, spec: AttemptSpec) -> AttemptResult:
        started = time.monotonic()
        try:
            result = await self._worker.call(spec)
        except WorkerLostError as exc:
            self._end()
            self.lost = True
            return lost_result(exc, int((time.monotonic() - started) * 1000))
        except BaseException:  # the drive itself stops (its lease is lost): so does the worker
            self._end()
            raise
        if self.stopped:
            self._end()
        else:
            self._workers.release(self._worker)
        return result

    def _end(self) -> None:
        """Its worker is gone (killed or dead): a replacement starts now, in the background."""
        self._worker.close()
        self._workers.replenish()

    def stop(self) -> None:
        """Kill its worker: the attempt ends as soon as the worker's death is seen — with
        its result, if it answered before it died (as a Ray task's would be).  Should its
        socket not report the death, the runner hangs up after CANCEL_GRACE_SECONDS: the
        attempt ends then (and the worker's slot is given back) all the same."""
        self.stopped = True
        self._worker.kill()
        with contextlib.suppress(RuntimeError):  # no loop: the process is ending anyway
            asyncio.get_running_loop().call_later(CANCEL_GRACE_SECONDS, self._worker.close)


def _any_running(threads: Iterable[_Thread]) -> bool:
    return any(not thread.done() for thread in threads)


def retire_marker() -> Path:
    """Where a runner that ends its own process leaves word for its restarted self (the actor
    id survives restarts; the file lives on the node, and a restart elsewhere means the node
    was lost — a real crash)."""
    actor_id = ray.get_runtime_context().get_actor_id()
    return Path(tempfile.gettempdir()) / f"wfdag-retired-{actor_id}"


def retire(reason: str, execution_id: str | None, log: Any) -> NoReturn:
    """End this process, and with it the local stage threads that must not run on: Ray
    restarts the runner, which hands the execution back uncounted (the marker says the exit
    was deliberate) for whoever takes the lease to resume from its log."""
    log.error("runner.retiring", reason=reason, execution_id=execution_id,
              next_step="Ray restarts this runner; the execution resumes from its log")
    with contextlib.suppress(OSError):
        retire_marker().write_text(execution_id or "")
    sys.stderr.flush()
    os._exit(RETIRE_EXIT_CODE)


class Dispatcher:
    """The stage attempts of one runner in flight: on stage workers, task refs, local
    threads."""

    def __init__(self, local_threads: int, log: Any, workers: StageWorkers) -> None:
        self._log = log
        self._local_threads = local_threads
        self._workers = workers
        self._refs: dict[Key, Any] = {}  # task stages in flight
        self._busy: dict[Key, _OnWorker] = {}  # attempts on stage workers
        # Their calls, held until they end: one whose drive was cancelled (a lost lease) still
        # runs until its killed worker's death is seen — a task nothing referred to would be
        # collected before that, and never close its worker or give its slot back.
        self._calls: set[asyncio.Future[AttemptResult]] = set()
        self._local: dict[Key, _Thread] = {}
        self._abandoned: set[_Thread] = set()
        #: Coroutine agents cancelled by stop_tasks(): what they return is not their attempt's.
        self._stopped: set[asyncio.Task[AttemptResult]] = set()
        self._imports: dict[str, asyncio.Future[Any]] = {}  # agent modules, by name
        #: Each local agent (handler, reference agent, path) → its coroutine function, or None
        #: for a thread: resolved once, not at every attempt.
        self._coroutines: dict[tuple[str | None, ...], Any] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def _threads(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self._local_threads, thread_name_prefix="wfdag-local")
        return self._pool

    def done(self, key: Key) -> None:
        """Forget a finished attempt."""
        self._refs.pop(key, None)
        self._local.pop(key, None)
        self._busy.pop(key, None)

    def stop_tasks(self) -> None:
        """Kill every task stage in flight (their workers); cancel coroutine agents."""
        for local in self._local.values():
            if isinstance(local, asyncio.Task) and not local.done():
                self._stopped.add(local)
                local.cancel()
        for ref in self._refs.values():
            ray.cancel(ref, force=True)
        self._refs.clear()
        for call in self._busy.values():
            call.stop()
        self._busy.clear()

    def abandoned_running(self) -> bool:
        """A local thread outlived its attempt (timed out or cancelled) and still runs."""
        return _any_running(self._abandoned)

    def local_still_running(self) -> bool:
        """A local stage thread still runs: one in flight, or one abandoned by its attempt."""
        return _any_running(self._local.values()) or _any_running(self._abandoned)

    async def settle_local(self) -> None:
        """Give cancelled coroutine agents :data:`COROUTINE_GRACE_SECONDS` to end (threads
        cannot be made to)."""
        tasks = {t for t in (*self._local.values(), *self._abandoned)
                 if isinstance(t, asyncio.Task) and not t.done()}
        if tasks:
            await asyncio.wait(tasks, timeout=COROUTINE_GRACE_SECONDS)

    def clear(self) -> None:
        self._local.clear()
        self._abandoned.clear()
        self._stopped.clear()

    def forget_abandoned(self) -> None:
        self._abandoned.clear()

    async def _coroutine(self, spec: AttemptSpec, stage: WorkflowStage) -> Any:
        """The local agent as a coroutine function to await on the loop, or ``None`` (a
        thread runs it) — known once its module is imported."""
        key = (spec.handler, spec.agent_type, spec.agent)
        if key not in self._coroutines:
            if not await self._imported(spec, stage):
                return None  # not known yet: the next attempt looks again
            self._coroutines[key] = coroutine_agent(spec)
        return self._coroutines[key]

    async def _imported(self, spec: AttemptSpec, stage: WorkflowStage) -> bool:
        """Whether the local agent's module may be looked at on the loop: it is imported (in
        a thread, the first time — however long that takes, the loop goes on; attempts that
        come meanwhile wait for the same import), or there is nothing to import.  False when
        the import failed or outlasts the stage's timeout: the attempt's thread then imports
        it again and reports what happens, under the timeout."""
        module = agent_module(spec)
        if module is None:
            return True
        importing = self._imports.get(module)
        if importing is None:
            if module in sys.modules:
                return True  # imported already
            importing = self._imports[module] = asyncio.get_running_loop().run_in_executor(
                self._threads(), importlib.import_module, module)
            importing.add_done_callback(lambda f: f.cancelled() or f.exception())
        if not importing.done():
            await asyncio.wait({importing}, timeout=stage.timeout_seconds)
        if not importing.done():
            return False
        if importing.exception() is not None:
            self._imports.pop(module, None)  # the next attempt tries again
            return False
        return True

    async def run(self, key: Key, workflow_id: str, stage: WorkflowStage, spec: AttemptSpec,
                  cancel: asyncio.Event | None) -> AttemptResult:
        """Run one attempt under the stage's timeout (``cancel`` set: the workflow fails)."""
        loop = asyncio.get_running_loop()
        local = stage.executor == "local"
        thread: _Thread | None = None
        ref: Any = None
        on_worker: _OnWorker | None = None
        # A task stage that asks for no resources takes an idle stage worker; with none ready
        # it runs as a Ray task of its own while one starts for the next attempts.
        worker = (self._workers.take() if not local and self._workers.enabled
                  and on_stage_worker(stage) else None)
        coroutine = await self._coroutine(spec, stage) if local else None
        result_future: asyncio.Future[Any]
        if coroutine is not None:
            thread = asyncio.ensure_future(run_coroutine_attempt(spec, coroutine))
            self._local[key] = thread
            # Shielded, as a thread's wrapped future: cancelling the wait leaves the agent be.
            result_future = asyncio.shield(thread)
        elif local:
            thread = self._threads().submit(run_guarded_attempt, spec)
            self._local[key] = thread
            result_future = asyncio.wrap_future(thread)
        elif worker is not None:
            on_worker = self._busy[key] = _OnWorker(self._workers, worker)
            result_future = call = asyncio.ensure_future(on_worker.run(spec))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)
        else:
            options = stage_task_options(workflow_id, stage, undo=key[0] == "undo")
            ref = _stage_remote().options(**options).remote(spec)
            self._refs[key] = ref
            result_future = asyncio.ensure_future(asyncio.wrap_future(ref.future()))

        def stop() -> None:
            if isinstance(thread, asyncio.Task):
                thread.cancel()
                self._abandoned.add(thread)  # until it has ended: see settle_local()
            elif thread is not None:
                if not thread.cancel():  # running already: it cannot be interrupted
                    self._abandoned.add(thread)
            elif on_worker is not None:
                on_worker.stop()
            else:
                # force=True: a blocking agent is interrupted only by killing its worker.
                ray.cancel(ref, force=True)

        started = loop.time()
        waiters: set[asyncio.Future[Any]] = {result_future}
        cancel_waiter = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
        if cancel_waiter is not None:
            waiters.add(cancel_waiter)
        try:
            done, _ = await asyncio.wait(waiters, timeout=stage.timeout_seconds,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:  # (cancelled too: its drive ends)
            if cancel_waiter is not None and not cancel_waiter.done():
                cancel_waiter.cancel()

        def failed(type_: str, message: str, retryable: bool) -> AttemptResult:
            return AttemptResult(ok=False, duration_ms=int((loop.time() - started) * 1000),
                                 error=error_info(type_, message, retryable))

        if result_future not in done:
            if not done:  # the timeout
                stop()
                if isinstance(thread, asyncio.Task):
                    await asyncio.wait({thread}, timeout=COROUTINE_GRACE_SECONDS)
                if on_worker is not None:
                    # Its worker's death is seen before the attempt ends: a retry never
                    # overlaps it.
                    await asyncio.wait({result_future}, timeout=CANCEL_GRACE_SECONDS)
                result_future.cancel()
                self._log.warning("stage.timed_out", stage_id=stage.id,
                                  timeout_seconds=stage.timeout_seconds)
                return failed("StageTimeoutError",
                              str(StageTimeoutError(stage.id, stage.timeout_seconds)), True)
            # Cancelled because the workflow is failing: a sibling that completes anyway is
            # recorded as completed (and compensated); otherwise it ends as cancelled.
            if not local:
                stop()
            try:
                finished = await asyncio.wait_for(result_future, CANCEL_GRACE_SECONDS)
                if on_worker is not None and not finished.ok:
                    raise asyncio.CancelledError  # its worker was killed under it
            except (RayError, TimeoutError, asyncio.CancelledError):
                if local:
                    stop()
                    if isinstance(thread, asyncio.Task):
                        await asyncio.wait({thread}, timeout=COROUTINE_GRACE_SECONDS)
                return failed("StageCancelled", "cancelled while it ran (the workflow failed "
                              "elsewhere, or a cancel was requested)", False)
        if thread in self._stopped:  # cancelled under it: the runner fenced itself, say
            return failed("StageStopped", "stopped by its runner (fenced or its lease lost); "
                          "it runs again", True)
        try:
            result: AttemptResult = result_future.result()
        except RayError as exc:
            # The worker died or the task could not run: a system failure, counted as a
            # retryable failed attempt.
            self._log.warning("stage.system_failure", stage_id=stage.id,
                              error_type=type(exc).__name__)
            return failed(type(exc).__name__, str(exc), True)
        if on_worker is not None and on_worker.lost and result.error is not None:
            self._log.warning("stage.system_failure", stage_id=stage.id,
                              error_type=result.error["type"])
        return result
