"""Per-stage circuit breakers, shared by every execution on every node.

``aiobreaker`` holds each breaker's state, failure counter and transitions; this module fixes
what it gets wrong for us (``ray-notes.md``):

* half-open admits exactly ONE trial call; concurrent callers are refused until it reports
  (a trial whose caller vanished expires after ``trial_ttl`` seconds);
* a timeout or a cancellation is a failure like any other (the caller reports the outcome);
* every time is timezone-aware UTC (aiobreaker stores naive ``utcnow()``).

The registry is one named actor, ``wfdag-breakers`` in namespace ``wfdag``; it persists every
change to ``circuit_breakers`` and every transition to ``circuit_breaker_transitions``, and a
restarted registry (or a new cluster on the same database) loads them back.  Each change is
also announced on channel ``wfdag_breakers``: the registries of other Ray clusters on the same
database (two local drivers, the CLI) reload the breaker, so they agree within milliseconds.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiobreaker
import ray
from aiobreaker.state import CircuitBreakerState
from aiobreaker.storage.memory import CircuitMemoryStorage
from pydantic import BaseModel, ConfigDict

from actors.logs import get_logger
from actors.metrics import record_breaker_state
from actors.runtime import NAMESPACE
from events import EventStore

__all__ = [
    "REGISTRY_NAME",
    "Breaker",
    "BreakerRegistry",
    "BreakerStatus",
    "breaker_key",
    "breaker_registry",
]

REGISTRY_NAME = "wfdag-breakers"
CHANNEL = "wfdag_breakers"

_STATE_NAMES = {
    CircuitBreakerState.CLOSED: "closed",
    CircuitBreakerState.OPEN: "open",
    CircuitBreakerState.HALF_OPEN: "half_open",
}
_STATES = {name: state for state, name in _STATE_NAMES.items()}


def breaker_key(workflow_id: str, stage_id: str) -> str:
    return f"{workflow_id}:{stage_id}"


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

    def status(self) -> BreakerStatus:
        return BreakerStatus(
            workflow_id=self.workflow_id, stage_id=self.stage_id, state=self.state,
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


class BreakerRegistry:
    """The one registry of breakers (spawn with :func:`breaker_registry`)."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._breakers: dict[str, Breaker] = {}
        self._store: EventStore | None = None
        self._listener: Any = None
        self._instance = uuid.uuid4().hex
        self._log = get_logger(component="breakers")

    async def _db(self) -> EventStore:
        if self._store is None:
            from actors.runtime import new_store

            store = await new_store(self._database_url, max_size=3)
            self._listener = await store.pool.acquire()
            await self._listener.add_listener(CHANNEL, self._on_notify)
            # A database restart ends the LISTEN connection: start over (reload) on next use.
            self._listener.add_termination_listener(lambda _conn: self._forget(store))
            async with store.pool.acquire() as conn:
                rows = await conn.fetch("SELECT * FROM circuit_breakers")
            for row in rows:
                self._load(row)
            self._store = store
            self._log.info("breakers.loaded", count=len(rows))
        return self._store

    def _forget(self, store: EventStore) -> None:
        if self._store is store:
            self._store = None
            self._log.warning("breakers.database_lost", next_step="reload on next use")
        store.pool.terminate()

    def _load(self, row: Any) -> None:
        breaker = self._breakers.get(row["key"])
        if breaker is None:
            breaker = Breaker(row["workflow_id"], row["stage_id"], row["failure_threshold"],
                              row["cooldown_seconds"])
            self._breakers[row["key"]] = breaker
        breaker.configure(row["failure_threshold"], row["cooldown_seconds"])
        breaker.restore(row["state"], row["failure_count"], row["opened_at"])
        if breaker.state != "half_open":
            breaker.trial = breaker.trial_expires = None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        key, _, origin = str(payload).rpartition(" ")
        if origin != self._instance and self._store is not None:
            asyncio.get_running_loop().create_task(self._reload(key))

    async def _reload(self, key: str) -> None:
        assert self._store is not None
        row = await self._store.pool.fetchrow("SELECT * FROM circuit_breakers WHERE key = $1", key)
        if row is not None:
            self._load(row)
            self._log.info("breaker.reloaded", key=key, state=row["state"])

    async def _get(self, workflow_id: str, stage_id: str, threshold: int | None = None,
                   cooldown: float | None = None) -> Breaker:
        await self._db()
        key = breaker_key(workflow_id, stage_id)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = Breaker(workflow_id, stage_id, threshold or 5, cooldown or 60.0)
            self._breakers[key] = breaker
        elif threshold is not None and cooldown is not None and (
            breaker.failure_threshold, breaker.cooldown_seconds) != (threshold, cooldown):
            breaker.configure(threshold, cooldown)
        return breaker

    async def _persist(self, breaker: Breaker, before: tuple[str, int]) -> None:
        after = (breaker.state, breaker.failure_count)
        if after == before:
            return
        record_breaker_state(breaker.workflow_id, breaker.stage_id, breaker.state)
        store = await self._db()
        key = breaker_key(breaker.workflow_id, breaker.stage_id)
        async with store.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO circuit_breakers (key, workflow_id, stage_id, state, failure_count, "
                "opened_at, next_attempt_at, failure_threshold, cooldown_seconds, updated_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now()) ON CONFLICT (key) DO UPDATE "
                "SET state = $4, failure_count = $5, opened_at = $6, next_attempt_at = $7, "
                "failure_threshold = $8, cooldown_seconds = $9, updated_at = now()",
                key, breaker.workflow_id, breaker.stage_id, breaker.state, breaker.failure_count,
                breaker.opened_at, breaker.next_attempt_at, breaker.failure_threshold,
                breaker.cooldown_seconds,
            )
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{key} {self._instance}")
            if after[0] != before[0]:
                await conn.execute(
                    "INSERT INTO circuit_breaker_transitions (key, workflow_id, stage_id, "
                    "from_state, to_state, failure_count) VALUES ($1, $2, $3, $4, $5, $6)",
                    key, breaker.workflow_id, breaker.stage_id, before[0], after[0],
                    breaker.failure_count,
                )
                self._log.warning("breaker.transition", key=key, from_state=before[0],
                                  to_state=after[0], failure_count=breaker.failure_count)

    def _view(self, breaker: Breaker, **extra: Any) -> dict[str, Any]:
        status = breaker.status().model_dump(mode="json")
        status.update(extra)
        return status

    async def acquire(self, workflow_id: str, stage_id: str, failure_threshold: int,
                      cooldown_seconds: float, trial_ttl: float) -> dict[str, Any]:
        """Ask to call the stage's agent: ``admitted`` and, in half-open, a ``token``."""
        breaker = await self._get(workflow_id, stage_id, failure_threshold, cooldown_seconds)
        before = (breaker.state, breaker.failure_count)
        verdict = breaker.admit(datetime.now(UTC), trial_ttl)
        await self._persist(breaker, before)
        token = None if verdict in (None, "pass") else verdict
        return self._view(breaker, admitted=verdict is not None, token=token)

    async def record(self, workflow_id: str, stage_id: str, ok: bool, token: str | None,
                     failure_threshold: int | None = None,
                     cooldown_seconds: float | None = None) -> dict[str, Any]:
        """Record an attempt's result (the stage's breaker config comes along: a runner that
        admitted the attempt from its own view of a closed breaker never called acquire)."""
        breaker = await self._get(workflow_id, stage_id, failure_threshold, cooldown_seconds)
        before = (breaker.state, breaker.failure_count)
        breaker.record(ok, token, datetime.now(UTC))
        await self._persist(breaker, before)
        transition = breaker.state if breaker.state != before[0] else None
        return self._view(breaker, transition=transition)

    async def status(self, workflow_id: str, stage_id: str) -> dict[str, Any]:
        return self._view(await self._get(workflow_id, stage_id))

    async def reset(self, workflow_id: str, stage_id: str) -> dict[str, Any]:
        breaker = await self._get(workflow_id, stage_id)
        before = (breaker.state, breaker.failure_count)
        breaker.reset()
        await self._persist(breaker, before)
        return self._view(breaker)

    async def all(self) -> list[dict[str, Any]]:
        await self._db()
        return [self._view(b) for _, b in sorted(self._breakers.items())]


_registry: Any = None


def breaker_registry(database_url: str) -> Any:
    """The handle of the registry actor, created on first use (detached, restartable)."""
    global _registry
    if _registry is None:
        _registry = ray.remote(BreakerRegistry).options(
            name=REGISTRY_NAME, namespace=NAMESPACE, lifetime="detached", max_restarts=-1,
            max_task_retries=-1, num_cpus=0, get_if_exists=True,
        ).remote(database_url)
    return _registry
