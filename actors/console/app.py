"""The console's HTTP side (aiohttp): pages, a JSON API over the public API, and a live feed.

Every route needs the access token — ``Authorization: Bearer <token>``, or the ``wfdag_token``
cookie that ``/?token=<token>`` sets (then the address bar is cleaned).  ``X-Wfdag-Org`` (or the
``wfdag_org`` cookie, set by ``?org=``) makes the requests those of one organization's user:
another organization's execution is not found.  ``X-Wfdag-User`` (or ``wfdag_user``) names who
acts; actions are recorded under that name.  The feed (``/api/stream``) is server-sent events
fed by the log's LISTEN/NOTIFY, never a poll of the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

import actors.api as api
from actors.console.common import json_response, org_of, page, user_of
from actors.console.operations import ROUTES as OPERATIONS
from actors.logs import get_logger
from definitions import InvalidArgumentError, WfdagError
from events import fold, upstream_outputs
from events.secrets import SEALED, is_secret_key
from projections import snapshot
from projections.graph import to_svg

__all__ = ["build_app", "start_console"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_STATUS_OF_EXIT = {2: 400, 3: 404, 4: 504, 1: 409}
_STATIC = ("console.css", "console.js")
_TOKEN_KEY = web.AppKey("token", str)
_FEED_KEY: web.AppKey[Feed] = web.AppKey("feed")


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[_TOKEN_KEY]
    given = request.query.get("token")
    if given is not None and hmac.compare_digest(given, token):
        # A link with the token: keep it in a cookie, and take it out of the address bar.
        query = {k: v for k, v in request.query.items() if k not in ("token", "org", "user")}
        target = request.rel_url.with_query(query)
        response = web.HTTPFound(str(target))
        response.set_cookie("wfdag_token", token, httponly=True, samesite="Strict")
        for name in ("org", "user"):
            if request.query.get(name):
                response.set_cookie(f"wfdag_{name}", request.query[name], samesite="Strict")
        raise response
    header = request.headers.get("Authorization", "")
    presented = header[7:] if header.startswith("Bearer ") else request.cookies.get(
        "wfdag_token", "")
    if not presented or not hmac.compare_digest(presented, token):
        return web.Response(status=401, text="401: the console needs its access token "
                            "(`wfdag ui --token` prints it; open /?token=…)\n")
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except WfdagError as exc:
        return json_response({"error": str(exc)}, _STATUS_OF_EXIT.get(exc.exit_code, 409))


async def _index(_request: web.Request) -> web.Response:
    return web.Response(text=page("index.html"), content_type="text/html")


async def _execution_page(_request: web.Request) -> web.Response:
    return web.Response(text=page("execution.html"), content_type="text/html")


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _STATIC:
        raise web.HTTPNotFound()
    kind = "text/css" if name.endswith(".css") else "application/javascript"
    return web.Response(text=page(name), content_type=kind)


async def _list(request: web.Request) -> web.Response:
    q = request.query
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        raise InvalidArgumentError(f"limit must be a number, got {q['limit'][:20]!r}") from None
    # ``organization`` filters an operator's view of every organization; a user with one
    # (X-Wfdag-Org) sees only it, whatever the filter says.
    scope, wanted = org_of(request), q.get("organization") or None
    if scope is not None and wanted not in (None, scope):
        return json_response({"items": [], "next_cursor": None})
    found = await api.list_executions(
        status=q.get("status") or None, workflow_id=q.get("workflow") or None,
        organization_id=scope or wanted, since=q.get("since") or None, limit=limit,
        cursor=q.get("cursor") or None)
    return json_response(found.model_dump(mode="json"))


async def _state_at(request: web.Request) -> tuple[Any, list[Any]]:
    """The execution's state after event ``seq`` (the last one by default), and its log."""
    eid = request.match_info["eid"]
    events = await api.get_execution_events(eid, organization_id=org_of(request))
    seq = request.query.get("seq")
    upto = len(events)
    if seq:
        try:
            upto = max(1, min(int(seq), len(events)))
        except ValueError:
            raise InvalidArgumentError(f"seq must be a number, got {seq[:20]!r}") from None
    return fold(events[:upto]), events


def _masked(value: Any) -> Any:
    """Sealed secrets (and anything under a secret-like key) as ``***``."""
    if isinstance(value, dict):
        if SEALED in value:
            return "***"
        return {k: "***" if is_secret_key(k) else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _shown(value: Any, limit: int = 2000) -> str | None:
    """A stage's output or error as the page shows it: JSON text, secrets masked, bounded."""
    if value is None:
        return None
    text = json.dumps(_masked(value), default=str)
    return text if len(text) <= limit else text[:limit] + " …"


def _stage_state(stage: Any) -> str:
    """What the page calls a stage's state: the fold's, with ``waiting`` (for a person, a
    signal, a time or a child), ``retrying``, ``compensated`` and ``compensation_failed``."""
    if stage.compensation == "completed":
        return "compensated"
    if stage.compensation == "failed":
        return "compensation_failed"
    if stage.status == "running" and (stage.waiting is not None
                                      or stage.child_execution_id is not None):
        return "waiting"
    if stage.status in ("pending", "running") and stage.error is not None and stage.attempts:
        return "retrying"
    return str(stage.status)


def _event_row(event: Any) -> dict[str, Any]:
    """An event as the timeline shows it: an attempt with its duration, retry delay and the
    breaker as it met it; a deferral with the time it waits for."""
    data = event.model_dump(mode="json")
    row = {k: data.get(k) for k in ("seq", "type", "stage_id", "at", "attempt", "duration_ms",
                                    "retry_delay_ms", "retry_at")}
    error = data.get("error")
    if isinstance(error, dict):
        row["error"] = f"{error.get('type')}: {str(error.get('message'))[:300]}"
    breaker = data.get("breaker")
    if isinstance(breaker, dict):
        row["breaker"] = " ".join(str(x) for x in (
            breaker.get("state"), breaker.get("failure_count"), breaker.get("transition"))
            if x is not None)
    return row


async def _execution(request: web.Request) -> web.Response:
    state, events = await _state_at(request)
    status = await api.get_workflow_status(state.execution_id, organization_id=org_of(request))
    snap = snapshot(state)
    dag = state.require_dag()
    waiting = [s.id for s in dag.stages if _stage_state(state.stages[s.id]) == "waiting"]
    return json_response({
        "status": status.model_dump(mode="json"),
        "at": snap.model_dump(mode="json"),
        "stages": [{"id": s.id, "name": s.name, "kind": s.kind,
                    "status": _stage_state(state.stages[s.id]),
                    "attempts": state.stages[s.id].attempts,
                    "duration_ms": state.stages[s.id].duration_ms,
                    "inputs": _shown(upstream_outputs(state, s.id) or None),
                    "output": _shown(state.stages[s.id].output),
                    "error": _shown(state.stages[s.id].error)} for s in dag.stages],
        "waiting_approvals": [s for s in waiting if dag.stage(s).kind == "approval"],
        "waiting_signals": [dag.stage(s).signal for s in waiting
                            if dag.stage(s).kind == "signal"],
        "events": [_event_row(e) for e in events],
    })


async def _status(request: web.Request) -> web.Response:
    """:func:`actors.api.get_workflow_status` as ``wfdag status --json`` prints it (the CLI's
    quick path, :mod:`actors.cli.quick`, prints this text as it is)."""
    status = await api.get_workflow_status(request.match_info["eid"],
                                           organization_id=org_of(request))
    return web.Response(text=status.model_dump_json(indent=2), content_type="application/json")


async def _graph(request: web.Request) -> web.Response:
    state, _ = await _state_at(request)
    states = {sid: _stage_state(st) for sid, st in state.stages.items()}
    return web.Response(text=to_svg(state.require_dag(), states), content_type="image/svg+xml")


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        raise InvalidArgumentError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidArgumentError("the request body must be a JSON object")
    return body


async def _act(request: web.Request) -> web.Response:
    """approve | reject | signal | cancel | rollback | retry: each a call of the public API."""
    eid, action = request.match_info["eid"], request.match_info["action"]
    body, org, user = await _body(request), org_of(request), user_of(request)
    get_logger(execution_id=eid).info("console.action", action=action, user=user)
    result: Any
    if action == "approve":
        result = await api.approve_stage(eid, str(body.get("stage", "")), user,
                                         comment=body.get("comment") or None,
                                         organization_id=org)
    elif action == "reject":
        result = await api.reject_stage(eid, str(body.get("stage", "")), user,
                                        reason=str(body.get("reason") or "rejected in the "
                                                   "console"), organization_id=org)
    elif action == "signal":
        result = await api.send_signal(eid, str(body.get("name", "")),
                                       body.get("payload") or None, user_id=user,
                                       organization_id=org)
    elif action == "cancel":
        result = await api.cancel_workflow(eid, user, compensate=bool(body.get("compensate")),
                                           organization_id=org)
    elif action == "rollback":
        result = await api.rollback_workflow(eid, user, organization_id=org)
    elif action == "retry":
        return json_response({"execution_id": await api.retry_failed_workflow(
            eid, user, organization_id=org)})
    else:
        raise web.HTTPNotFound()
    return json_response(result.model_dump(mode="json") if hasattr(result, "model_dump")
                         else result)


class Feed:
    """The console's clients of server-sent events, fed by a tap on the store's listener (one
    LISTEN connection, made again after a database restart)."""

    def __init__(self) -> None:
        self._clients: set[asyncio.Queue[str]] = set()
        self._tap: contextlib.AsyncExitStack | None = None
        self._orgs: dict[str, str | None] = {}

    async def start(self) -> None:
        self._tap = contextlib.AsyncExitStack()
        await self._tap.enter_async_context((await api.ready_store()).tap(self._on_notify))

    async def stop(self) -> None:
        if self._tap is not None:
            await self._tap.aclose()
            self._tap = None

    def _on_notify(self, payload: str) -> None:
        for queue in list(self._clients):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(payload)

    async def org_of(self, execution_id: str) -> str | None:
        if execution_id not in self._orgs:
            if len(self._orgs) > 10_000:
                self._orgs.clear()
            status = await api.get_workflow_status(execution_id)
            self._orgs[execution_id] = status.organization_id
        return self._orgs[execution_id]

    def join(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1000)
        self._clients.add(queue)
        return queue

    def leave(self, queue: asyncio.Queue[str]) -> None:
        self._clients.discard(queue)


async def _stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``data: {"execution_id", "seq", "type"}`` for each append the
    caller may see (``?execution=ID``: of that execution only)."""
    feed = request.app[_FEED_KEY]
    org, only = org_of(request), request.query.get("execution")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    queue = feed.join()
    try:
        await response.write(b": connected\n\n")
        while True:
            try:
                payload = await asyncio.wait_for(queue.get(), 15)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            eid, _, rest = payload.partition(":")
            seq, _, kind = rest.partition(":")
            if only and eid != only:
                continue
            if org is not None:
                try:
                    if await feed.org_of(eid) != org:
                        continue
                except WfdagError:
                    continue
            event = json.dumps({"execution_id": eid, "seq": int(seq or 0), "type": kind})
            await response.write(f"data: {event}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feed.leave(queue)
    return response


def build_app(token: str) -> web.Application:
    """The console's application (its feed starts with it)."""
    app = web.Application(middlewares=[_auth])
    app[_TOKEN_KEY] = token
    feed = Feed()
    app[_FEED_KEY] = feed

    async def feed_ctx(_app: web.Application) -> Any:
        await feed.start()
        yield
        await feed.stop()

    app.cleanup_ctx.append(feed_ctx)
    app.add_routes([
        web.get("/", _index),
        web.get("/executions/{eid}", _execution_page),
        web.get("/static/{name}", _static),
        web.get("/api/executions", _list),
        web.get("/api/executions/{eid}", _execution),
        web.get("/api/executions/{eid}/status", _status),
        web.get("/api/executions/{eid}/graph.svg", _graph),
        web.post("/api/executions/{eid}/{action}", _act),
        web.get("/api/stream", _stream),
        *OPERATIONS,
    ])
    return app


async def start_console(host: str, port: int, token: str) -> web.AppRunner:
    """Serve the console on ``host:port`` until the runner is cleaned up."""
    runner = web.AppRunner(build_app(token), access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
