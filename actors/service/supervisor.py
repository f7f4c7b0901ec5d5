"""The service's supervisor: the detached process that ``wfdag server start`` leaves running.

It runs the service proper (:mod:`actors.service.process`) as its child and forwards SIGTERM
and SIGINT to it.  When the child ends on its own after it had come up, the supervisor clears
what is left of it (its Ray's agents and workers: everything else in the supervisor's session)
and starts it again, with backoff (1 s doubling to 30 s; back to 1 s after a minute up).  That
happens when the service's local Ray died: Ray 2.60 ends a driver whose raylet or GCS is gone
(at its next call to them), and the service exits with :data:`RESTART_CODE` itself as soon as it
sees them gone.  A child that fails before it ever came up is not restarted: its error is the
start's, and ``wfdag server start`` reports it.

The service record names the supervisor (``pid``): ``wfdag server stop`` signals it, and its
session holds every process of the service.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

from actors.logs import configure, get_logger
from actors.service.control import end_leftovers
from actors.service.record import ServiceRecord

__all__ = ["RESTART_CODE", "SUPERVISED_ENV", "main", "supervisor_pid"]

#: The exit code with which the service asks to be started again (its local Ray died).
RESTART_CODE = 75
#: Set in the service's environment when a supervisor runs it.
SUPERVISED_ENV = "WFDAG_SERVICE_SUPERVISOR"


def supervisor_pid() -> int:
    """The pid the service record names: the supervisor's, or this process's when none runs it
    (``--foreground``)."""
    raw = os.environ.get(SUPERVISED_ENV)
    return int(raw) if raw and raw.isdigit() and int(raw) == os.getppid() else os.getpid()


def main() -> int:
    """Supervise the service until SIGTERM/SIGINT; the child's last exit code."""
    configure()
    log = get_logger(component="supervisor")
    stopping = threading.Event()
    child: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        if child and child[-1].poll() is None:
            child[-1].send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    env = {**os.environ, SUPERVISED_ENV: str(os.getpid())}
    backoff = 1.0
    code = 0
    while not stopping.is_set():
        started = time.monotonic()
        child.append(subprocess.Popen([sys.executable, "-m", "actors.service.process"],
                                      env=env, stdin=subprocess.DEVNULL))
        code = child[-1].wait()
        if stopping.is_set():
            break
        record = ServiceRecord.load()
        if record is None or record.pid != os.getpid():
            return code  # it never came up: the start reports why (its log says)
        if time.monotonic() - started > 60:
            backoff = 1.0
        log.warning("service.restarting", exit_code=code, in_seconds=backoff,
                    why="the local Ray died" if code == RESTART_CODE else "the service ended")
        end_leftovers(os.getpid())  # what is left of its Ray
        if stopping.wait(backoff):
            break
        backoff = min(backoff * 2, 30.0)
    ServiceRecord.remove(os.getpid())
    return code


if __name__ == "__main__":
    sys.exit(main())
