"""A runner's view of the circuit breakers: admit without a round trip when nothing failed.

A breaker the runner knows to be closed with no failures admits an attempt at once, and a
success against it changes nothing; anything else asks the registry.  Every persisted change
is announced on ``wfdag_breakers``: a notified breaker is asked again on its next use.
"""

from __future__ import annotations

from typing import Any

from actors.breakers.registry import Admission, Outcome, breaker_registry
from definitions import WorkflowStage
from events.breaker_state import BREAKER_CHANNEL, breaker_key, load_breakers

__all__ = ["BreakerView"]

_CLOSED = ("closed", 0)
_ADMITTED = Admission(admitted=True, state="closed", failure_count=0)


class BreakerView:
    """One runner's admission view (``None`` for a key: ask the registry)."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._seen: dict[str, tuple[str, int] | None] | None = None  # None: not loaded

    async def load(self, conn: Any) -> None:
        """Load every breaker and listen for changes on ``conn`` (the runner's connection)."""
        self._seen = None
        await conn.add_listener(BREAKER_CHANNEL, self._on_change)
        self._seen = {r.key: (r.state, r.failure_count) for r in await load_breakers(conn)}

    def _on_change(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if self._seen is not None:
            self._seen[str(payload).rpartition(" ")[0]] = None  # ask the registry

    def _note(self, key: str, state: str, failure_count: int) -> None:
        if self._seen is not None:
            self._seen[key] = (state, failure_count)

    async def admit(self, workflow_id: str, stage: WorkflowStage) -> Admission:
        """May an attempt of ``stage`` call its agent now?"""
        key = breaker_key(workflow_id, stage.id)
        if self._seen is not None and self._seen.get(key, _CLOSED) == _CLOSED:
            return _ADMITTED  # closed, no failures: no round trip
        cb = stage.breaker
        admission: Admission = await breaker_registry(self._database_url).acquire.remote(
            workflow_id, stage.id, cb.failure_threshold, cb.cooldown_seconds,
            stage.timeout_seconds + 30)
        self._note(key, admission.state, admission.failure_count)
        return admission

    async def record(self, workflow_id: str, stage: WorkflowStage, admission: Admission,
                     ok: bool) -> Outcome:
        """Report an admitted attempt's outcome; the breaker as it is after it."""
        if ok and admission.state == "closed" and not admission.failure_count:
            return Outcome(state="closed", failure_count=0)  # changes nothing: no call
        cb = stage.breaker
        after: Outcome = await breaker_registry(self._database_url).record.remote(
            workflow_id, stage.id, ok, admission.token, cb.failure_threshold,
            cb.cooldown_seconds)
        self._note(breaker_key(workflow_id, stage.id), after.state, after.failure_count)
        return after
