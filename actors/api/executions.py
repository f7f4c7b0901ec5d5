"""Starting, rolling back and retrying executions: the calls that need runners."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from actors.api.common import (
    HOSTS_RUNNERS,
    check_context,
    check_idempotency_key,
    check_org,
    check_user,
    ready_store,
    service_owns_runners,
)
from actors.logs import get_logger
from actors.ray_session import ensure_ray
from actors.runner import ensure_pool
from actors.runtime import check_payload_size, get_database_url
from definitions import (
    ConcurrencyError,
    ExecutionStateError,
    InvalidArgumentError,
    InvalidContextError,
    WorkflowDAG,
)
from events import (
    CancelRequested,
    EventStore,
    RollbackRequested,
    WorkflowInitiated,
    cancel_undriven_events,
    fold,
)
from events.children import after_append
from events.leases import holding_lease
from events.secrets import seal_secrets
from projections import WorkflowStatus, fetch_status

__all__ = ["cancel_workflow", "check_start", "ensure_runners", "execute_workflow_dag",
           "retry_failed_workflow", "rollback_workflow"]

#: The longest reason a cancel may give (it is stored in the log).
MAX_REASON_CHARS = 1000


async def ensure_runners() -> None:
    """Make sure runners will take what the caller just queued.  The service of this
    ``$WFDAG_HOME`` on the same database owns them when it is up (and this process has not
    joined a Ray of its own): the queue is all it needs, no Ray starts here.  Otherwise this
    process joins ``RAY_ADDRESS`` or starts a local Ray and the pool, as a library caller did
    before the service."""
    import os

    import ray

    url = get_database_url()
    if service_owns_runners(url):
        return
    if not HOSTS_RUNNERS.get() and not ray.is_initialized() and not os.environ.get("RAY_ADDRESS"):
        return  # a process about to exit: its caller starts the service
    ensure_ray()
    await ensure_pool(url)


async def _start(
    store: EventStore, dag: dict[str, Any], context: dict[str, Any], user_id: str,
    *, retry_of: str | None = None, idempotency_key: str | None = None,
) -> str:
    if idempotency_key is None:
        execution_id = str(uuid.uuid4())
    else:
        # The same key for the same workflow always names the same execution: concurrent
        # starts race on UNIQUE(execution_id, seq), one writes, all return its id.
        org = context.get("organizationId")
        execution_id = await store.keyed_execution_id(
            dag["id"], idempotency_key, org if isinstance(org, str) else None)
    log = get_logger(execution_id=execution_id)
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
        log.info("execution.start_deduplicated")
        return execution_id
    log.info("execution.initiated", workflow_id=dag["id"], version=dag["version"],
             retry_of=retry_of)
    await ensure_runners()
    return execution_id


async def check_start(
    workflow_id: str,
    context: Mapping[str, Any],
    user_id: str,
    *,
    version: int | None = None,
    idempotency_key: str | None = None,
    organization_id: str | None = None,
) -> tuple[WorkflowDAG, dict[str, Any]]:
    """Everything :func:`execute_workflow_dag` checks, with nothing written and nothing
    started: the definition it would run and the context it would store (secrets sealed).
    Raises what it would raise."""
    check_user(user_id)
    ctx = check_context(context)
    ctx = seal_secrets(ctx)  # nothing under a secret-like key is stored in plain text
    check_payload_size("context (secrets sealed)", json.dumps(ctx))
    if organization_id is not None:
        check_org(organization_id)
        given = ctx.get("organizationId")
        if given is None:
            ctx["organizationId"] = organization_id
        elif given != organization_id:
            raise InvalidContextError(
                f"the context's organizationId {str(given)[:100]!r} is not the caller's "
                f"organization {organization_id!r}")
    check_idempotency_key(idempotency_key)
    store = await ready_store()
    return await store.get_definition(workflow_id, version), ctx


async def execute_workflow_dag(
    workflow_id: str,
    context: Mapping[str, Any],
    user_id: str,
    *,
    version: int | None = None,
    idempotency_key: str | None = None,
    organization_id: str | None = None,
) -> str:
    """Start an execution; returns its id once ``workflow_initiated`` is durable and runners
    will take it (the service's when it is up, else this process's pool).  Unknown workflow
    or a context that is not a JSON object → an error, nothing written.  With
    ``idempotency_key``, every call with the same key for the same workflow (concurrent ones
    too) starts at most one execution and returns its id.  The execution belongs to the
    context's ``organizationId``; with ``organization_id`` the context's must be the same (or
    absent: it is set)."""
    dag, ctx = await check_start(workflow_id, context, user_id, version=version,
                                 idempotency_key=idempotency_key,
                                 organization_id=organization_id)
    return await _start(await ready_store(), dag.model_dump(mode="json"), ctx, user_id,
                        idempotency_key=idempotency_key)


async def rollback_workflow(
    execution_id: str, user_id: str, *, organization_id: str | None = None
) -> WorkflowStatus:
    """Undo a completed or failed execution: its completed stages are compensated in reverse
    order of completion.  Returns once the request is durable (status ``compensating``);
    ``wait_for_workflow`` waits for the end (``rolled_back``, or ``failed`` when a handler
    failed).  An execution already rolled back (or being rolled back) is left as it is."""
    check_user(user_id)
    store = await ready_store()
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
        await ensure_runners()
        return await fetch_status(store.pool, status.execution_id)
    raise ExecutionStateError(execution_id, "busy", "a rollback", "settled")


async def retry_failed_workflow(
    execution_id: str, user_id: str, *, organization_id: str | None = None
) -> str:
    """Start a new execution of a ``failed`` or ``rolled_back`` one: the same definition
    version and context, linked to it by ``retry_of`` in its first event.  The old execution
    keeps its status.  Returns the new execution id."""
    check_user(user_id)
    store = await ready_store()
    status = await fetch_status(store.pool, execution_id, organization_id)
    if status.status not in ("failed", "rolled_back"):
        raise ExecutionStateError(status.execution_id, status.status, "a retry",
                                  "failed or rolled_back")
    first = (await store.read(status.execution_id, until_seq=1))[0]
    assert isinstance(first, WorkflowInitiated)
    return await _start(store, first.dag, first.context, user_id, retry_of=first.execution_id)


async def cancel_workflow(
    execution_id: str, user_id: str, *, compensate: bool = False, reason: str | None = None,
    organization_id: str | None = None,
) -> WorkflowStatus:
    """Stop an execution that has not ended.  Durable first: ``cancel_requested`` is in the
    log when this returns; the runner that drives the execution (woken at once) stops every
    stage in flight — a task stage's worker is killed, as on a timeout — and appends
    ``workflow_cancelled`` (status ``cancelled``).  A queued execution is cancelled without
    running anything.  With ``compensate``, the completed stages are then compensated as in a
    rollback, ending ``rolled_back`` (or ``failed``, per the compensation policy).

    Returns the status once the request is durable; ``wait_for_workflow`` waits for the end.
    A second cancel is a no-op; cancelling an ended (or compensating) execution raises
    :class:`ExecutionStateError` naming its status."""
    check_user(user_id)
    if not isinstance(compensate, bool):
        raise InvalidArgumentError(f"compensate must be true or false, got {compensate!r}")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
        raise InvalidArgumentError(
            f"reason must be text of at most {MAX_REASON_CHARS} characters")
    store = await ready_store()
    for _ in range(50):
        status = await fetch_status(store.pool, execution_id, organization_id)
        if status.status == "cancelled" or (status.audit_context or {}).get("cancel"):
            return status  # cancelled, or being cancelled: nothing more to ask
        rolling_back = (status.waiting or {}).get("resume") == "compensating"
        if status.terminal or status.status == "compensating" or rolling_back:
            raise ExecutionStateError(
                status.execution_id, "compensating" if rolling_back else status.status,
                "a cancel", "queued, initiated, in_progress or waiting")
        try:
            ended = await _cancel(store, status, user_id, compensate, reason)
        except ConcurrencyError:
            continue  # its runner appended meanwhile: look again
        get_logger(execution_id=status.execution_id).info(
            "execution.cancel_requested", user_id=user_id, compensate=compensate,
            ended_here=ended)
        if not ended:
            await ensure_runners()  # its runner stops it (or one takes it to compensate)
        return await fetch_status(store.pool, status.execution_id)
    raise ExecutionStateError(execution_id, "busy", "a cancel", "settled for a moment")


async def _cancel(store: EventStore, status: WorkflowStatus, user_id: str, compensate: bool,
                  reason: str | None) -> bool:
    """Append the request; when no runner drives the execution (queued, or orphaned), end it
    here under its lease — nothing of it runs anywhere.  True when it ended here."""
    eid = status.execution_id
    async with store.pool.acquire() as conn, holding_lease(conn, eid) as undriven:
        if undriven:
            state = fold(await store.read(eid, conn=conn))
            events = cancel_undriven_events(state, datetime.now(UTC), user_id=user_id,
                                            compensate=compensate, reason=reason)
            await store.append(events, expected_version=state.version, conn=conn)
            await after_append(store, state, events)  # its children stop, its parent hears
            return len(events) > 1
    await store.append(
        [CancelRequested(execution_id=eid, seq=status.last_seq + 1, at=datetime.now(UTC),
                         user_id=user_id, compensate=compensate, reason=reason)],
        expected_version=status.last_seq)
    return False
