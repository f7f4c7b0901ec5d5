"""What a rebuild reads of each event (issue 18's rebuild_vs_scan): the declared keys are all
that ``execution_row`` and ``apply_metrics`` read, so reading only them changes no row."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from definitions import CANONICAL_WORKFLOWS
from events import (
    Event,
    EventRow,
    StageAttempt,
    StageCompleted,
    StageStarted,
    WorkflowCompleted,
    WorkflowInitiated,
    event_to_row,
)
from projections import MetricsProjection, apply_metrics, execution_row
from projections.executions import ROW_READS
from projections.runner import rebuild_reads

T0 = datetime(2026, 12, 6, tzinfo=UTC)
EID = "6f1c1b36-8b1e-4a53-9a55-0d7b7d1e9a01"


class Tracked(dict[str, Any]):
    """A dict that notes which of its keys were read (any whole read: "*")."""

    def __init__(self, data: Mapping[str, Any], seen: set[str]) -> None:
        super().__init__(data)
        self.seen = seen

    def __getitem__(self, key: str) -> Any:
        self.seen.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.seen.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.seen.add(str(key))
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        self.seen.add("*")
        return super().__iter__()

    def keys(self) -> Any:
        self.seen.add("*")
        return super().keys()

    def items(self) -> Any:
        self.seen.add("*")
        return super().items()


def _log(**initiated: Any) -> list[Event]:
    """A short log with every key a read model could read set (truthy), breaker open."""
    dag = CANONICAL_WORKFLOWS["opportunity-discovery-v1"].model_dump(mode="json")
    at = [T0 + timedelta(seconds=i) for i in range(6)]
    return [
        WorkflowInitiated(execution_id=EID, seq=1, at=at[0], workflow_id="wf", workflow_version=2,
                          dag=dag, context={"organizationId": "acme", "x": 1}, user_id="u",
                          **initiated),
        StageStarted(execution_id=EID, seq=2, at=at[1], stage_id="s1"),
        StageAttempt(execution_id=EID, seq=3, at=at[2], stage_id="s1", attempt=1,
                     outcome="succeeded", duration_ms=5, error={"type": "x"},
                     breaker={"state": "open", "failure_count": 3, "transition": "open"}),
        StageCompleted(execution_id=EID, seq=4, at=at[3], stage_id="s1", attempt=1,
                       output={"n": 1}, duration_ms=5),
        WorkflowCompleted(execution_id=EID, seq=5, at=at[4], duration_ms=4000),
    ]


LOGS = [
    _log(),
    _log(retry_of="11111111-1111-1111-1111-111111111111", idempotency_key="k",
         parent_execution_id="22222222-2222-2222-2222-222222222222", parent_stage_id="p",
         schedule_id="monthly", scheduled_for=T0),
]


def _reads_of(run: Any) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for log in LOGS:
        rows = [event_to_row(e) for e in log]
        run([r._replace(data=Tracked(r.data, seen.setdefault(r.type, set()))) for r in rows])
    return seen


def _trimmed(rows: list[EventRow], reads: Mapping[str, frozenset[str]]) -> list[EventRow]:
    """What the rebuild's SELECT gives (tests/store/test_projection_runner.py checks that)."""
    return [r._replace(data={k: v for k, v in r.data.items() if k in reads[r.type]})
            if r.type in reads else r for r in rows]


def test_the_read_model_reads_only_the_declared_keys() -> None:
    seen = _reads_of(lambda rows: execution_row(None, rows))
    for event_type, keys in ROW_READS.items():
        assert seen.get(event_type, set()) <= keys, event_type


def test_the_metrics_read_only_the_declared_keys() -> None:
    seen = _reads_of(lambda rows: apply_metrics({}, {}, rows))
    for event_type, keys in MetricsProjection.reads.items():
        assert seen.get(event_type, set()) <= keys, event_type


def test_rows_built_from_the_declared_keys_are_the_same() -> None:
    reads = rebuild_reads([MetricsProjection()])
    assert reads["workflow_initiated"] >= {"workflow_id", "context"}
    assert "dag" not in reads["workflow_initiated"]
    for log in LOGS:
        rows = [event_to_row(e) for e in log]
        trimmed = _trimmed(rows, reads)
        assert trimmed != rows  # something was left out
        assert execution_row(None, trimmed) == execution_row(None, rows)
        assert apply_metrics({}, {}, trimmed)[0] == apply_metrics({}, {}, rows)[0]
        whole: tuple[dict[str, Any], dict[Any, Any]] = ({}, {})
        part: tuple[dict[str, Any], dict[Any, Any]] = ({}, {})
        apply_metrics(*whole, rows)
        apply_metrics(*part, trimmed)
        assert part == whole
        assert whole[0][EID]["breaker_opens"] == 1


class _Undeclared:
    name = "undeclared"
    tables: tuple[str, ...] = ()


def test_a_projection_that_declares_nothing_gets_whole_events() -> None:
    assert rebuild_reads([MetricsProjection(), _Undeclared()]) == {}  # type: ignore[list-item]


def test_the_keys_read_are_the_union_over_projections() -> None:
    class More(MetricsProjection):
        reads = {**MetricsProjection.reads, "stage_attempt": frozenset({"attempt"})}

    reads = rebuild_reads([MetricsProjection(), More()])
    assert reads["stage_attempt"] == frozenset({"breaker", "attempt"})
    assert reads["stage_started"] == frozenset()
