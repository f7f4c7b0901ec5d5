"""Schema migrations, applied in order under an advisory lock (safe from two drivers at once)."""

from __future__ import annotations

from events.database import DBConnection
from events.migrations_integrity import INTEGRITY_MIGRATIONS

__all__ = ["MIGRATIONS", "migrate"]

_LOCK_KEY = 0x77666461  # "wfda"

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE workflow_definitions (
          id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
          name TEXT NOT NULL,
          description TEXT,
          version INTEGER NOT NULL,
          dag_schema JSONB NOT NULL,
          is_active BOOLEAN DEFAULT true,
          created_at TIMESTAMPTZ DEFAULT now(),
          updated_at TIMESTAMPTZ DEFAULT now(),
          UNIQUE(name, version)
        );

        CREATE TABLE workflow_events (
          id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
          execution_id UUID NOT NULL,
          event_type TEXT NOT NULL,
          stage_id TEXT,
          metadata JSONB,
          created_at TIMESTAMPTZ DEFAULT now(),
          seq INTEGER NOT NULL CHECK (seq >= 1),
          position BIGINT GENERATED ALWAYS AS IDENTITY,
          txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
          UNIQUE(execution_id, seq)
        );
        CREATE INDEX workflow_events_position ON workflow_events (position);

        CREATE TABLE workflow_executions (
          id UUID PRIMARY KEY,
          workflow_definition_id TEXT NOT NULL,
          workflow_version INTEGER,
          status TEXT NOT NULL,
          current_stage TEXT,
          started_at TIMESTAMPTZ DEFAULT now(),
          completed_at TIMESTAMPTZ,
          error_message TEXT,
          context JSONB,
          audit_context JSONB,
          circuit_breaker_state JSONB,
          created_by TEXT NOT NULL,
          last_seq INTEGER NOT NULL DEFAULT 0,
          updated_at TIMESTAMPTZ DEFAULT now()
        );
        CREATE INDEX workflow_executions_status ON workflow_executions (status);
        """,
    ),
    (
        2,
        """
        CREATE TABLE workflow_artifacts (
          id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
          execution_id UUID NOT NULL,
          stage_id TEXT NOT NULL,
          kind TEXT NOT NULL,
          name TEXT NOT NULL,
          payload JSONB NOT NULL,
          status TEXT NOT NULL DEFAULT 'active',
          idempotency_key TEXT NOT NULL,
          created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
          updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
          UNIQUE (execution_id, stage_id, kind, name)
        );
        CREATE INDEX workflow_artifacts_execution ON workflow_artifacts (execution_id, status);

        CREATE TABLE circuit_breakers (
          key TEXT PRIMARY KEY,
          workflow_id TEXT NOT NULL,
          stage_id TEXT NOT NULL,
          state TEXT NOT NULL,
          failure_count INTEGER NOT NULL DEFAULT 0,
          opened_at TIMESTAMPTZ,
          next_attempt_at TIMESTAMPTZ,
          failure_threshold INTEGER NOT NULL,
          cooldown_seconds DOUBLE PRECISION NOT NULL,
          updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );

        CREATE TABLE circuit_breaker_transitions (
          id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          key TEXT NOT NULL,
          workflow_id TEXT NOT NULL,
          stage_id TEXT NOT NULL,
          from_state TEXT NOT NULL,
          to_state TEXT NOT NULL,
          failure_count INTEGER NOT NULL,
          at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX circuit_breaker_transitions_workflow ON circuit_breaker_transitions
          (workflow_id, to_state);
        """,
    ),
    (
        3,
        """
        CREATE INDEX workflow_events_txid_position ON workflow_events (txid, position);

        CREATE TABLE projection_checkpoints (
          name TEXT PRIMARY KEY,
          last_txid xid8 NOT NULL DEFAULT '0',
          last_position BIGINT NOT NULL DEFAULT 0,
          events_applied BIGINT NOT NULL DEFAULT 0,
          updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );

        CREATE TABLE metrics_executions (
          execution_id UUID PRIMARY KEY,
          workflow_id TEXT NOT NULL,
          status TEXT NOT NULL,
          started_at TIMESTAMPTZ NOT NULL,
          ended_at TIMESTAMPTZ,
          duration_ms BIGINT,
          compensations INTEGER NOT NULL DEFAULT 0,
          breaker_opens INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX metrics_executions_workflow ON metrics_executions (workflow_id);

        CREATE TABLE metrics_stages (
          execution_id UUID NOT NULL,
          stage_id TEXT NOT NULL,
          started_at TIMESTAMPTZ NOT NULL,
          attempts INTEGER NOT NULL DEFAULT 0,
          completed_at TIMESTAMPTZ,
          duration_ms BIGINT,
          failed BOOLEAN NOT NULL DEFAULT false,
          PRIMARY KEY (execution_id, stage_id)
        );
        """,
    ),
    (
        4,
        """
        CREATE TABLE execution_queue (
          execution_id UUID PRIMARY KEY,
          enqueued_at TIMESTAMPTZ NOT NULL,
          runner TEXT,
          claimed_at TIMESTAMPTZ
        );
        CREATE INDEX execution_queue_order ON execution_queue (enqueued_at);
        INSERT INTO execution_queue (execution_id, enqueued_at)
          SELECT id, started_at FROM workflow_executions
          WHERE status NOT IN ('completed', 'failed', 'rolled_back');
        """,
    ),
    (
        5,
        """
        ALTER TABLE execution_queue
          ADD COLUMN recoveries INTEGER NOT NULL DEFAULT 0,
          ADD COLUMN last_error TEXT,
          ADD COLUMN orphaned_by TEXT;
        """,
    ),
    (
        6,
        """
        ALTER TABLE workflow_executions ADD COLUMN organization_id TEXT;
        UPDATE workflow_executions SET organization_id = context->>'organizationId';
        CREATE INDEX workflow_executions_org ON workflow_executions (organization_id, started_at);
        """,
    ),
    (
        7,
        # A runner claims the oldest queued execution nobody runs in one round trip: the
        # execution's lease is a session advisory lock keyed by the first 8 bytes of its id
        # (events.leases.execution_lock_key), taken row by row in queue order.
        # A runner that died holding an execution is remembered on its row until it (restarted)
        # certifies its death: every such runner, not only the last one (several can die on
        # one execution before the first of them is back).
        """
        ALTER TABLE execution_queue ALTER COLUMN orphaned_by TYPE TEXT[]
          USING CASE WHEN orphaned_by IS NULL THEN '{}'::text[] ELSE ARRAY[orphaned_by] END;
        ALTER TABLE execution_queue ALTER COLUMN orphaned_by SET DEFAULT '{}';
        ALTER TABLE execution_queue ALTER COLUMN orphaned_by SET NOT NULL;
        CREATE FUNCTION wfdag_lock_key(id UUID) RETURNS BIGINT LANGUAGE sql IMMUTABLE AS
          $$ SELECT ('x' || left(replace(id::text, '-', ''), 16))::bit(64)::bigint $$;
        CREATE FUNCTION wfdag_claim(p_runner TEXT, p_scan INTEGER)
        RETURNS TABLE (claimed UUID, claimed_recoveries INTEGER, claimed_last_error TEXT)
        LANGUAGE plpgsql AS $$
        DECLARE
          candidate UUID;
        BEGIN
          FOR candidate IN
            SELECT q.execution_id FROM execution_queue q ORDER BY q.enqueued_at LIMIT p_scan
          LOOP
            IF pg_try_advisory_lock(wfdag_lock_key(candidate)) THEN
              RETURN QUERY
                UPDATE execution_queue q SET runner = p_runner, claimed_at = now(),
                  orphaned_by = CASE WHEN q.runner IS NULL THEN q.orphaned_by
                                     ELSE array_append(q.orphaned_by, q.runner) END
                WHERE q.execution_id = candidate
                RETURNING q.execution_id, q.recoveries, q.last_error;
              IF FOUND THEN
                RETURN;
              END IF;
              -- It ended between the scan and the lock.
              PERFORM pg_advisory_unlock(wfdag_lock_key(candidate));
            END IF;
          END LOOP;
        END $$;
        """,
    ),
    (
        8,
        # list_executions: newest first, filtered by status, workflow, organization or creator,
        # a keyed page at a time — each from an index, never a scan.
        """
        CREATE INDEX workflow_executions_newest ON workflow_executions (started_at DESC, id DESC);
        CREATE INDEX workflow_executions_status_newest
          ON workflow_executions (status, started_at DESC, id DESC);
        CREATE INDEX workflow_executions_workflow_newest
          ON workflow_executions (workflow_definition_id, started_at DESC, id DESC);
        CREATE INDEX workflow_executions_creator_newest
          ON workflow_executions (created_by, started_at DESC, id DESC);
        """,
    ),
    (
        9,
        # Waiting stages: a parked execution stays in the queue, not claimable before
        # not_before (its next timer or deadline; 'infinity' when only a person or a signal
        # can wake it).  A request (approval, signal, cancel) clears it.
        """
        ALTER TABLE execution_queue ADD COLUMN not_before TIMESTAMPTZ;
        CREATE OR REPLACE FUNCTION wfdag_claim(p_runner TEXT, p_scan INTEGER)
        RETURNS TABLE (claimed UUID, claimed_recoveries INTEGER, claimed_last_error TEXT)
        LANGUAGE plpgsql AS $$
        DECLARE
          candidate UUID;
        BEGIN
          FOR candidate IN
            SELECT q.execution_id FROM execution_queue q
            WHERE q.not_before IS NULL OR q.not_before <= now()
            ORDER BY q.enqueued_at LIMIT p_scan
          LOOP
            IF pg_try_advisory_lock(wfdag_lock_key(candidate)) THEN
              RETURN QUERY
                UPDATE execution_queue q SET runner = p_runner, claimed_at = now(),
                  orphaned_by = CASE WHEN q.runner IS NULL THEN q.orphaned_by
                                     ELSE array_append(q.orphaned_by, q.runner) END
                WHERE q.execution_id = candidate
                RETURNING q.execution_id, q.recoveries, q.last_error;
              IF FOUND THEN
                RETURN;
              END IF;
              -- It ended between the scan and the lock.
              PERFORM pg_advisory_unlock(wfdag_lock_key(candidate));
            END IF;
          END LOOP;
        END $$;
        """,
    ),
    (
        10,
        # Child workflows (the parent's link is in audit_context) and schedules: rows, their
        # audit trail, and the leader lease that lets one scheduler fire among several.
        """
        CREATE INDEX IF NOT EXISTS workflow_executions_parent_idx ON workflow_executions
          (((audit_context->'parent'->>'execution_id'))) WHERE audit_context ? 'parent';
        CREATE INDEX IF NOT EXISTS workflow_executions_schedule_idx ON workflow_executions
          ((audit_context->>'schedule_id'), started_at DESC, id DESC)
          WHERE audit_context ? 'schedule_id';
        CREATE TABLE workflow_schedules (
          id TEXT PRIMARY KEY,
          workflow_id TEXT NOT NULL,
          version INTEGER,
          cron TEXT NOT NULL,
          timezone TEXT NOT NULL,
          context JSONB NOT NULL,
          user_id TEXT NOT NULL,
          organization_id TEXT,
          overlap TEXT NOT NULL CHECK (overlap IN ('skip', 'allow', 'buffer_one')),
          catchup BOOLEAN NOT NULL,
          paused BOOLEAN NOT NULL DEFAULT false,
          next_fire_at TIMESTAMPTZ NOT NULL,
          last_fire_at TIMESTAMPTZ,
          last_execution_id UUID,
          buffered_fire_at TIMESTAMPTZ,
          fires INTEGER NOT NULL DEFAULT 0,
          skipped INTEGER NOT NULL DEFAULT 0,
          last_error TEXT,
          created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
          updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX workflow_schedules_due_idx ON workflow_schedules (next_fire_at)
          WHERE NOT paused;
        CREATE TABLE workflow_schedule_audit (
          id BIGSERIAL PRIMARY KEY,
          schedule_id TEXT NOT NULL,
          action TEXT NOT NULL,
          user_id TEXT,
          at TIMESTAMPTZ NOT NULL DEFAULT now(),
          details JSONB NOT NULL DEFAULT '{}'
        );
        CREATE INDEX workflow_schedule_audit_idx ON workflow_schedule_audit (schedule_id, id);
        CREATE TABLE wfdag_leases (
          name TEXT PRIMARY KEY,
          holder TEXT NOT NULL,
          until TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    (
        11,
        # Self-fencing leases: a runner's heartbeat on the row of the execution it drives.  A
        # row whose runner is recorded is not claimed (even with its advisory lock free — the
        # server ended the session of a runner cut off by a partition) until its heartbeat is
        # older than TAKEOVER_SECONDS (events.leases): by then the old runner has fenced
        # itself (it stops its stages when it cannot renew for FENCE_SECONDS).
        """
        ALTER TABLE execution_queue ADD COLUMN heartbeat_at TIMESTAMPTZ;
        CREATE OR REPLACE FUNCTION wfdag_claim(p_runner TEXT, p_scan INTEGER)
        RETURNS TABLE (claimed UUID, claimed_recoveries INTEGER, claimed_last_error TEXT)
        LANGUAGE plpgsql AS $$
        DECLARE
          candidate UUID;
        BEGIN
          FOR candidate IN
            SELECT q.execution_id FROM execution_queue q
            WHERE (q.not_before IS NULL OR q.not_before <= now())
              AND (q.runner IS NULL OR q.heartbeat_at IS NULL
                   OR q.heartbeat_at < now() - interval '12 seconds')
            ORDER BY q.enqueued_at LIMIT p_scan
          LOOP
            IF pg_try_advisory_lock(wfdag_lock_key(candidate)) THEN
              RETURN QUERY
                UPDATE execution_queue q SET runner = p_runner, claimed_at = now(),
                  heartbeat_at = now(),
                  orphaned_by = CASE WHEN q.runner IS NULL THEN q.orphaned_by
                                     ELSE array_append(q.orphaned_by, q.runner) END
                WHERE q.execution_id = candidate
                RETURNING q.execution_id, q.recoveries, q.last_error;
              IF FOUND THEN
                RETURN;
              END IF;
              PERFORM pg_advisory_unlock(wfdag_lock_key(candidate));
            END IF;
          END LOOP;
        END $$;
        """,
    ),
]
MIGRATIONS += INTEGRITY_MIGRATIONS


async def migrate(conn: DBConnection) -> list[int]:
    """Apply the migrations this database lacks; returns the versions applied."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS wfdag_schema_migrations ("
            " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        rows = await conn.fetch("SELECT version FROM wfdag_schema_migrations")
        done = {r["version"] for r in rows}
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO wfdag_schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
    return applied
