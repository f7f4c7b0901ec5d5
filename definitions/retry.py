"""Retry behaviour as a small frozen value object (after Temporal's ``RetryPolicy``)."""

from __future__ import annotations

import random
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["JITTER_FRACTION", "RETRY_CONFIGS", "RetryConfig", "backoff_delay_ms"]

JITTER_FRACTION = 0.25
"""With jitter on, a delay is drawn uniformly from ±25 % of the nominal one."""


class RetryConfig(BaseModel):
    """How often a stage is tried and how long to wait between attempts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(ge=1, le=100)
    initial_delay_ms: int = Field(default=0, ge=0)
    max_delay_ms: int = Field(default=0, ge=0)
    multiplier: float = Field(default=1.0, ge=1.0)
    jitter: bool = False

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> Self:
        if self.max_delay_ms < self.initial_delay_ms:
            raise ValueError(
                f"max_delay_ms ({self.max_delay_ms}) is below initial_delay_ms "
                f"({self.initial_delay_ms})"
            )
        return self

    def nominal_delay_ms(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1``: min(initial * multiplier**(attempt-1), max)."""
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt}")
        nominal = self.initial_delay_ms * self.multiplier ** (attempt - 1)
        return float(min(nominal, self.max_delay_ms))


RETRY_CONFIGS: dict[str, RetryConfig] = {
    "STANDARD": RetryConfig(
        max_attempts=3, initial_delay_ms=500, max_delay_ms=5000, multiplier=2, jitter=True
    ),
    "AGGRESSIVE": RetryConfig(
        max_attempts=5, initial_delay_ms=1000, max_delay_ms=10000, multiplier=2, jitter=True
    ),
    "CONSERVATIVE": RetryConfig(
        max_attempts=2, initial_delay_ms=1000, max_delay_ms=3000, multiplier=1.5, jitter=False
    ),
    "NONE": RetryConfig(max_attempts=1),
}


def backoff_delay_ms(config: RetryConfig, attempt: int, rng: random.Random | None = None) -> int:
    """The delay to wait after failed attempt ``attempt`` (1-based), jittered when configured.

    The result is recorded in the log, so replay never draws it again.
    """
    nominal = config.nominal_delay_ms(attempt)
    if config.jitter and nominal > 0:
        draw = (rng or random).uniform(-JITTER_FRACTION, JITTER_FRACTION)
        nominal *= 1.0 + draw
    return max(0, round(nominal))
