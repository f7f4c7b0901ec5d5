"""What the console's routes share: who is asking, and how answers are written."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from aiohttp import web

__all__ = ["json_response", "org_of", "page", "user_of"]


def page(name: str) -> str:
    """A file of the console's ``static/`` directory."""
    return resources.files("actors.console").joinpath("static", name).read_text()


def org_of(request: web.Request) -> str | None:
    """The organization whose view this is (``X-Wfdag-Org``, or the ``wfdag_org`` cookie)."""
    org = request.headers.get("X-Wfdag-Org") or request.cookies.get("wfdag_org")
    return org or None


def user_of(request: web.Request) -> str:
    """Who acts (``X-Wfdag-User``, or the ``wfdag_user`` cookie; ``console`` by default)."""
    return request.headers.get("X-Wfdag-User") or request.cookies.get("wfdag_user") or "console"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda v: json.dumps(v, default=str))
