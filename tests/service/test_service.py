"""The wfdag service, as an operator uses it: its own $WFDAG_HOME, database and local Ray.

One service is started (by `wfdag run`, on its own), used, stopped mid-stage and started
again; every step goes through the `wfdag` command line in processes of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from actors.service.record import pid_alive
from tests.conftest import REPO, isolated_env, new_database

WORKFLOW = """
id: service-flow-v1
name: Service flow
version: 1
initial_stage: one
final_stages: [two]
stages:
  - {id: one, name: One, agent: "tests.agents:effectful", timeout_seconds: 60,
     retry_config: STANDARD}
  - {id: two, name: Two, agent: "tests.agents:effectful", timeout_seconds: 60,
     retry_config: STANDARD}
transitions:
  - {from_stage: one, to_stage: two}
"""


CANCEL_FLOW = """
id: service-cancel-v1
name: Cancel flow
version: 1
initial_stage: one
final_stages: [two]
stages:
  - {id: one, name: One, agent: "tests.agents:effectful", timeout_seconds: 60,
     compensation_handler: "tests.agents:undo_recorder"}
  - {id: two, name: Two, agent: "tests.agents:long_running", timeout_seconds: 120}
transitions:
  - {from_stage: one, to_stage: two}
"""


TIMER_FLOW = """
id: service-timer-v1
name: Timer
version: 1
initial_stage: nap
final_stages: [after]
stages:
  - {id: nap, name: Nap, kind: timer, delay_seconds: 3, timeout_seconds: 60}
  - {id: after, name: After, agent: "tests.agents:noop", timeout_seconds: 30}
transitions:
  - {from_stage: nap, to_stage: after}
"""

GATE_FLOW = """
id: service-gate-v1
name: Gate
version: 1
initial_stage: gate
final_stages: [after]
stages:
  - {id: gate, name: Gate, kind: approval, timeout_seconds: 3600}
  - {id: after, name: After, agent: "tests.agents:noop", timeout_seconds: 30}
transitions:
  - {from_stage: gate, to_stage: after}
"""

# Run against the service by a script: 50 parked executions, then one that must not wait for
# a runner, then the 50 approved.  Prints "ok" when every step held (deadlines, not sleeps).
WAIT_50 = """
import sys, time, actors
from actors.runtime import settings
assert settings().pool_size == 2
ids = [actors.execute_workflow_dag_sync("service-gate-v1", {}, "script") for _ in range(50)]
deadline = time.monotonic() + 120
while any(actors.get_workflow_status_sync(i).status != "waiting" for i in ids):
    assert time.monotonic() < deadline, "not all 50 parked"
    time.sleep(0.2)
quick = actors.execute_workflow_dag_sync("service-flow-v1", {"dir": sys.argv[1]}, "s")
assert actors.wait_for_workflow_sync(quick, timeout=30).status == "completed"
for i in ids:
    actors.approve_stage_sync(i, "gate", "approver")
for i in ids:
    assert actors.wait_for_workflow_sync(i, timeout=120).status == "completed"
print("ok")
"""


class Service:
    def __init__(self, home: Path, url: str) -> None:
        self.home = home
        self.url = url
        self.env = isolated_env(WFDAG_HOME=str(home), WFDAG_DATABASE_URL=url,
                                WFDAG_POOL_SIZE="2", WFDAG_RAY_DASHBOARD="0",
                                WFDAG_WARM_WORKERS="2", PYTHONPATH=str(REPO))
        self.env.pop("RAY_AUTH_MODE", None)

    def wfdag(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "actors.cli", *args], cwd=REPO,
                              env=self.env, text=True, capture_output=True, timeout=timeout,
                              check=False)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "actors.cli", *args], cwd=REPO,
                                env=self.env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def record(self) -> dict[str, Any] | None:
        path = self.home / "service.json"
        return json.loads(path.read_text()) if path.exists() else None

    def status_of(self, eid: str) -> dict[str, Any]:
        result = self.wfdag("status", eid, "--json", timeout=60)
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    def wait_for(self, eid: str, status: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            current = self.status_of(eid)
            if current["status"] == status:
                return current
            assert time.monotonic() < deadline, f"{eid} is {current['status']}, not {status}"
            time.sleep(0.3)

    def calls(self, work: Path, stage: str) -> int:
        path = work / f"calls-{stage}"
        return len(path.read_text().splitlines()) if path.exists() else 0


def _session_members(sid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,sid=,args="], text=True, capture_output=True,
                         check=True).stdout
    # A zombie is dead (only its exit status waits for a parent that may never collect it).
    return [line for line in out.splitlines()
            if line.split()[1:2] == [str(sid)] and line.split()[0] != str(sid)
            and "<defunct>" not in line]


@pytest.fixture
def service(server_url: str, tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path / "home", new_database(server_url, "wfdag_service"))
    yield svc
    svc.wfdag("server", "stop", timeout=120)


def test_the_service_owns_executions_started_from_the_cli(service: Service,
                                                            tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    flow = tmp_path / "flow.yaml"
    flow.write_text(WORKFLOW)
    down = service.wfdag("server", "status")
    assert down.returncode == 1 and "down" in down.stdout

    registered = service.wfdag("register", str(flow))
    assert registered.returncode == 0, registered.stderr
    assert "registered service-flow-v1 v1" in registered.stdout

    # `run` without --wait starts the service (saying so), prints the id and returns.
    context = json.dumps({"dir": str(work), "seconds": 0.2})
    started = service.wfdag("run", "service-flow-v1", "--context", context)
    assert started.returncode == 0, started.stderr
    assert "started the wfdag service" in started.stderr and "wfdag server stop" in started.stderr
    eid = started.stdout.strip().splitlines()[-1]
    assert service.wait_for(eid, "completed", 60)["workflow_id"] == "service-flow-v1"

    status = service.wfdag("server", "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["up"] and report["runners"] == 2
    assert "already running" in service.wfdag("server", "start").stderr

    # A `run --wait` killed with SIGKILL mid-stage: the service sees the execution through.
    context = json.dumps({"dir": str(work), "seconds": 3})
    before = service.calls(work, "one")  # before the run: its stage may start at once
    waiting = service.popen("run", "service-flow-v1", "--context", context, "--wait")
    assert waiting.stdout is not None
    eid = waiting.stdout.readline().strip()
    deadline = time.monotonic() + 60
    while service.calls(work, "one") == before:
        assert time.monotonic() < deadline, "stage one never started"
        time.sleep(0.1)
    waiting.send_signal(signal.SIGKILL)
    waiting.wait(timeout=30)
    service.wait_for(eid, "completed", 90)
    effects = sorted(p.name for p in work.glob(f"effect-{eid}_*"))
    assert effects == [f"effect-{eid}_one", f"effect-{eid}_two"], effects

    # Stopped mid-stage: nothing of the service is left; started again, it resumes.
    slow = service.wfdag("run", "service-flow-v1", "--context", context)
    eid = slow.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 60
    while service.status_of(eid)["status"] != "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    record = service.record()
    assert record is not None
    stopped = service.wfdag("server", "stop", timeout=120)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    assert service.record() is None
    assert not _session_members(record["pid"]), "processes of the service outlived it"
    assert not pid_alive(record["pid"]), "the service process is still alive"
    assert service.status_of(eid)["status"] == "in_progress"  # waiting for a runner
    again = service.wfdag("server", "start")
    assert again.returncode == 0, again.stderr
    done = service.wait_for(eid, "completed", 90)
    assert [s["stage_id"] for s in done["context"]["executed_steps"]] == ["one", "two"]
    effects = sorted(p.name for p in work.glob(f"effect-{eid}_*"))
    assert effects == [f"effect-{eid}_one", f"effect-{eid}_two"], effects

    # A script uses the service too: it starts no Ray, and what it started completes after it.
    script = (
        "import json, sys, ray, actors\n"
        "actors.initialize_workflow_system_sync()\n"
        "eid = actors.execute_workflow_dag_sync('service-flow-v1', json.loads(sys.argv[1]), "
        "'script')\n"
        "print(eid, ray.is_initialized())\n")
    scripted = subprocess.run(
        [sys.executable, "-c", script, json.dumps({"dir": str(work), "seconds": 0.5})],
        cwd=REPO, env=service.env, text=True, capture_output=True, timeout=120, check=False)
    assert scripted.returncode == 0, scripted.stderr
    script_eid, ray_started = scripted.stdout.split()
    assert ray_started == "False", "a script with the service up starts no Ray of its own"
    service.wait_for(script_eid, "completed", 60)

    # What ran is listed, newest first.
    listed = service.wfdag("list", "--status", "completed", "--workflow", "service-flow-v1",
                           "--json")
    assert listed.returncode == 0, listed.stderr
    assert eid in [i["execution_id"] for i in json.loads(listed.stdout)["items"]]

    # Cancel: two executions in their 60 s stage hold both runners; a third waits its turn.
    flow = tmp_path / "cancel.yaml"
    flow.write_text(CANCEL_FLOW)
    assert service.wfdag("register", str(flow)).returncode == 0
    dirs = {name: tmp_path / name for name in ("a", "b", "c")}
    ids: dict[str, str] = {}
    for name, where in dirs.items():
        where.mkdir()
        if name == "c":
            for busy in ("a", "b"):
                deadline = time.monotonic() + 60
                while not (dirs[busy] / "two.pid").exists():
                    assert time.monotonic() < deadline, f"{busy} never reached its 60 s stage"
                    time.sleep(0.1)
        ctx = json.dumps({"dir": str(where), "seconds": 0.1, "seconds_two": 60})
        started = service.wfdag("run", "service-cancel-v1", "--context", ctx)
        assert started.returncode == 0, started.stderr
        ids[name] = started.stdout.strip().splitlines()[-1]
    assert service.status_of(ids["c"])["status"] == "queued"

    queued = service.wfdag("cancel", ids["c"], "--reason", "not needed")
    assert queued.returncode == 0, queued.stderr
    service.wait_for(ids["c"], "cancelled", 30)
    assert not any(dirs["c"].iterdir()), "a queued execution is cancelled without running"

    pid = int((dirs["a"] / "two.pid").read_text().split()[0])
    stopped = service.wfdag("cancel", ids["a"], "--wait", "--timeout", "30")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip().splitlines()[-1] == "cancelled"
    deadline = time.monotonic() + 15
    while pid_alive(pid):
        assert time.monotonic() < deadline, "the cancelled stage's process is still there"
        time.sleep(0.1)
    assert not (dirs["a"] / "finished-two").exists()

    undone = service.wfdag("cancel", ids["b"], "--compensate", "--wait", "--timeout", "30")
    assert undone.returncode == 0, undone.stderr
    assert undone.stdout.strip().splitlines()[-1].startswith("rolled_back")
    assert (dirs["b"] / "undo-order").read_text().split() == ["one"]

    again = service.wfdag("cancel", ids["a"])
    assert again.returncode == 0 and "cancelled already" in again.stderr
    ended = service.wfdag("cancel", eid)
    assert ended.returncode == 1 and "is completed: a cancel needs" in ended.stderr

    # The service killed with SIGKILL mid-stage: a new start clears what was left of it and
    # sees the execution through; each side effect happened once.
    killed_work = tmp_path / "killed"
    killed_work.mkdir()
    ctx = json.dumps({"dir": str(killed_work), "seconds": 3})
    victim = service.wfdag("run", "service-flow-v1", "--context", ctx)
    victim_id = victim.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 60
    while service.calls(killed_work, "one") == 0:
        assert time.monotonic() < deadline, "stage one never started"
        time.sleep(0.1)
    dead = service.record()
    assert dead is not None
    os.kill(dead["pid"], signal.SIGKILL)
    again = service.wfdag("server", "start")
    assert again.returncode == 0, again.stderr
    assert not _session_members(dead["pid"]), "the killed service left processes behind"
    service.wait_for(victim_id, "completed", 120)
    effects = sorted(p.name for p in killed_work.glob(f"effect-{victim_id}_*"))
    assert effects == [f"effect-{victim_id}_one", f"effect-{victim_id}_two"], effects

    # The service's Ray killed under it (its GCS and raylet, SIGKILL) mid-stage: the same
    # service starts a new one within seconds; its new runners see the execution through.
    ray_work = tmp_path / "raydeath"
    ray_work.mkdir()
    ctx = json.dumps({"dir": str(ray_work), "seconds": 3})
    doomed = service.wfdag("run", "service-flow-v1", "--context", ctx)
    doomed_id = doomed.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 60
    while service.calls(ray_work, "one") == 0:
        assert time.monotonic() < deadline, "stage one never started"
        time.sleep(0.1)
    owner = service.record()
    assert owner is not None
    import psutil

    vital = [p for p in psutil.Process(owner["pid"]).children(recursive=True)
             if p.name() in ("gcs_server", "raylet")]
    assert len(vital) == 2, vital
    for proc in vital:
        proc.kill()
    service.wait_for(doomed_id, "completed", 120)
    effects = sorted(p.name for p in ray_work.glob(f"effect-{doomed_id}_*"))
    assert effects == [f"effect-{doomed_id}_one", f"effect-{doomed_id}_two"], effects
    survivor = service.record()
    assert survivor is not None and survivor["pid"] == owner["pid"]  # the same service
    status = service.wfdag("server", "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["runners"] == 2, status

    # Waiting holds no runner: with two runners, 50 executions wait on an approval, a new
    # one still runs at once; then all 50 are approved and complete.
    gate = tmp_path / "gate.yaml"
    gate.write_text(GATE_FLOW)
    assert service.wfdag("register", str(gate)).returncode == 0
    quick_dir = tmp_path / "quick"
    quick_dir.mkdir()
    many = subprocess.run([sys.executable, "-c", WAIT_50, str(quick_dir)], cwd=REPO,
                          env=service.env,
                          text=True, capture_output=True, timeout=300, check=False)
    assert many.returncode == 0, many.stderr
    assert many.stdout.split()[-1] == "ok", many.stdout

    # A timer that falls due while the service is down fires when it is back, once.
    timer = tmp_path / "timer.yaml"
    timer.write_text(TIMER_FLOW)
    assert service.wfdag("register", str(timer)).returncode == 0
    nap = service.wfdag("run", "service-timer-v1")
    nap_id = nap.stdout.strip().splitlines()[-1]
    asleep = service.wait_for(nap_id, "waiting", 60)
    wake_at = datetime.fromisoformat(asleep["audit_context"]["waiting"]["wake_at"])
    assert service.wfdag("server", "stop").returncode == 0
    deadline = time.monotonic() + 30
    while datetime.now(UTC) <= wake_at:  # the timer falls due while nothing runs
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert service.status_of(nap_id)["status"] == "waiting"
    assert service.wfdag("server", "start").returncode == 0
    service.wait_for(nap_id, "completed", 60)
    log = service.wfdag("events", nap_id, "--json")
    kinds = [json.loads(line)["type"] for line in log.stdout.splitlines()]
    assert kinds.count("stage_waiting") == 1 and kinds.count("stage_completed") == 2

    # Under a supervisor: --foreground runs the service in that process, SIGTERM ends it.
    assert service.wfdag("server", "stop").returncode == 0
    supervised = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "server", "start", "--foreground"], cwd=REPO,
        env=service.env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while service.wfdag("server", "status").returncode != 0:
            assert supervised.poll() is None, supervised.communicate()[1]
            assert time.monotonic() < deadline, "the foreground service never came up"
            time.sleep(0.5)
        record = service.record()
        assert record is not None and record["pid"] == supervised.pid
        second = service.wfdag("server", "start", "--foreground")
        assert second.returncode == 1 and "already running" in second.stderr
        supervised.send_signal(signal.SIGTERM)
        assert supervised.wait(timeout=60) == 0, supervised.communicate()[1]
        assert service.record() is None
    finally:
        if supervised.poll() is None:
            supervised.kill()
