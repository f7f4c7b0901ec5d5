"""Which functions a definition may name as an agent or a compensation handler.

A definition is data anyone allowed to register can write; the import path it names is code
that runs on the workers with the execution's context and opened secrets.  So the path must
point into a module the operator allowed:

* ``WFDAG_AGENT_MODULES`` set (comma-separated module prefixes, e.g. ``acme.agents,billing``):
  only modules equal to a prefix or under it (``acme.agents.crm`` is under ``acme.agents``;
  ``acme.agentsx`` is not).
* unset: every module except the standard library, built-ins, Ray, and wfdag's own packages.
  (The reference agents and the built-in compensation handlers are named by ``agent_type`` and
  by handler name, not by import path, and stay allowed; so do wfdag's general-purpose agents,
  ``actors.agents.builtin:noop`` and ``:sleep``, whatever the setting.)
* always: no part of the path may start with ``_`` (private functions and modules, dunders).

Checked when a definition is registered, and again on the worker just before the call (the
worker's own environment decides there: set the variable on every node).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

__all__ = ["AGENT_MODULES_ENV", "ALWAYS_ALLOWED", "REFUSED_BY_DEFAULT", "agent_path_refusal"]

AGENT_MODULES_ENV = "WFDAG_AGENT_MODULES"

#: Top-level packages no agent may come from unless ``WFDAG_AGENT_MODULES`` names them:
#: wfdag's own packages and the runtime it drives (besides the standard library).
REFUSED_BY_DEFAULT = frozenset({"actors", "events", "projections", "definitions", "ray"})
#: wfdag's own general-purpose agents (placeholders, benchmarks): harmless, always allowed.
ALWAYS_ALLOWED = frozenset({"actors.agents.builtin"})


def _prefixes(raw: str) -> list[str]:
    return [part.strip().strip(".") for part in raw.split(",") if part.strip().strip(".")]


def agent_path_refusal(path: str, env: Mapping[str, str] | None = None) -> str | None:
    """Why ``module:function`` may not be called as an agent or handler, or None when it may.

    The reason names the rule and what to do, e.g. ``"module 'os' is in Python's standard
    library; agents come from your own modules (set WFDAG_AGENT_MODULES to name them)"``."""
    module, _, attr = path.partition(":")
    if not module or not attr:
        return f"{path!r} is not an import path module:function"
    parts = [*module.split("."), attr]
    private = next((part for part in parts if part.startswith("_")), None)
    if private is not None:
        return (f"{path!r} names {private!r}, which starts with '_': private functions and "
                f"modules are never agents")
    if module in ALWAYS_ALLOWED:
        return None
    raw = (os.environ if env is None else env).get(AGENT_MODULES_ENV, "").strip()
    if raw:
        allowed = _prefixes(raw)
        if any(module == prefix or module.startswith(prefix + ".") for prefix in allowed):
            return None
        return (f"module {module!r} is not under any of {AGENT_MODULES_ENV}="
                f"{','.join(allowed)!r}; add its package there to allow it")
    top = module.split(".")[0]
    if top == "builtins" or top in sys.builtin_module_names:
        return (f"module {module!r} is built into Python; agents come from your own modules "
                f"(set {AGENT_MODULES_ENV} to name them)")
    if top in sys.stdlib_module_names:
        return (f"module {module!r} is in Python's standard library; agents come from your "
                f"own modules (set {AGENT_MODULES_ENV} to name them)")
    if top in REFUSED_BY_DEFAULT:
        return (f"module {module!r} belongs to wfdag or Ray itself; agents come from your own "
                f"modules (name a lifecycle agent with agent_type, a built-in handler by its "
                f"name)")
    return None
