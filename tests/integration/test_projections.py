"""Read models, metrics, replay, export/import and the debugging CLI (issue 4)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from actors import (
    execute_workflow_dag,
    get_workflow_metrics,
    rebuild_projections,
    replay_execution,
    wait_for_workflow,
)
from events import EventStore, event_to_row, fold
from projections import ProjectionRunner, execution_row
from tests.conftest import REPO, create_database
from tests.integration.helpers import events_of, register_chain, stage

pytestmark = pytest.mark.usefixtures("ray_session")


def wfdag(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "actors.cli", *args], cwd=REPO, env=full,
                          text=True, capture_output=True, timeout=120, check=False)


async def _row(store: EventStore, eid: str) -> dict[str, Any]:
    from projections.executions import COLUMNS

    record = await store.pool.fetchrow(
        f"SELECT {', '.join(COLUMNS)} FROM workflow_executions WHERE id = $1::uuid", eid)
    assert record is not None
    return {**dict(record), "id": str(record["id"])}


async def test_thirty_concurrent_executions_rows_equal_the_fold(store: EventStore) -> None:
    # Thirty first calls fail at once: a breaker that opens on them would make every run wait
    # its cooldown (breakers defer, issue 15); this test is about the read model, not breakers.
    dag = await register_chain("thirty", [
        stage("a", "noop"),
        stage("b", "flaky_once", retry="STANDARD", circuit_breaker={"failure_threshold": 100}),
        stage("c", "noop")])
    ids = await asyncio.gather(*[execute_workflow_dag(dag.id, {"n": i}, "t") for i in range(30)])
    await asyncio.gather(*[wait_for_workflow(eid, timeout=120) for eid in ids])
    for eid in ids:
        events = await store.read(eid)
        state = fold(events)
        row = await _row(store, eid)
        assert row == execution_row(None, [event_to_row(e) for e in events])
        assert (row["status"], row["current_stage"], row["last_seq"]) == (
            state.status, state.current_stage, state.version)
        assert [s["stage_id"] for s in row["context"]["executed_steps"]] == state.completed_stages
        assert row["completed_at"] == state.completed_at


async def _table(pool: asyncpg.Pool, table: str, order: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(f"SELECT * FROM {table} ORDER BY {order}")]


async def test_rebuild_reproduces_the_read_models_exactly(store: EventStore) -> None:
    eid = await execute_workflow_dag("parallel-value-lifecycle-v1", {"projectId": "r"}, "t")
    await wait_for_workflow(eid, timeout=60)
    await ProjectionRunner(store.pool).catch_up()
    tables = {"workflow_executions": "id", "metrics_executions": "execution_id",
              "metrics_stages": "execution_id, stage_id"}
    before = {t: await _table(store.pool, t, o) for t, o in tables.items()}
    assert len(before["workflow_executions"]) > 10
    report = await rebuild_projections()
    assert report["executions"] == len(before["workflow_executions"])
    after = {t: await _table(store.pool, t, o) for t, o in tables.items()}
    assert after == before
    assert await ProjectionRunner(store.pool).catch_up() == 0


async def test_metrics_are_exact_after_known_runs(tmp_dir: Path) -> None:
    undo = "tests.agents:undo_recorder"
    dag = await register_chain("metrics", [
        stage("first", "noop", compensation_handler=undo),
        stage("flaky", "flaky_once", retry="STANDARD")])
    ok = [await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "t") for _ in range(2)]
    bad = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir), "fail": True}, "t")
    for eid in [*ok, bad]:
        await wait_for_workflow(eid, timeout=60)
    metrics = await get_workflow_metrics(dag.id)
    assert json.loads(json.dumps(metrics)) == metrics
    assert {k: metrics[k] for k in ("total", "completed", "failed", "rolled_back",
                                    "success_rate", "compensations", "breaker_opens")} == {
        "total": 3, "completed": 2, "failed": 0, "rolled_back": 1, "success_rate": 0.6667,
        "compensations": 1, "breaker_opens": 0}
    assert metrics["avg_duration_ms"] > 0
    assert metrics["p95_duration_ms"] >= metrics["avg_duration_ms"] * 0.5
    first, flaky = metrics["stages"]["first"], metrics["stages"]["flaky"]
    assert (first["runs"], first["retries"], first["failures"]) == (3, 0, 0)
    assert (flaky["runs"], flaky["retries"], flaky["failures"]) == (3, 2, 1)
    # Each retried run waited ~500 ms of backoff: the stage's wall time shows it.
    assert flaky["avg_duration_ms"] >= 250


async def test_replay_until_the_first_completed_stage() -> None:
    eid = await execute_workflow_dag("opportunity-discovery-v1", {"projectId": "x"}, "t")
    await wait_for_workflow(eid, timeout=60)
    events = await events_of(eid)
    first_done = next(e.seq for e in events if e.type == "stage_completed")
    snap = await replay_execution(eid, until_seq=first_done)
    assert snap.completed_stages == ["opportunity_research"]
    assert snap.status == "in_progress"
    assert snap.last_seq == first_done
    assert snap.attempts["opportunity_research"] == 1
    final = await replay_execution(eid)
    assert final.status == "completed" and final.last_seq == len(events)


async def test_cli_replay_graph_metrics_rebuild_and_bad_input(tmp_dir: Path) -> None:
    eid = await execute_workflow_dag("realization-tracking-v1", {"projectId": "g"}, "t")
    await wait_for_workflow(eid, timeout=60)
    n = len(await events_of(eid))

    history = wfdag("replay", eid)
    assert history.returncode == 0, history.stderr
    assert len(history.stdout.splitlines()) == n
    assert "status=completed" in history.stdout.splitlines()[-1]
    point = wfdag("replay", eid, "--until", "4")
    assert point.returncode == 0 and "after event 4" in point.stdout
    assert "completed    data_collection" in point.stdout
    for bad in (["replay", str(uuid.uuid4())], ["replay", "nope"], ["graph", str(uuid.uuid4())],
                ["metrics", "no-such-flow"], ["replay", eid, "--until", "0"],
                ["replay", eid, "--until", str(n + 1)]):
        result = wfdag(*bad)
        assert result.returncode != 0, bad
        assert "Traceback" not in result.stderr and "error:" in result.stderr, bad

    mermaid = wfdag("graph", "parallel-value-lifecycle-v1")
    assert mermaid.returncode == 0
    assert "opportunity_discovery --> target_definition" in mermaid.stdout
    dot = wfdag("graph", "realization-tracking-v1", "--format", "dot")
    assert '"stakeholder_reporting" -> "intervention_planning" [label=' in dot.stdout
    svg_path = tmp_dir / "run.svg"
    svg = wfdag("graph", eid, "--format", "svg", "-o", str(svg_path))
    assert svg.returncode == 0, svg.stderr
    picture = svg_path.read_text()
    assert picture.startswith("<svg") and "#a6e3a1" in picture and "#d0d0d0" in picture
    assert "intervention_planning · skipped" in picture

    metrics = wfdag("metrics", "realization-tracking-v1", "--json")
    assert metrics.returncode == 0, metrics.stderr
    assert json.loads(metrics.stdout)["completed"] >= 1
    table = wfdag("metrics")
    assert table.returncode == 0 and "realization-tracking-v1" in table.stdout
    rebuilt = wfdag("projections", "rebuild")
    assert rebuilt.returncode == 0 and "rebuilt from" in rebuilt.stdout


def test_cli_validate_names_the_stage(tmp_dir: Path) -> None:
    good = tmp_dir / "good.json"
    from definitions import CANONICAL_WORKFLOWS

    good.write_text(json.dumps(CANONICAL_WORKFLOWS["parallel-value-lifecycle-v1"].model_dump(
        mode="json")))
    ok = wfdag("validate", str(good))
    assert ok.returncode == 0 and "is valid" in ok.stdout
    bad = tmp_dir / "bad.yaml"
    bad.write_text("""
id: bad-v1
name: Bad
version: 1
initial_stage: a
final_stages: [c]
stages:
  - {id: a, name: A, agent_type: target, timeout_seconds: 5}
  - {id: b, name: B, agent_type: target, timeout_seconds: -1}
  - {id: c, name: C, agent_type: target, timeout_seconds: 5, colour: red}
transitions:
  - {from_stage: a, to_stage: b}
""")
    shape = wfdag("validate", str(bad))
    assert shape.returncode == 1
    assert "stage 'b'.timeout_seconds" in shape.stderr and "stage 'c'.colour" in shape.stderr
    graph = tmp_dir / "cycle.yaml"
    graph.write_text(bad.read_text().replace("-1", "5").replace(", colour: red", "")
                     + "  - {from_stage: b, to_stage: c}\n  - {from_stage: c, to_stage: b}\n")
    cycle = wfdag("validate", str(graph))
    assert cycle.returncode == 1 and "cycle" in cycle.stderr and "'c'" not in cycle.stdout
    missing = wfdag("validate", str(tmp_dir / "nope.json"))
    assert missing.returncode != 0 and "cannot read" in missing.stderr


async def test_export_import_into_an_empty_database_replays_the_same(
    server_url: str, tmp_dir: Path
) -> None:
    eid = await execute_workflow_dag("parallel-value-lifecycle-v1", {"projectId": "e"}, "t")
    await wait_for_workflow(eid, timeout=60)
    exported = wfdag("events", eid, "--json")
    assert exported.returncode == 0
    dump = tmp_dir / "log.jsonl"
    dump.write_text(exported.stdout)

    other = {"WFDAG_DATABASE_URL": await create_database(server_url, "wfdag_import")}
    imported = wfdag("import", str(dump), env=other)
    assert imported.returncode == 0, imported.stderr
    again = wfdag("import", str(dump), env=other)
    assert again.returncode == 1 and "absent from this database" in again.stderr
    # A point inside the log: its length varies (this input fails integrity_setup, and the
    # parallel target_definition may complete or be cancelled first: 15 or 18 events).
    until = len(exported.stdout.splitlines()) - 1
    assert until >= 14
    there = wfdag("replay", eid, "--until", str(until), "--json", env=other)
    assert there.returncode == 0, there.stderr
    here = await replay_execution(eid, until_seq=until)
    assert json.loads(there.stdout) == here.model_dump(mode="json")
    status = wfdag("status", eid, env=other)
    assert status.returncode == 0 and "completed" in status.stdout
    garbage = tmp_dir / "garbage.jsonl"
    garbage.write_text('{"type": "stage_started"}\n')
    refused = wfdag("import", str(garbage), env=other)
    assert refused.returncode == 2 and "line 1 is not a wfdag event" in refused.stderr


async def test_the_projection_actor_keeps_metrics_live(store: EventStore) -> None:
    from actors import initialize_workflow_system
    from tests.integration.helpers import eventually

    await initialize_workflow_system()  # starts wfdag-projections
    eid = await execute_workflow_dag("opportunity-discovery-v1", {"projectId": "live"}, "t")
    await wait_for_workflow(eid, timeout=60)

    async def projected() -> bool:
        row = await store.pool.fetchrow(
            "SELECT status FROM metrics_executions WHERE execution_id = $1::uuid", eid)
        return row is not None and row["status"] == "completed"

    await eventually(projected, timeout=30, what="the projection actor to apply the run")


async def test_metrics_say_unknown_until_a_run_ends_and_count_imported_executions(
    server_url: str, tmp_dir: Path,
) -> None:
    """Issue 15's numbers: no ended run is an unknown success rate, not 0 %; an imported
    execution's workflow (not registered in the database it was imported into) has metrics;
    a replay past the end of the log says so."""
    dag = await register_chain("numbers", [stage("a", "noop")])
    assert (await get_workflow_metrics(dag.id))["success_rate"] is None
    eid = await execute_workflow_dag(dag.id, {"dir": str(tmp_dir)}, "t")
    assert (await wait_for_workflow(eid, timeout=60)).status == "completed"
    assert (await get_workflow_metrics(dag.id))["success_rate"] == 1.0
    dump = tmp_dir / "numbers.jsonl"
    dump.write_text(wfdag("events", eid, "--json").stdout)
    other = {"WFDAG_DATABASE_URL": await create_database(server_url, "wfdag_numbers")}
    assert wfdag("import", str(dump), env=other).returncode == 0
    there = wfdag("metrics", dag.id, "--json", env=other)
    assert there.returncode == 0, there.stderr
    assert json.loads(there.stdout)["completed"] == 1
    past = wfdag("replay", eid, "--until", "999")
    assert past.returncode == 2 and "is past its end" in past.stderr
