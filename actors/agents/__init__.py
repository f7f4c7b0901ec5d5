"""Agents: the callables stages run.  ``agent(ctx: StageContext) -> dict`` (sync or async)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from actors.agents.context import StageContext
from actors.agents.reference import REFERENCE_AGENTS
from definitions import ValidationError

__all__ = ["REFERENCE_AGENTS", "StageContext", "resolve_callable"]


def resolve_callable(path: str) -> Callable[..., Any]:
    """Import ``module:function`` (on the worker that runs the stage)."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValidationError(
            f"cannot import agent module {module_name!r}: {exc}. Is it on the workers' path "
            f"(PYTHONPATH, or runtime_env py_modules/working_dir)?"
        ) from exc
    func = getattr(module, attr, None)
    if not callable(func):
        raise ValidationError(f"{path!r}: module {module_name!r} has no callable {attr!r}")
    return func  # type: ignore[no-any-return]
