"""Opaque listing cursors, bound to the index partition they page through.

A cursor made for one principal's listing is refused for another's, so it
cannot be used to step into a partition the caller may not read.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from chalicelib.errors import ValidationError
from chalicelib.ids import is_valid


def _invalid() -> ValidationError:
    return ValidationError("The cursor is not valid for this listing; start again without it.",
                           code="invalid_cursor")


def encode(index: str, partition: str, key: dict[str, Any]) -> str:
    payload = {"v": 1, "i": index, "p": partition, "k": key}
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode(cursor: str, index: str, partition: str, hash_name: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _invalid() from None
    if not isinstance(payload, dict) or payload.get("v") != 1:
        raise _invalid()
    if payload.get("i") != index or payload.get("p") != partition:
        raise _invalid()
    key = payload.get("k")
    if not isinstance(key, dict) or set(key) != {"id", hash_name}:
        raise _invalid()
    for value in key.values():
        if not isinstance(value, dict) or set(value) != {"S"} or not isinstance(value["S"], str):
            raise _invalid()
    if key[hash_name]["S"] != partition or not is_valid(key["id"]["S"]):
        raise _invalid()
    return key
