"""The breaker registry: one named actor per Ray cluster that holds every breaker.

``wfdag-breakers`` in namespace ``wfdag`` decides admissions and records outcomes for every
execution on every node.  It persists every change through :mod:`events.breaker_state`, and a
restarted registry (or a new cluster on the same database) loads them back.  Each change is
announced on channel ``wfdag_breakers``: registries of other Ray clusters on the same database,
and a reset made without any actor (:func:`actors.api.reset_workflow_circuit_breaker`), make it
reload the breaker, so they agree within milliseconds.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import ray

from actors.breakers.machine import Breaker
from actors.logs import get_logger
from actors.metrics import record_breaker_state
from actors.ray_session import on_ray_restart
from actors.runtime import NAMESPACE, new_store
from events import EventStore
from events.breaker_state import (
    BREAKER_CHANNEL,
    BreakerRecord,
    breaker_key,
    load_breaker,
    load_breakers,
    save_breaker,
)

__all__ = ["REGISTRY_NAME", "Admission", "BreakerRegistry", "Outcome", "breaker_registry"]

REGISTRY_NAME = "wfdag-breakers"


@dataclass(frozen=True, slots=True)
class Admission:
    """The registry's answer to "may this attempt call the agent?"."""

    admitted: bool
    state: str
    failure_count: int
    token: str | None = None  # the one half-open trial's token
    next_attempt_at: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The breaker after an attempt's outcome was recorded."""

    state: str
    failure_count: int
    transition: str | None = None  # the state it moved to, if it moved


class BreakerRegistry:
    """The one registry of breakers (spawn with :func:`breaker_registry`)."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._breakers: dict[str, Breaker] = {}
        self._store: EventStore | None = None
        self._listener: Any = None
        self._instance = uuid.uuid4().hex
        # One change of a breaker at a time, from its decision to its row: concurrent outcomes
        # (the actor is async) each see the state the previous one left, and each opening is
        # written, and reported, once.
        self._locks: dict[str, asyncio.Lock] = {}
        self._opening = asyncio.Lock()
        self._log = get_logger(component="breakers")

    async def _db(self) -> EventStore:
        if self._store is not None:
            return self._store
        async with self._opening:  # one connection and one load, however many callers
            return await self._open()

    async def _open(self) -> EventStore:
        if self._store is None:
            store = await new_store(self._database_url, max_size=3)
            self._listener = await store.pool.acquire()
            await self._listener.add_listener(BREAKER_CHANNEL, self._on_notify)
            # A database restart ends the LISTEN connection: start over (reload) on next use.
            self._listener.add_termination_listener(lambda _conn: self._forget(store))
            records = await load_breakers(store.pool)
            for record in records:
                self._load(record)
            self._store = store
            self._log.info("breakers.loaded", count=len(records))
        return self._store

    def _forget(self, store: EventStore) -> None:
        if self._store is store:
            self._store = None
            self._log.warning("breakers.database_lost", next_step="reload on next use")
        store.pool.terminate()

    def _load(self, record: BreakerRecord) -> None:
        breaker = self._breakers.get(record.key)
        if breaker is None:
            breaker = Breaker(record.workflow_id, record.stage_id, record.failure_threshold,
                              record.cooldown_seconds)
            self._breakers[record.key] = breaker
        breaker.configure(record.failure_threshold, record.cooldown_seconds)
        breaker.restore(record.state, record.failure_count, record.opened_at)
        if breaker.state != "half_open":
            breaker.trial = breaker.trial_expires = None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        key, _, origin = str(payload).rpartition(" ")
        if origin != self._instance and self._store is not None:
            asyncio.get_running_loop().create_task(self._reload(key))

    async def _reload(self, key: str) -> None:
        store = await self._db()
        async with self._lock(key):
            record = await load_breaker(store.pool, key)
            if record is not None:
                self._load(record)
        if record is not None:
            self._log.info("breaker.reloaded", key=key, state=record.state)

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

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _persist(self, breaker: Breaker, before: tuple[str, int]) -> None:
        after = (breaker.state, breaker.failure_count)
        if after == before:
            return
        record = breaker.record_of()  # what this change decided, taken before any await
        record_breaker_state(breaker.workflow_id, breaker.stage_id, breaker.state)
        store = await self._db()
        async with store.pool.acquire() as conn:
            await save_breaker(conn, record, from_state=before[0], origin=self._instance)
        if after[0] != before[0]:
            self._log.warning("breaker.transition", key=breaker_key(breaker.workflow_id,
                                                                    breaker.stage_id),
                              from_state=before[0], to_state=after[0],
                              failure_count=breaker.failure_count)

    async def acquire(self, workflow_id: str, stage_id: str, failure_threshold: int,
                      cooldown_seconds: float, trial_ttl: float) -> Admission:
        """Ask to call the stage's agent: admitted and, in half-open, a token."""
        async with self._lock(breaker_key(workflow_id, stage_id)):
            breaker = await self._get(workflow_id, stage_id, failure_threshold,
                                      cooldown_seconds)
            before = (breaker.state, breaker.failure_count)
            verdict = breaker.admit(datetime.now(UTC), trial_ttl)
            nxt = breaker.next_attempt_at
            admission = Admission(
                admitted=verdict is not None, state=breaker.state,
                failure_count=breaker.failure_count,
                token=None if verdict in (None, "pass") else verdict,
                next_attempt_at=nxt.isoformat() if nxt is not None else None)
            await self._persist(breaker, before)
        return admission

    async def record(self, workflow_id: str, stage_id: str, ok: bool, token: str | None,
                     failure_threshold: int | None = None,
                     cooldown_seconds: float | None = None) -> Outcome:
        """Record an attempt's result (the stage's breaker config comes along: a runner that
        admitted the attempt from its own view of a closed breaker never called acquire)."""
        async with self._lock(breaker_key(workflow_id, stage_id)):
            breaker = await self._get(workflow_id, stage_id, failure_threshold,
                                      cooldown_seconds)
            before = (breaker.state, breaker.failure_count)
            breaker.record(ok, token, datetime.now(UTC))
            outcome = Outcome(state=breaker.state, failure_count=breaker.failure_count,
                              transition=breaker.state if breaker.state != before[0] else None)
            await self._persist(breaker, before)
        return outcome

    async def status(self, workflow_id: str, stage_id: str) -> dict[str, Any]:
        """The breaker as this registry holds it (JSON-able)."""
        return (await self._get(workflow_id, stage_id)).status().model_dump(mode="json")

    async def all(self) -> list[dict[str, Any]]:
        await self._db()
        return [b.status().model_dump(mode="json") for _, b in sorted(self._breakers.items())]


_registry: Any = None


def _forget_registry() -> None:
    global _registry
    _registry = None


on_ray_restart(_forget_registry)  # a new local Ray: a new registry (it reloads from the database)


def breaker_registry(database_url: str) -> Any:
    """The handle of the registry actor, created on first use (detached, restartable)."""
    global _registry
    if _registry is None:
        _registry = ray.remote(BreakerRegistry).options(
            name=REGISTRY_NAME, namespace=NAMESPACE, lifetime="detached", max_restarts=-1,
            max_task_retries=-1, num_cpus=0, get_if_exists=True,
        ).remote(database_url)
    return _registry
