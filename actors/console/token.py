"""The console's access token: ``$WFDAG_HOME/console.token`` (mode 0600), made on first use."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from events.database import wfdag_home

__all__ = ["console_token", "token_path"]


def token_path() -> Path:
    return wfdag_home() / "console.token"


def console_token(*, create: bool = True) -> str | None:
    """The token (``None`` when there is none and ``create`` is false)."""
    path = token_path()
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token
