"""How a drive reads its execution: from the fold's snapshot and the events after it when one
holds (a long log resumes at once), else the whole log; and when it takes a new snapshot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from events import Event, EventStore, ExecutionState, fold, is_database_outage
from events.snapshots import SNAPSHOT_EVERY, read_from_snapshot, save_snapshot_text, to_text

__all__ = ["Loaded", "event_bytes", "json_size", "read_state", "snapshot_of", "take_snapshot"]


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON: how the drive counts a log against its cap."""
    return len(json.dumps(value, separators=(",", ":"), default=str))


def event_bytes(events: list[Event]) -> int:
    """The log's size as the drive counts it against the cap (JSON bytes of the events)."""
    return sum(json_size(e.model_dump(mode="json")) for e in events)


@dataclass(slots=True)
class Loaded:
    """The execution's state, the events read to get it (all of them when ``whole``, else
    those after the snapshot ``snapshot_seq``), and the log's size in bytes."""

    state: ExecutionState | None
    events: list[Event]
    whole: bool
    snapshot_seq: int
    log_bytes: int


async def read_state(store: EventStore, conn: Any, execution_id: str, log: Any) -> Loaded:
    """Read the execution on ``conn`` (the lease connection), its snapshot and the events after
    it in one round trip.  A chain that does not hold raises ``BrokenChainError`` either way
    (the events after a snapshot are checked from its event on; the snapshot is bound to that
    event's chain hash)."""
    snap, fate, events = await read_from_snapshot(conn, execution_id)
    if snap is not None:
        state = fold(events, snap.state) if events else snap.state
        return Loaded(state, events, False, snap.state.version,
                      snap.log_bytes + event_bytes(events))
    if fate != "none":
        log.warning("execution.snapshot_ignored", fate=fate,
                    detail="its snapshot is not this log's fold: the whole log is read")
    if fate == "stale":  # what was read is what follows it, not the whole log
        events = await store.read(execution_id, conn=conn)
    return Loaded(fold(events) if events else None, events, True, 0, event_bytes(events))


def snapshot_of(state: ExecutionState, seq: int, snapshot_seq: int,
                log_bytes: int) -> tuple[str, str, int] | None:
    """When a snapshot is due at ``seq`` (SNAPSHOT_EVERY events after the last) and ``state``
    is the fold up to it: (its text, the execution, seq) — else ``None``."""
    if seq - snapshot_seq < SNAPSHOT_EVERY or state.version != seq:
        return None
    text = to_text(state, log_bytes)
    return (text, state.execution_id, seq) if text is not None else None


async def take_snapshot(conn: Any, text: str, execution_id: str, seq: int, log: Any) -> bool:
    """Store a snapshot's text (of the fold up to ``seq``, now in the log).  A failure other
    than an outage is logged and forgotten: a snapshot only saves reading."""
    try:
        await save_snapshot_text(conn, execution_id, seq, text)
    except Exception as exc:
        if is_database_outage(exc):
            raise
        log.warning("execution.snapshot_failed", error=f"{type(exc).__name__}: {exc}"[:300])
        return False
    log.info("execution.snapshot", seq=seq)
    return True
