"""Migrations of issue 16 (tenancy and a tamper-evident log), applied after the others by
:func:`events.migrations.migrate`."""

from __future__ import annotations

__all__ = ["INTEGRITY_MIGRATIONS"]

INTEGRITY_MIGRATIONS: list[tuple[int, str]] = [
    (
        12,
        # Tenancy (issue 16): metrics by organization; the secret that keyed execution ids are
        # derived with (an HMAC: nobody without the database can predict one), made here once.
        """
        ALTER TABLE metrics_executions ADD COLUMN organization_id TEXT;
        UPDATE metrics_executions m SET organization_id = e.organization_id
          FROM workflow_executions e WHERE e.id = m.execution_id;
        CREATE INDEX metrics_executions_org ON metrics_executions (organization_id, workflow_id);
        CREATE TABLE wfdag_keys (
          name TEXT PRIMARY KEY,
          secret BYTEA NOT NULL,
          created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        INSERT INTO wfdag_keys (name, secret) VALUES ('execution_ids', decode(replace(
          gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));
        """,
    ),
    (
        13,
        # A tamper-evident log (issue 16): each event's ``chain`` is the SHA-256 of the previous
        # event's chain ('' before seq 1) and of this event's whole content (execution, seq,
        # type, stage, time, metadata as jsonb text).  Computed by the server in the append's
        # statement (events.store); checked on every read by the runners and by replay.
        """
        CREATE FUNCTION wfdag_link(prev TEXT, eid UUID, seq INTEGER, etype TEXT, stage TEXT,
                                   meta JSONB, at TIMESTAMPTZ) RETURNS TEXT
        LANGUAGE sql STABLE PARALLEL SAFE AS $$
          SELECT encode(sha256(convert_to(concat_ws('|', prev, eid::text, seq::text, etype,
            coalesce(stage, ''), extract(epoch FROM at)::text, coalesce(meta::text, '')),
            'UTF8')), 'hex')
        $$;
        ALTER TABLE workflow_events ADD COLUMN chain TEXT;
        DO $$
        DECLARE r RECORD; head TEXT := ''; current UUID := NULL;
        BEGIN
          FOR r IN SELECT id, execution_id, seq, event_type, stage_id, metadata, created_at
                   FROM workflow_events ORDER BY execution_id, seq LOOP
            IF current IS DISTINCT FROM r.execution_id THEN
              head := ''; current := r.execution_id;
            END IF;
            head := wfdag_link(head, r.execution_id, r.seq, r.event_type, r.stage_id,
                               r.metadata, r.created_at);
            UPDATE workflow_events SET chain = head WHERE id = r.id;
          END LOOP;
        END $$;
        """,
    ),
    (
        14,
        # Snapshots of the fold (issue 18, events.snapshots): the latest per execution, bound
        # to its log by a digest of its event's chain hash and its own text.
        """
        CREATE TABLE workflow_snapshots (
          execution_id UUID PRIMARY KEY,
          seq INTEGER NOT NULL,
          state TEXT NOT NULL,
          digest TEXT NOT NULL,
          taken_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """,
    ),
]
