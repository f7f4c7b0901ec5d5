"""Per-stage circuit breakers, shared by every execution on every node.

* :mod:`actors.breakers.machine` — the pure state machine over aiobreaker;
* :mod:`actors.breakers.registry` — the registry actor ``wfdag-breakers`` that holds them;
* :mod:`actors.breakers.admission` — a runner's view, which admits without a round trip when
  nothing has failed.

Their state lives in PostgreSQL (:mod:`events.breaker_state`).
"""

from actors.breakers.admission import BreakerView
from actors.breakers.machine import Breaker, BreakerStatus
from actors.breakers.registry import (
    REGISTRY_NAME,
    Admission,
    BreakerRegistry,
    Outcome,
    breaker_registry,
)
from events.breaker_state import BREAKER_CHANNEL, breaker_key

__all__ = [
    "BREAKER_CHANNEL",
    "REGISTRY_NAME",
    "Admission",
    "Breaker",
    "BreakerRegistry",
    "BreakerStatus",
    "BreakerView",
    "Outcome",
    "breaker_key",
    "breaker_registry",
]
