"""The console (issue 17), over HTTP against a real service process: its token on every route,
organizations kept apart, live server-sent events, and actions that are calls of the API."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, new_database
from tests.service.test_service import Service

FLOW = """
id: console-flow-v1
name: Console flow
version: 1
initial_stage: gate
final_stages: [show]
stages:
  - {id: gate, name: Gate, kind: approval, timeout_seconds: 3600}
  - {id: show, name: Show, agent: "tests.agents:html_output", timeout_seconds: 60}
transitions:
  - {from_stage: gate, to_stage: show}
"""


class Console:
    def __init__(self, url: str, token: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.token = token

    def request(self, method: str, path: str, *, token: str | None = "yes",
                org: str | None = None, body: Any = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        headers: dict[str, str] = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {self.token if token == 'yes' else token}"
        if org is not None:
            headers["X-Wfdag-Org"] = org
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, **kw: Any) -> Any:
        status, _, body = self.request(method, path, **kw)
        assert status == 200, (status, body[:300])
        return json.loads(body)


@pytest.fixture
def console(server_url: str, tmp_path: Path) -> Iterator[tuple[Service, Console]]:
    svc = Service(tmp_path / "home", new_database(server_url, "wfdag_console"))
    svc.env["WFDAG_UI_PORT"] = "0"
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW)
    try:
        started = svc.wfdag("server", "start")
        assert started.returncode == 0, started.stderr
        assert "console at http://127.0.0.1:" in started.stdout, started.stdout
        assert svc.wfdag("register", str(flow)).returncode == 0
        record = svc.record()
        assert record is not None and record["console_url"]
        token = (svc.home / "console.token").read_text().strip()
        yield svc, Console(record["console_url"], token)
    finally:
        svc.wfdag("server", "stop", timeout=120)


def _run(svc: Service, org: str) -> str:
    started = svc.wfdag("run", "console-flow-v1", "--context",
                        json.dumps({"organizationId": org}))
    assert started.returncode == 0, started.stderr
    return started.stdout.strip().splitlines()[-1]


def test_every_route_needs_the_token_and_organizations_stay_apart(
    console: tuple[Service, Console],
) -> None:
    svc, ui = console
    eid = _run(svc, "org-a")
    svc.wait_for(eid, "waiting", 60)
    token = svc.wfdag("ui", "--token")
    assert token.returncode == 0 and token.stdout.strip() == ui.token
    link = svc.wfdag("ui")
    assert link.returncode == 0 and link.stdout.strip().endswith(f"?token={ui.token}")

    routes = [("GET", "/"), ("GET", f"/executions/{eid}"), ("GET", "/static/console.js"),
              ("GET", "/api/executions"), ("GET", f"/api/executions/{eid}"),
              ("GET", f"/api/executions/{eid}/graph.svg"), ("GET", "/api/stream"),
              ("POST", f"/api/executions/{eid}/cancel"), ("GET", "/operations"),
              ("GET", "/api/workflows"), ("GET", "/api/breakers"), ("GET", "/api/schedules"),
              ("POST", "/api/breakers/console-flow-v1/show/reset"),
              ("POST", "/api/schedules/nope/trigger")]
    for method, path in routes:
        for bad in (None, "not-the-token", ""):
            status, _, _ = ui.request(method, path, token=bad)
            assert status == 401, (method, path, bad, status)
    assert svc.status_of(eid)["status"] == "waiting"  # the refused cancel did nothing

    # A link with the token logs a browser in: a cookie, and a clean address bar.
    status, headers, _ = ui.request("GET", f"/?token={ui.token}", token=None)
    assert status == 302 and "wfdag_token=" in headers.get("Set-Cookie", "")
    assert "token" not in headers["Location"]

    listed = ui.json("GET", "/api/executions")
    assert eid in [i["execution_id"] for i in listed["items"]]
    assert ui.json("GET", "/api/executions", org="org-b")["items"] == []
    # The organization filter: an operator's narrowing, never a scoped user's widening.
    assert [i["execution_id"] for i in ui.json(
        "GET", "/api/executions?organization=org-a")["items"]] == [eid]
    assert ui.json("GET", "/api/executions?organization=org-b")["items"] == []
    assert ui.json("GET", "/api/executions?organization=org-a", org="org-b")["items"] == []
    status, _, body = ui.request("GET", f"/api/executions/{eid}", org="org-b")
    assert status == 404 and b"not found" in body
    status, _, _ = ui.request("POST", f"/api/executions/{eid}/approve", org="org-b",
                              body={"stage": "gate"})
    assert status == 404
    mine = ui.json("GET", f"/api/executions/{eid}", org="org-a")
    assert mine["waiting_approvals"] == ["gate"] and mine["status"]["status"] == "waiting"

    approved = ui.json("POST", f"/api/executions/{eid}/approve", org="org-a",
                       body={"stage": "gate", "comment": "ok"})
    assert approved["execution_id"] == eid
    done = svc.wait_for(eid, "completed", 60)
    detail = ui.json("GET", f"/api/executions/{eid}", org="org-a")
    show = next(s for s in detail["stages"] if s["id"] == "show")
    assert show["inputs"] is not None and '"approved": true' in show["inputs"], show
    attempt = next(e for e in detail["events"] if e["type"] == "stage_attempt")
    assert attempt["duration_ms"] is not None and attempt["breaker"].startswith("closed")
    events = svc.wfdag("events", eid, "--json").stdout
    assert '"user_id": "console"' in events or '"user_id":"console"' in events, events
    earlier = ui.request("GET", f"/api/executions/{eid}/graph.svg?seq=2")
    assert earlier[0] == 200 and earlier[1]["Content-Type"].startswith("image/svg+xml")
    now = ui.request("GET", f"/api/executions/{eid}/graph.svg")
    gate_done = "gate · completed".encode()
    assert gate_done not in earlier[2] and gate_done in now[2]  # time travel: event 2
    assert done["status"] == "completed"

    # Operations: workflows with their metrics (the organization's), breakers, schedules.
    flows = {w["id"]: w for w in ui.json("GET", "/api/workflows", org="org-a")["items"]}
    assert flows["console-flow-v1"]["metrics"]["completed"] == 1
    assert {w["id"]: w for w in ui.json("GET", "/api/workflows", org="org-b")["items"]}[
        "console-flow-v1"]["metrics"]["total"] == 0
    made = svc.wfdag("schedule", "create", "console-flow-v1", "0 6 1 * *", "--id", "monthly",
                     "--context", json.dumps({"organizationId": "org-a"}), "--org", "org-a")
    assert made.returncode == 0, made.stderr
    assert [s["schedule_id"] for s in ui.json("GET", "/api/schedules", org="org-a")[
        "items"]] == ["monthly"]
    assert ui.json("GET", "/api/schedules", org="org-b")["items"] == []
    paused = ui.json("POST", "/api/schedules/monthly/pause", org="org-a")
    assert paused["paused"] is True
    status, _, _ = ui.request("POST", "/api/schedules/monthly/resume", org="org-b")
    assert status == 404
    assert ui.json("GET", "/api/breakers", org="org-a")["items"] == []
    reset = ui.json("POST", "/api/breakers/console-flow-v1/show/reset", org="org-a")
    assert reset["state"] == "closed" and reset["organization_id"] == "org-a"


def test_the_feed_streams_appends_live(console: tuple[Service, Console]) -> None:
    svc, ui = console
    conn = http.client.HTTPConnection(ui.host, ui.port, timeout=30)
    conn.request("GET", "/api/stream", headers={"Authorization": f"Bearer {ui.token}",
                                                "X-Wfdag-Org": "org-live"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.readline().startswith(b": connected")
    other = _run(svc, "org-other")  # another organization's: not in this feed
    eid = _run(svc, "org-live")
    deadline = time.monotonic() + 30
    seen: list[dict[str, Any]] = []
    while not any(e["execution_id"] == eid for e in seen):
        assert time.monotonic() < deadline, f"no event of {eid} in the feed: {seen}"
        line = response.readline().strip()
        if line.startswith(b"data: "):
            seen.append(json.loads(line[6:]))
    conn.close()
    assert all(e["execution_id"] != other for e in seen)
    assert seen[-1]["type"] in ("workflow_initiated", "stage_waiting", "execution_parked")


BROWSER_FLOW = """
id: console-browser-v1
name: Console browser flow
version: 1
initial_stage: gate
final_stages: [show]
stages:
  - {id: gate, name: Gate, kind: approval, timeout_seconds: 3600}
  - {id: work, name: Work, agent: "tests.agents:timed", timeout_seconds: 60}
  - {id: show, name: Show, agent: "tests.agents:html_output", timeout_seconds: 60}
transitions:
  - {from_stage: gate, to_stage: work}
  - {from_stage: work, to_stage: show}
"""

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent.parent / "build" / "console-screenshots"


def test_the_console_in_a_real_browser(console: tuple[Service, Console],
                                       tmp_path: Path) -> None:
    """Headless Debian Chromium: the list (live), an execution (live), the time-travel slider,
    an approve click and a cancel click; a stage output full of HTML stays text.  Screenshots
    of each page are kept in build/console-screenshots/."""
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), "Debian's chromium is missing: `make test` installs it"
    svc, ui = console
    flow = tmp_path / "browser.yaml"
    flow.write_text(BROWSER_FLOW)
    assert svc.wfdag("register", str(flow)).returncode == 0
    SHOTS.mkdir(parents=True, exist_ok=True)
    base = f"http://{ui.host}:{ui.port}"

    def run(org: str = "org-a") -> str:
        started = svc.wfdag("run", "console-browser-v1", "--context",
                            json.dumps({"organizationId": org, "seconds": 3}))
        assert started.returncode == 0, started.stderr
        return started.stdout.strip().splitlines()[-1]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(f"{base}/?token={ui.token}")
            expect(page.locator("#live")).to_have_text("live", timeout=10_000)
            first = run()
            returned = time.monotonic()
            expect(page.locator(f'tr[data-id="{first}"]')).to_be_visible(timeout=10_000)
            listed_after = time.monotonic() - returned
            assert listed_after < 1.0, f"listed {listed_after:.2f}s after the start returned"
            page.screenshot(path=str(SHOTS / "list.png"), full_page=True)

            page.goto(f"{base}/executions/{first}")
            approve = page.locator('button[data-action="approve"]')
            expect(approve).to_be_visible(timeout=10_000)
            approve.click()  # confirmed by the dialog handler: a call of approve_stage
            work = page.locator('tr[data-stage="work"] .status')
            expect(work).to_have_text("running", timeout=15_000)  # live, no reload
            page.screenshot(path=str(SHOTS / "execution-running.png"), full_page=True)
            expect(page.locator("#summary .status")).to_have_text("completed", timeout=30_000)
            expect(work).to_have_text("completed")
            shown = page.locator('tr[data-stage="show"] td.said')
            expect(shown).to_contain_text("<b id=")  # the HTML is text …
            assert page.locator("#injected").count() == 0  # … never markup
            assert page.title() != "pwned"
            page.screenshot(path=str(SHOTS / "execution.png"), full_page=True)

            # Time travel: back to the event where `work` started.
            events = ui.json("GET", f"/api/executions/{first}")["events"]
            seq = next(e["seq"] for e in events
                       if e["type"] == "stage_started" and e["stage_id"] == "work")
            page.locator("#slider").evaluate(
                "(s, v) => { s.value = v; s.dispatchEvent(new Event('input')); }", str(seq))
            expect(page.locator("#asof")).to_contain_text(f"as of event {seq} ", timeout=10_000)
            expect(work).to_have_text("running")
            expect(page.locator('tr[data-stage="show"] .status')).to_have_text("pending")
            expect(page.locator('tr[data-stage="gate"] .status')).to_have_text("completed")
            page.wait_for_function(
                "() => document.getElementById('graph').complete && "
                "document.getElementById('graph').src.includes('seq=')")
            page.screenshot(path=str(SHOTS / "slider.png"), full_page=True)

            page.goto(f"{base}/operations")
            expect(page.locator('tr[data-workflow="console-browser-v1"]')).to_contain_text(
                "100.0 %", timeout=10_000)
            page.screenshot(path=str(SHOTS / "operations.png"), full_page=True)

            second = run()
            page.goto(f"{base}/executions/{second}")
            cancel = page.locator('button[data-action="cancel"]')
            expect(cancel).to_be_visible(timeout=10_000)
            cancel.click()
            expect(page.locator("#summary .status")).to_have_text("cancelled", timeout=30_000)
            page.screenshot(path=str(SHOTS / "cancelled.png"), full_page=True)
        finally:
            browser.close()
    assert svc.status_of(second)["status"] == "cancelled"


def test_status_is_answered_by_the_service_without_importing_ray(
    console: tuple[Service, Console],
) -> None:
    """`wfdag status` asks the running service (issue 18: a whole process in a few tens of
    ms): it imports neither Ray nor asyncpg nor pydantic, and prints what the whole command
    line prints; whatever the service cannot answer goes the whole way, as before."""
    svc, _ui = console
    eid = _run(svc, "org-a")
    svc.wait_for(eid, "waiting", 60)

    def quick(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-X", "importtime", "-m", "actors.cli",
                               "status", *args], cwd=REPO, env=svc.env, text=True,
                              capture_output=True, timeout=120, check=False)

    for extra in ((), ("--json",), ("--org", "org-a"), ("--json", "--org=org-a")):
        fast = quick(eid, *extra)
        assert fast.returncode == 0, fast.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in fast.stderr.splitlines()
                    if line.startswith("import time:")}
        assert not imported & {"ray", "asyncpg", "pydantic", "structlog", "events",
                               "http.client", "ssl"}, extra
        # A global option (--log-level) takes the whole command line: the same answer.
        whole = svc.wfdag("status", eid, *extra, "--log-level", "ERROR")
        assert whole.returncode == 0, whole.stderr[-2000:]
        assert fast.stdout == whole.stdout, extra
    assert json.loads(quick(eid, "--json").stdout)["status"] == "waiting"
    # Not the organization's, or unknown: the whole way says so, with its exit code.
    hidden = quick(eid, "--org", "org-b")
    assert hidden.returncode == 3 and "not found" in hidden.stderr
    unknown = quick("00000000-0000-4000-8000-000000000000")
    assert unknown.returncode == 3 and "not found" in unknown.stderr
