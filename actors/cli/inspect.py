"""Verbs that only read: workflows, status, events, replay, graph, metrics."""

from __future__ import annotations

import argparse
import json
from typing import Any

from actors.cli.execute import UsageError
from actors.cli.quick import status_lines
from actors.cli.render import (
    describe_event,
    describe_snapshot,
    fmt_list,
    fmt_opt,
    out,
    out_json,
    say,
    stdout,
    table,
)

__all__ = ["add_verbs"]


async def cmd_workflows(args: argparse.Namespace) -> int:
    from actors.api import list_workflows

    dags = await list_workflows(include_inactive=args.all)
    # The version a run uses when none is named: the latest active one of each id.
    active = ({(d.id, d.version) for d in await list_workflows()} if args.all
              else {(d.id, d.version) for d in dags})
    if args.json:
        out_json([{"id": d.id, "version": d.version, "name": d.name,
                   "stages": len(d.stages), "active": (d.id, d.version) in active}
                  for d in dags])
        return 0
    table(["ID", "VER", "STAGES", "ACTIVE", "NAME"],
          [[d.id, d.version, len(d.stages), "yes" if (d.id, d.version) in active else "no",
            d.name] for d in dags], right=(1, 2))
    return 0


def _duration(status: Any) -> str:
    from datetime import UTC, datetime

    if status.started_at is None:
        return "-"
    end = status.completed_at or datetime.now(UTC)
    seconds = max(0.0, (end - status.started_at).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


async def cmd_list(args: argparse.Namespace) -> int:
    from actors.api import list_executions

    page = await list_executions(status=args.status, workflow_id=args.workflow,
                                 organization_id=args.org, since=args.since, limit=args.limit,
                                 cursor=args.cursor, schedule_id=args.schedule)
    if args.json:
        out(page.model_dump_json(indent=2))
        return 0
    table(["ID", "WORKFLOW", "STATUS", "STAGE", "STARTED", "DURATION"],
          [[s.execution_id, s.workflow_id, s.status, s.current_stage or "-",
            fmt_opt(s.started_at), _duration(s)] for s in page.items], right=(5,))
    if page.next_cursor:
        say(f"more: `wfdag list --cursor {page.next_cursor}` (with the same filters)")
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    from actors.api import get_workflow_status

    status = await get_workflow_status(args.execution_id, organization_id=args.org)
    if args.json:
        out(status.model_dump_json(indent=2))
        return 0
    for line in status_lines(status.model_dump(mode="json")):
        out(line)
    return 0


async def cmd_output(args: argparse.Namespace) -> int:
    from actors.api import get_stage_output

    out_json(await get_stage_output(args.execution_id, args.stage, organization_id=args.org))
    return 0


async def cmd_events(args: argparse.Namespace) -> int:
    from actors.api import export_execution, get_execution_events

    if args.chain:
        if not args.json:
            raise UsageError("--chain goes with --json (the export `wfdag import` checks)")
        for line in await export_execution(args.execution_id, organization_id=args.org,
                                           check_chain=not args.unchecked):
            out(line)
        return 0
    for event in await get_execution_events(args.execution_id, organization_id=args.org,
                                            check_chain=not args.unchecked):
        out(event.model_dump_json() if args.json else describe_event(event))
    return 0


async def cmd_replay(args: argparse.Namespace) -> int:
    from actors.api import replay_execution, replay_history

    if args.until is not None:
        snap = await replay_execution(args.execution_id, args.until, organization_id=args.org)
        if args.json:
            out(snap.model_dump_json(indent=2))
            return 0
        out(f"state of {snap.execution_id} ({snap.workflow_id}) after event {snap.last_seq}:")
        out(f"  status       {snap.status}")
        for label, items in (("completed", snap.completed_stages),
                             ("running", snap.running_stages),
                             ("failed", snap.failed_stages), ("skipped", snap.skipped_stages),
                             ("cancelled", snap.cancelled_stages),
                             ("compensated", snap.compensated_stages)):
            out(f"  {label:<12} {fmt_list(items)}")
        tried = {s: n for s, n in snap.attempts.items() if n}
        out(f"  attempts     {', '.join(f'{s}={n}' for s, n in tried.items()) or '-'}")
        if snap.error_message:
            out(f"  error        {snap.error_message}")
        return 0
    for event, snap in await replay_history(args.execution_id, organization_id=args.org):
        if args.json:
            out(json.dumps({"seq": event.seq, "type": event.type,
                            "state": snap.model_dump(mode="json")}))
        else:
            out(f"{event.seq:>4} {event.type:<24} {event.stage_id or '-':<26} "
                f"{describe_snapshot(snap)}")
    return 0


async def cmd_graph(args: argparse.Namespace) -> int:
    import shutil
    import subprocess
    import uuid

    from actors.api import get_execution_events, get_workflow, replay_execution
    from definitions import CANONICAL_WORKFLOWS, WorkflowDAG
    from projections.graph import to_dot, to_mermaid, to_svg

    states: dict[str, str] | None = None
    try:
        uuid.UUID(args.target)
        is_execution = True
    except ValueError:
        is_execution = False
    if is_execution:
        events = await get_execution_events(args.target, organization_id=args.org)
        snap = await replay_execution(args.target, organization_id=args.org)
        dag = WorkflowDAG.model_validate(events[0].dag)  # type: ignore[union-attr]
        states = dict(snap.stage_status)
        for sid in snap.compensated_stages:
            states[sid] = "compensated"
    elif args.target in CANONICAL_WORKFLOWS and not args.registered:
        dag = CANONICAL_WORKFLOWS[args.target]
    else:
        dag = await get_workflow(args.target)
    fmt = args.format
    if fmt == "mermaid":
        text: str | bytes = to_mermaid(dag, states)
    elif fmt == "dot":
        text = to_dot(dag, states)
    elif fmt == "svg":
        text = to_svg(dag, states)
    else:
        dot = shutil.which("dot")
        if dot is None:
            raise UsageError("PNG needs Graphviz's `dot` (apt-get install graphviz); "
                             "`--format svg` draws without it")
        text = subprocess.run([dot, "-Tpng"], input=to_dot(dag, states).encode(),
                              capture_output=True, check=True).stdout
    if args.output:
        mode = "wb" if isinstance(text, bytes) else "w"
        with open(args.output, mode) as fh:
            fh.write(text)
        say(f"wrote {args.output}")
    elif isinstance(text, bytes):
        stdout().buffer.write(text)
    else:
        out(text, end="")
    return 0


def _ms(value: Any) -> str:
    return f"{value:.0f}" if value is not None else "-"


async def cmd_metrics(args: argparse.Namespace) -> int:
    from actors.api import get_workflow_metrics, list_workflows

    ids = [args.workflow] if args.workflow else [d.id for d in await list_workflows()]
    reports = [await get_workflow_metrics(w, organization_id=args.org) for w in ids]
    if args.json:
        out(json.dumps(reports[0] if args.workflow else reports, indent=2))
        return 0
    table(["WORKFLOW", "TOTAL", "OK", "FAIL", "RB", "CANC", "SUCCESS", "AVG ms", "P95 ms",
           "COMP", "OPENS"],
          [[r["workflow_id"], r["total"], r["completed"], r["failed"], r["rolled_back"],
            r["cancelled"],
            "-" if r["success_rate"] is None else f"{r['success_rate']:.1%}",
            _ms(r["avg_duration_ms"]),
            _ms(r["p95_duration_ms"]), r["compensations"], r["breaker_opens"]]
           for r in reports],
          right=tuple(range(1, 11)))
    if args.workflow:
        out("")
        table(["STAGE", "RUNS", "AVG ms", "P95 ms", "RETRIES", "FAILS"],
              [[sid, s["runs"], _ms(s["avg_duration_ms"]), _ms(s["p95_duration_ms"]),
                s["retries"], s["failures"]] for sid, s in reports[0]["stages"].items()],
              right=(1, 2, 3, 4, 5))
    return 0


def add_verbs(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("workflows", parents=[common], help="list the registered workflows")
    p.add_argument("--all", action="store_true", help="every version, inactive ones too")
    p.set_defaults(func=cmd_workflows)

    p = sub.add_parser("list", parents=[common], help="list executions, newest first")
    p.add_argument("--status", help="only executions in this status (queued, in_progress, "
                   "waiting, completed, failed, rolled_back, cancelled, …)")
    p.add_argument("--workflow", metavar="WORKFLOW_ID", help="only this workflow's")
    p.add_argument("--since", metavar="ISO", help="only those started at or after this time "
                   "(e.g. 2026-12-01T00:00:00Z)")
    p.add_argument("--limit", type=int, default=50, help="at most N (default 50, up to 1000)")
    p.add_argument("--cursor", help="the next page (printed under a full page)")
    p.add_argument("--schedule", metavar="SCHEDULE_ID", help="only those this schedule started")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("status", parents=[common], help="show an execution's status")
    p.add_argument("execution_id")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("output", parents=[common],
                       help="a completed stage's output, whole (JSON), from the log")
    p.add_argument("execution_id")
    p.add_argument("stage")
    p.set_defaults(func=cmd_output)

    p = sub.add_parser("events", parents=[common], help="show an execution's event log "
                       "(--json: one JSON object a line, the export `wfdag import` reads)")
    p.add_argument("execution_id")
    p.add_argument("--unchecked", action="store_true",
                   help="show the log even if its hash chain is broken (`wfdag verify`)")
    p.add_argument("--chain", action="store_true",
                   help="with --json: each line carries its hash, which `wfdag import` checks")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("replay", parents=[common],
                       help="an execution's state after each event, or at one point")
    p.add_argument("execution_id")
    p.add_argument("--until", type=int, metavar="SEQ", help="the state after event SEQ")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("graph", parents=[common],
                       help="draw a workflow, or an execution coloured by state")
    p.add_argument("target", metavar="WORKFLOW|ID")
    p.add_argument("--format", choices=["mermaid", "dot", "svg", "png"], default="mermaid")
    p.add_argument("-o", "--output", help="write to FILE instead of standard output")
    p.add_argument("--registered", action="store_true",
                   help="draw the registered definition even for a canonical id")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("metrics", parents=[common], help="the key metrics of one workflow or "
                       "of all")
    p.add_argument("workflow", nargs="?")
    p.set_defaults(func=cmd_metrics)
