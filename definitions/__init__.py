"""Pure data and rules: workflow models, the canonical workflows, retries, errors, validation.

Imports nothing else of wfdag's.
"""

from definitions.canonical import (
    CANONICAL_WORKFLOWS,
    INTERVENTION_VARIANCE_THRESHOLD_PCT,
    canonical_workflows,
)
from definitions.compensation import BUILTIN_COMPENSATION_HANDLERS, is_valid_handler
from definitions.errors import (
    AgentOutputError,
    AuthenticationError,
    AuthorizationError,
    ConcurrencyError,
    DatabaseConfigError,
    DefinitionConflictError,
    ErrorInfo,
    ExecutionNotFoundError,
    ExecutionStateError,
    InvalidContextError,
    InvalidWorkflowError,
    NetworkError,
    NonRetryableError,
    PayloadTooLargeError,
    RateLimitError,
    RetryableError,
    StageTimeoutError,
    TemporaryError,
    ValidationError,
    WfdagError,
    WorkflowNotFoundError,
    classify_error,
)
from definitions.models import (
    AGENT_TYPES,
    CircuitBreakerConfig,
    Condition,
    Transition,
    ValidationResult,
    WorkflowDAG,
    WorkflowStage,
)
from definitions.retry import JITTER_FRACTION, RETRY_CONFIGS, RetryConfig, backoff_delay_ms
from definitions.validation import validate_workflow_dag

__all__ = [
    "AGENT_TYPES",
    "BUILTIN_COMPENSATION_HANDLERS",
    "CANONICAL_WORKFLOWS",
    "INTERVENTION_VARIANCE_THRESHOLD_PCT",
    "JITTER_FRACTION",
    "RETRY_CONFIGS",
    "AgentOutputError",
    "AuthenticationError",
    "AuthorizationError",
    "CircuitBreakerConfig",
    "ConcurrencyError",
    "Condition",
    "DatabaseConfigError",
    "DefinitionConflictError",
    "ErrorInfo",
    "ExecutionNotFoundError",
    "ExecutionStateError",
    "InvalidContextError",
    "InvalidWorkflowError",
    "NetworkError",
    "NonRetryableError",
    "PayloadTooLargeError",
    "RateLimitError",
    "RetryConfig",
    "RetryableError",
    "StageTimeoutError",
    "TemporaryError",
    "Transition",
    "ValidationError",
    "ValidationResult",
    "WfdagError",
    "WorkflowDAG",
    "WorkflowNotFoundError",
    "WorkflowStage",
    "backoff_delay_ms",
    "canonical_workflows",
    "classify_error",
    "is_valid_handler",
    "validate_workflow_dag",
]
