"""The typed protocol between a runner, its stage attempts and its drives."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AttemptResult", "AttemptSpec", "DriveOutcome", "StageOutcome", "error_info"]


@dataclass(frozen=True, slots=True)
class AttemptSpec:
    """What one attempt of a stage (or of its compensation) needs, wherever it runs."""

    execution_id: str
    workflow_id: str
    stage_id: str
    stage_name: str
    attempt: int
    context: dict[str, Any]
    inputs: dict[str, Any]
    idempotency_key: str
    agent_type: str | None = None
    agent: str | None = None
    capabilities: tuple[str, ...] = ()
    database_url: str | None = None
    handler: str | None = None  # a compensation: the handler to call
    output: dict[str, Any] | None = None  # a compensation: the output of the stage it undoes


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What an attempt came to: an output, or an error as the log records it."""

    ok: bool
    duration_ms: int
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    pid: int | None = None


def error_info(type_: str, message: str, retryable: bool) -> dict[str, Any]:
    """An error as the log records it (``ErrorInfo.to_json`` for a runner-made error)."""
    return {"type": type_, "message": message[:2000], "retryable": retryable,
            "status_code": None}


@dataclass(frozen=True, slots=True)
class StageOutcome:
    """A finished attempt of a stage (``kind="run"``) or of its compensation (``"undo"``),
    with the breaker as the attempt met it."""

    kind: str  # "run" | "undo"
    stage_id: str
    attempt: int
    duration_ms: int
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    breaker: dict[str, Any] | None = field(default=None)
    #: The breaker refused the attempt: it waits (until ``retry_at``, ISO, when known).
    deferred: bool = False
    retry_at: str | None = None


class DriveOutcome(enum.Enum):
    """How a drive of one execution ended."""

    ENDED = "ended"  # the execution reached a terminal status
    MISSING = "missing"  # no log: nothing to drive
    LEASE_LOST = "lease_lost"  # the lease session died: whoever takes the lease resumes it
    FENCED = "fenced"  # another writer got there first
    DATABASE_LOST = "database_lost"  # the database went away: handed back, uncounted
    PARKED = "parked"  # every stage that could run waits: let go until a request or a time

    @property
    def hand_back(self) -> bool:
        """Lost through no fault of the execution: give it back uncounted."""
        return self in (DriveOutcome.LEASE_LOST, DriveOutcome.DATABASE_LOST)
