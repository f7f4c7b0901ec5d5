"""``wfdag server start | stop | status``: the service that owns the runners."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from actors.cli.render import out, out_json, say
from actors.service.control import ServiceError

__all__ = ["add_verbs", "ensure_service", "runners_for"]


def ensure_service(why: str) -> None:
    """Start the service when none is up on this database: a verb that needs runners never
    hosts them in a process about to exit."""
    from actors.runtime import get_database_url
    from actors.service import live_service, start_service

    url = get_database_url()
    if live_service(url) is not None:
        return
    if live_service() is not None:
        raise ServiceError(
            "the wfdag service of this WFDAG_HOME runs on another database; stop it "
            "(`wfdag server stop`), or give this database a WFDAG_HOME of its own")
    say(f"no wfdag service is up: starting one for {why} (Ray, migrations, the pool: "
        f"about 15 s)…")
    record, started = start_service(url, progress=say)
    if started:
        say(f"started the wfdag service (pid {record.pid}); it keeps running — stop it with "
            f"`wfdag server stop`")


async def runners_for(why: str) -> dict[str, Any] | None:
    """Make sure runners will take the work ``why`` queues: the named cluster's pool with
    ``RAY_ADDRESS`` (its runners are detached: they outlive this command), else the service.
    Returns the set-up report when a cluster was joined."""
    import asyncio
    import os

    if os.environ.get("RAY_ADDRESS"):
        from actors.api import initialize_workflow_system

        say(f"joining the Ray cluster at {os.environ['RAY_ADDRESS']}…")
        return await initialize_workflow_system(resume=False)
    await asyncio.to_thread(ensure_service, why)
    return None


async def _status_json() -> dict[str, Any]:
    from actors.api import ready_store
    from actors.service import live_service
    from projections import activity

    record = live_service()
    if record is None:
        return {"up": False}
    store = await ready_store()
    counts = await activity(store.pool)
    started = datetime.fromisoformat(record.started_at)
    return {
        "up": True, "pid": record.pid, "ray_address": record.ray_address,
        "database": record.database, "started_at": record.started_at,
        "uptime_s": round((datetime.now(UTC) - started).total_seconds()),
        "runners": record.pool_size, "live": counts["live"], "queued": counts["queued"],
    }


async def cmd_server(args: argparse.Namespace) -> int:
    from actors.runtime import get_database_url
    from actors.service import live_service, start_service, stop_service

    if args.action == "start":
        if args.foreground:
            from actors.service.process import run_service

            say("the wfdag service runs in this process until SIGTERM or Ctrl-C")
            return await run_service()
        record, started = start_service(get_database_url(), progress=say)
        if not started:
            say(f"the wfdag service is already running (pid {record.pid})")
        else:
            say("stop it with `wfdag server stop`")
        if args.json:
            out_json({"pid": record.pid, "ray_address": record.ray_address,
                      "started": started})
        else:
            out(f"wfdag service up: pid {record.pid}, Ray at {record.ray_address}, "
                f"{record.pool_size} runners, database {record.database}")
            if record.console_url:
                out(f"console at {record.console_url} (`wfdag ui` opens it with its token)")
        return 0
    if args.action == "stop":
        stopped = stop_service()
        if stopped is None:
            say("no wfdag service is running")
            return 0
        out(f"stopped the wfdag service (pid {stopped.pid}); executions in progress resume "
            f"on the next `wfdag server start`")
        return 0
    report = await _status_json() if live_service() is not None else {"up": False}
    if args.json:
        out_json(report)
    elif report["up"]:
        out(f"up      pid {report['pid']}, since {report['started_at']} "
            f"({report['uptime_s']} s)")
        out(f"ray     {report['ray_address']}")
        out(f"db      {report['database']}")
        out(f"runners {report['runners']}, live executions {report['live']}, "
            f"queued {report['queued']}")
    else:
        out("down    no wfdag service is running; start it with `wfdag server start`")
    return 0 if report["up"] else 1


async def cmd_ui(args: argparse.Namespace) -> int:
    """The console's address (with its token: a link that logs the browser in), or the token
    alone (``--token``)."""
    from actors.cli.execute import UsageError
    from actors.console import console_token
    from actors.service import live_service

    record = live_service()
    if args.token:
        token = console_token(create=False)
        if token is None:
            raise UsageError("no console token yet: `wfdag server start` makes one")
        out(token)
        return 0
    if record is None or not record.console_url:
        say("no console: the wfdag service is not running (`wfdag server start`), or its "
            "port was taken (see its log, and set WFDAG_UI_PORT)")
        return 1
    token = console_token(create=False) or ""
    link = f"{record.console_url}?token={token}"
    if args.json:
        out_json({"url": record.console_url, "login": link})
    else:
        out(link)
    return 0


def add_verbs(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("server", parents=[common], help="the service that owns the runners: "
                       "start | stop | status (exit 0 only when it is up)")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--foreground", action="store_true",
                   help="with start: run the service in this process (for a supervisor)")
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("ui", parents=[common], help="the console's address, with its token "
                       "(open it in a browser); --token: the token alone")
    p.add_argument("--token", action="store_true", help="print the access token only")
    p.set_defaults(func=cmd_ui)
