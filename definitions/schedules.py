"""Schedules as data: a cron expression in a time zone, and the slots it fires at (pure).

Cron is standard five-field (``minute hour day-of-month month day-of-week``, parsed by
``croniter``); a sixth field, seconds, is accepted too (``* * * * * */5``: every five seconds)
for schedules whose slots are seconds apart.  Slot times are computed in the schedule's time
zone (so ``0 9 * * *`` is nine o'clock local time, across daylight-saving changes) and kept
in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from definitions.errors import InvalidArgumentError

__all__ = ["MAX_CATCHUP", "OVERLAP_POLICIES", "Overlap", "check_cron", "check_timezone",
           "next_slot", "slots_between"]

Overlap = Literal["skip", "allow", "buffer_one"]
OVERLAP_POLICIES: tuple[str, ...] = ("skip", "allow", "buffer_one")
#: With ``catchup``, at most this many missed slots fire on return (the latest ones).
MAX_CATCHUP = 100


def check_timezone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name or len(name) > 100:
        raise InvalidArgumentError("timezone must be an IANA time zone name, e.g. "
                                   "'Europe/Paris' or 'UTC'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgumentError(f"unknown time zone {name[:100]!r}; use an IANA name such "
                                   f"as 'UTC' or 'America/New_York'") from None


def check_cron(expression: str) -> str:
    """The expression, whitespace normalised; ``InvalidArgumentError`` naming what is wrong."""
    if not isinstance(expression, str) or not expression.strip() or len(expression) > 200:
        raise InvalidArgumentError("cron must be a five-field expression such as '0 9 1 * *'")
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise InvalidArgumentError(
            f"cron {expression[:200]!r} has {len(fields)} fields: give five (minute hour "
            f"day-of-month month day-of-week), or six with seconds last")
    normal = " ".join(fields)
    try:
        croniter(normal, datetime(2026, 1, 1, tzinfo=UTC)).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError, ValueError, KeyError) as exc:
        raise InvalidArgumentError(f"cron {normal!r} is not valid: {exc}") from None
    return normal


def slots_between(cron: str, zone: str, after: datetime, until: datetime,
                  limit: int) -> tuple[list[datetime], datetime]:
    """The latest ``limit`` slots in ``(after, until]``, oldest first, and the first slot
    after ``until`` (all UTC).  Walks back from ``until``: a long outage costs ``limit``
    steps, not one per missed slot."""
    tz = ZoneInfo(zone)
    back = croniter(cron, (until + timedelta(microseconds=1)).astimezone(tz))
    found: list[datetime] = []
    while len(found) < limit:
        slot = back.get_prev(datetime).astimezone(UTC)
        if slot <= after:
            break
        found.append(slot)
    following = croniter(cron, until.astimezone(tz)).get_next(datetime).astimezone(UTC)
    return found[::-1], following


def next_slot(cron: str, zone: str, after: datetime) -> datetime:
    """The first slot strictly after ``after`` (UTC)."""
    return croniter(cron, after.astimezone(ZoneInfo(zone))).get_next(datetime).astimezone(UTC)
