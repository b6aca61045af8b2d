"""Queue message parsing, as plain Python: what the worker is asked to do.

A body that cannot be understood raises InvalidMessage with the reason; the
worker moves it aside instead of retrying it forever.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import ValidationError
from chalicelib.principal import DEFAULT_TENANT
from chalicelib.validation import CreateRequest, parse_create

BUILD = "download.build"
REQUEST = "download.request"
SEGMENT = "download.segment"
_MAX_FIELD = 256


class InvalidMessage(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class BuildMessage:
    task_id: str


@dataclass(frozen=True)
class SegmentMessage:
    """One segment of a planned task, under the lease of the build that planned it."""

    task_id: str
    lease: int
    segment: int


@dataclass(frozen=True)
class RequestMessage:
    request: CreateRequest
    owner: str
    owner_name: str
    tenant: str
    idempotency_key: str | None
    body: dict[str, Any]


def _short_str(value: Any, name: str, required: bool) -> str | None:
    if value is None:
        if required:
            raise InvalidMessage(f"request.{name} is required")
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_FIELD:
        raise InvalidMessage(f"request.{name} must be a string of 1-{_MAX_FIELD} characters")
    return value


def _parse_request(req: Any) -> RequestMessage:
    if not isinstance(req, dict):
        raise InvalidMessage("request must be an object")
    body = {k: req[k] for k in ("task_name", "kind", "format", "file_name", "params", "parallelism",
                                "output") if k in req}
    try:
        create = parse_create(body)
    except ValidationError as exc:
        raise InvalidMessage(exc.message) from None  # it says every problem in sentences
    owner = _short_str(req.get("owner"), "owner", True)
    assert owner is not None
    return RequestMessage(
        request=create,
        owner=owner,
        owner_name=_short_str(req.get("owner_name"), "owner_name", False) or owner,
        tenant=_short_str(req.get("tenant"), "tenant", False) or DEFAULT_TENANT,
        idempotency_key=_short_str(req.get("idempotency_key"), "idempotency_key", False),
        body=body,
    )


def _task_id(data: dict[str, Any]) -> str:
    task_id = data.get("task_id")
    if not isinstance(task_id, str) or not task_id or len(task_id) > 64:
        raise InvalidMessage("task_id must be a non-empty string")
    return task_id


def _positive(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidMessage(f"{name} must be a positive integer")
    return value


def parse(body: str) -> BuildMessage | SegmentMessage | RequestMessage:
    try:
        data = json.loads(body)
    except (ValueError, TypeError) as exc:
        raise InvalidMessage(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidMessage("body is not a JSON object")
    if "detail-type" in data and "detail" in data:  # EventBridge envelope
        detail = data["detail"]
        if isinstance(detail, dict) and detail.get("type") == REQUEST:
            data = detail
        else:
            return _parse_request(detail)
    kind = data.get("type")
    if data.get("version", 1) != 1:
        raise InvalidMessage(f"unsupported version {data.get('version')!r}")
    if kind == BUILD:
        return BuildMessage(_task_id(data))
    if kind == SEGMENT:
        return SegmentMessage(_task_id(data), _positive(data, "lease"), _positive(data, "segment"))
    if kind == REQUEST:
        return _parse_request(data.get("request"))
    raise InvalidMessage(f"unknown message type {kind!r}")
