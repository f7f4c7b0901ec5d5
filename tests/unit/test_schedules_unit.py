"""The pure side of schedules (issue 14): cron checks and slot arithmetic, with no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from definitions import InvalidArgumentError
from definitions.schedules import check_cron, check_timezone, next_slot, slots_between

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("cron", "message"), [
    ("61 * * * *", "is not valid"),
    ("* * *", "has 3 fields"),
    ("* * * * * * *", "has 7 fields"),
    ("", "five-field expression"),
    ("* * 31 2 mon-xyz", "is not valid"),
])
def test_bad_cron_is_refused_naming_why(cron: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        check_cron(cron)


def test_cron_is_normalised_and_a_seconds_field_accepted() -> None:
    assert check_cron("  0   9 1 * *  ") == "0 9 1 * *"
    assert next_slot("* * * * * */5", "UTC", T0) == T0 + timedelta(seconds=5)


def test_unknown_zone_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown time zone 'Nowhere/City'"):
        check_timezone("Nowhere/City")


def test_slots_are_local_time_across_a_daylight_saving_change() -> None:
    # Paris moves to summer time on 2026-03-29: nine o'clock is 08:00 UTC before, 07:00 after.
    start = datetime(2026, 3, 27, 12, tzinfo=UTC)
    found, following = slots_between("0 9 * * *", "Europe/Paris", start,
                                      start + timedelta(days=3), 10)
    assert [s.hour for s in found] == [8, 7, 7]
    assert following == datetime(2026, 3, 31, 7, tzinfo=UTC)


def test_a_long_outage_yields_only_the_latest_slots_up_to_the_limit() -> None:
    found, following = slots_between("* * * * *", "UTC", T0, T0 + timedelta(days=30), 3)
    end = T0 + timedelta(days=30)
    assert found == [end - timedelta(minutes=2), end - timedelta(minutes=1), end]
    assert following == end + timedelta(minutes=1)
    none, nxt = slots_between("0 0 1 * *", "UTC", T0, T0 + timedelta(days=2), 5)
    assert none == [] and nxt == datetime(2026, 2, 1, tzinfo=UTC)
