"""What every group of the API shares: the ready store, argument checks, ownership."""

from __future__ import annotations

import contextvars
import json
from collections.abc import Mapping
from typing import Any

from actors.runtime import check_payload_size, get_database_url, get_store
from actors.service.record import live_service
from definitions import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_NESTING,
    MAX_ORGANIZATION_ID_CHARS,
    InvalidArgumentError,
    InvalidContextError,
    canonical_workflows,
    nested_deeper_than,
)
from events import EventStore, migrate
from projections import fetch_status

__all__ = [
    "check_context",
    "check_idempotency_key",
    "check_org",
    "check_owner",
    "check_user",
    "ready_store",
    "service_owns_runners",
]

_schema_ready: set[str] = set()


async def ready_store(*, refresh: bool = False) -> EventStore:
    """The store, with migrations applied and canonical workflows registered (once a process;
    again with ``refresh``)."""
    url = get_database_url()
    if refresh:
        _schema_ready.discard(url)
    store = await get_store(url)
    if url not in _schema_ready:
        async with store.pool.acquire() as conn:
            await migrate(conn)
        for dag in canonical_workflows():
            await store.register_definition(dag)
        _schema_ready.add(url)
    return store


def check_context(context: Any) -> dict[str, Any]:
    """A copy of ``context`` as JSON gives it back, or :class:`InvalidContextError`."""
    if not isinstance(context, Mapping):
        raise InvalidContextError(
            f"context must be a JSON object (a dict), got {type(context).__name__}"
        )
    for key in context:
        if not isinstance(key, str):
            raise InvalidContextError(f"context keys must be strings, got {key!r}")
    if nested_deeper_than(dict(context)):
        raise InvalidContextError(f"context is nested more than {MAX_NESTING} levels deep")
    try:
        encoded = json.dumps(dict(context), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidContextError(f"context is not JSON-serialisable: {exc}") from None
    check_payload_size("context", encoded)
    return json.loads(encoded)  # type: ignore[no-any-return]


def check_org(organization_id: Any) -> str:
    if not isinstance(organization_id, str) or not (
            0 < len(organization_id) <= MAX_ORGANIZATION_ID_CHARS):
        raise InvalidArgumentError(
            f"organization_id must be a string of 1 to {MAX_ORGANIZATION_ID_CHARS} characters")
    return organization_id


def check_user(user_id: Any) -> str:
    if not isinstance(user_id, str) or not user_id:
        raise InvalidArgumentError("user_id must be a non-empty string")
    return user_id


def check_idempotency_key(key: Any) -> str | None:
    if key is not None and (not isinstance(key, str)
                            or not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS):
        raise InvalidArgumentError(
            f"idempotency_key must be a string of 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters")
    return key


async def check_owner(store: EventStore, execution_id: str, organization_id: str | None) -> None:
    """Another organization's execution is not found (as a missing one)."""
    if organization_id is not None:
        await fetch_status(store.pool, execution_id, organization_id)



def service_owns_runners(database_url: str) -> bool:
    """The service of this ``$WFDAG_HOME`` runs on this database and this process has not
    joined a Ray of its own (nor been told to, ``RAY_ADDRESS``): its runners take the work,
    and this process starts none."""
    import os

    import ray

    return (not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
            and live_service(database_url) is not None)


#: False in a process about to exit (the CLI sets it for its command): the API then never
#: starts a local Ray and pool to drive what it queued — the caller makes sure the service
#: (or a cluster) will.
HOSTS_RUNNERS: contextvars.ContextVar[bool] = contextvars.ContextVar("wfdag_hosts_runners",
                                                                     default=True)
