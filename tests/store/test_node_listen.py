"""One LISTEN session per node (actors/runner/node_listen.py) on a real PostgreSQL, no Ray:
one runner of a node listens and passes every notification on; its death (a cancelled task,
a killed process) or the end of its database session elects or reconnects, and every runner
is told to look again (RESYNC) once someone listens."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from actors.logs import get_logger
from actors.runner.node_listen import RESYNC, NodeListener, listen_dir, listen_group
from events import connect_pool

REPO = Path(__file__).resolve().parent.parent.parent
DEADLINE = 20.0


class Member:
    """One runner's NodeListener, with what it heard."""

    def __init__(self, url: str, root: Path, channels: tuple[str, ...]) -> None:
        self.heard: list[tuple[str, str]] = []
        self.sessions: list[int] = []  # backend pids of the LISTEN sessions it opened
        self._url = url
        self.listener = NodeListener(group=listen_group("testnode" + "0" * 48, url),
                                     channels=channels,
                                     connect=self._connect, on_notify=self._on_notify,
                                     log=get_logger(test="node_listen"), root=root)
        self.task: asyncio.Task[None] = asyncio.ensure_future(self.listener.run())

    async def _connect(self) -> tuple[Any, Callable[[], object]]:
        pool = await connect_pool(self._url, min_size=1, max_size=1)
        conn = await pool.acquire()
        self.sessions.append(conn.get_server_pid())
        return conn, pool.terminate

    def _on_notify(self, channel: str, payload: str) -> None:
        self.heard.append((channel, payload))

    def count(self, item: tuple[str, str]) -> int:
        return self.heard.count(item)


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE}s: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def channels() -> tuple[str, ...]:
    tag = uuid.uuid4().hex[:8]
    return (f"wfdag_test_a_{tag}", f"wfdag_test_b_{tag}")


@pytest.fixture
async def notifier(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


async def _stop(members: list[Member]) -> None:
    for m in members:
        m.task.cancel()
    await asyncio.gather(*(m.task for m in members), return_exceptions=True)


async def test_one_listens_and_every_runner_hears(
    database_url: str, tmp_path: Path, channels: tuple[str, ...],
    notifier: asyncpg.Connection,
) -> None:
    members = [Member(database_url, tmp_path, channels) for _ in range(3)]
    try:
        await until(lambda: all(m.count((RESYNC, "")) for m in members), "a first RESYNC")
        assert sum(m.listener.leading for m in members) == 1
        assert sum(len(m.sessions) for m in members) == 1  # one LISTEN session for the node
        for i in range(20):
            await notifier.execute("SELECT pg_notify($1, $2)", channels[i % 2], f"p{i}")
        await until(lambda: all(len(m.heard) >= 21 for m in members), "20 notifications")
        for m in members:
            assert [h for h in m.heard if h[0] != RESYNC] == [
                (channels[i % 2], f"p{i}") for i in range(20)]
        group = listen_group("testnode" + "0" * 48, database_url)
        assert oct(listen_dir(group, tmp_path).stat().st_mode & 0o777) == "0o700"
    finally:
        await _stop(members)


async def test_a_new_leader_when_the_leader_stops_and_all_look_again(
    database_url: str, tmp_path: Path, channels: tuple[str, ...],
    notifier: asyncpg.Connection,
) -> None:
    members = [Member(database_url, tmp_path, channels) for _ in range(3)]
    try:
        await until(lambda: all(m.count((RESYNC, "")) for m in members), "a first RESYNC")
        leader = next(m for m in members if m.listener.leading)
        leader.task.cancel()
        await asyncio.gather(leader.task, return_exceptions=True)
        rest = [m for m in members if m is not leader]
        await until(lambda: any(m.listener.leading for m in rest), "a new leader")
        await until(lambda: all(m.count((RESYNC, "")) >= 2 for m in rest),
                    "a RESYNC from the new leader")
        await notifier.execute("SELECT pg_notify($1, 'after')", channels[0])
        await until(lambda: all(m.count((channels[0], "after")) == 1 for m in rest),
                    "a notification through the new leader")
    finally:
        await _stop(members)


async def test_the_leader_listens_again_after_its_session_ends(
    database_url: str, tmp_path: Path, channels: tuple[str, ...],
    notifier: asyncpg.Connection,
) -> None:
    members = [Member(database_url, tmp_path, channels) for _ in range(2)]
    try:
        await until(lambda: all(m.count((RESYNC, "")) for m in members), "a first RESYNC")
        leader = next(m for m in members if m.listener.leading)
        await notifier.execute("SELECT pg_terminate_backend($1)", leader.sessions[-1])
        await until(lambda: all(m.count((RESYNC, "")) >= 2 for m in members),
                    "a RESYNC after the new session")
        assert len(leader.sessions) == 2 and leader.listener.leading
        await notifier.execute("SELECT pg_notify($1, 'again')", channels[1])
        await until(lambda: all(m.count((channels[1], "again")) == 1 for m in members),
                    "a notification on the new session")
    finally:
        await _stop(members)


async def test_a_runner_that_reads_nothing_is_hung_up_on(
    database_url: str, tmp_path: Path, channels: tuple[str, ...],
    notifier: asyncpg.Connection,
) -> None:
    members = [Member(database_url, tmp_path, channels) for _ in range(2)]
    try:
        await until(lambda: all(m.count((RESYNC, "")) for m in members), "a first RESYNC")
        group = listen_group("testnode" + "0" * 48, database_url)
        stuck_reader, stuck = await asyncio.open_unix_connection(
            str(listen_dir(group, tmp_path) / "leader.sock"))
        await notifier.execute(  # ~1.6 MB, distinct (a transaction folds duplicates)
            "SELECT pg_notify($1, g::text || repeat('x', 7900)) FROM generate_series(1, 200) g",
            channels[0])
        await until(lambda: all(len(m.heard) >= 201 for m in members), "all 200 heard")
        unread = await asyncio.wait_for(stuck_reader.read(), DEADLINE)  # until hung up on
        assert 0 < len(unread) < 1_700_000
        stuck.close()
    finally:
        await _stop(members)


def test_groups_by_node_and_database_and_short_socket_paths(tmp_path: Path) -> None:
    node = "ab" * 28
    assert listen_group(node, "postgresql://a/x") != listen_group(node, "postgresql://a/y")
    assert listen_group(node, "postgresql://a/x") != listen_group("cd" * 28,
                                                                  "postgresql://a/x")
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    path = listen_dir(listen_group(node, "postgresql://a/x"), deep)
    assert path.parent == Path("/tmp") and len(str(path / "leader.sock")) <= 100


async def test_a_killed_leader_process_gives_way(
    database_url: str, tmp_path: Path, channels: tuple[str, ...],
    notifier: asyncpg.Connection,
) -> None:
    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.store.test_node_listen import Member
        from pathlib import Path

        async def main():
            m = Member({database_url!r}, Path({str(tmp_path)!r}), {channels!r})
            while not m.listener.leading or not m.heard:
                await asyncio.sleep(0.02)
            print("leading", flush=True)
            await asyncio.sleep(600)

        asyncio.run(main())
    """)
    leader = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    members: list[Member] = []
    try:
        assert leader.stdout is not None
        line = await asyncio.wait_for(leader.stdout.readline(), DEADLINE)
        assert line.strip() == b"leading"
        members = [Member(database_url, tmp_path, channels) for _ in range(2)]
        await until(lambda: all(m.count((RESYNC, "")) for m in members), "joined the leader")
        assert not any(m.listener.leading for m in members)
        os.kill(leader.pid, signal.SIGKILL)
        await asyncio.wait_for(leader.wait(), DEADLINE)
        await until(lambda: any(m.listener.leading for m in members), "a new leader")
        await until(lambda: all(m.count((RESYNC, "")) >= 2 for m in members), "a new RESYNC")
        await notifier.execute("SELECT pg_notify($1, 'killed')", channels[0])
        await until(lambda: all(m.count((channels[0], "killed")) == 1 for m in members),
                    "a notification after the kill")
    finally:
        if leader.returncode is None:
            leader.kill()
            await asyncio.wait_for(leader.wait(), DEADLINE)
        await _stop(members)
