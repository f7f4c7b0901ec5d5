"""``wfdag schedule create|list|show|history|pause|resume|delete|trigger``: cron schedules.

Schedules fire in the service (``wfdag server``): ``create`` and ``resume`` start it when it is
not up, and say so.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from actors.cli.execute import context_arg
from actors.cli.render import fmt_opt, out, out_json, say, table
from actors.cli.server import ensure_service, runners_for

__all__ = ["add_verbs"]


def _show(schedule: Any) -> None:
    out(schedule.schedule_id)  # alone on its line: `head -1` captures it
    out(f"workflow      {schedule.workflow_id}"
        + (f" v{schedule.version}" if schedule.version else " (latest active version)"))
    out(f"cron          {schedule.cron} ({schedule.timezone})")
    out(f"overlap       {schedule.overlap}; catchup {'on' if schedule.catchup else 'off'}")
    out(f"state         {'paused' if schedule.paused else 'active'}")
    out(f"next fire     {'-' if schedule.paused else fmt_opt(schedule.next_fire_at)}")
    out(f"last fire     {fmt_opt(schedule.last_fire_at)} -> "
        f"{schedule.last_execution_id or '-'}")
    out(f"fired         {schedule.fires}; skipped {schedule.skipped}")
    if schedule.buffered_fire_at:
        out(f"buffered      {fmt_opt(schedule.buffered_fire_at)} (runs when the last ends)")
    if schedule.last_error:
        out(f"last error    {schedule.last_error}")


async def _scheduler_up(args: argparse.Namespace) -> None:
    await asyncio.to_thread(ensure_service, f"`wfdag schedule {args.schedule_command}`")


async def cmd_create(args: argparse.Namespace) -> int:
    from actors.api import create_schedule

    context = context_arg(args)
    schedule = await create_schedule(
        args.workflow, args.cron, context=context, user_id=args.user, schedule_id=args.id,
        timezone=args.timezone, overlap=args.overlap, catchup=args.catchup,
        version=args.version, organization_id=args.org)
    await _scheduler_up(args)
    if args.json:
        out_json(schedule.model_dump(mode="json"))
    else:
        _show(schedule)
        say(f"created; it fires in the service. `wfdag schedule pause {schedule.schedule_id}` "
            f"stops it")
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    from actors.api import list_schedules

    found = await list_schedules(organization_id=args.org, workflow_id=args.workflow)
    if args.json:
        out_json([s.model_dump(mode="json") for s in found])
        return 0
    table(["ID", "WORKFLOW", "CRON", "TZ", "STATE", "NEXT", "FIRED", "LAST EXECUTION"],
          [[s.schedule_id, s.workflow_id, s.cron, s.timezone,
            "paused" if s.paused else "active", "-" if s.paused else fmt_opt(s.next_fire_at),
            str(s.fires), s.last_execution_id or "-"] for s in found], right=(6,))
    if not found:
        say("no schedules; `wfdag schedule create WORKFLOW CRON` makes one")
    return 0


async def cmd_show(args: argparse.Namespace) -> int:
    from actors.api import get_schedule

    schedule = await get_schedule(args.schedule_id, organization_id=args.org)
    if args.json:
        out_json(schedule.model_dump(mode="json"))
    else:
        _show(schedule)
    return 0


async def cmd_history(args: argparse.Namespace) -> int:
    from actors.api import get_schedule_history

    rows = await get_schedule_history(args.schedule_id, limit=args.limit,
                                      organization_id=args.org)
    if args.json:
        out_json([{**r, "at": r["at"].isoformat()} for r in rows])
        return 0
    table(["AT", "ACTION", "BY", "DETAILS"],
          [[fmt_opt(r["at"]), r["action"], r["user_id"] or "-",
            ", ".join(f"{k}={v}" for k, v in r["details"].items())] for r in rows])
    return 0


async def cmd_pause(args: argparse.Namespace) -> int:
    from actors.api import pause_schedule, resume_schedule

    if args.schedule_command == "pause":
        schedule = await pause_schedule(args.schedule_id, user_id=args.user,
                                        organization_id=args.org)
    else:
        schedule = await resume_schedule(args.schedule_id, user_id=args.user,
                                         organization_id=args.org)
        await _scheduler_up(args)
    if args.json:
        out_json(schedule.model_dump(mode="json"))
    else:
        _show(schedule)
    return 0


async def cmd_delete(args: argparse.Namespace) -> int:
    from actors.api import delete_schedule

    await delete_schedule(args.schedule_id, user_id=args.user, organization_id=args.org)
    if args.json:
        out_json({"schedule_id": args.schedule_id, "deleted": True})
    else:
        say(f"deleted schedule {args.schedule_id}; the executions it started run on")
    return 0


async def cmd_trigger(args: argparse.Namespace) -> int:
    from actors.api import get_schedule, trigger_schedule

    await get_schedule(args.schedule_id, organization_id=args.org)  # unknown: nothing starts
    await runners_for("`wfdag schedule trigger`")
    eid = await trigger_schedule(args.schedule_id, user_id=args.user, organization_id=args.org)
    if args.json:
        out_json({"schedule_id": args.schedule_id, "execution_id": eid})
    else:
        out(eid)
        say(f"started; follow it with `wfdag wait {eid}`")
    return 0


def add_verbs(sub: Any, common: argparse.ArgumentParser) -> None:
    top = sub.add_parser("schedule", parents=[common],
                         help="cron schedules: create, list, show, history, pause, resume, "
                              "delete, trigger")
    verbs = top.add_subparsers(dest="schedule_command", required=True, metavar="VERB")
    p = verbs.add_parser("create", parents=[common], help="start a workflow on a cron schedule")
    p.add_argument("workflow")
    p.add_argument("cron", help="five fields: minute hour day-of-month month day-of-week "
                                "(quote it), or six with seconds last")
    p.add_argument("--id", help="the schedule's id (default: WORKFLOW-<random>)")
    p.add_argument("--context", metavar="JSON|@FILE",
                   help="each execution's context (default: the seed's example context)")
    p.add_argument("--timezone", default="UTC", help="IANA time zone of the cron fields")
    p.add_argument("--overlap", choices=("skip", "allow", "buffer_one"), default="skip",
                   help="a slot while the last execution runs: skip it (default), allow a "
                        "second, or buffer one to run after")
    p.add_argument("--catchup", action="store_true",
                   help="fire the slots missed while no service ran (else only the latest)")
    p.add_argument("--version", type=int, help="this version (default: the latest active)")
    p.add_argument("--user", default="user-123", help="whose executions (default user-123)")
    p.set_defaults(func=cmd_create)

    p = verbs.add_parser("list", parents=[common], help="list schedules")
    p.add_argument("--workflow", metavar="WORKFLOW_ID", help="only this workflow's")
    p.set_defaults(func=cmd_list)
    for name, helptext, func in (
            ("show", "show one schedule", cmd_show),
            ("history", "its audit trail: changes, fires, skips, misses", cmd_history),
            ("pause", "stop firing", cmd_pause),
            ("resume", "fire again from the next slot", cmd_pause),
            ("delete", "remove it (the executions it started run on)", cmd_delete),
            ("trigger", "run its workflow now", cmd_trigger)):
        p = verbs.add_parser(name, parents=[common], help=helptext)
        p.add_argument("schedule_id")
        if name in ("pause", "resume", "delete", "trigger"):
            p.add_argument("--user", default="user-123", help="who (kept in the audit trail)")
        if name == "history":
            p.add_argument("--limit", type=int, default=100, help="the last N rows")
        p.set_defaults(func=func)
