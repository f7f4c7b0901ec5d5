"""Tail ``workflow_events`` in global order and keep projections, each event applied once.

**Global order is (txid, position)**, read only below the snapshot's xmin.  Positions are
handed out at insert time but transactions commit out of order: a reader that advanced a
position checkpoint past a still-open transaction would skip its events forever.  Every
transaction whose id is below ``pg_snapshot_xmin(pg_current_snapshot())`` has ended, so no
event can ever appear below that line again; reading in (txid, position) order up to it, with
the checkpoint stored as (txid, position) in the same transaction as the projection's writes,
never skips an event and never applies one twice.  A long transaction delays projections; it
never loses an event.

:func:`rebuild_projections` drops every read model and rebuilds it from the log, with appends
paused (``LOCK workflow_events IN SHARE MODE``) for the few seconds it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import asyncpg

from events import NOTIFY_CHANNEL, EventRow
from events.chain import ChainReport, verify_chains
from events.database import DBConnection
from projections.executions import COLUMNS, ROW_READS, execution_row
from projections.metrics import MetricsProjection

__all__ = ["PROJECTIONS", "Projection", "ProjectionRunner", "rebuild_projections"]


class Projection(Protocol):
    """A read model the runner keeps.  One may also declare ``reads``: a mapping of event
    type → the keys of an event's data it reads (of the types not named, any key); a rebuild
    then reads only those of those events, from the database on.  Without it, a rebuild
    reads every event whole."""

    name: str
    tables: tuple[str, ...]

    async def apply(self, conn: DBConnection, events: Sequence[EventRow]) -> None: ...

    async def rebuild(self, conn: DBConnection, events: Iterable[EventRow]) -> None: ...


PROJECTIONS: tuple[Projection, ...] = (MetricsProjection(),)

_FETCH = """
SELECT execution_id, seq, event_type, stage_id, metadata, created_at,
       txid::text AS txid_text, position
FROM workflow_events
WHERE (txid, position) > ($1::text::xid8, $2::bigint)
  AND txid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY workflow_events.txid, workflow_events.position
LIMIT $3
"""


def _lock_key(name: str) -> int:
    return 0x70726A00 + zlib.crc32(name.encode()) % 0xFFFF


def _row(r: Any) -> EventRow:
    return EventRow(str(r["execution_id"]), r["seq"], r["event_type"], r["stage_id"],
                    r["metadata"] or {}, r["created_at"])


class ProjectionRunner:
    """Catches projections up with the log, on demand or live (LISTEN/NOTIFY)."""

    def __init__(self, pool: asyncpg.Pool, projections: Sequence[Projection] = PROJECTIONS,
                 *, batch_size: int = 2000) -> None:
        self.pool = pool
        self.projections = tuple(projections)
        self.batch_size = batch_size

    async def catch_up(self) -> int:
        """Apply every event that can be applied now; returns how many were applied."""
        return sum([await self._catch_up(p) for p in self.projections])

    async def _catch_up(self, projection: Projection) -> int:
        applied = 0
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(projection.name))
                await conn.execute(
                    "INSERT INTO projection_checkpoints (name) VALUES ($1) "
                    "ON CONFLICT (name) DO NOTHING", projection.name)
                checkpoint = await conn.fetchrow(
                    "SELECT last_txid::text AS txid, last_position FROM projection_checkpoints "
                    "WHERE name = $1", projection.name)
                assert checkpoint is not None
                rows = await conn.fetch(_FETCH, checkpoint["txid"], checkpoint["last_position"],
                                        self.batch_size)
                if not rows:
                    return applied
                await projection.apply(conn, [_row(r) for r in rows])
                await conn.execute(
                    "UPDATE projection_checkpoints SET last_txid = $2::text::xid8, "
                    "last_position = $3, events_applied = events_applied + $4, "
                    "updated_at = now() WHERE name = $1",
                    projection.name, rows[-1]["txid_text"], rows[-1]["position"], len(rows))
            applied += len(rows)
            if len(rows) < self.batch_size:
                return applied

    async def run(self, stop: asyncio.Event, *, safety_interval: float = 5.0,
                  batch_window: float = 0.25) -> None:
        """Catch up on start, then on append notifications, until ``stop`` is set.

        Notifications arriving within ``batch_window`` seconds are served by one catch-up (a
        busy system is caught up in batches, not once per append).  While catch-ups find
        events, it looks again every ``batch_window`` without listening: PostgreSQL signals
        every listening session at each NOTIFY, and every append notifies.  The safety
        interval covers events held back by a transaction that was not an append (it
        notifies nobody when it ends)."""
        wake = asyncio.Event()

        def on_notify(*_args: Any) -> None:
            wake.set()

        async with self.pool.acquire() as listener:
            await listener.add_listener(NOTIFY_CHANNEL, on_notify)
            listening = True
            try:
                while not stop.is_set():
                    wake.clear()
                    applied = await self.catch_up()
                    if applied and listening:
                        await listener.remove_listener(NOTIFY_CHANNEL, on_notify)
                        listening = False
                    elif not applied and not listening:
                        await listener.add_listener(NOTIFY_CHANNEL, on_notify)
                        listening = True
                        continue  # once more: an append may have come before the LISTEN
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), batch_window)
                    if not listening:
                        continue
                    stopper = asyncio.ensure_future(stop.wait())
                    waker = asyncio.ensure_future(wake.wait())
                    await asyncio.wait({stopper, waker}, timeout=safety_interval,
                                       return_when=asyncio.FIRST_COMPLETED)
                    for fut in (stopper, waker):
                        fut.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await fut
            finally:
                if listening:
                    await listener.remove_listener(NOTIFY_CHANNEL, on_notify)


async def rebuild_projections(
    pool: asyncpg.Pool, projections: Sequence[Projection] = PROJECTIONS
) -> dict[str, Any]:
    """Drop ``workflow_executions`` and every projection's tables and rebuild them from the log.

    Returns ``{"events": …, "executions": …, "broken": [report, …]}`` — the logs whose hash
    chain does not hold (``ChainReport.to_json``), checked beside the rebuild.  The result
    equals what incremental projection produced: both run the same pure functions over the
    same events.
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE workflow_events IN SHARE MODE")
        for projection in projections:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(projection.name))
        tables = ["workflow_executions", *[t for p in projections for t in p.tables]]
        await conn.execute(f"TRUNCATE {', '.join(tables)}")
        # The hash chains are checked meanwhile on a connection of their own: PostgreSQL
        # hashes every link on one core while this one decodes and projects (appends wait
        # for the lock taken above, so both see the same log).
        checking = asyncio.ensure_future(_check_chains(pool))
        try:
            with _no_cycle_collection():
                executions, events = await _rebuild_in(conn, projections)
        except BaseException:
            checking.cancel()
            raise
        broken = [report.to_json() for report in await checking if not report.ok]
    return {"events": events, "executions": executions, "broken": broken}


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Bulk work without Python's cycle collector: hundreds of thousands of new objects (none
    in a cycle) would make it walk every live one again and again — a third of a rebuild's
    time.  Reference counting still frees everything; the collector runs again after.  Let
    the work drop its objects inside: the first collections after would otherwise walk every
    one of them still alive (~10 % of a rebuild, measured; issue 18)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


#: JSON text → (value, end): the metadata as PostgreSQL prints it (no space before or after),
#: without json.loads's checks of encoding and of trailing space.
_JSON_OBJECT = json.JSONDecoder().raw_decode


def rebuild_reads(projections: Sequence[Projection]) -> dict[str, frozenset[str]]:
    """Of which event types a rebuild of ``workflow_executions`` and ``projections`` needs
    only some keys of the data, and which: the types every one of them names (``reads``),
    with the keys any of them reads."""
    reads = dict(ROW_READS)
    for projection in projections:
        theirs: Mapping[str, frozenset[str]] | None = getattr(projection, "reads", None)
        if theirs is None:
            return {}
        reads = {t: keys | theirs[t] for t, keys in reads.items() if t in theirs}
    return reads


def _metadata_sql(reads: Mapping[str, frozenset[str]]) -> tuple[str, list[Any]]:
    """The rebuild's metadata column (never NULL): only ``reads``' keys of its types, each
    key there only if the event has it (the others taken out: a large value is decompressed
    once, not once a key).  With its parameters ($1…)."""
    whens: list[str] = []
    params: list[Any] = []
    for event_type, keys in sorted(reads.items()):
        params.append(event_type)
        when = f"WHEN ${len(params)}::text THEN "
        if keys:
            params.append(sorted(keys))
            whens.append(when + f"metadata - ARRAY(SELECT k FROM jsonb_object_keys(metadata) "
                                f"AS k WHERE k <> ALL(${len(params)}::text[]))")
        else:
            whens.append(when + "'{}'::jsonb")
    if not whens:
        return "COALESCE(metadata, '{}'::jsonb)", []
    return (f"CASE event_type {' '.join(whens)} ELSE COALESCE(metadata, '{{}}'::jsonb) END",
            params)


async def _rebuild_in(conn: DBConnection, projections: Sequence[Projection]) -> tuple[int, int]:
    """The rebuild's scan and writes, in its transaction: (executions, events) — counts; the
    rows and events themselves are gone by the time it returns (see _no_cycle_collection)."""
    # Columns in EventRow's order, the id as text and metadata never NULL: each record
    # becomes its row without a conversion in Python (100,000s of them here).  Of the
    # metadata, only what the read models are built from (decoding JSON is most of the
    # cost of a scan, and a workflow_initiated's dag most of a log's bytes).
    metadata, params = _metadata_sql(rebuild_reads(projections))
    records = await conn.fetch(
        f"SELECT execution_id::text, seq, event_type, stage_id, ({metadata})::text, created_at "
        "FROM workflow_events ORDER BY workflow_events.txid, workflow_events.position",
        *params)
    # The checkpoint: only the last event's place in the global order is needed.
    last = await conn.fetchrow(
        "SELECT txid::text AS txid_text, position FROM workflow_events "
        "ORDER BY txid DESC, position DESC LIMIT 1")
    loads = _JSON_OBJECT
    events = [EventRow(r[0], r[1], r[2], r[3], {} if r[4] == "{}" else loads(r[4])[0], r[5])
              for r in records]
    del records
    streams: dict[str, list[EventRow]] = {}
    for ev in events:
        streams.setdefault(ev.execution_id, []).append(ev)
    rows = [execution_row(None, stream) for stream in streams.values()]
    if rows:
        await conn.copy_records_to_table(
            "workflow_executions", columns=list(COLUMNS),
            records=[tuple(r[c] for c in COLUMNS) for r in rows])
    last_txid, last_position = (
        (last["txid_text"], last["position"]) if last is not None else ("0", 0))
    for projection in projections:
        await projection.rebuild(conn, events)
        await conn.execute(
            "INSERT INTO projection_checkpoints (name, last_txid, last_position, "
            "events_applied) VALUES ($1, $2::text::xid8, $3, $4) ON CONFLICT (name) DO "
            "UPDATE SET last_txid = EXCLUDED.last_txid, last_position = "
            "EXCLUDED.last_position, events_applied = EXCLUDED.events_applied, "
            "updated_at = now()",
            projection.name, last_txid, last_position, len(events))
    return len(rows), len(events)


async def _check_chains(pool: asyncpg.Pool) -> list[ChainReport]:
    async with pool.acquire() as conn:
        return await verify_chains(conn, read_model=False)
