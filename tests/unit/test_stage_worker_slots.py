"""A node's stage-worker slots (no Ray): shared by the node's processes, never leaked by a
crashed one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from actors.runner.slots import NodeSlots
from tests.conftest import REPO


def test_a_node_holds_at_most_size_workers_across_runners(tmp_path: Path) -> None:
    one, other = NodeSlots(2, "node-a", tmp_path), NodeSlots(2, "node-a", tmp_path)
    first, second = one.acquire(), other.acquire()
    assert first is not None and second is not None
    assert {first.index, second.index} == {0, 1}
    assert one.acquire() is None and other.acquire() is None
    # Another node's slots are its own.
    elsewhere = NodeSlots(2, "node-b", tmp_path).acquire()
    assert elsewhere is not None
    assert (tmp_path / "wfdag-stage-slots-node-a").stat().st_mode & 0o777 == 0o700

    second.release()
    second.release()  # once only
    assert not second.held
    assert one.acquire() is None, "a runner that found none full looks again only later"
    again = NodeSlots(2, "node-a", tmp_path).acquire()
    assert again is not None and again.index == second.index


def test_no_slots_means_no_stage_workers(tmp_path: Path) -> None:
    assert NodeSlots(0, "node-a", tmp_path).acquire() is None
    assert not (tmp_path / "wfdag-stage-slots-node-a").exists()


def test_a_crashed_runner_gives_its_slot_back(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from actors.runner.slots import NodeSlots;"
         f"s = NodeSlots(1, 'node-a', Path({str(tmp_path)!r})).acquire();"
         "print('held' if s else 'none', flush=True); time.sleep(60)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        assert NodeSlots(1, "node-a", tmp_path).acquire() is None
        holder.kill()  # no release: the kernel drops the lock with the process
        holder.wait(10)
        deadline = time.monotonic() + 10
        slot = None
        while slot is None and time.monotonic() < deadline:
            slot = NodeSlots(1, "node-a", tmp_path).acquire()
            time.sleep(0.02)  # polling the condition, bounded by the deadline
        assert slot is not None and slot.held
    finally:
        holder.kill()
        holder.wait(10)


class _IdleWorker:
    """What StageWorkers' idle bookkeeping asks of a worker (no process behind it)."""

    def __init__(self) -> None:
        self.idle_since = 0.0
        self.closed_at: float | None = None

    def alive(self) -> bool:
        return self.closed_at is None

    def close(self) -> None:
        self.closed_at = time.monotonic()


async def _until(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.02)


async def test_a_runner_gives_back_a_forks_spare_workers_soon_and_keeps_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import structlog

    from actors.runner import workers

    monkeypatch.setattr(workers, "SPARE_IDLE_SECONDS", 0.2)
    pool = workers.StageWorkers(per_node=6, idle_seconds=1.5, log=structlog.get_logger())
    assert pool.keep_idle == 3
    fork = [_IdleWorker() for _ in range(4)]
    released = time.monotonic()
    for worker in fork:
        pool.release(worker)  # type: ignore[arg-type]
    assert fork[3].closed_at is not None, "beyond half the node's number: stopped at once"
    await _until(lambda: fork[0].closed_at is not None and fork[1].closed_at is not None, 1.0)
    assert fork[2].closed_at is None, "the most recently used one stays"
    assert pool.take() is fork[2]  # type: ignore[comparison-overlap]
    pool.release(fork[2])  # type: ignore[arg-type]
    await _until(lambda: fork[2].closed_at is not None, 3.0)
    assert fork[2].closed_at - released >= 1.5  # type: ignore[operator]
