"""Opaque listing cursors, bound to the listing they page through.

A cursor names the index partition and the id window (``created_after`` /
``created_before``) it was made for. One made for another principal's
listing is refused, so it cannot step into a partition the caller may not
read; one replayed with another window is refused too, because DynamoDB
rejects a start key outside the query's key condition (a 500, not the
client's fault, were it sent). Only the last id is kept: the partition half
of DynamoDB's key is the partition itself, so the cursor stays short.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from chalicelib.errors import ValidationError
from chalicelib.ids import IdWindow, is_valid

#: Bumped whenever the payload changes; older cursors are simply invalid.
VERSION = 2


def invalid() -> ValidationError:
    return ValidationError("The cursor is not valid for this listing; start again without it.",
                           code="invalid_cursor", details=[{
                               "field": "cursor",
                               "issue": "is not valid for this listing; start again without it"}])


def encode(index: str, partition: str, window: IdWindow, key: dict[str, Any]) -> str:
    """``key`` is the LastEvaluatedKey of a query on ``index``: the id plus the partition."""
    payload = {"v": VERSION, "i": index, "p": partition, "w": [window.low, window.high],
               "id": key["id"]["S"]}
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _payload(cursor: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: a forged cursor of deeply nested JSON arrays
        raise invalid() from None


def decode(cursor: str, index: str, partition: str, hash_name: str,
           window: IdWindow) -> dict[str, Any]:
    """The ExclusiveStartKey for this listing, or ``400 invalid_cursor``."""
    payload = _payload(cursor)
    if not isinstance(payload, dict) or payload.get("v") != VERSION:
        raise invalid()
    if payload.get("i") != index or payload.get("p") != partition:
        raise invalid()
    if payload.get("w") != [window.low, window.high]:
        raise invalid()
    last_id = payload.get("id")
    if not isinstance(last_id, str) or not is_valid(last_id) or not window.contains(last_id):
        raise invalid()
    return {"id": {"S": last_id}, hash_name: {"S": partition}}
