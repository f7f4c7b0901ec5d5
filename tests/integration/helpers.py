"""Helpers for integration tests: registering small workflows, reading logs, waiting."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from actors import get_execution_events, register_workflow
from definitions import WorkflowDAG
from events import Event


def stage(stage_id: str, agent: str, *, timeout: float = 30, retry: Any = "NONE",
          **extra: Any) -> dict[str, Any]:
    return {"id": stage_id, "name": stage_id.replace("_", " ").title(),
            "agent": f"tests.agents:{agent}", "timeout_seconds": timeout,
            "retry_config": retry, **extra}


async def register_chain(prefix: str, stages: list[dict[str, Any]],
                         transitions: list[dict[str, Any]] | None = None,
                         final: list[str] | None = None) -> WorkflowDAG:
    ids = [s["id"] for s in stages]
    dag = WorkflowDAG.model_validate({
        "id": f"{prefix}-{uuid.uuid4().hex[:8]}", "name": prefix, "version": 1,
        "initial_stage": ids[0], "final_stages": final or [ids[-1]], "stages": stages,
        "transitions": transitions if transitions is not None else [
            {"from_stage": a, "to_stage": b} for a, b in itertools.pairwise(ids)],
    })
    return await register_workflow(dag)


async def events_of(execution_id: str) -> list[Event]:
    return await get_execution_events(execution_id)


def types_of(events: list[Event]) -> list[str]:
    return [e.type for e in events]


def process_alive(pid: int) -> bool:
    """True while process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll a cheap local condition (a file, an actor lookup) until true, or fail naming it;
    the event loop keeps running meanwhile (the suite shares one loop)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def eventually(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float, what: str
) -> None:
    """Await an async condition until true, or fail naming it."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def assert_gapless(events: list[Event]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "workflow_initiated"
