"""Agents of the benchmark's own workloads (importable by the local Ray's workers: the
driver's directory is on their path)."""

from __future__ import annotations

from typing import Any

from actors import StageContext


def blob(ctx: StageContext) -> dict[str, Any]:
    """An output of ``ctx.context["bytes"]`` bytes of text (the large-outputs workload)."""
    return {"blob": "x" * int(ctx.context.get("bytes", 1000)), "stage": ctx.stage_id}


def stamp(ctx: StageContext) -> dict[str, Any]:
    """The wall-clock time at which this agent started (the approve-to-next-stage workload)."""
    import time

    return {"t": time.time(), "stage": ctx.stage_id}
