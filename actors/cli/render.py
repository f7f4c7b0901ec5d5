"""What the CLI prints: results on standard output, progress and messages on standard error.

Standard output carries only wfdag's results (ids, tables, JSON): Ray prints its own warnings
to ``sys.stdout``, so :func:`actors.cli.command.main` points ``sys.stdout`` at stderr while a verb
runs, and results go to the real stdout through :func:`out`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, TextIO

__all__ = [
    "describe_event",
    "describe_snapshot",
    "fmt_list",
    "fmt_time",
    "out",
    "out_json",
    "progress",
    "say",
    "set_stdout",
    "table",
]

_stdout: TextIO = sys.stdout


def set_stdout(stream: TextIO) -> None:
    global _stdout
    _stdout = stream


def stdout() -> TextIO:
    return _stdout


def out(*values: object, end: str = "\n") -> None:
    """A result line on standard output."""
    print(*values, end=end, file=_stdout, flush=True)


def out_json(value: Any, *, indent: int | None = 2) -> None:
    out(json.dumps(value, indent=indent, default=str))


def say(message: str) -> None:
    """A message for the person at the terminal (standard error)."""
    print(message, file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]],
          *, right: Sequence[int] = ()) -> None:
    """Aligned columns under a header (``right``: indexes of right-aligned columns)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        out("  ".join(parts).rstrip())


def fmt_time(value: Any) -> str:
    return value.strftime("%H:%M:%S.%f")[:-3] if value is not None else "-"


def fmt_opt(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def fmt_list(items: list[str]) -> str:
    return ",".join(items) if items else "-"


def describe_event(event: Any) -> str:
    """One readable line of an event: seq, time, type as stored, stage, attempt, error, delay."""
    data = event.model_dump(mode="json")
    parts = [f"{event.seq:>4}", fmt_time(event.at), f"{event.type:<20}",
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
        if data.get("parent_execution_id"):
            details.append(f"parent={data['parent_execution_id']}:{data['parent_stage_id']}")
    for key in ("waiting_for", "until", "child_execution_id", "status"):
        if data.get(key):
            details.append(f"{key.removesuffix('_execution_id')}={data[key]}")
    return "  ".join(parts + details)


def describe_snapshot(snap: Any) -> str:
    return (f"status={snap.status:<12} done={fmt_list(snap.completed_stages)} "
            f"running={fmt_list(snap.running_stages)} failed={fmt_list(snap.failed_stages)} "
            f"skipped={fmt_list(snap.skipped_stages)} "
            f"compensated={fmt_list(snap.compensated_stages)}")


@contextlib.asynccontextmanager
async def progress(what: str) -> AsyncIterator[None]:
    """``what…`` on stderr, a ticking elapsed time while it runs (on a terminal), and how long
    it took at the end."""
    started = time.monotonic()
    tty = sys.stderr.isatty()
    say(f"{what}…")

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.5)
            sys.stderr.write(f"\r  {time.monotonic() - started:5.1f}s")
            sys.stderr.flush()

    ticker = asyncio.create_task(tick()) if tty else None
    try:
        yield
    finally:
        if ticker is not None:
            ticker.cancel()
            sys.stderr.write("\r")
    say(f"  done in {time.monotonic() - started:.1f}s")
