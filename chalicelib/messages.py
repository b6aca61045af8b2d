"""Queue message parsing, as plain Python: what the worker is asked to do.

A body that cannot be understood raises InvalidMessage with the reason; the
worker moves it aside instead of retrying it forever.

A ``download.request`` comes from outside the stack: every value of it that
names who the task is for (``owner``, ``tenant``) or that becomes part of a key
is held to the rule the API holds a token to (``chalicelib.principal``), and
its declared ``groups`` are what the access policy is asked about (the worker
asks it). See docs/queue-messages.md, "Trust".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import ValidationError
from chalicelib.principal import DEFAULT_TENANT, owner_problem, tenant_problem
from chalicelib.validation import CreateRequest, parse_create, validate_idempotency_key

BUILD = "download.build"
REQUEST = "download.request"
SEGMENT = "download.segment"
_MAX_FIELD = 256
#: the most groups a request may declare, and a group name's longest (Cognito's limit)
MAX_GROUPS, _MAX_GROUP = 20, 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: The only EventBridge ``detail-type`` read from the queue: any other event that a
#: rule routes here is no request, whatever its ``detail`` holds.
REQUEST_DETAIL_TYPE = REQUEST


class InvalidMessage(Exception):
    """A message the worker will not act on; ``reason`` and ``code`` go with it to the dead-letter queue."""

    def __init__(self, reason: str, code: str = "invalid_message") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


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
    #: the groups the sender declares for the owner: the access policy decides with them
    groups: frozenset[str] = frozenset()


def _short_str(value: Any, name: str, required: bool) -> str | None:
    if value is None:
        if required:
            raise InvalidMessage(f"request.{name} is required")
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_FIELD:
        raise InvalidMessage(f"request.{name} must be a string of 1-{_MAX_FIELD} characters")
    return value


def _checked(value: Any, name: str, problem: Callable[[object], str | None]) -> str:
    why = problem(value)
    if why:
        raise InvalidMessage(f"request.{name} {why}")
    return str(value)


def _groups(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or len(value) > MAX_GROUPS or not all(
            isinstance(g, str) and 0 < len(g) <= _MAX_GROUP and not _CONTROL.search(g) for g in value):
        raise InvalidMessage(f"request.groups must be a list of at most {MAX_GROUPS} group names "
                             f"(1-{_MAX_GROUP} printable characters each)")
    return frozenset(value)


def _idempotency_key(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidMessage("request.idempotency_key must be a string")
    try:
        return validate_idempotency_key(value)
    except ValidationError as exc:  # the header's rule, said of this field
        raise InvalidMessage(exc.message.replace("Idempotency-Key", "request.idempotency_key")) from None


def _parse_request(req: Any) -> RequestMessage:
    if not isinstance(req, dict):
        raise InvalidMessage("request must be an object")
    body = {k: req[k] for k in ("task_name", "kind", "format", "file_name", "params", "parallelism",
                                "output") if k in req}
    try:
        create = parse_create(body)
    except ValidationError as exc:
        raise InvalidMessage(exc.message) from None  # it says every problem in sentences
    if req.get("owner") is None:
        raise InvalidMessage("request.owner is required")
    owner = _checked(req["owner"], "owner", owner_problem)
    tenant = DEFAULT_TENANT if req.get("tenant") is None else _checked(req["tenant"], "tenant",
                                                                        tenant_problem)
    owner_name = _short_str(req.get("owner_name"), "owner_name", False) or owner
    if _CONTROL.search(owner_name):
        raise InvalidMessage("request.owner_name must not hold control characters")
    return RequestMessage(
        request=create,
        owner=owner,
        owner_name=owner_name,
        tenant=tenant,
        idempotency_key=_idempotency_key(req.get("idempotency_key")),
        body=body,
        groups=_groups(req.get("groups")),
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
        if data["detail-type"] != REQUEST_DETAIL_TYPE:
            raise InvalidMessage(f"EventBridge detail-type {data['detail-type']!r} is not "
                                 f"{REQUEST_DETAIL_TYPE!r}: no other event is read from the queue")
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
