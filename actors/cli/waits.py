"""Verbs that end waits: approve, reject, signal (each a request to a waiting execution)."""

from __future__ import annotations

import argparse
from typing import Any

from actors.cli.execute import UsageError, load_json_arg
from actors.cli.render import out, out_json, say
from actors.cli.server import runners_for

__all__ = ["add_verbs"]


def _object(text: str | None, what: str) -> dict[str, Any] | None:
    if text is None:
        return None
    value = load_json_arg(text, what)
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


async def _done(args: argparse.Namespace, status: Any, what: str) -> int:
    # The request is durable: make sure runners will take it (the service, started if none).
    await runners_for(f"`wfdag {args.command}`")
    if args.json:
        out_json(status.model_dump(mode="json"))
    else:
        out(status.execution_id)
        say(f"{what}; follow it with `wfdag wait {status.execution_id}`")
    return 0


async def cmd_approve(args: argparse.Namespace) -> int:
    from actors.api import approve_stage

    data = _object(args.data, "--data")
    status = await approve_stage(args.execution_id, args.stage, args.user, comment=args.comment,
                                 data=data, organization_id=args.org)
    return await _done(args, status, f"approved {args.stage}")


async def cmd_reject(args: argparse.Namespace) -> int:
    from actors.api import reject_stage

    status = await reject_stage(args.execution_id, args.stage, args.user, reason=args.reason,
                                organization_id=args.org)
    return await _done(args, status, f"rejected {args.stage}: it fails, and what completed is "
                                     f"compensated")


async def cmd_signal(args: argparse.Namespace) -> int:
    from actors.api import send_signal

    payload = _object(args.payload, "--payload")
    status = await send_signal(args.execution_id, args.name, payload, user_id=args.user,
                               organization_id=args.org)
    return await _done(args, status, f"sent signal {args.name}")


def add_verbs(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("approve", parents=[common], help="approve a waiting approval stage")
    p.add_argument("execution_id")
    p.add_argument("stage")
    p.add_argument("--comment", metavar="TEXT")
    p.add_argument("--data", metavar="JSON|@FILE", help="a JSON object kept in its output")
    p.add_argument("--user", default="user-123", help="who approves (default user-123)")
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("reject", parents=[common],
                       help="reject a waiting approval stage: it fails for good")
    p.add_argument("execution_id")
    p.add_argument("stage")
    p.add_argument("--reason", required=True, metavar="TEXT")
    p.add_argument("--user", default="user-123")
    p.set_defaults(func=cmd_reject)

    p = sub.add_parser("signal", parents=[common],
                       help="send a named signal (kept until a signal stage takes it)")
    p.add_argument("execution_id")
    p.add_argument("name")
    p.add_argument("--payload", metavar="JSON|@FILE", help="a JSON object: the stage's output")
    p.add_argument("--user", default="user-123")
    p.set_defaults(func=cmd_signal)
