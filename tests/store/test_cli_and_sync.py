"""The CLI's not-found and bad-input paths and the sync twins, on the test database, in this
process (or a plain child process): no Ray."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from actors.cli import main
from tests.conftest import REPO


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("args", "message"), [
    (["status", str(uuid.uuid4())], "not found"),
    (["events", str(uuid.uuid4())], "not found"),
    (["replay", "not-a-uuid"], "not found"),
    (["run", "no-such-flow-v1"], "unknown workflow 'no-such-flow-v1'"),
    (["run", "opportunity-discovery-v1", "--version", "99"], "version 99"),
    (["breakers", "reset", "opportunity-discovery-v1", "nope"], "has no stage 'nope'"),
    (["metrics", "no-such-flow-v1"], "no-such-flow-v1"),
])
def test_what_does_not_exist_exits_3_naming_it(
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    # Ray may already be up in this process (an earlier test's session), so "did not start Ray"
    # is checked where it would happen: no module of the CLI or API may reach ensure_ray.
    reached: list[str] = []
    for name, module in list(sys.modules.items()):
        if name.startswith("actors") and hasattr(module, "ensure_ray"):
            monkeypatch.setattr(module, "ensure_ray", lambda *a, _n=name, **k: reached.append(_n))
    code, out, err = run(capsys, *args)
    assert code == 3, err
    assert message in err and "Traceback" not in err
    assert out == ""
    assert reached == [], f"a verb that fails on input must not start Ray (reached {reached})"


def test_replay_before_the_first_event_is_bad_input(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "replay", str(uuid.uuid4()), "--until", "0")
    assert code == 2 and "until_seq must be 1 or more" in err


def test_workflows_lists_json_with_every_canonical_one(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    code, out, _ = run(capsys, "workflows", "--json")
    assert code == 0
    ids = {w["id"] for w in json.loads(out)}
    assert {"opportunity-discovery-v1", "complete-value-lifecycle-v1"} <= ids


def test_the_sync_twins_close_their_pools_at_exit(database_url: str) -> None:
    """A script that used a blocking twin leaves no pool open when it exits (asyncpg warns
    about pools garbage-collected open)."""
    code = (
        "import atexit\n"
        "pools = []\n"
        "def check():\n"
        "    print('closed' if pools and all(p._closed for p in pools) else 'OPEN')\n"
        "atexit.register(check)  # registered first: runs after wfdag's own exit hook\n"
        "import actors\n"
        "from actors import runtime\n"
        "actors.list_circuit_breakers_sync()\n"
        "pools.extend(s.pool for d in runtime._stores.values() for s in d.values())\n")
    env = {**os.environ, "WFDAG_DATABASE_URL": database_url}
    result = subprocess.run([sys.executable, "-W", "error::ResourceWarning", "-c", code],
                            cwd=REPO, env=env, text=True, capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "closed", result.stderr
    assert "Traceback" not in result.stderr


async def _initiated(store: object, workflow_id: str) -> str:
    """An execution in the log and the read model, not queued: nobody drives it."""
    from datetime import UTC, datetime

    from actors.api import get_workflow
    from events import EventStore, WorkflowInitiated

    assert isinstance(store, EventStore)
    dag = await get_workflow(workflow_id)
    eid = str(uuid.uuid4())
    await store.append([WorkflowInitiated(
        execution_id=eid, seq=1, at=datetime.now(UTC), workflow_id=dag.id,
        workflow_version=dag.version, dag=dag.model_dump(mode="json"),
        context={"organizationId": "org-list"}, user_id="lister")], expected_version=0)
    return eid


async def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    import asyncio

    return await asyncio.to_thread(run, capsys, *args)


async def test_wait_on_an_execution_nobody_drives_exits_1_naming_the_resume(
    store: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    eid = await _initiated(store, "opportunity-discovery-v1")
    code, out, err = await _main(capsys, "wait", eid, "--timeout", "30")
    assert code == 1, err
    assert "nothing drives it" in err and "wfdag recover" in err and out == ""


async def test_list_pages_newest_first_without_repeats(
    store: object, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    made = [await _initiated(store, "expansion-modeling-v1") for _ in range(3)]
    code, out, err = await _main(capsys, "list", "--workflow", "expansion-modeling-v1",
                                 "--org", "org-list", "--limit", "2", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert [i["execution_id"] for i in first["items"]] == made[::-1][:2]
    assert first["next_cursor"]
    code, out, err = await _main(capsys, "list", "--workflow", "expansion-modeling-v1",
                                 "--org", "org-list", "--limit", "2", "--cursor",
                                 first["next_cursor"], "--json")
    rest = [i["execution_id"] for i in json.loads(out)["items"]]
    assert rest[0] == made[0] and made[1] not in rest and made[2] not in rest
    code, out, err = await _main(capsys, "list", "--status", "initiated", "--workflow",
                                 "expansion-modeling-v1")
    assert code == 0 and all(eid in out for eid in made)
    assert out.splitlines()[0].split()[:3] == ["ID", "WORKFLOW", "STATUS"]


@pytest.mark.parametrize(("args", "message"), [
    (["list", "--status", "sleeping"], "status 'sleeping' is not one of"),
    (["list", "--limit", "0"], "limit must be an integer from 1 to 1000"),
    (["list", "--since", "yesterday"], "not an ISO 8601 time"),
    (["list", "--since", "2026-12-01T00:00:00"], "time zone"),
    (["list", "--cursor", "garbage!"], "cursor"),
])
def test_list_refuses_bad_filters_with_exit_2(
    database_url: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2, err
    assert message in err and out == ""


def test_cancel_of_an_unknown_execution_exits_3_before_anything_starts(
    database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    monkeypatch.setattr("actors.cli.server.ensure_service", lambda why: started.append(why))
    code, _, err = run(capsys, "cancel", str(uuid.uuid4()))
    assert code == 3 and "not found" in err
    assert started == [], "no service is started for an execution that does not exist"
