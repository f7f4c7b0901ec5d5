"""A runner's view of the circuit breakers: admit without a round trip when nothing failed.

A breaker the runner knows to be closed with no failures admits an attempt at once, and a
success against it changes nothing; anything else asks the registry.  Every persisted change
is announced on ``wfdag_breakers`` (heard for the node's runners by one of them,
``actors.runner.node_listen``): a notified breaker is asked again on its next use, and after
a gap in what was heard every breaker is, until the view is loaded again.
"""

from __future__ import annotations

from typing import Any

from actors.breakers.registry import Admission, Outcome, breaker_registry
from definitions import WorkflowStage
from events.breaker_state import breaker_key, load_breakers

__all__ = ["BreakerView"]

_CLOSED = ("closed", 0)
_ADMITTED = Admission(admitted=True, state="closed", failure_count=0)


class BreakerView:
    """One runner's admission view (``None`` for a key: ask the registry)."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._seen: dict[str, tuple[str, int] | None] | None = None  # None: not loaded
        self._changed: set[str] = set()  # notified while a load reads
        self._gaps = 0  # resyncs so far

    @property
    def stale(self) -> bool:
        """Not loaded (or not since a gap in the notifications): load it again."""
        return self._seen is None

    async def load(self, conn: Any) -> None:
        """Load every breaker (the node's LISTEN session is heard already: a change notified
        while this reads is asked again; after a gap while it reads, it stays stale)."""
        self._seen = None
        self._changed = set()
        gaps = self._gaps
        seen: dict[str, tuple[str, int] | None] = {
            r.key: (r.state, r.failure_count) for r in await load_breakers(conn)}
        if gaps == self._gaps:
            self._seen = {**seen, **dict.fromkeys(self._changed)}

    def changed(self, payload: str) -> None:
        """A breaker's change was notified (``"<key> <origin>"``): ask the registry."""
        key = payload.rpartition(" ")[0]
        if self._seen is None:
            self._changed.add(key)  # a load may be reading (at most one entry a breaker)
        else:
            self._seen[key] = None

    def resync(self) -> None:
        """Changes may have gone unheard: ask the registry about every breaker until
        :meth:`load` runs again."""
        self._gaps += 1
        self._seen = None

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
