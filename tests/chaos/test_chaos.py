"""Issue 7's chaos suite: 100 executions while PostgreSQL crashes and restarts every 5-15 s
and 10 random execution actors are killed.  Must end 100 completed / 0 lost / 0 duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, isolated_env

pytestmark = pytest.mark.chaos


@pytest.mark.timeout(600)
def test_database_restarts_and_actor_kills_lose_and_duplicate_nothing() -> None:
    env = isolated_env(PYTHONPATH=str(REPO), WFDAG_POOL_SIZE="10", WFDAG_RAY_DASHBOARD="0")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("scenario.py"))],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"the chaos scenario timed out:\n{stderr[-5000:]}") from None
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, (stdout + stderr)[-6000:]
    result = json.loads(lines[-1])
    print(json.dumps(result, indent=2))  # the figures, for the record (pytest -s)
    assert result["executions"] == 100 and result["distinct_ids"] == 100, result
    assert (result["completed"], result["lost"], result["duplicated_stages"]) == (100, 0, 0), \
        result
    assert result["log_gaps"] == 0, result
    assert result["projection_caught_up"], result
    assert result["side_effects"] == 300, result  # once per idempotency key
    assert result["database_restarts"] >= 3 and result["actor_kills"] >= 8, result
