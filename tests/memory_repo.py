"""Task storage in a dict, for tests of the layers above the repository.

It answers the calls of ``chalicelib.adapters.tasks_repo.TaskStore`` as
``TaskRepository`` does on DynamoDB: the same transitions (their sources and
guards are ``Transition.admits``, their effects ``chalicelib.task.effects``),
the same exact quota, idempotency records, the sweeper's due times and the
listing's partitions, order, filters (``TaskFilter.matches``), read bounds
and start keys. ``tests/integration/test_repository_contract.py`` runs one
set of cases against both, so the two cannot drift apart.

It is test code: the Lambda package never needs it, so it lives under tests/.
What it stores is what a DynamoDB round trip gives back: due times in whole
seconds (the sweeper's index sorts on epoch seconds) and copies, never the
caller's objects.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.adapters.tasks_repo import (
    ALL_SCOPE,
    INDEX_HASH,
    IdempotencyRecord,
    KeyExists,
    NotificationClaim,
    Page,
    QuotaExceeded,
)
from chalicelib.segments import (
    RESULT_FIELDS,
    SEG_CLAIM,
    SEG_FAIL,
    SEG_RETRY,
    SEG_SUCCEED,
    Plan,
    Segment,
    SegMove,
    SegStatus,
)
from chalicelib.task import (
    ACTIVE,
    BUILDING,
    DELETABLE,
    EFFECT_FIELDS,
    Lifetimes,
    Status,
    Task,
    TaskError,
    TaskFilter,
    Transition,
    due_after,
    effects,
)

#: Effect fields that are storage housekeeping (DynamoDB's TTL), not part of a Task.
_NOT_ON_TASK = EFFECT_FIELDS - {f.name for f in dataclasses.fields(Task)}


def _seconds(at: datetime | None) -> datetime | None:
    """A due time as the sweeper's index keeps it: whole epoch seconds."""
    return None if at is None else datetime.fromtimestamp(int(at.timestamp()), UTC)


@dataclass(frozen=True)
class _Key:
    task_id: str
    body_hash: str
    created_at: datetime


class MemoryTaskRepository:
    """``TaskStore`` in memory; one lock makes every call atomic, as a transaction is."""

    def __init__(self, lifetimes: Lifetimes | None = None) -> None:
        self.lifetimes = lifetimes or Lifetimes()
        self._tasks: dict[str, Task] = {}
        self._active: dict[str, int] = {}
        self._keys: dict[str, _Key] = {}
        self._notified: dict[str, set[str]] = {}
        #: task id -> notification key -> epoch seconds of its claim (DynamoDB's ``notifying`` map)
        self._notifying: dict[str, dict[str, int]] = {}
        #: tenant -> holder -> epoch second its slot expires (DynamoDB's ``building#<tenant>``)
        self._building: dict[str, dict[str, int]] = {}
        self._lock = threading.RLock()

    def _store(self, task: Task) -> None:
        self._tasks[task.id] = copy.deepcopy(replace(task, due_at=_seconds(task.due_at)))

    def _stored(self, task_id: str) -> Task | None:
        task = self._tasks.get(task_id)
        return copy.deepcopy(task)

    # -- reading -------------------------------------------------------------
    def get(self, task_id: str) -> Task | None:
        with self._lock:
            return self._stored(task_id)

    def active_count(self, owner: str) -> int:
        with self._lock:
            return self._active.get(owner, 0)

    def due(self, now: datetime, limit: int = 500) -> Iterator[str]:
        """Ids of the tasks due by ``now`` (to the second), most overdue first."""
        cutoff = _seconds(now)
        with self._lock:
            due = sorted((t.due_at, t.id) for t in self._tasks.values()
                         if t.due_at is not None and t.due_at <= cutoff)  # type: ignore[operator]
        yield from (task_id for _, task_id in due[:limit])

    # -- writing -------------------------------------------------------------
    def add(self, task: Task, cap: int, key: IdempotencyRecord | None = None) -> tuple[Task, bool]:
        """Store a queued task taking a slot, or raise KeyExists / QuotaExceeded (see TaskRepository)."""
        task = task.with_status(Status.QUEUED, queued_at=task.created_at,
                                due_at=due_after(Status.QUEUED, task.created_at, self.lifetimes))
        with self._lock:
            if key is not None and key.key_id in self._keys:
                existing = self._keys[key.key_id]
                stored = self._tasks.get(existing.task_id)
                expired = existing.created_at + key.ttl <= task.created_at
                if stored is not None and not expired:
                    raise KeyExists(existing.body_hash, copy.deepcopy(stored))
                del self._keys[key.key_id]  # a dead key, or its task was deleted: free again
            if task.id in self._tasks:
                raise ValueError(f"task {task.id} exists")
            if self._active.get(task.owner, 0) >= cap:
                raise QuotaExceeded()
            if key is not None:
                self._keys[key.key_id] = _Key(task.id, key.body_hash, task.created_at)
            self._store(task)
            self._active[task.owner] = self._active.get(task.owner, 0) + 1
        return task, True

    def apply(
        self, t: Transition, task: Task, now: datetime, *, cap: int | None = None, **fields: Any,
    ) -> Task | None:
        """Make transition ``t`` of ``task`` if ``t.admits`` the stored task (see TaskRepository)."""
        unknown = set(fields) - EFFECT_FIELDS
        if unknown:
            raise ValueError(f"unknown fields {unknown}")
        if t.quota > 0 and cap is None:
            raise ValueError(f"{t.name} takes a slot: give the cap")
        changes = {"status": t.target, **effects(t, task, now, self.lifetimes), **fields}
        for name in _NOT_ON_TASK:
            changes.pop(name, None)
        if isinstance(changes.get("error"), dict):
            changes["error"] = TaskError(changes["error"]["code"], changes["error"]["message"])
        changes["status"] = Status(changes["status"])
        with self._lock:
            stored = self._tasks.get(task.id)
            if stored is None or not t.admits(stored, task, now, self.lifetimes):
                return None
            if t.quota > 0 and self._active.get(task.owner, 0) >= cap:  # type: ignore[operator]
                raise QuotaExceeded()
            if t.quota:
                self._active[task.owner] = self._active.get(task.owner, 0) + t.quota
            self._store(replace(stored, **changes))
            return self._stored(task.id)

    def heartbeat(self, task: Task, progress: dict[str, Any], now: datetime) -> Status | None:
        """Record progress if the build still holds the lease; the status it finds, else None."""
        with self._lock:
            stored = self._tasks.get(task.id)
            if stored is None or stored.status not in BUILDING or stored.lease != task.lease:
                return None
            self._store(replace(stored, progress=progress, heartbeat_at=now,
                                due_at=due_after(Status.RUNNING, now, self.lifetimes)))
            return stored.status

    def postpone(self, task: Task, until: datetime) -> bool:
        """Move the sweeper's next look, if the status and due time are still the ones read."""
        with self._lock:
            stored = self._tasks.get(task.id)
            if (stored is None or stored.status is not task.status
                    or stored.due_at != _seconds(task.due_at)):
                return False
            self._store(replace(stored, due_at=until))
            return True

    def rename(self, task_id: str, task_name: str) -> Task | None:
        """Set the name, whatever the status; None if the task is gone."""
        with self._lock:
            stored = self._tasks.get(task_id)
            if stored is None:
                return None
            self._store(replace(stored, task_name=task_name))
            return self._stored(task_id)

    def event_sent(self, task: Task) -> None:
        with self._lock:
            stored = self._tasks.get(task.id)
            if stored is not None and stored.status is task.status:
                self._store(replace(stored, due_at=None))

    def claim_notification(self, task_id: str, key: str, now: datetime, lease: timedelta
                           ) -> NotificationClaim:
        """As TaskRepository: a lease in epoch seconds, taken over once older than ``lease``."""
        with self._lock:
            if task_id not in self._tasks:
                return "gone"
            if key in self._notified.get(task_id, set()):
                return "sent"
            claims = self._notifying.setdefault(task_id, {})
            held = claims.get(key)
            if held is not None and held >= int((now - lease).timestamp()):
                return "sending"
            claims[key] = int(now.timestamp())
            return "claimed"

    def notification_sent(self, task_id: str, key: str) -> None:
        with self._lock:
            if task_id in self._tasks:
                self._notified.setdefault(task_id, set()).add(key)
                self._notifying.get(task_id, {}).pop(key, None)

    def release_notification(self, task_id: str, key: str, claimed_at: datetime) -> None:
        with self._lock:
            claims = self._notifying.get(task_id, {})
            if claims.get(key) == int(claimed_at.timestamp()):
                del claims[key]

    def delete(self, task: Task) -> bool:
        """Delete a task still in the deletable status read; a queued one gives its slot back."""
        if task.status not in DELETABLE:
            return False
        with self._lock:
            stored = self._tasks.get(task.id)
            if stored is None or stored.status is not task.status:
                return False
            del self._tasks[task.id]
            self._notified.pop(task.id, None)
            self._notifying.pop(task.id, None)
            if task.status in ACTIVE:
                self._active[task.owner] = self._active.get(task.owner, 0) - 1
            return True

    # -- segments (as TaskRepository's conditional writes) ---------------------
    def save_plan(self, task: Task, plan: Plan, now: datetime) -> Task | None:
        with self._lock:
            stored = self._tasks.get(task.id)
            if stored is None or stored.status is not Status.RUNNING or stored.lease != task.lease:
                return None
            self._store(replace(
                stored, segments=plan.segments, plan_lease=task.lease, plan_shared=plan.shared,
                plan_rows=plan.total_rows, plan_upload=plan.upload, heartbeat_at=now,
                segments_done=sum(1 for s in plan.segments if s.status is SegStatus.SUCCEEDED),
                due_at=due_after(Status.RUNNING, now, self.lifetimes)))
            return self._stored(task.id)

    def _admits(self, move: SegMove | None, task: Task, seg: Segment | None, number: int,
                now: datetime) -> tuple[Task, Segment] | None:
        """``TaskRepository._seg_condition``, evaluated: the stored task and segment, or None."""
        stored = self._tasks.get(task.id)
        statuses = BUILDING if move is None else {Status.RUNNING}
        if (stored is None or stored.status not in statuses or stored.lease != task.plan_lease
                or stored.plan_lease != task.plan_lease):
            return None
        current = next((s for s in stored.segments if s.number == number), None)
        if current is None:
            return None
        if move is None:
            ok = current.status is SegStatus.RUNNING and seg is not None and current.lease == seg.lease
        else:
            ok = move.admits(current, seg, int(now.timestamp()),
                             int(self.lifetimes.stale_after.total_seconds()))
        return (stored, current) if ok else None

    def _put_segment(self, stored: Task, seg: Segment, **task_changes: Any) -> Task:
        segments = tuple(seg if s.number == seg.number else s for s in stored.segments)
        self._store(replace(stored, segments=segments, **task_changes))
        return self._stored(stored.id)  # type: ignore[return-value]

    def claim_segment(self, task: Task, number: int, now: datetime) -> Segment | None:
        with self._lock:
            found = self._admits(SEG_CLAIM, task, None, number, now)
            if found is None:
                return None
            stored, current = found
            seg = replace(current, status=SegStatus.RUNNING, lease=current.lease + 1,
                          claims=current.claims + 1, heartbeat_at=int(now.timestamp()), rows=0, bytes=0)
            self._put_segment(stored, seg, heartbeat_at=now)
            return copy.deepcopy(seg)

    def take_building_slot(self, tenant: str, holder: str, now: datetime, until: datetime, cap: int
                           ) -> bool:
        with self._lock:
            epoch = int(now.timestamp())
            live = {h: t for h, t in self._building.get(tenant, {}).items() if t > epoch}
            if len(live) >= cap:
                return False
            live[holder] = int(until.timestamp())
            self._building[tenant] = live
            return True

    def release_building_slot(self, tenant: str, holder: str) -> None:
        with self._lock:
            self._building.get(tenant, {}).pop(holder, None)

    def beat_segment(self, task: Task, seg: Segment, rows: int, size: int, now: datetime
                     ) -> Status | None:
        with self._lock:
            found = self._admits(None, task, seg, seg.number, now)
            if found is None:
                return None
            stored, current = found
            self._put_segment(stored, replace(current, rows=rows, bytes=size,
                                              heartbeat_at=int(now.timestamp())), heartbeat_at=now,
                              due_at=due_after(Status.RUNNING, now, self.lifetimes))
            return stored.status

    def finish_segment(self, task: Task, seg: Segment, now: datetime, **result: Any) -> Task | None:
        with self._lock:
            found = self._admits(SEG_SUCCEED, task, seg, seg.number, now)
            if found is None:
                return None
            unknown = set(result) - set(RESULT_FIELDS)
            if unknown:
                raise ValueError(f"unknown segment fields {unknown}")
            stored, current = found
            done = replace(current, status=SegStatus.SUCCEEDED, heartbeat_at=int(now.timestamp()),
                           **{k: v for k, v in result.items() if v is not None})
            return self._put_segment(stored, done, heartbeat_at=now,
                                     segments_done=stored.segments_done + 1)

    def fail_segment(self, task: Task, seg: Segment, error: TaskError, retry: bool, now: datetime
                     ) -> Task | None:
        move = SEG_RETRY if retry else SEG_FAIL
        with self._lock:
            found = self._admits(move, task, seg, seg.number, now)
            if found is None:
                return None
            stored, current = found
            return self._put_segment(stored, replace(current, status=move.target, tries=current.tries + 1,
                                                     error=error.to_dict(), rows=0, bytes=0))

    # -- listing -------------------------------------------------------------
    @staticmethod
    def _partition_of(task: Task, hash_name: str) -> str:
        return ALL_SCOPE if hash_name == "scope" else getattr(task, hash_name)

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
        """Newest first, one partition, read in pages as TaskRepository.query reads them.

        The first page reads ``limit`` items, each further one twice as many
        (never past ``max_scanned`` in all). The last key is the last item
        read, or, when the page fills up, the last one kept if anything may
        follow it (a kept item later in that read, or a read still to come).
        """
        hash_name = INDEX_HASH[index]

        def in_range(task_id: str) -> bool:
            return (id_low is None or task_id >= id_low) and (id_high is None or task_id <= id_high)

        def key(task: Task) -> dict[str, Any]:
            return {"id": {"S": task.id}, hash_name: {"S": partition}}

        with self._lock:
            items = sorted((copy.deepcopy(t) for t in self._tasks.values()
                            if self._partition_of(t, hash_name) == partition and in_range(t.id)),
                           key=lambda t: t.id, reverse=True)
        if start_key is not None:  # DynamoDB's start key: go on after that item
            items = [t for t in items if t.id < start_key["id"]["S"]]
        keep = filter_condition.matches if filter_condition is not None else (lambda _t: True)
        tasks: list[Task] = []
        scanned, read, page_size = 0, 0, limit
        while True:
            page = items[read:read + page_size]
            read += len(page)
            scanned += len(page)
            more = read < len(items)
            kept = [task for task in page if keep(task)]  # a page is filtered after it is read
            for pos, task in enumerate(kept):
                tasks.append(task)
                if len(tasks) == limit:
                    return Page(tasks, key(task) if pos < len(kept) - 1 or more else None, scanned)
            if not more or scanned >= max_scanned:
                return Page(tasks, key(page[-1]) if more else None, scanned)
            page_size = max(1, min(max_scanned - scanned, 2 * page_size))


__all__ = ["MemoryTaskRepository"]
