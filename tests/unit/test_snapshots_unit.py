"""Snapshots of the fold (issue 18), pure: a snapshot gives back exactly the fold it was taken
of, the fold goes on from it as from the whole log, and anything else is no snapshot."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from definitions import CANONICAL_WORKFLOWS, WorkflowDAG
from events import (
    Event,
    ExecutionState,
    RollbackRequested,
    SignalReceived,
    StageAttempt,
    StageCompleted,
    StageStarted,
    WorkflowInitiated,
    apply,
    attempt_events,
    decide,
    fold,
)
from events.snapshots import FOLD_VERSION, from_text, to_text

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def retry_log(eid: str, stages: int, failures: int, *, done: int | None = None) -> list[Event]:
    """A chain of ``stages`` no-op stages, each failing ``failures`` attempts before it
    succeeds; only the first ``done`` stages have run (all by default)."""
    ids = [f"st{i}" for i in range(stages)]
    dag = WorkflowDAG.model_validate({
        "id": "snap-chain-v1", "name": "snap", "version": 1, "initial_stage": ids[0],
        "final_stages": [ids[-1]],
        "stages": [{"id": s, "name": s, "agent": "actors.agents.builtin:noop",
                    "timeout_seconds": 30,
                    "retry_config": {"max_attempts": failures + 2, "initial_delay_ms": 0,
                                     "max_delay_ms": 0}} for s in ids],
        "transitions": [{"from_stage": a, "to_stage": b} for a, b in itertools.pairwise(ids)],
    })
    out: list[Event] = [WorkflowInitiated(
        execution_id=eid, seq=1, at=T0, workflow_id=dag.id, workflow_version=1,
        dag=dag.model_dump(mode="json"), context={"organizationId": "o", "n": [1, 2]},
        user_id="u")]

    def nxt() -> tuple[int, datetime]:
        return len(out) + 1, T0 + timedelta(milliseconds=len(out))

    error = {"type": "ConnectionError", "message": "reset", "retryable": True,
             "status_code": None}
    for sid in ids[:done if done is not None else stages]:
        seq, at = nxt()
        out.append(StageStarted(execution_id=eid, seq=seq, at=at, stage_id=sid))
        for attempt in range(1, failures + 1):
            seq, at = nxt()
            out.append(StageAttempt(execution_id=eid, seq=seq, at=at, stage_id=sid,
                                    attempt=attempt, outcome="failed", duration_ms=1,
                                    error=error, retry_delay_ms=0, retry_at=at))
        seq, at = nxt()
        out.append(StageAttempt(execution_id=eid, seq=seq, at=at, stage_id=sid,
                                attempt=failures + 1, outcome="succeeded", duration_ms=1))
        seq, at = nxt()
        out.append(StageCompleted(execution_id=eid, seq=seq, at=at, stage_id=sid,
                                  attempt=failures + 1, output={"n": seq, "at": at.isoformat()},
                                  duration_ms=1))
    return out


def canonical_log(name: str) -> list[Event]:
    """A canonical workflow run to its end by the fold's own decisions, then rolled back."""
    dag = CANONICAL_WORKFLOWS[name]
    state = ExecutionState(execution_id="e2")
    events: list[Event] = [WorkflowInitiated(
        execution_id="e2", seq=1, at=T0, workflow_id=dag.id, workflow_version=dag.version,
        dag=dag.model_dump(mode="json"), context={"userId": "u"}, user_id="u")]
    apply(state, events[0])
    for _ in range(200):
        decided = decide(state, T0).events
        for e in decided:
            apply(state, e)
        events += decided
        running = state.stages_in("running")
        if not decided and not running:
            break
        for sid in running:
            done = attempt_events(state, sid, attempt=state.stages[sid].attempts + 1, now=T0,
                                  duration_ms=3, output={"stage": sid})
            for e in done:
                apply(state, e)
            events += done
    extra: list[Event] = [
        SignalReceived(execution_id="e2", seq=len(events) + 1, at=T0, name="late",
                       payload={"k": "v"}, user_id="u"),
        RollbackRequested(execution_id="e2", seq=len(events) + 2, at=T0, user_id="op")]
    return events + extra


@pytest.mark.parametrize("events", [
    retry_log("e1", 20, 3), retry_log("e1", 20, 3, done=12),
    canonical_log("complete-value-lifecycle-v1"), canonical_log("parallel-value-lifecycle-v1"),
], ids=["retries", "unfinished", "lifecycle", "parallel"])
def test_a_snapshot_is_the_fold_it_was_taken_of_and_the_fold_goes_on_from_it(
        events: list[Event]) -> None:
    whole = fold(events)
    for cut in (1, len(events) // 3, len(events) - 1, len(events)):
        text = to_text(fold(events[:cut]), 1234)
        assert text is not None
        snap = from_text(text)
        assert snap is not None and snap.log_bytes == 1234
        assert snap.state == fold(events[:cut])
        again = from_text(text)
        assert again is not None
        assert (fold(events[cut:], again.state) if events[cut:] else again.state) == whole


def test_anything_but_this_folds_snapshot_is_none() -> None:
    text = to_text(fold(retry_log("e1", 5, 1)), 10)
    assert text is not None
    data = json.loads(text)
    assert data["fold"] == FOLD_VERSION
    assert from_text(json.dumps({**data, "fold": "another-fold"})) is None
    assert from_text(json.dumps({**data, "state": {**data["state"], "extra": 1}})) is None
    stages = dict(data["state"]["stages"])
    stages["st0"] = {**stages["st0"], "surprise": True}
    assert from_text(json.dumps({**data, "state": {**data["state"], "stages": stages}})) is None
    for bad in ("", "{", "[]", "null", json.dumps({"fold": FOLD_VERSION})):
        assert from_text(bad) is None


def test_a_state_json_would_change_is_not_snapshotted() -> None:
    state = fold(retry_log("e1", 3, 0))
    state.context = {"when": datetime(2026, 1, 1, tzinfo=UTC)}  # not JSON
    assert to_text(state, 0) is None
    state.context = {"pair": (1, 2)}  # JSON gives a list back, not a tuple
    assert to_text(state, 0) is None
    state.context = {"x": float("nan")}
    assert to_text(state, 0) is None


def test_times_and_pairs_come_back_as_they_were(monkeypatch: Any) -> None:
    state = fold(retry_log("e1", 3, 1))
    state.parent = ("p-exec", "p-stage")
    state.signals = [("go", {"a": 1})]
    state.stages["st1"].retry_at = T0 + timedelta(seconds=5, microseconds=7)
    text = to_text(state, 0)
    assert text is not None
    back = from_text(text)
    assert back is not None and back.state == state
    assert back.state.parent == ("p-exec", "p-stage")
    assert back.state.stages["st1"].retry_at == T0 + timedelta(seconds=5, microseconds=7)
