"""One Ray actor per execution: replays its stream, runs ready stages as Ray tasks, appends.

The actor keeps no state that is not in the log.  Killed at any instant and started again, it
folds its stream, skips what is done and carries on; an attempt cut short by the kill is run
again under the same attempt number and idempotency key.  A stale instance is fenced by the
store's version check and stops itself.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import ray
from ray.exceptions import RayError

from actors.logs import get_logger
from actors.runtime import NAMESPACE, actor_name, new_store
from actors.stage_task import run_stage_attempt
from definitions import ConcurrencyError, StageTimeoutError, WorkflowStage
from events import (
    Event,
    EventStore,
    ExecutionState,
    StageCancelled,
    apply,
    attempt_events,
    decide,
    execution_lock_key,
    fold,
    upstream_outputs,
)

__all__ = ["ExecutionActor", "spawn_execution_actor", "stage_task_options"]

MAX_ACTOR_RESTARTS = int(os.environ.get("WFDAG_MAX_ACTOR_RESTARTS", "10"))


def _now() -> datetime:
    return datetime.now(UTC)


@cache
def _stage_remote() -> Any:
    return ray.remote(max_retries=0)(run_stage_attempt)


def stage_task_options(workflow_id: str, stage: WorkflowStage) -> dict[str, Any]:
    """Ray options of a stage task: named ``<workflow>:<stage>``; 0 CPU unless it asks."""
    resources = dict(stage.resources or {})
    options: dict[str, Any] = {
        "name": f"{workflow_id}:{stage.id}",
        "num_cpus": resources.pop("CPU", 0),
    }
    if "GPU" in resources:
        options["num_gpus"] = resources.pop("GPU")
    if "memory" in resources:
        options["memory"] = resources.pop("memory")
    if resources:
        options["resources"] = resources
    return options


@dataclass(frozen=True, slots=True)
class _Outcome:
    stage_id: str
    attempt: int
    duration_ms: int
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class ExecutionActor:
    """Drives one execution to its end.  Spawn with :func:`spawn_execution_actor`."""

    def __init__(self, execution_id: str, database_url: str) -> None:
        self.execution_id = execution_id
        self._database_url = database_url
        self._log = get_logger(execution_id=execution_id)
        self._refs: dict[str, Any] = {}
        self._rng = random.Random()
        self._lease_conn: Any = None
        # An async actor's __init__ runs on its running event loop: schedule the work there.
        self._main_task = asyncio.get_running_loop().create_task(self._main())

    async def ready(self) -> str:
        return self.execution_id

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
            await self._drive(store, state)
        except ConcurrencyError:
            self._log.warning("execution.fenced", detail="another writer owns this stream")
        except Exception:
            # Anything else (the database gone, a bug): die and let Ray restart us, which
            # replays the log and carries on.
            self._log.exception("execution.actor_crashed")
            os._exit(1)
        finally:
            self._cancel_all()
            if store is not None:
                if self._lease_conn is not None:
                    await store.pool.release(self._lease_conn)
                await store.pool.close()
        self._exit()

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

    def _exit(self) -> None:
        self._log.info("execution.actor_exit")
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    def _cancel_all(self) -> None:
        for ref in self._refs.values():
            ray.cancel(ref, force=True)
        self._refs.clear()

    async def _append(self, store: EventStore, state: ExecutionState, events: list[Event]) -> None:
        """Append events already applied to ``state`` (they end at ``state.version``)."""
        if events:
            await store.append(events, expected_version=state.version - len(events))
            for event in events:
                self._log.info(
                    "execution.event", seq=event.seq, type=event.type, stage_id=event.stage_id
                )

    async def _drive(self, store: EventStore, state: ExecutionState) -> None:
        inflight: dict[str, asyncio.Task[_Outcome]] = {}
        pending: list[Event] = []  # applied to state, not yet appended
        while True:
            decided = decide(state, _now())
            for event in decided:
                apply(state, event)
                if isinstance(event, StageCancelled) and event.stage_id in inflight:
                    inflight.pop(event.stage_id).cancel()
                    ref = self._refs.pop(event.stage_id, None)
                    if ref is not None:
                        ray.cancel(ref, force=True)
            pending.extend(decided)
            await self._append(store, state, pending)  # one transaction per decision
            pending = []
            if state.terminal:
                self._log.info("execution.finished", status=state.status)
                return
            for sid in state.stages_in("running"):
                if sid not in inflight:
                    inflight[sid] = asyncio.create_task(self._attempt(state, sid))
            if not inflight:
                raise RuntimeError(f"execution {self.execution_id} has nothing to wait for")
            done, _ = await asyncio.wait(inflight.values(), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                outcome = task.result()
                del inflight[outcome.stage_id]
                self._refs.pop(outcome.stage_id, None)
                for event in attempt_events(
                    state, outcome.stage_id, attempt=outcome.attempt, now=_now(),
                    duration_ms=outcome.duration_ms, output=outcome.output,
                    error=outcome.error, rng=self._rng,
                ):
                    apply(state, event)
                    pending.append(event)

    async def _attempt(self, state: ExecutionState, stage_id: str) -> _Outcome:
        dag = state.require_dag()
        stage = dag.stage(stage_id)
        record = state.stages[stage_id]
        if record.retry_at is not None:
            wait = (record.retry_at - _now()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
        attempt = record.attempts + 1
        log = self._log.bind(stage_id=stage_id, attempt=attempt)
        spec = {
            "execution_id": self.execution_id,
            "workflow_id": state.workflow_id,
            "stage_id": stage_id,
            "stage_name": stage.name,
            "attempt": attempt,
            "context": state.context,
            "inputs": upstream_outputs(state, stage_id),
            "idempotency_key": f"{self.execution_id}:{stage_id}",
            "agent_type": stage.agent_type,
            "agent": stage.agent,
            "capabilities": list(stage.capabilities),
        }
        ref = _stage_remote().options(**stage_task_options(state.workflow_id, stage)).remote(spec)
        self._refs[stage_id] = ref
        log.info("stage.attempt_dispatched")
        started = asyncio.get_running_loop().time()
        try:
            result: dict[str, Any] = await asyncio.wait_for(
                asyncio.wrap_future(ref.future()), timeout=stage.timeout_seconds
            )
        except TimeoutError:
            # force=True: a blocking agent is interrupted only by killing its worker.
            ray.cancel(ref, force=True)
            error = StageTimeoutError(stage_id, stage.timeout_seconds)
            log.warning("stage.timed_out", timeout_seconds=stage.timeout_seconds)
            return _Outcome(
                stage_id, attempt, int(stage.timeout_seconds * 1000),
                error={"type": "StageTimeoutError", "message": str(error), "retryable": True,
                       "status_code": None},
            )
        except RayError as exc:
            # The worker died or the task could not run: a system failure, counted as a
            # retryable failed attempt.
            elapsed = int((asyncio.get_running_loop().time() - started) * 1000)
            log.warning("stage.system_failure", error_type=type(exc).__name__)
            return _Outcome(
                stage_id, attempt, elapsed,
                error={"type": type(exc).__name__, "message": str(exc)[:2000], "retryable": True,
                       "status_code": None},
            )
        if result["ok"]:
            log.info("stage.attempt_succeeded", duration_ms=result["duration_ms"])
            return _Outcome(stage_id, attempt, result["duration_ms"], output=result["output"])
        log.info("stage.attempt_failed", error_type=result["error"]["type"],
                 retryable=result["error"]["retryable"])
        return _Outcome(stage_id, attempt, result["duration_ms"], error=result["error"])


@cache
def _actor_remote() -> Any:
    return ray.remote(ExecutionActor)


async def spawn_execution_actor(execution_id: str, database_url: str) -> Any:
    """Start (or find) the execution's actor, named ``wfdag-exec-<id>``, and wait until it runs."""
    handle = _actor_remote().options(
        name=actor_name(execution_id),
        namespace=NAMESPACE,
        lifetime="detached",
        max_restarts=MAX_ACTOR_RESTARTS,
        max_task_retries=-1,
        num_cpus=0,
        get_if_exists=True,
    ).remote(execution_id, database_url)
    await handle.ready.remote()
    return handle
