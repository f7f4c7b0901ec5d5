"""The PostgreSQL event store (asyncpg).

``UNIQUE(execution_id, seq)`` *is* the concurrency check: an append names the version it
expects, writes all of one decision's events in one transaction, and a writer that is behind
(a stale actor) gets :class:`definitions.ConcurrencyError` and writes nothing.  Projectors given
to the store run inside the same transaction, so read models never disagree with the log.
Every append notifies channel ``wfdag_events`` with ``<execution_id>:<last_seq>:<last_type>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, Protocol

import asyncpg

from definitions import (
    ConcurrencyError,
    ExecutionNotFoundError,
    WorkflowDAG,
)
from events.database import DBConnection, session_alive
from events.definition_store import DefinitionStore
from events.models import Event
from events.rows import EventRow, checked_events, event_to_row
from events.store_sql import CHAIN_OF, CHAINS, READ, append_statement

__all__ = ["NOTIFY_CHANNEL", "EventStore", "Prepared", "Projector", "StatementProjector",
           "parse_execution_id"]

NOTIFY_CHANNEL = "wfdag_events"

Projector = Callable[[DBConnection, Sequence[Event]], Awaitable[None]]


class Prepared(NamedTuple):
    """A projector's part of a single-statement append: data-modifying CTE bodies and final
    SELECT expressions, their parameters written ``{0}``, ``{1}``, … (renumbered by the store)
    and ``{ok}`` — true only when every event of the append was inserted; ``on_success`` runs
    once the statement committed."""

    ctes: list[str]
    selects: list[str]
    params: list[Any]
    on_success: Callable[[], None] | None = None


class StatementProjector(Protocol):
    """A projector that can also write inside the append's own statement (one round trip):
    :meth:`prepare` may read (e.g. a row it has not cached) but must not write."""

    async def __call__(self, conn: DBConnection, events: Sequence[Event]) -> None: ...

    async def prepare(self, conn: DBConnection, events: Sequence[Event],
                      rows: Sequence[EventRow]) -> Prepared:
        """``rows``: the events as the store writes them (``event_to_row``), made once."""

def parse_execution_id(execution_id: str) -> str:
    """The canonical form of an execution id; anything that is not a UUID is not found."""
    try:
        return str(uuid.UUID(str(execution_id)))
    except (ValueError, TypeError, AttributeError):
        raise ExecutionNotFoundError(str(execution_id)[:100]) from None


#: How long a store keeps listening after its last waiter left.
IDLE_UNLISTEN_SECONDS = 2.0
#: How long giving a connection back (its reset) may take before it is terminated instead.
RELEASE_SECONDS = 5.0
_BACKGROUND: set[asyncio.Future[None]] = set()


def _background(work: Awaitable[None]) -> None:
    """Run ``work`` on its own, kept until it ends."""
    task = asyncio.ensure_future(work)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


class _Notifier:
    """One LISTEN connection per store, fanning notifications out to waiters by execution id
    and to taps (a connection per waiter would starve the pool they also read from)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._waiters: dict[str, dict[asyncio.Event, Collection[str] | None]] = {}
        self.last_type: dict[str, str] = {}
        """The type of the last event notified, per execution someone waits on."""
        self._idle: asyncio.TimerHandle | None = None
        self._taps: set[Callable[[str], None]] = set()  # given every notification

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        for tap in list(self._taps):
            tap(str(payload))
        eid, _, rest = str(payload).partition(":")
        waiters = self._waiters.get(eid)
        if waiters:
            kind = self.last_type[eid] = rest.rpartition(":")[2]
            for event, only in waiters.items():
                if only is None or kind in only:
                    event.set()

    def _on_lost(self, conn: Any) -> None:
        if self._conn is conn:
            self._conn = None
        _background(self._discard(conn))  # a dead connection goes back to the pool, never leaks
        for events in self._waiters.values():
            for event in events:
                event.set()  # waiters re-read, and the next subscribe listens again
        if self._taps:  # a tap has no loop of its own that would listen again: do it here
            _background(self._listen_for_taps())

    async def _listen_for_taps(self) -> None:
        delay = 0.2
        while self._taps:
            try:
                await asyncio.wait_for(self._ensure(), RELEASE_SECONDS)
                return
            except Exception:  # the database is not back yet
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _discard(self, conn: Any) -> None:
        """Give a listening connection back to the pool (bounded: a connection cut off
        without a word is terminated instead of reset)."""
        with contextlib.suppress(Exception):
            conn.remove_termination_listener(self._on_lost)
        with contextlib.suppress(Exception):
            await self._pool.release(conn, timeout=RELEASE_SECONDS)

    async def _ensure(self, timeout: float | None = None) -> bool:
        """Listen (again); True when a new listening connection had to be made.  ``timeout``
        bounds the wait for a connection of the pool."""
        async with self._lock:
            if self._conn is not None and session_alive(self._conn):
                return False
            if self._conn is not None:  # died without its termination callback yet
                dead, self._conn = self._conn, None
                await self._discard(dead)
            conn = await self._pool.acquire(timeout=timeout)
            try:
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                conn.add_termination_listener(self._on_lost)
            except BaseException:
                await self._discard(conn)  # a listen that failed leaves nothing held
                raise
            self._conn = conn
            return True

    @asynccontextmanager
    async def subscribe(self, execution_id: str, timeout: float | None,
                        only: Collection[str] | None) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters.setdefault(execution_id, {})[event] = only
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            with contextlib.suppress(Exception):  # the waiter's own loop listens again
                await asyncio.wait_for(self._ensure(), RELEASE_SECONDS if timeout is None
                                       else min(timeout, RELEASE_SECONDS))
            yield event
        finally:
            waiters = self._waiters.get(execution_id)
            if waiters is not None:
                waiters.pop(event, None)
                if not waiters:
                    del self._waiters[execution_id]
                    self.last_type.pop(execution_id, None)
            self._unlisten_later()

    @asynccontextmanager
    async def tap(self, callback: Callable[[str], None]) -> AsyncIterator[None]:
        self._taps.add(callback)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            await self._ensure()
            yield
        finally:
            self._taps.discard(callback)
            self._unlisten_later()

    def _unlisten_later(self) -> None:
        """Nobody waits: stop listening after a grace (a process that waits no more is not
        woken by every append of the cluster; one that waits again soon keeps it)."""
        if not self._waiters and not self._taps and self._idle is None:
            self._idle = asyncio.get_running_loop().call_later(
                IDLE_UNLISTEN_SECONDS, self._unlisten_if_idle)

    def _unlisten_if_idle(self) -> None:
        self._idle = None
        if not self._waiters and not self._taps and self._conn is not None:
            _background(self._unlisten())

    async def _unlisten(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if self._waiters or self._taps:  # someone subscribed meanwhile: keep listening
                self._conn = conn
                return
            if conn is None:
                return
            if session_alive(conn):
                with contextlib.suppress(Exception):  # released either way; reset UNLISTENs
                    conn.remove_termination_listener(self._on_lost)
                    await asyncio.wait_for(conn.remove_listener(NOTIFY_CHANNEL,
                                                                self._on_notify),
                                           RELEASE_SECONDS)
            await self._discard(conn)  # alive or dead, it goes back to the pool

    async def close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._conn is not None and session_alive(self._conn):
            await self._conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            await self._pool.release(self._conn)
        self._conn = None


class EventStore(DefinitionStore):
    """Appends and reads execution streams, and stores workflow definitions."""

    def __init__(self, pool: asyncpg.Pool, *, projectors: Sequence[Projector] = ()) -> None:
        self.pool = pool
        self._projectors = tuple(projectors)
        # Every projector can write inside the append's statement: one round trip per append.
        # (name, version) → definition: a stored version never changes (a different content
        # under the same version is refused), so a parsed one is kept.
        self._definitions: dict[tuple[str, int], WorkflowDAG] = {}
        self._single_statement = bool(self._projectors) and all(
            hasattr(p, "prepare") for p in self._projectors)
        self._notifier = _Notifier(pool)

    def prime(self, events: Sequence[Event]) -> None:
        """Tell the projectors that a writer has just read this whole log (a runner adopting
        the execution): a projector that keeps rows may keep this one, so that the next
        append need not read it back."""
        for projector in self._projectors:
            prime = getattr(projector, "prime", None)
            if prime is not None:
                prime(events)

    def last_notified_type(self, execution_id: str) -> str | None:
        """The type of the last event notified for a subscribed execution (or ``None``)."""
        return self._notifier.last_type.get(execution_id)

    def subscribe(self, execution_id: str, timeout: float | None = None, *,
                  only: Collection[str] | None = None) -> Any:
        """``async with store.subscribe(eid) as woken:`` — ``woken`` (an asyncio.Event) is set
        whenever the execution's stream grows by an event of a type in ``only`` (any, by
        default), or the listening connection was lost.
        Clear it before reading, then wait on it.  Listening starts at once when the
        database answers within ``timeout`` (else at the caller's next :meth:`relisten`)."""
        return self._notifier.subscribe(parse_execution_id(execution_id), timeout, only)

    def tap(self, callback: Callable[[str], None]) -> Any:
        """``async with store.tap(cb):`` — ``cb`` gets every append's notification
        (``<execution_id>:<last_seq>:<last_type>``), listening again after a lost connection."""
        return self._notifier.tap(callback)

    async def relisten(self, timeout: float | None = None) -> bool:
        """Listen again if the listening connection was lost (a database restart); True when
        it had to — notifications sent meanwhile are lost, so re-read what you wait on."""
        return await self._notifier._ensure(timeout)

    async def close_listener(self) -> None:
        """Stop listening (its connection goes back to the pool); the next waiter listens
        again."""
        await self._notifier.close()

    async def close(self) -> None:
        await self._notifier.close()
        await self.pool.close()

    async def append(
        self, events: Sequence[Event], *, expected_version: int,
        conn: DBConnection | None = None, also: Sequence[Prepared] = (),
    ) -> None:
        """Append one decision's events to one execution's stream, all or nothing.

        ``expected_version`` is the stream's last seq as the writer knows it: another writer
        got there first → :class:`ConcurrencyError`, nothing written.  ``conn`` writes on that
        connection instead of the pool's — a runner writes on its lease connection, the session
        that holds the execution's advisory lock, so that a runner that lost its lease (the
        session ended: a partition, a database restart) cannot write at all.  ``also``: more
        parts of the statement (single-statement stores only; ``on_success`` says it ran)."""
        if not events:
            return
        execution_id = events[0].execution_id
        rows = [event_to_row(event) for event in events]
        for offset, row in enumerate(rows, start=1):
            if row[0] != execution_id:
                raise ValueError("one append holds the events of one execution")
            if row[1] != expected_version + offset:
                raise ValueError(
                    f"event seq {row[1]} in an append at version {expected_version}: seqs must "
                    f"run on from the expected version without gaps"
                )
        last = events[-1]
        try:
            args: list[Any] = [
                execution_id, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
                [r[4] for r in rows], [r[5] for r in rows], expected_version, NOTIFY_CHANNEL,
                f"{execution_id}:{last.seq}:{last.type}",
            ]
            if self._single_statement:
                # One statement, one round trip: the events, the read models (their projectors'
                # CTEs, applied only when every event went in) and the notifications.
                async with self._on(conn) as conn:
                    prepared = [*[await p.prepare(conn, events, rows)  # type: ignore[attr-defined]
                                  for p in self._projectors], *also]
                    args.append(len(rows))
                    sql = append_statement(len(args), tuple(
                        (tuple(p.ctes), tuple(p.selects), len(p.params)) for p in prepared))
                    for part in prepared:
                        args.extend(part.params)
                    result = await conn.fetchrow(sql, *args)
                assert result is not None
                if result["n"] != len(rows):
                    raise ConcurrencyError(execution_id, expected_version)
                for part in prepared:
                    if part.on_success is not None:
                        part.on_success()
                return
            async with self._on(conn) as conn, conn.transaction():
                result = await conn.fetchrow(append_statement(len(args), ()), *args)
                assert result is not None
                if result["n"] != len(rows):
                    raise ConcurrencyError(execution_id, expected_version)
                for projector in self._projectors:
                    await projector(conn, events)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name and "seq" in exc.constraint_name:
                raise ConcurrencyError(execution_id, expected_version) from None
            raise

    def _on(self, conn: DBConnection | None) -> contextlib.AbstractAsyncContextManager[Any]:
        """``conn`` itself, else a connection of the pool for the block."""
        return contextlib.nullcontext(conn) if conn is not None else self.pool.acquire()

    async def read(
        self, execution_id: str, *, after_seq: int = 0, until_seq: int | None = None,
        conn: DBConnection | None = None, check_chain: bool = True,
    ) -> list[Event]:
        """The stream of one execution (``[]`` when it has none).  A link of the hash chain
        that does not hold (an edited, inserted or deleted event) raises
        :class:`BrokenChainError` naming the first one — unless ``check_chain`` is false (an
        export of the evidence as it is)."""
        eid = parse_execution_id(execution_id)
        async with self._on(conn) as conn:
            rows = await conn.fetch(READ, eid, after_seq, until_seq or 2**31 - 1)
        return checked_events(eid, rows, check_chain=check_chain)

    async def chain_of(self, events: Sequence[Event]) -> list[str]:
        """The ``chain`` hash each event of a whole log (seq 1, 2, …) would get here."""
        if not events:
            return []
        rows = [event_to_row(event) for event in events]
        return [r["h"] for r in await self.pool.fetch(
            CHAIN_OF, rows[0][0], [r[1] for r in rows], [r[2] for r in rows],
            [r[3] for r in rows], [r[4] for r in rows], [r[5] for r in rows])]

    async def stored_chain(self, execution_id: str) -> dict[int, str | None]:
        """The stored ``chain`` hash of each event of a log, by seq."""
        eid = parse_execution_id(execution_id)
        return {r["seq"]: r["chain"] for r in await self.pool.fetch(CHAINS, eid)}

    async def read_existing(
        self, execution_id: str, *, until_seq: int | None = None, check_chain: bool = True,
    ) -> list[Event]:
        """Like :meth:`read`, but an execution with no events is not found."""
        events = await self.read(execution_id, until_seq=until_seq, check_chain=check_chain)
        if not events:
            raise ExecutionNotFoundError(execution_id)
        return events
