"""Schedules fired by real services (issue 14): two services — two local Rays — on one
database, one schedule whose slots are two seconds apart.  One leads; each slot fires once;
when the leader dies (SIGKILL of its whole session) the other takes over."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from actors.service.record import pid_alive
from tests.conftest import new_database
from tests.service.test_service import Service

FLOW = """
id: tick-flow-v1
name: Tick
version: 1
initial_stage: one
final_stages: [one]
stages:
  - {id: one, name: One, agent: "tests.agents:noop", timeout_seconds: 30}
"""


@pytest.fixture
def services(server_url: str, tmp_path: Path) -> Iterator[tuple[Service, Service]]:
    url = new_database(server_url, "wfdag_sched")
    pair = (Service(tmp_path / "a", url), Service(tmp_path / "b", url))
    yield pair
    for svc in pair:
        svc.wfdag("server", "stop", timeout=120)


def fires(svc: Service) -> list[dict[str, Any]]:
    shown = svc.wfdag("schedule", "history", "every-2s", "--json", "--limit", "1000")
    assert shown.returncode == 0, shown.stderr
    return [r for r in json.loads(shown.stdout) if r["action"] == "fired"]


def wait_fires(svc: Service, count: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(found := fires(svc)) < count:
        assert time.monotonic() < deadline, f"{len(found)} fires after {timeout}s, not {count}"
        time.sleep(0.5)
    return found


def pid_of(svc: Service) -> int | None:
    record = svc.record()
    return int(record["pid"]) if record else None


def slots(rows: list[dict[str, Any]]) -> list[datetime]:
    return [datetime.fromisoformat(r["details"]["slot"]) for r in rows]


def test_two_services_fire_each_slot_once_and_the_survivor_takes_over(
    services: tuple[Service, Service], tmp_path: Path,
) -> None:
    a, b = services
    flow = tmp_path / "tick.yaml"
    flow.write_text(FLOW)
    assert a.wfdag("register", str(flow)).returncode == 0
    for svc in (a, b):
        started = svc.wfdag("server", "start")
        assert started.returncode == 0, started.stderr
    created = a.wfdag("schedule", "create", "tick-flow-v1", "* * * * * */2", "--id", "every-2s",
                      "--overlap", "allow", "--context", "{}", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["cron"] == "* * * * * */2"

    rows = wait_fires(a, 4, timeout=60)
    leader = {r["details"]["scheduler"] for r in rows}
    assert len(leader) == 1, f"two schedulers fired: {leader}"
    fired = slots(rows)
    assert len(set(fired)) == len(fired), "a slot fired twice"
    assert all((y - x).total_seconds() == 2 for x, y in itertools.pairwise(fired))

    # The leader dies with its Ray: the other service leads once the lease lapses.
    pid = int(next(iter(leader)).split(":")[1])
    dead, alive = (a, b) if pid_of(a) == pid else (b, a)
    assert pid_of(dead) == pid
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pid_alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    before = len(fires(alive))
    rows = wait_fires(alive, before + 3, timeout=60)
    holders = [r["details"]["scheduler"] for r in rows]
    assert holders[-1] != holders[0] and int(holders[-1].split(":")[1]) == pid_of(alive)
    fired = slots(rows)
    assert len(set(fired)) == len(fired) and fired == sorted(fired)
    listed = alive.wfdag("list", "--schedule", "every-2s", "--limit", "1000", "--json")
    assert listed.returncode == 0, listed.stderr
    ids = [item["execution_id"] for item in json.loads(listed.stdout)["items"]]
    assert len(ids) == len(set(ids)) >= len(rows)  # one execution per fire

    # Pause: nothing fires; trigger runs it anyway; delete removes it.
    paused = alive.wfdag("schedule", "pause", "every-2s", "--json")
    assert paused.returncode == 0 and json.loads(paused.stdout)["paused"]
    paused_at = time.monotonic()
    count = len(fires(alive))
    triggered = alive.wfdag("schedule", "trigger", "every-2s", "--json")
    assert triggered.returncode == 0, triggered.stderr
    eid = json.loads(triggered.stdout)["execution_id"]
    assert alive.wait_for(eid, "completed", 60)["audit_context"]["schedule_id"] == "every-2s"
    while time.monotonic() - paused_at < 4:  # two slots' time passes while it is paused
        time.sleep(0.2)
    assert len(fires(alive)) == count, "a paused schedule fired"
    shown = alive.wfdag("schedule", "list")
    assert shown.returncode == 0 and "every-2s" in shown.stdout and "paused" in shown.stdout
    assert alive.wfdag("schedule", "delete", "every-2s").returncode == 0
    gone = alive.wfdag("schedule", "show", "every-2s")
    assert gone.returncode == 3 and "schedule 'every-2s' not found" in gone.stderr
