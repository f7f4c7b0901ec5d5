"""Issue 6, acceptance 3: losing the node that hosts an execution actor mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.conftest import base_env
from tests.conftest import REPO, new_database


@pytest.mark.timeout(400)
def test_losing_the_node_of_the_execution_actor_mid_run(server_url: str, tmp_path: Path) -> None:
    env = {**base_env(), "WFDAG_DATABASE_URL": new_database(server_url, "wfdag_nodes"),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("node_loss.py")),
                             str(tmp_path)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the scenario and the nodes it started
        stdout, stderr = proc.communicate()
        raise AssertionError(f"the node-loss scenario timed out:\n{stderr[-5000:]}") from None
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, (stdout + stderr)[-5000:]
    result = json.loads(lines[-1])
    assert result["status"] == "completed", result
    # Each stage completed once, and the log has no gap or duplicate.
    assert result["completed"] == ["one", "two", "three", "four"], result
    assert result["seqs"] == list(range(1, len(result["seqs"]) + 1))
    # Each stage's side effect happened once per idempotency key.
    effects = sorted(p.name for p in tmp_path.glob("effect-*"))
    assert len(effects) == 4, effects
    # The embedded default database is refused on this multi-node cluster, saying what to do.
    refused = result["embedded_refused"]
    assert refused is not None and "set WFDAG_DATABASE_URL" in refused, refused
    assert "2 nodes" in refused  # three, less the one removed
