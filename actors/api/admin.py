"""Administration: set-up and recovery, definitions, breakers, read models, import."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import ray
from pydantic import ValidationError as PydanticValidationError

from actors.api.common import check_org, check_owner, ready_store, service_owns_runners
from actors.breakers import BreakerStatus
from actors.logs import get_logger
from actors.metrics import record_events
from actors.projector import ensure_projector
from actors.ray_session import ensure_ray
from actors.runner import ensure_pool
from actors.runtime import NAMESPACE, check_payload_size, get_database_url, run_sync, settings
from actors.service.record import live_service
from definitions import (
    CANONICAL_WORKFLOWS,
    MAX_NESTING,
    ClusterUnavailableError,
    InvalidWorkflowError,
    StageNotFoundError,
    WorkflowDAG,
    nested_deeper_than,
    validate_workflow_dag,
)
from events import parse_execution_id
from events.breaker_state import (
    breaker_key,
    breaker_owner,
    load_breaker,
    load_breakers,
    reset_breaker,
    split_owner,
)
from events.leases import lease_holder, recovery_sweep

__all__ = [
    "execution_actor",
    "get_execution_runner",
    "get_workflow_circuit_breaker_status",
    "initialize_workflow_system",
    "list_circuit_breakers",
    "recover_executions",
    "register_workflow",
    "reset_workflow_circuit_breaker",
]


async def initialize_workflow_system(*, resume: bool = True) -> dict[str, Any]:
    """Apply migrations, register the canonical workflows, start (or complete) this cluster's
    pool of execution actors and its projection actor, and run the recovery sweep.

    The sweep looks at every execution that has not ended and that no live runner drives (no
    process anywhere holds its lease — the advisory lock its runner holds): one that was
    adopted more than ``WFDAG_MAX_RECOVERIES`` times already (its runners kept dying on it) is
    dead-lettered — failed, with the reason; every other one is (re)queued, and the pool adopts
    it.  Idempotent; safe from two drivers at once.

    With the service of this ``$WFDAG_HOME`` up on this database (and no Ray joined by this
    process), no pool starts here: the service's runners adopt what the sweep queues, and
    ``pool`` is the service's.

    Returns ``{"workflows": [...ids], "resumed": [...ids], "dead_lettered": [...ids],
    "pool": size}``.
    """
    step = ["connecting to the database and applying migrations"]
    try:
        async with asyncio.timeout(INIT_SECONDS):
            return await _initialize(resume, step)
    except TimeoutError:
        raise ClusterUnavailableError(
            f"initialize_workflow_system did not finish within {INIT_SECONDS:g}s: it was "
            f"{step[0]}; check that the database answers and that Ray has room (`ray status`), "
            f"then call it again (it is idempotent)") from None


#: The bound on :func:`initialize_workflow_system` (each of its waits has its own, shorter).
INIT_SECONDS = 180.0


async def _initialize(resume: bool, step: list[str]) -> dict[str, Any]:
    await ready_store(refresh=True)
    url = get_database_url()
    service = live_service(url) if service_owns_runners(url) else None
    if service is not None:
        # The service owns the runners: set up and sweep only; its pool adopts what is queued.
        step[0] = "running the recovery sweep"
        report = await recover_executions() if resume else {"resumed": [], "dead_lettered": []}
        return {"workflows": sorted(CANONICAL_WORKFLOWS), "resumed": report["resumed"],
                "dead_lettered": report["dead_lettered"], "pool": service.pool_size}
    step[0] = "starting or joining Ray"
    ensure_ray()
    step[0] = "waiting for the runners to answer"
    handles = await ensure_pool(url, refresh=True)
    step[0] = "waiting for the projection actor to answer"
    await asyncio.wait_for(ensure_projector(url).ready.remote(), 60)
    step[0] = "running the recovery sweep"
    report = await recover_executions() if resume else {"resumed": [], "dead_lettered": []}
    return {"workflows": sorted(CANONICAL_WORKFLOWS), "resumed": report["resumed"],
            "dead_lettered": report["dead_lettered"], "pool": len(handles)}


async def recover_executions() -> dict[str, list[str]]:
    """The recovery sweep alone (see :func:`initialize_workflow_system`), on PostgreSQL only:
    it queues what no live runner drives (or dead-letters it) and starts no runner — the
    runners of the service or of a cluster adopt what it queued.  Returns
    ``{"resumed": [...ids], "dead_lettered": [...ids]}``."""
    log = get_logger()
    store = await ready_store()
    report = await recovery_sweep(store, max_recoveries=settings().max_recoveries)
    for eid in report.resumed:
        log.info("execution.resumed", execution_id=eid)
    if report.mended:
        log.info("execution.children_mended", links=report.mended)
    for eid, done in report.dead_lettered.items():
        record_events(done.workflow_id, done.events)
        log.error("execution.dead_lettered", execution_id=eid, reason=done.reason[:500],
                  next_step=f"fix the cause, then `wfdag retry {eid}`")
    return {"resumed": list(report.resumed), "dead_lettered": list(report.dead_lettered)}


async def get_execution_runner(execution_id: str) -> str | None:
    """The name of the runner that drives the execution now (it holds its lease), or ``None``
    when none does: it ended, it waits in the queue, or nobody is there to drive it."""
    return await _runner_of(parse_execution_id(execution_id))


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
    store = await ready_store()
    await store.register_definition(model)
    return model


async def _stage_of(workflow_id: str, stage_id: str) -> Any:
    dag = await (await ready_store()).get_definition(workflow_id)
    if not dag.has_stage(stage_id):
        raise StageNotFoundError(workflow_id, stage_id)
    return dag.stage(stage_id)


async def get_workflow_circuit_breaker_status(
    workflow_id: str, stage_id: str, *, organization_id: str | None = None,
) -> BreakerStatus:
    """The breaker of ``workflow_id:stage_id`` as last persisted by the registry: ``state``
    (``closed | open | half_open``), ``failure_count``, ``opened_at``, ``next_attempt_at``.
    Breakers are per organization (unless the stage says ``breaker_scope: "global"``):
    ``organization_id`` names whose; without it, the breaker of executions of no
    organization."""
    stage = await _stage_of(workflow_id, stage_id)
    if organization_id is not None:
        check_org(organization_id)
    owner = breaker_owner(workflow_id, organization_id, stage.breaker_scope)
    store = await ready_store()
    record = await load_breaker(store.pool, breaker_key(owner, stage_id))
    if record is None:
        config = stage.breaker
        return BreakerStatus(workflow_id=workflow_id, stage_id=stage_id, state="closed",
                             failure_count=0, opened_at=None, next_attempt_at=None,
                             failure_threshold=config.failure_threshold,
                             cooldown_seconds=config.cooldown_seconds,
                             organization_id=split_owner(owner)[1])
    return BreakerStatus.from_record(record)


async def list_circuit_breakers(*, organization_id: str | None = None) -> list[BreakerStatus]:
    """Every breaker that has recorded anything, as last persisted; with
    ``organization_id``, that organization's own and the global ones only."""
    store = await ready_store()
    found = [BreakerStatus.from_record(r) for r in await load_breakers(store.pool)]
    if organization_id is None:
        return found
    check_org(organization_id)
    return [b for b in found if b.organization_id in (None, organization_id)]


async def reset_workflow_circuit_breaker(
    workflow_id: str, stage_id: str, *, organization_id: str | None = None,
) -> BreakerStatus:
    """Close the breaker and zero its failure count.  Written to the breaker's row, like every
    change (no actor needed): every registry and runner on the database hears of it."""
    stage = await _stage_of(workflow_id, stage_id)
    if organization_id is not None:
        check_org(organization_id)
    owner = breaker_owner(workflow_id, organization_id, stage.breaker_scope)
    store = await ready_store()
    async with store.pool.acquire() as conn:
        record = await reset_breaker(
            conn, owner, stage_id, failure_threshold=stage.breaker.failure_threshold,
            cooldown_seconds=stage.breaker.cooldown_seconds)
    get_logger().info("breaker.reset", key=record.key)
    return BreakerStatus.from_record(record)


async def _runner_of(execution_id: str) -> str | None:
    store = await ready_store()
    async with store.pool.acquire() as conn:
        return await lease_holder(conn, execution_id)


def execution_actor(execution_id: str, *, organization_id: str | None = None) -> Any:
    """The handle of the pooled Ray actor now running the execution (while it drives it, the
    actor runs a task named ``wfdag-exec-<id>``), or ``None`` when no live actor runs it
    (ended, or waiting in the queue).  With ``organization_id``, another organization's
    execution is not found (``ExecutionNotFoundError``, as a missing one).

    Synchronous, and safe to call from code already running inside an event loop.
    """
    eid = parse_execution_id(execution_id)
    if organization_id is not None:
        check_org(organization_id)
        run_sync(_owned(eid, organization_id))
    ensure_ray()
    name = run_sync(_runner_of(eid))
    if name is None:
        return None
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


async def _owned(execution_id: str, organization_id: str) -> None:
    await check_owner(await ready_store(), execution_id, organization_id)
