"""Issue 15: runners cut off from PostgreSQL by a partition never overlap a stage with the
runners that take over, and serve again on their own once it heals (``partition.py``)."""

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
def test_partitioned_runners_never_overlap_a_stage_and_recover(server_url: str,
                                                                tmp_dir: Path) -> None:
    env = isolated_env(PYTHONPATH=str(REPO), WFDAG_POOL_SIZE="4", WFDAG_RAY_DASHBOARD="0",
                       WFDAG_WARM_WORKERS="4", WFDAG_DATABASE_URL=new_database(
                           server_url, "wfdag_partition"), WFDAG_PARTITION_DIR=str(tmp_dir),
                       WFDAG_HOME=str(tmp_dir / "home"))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("partition.py"))],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=360)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"the partition scenario timed out:\n{stderr[-5000:]}") from None
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, (stdout + stderr)[-6000:]
    result = json.loads(lines[-1])
    print(json.dumps(result, indent=2))
    assert result["completed"] == result["executions"] == 4, (result, stderr[-4000:])
    assert result["overlapping"] == 0, result  # never two processes at once
    # Each stage ran in A's process, was stopped, and ran again in B's: a real takeover.
    assert all(n >= 2 for n in result["processes_per_stage"]), result
    # A's attempts stopped within FENCE_SECONDS (5 s) and a beat; B waited TAKEOVER_SECONDS.
    assert len(result["fenced_after_s"]) == 4, result
    assert all(t <= 8 for t in result["fenced_after_s"]), result
    assert all(12 <= t <= 40 for t in result["takeover_after_s"]), result
    assert result["healed_runner_completed"], (result, stderr[-4000:])
