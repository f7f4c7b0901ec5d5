"""Agents: the callables stages run.  ``agent(ctx: StageContext) -> dict`` (sync or async)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from actors.agents.context import StageContext
from actors.agents.reference import REFERENCE_AGENTS
from definitions import (
    BUILTIN_COMPENSATION_HANDLERS,
    AgentNotAllowedError,
    ValidationError,
    WorkflowDAG,
    agent_path_refusal,
)

__all__ = ["REFERENCE_AGENTS", "StageContext", "import_warnings", "resolve_callable"]


def resolve_callable(path: str) -> Callable[..., Any]:
    """Import ``module:function`` (on the worker that runs the stage), once the agent policy
    (:mod:`definitions.agent_policy`, this process's ``WFDAG_AGENT_MODULES``) allows it: a
    refused path raises :class:`AgentNotAllowedError` before its module is imported."""
    refusal = agent_path_refusal(path)
    if refusal is not None:
        raise AgentNotAllowedError(f"agent refused on this worker: {refusal}")
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


def import_warnings(dag: WorkflowDAG) -> list[str]:
    """The stages whose agent or compensation handler does not import on this machine.  A
    warning, not an error: the code may exist only on the workers."""
    warnings: list[str] = []
    for stage in dag.stages:
        paths = [("agent", stage.agent)]
        if stage.compensation_handler not in BUILTIN_COMPENSATION_HANDLERS:
            paths.append(("compensation handler", stage.compensation_handler))
        for what, path in paths:
            if path is None:
                continue
            try:
                resolve_callable(path)
            except Exception as exc:  # an import error, or the module's own code failing
                detail = str(exc).split(". Is it on")[0][:200]
                warnings.append(f"stage {stage.id!r}: {what} {path!r} does not import on this "
                                f"machine ({detail}); fine if it exists only on the workers")
    return warnings
