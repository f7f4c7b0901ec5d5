"""Verbs that administer: breakers, validate, register, projections, import."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from actors.cli.execute import UsageError
from actors.cli.render import fmt_opt, out, out_json, progress, say, table

__all__ = ["add_verbs", "load_definitions"]


async def cmd_breakers(args: argparse.Namespace) -> int:
    from actors.api import list_circuit_breakers, reset_workflow_circuit_breaker

    if args.action == "reset":
        if not args.workflow or not args.stage:
            raise UsageError("usage: wfdag breakers reset WORKFLOW STAGE")
        status = await reset_workflow_circuit_breaker(args.workflow, args.stage,
                                                      organization_id=args.org)
        if args.json:
            out_json(status.model_dump(mode="json"))
        else:
            out(f"{status.workflow_id}:{status.stage_id} reset: {status.state}, "
                f"{status.failure_count} failures")
        return 0
    breakers = await list_circuit_breakers(organization_id=args.org)
    if args.json:
        out_json([b.model_dump(mode="json") for b in breakers])
        return 0
    if not breakers:
        out("no circuit breaker has recorded a failure yet")
        return 0
    table(["WORKFLOW:STAGE", "ORG", "STATE", "FAILS", "OPENED", "HALF-OPENS"],
          [[f"{b.workflow_id}:{b.stage_id}", b.organization_id or "-", b.state,
            f"{b.failure_count}/{b.failure_threshold}", fmt_opt(b.opened_at),
            fmt_opt(b.next_attempt_at)] for b in breakers], right=(3,))
    return 0


def load_definitions(path: Path) -> list[Any]:
    """The definition(s) in a JSON or YAML file: one object, or a list of them."""
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = (yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml")
                else json.loads(text))
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"{path} is not valid {path.suffix[1:].upper() or 'JSON'}: "
                         f"{exc}") from None
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(i, dict) for i in items):
        raise UsageError(f"{path}: expected a workflow definition (an object) or a list of them")
    return items


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


def _check(path: Path, data: Any) -> tuple[Any, list[str], list[str]]:
    """``(dag or None, errors, warnings)`` of one definition, as people read them."""
    from pydantic import ValidationError as PydanticValidationError

    from definitions import WorkflowDAG, validate_workflow_dag

    try:
        dag = WorkflowDAG.model_validate(data)
    except PydanticValidationError as exc:
        return None, [f"{_where(data, tuple(p['loc']))}: {p['msg']}" for p in exc.errors()], []
    from actors.agents import import_warnings

    result = validate_workflow_dag(dag)
    warnings = [*result.warnings, *(import_warnings(dag) if result.valid else [])]
    return (dag if result.valid else None), list(result.errors), warnings


def _report(path: Path, items: list[Any], as_json: bool) -> list[Any] | None:
    """Check every definition of a file; print the problems; the models when all are valid."""
    dags: list[Any] = []
    reports: list[dict[str, Any]] = []
    for data in items:
        dag, errors, warnings = _check(path, data)
        label = str(data.get("id", "?"))[:200]
        reports.append({"id": label, "valid": dag is not None, "errors": errors,
                        "warnings": warnings})
        for warning in warnings:
            say(f"  warning: {warning}")
        if dag is None:
            say(f"{path}: workflow {label!r} is invalid ({len(errors)} problem(s)):")
            for error in errors:
                say(f"  - {error}")
        else:
            dags.append(dag)
    if as_json:
        out_json(reports)
    return dags if len(dags) == len(items) else None


async def cmd_validate(args: argparse.Namespace) -> int:
    path = Path(args.file)
    dags = _report(path, load_definitions(path), args.json)
    if dags is None:
        return 1
    if not args.json:
        for dag in dags:
            out(f"{path}: workflow {dag.id!r} v{dag.version} is valid "
                f"({len(dag.stages)} stages, {len(dag.transitions)} transitions)")
    return 0


async def cmd_register(args: argparse.Namespace) -> int:
    from actors.api import register_workflow

    path = Path(args.file)
    dags = _report(path, load_definitions(path), False)
    if dags is None:
        return 2
    registered = [await register_workflow(dag) for dag in dags]
    if args.json:
        out_json([{"id": d.id, "version": d.version, "stages": len(d.stages)}
                  for d in registered])
    else:
        for dag in registered:
            out(f"registered {dag.id} v{dag.version} ({len(dag.stages)} stages)")
    return 0


async def cmd_projections(args: argparse.Namespace) -> int:
    from actors.api import rebuild_projections

    async with progress("rebuilding the read models from the log (appends wait meanwhile)"):
        report = await rebuild_projections()
    if args.json:
        out_json(report)
    else:
        out(f"rebuilt from {report['events']} events: {report['executions']} executions")
        for broken in report["broken"]:
            out(f"  log of {broken['execution_id']} does not hold: {broken['problem']}")
        if report["broken"]:
            say(f"{len(report['broken'])} logs do not hold their hash chain: the read models "
                f"show what they say, but nothing runs or replays them; `wfdag verify --all`")
    return 1 if report["broken"] else 0


async def cmd_verify(args: argparse.Namespace) -> int:
    from actors.api import verify_execution, verify_log

    if bool(args.execution_id) == bool(args.all):
        raise UsageError("usage: wfdag verify ID, or wfdag verify --all")
    if args.execution_id:
        one = await verify_execution(args.execution_id, organization_id=args.org)
        if args.json:
            out_json(one)
        elif one["ok"]:
            out(f"{one['execution_id']}: {one['events']} events, the hash chain holds")
        else:
            out(f"{one['execution_id']}: BROKEN at seq {one['broken_at']}: {one['problem']}")
        return 0 if one["ok"] else 1
    async with progress("checking the hash chain of every execution's log"):
        report = await verify_log(organization_id=args.org)
    if args.json:
        out_json(report)
    else:
        out(f"{report['executions']} executions, {report['events']} events: "
            f"{len(report['broken'])} logs broken")
        for broken in report["broken"]:
            where = f" at seq {broken['broken_at']}" if broken["broken_at"] else ""
            out(f"  {broken['execution_id']}{where}: {broken['problem']}")
    return 0 if report["ok"] else 1


async def cmd_import(args: argparse.Namespace) -> int:
    from actors.api import import_execution

    path = Path(args.file)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    async with progress(f"importing {len(lines)} events from {path}"):
        execution_id = await import_execution(lines, user_id=args.user,
                                              organization_id=args.org, resume=args.resume)
    if args.json:
        out_json({"execution_id": execution_id, "events": len(lines), "resume": args.resume})
    else:
        out(f"imported {len(lines)} events of execution {execution_id}"
            + (" (resumed: the runners take it up)" if args.resume
               else " as evidence (not run here; --resume to run it)"))
    return 0


def add_verbs(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("breakers", parents=[common],
                       help="circuit breakers: list them, or `reset WORKFLOW STAGE`")
    p.add_argument("action", nargs="?", choices=["reset"])
    p.add_argument("workflow", nargs="?")
    p.add_argument("stage", nargs="?")
    p.set_defaults(func=cmd_breakers)

    p = sub.add_parser("validate", parents=[common],
                       help="check a JSON or YAML workflow definition (or a list of them)")
    p.add_argument("file")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("register", parents=[common], help="validate and register the "
                       "definition(s) of a JSON or YAML file")
    p.add_argument("file")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("projections", parents=[common],
                       help="`projections rebuild`: rebuild the read models")
    p.add_argument("action", choices=["rebuild"])
    p.set_defaults(func=cmd_projections)

    p = sub.add_parser("import", parents=[common], help="import an execution's log exported "
                       "with `wfdag events ID --json`")
    p.add_argument("file")
    p.add_argument("--user", default="import", metavar="USER_ID",
                   help="who imports it (recorded in its execution_imported event)")
    p.add_argument("--resume", action="store_true",
                   help="let the runners here take it up (an execution that has not ended; "
                        "with --org of its organization)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("verify", parents=[common],
                       help="check the hash chain of an execution's log (or --all): exit 1 "
                            "when one does not hold")
    p.add_argument("execution_id", nargs="?")
    p.add_argument("--all", action="store_true", help="every execution (of --org)")
    p.set_defaults(func=cmd_verify)
