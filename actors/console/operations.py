"""The console's operations page: registered workflows with their metrics, circuit breakers,
and schedules — each button a call of the public API."""

from __future__ import annotations

from typing import Any

from aiohttp import web

import actors.api as api
from actors.console.common import json_response, org_of, page, user_of
from definitions import InvalidArgumentError
from projections.graph import to_svg

__all__ = ["ROUTES", "histogram"]


async def _page(_request: web.Request) -> web.Response:
    return web.Response(text=page("operations.html"), content_type="text/html")


#: How many of a workflow's latest ended executions its duration histogram counts.
HISTOGRAM_RUNS = 500
HISTOGRAM_BINS = 10


def histogram(durations_ms: list[float], bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Equal-width bins from the shortest to the longest duration: ``edges_ms`` (bins + 1)
    and ``counts``."""
    if not durations_ms:
        return {"edges_ms": [], "counts": []}
    low, high = min(durations_ms), max(durations_ms)
    width = (high - low) / bins or 1.0
    counts = [0] * bins
    for value in durations_ms:
        counts[min(bins - 1, int((value - low) / width))] += 1
    return {"edges_ms": [round(low + k * width, 1) for k in range(bins + 1)], "counts": counts}


async def _durations(workflow_id: str, org: str | None) -> list[float]:
    found = await api.list_executions(workflow_id=workflow_id, organization_id=org,
                                      limit=HISTOGRAM_RUNS)
    return [(e.completed_at - e.started_at).total_seconds() * 1000 for e in found.items
            if e.completed_at is not None and e.started_at is not None]


async def _workflows(request: web.Request) -> web.Response:
    org = org_of(request)
    items: list[dict[str, Any]] = []
    for dag in await api.list_workflows():
        metrics = await api.get_workflow_metrics(dag.id, organization_id=org)
        items.append({"id": dag.id, "name": dag.name, "version": dag.version,
                      "stages": len(dag.stages), "metrics": metrics,
                      "histogram": histogram(await _durations(dag.id, org))})
    return json_response({"items": items})


async def _workflow_graph(request: web.Request) -> web.Response:
    dag = await api.get_workflow(request.match_info["workflow"])
    return web.Response(text=to_svg(dag), content_type="image/svg+xml")


async def _breakers(request: web.Request) -> web.Response:
    found = await api.list_circuit_breakers(organization_id=org_of(request))
    return json_response({"items": [b.model_dump(mode="json") for b in found]})


async def _reset(request: web.Request) -> web.Response:
    info = request.match_info
    status = await api.reset_workflow_circuit_breaker(
        info["workflow"], info["stage"], organization_id=org_of(request))
    return json_response(status.model_dump(mode="json"))


async def _schedules(request: web.Request) -> web.Response:
    found = await api.list_schedules(organization_id=org_of(request))
    return json_response({"items": [s.model_dump(mode="json", exclude={"context"})
                                    for s in found]})


async def _schedule_action(request: web.Request) -> web.Response:
    sid, action = request.match_info["schedule"], request.match_info["action"]
    org, user = org_of(request), user_of(request)
    if action == "pause":
        done = await api.pause_schedule(sid, user_id=user, organization_id=org)
    elif action == "resume":
        done = await api.resume_schedule(sid, user_id=user, organization_id=org)
    elif action == "trigger":
        return json_response({"execution_id": await api.trigger_schedule(
            sid, user_id=user, organization_id=org)})
    else:
        raise InvalidArgumentError(f"unknown schedule action {action[:30]!r}: pause, resume "
                                   f"or trigger")
    return json_response(done.model_dump(mode="json", exclude={"context"}))


ROUTES = [
    web.get("/operations", _page),
    web.get("/api/workflows", _workflows),
    web.get("/api/workflows/{workflow}/graph.svg", _workflow_graph),
    web.get("/api/breakers", _breakers),
    web.post("/api/breakers/{workflow}/{stage}/reset", _reset),
    web.get("/api/schedules", _schedules),
    web.post("/api/schedules/{schedule}/{action}", _schedule_action),
]
