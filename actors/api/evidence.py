"""The log as evidence: importing another database's log, checking hash chains, rebuilding
read models (and saying which logs do not hold)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from actors.api.common import check_org, check_owner, check_user, ready_store
from actors.logs import get_logger
from definitions import (
    ConcurrencyError,
    ExecutionNotFoundError,
    ExecutionStateError,
    InvalidArgumentError,
    WorkflowDAG,
    WorkflowNotFoundError,
    validate_workflow_dag,
)
from events import Event, ExecutionImported, fold, parse_execution_id
from events.chain import verify_chains
from projections import rebuild_projections as _rebuild

__all__ = ["export_execution", "import_execution", "rebuild_projections", "verify_execution",
           "verify_log"]

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def _parse(lines: Iterable[str]) -> tuple[list[Event], list[str | None]]:
    """The events of an export, and the ``chain`` hash each line carried (``None`` where it
    carried none)."""
    events: list[Event] = []
    chains: list[str | None] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            chain = raw.pop("chain", None) if isinstance(raw, dict) else None
            events.append(_ADAPTER.validate_python(raw))
        except (ValueError, PydanticValidationError) as exc:
            raise InvalidArgumentError(f"line {number} is not a wfdag event: {exc}") from None
        chains.append(chain if isinstance(chain, str) else None)
    if not events:
        raise InvalidArgumentError("no events to import")
    ids = {e.execution_id for e in events}
    if len(ids) != 1:
        raise InvalidArgumentError(f"the events belong to {len(ids)} executions; import one")
    if [e.seq for e in events] != list(range(1, len(events) + 1)):
        raise InvalidArgumentError("the events must be one whole log: seq 1, 2, 3, … in order")
    if any(isinstance(e, ExecutionImported) for e in events):
        raise InvalidArgumentError("the log was imported once already (it holds an "
                                   "execution_imported event): import its original export")
    return events, chains


async def _check_chain(events: list[Event], chains: list[str | None]) -> bool:
    """True when the export carried its hash chain and every link holds; an export with no
    hashes is imported unverified (False); one with some, or a link that does not hold, is
    refused naming the first bad seq."""
    if all(c is None for c in chains):
        return False
    if any(c is None for c in chains):
        missing = next(e.seq for e, c in zip(events, chains, strict=True) if c is None)
        raise InvalidArgumentError(f"the export carries hashes, but not for seq {missing}: "
                                   f"a line was added or edited after the export")
    expected = await (await ready_store()).chain_of(events)
    for event, claimed, computed in zip(events, chains, expected, strict=True):
        if claimed != computed:
            raise InvalidArgumentError(
                f"the export's hash chain breaks at seq {event.seq}: that line (or one before "
                f"it) was changed after the export; nothing imported")
    return True


async def _definition_of(snapshot: WorkflowDAG) -> str:
    """``registered`` when this database holds the snapshot's workflow and version with the
    same content, ``carried`` when it holds neither; a different content is a forgery."""
    problems = validate_workflow_dag(snapshot).errors
    if problems:
        raise InvalidArgumentError(
            f"the log's definition of {snapshot.id!r} would not be accepted here: "
            + "; ".join(problems[:5]))
    store = await ready_store()
    try:
        here = await store.get_definition(snapshot.id, snapshot.version)
    except WorkflowNotFoundError:
        return "carried"
    if here.model_dump(mode="json") != snapshot.model_dump(mode="json"):
        raise InvalidArgumentError(
            f"the log runs workflow {snapshot.id!r} version {snapshot.version}, but not the "
            f"definition registered here under that name: refused (a log may carry its own "
            f"definition only under a workflow id and version this database does not use)")
    return "registered"


async def import_execution(
    lines: Iterable[str], *, user_id: str = "import", organization_id: str | None = None,
    resume: bool = False,
) -> str:
    """Import one execution's log exported with ``wfdag events ID --json`` (JSON lines) into
    this database, all or nothing; returns its id.  Replay then gives the same state.

    An import is evidence, not a command: the log must replay, its definition must be the
    one registered here under its workflow id and version (or one this database does not
    have, carried whole and marked so), and its organization must be the caller's
    (``organization_id``).  It is marked by an ``execution_imported`` event and never run
    here unless ``resume`` is asked for — by an operator of its organization, for a log that
    has not ended."""
    check_user(user_id)
    if organization_id is not None:
        check_org(organization_id)
    events, chains = _parse(lines)
    state = fold(events)  # the log must replay
    assert state.dag is not None
    logged_org = state.organization_id
    if organization_id is not None and logged_org != organization_id:
        raise InvalidArgumentError(
            f"the log belongs to organization {logged_org!r}, not to {organization_id!r}: "
            f"an organization imports only its own executions")
    if resume and logged_org is not None and organization_id != logged_org:
        raise InvalidArgumentError(
            f"resuming an imported execution of organization {logged_org!r} is for an "
            f"operator of that organization: pass organization_id={logged_org!r}")
    definition = await _definition_of(state.dag)
    verified = await _check_chain(events, chains)
    resume = resume and not state.terminal
    last = events[-1]
    marker = ExecutionImported(
        execution_id=last.execution_id, seq=last.seq + 1, at=last.at, user_id=user_id,
        organization_id=logged_org, resume=resume, definition=definition, events=len(events),
        chain_verified=verified)
    store = await ready_store()
    try:
        await store.append([*events, marker], expected_version=0)
    except ConcurrencyError:
        raise ExecutionStateError(events[0].execution_id, "present", "an import",
                                  "absent from this database") from None
    get_logger(execution_id=last.execution_id).info(
        "execution.imported", events=len(events), definition=definition, resume=resume,
        by=user_id, chain_verified=verified)
    return last.execution_id


async def export_execution(execution_id: str, *, organization_id: str | None = None,
                           check_chain: bool = True) -> list[str]:
    """The log as JSON lines for :func:`import_execution`, each with its ``chain`` hash, so
    that the importing database can tell the file was not changed on the way.  A broken log
    raises ``BrokenChainError`` unless ``check_chain`` is false."""
    store = await ready_store()
    await check_owner(store, execution_id, organization_id)
    events = await store.read_existing(execution_id, check_chain=check_chain)
    chains = await store.stored_chain(execution_id)
    lines = []
    for event in events:
        data = event.model_dump(mode="json")
        data["chain"] = chains.get(event.seq)
        lines.append(json.dumps(data))
    return lines


async def verify_execution(execution_id: str, *,
                           organization_id: str | None = None) -> dict[str, Any]:
    """Check one execution's hash chain: ``{execution_id, events, ok, broken_at, problem}``
    (``broken_at``: the first seq that does not hold; ``problem``: what is wrong, in words)."""
    eid = parse_execution_id(execution_id)
    store = await ready_store()
    await check_owner(store, eid, organization_id)
    reports = await verify_chains(store.pool, eid)
    if not reports:
        raise ExecutionNotFoundError(eid)
    return reports[0].to_json()


async def verify_log(*, organization_id: str | None = None) -> dict[str, Any]:
    """Check every execution's hash chain (one organization's, with ``organization_id``):
    ``{executions, events, ok, broken: [report, …]}``."""
    if organization_id is not None:
        check_org(organization_id)
    store = await ready_store()
    reports = await verify_chains(store.pool, organization_id=organization_id)
    broken = [r.to_json() for r in reports if not r.ok]
    return {"executions": len(reports), "events": sum(r.events for r in reports),
            "ok": not broken, "broken": broken}


async def rebuild_projections() -> dict[str, Any]:
    """Drop the read models and rebuild them from the log; returns when done
    (``{"events": n, "executions": m, "broken": [report, …]}`` — the logs whose hash chain
    does not hold, which a rebuild cannot mend).  Appends wait while it runs."""
    store = await ready_store()
    report: dict[str, Any] = dict(await _rebuild(store.pool))  # chains checked on its scan
    if report["broken"]:
        get_logger().warning("projections.broken_logs", count=len(report["broken"]),
                             next_step="wfdag verify --all")
    return report
