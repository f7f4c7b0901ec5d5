"""Pure tests of definitions: retry schedule, error classification, models, validation."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError

from definitions import (
    CANONICAL_WORKFLOWS,
    RETRY_CONFIGS,
    AgentOutputError,
    RetryConfig,
    StageTimeoutError,
    WorkflowDAG,
    backoff_delay_ms,
    classify_error,
    validate_workflow_dag,
)


def _dag(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "my-flow-v1", "name": "My flow", "version": 1, "description": "d",
        "initial_stage": "a", "final_stages": ["c"],
        "stages": [
            {"id": "a", "name": "A", "agent_type": "opportunity", "timeout_seconds": 90,
             "retry_config": "STANDARD", "compensation_handler": "compensateOpportunityResearch",
             "capabilities": ["market_analysis"]},
            {"id": "b", "name": "B", "agent": "mypkg.agents:score", "timeout_seconds": 30,
             "retry_config": {"max_attempts": 4, "initial_delay_ms": 200, "max_delay_ms": 2000,
                              "multiplier": 2, "jitter": True}},
            {"id": "c", "name": "C", "agent": "mypkg.agents:report", "timeout_seconds": 30,
             "retry_config": "NONE"},
        ],
        "transitions": [{"from_stage": "a", "to_stage": "b"}, {"from_stage": "b", "to_stage": "c"}],
    }
    base.update(overrides)
    return base


# --- retry configs and backoff -------------------------------------------------------------

def test_seed_retry_configs_have_the_seed_numbers() -> None:
    assert RETRY_CONFIGS["STANDARD"] == RetryConfig(
        max_attempts=3, initial_delay_ms=500, max_delay_ms=5000, multiplier=2, jitter=True)
    assert RETRY_CONFIGS["AGGRESSIVE"] == RetryConfig(
        max_attempts=5, initial_delay_ms=1000, max_delay_ms=10000, multiplier=2, jitter=True)
    assert RETRY_CONFIGS["CONSERVATIVE"] == RetryConfig(
        max_attempts=2, initial_delay_ms=1000, max_delay_ms=3000, multiplier=1.5, jitter=False)
    assert RETRY_CONFIGS["NONE"].max_attempts == 1


def test_backoff_doubles_from_initial_and_caps_at_max() -> None:
    cfg = RetryConfig(max_attempts=10, initial_delay_ms=500, max_delay_ms=5000, multiplier=2)
    assert [backoff_delay_ms(cfg, n) for n in range(1, 7)] == [500, 1000, 2000, 4000, 5000, 5000]


def test_conservative_backoff_has_no_jitter() -> None:
    cfg = RETRY_CONFIGS["CONSERVATIVE"]
    assert {backoff_delay_ms(cfg, 1, random.Random(s)) for s in range(20)} == {1000}
    assert backoff_delay_ms(cfg, 2) == 1500


def test_jitter_stays_within_a_quarter_and_varies() -> None:
    cfg = RETRY_CONFIGS["STANDARD"]
    rng = random.Random(7)
    delays = [backoff_delay_ms(cfg, 2, rng) for _ in range(500)]
    assert min(delays) >= 750 and max(delays) <= 1250
    assert len(set(delays)) > 50


def test_retry_config_rejects_max_below_initial_and_zero_attempts() -> None:
    with pytest.raises(PydanticValidationError, match="max_delay_ms"):
        RetryConfig(max_attempts=2, initial_delay_ms=1000, max_delay_ms=10)
    with pytest.raises(PydanticValidationError):
        RetryConfig(max_attempts=0)


# --- error classification -----------------------------------------------------------------

class _Http(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class _Resp:
    def __init__(self, status: int) -> None:
        self.status = status


class _ClientError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__("client error")
        self.response = _Resp(status)


class ReadTimeout(Exception):  # named like httpx's
    pass


class RateLimitExceeded(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (TimeoutError("t"), True),
        (TimeoutError(), True),
        (ConnectionError("c"), True),
        (ConnectionResetError("c"), True),
        (StageTimeoutError("s", 1), True),
        (ReadTimeout(), True),
        (RateLimitExceeded(), True),
        (_Http(429), True),
        (_Http(502), True),
        (_Http(503), True),
        (_Http(504), True),
        (_ClientError(503), True),
        (PermissionError("p"), False),
        (ValueError("v"), False),
        (AgentOutputError("x"), False),
        (_Http(400), False),
        (_Http(401), False),
        (_Http(403), False),
        (_Http(404), False),
        (_ClientError(404), False),
        (RuntimeError("unknown"), True),
    ],
)
def test_classification_follows_the_seed(exc: BaseException, retryable: bool) -> None:
    info = classify_error(exc)
    assert info.retryable is retryable
    assert info.type == type(exc).__name__


def test_classification_keeps_status_code_and_message() -> None:
    info = classify_error(_Http(404))
    assert info.status_code == 404
    assert info.message == "HTTP 404"


# --- models --------------------------------------------------------------------------------

def test_definition_round_trips_through_json() -> None:
    dag = WorkflowDAG.model_validate(_dag())
    again = WorkflowDAG.model_validate(dag.model_dump(mode="json"))
    assert again == dag
    assert dag.model_dump(mode="json")["stages"][0]["retry_config"] == "STANDARD"
    assert dag.stage("b").retry.max_attempts == 4


def test_unknown_fields_are_an_error() -> None:
    with pytest.raises(PydanticValidationError, match="colour"):
        WorkflowDAG.model_validate(_dag(colour="red"))
    bad = _dag()
    bad["stages"][0]["timeout"] = 5
    with pytest.raises(PydanticValidationError, match="timeout"):
        WorkflowDAG.model_validate(bad)


def test_stage_needs_exactly_one_agent_and_a_known_retry_name() -> None:
    bad = _dag()
    bad["stages"][0]["agent"] = "x:y"
    with pytest.raises(PydanticValidationError, match="exactly one"):
        WorkflowDAG.model_validate(bad)
    bad = _dag()
    bad["stages"][0]["retry_config"] = "SOMETIMES"
    with pytest.raises(PydanticValidationError, match="SOMETIMES"):
        WorkflowDAG.model_validate(bad)


def test_a_stage_runs_as_a_task_unless_made_local_and_local_stages_ask_for_nothing() -> None:
    dag = WorkflowDAG.model_validate(_dag())
    assert {s.executor for s in dag.stages} == {"task"}
    local = _dag()
    local["stages"][0]["executor"] = "local"
    assert WorkflowDAG.model_validate(local).stages[0].executor == "local"
    bad = _dag()
    bad["stages"][0].update(executor="local", resources={"GPU": 1})
    with pytest.raises(PydanticValidationError, match=r"is local .* asks for resources \['GPU'\]"):
        WorkflowDAG.model_validate(bad)
    bad = _dag()
    bad["stages"][0]["executor"] = "thread"
    with pytest.raises(PydanticValidationError, match="executor"):
        WorkflowDAG.model_validate(bad)


# --- validation (the seed's checks) ----------------------------------------------------------

def test_valid_definition_has_no_errors() -> None:
    result = validate_workflow_dag(WorkflowDAG.model_validate(_dag()))
    assert result.valid and result.errors == [] and result.warnings == []


def test_missing_initial_stage_is_an_error() -> None:
    result = validate_workflow_dag(WorkflowDAG.model_validate(_dag(initial_stage="zz")))
    assert not result.valid
    assert any("'zz'" in e and "initial" in e for e in result.errors)


def test_missing_final_stage_is_an_error() -> None:
    result = validate_workflow_dag(WorkflowDAG.model_validate(_dag(final_stages=["c", "q"])))
    assert not result.valid
    assert any("'q'" in e for e in result.errors)


def test_transition_to_unknown_stage_is_an_error() -> None:
    d = _dag()
    d["transitions"].append({"from_stage": "c", "to_stage": "ghost"})
    result = validate_workflow_dag(WorkflowDAG.model_validate(d))
    assert not result.valid
    assert any("ghost" in e for e in result.errors)


def test_unreachable_stage_is_a_warning() -> None:
    d = _dag()
    d["stages"].append({"id": "island", "name": "I", "agent_type": "target",
                        "timeout_seconds": 5})
    result = validate_workflow_dag(WorkflowDAG.model_validate(d))
    assert result.valid
    assert any("island" in w and "unreachable" in w for w in result.warnings)


def test_cycle_is_reported_naming_its_stages() -> None:
    d = _dag()
    d["transitions"].append({"from_stage": "c", "to_stage": "b"})
    result = validate_workflow_dag(WorkflowDAG.model_validate(d))
    assert not result.valid
    assert any("cycle" in e and "b -> c -> b" in e for e in result.errors)


def test_condition_on_a_stage_that_does_not_run_before_is_an_error() -> None:
    d = _dag()
    d["transitions"][0]["condition"] = {"stage": "c", "path": "x", "op": "eq", "value": 1}
    result = validate_workflow_dag(WorkflowDAG.model_validate(d))
    assert not result.valid
    assert any("condition on stage 'c'" in e for e in result.errors)


def test_duplicate_stage_ids_are_an_error() -> None:
    d = _dag()
    d["stages"].append(dict(d["stages"][2]))
    result = validate_workflow_dag(WorkflowDAG.model_validate(d))
    assert any("'c' is defined 2 times" in e for e in result.errors)


# --- the canonical workflows -----------------------------------------------------------------

SEED_TIMEOUTS = {
    "opportunity-discovery-v1": [90, 60, 45],
    "target-value-commit-v1": [120, 90, 60, 75],
    "realization-tracking-v1": [120, 90, 60, 75],
    "expansion-modeling-v1": [90, 120, 90, 75],
    "integrity-controls-v1": [90, 120, 60, 45],
    "complete-value-lifecycle-v1": [90, 120, 120, 90, 90],
    "parallel-value-lifecycle-v1": [90, 120, 60, 120, 90],
}


def test_seven_canonical_workflows_with_seed_ids_and_timeouts() -> None:
    assert set(CANONICAL_WORKFLOWS) == set(SEED_TIMEOUTS)
    for workflow_id, timeouts in SEED_TIMEOUTS.items():
        dag = CANONICAL_WORKFLOWS[workflow_id]
        assert [s.timeout_seconds for s in dag.stages] == timeouts, workflow_id
        assert validate_workflow_dag(dag).valid, workflow_id
        assert all(s.compensation_handler for s in dag.stages)


def test_seed_stage_names_in_order() -> None:
    names = [s.name for s in CANONICAL_WORKFLOWS["opportunity-discovery-v1"].stages]
    assert names == ["Market Research & Analysis", "Opportunity Validation",
                     "Opportunity Prioritization"]
    first = CANONICAL_WORKFLOWS["opportunity-discovery-v1"].stages[0]
    assert first.id == "opportunity_research"
    assert first.compensation_handler == "compensateOpportunityResearch"
    assert first.capabilities == ("market_analysis", "competitive_intelligence")


def test_parallel_lifecycle_is_a_real_fork_and_join() -> None:
    dag = CANONICAL_WORKFLOWS["parallel-value-lifecycle-v1"]
    assert {t.to_stage for t in dag.outgoing("opportunity_discovery")} == {
        "target_definition", "integrity_setup"}
    assert {t.from_stage for t in dag.incoming("realization_tracking")} == {
        "target_definition", "integrity_setup"}


def test_intervention_planning_is_conditional() -> None:
    dag = CANONICAL_WORKFLOWS["realization-tracking-v1"]
    (incoming,) = dag.incoming("intervention_planning")
    assert incoming.condition is not None
    assert incoming.condition.stage == "performance_analysis"
