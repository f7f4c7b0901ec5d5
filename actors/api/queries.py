"""Reading executions and definitions: status, the log, waiting, replay, metrics.

None of these needs Ray: they read PostgreSQL (the read models and the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from actors.api.common import check_org, check_owner, ready_store
from actors.logs import get_logger
from definitions import (
    InvalidArgumentError,
    StageNotFoundError,
    StageStateError,
    WaitTimeoutError,
    WorkflowDAG,
    WorkflowNotFoundError,
    canonical_workflows,
)
from events import (
    TERMINAL_EVENT_TYPES,
    Event,
    EventStore,
    ExecutionState,
    fold,
    is_database_outage,
    parse_execution_id,
)
from projections import (
    ExecutionPage,
    ExecutionSnapshot,
    ProjectionRunner,
    WorkflowStatus,
    fetch_status,
    has_executions,
    snapshot,
    workflow_metrics,
)
from projections import (
    list_executions as _list_executions,
)

__all__ = [
    "get_available_workflows",
    "get_execution_events",
    "get_stage_output",
    "get_workflow",
    "get_workflow_metrics",
    "get_workflow_status",
    "list_executions",
    "list_workflows",
    "replay_execution",
    "replay_history",
    "wait_for_workflow",
    "watch_execution",
]

T = TypeVar("T")


async def get_workflow_status(
    execution_id: str, *, organization_id: str | None = None
) -> WorkflowStatus:
    """The execution's read model; an unknown id raises ``ExecutionNotFoundError``, and so does
    another organization's execution when ``organization_id`` is given (every call that takes
    ``organization_id`` behaves so)."""
    store = await ready_store()
    return await fetch_status(store.pool, execution_id, organization_id)


async def list_executions(
    *, status: str | None = None, workflow_id: str | None = None,
    organization_id: str | None = None, created_by: str | None = None,
    since: datetime | str | None = None, limit: int = 50, cursor: str | None = None,
    schedule_id: str | None = None,
) -> ExecutionPage:
    """Executions newest first, filtered by every argument given (``schedule_id``: the ones a
    schedule started), ``limit`` a page
    (1 to 1000): ``items`` are what :func:`get_workflow_status` returns, and ``next_cursor``,
    passed back as ``cursor``, gives the next page (``None`` on the last).  ``since`` is a
    time-zone-aware datetime or an ISO 8601 string; bad filters raise
    ``InvalidArgumentError``."""
    when: datetime | None
    if isinstance(since, str):
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            raise InvalidArgumentError(
                f"since {since[:60]!r} is not an ISO 8601 time (e.g. 2026-12-01T00:00:00Z)"
            ) from None
    else:
        when = since
    store = await ready_store()
    return await _list_executions(
        store.pool, status=status, workflow_id=workflow_id, organization_id=organization_id,
        created_by=created_by, since=when, limit=limit, cursor=cursor,
        schedule_id=schedule_id)


async def get_execution_events(
    execution_id: str, *, organization_id: str | None = None, check_chain: bool = True,
) -> list[Event]:
    """The execution's event log, in order; an unknown id raises ``ExecutionNotFoundError``,
    a log whose hash chain does not hold ``BrokenChainError`` — unless ``check_chain`` is
    false (to export a tampered log as the evidence it is)."""
    store = await ready_store()
    await check_owner(store, execution_id, organization_id)
    return await store.read_existing(execution_id, check_chain=check_chain)


async def watch_execution(
    execution_id: str, *, after_seq: int = 0, timeout: float | None = None,
    organization_id: str | None = None,
) -> AsyncIterator[Event]:
    """Yield the execution's events as they are appended (LISTEN/NOTIFY, no polling loop),
    starting after ``after_seq``, until its next terminal event."""
    eid = parse_execution_id(execution_id)
    store = await ready_store()
    await check_owner(store, eid, organization_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    last = after_seq
    async with store.subscribe(eid) as woken:
        while True:
            woken.clear()
            await _through_outages(store.relisten, deadline)
            events = await _through_outages(functools.partial(store.read, eid, after_seq=last),
                                            deadline)
            if last == 0 and not events:
                await fetch_status(store.pool, eid)  # raises not-found
            for event in events:
                last = event.seq
                yield event
                if event.type in TERMINAL_EVENT_TYPES:
                    return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                status = await _through_outages(lambda: fetch_status(store.pool, eid), None)
                raise WaitTimeoutError(eid, timeout or 0, status.status)
            # A safety re-check every 10 s, should a notification ever be lost.
            wait_for = 10.0 if remaining is None else min(remaining, 10.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), wait_for)


#: How long one database call of a waiter may take before it is abandoned and tried again (a
#: connection cut off without a word answers nothing, ever).
CALL_SECONDS = 10.0
#: The last read of a wait that ran out of time (its status, for the error) may take this long.
FINAL_READ_SECONDS = 2.0


class _OutOfTime(Exception):
    """The caller's deadline passed while the database did not answer."""


async def _through_outages(make: Callable[[], Awaitable[T]], deadline: float | None) -> T:
    """``await make()``, again and again while the database is unreachable (a restart, cut
    connections, no free connection), with backoff, until ``deadline``: each call is bounded
    by what is left of it (and by :data:`CALL_SECONDS`), so no acquire or read outlives it.
    Out of time: :class:`_OutOfTime`."""
    delay = 0.2
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise _OutOfTime
        bound = CALL_SECONDS if left is None else min(left, CALL_SECONDS)
        try:
            return await asyncio.wait_for(make(), bound)
        except TimeoutError as exc:
            error: BaseException = exc  # the call hung: a cut connection, an exhausted pool
        except Exception as exc:
            if not is_database_outage(exc):
                raise
            error = exc
        if deadline is not None and time.monotonic() + delay > deadline:
            raise _OutOfTime from error
        get_logger().warning("database.unavailable", error=type(error).__name__,
                             retry_in_s=delay, next_step="waiting for it to come back")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def wait_for_workflow(
    execution_id: str, timeout: float | None = None, *, organization_id: str | None = None
) -> WorkflowStatus:
    """The status once terminal; :class:`WaitTimeoutError` after ``timeout`` seconds.

    Waits on notifications (no polling) and reads the status only when one says the
    execution may have ended.  A database restart or cut connections while it waits are
    ridden out (reconnect with backoff, then a fresh read); every call to the database is
    bounded by the deadline, so it returns by then whatever the database does."""
    deadline = None if timeout is None else time.monotonic() + timeout
    eid = parse_execution_id(execution_id)
    last_seen = "unknown (the database did not answer)"
    store: EventStore | None = None
    try:
        store = await _through_outages(ready_store, deadline)
        await _through_outages(lambda: check_owner(store, eid, organization_id), deadline)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        # Woken by the end only (and by a lost connection), not by every event on the way.
        async with store.subscribe(eid, left, only=TERMINAL_EVENT_TYPES) as woken:
            check = True
            while True:
                woken.clear()
                if await _through_outages(store.relisten, deadline):
                    check = True  # notifications were lost with the old connection
                if check:
                    status = await _through_outages(lambda: fetch_status(store.pool, eid),
                                                    deadline)
                    last_seen = status.status
                    if status.terminal:
                        return status
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise _OutOfTime
                wait_for = 10.0 if remaining is None else min(remaining, 10.0)
                try:
                    await asyncio.wait_for(woken.wait(), wait_for)
                    last = store.last_notified_type(eid)
                    check = last is None or last in TERMINAL_EVENT_TYPES
                except TimeoutError:
                    check = True  # a safety re-check, should a notification ever be lost
    except _OutOfTime:
        if store is not None:  # say where it is now, if the database answers at once
            with contextlib.suppress(Exception):
                last_seen = (await asyncio.wait_for(fetch_status(store.pool, eid),
                                                    FINAL_READ_SECONDS)).status
        raise WaitTimeoutError(eid, timeout or 0, last_seen) from None


async def get_workflow_metrics(
    workflow_id: str, *, organization_id: str | None = None,
) -> dict[str, Any]:
    """The seed's key metrics of one workflow, as a JSON-able dict: ``total, completed,
    failed, rolled_back, success_rate`` (0..1; ``None`` while none has ended),
    ``avg_duration_ms, p95_duration_ms,
    compensations, breaker_opens`` and ``stages: {stage_id: {runs, avg_duration_ms,
    p95_duration_ms, retries, failures}}`` (definitions in ``projections.metrics``).
    With ``organization_id``, of that organization's executions and breakers only.
    The projection is caught up with the log first."""
    if organization_id is not None:
        check_org(organization_id)
    store = await ready_store()
    try:
        await store.get_definition(workflow_id)
    except WorkflowNotFoundError:
        # Not registered here, but its executions may be (imported logs): those count.
        if not await has_executions(store.pool, workflow_id):
            raise
    await ProjectionRunner(store.pool).catch_up()
    return await workflow_metrics(store.pool, workflow_id, organization_id)


async def get_stage_output(
    execution_id: str, stage_id: str, *, organization_id: str | None = None
) -> dict[str, Any]:
    """A completed stage's output, whole, from the log (``executed_steps`` in the status keeps
    only small outputs).  An unknown stage raises ``StageNotFoundError``; one that has not
    completed, ``StageStateError`` naming its status."""
    store = await ready_store()
    await check_owner(store, execution_id, organization_id)
    state = fold(await store.read_existing(execution_id))
    dag = state.require_dag()
    if not dag.has_stage(stage_id):
        raise StageNotFoundError(state.workflow_id, stage_id)
    record = state.stages[stage_id]
    if record.status != "completed" or record.output is None:
        raise StageStateError(f"stage {stage_id!r} of execution {state.execution_id} is "
                              f"{record.status}: only a completed stage has an output")
    return record.output


async def replay_execution(
    execution_id: str, until_seq: int | None = None, *, organization_id: str | None = None
) -> ExecutionSnapshot:
    """The execution's state folded from its log up to event ``until_seq`` (all by default)."""
    if until_seq is not None and until_seq < 1:
        raise InvalidArgumentError(f"until_seq must be 1 or more, got {until_seq}")
    store = await ready_store()
    await check_owner(store, execution_id, organization_id)
    events = await store.read_existing(execution_id, until_seq=until_seq)
    if until_seq is not None and events[-1].seq < until_seq:
        raise InvalidArgumentError(
            f"execution {events[-1].execution_id} has {events[-1].seq} events: until_seq "
            f"{until_seq} is past its end (its final state is at {events[-1].seq})")
    return snapshot(fold(events))


async def replay_history(
    execution_id: str, *, organization_id: str | None = None
) -> list[tuple[Event, ExecutionSnapshot]]:
    """Every event of the execution with the state right after it."""
    store = await ready_store()
    await check_owner(store, execution_id, organization_id)
    events = await store.read_existing(execution_id)
    state: ExecutionState | None = None
    history: list[tuple[Event, ExecutionSnapshot]] = []
    for event in events:
        state = fold([event], state)
        history.append((event, snapshot(state)))
    return history


def get_available_workflows() -> list[WorkflowDAG]:
    """The seven canonical workflow definitions (synchronous, as in the seed)."""
    return canonical_workflows()


async def list_workflows(*, include_inactive: bool = False) -> list[WorkflowDAG]:
    """Every registered definition: the latest active version of each workflow, or with
    ``include_inactive`` every version, by id then version."""
    store = await ready_store()
    return await store.list_definitions(include_inactive=include_inactive)


async def get_workflow(workflow_id: str, version: int | None = None) -> WorkflowDAG:
    """A registered definition (the latest active version unless one is named); an unknown
    one raises ``WorkflowNotFoundError``."""
    store = await ready_store()
    return await store.get_definition(workflow_id, version)
