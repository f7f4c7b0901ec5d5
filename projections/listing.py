"""Listing executions, newest first, a page at a time — from the read model's indexes.

Pages are keyed, not offset: the cursor names the last row of a page (its ``started_at`` and
id), and the next page is the rows strictly older, so a page never repeats or skips a row
while new executions arrive.  Every filter is served by an index of ``workflow_executions``
(migration 8), not by a scan of the log.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from definitions import InvalidArgumentError
from events.database import DBReader
from projections.executions import WorkflowStatus, status_of_row

__all__ = ["EXECUTION_STATUSES", "MAX_PAGE", "ExecutionPage", "activity", "has_executions",
           "list_executions"]

#: Every status an execution can show (``queued``: accepted, no runner has taken it yet).
EXECUTION_STATUSES = ("queued", "initiated", "in_progress", "waiting", "compensating",
                      "completed", "failed", "rolled_back", "cancelled")
MAX_PAGE = 1000


class ExecutionPage(BaseModel):
    """One page of :func:`list_executions`: ``items`` newest first; ``next_cursor`` gives the
    next page (``None`` on the last)."""

    model_config = ConfigDict(frozen=True)

    items: list[WorkflowStatus]
    next_cursor: str | None


def _encode(started_at: datetime, execution_id: str) -> str:
    raw = f"{started_at.isoformat()}|{execution_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, eid = raw.split("|")
        return datetime.fromisoformat(when), uuid.UUID(eid)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgumentError(
            f"cursor {cursor[:60]!r} is not one a page of executions gave") from None


async def list_executions(
    conn: DBReader, *, status: str | None = None, workflow_id: str | None = None,
    organization_id: str | None = None, created_by: str | None = None,
    since: datetime | None = None, limit: int = 50, cursor: str | None = None,
    schedule_id: str | None = None,
) -> ExecutionPage:
    """Executions matching every filter given, newest first (see the module docstring)."""
    if status is not None and status not in EXECUTION_STATUSES:
        raise InvalidArgumentError(
            f"status {status[:40]!r} is not one of {', '.join(EXECUTION_STATUSES)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidArgumentError(f"limit must be an integer from 1 to {MAX_PAGE}, "
                                   f"got {limit!r}")
    if since is not None and since.tzinfo is None:
        raise InvalidArgumentError("since must carry a time zone (e.g. 2026-12-01T00:00:00Z)")
    where = ["TRUE"]
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if status == "queued":
        where.append("e.status = 'initiated' AND q.execution_id IS NOT NULL AND q.runner IS NULL")
    elif status == "initiated":
        where.append("e.status = 'initiated' AND (q.execution_id IS NULL OR q.runner IS NOT NULL)")
    elif status is not None:
        where.append(f"e.status = {param(status)}")
    if workflow_id is not None:
        where.append(f"e.workflow_definition_id = {param(workflow_id)}")
    if organization_id is not None:
        where.append(f"e.organization_id = {param(organization_id)}")
    if created_by is not None:
        where.append(f"e.created_by = {param(created_by)}")
    if schedule_id is not None:
        where.append(f"e.audit_context ? 'schedule_id' AND "
                     f"e.audit_context->>'schedule_id' = {param(schedule_id)}")
    if since is not None:
        where.append(f"e.started_at >= {param(since)}")
    if cursor is not None:
        after, after_id = _decode(cursor)
        where.append(f"(e.started_at, e.id) < ({param(after)}::timestamptz, {param(after_id)})")
    rows = await conn.fetch(
        "SELECT e.*, q.execution_id IS NOT NULL AND q.runner IS NULL AS waiting "
        "FROM workflow_executions e LEFT JOIN execution_queue q ON q.execution_id = e.id "
        f"WHERE {' AND '.join(where)} ORDER BY e.started_at DESC, e.id DESC "
        f"LIMIT {param(limit + 1)}", *params)
    items = [status_of_row(row) for row in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return ExecutionPage(
        items=items,
        next_cursor=_encode(last["started_at"], str(last["id"])) if last is not None else None)


async def activity(conn: DBReader) -> dict[str, int]:
    """How many executions run now (``live``: in progress or compensating, ``queued``: waiting
    for a runner) — what ``wfdag server status`` shows."""
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM workflow_executions "
        "        WHERE status IN ('in_progress', 'compensating')) AS live, "
        "       (SELECT count(*) FROM execution_queue WHERE runner IS NULL) AS queued")
    assert row is not None
    return {"live": int(row["live"]), "queued": int(row["queued"])}


async def has_executions(conn: DBReader, workflow_id: str) -> bool:
    """Whether any execution of ``workflow_id`` is in the read model (imported ones too)."""
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM workflow_executions WHERE workflow_definition_id = $1)",
        workflow_id))
