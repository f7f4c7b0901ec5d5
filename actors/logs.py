"""structlog set-up: dotted event names with key/values, secrets redacted."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from events.secrets import SECRET_KEY_PATTERN

__all__ = ["configure_logging", "get_logger", "redact"]

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


_configured = False


def configure_logging(level: str | None = None) -> None:
    """Log to stderr at ``WFDAG_LOG_LEVEL`` (default WARNING); JSON when ``WFDAG_LOG_JSON=1``."""
    global _configured
    if _configured:
        return
    _configured = True
    name = (level or os.environ.get("WFDAG_LOG_LEVEL") or "WARNING").upper()
    numeric = logging.getLevelNamesMapping().get(name, logging.WARNING)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if os.environ.get("WFDAG_LOG_JSON") == "1"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(**bound: Any) -> Any:
    configure_logging()
    return structlog.get_logger("wfdag").bind(**bound)
