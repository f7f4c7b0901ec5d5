"""Verbs that start or change executions: run, wait, cancel, rollback, retry, recover."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from actors.cli.render import describe_event, out, out_json, say
from actors.cli.server import runners_for
from definitions import WfdagError

__all__ = ["SEED_CONTEXT", "UsageError", "add_verbs", "context_arg", "load_json_arg"]

SEED_CONTEXT = {"userId": "user-123", "organizationId": "org-456", "projectId": "project-789"}


class UsageError(Exception):
    """Bad input on the command line (exit 2): the message says what is wrong."""


class NotDrivenError(WfdagError):
    """``wfdag wait`` on an execution that nothing drives (exit 1): the message names the
    command that resumes it."""


def load_json_arg(text: str, what: str) -> Any:
    """JSON given inline, or ``@FILE``."""
    source = text
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            source = path.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read {what} file {path}: {exc.strerror}") from None
    try:
        return json.loads(source)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None


def _status_line(status: Any) -> str:
    return str(status.status) + (f": {status.error_message}" if status.error_message else "")


async def _follow(execution_id: str, timeout: float | None, org: str | None) -> Any:
    """Show each event as it is appended (progress), then return the final status."""
    from actors.api import get_workflow_status, watch_execution

    async for event in watch_execution(execution_id, timeout=timeout, organization_id=org):
        say(describe_event(event))
    return await get_workflow_status(execution_id, organization_id=org)


def context_arg(args: argparse.Namespace) -> dict[str, Any]:
    """``--context`` (JSON or @FILE, an object), else the seed's example context."""
    if args.context is None:
        return dict(SEED_CONTEXT, **({"organizationId": args.org} if args.org else {}))
    context = load_json_arg(args.context, "--context")
    if not isinstance(context, dict):
        raise UsageError(f"--context must be a JSON object, got {type(context).__name__}")
    return context


async def cmd_run(args: argparse.Namespace) -> int:
    from actors.api import check_start, execute_workflow_dag

    context = context_arg(args)
    # Every input error (an unknown workflow, a bad context…) before anything starts.
    await check_start(args.workflow, context, args.user, version=args.version,
                      idempotency_key=args.idempotency_key, organization_id=args.org)
    await runners_for("`wfdag run`")
    execution_id = await execute_workflow_dag(
        args.workflow, context, args.user, version=args.version,
        idempotency_key=args.idempotency_key, organization_id=args.org)
    if not args.wait:
        if args.json:
            out_json({"execution_id": execution_id})
        else:
            out(execution_id)
        say(f"started; it runs on without this command — follow it with "
            f"`wfdag wait {execution_id}`")
        return 0
    if not args.json:
        out(execution_id)
    status = await _follow(execution_id, args.timeout, args.org)
    if args.json:
        out_json(status.model_dump(mode="json"))
    else:
        out(_status_line(status))
    if status.status != "completed":
        say(f"see `wfdag events {execution_id}` for every attempt and error")
        return 1
    return 0


async def _check_state(execution_id: str, org: str | None, action: str,
                       allowed: tuple[str, ...], needed: str) -> None:
    """The API's refusal (not found, wrong state), before any runner is started for it."""
    from actors.api import get_workflow_status
    from definitions import ExecutionStateError

    status = await get_workflow_status(execution_id, organization_id=org)
    if status.status not in allowed:
        raise ExecutionStateError(status.execution_id, status.status, action, needed)


async def _check_driven(execution_id: str, org: str | None) -> None:
    """An execution that has not ended and that nobody will drive is said so at once."""
    import os

    from actors.api import get_execution_runner, get_workflow_status, recover_executions
    from actors.runtime import get_database_url
    from actors.service import live_service

    status = await get_workflow_status(execution_id, organization_id=org)
    if status.terminal or os.environ.get("RAY_ADDRESS"):
        return  # a cluster's runners take it (or it ended: the wait returns at once)
    if await get_execution_runner(status.execution_id) is not None:
        return  # a live runner drives it
    if live_service(get_database_url()) is not None:
        await recover_executions()  # queued for the service's runners, if it was not
        return
    raise NotDrivenError(
        f"execution {status.execution_id} is {status.status} and nothing drives it: no wfdag "
        f"service is up and no runner holds it. Resume it with `wfdag recover` (it starts the "
        f"service), then `wfdag wait {status.execution_id}`")


async def cmd_wait(args: argparse.Namespace) -> int:
    await _check_driven(args.execution_id, args.org)
    status = await _follow(args.execution_id, args.timeout, args.org)
    if args.json:
        out_json(status.model_dump(mode="json"))
    else:
        out(_status_line(status))
    return 0 if status.status == "completed" else 1


async def cmd_rollback(args: argparse.Namespace) -> int:
    from actors.api import rollback_workflow, wait_for_workflow

    await _check_state(args.execution_id, args.org, "a rollback",
                       ("completed", "failed", "rolled_back", "compensating"),
                       "completed or failed")
    await runners_for("`wfdag rollback`")
    status = await rollback_workflow(args.execution_id, args.user, organization_id=args.org)
    say(f"{status.execution_id}: {status.status}")
    if args.wait:
        status = await wait_for_workflow(status.execution_id, timeout=args.timeout)
    if args.json:
        out_json(status.model_dump(mode="json"))
    else:
        out(_status_line(status))
    return 0 if status.status in ("rolled_back", "compensating") else 1


async def cmd_retry(args: argparse.Namespace) -> int:
    from actors.api import retry_failed_workflow, wait_for_workflow

    await _check_state(args.execution_id, args.org, "a retry", ("failed", "rolled_back"),
                       "failed or rolled_back")
    await runners_for("`wfdag retry`")
    new_id = await retry_failed_workflow(args.execution_id, args.user,
                                         organization_id=args.org)
    if not args.wait:
        if args.json:
            out_json({"execution_id": new_id, "retry_of": args.execution_id})
        else:
            out(new_id)
        return 0
    if not args.json:
        out(new_id)
    status = await wait_for_workflow(new_id, timeout=args.timeout)
    if args.json:
        out_json(status.model_dump(mode="json"))
    else:
        out(_status_line(status))
    return 0 if status.status == "completed" else 1


async def cmd_recover(args: argparse.Namespace) -> int:
    from actors.api import recover_executions

    setup = await runners_for("`wfdag recover`")
    say("recovery sweep: executions no live execution actor drives…")
    swept = await recover_executions()  # the runners of the service (or cluster) adopt them
    report: dict[str, Any] = {**swept, "pool": setup["pool"] if setup else _service_pool()}
    if args.json:
        out(json.dumps({k: report[k] for k in ("resumed", "dead_lettered", "pool")}))
        return 0
    for eid in report["resumed"]:
        out(f"resumed       {eid}")
    for eid in report["dead_lettered"]:
        out(f"dead-lettered {eid}")
    say(f"{len(report['resumed'])} resumed, {len(report['dead_lettered'])} dead-lettered, "
        f"{report['pool']} execution actors; see `wfdag status ID` for each"
        + (" (a dead-lettered one says why and what to do next)"
           if report["dead_lettered"] else ""))
    return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    from actors.api import cancel_workflow, wait_for_workflow

    await _check_state(args.execution_id, args.org, "a cancel",
                       ("queued", "initiated", "in_progress", "cancelled"),
                       "queued, initiated or in_progress")
    await runners_for("`wfdag cancel`")
    status = await cancel_workflow(args.execution_id, args.user, compensate=args.compensate,
                                   reason=args.reason, organization_id=args.org)
    if not args.json:
        out(status.execution_id)
    if status.status == "cancelled":
        say(f"{status.execution_id} was cancelled already")
    elif args.wait:
        say("cancel requested; waiting for its runner to stop what runs"
            + (" and compensate what completed" if args.compensate else "") + "…")
        status = await wait_for_workflow(status.execution_id, timeout=args.timeout)
    else:
        say(f"cancel requested; its runner stops what runs — follow it with "
            f"`wfdag wait {status.execution_id}`")
    if args.json:
        out_json(status.model_dump(mode="json"))
    elif status.terminal or args.wait:
        out(_status_line(status))
    wanted = ("cancelled", "rolled_back") if args.compensate else ("cancelled",)
    return 0 if not (status.terminal or args.wait) or status.status in wanted else 1


def _service_pool() -> int:
    from actors.service import live_service

    record = live_service()
    return record.pool_size if record is not None else 0


def add_verbs(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="start an execution of a workflow")
    p.add_argument("workflow", help="workflow id, e.g. complete-value-lifecycle-v1")
    p.add_argument("--context", help="the context as JSON, or @FILE (default: the seed's "
                   "example context)")
    p.add_argument("--version", type=int, metavar="N", help="run version N of the workflow "
                   "(default: the latest active one)")
    p.add_argument("--idempotency-key", metavar="KEY", help="start at most one execution for "
                   "KEY: a repeated call prints the same id")
    p.add_argument("--user", default="user-123", help="the user id recorded as created_by")
    p.add_argument("--wait", action="store_true", help="show progress until it ends; exit 1 "
                   "unless it completed")
    p.add_argument("--timeout", type=float, default=None,
                   help="give up waiting after SECONDS (exit 4)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("wait", parents=[common], help="follow an execution (started by any "
                       "driver) until it ends; exit 1 unless it completed")
    p.add_argument("execution_id")
    p.add_argument("--timeout", type=float, default=None, help="give up after SECONDS (exit 4)")
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("rollback", parents=[common],
                       help="compensate a completed or failed execution")
    p.add_argument("execution_id")
    p.add_argument("--user", default="user-123")
    p.add_argument("--wait", action="store_true", help="wait until the rollback ends")
    p.add_argument("--timeout", type=float, default=None)
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("cancel", parents=[common],
                       help="stop an execution that has not ended (exit 1 if it ended otherwise)")
    p.add_argument("execution_id")
    p.add_argument("--compensate", action="store_true",
                   help="then compensate its completed stages, as a rollback does")
    p.add_argument("--reason", metavar="TEXT", help="why (kept in its log)")
    p.add_argument("--user", default="user-123")
    p.add_argument("--wait", action="store_true", help="wait until it has stopped")
    p.add_argument("--timeout", type=float, default=None)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("retry", parents=[common],
                       help="start a new execution of a failed or rolled-back one")
    p.add_argument("execution_id")
    p.add_argument("--user", default="user-123")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--timeout", type=float, default=None)
    p.set_defaults(func=cmd_retry)

    p = sub.add_parser("recover", parents=[common], help="recovery sweep: requeue executions "
                       "nobody drives, dead-letter those that keep crashing their actors")
    p.set_defaults(func=cmd_recover)
