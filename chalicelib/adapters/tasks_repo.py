"""Task storage in DynamoDB through PynamoDB.

Every status change is one of the named transitions of ``chalicelib.task``;
this module turns it into a conditional write (the source statuses, plus the
lease or the staleness its guard names) and, when the move takes or gives
back an active-task slot, updates the owner's counter in the same
transaction, so the quota holds under any concurrency. Listings are Queries
on indexes keyed by the partition a principal may see and sorted by the
time-ordered id; the sweeper reads a sparse index of the tasks it must watch.
"""

from __future__ import annotations

import operator
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import reduce
from typing import Any, Literal, Protocol

from pynamodb.attributes import (
    JSONAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import (
    DeleteError,
    DoesNotExist,
    PutError,
    QueryError,
    TransactWriteError,
    UpdateError,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib.adapters.aws import region_name
from chalicelib.config import DEFAULT_TABLE
from chalicelib.segments import (
    RESULT_FIELDS,
    SEG_CLAIM,
    SEG_FAIL,
    SEG_RETRY,
    SEG_SUCCEED,
    SEGMENT_FIELDS,
    Plan,
    SegGuard,
    Segment,
    SegMove,
    SegStatus,
    seg_key,
)
from chalicelib.task import (
    ACTIVE,
    BUILDING,
    DELETABLE,
    EFFECT_FIELDS,
    Guard,
    Lifetimes,
    Status,
    Task,
    TaskError,
    TaskFilter,
    Transition,
    due_after,
    effects,
)

ALL_SCOPE = "all"
#: The one partition of the sweeper's index: every task with something left to watch.
SWEEP_PARTITION = "due"
_CONDITION_FAILED = "ConditionalCheckFailedException"
_TX_CONDITION = ("ConditionalCheckFailed", _CONDITION_FAILED)
_TX_CONFLICT = "TransactionConflict"
#: DynamoDB's answer to ``SET m.k`` on an item without the map ``m``
_NO_DOCUMENT_PATH = "document path provided in the update expression is invalid"

#: What a claim of a notification found: ``claimed`` (this caller sends it), ``sent`` (it is out),
#: ``sending`` (another delivery's claim is still fresh: try again later), ``gone`` (no task)
NotificationClaim = Literal["claimed", "sent", "sending", "gone"]
#: Attempts at a transaction that real DynamoDB cancels for a concurrent one.
_TX_TRIES = 4
#: Attempts at taking a building slot while other claims of the tenant write the same item.
_SLOT_TRIES = 8


class _Meta:
    table_name = os.environ.get("TASKS_TABLE", DEFAULT_TABLE)
    region = region_name()


class ByOwner(GlobalSecondaryIndex["TaskModel"]):
    class Meta:
        index_name = "by_owner"
        projection = AllProjection()

    owner = UnicodeAttribute(hash_key=True)
    id = UnicodeAttribute(range_key=True)


class ByTenant(GlobalSecondaryIndex["TaskModel"]):
    class Meta:
        index_name = "by_tenant"
        projection = AllProjection()

    tenant = UnicodeAttribute(hash_key=True)
    id = UnicodeAttribute(range_key=True)


class ByScope(GlobalSecondaryIndex["TaskModel"]):
    class Meta:
        index_name = "by_scope"
        projection = AllProjection()

    scope = UnicodeAttribute(hash_key=True)
    id = UnicodeAttribute(range_key=True)


class ByDue(GlobalSecondaryIndex["TaskModel"]):
    """Sparse: the tasks the sweeper watches (active, or finished with their event pending)."""

    class Meta:
        index_name = "by_due"
        projection = KeysOnlyProjection()

    sweep = UnicodeAttribute(hash_key=True)
    due_at = NumberAttribute(range_key=True)


class TaskModel(Model):
    Meta = _Meta

    id = UnicodeAttribute(hash_key=True)
    owner = UnicodeAttribute()
    owner_name = UnicodeAttribute()
    tenant = UnicodeAttribute()
    scope = UnicodeAttribute(default=ALL_SCOPE)
    task_name = UnicodeAttribute()
    file_name = UnicodeAttribute()
    # lower-case copies: DynamoDB's ``contains`` is case-sensitive
    task_name_lc = UnicodeAttribute(null=True)
    file_name_lc = UnicodeAttribute(null=True)
    kind = UnicodeAttribute()
    format = UnicodeAttribute()
    params = JSONAttribute()
    status = UnicodeAttribute()
    attempts = NumberAttribute(default=1)
    lease = NumberAttribute(default=0)
    claims = NumberAttribute(default=0)
    progress = JSONAttribute(null=True)
    size = NumberAttribute(null=True)
    md5 = UnicodeAttribute(null=True)
    sha256 = UnicodeAttribute(null=True)
    content_type = UnicodeAttribute(null=True)
    object_key = UnicodeAttribute(null=True)
    error = JSONAttribute(null=True)
    warnings = JSONAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    started_at = UTCDateTimeAttribute(null=True)
    finished_at = UTCDateTimeAttribute(null=True)
    expires_at = UTCDateTimeAttribute(null=True)
    heartbeat_at = UTCDateTimeAttribute(null=True)
    queued_at = UTCDateTimeAttribute(null=True)
    sweep = UnicodeAttribute(null=True)
    #: epoch seconds: the sweeper's index sorts on it
    due_at = NumberAttribute(null=True)
    idempotency_key = UnicodeAttribute(null=True)
    notify_email = UnicodeAttribute(null=True)
    #: the notifications sent, ``<attempt>:<status>`` each, so that a repeated event mails no one twice
    notified = UnicodeSetAttribute(null=True)
    #: the notifications being sent: key -> epoch seconds of the claim, a lease that a later
    #: delivery takes over once it is stale (the claimant died before SES answered)
    notifying = MapAttribute(null=True)  # type: ignore[var-annotated]
    #: "auto" or the number of segments asked for
    parallelism = UnicodeAttribute(null=True)
    output = UnicodeAttribute(null=True)
    #: the plan of a segmented build: segment key -> ``Segment.to_item()``, a map so that one
    #: conditional write can check and change one segment with the task's status and lease
    segs = MapAttribute(null=True)  # type: ignore[var-annotated]
    seg_done = NumberAttribute(null=True)
    plan_lease = NumberAttribute(null=True)
    #: ``{"shared": ..., "rows": ...}`` of the plan
    plan = JSONAttribute(null=True)
    files = JSONAttribute(null=True)
    manifest = JSONAttribute(null=True)
    ranges = JSONAttribute(null=True)
    ttl = TTLAttribute(null=True)

    by_owner = ByOwner()
    by_tenant = ByTenant()
    by_scope = ByScope()
    by_due = ByDue()


class IdempotencyModel(Model):
    """``idem#<owner>#<key>`` → the task it created, in the same table.

    It has none of the index attributes, so it never shows up in a listing.
    """

    Meta = _Meta

    id = UnicodeAttribute(hash_key=True)
    task_id = UnicodeAttribute()
    body_hash = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    ttl = TTLAttribute(null=True)


class QuotaModel(Model):
    """``quota#<owner>``: how many of the owner's tasks are active, kept exact by transactions."""

    Meta = _Meta

    id = UnicodeAttribute(hash_key=True)
    active = NumberAttribute(default=0)


class BuildingModel(Model):
    """``building#<tenant>``: the tenant's segment builds holding a slot, each until a deadline.

    A counter kept by claims and releases would leak a slot with every worker
    that dies between them and need a repair that counts running segments (a
    scan of the tenant's tasks). A holder's entry instead says until when it
    may build: the end of its Lambda invocation, which nothing outlives. A dead
    holder's slot frees itself at that deadline (at most the worker's 15
    minutes), and every write is conditional on ``ver``, so the bound is exact
    under any number of concurrent claims.
    """

    Meta = _Meta

    id = UnicodeAttribute(hash_key=True)
    #: holder -> the epoch second its invocation ends by
    slots = MapAttribute(null=True)
    ver = NumberAttribute(default=0)


_MODELS = (TaskModel, IdempotencyModel, QuotaModel, BuildingModel)


def configure(table_name: str, region: str | None = None) -> None:
    """Point the models at a table (tests and the local stack use their own)."""
    for model in _MODELS:
        model.Meta.table_name = table_name
        model.Meta.region = region or region_name()
        model._connection = None
    for index in (ByOwner, ByTenant, ByScope, ByDue):
        index._connection = None  # type: ignore[attr-defined]


def quota_id(owner: str) -> str:
    return "quota#" + owner


def building_id(tenant: str) -> str:
    return "building#" + tenant


def _epoch(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def _parallelism(value: str | None) -> int | str:
    return int(value) if value and value.isdigit() else (value or "auto")


def _segments(raw: Any) -> tuple[Segment, ...]:
    if not raw:
        return ()
    items = raw.as_dict() if isinstance(raw, MapAttribute) else dict(raw)
    return tuple(sorted((Segment.from_item(v) for v in items.values()), key=lambda s: s.number))


def to_task(m: TaskModel) -> Task:
    err = m.error
    plan = m.plan or {}
    return Task(
        id=m.id, owner=m.owner, owner_name=m.owner_name, tenant=m.tenant,
        task_name=m.task_name, file_name=m.file_name, kind=m.kind, format=m.format,
        params=m.params or {}, status=Status(m.status), created_at=m.created_at,
        attempts=int(m.attempts or 1), progress=m.progress or {},
        size=int(m.size) if m.size is not None else None, md5=m.md5, sha256=m.sha256,
        content_type=m.content_type, object_key=m.object_key,
        error=TaskError(err["code"], err["message"]) if err else None,
        warnings=list(m.warnings or []),
        started_at=m.started_at, finished_at=m.finished_at, expires_at=m.expires_at,
        idempotency_key=m.idempotency_key, lease=int(m.lease or 0), claims=int(m.claims or 0),
        heartbeat_at=m.heartbeat_at, queued_at=m.queued_at,
        due_at=datetime.fromtimestamp(m.due_at, UTC) if m.due_at is not None else None,
        notify_email=m.notify_email, parallelism=_parallelism(m.parallelism),
        output=m.output or "single", segments=_segments(m.segs), plan_lease=int(m.plan_lease or 0),
        segments_done=int(m.seg_done or 0), plan_shared=dict(plan.get("shared") or {}),
        plan_rows=plan.get("rows"), plan_upload=plan.get("upload"), files=list(m.files or []),
        manifest=m.manifest, ranges=list(m.ranges or []),
    )


def to_model(t: Task) -> TaskModel:
    return TaskModel(
        t.id, owner=t.owner, owner_name=t.owner_name, tenant=t.tenant, scope=ALL_SCOPE,
        task_name=t.task_name, file_name=t.file_name, task_name_lc=t.task_name.casefold(),
        file_name_lc=t.file_name.casefold(), kind=t.kind, format=t.format, params=t.params,
        status=t.status.value, attempts=t.attempts, lease=t.lease, claims=t.claims,
        progress=t.progress or None, created_at=t.created_at, queued_at=t.queued_at,
        sweep=SWEEP_PARTITION if t.due_at else None, due_at=_epoch(t.due_at),
        idempotency_key=t.idempotency_key, notify_email=t.notify_email,
        parallelism=str(t.parallelism), output=t.output,
    )


def _failed_condition(exc: Exception) -> bool:
    return getattr(exc, "cause_response_code", None) == _CONDITION_FAILED


def _no_map(exc: Exception) -> bool:
    """DynamoDB refused a write into a map the item does not have (``SET m.k`` without ``m``)."""
    return _NO_DOCUMENT_PATH in str(exc)


def _update_if(task_id: str, actions: list[Any], condition: Any) -> TaskModel | None:
    """One conditional UpdateItem; the item as stored afterwards, or None if the condition failed."""
    model = TaskModel(task_id)
    try:
        model.update(actions=actions, condition=condition)
    except UpdateError as exc:
        if _failed_condition(exc):
            return None
        raise
    return model


def _reasons(exc: TransactWriteError) -> list[str | None]:
    return [r.code if r else None for r in (exc.cancellation_reasons or [])]


@dataclass(frozen=True)
class Page:
    tasks: list[Task]
    last_key: dict[str, Any] | None
    scanned: int


@dataclass(frozen=True)
class IdempotencyRecord:
    key_id: str
    body_hash: str
    ttl: timedelta


class QuotaExceeded(Exception):
    """The owner already has as many active tasks as the cap allows."""


class KeyExists(Exception):
    def __init__(self, body_hash: str, task: Task) -> None:
        super().__init__("idempotency key in use")
        self.body_hash = body_hash
        self.task = task


class TaskStore(Protocol):
    """What the services, the worker and the sweeper need of task storage.

    ``TaskRepository`` (DynamoDB) is the one deployed; the tests' in-memory
    repository answers the same calls, and one contract test module runs the
    same cases against both. The docstrings of ``TaskRepository`` say what
    each call promises.
    """

    lifetimes: Lifetimes

    def get(self, task_id: str) -> Task | None: ...

    def active_count(self, owner: str) -> int: ...

    def due(self, now: datetime, limit: int = 500) -> Iterator[str]: ...

    def add(self, task: Task, cap: int, key: IdempotencyRecord | None = None) -> tuple[Task, bool]: ...

    def apply(
        self, t: Transition, task: Task, now: datetime, *, cap: int | None = None, **fields: Any,
    ) -> Task | None: ...

    def heartbeat(self, task: Task, progress: dict[str, Any], now: datetime) -> Status | None: ...

    def postpone(self, task: Task, until: datetime) -> bool: ...

    def event_sent(self, task: Task) -> None: ...

    def rename(self, task_id: str, task_name: str) -> Task | None: ...

    def claim_notification(self, task_id: str, key: str, now: datetime, lease: timedelta
                           ) -> NotificationClaim: ...

    def notification_sent(self, task_id: str, key: str) -> None: ...

    def release_notification(self, task_id: str, key: str, claimed_at: datetime) -> None: ...

    def delete(self, task: Task) -> bool: ...

    def save_plan(self, task: Task, plan: Plan, now: datetime) -> Task | None: ...

    def claim_segment(self, task: Task, number: int, now: datetime) -> Segment | None: ...

    def take_building_slot(self, tenant: str, holder: str, now: datetime, until: datetime, cap: int
                           ) -> bool: ...

    def release_building_slot(self, tenant: str, holder: str) -> None: ...

    def beat_segment(self, task: Task, seg: Segment, rows: int, size: int, now: datetime
                     ) -> Status | None: ...

    def finish_segment(self, task: Task, seg: Segment, now: datetime, **result: Any) -> Task | None: ...

    def fail_segment(self, task: Task, seg: Segment, error: TaskError, retry: bool, now: datetime
                     ) -> Task | None: ...

    def query(
        self, index: str, partition: str, *, id_low: str | None, id_high: str | None,
        filter_condition: TaskFilter | None, limit: int, start_key: dict[str, Any] | None,
        max_scanned: int,
    ) -> Page: ...


def _actions(changes: dict[str, Any]) -> list[Any]:
    """Update actions for ``changes`` (None removes), keeping the sweeper's key pair consistent."""
    actions = []
    for name, value in changes.items():
        if name == "due_at":
            actions.append(TaskModel.sweep.remove() if value is None
                           else TaskModel.sweep.set(SWEEP_PARTITION))
            value = _epoch(value)
        elif name == "error" and isinstance(value, TaskError):
            value = value.to_dict()
        elif name == "status":
            value = Status(value).value
        attr = getattr(TaskModel, name)
        actions.append(attr.remove() if value is None else attr.set(value))
    return actions


class TaskRepository:
    def __init__(self, lifetimes: Lifetimes | None = None) -> None:
        self.lifetimes = lifetimes or Lifetimes()

    # -- reading -------------------------------------------------------------
    def get(self, task_id: str) -> Task | None:
        try:
            return to_task(TaskModel.get(task_id, consistent_read=True))
        except DoesNotExist:
            return None

    def active_count(self, owner: str) -> int:
        try:
            return int(QuotaModel.get(quota_id(owner), consistent_read=True).active or 0)
        except DoesNotExist:
            return 0

    def due(self, now: datetime, limit: int = 500) -> Iterator[str]:
        """Ids of the tasks the sweeper should look at now, most overdue first."""
        for item in TaskModel.by_due.query(SWEEP_PARTITION, TaskModel.due_at <= _epoch(now),
                                           limit=limit):
            yield item.id

    # -- writing -------------------------------------------------------------
    def _transact(self, build: Any) -> None:
        """Run a transaction, again when real DynamoDB cancels it for a concurrent one."""
        from pynamodb.transactions import TransactWrite

        for attempt in range(_TX_TRIES):
            try:
                with TransactWrite(connection=TaskModel._get_connection().connection) as tx:
                    build(tx)
                return
            except TransactWriteError as exc:
                if _TX_CONFLICT not in _reasons(exc) or attempt == _TX_TRIES - 1:
                    raise
                time.sleep(0.05 * 2 ** attempt)

    @staticmethod
    def _take_slot(tx: Any, owner: str, cap: int) -> None:
        tx.update(QuotaModel(quota_id(owner)), actions=[QuotaModel.active.add(1)],
                  condition=QuotaModel.active.does_not_exist() | (QuotaModel.active < cap))

    @staticmethod
    def _give_slot(tx: Any, owner: str) -> None:
        tx.update(QuotaModel(quota_id(owner)), actions=[QuotaModel.active.add(-1)])

    def add(self, task: Task, cap: int, key: IdempotencyRecord | None = None) -> tuple[Task, bool]:
        """Store a new queued task and take one of its owner's ``cap`` slots, atomically.

        With an idempotency key, the key's record is written in the same
        transaction; a key that already names a live task raises KeyExists
        (the caller compares the body) whatever the quota says, since a
        repeat takes no slot. Raises QuotaExceeded when the cap is reached.
        """
        task = task.with_status(Status.QUEUED, queued_at=task.created_at,
                                due_at=due_after(Status.QUEUED, task.created_at, self.lifetimes))
        for _ in range(3):
            record = None if key is None else IdempotencyModel(
                key.key_id, task_id=task.id, body_hash=key.body_hash, created_at=task.created_at,
                ttl=task.created_at + key.ttl)

            def build(tx: Any, record: IdempotencyModel | None = record) -> None:
                if record is not None:
                    tx.save(record, condition=IdempotencyModel.id.does_not_exist())
                tx.save(to_model(task), condition=TaskModel.id.does_not_exist())
                self._take_slot(tx, task.owner, cap)

            try:
                self._transact(build)
                return task, True
            except TransactWriteError as exc:
                reasons = _reasons(exc)
                if not reasons or not set(reasons) & set(_TX_CONDITION):
                    raise
                if key is not None and reasons[0] in _TX_CONDITION:
                    self._existing(key, task.created_at)  # raises KeyExists, or frees a dead key
                    continue
                if reasons[-1] in _TX_CONDITION:
                    raise QuotaExceeded() from None
                raise
        raise RuntimeError("idempotency record kept changing")

    def _existing(self, key: IdempotencyRecord, now: datetime) -> None:
        """Raise KeyExists for a live key whose task is there; drop a dead key's record."""
        existing = self.live_key(key.key_id, now, key.ttl)
        if existing is None:
            return
        stored_task = self.get(existing.task_id)
        if stored_task is None:  # the task was deleted: the key is free again
            self._drop_key(existing)
            return
        raise KeyExists(existing.body_hash, stored_task)

    def live_key(self, key_id: str, now: datetime, key_ttl: timedelta) -> IdempotencyModel | None:
        try:
            rec = IdempotencyModel.get(key_id, consistent_read=True)
        except DoesNotExist:
            return None
        if rec.created_at + key_ttl <= now:  # TTL deletion lags; honour the 24 h here
            self._drop_key(rec)
            return None
        return rec

    @staticmethod
    def _drop_key(rec: IdempotencyModel) -> None:
        try:
            rec.delete(condition=IdempotencyModel.task_id == rec.task_id)
        except DeleteError as exc:  # a concurrent writer won; fine
            if not _failed_condition(exc):
                raise

    def _condition(self, t: Transition, task: Task, now: datetime) -> Any:
        """``Transition.admits`` as a condition expression: the sources, then the guard."""
        condition = TaskModel.id.exists() & TaskModel.status.is_in(*(s.value for s in t.sources))
        if t.guard is Guard.LEASE:
            condition &= TaskModel.lease == task.lease
        elif t.guard is Guard.STALE:  # the same cutoff as Task.is_stale
            stale_before = now - self.lifetimes.stale_after
            condition &= (TaskModel.heartbeat_at < stale_before) | TaskModel.heartbeat_at.does_not_exist()
        return condition

    def apply(
        self, t: Transition, task: Task, now: datetime, *, cap: int | None = None, **fields: Any,
    ) -> Task | None:
        """Make transition ``t`` of ``task`` if its condition still holds.

        ``task`` is the caller's snapshot: its owner names the quota counter
        and its lease is the one a LEASE guard checks. ``fields`` are what the
        caller adds (a result, an error); the lifecycle's own effects are
        derived from the transition. Returns the task as stored afterwards,
        or None when the task is missing or has moved on (the caller decides
        whether that is an error). Raises QuotaExceeded when a move into the
        active states finds the owner's ``cap`` reached.
        """
        unknown = set(fields) - EFFECT_FIELDS
        if unknown:
            raise ValueError(f"unknown fields {unknown}")
        changes = {"status": t.target, **effects(t, task, now, self.lifetimes), **fields}
        actions = _actions(changes)
        condition = self._condition(t, task, now)
        if t.quota == 0:
            model = _update_if(task.id, actions, condition)
            return None if model is None else to_task(model)
        if t.quota > 0 and cap is None:
            raise ValueError(f"{t.name} takes a slot: give the cap")

        def build(tx: Any) -> None:
            tx.update(TaskModel(task.id), actions=actions, condition=condition)
            if t.quota > 0:
                self._take_slot(tx, task.owner, cap)  # type: ignore[arg-type]
            else:
                self._give_slot(tx, task.owner)

        try:
            self._transact(build)
        except TransactWriteError as exc:
            reasons = _reasons(exc)
            if reasons and reasons[0] in _TX_CONDITION:
                return None
            if len(reasons) > 1 and reasons[1] in _TX_CONDITION:
                raise QuotaExceeded() from None
            raise
        return self.get(task.id)

    def heartbeat(self, task: Task, progress: dict[str, Any], now: datetime) -> Status | None:
        """Record progress and learn the current status in one write, if the lease still holds.

        None means the build lost its lease (taken over, finished by another,
        deleted): it must stop and touch nothing but its own upload.
        """
        model = TaskModel(task.id)
        try:
            model.update(
                actions=_actions({"progress": progress, "heartbeat_at": now,
                                  "due_at": due_after(Status.RUNNING, now, self.lifetimes)}),
                condition=TaskModel.status.is_in(*(s.value for s in BUILDING))
                & (TaskModel.lease == task.lease),
            )
        except UpdateError as exc:
            if _failed_condition(exc):
                return None
            raise
        return Status(model.status)

    def postpone(self, task: Task, until: datetime) -> bool:
        """Move the sweeper's next look at ``task``; False if someone else moved it first.

        The condition names the due time the sweeper read, so of two sweepers
        only one resends a message or publishes an event.
        """
        try:
            TaskModel(task.id).update(
                actions=_actions({"due_at": until}),
                condition=(TaskModel.status == task.status.value)
                & (TaskModel.due_at == _epoch(task.due_at)),
            )
        except UpdateError as exc:
            if _failed_condition(exc):
                return False
            raise
        return True

    def event_sent(self, task: Task) -> None:
        """The terminal event of ``task``'s status is out: stop watching it."""
        try:
            TaskModel(task.id).update(actions=_actions({"due_at": None}),
                                      condition=TaskModel.status == task.status.value)
        except UpdateError as exc:
            if not _failed_condition(exc):
                raise

    def rename(self, task_id: str, task_name: str) -> Task | None:
        """Name a task anew, with the lower-case copy the name filter reads, in one write.

        Whatever its status: the name is the owner's label, not part of the
        build (the file keeps the name it was stored under). None if it is gone.
        """
        model = TaskModel(task_id)
        try:
            model.update(actions=[TaskModel.task_name.set(task_name),
                                  TaskModel.task_name_lc.set(task_name.casefold())],
                         condition=TaskModel.id.exists())
        except UpdateError as exc:
            if _failed_condition(exc):
                return None
            raise
        return to_task(model)

    def claim_notification(self, task_id: str, key: str, now: datetime, lease: timedelta
                           ) -> NotificationClaim:
        """Take the lease on sending notification ``key``: ``notifying[key] = now``.

        One conditional write, so that of two deliveries of the same event one
        sends: it succeeds if ``key`` is not sent yet and nobody holds it, or
        its holder claimed it more than ``lease`` ago (the holder died between
        its claim and SES's answer: the mail is not lost, this delivery sends
        it). Recording the key as sent waits for SES (``notification_sent``),
        so a mail goes out at least once; twice only if an invocation dies
        between SES's answer and that record.
        """
        since, stale = _epoch(now), _epoch(now - lease)
        mark = TaskModel.notifying[key]
        open_ = TaskModel.id.exists() & ~TaskModel.notified.contains(key)
        for _ in range(2):
            try:
                TaskModel(task_id).update(actions=[mark.set(since)],
                                          condition=open_ & (mark.does_not_exist() | (mark < stale)))
                return "claimed"
            except UpdateError as exc:
                if _failed_condition(exc):
                    return self._notification_state(task_id, key)
                if not _no_map(exc):
                    raise
            try:  # the task has no map of claims yet (or is gone): start it with this one
                TaskModel(task_id).update(actions=[TaskModel.notifying.set({key: since})],
                                          condition=open_ & TaskModel.notifying.does_not_exist())
                return "claimed"
            except UpdateError as exc:
                if not _failed_condition(exc):
                    raise
            # another claim started the map meanwhile, or the task is sent or gone: look again
        return self._notification_state(task_id, key)

    def _notification_state(self, task_id: str, key: str) -> NotificationClaim:
        """Why a claim was refused, read consistently after the refusal.

        Anything but sent or gone (held, or released meanwhile) is ``sending``:
        the caller tries again later, never drops the mail.
        """
        try:
            model = TaskModel.get(task_id, consistent_read=True,
                                  attributes_to_get=["id", "notified"])
        except DoesNotExist:
            return "gone"
        return "sent" if key in (model.notified or set()) else "sending"

    def notification_sent(self, task_id: str, key: str) -> None:
        """SES took notification ``key``: record it as sent and drop its claim, in one write."""
        sent = TaskModel.notified.add({key})
        for actions in ([sent, TaskModel.notifying[key].remove()], [sent]):
            try:
                TaskModel(task_id).update(actions=actions, condition=TaskModel.id.exists())
                return
            except UpdateError as exc:
                if _failed_condition(exc):
                    return
                if not _no_map(exc):  # a claim from before the map existed: only record it
                    raise

    def release_notification(self, task_id: str, key: str, claimed_at: datetime) -> None:
        """Give back a claim whose mail could not be sent, so that a retry of the event sends it.

        Only the claim made at ``claimed_at``: one that a later delivery took
        over (this one was too slow) stays with its new holder.
        """
        mark = TaskModel.notifying[key]
        try:
            TaskModel(task_id).update(actions=[mark.remove()],
                                      condition=TaskModel.id.exists() & (mark == _epoch(claimed_at)))
        except UpdateError as exc:
            if not (_failed_condition(exc) or _no_map(exc)):
                raise

    def delete(self, task: Task) -> bool:
        """Delete a task in a deletable status; a queued one gives its slot back."""
        condition = TaskModel.status == task.status.value
        if task.status not in DELETABLE:
            return False
        if task.status not in ACTIVE:
            try:
                TaskModel(task.id).delete(condition=condition)
            except DeleteError as exc:
                if _failed_condition(exc):
                    return False
                raise
            return True

        def build(tx: Any) -> None:
            tx.delete(TaskModel(task.id), condition=condition)
            self._give_slot(tx, task.owner)

        try:
            self._transact(build)
        except TransactWriteError as exc:
            if set(_reasons(exc)) & set(_TX_CONDITION):
                return False
            raise
        return True

    # -- segments ------------------------------------------------------------
    def save_plan(self, task: Task, plan: Plan, now: datetime) -> Task | None:
        """Record a plan under the build's lease (``task.lease``); None if the build lost the task.

        Succeeded segments of an earlier plan come in as they are, so the
        counter starts at them: a retry rebuilds only the others.
        """
        done = sum(1 for seg in plan.segments if seg.status is SegStatus.SUCCEEDED)
        actions = [TaskModel.segs.set({seg_key(s.number): s.to_item() for s in plan.segments}),
                   TaskModel.seg_done.set(done), TaskModel.plan_lease.set(task.lease),
                   TaskModel.plan.set({"shared": plan.shared, "rows": plan.total_rows,
                                       "upload": plan.upload}),
                   *_actions({"heartbeat_at": now,
                              "due_at": due_after(Status.RUNNING, now, self.lifetimes)})]
        model = _update_if(task.id, actions,
                           (TaskModel.status == Status.RUNNING.value) & (TaskModel.lease == task.lease))
        return None if model is None else to_task(model)

    def _seg_condition(self, move: SegMove | None, task: Task, seg: Segment | None, number: int,
                       now: datetime) -> Any:
        """The task still under the plan's lease, and ``move.admits`` the segment, as a condition.

        ``move`` None is a heartbeat: the task building (a cancel shows in the
        answer), the segment running under ``seg``'s lease.
        """
        path = TaskModel.segs[seg_key(number)]
        statuses = BUILDING if move is None else {Status.RUNNING}
        condition = (TaskModel.status.is_in(*(s.value for s in statuses))
                     & (TaskModel.lease == task.plan_lease) & (TaskModel.plan_lease == task.plan_lease))
        if move is None:
            assert seg is not None
            return condition & (path["st"] == SegStatus.RUNNING.value) & (path["ls"] == seg.lease)
        if move.guard is SegGuard.STALE:  # SegMove.admits: a running source only once stale
            stale_before = int(now.timestamp() - self.lifetimes.stale_after.total_seconds())
            admitted = [(path["st"] == src.value) & (path["hb"] < stale_before)
                        if src is SegStatus.RUNNING else path["st"] == src.value
                        for src in sorted(move.sources)]
            return condition & reduce(operator.or_, admitted)
        assert seg is not None
        return (condition & path["st"].is_in(*(src.value for src in move.sources))
                & (path["ls"] == seg.lease))

    def claim_segment(self, task: Task, number: int, now: datetime) -> Segment | None:
        """Take segment ``number`` of the plan; None if it is not to be built by us.

        A second delivery of its message finds it running (or done) and gets
        None: one build per segment. A segment whose worker stopped beating is
        taken over, so a crashed segment is rebuilt alone.
        """
        path = TaskModel.segs[seg_key(number)]
        epoch = int(now.timestamp())
        actions = [path["st"].set(SegStatus.RUNNING.value), path["ls"].set(path["ls"] + 1),
                   path["cl"].set(path["cl"] + 1), path["hb"].set(epoch), path["rows"].set(0),
                   path["bytes"].set(0), *_actions({"heartbeat_at": now})]
        model = _update_if(task.id, actions,
                                 self._seg_condition(SEG_CLAIM, task, None, number, now))
        if model is None:
            return None
        return next(s for s in to_task(model).segments if s.number == number)

    def take_building_slot(self, tenant: str, holder: str, now: datetime, until: datetime, cap: int
                           ) -> bool:
        """Take one of ``tenant``'s ``cap`` slots for building a segment, for ``holder`` until ``until``.

        False when ``cap`` holders whose deadline has not passed have one (or,
        rarely, when other claims kept winning the item: the caller waits as for
        a full bound). Expired holders are dropped in the same write.
        """
        key, epoch = building_id(tenant), int(now.timestamp())
        for attempt in range(_SLOT_TRIES):
            try:
                item = BuildingModel.get(key, consistent_read=True)
                held = item.slots.as_dict() if item.slots is not None else {}
                version, condition = int(item.ver or 0), BuildingModel.ver == int(item.ver or 0)
            except DoesNotExist:
                held, version, condition = {}, 0, BuildingModel.id.does_not_exist()
            live = {h: int(t) for h, t in held.items() if int(t) > epoch}
            if len(live) >= cap:
                return False
            live[holder] = int(until.timestamp())
            try:
                BuildingModel(key, slots=live, ver=version + 1).save(condition=condition)
                return True
            except PutError as exc:
                if not _failed_condition(exc):
                    raise
            time.sleep(random.uniform(0, 0.02 * 2 ** attempt))  # another claim wrote first: read again
        return False

    def release_building_slot(self, tenant: str, holder: str) -> None:
        """Give ``holder``'s slot back (nothing if it has none, or it expired and was dropped)."""
        try:
            BuildingModel(building_id(tenant)).update(
                actions=[BuildingModel.slots[holder].remove(), BuildingModel.ver.add(1)],
                condition=BuildingModel.slots.exists())
        except UpdateError as exc:
            if not _failed_condition(exc):
                raise

    def beat_segment(self, task: Task, seg: Segment, rows: int, size: int, now: datetime
                     ) -> Status | None:
        """A segment's heartbeat: its progress, and the task's status (None: stop, it is not ours)."""
        path = TaskModel.segs[seg_key(seg.number)]
        actions = [path["rows"].set(rows), path["bytes"].set(size), path["hb"].set(int(now.timestamp())),
                   *_actions({"heartbeat_at": now,
                              "due_at": due_after(Status.RUNNING, now, self.lifetimes)})]
        model = _update_if(task.id, actions,
                                 self._seg_condition(None, task, seg, seg.number, now))
        return None if model is None else Status(model.status)

    def finish_segment(self, task: Task, seg: Segment, now: datetime, **result: Any) -> Task | None:
        """Record a stored segment and count it, in one write; the task as it is afterwards.

        The caller whose write brings ``segments_done`` to the number of
        segments is the one finalizer: the condition lets each segment be
        counted once.
        """
        path = TaskModel.segs[seg_key(seg.number)]
        unknown = set(result) - set(RESULT_FIELDS)
        if unknown:
            raise ValueError(f"unknown segment fields {unknown}")
        actions = [path["st"].set(SegStatus.SUCCEEDED.value), TaskModel.seg_done.add(1),
                   path["hb"].set(int(now.timestamp())), *_actions({"heartbeat_at": now})]
        actions += [path[SEGMENT_FIELDS[name]].set(value) for name, value in result.items()
                    if value is not None]
        model = _update_if(task.id, actions,
                                 self._seg_condition(SEG_SUCCEED, task, seg, seg.number, now))
        return None if model is None else to_task(model)

    def fail_segment(self, task: Task, seg: Segment, error: TaskError, retry: bool, now: datetime
                     ) -> Task | None:
        """A segment's build failed: back in the queue for another try, or failed for good."""
        move = SEG_RETRY if retry else SEG_FAIL
        path = TaskModel.segs[seg_key(seg.number)]
        actions = [path["st"].set(move.target.value), path["tr"].set(path["tr"] + 1),
                   path["err"].set(error.to_dict()), path["rows"].set(0), path["bytes"].set(0)]
        model = _update_if(task.id, actions,
                                 self._seg_condition(move, task, seg, seg.number, now))
        return None if model is None else to_task(model)

    # -- listing -------------------------------------------------------------
    def query(
        self,
        index: str,
        partition: str,
        *,
        id_low: str | None,
        id_high: str | None,
        filter_condition: TaskFilter | None,
        limit: int,
        start_key: dict[str, Any] | None,
        max_scanned: int,
    ) -> Page:
        """Newest first, one index partition, reading at most ``max_scanned`` items."""
        idx = getattr(TaskModel, index)
        range_cond = None
        if id_low and id_high:
            range_cond = TaskModel.id.between(id_low, id_high)
        elif id_low:
            range_cond = TaskModel.id >= id_low
        elif id_high:
            range_cond = TaskModel.id <= id_high
        result = idx.query(
            partition, range_key_condition=range_cond, filter_condition=_filter_expression(filter_condition),
            scan_index_forward=False, page_size=limit, last_evaluated_key=start_key,
        )
        pages = result.page_iter
        hash_name = INDEX_HASH[index]
        tasks: list[Task] = []
        last_key: dict[str, Any] | None = None
        for page in _start_key_checked(pages):
            items = page.get("Items", [])
            for pos, raw in enumerate(items):
                tasks.append(to_task(TaskModel.from_raw_data(raw)))
                if len(tasks) == limit:
                    more = pos < len(items) - 1 or pages.last_evaluated_key is not None
                    last_key = {"id": raw["id"], hash_name: raw[hash_name]} if more else None
                    return Page(tasks, last_key, pages.total_scanned_count)
            last_key = pages.last_evaluated_key
            if last_key is None or pages.total_scanned_count >= max_scanned:
                break
            # a selective filter: read larger pages (still within max_scanned), so
            # the round trips grow with the log of the bound, not with it
            pages.page_size = max(1, min(max_scanned - pages.total_scanned_count,
                                         2 * (pages.page_size or limit)))
        return Page(tasks, last_key, pages.total_scanned_count)


INDEX_HASH = {"by_owner": "owner", "by_tenant": "tenant", "by_scope": "scope"}


def _filter_expression(f: TaskFilter | None) -> Any:
    """``TaskFilter.matches`` as a DynamoDB filter expression (None: keep everything)."""
    if f is None or f.keeps_all:
        return None
    conds: list[Any] = []
    if f.statuses:
        alternatives = []
        stored = {s for s in f.statuses if s not in (Status.SUCCEEDED, Status.EXPIRED)}
        if stored:
            alternatives.append(TaskModel.status.is_in(*(s.value for s in stored)))
        succeeded = TaskModel.status == Status.SUCCEEDED.value
        if Status.SUCCEEDED in f.statuses:  # Task.effective_status: no expiry is not expired
            alternatives.append(succeeded & ((TaskModel.expires_at > f.at)
                                             | TaskModel.expires_at.does_not_exist()))
        if Status.EXPIRED in f.statuses:
            alternatives.append(succeeded & (TaskModel.expires_at <= f.at))
        conds.append(reduce(operator.or_, alternatives))
    if f.kind:
        conds.append(TaskModel.kind == f.kind)
    if f.task_name:  # DynamoDB's contains is case-sensitive: the lower-case copies
        conds.append(TaskModel.task_name_lc.contains(f.task_name.casefold()))
    if f.file_name:
        conds.append(TaskModel.file_name_lc.contains(f.file_name.casefold()))
    if f.tenant:
        conds.append(TaskModel.tenant == f.tenant)
    return reduce(operator.and_, conds)


class StartKeyRejected(Exception):
    """DynamoDB refused a query's ExclusiveStartKey (e.g. outside its key condition)."""


def _rejects_start_key(exc: QueryError) -> bool:
    """A ValidationException about the start key, in any of DynamoDB's wordings.

    Real DynamoDB says "The provided starting key is invalid", "... does not
    match the range key predicate", "... is outside query boundaries ..." or
    "Exclusive Start Key must have same size as table's key schema".
    """
    if exc.cause_response_code != "ValidationException":
        return False
    message = (exc.cause_response_message or "").casefold()
    return any(words in message for words in ("starting key", "exclusive start key",
                                              "exclusivestartkey"))


def _start_key_checked(pages: Iterator[Any]) -> Iterator[Any]:
    """The query's pages, with a refused start key raised as StartKeyRejected.

    The caller decides what that means; for a listing it is a bad cursor.
    """
    try:
        yield from pages
    except QueryError as exc:
        if _rejects_start_key(exc):
            raise StartKeyRejected(exc.cause_response_message) from exc
        raise


__all__ = ["INDEX_HASH", "IdempotencyRecord", "KeyExists", "Page", "QuotaExceeded", "StartKeyRejected",
           "TaskModel", "TaskRepository", "TaskStore", "building_id", "configure", "quota_id", "to_model",
           "to_task"]
