"""The project's one error tree, and the seed's retryable / non-retryable classification.

Every error wfdag raises is a :class:`WfdagError` with structured attributes, so callers can
branch on the class and show ``str(err)`` to people.  Agent errors are classified by
:func:`classify_error` into retryable and non-retryable exactly as the seed's "Error Handling"
section says.  Python's ``ValueError`` and ``TypeError`` count as validation errors (not
retryable).  **An error the rules do not recognise is retryable**: a flaky agent that raises
something unexpected gets its stage's retry budget (bounded by ``max_attempts``) rather than
failing a long workflow on the first surprise; mark an error as permanent by raising one of
the non-retryable classes (or any exception with ``retryable = False``).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AgentNotAllowedError",
    "AgentOutputError",
    "AuthenticationError",
    "AuthorizationError",
    "BrokenChainError",
    "ConcurrencyError",
    "DatabaseConfigError",
    "DefinitionConflictError",
    "ErrorInfo",
    "ExecutionNotFoundError",
    "ExecutionStateError",
    "InvalidArgumentError",
    "InvalidContextError",
    "InvalidWorkflowError",
    "NetworkError",
    "NonRetryableError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitError",
    "RetryableError",
    "SecretKeyError",
    "StageNotFoundError",
    "StageTimeoutError",
    "TemporaryError",
    "ValidationError",
    "WaitTimeoutError",
    "WfdagError",
    "WorkflowNotFoundError",
    "classify_error",
]


class WfdagError(Exception):
    """Base of every error wfdag raises.  ``exit_code`` is what the CLI exits with on it
    (README, "Exit codes"): 1 a check failed; 2 bad input; 3 not found; 4 timed out waiting."""

    exit_code = 1


# --- agent-facing errors: raise these from an agent to say what went wrong -----------------


class RetryableError(WfdagError):
    """A failure worth another attempt."""

    retryable = True


class NonRetryableError(WfdagError):
    """A failure no retry can fix."""

    retryable = False


class NetworkError(RetryableError):
    pass


class TemporaryError(RetryableError):
    pass


class RateLimitError(RetryableError):
    pass


class StageTimeoutError(RetryableError):
    """An attempt ran past its stage's ``timeout_seconds`` and was cancelled."""

    def __init__(self, stage_id: str, timeout_seconds: float) -> None:
        super().__init__(
            f"stage {stage_id!r} timed out after {timeout_seconds:g}s; the attempt was cancelled"
        )
        self.stage_id = stage_id
        self.timeout_seconds = timeout_seconds


class ValidationError(NonRetryableError):
    pass


class AuthenticationError(NonRetryableError):
    pass


class AuthorizationError(NonRetryableError):
    pass


class AgentNotAllowedError(AuthorizationError):
    """A stage names an agent or handler outside the allowed modules (``WFDAG_AGENT_MODULES``);
    refused on the worker before any of its code runs.  Not retried, not counted by breakers."""


class ApprovalRejectedError(NonRetryableError):
    """A person rejected an approval stage: it fails for good (not retried)."""


class AgentOutputError(NonRetryableError):
    """An agent returned something that is not a JSON object."""


# --- errors of the API and the store ------------------------------------------------------


class InvalidWorkflowError(WfdagError):
    """A definition that cannot be registered or run; ``errors`` lists every problem."""

    exit_code = 2

    def __init__(self, workflow_id: str, errors: list[str]) -> None:
        super().__init__(
            f"workflow {workflow_id!r} is invalid: " + "; ".join(errors)
        )
        self.workflow_id = workflow_id
        self.errors = errors


class DefinitionConflictError(WfdagError):
    def __init__(self, workflow_id: str, version: int) -> None:
        super().__init__(
            f"workflow {workflow_id!r} version {version} is already registered with different "
            f"content; register the change under a new version"
        )
        self.workflow_id = workflow_id
        self.version = version


class NotFoundError(WfdagError):
    """Something named by the caller does not exist (or belongs to another organization)."""

    exit_code = 3


class WorkflowNotFoundError(NotFoundError):
    def __init__(self, workflow_id: str, version: int | None = None) -> None:
        what = f"{workflow_id!r}" + (f" version {version}" if version is not None else "")
        super().__init__(
            f"unknown workflow {what}; `wfdag workflows` lists the registered ones"
        )
        self.workflow_id = workflow_id
        self.version = version


class ExecutionNotFoundError(NotFoundError):
    def __init__(self, execution_id: str) -> None:
        super().__init__(f"execution {execution_id!r} not found")
        self.execution_id = execution_id


class ScheduleNotFoundError(NotFoundError):
    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id[:200]!r} not found; `wfdag schedule list` "
                         f"lists them")
        self.schedule_id = schedule_id


class StageNotFoundError(WorkflowNotFoundError):
    """The workflow exists, but has no stage of that id.  (A subclass of
    :class:`WorkflowNotFoundError`, which earlier versions raised for it, so that existing
    ``except`` clauses keep working; the message says what is missing.)"""

    def __init__(self, workflow_id: str, stage_id: str) -> None:
        NotFoundError.__init__(
            self,
            f"workflow {workflow_id!r} has no stage {stage_id!r}; `wfdag graph {workflow_id}` "
            f"shows its stages"
        )
        self.workflow_id = workflow_id
        self.version = None
        self.stage_id = stage_id


class ExecutionStateError(WfdagError):
    """The execution is not in a state that allows what was asked."""

    def __init__(self, execution_id: str, status: str, wanted: str, allowed: str) -> None:
        super().__init__(
            f"execution {execution_id} is {status}: {wanted} needs it to be {allowed}"
        )
        self.execution_id = execution_id
        self.status = status


class StageStateError(WfdagError):
    """A stage is not in a state that allows what was asked (an approval of a stage that does
    not wait for one, a signal nobody waits for, an approver not on the list)."""


class InvalidContextError(WfdagError):
    """The execution context is not a JSON object (or is too deep, or not JSON)."""

    exit_code = 2


class InvalidArgumentError(InvalidContextError):
    """An argument that is not a context has a value it may not have (a user id, an
    organization id, an idempotency key, a sequence number, an import's lines).  A subclass of
    :class:`InvalidContextError`, which earlier versions raised for these too, so that
    ``except InvalidContextError`` keeps catching them."""


class WaitTimeoutError(WfdagError, TimeoutError):
    """A wait for an execution's end ran out of time; it goes on (``status`` says where)."""

    exit_code = 4

    def __init__(self, execution_id: str, timeout: float, status: str) -> None:
        super().__init__(
            f"execution {execution_id} is still {status} after {timeout:g}s; wait again, or "
            f"see `wfdag events {execution_id}` for where it is"
        )
        self.execution_id = execution_id
        self.timeout = timeout
        self.status = status


class SecretKeyError(WfdagError):
    """No usable key to seal or open secrets with."""


class PayloadTooLargeError(WfdagError):
    exit_code = 2

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size} bytes, over the limit of {limit} bytes")
        self.what = what
        self.size = size
        self.limit = limit


class ConcurrencyError(WfdagError):
    """An append found the stream past the version the writer expected (a stale writer)."""

    def __init__(self, execution_id: str, expected_version: int) -> None:
        super().__init__(
            f"execution {execution_id} has events past version {expected_version}; "
            f"another writer got there first"
        )
        self.execution_id = execution_id
        self.expected_version = expected_version


class BrokenChainError(WfdagError):
    """An execution's log fails its hash chain: an event was edited, inserted or deleted
    outside wfdag.  Nothing drives or replays it; ``wfdag verify`` reports the break."""

    exit_code = 1

    def __init__(self, execution_id: str, seq: int) -> None:
        super().__init__(
            f"execution {execution_id}'s log is broken at seq {seq}: that event (or the one "
            f"before it) was changed, inserted or deleted outside wfdag, so it is not replayed "
            f"or run; `wfdag verify {execution_id}` shows the break; restore the log from a "
            f"backup or export it as evidence (`wfdag events {execution_id} --json --unchecked`)")
        self.execution_id = execution_id
        self.seq = seq


class DatabaseConfigError(WfdagError):
    """The database cannot be reached or set up; the message says what to check."""


class ClusterUnavailableError(WfdagError):
    """The Ray cluster named (``RAY_ADDRESS``) cannot be joined; the message says what to set."""


# --- classification -----------------------------------------------------------------------

_RETRYABLE_HTTP = frozenset({408, 429, 502, 503, 504})
_NON_RETRYABLE_HTTP = frozenset({400, 401, 403, 404})

# Name fragments of exception classes from other libraries (requests, httpx, aiohttp, …).
_RETRYABLE_NAMES = re.compile(
    r"timeout|network|connection|connect|temporar|ratelimit|throttl", re.I
)
_NON_RETRYABLE_NAMES = re.compile(r"validation|authenticat|authoriz|permission|forbidden", re.I)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What the log records of a failed attempt."""

    type: str
    message: str
    retryable: bool
    status_code: int | None = None
    #: wfdag's own database failed the attempt (down, restarting, out of connections): not
    #: the downstream's fault, so it never counts against a breaker.
    outage: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "message": self.message,
            "retryable": self.retryable,
            "status_code": self.status_code,
        }
        if self.outage:
            out["outage"] = True
        return out


def _http_status(exc: BaseException) -> int | None:
    for attr in ("status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    response = getattr(exc, "response", None)
    if response is not None:
        for attr in ("status_code", "status"):
            value = getattr(response, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
    return None


def _is_retryable(exc: BaseException, status: int | None) -> bool:
    explicit = getattr(exc, "retryable", None)
    if isinstance(explicit, bool):
        return explicit
    if status is not None:
        if status in _RETRYABLE_HTTP:
            return True
        if status in _NON_RETRYABLE_HTTP:
            return False
        # Other 5xx are server trouble (retry); other 4xx are the caller's fault (don't).
        return status >= 500
    if isinstance(exc, PermissionError | ValueError | TypeError):
        return False  # authorization; validation (incl. pydantic's, a ValueError); a bug
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | ConnectionError):
        return True
    name = type(exc).__name__
    if _NON_RETRYABLE_NAMES.search(name):
        return False
    if _RETRYABLE_NAMES.search(name):
        return True
    return True  # unknown: retryable, bounded by the stage's max_attempts (module docstring)


def classify_error(exc: BaseException) -> ErrorInfo:
    """Classify an agent's exception as the seed does (module docstring for the unknown case)."""
    status = _http_status(exc)
    message = str(exc) or type(exc).__name__
    return ErrorInfo(
        type=type(exc).__name__,
        message=message[:2000],
        retryable=_is_retryable(exc, status),
        status_code=status,
        outage=getattr(exc, "outage", False) is True,
    )
