"""wfdag's own database failing an attempt is an outage: retried, never a breaker's failure."""

from __future__ import annotations

import pytest

from definitions import WorkflowStage, classify_error
from events import counts_against_breaker
from events.artifacts import record_artifacts_sync
from events.database import DatabaseUnavailableError


def _stage(count: str = "retryable") -> WorkflowStage:
    return WorkflowStage.model_validate({"id": "a", "name": "A", "agent": "x:y",
                                         "timeout_seconds": 5,
                                         "circuit_breaker": {"count": count}})


def test_an_outage_is_retryable_and_counts_against_no_breaker() -> None:
    info = classify_error(DatabaseUnavailableError("the database is down")).to_json()
    assert info["retryable"] is True and info["outage"] is True
    assert not counts_against_breaker(_stage(), info)
    assert not counts_against_breaker(_stage("all"), info)
    other = classify_error(ConnectionError("the CRM is down")).to_json()
    assert "outage" not in other and counts_against_breaker(_stage(), other)


def test_an_artifact_write_to_a_refusing_database_raises_an_outage() -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    with pytest.raises(DatabaseUnavailableError, match="refused a connection"):
        record_artifacts_sync("postgresql://nobody@127.0.0.1:1/none", execution_id="e",
                              stage_id="s", idempotency_key="k", artifacts=[])
