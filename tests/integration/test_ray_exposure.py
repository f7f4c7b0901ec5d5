"""When wfdag starts Ray itself, its dashboard and job API listen on loopback only."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, isolated_env

_PROBE = """
import json, psutil, ray
from urllib.parse import urlsplit
from actors.runtime import ensure_ray
ensure_ray()
url = ray._private.worker.global_worker.node.address_info["webui_url"]
port = int(url.rsplit(":", 1)[1])
listening = sorted({c.laddr.ip for c in psutil.net_connections("inet")
                    if c.status == psutil.CONN_LISTEN and c.laddr.port == port})
print(json.dumps({"url": url, "port": port, "listening": listening}))
ray.shutdown()
"""


def test_the_local_dashboard_and_job_api_listen_on_loopback_only() -> None:
    env = isolated_env(WFDAG_RAY_DASHBOARD="1", WFDAG_WARM_WORKERS="0")
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=180, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    probe = json.loads(lines[-1])
    assert probe["url"].startswith("127.0.0.1:"), probe
    assert probe["listening"] == ["127.0.0.1"], probe
