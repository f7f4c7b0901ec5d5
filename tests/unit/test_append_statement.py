"""The append's statement as the store builds it from its projectors' parts (no database):
each part's parameters numbered on from the events' count, ``{ok}`` naming that count, and one
statement kept per shape."""

from __future__ import annotations

import re

from events.store_sql import APPEND, append_statement


def test_parts_are_numbered_on_from_the_count_and_ok_names_it() -> None:
    parts = (
        (("INSERT INTO a SELECT {0}, {1} WHERE {ok}",), (), 2),
        (("DELETE FROM b WHERE id = {0} AND {ok}",), ("pg_notify({1}, {0})",), 2),
    )
    sql = append_statement(10, parts)
    ok = "((SELECT n FROM ins_count) = $10)"
    assert f"p0 AS (INSERT INTO a SELECT $11, $12 WHERE {ok})" in sql
    assert f"p1 AS (DELETE FROM b WHERE id = $13 AND {ok})" in sql
    assert sql.rstrip().endswith("FROM ins_count") and ", pg_notify($14, $13) FROM" in sql
    # Every parameter of the statement is one the store passes: $1…$9, the count, the parts'.
    assert max(int(n) for n in re.findall(r"\$(\d+)", sql)) == 14


def test_no_parts_is_the_bare_append() -> None:
    assert append_statement(9, ()) == APPEND.format(ctes="", selects="")


def test_one_statement_per_shape() -> None:
    shape = ((("INSERT INTO a SELECT {0} WHERE {ok}",), (), 1),)
    first = append_statement(10, shape)
    cte = "".join(["INSERT INTO a SELECT {0} ", "WHERE {ok}"])  # equal, not the same object
    again = append_statement(10, (((cte,), (), 1),))
    assert again is first  # the same string object: built once
    assert append_statement(11, shape) != first  # another count of events: another statement
