"""Workflow definitions as data: the JSON form is the form of user files and of ``dag_schema``.

Model validation checks shapes and types only; graph problems (a transition to an unknown
stage, a cycle) are reported by :func:`definitions.validation.validate_workflow_dag`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from definitions.limits import (
    DEFAULT_BREAKER_WAIT_SECONDS,
    MAX_AGENT_TIMEOUT_SECONDS,
    MAX_STAGES,
    MAX_TRANSITIONS,
    MAX_WAIT_SECONDS,
)
from definitions.retry import RETRY_CONFIGS, RetryConfig

__all__ = [
    "AGENT_TYPES",
    "WAITING_KINDS",
    "CircuitBreakerConfig",
    "Condition",
    "StageKind",
    "Transition",
    "ValidationResult",
    "WorkflowDAG",
    "WorkflowStage",
]

AgentType = Literal["opportunity", "target", "realization", "expansion", "integrity"]
#: What a stage is: an agent call (default), or a wait — for a person (``approval``), for a
#: named signal from another system (``signal``), for a time (``timer``), or for a child
#: workflow it starts (``workflow``).
StageKind = Literal["agent", "approval", "signal", "timer", "workflow"]
WAITING_KINDS: frozenset[str] = frozenset({"approval", "signal", "timer", "workflow"})
_KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "approval": ("approvers",), "signal": ("signal",), "timer": ("delay_seconds", "until"),
    "workflow": ("workflow", "version"),
}
AGENT_TYPES: tuple[str, ...] = ("opportunity", "target", "realization", "expansion", "integrity")

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
IMPORT_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"

_Frozen = ConfigDict(frozen=True, extra="forbid")


class CircuitBreakerConfig(BaseModel):
    model_config = _Frozen

    failure_threshold: int = Field(default=5, ge=1, le=10_000)
    cooldown_seconds: float = Field(default=60.0, gt=0, le=86_400)
    #: Which failures count against the breaker: ``retryable`` (default) — those that say
    #: something about the downstream (retryable errors, timeouts, crashed workers); ``all``.
    count: Literal["retryable", "all"] = "retryable"


class Condition(BaseModel):
    """A test on an upstream stage's output: ``output[path] <op> value``.

    ``path`` is dotted (``variance.max_abs_pct``; list items by index, ``items.0.score``).
    ``stage`` names the stage whose output is read; by default the transition's ``from_stage``.
    A missing path makes every comparison false (``exists`` tests for it).
    """

    model_config = _Frozen

    path: str = Field(min_length=1, max_length=500)
    op: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "truthy"] = "eq"
    value: Any = None
    stage: str | None = None

    def evaluate(self, output: Mapping[str, Any]) -> bool:
        found, actual = _lookup(output, self.path)
        if self.op == "exists":
            return found
        if not found:
            return False
        if self.op == "truthy":
            return bool(actual)
        if self.op == "eq":
            return bool(actual == self.value)
        if self.op == "ne":
            return bool(actual != self.value)
        if self.op in ("in", "not_in"):
            if not isinstance(self.value, list):
                return False
            return (actual in self.value) == (self.op == "in")
        try:
            if self.op == "gt":
                return bool(actual > self.value)
            if self.op == "gte":
                return bool(actual >= self.value)
            if self.op == "lt":
                return bool(actual < self.value)
            return bool(actual <= self.value)
        except TypeError:
            return False


def _lookup(data: Any, path: str) -> tuple[bool, Any]:
    current = data
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.lstrip("-").isdigit() and -len(current) <= int(
            part
        ) < len(current):
            current = current[int(part)]
        else:
            return False, None
    return True, current


class Transition(BaseModel):
    model_config = _Frozen

    from_stage: str
    to_stage: str
    condition: Condition | None = None


class WorkflowStage(BaseModel):
    """One stage: which agent runs it, for how long, how often, and how it is undone."""

    model_config = _Frozen

    id: str = Field(min_length=1, max_length=100, pattern=_ID)
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    agent_type: AgentType | None = None
    agent: str | None = Field(default=None, max_length=300, pattern=IMPORT_PATH_PATTERN)
    #: An agent's attempt (up to a day); how long an approval or signal stage waits before it
    #: fails with a StageTimeoutError (up to a year); a timer does not use it.
    timeout_seconds: float = Field(gt=0, le=MAX_WAIT_SECONDS)
    kind: StageKind = "agent"
    #: approval: who may approve or reject (anyone when absent).
    approvers: tuple[str, ...] | None = Field(default=None, min_length=1, max_length=1000)
    #: signal: the name of the signal it waits for.
    signal: str | None = Field(default=None, min_length=1, max_length=200, pattern=_ID)
    #: timer: sleep this long after it starts …
    delay_seconds: float | None = Field(default=None, ge=0, le=MAX_WAIT_SECONDS)
    #: … or until the ISO time at this dotted path: ``context.<path>`` or ``<stage>.<path>``
    #: (an upstream stage's output).
    until: str | None = Field(default=None, min_length=3, max_length=300)
    #: workflow: the child workflow it starts (its latest active version, or ``version``);
    #: it completes with the child's outputs by stage id.
    workflow: str | None = Field(default=None, min_length=1, max_length=200, pattern=_ID)
    version: int | None = Field(default=None, ge=1)
    retry_config: str | RetryConfig = "STANDARD"
    compensation_handler: str | None = Field(default=None, max_length=300)
    capabilities: tuple[str, ...] = Field(default=(), max_length=100)
    resources: dict[str, float] | None = None
    circuit_breaker: CircuitBreakerConfig | None = None
    #: How long an attempt refused by the open breaker may wait for it to half-open, in all,
    #: before the stage fails (default: an hour).
    breaker_wait_seconds: float | None = Field(default=None, gt=0, le=MAX_WAIT_SECONDS)
    #: Where the agent runs: ``"task"`` (default) — a Ray task of its own, on any node, in a
    #: worker process that is killed to stop it; ``"local"`` — a thread of the execution
    #: actor that drives it (no Ray round trip, like a Temporal local activity): for short
    #: agents that need no resources of their own.  A local agent that overruns its timeout
    #: or must stop takes its runner process down with it (Ray restarts the runner).
    executor: Literal["task", "local"] = "task"
    #: Whose failures the stage's breaker counts: each organization's own (default: one
    #: tenant's trouble never opens the breaker for another), or ``"global"`` — one breaker
    #: for every execution of the stage (a downstream that all tenants share).
    breaker_scope: Literal["organization", "global"] = "organization"

    @field_validator("retry_config")
    @classmethod
    def _known_retry_name(cls, value: str | RetryConfig) -> str | RetryConfig:
        if isinstance(value, str) and value not in RETRY_CONFIGS:
            raise ValueError(
                f"unknown retry config {value!r}; use one of {', '.join(RETRY_CONFIGS)} "
                f"or a full object"
            )
        return value

    @field_validator("resources")
    @classmethod
    def _non_negative_resources(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None:
            for key, amount in value.items():
                if amount < 0:
                    raise ValueError(f"resource {key!r} must not be negative, got {amount}")
        return value

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> Self:
        for kind, names in _KIND_FIELDS.items():
            given = [n for n in names if getattr(self, n) is not None]
            if given and self.kind != kind:
                raise ValueError(f"stage {self.id!r} is a {self.kind} stage: {given[0]} belongs "
                                 f"to a {kind} stage")
        if self.kind == "agent":
            if self.timeout_seconds > MAX_AGENT_TIMEOUT_SECONDS:
                raise ValueError(f"stage {self.id!r}: an agent's timeout_seconds is at most "
                                 f"{MAX_AGENT_TIMEOUT_SECONDS} (a day); a longer wait is an "
                                 f"approval, signal or timer stage")
            return self._one_agent()
        if self.agent is not None or self.agent_type is not None:
            raise ValueError(f"stage {self.id!r} is a {self.kind} stage: it calls no agent "
                             f"(drop agent / agent_type)")
        if self.kind == "signal" and self.signal is None:
            raise ValueError(f"stage {self.id!r} is a signal stage: name the signal it waits "
                             f"for (signal: <name>)")
        if self.kind == "workflow":
            if self.workflow is None:
                raise ValueError(f"stage {self.id!r} is a workflow stage: name the child "
                                 f"workflow it starts (workflow: <id>)")
            if self.compensation_handler is not None:
                raise ValueError(f"stage {self.id!r} is a workflow stage: it is undone by "
                                 f"rolling its child back (drop compensation_handler)")
        if self.kind == "timer" and (self.delay_seconds is None) == (self.until is None):
            raise ValueError(f"stage {self.id!r} is a timer: give exactly one of "
                             f"delay_seconds or until (a dotted path to an ISO time)")
        return self

    @property
    def waits(self) -> bool:
        """An approval, signal, timer or workflow stage: it holds no runner while it waits."""
        return self.kind in WAITING_KINDS

    def _one_agent(self) -> Self:
        if (self.agent_type is None) == (self.agent is None):
            raise ValueError(
                f"stage {self.id!r} must name exactly one of agent_type (a lifecycle domain) "
                f"or agent (an import path module:function)"
            )
        if self.executor == "local" and self.resources:
            raise ValueError(
                f"stage {self.id!r} is local (it runs in its runner's process) and asks for "
                f"resources {sorted(self.resources)}: drop the resources, or make it "
                f'executor "task" so that Ray places it where they are'
            )
        return self

    @property
    def retry(self) -> RetryConfig:
        """The retry config in force (a named one resolved)."""
        if isinstance(self.retry_config, RetryConfig):
            return self.retry_config
        return RETRY_CONFIGS[self.retry_config]

    @property
    def breaker(self) -> CircuitBreakerConfig:
        return self.circuit_breaker or CircuitBreakerConfig()

    @property
    def breaker_wait(self) -> float:
        return self.breaker_wait_seconds or DEFAULT_BREAKER_WAIT_SECONDS


class WorkflowDAG(BaseModel):
    """A workflow definition: stages and the transitions between them."""

    model_config = _Frozen

    id: str = Field(min_length=1, max_length=200, pattern=_ID)
    name: str = Field(min_length=1, max_length=300)
    version: int = Field(ge=1)
    description: str = Field(default="", max_length=5000)
    initial_stage: str
    final_stages: tuple[str, ...] = Field(min_length=1)
    stages: tuple[WorkflowStage, ...] = Field(min_length=1, max_length=MAX_STAGES)
    transitions: tuple[Transition, ...] = Field(default=(), max_length=MAX_TRANSITIONS)
    compensation_policy: Literal["continue_on_error", "halt_on_error"] = "continue_on_error"

    _by_id: dict[str, WorkflowStage] = PrivateAttr(default_factory=dict)
    _incoming: dict[str, list[Transition]] = PrivateAttr(default_factory=dict)
    _outgoing: dict[str, list[Transition]] = PrivateAttr(default_factory=dict)
    _reachable: list[str] | None = PrivateAttr(default=None)

    def model_post_init(self, __context: Any) -> None:
        self._by_id = {stage.id: stage for stage in self.stages}
        for transition in self.transitions:
            self._incoming.setdefault(transition.to_stage, []).append(transition)
            self._outgoing.setdefault(transition.from_stage, []).append(transition)

    def stage(self, stage_id: str) -> WorkflowStage:
        return self._by_id[stage_id]

    def has_stage(self, stage_id: str) -> bool:
        return stage_id in self._by_id

    def incoming(self, stage_id: str) -> list[Transition]:
        return self._incoming.get(stage_id, [])

    def outgoing(self, stage_id: str) -> list[Transition]:
        return self._outgoing.get(stage_id, [])

    def ancestors(self, stage_id: str) -> set[str]:
        """Every stage with a path of transitions to ``stage_id``."""
        seen: set[str] = set()
        todo = [stage_id]
        while todo:
            for transition in self.incoming(todo.pop()):
                if transition.from_stage not in seen:
                    seen.add(transition.from_stage)
                    todo.append(transition.from_stage)
        return seen

    def reachable(self) -> list[str]:
        """Stage ids reachable from the initial stage, in definition order (computed once: the
        definition is frozen)."""
        if self._reachable is None:
            self._reachable = self._compute_reachable()
        return self._reachable

    def _compute_reachable(self) -> list[str]:
        seen = {self.initial_stage} if self.initial_stage in self._by_id else set()
        todo = list(seen)
        while todo:
            for transition in self.outgoing(todo.pop()):
                if transition.to_stage in self._by_id and transition.to_stage not in seen:
                    seen.add(transition.to_stage)
                    todo.append(transition.to_stage)
        return [stage.id for stage in self.stages if stage.id in seen]


class ValidationResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    valid: bool
    errors: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
