"""What an agent is handed: ``agent(ctx) -> dict``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["StageContext"]


@dataclass(frozen=True, slots=True, repr=False)
class StageContext:
    """The context of one stage attempt.

    ``idempotency_key`` is the same for every attempt of this stage of this execution, across
    retries and actor restarts: use it to make side effects happen once.
    """

    execution_id: str
    workflow_id: str
    stage_id: str
    attempt: int
    context: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    idempotency_key: str
    stage_name: str = ""
    capabilities: tuple[str, ...] = ()
    output: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        """Printed or logged, a context shows no secret: values under secret-like keys (in
        the context, the inputs and the output undone) are ``***``."""
        from actors.logs import redact

        return (f"StageContext(execution_id={self.execution_id!r}, "
                f"workflow_id={self.workflow_id!r}, stage_id={self.stage_id!r}, "
                f"attempt={self.attempt}, context={redact(self.context)!r}, "
                f"inputs={redact(self.inputs)!r}, output={redact(self.output)!r})")

    __str__ = __repr__
