"""One LISTEN session per node for its runners.

PostgreSQL (18 here) signals every session of the database that listens on any channel at
each NOTIFY, whatever the channel — and every append notifies (``wfdag_events``).  Runners
used to listen each on its lease session (queue, requests, breakers): N runners, N process
wake-ups in the database per append, which took the append from 0.87 to 0.65 of its floor
with 16 listeners (issue 18).  Now the runners of a node elect one of them — an exclusive
``flock`` on ``<tmp>/wfdag-listen-<node>/leader``, which the kernel drops when its process
dies — to listen for all; it passes each notification on over a Unix stream socket in that
directory (0700), one JSON line ``[channel, payload]`` per notification.  Runners of one node
that serve different databases (a test session's pools, say) form a group each.

Whenever what a runner heard may have a gap — its connection to the leader is new, or the
leader's LISTEN session is (a new leader, a database restart) — it is sent :data:`RESYNC`
once the leader listens, and looks again at everything (the queue, its drives' requests, the
breakers).  A leader whose session stops answering (a cut connection says nothing) finds out
within :data:`KEEPALIVE_SECONDS` and listens anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from events.database import ping

__all__ = ["KEEPALIVE_SECONDS", "RESYNC", "NodeListener", "listen_dir", "listen_group"]

#: The channel of "look again at everything: notifications may have been missed".
RESYNC = "*"
#: The leader checks its LISTEN session this often.
KEEPALIVE_SECONDS = 5.0
#: A runner that has this much unread is hung up on (it connects again, and looks again).
MAX_UNREAD_BYTES = 1 << 20
#: A follower that finds no leader tries again after this (the leader binds at once).
RETRY_SECONDS = 0.1

Handler = Callable[[str, str], None]


def listen_dir(group: str, root: Path | None = None) -> Path:
    """The group's directory: under ``root`` (the temp dir), or /tmp when a socket's path
    there would be too long (at most 107 bytes)."""
    path = (root or Path(tempfile.gettempdir())) / f"wfdag-listen-{group}"
    if len(str(path / "leader.sock").encode()) > 100:
        path = Path("/tmp") / path.name
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def listen_group(node_id: str, database_url: str) -> str:
    """The runners of ``node_id`` that serve ``database_url``."""
    return f"{node_id[:16]}-{hashlib.sha256(database_url.encode()).hexdigest()[:8]}"


class NodeListener:
    """This runner's share of the node's LISTEN session: :meth:`run` until cancelled."""

    def __init__(self, *, group: str, channels: Sequence[str],
                 connect: Callable[[], Awaitable[tuple[Any, Callable[[], object]]]],
                 on_notify: Handler, log: Any,
                 root: Path | None = None) -> None:
        """``connect()`` gives a database connection and what ends it (called after);
        ``on_notify(channel, payload)`` is called on this loop for each notification, and
        with :data:`RESYNC` when there may have been a gap.  ``group``: the node and the
        database (short: it names a directory)."""
        self._dir = listen_dir(group, root)
        self._channels = tuple(channels)
        self._connect = connect
        self._on_notify = on_notify
        self._log = log
        self._clients: set[asyncio.StreamWriter] = set()
        self._listening = False
        self.leading = False

    async def run(self) -> None:
        lock = os.open(self._dir / "leader", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    await self._follow()
                    await asyncio.sleep(RETRY_SECONDS)
                else:
                    await self._lead()  # until cancelled: the process ends, and the lock
        finally:
            os.close(lock)  # the lock, if held, goes with it

    # --- follower ----------------------------------------------------------------------

    async def _follow(self) -> None:
        """Hear the leader until its connection ends (it died: elect again)."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(self._dir / "leader.sock"))
        except OSError:
            return  # no leader yet (or its socket is stale): elect again
        try:
            while line := await reader.readline():
                channel, payload = json.loads(line)
                self._on_notify(channel, payload)
        except (OSError, ValueError):
            pass
        finally:
            writer.close()

    # --- leader ------------------------------------------------------------------------

    async def _lead(self) -> None:
        self.leading = True
        path = self._dir / "leader.sock"
        path.unlink(missing_ok=True)  # a dead leader's
        server = await asyncio.start_unix_server(self._serve_client, str(path))
        self._log.info("node_listen.leading", channels=list(self._channels))
        try:
            await self._listen_forever()
        finally:
            self._listening = False
            server.close()
            for writer in list(self._clients):
                writer.close()
            self.leading = False

    async def _serve_client(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        if self._listening:
            self._send(writer, RESYNC, "")  # it may have missed some before it connected
        try:
            await reader.read()  # nothing is sent this way: returns when it hangs up
        except OSError:
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _listen_forever(self) -> None:
        backoff = 0.5
        while True:
            end: Callable[[], object] | None = None
            try:
                conn, end = await self._connect()
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, ev=lost: ev.set())
                for channel in self._channels:
                    await conn.add_listener(channel, self._heard)
                self._listening = True
                self._broadcast(RESYNC, "")  # what was notified before now was not heard
                backoff = 0.5
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), KEEPALIVE_SECONDS)
                    if not lost.is_set():
                        await ping(conn, KEEPALIVE_SECONDS)
                raise ConnectionError("the LISTEN session ended")
            except Exception as exc:
                self._log.warning("node_listen.reconnecting", retry_in_s=backoff,
                                  error=f"{type(exc).__name__}: {exc}"[:300])
            finally:
                self._listening = False
                if end is not None:
                    with contextlib.suppress(Exception):
                        end()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _heard(self, _conn: object, _pid: object, channel: str, payload: object) -> None:
        self._broadcast(channel, str(payload))

    def _broadcast(self, channel: str, payload: str) -> None:
        for writer in list(self._clients):
            self._send(writer, channel, payload)
        self._on_notify(channel, payload)

    def _send(self, writer: asyncio.StreamWriter, channel: str, payload: str) -> None:
        if writer.is_closing():
            self._clients.discard(writer)
            return
        if writer.transport.get_write_buffer_size() > MAX_UNREAD_BYTES:
            # A runner that reads nothing (stopped, stuck): hang up rather than hold it all;
            # it connects again and is told to look again at everything.
            self._log.warning("node_listen.slow_runner_dropped", unread_bytes=MAX_UNREAD_BYTES)
            self._clients.discard(writer)
            writer.transport.abort()
            return
        writer.write(json.dumps([channel, payload]).encode() + b"\n")
