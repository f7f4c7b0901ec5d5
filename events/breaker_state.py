"""Circuit-breaker state in PostgreSQL: the one place it is read and written.

``circuit_breakers`` holds each breaker's state (one row per ``workflow_id:stage_id``),
``circuit_breaker_transitions`` every change of state.  Every write is announced on channel
``wfdag_breakers`` with ``"<key> <origin>"``: the registries of every Ray cluster on the
database, and every runner's admission view, reload the breaker.  A reset is a write like any
other (no actor needed): whoever holds the breaker in memory hears of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.database import DBConnection, DBReader

__all__ = [
    "BREAKER_CHANNEL",
    "BreakerRecord",
    "breaker_key",
    "breaker_owner",
    "load_breaker",
    "load_breakers",
    "reset_breaker",
    "save_breaker",
    "split_owner",
]

BREAKER_CHANNEL = "wfdag_breakers"


def breaker_key(workflow_id: str, stage_id: str) -> str:
    return f"{workflow_id}:{stage_id}"


def breaker_owner(workflow_id: str, organization_id: str | None, scope: str = "organization",
                  ) -> str:
    """The ``workflow_id`` a breaker is stored under: ``<workflow>@<organization>`` for an
    organization's own breaker, the bare workflow id for a ``global`` one (and for executions
    of no organization).  A workflow id never holds ``@``, so the two never meet."""
    if scope == "global" or organization_id is None:
        return workflow_id
    return f"{workflow_id}@{organization_id}"


def split_owner(owner: str) -> tuple[str, str | None]:
    """``(workflow_id, organization_id)`` of a stored breaker's owner."""
    workflow_id, _, organization = owner.partition("@")
    return workflow_id, organization or None


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """One breaker as stored."""

    workflow_id: str
    stage_id: str
    state: str  # closed | open | half_open
    failure_count: int
    opened_at: datetime | None
    next_attempt_at: datetime | None
    failure_threshold: int
    cooldown_seconds: float

    @property
    def key(self) -> str:
        return breaker_key(self.workflow_id, self.stage_id)


def _record(row: Any) -> BreakerRecord:
    return BreakerRecord(
        workflow_id=row["workflow_id"], stage_id=row["stage_id"], state=row["state"],
        failure_count=row["failure_count"], opened_at=row["opened_at"],
        next_attempt_at=row["next_attempt_at"], failure_threshold=row["failure_threshold"],
        cooldown_seconds=row["cooldown_seconds"],
    )


async def load_breakers(conn: DBReader) -> list[BreakerRecord]:
    """Every breaker that has recorded anything, by key."""
    rows = await conn.fetch("SELECT * FROM circuit_breakers ORDER BY key")
    return [_record(r) for r in rows]


async def load_breaker(conn: DBReader, key: str) -> BreakerRecord | None:
    row = await conn.fetchrow("SELECT * FROM circuit_breakers WHERE key = $1", key)
    return _record(row) if row is not None else None


async def save_breaker(conn: DBConnection, record: BreakerRecord, *, from_state: str,
                       origin: str) -> None:
    """Write ``record`` (in one transaction with its transition row, when the state changed
    from ``from_state``) and announce it, tagged with the writer's ``origin``."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO circuit_breakers (key, workflow_id, stage_id, state, failure_count, "
            "opened_at, next_attempt_at, failure_threshold, cooldown_seconds, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now()) ON CONFLICT (key) DO UPDATE "
            "SET state = $4, failure_count = $5, opened_at = $6, next_attempt_at = $7, "
            "failure_threshold = $8, cooldown_seconds = $9, updated_at = now()",
            record.key, record.workflow_id, record.stage_id, record.state,
            record.failure_count, record.opened_at, record.next_attempt_at,
            record.failure_threshold, record.cooldown_seconds,
        )
        await conn.execute("SELECT pg_notify($1, $2)", BREAKER_CHANNEL, f"{record.key} {origin}")
        if record.state != from_state:
            await conn.execute(
                "INSERT INTO circuit_breaker_transitions (key, workflow_id, stage_id, "
                "from_state, to_state, failure_count) VALUES ($1, $2, $3, $4, $5, $6)",
                record.key, record.workflow_id, record.stage_id, from_state, record.state,
                record.failure_count,
            )


async def reset_breaker(conn: DBConnection, workflow_id: str, stage_id: str, *,
                        failure_threshold: int, cooldown_seconds: float,
                        origin: str = "reset") -> BreakerRecord:
    """Close the breaker and zero its failures, as stored; returns what is stored now."""
    key = breaker_key(workflow_id, stage_id)
    async with conn.transaction():
        before = await conn.fetchrow(
            "SELECT * FROM circuit_breakers WHERE key = $1 FOR UPDATE", key)
        record = BreakerRecord(
            workflow_id=workflow_id, stage_id=stage_id, state="closed", failure_count=0,
            opened_at=None, next_attempt_at=None,
            failure_threshold=before["failure_threshold"] if before else failure_threshold,
            cooldown_seconds=before["cooldown_seconds"] if before else cooldown_seconds,
        )
        if before is None or (before["state"], before["failure_count"]) == ("closed", 0):
            return record  # nothing to reset
        await save_breaker(conn, record, from_state=before["state"] if before else "closed",
                           origin=origin)
    return record
