"""General-purpose agents: ``actors.agents.builtin:noop`` (and ``noop_async``, its ``async def``
twin) and ``actors.agents.builtin:sleep``.

Useful as placeholders while a workflow's shape is designed, and for benchmarks.
"""

from __future__ import annotations

import time
from typing import Any

from actors.agents.context import StageContext

__all__ = ["noop", "noop_async", "sleep"]


def noop(ctx: StageContext) -> dict[str, Any]:
    """Does nothing; returns ``{}``."""
    return {}


async def noop_async(ctx: StageContext) -> dict[str, Any]:
    """Does nothing, as an ``async def`` (a local stage awaits it on its runner's loop);
    returns ``{}``."""
    return {}


def sleep(ctx: StageContext) -> dict[str, Any]:
    """Sleeps ``ctx.context["stage_seconds"]`` (default 0.2 s), like a slow I/O-bound agent."""
    seconds = float(ctx.context.get("stage_seconds", 0.2))
    time.sleep(seconds)
    return {"slept_s": seconds}
