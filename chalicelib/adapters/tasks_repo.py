"""Task storage in DynamoDB through PynamoDB.

Every status change is a conditional update naming the statuses it may come
from, so duplicate or concurrent deliveries cannot run a build twice or
overwrite a terminal state. Listings are Queries on indexes keyed by the
partition a principal may see and sorted by the time-ordered id.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pynamodb.attributes import (
    JSONAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import DoesNotExist, QueryError, TransactWriteError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib.adapters.aws import region_name
from chalicelib.config import DEFAULT_TABLE
from chalicelib.task import ACTIVE, Status, Task, TaskError

ALL_SCOPE = "all"
_CONDITION_FAILED = "ConditionalCheckFailedException"


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


class ActiveByOwner(GlobalSecondaryIndex["TaskModel"]):
    """Sparse: only tasks that are queued, running or canceling are in it."""

    class Meta:
        index_name = "active_by_owner"
        projection = KeysOnlyProjection()

    active_owner = UnicodeAttribute(hash_key=True)
    id = UnicodeAttribute(range_key=True)


class TaskModel(Model):
    Meta = _Meta

    id = UnicodeAttribute(hash_key=True)
    owner = UnicodeAttribute()
    owner_name = UnicodeAttribute()
    tenant = UnicodeAttribute()
    scope = UnicodeAttribute(default=ALL_SCOPE)
    active_owner = UnicodeAttribute(null=True)
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
    progress = JSONAttribute(null=True)
    size = NumberAttribute(null=True)
    md5 = UnicodeAttribute(null=True)
    sha256 = UnicodeAttribute(null=True)
    content_type = UnicodeAttribute(null=True)
    object_key = UnicodeAttribute(null=True)
    error = JSONAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    started_at = UTCDateTimeAttribute(null=True)
    finished_at = UTCDateTimeAttribute(null=True)
    expires_at = UTCDateTimeAttribute(null=True)
    heartbeat_at = UTCDateTimeAttribute(null=True)
    idempotency_key = UnicodeAttribute(null=True)
    ttl = TTLAttribute(null=True)

    by_owner = ByOwner()
    by_tenant = ByTenant()
    by_scope = ByScope()
    active_by_owner = ActiveByOwner()


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


def configure(table_name: str, region: str | None = None) -> None:
    """Point the models at a table (tests and the local stack use their own)."""
    for model in (TaskModel, IdempotencyModel):
        model.Meta.table_name = table_name
        model.Meta.region = region or region_name()
        model._connection = None
    for index in (ByOwner, ByTenant, ByScope, ActiveByOwner):
        index._connection = None  # type: ignore[attr-defined]


def to_task(m: TaskModel) -> Task:
    err = m.error
    return Task(
        id=m.id, owner=m.owner, owner_name=m.owner_name, tenant=m.tenant,
        task_name=m.task_name, file_name=m.file_name, kind=m.kind, format=m.format,
        params=m.params or {}, status=Status(m.status), created_at=m.created_at,
        attempts=int(m.attempts or 1), progress=m.progress or {},
        size=int(m.size) if m.size is not None else None, md5=m.md5, sha256=m.sha256,
        content_type=m.content_type, object_key=m.object_key,
        error=TaskError(err["code"], err["message"]) if err else None,
        started_at=m.started_at, finished_at=m.finished_at, expires_at=m.expires_at,
        idempotency_key=m.idempotency_key,
    )


def to_model(t: Task, ttl: datetime | None) -> TaskModel:
    return TaskModel(
        t.id, owner=t.owner, owner_name=t.owner_name, tenant=t.tenant, scope=ALL_SCOPE,
        active_owner=t.owner if t.status in ACTIVE else None, task_name=t.task_name,
        file_name=t.file_name, task_name_lc=t.task_name.casefold(),
        file_name_lc=t.file_name.casefold(), kind=t.kind, format=t.format, params=t.params,
        status=t.status.value, attempts=t.attempts, progress=t.progress or None,
        created_at=t.created_at, idempotency_key=t.idempotency_key, ttl=ttl,
    )


def _failed_condition(exc: Exception) -> bool:
    return getattr(exc, "cause_response_code", None) == _CONDITION_FAILED


@dataclass(frozen=True)
class Page:
    tasks: list[Task]
    last_key: dict[str, Any] | None
    scanned: int


# Fields a transition may set, with how to store them.
_SETTABLE = {
    "started_at", "finished_at", "expires_at", "heartbeat_at", "size", "md5", "sha256",
    "content_type", "object_key", "progress", "attempts", "ttl",
}


class TaskRepository:
    def get(self, task_id: str) -> Task | None:
        try:
            return to_task(TaskModel.get(task_id, consistent_read=True))
        except DoesNotExist:
            return None

    def add(self, task: Task, ttl: datetime | None = None) -> None:
        to_model(task, ttl).save(condition=TaskModel.id.does_not_exist())

    def add_idempotent(
        self, task: Task, key_id: str, body_hash: str, now: datetime, key_ttl: timedelta
    ) -> tuple[Task, bool]:
        """Create ``task`` unless ``key_id`` already names one.

        Returns the task and whether it is new; raises LookupError with the
        stored body hash when the key exists (the caller compares it).
        """
        from pynamodb.transactions import TransactWrite

        record = IdempotencyModel(key_id, task_id=task.id, body_hash=body_hash,
                                  created_at=now, ttl=now + key_ttl)
        for _ in range(2):
            try:
                with TransactWrite(connection=TaskModel._get_connection().connection) as tx:
                    tx.save(record, condition=IdempotencyModel.id.does_not_exist())
                    tx.save(to_model(task, None), condition=TaskModel.id.does_not_exist())
                return task, True
            except TransactWriteError as exc:
                reasons = [r.code if r else None for r in (exc.cancellation_reasons or [])]
                if not reasons or reasons[0] not in ("ConditionalCheckFailed", _CONDITION_FAILED):
                    raise
            existing = self.live_key(key_id, now, key_ttl)
            if existing is None:
                continue  # stale record removed: try once more
            stored_task = self.get(existing.task_id)
            if stored_task is None:
                # the task was deleted: the key is free again
                self._drop_key(existing)
                continue
            raise KeyExists(existing.body_hash, stored_task)
        raise RuntimeError("idempotency record kept changing")

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
        except Exception as exc:  # noqa: BLE001 - a concurrent writer won; fine
            if not _failed_condition(exc):
                raise

    def transition(
        self,
        task_id: str,
        sources: frozenset[Status] | set[Status],
        target: Status,
        *,
        owner: str | None = None,
        error: TaskError | None = None,
        clear: tuple[str, ...] = (),
        **fields: Any,
    ) -> Task | None:
        """Move to ``target`` only from ``sources``; None when the task is
        missing or elsewhere (the caller decides whether that is an error)."""
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"unknown fields {unknown}")
        actions = [TaskModel.status.set(target.value)]
        if target in ACTIVE:
            if owner:
                actions.append(TaskModel.active_owner.set(owner))
        else:
            actions.append(TaskModel.active_owner.remove())
        if error is not None:
            actions.append(TaskModel.error.set(error.to_dict()))
        for name, value in fields.items():
            attr = getattr(TaskModel, name)
            actions.append(attr.remove() if value is None else attr.set(value))
        for name in clear:
            actions.append(getattr(TaskModel, name).remove())
        model = TaskModel(task_id)
        try:
            model.update(
                actions=actions,
                condition=TaskModel.id.exists() & TaskModel.status.is_in(*(s.value for s in sources)),
            )
        except UpdateError as exc:
            if _failed_condition(exc):
                return None
            raise
        return to_task(model)

    def reclaim_stale(self, task_id: str, stale_before: datetime, now: datetime) -> Task | None:
        """Take over a ``running`` task whose build stopped beating (its Lambda died).

        The condition names the old heartbeat, so of two redeliveries only one wins.
        """
        model = TaskModel(task_id)
        try:
            model.update(
                actions=[TaskModel.heartbeat_at.set(now), TaskModel.started_at.set(now),
                         TaskModel.progress.set({"rows": 0, "bytes": 0})],
                condition=(TaskModel.status == Status.RUNNING.value)
                & (TaskModel.heartbeat_at < stale_before),
            )
        except UpdateError as exc:
            if _failed_condition(exc):
                return None
            raise
        return to_task(model)

    def heartbeat(self, task_id: str, progress: dict[str, Any], now: datetime) -> Status | None:
        """Record progress and return the current status in one write.

        This is how a running build learns about a cancel request.
        """
        model = TaskModel(task_id)
        try:
            model.update(
                actions=[TaskModel.progress.set(progress), TaskModel.heartbeat_at.set(now)],
                condition=TaskModel.id.exists(),
            )
        except UpdateError as exc:
            if _failed_condition(exc):
                return None
            raise
        return Status(model.status)

    def delete(self, task_id: str, allowed: frozenset[Status]) -> bool:
        try:
            TaskModel(task_id).delete(
                condition=TaskModel.status.is_in(*(s.value for s in allowed))
            )
        except Exception as exc:
            if _failed_condition(exc):
                return False
            raise
        return True

    def count_active(self, owner: str, cap: int) -> int:
        """Active tasks of an owner, reading at most ``cap`` keys of a sparse index."""
        count = 0
        for _ in TaskModel.active_by_owner.query(owner, limit=cap, page_size=cap):
            count += 1
        return count

    def query(
        self,
        index: str,
        partition: str,
        *,
        id_low: str | None,
        id_high: str | None,
        filter_condition: Any,
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
            partition, range_key_condition=range_cond, filter_condition=filter_condition,
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


class KeyExists(Exception):
    def __init__(self, body_hash: str, task: Task) -> None:
        super().__init__("idempotency key in use")
        self.body_hash = body_hash
        self.task = task


__all__ = ["INDEX_HASH", "KeyExists", "Page", "StartKeyRejected", "TaskModel", "TaskRepository",
           "configure", "to_model", "to_task"]
