"""ULID task ids: sortable by creation time, so an index range key of ids
lists newest first and a time window maps to an id range."""

from __future__ import annotations

import os
import time
from datetime import datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(ms: int | None = None) -> str:
    stamp = int(time.time() * 1000) if ms is None else ms
    return _encode(stamp, 10) + _encode(int.from_bytes(os.urandom(10), "big"), 16)


def lowest_id_at(dt: datetime) -> str:
    """The smallest id that a task created at ``dt`` (ms precision) can have."""
    return _encode(int(dt.timestamp() * 1000), 10) + "0" * 16


def highest_id_at(dt: datetime) -> str:
    return _encode(int(dt.timestamp() * 1000), 10) + "Z" * 16


def is_valid(value: str) -> bool:
    return len(value) == 26 and all(c in _ALPHABET for c in value)
