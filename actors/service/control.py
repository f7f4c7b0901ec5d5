"""Starting, stopping and asking after the service (what ``wfdag server …`` calls)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from actors.service.record import (
    EMBEDDED_ENV,
    ServiceRecord,
    live_service,
    log_path,
    pid_alive,
    proc_stat,
)
from definitions import WfdagError

__all__ = [
    "START_TIMEOUT_SECONDS",
    "ServiceError",
    "end_leftovers",
    "start_service",
    "stop_service",
]

START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 60.0


class ServiceError(WfdagError):
    """The service could not be started or stopped; the message says what to do."""


def start_service(database_url: str | None = None, *,
                  progress: Callable[[str], None] | None = None) -> tuple[ServiceRecord, bool]:
    """Start the service of this ``$WFDAG_HOME`` in the background (a session of its own, so
    that it outlives the caller and its terminal), and return once it accepts work.
    ``(record, started)``: ``started`` is False when it was running already."""
    running = live_service()
    if running is not None:
        return running, False
    stale = ServiceRecord.load()
    if stale is not None:
        # A service that was killed (SIGKILL, OOM) left its record, and maybe some of its
        # Ray's processes (agents, workers, runners still holding leases): they are in its
        # session, which it led (started detached); nothing else is.
        end_leftovers(stale.pid)
        ServiceRecord.remove(stale.pid)
    log = log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # Whether the database is the embedded default (no URL given to this caller): callers
    # without a URL then know it is theirs too (actors.cli.quick).
    env[EMBEDDED_ENV] = "" if os.environ.get("WFDAG_DATABASE_URL") else "1"
    if database_url:
        env["WFDAG_DATABASE_URL"] = database_url
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "actors.service.supervisor"], stdin=subprocess.DEVNULL,
            stdout=out, stderr=out, env=env, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    shown = 0.0
    while True:
        record = live_service()
        if record is not None and record.pid == proc.pid:
            return record, True
        code = proc.poll()
        if code is not None:
            other = live_service()
            if other is not None:  # another start won the race
                return other, False
            raise ServiceError(f"the wfdag service exited at start (code {code}); its log "
                               f"says why: {log}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise ServiceError(f"the wfdag service did not come up within "
                               f"{START_TIMEOUT_SECONDS:g}s; see {log}")
        if progress is not None and time.monotonic() - shown >= 5:
            shown = time.monotonic()
            progress("waiting for the service (Ray, migrations, the pool)…")
        time.sleep(0.2)


def stop_service() -> ServiceRecord | None:
    """Stop the service of this ``$WFDAG_HOME`` (SIGTERM: it stops Ray, hands back what ran);
    ``None`` when none ran.  It is killed if it does not end within a minute."""
    record = live_service()
    if record is None:
        return None
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while pid_alive(record.pid):
        _reap(record.pid)
        if time.monotonic() > deadline:
            os.killpg(record.pid, signal.SIGKILL)  # its session: Ray's processes too
            ServiceRecord.remove(record.pid)
            break
        time.sleep(0.1)
    return record


def end_leftovers(session: int) -> None:
    """Kill what is left of a dead service's session (Ray's agents and workers outlive a
    SIGKILL of their driver for a while).  A service run with ``--foreground`` led no
    session of its own: nothing is killed then."""
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == session:
            continue
        fields = proc_stat(int(entry))
        if fields is None or len(fields) < 4:
            continue
        if fields[3] == str(session) and fields[0] not in ("Z", "X"):  # session; not a zombie
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)


def _reap(pid: int) -> None:
    """A service started by this very process is its child: collect it once it ended."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
