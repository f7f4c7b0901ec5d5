"""Which import paths may be agents or compensation handlers (no Ray, no database)."""

from __future__ import annotations

from typing import Any

import pytest

from actors.agents import resolve_callable
from actors.runner.attempt import run_local_attempt
from actors.runner.protocol import AttemptSpec
from definitions import (
    AgentNotAllowedError,
    WorkflowDAG,
    agent_path_refusal,
    validate_workflow_dag,
)

HOSTILE = ["os:system", "subprocess:getoutput", "subprocess:run", "builtins:exec",
           "builtins:eval", "builtins:print", "sys:exit", "os:_exit", "posix:system",
           "os.path:join", "importlib:import_module", "pickle:loads", "_thread:exit",
           "actors.runner.attempt:run_stage_attempt", "events.store:EventStore",
           "definitions:validate_workflow_dag", "ray:shutdown", "tests.agents:_dir",
           "tests._private:agent"]


def _dag(agent: str | None = None, handler: str | None = None) -> WorkflowDAG:
    stage: dict[str, Any] = {"id": "a", "name": "A", "timeout_seconds": 5}
    if agent is None:
        stage["agent_type"] = "opportunity"
    else:
        stage["agent"] = agent
    if handler is not None:
        stage["compensation_handler"] = handler
    return WorkflowDAG.model_validate({"id": "w", "name": "w", "version": 1,
                                       "initial_stage": "a", "final_stages": ["a"],
                                       "stages": [stage], "transitions": []})


@pytest.mark.parametrize("path", HOSTILE)
def test_hostile_agent_paths_are_refused_at_registration_naming_stage_and_rule(
    path: str,
) -> None:
    result = validate_workflow_dag(_dag(agent=path))
    assert not result.valid
    [error] = result.errors
    assert error.startswith("stage 'a': agent refused: "), error
    assert repr(path.split(":")[0]) in error or "starts with '_'" in error, error


@pytest.mark.parametrize("path", HOSTILE)
def test_hostile_compensation_handlers_are_refused_too(path: str) -> None:
    result = validate_workflow_dag(_dag(handler=path))
    assert not result.valid
    assert any("compensation handler refused" in e for e in result.errors), result.errors


@pytest.mark.parametrize("path", ["tests.agents:noop", "bench.agents:blob", "acme.crm:score",
                                  "x:y", "actors.agents.builtin:noop",
                                  "actors.agents.builtin:sleep"])
def test_users_own_modules_and_built_in_handlers_stay_allowed(path: str) -> None:
    assert agent_path_refusal(path, {}) is None
    assert validate_workflow_dag(_dag(agent=path, handler="compensateKpiTargets")).valid
    assert validate_workflow_dag(_dag(handler=path)).valid


def test_the_allow_list_admits_only_its_prefixes_by_whole_components() -> None:
    env = {"WFDAG_AGENT_MODULES": "acme.agents, billing"}
    assert agent_path_refusal("acme.agents:score", env) is None
    assert agent_path_refusal("acme.agents.crm:score", env) is None
    assert agent_path_refusal("billing:charge", env) is None
    refused = agent_path_refusal("acme.agentsx:score", env)
    assert refused is not None and "WFDAG_AGENT_MODULES" in refused
    assert agent_path_refusal("tests.agents:noop", env) is not None
    # a private name stays refused even inside an allowed package
    assert agent_path_refusal("billing:_charge", env) is not None
    # wfdag's general-purpose agents are allowed whatever the list says
    assert agent_path_refusal("actors.agents.builtin:sleep", env) is None
    assert agent_path_refusal("actors.agents.builtin:_x", env) is not None


def test_the_worker_refuses_before_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFDAG_AGENT_MODULES", "acme")
    with pytest.raises(AgentNotAllowedError, match="not under any of"):
        resolve_callable("tests.agents:noop")
    monkeypatch.delenv("WFDAG_AGENT_MODULES")
    with pytest.raises(AgentNotAllowedError, match="standard library"):
        resolve_callable("subprocess:getoutput")


@pytest.mark.parametrize(("agent", "handler"), [("builtins:print", None),
                                                 (None, "os:system")])
def test_an_attempt_of_a_refused_path_fails_unretried_and_calls_nothing(
    agent: str | None, handler: str | None, capsys: pytest.CaptureFixture[str],
) -> None:
    spec = AttemptSpec(execution_id="e", workflow_id="w", stage_id="a", stage_name="A",
                       attempt=1, context={"password": "hunter2-opened"}, inputs={},
                       idempotency_key="k", agent=agent, handler=handler,
                       output={} if handler else None)
    result = run_local_attempt(spec)
    assert not result.ok and result.error is not None
    assert result.error["type"] == "AgentNotAllowedError"
    assert result.error["retryable"] is False
    assert "hunter2" not in capsys.readouterr().out  # print was never called
