"""Agents of the example workflow: plain functions ``agent(ctx) -> dict`` (JSON-serialisable).

They live next to ``driver.py`` and reach the Ray workers with the driver's code: ``ray job
submit --working-dir examples …`` ships this directory; ``python examples/driver.py`` ships
this module with ``runtime_env={"py_modules": [...]}``.
"""

from __future__ import annotations

import time
from typing import Any

from actors import StageContext


def _pause(ctx: StageContext) -> None:
    time.sleep(float(ctx.context.get("stage_seconds", 0)))


def collect_leads(ctx: StageContext) -> dict[str, Any]:
    _pause(ctx)
    leads = ctx.context.get("leads") or ["acme", "globex", "initech"]
    return {"leads": list(leads)}


def score_leads(ctx: StageContext) -> dict[str, Any]:
    _pause(ctx)
    leads = ctx.inputs["collect"]["leads"]
    return {"scores": {lead: (sum(map(ord, lead)) % 100) / 100 for lead in leads}}


def report(ctx: StageContext) -> dict[str, Any]:
    _pause(ctx)
    scores = ctx.inputs["score"]["scores"]
    best = max(scores, key=scores.get) if scores else None
    return {"best_lead": best, "count": len(scores), "idempotency_key": ctx.idempotency_key}
