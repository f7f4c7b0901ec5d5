"""Snapshots of the fold: an execution's state as of one event, stored beside its log.

A runner that adopts an execution reads its latest snapshot and only the events after it, so
that a log of 50,000 events resumes as fast as a short one.  The log stays the only truth:

* a snapshot is the fold of the log up to its ``seq``, taken by the runner that wrote that
  event (every :data:`SNAPSHOT_EVERY` events), in JSON (never pickle: the database is not
  trusted to hold code);
* it is bound to the log by a digest of the event's ``chain`` hash and its own text, checked
  by the server on every load: an edited snapshot, or a log rewritten under it, is ignored (the
  whole log is read and checked instead);
* it names the fold it came from (:data:`FOLD_VERSION`, a hash of :mod:`events.state`'s
  source): after an upgrade that changes the fold, older snapshots are ignored;
* the events after it are read with the hash chain checked from the snapshot's event on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from definitions import WorkflowDAG
from events import state as fold_module
from events.database import DBConnection
from events.models import Event
from events.rows import checked_events
from events.state import ExecutionState, StageState
from events.store_sql import CHECKED

__all__ = ["FOLD_VERSION", "SNAPSHOT_EVERY", "Snapshot", "from_text", "load_snapshot",
           "read_from_snapshot", "same_fold", "save_snapshot", "save_snapshot_text", "to_text"]

#: A runner snapshots an execution's fold once this many events were written since the last.
SNAPSHOT_EVERY = 1000


def _fold_version() -> str:
    try:
        return hashlib.sha256(Path(fold_module.__file__ or "").read_bytes()).hexdigest()[:16]
    except OSError:  # no source (a frozen install): never trust a snapshot across versions
        return "unknown"


FOLD_VERSION = _fold_version()

_STAGE_FIELDS = tuple(f.name for f in fields(StageState))
_STATE_FIELDS = tuple(f.name for f in fields(ExecutionState))
_STAGE_TIMES = frozenset(f.name for f in fields(StageState) if "datetime" in str(f.type))
_STATE_TIMES = frozenset(f.name for f in fields(ExecutionState) if "datetime" in str(f.type))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A fold as of event ``state.version``, and the log's size (bytes of JSON) up to it."""

    state: ExecutionState
    log_bytes: int


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def to_text(state: ExecutionState, log_bytes: int) -> str | None:
    """The snapshot's text; ``None`` when the state holds anything JSON would not give back
    exactly (then no snapshot is taken: the log is read whole, as before)."""
    out: dict[str, Any] = {}
    for name in _STATE_FIELDS:
        value = getattr(state, name)
        if name == "dag":
            value = value.model_dump(mode="json") if value is not None else None
        elif name == "stages":
            value = {sid: {f: (_time(getattr(st, f)) if f in _STAGE_TIMES else getattr(st, f))
                           for f in _STAGE_FIELDS} for sid, st in value.items()}
        elif name in _STATE_TIMES:
            value = _time(value)
        out[name] = value
    try:
        text = json.dumps({"fold": FOLD_VERSION, "log_bytes": log_bytes, "state": out},
                          separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None
    back = from_text(text)
    return text if back is not None and same_fold(back.state, state) else None


def same_fold(a: ExecutionState, b: ExecutionState) -> bool:
    """The two states are one fold (definitions compared by content: a definition in use
    caches lookups of its own)."""
    return all((getattr(a, f).model_dump() == getattr(b, f).model_dump()
                if f == "dag" and getattr(a, f) is not None and getattr(b, f) is not None
                else getattr(a, f) == getattr(b, f)) for f in _STATE_FIELDS)


def from_text(text: str) -> Snapshot | None:
    """The snapshot in ``text``; ``None`` when it is not one of this fold's."""
    try:
        data = json.loads(text)
        if data.get("fold") != FOLD_VERSION:
            return None
        raw = data["state"]
        if set(raw) != set(_STATE_FIELDS):
            return None
        values: dict[str, Any] = {}
        for name in _STATE_FIELDS:
            value = raw[name]
            if name == "dag":
                value = WorkflowDAG.model_validate(value) if value is not None else None
            elif name == "stages":
                stages = {}
                for sid, st in value.items():
                    if set(st) != set(_STAGE_FIELDS):
                        return None
                    given: dict[str, Any] = {
                        f: (_parse_time(st[f]) if f in _STAGE_TIMES else st[f])
                        for f in _STAGE_FIELDS}
                    stages[sid] = StageState(**given)
                value = stages
            elif name in _STATE_TIMES:
                value = _parse_time(value)
            elif name == "parent":
                value = tuple(value) if value is not None else None
            elif name == "signals":
                value = [(str(n), dict(p)) for n, p in value]
            values[name] = value
        return Snapshot(ExecutionState(**values), int(data["log_bytes"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


# The digest binds the snapshot to the chain hash of its event (so to the whole log up to it).
_DIGEST = "encode(sha256(convert_to(e.chain || '|' || {text}, 'UTF8')), 'hex')"

_SAVE = f"""
INSERT INTO workflow_snapshots (execution_id, seq, state, digest)
SELECT $1::uuid, $2::int, $3::text, {_DIGEST.format(text="$3::text")}
FROM workflow_events e WHERE e.execution_id = $1::uuid AND e.seq = $2::int
  AND e.chain IS NOT NULL
ON CONFLICT (execution_id) DO UPDATE
  SET seq = EXCLUDED.seq, state = EXCLUDED.state, digest = EXCLUDED.digest, taken_at = now()
  WHERE workflow_snapshots.seq < EXCLUDED.seq
"""

_LOAD = f"""
SELECT s.seq, s.state, s.digest = {_DIGEST.format(text="s.state")} AS holds
FROM workflow_snapshots s
JOIN workflow_events e ON e.execution_id = s.execution_id AND e.seq = s.seq
WHERE s.execution_id = $1::uuid
"""


async def save_snapshot_text(conn: DBConnection, execution_id: str, seq: int,
                             text: str) -> None:
    """Store a snapshot's text (:func:`to_text` of the fold up to ``seq``), unless a later
    one is there."""
    await conn.execute(_SAVE, execution_id, seq, text)


async def save_snapshot(conn: DBConnection, state: ExecutionState, log_bytes: int) -> bool:
    """Store ``state`` (the fold of the log up to ``state.version``) as the execution's
    snapshot, unless a later one is there.  False when the state cannot be snapshotted."""
    text = to_text(state, log_bytes)
    if text is None:
        return False
    await save_snapshot_text(conn, state.execution_id, state.version, text)
    return True


async def load_snapshot(conn: DBConnection, execution_id: str) -> tuple[Snapshot | None, str]:
    """The execution's snapshot, if one holds, and what became of it: ``"none"`` (there is
    none), ``"used"``, ``"broken"`` (its digest does not hold: edited, or its log was), or
    ``"stale"`` (another fold's, or not readable)."""
    row = await conn.fetchrow(_LOAD, execution_id)
    return _fate(row["seq"], row["state"], row["holds"]) if row else (None, "none")


def _fate(seq: int, text: str, holds: bool) -> tuple[Snapshot | None, str]:
    """A stored snapshot and what becomes of it (see :func:`load_snapshot`)."""
    if not holds:
        return None, "broken"
    snap = from_text(text)
    if snap is None or snap.state.version != seq:
        return None, "stale"
    return snap, "used"


#: :data:`_LOAD` and the checked read (``events.store_sql.READ``) in one statement: the snapshot
#: (``kind`` 0, if any), then the events after it when it holds, else the whole log (``kind``
#: 1, each link checked from the snapshot's event on).
_READ_FROM = f"""
WITH s AS ({_LOAD}),
start AS (SELECT COALESCE((SELECT seq FROM s WHERE holds), 0) AS after_seq)
SELECT 0 AS kind, seq, NULL::text AS event_type, NULL::text AS stage_id, NULL::jsonb AS metadata,
       NULL::timestamptz AS created_at, holds AS intact, state FROM s
UNION ALL
SELECT 1, seq, event_type, stage_id, metadata, created_at, intact, NULL FROM ({
    CHECKED.format(after="(SELECT after_seq FROM start)", until="2147483647")}) checked
ORDER BY kind, seq
"""


async def read_from_snapshot(conn: DBConnection, execution_id: str,
                             ) -> tuple[Snapshot | None, str, list[Event]]:
    """:func:`load_snapshot` and the events after the snapshot in one round trip: (the
    snapshot, its fate, the events after it) — or, with none that holds, (``None``, its fate,
    the whole log).  ``"stale"``: the events after the one it was taken at, which are not the
    whole log (read it).  A link of the chain that does not hold raises ``BrokenChainError``."""
    rows = await conn.fetch(_READ_FROM, execution_id)
    head = rows[0] if rows and rows[0]["kind"] == 0 else None
    events = checked_events(execution_id, rows[1:] if head is not None else rows)
    snap, fate = _fate(head["seq"], head["state"], head["intact"]) if head else (None, "none")
    return snap, fate, events
