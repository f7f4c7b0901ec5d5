"""An agent module that takes a while to import (as some libraries do): the runner must import
it off its event loop (``tests/unit/test_local_coroutines.py``)."""

from __future__ import annotations

import threading
import time
from typing import Any

from actors import StageContext

time.sleep(0.6)  # the import itself


async def agent(ctx: StageContext) -> dict[str, Any]:
    return {"thread": threading.current_thread().name}
