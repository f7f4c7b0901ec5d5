"""The console's pure parts (no service, no browser)."""

from __future__ import annotations

from actors.console.operations import histogram


def test_a_histogram_spans_shortest_to_longest_in_equal_bins() -> None:
    h = histogram([100.0, 150.0, 190.0, 1000.0], bins=3)
    assert h["edges_ms"] == [100.0, 400.0, 700.0, 1000.0]
    assert h["counts"] == [3, 0, 1]  # the longest falls in the last bin, not past it
    assert histogram([]) == {"edges_ms": [], "counts": []}
    same = histogram([5.0, 5.0], bins=2)
    assert same["counts"] == [2, 0]
