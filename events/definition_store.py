"""What the event store keeps beside the log: workflow definitions, and the key of keyed
execution ids (a mixin of :class:`events.store.EventStore`)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from definitions import (
    DatabaseConfigError,
    DefinitionConflictError,
    WorkflowDAG,
    WorkflowNotFoundError,
)
from events.database import DBReader
from events.ids import execution_id_for

__all__ = ["DefinitionStore"]


class DefinitionStore:
    """Definitions (a stored version never changes) and the execution-id key."""

    pool: asyncpg.Pool
    _definitions: dict[tuple[str, int], WorkflowDAG]
    _id_secret: bytes | None = None

    async def keyed_execution_id(self, workflow_id: str, idempotency_key: str,
                                 organization_id: str | None, conn: DBReader | None = None,
                                 ) -> str:
        """The execution an idempotency key names for a workflow in an organization: the same
        key, the same id; another organization's same key, another id.  Keyed by this
        database's secret (``wfdag_keys``), so no one can compute it in advance."""
        if self._id_secret is None:
            secret = await (conn or self.pool).fetchval(
                "SELECT secret FROM wfdag_keys WHERE name = 'execution_ids'")
            if secret is None:
                raise DatabaseConfigError(
                    "this database has no execution-id key (wfdag_keys): run "
                    "`wfdag init` (its migrations create it)")
            self._id_secret = bytes(secret)
        assert self._id_secret is not None
        return execution_id_for(workflow_id, idempotency_key, secret=self._id_secret,
                                organization_id=organization_id)

    async def register_definition(self, dag: WorkflowDAG) -> bool:
        """Store ``dag``; True when new, False when the same content was there already."""
        schema = dag.model_dump(mode="json")
        async with self.pool.acquire() as conn:
            inserted = await conn.fetchval(
                "INSERT INTO workflow_definitions (name, description, version, dag_schema) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (name, version) DO NOTHING RETURNING id",
                dag.id, dag.description, dag.version, schema,
            )
            if inserted is not None:
                return True
            existing = await conn.fetchval(
                "SELECT dag_schema FROM workflow_definitions WHERE name = $1 AND version = $2",
                dag.id, dag.version,
            )
        if _canonical(_as_stored_now(existing)) != _canonical(schema):
            raise DefinitionConflictError(dag.id, dag.version)
        return False

    async def get_definition(self, workflow_id: str, version: int | None = None) -> WorkflowDAG:
        """The active definition (the latest version unless one is named)."""
        async with self.pool.acquire() as conn:
            if version is None:
                version = await conn.fetchval(
                    "SELECT version FROM workflow_definitions WHERE name = $1 AND is_active "
                    "ORDER BY version DESC LIMIT 1",
                    workflow_id,
                )
                if version is None:
                    raise WorkflowNotFoundError(workflow_id, None)
            cached = self._definitions.get((workflow_id, version))
            if cached is not None:
                return cached
            schema = await conn.fetchval(
                "SELECT dag_schema FROM workflow_definitions WHERE name = $1 AND version = $2",
                workflow_id, version,
            )
        if schema is None:
            raise WorkflowNotFoundError(workflow_id, version)
        dag = WorkflowDAG.model_validate(schema)
        self._definitions[(workflow_id, version)] = dag
        return dag

    async def list_definitions(self, *, include_inactive: bool = False) -> list[WorkflowDAG]:
        """The latest active version of each workflow (every version, with
        ``include_inactive``), by id."""
        sql = ("SELECT dag_schema FROM workflow_definitions ORDER BY name, version"
               if include_inactive else
               "SELECT DISTINCT ON (name) dag_schema FROM workflow_definitions "
               "WHERE is_active ORDER BY name, version DESC")
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(sql)
        return [WorkflowDAG.model_validate(r["dag_schema"]) for r in rows]



def _as_stored_now(schema: Any) -> Any:
    """A stored definition as this version of wfdag would store it: one registered by an
    older version lacks the fields added since (with their defaults), and is still the same
    definition."""
    try:
        return WorkflowDAG.model_validate(schema).model_dump(mode="json")
    except ValueError:  # no longer valid: compared as it is (and so not the same)
        return schema


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
