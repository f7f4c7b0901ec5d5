"""Events as rows of ``workflow_events`` and back (see :mod:`events.models`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple, get_args

from pydantic import BaseModel, TypeAdapter

from definitions import BrokenChainError
from events.models import Event

__all__ = ["EventRow", "checked_events", "event_from_row", "event_to_row"]

_ENVELOPE = frozenset({"execution_id", "seq", "at", "stage_id", "type"})
#: Fields of the metadata that are datetimes (JSON carries them as ISO strings).
_TIME_FIELDS = ("retry_at", "until", "wake_at", "scheduled_for")
_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
#: Every event class of the union, by its type (a new class is in it by being in the union).
_BY_TYPE: dict[str, type[BaseModel]] = {
    cls.model_fields["type"].default: cls for cls in get_args(get_args(Event)[0])
}
_FIELDS: dict[str, frozenset[str]] = {
    name: frozenset(cls.model_fields) for name, cls in _BY_TYPE.items()
}


class EventRow(NamedTuple):
    """An event as stored: what projections read (no model validation on the hot path)."""

    execution_id: str
    seq: int
    type: str
    stage_id: str | None
    data: dict[str, Any]
    at: datetime


def event_to_row(event: Event) -> EventRow:
    """``(execution_id, seq, event_type, stage_id, metadata, created_at)`` for the store."""
    metadata = event.model_dump(mode="json", exclude=set(_ENVELOPE))
    return EventRow(event.execution_id, event.seq, event.type, event.stage_id, metadata, event.at)


def event_from_row(
    execution_id: str,
    seq: int,
    event_type: str,
    stage_id: str | None,
    metadata: dict[str, Any],
    created_at: datetime,
    *,
    trusted: bool = False,
) -> Event:
    """An event model from a stored row; ``trusted`` skips validation (rows of our own store)."""
    data = dict(metadata)
    data.update(
        execution_id=execution_id, seq=seq, type=event_type, stage_id=stage_id, at=created_at
    )
    model = _BY_TYPE.get(event_type)
    if model is None:
        return _ADAPTER.validate_python(data)  # raises, naming the unknown type
    if trusted:
        # Rows this store wrote were validated on the way in: rebuild them without checking
        # again (the fields JSON cannot carry as themselves are the times).
        for name in _TIME_FIELDS:
            value = data.get(name)
            if isinstance(value, str):
                data[name] = datetime.fromisoformat(value)
        if data.keys() >= _FIELDS[event_type]:
            # Every field is there (model_dump wrote defaults too): set them directly, which is
            # ten times cheaper than model_construct on a replay of thousands of events.
            event = model.__new__(model)
            object.__setattr__(event, "__dict__", data)
            object.__setattr__(event, "__pydantic_fields_set__", set(data))
            object.__setattr__(event, "__pydantic_extra__", None)
            object.__setattr__(event, "__pydantic_private__", None)
            return event  # type: ignore[return-value]
        return model.model_construct(**data)  # type: ignore[return-value]
    return model.model_validate(data)  # type: ignore[return-value]


def checked_events(execution_id: str, rows: Iterable[Any], *,
                   check_chain: bool = True) -> list[Event]:
    """The events of rows read with ``events.store_sql.CHECKED`` (``seq, event_type,
    stage_id, metadata, created_at, intact``); a link that does not hold raises
    :class:`BrokenChainError` naming the first (unless ``check_chain`` is false)."""
    rows = list(rows)
    if check_chain:
        broken = next((r for r in rows if not r["intact"]), None)
        if broken is not None:
            raise BrokenChainError(execution_id, broken["seq"])
    return [event_from_row(execution_id, r["seq"], r["event_type"], r["stage_id"],
                           r["metadata"] or {}, r["created_at"], trusted=True) for r in rows]
