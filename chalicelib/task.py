"""The task and its lifecycle, as plain Python (no AWS here).

The repository enforces these transitions with conditional writes; this
module is the single place that says which ones exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from chalicelib.clock import iso


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELING = "canceling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"  # derived: a succeeded task whose file has expired


#: Stored transitions (``expired`` is derived on read, never stored).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELED}),
    Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELING}),
    Status.CANCELING: frozenset({Status.CANCELED, Status.FAILED}),
    Status.FAILED: frozenset({Status.QUEUED}),
    Status.CANCELED: frozenset({Status.QUEUED}),
    Status.SUCCEEDED: frozenset(),
}

ACTIVE = frozenset({Status.QUEUED, Status.RUNNING, Status.CANCELING})
TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})
#: Tasks that may be deleted: anything that is not being built right now.
DELETABLE = frozenset({Status.QUEUED, Status.SUCCEEDED, Status.FAILED, Status.CANCELED})


def can_transition(src: Status, dst: Status) -> bool:
    return dst in TRANSITIONS.get(src, frozenset())


def sources_of(dst: Status) -> frozenset[Status]:
    """Every stored status from which ``dst`` may be reached."""
    return frozenset(src for src, targets in TRANSITIONS.items() if dst in targets)


@dataclass(frozen=True)
class TaskError:
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Task:
    id: str
    owner: str
    owner_name: str
    tenant: str
    task_name: str
    file_name: str
    kind: str
    format: str
    params: dict[str, Any]
    status: Status
    created_at: datetime
    attempts: int = 1
    progress: dict[str, Any] = field(default_factory=dict)
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    content_type: str | None = None
    object_key: str | None = None
    error: TaskError | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    idempotency_key: str | None = None

    def effective_status(self, now: datetime) -> Status:
        if self.status is Status.SUCCEEDED and self.expires_at and self.expires_at <= now:
            return Status.EXPIRED
        return self.status

    def with_status(self, status: Status, **changes: Any) -> Task:
        return replace(self, status=status, **changes)

    def to_resource(
        self, now: datetime, url: str | None = None, url_expires_at: datetime | None = None
    ) -> dict[str, Any]:
        """The contract's task resource; the URL only while the file is there."""
        status = self.effective_status(now)
        downloadable = status is Status.SUCCEEDED
        return {
            "id": self.id,
            "task_name": self.task_name,
            "file_name": self.file_name,
            "kind": self.kind,
            "format": self.format,
            "params": self.params,
            "status": status.value,
            "progress": self.progress,
            "size": self.size,
            "md5": self.md5,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "url": url if downloadable else None,
            "url_expires_at": iso(url_expires_at) if downloadable and url else None,
            "error": self.error.to_dict() if self.error else None,
            "owner": self.owner,
            "owner_name": self.owner_name,
            "tenant": self.tenant,
            "attempts": self.attempts,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "expires_at": iso(self.expires_at),
        }
