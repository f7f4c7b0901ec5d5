"""Store tests use a store without the queue projector: their executions are data, not work
for a pool of runners that an earlier test may have left running on this database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from events import EventStore
from projections import project_executions


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[EventStore]:
    from actors.api import _ready_store

    migrated = await _ready_store()
    yield EventStore(migrated.pool, projectors=[project_executions])
