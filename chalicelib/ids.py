"""ULID task ids: sortable by creation time, so an index range key of ids
lists newest first and a time window maps to an id range."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

#: A ULID holds its time as 48 bits of milliseconds since the Unix epoch.
MAX_MS = 2**48 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(ms: int | None = None) -> str:
    stamp = int(time.time() * 1000) if ms is None else ms
    return _encode(stamp, 10) + _encode(int.from_bytes(os.urandom(10), "big"), 16)


def ms_at(dt: datetime) -> int:
    """Milliseconds since the epoch (floored), clamped to what a ULID can hold.

    Integer arithmetic, not ``dt.timestamp()``: the float rounds far-future
    instants up to the next millisecond. The clamp matters because ``_encode``
    of a negative count wraps round to a huge id: unclamped, 1960 sorted after
    every real id. A naive ``dt`` is taken as UTC, as ``clock.parse_iso`` does.
    """
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return min(max((dt - _EPOCH) // _ONE_MS, 0), MAX_MS)


def lowest_id_at(dt: datetime) -> str:
    """The smallest id that a task created at ``dt`` (ms precision) can have."""
    return _encode(ms_at(dt), 10) + "0" * 16


def highest_id_at(dt: datetime) -> str:
    return _encode(ms_at(dt), 10) + "Z" * 16


@dataclass(frozen=True)
class IdWindow:
    """The id range of a ``created_after``/``created_before`` window, both
    ends inclusive; None leaves that end open.

    Listings query this range and cursors are bound to it: DynamoDB refuses
    a start key outside the query's key condition.
    """

    low: str | None = None
    high: str | None = None

    @classmethod
    def between(cls, after: datetime | None, before: datetime | None) -> IdWindow:
        return cls(lowest_id_at(after) if after is not None else None,
                   highest_id_at(before) if before is not None else None)

    def contains(self, task_id: str) -> bool:
        return (self.low is None or self.low <= task_id) and \
            (self.high is None or task_id <= self.high)


def is_valid(value: str) -> bool:
    return len(value) == 26 and all(c in _ALPHABET for c in value)
