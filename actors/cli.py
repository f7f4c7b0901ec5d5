"""``wfdag``: the command line.  User errors print one clear line, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from definitions import WfdagError

__all__ = ["main"]

SEED_CONTEXT = {"userId": "user-123", "organizationId": "org-456", "projectId": "project-789"}


def _load_json_arg(text: str, what: str) -> Any:
    source = text
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            source = path.read_text()
        except OSError as exc:
            raise SystemExit(f"error: cannot read {what} file {path}: {exc.strerror}") from None
    try:
        return json.loads(source)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"error: {what} is not valid JSON: {exc}") from None


def _fmt_time(value: Any) -> str:
    return value.strftime("%H:%M:%S.%f")[:-3] if value is not None else "-"


def describe_event(event: Any) -> str:
    """One readable line of an event: seq, time, type as stored, stage, attempt, error, delay."""
    data = event.model_dump(mode="json")
    parts = [f"{event.seq:>4}", _fmt_time(event.at), f"{event.type:<20}",
             f"{event.stage_id or '-':<28}"]
    details: list[str] = []
    if "attempt" in data:
        details.append(f"attempt={data['attempt']}")
    if data.get("outcome"):
        details.append(f"outcome={data['outcome']}")
    if data.get("duration_ms") is not None:
        details.append(f"duration={data['duration_ms']}ms")
    error = data.get("error")
    if error:
        flag = "retryable" if error.get("retryable") else "permanent"
        details.append(f"error={error.get('type')}({flag}): {error.get('message')}")
    if data.get("retry_delay_ms") is not None:
        details.append(f"retry_in={data['retry_delay_ms']}ms")
    if data.get("reason"):
        details.append(f"reason={data['reason']}")
    if data.get("error_message"):
        details.append(f"error={data['error_message']}")
    if event.type == "workflow_initiated":
        details.append(f"workflow={data['workflow_id']} v{data['workflow_version']} "
                       f"by={data['user_id']}")
    return "  ".join(parts + details)


async def _cmd_workflows(_args: argparse.Namespace) -> int:
    from actors.api import _ready_store

    store = await _ready_store()
    dags = await store.list_definitions()
    print(f"{'ID':<34} {'VER':>3} {'STAGES':>6}  NAME")
    for dag in dags:
        print(f"{dag.id:<34} {dag.version:>3} {len(dag.stages):>6}  {dag.name}")
    return 0


async def _cmd_run(args: argparse.Namespace) -> int:
    from actors.api import (
        execute_workflow_dag,
        get_workflow_status,
        initialize_workflow_system,
        watch_execution,
    )

    context = SEED_CONTEXT if args.context is None else _load_json_arg(args.context, "--context")
    print(f"starting {args.workflow} (a local Ray starts on first use: a few seconds)…",
          file=sys.stderr)
    # A local Ray ends with this process: executions it left unfinished resume here.
    report = await initialize_workflow_system()
    if report["resumed"]:
        print(f"resumed {len(report['resumed'])} unfinished execution(s)", file=sys.stderr)
    execution_id = await execute_workflow_dag(args.workflow, context, args.user)
    print(execution_id)
    if not args.wait:
        print(f"started; follow it with `wfdag status {execution_id}`. With a local Ray (no "
              f"RAY_ADDRESS) it runs while a wfdag process runs and resumes with the next one",
              file=sys.stderr)
        return 0
    async for event in watch_execution(execution_id, timeout=args.timeout):
        print(describe_event(event), file=sys.stderr)
    status = await get_workflow_status(execution_id)
    print(f"{status.status}" + (f": {status.error_message}" if status.error_message else ""))
    if status.status != "completed":
        print(f"see `wfdag events {execution_id}` for every attempt and error", file=sys.stderr)
        return 1
    return 0


async def _cmd_status(args: argparse.Namespace) -> int:
    from actors.api import get_workflow_status

    status = await get_workflow_status(args.execution_id)
    if args.json:
        print(status.model_dump_json(indent=2))
        return 0
    print(f"execution     {status.execution_id}")
    print(f"workflow      {status.workflow_id} v{status.workflow_version}")
    print(f"status        {status.status}")
    print(f"current stage {status.current_stage or '-'}")
    print(f"started       {status.started_at}")
    print(f"completed     {status.completed_at or '-'}")
    if status.error_message:
        print(f"error         {status.error_message}")
    steps = status.executed_steps
    print(f"executed      {len(steps)} stage(s): " + ", ".join(s["stage_id"] for s in steps))
    return 0


async def _cmd_events(args: argparse.Namespace) -> int:
    from actors.api import get_execution_events

    events = await get_execution_events(args.execution_id)
    for event in events:
        if args.json:
            print(event.model_dump_json())
        else:
            print(describe_event(event))
    return 0


async def _cmd_rollback(args: argparse.Namespace) -> int:
    from actors.api import rollback_workflow, wait_for_workflow

    status = await rollback_workflow(args.execution_id, args.user)
    print(f"{status.execution_id}: {status.status}", file=sys.stderr)
    if args.wait:
        status = await wait_for_workflow(status.execution_id, timeout=args.timeout)
    print(status.status + (f": {status.error_message}" if status.error_message else ""))
    return 0 if status.status in ("rolled_back", "compensating") else 1


async def _cmd_retry(args: argparse.Namespace) -> int:
    from actors.api import retry_failed_workflow, wait_for_workflow

    new_id = await retry_failed_workflow(args.execution_id, args.user)
    print(new_id)
    if args.wait:
        status = await wait_for_workflow(new_id, timeout=args.timeout)
        print(status.status + (f": {status.error_message}" if status.error_message else ""))
        return 0 if status.status == "completed" else 1
    return 0


def _fmt_opt(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


async def _cmd_breakers(args: argparse.Namespace) -> int:
    from actors.api import list_circuit_breakers, reset_workflow_circuit_breaker

    if args.action == "reset":
        if not args.workflow or not args.stage:
            raise SystemExit("error: usage: wfdag breakers reset WORKFLOW STAGE")
        status = await reset_workflow_circuit_breaker(args.workflow, args.stage)
        print(f"{status.workflow_id}:{status.stage_id} reset: {status.state}, "
              f"{status.failure_count} failures")
        return 0
    if args.action is not None:
        raise SystemExit(f"error: unknown breakers action {args.action!r}; use 'reset'")
    breakers = await list_circuit_breakers()
    if not breakers:
        print("no circuit breaker has recorded a failure yet")
        return 0
    print(f"{'WORKFLOW:STAGE':<52} {'STATE':<9} {'FAILS':>5}  {'OPENED':<25} HALF-OPENS")
    for b in breakers:
        key = f"{b.workflow_id}:{b.stage_id}"
        print(f"{key:<52} {b.state:<9} {b.failure_count:>3}/{b.failure_threshold:<1}  "
              f"{_fmt_opt(b.opened_at):<25} {_fmt_opt(b.next_attempt_at)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wfdag", description="Durable, event-sourced workflow DAGs on Ray and PostgreSQL."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("workflows", help="list the registered workflows")
    p.set_defaults(func=_cmd_workflows)

    p = sub.add_parser("run", help="start an execution of a workflow")
    p.add_argument("workflow", help="workflow id, e.g. complete-value-lifecycle-v1")
    p.add_argument("--context", help="the context as JSON, or @FILE (default: the seed's "
                   "example context)")
    p.add_argument("--user", default="user-123", help="the user id recorded as created_by")
    p.add_argument("--wait", action="store_true", help="show progress until it ends; exit 1 "
                   "unless it completed")
    p.add_argument("--timeout", type=float, default=None, help="give up waiting after SECONDS")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("status", help="show an execution's status")
    p.add_argument("execution_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("events", help="show an execution's event log")
    p.add_argument("execution_id")
    p.add_argument("--json", action="store_true", help="one JSON object a line (export)")
    p.set_defaults(func=_cmd_events)

    p = sub.add_parser("rollback", help="compensate a completed or failed execution")
    p.add_argument("execution_id")
    p.add_argument("--user", default="user-123")
    p.add_argument("--wait", action="store_true", help="wait until the rollback ends")
    p.add_argument("--timeout", type=float, default=None)
    p.set_defaults(func=_cmd_rollback)

    p = sub.add_parser("retry", help="start a new execution of a failed or rolled-back one")
    p.add_argument("execution_id")
    p.add_argument("--user", default="user-123")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--timeout", type=float, default=None)
    p.set_defaults(func=_cmd_retry)

    p = sub.add_parser("breakers", help="circuit breakers: list them, or `reset WORKFLOW STAGE`")
    p.add_argument("action", nargs="?", choices=["reset"])
    p.add_argument("workflow", nargs="?")
    p.add_argument("stage", nargs="?")
    p.set_defaults(func=_cmd_breakers)
    return parser


async def _run(args: argparse.Namespace) -> int:
    from actors.runtime import close_stores

    try:
        return int(await args.func(args))
    finally:
        await close_stores()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except WfdagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; executions carry on in their actors", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
