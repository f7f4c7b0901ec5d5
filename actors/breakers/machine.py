"""The breaker state machine: aiobreaker's, with what it gets wrong for us fixed.

``aiobreaker`` holds each breaker's state, failure counter and transitions; this module fixes
what it gets wrong for us (``ray-notes.md``):

* half-open admits exactly ONE trial call; concurrent callers are refused until it reports
  (a trial whose caller vanished expires after ``trial_ttl`` seconds);
* a timeout or a cancellation is a failure like any other (the caller reports the outcome);
* every time is timezone-aware UTC (aiobreaker stores naive ``utcnow()``).

Pure: no Ray, no database (the registry actor, :mod:`actors.breakers.registry`, holds these
and persists them through :mod:`events.breaker_state`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiobreaker
from aiobreaker.state import CircuitBreakerState
from aiobreaker.storage.memory import CircuitMemoryStorage
from pydantic import BaseModel, ConfigDict

from events.breaker_state import BreakerRecord, breaker_key, split_owner

__all__ = ["Breaker", "BreakerStatus", "breaker_key"]

_STATE_NAMES = {
    CircuitBreakerState.CLOSED: "closed",
    CircuitBreakerState.OPEN: "open",
    CircuitBreakerState.HALF_OPEN: "half_open",
}
_STATES = {name: state for state, name in _STATE_NAMES.items()}


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _AwareStorage(CircuitMemoryStorage):  # type: ignore[misc]
    """aiobreaker's memory storage, but ``opened_at`` is always timezone-aware UTC."""

    @property
    def opened_at(self) -> datetime | None:
        return _utc(self._opened_at)

    @opened_at.setter
    def opened_at(self, value: datetime | None) -> None:
        self._opened_at = _utc(value)


def _as_seen(state: str, next_attempt_at: datetime | None) -> str:
    """An open breaker whose cooldown has passed is half-open (it lets the next call through
    as its trial), whether or not a call has come since."""
    if state == "open" and next_attempt_at is not None and next_attempt_at <= datetime.now(UTC):
        return "half_open"
    return state


class BreakerStatus(BaseModel):
    """What ``get_workflow_circuit_breaker_status`` returns."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    stage_id: str
    state: str  # closed | open | half_open
    failure_count: int
    opened_at: datetime | None
    next_attempt_at: datetime | None
    failure_threshold: int
    cooldown_seconds: float
    #: Whose breaker it is (None: a global one, or that of executions of no organization).
    organization_id: str | None = None

    @classmethod
    def from_record(cls, record: BreakerRecord) -> BreakerStatus:
        workflow_id, organization_id = split_owner(record.workflow_id)
        return cls(workflow_id=workflow_id, stage_id=record.stage_id,
                   organization_id=organization_id,
                   state=_as_seen(record.state, record.next_attempt_at),
                   failure_count=record.failure_count,
                   opened_at=record.opened_at, next_attempt_at=record.next_attempt_at,
                   failure_threshold=record.failure_threshold,
                   cooldown_seconds=record.cooldown_seconds)


@dataclass
class Breaker:
    """One breaker: aiobreaker's state machine plus a single half-open trial."""

    workflow_id: str
    stage_id: str
    failure_threshold: int
    cooldown_seconds: float

    def __post_init__(self) -> None:
        self._storage = _AwareStorage(CircuitBreakerState.CLOSED)
        self._cb = aiobreaker.CircuitBreaker(
            fail_max=self.failure_threshold,
            timeout_duration=timedelta(seconds=self.cooldown_seconds),
            state_storage=self._storage,
            name=breaker_key(self.workflow_id, self.stage_id),
        )
        self.trial: str | None = None
        self.trial_expires: datetime | None = None

    # --- state ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return _STATE_NAMES[self._cb.current_state]

    @property
    def failure_count(self) -> int:
        return int(self._cb.fail_counter)

    @property
    def opened_at(self) -> datetime | None:
        return _utc(self._storage.opened_at) if self.state != "closed" else None

    @property
    def next_attempt_at(self) -> datetime | None:
        opened = self.opened_at
        if self.state != "open" or opened is None:
            return None
        return opened + timedelta(seconds=self.cooldown_seconds)

    def configure(self, failure_threshold: int, cooldown_seconds: float) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._cb.fail_max = failure_threshold
        self._cb.timeout_duration = timedelta(seconds=cooldown_seconds)

    def restore(self, state: str, failure_count: int, opened_at: datetime | None) -> None:
        self._storage.state = _STATES[state]
        self._cb.state = _STATES[state]
        self._storage._fail_counter = failure_count
        self._storage.opened_at = opened_at

    def record_of(self) -> BreakerRecord:
        """This breaker as stored."""
        return BreakerRecord(
            workflow_id=self.workflow_id, stage_id=self.stage_id, state=self.state,
            failure_count=self.failure_count, opened_at=self.opened_at,
            next_attempt_at=self.next_attempt_at, failure_threshold=self.failure_threshold,
            cooldown_seconds=self.cooldown_seconds,
        )

    def status(self) -> BreakerStatus:
        return BreakerStatus(
            workflow_id=self.workflow_id, stage_id=self.stage_id,
            state=_as_seen(self.state, self.next_attempt_at),
            failure_count=self.failure_count, opened_at=self.opened_at,
            next_attempt_at=self.next_attempt_at, failure_threshold=self.failure_threshold,
            cooldown_seconds=self.cooldown_seconds,
        )

    # --- the protocol --------------------------------------------------------------------

    def admit(self, now: datetime, trial_ttl: float) -> str | None:
        """``"pass"`` (closed), a trial token (half-open: the one caller let through), or
        ``None`` (refused)."""
        if self.state == "closed":
            return "pass"
        if self.state == "open":
            nxt = self.next_attempt_at
            if nxt is not None and now < nxt:
                return None
            self._cb.half_open()
        if self.trial is not None and self.trial_expires is not None and now < self.trial_expires:
            return None
        self.trial = uuid.uuid4().hex
        self.trial_expires = now + timedelta(seconds=trial_ttl)
        return self.trial

    def record(self, ok: bool, token: str | None, now: datetime) -> None:
        """Report an admitted call's outcome (a timeout or cancellation is ``ok=False``)."""
        if self.state == "half_open":
            if token is None or token != self.trial:
                return  # a late report from before the trial: the trial decides
            self.trial = self.trial_expires = None
            if ok:
                self._cb.close()
            else:
                self._cb.open()
                self._storage.opened_at = now
            return
        if self.state == "open":
            return  # a call admitted before the breaker opened: already counted enough
        if ok:
            self._storage.reset_counter()
            return
        self._storage.increment_counter()
        if self.failure_count >= self.failure_threshold:
            self._cb.open()
            self._storage.opened_at = now

    def reset(self) -> None:
        self.trial = self.trial_expires = None
        self._cb.close()
        self._storage.reset_counter()


