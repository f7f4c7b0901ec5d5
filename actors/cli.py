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

# Standard output carries only wfdag's results (ids, tables, JSON): Ray prints its own warnings
# to sys.stdout, so main() points sys.stdout at stderr and results go to the real stdout.
_STDOUT = sys.stdout


def _out(*values: object, end: str = "\n") -> None:
    print(*values, end=end, file=_STDOUT, flush=True)


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
    _out(f"{'ID':<34} {'VER':>3} {'STAGES':>6}  NAME")
    for dag in dags:
        _out(f"{dag.id:<34} {dag.version:>3} {len(dag.stages):>6}  {dag.name}")
    return 0


async def _cmd_run(args: argparse.Namespace) -> int:
    from actors.api import (
        execute_workflow_dag,
        get_workflow_status,
        initialize_workflow_system,
        watch_execution,
    )

    context = SEED_CONTEXT if args.context is None else _load_json_arg(args.context, "--context")
    if args.context is None and args.org:
        context = {**SEED_CONTEXT, "organizationId": args.org}
    print(f"starting {args.workflow} (a local Ray starts on first use: a few seconds)…",
          file=sys.stderr)
    # A local Ray ends with this process: executions it left unfinished resume here.
    report = await initialize_workflow_system()
    if report["resumed"]:
        print(f"resumed {len(report['resumed'])} unfinished execution(s)", file=sys.stderr)
    execution_id = await execute_workflow_dag(args.workflow, context, args.user,
                                              organization_id=args.org)
    _out(execution_id)
    if not args.wait:
        print(f"started; follow it with `wfdag status {execution_id}`. With a local Ray (no "
              f"RAY_ADDRESS) it runs while a wfdag process runs and resumes with the next one",
              file=sys.stderr)
        return 0
    async for event in watch_execution(execution_id, timeout=args.timeout):
        print(describe_event(event), file=sys.stderr)
    status = await get_workflow_status(execution_id)
    _out(f"{status.status}" + (f": {status.error_message}" if status.error_message else ""))
    if status.status != "completed":
        print(f"see `wfdag events {execution_id}` for every attempt and error", file=sys.stderr)
        return 1
    return 0


async def _cmd_status(args: argparse.Namespace) -> int:
    from actors.api import get_workflow_status

    status = await get_workflow_status(args.execution_id, organization_id=args.org)
    if args.json:
        _out(status.model_dump_json(indent=2))
        return 0
    _out(f"execution     {status.execution_id}")
    _out(f"workflow      {status.workflow_id} v{status.workflow_version}")
    _out(f"status        {status.status}")
    _out(f"current stage {status.current_stage or '-'}")
    _out(f"started       {status.started_at}")
    _out(f"completed     {status.completed_at or '-'}")
    if status.error_message:
        _out(f"error         {status.error_message}")
    steps = status.executed_steps
    _out(f"executed      {len(steps)} stage(s): " + ", ".join(s["stage_id"] for s in steps))
    return 0


async def _cmd_events(args: argparse.Namespace) -> int:
    from actors.api import get_execution_events

    events = await get_execution_events(args.execution_id, organization_id=args.org)
    for event in events:
        if args.json:
            _out(event.model_dump_json())
        else:
            _out(describe_event(event))
    return 0


async def _cmd_rollback(args: argparse.Namespace) -> int:
    from actors.api import rollback_workflow, wait_for_workflow

    status = await rollback_workflow(args.execution_id, args.user, organization_id=args.org)
    print(f"{status.execution_id}: {status.status}", file=sys.stderr)
    if args.wait:
        status = await wait_for_workflow(status.execution_id, timeout=args.timeout)
    _out(status.status + (f": {status.error_message}" if status.error_message else ""))
    return 0 if status.status in ("rolled_back", "compensating") else 1


async def _cmd_retry(args: argparse.Namespace) -> int:
    from actors.api import retry_failed_workflow, wait_for_workflow

    new_id = await retry_failed_workflow(args.execution_id, args.user,
                                         organization_id=args.org)
    _out(new_id)
    if args.wait:
        status = await wait_for_workflow(new_id, timeout=args.timeout)
        _out(status.status + (f": {status.error_message}" if status.error_message else ""))
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
        _out(f"{status.workflow_id}:{status.stage_id} reset: {status.state}, "
              f"{status.failure_count} failures")
        return 0
    if args.action is not None:
        raise SystemExit(f"error: unknown breakers action {args.action!r}; use 'reset'")
    breakers = await list_circuit_breakers()
    if not breakers:
        _out("no circuit breaker has recorded a failure yet")
        return 0
    _out(f"{'WORKFLOW:STAGE':<52} {'STATE':<9} {'FAILS':>5}  {'OPENED':<25} HALF-OPENS")
    for b in breakers:
        key = f"{b.workflow_id}:{b.stage_id}"
        _out(f"{key:<52} {b.state:<9} {b.failure_count:>3}/{b.failure_threshold:<1}  "
              f"{_fmt_opt(b.opened_at):<25} {_fmt_opt(b.next_attempt_at)}")
    return 0


def _fmt_list(items: list[str]) -> str:
    return ",".join(items) if items else "-"


def _describe_snapshot(snap: Any) -> str:
    return (f"status={snap.status:<12} done={_fmt_list(snap.completed_stages)} "
            f"running={_fmt_list(snap.running_stages)} failed={_fmt_list(snap.failed_stages)} "
            f"skipped={_fmt_list(snap.skipped_stages)} "
            f"compensated={_fmt_list(snap.compensated_stages)}")


async def _cmd_replay(args: argparse.Namespace) -> int:
    from actors.api import replay_execution, replay_history

    if args.until is not None:
        snap = await replay_execution(args.execution_id, args.until,
                                      organization_id=args.org)
        if args.json:
            _out(snap.model_dump_json(indent=2))
            return 0
        _out(f"state of {snap.execution_id} ({snap.workflow_id}) after event {snap.last_seq}:")
        _out(f"  status       {snap.status}")
        for label, items in (("completed", snap.completed_stages), ("running", snap.running_stages),
                             ("failed", snap.failed_stages), ("skipped", snap.skipped_stages),
                             ("cancelled", snap.cancelled_stages),
                             ("compensated", snap.compensated_stages)):
            _out(f"  {label:<12} {_fmt_list(items)}")
        tried = {s: n for s, n in snap.attempts.items() if n}
        _out(f"  attempts     {', '.join(f'{s}={n}' for s, n in tried.items()) or '-'}")
        if snap.error_message:
            _out(f"  error        {snap.error_message}")
        return 0
    for event, snap in await replay_history(args.execution_id, organization_id=args.org):
        if args.json:
            _out(json.dumps({"seq": event.seq, "type": event.type,
                              "state": snap.model_dump(mode="json")}))
        else:
            _out(f"{event.seq:>4} {event.type:<24} {event.stage_id or '-':<26} "
                  f"{_describe_snapshot(snap)}")
    return 0


def _load_definition(path: Path) -> Any:
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise SystemExit(f"error: cannot read {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            return yaml.safe_load(text)
        return json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SystemExit(f"error: {path} is not valid {path.suffix[1:].upper() or 'JSON'}: "
                         f"{exc}") from None


def _where(data: Any, loc: tuple[Any, ...]) -> str:
    """A pydantic error location, with stage indexes named by the stage's id."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int) and i > 0 and loc[i - 1] in ("stages", "transitions"):
            kind = loc[i - 1]
            try:
                item = data[kind][part]
                name = item.get("id") if kind == "stages" else (
                    f"{item.get('from_stage')}->{item.get('to_stage')}")
            except (KeyError, IndexError, TypeError, AttributeError):
                name = None
            parts[-1] = f"stage {name!r}" if kind == "stages" and name else (
                f"transition {name}" if name else f"{kind}[{part}]")
        else:
            parts.append(str(part))
    return ".".join(parts)


async def _cmd_validate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError as PydanticValidationError

    from definitions import WorkflowDAG, validate_workflow_dag

    path = Path(args.file)
    data = _load_definition(path)
    try:
        dag = WorkflowDAG.model_validate(data)
    except PydanticValidationError as exc:
        print(f"{path}: invalid definition ({exc.error_count()} problem(s)):", file=sys.stderr)
        for problem in exc.errors():
            print(f"  - {_where(data, tuple(problem['loc']))}: {problem['msg']}",
                  file=sys.stderr)
        return 1
    result = validate_workflow_dag(dag)
    for warning in result.warnings:
        print(f"  warning: {warning}", file=sys.stderr)
    if not result.valid:
        print(f"{path}: workflow {dag.id!r} is invalid:", file=sys.stderr)
        for error in result.errors:
            print(f"  - {error}", file=sys.stderr)
        return 1
    _out(f"{path}: workflow {dag.id!r} v{dag.version} is valid "
          f"({len(dag.stages)} stages, {len(dag.transitions)} transitions)")
    return 0


async def _cmd_graph(args: argparse.Namespace) -> int:
    import shutil
    import subprocess
    import uuid

    from actors.api import _ready_store, replay_execution
    from definitions import CANONICAL_WORKFLOWS, WorkflowDAG
    from projections.graph import to_dot, to_mermaid, to_svg

    states: dict[str, str] | None = None
    try:
        uuid.UUID(args.target)
        is_execution = True
    except ValueError:
        is_execution = False
    if is_execution:
        store = await _ready_store()
        events = await store.read_existing(args.target)
        snap = await replay_execution(args.target, organization_id=args.org)
        first = events[0]
        dag = WorkflowDAG.model_validate(first.dag)  # type: ignore[union-attr]
        states = dict(snap.stage_status)
        for sid in snap.compensated_stages:
            states[sid] = "compensated"
    elif args.target in CANONICAL_WORKFLOWS and not args.registered:
        dag = CANONICAL_WORKFLOWS[args.target]
    else:
        dag = await (await _ready_store()).get_definition(args.target)
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
            raise SystemExit("error: PNG needs Graphviz's `dot` (apt-get install graphviz); "
                             "`--format svg` draws without it")
        text = subprocess.run([dot, "-Tpng"], input=to_dot(dag, states).encode(),
                              capture_output=True, check=True).stdout
    if args.output:
        mode = "wb" if isinstance(text, bytes) else "w"
        with open(args.output, mode) as fh:
            fh.write(text)
        print(f"wrote {args.output}", file=sys.stderr)
    elif isinstance(text, bytes):
        _STDOUT.buffer.write(text)
    else:
        _out(text, end="")
    return 0


async def _cmd_metrics(args: argparse.Namespace) -> int:
    from actors.api import _ready_store, get_workflow_metrics

    if args.workflow:
        workflow_ids = [args.workflow]
    else:
        workflow_ids = [d.id for d in await (await _ready_store()).list_definitions()]
    reports = [await get_workflow_metrics(w) for w in workflow_ids]
    if args.json:
        _out(json.dumps(reports[0] if args.workflow else reports, indent=2))
        return 0
    _out(f"{'WORKFLOW':<34} {'TOTAL':>5} {'OK':>4} {'FAIL':>4} {'RB':>3} {'SUCCESS':>7} "
          f"{'AVG ms':>9} {'P95 ms':>9} {'COMP':>4} {'OPENS':>5}")
    for r in reports:
        avg = f"{r['avg_duration_ms']:.0f}" if r["avg_duration_ms"] is not None else "-"
        p95 = f"{r['p95_duration_ms']:.0f}" if r["p95_duration_ms"] is not None else "-"
        _out(f"{r['workflow_id']:<34} {r['total']:>5} {r['completed']:>4} {r['failed']:>4} "
              f"{r['rolled_back']:>3} {r['success_rate']:>7.1%} {avg:>9} {p95:>9} "
              f"{r['compensations']:>4} {r['breaker_opens']:>5}")
        if args.workflow:
            _out(f"\n  {'STAGE':<32} {'RUNS':>5} {'AVG ms':>9} {'P95 ms':>9} "
                  f"{'RETRIES':>7} {'FAILS':>5}")
            for sid, s in r["stages"].items():
                s_avg = f"{s['avg_duration_ms']:.0f}" if s["avg_duration_ms"] is not None else "-"
                s_p95 = f"{s['p95_duration_ms']:.0f}" if s["p95_duration_ms"] is not None else "-"
                _out(f"  {sid:<32} {s['runs']:>5} {s_avg:>9} {s_p95:>9} {s['retries']:>7} "
                      f"{s['failures']:>5}")
    return 0


async def _cmd_projections(args: argparse.Namespace) -> int:
    from actors.api import rebuild_projections

    print("rebuilding the read models from the log (appends wait meanwhile)…", file=sys.stderr)
    report = await rebuild_projections()
    _out(f"rebuilt from {report['events']} events: {report['executions']} executions")
    return 0


async def _cmd_import(args: argparse.Namespace) -> int:
    from actors.api import import_execution

    path = Path(args.file)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SystemExit(f"error: cannot read {path}: {exc.strerror}") from None
    execution_id = await import_execution(lines)
    _out(f"imported {len(lines)} events of execution {execution_id}")
    return 0


async def _cmd_recover(args: argparse.Namespace) -> int:
    from actors.api import initialize_workflow_system

    print("recovery sweep: executions no live execution actor drives…", file=sys.stderr)
    report = await initialize_workflow_system()
    if args.json:
        _out(json.dumps({k: report[k] for k in ("resumed", "dead_lettered", "pool")}))
        return 0
    for eid in report["resumed"]:
        _out(f"resumed       {eid}")
    for eid in report["dead_lettered"]:
        _out(f"dead-lettered {eid}")
    print(f"{len(report['resumed'])} resumed, {len(report['dead_lettered'])} dead-lettered, "
          f"{report['pool']} execution actors; see `wfdag status ID` for each"
          + (" (a dead-lettered one says why and what to do next)"
             if report["dead_lettered"] else ""), file=sys.stderr)
    return 0


async def _cmd_wait(args: argparse.Namespace) -> int:
    from actors.api import get_workflow_status, watch_execution

    async for event in watch_execution(args.execution_id, timeout=args.timeout,
                                       organization_id=args.org):
        print(describe_event(event), file=sys.stderr)
    status = await get_workflow_status(args.execution_id, organization_id=args.org)
    _out(f"{status.status}" + (f": {status.error_message}" if status.error_message else ""))
    return 0 if status.status == "completed" else 1


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
    p.add_argument("--org", metavar="ORG_ID", help="act as organization ORG_ID: another "
                   "organization's execution is not found")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("status", help="show an execution's status")
    p.add_argument("execution_id")
    p.add_argument("--json", action="store_true")
    p.add_argument("--org", metavar="ORG_ID", help="act as organization ORG_ID: another "
                   "organization's execution is not found")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("wait", help="follow an execution (started by any driver) until it ends; "
                       "exit 1 unless it completed")
    p.add_argument("execution_id")
    p.add_argument("--timeout", type=float, default=None, help="give up after SECONDS")
    p.add_argument("--org", metavar="ORG_ID", help="act as organization ORG_ID: another "
                   "organization's execution is not found")
    p.set_defaults(func=_cmd_wait)

    p = sub.add_parser("recover", help="recovery sweep: requeue executions nobody drives, "
                       "dead-letter those that keep crashing their actors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_recover)

    p = sub.add_parser("events", help="show an execution's event log")
    p.add_argument("execution_id")
    p.add_argument("--json", action="store_true", help="one JSON object a line (export)")
    p.add_argument("--org", metavar="ORG_ID", help="act as organization ORG_ID: another "
                   "organization's execution is not found")
    p.set_defaults(func=_cmd_events)

    p = sub.add_parser("rollback", help="compensate a completed or failed execution")
    p.add_argument("execution_id")
    p.add_argument("--user", default="user-123")
    p.add_argument("--wait", action="store_true", help="wait until the rollback ends")
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--org", metavar="ORG_ID", help="act as organization ORG_ID: another "
                   "organization's execution is not found")
    p.set_defaults(func=_cmd_rollback)

    p = sub.add_parser("retry", help="start a new execution of a failed or rolled-back one")
    p.add_argument("execution_id")
    p.add_argument("--user", default="user-123")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--org", metavar="ORG_ID", help="act as organization ORG_ID: another "
                   "organization's execution is not found")
    p.set_defaults(func=_cmd_retry)

    p = sub.add_parser("breakers", help="circuit breakers: list them, or `reset WORKFLOW STAGE`")
    p.add_argument("action", nargs="?", choices=["reset"])
    p.add_argument("workflow", nargs="?")
    p.add_argument("stage", nargs="?")
    p.set_defaults(func=_cmd_breakers)

    p = sub.add_parser("replay", help="an execution's state after each event, or at one point")
    p.add_argument("execution_id")
    p.add_argument("--until", type=int, metavar="SEQ", help="the state after event SEQ")
    p.add_argument("--json", action="store_true")
    p.add_argument("--org", metavar="ORG_ID", help="act as organization ORG_ID: another "
                   "organization's execution is not found")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("validate", help="check a JSON or YAML workflow definition")
    p.add_argument("file")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("graph", help="draw a workflow, or an execution coloured by state")
    p.add_argument("target", metavar="WORKFLOW|ID")
    p.add_argument("--format", choices=["mermaid", "dot", "svg", "png"], default="mermaid")
    p.add_argument("-o", "--output", help="write to FILE instead of standard output")
    p.add_argument("--registered", action="store_true",
                   help="draw the registered definition even for a canonical id")
    p.add_argument("--org", metavar="ORG_ID", help="act as organization ORG_ID: another "
                   "organization's execution is not found")
    p.set_defaults(func=_cmd_graph)

    p = sub.add_parser("metrics", help="the key metrics of one workflow or of all")
    p.add_argument("workflow", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_metrics)

    p = sub.add_parser("projections", help="`projections rebuild`: rebuild the read models")
    p.add_argument("action", choices=["rebuild"])
    p.set_defaults(func=_cmd_projections)

    p = sub.add_parser("import", help="import an execution's log exported with "
                       "`wfdag events ID --json`")
    p.add_argument("file")
    p.set_defaults(func=_cmd_import)
    return parser


async def _run(args: argparse.Namespace) -> int:
    from actors.runtime import close_stores

    try:
        return int(await args.func(args))
    finally:
        await close_stores()


def main(argv: Sequence[str] | None = None) -> int:
    global _STDOUT
    args = build_parser().parse_args(argv)
    _STDOUT = sys.stdout
    sys.stdout = sys.stderr
    try:
        return asyncio.run(_run(args))
    except WfdagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; executions carry on in their actors", file=sys.stderr)
        return 130
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()  # while stray prints still go to stderr
        sys.stdout = _STDOUT


if __name__ == "__main__":
    sys.exit(main())
