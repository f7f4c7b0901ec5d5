"""Checking the log's hash chain (migration 13): which executions' logs were edited outside wfdag.

Every event's ``chain`` is the SHA-256 of the previous event's chain and of its own content;
the append computes it in the same statement that writes the event.  A log holds when every
link does and its seqs run 1, 2, 3, … without a gap.  What it proves: nobody changed, inserted,
reordered or deleted an event (or moved an execution to another organization by editing its
first event) without also recomputing every later link.  What it does not: the chain has no
key, so whoever can write the table at will can rewrite a whole chain; keep the head elsewhere
(the integrity workflow's attestation records it) to catch that too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from events.database import DBReader
from events.store_sql import IN_ORDER, LINK_HOLDS

__all__ = ["ChainReport", "verify_chains"]

_VERIFY = f"""
SELECT execution_id::text AS eid, count(*) AS events, max(seq) AS last,
       min(seq) FILTER (WHERE NOT in_order) AS gap_at,
       min(seq) FILTER (WHERE NOT linked) AS link_at,
       bool_or(seq = 1) AS has_start
FROM (
  SELECT execution_id, seq,
    {LINK_HOLDS} AS linked, {IN_ORDER} AS in_order
  FROM workflow_events
  WHERE ($1::uuid IS NULL OR execution_id = $1::uuid)
    AND ($2::text IS NULL OR execution_id IN (
      SELECT execution_id FROM workflow_events
      WHERE seq = 1 AND metadata->'context'->>'organizationId' = $2))
  WINDOW w AS (PARTITION BY execution_id ORDER BY seq)
) links
GROUP BY execution_id ORDER BY execution_id
"""

#: Read-model rows whose organization is not the one their log says (a "move" by editing the
#: read model, which the API's organization checks read).
_MOVED = """
SELECT e.id::text AS eid, e.organization_id AS shown, v.metadata->'context'->>'organizationId'
       AS logged
FROM workflow_executions e JOIN workflow_events v ON v.execution_id = e.id AND v.seq = 1
WHERE ($1::uuid IS NULL OR e.id = $1::uuid)
  AND e.organization_id IS DISTINCT FROM v.metadata->'context'->>'organizationId'
"""


@dataclass(frozen=True, slots=True)
class ChainReport:
    """One execution's log, checked: ``broken_at`` is the first seq that does not hold."""

    execution_id: str
    events: int
    broken_at: int | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        return {"execution_id": self.execution_id, "events": self.events, "ok": self.ok,
                "broken_at": self.broken_at, "problem": self.problem}


def _report(row: Any, moved: dict[str, tuple[str | None, str | None]]) -> ChainReport:
    eid, gap_at, link_at = row["eid"], row["gap_at"], row["link_at"]
    if not row["has_start"]:
        return ChainReport(eid, row["events"], 1, "its first event (seq 1) is missing: "
                           "events were deleted")
    if gap_at is not None and (link_at is None or gap_at <= link_at):
        return ChainReport(eid, row["events"], gap_at, f"an event before seq {gap_at} is "
                           f"missing: the log skips from an earlier seq to {gap_at} (deleted)")
    if link_at is not None:
        return ChainReport(eid, row["events"], link_at, f"the event at seq {link_at} does not "
                           f"match its hash: it was changed, or an event was inserted or "
                           f"reordered at that place")
    if eid in moved:
        shown, logged = moved[eid]
        return ChainReport(eid, row["events"], None, f"the read model says organization "
                           f"{shown!r}, the log {logged!r}: the read model was edited "
                           f"(`wfdag projections rebuild` restores it from the log)")
    return ChainReport(eid, row["events"], None, None)


async def verify_chains(conn: DBReader, execution_id: str | None = None,
                        organization_id: str | None = None, *,
                        read_model: bool = True) -> list[ChainReport]:
    """Every execution's log (or one, or one organization's), checked link by link — and,
    unless ``read_model`` is false (a rebuild, which rewrites it), the read model's
    organizations against the logs'."""
    rows = await conn.fetch(_VERIFY, execution_id, organization_id)
    moved = {r["eid"]: (r["shown"], r["logged"])
             for r in await conn.fetch(_MOVED, execution_id)} if read_model else {}
    return [_report(r, moved) for r in rows]
