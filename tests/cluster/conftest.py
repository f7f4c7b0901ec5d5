"""Fixtures for the cluster tests: a separate Ray head (``ray start --head``, loopback only)
with its own fresh database, so that its execution actors are the only ones that see it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, isolated_env, new_database

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    """A separate process of these tests, with a small pool (2 execution actors)."""
    return isolated_env(WFDAG_POOL_SIZE="2")


@dataclass
class Head:
    address: str
    dashboard: str
    metrics_port: int
    database_url: str
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 180, cwd: Path = REPO,
            **extra_env: str) -> subprocess.CompletedProcess[str]:
        """Run a command as a separate driver process of this cluster."""
        env = {**self.env, "RAY_ADDRESS": self.address, "WFDAG_DATABASE_URL": self.database_url,
               **extra_env}
        return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None:
            raise AssertionError(f"`ray start --head` exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the Ray head did not listen on {port} within {timeout}s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def head(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Head]:
    """A Ray head started with ``ray start --head --block`` on loopback, with the dashboard
    (job API) and a Prometheus metrics port; stopped (only it) at the end of the module."""
    database_url = new_database(server_url, "wfdag_head")
    gcs, dash, metrics = free_port(), free_port(), free_port()
    env = base_env()
    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    args = [
        str(BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
        f"--port={gcs}", f"--dashboard-port={dash}", f"--metrics-export-port={metrics}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
        "--num-cpus=2",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env={**env, "WFDAG_DATABASE_URL": database_url},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_port(gcs, 90, proc)
        _wait_port(dash, 90, proc)
        yield Head(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", metrics, database_url, env)
    finally:
        # SIGTERM to `ray start --block` stops the processes of this head only (never
        # `ray stop`: it would stop every Ray on the machine, the suite's own included).
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
