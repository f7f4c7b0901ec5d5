"""The wfdag service: one long-lived local process per ``$WFDAG_HOME`` that owns the runners.

* :mod:`~actors.service.record` — what a running service leaves under ``$WFDAG_HOME``;
* :mod:`~actors.service.process` — the service process itself;
* :mod:`~actors.service.control` — start, stop (what ``wfdag server`` calls).
"""

from actors.service.control import ServiceError, start_service, stop_service
from actors.service.record import ServiceRecord, live_service

__all__ = ["ServiceError", "ServiceRecord", "live_service", "start_service", "stop_service"]
