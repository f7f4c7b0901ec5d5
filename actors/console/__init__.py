"""The web console: served by the wfdag service (aiohttp, installed with Ray), fed live by the
log's notifications, every action a call of the public API.  Bound to 127.0.0.1 by default
(``WFDAG_UI_HOST``, ``WFDAG_UI_PORT``); every request needs the service's access token."""

from actors.console.app import build_app, start_console
from actors.console.token import console_token, token_path

__all__ = ["build_app", "console_token", "start_console", "token_path"]
