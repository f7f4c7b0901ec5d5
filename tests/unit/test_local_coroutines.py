"""The dispatcher's coroutine agents (local stages with an ``async def`` agent), on an event
loop of the test's own: no Ray session is needed for a local attempt.  A timeout cancels the
agent and records the timeout; a stop (the runner fenced, or its lease lost) cancels it and
records a retryable stop — never what the cancelled agent returned; one that will not end is
abandoned like a thread."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from actors.logs import get_logger
from actors.runner.dispatch import Dispatcher
from actors.runner.protocol import AttemptSpec
from actors.runner.workers import StageWorkers
from definitions import WorkflowStage


def _dispatcher() -> Dispatcher:
    log = get_logger()
    return Dispatcher(2, log, StageWorkers(per_node=0, idle_seconds=1.0, log=log))


def _stage(agent: str, timeout: float) -> tuple[WorkflowStage, AttemptSpec]:
    stage = WorkflowStage.model_validate({
        "id": "s", "name": "S", "agent": f"tests.agents:{agent}", "timeout_seconds": timeout,
        "retry_config": "NONE", "executor": "local"})
    return stage, AttemptSpec(execution_id="e", workflow_id="w", stage_id="s", stage_name="S",
                              attempt=1, context={}, inputs={}, idempotency_key="e:s",
                              agent=f"tests.agents:{agent}")


async def _started(path: Path) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not await asyncio.to_thread(path.exists):
        assert asyncio.get_running_loop().time() < deadline, f"{path.name} never appeared"
        await asyncio.sleep(0.01)


async def test_a_coroutine_agent_runs_on_the_loop_and_is_cancelled_at_its_timeout(
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    dispatcher = _dispatcher()
    stage, spec = _stage("async_hung", timeout=0.3)
    result = await dispatcher.run(
        ("run", "s"), "w", stage, replace(spec, context={"dir": str(tmp_path)}), None)
    assert not result.ok and result.error is not None
    assert result.error["type"] == "StageTimeoutError"
    assert (tmp_path / "cancelled").exists() and not (tmp_path / "finished").exists()
    assert not dispatcher.abandoned_running() and not dispatcher.local_still_running()


async def test_a_stopped_coroutine_agent_is_a_retryable_stop_not_its_own_result(
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    dispatcher = _dispatcher()
    stage, spec = _stage("async_hung", timeout=30)
    running = asyncio.ensure_future(dispatcher.run(
        ("run", "s"), "w", stage, replace(spec, context={"dir": str(tmp_path)}), None))
    await _started(tmp_path / "hung.pid")
    dispatcher.stop_tasks()  # what a runner that fenced itself does
    await dispatcher.settle_local()
    assert not dispatcher.local_still_running()  # it ended on its cancellation
    result = await asyncio.wait_for(running, 10)
    assert not result.ok and result.error is not None
    # Not the CancelledError the agent ended with: the attempt was stopped under it.
    assert result.error["type"] == "StageStopped" and result.error["retryable"] is True


async def test_a_coroutine_agent_that_ignores_its_cancellation_is_abandoned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dataclasses import replace

    from actors.runner import dispatch

    monkeypatch.setattr(dispatch, "COROUTINE_GRACE_SECONDS", 0.2)
    dispatcher = _dispatcher()
    stage, spec = _stage("async_stubborn", timeout=0.3)
    started = asyncio.get_running_loop().time()
    result: Any = await dispatcher.run(("run", "s"), "w", stage, replace(
        spec, context={"dir": str(tmp_path), "seconds": 1.5}), None)
    assert result.error is not None and result.error["type"] == "StageTimeoutError"
    # It was given its grace to end, and did not: a runner would now end its process.
    assert asyncio.get_running_loop().time() - started >= 0.5
    assert dispatcher.abandoned_running()
    deadline = asyncio.get_running_loop().time() + 10
    while dispatcher.abandoned_running():  # it ends on its own (a runner's process would not wait)
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert (tmp_path / "finished").exists()


async def test_a_slow_agent_module_is_imported_off_the_loop_once(tmp_path: Path) -> None:
    """Two attempts of an ``async def`` agent whose module takes 0.6 s to import: the loop
    keeps turning meanwhile (the import runs in a thread, once, both attempts waiting for it),
    and both then run on the loop."""
    import sys
    from dataclasses import replace

    sys.modules.pop("tests.slow_import_agents", None)
    dispatcher = _dispatcher()
    stage, spec = _stage("noop", timeout=30)
    spec = replace(spec, agent="tests.slow_import_agents:agent")
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def tick() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            gaps.append(loop.time() - last)
            last = loop.time()

    ticking = asyncio.ensure_future(tick())
    try:
        results = await asyncio.gather(dispatcher.run(("run", "a"), "w", stage, spec, None),
                                       dispatcher.run(("run", "b"), "w", stage, spec, None))
    finally:
        ticking.cancel()
    assert all(r.ok for r in results), results
    # Both ran on the loop (no thread of the pool), after one import.
    assert all(not r.output["thread"].startswith("wfdag-local") for r in results)  # type: ignore[index]
    assert max(gaps) < 0.3, max(gaps)  # the loop never stalled for the import's 0.6 s
