"""The console's workloads (issue 17): an execution page with 2,000 events, and the list of
10,000 executions paged by cursor — each beside its floor, measured in the same run."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from synthetic import append_log, chain_definition, synthetic_log

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
PAGE = 50


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _tiny_logs(count: int, workflow_id: str) -> list[list[Any]]:
    """``count`` short, completed executions (initiated → completed), a second apart."""
    from events import WorkflowCompleted, WorkflowInitiated

    dag = chain_definition(2, workflow_id)
    t0 = datetime.now(UTC) - timedelta(days=30)
    logs = []
    for i in range(count):
        eid = str(uuid.uuid4())
        at = t0 + timedelta(seconds=i)
        logs.append([
            WorkflowInitiated(execution_id=eid, seq=1, at=at, workflow_id=workflow_id,
                              workflow_version=1, dag=dag, context={}, user_id="bench"),
            WorkflowCompleted(execution_id=eid, seq=2, at=at + timedelta(milliseconds=5),
                              duration_ms=5)])
    return logs


async def _fill(store: Any, logs: list[list[Any]], in_flight: int = 16) -> None:
    queue = list(reversed(logs))

    async def worker() -> None:
        while queue:
            await append_log(store, queue.pop())

    await asyncio.gather(*[worker() for _ in range(in_flight)])


async def _pages(http: Any, base: str, workflow_id: str, pages: int) -> list[float]:
    """Times of ``pages`` successive pages of the list (first page, then by cursor)."""
    times: list[float] = []
    cursor = ""
    for _ in range(pages):
        t = time.perf_counter()
        async with http.get(f"{base}/api/executions", params={
                "workflow": workflow_id, "limit": str(PAGE), "cursor": cursor}) as response:
            body = await response.json()
        times.append(time.perf_counter() - t)
        assert response.status == 200 and len(body["items"]) == PAGE, body
        cursor = body["next_cursor"] or ""
        if not cursor:
            break
    return times


async def _browser_open(base: str, token: str, eid: str, last_seq: int,
                        rounds: int) -> list[float]:
    """Wall times of opening the execution page in headless Chromium until it shows the
    execution as of its last event with its graph drawn (empty when there is no Chromium)."""
    if not HAVE_CHROMIUM:
        return []
    from playwright.async_api import async_playwright

    shown = ("() => { const a = document.getElementById('asof'), g = "
             "document.getElementById('graph'); return a && a.textContent.startsWith("
             f"'as of event {last_seq} of {last_seq}:') && g.complete && g.naturalWidth > 0; }}")
    times: list[float] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(f"{base}/?token={token}")
            for _ in range(rounds):
                t = time.perf_counter()
                await page.goto(f"{base}/executions/{eid}", wait_until="commit")
                await page.wait_for_function(shown, timeout=30_000, polling=5)
                times.append(time.perf_counter() - t)
        finally:
            await browser.close()
    return times


async def console(store: Any, executions: int, events: int = 2000) -> dict[str, Any]:
    """Serve the console in this process (as the service does) on a loopback port, then:
    open an execution of ``events`` events (its API call, and the whole page in Chromium)
    beside the floor of reading its log; and page the list at 100 and at ``executions``
    executions of one workflow."""
    import aiohttp

    from actors.api import get_execution_events
    from actors.console.app import start_console
    from projections import ProjectionRunner

    eid = str(uuid.uuid4())
    log_events = synthetic_log(eid, events, stages=100, workflow_id="bench-console-v1")
    await append_log(store, log_events)
    small, big = "bench-list-small-v1", "bench-list-big-v1"
    t = time.perf_counter()
    await _fill(store, _tiny_logs(100, small) + _tiny_logs(executions, big))
    filled_s = time.perf_counter() - t
    await ProjectionRunner(store.pool).catch_up()
    token = secrets.token_urlsafe(24)
    runner = await start_console("127.0.0.1", 0, token)
    try:
        host, port = runner.addresses[0][:2]
        base = f"http://{host}:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        reads, opens = [], []
        async with aiohttp.ClientSession(headers=headers) as http:
            for _ in range(5):
                t = time.perf_counter()
                got = await get_execution_events(eid)
                reads.append(time.perf_counter() - t)
                assert len(got) == len(log_events)
                t = time.perf_counter()
                async with http.get(f"{base}/api/executions/{eid}") as response:
                    body = await response.json()
                async with http.get(f"{base}/api/executions/{eid}/graph.svg") as response:
                    await response.read()
                opens.append(time.perf_counter() - t)
                assert len(body["events"]) == len(log_events), body.get("error")
            pages = max(2, min(20, executions // PAGE))
            small_pages = await _pages(http, base, small, 2)
            big_first = await _pages(http, base, big, 1)
            big_pages = await _pages(http, base, big, pages)
        browser = await _browser_open(base, token, eid, len(log_events), 3)
    finally:
        await runner.cleanup()
    return {"events": len(log_events), "list_executions": executions,
            "fill_s": filled_s, "log_read_p50_ms": _p50(reads) * 1000,
            "api_open_p50_ms": _p50(opens) * 1000,
            "browser_open_p50_ms": _p50(browser) * 1000 if browser else None,
            "list_page_small_p50_ms": _p50(small_pages) * 1000,
            "list_first_page_big_ms": big_first[0] * 1000,
            "list_page_big_p50_ms": _p50(big_pages) * 1000, "list_pages_read": len(big_pages)}
