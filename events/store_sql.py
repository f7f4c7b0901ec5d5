"""The event store's statements: the hash-chained append, the checked read, and the chain
checks (migration 13's ``wfdag_link`` is the one definition of a link)."""

from __future__ import annotations

import functools

__all__ = [
    "APPEND", "CHAINS", "CHAIN_OF", "CHECKED", "IN_ORDER", "LINK_HOLDS", "READ",
    "append_statement",
]

#: The events of ``$2…$6`` (seqs, types, stages, metadata, times) with their place, and the
#: ``chain`` each gets from the one before: the start of ``links`` is ``{start}``.
_LINKS = """
WITH RECURSIVE u AS (
  SELECT * FROM unnest($2::int[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[])
       WITH ORDINALITY AS u(s, t, st, m, c, i)
),{prev}
links(i, h) AS (
  SELECT 0::bigint, {start}
  UNION ALL
  SELECT u.i, wfdag_link(links.h, $1::uuid, u.s, u.t, u.st, u.m, u.c)
  FROM links JOIN u ON u.i = links.i + 1
)"""

#: Over a window ``w`` of one log by seq: the event's link holds (its chain is the hash of
#: the one before and of its own content) / its seq follows the one before.
LINK_HOLDS = ("chain IS NOT DISTINCT FROM wfdag_link(lag(chain, 1, '') OVER w, execution_id, "
              "seq, event_type, stage_id, metadata, created_at)")
IN_ORDER = "seq = lag(seq, 1, 0) OVER w + 1"

#: The append: every event linked to the one before by its ``chain`` hash, written only when
#: the writer's expected version is the stream's last event.
APPEND = _LINKS.format(
    prev="\nprev AS (SELECT chain FROM workflow_events WHERE execution_id = $1::uuid "
         "AND seq = $7::int),",
    start="CASE WHEN $7::int = 0 THEN '' ELSE (SELECT chain FROM prev) END") + """,
ins AS (
  INSERT INTO workflow_events (execution_id, seq, event_type, stage_id, metadata, created_at,
                               chain)
  SELECT $1::uuid, u.s, u.t, u.st, u.m, u.c, l.h FROM u JOIN links l ON l.i = u.i
  WHERE ($7::int = 0 OR EXISTS (SELECT 1 FROM prev))
  RETURNING 1
),
ins_count AS (SELECT count(*) AS n FROM ins){ctes}
SELECT n, pg_notify($8::text, $9::text){selects} FROM ins_count
"""

#: A stream with each event's link checked: ``intact`` is false where the link does not hold
#: or a seq is missing.  The event at ``{after}`` (an SQL expression: the last one the reader
#: has) is read too, for the first link; up to ``{until}``.
CHECKED = f"""
SELECT seq, event_type, stage_id, metadata, created_at, intact FROM (
  SELECT seq, event_type, stage_id, metadata, created_at,
    ({LINK_HOLDS} AND {IN_ORDER}) AS intact
  FROM workflow_events WHERE execution_id = $1::uuid AND seq >= {{after}} AND seq <= {{until}}
  WINDOW w AS (ORDER BY seq)
) linked WHERE seq > {{after}}"""
#: :data:`CHECKED` after ``$2``, up to ``$3``.
READ = CHECKED.format(after="$2", until="$3") + " ORDER BY seq\n"

#: The chain a whole log would have here, computed without writing it (an import's check).
CHAIN_OF = _LINKS.format(prev="", start="''::text") + """
SELECT h FROM links WHERE i > 0 ORDER BY i
"""

#: A stored log's chain hashes, by seq.
CHAINS = """
SELECT seq, chain FROM workflow_events WHERE execution_id = $1::uuid ORDER BY seq
"""


@functools.lru_cache(maxsize=256)
def append_statement(base: int, parts: tuple[tuple[tuple[str, ...], tuple[str, ...], int], ...],
                     ) -> str:
    """:data:`APPEND` with the projectors' parts — each (data-modifying CTE bodies, final SELECT
    expressions, how many parameters), written ``{0}``, ``{1}``, … and ``{ok}`` — their
    parameters numbered from ``$base + 1`` (``$base`` is the count of events).  Built once per
    shape: a few shapes serve every append."""
    ok = f"((SELECT n FROM ins_count) = ${base})"
    ctes: list[str] = []
    selects: list[str] = []
    for part_ctes, part_selects, count in parts:
        names = [f"${base + i + 1}" for i in range(count)]
        base += count
        ctes += [c.format(*names, ok=ok) for c in part_ctes]
        selects += [x.format(*names, ok=ok) for x in part_selects]
    return APPEND.format(ctes="".join(f",\np{i} AS ({c})" for i, c in enumerate(ctes)),
                         selects="".join(f", {x}" for x in selects))
