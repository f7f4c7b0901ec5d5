"""Custom Ray metrics (``ray.util.metrics``), all named ``wfdag_…``.

Ray exports them on every node's Prometheus endpoint (``--metrics-export-port``) with its own
``ray_`` prefix — ``ray_wfdag_executions_started_total`` and so on — and the dashboard's metrics
view shows them when Prometheus/Grafana are set up as Ray documents.  They are recorded where the
work happens: the execution actors (executions, stages, retries, live executions) and the
breaker registry (breaker state).  Created lazily, once per process.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from ray.util.metrics import Counter, Gauge, Histogram

__all__ = [
    "BREAKER_STATE_VALUES",
    "record_breaker_state",
    "record_events",
    "record_started",
    "set_live",
]

#: ``wfdag_breaker_state``: 0 closed, 1 half-open, 2 open.
BREAKER_STATE_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
_STAGE_BUCKETS_MS: list[float] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
                                   60000, 300000]
_ENDINGS = {
    "workflow_completed": "completed",
    "workflow_failed": "failed",
    "workflow_rolled_back": "rolled_back",
    "workflow_cancelled": "cancelled",
}


class _Metrics:
    def __init__(self) -> None:
        wf = ("workflow_id",)
        self.executions = {
            kind: Counter(f"wfdag_executions_{kind}", f"Executions {kind.replace('_', ' ')}.",
                          tag_keys=wf)
            for kind in ("started", "completed", "failed", "rolled_back", "cancelled")
        }
        self.stage_duration = Histogram(
            "wfdag_stage_duration_ms", "Duration of stage attempts, in milliseconds.",
            boundaries=_STAGE_BUCKETS_MS, tag_keys=("workflow_id", "stage_id", "outcome"))
        self.retries = Counter("wfdag_stage_retries", "Stage attempts that will be retried.",
                               tag_keys=("workflow_id", "stage_id"))
        self.live = Gauge("wfdag_live_executions",
                          "Executions an execution actor is driving now (sum over runners).",
                          tag_keys=("runner",))
        self.breaker = Gauge("wfdag_breaker_state",
                             "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
                             tag_keys=("workflow_id", "stage_id"))


@cache
def _metrics() -> _Metrics:
    return _Metrics()


def record_events(workflow_id: str, events: Iterable[Any]) -> None:
    """Count what a batch of appended events says happened."""
    m = _metrics()
    tags = {"workflow_id": workflow_id}
    for event in events:
        kind = event.type
        if kind == "stage_attempt":
            m.stage_duration.observe(float(event.duration_ms), tags={
                **tags, "stage_id": event.stage_id, "outcome": event.outcome})
            if event.outcome == "failed" and getattr(event, "retry_at", None) is not None:
                m.retries.inc(1.0, tags={**tags, "stage_id": event.stage_id})
        elif kind in _ENDINGS:
            m.executions[_ENDINGS[kind]].inc(1.0, tags=tags)


def record_started(workflow_id: str) -> None:
    _metrics().executions["started"].inc(1.0, tags={"workflow_id": workflow_id})


def set_live(runner: str, live: int) -> None:
    _metrics().live.set(float(live), tags={"runner": runner})


def record_breaker_state(workflow_id: str, stage_id: str, state: str) -> None:
    _metrics().breaker.set(BREAKER_STATE_VALUES.get(state, 0.0),
                           tags={"workflow_id": workflow_id, "stage_id": stage_id})
