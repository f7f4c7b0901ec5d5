"""The body of one stage attempt: a Ray task on any worker, or a runner's local thread.

Everything the agent raises is caught and classified here, where the exception object exists;
the result is an :class:`AttemptResult` of plain data, so a worker never ships an agent's
exception class to the runner.  Pure of Ray: a test calls :func:`run_stage_attempt` directly.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from actors.agents import REFERENCE_AGENTS, StageContext, resolve_callable
from actors.agents.artifacts import BUILTIN_HANDLERS, DATABASE_URL
from actors.runner.protocol import AttemptResult, AttemptSpec
from actors.runtime import check_payload_size
from definitions import AgentOutputError, PayloadTooLargeError, agent_path_refusal, classify_error

__all__ = [
    "agent_module",
    "coroutine_agent",
    "run_coroutine_attempt",
    "run_guarded_attempt",
    "run_local_attempt",
    "run_stage_attempt",
]


def _target(spec: AttemptSpec) -> Any:
    if spec.handler:  # a compensation
        return BUILTIN_HANDLERS.get(spec.handler) or resolve_callable(spec.handler)
    if spec.agent_type:
        return REFERENCE_AGENTS[spec.agent_type]
    if not spec.agent:
        raise AgentOutputError(f"stage {spec.stage_id!r} names no agent")
    return resolve_callable(spec.agent)


def _context(spec: AttemptSpec) -> StageContext:
    return StageContext(
        execution_id=spec.execution_id,
        workflow_id=spec.workflow_id,
        stage_id=spec.stage_id,
        attempt=spec.attempt,
        context=spec.context,
        inputs=spec.inputs,
        idempotency_key=spec.idempotency_key,
        stage_name=spec.stage_name,
        capabilities=spec.capabilities,
        output=spec.output,
    )


def _call_agent(spec: AttemptSpec) -> Any:
    agent = _target(spec)
    ctx = _context(spec)
    token = DATABASE_URL.set(spec.database_url)
    try:
        result = agent(ctx)
    finally:
        DATABASE_URL.reset(token)
    if inspect.isawaitable(result):
        awaitable = result

        async def _await() -> Any:
            return await awaitable

        result = asyncio.run(_await())
    return result


def _check_output(stage_id: str, result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise AgentOutputError(
            f"agent of stage {stage_id!r} returned {type(result).__name__}, not a JSON object "
            f"(dict)"
        )
    try:
        encoded = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AgentOutputError(
            f"agent of stage {stage_id!r} returned a dict that is not JSON-serialisable: {exc}"
        ) from None
    try:
        check_payload_size(f"output of stage {stage_id!r}", encoded)
    except PayloadTooLargeError as exc:
        raise AgentOutputError(str(exc)) from None
    return json.loads(encoded)  # type: ignore[no-any-return]


def _failed(started: float, exc: BaseException) -> AttemptResult:
    """A failed attempt: what its agent raised, classified."""
    return AttemptResult(ok=False, duration_ms=int((time.monotonic() - started) * 1000),
                         error=classify_error(exc).to_json(), pid=os.getpid())


def _ended(spec: AttemptSpec, started: float, result: Any) -> AttemptResult:
    """The attempt's result from what its agent returned (``AgentOutputError`` if not JSON)."""
    try:
        if result is None and spec.handler:
            result = {}  # a compensation handler may return nothing
        output = _check_output(spec.stage_id, result)
    except Exception as exc:
        return _failed(started, exc)
    return AttemptResult(ok=True, duration_ms=int((time.monotonic() - started) * 1000),
                         output=output, pid=os.getpid())


def run_stage_attempt(spec: AttemptSpec) -> AttemptResult:
    """Run the agent once: its output, or its error classified."""
    started = time.monotonic()
    try:
        result = _call_agent(spec)
    except Exception as exc:
        return _failed(started, exc)
    return _ended(spec, started, result)


def agent_module(spec: AttemptSpec) -> str | None:
    """The module the attempt's agent (or handler) comes from, when it may be imported — a
    runner imports it in a thread before :func:`coroutine_agent` looks at it on its loop (an
    import may take seconds) — else ``None`` (a reference agent, a built-in handler, a path
    the agent policy refuses: nothing to import)."""
    if spec.handler and spec.handler in BUILTIN_HANDLERS:
        return None
    path = spec.handler or (None if spec.agent_type else spec.agent)
    if not path or agent_path_refusal(path) is not None:
        return None
    return path.partition(":")[0]


def coroutine_agent(spec: AttemptSpec) -> Callable[[StageContext], Awaitable[Any]] | None:
    """The stage's agent (or compensation handler) when it is an ``async def`` that imports
    here — a local stage runs it on the runner's event loop — else ``None`` (a thread runs
    it, and reports an agent that does not import as the attempt's error)."""
    try:
        target = _target(spec)
    except Exception:
        return None
    return target if inspect.iscoroutinefunction(target) else None


async def run_coroutine_attempt(spec: AttemptSpec,
                                agent: Callable[[StageContext], Awaitable[Any]]) -> AttemptResult:
    """:func:`run_guarded_attempt` for an ``async def`` agent, awaited on this event loop.
    Whatever it raises fails the attempt, classified by name — ``CancelledError`` too (the
    runner cancels it at its timeout, or when the stage is cancelled: the attempt then ends
    as a task whose result nobody reads)."""
    started = time.monotonic()
    token = DATABASE_URL.set(spec.database_url)
    try:
        result = await agent(_context(spec))
    except BaseException as exc:
        return _failed(started, exc)
    finally:
        DATABASE_URL.reset(token)
    return _ended(spec, started, result)


def run_guarded_attempt(spec: AttemptSpec) -> AttemptResult:
    """:func:`run_stage_attempt` as stages run it, in a runner's thread or in a Ray task: an
    agent's ``SystemExit``, ``KeyboardInterrupt``, ``CancelledError`` or ``GeneratorExit``
    fails its attempt, classified by name, and never reaches the runner or the Ray worker
    that hosts it.  (wfdag stops a task by killing its worker, ``ray.cancel(force=True)``,
    which raises nothing in the task: catching these takes nothing from Ray.)"""
    started = time.monotonic()
    try:
        return run_stage_attempt(spec)
    except BaseException as exc:
        return _failed(started, exc)


#: The name local stages knew it by.
run_local_attempt = run_guarded_attempt
