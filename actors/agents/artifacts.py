"""Artifacts of the reference agents, and the built-in compensation handlers that undo them.

The stage task sets :data:`DATABASE_URL` before it calls an agent or handler, so reference
agents write ``workflow_artifacts`` rows in the execution's database.  Undo follows the seed:
opportunity, realization, expansion and integrity artifacts are deleted; for targets, KPI
targets are deleted, value commits cancelled and the target reverted to draft.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from actors.agents.context import StageContext
from definitions import BUILTIN_COMPENSATION_HANDLERS
from events.artifacts import Artifact, UndoAction, record_artifacts_sync, undo_artifacts_sync

__all__ = ["BUILTIN_HANDLERS", "DATABASE_URL", "UNDO_PLANS", "persist"]

DATABASE_URL: ContextVar[str | None] = ContextVar("wfdag_database_url", default=None)

UNDO_PLANS: dict[str, dict[str, UndoAction]] = {
    "opportunity": {"*": "delete"},
    "target": {"kpi_target": "delete", "value_commit": "cancel", "target": "draft"},
    "realization": {"*": "delete"},
    "expansion": {"*": "delete"},
    "integrity": {"*": "delete"},
}


def persist(ctx: StageContext, artifacts: list[Artifact]) -> None:
    """Record a stage's artifacts (a no-op when the agent runs outside a stage task)."""
    url = DATABASE_URL.get()
    if url is None or not artifacts:
        return
    record_artifacts_sync(
        url, execution_id=ctx.execution_id, stage_id=ctx.stage_id,
        idempotency_key=ctx.idempotency_key, artifacts=artifacts,
    )


def _handler(domain: str) -> Callable[[StageContext], dict[str, Any]]:
    plan = UNDO_PLANS[domain]

    def compensate(ctx: StageContext) -> dict[str, Any]:
        url = DATABASE_URL.get()
        if url is None:
            return {"undone": {}}
        touched = undo_artifacts_sync(
            url, execution_id=ctx.execution_id, stage_id=ctx.stage_id, plan=plan
        )
        return {"undone": touched, "domain": domain}

    compensate.__name__ = f"compensate_{domain}"
    return compensate


_BY_DOMAIN = {domain: _handler(domain) for domain in UNDO_PLANS}
BUILTIN_HANDLERS: dict[str, Callable[[StageContext], dict[str, Any]]] = {
    name: _BY_DOMAIN[domain] for name, domain in BUILTIN_COMPENSATION_HANDLERS.items()
}
