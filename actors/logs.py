"""Logging: structlog in front (dotted event names with key/values, secrets redacted),
the standard library's ``logging`` behind it, under the logger ``wfdag``.

The library configures nothing global: a host application's logging decides where wfdag's
lines go and at which level (``logging.getLogger("wfdag")``), and structlog's own global
configuration is never touched.  The CLI, the runners and the service call :func:`configure`,
which gives the ``wfdag`` logger a handler on stderr at ``WFDAG_LOG_LEVEL`` (default WARNING),
rendering JSON when ``WFDAG_LOG_JSON=1``.  Execution and stage ids are bound with
:func:`bound` (contextvars): every line logged inside the block carries them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import structlog

from events.secrets import SECRET_KEY_PATTERN

__all__ = ["LOGGER_NAME", "bound", "configure", "get_logger", "redact"]

LOGGER_NAME = "wfdag"
SECRET_KEY = SECRET_KEY_PATTERN  # one definition of "secret-like", shared with sealing
REDACTED = "***"


def redact(value: Any) -> Any:
    """A copy of ``value`` with the values under secret-like keys replaced, at any depth."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and SECRET_KEY.search(k) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def _redact_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return redact(dict(event_dict))  # type: ignore[no-any-return]


def _json_renderer(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> str:
    return json.dumps(dict(event_dict), default=str)


_console = structlog.dev.ConsoleRenderer(colors=False)
_render_json = os.environ.get("WFDAG_LOG_JSON") == "1"


def _render(logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
    if _render_json:
        return _json_renderer(logger, name, event_dict)
    return str(_console(logger, name, event_dict))


_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,  # first: a line below the level costs nothing more
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _redact_processor,
    _render,
]


def get_logger(**bound_values: Any) -> Any:
    """A logger of wfdag's, with ``bound_values`` on every line (configures nothing)."""
    return structlog.wrap_logger(
        logging.getLogger(LOGGER_NAME), processors=_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
    ).bind(**bound_values)


@contextlib.contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Bind ``values`` (execution id, stage id, …) to every line logged inside the block, in
    this task or thread (contextvars)."""
    with structlog.contextvars.bound_contextvars(**values):
        yield


_handler: logging.Handler | None = None


def configure(level: str | None = None, *, json_lines: bool | None = None) -> None:
    """Send wfdag's lines to stderr at ``level`` (else ``WFDAG_LOG_LEVEL``, default WARNING):
    for the CLI, the runners and the service, never called by the library on its own."""
    global _handler, _render_json
    name = (level or os.environ.get("WFDAG_LOG_LEVEL") or "WARNING").upper()
    numeric = logging.getLevelNamesMapping().get(name, logging.WARNING)
    if json_lines is not None:
        _render_json = json_lines
    logger = logging.getLogger(LOGGER_NAME)
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(_handler)
        logger.propagate = False
    logger.setLevel(numeric)
