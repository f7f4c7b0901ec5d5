"""Pure tests of what the redesign (issue 12) fixed: no database, no Ray session."""

from __future__ import annotations

import errno
import inspect
import itertools
import os
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from tests.conftest import REPO


def _chain(n: int) -> dict[str, Any]:
    ids = [f"s{i}" for i in range(n)]
    return {
        "id": f"long-v{n}", "name": "long", "version": 1, "initial_stage": ids[0],
        "final_stages": [ids[-1]],
        "stages": [{"id": s, "name": s, "agent_type": "target", "timeout_seconds": 5}
                   for s in ids],
        "transitions": [{"from_stage": a, "to_stage": b} for a, b in itertools.pairwise(ids)],
    }


def test_one_stage_limit_for_the_model_and_validation() -> None:
    """MAX_STAGES was 500 in the model and 1000 in validation: a 600-stage workflow was refused
    by the model although validation (and README) allowed it."""
    from definitions import MAX_STAGES, WorkflowDAG, validate_workflow_dag
    from definitions.limits import MAX_STAGES as LIMIT

    assert MAX_STAGES == LIMIT == 1000
    dag = WorkflowDAG.model_validate(_chain(600))
    assert validate_workflow_dag(dag).valid
    with pytest.raises(ValueError, match=str(MAX_STAGES)):
        WorkflowDAG.model_validate(_chain(MAX_STAGES + 1))


def test_the_execution_actor_exposes_only_read_only_methods() -> None:
    """A handle to the actor (``execution_actor`` hands it out) must not drive anything: Ray
    makes every method of the class remotely callable, so it has only these."""
    from actors.runner import PUBLIC_METHODS, ExecutionActor

    methods = {name for name, _ in inspect.getmembers(ExecutionActor, inspect.isfunction)
               if not name.startswith("__")}
    assert methods == PUBLIC_METHODS == {"ready", "node_id", "current", "executing"}


@pytest.mark.parametrize("exc", [
    FileNotFoundError(errno.ENOENT, "no such file", "/tmp/agent-input.csv"),
    PermissionError(errno.EACCES, "permission denied"),
    TimeoutError("the agent's own wait timed out"),
    OSError(errno.ENOSPC, "no space left on device"),
    RuntimeError("a bug"),
    asyncpg.exceptions.UndefinedTableError("relation does not exist"),
])
def test_a_bug_or_a_local_failure_is_not_a_database_outage(exc: BaseException) -> None:
    from events import is_database_outage

    assert not is_database_outage(exc)


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
    ConnectionResetError(errno.ECONNRESET, "reset by peer"),
    OSError(errno.EHOSTUNREACH, "no route to host"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.TooManyConnectionsError("too many clients"),
    asyncpg.exceptions.InterfaceError("cannot call Connection.fetch(): connection is closed"),
])
def test_lost_connections_and_a_server_going_away_are_outages(exc: BaseException) -> None:
    from events import is_database_outage

    assert is_database_outage(exc)
    wrapped = RuntimeError("while appending")
    wrapped.__cause__ = exc
    assert is_database_outage(wrapped), "found through the cause chain"


async def test_a_connect_that_cannot_reach_the_server_says_so() -> None:
    """A unix socket that is gone (the embedded server restarting) raises FileNotFoundError
    from connect: our pools report it as DatabaseUnavailableError, an outage."""
    from events import is_database_outage
    from events.database import DatabaseUnavailableError, _connect

    with pytest.raises(DatabaseUnavailableError) as info:
        await _connect("postgresql://nobody@/nodb?host=/nonexistent-wfdag-dir", timeout=2)
    assert is_database_outage(info.value)


def _spec(agent: str) -> Any:
    from actors.runner import AttemptSpec

    return AttemptSpec(execution_id="e", workflow_id="w", stage_id="bad", stage_name="Bad",
                       attempt=1, context={}, inputs={}, idempotency_key="e:bad",
                       agent=f"tests.agents:{agent}")


@pytest.mark.parametrize("agent", ["returns_string", "returns_unserialisable", "returns_nan"])
def test_an_attempt_returning_non_json_fails_as_agent_output_error(agent: str) -> None:
    from actors.runner import run_stage_attempt

    result = run_stage_attempt(_spec(agent))
    assert not result.ok and result.output is None and result.error is not None
    assert result.error["type"] == "AgentOutputError"
    assert result.error["retryable"] is False
    assert "JSON" in result.error["message"] and "'bad'" in result.error["message"]


@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt", "CancelledError",
                                  "GeneratorExit"])
def test_an_agent_raising_a_base_exception_fails_its_attempt_not_its_process(kind: str) -> None:
    from dataclasses import replace

    from actors.runner.attempt import run_local_attempt

    result = run_local_attempt(replace(_spec("raises_base"), context={"raise": kind}))
    assert not result.ok and result.error is not None and result.error["type"] == kind


def test_an_attempt_returns_the_agent_output_and_its_process() -> None:
    from actors.runner import run_stage_attempt

    result = run_stage_attempt(_spec("noop"))
    assert result.ok and isinstance(result.output, dict) and result.pid == os.getpid()


def test_only_an_async_def_agent_that_imports_is_awaited_on_the_loop() -> None:
    from actors.runner.attempt import coroutine_agent

    assert coroutine_agent(_spec("async_agent")) is not None
    assert coroutine_agent(_spec("noop")) is None  # a sync agent: a thread runs it
    # One that does not import is left to the thread, which reports it as the attempt's error.
    assert coroutine_agent(_spec("no_such_agent")) is None



def test_the_module_a_local_agent_is_imported_from_first_unless_refused() -> None:
    from dataclasses import replace

    from actors.runner.attempt import agent_module

    assert agent_module(_spec("noop")) == "tests.agents"
    fresh = replace(_spec("noop"), agent="tests.no_such_agents_module:agent")
    assert agent_module(fresh) == "tests.no_such_agents_module"
    # Never a module the agent policy refuses (nothing is imported for it), nor a reference
    # agent or a built-in handler.
    assert agent_module(replace(_spec("noop"), agent="subprocess:run")) is None
    assert agent_module(replace(_spec("noop"), agent=None, agent_type="target")) is None


async def test_a_coroutine_attempt_checks_its_output_and_classifies_what_it_raises() -> None:
    from dataclasses import replace

    from actors.runner.attempt import coroutine_agent, run_coroutine_attempt

    async def attempt(agent: str, **context: Any) -> Any:
        spec = replace(_spec(agent), context=context)
        coroutine = coroutine_agent(spec)
        assert coroutine is not None
        return await run_coroutine_attempt(spec, coroutine)

    ok = await attempt("async_agent")
    assert ok.ok and ok.output == {"async": True, "inputs": []} and ok.pid == os.getpid()
    bad = await attempt("async_returns_string")
    assert not bad.ok and bad.error is not None and bad.error["type"] == "AgentOutputError"
    for kind in ("SystemExit", "KeyboardInterrupt", "CancelledError"):
        failed = await attempt("async_raises_base", **{"raise": kind})
        assert not failed.ok and failed.error is not None and failed.error["type"] == kind


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WFDAG_", "RAY_"))}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=60, check=False)


def test_the_library_configures_no_logging_of_the_host() -> None:
    """Importing wfdag and logging through it leaves structlog's global configuration and the
    host's logging alone; the lines go through the standard library's ``wfdag`` logger."""
    result = _python(
        "import logging, structlog\n"
        "records = []\n"
        "class Keep(logging.Handler):\n"
        "    def emit(self, record): records.append(record.getMessage())\n"
        "logging.getLogger().addHandler(Keep()); logging.getLogger().setLevel(logging.INFO)\n"
        "import actors\n"
        "from actors.logs import get_logger, bound\n"
        "with bound(execution_id='e-1'):\n"
        "    get_logger().info('host.sees_it', password='hunter2', n=1)\n"
        "assert not structlog.is_configured(), 'structlog was configured globally'\n"
        "assert logging.getLogger('wfdag').handlers == [], 'a handler was added'\n"
        "[line] = records\n"
        "assert 'host.sees_it' in line and 'e-1' in line and 'hunter2' not in line, line\n"
        "print('ok')\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_starting_a_local_ray_leaves_the_driver_environment_as_it_was(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The workers of a local Ray need the driver's directory on their PYTHONPATH; the
    driver's own PYTHONPATH must not be rewritten to give it to them."""
    import ray

    from actors import ray_session as runtime  # where ensure_ray lives

    seen: dict[str, str | None] = {}

    def fake_init(**_kwargs: Any) -> None:  # records what Ray's processes would inherit
        seen["PYTHONPATH"] = os.environ.get("PYTHONPATH")
        seen["cluster_switch"] = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")

    monkeypatch.setattr(runtime, "_local_started", runtime._local_started)  # restored after
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", "/opt/host-libs")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "get", lambda refs, timeout=None: [])
    monkeypatch.setattr(runtime, "_warm", type("W", (), {"remote": staticmethod(lambda s: s)}))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    runtime.ensure_ray()
    assert seen["PYTHONPATH"] == os.pathsep.join([str(tmp_path), "/opt/host-libs"])
    assert os.environ["PYTHONPATH"] == "/opt/host-libs"
    # Its processes start with multi-node off (a node at 127.0.0.1); this process is as it was.
    assert seen["cluster_switch"] == "0"
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ


def test_settings_are_read_once_and_bad_values_name_the_variable() -> None:
    from actors.runtime import Settings
    from definitions import InvalidArgumentError

    config = Settings.from_env({"WFDAG_POOL_SIZE": "3", "WFDAG_RUNNER_RESOURCES": '{"w": 1}'})
    assert (config.pool_size, config.runner_resources) == (3, {"w": 1.0})
    with pytest.raises(InvalidArgumentError, match="WFDAG_POOL_SIZE"):
        Settings.from_env({"WFDAG_POOL_SIZE": "many"})
    with pytest.raises(InvalidArgumentError, match="WFDAG_RUNNER_RESOURCES"):
        Settings.from_env({"WFDAG_RUNNER_RESOURCES": '{"w": -1}'})
    with pytest.raises(AttributeError):
        config.pool_size = 4  # type: ignore[misc]


def test_stage_worker_settings() -> None:
    from actors.runtime import Settings
    from definitions import InvalidArgumentError

    default = Settings.from_env({})
    assert (default.stage_workers, default.stage_worker_idle_seconds) == (12, 60.0)
    on = Settings.from_env({"WFDAG_STAGE_WORKERS": "4", "WFDAG_STAGE_WORKER_IDLE_SECONDS": "5"})
    assert (on.stage_workers, on.stage_worker_idle_seconds) == (4, 5.0)
    for name in ("WFDAG_STAGE_WORKERS", "WFDAG_STAGE_WORKER_IDLE_SECONDS"):
        for bad in ("-1", "two"):
            with pytest.raises(InvalidArgumentError, match=name):
                Settings.from_env({name: bad})


def test_an_unknown_stage_is_not_an_unknown_workflow() -> None:
    from definitions import NotFoundError, StageNotFoundError, WorkflowNotFoundError

    err = StageNotFoundError("flow-v1", "nope")
    assert isinstance(err, NotFoundError) and isinstance(err, WorkflowNotFoundError)
    assert "unknown workflow" not in str(err)
    assert "'flow-v1' has no stage 'nope'" in str(err)
    assert err.exit_code == 3


def test_every_error_says_its_exit_code() -> None:
    from definitions import (
        ExecutionNotFoundError,
        ExecutionStateError,
        InvalidArgumentError,
        InvalidContextError,
        InvalidWorkflowError,
        PayloadTooLargeError,
        WaitTimeoutError,
        WorkflowNotFoundError,
    )

    assert ExecutionNotFoundError("x").exit_code == 3
    assert WorkflowNotFoundError("w").exit_code == 3
    assert InvalidContextError("c").exit_code == InvalidArgumentError("a").exit_code == 2
    assert InvalidWorkflowError("w", ["e"]).exit_code == 2
    assert PayloadTooLargeError("x", 2, 1).exit_code == 2
    assert WaitTimeoutError("e", 1, "in_progress").exit_code == 4
    assert isinstance(WaitTimeoutError("e", 1, "queued"), TimeoutError)
    assert ExecutionStateError("e", "completed", "a retry", "failed").exit_code == 1
    assert issubclass(InvalidArgumentError, InvalidContextError)
