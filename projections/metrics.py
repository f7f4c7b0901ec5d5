"""The metrics read model: the seed's "Key Metrics", kept by the projection runner.

Per execution (``metrics_executions``) and per stage of an execution (``metrics_stages``), as
pure functions of the events; :func:`workflow_metrics` aggregates them.

* ``total`` executions; ``completed``, ``failed``, ``rolled_back``, ``cancelled`` by current
  status; ``success_rate`` = completed / (completed + failed + rolled_back), ``None`` (unknown)
  while none has ended (a cancelled execution is an operator's decision, not an outcome: it
  is left out).
* ``avg_duration_ms`` / ``p95_duration_ms``: from ``workflow_initiated`` to the execution's first
  end (completed, failed or rolled back), over the executions that ended.
* ``compensations``: stages compensated (``compensation_completed``); ``breaker_opens``:
  openings of the workflow's circuit breakers, once each (``circuit_breaker_transitions``,
  written by the registry that opened it — however many attempts failed at once).
* per stage: ``runs`` (executions in which it started), ``avg_duration_ms`` / ``p95_duration_ms``
  (from ``stage_started`` to ``stage_completed``, retries and backoff included, over completed
  runs), ``retries`` (attempts beyond the first), ``failures`` (runs that ended ``stage_failed``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from events import EventRow
from events.database import DBConnection, DBReader

__all__ = ["MetricsProjection", "apply_metrics", "workflow_metrics"]

_TERMINAL = {"workflow_completed": "completed", "workflow_failed": "failed",
             "workflow_rolled_back": "rolled_back", "workflow_cancelled": "cancelled"}

EXEC_COLUMNS = ("execution_id", "workflow_id", "status", "started_at", "ended_at",
                "duration_ms", "compensations", "breaker_opens", "organization_id")
STAGE_COLUMNS = ("execution_id", "stage_id", "started_at", "attempts", "completed_at",
                 "duration_ms", "failed")


def _org(context: Any) -> str | None:
    org = context.get("organizationId") if isinstance(context, dict) else None
    return org if isinstance(org, str) and org else None


def _ms(delta_seconds: float) -> int:
    return max(0, int(delta_seconds * 1000))


def apply_metrics(
    executions: dict[str, dict[str, Any]],
    stages: dict[tuple[str, str], dict[str, Any]],
    events: Iterable[EventRow],
) -> tuple[set[str], set[tuple[str, str]]]:
    """Apply events to the rows (updated in place); returns the keys of the rows touched."""
    touched_exec: set[str] = set()
    touched_stage: set[tuple[str, str]] = set()
    for ev in events:
        eid, kind, data = ev.execution_id, ev.type, ev.data
        if kind == "workflow_initiated":
            executions[eid] = {"execution_id": eid, "workflow_id": data["workflow_id"],
                               "status": "initiated", "started_at": ev.at, "ended_at": None,
                               "duration_ms": None, "compensations": 0, "breaker_opens": 0,
                               "organization_id": _org(data.get("context"))}
            touched_exec.add(eid)
            continue
        row = executions.get(eid)
        if row is None:
            continue  # its start is not in this read model (a partial import): ignore
        touched_exec.add(eid)
        if kind in _TERMINAL:
            row["status"] = _TERMINAL[kind]
            if row["ended_at"] is None:
                row["ended_at"] = ev.at
                row["duration_ms"] = _ms((ev.at - row["started_at"]).total_seconds())
        elif kind in ("rollback_requested", "rollback_started"):
            row["status"] = "compensating"
        elif kind == "stage_started":
            row["status"] = "in_progress"
        elif kind == "compensation_completed":
            row["compensations"] += 1
        if ev.stage_id is None or kind not in (
            "stage_started", "stage_attempt", "stage_completed", "stage_failed"
        ):
            continue
        key = (eid, ev.stage_id)
        if kind == "stage_started":
            stages[key] = {"execution_id": eid, "stage_id": ev.stage_id, "started_at": ev.at,
                           "attempts": 0, "completed_at": None, "duration_ms": None,
                           "failed": False}
        stage = stages.get(key)
        if stage is None:
            continue
        touched_stage.add(key)
        if kind == "stage_attempt":
            stage["attempts"] += 1
            breaker = data.get("breaker") or {}
            if breaker.get("transition") == "open":
                row["breaker_opens"] += 1
        elif kind == "stage_completed":
            stage["completed_at"] = ev.at
            stage["duration_ms"] = _ms((ev.at - stage["started_at"]).total_seconds())
        elif kind == "stage_failed":
            stage["failed"] = True
    return touched_exec, touched_stage


def _upsert(table: str, columns: tuple[str, ...], keys: tuple[str, ...]) -> str:
    casts = {"execution_id": "::uuid"}
    values = ", ".join(f"${i}{casts.get(c, '')}" for i, c in enumerate(columns, start=1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in keys)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}")


_UPSERT_EXEC = _upsert("metrics_executions", EXEC_COLUMNS, ("execution_id",))
_UPSERT_STAGE = _upsert("metrics_stages", STAGE_COLUMNS, ("execution_id", "stage_id"))


class MetricsProjection:
    """A projection for :class:`projections.runner.ProjectionRunner`."""

    name: str = "metrics"
    tables: tuple[str, ...] = ("metrics_executions", "metrics_stages")
    #: Of these event types, the keys of the data :func:`apply_metrics` reads (see
    #: ``projections.runner.Projection.reads``).
    reads: dict[str, frozenset[str]] = {
        "workflow_initiated": frozenset({"workflow_id", "context"}),
        "stage_started": frozenset(),
        "stage_attempt": frozenset({"breaker"}),
        "workflow_completed": frozenset(),
    }

    async def apply(self, conn: DBConnection, events: Sequence[EventRow]) -> None:
        ids = sorted({ev.execution_id for ev in events})
        executions: dict[str, dict[str, Any]] = {}
        stages: dict[tuple[str, str], dict[str, Any]] = {}
        for r in await conn.fetch(
            f"SELECT {', '.join(EXEC_COLUMNS)} FROM metrics_executions "
            f"WHERE execution_id = ANY($1::uuid[])", ids):
            executions[str(r["execution_id"])] = {**dict(r), "execution_id": str(r["execution_id"])}
        for r in await conn.fetch(
            f"SELECT {', '.join(STAGE_COLUMNS)} FROM metrics_stages "
            f"WHERE execution_id = ANY($1::uuid[])", ids):
            eid = str(r["execution_id"])
            stages[(eid, r["stage_id"])] = {**dict(r), "execution_id": eid}
        touched_exec, touched_stage = apply_metrics(executions, stages, events)
        await self.write(conn, [executions[k] for k in sorted(touched_exec) if k in executions],
                         [stages[k] for k in sorted(touched_stage)])

    async def write(self, conn: DBConnection, executions: Sequence[dict[str, Any]],
                    stages: Sequence[dict[str, Any]]) -> None:
        if executions:
            await conn.executemany(
                _UPSERT_EXEC, [tuple(r[c] for c in EXEC_COLUMNS) for r in executions])
        if stages:
            await conn.executemany(
                _UPSERT_STAGE, [tuple(r[c] for c in STAGE_COLUMNS) for r in stages])

    async def rebuild(self, conn: DBConnection, events: Iterable[EventRow]) -> None:
        executions: dict[str, dict[str, Any]] = {}
        stages: dict[tuple[str, str], dict[str, Any]] = {}
        apply_metrics(executions, stages, events)
        if executions:
            await conn.copy_records_to_table(
                "metrics_executions", columns=list(EXEC_COLUMNS),
                records=[tuple(r[c] for c in EXEC_COLUMNS) for r in executions.values()])
        if stages:
            await conn.copy_records_to_table(
                "metrics_stages", columns=list(STAGE_COLUMNS),
                records=[tuple(r[c] for c in STAGE_COLUMNS) for r in stages.values()])


def _num(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


async def workflow_metrics(conn: DBReader, workflow_id: str,
                           organization_id: str | None = None) -> dict[str, Any]:
    """The JSON-able metrics of one workflow (see the module docstring): of every execution,
    or with ``organization_id`` of that organization's only (and its own breakers')."""
    row = await conn.fetchrow(
        "SELECT count(*) AS total, "
        "count(*) FILTER (WHERE status = 'completed') AS completed, "
        "count(*) FILTER (WHERE status = 'failed') AS failed, "
        "count(*) FILTER (WHERE status = 'rolled_back') AS rolled_back, "
        "count(*) FILTER (WHERE status = 'cancelled') AS cancelled, "
        "avg(duration_ms) AS avg_ms, "
        "percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms, "
        "COALESCE(sum(compensations), 0) AS compensations, "
        "COALESCE(sum(breaker_opens), 0) AS breaker_opens "
        "FROM metrics_executions WHERE workflow_id = $1 "
        "AND ($2::text IS NULL OR organization_id = $2)", workflow_id, organization_id)
    assert row is not None
    ended = row["completed"] + row["failed"] + row["rolled_back"]
    stage_rows = await conn.fetch(
        "SELECT s.stage_id, count(*) AS runs, avg(s.duration_ms) AS avg_ms, "
        "percentile_cont(0.95) WITHIN GROUP (ORDER BY s.duration_ms) AS p95_ms, "
        "COALESCE(sum(GREATEST(s.attempts - 1, 0)), 0) AS retries, "
        "count(*) FILTER (WHERE s.failed) AS failures "
        "FROM metrics_stages s JOIN metrics_executions e USING (execution_id) "
        "WHERE e.workflow_id = $1 AND ($2::text IS NULL OR e.organization_id = $2) "
        "GROUP BY s.stage_id ORDER BY min(s.started_at)", workflow_id, organization_id)
    return {
        "workflow_id": workflow_id,
        "organization_id": organization_id,
        "total": row["total"],
        "completed": row["completed"],
        "failed": row["failed"],
        "rolled_back": row["rolled_back"],
        "cancelled": row["cancelled"],
        "success_rate": round(row["completed"] / ended, 4) if ended else None,
        "avg_duration_ms": _num(row["avg_ms"]),
        "p95_duration_ms": _num(row["p95_ms"]),
        "compensations": int(row["compensations"]),
        # A breaker's owner is the workflow id, or <workflow>@<organization> (its own).
        "breaker_opens": int(await conn.fetchval(
            "SELECT count(*) FROM circuit_breaker_transitions WHERE to_state = 'open' AND "
            "split_part(workflow_id, '@', 1) = $1 AND "
            "($2::text IS NULL OR workflow_id = $1 || '@' || $2)", workflow_id,
            organization_id)),
        "stages": {
            r["stage_id"]: {"runs": r["runs"], "avg_duration_ms": _num(r["avg_ms"]),
                            "p95_duration_ms": _num(r["p95_ms"]), "retries": int(r["retries"]),
                            "failures": r["failures"]}
            for r in stage_rows
        },
    }
