"""wfdag against a Ray head started with ``ray start --head``: drivers that exit, a second
driver that waits, ``ray job submit`` of the example driver, and the ``wfdag_`` metrics on the
node's Prometheus endpoint."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.cluster.conftest import BIN, Head
from tests.conftest import REPO

EXAMPLES = REPO / "examples"


def _last_json(out: str) -> dict[str, object]:
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line in the driver's output:\n{out}"
    result: dict[str, object] = json.loads(lines[-1])
    return result


def test_an_execution_outlives_the_driver_that_started_it(head: Head) -> None:
    first = head.run(sys.executable, str(EXAMPLES / "driver.py"), "--no-wait",
                     "--stage-seconds", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    started = _last_json(first.stdout)
    # The driver is gone, and it left the execution unfinished (3 stages of 2 s each).
    assert started["status"] in ("queued", "initiated", "in_progress"), started
    eid = str(started["execution_id"])

    # A second driver, and the CLI, each follow it to the end.
    second = head.run(sys.executable, str(EXAMPLES / "driver.py"), "--wait-for", eid,
                      "--timeout", "120")
    assert second.returncode == 0, second.stderr[-3000:]
    assert _last_json(second.stdout) == {"execution_id": eid, "status": "completed",
                                         "error": None}
    cli = head.run(str(BIN / "wfdag"), "wait", eid, "--timeout", "30")
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert cli.stdout.strip() == "completed"
    events = head.run(str(BIN / "wfdag"), "events", eid, "--json")
    assert events.returncode == 0, events.stderr[-3000:]
    types = [json.loads(line)["type"] for line in events.stdout.splitlines()]
    assert types.count("stage_completed") == 3 and types[-1] == "workflow_completed"


def test_recover_on_the_cluster_reports_nothing_to_do(head: Head) -> None:
    out = head.run(str(BIN / "wfdag"), "recover", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["dead_lettered"] == [] and report["pool"] == 2


def test_wfdag_metrics_appear_on_the_prometheus_endpoint(head: Head) -> None:
    run = head.run(sys.executable, str(EXAMPLES / "driver.py"))
    assert run.returncode == 0, run.stderr[-3000:]
    url = f"http://127.0.0.1:{head.metrics_port}/metrics"
    wanted = ["wfdag_executions_started", "wfdag_executions_completed",
              "wfdag_stage_duration_ms_bucket", "wfdag_live_executions"]
    deadline = time.monotonic() + 90  # Ray exports application metrics every ~10 s
    text = ""
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        if all(name in text for name in wanted):
            break
        time.sleep(1)
    missing = [name for name in wanted if name not in text]
    assert not missing, f"not on {url}: {missing}"
    completed = [line for line in text.splitlines()
                 if line.startswith("ray_wfdag_executions_completed_total{")
                 and 'workflow_id="example-lead-scoring-v1"' in line]
    assert completed and float(completed[0].rsplit(" ", 1)[1]) >= 1, completed


@pytest.mark.timeout(400)
def test_ray_job_submit_of_the_example_driver_completes_a_workflow(head: Head) -> None:
    runtime_env = {"env_vars": {"WFDAG_DATABASE_URL": head.database_url, "WFDAG_POOL_SIZE": "2"}}
    job = head.run(str(BIN / "ray"), "job", "submit", "--address", head.dashboard,
                   "--working-dir", str(EXAMPLES), "--runtime-env-json", json.dumps(runtime_env),
                   "--", "python", "driver.py", timeout=360)
    assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
    result = _last_json(job.stdout)
    assert result["status"] == "completed", result


def test_the_console_on_a_cluster_head(head: Head, tmp_path: Path) -> None:
    """`wfdag server start` with RAY_ADDRESS joins the cluster, serves the console on the
    head's loopback; an execution a driver of the cluster starts is listed and shown there."""
    from tests.cluster.conftest import free_port

    port = free_port()
    env = {"WFDAG_HOME": str(tmp_path / "home"), "WFDAG_UI_PORT": str(port)}
    started = head.run(str(BIN / "wfdag"), "server", "start", **env)
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        assert f"console at http://127.0.0.1:{port}/" in started.stdout, started.stdout
        token = head.run(str(BIN / "wfdag"), "ui", "--token", **env).stdout.strip()
        run = head.run(sys.executable, str(EXAMPLES / "driver.py"), **env)
        assert run.returncode == 0, run.stderr[-3000:]
        eid = str(_last_json(run.stdout)["execution_id"])

        def get(path: str, auth: str | None = token) -> tuple[int, bytes]:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
            if auth is not None:
                request.add_header("Authorization", f"Bearer {auth}")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return int(response.status), bytes(response.read())
            except urllib.error.HTTPError as exc:
                return int(exc.code), bytes(exc.read())

        assert get("/api/executions", auth=None)[0] == 401
        status, body = get("/api/executions")
        assert status == 200, body[:500]
        assert eid in [item["execution_id"] for item in json.loads(body)["items"]]
        status, body = get(f"/api/executions/{eid}")
        assert status == 200, body[:500]
        shown = json.loads(body)
        assert shown["status"]["status"] == "completed"
        assert {s["status"] for s in shown["stages"]} == {"completed"}
        status, page = get(f"/executions/{eid}")
        assert status == 200 and b"<html" in page.lower()
        assert get(f"/api/executions/{eid}/graph.svg")[1].startswith(b"<svg")
    finally:
        stopped = head.run(str(BIN / "wfdag"), "server", "stop", **env)
        assert stopped.returncode == 0, stopped.stderr[-3000:]
