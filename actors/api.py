"""The public API.  Async functions, each with a blocking ``*_sync`` twin for plain scripts.

    from actors import execute_workflow_dag_sync, wait_for_workflow_sync
    eid = execute_workflow_dag_sync("complete-value-lifecycle-v1",
                                    {"userId": "u", "organizationId": "o", "projectId": "p"},
                                    "user-123")
    print(wait_for_workflow_sync(eid, timeout=300).status)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import ray
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from actors.breakers import BreakerStatus, breaker_key, breaker_registry
from actors.execution import MAX_RECOVERIES, dead_letter, ensure_pool
from actors.logs import get_logger
from actors.projector import ensure_projector
from actors.runtime import (
    NAMESPACE,
    check_payload_size,
    ensure_ray,
    get_database_url,
    get_store,
    run_sync,
)
from definitions import (
    CANONICAL_WORKFLOWS,
    MAX_NESTING,
    ConcurrencyError,
    ExecutionStateError,
    InvalidContextError,
    InvalidWorkflowError,
    WfdagError,
    WorkflowDAG,
    WorkflowNotFoundError,
    canonical_workflows,
    nested_deeper_than,
    validate_workflow_dag,
)
from events import (
    TERMINAL_EVENT_TYPES,
    Event,
    EventStore,
    ExecutionState,
    RollbackRequested,
    WorkflowInitiated,
    execution_lock_key,
    fold,
    is_database_outage,
    lease_is_free,
    migrate,
    parse_execution_id,
)
from events.secrets import seal_secrets
from projections import (
    ExecutionSnapshot,
    ProjectionRunner,
    WorkflowStatus,
    fetch_status,
    snapshot,
    workflow_metrics,
)
from projections import rebuild_projections as _rebuild
from projections.queue import Claim, enqueue, runner_of

__all__ = [
    "BreakerStatus",
    "ExecutionSnapshot",
    "WaitTimeoutError",
    "execute_workflow_dag",
    "execute_workflow_dag_sync",
    "execution_actor",
    "get_available_workflows",
    "get_execution_events",
    "get_execution_events_sync",
    "get_workflow_circuit_breaker_status",
    "get_workflow_circuit_breaker_status_sync",
    "get_workflow_metrics",
    "get_workflow_metrics_sync",
    "get_workflow_status",
    "get_workflow_status_sync",
    "import_execution",
    "import_execution_sync",
    "initialize_workflow_system",
    "initialize_workflow_system_sync",
    "list_circuit_breakers",
    "list_circuit_breakers_sync",
    "rebuild_projections",
    "rebuild_projections_sync",
    "register_workflow",
    "register_workflow_sync",
    "replay_execution",
    "replay_execution_sync",
    "replay_history",
    "reset_workflow_circuit_breaker",
    "reset_workflow_circuit_breaker_sync",
    "retry_failed_workflow",
    "retry_failed_workflow_sync",
    "rollback_workflow",
    "rollback_workflow_sync",
    "wait_for_workflow",
    "wait_for_workflow_sync",
    "watch_execution",
]

P = ParamSpec("P")
T = TypeVar("T")

_ACTIVE = ("initiated", "in_progress", "compensating")


class WaitTimeoutError(WfdagError, TimeoutError):
    def __init__(self, execution_id: str, timeout: float, status: str) -> None:
        super().__init__(
            f"execution {execution_id} is still {status} after {timeout:g}s; wait again, or "
            f"see `wfdag events {execution_id}` for where it is"
        )
        self.execution_id = execution_id
        self.status = status


_schema_ready: set[str] = set()


async def _ready_store() -> EventStore:
    """The store, with migrations applied and canonical workflows registered (once a process)."""
    url = get_database_url()
    store = await get_store(url)
    if url not in _schema_ready:
        async with store.pool.acquire() as conn:
            await migrate(conn)
        for dag in canonical_workflows():
            await store.register_definition(dag)
        _schema_ready.add(url)
    return store


async def initialize_workflow_system(*, resume: bool = True) -> dict[str, Any]:
    """Apply migrations, register the canonical workflows, start (or complete) this cluster's
    pool of execution actors and its projection actor, and run the recovery sweep.

    The sweep looks at every execution that has not ended and that no live runner drives (no
    process anywhere holds its lease — the advisory lock its runner holds): one that was
    adopted more than ``WFDAG_MAX_RECOVERIES`` times already (its runners kept dying on it) is
    dead-lettered — failed, with the reason; every other one is (re)queued, and the pool adopts
    it.  Idempotent; safe from two drivers at once.

    Returns ``{"workflows": [...ids], "resumed": [...ids], "dead_lettered": [...ids],
    "pool": size}``.
    """
    log = get_logger()
    _schema_ready.discard(get_database_url())
    store = await _ready_store()
    ensure_ray()
    url = get_database_url()
    handles = await ensure_pool(url, refresh=True)
    await ensure_projector(url).ready.remote()
    resumed: list[str] = []
    dead: list[str] = []
    if resume:
        async with store.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT e.id, e.started_at, q.recoveries, q.runner, q.last_error "
                "FROM workflow_executions e "
                "LEFT JOIN execution_queue q ON q.execution_id = e.id "
                "WHERE e.status = ANY($1::text[]) ORDER BY e.started_at", list(_ACTIVE))
            for row in rows:
                eid = str(row["id"])
                key = execution_lock_key(eid)
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    continue  # a live runner drives it
                try:
                    # Its lease is free: a runner still recorded died holding it.
                    recoveries = (row["recoveries"] or 0) + (row["runner"] is not None)
                    if recoveries > MAX_RECOVERIES:
                        if await dead_letter(store, Claim(eid, recoveries, row["last_error"])):
                            dead.append(eid)
                        continue
                    # Make sure it is queued (an execution from before the queue existed).
                    await enqueue(conn, eid, row["started_at"])
                    log.info("execution.resumed", execution_id=eid, recoveries=recoveries)
                    resumed.append(eid)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", key)
    return {"workflows": sorted(CANONICAL_WORKFLOWS), "resumed": resumed,
            "dead_lettered": dead, "pool": len(handles)}


async def register_workflow(dag: WorkflowDAG | Mapping[str, Any]) -> WorkflowDAG:
    """Validate and store a definition.  Invalid → :class:`InvalidWorkflowError` listing every
    problem, nothing stored; the same id and version with other content → refused."""
    if isinstance(dag, WorkflowDAG):
        model = dag
    else:
        raw = dict(dag)
        label = str(raw.get("id", "?"))[:200]
        if nested_deeper_than(raw):
            raise InvalidWorkflowError(label, [f"the definition is nested more than "
                                               f"{MAX_NESTING} levels deep"])
        check_payload_size(f"workflow definition {label!r}", json.dumps(raw, default=str))
        try:
            model = WorkflowDAG.model_validate(raw)
        except PydanticValidationError as exc:
            raise InvalidWorkflowError(label, [
                f"{'.'.join(str(p) for p in err['loc']) or 'definition'}: {err['msg']}"
                for err in exc.errors()[:20]]) from None
    result = validate_workflow_dag(model)
    if not result.valid:
        raise InvalidWorkflowError(model.id, result.errors)
    store = await _ready_store()
    await store.register_definition(model)
    return model


def _check_context(context: Any) -> dict[str, Any]:
    if not isinstance(context, Mapping):
        raise InvalidContextError(
            f"context must be a JSON object (a dict), got {type(context).__name__}"
        )
    for key in context:
        if not isinstance(key, str):
            raise InvalidContextError(f"context keys must be strings, got {key!r}")
    if nested_deeper_than(dict(context)):
        raise InvalidContextError(f"context is nested more than {MAX_NESTING} levels deep")
    try:
        encoded = json.dumps(dict(context), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidContextError(f"context is not JSON-serialisable: {exc}") from None
    check_payload_size("context", encoded)
    return json.loads(encoded)  # type: ignore[no-any-return]


def _check_org(organization_id: Any) -> str:
    if not isinstance(organization_id, str) or not 0 < len(organization_id) <= 200:
        raise InvalidContextError("organization_id must be a string of 1 to 200 characters")
    return organization_id


def _check_user(user_id: Any) -> str:
    if not isinstance(user_id, str) or not user_id:
        raise InvalidContextError("user_id must be a non-empty string")
    return user_id


_IDEMPOTENCY_NAMESPACE = uuid.UUID("5f0c6a2e-9d1b-4f53-8f0e-6b3c2a7d9e41")


async def _start(
    store: EventStore, dag: dict[str, Any], context: dict[str, Any], user_id: str,
    *, retry_of: str | None = None, idempotency_key: str | None = None,
) -> str:
    if idempotency_key is None:
        execution_id = str(uuid.uuid4())
    else:
        # The same key for the same workflow always names the same execution: concurrent
        # starts race on UNIQUE(execution_id, seq), one writes, all return its id.
        execution_id = str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{dag['id']}\n{idempotency_key}"))
    try:
        await store.append(
            [
                WorkflowInitiated(
                    execution_id=execution_id, seq=1, at=datetime.now(UTC),
                    workflow_id=dag["id"], workflow_version=dag["version"], dag=dag,
                    context=context, user_id=user_id, retry_of=retry_of,
                    idempotency_key=idempotency_key,
                )
            ],
            expected_version=0,
        )
    except ConcurrencyError:
        if idempotency_key is None:
            raise
        get_logger(execution_id=execution_id).info("execution.start_deduplicated")
        return execution_id
    get_logger(execution_id=execution_id).info(
        "execution.initiated", workflow_id=dag["id"], version=dag["version"], retry_of=retry_of
    )
    ensure_ray()
    await ensure_pool(get_database_url())
    return execution_id


async def execute_workflow_dag(
    workflow_id: str,
    context: Mapping[str, Any],
    user_id: str,
    *,
    version: int | None = None,
    idempotency_key: str | None = None,
    organization_id: str | None = None,
) -> str:
    """Start an execution; returns its id once ``workflow_initiated`` is durable and the pool
    of execution actors runs.  Unknown workflow or a context that is not a JSON object → an
    error, nothing written.  With ``idempotency_key``, every call with the same key for the
    same workflow (concurrent ones too) starts at most one execution and returns its id.
    The execution belongs to the context's ``organizationId``; with ``organization_id`` the
    context's must be the same (or absent: it is set)."""
    _check_user(user_id)
    ctx = _check_context(context)
    ctx = seal_secrets(ctx)  # nothing under a secret-like key is stored in plain text
    check_payload_size("context (secrets sealed)", json.dumps(ctx))
    if organization_id is not None:
        _check_org(organization_id)
        given = ctx.get("organizationId")
        if given is None:
            ctx["organizationId"] = organization_id
        elif given != organization_id:
            raise InvalidContextError(
                f"the context's organizationId {str(given)[:100]!r} is not the caller's "
                f"organization {organization_id!r}")
    if idempotency_key is not None and (not isinstance(idempotency_key, str)
                                        or not 0 < len(idempotency_key) <= 500):
        raise InvalidContextError("idempotency_key must be a string of 1 to 500 characters")
    store = await _ready_store()
    dag = await store.get_definition(workflow_id, version)
    return await _start(store, dag.model_dump(mode="json"), ctx, user_id,
                        idempotency_key=idempotency_key)


async def rollback_workflow(
    execution_id: str, user_id: str, *, organization_id: str | None = None
) -> WorkflowStatus:
    """Undo a completed or failed execution: its completed stages are compensated in reverse
    order of completion.  Returns once the request is durable (status ``compensating``);
    ``wait_for_workflow`` waits for the end (``rolled_back``, or ``failed`` when a handler
    failed).  An execution already rolled back (or being rolled back) is left as it is."""
    _check_user(user_id)
    store = await _ready_store()
    for _ in range(5):
        status = await fetch_status(store.pool, execution_id, organization_id)
        if status.status in ("rolled_back", "compensating"):
            return status
        if status.status not in ("completed", "failed"):
            raise ExecutionStateError(status.execution_id, status.status, "a rollback",
                                      "completed or failed")
        try:
            await store.append(
                [RollbackRequested(execution_id=status.execution_id, seq=status.last_seq + 1,
                                   at=datetime.now(UTC), user_id=user_id)],
                expected_version=status.last_seq,
            )
        except ConcurrencyError:
            continue  # another request (or the actor) got there first: look again
        get_logger(execution_id=status.execution_id).info(
            "execution.rollback_requested", user_id=user_id)
        ensure_ray()
        await ensure_pool(get_database_url())
        return await fetch_status(store.pool, status.execution_id)
    raise ExecutionStateError(execution_id, "busy", "a rollback", "settled")


async def retry_failed_workflow(
    execution_id: str, user_id: str, *, organization_id: str | None = None
) -> str:
    """Start a new execution of a ``failed`` or ``rolled_back`` one: the same definition
    version and context, linked to it by ``retry_of`` in its first event.  The old execution
    keeps its status.  Returns the new execution id."""
    _check_user(user_id)
    store = await _ready_store()
    status = await fetch_status(store.pool, execution_id, organization_id)
    if status.status not in ("failed", "rolled_back"):
        raise ExecutionStateError(status.execution_id, status.status, "a retry",
                                  "failed or rolled_back")
    first = (await store.read(status.execution_id, until_seq=1))[0]
    assert isinstance(first, WorkflowInitiated)
    return await _start(store, first.dag, first.context, user_id, retry_of=first.execution_id)


async def _check_stage(workflow_id: str, stage_id: str) -> None:
    store = await _ready_store()
    dag = await store.get_definition(workflow_id)
    if not dag.has_stage(stage_id):
        raise WorkflowNotFoundError(f"{workflow_id}:{stage_id}")


def _breaker_status(row: Any) -> BreakerStatus:
    return BreakerStatus(
        workflow_id=row["workflow_id"], stage_id=row["stage_id"], state=row["state"],
        failure_count=row["failure_count"], opened_at=row["opened_at"],
        next_attempt_at=row["next_attempt_at"], failure_threshold=row["failure_threshold"],
        cooldown_seconds=row["cooldown_seconds"],
    )


async def get_workflow_circuit_breaker_status(workflow_id: str, stage_id: str) -> BreakerStatus:
    """The breaker of ``workflow_id:stage_id`` as last persisted by the registry: ``state``
    (``closed | open | half_open``), ``failure_count``, ``opened_at``, ``next_attempt_at``."""
    await _check_stage(workflow_id, stage_id)
    store = await _ready_store()
    row = await store.pool.fetchrow(
        "SELECT * FROM circuit_breakers WHERE key = $1", breaker_key(workflow_id, stage_id))
    if row is None:
        dag = await store.get_definition(workflow_id)
        config = dag.stage(stage_id).breaker
        return BreakerStatus(workflow_id=workflow_id, stage_id=stage_id, state="closed",
                             failure_count=0, opened_at=None, next_attempt_at=None,
                             failure_threshold=config.failure_threshold,
                             cooldown_seconds=config.cooldown_seconds)
    return _breaker_status(row)


async def list_circuit_breakers() -> list[BreakerStatus]:
    """Every breaker that has recorded anything, as last persisted."""
    store = await _ready_store()
    rows = await store.pool.fetch("SELECT * FROM circuit_breakers ORDER BY key")
    return [_breaker_status(r) for r in rows]


async def reset_workflow_circuit_breaker(workflow_id: str, stage_id: str) -> BreakerStatus:
    """Close the breaker and zero its failure count (through the registry actor)."""
    await _check_stage(workflow_id, stage_id)
    ensure_ray()
    view = await breaker_registry(get_database_url()).reset.remote(workflow_id, stage_id)
    return BreakerStatus.model_validate({k: view[k] for k in BreakerStatus.model_fields})


async def get_workflow_status(
    execution_id: str, *, organization_id: str | None = None
) -> WorkflowStatus:
    """The execution's read model; an unknown id raises ``ExecutionNotFoundError``, and so does
    another organization's execution when ``organization_id`` is given (every call that takes
    ``organization_id`` behaves so)."""
    store = await _ready_store()
    return await fetch_status(store.pool, execution_id, organization_id)


async def _check_owner(store: EventStore, execution_id: str, organization_id: str | None) -> None:
    if organization_id is not None:
        await fetch_status(store.pool, execution_id, organization_id)


async def get_execution_events(
    execution_id: str, *, organization_id: str | None = None
) -> list[Event]:
    """The execution's event log, in order; an unknown id raises ``ExecutionNotFoundError``."""
    store = await _ready_store()
    await _check_owner(store, execution_id, organization_id)
    return await store.read_existing(execution_id)


async def watch_execution(
    execution_id: str, *, after_seq: int = 0, timeout: float | None = None,
    organization_id: str | None = None,
) -> AsyncIterator[Event]:
    """Yield the execution's events as they are appended (LISTEN/NOTIFY, no polling loop),
    starting after ``after_seq``, until its next terminal event."""
    eid = parse_execution_id(execution_id)
    store = await _ready_store()
    await _check_owner(store, eid, organization_id)
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


async def _through_outages(make: Callable[[], Awaitable[T]], deadline: float | None) -> T:
    """``await make()``, again and again while the database is unreachable (a restart),
    with backoff, until ``deadline``."""
    delay = 0.2
    while True:
        try:
            return await make()
        except Exception as exc:
            if not is_database_outage(exc) or (
                    deadline is not None and time.monotonic() + delay > deadline):
                raise
            get_logger().warning("database.unavailable", error=type(exc).__name__,
                                 retry_in_s=delay, next_step="waiting for it to come back")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def wait_for_workflow(
    execution_id: str, timeout: float | None = None, *, organization_id: str | None = None
) -> WorkflowStatus:
    """The status once terminal; :class:`WaitTimeoutError` after ``timeout`` seconds.

    Waits on notifications (no polling) and reads the status only when one says the
    execution may have ended.  A database restart while it waits is ridden out (reconnect
    with backoff, then a fresh read)."""
    store = await _ready_store()
    eid = parse_execution_id(execution_id)
    await _check_owner(store, eid, organization_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    async with store.subscribe(eid) as woken:
        check = True
        while True:
            woken.clear()
            if await _through_outages(store.relisten, deadline):
                check = True  # notifications were lost with the old connection
            if check:
                status = await _through_outages(lambda: fetch_status(store.pool, eid), deadline)
                if status.terminal:
                    return status
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                status = await fetch_status(store.pool, eid)
                raise WaitTimeoutError(eid, timeout or 0, status.status)
            wait_for = 10.0 if remaining is None else min(remaining, 10.0)
            try:
                await asyncio.wait_for(woken.wait(), wait_for)
                last = store.last_notified_type(eid)
                check = last is None or last in TERMINAL_EVENT_TYPES
            except TimeoutError:
                check = True  # a safety re-check, should a notification ever be lost


async def get_workflow_metrics(workflow_id: str) -> dict[str, Any]:
    """The seed's key metrics of one workflow, as a JSON-able dict: ``total, completed,
    failed, rolled_back, success_rate`` (0..1), ``avg_duration_ms, p95_duration_ms,
    compensations, breaker_opens`` and ``stages: {stage_id: {runs, avg_duration_ms,
    p95_duration_ms, retries, failures}}`` (definitions in ``projections.metrics``).
    The projection is caught up with the log first."""
    store = await _ready_store()
    await store.get_definition(workflow_id)  # unknown → WorkflowNotFoundError
    await ProjectionRunner(store.pool).catch_up()
    return await workflow_metrics(store.pool, workflow_id)


async def rebuild_projections() -> dict[str, int]:
    """Drop the read models and rebuild them from the log; returns when done
    (``{"events": n, "executions": m}``).  Appends wait while it runs."""
    store = await _ready_store()
    return await _rebuild(store.pool)


async def replay_execution(
    execution_id: str, until_seq: int | None = None, *, organization_id: str | None = None
) -> ExecutionSnapshot:
    """The execution's state folded from its log up to event ``until_seq`` (all by default)."""
    if until_seq is not None and until_seq < 1:
        raise InvalidContextError(f"until_seq must be 1 or more, got {until_seq}")
    store = await _ready_store()
    await _check_owner(store, execution_id, organization_id)
    events = await store.read_existing(execution_id, until_seq=until_seq)
    return snapshot(fold(events))


async def replay_history(
    execution_id: str, *, organization_id: str | None = None
) -> list[tuple[Event, ExecutionSnapshot]]:
    """Every event of the execution with the state right after it."""
    store = await _ready_store()
    await _check_owner(store, execution_id, organization_id)
    events = await store.read_existing(execution_id)
    state: ExecutionState | None = None
    history: list[tuple[Event, ExecutionSnapshot]] = []
    for event in events:
        state = fold([event], state)
        history.append((event, snapshot(state)))
    return history


async def import_execution(lines: Iterable[str]) -> str:
    """Import one execution's log exported with ``wfdag events ID --json`` (JSON lines) into
    this database, all or nothing; returns its id.  Replay then gives the same state."""
    adapter: TypeAdapter[Event] = TypeAdapter(Event)
    events: list[Event] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(adapter.validate_json(line))
        except PydanticValidationError as exc:
            raise InvalidContextError(f"line {number} is not a wfdag event: {exc}") from None
    if not events:
        raise InvalidContextError("no events to import")
    ids = {e.execution_id for e in events}
    if len(ids) != 1:
        raise InvalidContextError(f"the events belong to {len(ids)} executions; import one")
    if [e.seq for e in events] != list(range(1, len(events) + 1)):
        raise InvalidContextError("the events must be one whole log: seq 1, 2, 3, … in order")
    fold(events)  # the log must replay
    store = await _ready_store()
    try:
        await store.append(events, expected_version=0)
    except ConcurrencyError:
        raise ExecutionStateError(events[0].execution_id, "present", "an import",
                                  "absent from this database") from None
    return events[0].execution_id


def get_available_workflows() -> list[WorkflowDAG]:
    """The seven canonical workflow definitions (synchronous, as in the seed)."""
    return canonical_workflows()


async def _runner_of(execution_id: str) -> str | None:
    store = await _ready_store()
    async with store.pool.acquire() as conn:
        name = await runner_of(conn, execution_id)
        if name is None or await lease_is_free(conn, execution_id):
            return None
        return name


def execution_actor(execution_id: str) -> Any:
    """The handle of the pooled Ray actor now running the execution (while it drives it, the
    actor runs a task named ``wfdag-exec-<id>``), or ``None`` when no live actor runs it
    (ended, or waiting in the queue).

    Synchronous, and safe to call from code already running inside an event loop.
    """
    eid = parse_execution_id(execution_id)
    ensure_ray()
    name = run_sync(_runner_of(eid))
    if name is None:
        return None
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def _twin(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    def blocking(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(fn(*args, **kwargs))

    blocking.__name__ = f"{fn.__name__}_sync"
    blocking.__doc__ = f"Blocking twin of :func:`{fn.__name__}` (same arguments).\n\n{fn.__doc__}"
    return blocking


initialize_workflow_system_sync = _twin(initialize_workflow_system)
rollback_workflow_sync = _twin(rollback_workflow)
retry_failed_workflow_sync = _twin(retry_failed_workflow)
get_workflow_circuit_breaker_status_sync = _twin(get_workflow_circuit_breaker_status)
get_workflow_metrics_sync = _twin(get_workflow_metrics)
rebuild_projections_sync = _twin(rebuild_projections)
replay_execution_sync = _twin(replay_execution)
import_execution_sync = _twin(import_execution)
reset_workflow_circuit_breaker_sync = _twin(reset_workflow_circuit_breaker)
list_circuit_breakers_sync = _twin(list_circuit_breakers)
register_workflow_sync = _twin(register_workflow)
execute_workflow_dag_sync = _twin(execute_workflow_dag)
get_workflow_status_sync = _twin(get_workflow_status)
get_execution_events_sync = _twin(get_execution_events)
wait_for_workflow_sync = _twin(wait_for_workflow)
