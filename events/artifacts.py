"""What agents produce outside the log: ``workflow_artifacts`` rows, and undoing them.

An artifact is keyed by (execution, stage, kind, name): a stage that runs again (a retry, an
actor restart) updates its artifacts instead of adding more.  ``status`` is ``active`` for live
ones; compensation deletes them, or cancels / reverts them to ``draft`` where the seed says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from events.database import (
    DatabaseUnavailableError,
    DBConnection,
    _init_connection,
    is_database_outage,
)

__all__ = [
    "Artifact",
    "UndoAction",
    "record_artifacts",
    "record_artifacts_sync",
    "undo_artifacts",
    "undo_artifacts_sync",
]


@dataclass(frozen=True, slots=True)
class Artifact:
    kind: str
    name: str
    payload: dict[str, Any]
    status: str = "active"


UndoAction = Literal["delete", "cancel", "draft"]


async def record_artifacts(
    conn: DBConnection,
    *,
    execution_id: str,
    stage_id: str,
    idempotency_key: str,
    artifacts: Sequence[Artifact],
) -> int:
    """Upsert a stage's artifacts in one transaction; returns how many were written."""
    async with conn.transaction():
        for art in artifacts:
            await conn.execute(
                "INSERT INTO workflow_artifacts (execution_id, stage_id, kind, name, payload, "
                "status, idempotency_key) VALUES ($1::uuid, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT (execution_id, stage_id, kind, name) DO UPDATE SET "
                "payload = EXCLUDED.payload, status = EXCLUDED.status, updated_at = now()",
                execution_id, stage_id, art.kind, art.name, art.payload, art.status,
                idempotency_key,
            )
    return len(artifacts)


async def undo_artifacts(
    conn: DBConnection, *, execution_id: str, stage_id: str, plan: dict[str, UndoAction]
) -> dict[str, int]:
    """Undo a stage's artifacts by kind (``"*"`` for every other kind); idempotent.

    Returns how many rows each action touched.
    """
    touched: dict[str, int] = {}
    async with conn.transaction():
        for kind, action in plan.items():
            where = "execution_id = $1::uuid AND stage_id = $2"
            args: list[Any] = [execution_id, stage_id]
            if kind != "*":
                where += " AND kind = $3"
                args.append(kind)
            else:
                named = [k for k in plan if k != "*"]
                if named:
                    where += " AND NOT (kind = ANY($3::text[]))"
                    args.append(named)
            if action == "delete":
                result = await conn.execute(f"DELETE FROM workflow_artifacts WHERE {where}", *args)
            else:
                new_status = "cancelled" if action == "cancel" else "draft"
                result = await conn.execute(
                    f"UPDATE workflow_artifacts SET status = '{new_status}', updated_at = now() "
                    f"WHERE {where} AND status <> '{new_status}'",
                    *args,
                )
            touched[f"{action}:{kind}"] = int(result.split()[-1])
    return touched


def record_artifacts_sync(url: str, **kwargs: Any) -> int:
    """:func:`record_artifacts` from plain code (an agent on a Ray worker): connect per call."""
    return int(asyncio.run(_with_connection(url, record_artifacts, kwargs)))


def undo_artifacts_sync(url: str, **kwargs: Any) -> dict[str, int]:
    """:func:`undo_artifacts` from plain code (a handler on a Ray worker): connect per call."""
    touched: dict[str, int] = asyncio.run(_with_connection(url, undo_artifacts, kwargs))
    return touched


async def _with_connection(url: str, func: Any, kwargs: dict[str, Any]) -> Any:
    """Connect, call, close.  wfdag's database failing here (down, restarting, out of
    connections) raises :class:`DatabaseUnavailableError`: an outage, not the agent's fault."""
    try:
        conn = await asyncpg.connect(url)
    except Exception as exc:
        if is_database_outage(exc):
            raise DatabaseUnavailableError(
                f"the workflow database refused a connection for the stage's artifacts "
                f"({type(exc).__name__}: {str(exc)[:200]})") from None
        raise
    try:
        await _init_connection(conn)
        return await func(conn, **kwargs)
    except Exception as exc:
        if is_database_outage(exc, conn):
            raise DatabaseUnavailableError(
                f"the workflow database went away while the stage wrote its artifacts "
                f"({type(exc).__name__}: {str(exc)[:200]})") from None
        raise
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=5)
