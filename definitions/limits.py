"""Every size limit of wfdag, in one place (the validators, the API and README use these).

A definition, a context or an agent's output past one of them is refused with an error that
names the limit; nothing is stored.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_BREAKER_WAIT_SECONDS",
    "DEFAULT_MAX_LOG_BYTES",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "MAX_AGENT_TIMEOUT_SECONDS",
    "MAX_CHILD_DEPTH",
    "MAX_IDEMPOTENCY_KEY_CHARS",
    "MAX_NESTING",
    "MAX_ORGANIZATION_ID_CHARS",
    "MAX_STAGES",
    "MAX_TRANSITIONS",
    "MAX_WAIT_SECONDS",
]

#: Stages of one workflow definition.
MAX_STAGES = 1000
#: Transitions of one workflow definition.
MAX_TRANSITIONS = 10_000
#: Levels of nested objects/lists in a definition or a context (a recursive encoder is safe).
MAX_NESTING = 64
#: A context, an agent output or a definition, as JSON (``WFDAG_MAX_PAYLOAD_BYTES`` overrides).
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
#: The most an execution's log may hold (``WFDAG_MAX_LOG_BYTES``): a stage whose output would
#: take it past this fails (``PayloadTooLargeError``), as Temporal caps a history.
DEFAULT_MAX_LOG_BYTES = 128 * 1024 * 1024
#: An idempotency key given to ``execute_workflow_dag``.
MAX_IDEMPOTENCY_KEY_CHARS = 500
#: An organization id.
MAX_ORGANIZATION_ID_CHARS = 200
#: The longest an agent stage's attempt may run (a day).
MAX_AGENT_TIMEOUT_SECONDS = 86_400
#: The longest an approval or signal stage may wait, and a timer may sleep (a year).
MAX_WAIT_SECONDS = 366 * 86_400

#: How deep child workflows may nest (a parent's child's child …): deeper, the stage fails.
MAX_CHILD_DEPTH = 8

#: How long attempts refused by an open circuit breaker wait for it, in all, by default.
DEFAULT_BREAKER_WAIT_SECONDS = 3600.0
