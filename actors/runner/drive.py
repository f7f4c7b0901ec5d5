"""One drive of one claimed execution: fold its log, decide, dispatch, record — until it ends.

A runner keeps no state that is not in the log.  Killed at any instant, its execution's lease
is released with its process; a runner (the restarted one or another) claims the execution
again, folds its stream, skips what is done and carries on; an attempt cut short by the kill is
run again under the same attempt number and idempotency key.  A stale writer is fenced by the
store's version check, and a runner whose lease session died cannot write at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import UTC, datetime
from typing import Any

from actors.breakers import BreakerView
from actors.logs import bound
from actors.metrics import record_events, record_started
from actors.runner.attempts import StageCalls
from actors.runner.dispatch import Dispatcher, retire
from actors.runner.logread import json_size, read_state, snapshot_of, take_snapshot
from actors.runner.protocol import DriveOutcome, StageOutcome, error_info
from actors.runtime import settings
from definitions import BrokenChainError, ConcurrencyError
from events import (
    REQUEST_EVENT_TYPES,
    Event,
    EventStore,
    ExecutionState,
    apply,
    attempt_events,
    children,
    compensation_events,
    database_reachable,
    decide,
    deferral_events,
    is_database_outage,
)
from events.database import session_alive
from events.leases import release_with_end
from events.secrets import Scrubber, has_sealed, open_secrets, seal_secrets, secret_values
from events.waiting import next_wake

__all__ = ["Drive", "LeaseLostError"]


def _now() -> datetime:
    return datetime.now(UTC)


def _conflicted(task: asyncio.Task[None]) -> bool:
    """An append that ended because the log had moved on (a request, or a fence)."""
    return (task.done() and not task.cancelled()
            and isinstance(task.exception(), ConcurrencyError))


class LeaseLostError(Exception):
    """The runner's lease connection died: it no longer owns the execution."""


class Drive(StageCalls):
    """Drives one execution on the runner's lease connection (see the module docstring)."""

    def __init__(self, *, execution_id: str, store: EventStore, lease_conn: Any,
                 lease_lost: asyncio.Event, dispatcher: Dispatcher, breakers: BreakerView,
                 database_url: str, log: Any, requested: asyncio.Event | None = None) -> None:
        self.execution_id = execution_id
        #: Set when someone else appended a request (a cancel) to this execution's log.
        self._requested = requested if requested is not None else asyncio.Event()
        #: Set when the drive parked the execution: (its next wake time, the log's version).
        self.parked: tuple[datetime | None, int | None] | None = None
        self._committed = 0  # the last seq known to be in the log
        self.released = False  # the append of its end gave the lease up too
        self._snapshot_seq = 0  # the seq of its latest snapshot of the fold
        self._store = store
        self._conn = lease_conn
        self._lease_lost = lease_lost
        self._dispatch = dispatcher
        self._breakers = breakers
        self._database_url = database_url
        self._log = log.bind(execution_id=execution_id)
        self._rng = random.Random()
        self._cancel: dict[str, asyncio.Event] = {}
        self._context: dict[str, Any] = {}  # the execution's context, secrets opened
        self._secrets: list[str] = []  # its secret values, to scrub from agents' words
        self._scrub = Scrubber(())
        self._log_bytes = 0  # its log (JSON) and the outputs decided since, against the cap

    async def run(self) -> DriveOutcome:
        """Drive the execution until it ends, or say why the drive stopped."""
        log = self._log
        try:
            with bound(execution_id=self.execution_id):
                try:
                    loaded = await read_state(self._store, self._conn, self.execution_id, log)
                except BrokenChainError as exc:
                    # Never run a log someone edited: it stays parked (only a request wakes
                    # it, and it parks again) until an operator restores it.
                    log.error("execution.chain_broken", seq=exc.seq,
                              next_step=f"wfdag verify {self.execution_id}")
                    self.parked = (None, None)  # parked whatever comes in
                    return DriveOutcome.PARKED
                state = loaded.state
                if state is None:
                    log.error("execution.no_stream")
                    return DriveOutcome.MISSING
                if state.evidence:
                    log.warning("execution.evidence_not_run",
                                detail="imported without resume: it is evidence, not work")
                    self.parked = (None, state.version)
                    return DriveOutcome.PARKED
                self._committed = state.version
                self._snapshot_seq = loaded.snapshot_seq
                if loaded.whole:
                    self._store.prime(loaded.events)  # its next append need not read its row
                self._log_bytes = loaded.log_bytes
                log.info("execution.replayed", version=state.version, status=state.status,
                         from_snapshot=loaded.snapshot_seq or None)
                # Sealed secrets are opened for the agents only; what agents say is scrubbed.
                self._context = (open_secrets(state.context) if has_sealed(state.context)
                                 else state.context)
                self._secrets = secret_values(self._context)
                for record in state.stages.values():  # secrets earlier agents returned
                    if has_sealed(record.output):
                        self._secrets.extend(secret_values(open_secrets(record.output)))
                self._scrub = Scrubber(self._secrets)
                if state.version == 1:
                    record_started(state.workflow_id)
                await self._children(state, children.adopt_actions(state))
                return await self._loop(state)
        except LeaseLostError:
            log.warning("execution.lease_lost",
                        detail="the lease connection died (database restart or partition): "
                               "in-flight stages stopped; whoever takes the lease resumes it")
            return DriveOutcome.LEASE_LOST
        except ConcurrencyError:
            log.warning("execution.fenced",
                        detail="another runner took this execution over (or this runner lost "
                               "its lease): stopping without writing")
            return DriveOutcome.FENCED
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
            if self._lease_lost.is_set() or not session_alive(self._conn):
                log.warning("execution.lease_lost", error=error,
                            detail="the lease connection died mid-write: whoever takes the "
                                   "lease resumes the execution from its log")
                return DriveOutcome.LEASE_LOST
            if is_database_outage(exc) or not await database_reachable(self._database_url):
                log.warning("execution.database_lost", error=error,
                            next_step="handed back; it resumes from its log once the database "
                                      "is back")
                return DriveOutcome.DATABASE_LOST
            raise
        finally:
            self._dispatch.stop_tasks()
            await self._dispatch.settle_local()
            if self._dispatch.local_still_running():
                # A local stage thread would run on unfenced (its lease is lost, or the drive
                # ended while it ran): only the end of this process stops it.
                retire("a local stage was still running when its drive ended",
                       self.execution_id, self._log)
            self._dispatch.clear()
            self._cancel.clear()

    async def _loop(self, state: ExecutionState) -> DriveOutcome:
        """Decide, dispatch, record — with the log written behind the decisions (group commit).

        Events are applied to the in-memory state as they are decided; one append is in flight
        at a time, and whatever is decided meanwhile goes into the next one.  Stages are
        dispatched before their decision commits, so the append and the stages overlap; a
        crash re-runs what was not committed under the same attempt numbers and idempotency
        keys, as a crash during an attempt would.  The end of an execution is reported only
        once every event is committed."""
        dag = state.require_dag()
        inflight: dict[tuple[str, str], asyncio.Task[StageOutcome]] = {}
        pending: list[Event] = []  # applied to state, not yet appended
        writing: asyncio.Task[None] | None = None  # the append in flight
        writing_events: list[Event] = []  # what it appends
        lease_waiter = asyncio.ensure_future(self._lease_lost.wait())
        request_waiter = asyncio.ensure_future(self._requested.wait())
        try:
            while True:
                if request_waiter.done() or (writing is not None and writing.done()
                                             and _conflicted(writing)):
                    # A request was appended beside this drive (or its append met one): let
                    # the append in flight end, then fold the log again with what this drive
                    # decided and has not written put after the request.
                    if writing is not None:
                        with contextlib.suppress(ConcurrencyError):
                            await writing
                        unwritten = writing_events if _conflicted(writing) else []
                        writing, writing_events = None, []
                    else:
                        unwritten = []
                    self._requested.clear()
                    request_waiter = asyncio.ensure_future(self._requested.wait())
                    state, pending = await self._absorb([*unwritten, *pending])
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
                    if _conflicted(writing):
                        continue  # absorbed at the top of the next turn
                    writing.result()  # an append that failed ends the drive here
                    writing, writing_events = None, []
                if self._dispatch.abandoned_running():
                    # A local stage outlived its attempt (timed out or cancelled): record that,
                    # then end the process before the stage could start again beside it.
                    if writing is not None:
                        await writing
                    await self._write(state, pending)
                    retire("a local stage outlived its attempt (timeout or cancellation) and "
                           "a thread cannot be stopped", self.execution_id, self._log)
                self._dispatch.forget_abandoned()
                if not state.terminal:
                    for sid in cancel:
                        self._cancel.setdefault(sid, asyncio.Event()).set()
                    for sid in state.stages_in("running"):
                        if ("run", sid) not in inflight and not dag.stage(sid).waits:
                            inflight[("run", sid)] = asyncio.create_task(
                                self._attempt(state, sid))
                    for sid, undo in state.stages.items():
                        if (undo.compensation == "running" and ("undo", sid) not in inflight
                                and undo.child_execution_id is None):  # a child: it waits
                            inflight[("undo", sid)] = asyncio.create_task(
                                self._compensate(state, sid))
                if state.terminal or (state.status == "waiting" and not inflight):
                    # The end, or a park (nothing runs, every running stage waits): everything
                    # decided is written first.
                    try:
                        if writing is not None:
                            await writing
                            writing, writing_events = None, []
                        await self._write(state, pending, release=state.terminal and not inflight
                                          and not self._dispatch.local_still_running())
                    except ConcurrencyError:
                        # A request came in just before: absorb it, decide again.
                        unwritten = [*writing_events, *pending] if writing is not None else pending
                        writing, writing_events = None, []
                        state, pending = await self._absorb(unwritten)
                        continue
                    if state.terminal:
                        self._log.info("execution.finished", status=state.status)
                        return DriveOutcome.ENDED
                    # It stays in the queue until a request or its next wake time.
                    self.parked = (next_wake(state), state.version)
                    self._log.info("execution.parked", waiting=state.stages_in("running"),
                                   wake_at=str(self.parked[0]))
                    return DriveOutcome.PARKED
                if pending and writing is None:
                    writing = asyncio.create_task(self._write(state, pending))
                    writing_events, pending = pending, []
                if not inflight and writing is None:
                    raise RuntimeError(
                        f"execution {state.execution_id} has nothing to wait for")
                waiters: list[asyncio.Future[Any]] = [*inflight.values(), lease_waiter,
                                                      request_waiter]
                if writing is not None:
                    waiters.append(writing)
                wake = next_wake(state)  # a timer or a deadline beside stages that run
                timeout = None if wake is None else max(0.0, (wake - _now()).total_seconds())
                done, _ = await asyncio.wait(waiters, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if lease_waiter in done:
                    # Another runner may take over at once: stop every stage task now (run()'s
                    # finally kills them) so that no stage ever runs twice at the same time.
                    for running in inflight.values():
                        running.cancel()
                    raise LeaseLostError()
                for finished in done:
                    if finished is writing or finished is request_waiter:
                        continue  # looked at on the next turn
                    outcome = finished.result()
                    assert isinstance(outcome, StageOutcome)
                    key = (outcome.kind, outcome.stage_id)
                    del inflight[key]
                    self._dispatch.done(key)
                    pending.extend(self._record(state, outcome))
        finally:
            lease_waiter.cancel()
            request_waiter.cancel()
            if self._lease_lost.is_set():
                # Stop the stages before anything that may wait on the lost connection (cut
                # off by a partition, it may not fail for minutes): never two at once.
                self._dispatch.stop_tasks()
                await self._dispatch.settle_local()
                if self._dispatch.local_still_running():
                    retire("a local stage was still running when its lease was lost",
                           self.execution_id, self._log)
            if writing is not None and not writing.done():
                # Let it end on its own (it fails at once if the session is gone): a cancelled
                # statement would leave the lease connection busy for the release.  Bounded:
                # a connection cut off without a word is dropped by the runner.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(writing), 5.0)

    async def _absorb(self, unwritten: list[Event]) -> tuple[ExecutionState, list[Event]]:
        """Fold the log again after another writer appended requests (a cancel) to it, and
        put ``unwritten`` (decided here, not in the log) after them.  Anything else past what
        this drive wrote means another runner writes: it is fenced."""
        loaded = await read_state(self._store, self._conn, self.execution_id, self._log)
        foreign = [e for e in loaded.events if e.seq > self._committed]
        if any(e.type not in REQUEST_EVENT_TYPES for e in foreign) or loaded.state is None:
            raise ConcurrencyError(self.execution_id, self._committed)
        state = loaded.state
        self._committed = state.version
        self._snapshot_seq = loaded.snapshot_seq
        if loaded.whole:
            self._store.prime(loaded.events)  # the row changed under this store's projector
        moved: list[Event] = []
        for event in unwritten:
            event = event.model_copy(update={"seq": state.version + 1})
            apply(state, event)
            moved.append(event)
        if foreign:
            self._log.info("execution.request_absorbed", types=[e.type for e in foreign],
                           moved=len(moved))
        return state, moved

    def _record(self, state: ExecutionState, outcome: StageOutcome) -> list[Event]:
        """The events of a finished attempt, applied to ``state``."""
        if outcome.deferred:
            when = datetime.fromisoformat(outcome.retry_at) if outcome.retry_at else None
            waits = deferral_events(state, outcome.stage_id, attempt=outcome.attempt,
                                    now=_now(), next_attempt_at=when, breaker=outcome.breaker,
                                    rng=self._rng)
            for event in waits:
                apply(state, event)
            return waits
        record = attempt_events if outcome.kind == "run" else compensation_events
        extra = {"breaker": outcome.breaker} if outcome.kind == "run" else {}
        output, error = outcome.output, outcome.error
        # An agent that echoes a secret (or any URL's password) does not get it stored.
        output, error = self._scrub(output), self._scrub(error)
        invented = secret_values(output) if output is not None else []
        if invented:  # a secret-like key an agent made up: sealed, and scrubbed from now on
            output = seal_secrets(output)
            self._secrets = sorted({*self._secrets, *invented}, key=len, reverse=True)
            self._scrub = Scrubber(self._secrets)
        if output is not None and outcome.kind == "run":
            cap = settings().max_log_bytes
            size = json_size(output)
            if self._log_bytes + size > cap:  # the log stays bounded: the stage fails
                output, error = None, error_info(
                    "PayloadTooLargeError",
                    f"stage {outcome.stage_id}'s output ({size} bytes) would take the "
                    f"execution's log past WFDAG_MAX_LOG_BYTES ({cap} bytes; it holds "
                    f"{self._log_bytes}): return less (keep large data elsewhere and return "
                    f"a reference), or raise the cap", False)
            else:
                self._log_bytes += size  # counted once decided: it is on its way to the log
        events = list(record(
            state, outcome.stage_id, attempt=outcome.attempt, now=_now(),
            duration_ms=outcome.duration_ms, output=output, error=error, rng=self._rng,
            **extra,
        ))
        for event in events:
            apply(state, event)
        return events

    async def _write(self, state: ExecutionState, events: list[Event], *,
                     release: bool = False) -> None:
        """Append ``events`` (the next ones of the log, in order) on the lease connection;
        ``release``: the last is the end, no stage runs (else only once run() has stopped it,
        after this), and the same statement gives the lease up."""
        if not events:
            return
        # The fold as of these events, taken now: the drive goes on deciding while they are
        # written (its state moves ahead of the log).
        snap = snapshot_of(state, events[-1].seq, self._snapshot_seq, self._log_bytes)
        also = release_with_end(events, lambda: setattr(self, "released", True)) if release else []
        await self._store.append(events, expected_version=events[0].seq - 1, conn=self._conn,
                                 also=also)
        self._committed = events[-1].seq
        if snap is not None and await take_snapshot(self._conn, *snap, self._log):
            self._snapshot_seq = snap[2]
        for event in events:
            self._log.info("execution.event", seq=event.seq, type=event.type,
                           stage_id=event.stage_id)
        record_events(state.workflow_id, events)
        await self._children(state, children.plan(state, events))

    async def _children(self, state: ExecutionState, actions: list[children.ChildAction],
                        ) -> None:
        """Start, cancel or roll back children, or report this end to a parent."""
        try:
            await children.execute(self._store, state, actions)
        except Exception as exc:
            self._log.warning("execution.child_action_failed", error=str(exc)[:300],
                              actions=[(a.kind, a.child_id) for a in actions],
                              next_step="the next runner of the execution, or the sweep, "
                                        "does it again")
