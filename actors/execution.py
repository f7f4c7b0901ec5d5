"""Execution actors: a warm pool of runners, each driving one execution at a time.

A runner keeps no state that is not in the log.  Killed at any instant, its execution's lease
(an advisory lock on the runner's connection) is released with its process; a runner (the
restarted one or another) claims the execution again, folds its stream, skips what is done and
carries on; an attempt cut short by the kill is run again under the same attempt number and
idempotency key.  A stale writer is fenced by the store's version check.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import random
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import ray
from ray.exceptions import ActorUnavailableError, RayError

from actors.breakers import CHANNEL as BREAKER_CHANNEL
from actors.breakers import breaker_key, breaker_registry
from actors.logs import get_logger
from actors.metrics import record_events, record_started, set_live
from actors.runtime import NAMESPACE, new_store
from actors.stage_task import run_stage_attempt
from definitions import ConcurrencyError, DatabaseConfigError, StageTimeoutError, WorkflowStage
from events import (
    Event,
    EventStore,
    ExecutionState,
    apply,
    attempt_events,
    compensation_events,
    database_reachable,
    dead_letter_events,
    decide,
    fold,
    is_database_outage,
    is_embedded_default,
    upstream_outputs,
)
from events.database import session_alive
from events.secrets import has_sealed, open_secrets, scrub, secret_values
from projections import project_executions
from projections.queue import (
    QUEUE_CHANNEL,
    Claim,
    certify_restart,
    claim_next,
    hand_back,
    record_crash,
    release,
)

__all__ = [
    "MAX_RECOVERIES",
    "POOL_SIZE",
    "ExecutionActor",
    "dead_letter",
    "ensure_pool",
    "runner_name",
    "stage_task_options",
]

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


_CLOSED = ("closed", 0)
_ADMITTED: dict[str, Any] = {"admitted": True, "state": "closed", "failure_count": 0,
                             "token": None, "next_attempt_at": None}


class _LeaseLost(Exception):
    """The runner's lease connection died: it no longer owns the execution."""


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
    """A pooled execution actor, ``wfdag-runner-<k>``: adopts queued executions one at a time.

    It claims the oldest queued execution nobody runs by taking its lease, then drives it — with
    an actor task of its own named ``wfdag-exec-<execution id>`` running alongside (so the Ray
    dashboard shows which execution each runner drives) — releases the lease and claims the
    next.  Spawn the pool with :func:`ensure_pool`.
    """

    def __init__(self, database_url: str, name: str) -> None:
        self.name = name
        self._database_url = database_url
        self._log = get_logger(runner=name)
        self._refs: dict[tuple[str, str], Any] = {}  # task stages in flight
        self._local: dict[tuple[str, str], concurrent.futures.Future[dict[str, Any]]] = {}
        self._abandoned: set[concurrent.futures.Future[dict[str, Any]]] = set()
        self._thread_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._cancel: dict[str, asyncio.Event] = {}
        self._rng = random.Random()
        self._store: EventStore | None = None
        self._running: str | None = None
        # The connection holding the lease of the execution driven: its reads and appends go
        # through it (no pool round trips, and a runner whose lease session died cannot write).
        self._lease_conn: Any = None
        self._lost = False  # the execution driven was lost with the database connection
        self._lease_lost = asyncio.Event()  # set when the lease connection dies
        # breaker key → (state, failures) as last seen; None: ask the registry.  None as a
        # whole until loaded.  A key never seen has never failed: closed, no failures.
        self._breaker_view: dict[str, tuple[str, int] | None] | None = None
        self._context: dict[str, Any] = {}  # the driven execution's context, secrets opened
        self._secrets: list[str] = []  # its secret values, to scrub from agents' words
        self._wake = asyncio.Event()
        self._driving: dict[str, asyncio.Event] = {}  # execution id → set when its drive ends
        # An async actor's __init__ runs on its running event loop: schedule the work there.
        self._serve_task = asyncio.get_running_loop().create_task(self._serve())

    async def ready(self) -> str:
        return self.name

    async def node_id(self) -> str:
        """The Ray node this runner lives on (it moves when its node is lost)."""
        return str(ray.get_runtime_context().get_node_id())

    async def current(self) -> str | None:
        """The execution this runner drives now, if any."""
        return self._running

    def _on_enqueued(self, *_args: object) -> None:
        self._wake.set()

    async def _load_breaker_view(self, conn: Any) -> None:
        """This runner's view of the circuit breakers: a breaker it knows closed with no
        failures admits an attempt without a round trip to the registry.  Every persisted
        change is notified on ``wfdag_breakers``; a notified breaker is asked again."""
        self._breaker_view = None
        await conn.add_listener(BREAKER_CHANNEL, self._on_breaker)
        rows = await conn.fetch("SELECT key, state, failure_count FROM circuit_breakers")
        self._breaker_view = {r["key"]: (r["state"], r["failure_count"]) for r in rows}

    def _on_breaker(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if self._breaker_view is not None:
            self._breaker_view[str(payload).rpartition(" ")[0]] = None  # ask the registry

    async def _serve(self) -> None:
        me = ray.get_runtime_context().current_actor
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        backoff = 0.5
        while True:
            store: EventStore | None = None
            lease_conn: Any = None
            try:
                store = await new_store(self._database_url, max_size=4)
                self._store = store
                lease_conn = await store.pool.acquire()
                self._lease_conn = lease_conn
                lease_lost = self._lease_lost = asyncio.Event()
                lease_conn.add_termination_listener(lambda _conn, ev=lease_lost: ev.set())
                if restarted:
                    # This runner's previous process died: what it drove counts a recovery.
                    marker = _retire_marker()
                    if marker.exists():
                        # It retired itself on purpose (a local stage had to stop): uncounted.
                        await hand_back(lease_conn, self.name)
                        marker.unlink(missing_ok=True)
                    else:
                        orphans = await certify_restart(lease_conn, self.name)
                        if orphans:
                            self._log.warning("runner.restarted", orphaned=orphans)
                    restarted = False
                if self._lost:
                    # Lost with the database connection: give it back, uncounted.
                    await hand_back(lease_conn, self.name)
                    self._lost = False
                wake = self._wake
                await lease_conn.add_listener(QUEUE_CHANNEL, self._on_enqueued)
                listening, just_drove = True, False
                await self._load_breaker_view(lease_conn)
                self._log.info("runner.ready", reconnect=backoff > 0.5)
                backoff = 0.5
                set_live(self.name, 0)
                while True:
                    wake.clear()
                    claim = await claim_next(lease_conn, self.name)
                    if claim is None:
                        just_drove = False
                        if not listening:
                            # Idle again: listen for enqueues, then look once more (one may
                            # have come before the LISTEN).
                            await lease_conn.add_listener(QUEUE_CHANNEL, self._on_enqueued)
                            listening = True
                            continue
                        # Woken by an enqueue; the timeout covers leases freed by dead runners.
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(wake.wait(), IDLE_RECHECK_SECONDS)
                        continue
                    if listening and just_drove:
                        # Busy back to back (the queue is not empty): enqueue notifications
                        # would only wake this runner for nothing (every runner, every start).
                        await lease_conn.remove_listener(QUEUE_CHANNEL, self._on_enqueued)
                        listening = False
                    just_drove = True
                    eid = claim.execution_id
                    if claim.recoveries > MAX_RECOVERIES:
                        try:
                            await dead_letter(store, claim, lease_conn)
                        finally:
                            await release(lease_conn, eid)
                        continue
                    self._running = eid
                    set_live(self.name, 1)
                    outcome = "crashed"
                    driving = self._driving[eid] = asyncio.Event()
                    # The Ray dashboard's view of this drive: an actor task named after the
                    # execution, running as long as the drive (sent, not awaited: the drive
                    # does not wait for a round trip through Ray to start).
                    me.executing.options(name=f"wfdag-exec-{eid}").remote(eid)
                    try:
                        outcome = await self.run(eid)
                    except Exception as exc:
                        self._log.exception("runner.execution_crashed", execution_id=eid,
                                            recoveries=claim.recoveries)
                        await record_crash(lease_conn, eid, f"{type(exc).__name__}: {exc}")
                        await asyncio.sleep(1.0)  # don't spin on an execution that keeps failing
                    finally:
                        driving.set()
                        del self._driving[eid]
                        self._running = None
                        set_live(self.name, 0)
                        if outcome in ("database_lost", "lease_lost"):
                            self._lost = True
                        await release(lease_conn, eid)
                        self._lost = False
            except Exception as exc:
                outage = is_database_outage(exc)
                self._lost = self._lost or outage
                self._log.warning("runner.reconnecting" if outage else "runner.serve_failed",
                                  error=f"{type(exc).__name__}: {exc}"[:300], retry_in_s=backoff,
                                  exc_info=not outage)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self._store = None
                self._lease_conn = None
                if store is not None:
                    # terminate(): closing politely would wait on connections the outage broke.
                    store.pool.terminate()

    async def executing(self, execution_id: str) -> str:
        """Runs while this runner drives ``execution_id`` (as the actor task
        ``wfdag-exec-<id>``, so that the dashboard shows which execution each runner drives)."""
        driving = self._driving.get(execution_id)
        if driving is not None:
            await driving.wait()
        return execution_id

    async def run(self, execution_id: str) -> str:
        """Drive one claimed execution until it ends (this runner's own lease holds it)."""
        store = self._store
        assert store is not None
        base = self._log
        log = self._log = base.bind(execution_id=execution_id)
        try:
            events = await store.read(execution_id, conn=self._lease_conn)
            if not events:
                log.error("execution.no_stream")
                return "missing"
            state = fold(events)
            project_executions.remember_log(events)  # its next append need not read its row
            log.info("execution.replayed", version=state.version, status=state.status)
            # Sealed secrets are opened for the agents only; what agents say is scrubbed of them.
            self._context = open_secrets(state.context) if has_sealed(state.context) \
                else state.context
            self._secrets = secret_values(self._context)
            if state.version == 1:
                record_started(state.workflow_id)
            await self._drive(store, state)
            return state.status
        except _LeaseLost:
            log.warning("execution.lease_lost",
                        detail="the lease connection died (database restart or partition): "
                               "in-flight stages stopped; whoever takes the lease resumes it")
            return "lease_lost"
        except ConcurrencyError:
            log.warning("execution.fenced",
                        detail="another runner took this execution over (or this runner lost "
                               "its lease): stopping without writing")
            return "fenced"
        except Exception as exc:
            if self._lease_lost.is_set() or not session_alive(self._lease_conn):
                log.warning("execution.lease_lost", error=f"{type(exc).__name__}: {exc}"[:300],
                            detail="the lease connection died mid-write: whoever takes the "
                                   "lease resumes the execution from its log")
                return "lease_lost"
            if is_database_outage(exc) or not await database_reachable(self._database_url):
                log.warning("execution.database_lost", error=f"{type(exc).__name__}: {exc}"[:300],
                            next_step="handed back; it resumes from its log once the database "
                                      "is back")
                return "database_lost"
            raise
        finally:
            self._log = base
            for ref in self._refs.values():
                ray.cancel(ref, force=True)
            self._refs.clear()
            if self._local_still_running():
                # A local stage thread would run on unfenced (its lease is lost, or the drive
                # ended while it ran): only the end of this process stops it.
                self._retire("a local stage was still running when its drive ended")
            self._local.clear()
            self._abandoned.clear()
            self._cancel.clear()

    async def _drive(self, store: EventStore, state: ExecutionState) -> None:
        """Decide, dispatch, record — with the log written behind the decisions (group commit).

        Events are applied to the in-memory state as they are decided; one append is in flight
        at a time, and whatever is decided meanwhile goes into the next one.  Stages are
        dispatched before their decision commits, so the append and the stages overlap; a
        crash re-runs what was not committed under the same attempt numbers and idempotency
        keys, as a crash during an attempt would.  The end of an execution is reported only
        once every event is committed."""
        inflight: dict[tuple[str, str], asyncio.Task[_Outcome]] = {}
        pending: list[Event] = []  # applied to state, not yet appended
        writing: asyncio.Task[None] | None = None  # the append in flight
        lease_waiter = asyncio.ensure_future(self._lease_lost.wait())
        try:
            while True:
                cancel: list[str] = []
                while True:  # decide step by step; all steps go in one append
                    decision = decide(state, _now())
                    cancel = decision.cancel
                    if not decision.events:
                        break
                    for event in decision.events:
                        apply(state, event)
                    pending.extend(decision.events)
                if writing is not None and writing.done():
                    writing.result()  # an append that failed ends the drive here
                    writing = None
                if _any_running(self._abandoned):
                    # A local stage outlived its attempt (timed out or cancelled): record that,
                    # then end the process before the stage could start again beside it.
                    if writing is not None:
                        await writing
                    await self._write(store, state, pending)
                    self._retire("a local stage outlived its attempt (timeout or "
                                 "cancellation) and a thread cannot be stopped")
                self._abandoned.clear()
                if not state.terminal:
                    for sid in cancel:
                        self._cancel.setdefault(sid, asyncio.Event()).set()
                    for sid in state.stages_in("running"):
                        if ("run", sid) not in inflight:
                            inflight[("run", sid)] = asyncio.create_task(
                                self._attempt(state, sid))
                    for sid, undo in state.stages.items():
                        if undo.compensation == "running" and ("undo", sid) not in inflight:
                            inflight[("undo", sid)] = asyncio.create_task(
                                self._compensate(state, sid))
                if state.terminal:
                    if writing is not None:
                        await writing
                        writing = None
                    await self._write(store, state, pending)
                    self._log.info("execution.finished", status=state.status)
                    return
                if pending and writing is None:
                    writing = asyncio.create_task(self._write(store, state, pending))
                    pending = []
                if not inflight and writing is None:
                    raise RuntimeError(
                        f"execution {state.execution_id} has nothing to wait for")
                waiters: list[asyncio.Future[Any]] = [*inflight.values(), lease_waiter]
                if writing is not None:
                    waiters.append(writing)
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if lease_waiter in done:
                    # Another runner may take over at once: stop every stage task now (run()'s
                    # finally kills them) so that no stage ever runs twice at the same time.
                    for running in inflight.values():
                        running.cancel()
                    raise _LeaseLost()
                for finished in done:
                    if finished is writing:
                        continue  # looked at on the next turn
                    outcome = finished.result()
                    assert isinstance(outcome, _Outcome)
                    key = (outcome.kind, outcome.stage_id)
                    del inflight[key]
                    self._refs.pop(key, None)
                    self._local.pop(key, None)
                    record = attempt_events if outcome.kind == "run" else compensation_events
                    extra = {"breaker": outcome.breaker} if outcome.kind == "run" else {}
                    output, error = outcome.output, outcome.error
                    if self._secrets:  # an agent that echoes a secret does not get it stored
                        output, error = scrub(output, self._secrets), scrub(error, self._secrets)
                    for event in record(
                        state, outcome.stage_id, attempt=outcome.attempt, now=_now(),
                        duration_ms=outcome.duration_ms, output=output,
                        error=error, rng=self._rng, **extra,
                    ):
                        apply(state, event)
                        pending.append(event)
        finally:
            lease_waiter.cancel()
            if writing is not None and not writing.done():
                # Let it end on its own (it fails at once if the session is gone): a cancelled
                # statement would leave the lease connection busy for the release.
                with contextlib.suppress(Exception):
                    await writing

    async def _write(self, store: EventStore, state: ExecutionState, events: list[Event]) -> None:
        """Append ``events`` (the next ones of the log, in order) on the lease connection."""
        if not events:
            return
        await store.append(events, expected_version=events[0].seq - 1, conn=self._lease_conn)
        for event in events:
            self._log.info("execution.event", seq=event.seq, type=event.type,
                           stage_id=event.stage_id)
        record_events(state.workflow_id, events)

    async def _wait_until(self, when: datetime | None, cancel: asyncio.Event) -> bool:
        """Sleep until ``when``; False when cancelled first."""
        if when is None:
            return not cancel.is_set()
        delay = (when - _now()).total_seconds()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancel.wait(), delay)
        return not cancel.is_set()

    async def _run_stage(
        self, key: tuple[str, str], state: ExecutionState, stage: WorkflowStage,
        spec: dict[str, Any], cancel: asyncio.Event | None,
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, int]:
        """Run one stage attempt under the stage's timeout: ``(output, error, duration_ms)``.

        A task stage is a Ray task, stopped by killing its worker; a local stage is a thread
        of this process, which cannot be stopped: one that outlives its attempt is abandoned,
        and :meth:`_drive` retires the process before anything could run the stage again."""
        loop = asyncio.get_running_loop()
        local = stage.executor == "local"
        thread: concurrent.futures.Future[dict[str, Any]] | None = None
        ref: Any = None
        if local:
            thread = self._threads().submit(run_stage_attempt, spec)
            self._local[key] = thread
            result_future: asyncio.Future[Any] = asyncio.wrap_future(thread)
        else:
            options = stage_task_options(state.workflow_id, stage, undo=key[0] == "undo")
            ref = _stage_remote().options(**options).remote(spec)
            self._refs[key] = ref
            result_future = asyncio.ensure_future(asyncio.wrap_future(ref.future()))

        def stop() -> None:
            if thread is not None:
                if not thread.cancel():  # running already: it cannot be interrupted
                    self._abandoned.add(thread)
            else:
                # force=True: a blocking agent is interrupted only by killing its worker.
                ray.cancel(ref, force=True)

        started = loop.time()
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
            if not done:  # the timeout
                stop()
                result_future.cancel()
                error = StageTimeoutError(stage.id, stage.timeout_seconds)
                self._log.warning("stage.timed_out", stage_id=stage.id,
                                  timeout_seconds=stage.timeout_seconds)
                return None, _error("StageTimeoutError", str(error), True), elapsed()
            # Cancelled because the workflow is failing: a sibling that completes anyway is
            # recorded as completed (and compensated); otherwise it ends as cancelled.
            if not local:
                stop()
            try:
                await asyncio.wait_for(result_future, CANCEL_GRACE_SECONDS)
            except (RayError, TimeoutError, asyncio.CancelledError):
                if local:
                    stop()
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

    def _threads(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._thread_pool is None:
            self._thread_pool = concurrent.futures.ThreadPoolExecutor(
                LOCAL_THREADS, thread_name_prefix="wfdag-local")
        return self._thread_pool

    def _local_still_running(self) -> bool:
        """A local stage thread still runs: one in flight, or one abandoned by its attempt."""
        return _any_running(self._local.values()) or _any_running(self._abandoned)

    def _retire(self, reason: str) -> NoReturn:
        """End this process, and with it the local stage threads that must not run on: Ray
        restarts the runner, which hands the execution back uncounted (the marker says the
        exit was deliberate) for whoever takes the lease to resume from its log."""
        self._log.error("runner.retiring", reason=reason, execution_id=self._running,
                        next_step="Ray restarts this runner; the execution resumes from its log")
        with contextlib.suppress(OSError):
            _retire_marker().write_text(self._running or "")
        sys.stderr.flush()
        os._exit(RETIRE_EXIT_CODE)

    def _spec(self, state: ExecutionState, stage: WorkflowStage, attempt: int) -> dict[str, Any]:
        return {
            "execution_id": state.execution_id,
            "workflow_id": state.workflow_id,
            "stage_id": stage.id,
            "stage_name": stage.name,
            "attempt": attempt,
            "context": self._context,
            "inputs": upstream_outputs(state, stage.id),
            "idempotency_key": f"{state.execution_id}:{stage.id}",
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
        key = breaker_key(state.workflow_id, stage_id)
        view = self._breaker_view
        if view is not None and view.get(key, _CLOSED) == _CLOSED:
            admission = _ADMITTED  # closed, no failures: no round trip
        else:
            admission = await registry.acquire.remote(
                state.workflow_id, stage_id, cb.failure_threshold, cb.cooldown_seconds,
                stage.timeout_seconds + 30,
            )
            if view is not None:
                view[key] = (admission["state"], admission["failure_count"])
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
        output, error, duration = await self._run_stage(
            ("run", stage_id), state, stage, self._spec(state, stage, attempt), cancel)
        if error is None and admission["state"] == "closed" and not admission["failure_count"]:
            # A success against a closed breaker with no failures changes nothing: no call.
            seen = {"state": "closed", "failure_count": 0}
        else:
            after = await registry.record.remote(state.workflow_id, stage_id, error is None,
                                                 admission["token"], cb.failure_threshold,
                                                 cb.cooldown_seconds)
            if view is not None:
                view[key] = (after["state"], after["failure_count"])
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
                    idempotency_key=f"{state.execution_id}:{stage_id}:compensate")
        self._log.info("compensation.dispatched", stage_id=stage_id, attempt=attempt,
                       handler=stage.compensation_handler)
        output, error, duration = await self._run_stage(("undo", stage_id), state, stage, spec,
                                                         None)
        return _Outcome("undo", stage_id, attempt, duration, output=output, error=error)


POOL_SIZE = int(os.environ.get("WFDAG_POOL_SIZE", "8"))
#: Threads a runner gives its local stages (``WFDAG_LOCAL_THREADS``): a fork wider than that
#: queues its local stages.
LOCAL_THREADS = int(os.environ.get("WFDAG_LOCAL_THREADS", "32"))
RETIRE_EXIT_CODE = 70


def _any_running(threads: Iterable[concurrent.futures.Future[dict[str, Any]]]) -> bool:
    return any(not thread.done() for thread in threads)


def _retire_marker() -> Path:
    """Where a runner that ends its own process leaves word for its restarted self (the actor
    id survives restarts; the file lives on the node, and a restart elsewhere means the node
    was lost — a real crash)."""
    actor_id = ray.get_runtime_context().get_actor_id()
    return Path(tempfile.gettempdir()) / f"wfdag-retired-{actor_id}"

#: How many times an execution may be adopted again after its runner died or crashed on it
#: (``WFDAG_MAX_RECOVERIES``); one more and it is dead-lettered: failed, with the reason.
MAX_RECOVERIES = int(os.environ.get("WFDAG_MAX_RECOVERIES", "5"))
IDLE_RECHECK_SECONDS = 2.0


async def dead_letter(store: EventStore, claim: Claim, conn: Any = None) -> bool:
    """Fail a claimed execution that keeps killing its runners (True when this call did it)."""
    log = get_logger(execution_id=claim.execution_id)
    state = fold(await store.read(claim.execution_id, conn=conn))
    if state.terminal:
        return False
    reason = claim.last_error or "the runner process died while driving it"
    events = dead_letter_events(state, _now(), recoveries=claim.recoveries, reason=reason)
    await store.append(events, expected_version=state.version, conn=conn)
    record_events(state.workflow_id, events)
    log.error("execution.dead_lettered", recoveries=claim.recoveries, reason=reason[:500],
              next_step=f"fix the cause, then `wfdag retry {claim.execution_id}`")
    return True


def runner_name(index: int) -> str:
    return f"wfdag-runner-{index}"


@cache
def _actor_remote() -> Any:
    return ray.remote(ExecutionActor)


_pool_ready: dict[str, list[Any]] = {}


async def _until_ready(handle: Any, timeout: float = 60.0) -> None:
    """Wait for a runner, riding out a restart (Ray restarts a killed or crashed runner)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await handle.ready.remote()
            return
        except ActorUnavailableError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


def runner_placement() -> dict[str, Any]:
    """Extra Ray options of the runners: ``WFDAG_RUNNER_RESOURCES`` (a JSON object of custom
    resources, e.g. ``{"wfdag": 0.01}``) keeps them on the nodes that offer those resources."""
    raw = os.environ.get("WFDAG_RUNNER_RESOURCES")
    if not raw:
        return {}
    try:
        resources = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"WFDAG_RUNNER_RESOURCES is not JSON: {exc}") from None
    if not isinstance(resources, dict) or not all(
            isinstance(v, int | float) and v > 0 for v in resources.values()):
        raise ValueError("WFDAG_RUNNER_RESOURCES must be a JSON object of positive numbers, "
                         f"got {raw!r}")
    return {"resources": resources}


def check_database_reachable_by_cluster(database_url: str) -> None:
    """Refuse the embedded default database on a multi-node cluster: it lives on one machine."""
    if not is_embedded_default(database_url):
        return
    alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    if len(alive) > 1:
        raise DatabaseConfigError(
            f"the embedded PostgreSQL lives on this machine only, and this Ray cluster has "
            f"{len(alive)} nodes: set WFDAG_DATABASE_URL to a PostgreSQL server that every "
            f"node reaches (see README, 'From one machine to a cluster')")


async def ensure_pool(
    database_url: str, size: int | None = None, *, refresh: bool = False
) -> list[Any]:
    """Start the runners this cluster lacks (``WFDAG_POOL_SIZE``, default 8) and wait for them.

    The pool size is the admission cap: at most that many executions run at once; the rest
    wait, durably, in ``execution_queue`` (status ``initiated``).  ``refresh`` looks again
    instead of trusting the handles of a pool seen ready before (a runner may have died)."""
    count = size or POOL_SIZE
    ready = None if refresh else _pool_ready.get(database_url)
    if ready is not None and len(ready) >= count:
        return ready  # started already: no round trip to Ray on the hot path
    check_database_reachable_by_cluster(database_url)
    handles = [
        _actor_remote().options(
            name=runner_name(k), namespace=NAMESPACE, lifetime="detached", max_restarts=-1,
            num_cpus=0, get_if_exists=True, **runner_placement(),
        ).remote(database_url, runner_name(k))
        for k in range(count)
    ]
    await asyncio.gather(*[_until_ready(h) for h in handles])
    _pool_ready[database_url] = handles
    return handles
