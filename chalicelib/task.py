"""The task and its lifecycle, as plain Python (no AWS here).

``MACHINE`` is the single truth about how a task's status may change: a list
of named transitions, each with the statuses it may start from, the one it
ends in and the guard its conditional write carries. The repository turns a
transition into its DynamoDB condition and writes; ``TRANSITIONS`` (the
status graph the contract documents) and the quota effect of every move are
derived from it, so the code and the table cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from chalicelib.clock import iso
from chalicelib.segments import AUTO, PARTS, SINGLE, Segment
from chalicelib.segments import progress as segment_progress


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELING = "canceling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"  # derived: a succeeded task whose file has expired


ACTIVE = frozenset({Status.QUEUED, Status.RUNNING, Status.CANCELING})
TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})
#: Statuses in which a build holds the task's lease and beats.
BUILDING = frozenset({Status.RUNNING, Status.CANCELING})
#: Tasks that may be deleted: anything that is not being built right now.
DELETABLE = frozenset({Status.QUEUED, Status.SUCCEEDED, Status.FAILED, Status.CANCELED})
ZERO_PROGRESS: dict[str, Any] = {"rows": 0, "bytes": 0}


class Guard(StrEnum):
    """What a transition's conditional write checks besides the source status."""

    #: the status alone
    STATUS = "status"
    #: and that the writer holds the current lease (the fencing token of a build)
    LEASE = "lease"
    #: and that the build's heartbeat is older than the staleness cutoff (its worker died)
    STALE = "stale"


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[Status]
    target: Status
    guard: Guard = Guard.STATUS

    def __post_init__(self) -> None:
        sides = {s in ACTIVE for s in self.sources}
        if len(sides) != 1:
            raise ValueError(f"{self.name}: sources must all be active or all be inactive")

    @property
    def quota(self) -> int:
        """+1 when the move takes an active-task slot, -1 when it gives one back."""
        was_active = next(iter(self.sources)) in ACTIVE
        is_active = self.target in ACTIVE
        return int(is_active) - int(was_active)

    def admits(self, stored: Task, snapshot: Task, now: datetime, life: Lifetimes) -> bool:
        """Whether the move may be made on ``stored`` by a writer who read ``snapshot``.

        The meaning of the source statuses and the guard, in one place: the
        in-memory repository evaluates it as is, and the DynamoDB repository
        writes the same thing as its condition expression (the repository
        contract tests hold both to it).
        """
        if stored.status not in self.sources:
            return False
        if self.guard is Guard.LEASE:
            return stored.lease == snapshot.lease
        if self.guard is Guard.STALE:
            return stored.is_stale(now, life.stale_after)
        return True


def _t(name: str, sources: set[Status], target: Status, guard: Guard = Guard.STATUS) -> Transition:
    return Transition(name, frozenset(sources), target, guard)


S = Status
#: A worker takes a queued task; the condition names the lease it read, so two claims cannot both win.
CLAIM = _t("claim", {S.QUEUED}, S.RUNNING, Guard.LEASE)
#: The owner asks a running build to stop; the build acknowledges at its next heartbeat.
REQUEST_CANCEL = _t("request_cancel", {S.RUNNING}, S.CANCELING)
CANCEL_QUEUED = _t("cancel_queued", {S.QUEUED}, S.CANCELED)
SUCCEED = _t("succeed", {S.RUNNING}, S.SUCCEEDED, Guard.LEASE)
FAIL = _t("fail", {S.RUNNING, S.CANCELING}, S.FAILED, Guard.LEASE)
ACKNOWLEDGE_CANCEL = _t("acknowledge_cancel", {S.CANCELING}, S.CANCELED, Guard.LEASE)
#: A queued task that never started: its message could not be sent, or it waited too long.
FAIL_QUEUED = _t("fail_queued", {S.QUEUED}, S.FAILED)
#: The sweeper puts a task whose build died back in the queue.
REQUEUE = _t("requeue", {S.RUNNING}, S.QUEUED, Guard.STALE)
#: A cancel whose build is dead already: nobody is left to acknowledge it.
ABANDON = _t("abandon", {S.RUNNING, S.CANCELING}, S.CANCELED, Guard.STALE)
#: The sweeper gives up on a task whose builds keep dying.
LOSE = _t("lose", {S.RUNNING}, S.FAILED, Guard.STALE)
RETRY = _t("retry", {S.FAILED, S.CANCELED}, S.QUEUED)
#: A segmented build's last segment leaves the finalizing to a fresh invocation (a whole time budget).
HAND_OFF = _t("hand_off", {S.RUNNING}, S.QUEUED, Guard.LEASE)

MACHINE: tuple[Transition, ...] = (
    CLAIM, REQUEST_CANCEL, CANCEL_QUEUED, SUCCEED, FAIL, ACKNOWLEDGE_CANCEL, FAIL_QUEUED,
    REQUEUE, ABANDON, LOSE, RETRY, HAND_OFF,
)
del S

#: The status graph (``expired`` is derived on read, never stored), derived from the machine.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    src: frozenset(t.target for t in MACHINE if src in t.sources)
    for src in Status if src is not Status.EXPIRED
}


def can_transition(src: Status, dst: Status) -> bool:
    return dst in TRANSITIONS.get(src, frozenset())


def sources_of(dst: Status) -> frozenset[Status]:
    """Every stored status from which ``dst`` may be reached."""
    return frozenset(src for src, targets in TRANSITIONS.items() if dst in targets)


@dataclass(frozen=True)
class Lifetimes:
    """How long things last; the deployment's settings give the values."""

    file_ttl: timedelta = timedelta(days=7)
    record_retention: timedelta = timedelta(days=30)
    #: a build whose heartbeat is older than this is dead
    stale_after: timedelta = timedelta(seconds=300)
    #: a queued task not claimed after this long gets its build message again
    resend_after: timedelta = timedelta(seconds=300)
    #: a finished task whose event is not out after this long gets it from the sweeper
    event_grace: timedelta = timedelta(seconds=120)


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
    #: what the owner should know about a file that was built: ``[{"code", "field", "message"}]``
    warnings: list[dict[str, str]] = field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    idempotency_key: str | None = None
    #: the fencing token: bumped by every claim, named by every write of that build
    lease: int = 0
    #: claims since the task was last queued by its owner (bounds rebuilds of a dying build)
    claims: int = 0
    heartbeat_at: datetime | None = None
    queued_at: datetime | None = None
    #: when the sweeper should look at the task (None: nothing left to watch)
    due_at: datetime | None = None
    #: where "your export is ready" mail goes (the owner's verified address); None: no mail
    notify_email: str | None = None
    #: segments asked for at create: a number, or "auto" (``chalicelib.segments``)
    parallelism: int | str = AUTO
    #: "single" (one object) or "parts" (one file per segment and a manifest)
    output: str = SINGLE
    #: the plan of a segmented build (empty: one worker builds the whole file)
    segments: tuple[Segment, ...] = ()
    #: the lease of the build that made the plan: every segment write names it
    plan_lease: int = 0
    #: segments succeeded under the plan; the write that makes it ``len(segments)`` finalizes
    segments_done: int = 0
    #: what the segments share (e.g. the columns), decided once by the plan
    plan_shared: dict[str, Any] = field(default_factory=dict)
    #: rows the plan expects, when known (for ``percent``)
    plan_rows: int | None = None
    #: a single file's one multipart upload, which its segments write into: ``{"id", "key"}``
    plan_upload: dict[str, str] | None = None
    #: a parts task's files: ``[{"name", "key", "size", "rows", "md5", "sha256"}]``
    files: list[dict[str, Any]] = field(default_factory=list)
    #: a parts task's manifest: ``{"name", "key", "size", "md5", "sha256"}``
    manifest: dict[str, Any] | None = None
    #: a single file built in segments: its byte ranges in order, ``[{"segment", "start", "size",
    #: "rows", "md5", "sha256"}]`` (its whole-file md5 and sha256 cannot be had without a pass)
    ranges: list[dict[str, Any]] = field(default_factory=list)

    @property
    def segmented(self) -> bool:
        """Whether a plan of segments builds this task (rather than one worker)."""
        return bool(self.segments)

    @property
    def is_parts(self) -> bool:
        return self.output == PARTS

    def effective_status(self, now: datetime) -> Status:
        if self.status is Status.SUCCEEDED and self.expires_at and self.expires_at <= now:
            return Status.EXPIRED
        return self.status

    def with_status(self, status: Status, **changes: Any) -> Task:
        return replace(self, status=status, **changes)

    def is_stale(self, now: datetime, stale_after: timedelta) -> bool:
        """Whether the build holding this task has stopped beating."""
        return self.status in BUILDING and (
            self.heartbeat_at is None or self.heartbeat_at < now - stale_after)

    def current_progress(self) -> dict[str, Any]:
        """Stored progress; of segments not all stored yet, theirs added up."""
        if self.segmented and self.status is not Status.SUCCEEDED:
            return segment_progress(self.segments, self.plan_rows, final=False)
        return self.progress

    def to_resource(
        self, now: datetime, url: str | None = None, url_expires_at: datetime | None = None,
        urls: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The contract's task resource; URLs only while the files are there.

        ``urls`` are a parts task's presigned URLs by object key.
        """
        status = self.effective_status(now)
        downloadable = status is Status.SUCCEEDED
        urls = urls if downloadable and urls else {}
        files = manifest = None
        if self.files:
            files = [{"name": f["name"], "size": f["size"], "rows": f["rows"], "md5": f["md5"],
                      "sha256": f["sha256"], "url": urls.get(f["key"])} for f in self.files]
        if self.manifest:
            manifest = {k: self.manifest[k] for k in ("name", "size", "md5", "sha256")}
            manifest["url"] = urls.get(self.manifest["key"])
        return {
            "id": self.id,
            "task_name": self.task_name,
            "file_name": self.file_name,
            "kind": self.kind,
            "format": self.format,
            "params": self.params,
            "status": status.value,
            "progress": self.current_progress(),
            "size": self.size,
            "md5": self.md5,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "url": url if downloadable else None,
            "url_expires_at": iso(url_expires_at) if downloadable and (url or urls) else None,
            "parallelism": self.parallelism,
            "output": self.output,
            "files": files,
            "manifest": manifest,
            "ranges": [dict(r) for r in self.ranges] if self.ranges else None,
            "error": self.error.to_dict() if self.error else None,
            "warnings": list(self.warnings),
            "notify": {"email": self.notify_email is not None},
            "owner": self.owner,
            "owner_name": self.owner_name,
            "tenant": self.tenant,
            "attempts": self.attempts,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "expires_at": iso(self.expires_at),
        }


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks of a listing's partition it keeps: all the criteria given (and-ed).

    A plain value rather than a query expression, so that any repository can
    answer it: the in-memory one calls ``matches``, the DynamoDB one writes
    the same criteria as a filter expression (the repository contract tests
    hold both to ``matches``).
    """

    #: the instant at which a succeeded task's file is judged expired
    at: datetime
    #: effective statuses (``expired`` included); empty keeps every status
    statuses: frozenset[Status] = frozenset()
    kind: str | None = None
    #: case-insensitive substrings of the names
    task_name: str | None = None
    file_name: str | None = None
    tenant: str | None = None

    @property
    def keeps_all(self) -> bool:
        """No criterion at all: the repository need not filter."""
        return not (self.statuses or self.kind or self.task_name or self.file_name or self.tenant)

    def matches(self, task: Task) -> bool:
        if self.statuses and task.effective_status(self.at) not in self.statuses:
            return False
        if self.kind and task.kind != self.kind:
            return False
        if self.task_name and self.task_name.casefold() not in task.task_name.casefold():
            return False
        if self.file_name and self.file_name.casefold() not in task.file_name.casefold():
            return False
        return not self.tenant or task.tenant == self.tenant


#: Fields a transition's effects may set (None removes the attribute).
EFFECT_FIELDS = frozenset({
    "lease", "claims", "attempts", "progress", "started_at", "finished_at", "expires_at",
    "heartbeat_at", "queued_at", "due_at", "ttl", "error", "size", "md5", "sha256",
    "content_type", "object_key", "warnings", "files", "manifest", "ranges",
})
#: What a build or an earlier attempt left on the task, cleared when it is queued again.
_RESULT_FIELDS = ("error", "started_at", "finished_at", "expires_at", "size", "md5", "sha256",
                  "content_type", "object_key", "ttl", "heartbeat_at", "warnings", "files", "manifest",
                  "ranges")


def due_after(status: Status, now: datetime, life: Lifetimes) -> datetime:
    """When the sweeper should next look at a task that just entered ``status``."""
    if status is Status.QUEUED:
        return now + life.resend_after
    if status in BUILDING:
        return now + life.stale_after
    return now + life.event_grace  # its terminal event is still to go out


def effects(t: Transition, task: Task, now: datetime, life: Lifetimes) -> dict[str, Any]:
    """Every field a transition writes besides the status, derived from the lifecycle.

    Terminal states always get ``finished_at``, their TTL and a pending event
    (``due_at``), whichever path got them there.
    """
    out: dict[str, Any] = {"due_at": due_after(t.target, now, life)}
    if t is CLAIM:  # a build handed over keeps the start of the work it goes on with
        out.update(lease=task.lease + 1, claims=task.claims + 1, started_at=task.started_at or now,
                   heartbeat_at=now, progress=dict(ZERO_PROGRESS))
    if t.target is Status.QUEUED:
        out.update(dict.fromkeys(_RESULT_FIELDS), queued_at=now, progress=dict(ZERO_PROGRESS))
    if t is HAND_OFF:  # the claim that takes the finalizing over is no death of a build
        out.pop("started_at")
        out.update(claims=max(0, task.claims - 1))
    if t is RETRY:
        out.update(attempts=task.attempts + 1, claims=0)
    if t.target in TERMINAL:
        out.update(finished_at=now, ttl=now + life.record_retention)
    if t.target is Status.SUCCEEDED:
        out.update(expires_at=now + life.file_ttl, ttl=now + life.file_ttl + life.record_retention)
    return out
