"""What a running service left under ``$WFDAG_HOME``: who it is, where, on which database.

Read by every CLI call and API start (cheaply: one small file, no Ray): a live service on the
same database owns the runners, so the caller appends and its runners take the work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from events.database import wfdag_home

__all__ = [
    "EMBEDDED_ENV",
    "ServiceRecord",
    "database_fingerprint",
    "live_service",
    "log_path",
    "pid_alive",
    "proc_stat",
    "record_path",
]


#: Set to ``1`` by the launcher for a service on the embedded default database.
EMBEDDED_ENV = "WFDAG_SERVICE_EMBEDDED"


def record_path() -> Path:
    return wfdag_home() / "service.json"


def log_path() -> Path:
    return wfdag_home() / "service.log"


def database_fingerprint(url: str) -> str:
    """Names a database without holding its URL (which may carry a password)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, pgrp, session,
    …), or ``None`` when there is no such process (or no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """The process runs (a zombie — dead, not yet collected by its parent — does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = proc_stat(pid)
    return fields is None or fields[0] not in ("Z", "X")  # no /proc: the signal said it is


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """The service of this ``$WFDAG_HOME``."""

    pid: int
    started_at: str  # ISO, UTC
    ray_address: str
    database: str  # redacted URL, for people
    database_fingerprint: str  # for matching callers to it
    pool_size: int
    dashboard_url: str | None = None
    console_url: str | None = None
    #: On the embedded default database (no ``WFDAG_DATABASE_URL`` given): a caller without
    #: one is on the same database (see :mod:`actors.cli.quick`).
    embedded: bool = False

    def save(self) -> None:
        path = record_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)  # atomic: a reader sees the old record or the new one

    @classmethod
    def load(cls) -> ServiceRecord | None:
        try:
            data = json.loads(record_path().read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    @staticmethod
    def remove(pid: int) -> None:
        """Remove the record if it is still this process's."""
        current = ServiceRecord.load()
        if current is not None and current.pid == pid:
            with contextlib.suppress(OSError):
                record_path().unlink()


def live_service(database_url: str | None = None) -> ServiceRecord | None:
    """The running service of this ``$WFDAG_HOME`` (on ``database_url``, when given)."""
    record = ServiceRecord.load()
    if record is None or not pid_alive(record.pid):
        return None
    if database_url is not None and record.database_fingerprint != database_fingerprint(
            database_url):
        return None
    return record
