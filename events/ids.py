"""Execution ids that idempotency keys name."""

from __future__ import annotations

import hashlib
import hmac
import uuid

__all__ = ["execution_id_for"]

_IDEMPOTENCY_NAMESPACE = uuid.UUID("5f0c6a2e-9d1b-4f53-8f0e-6b3c2a7d9e41")


def execution_id_for(workflow_id: str, idempotency_key: str, *, secret: bytes | None = None,
                     organization_id: str | None = None) -> str:
    """The execution an idempotency key names for a workflow: the same key, the same id.
    With ``secret`` (a start's or a schedule's: :meth:`EventStore.keyed_execution_id`), an
    HMAC of the organization, workflow and key — unguessable, and another organization's same
    key names another execution; without, a name-based UUID (a child's: its key holds its
    parent's id, itself unguessable)."""
    if secret is None:
        return str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{workflow_id}\n{idempotency_key}"))
    message = f"{organization_id or ''}\n{workflow_id}\n{idempotency_key}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))
