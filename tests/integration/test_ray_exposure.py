"""When wfdag starts Ray itself, everything it starts listens on loopback only: the dashboard
and job API, Ray's agents, raylet and GCS, the workers — and the driver (issue 15)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, isolated_env

_PROBE = """
import json, psutil, ray
from actors.ray_session import ensure_ray
ensure_ray()
url = ray._private.worker.global_worker.node.address_info["webui_url"]
port = int(url.rsplit(":", 1)[1])
me = psutil.Process()
started = {p.pid: p.name() for p in me.children(recursive=True)}
started[me.pid] = "driver"
sockets = [(started[c.pid], c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet")
           if c.status == psutil.CONN_LISTEN and c.pid in started]
dashboard = sorted({ip for _, ip, p in sockets if p == port})
print(json.dumps({"url": url, "port": port, "dashboard": dashboard, "sockets": sockets,
                  "processes": sorted(set(started.values()))}))
ray.shutdown()
"""

LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def test_every_listener_of_a_local_ray_is_on_loopback() -> None:
    env = isolated_env(WFDAG_RAY_DASHBOARD="1", WFDAG_WARM_WORKERS="2")
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=180, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    probe = json.loads(lines[-1])
    assert probe["url"].startswith("127.0.0.1:"), probe
    assert probe["dashboard"] == ["127.0.0.1"], probe
    owners = {name for name, _ip, _port in probe["sockets"]}
    # The probe saw the listeners it claims to check: Ray's core processes and its agents.
    assert {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= owners, \
        probe
    exposed = [s for s in probe["sockets"] if s[1] not in LOOPBACK]
    assert exposed == [], probe
