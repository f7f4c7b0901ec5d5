"""``wfdag``: the command line, whole (its entry point, :mod:`actors.cli.quick`, answers
``wfdag status`` through a running service before coming here).  User errors print one clear
line, never a traceback.

argparse (standard library) with a parent parser of global options rather than Click/Typer:
nested verbs, ``--help`` and exit code 2 on bad usage come with it, and it costs no import
time — a read-only verb must answer within about a second, in a new process each time.

Exit codes: 0 ok; 1 the execution did not complete, or a check failed; 2 bad usage or invalid
input; 3 not found; 4 timed out waiting; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from importlib import metadata

from actors.cli import admin, execute, inspect, schedules, server, waits
from actors.cli.execute import UsageError
from actors.cli.render import say, set_stdout

__all__ = ["EXIT_CODES", "build_parser", "main"]

EXIT_CODES = {
    0: "ok",
    1: "the execution did not complete, or a check failed",
    2: "bad usage or invalid input",
    3: "not found (an execution, a workflow, a stage)",
    4: "timed out waiting",
}

_EPILOG = "exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()) + \
    "; 130 interrupted"


def _version() -> str:
    try:
        return metadata.version("wfdag")
    except metadata.PackageNotFoundError:
        return "unknown"


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every verb takes, before or after the verb (``SUPPRESS`` after it, so that
    a value given before the verb is not overwritten by the verb's default)."""
    default = None if top else argparse.SUPPRESS
    flag = False if top else argparse.SUPPRESS
    parser.add_argument("--database-url", metavar="URL", default=default,
                        help="PostgreSQL to use (default: WFDAG_DATABASE_URL, else the "
                             "embedded one)")
    parser.add_argument("--ray-address", metavar="ADDR", default=default,
                        help="join this Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--org", metavar="ORG_ID", default=default,
                        help="act as organization ORG_ID: another organization's execution "
                             "is not found")
    parser.add_argument("--log-level", metavar="LEVEL", default=default,
                        help="wfdag's log lines on stderr at LEVEL (default: WFDAG_LOG_LEVEL, "
                             "else WARNING)")
    parser.add_argument("--json", action="store_true", default=flag,
                        help="print the result as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wfdag", description="Durable, event-sourced workflow DAGs on Ray and PostgreSQL.",
        epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"wfdag {_version()}")
    _global_options(parser, top=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, top=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    execute.add_verbs(sub, common)
    inspect.add_verbs(sub, common)
    admin.add_verbs(sub, common)
    waits.add_verbs(sub, common)
    schedules.add_verbs(sub, common)
    server.add_verbs(sub, common)
    for choice in sub.choices.values():
        choice.epilog = _EPILOG
    return parser


def _apply_globals(args: argparse.Namespace) -> None:
    from actors.logs import configure
    from actors.runtime import set_database_url

    if args.database_url:
        os.environ["WFDAG_DATABASE_URL"] = args.database_url
        set_database_url(args.database_url)
    if args.ray_address:
        os.environ["RAY_ADDRESS"] = args.ray_address
    configure(args.log_level)


def _ray_is_up() -> bool:
    if "ray" not in sys.modules:
        return False
    import ray

    return bool(ray.is_initialized())


async def _run(args: argparse.Namespace) -> int:
    from actors.api.common import HOSTS_RUNNERS
    from actors.runtime import close_stores

    HOSTS_RUNNERS.set(False)  # this process is about to exit: runners are the service's
    try:
        return int(await args.func(args))
    finally:
        await close_stores()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ray_was_up = _ray_is_up()  # a caller's own Ray session (main() called in-process) stays
    real_stdout = sys.stdout
    set_stdout(real_stdout)
    sys.stdout = sys.stderr  # Ray's prints go to stderr; results go to the real stdout
    try:
        _apply_globals(args)
        return asyncio.run(_run(args))
    except UsageError as exc:
        say(f"error: {exc}")
        return 2
    except BrokenPipeError:
        # The reader went away (`wfdag events ID | head`): end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, real_stdout.fileno())
        return 0
    except KeyboardInterrupt:
        say("interrupted; executions carry on in their actors")
        return 130
    except Exception as exc:
        from definitions import WfdagError

        if isinstance(exc, WfdagError):
            say(f"error: {exc}")
            return exc.exit_code
        # A bug of wfdag's (or of what it runs on): one line, the traceback only on request.
        from actors.logs import get_logger

        get_logger().debug("cli.crashed", exc_info=True)
        say(f"error: unexpected {type(exc).__name__}: {str(exc)[:500]}. This is a bug: "
            f"run again with --log-level debug for the traceback, and report it")
        return 1
    finally:
        if not ray_was_up and _ray_is_up():
            import ray

            ray.shutdown()  # the Ray this call started, while stray prints go to stderr
        sys.stdout = real_stdout


if __name__ == "__main__":
    sys.exit(main())
