"""``wfdag``'s entry point, and its quick path: ``wfdag status ID`` asks the running service.

A whole ``wfdag`` process that imports Ray, pydantic and asyncpg costs ~0.7 s before it does
anything; ``status`` is the verb people (and scripts, in loops) call most.  When this
``$WFDAG_HOME``'s service is up, serves its console, and is on the database this call would
use, the status is one HTTP request to it (the console's ``/api/executions/{id}/status``, a
call of :func:`actors.api.get_workflow_status` there) with the standard library only.  Any
other case — no service, another database, a global option, an error, a non-200 answer — goes
the whole way (:mod:`actors.cli.command`), which also says what is wrong.  This module imports
nothing of wfdag and nothing outside the standard library.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["main", "status_lines"]

_TIMEOUT_S = 5.0


def _home() -> Path:
    # As events.database.wfdag_home (not imported: it would import the whole events package).
    explicit = os.environ.get("WFDAG_HOME")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "wfdag"


def _status_args(argv: Sequence[str]) -> tuple[str, bool, str | None] | None:
    """``status ID [--json] [--org ORG]`` (in any order) → (id, json, org); else ``None``."""
    if not argv or argv[0] != "status":
        return None
    eid: str | None = None
    as_json, org = False, None
    rest = list(argv[1:])
    while rest:
        word = rest.pop(0)
        if word == "--json":
            as_json = True
        elif word == "--org" and rest and not rest[0].startswith("-"):
            org = rest.pop(0)
        elif word.startswith("--org="):
            org = word[len("--org="):]
        elif word.startswith("-") or eid is not None:
            return None  # another option, or a second argument: the whole parser decides
        else:
            eid = word
    return (eid, as_json, org) if eid else None


def _service_console() -> tuple[str, str] | None:
    """(console URL, token) of this home's live service on this call's database, or None."""
    home = _home()
    try:
        record = json.loads((home / "service.json").read_text())
        token = (home / "console.token").read_text().strip()
        pid, url = int(record["pid"]), record.get("console_url")
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not url or not token:
        return None
    given = os.environ.get("WFDAG_DATABASE_URL")
    if given:
        import hashlib

        fingerprint = hashlib.sha256(given.encode()).hexdigest()[:16]
        if fingerprint != record.get("database_fingerprint"):
            return None
    elif not record.get("embedded"):
        return None  # the service has a database of its own; this call would use the default
    return str(url), token


def _get(host: str, port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """One HTTP/1.0 GET on loopback: (status, body).  Not ``http.client``: it imports
    ``email`` and ``ssl``, ~10 ms of this process's ~60.  HTTP/1.0 makes the service answer
    with a length or by closing, never in chunks; the body is what comes until it closes."""
    import socket

    lines = [f"GET {path} HTTP/1.0", f"Host: {host}:{port}",
             *(f"{name}: {value}" for name, value in headers.items())]
    if any("\r" in line or "\n" in line for line in lines):
        raise ValueError("a header that would split the request")
    with socket.create_connection((host, port), timeout=_TIMEOUT_S) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status_line) < 2 or not status_line[0].startswith(b"HTTP/"):
        raise ValueError("not an HTTP answer")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and int(value) != len(body):
            raise ValueError("a body cut short")
    return int(status_line[1]), body


def _fetch(console: str, token: str, eid: str,
           org: str | None) -> tuple[str, dict[str, Any]] | None:
    """The status as the service sent it (``--json``'s text, exactly) and parsed."""
    from urllib.parse import quote, urlsplit

    headers = {"Authorization": f"Bearer {token}"}
    if org is not None:
        headers["X-Wfdag-Org"] = org
    try:
        parts = urlsplit(console)
        status, body = _get(parts.hostname or "127.0.0.1", parts.port or 80,
                            f"/api/executions/{quote(eid, safe='')}/status", headers)
        if status != 200:
            return None
        text = body.decode()
        data = json.loads(text)
    except (OSError, ValueError):
        return None
    return (text, data) if isinstance(data, dict) else None


def _when(value: Any) -> str:
    """A time as the status shows it (``str`` of the datetime), ``-`` when there is none."""
    if not value:
        return "-"
    try:
        return str(datetime.fromisoformat(str(value)))
    except ValueError:
        return str(value)


def status_lines(status: dict[str, Any]) -> list[str]:
    """``wfdag status ID`` as text, from the status as JSON (``WorkflowStatus``'s fields)."""
    lines = [str(status["execution_id"]),  # alone on its line: `head -1` captures it
             f"workflow      {status['workflow_id']} v{status['workflow_version']}",
             f"status        {status['status']}",
             f"current stage {status.get('current_stage') or '-'}",
             f"started       {_when(status.get('started_at'))}",
             f"completed     {_when(status.get('completed_at'))}"]
    if status.get("error_message"):
        lines.append(f"error         {status['error_message']}")
    # As WorkflowStatus.waiting and .executed_steps (properties: not in its JSON).
    waiting = ((status.get("audit_context") or {}).get("waiting")
               if status["status"] == "waiting" else None)
    if waiting:
        lines.append(f"waiting on    {', '.join(waiting.get('stages', []))} (wakes on its own "
                     f"at {waiting.get('wake_at') or 'no time: a request wakes it'})")
    parent = status.get("parent")
    if parent:
        lines.append(f"parent        {parent['execution_id']} (stage "
                     f"{parent.get('stage_id')})")
    for stage_id, child in (status.get("children") or {}).items():
        lines.append(f"child         {child} (stage {stage_id})")
    steps = (status.get("context") or {}).get("executed_steps", [])
    steps = steps if isinstance(steps, list) else []
    lines.append(f"executed      {len(steps)} stage(s): "
                 + ", ".join(s["stage_id"] for s in steps))
    return lines


def quick_status(argv: Sequence[str]) -> bool:
    """Answer ``wfdag status`` through the service; ``False`` when it cannot (nothing
    printed): the whole command line takes over."""
    wanted = _status_args(argv)
    if wanted is None:
        return False
    console = _service_console()
    if console is None:
        return False
    eid, as_json, org = wanted
    got = _fetch(*console, eid, org)
    if got is None:
        return False
    text = got[0] if as_json else "\n".join(status_lines(got[1]))
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """``wfdag`` (see :mod:`actors.cli.command`)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if quick_status(args):
        return 0
    from actors.cli.command import main as whole

    return whole(argv)
