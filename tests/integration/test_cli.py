"""The ``wfdag`` command line, run as a user would: a subprocess on the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from actors import execute_workflow_dag, wait_for_workflow
from tests.conftest import REPO
from tests.integration.helpers import register_chain, stage


def wfdag(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own.  A verb that needs runners joins this suite's Ray (as
    an operator's would join a cluster named by RAY_ADDRESS) rather than start a service;
    Ray's token is found without RAY_AUTH_MODE (the CLI sets it)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env["WFDAG_RAY_DASHBOARD"] = "0"
    import ray

    if ray.is_initialized():
        env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    else:
        env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "actors.cli", *args], cwd=REPO, env=env, text=True,
        capture_output=True, timeout=timeout, check=False,
    )


def wfdag_here(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI called in this process (what needs no Ray is tested without starting one)."""
    from actors.cli import main

    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", str(uuid.uuid4())], "not found"),
        (["status", "robert'); DROP TABLE workflow_events;--"], "not found"),
        (["events", str(uuid.uuid4())], "not found"),
        (["run", "no-such-flow-v1"], "unknown workflow 'no-such-flow-v1'"),
        (["run", "opportunity-discovery-v1", "--context", "[1, 2]"], "JSON object"),
        (["run", "opportunity-discovery-v1", "--context", "{oops"], "not valid JSON"),
    ],
)
def test_cli_user_errors_are_one_clear_line(
    database_url: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = wfdag_here(capsys, *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_lists_the_canonical_workflows(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = wfdag_here(capsys, "workflows")
    assert result.returncode == 0, result.stderr
    for workflow_id in ("opportunity-discovery-v1", "parallel-value-lifecycle-v1"):
        assert workflow_id in result.stdout


@pytest.mark.usefixtures("ray_session")
async def test_cli_status_and_events_of_an_execution() -> None:
    eid = await execute_workflow_dag("opportunity-discovery-v1", {"projectId": "p"}, "cli-user")
    await wait_for_workflow(eid, timeout=60)
    status = wfdag("status", eid)
    assert status.returncode == 0, status.stderr
    assert "completed" in status.stdout and "opportunity-discovery-v1" in status.stdout
    events = wfdag("events", eid)
    assert events.returncode == 0, events.stderr
    lines = events.stdout.splitlines()
    assert "workflow_initiated" in lines[0] and "workflow_completed" in lines[-1]
    assert any("stage_attempt" in line and "attempt=1" in line for line in lines)
    exported = [json.loads(line) for line in wfdag("events", eid, "--json").stdout.splitlines()]
    assert [e["seq"] for e in exported] == list(range(1, len(lines) + 1))


@pytest.mark.usefixtures("ray_session")
def test_cli_run_wait_shows_progress_and_succeeds(database_url: str) -> None:
    result = wfdag("run", "opportunity-discovery-v1", "--wait", "--timeout", "90")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[1] == "completed", "stdout: the id, then the status only"
    uuid.UUID(lines[0])
    assert result.stderr.count("stage_completed") == 3


@pytest.mark.usefixtures("ray_session")
async def test_cli_run_wait_exits_non_zero_when_the_execution_fails() -> None:
    dag = await register_chain("cli-fail", [stage("deny", "forbidden")])
    result = wfdag("run", dag.id, "--context", "{}", "--wait", "--timeout", "90")
    assert result.returncode == 1
    assert "failed: stage deny failed: PermissionError" in result.stdout
    assert "wfdag events" in result.stderr


@pytest.mark.usefixtures("ray_session")
async def test_cli_breakers_list_and_reset(tmp_dir: object) -> None:
    from actors import get_workflow_circuit_breaker_status

    dag = await register_chain("cli-breaker", [stage(
        "call", "breaker_agent",
        circuit_breaker={"failure_threshold": 1, "cooldown_seconds": 600})])
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "t")
    await wait_for_workflow(eid, timeout=60)
    listing = wfdag("breakers")
    assert listing.returncode == 0, listing.stderr
    line = next(x for x in listing.stdout.splitlines() if dag.id in x)
    assert "open" in line and "1/1" in line
    reset = wfdag("breakers", "reset", dag.id, "call")
    assert reset.returncode == 0, reset.stderr
    assert "reset: closed, 0 failures" in reset.stdout
    assert (await get_workflow_circuit_breaker_status(dag.id, "call")).state == "closed"
    # The CLI resets through the database (no Ray): this session's registry heard of the
    # reset and reloaded it.
    import ray

    from actors.breakers import REGISTRY_NAME
    from actors.runtime import NAMESPACE
    from tests.integration.helpers import eventually

    registry = ray.get_actor(REGISTRY_NAME, namespace=NAMESPACE)

    async def closed_here() -> bool:
        view = await registry.status.remote(dag.id, "call")
        return bool(view["state"] == "closed" and view["failure_count"] == 0)

    await eventually(closed_here, timeout=10, what="this cluster's registry to see the reset")
    missing = wfdag("breakers", "reset", dag.id, "nope")
    assert missing.returncode == 3 and "nope" in missing.stderr  # not found


@pytest.mark.usefixtures("ray_session")
async def test_cli_rollback_and_retry_refuse_wrong_states_clearly() -> None:
    eid = await execute_workflow_dag("opportunity-discovery-v1", {"projectId": "p"}, "cli-user")
    await wait_for_workflow(eid, timeout=60)
    retry = wfdag("retry", eid)
    assert retry.returncode == 1
    assert "is completed: a retry needs it to be failed or rolled_back" in retry.stderr
    assert "Traceback" not in retry.stderr
