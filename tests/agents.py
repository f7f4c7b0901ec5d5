"""Agents for the integration tests, imported by path (``tests.agents:NAME``) on Ray workers.

Agents that record side effects write files under ``ctx.context["dir"]``, so the test can see
what happened on the workers.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from actors import StageContext


class HttpError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code} from upstream")
        self.status_code = status_code


def _dir(ctx: StageContext) -> Path:
    return Path(ctx.context["dir"])


def _touch(path: Path, text: str = "") -> None:
    """Append a line.  A new file appears with its first line already in it (linked into
    place whole): a test that waits for the file never reads it empty."""
    line = text + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(line)
    try:
        os.link(tmp, path)
    except FileExistsError:
        with open(path, "a") as fh:
            fh.write(line)
    finally:
        tmp.unlink()


def noop(ctx: StageContext) -> dict[str, Any]:
    return {"stage": ctx.stage_id, "attempt": ctx.attempt}


def flaky_connection(ctx: StageContext) -> dict[str, Any]:
    """ConnectionError on attempts 1 and 2 (after ``fail_seconds``), success on 3."""
    if ctx.attempt < 3:
        time.sleep(float(ctx.context.get("fail_seconds", 0)))
        raise ConnectionError(f"connection reset (attempt {ctx.attempt})")
    return {"succeeded_on": ctx.attempt}


def forbidden(ctx: StageContext) -> dict[str, Any]:
    raise PermissionError("not allowed to read the ledger")


def not_found(ctx: StageContext) -> dict[str, Any]:
    raise HttpError(404)


def unavailable(ctx: StageContext) -> dict[str, Any]:
    raise HttpError(503)


def timed(ctx: StageContext) -> dict[str, Any]:
    """Sleeps ``ctx.context["seconds"]`` and reports when it ran (wall clock)."""
    start = time.time()
    time.sleep(float(ctx.context.get("seconds", 1)))
    return {"start": start, "end": time.time(), "pid": os.getpid()}


def hung(ctx: StageContext) -> dict[str, Any]:
    """Writes its pid, then would write ``finished`` after 30 s — unless it is stopped."""
    _touch(_dir(ctx) / "hung.pid", str(os.getpid()))
    time.sleep(30)
    _touch(_dir(ctx) / "finished")
    return {}


def effectful(ctx: StageContext) -> dict[str, Any]:
    """Records each call, waits ``ctx.context["seconds"]``, then performs its side effect once
    per idempotency key (an exclusive create: a second call with the same key does nothing)."""
    _touch(_dir(ctx) / f"calls-{ctx.stage_id}", f"{os.getpid()} attempt={ctx.attempt}")
    time.sleep(float(ctx.context.get("seconds", 0)))
    effect = _dir(ctx) / f"effect-{ctx.idempotency_key.replace(':', '_')}"
    try:
        fd = os.open(effect, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, ctx.stage_id.encode())
        os.close(fd)
        created = True
    except FileExistsError:
        created = False
    return {"effect_created": created}


async def async_agent(ctx: StageContext) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    return {"async": True, "inputs": sorted(ctx.inputs)}


def returns_string(ctx: StageContext) -> Any:
    return "not a dict"


def returns_unserialisable(ctx: StageContext) -> Any:
    return {"when": {1, 2, 3}}


def returns_nan(ctx: StageContext) -> Any:
    return {"score": float("nan")}


# --- compensation handlers and switchable agents (saga and breaker tests) -----------------

def undo_recorder(ctx: StageContext) -> dict[str, Any]:
    """Appends the stage to ``undo-order``; its effect happens once per idempotency key."""
    _touch(_dir(ctx) / "undo-calls", ctx.stage_id)
    time.sleep(float(ctx.context.get("undo_seconds", 0)))
    assert ctx.output is not None, "a handler is handed the output of the stage it undoes"
    effect = _dir(ctx) / f"undo-{ctx.idempotency_key.replace(':', '_')}"
    try:
        fd = os.open(effect, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(fd)
        _touch(_dir(ctx) / "undo-order", ctx.stage_id)
    except FileExistsError:
        pass
    return {"undone": ctx.stage_id, "of": ctx.output}


def undo_fails(ctx: StageContext) -> dict[str, Any]:
    _touch(_dir(ctx) / "undo-calls", ctx.stage_id)
    raise PermissionError(f"cannot undo {ctx.stage_id}: ledger is locked")


def toggle(ctx: StageContext) -> dict[str, Any]:
    """Fails (permanently) until the file ``fixed`` exists in the test's directory."""
    if not (_dir(ctx) / "fixed").exists():
        raise PermissionError("the ledger is read-only (create 'fixed' to mend it)")
    return {"fixed": True}


def breaker_agent(ctx: StageContext) -> dict[str, Any]:
    """Records each call; HTTP 503 unless ``healthy`` exists, then sleeps ``seconds``."""
    _touch(_dir(ctx) / "breaker-calls", ctx.execution_id)
    if not (_dir(ctx) / "healthy").exists():
        raise HttpError(503)
    time.sleep(float(ctx.context.get("seconds", 0)))
    return {"healthy": True}


def flaky_once(ctx: StageContext) -> dict[str, Any]:
    """Fails for good when ``fail`` is in the context; else a ConnectionError on attempt 1."""
    if ctx.context.get("fail"):
        raise PermissionError("told to fail")
    if ctx.attempt == 1:
        raise ConnectionError("first attempt always drops")
    return {"attempt": ctx.attempt}


def kill_my_runner(ctx: StageContext) -> dict[str, Any]:
    """A poison stage: kills the execution actor that runs it (Ray restarts that actor), every
    time.  Records each call."""
    import ray

    from actors import execution_actor

    _touch(_dir(ctx) / "runner-kills", f"{os.getpid()} attempt={ctx.attempt}")
    handle = execution_actor(ctx.execution_id)
    if handle is not None:
        ray.kill(handle, no_restart=False)
    time.sleep(30)  # dies with its owner long before this
    return {}


def logged_sleep(ctx: StageContext) -> dict[str, Any]:
    """Writes ``start <time> <pid>``, sleeps ``ctx.context["seconds"]``, writes ``end …``."""
    log = _dir(ctx) / f"runs-{ctx.stage_id}"
    _touch(log, f"start {time.time()} {os.getpid()}")
    time.sleep(float(ctx.context.get("seconds", 1)))
    _touch(log, f"end {time.time()} {os.getpid()}")
    return {"pid": os.getpid()}


def secret_user(ctx: StageContext) -> dict[str, Any]:
    """Uses the context's secrets: returns a digest of them (so the test can tell it got the
    plain values) and, when asked, echoes one or fails with it in the message."""
    import hashlib

    password = ctx.context["password"]
    api_key = ctx.context["credentials"]["api_key"]
    if ctx.context.get("fail"):
        raise ValueError(f"login refused for password {password}")
    digest = hashlib.sha256(f"{password}|{api_key}".encode()).hexdigest()
    return {"digest": digest, "note": f"signed in with {password}"}


def leaky(ctx: StageContext) -> dict[str, Any]:
    """Echoes the context's secrets in the forms issue 16 found stored in plain text (or, when
    asked, raises with them in its message) and invents a secret-like key of its own."""
    import base64

    c = ctx.context
    pw = str(c["password"])
    said = {"pin": c["credentials"]["pin"], "short": c["short_secret"], "reversed": pw[::-1],
            "upper": pw.upper(), "b64": base64.b64encode(pw.encode()).decode(),
            "db": c["db_pwd"], "dsn_echo": c["dsn"], "new_api_key": "sk-invented-42424242"}
    if c.get("fail"):
        raise ValueError(f"refused: {json.dumps(said)}")
    return said


def reads_invented(ctx: StageContext) -> dict[str, Any]:
    """Proves the stage after :func:`leaky` got its invented key in plain text."""
    import hashlib

    key = str(ctx.inputs["leak"]["new_api_key"])
    return {"digest": hashlib.sha256(key.encode()).hexdigest()}


def persists_to(ctx: StageContext) -> dict[str, Any]:
    """Records an artifact the way the reference agents do, but in the database named by
    ``ctx.context["artifact_db"]`` (a test points it at one that refuses connections)."""
    from actors.agents.artifacts import DATABASE_URL, persist
    from events.artifacts import Artifact

    token = DATABASE_URL.set(str(ctx.context["artifact_db"]))
    try:
        persist(ctx, [Artifact(kind="note", name="n", payload={})])
    finally:
        DATABASE_URL.reset(token)
    return {"ok": True}


def html_output(ctx: StageContext) -> dict[str, Any]:
    """An output (and a page title) full of HTML: the console must show it as text."""
    return {"note": '<img src=x onerror="document.title=\'pwned\'"><b id="injected">bold</b>'}


def where(ctx: StageContext) -> dict[str, Any]:
    """Says which process ran it, and whether that process is a Ray actor (a runner)."""
    import ray

    return {"pid": os.getpid(), "actor_id": ray.get_runtime_context().get_actor_id()}


def long_running(ctx: StageContext) -> dict[str, Any]:
    """Writes its pid to ``<stage>.pid``, sleeps ``ctx.context["seconds_<stage>"]`` (else
    ``seconds``, else 60), then writes ``finished-<stage>`` — unless it is stopped first."""
    _touch(_dir(ctx) / f"{ctx.stage_id}.pid", str(os.getpid()))
    seconds = ctx.context.get(f"seconds_{ctx.stage_id}", ctx.context.get("seconds", 60))
    time.sleep(float(seconds))
    _touch(_dir(ctx) / f"finished-{ctx.stage_id}")
    return {"pid": os.getpid()}


def big_output(ctx: StageContext) -> dict[str, Any]:
    """An output of about ``ctx.context["bytes"]`` bytes (a read-model and log-cap test)."""
    return {"blob": "x" * int(ctx.context.get("bytes", 1000)), "stage": ctx.stage_id}


def raises_base(ctx: StageContext) -> dict[str, Any]:
    """Raises the BaseException named by ``ctx.context["raise"]`` (not an Exception)."""
    kinds: dict[str, type[BaseException]] = {
        "SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt,
        "CancelledError": asyncio.CancelledError, "GeneratorExit": GeneratorExit}
    raise kinds[str(ctx.context.get("raise", "SystemExit"))]()


def ticker(ctx: StageContext) -> dict[str, Any]:
    """Writes ``<pid> <time>`` to ``ticks-<execution>`` every 0.1 s for ``seconds``: two
    processes running the stage at once show as overlapping spans (the partition test)."""
    path = _dir(ctx) / f"ticks-{ctx.execution_id}"
    end = time.time() + float(ctx.context.get("seconds", 1))
    while time.time() < end:
        _touch(path, f"{os.getpid()} {time.time()}")
        time.sleep(0.1)
    return {"pid": os.getpid()}


def dies_once(ctx: StageContext) -> dict[str, Any]:
    """Its first attempt ends its process without a word (``os._exit``); later ones answer."""
    _touch(_dir(ctx) / "dies-once", f"{os.getpid()} attempt={ctx.attempt}")
    if ctx.attempt == 1:
        os._exit(3)
    return {"pid": os.getpid()}


async def async_where(ctx: StageContext) -> dict[str, Any]:
    """Which process and thread ran it (a coroutine agent of a local stage: the runner's loop)."""
    await asyncio.sleep(0)
    return {"pid": os.getpid(), "thread": threading.current_thread().name}


async def async_hung(ctx: StageContext) -> dict[str, Any]:
    """Writes its pid, then would write ``finished`` after 30 s; cancelled, it writes
    ``cancelled`` (and ends, as a well-behaved coroutine does)."""
    _touch(_dir(ctx) / "hung.pid", str(os.getpid()))
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        _touch(_dir(ctx) / "cancelled", str(os.getpid()))
        raise
    _touch(_dir(ctx) / "finished")
    return {}


async def async_stubborn(ctx: StageContext) -> dict[str, Any]:
    """Writes its pid, then ignores every cancellation for ``ctx.context["seconds"]`` (20 s)
    — a coroutine that will not stop — then writes ``finished``."""
    _touch(_dir(ctx) / "hung.pid", str(os.getpid()))
    end = time.monotonic() + float(ctx.context.get("seconds", 20))
    while time.monotonic() < end:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            continue
    _touch(_dir(ctx) / "finished")
    return {}


async def async_returns_string(ctx: StageContext) -> Any:
    return "not a dict"


async def async_raises_base(ctx: StageContext) -> dict[str, Any]:
    """:func:`raises_base` as a coroutine."""
    await asyncio.sleep(0)
    return raises_base(ctx)
