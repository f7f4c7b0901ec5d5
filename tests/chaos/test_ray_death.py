"""Issue 15: the local Ray killed outright (every process of it) while executions run; the
next ``initialize_workflow_system()`` starts a new one within a bound, and every execution
completes, each stage once, each side effect once per idempotency key (``raydeath.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, isolated_env, new_database

pytestmark = pytest.mark.chaos


@pytest.mark.timeout(400)
def test_a_killed_local_ray_under_load_recovers_and_each_execution_completes_once(
    server_url: str, tmp_dir: Path,
) -> None:
    env = isolated_env(PYTHONPATH=str(REPO), WFDAG_POOL_SIZE="4", WFDAG_RAY_DASHBOARD="0",
                       WFDAG_WARM_WORKERS="4", WFDAG_DATABASE_URL=new_database(
                           server_url, "wfdag_raydeath"), WFDAG_RAYDEATH_DIR=str(tmp_dir),
                       WFDAG_HOME=str(tmp_dir / "home"))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("raydeath.py"))],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=360)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"the Ray-death scenario timed out:\n{stderr[-5000:]}") from None
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, (stdout + stderr)[-6000:]
    result = json.loads(lines[-1])
    print(json.dumps(result, indent=2))
    assert result["killed_processes"] >= 3, result  # GCS, raylet and workers at least
    assert result["completed"] == result["executions"] == 8, (result, stderr[-4000:])
    assert result["recovered_s"] < 120, result  # bounded, not wedged
    assert result["stages_completed"] == 16 and result["stage_completions"] == [1], result
    assert result["side_effects"] == result["distinct_effect_keys"] == 16, result
