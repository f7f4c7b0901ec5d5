"""The body of one stage attempt, run as a Ray task on any worker.

Everything the agent raises is caught and classified here, where the exception object exists;
the result is a plain dict, so a worker never ships an agent's exception class to the actor.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
from typing import Any

from actors.agents import REFERENCE_AGENTS, StageContext, resolve_callable
from actors.agents.artifacts import BUILTIN_HANDLERS, DATABASE_URL
from actors.runtime import check_payload_size
from definitions import AgentOutputError, PayloadTooLargeError, classify_error

__all__ = ["run_stage_attempt"]


def _target(spec: dict[str, Any]) -> Any:
    handler = spec.get("handler")
    if handler:  # a compensation
        return BUILTIN_HANDLERS.get(handler) or resolve_callable(handler)
    agent_type = spec.get("agent_type")
    return REFERENCE_AGENTS[agent_type] if agent_type else resolve_callable(spec["agent"])


def _call_agent(spec: dict[str, Any]) -> Any:
    agent = _target(spec)
    ctx = StageContext(
        execution_id=spec["execution_id"],
        workflow_id=spec["workflow_id"],
        stage_id=spec["stage_id"],
        attempt=spec["attempt"],
        context=spec["context"],
        inputs=spec["inputs"],
        idempotency_key=spec["idempotency_key"],
        stage_name=spec.get("stage_name", ""),
        capabilities=tuple(spec.get("capabilities", ())),
        output=spec.get("output"),
    )
    token = DATABASE_URL.set(spec.get("database_url"))
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


def run_stage_attempt(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the agent once; ``{"ok": True, "output": …}`` or ``{"ok": False, "error": …}``."""
    started = time.monotonic()
    try:
        result = _call_agent(spec)
        if result is None and spec.get("handler"):
            result = {}  # a compensation handler may return nothing
        output = _check_output(spec["stage_id"], result)
        outcome: dict[str, Any] = {"ok": True, "output": output}
    except Exception as exc:
        outcome = {"ok": False, "error": classify_error(exc).to_json()}
    outcome["duration_ms"] = int((time.monotonic() - started) * 1000)
    outcome["pid"] = os.getpid()
    return outcome
