"""The ``workflow_executions`` read model: a pure function of the log.

:func:`execution_row` computes a row from the previous row and the next events, with nothing
but the events as input, so a rebuild from the log reproduces the rows exactly.
:func:`project_executions` applies it inside each append's transaction (read-your-writes for
the status API); :func:`fetch_status` reads a row back.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from definitions import ExecutionNotFoundError
from events import REQUEST_EVENT_TYPES, Event, EventRow, event_to_row, parse_execution_id
from events.database import DBConnection, DBReader
from events.store import Prepared

__all__ = [
    "COLUMNS",
    "ROW_READS",
    "TERMINAL_STATUSES",
    "ExecutionsProjector",
    "WorkflowStatus",
    "execution_row",
    "fetch_status",
    "project_executions",
    "write_rows",
]

TERMINAL_STATUSES = frozenset({"completed", "failed", "rolled_back", "cancelled"})

COLUMNS = (
    "id", "workflow_definition_id", "workflow_version", "status", "current_stage",
    "started_at", "completed_at", "error_message", "context", "audit_context",
    "circuit_breaker_state", "created_by", "last_seq", "updated_at", "organization_id",
)


#: Of these event types, the keys of an event's data :func:`execution_row` reads (of the
#: others, any key): a rebuild reads only these (``workflow_initiated``'s ``dag`` is most of a
#: log's bytes, and no read model holds it).  ``tests/unit/test_rebuild_reads.py`` checks the
#: function against it.
ROW_READS: dict[str, frozenset[str]] = {
    "workflow_initiated": frozenset({
        "workflow_id", "workflow_version", "context", "user_id", "retry_of", "idempotency_key",
        "parent_execution_id", "parent_stage_id", "schedule_id", "scheduled_for"}),
    "stage_started": frozenset(),
    "stage_attempt": frozenset({"breaker"}),
    "workflow_completed": frozenset(),
}


def organization_of(context: dict[str, Any]) -> str | None:
    """The organization an execution belongs to: its context's ``organizationId``."""
    org = context.get("organizationId")
    return org if isinstance(org, str) and org else None


#: An output larger than this (as JSON) is not copied into the read model: ``executed_steps``
#: shows its size and keys, and ``get_stage_output`` reads it from the log.
MAX_STEP_OUTPUT_BYTES = 4096
_compact = json.JSONEncoder(separators=(",", ":"), default=str).encode  # json.dumps's output


def bounded_output(output: Any) -> dict[str, Any]:
    """What ``executed_steps`` keeps of a stage's output: the output itself when small, else
    a summary (``{"omitted": true, "bytes": n, "keys": [...]}``) — the read model's row stays
    small however large the outputs are; the log keeps them whole."""
    size = len(_compact(output).encode())
    if size <= MAX_STEP_OUTPUT_BYTES:
        return {"output": output, "output_bytes": size}
    keys = sorted(output)[:50] if isinstance(output, dict) else []
    return {"output": {"omitted": True, "bytes": size, "keys": keys}, "output_bytes": size,
            "output_omitted": True}


def execution_row(row: dict[str, Any] | None, events: Iterable[EventRow]) -> dict[str, Any]:
    """The row after ``events`` (``row`` is the one before them, ``None`` for a new stream)."""
    current: dict[str, Any] = dict(row) if row is not None else {}
    for ev in events:
        data = ev.data
        kind = ev.type
        if (current.get("status") == "waiting"
                and kind not in ("execution_parked", "execution_imported")
                and kind not in REQUEST_EVENT_TYPES):
            # A runner took it up again: running, or compensating when it parked mid-rollback.
            current["status"] = current["audit_context"].get("waiting", {}).get(
                "resume", "in_progress")
            current["audit_context"] = {k: v for k, v in current["audit_context"].items()
                                        if k != "waiting"}
        if kind == "workflow_initiated":
            current = {
                "id": ev.execution_id, "workflow_definition_id": data["workflow_id"],
                "workflow_version": data["workflow_version"], "status": "initiated",
                "current_stage": None, "started_at": ev.at, "completed_at": None,
                "error_message": None,
                "context": {**data["context"], "executed_steps": []},
                "audit_context": {"user_id": data["user_id"], "retry_of": data.get("retry_of"),
                                  "idempotency_key": data.get("idempotency_key"),
                                  **({"parent": {"execution_id": data["parent_execution_id"],
                                                 "stage_id": data.get("parent_stage_id")}}
                                     if data.get("parent_execution_id") else {}),
                                  **({"schedule_id": data["schedule_id"],
                                      "scheduled_for": data.get("scheduled_for")}
                                     if data.get("schedule_id") else {})},
                "circuit_breaker_state": None, "created_by": data["user_id"],
                "organization_id": organization_of(data["context"]),
            }
        elif kind == "stage_started":
            if current["status"] == "initiated":
                current["status"] = "in_progress"
            current["current_stage"] = ev.stage_id
        elif kind in ("stage_attempt", "stage_deferred"):
            if data.get("breaker") is not None:
                current["circuit_breaker_state"] = {
                    **(current["circuit_breaker_state"] or {}), ev.stage_id: data["breaker"]}
        elif kind == "stage_completed":
            step = {"stage_id": ev.stage_id, "attempt": data["attempt"],
                    "completed_at": ev.at.isoformat(), "duration_ms": data["duration_ms"],
                    **bounded_output(data["output"])}
            context = dict(current["context"])
            context["executed_steps"] = [*context.get("executed_steps", []), step]
            current["context"] = context
        elif kind == "rollback_requested":
            current["status"] = "compensating"
            current["completed_at"] = None
            current["audit_context"] = {**current["audit_context"],
                                        "rollback_requested_by": data["user_id"]}
        elif kind == "execution_imported":
            current["audit_context"] = {**current["audit_context"], "imported": {
                "by": data["user_id"], "organization_id": data.get("organization_id"),
                "resume": data.get("resume", False), "definition": data["definition"]}}
        elif kind == "execution_parked":
            resume = current["audit_context"].get("waiting", {}).get(
                "resume", current["status"] if current["status"] != "waiting" else "in_progress")
            current["status"] = "waiting"
            current["audit_context"] = {**current["audit_context"], "waiting": {
                "stages": data["waiting"], "wake_at": data.get("wake_at"), "resume": resume}}
        elif kind == "stage_waiting" and data.get("child_execution_id"):
            current["audit_context"] = {**current["audit_context"], "children": {
                **current["audit_context"].get("children", {}),
                str(ev.stage_id): data["child_execution_id"]}}
        elif kind == "cancel_requested":
            audit = dict(current["audit_context"])
            audit.setdefault("cancel", {"requested_by": data["user_id"],
                                        "compensate": data.get("compensate", False),
                                        "reason": data.get("reason")})
            current["audit_context"] = audit
        elif kind == "workflow_cancelled":
            current["status"], current["completed_at"] = "cancelled", ev.at
        elif kind == "rollback_started":
            current["status"] = "compensating"
            current["audit_context"] = {**current["audit_context"],
                                        "rollback": {"reason": data["reason"],
                                                     "order": data["order"]}}
            if data.get("error_message") is not None:
                current["error_message"] = data["error_message"]
        elif kind in ("compensation_completed", "compensation_failed"):
            audit = dict(current["audit_context"])
            audit["compensations"] = {
                **audit.get("compensations", {}),
                str(ev.stage_id): "completed" if kind == "compensation_completed" else "failed"}
            current["audit_context"] = audit
        elif kind == "workflow_completed":
            current["status"], current["completed_at"] = "completed", ev.at
        elif kind == "workflow_failed":
            current["status"], current["completed_at"] = "failed", ev.at
            current["error_message"] = data["error_message"]
        elif kind == "workflow_rolled_back":
            current["status"], current["completed_at"] = "rolled_back", ev.at
        current["last_seq"] = ev.seq
        current["updated_at"] = ev.at
    return current


_UPSERT = (
    f"INSERT INTO workflow_executions ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))}) "
    f"ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "id")
)


async def write_rows(conn: DBConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Upsert whole rows."""
    await conn.executemany(_UPSERT, [tuple(r[c] for c in COLUMNS) for r in rows])


_RECENT_MAX = 4096


class ExecutionsProjector:
    """Store projector: apply one append's events to the execution's row.

    The row this projector wrote last for an execution is kept (a few thousand at most): when
    the append continues right after it, the row need not be read back.  The rows belong to one
    database: give each store (each database) a projector of its own."""

    def __init__(self) -> None:
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def _next_row(self, conn: DBConnection, events: Sequence[Event],
                        rows: Sequence[EventRow] | None = None) -> dict[str, Any]:
        if rows is None:
            rows = [event_to_row(e) for e in events]
        old = None
        cached = self._recent.pop(rows[0].execution_id, None)
        if cached is not None and cached["last_seq"] == rows[0].seq - 1:
            old = cached
        elif rows[0].type != "workflow_initiated":
            record = await conn.fetchrow(
                f"SELECT {', '.join(COLUMNS)} FROM workflow_executions WHERE id = $1::uuid",
                rows[0].execution_id,
            )
            old = dict(record) if record is not None else None
            if old is not None:
                old["id"] = str(old["id"])
        return execution_row(old, rows)

    def _remember(self, new: dict[str, Any]) -> None:
        if new.get("status") not in TERMINAL_STATUSES:
            self._recent[new["id"]] = new
            while len(self._recent) > _RECENT_MAX:
                self._recent.popitem(last=False)

    def forget(self) -> None:
        """Drop every remembered row (another process may have written them)."""
        self._recent.clear()

    def prime(self, events: Sequence[Event]) -> None:
        """Keep the row of an execution whose whole log a writer has just read (a runner that
        adopts it), so that its next append need not read the row back."""
        if events and events[0].type == "workflow_initiated":
            self._remember(execution_row(None, [event_to_row(e) for e in events]))

    async def __call__(self, conn: DBConnection, events: Sequence[Event]) -> None:
        new = await self._next_row(conn, events)
        await write_rows(conn, [new])
        self._remember(new)

    async def prepare(self, conn: DBConnection, events: Sequence[Event],
                      rows: Sequence[EventRow]) -> Prepared:
        """The upsert as part of the append's statement (applied only if the events are)."""
        new = await self._next_row(conn, events, rows)
        return Prepared(ctes=[_UPSERT_IF_OK], selects=[],
                        params=[new[c] for c in COLUMNS],
                        on_success=lambda: self._remember(new))


_UPSERT_IF_OK = (
    f"INSERT INTO workflow_executions ({', '.join(COLUMNS)}) "
    f"SELECT {', '.join('{' + str(i) + '}' for i in range(len(COLUMNS)))} WHERE {{ok}} "
    f"ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "id")
)

#: A projector for callers that build one store; :func:`actors.runtime.new_store` gives each
#: store its own.
project_executions = ExecutionsProjector()

class WorkflowStatus(BaseModel):
    """What ``get_workflow_status`` returns: the ``workflow_executions`` row.  ``status`` is the
    row's, except ``queued`` for an accepted execution no execution actor has taken yet."""

    model_config = ConfigDict(frozen=True)

    execution_id: str
    workflow_id: str
    workflow_version: int | None
    status: str
    current_stage: str | None
    context: dict[str, Any]
    error_message: str | None
    started_at: datetime | None
    completed_at: datetime | None
    created_by: str
    last_seq: int
    circuit_breaker_state: dict[str, Any] | None = None
    audit_context: dict[str, Any] | None = None
    organization_id: str | None = None
    #: A child workflow's parent: ``{"execution_id": …, "stage_id": …}``.
    parent: dict[str, Any] | None = None
    #: The child executions its ``workflow`` stages started, by stage id.
    children: dict[str, str] = Field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def waiting(self) -> dict[str, Any] | None:
        """While ``waiting``: the stages it waits on and when it wakes on its own
        (``{"stages": [...], "wake_at": ISO or None}``)."""
        return (self.audit_context or {}).get("waiting") if self.status == "waiting" else None

    @property
    def executed_steps(self) -> list[dict[str, Any]]:
        steps = self.context.get("executed_steps", [])
        return steps if isinstance(steps, list) else []


async def fetch_status(
    conn: DBReader, execution_id: str, organization_id: str | None = None
) -> WorkflowStatus:
    """The status of an execution; with ``organization_id``, another organization's execution
    is not found, exactly like a missing one."""
    eid = parse_execution_id(execution_id)
    row = await conn.fetchrow(
        "SELECT e.*, q.execution_id IS NOT NULL AND q.runner IS NULL AS waiting "
        "FROM workflow_executions e LEFT JOIN execution_queue q ON q.execution_id = e.id "
        "WHERE e.id = $1::uuid AND ($2::text IS NULL OR e.organization_id = $2::text)",
        eid, organization_id)
    if row is None:
        raise ExecutionNotFoundError(execution_id)
    return status_of_row(row)


def status_of_row(row: Any) -> WorkflowStatus:
    """A :class:`WorkflowStatus` from a ``workflow_executions`` row joined with its queue row
    (a ``waiting`` column: queued and not claimed)."""
    status = row["status"]
    if status == "initiated" and row["waiting"]:
        status = "queued"  # accepted, waiting in the queue for a free execution actor
    return WorkflowStatus(
        execution_id=str(row["id"]),
        workflow_id=row["workflow_definition_id"],
        workflow_version=row["workflow_version"],
        status=status,
        current_stage=row["current_stage"],
        context=row["context"] or {},
        error_message=row["error_message"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        created_by=row["created_by"],
        last_seq=row["last_seq"],
        circuit_breaker_state=row["circuit_breaker_state"],
        audit_context=row["audit_context"],
        organization_id=row["organization_id"],
        parent=(row["audit_context"] or {}).get("parent"),
        children=(row["audit_context"] or {}).get("children", {}),
    )
