"""One Ray actor per execution: replays its stream, runs ready stages as Ray tasks, appends.

The actor keeps no state that is not in the log.  Killed at any instant and started again, it
folds its stream, skips what is done and carries on; an attempt cut short by the kill is run
again under the same attempt number and idempotency key.  It holds the execution's lease (an
advisory lock) while it lives; a stale instance is fenced by the store's version check and
stops itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import ray
from ray.exceptions import RayError

from actors.breakers import breaker_registry
from actors.logs import get_logger
from actors.runtime import NAMESPACE, actor_name, new_store
from actors.stage_task import run_stage_attempt
from definitions import ConcurrencyError, StageTimeoutError, WorkflowStage
from events import (
    Event,
    EventStore,
    ExecutionState,
    apply,
    attempt_events,
    compensation_events,
    decide,
    execution_lock_key,
    fold,
    upstream_outputs,
)

__all__ = ["ExecutionActor", "spawn_execution_actor", "stage_task_options"]

MAX_ACTOR_RESTARTS = int(os.environ.get("WFDAG_MAX_ACTOR_RESTARTS", "10"))
CANCEL_GRACE_SECONDS = 10.0


def _now() -> datetime:
    return datetime.now(UTC)


@cache
def _stage_remote() -> Any:
    return ray.remote(max_retries=0)(run_stage_attempt)


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


def _error(type_: str, message: str, retryable: bool) -> dict[str, Any]:
    return {"type": type_, "message": message[:2000], "retryable": retryable, "status_code": None}


@dataclass(frozen=True, slots=True)
class _Outcome:
    kind: str  # "run" | "undo"
    stage_id: str
    attempt: int
    duration_ms: int
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    breaker: dict[str, Any] | None = None


class ExecutionActor:
    """Drives one execution to its end.  Spawn with :func:`spawn_execution_actor`."""

    def __init__(self, execution_id: str, database_url: str) -> None:
        self.execution_id = execution_id
        self._database_url = database_url
        self._log = get_logger(execution_id=execution_id)
        self._refs: dict[tuple[str, str], Any] = {}
        self._cancel: dict[str, asyncio.Event] = {}
        self._rng = random.Random()
        self._lease_conn: Any = None
        self._exiting = False
        # An async actor's __init__ runs on its running event loop: schedule the work there.
        self._main_task = asyncio.get_running_loop().create_task(self._main())

    async def ready(self) -> str:
        return self.execution_id

    async def accepts(self) -> bool:
        """False once this actor is on its way out: a caller that appended an event for it
        (a rollback request) must start a new actor instead."""
        return not self._exiting

    async def _main(self) -> None:
        store: EventStore | None = None
        try:
            store = await new_store(self._database_url, max_size=3)
            await self._take_lease(store)
            events = await store.read(self.execution_id)
            if not events:
                self._log.error("execution.no_stream")
                return
            state = fold(events)
            self._log.info("execution.replayed", version=state.version, status=state.status)
            while True:
                await self._drive(store, state)
                # Before exiting, look once more: a rollback may have been requested since.
                # Callers that ask accepts() from now on are told to start a new actor.
                self._exiting = True
                more = await store.read(self.execution_id, after_seq=state.version)
                if not more:
                    break
                self._exiting = False
                state = fold(more, state)
        except ConcurrencyError:
            self._log.warning("execution.fenced", detail="another writer owns this stream")
        except Exception:
            # Anything else (the database gone, a bug): die and let Ray restart us, which
            # replays the log and carries on.
            self._log.exception("execution.actor_crashed")
            os._exit(1)
        finally:
            for ref in self._refs.values():
                ray.cancel(ref, force=True)
            self._refs.clear()
            if store is not None:
                if self._lease_conn is not None:
                    await store.pool.release(self._lease_conn)
                await store.close()
        self._log.info("execution.actor_exit")
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    async def _take_lease(self, store: EventStore) -> None:
        """Hold the execution's advisory lock on a connection of our own for our lifetime: at
        most one live runner per execution, across Ray clusters; it is released when this
        process dies.  If another instance still runs, wait for it to end."""
        self._lease_conn = await store.pool.acquire()
        key = execution_lock_key(self.execution_id)
        if not await self._lease_conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            self._log.warning("execution.waiting_for_lease")
            await self._lease_conn.execute("SELECT pg_advisory_lock($1)", key)
        self._log.info("execution.lease_taken")

    async def _drive(self, store: EventStore, state: ExecutionState) -> None:
        inflight: dict[tuple[str, str], asyncio.Task[_Outcome]] = {}
        pending: list[Event] = []  # applied to state, not yet appended
        while True:
            cancel: list[str] = []
            while True:  # decide step by step; all steps go in one transaction
                decision = decide(state, _now())
                cancel = decision.cancel
                if not decision.events:
                    break
                for event in decision.events:
                    apply(state, event)
                pending.extend(decision.events)
            if pending:
                await store.append(pending, expected_version=state.version - len(pending))
                for event in pending:
                    self._log.info("execution.event", seq=event.seq, type=event.type,
                                   stage_id=event.stage_id)
                pending = []
            if state.terminal:
                self._log.info("execution.finished", status=state.status)
                return
            for sid in cancel:
                self._cancel.setdefault(sid, asyncio.Event()).set()
            for sid in state.stages_in("running"):
                if ("run", sid) not in inflight:
                    inflight[("run", sid)] = asyncio.create_task(self._attempt(state, sid))
            for sid, undo in state.stages.items():
                if undo.compensation == "running" and ("undo", sid) not in inflight:
                    inflight[("undo", sid)] = asyncio.create_task(self._compensate(state, sid))
            if not inflight:
                raise RuntimeError(f"execution {self.execution_id} has nothing to wait for")
            done, _ = await asyncio.wait(inflight.values(), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                outcome = task.result()
                key = (outcome.kind, outcome.stage_id)
                del inflight[key]
                self._refs.pop(key, None)
                record = attempt_events if outcome.kind == "run" else compensation_events
                extra = {"breaker": outcome.breaker} if outcome.kind == "run" else {}
                for event in record(
                    state, outcome.stage_id, attempt=outcome.attempt, now=_now(),
                    duration_ms=outcome.duration_ms, output=outcome.output,
                    error=outcome.error, rng=self._rng, **extra,
                ):
                    apply(state, event)
                    pending.append(event)

    async def _wait_until(self, when: datetime | None, cancel: asyncio.Event) -> bool:
        """Sleep until ``when``; False when cancelled first."""
        if when is None:
            return not cancel.is_set()
        delay = (when - _now()).total_seconds()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancel.wait(), delay)
        return not cancel.is_set()

    async def _run_task(
        self, key: tuple[str, str], stage: WorkflowStage, spec: dict[str, Any],
        options: dict[str, Any], cancel: asyncio.Event | None,
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, int]:
        """Run one stage task under the stage's timeout: ``(output, error, duration_ms)``."""
        ref = _stage_remote().options(**options).remote(spec)
        self._refs[key] = ref
        loop = asyncio.get_running_loop()
        started = loop.time()
        result_future = asyncio.ensure_future(asyncio.wrap_future(ref.future()))
        waiters: set[asyncio.Future[Any]] = {result_future}
        cancel_waiter = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
        if cancel_waiter is not None:
            waiters.add(cancel_waiter)
        done, _ = await asyncio.wait(waiters, timeout=stage.timeout_seconds,
                                     return_when=asyncio.FIRST_COMPLETED)
        if cancel_waiter is not None and not cancel_waiter.done():
            cancel_waiter.cancel()

        def elapsed() -> int:
            return int((loop.time() - started) * 1000)

        if result_future not in done:
            # force=True: a blocking agent is interrupted only by killing its worker.
            ray.cancel(ref, force=True)
            if not done:  # the timeout
                result_future.cancel()
                error = StageTimeoutError(stage.id, stage.timeout_seconds)
                self._log.warning("stage.timed_out", stage_id=stage.id,
                                  timeout_seconds=stage.timeout_seconds)
                return None, _error("StageTimeoutError", str(error), True), elapsed()
            # Cancelled because the workflow is failing: a sibling that completes anyway is
            # recorded as completed (and compensated); otherwise it ends as cancelled.
            try:
                await asyncio.wait_for(result_future, CANCEL_GRACE_SECONDS)
            except (RayError, TimeoutError, asyncio.CancelledError):
                return None, _error("StageCancelled", "cancelled: the workflow failed", False), \
                    elapsed()
        try:
            result: dict[str, Any] = result_future.result()
        except RayError as exc:
            # The worker died or the task could not run: a system failure, counted as a
            # retryable failed attempt.
            self._log.warning("stage.system_failure", stage_id=stage.id,
                              error_type=type(exc).__name__)
            return None, _error(type(exc).__name__, str(exc), True), elapsed()
        if result["ok"]:
            return result["output"], None, result["duration_ms"]
        return None, result["error"], result["duration_ms"]

    def _spec(self, state: ExecutionState, stage: WorkflowStage, attempt: int) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "workflow_id": state.workflow_id,
            "stage_id": stage.id,
            "stage_name": stage.name,
            "attempt": attempt,
            "context": state.context,
            "inputs": upstream_outputs(state, stage.id),
            "idempotency_key": f"{self.execution_id}:{stage.id}",
            "agent_type": stage.agent_type,
            "agent": stage.agent,
            "capabilities": list(stage.capabilities),
            "database_url": self._database_url,
        }

    async def _attempt(self, state: ExecutionState, stage_id: str) -> _Outcome:
        stage = state.require_dag().stage(stage_id)
        record = state.stages[stage_id]
        attempt = record.attempts + 1
        cancel = self._cancel.setdefault(stage_id, asyncio.Event())
        if not await self._wait_until(record.retry_at, cancel):
            return _Outcome("run", stage_id, attempt, 0,
                            error=_error("StageCancelled", "cancelled before its retry", False))
        log = self._log.bind(stage_id=stage_id, attempt=attempt)
        registry = breaker_registry(self._database_url)
        cb = stage.breaker
        admission = await registry.acquire.remote(
            state.workflow_id, stage_id, cb.failure_threshold, cb.cooldown_seconds,
            stage.timeout_seconds + 30,
        )
        seen = {k: admission[k] for k in ("state", "failure_count")}
        if not admission["admitted"]:
            log.warning("stage.circuit_open", next_attempt_at=admission["next_attempt_at"])
            return _Outcome("run", stage_id, attempt, 0, breaker=seen, error=_error(
                "CircuitOpenError",
                f"circuit {state.workflow_id}:{stage_id} is {admission['state']} after "
                f"{admission['failure_count']} failures; the agent was not called. It half-opens "
                f"at {admission['next_attempt_at'] or 'the end of the current trial'}",
                False,
            ))
        log.info("stage.attempt_dispatched")
        output, error, duration = await self._run_task(
            ("run", stage_id), stage, self._spec(state, stage, attempt),
            stage_task_options(state.workflow_id, stage), cancel,
        )
        after = await registry.record.remote(state.workflow_id, stage_id, error is None,
                                             admission["token"])
        seen = {"state": after["state"], "failure_count": after["failure_count"]}
        if after.get("transition"):
            seen["transition"] = after["transition"]
        if error is None:
            log.info("stage.attempt_succeeded", duration_ms=duration)
        else:
            log.info("stage.attempt_failed", error_type=error["type"],
                     retryable=error["retryable"])
        return _Outcome("run", stage_id, attempt, duration, output=output, error=error,
                        breaker=seen)

    async def _compensate(self, state: ExecutionState, stage_id: str) -> _Outcome:
        stage = state.require_dag().stage(stage_id)
        record = state.stages[stage_id]
        attempt = record.comp_attempts + 1
        never = asyncio.Event()
        await self._wait_until(record.comp_retry_at, never)
        spec = self._spec(state, stage, attempt)
        spec.update(handler=stage.compensation_handler, output=record.output or {},
                    idempotency_key=f"{self.execution_id}:{stage_id}:compensate")
        self._log.info("compensation.dispatched", stage_id=stage_id, attempt=attempt,
                       handler=stage.compensation_handler)
        output, error, duration = await self._run_task(
            ("undo", stage_id), stage, spec,
            stage_task_options(state.workflow_id, stage, undo=True), None,
        )
        return _Outcome("undo", stage_id, attempt, duration, output=output, error=error)


@cache
def _actor_remote() -> Any:
    return ray.remote(ExecutionActor)


async def spawn_execution_actor(execution_id: str, database_url: str) -> Any:
    """Start (or find) the execution's actor, named ``wfdag-exec-<id>``, and wait until it runs.

    An actor of the same name that is just exiting is waited out and replaced.
    """
    for _ in range(3):
        handle = _actor_remote().options(
            name=actor_name(execution_id),
            namespace=NAMESPACE,
            lifetime="detached",
            max_restarts=MAX_ACTOR_RESTARTS,
            max_task_retries=-1,
            num_cpus=0,
            get_if_exists=True,
        ).remote(execution_id, database_url)
        try:
            await handle.ready.remote()
            if await handle.accepts.remote():
                return handle
        except RayError:
            continue  # it was exiting; the name is free again
        # An actor of the same name is exiting: wait for its name to be free.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while loop.time() < deadline:
            try:
                ray.get_actor(actor_name(execution_id), namespace=NAMESPACE)
            except ValueError:
                break
            await asyncio.sleep(0.05)
    raise RuntimeError(f"could not start the actor of execution {execution_id}")
