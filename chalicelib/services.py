"""API use cases: create, list, get, file, cancel, retry, delete.

Routes call these with a Principal and parsed input; visibility is checked
here, once, so no route can forget it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib import cursor as cursors
from chalicelib.adapters import events, queue, storage
from chalicelib.adapters.tasks_repo import (
    INDEX_HASH,
    KeyExists,
    StartKeyRejected,
    TaskModel,
    TaskRepository,
)
from chalicelib.clock import now as utcnow
from chalicelib.config import Settings
from chalicelib.errors import (
    ApiError,
    Expired,
    IdempotencyConflict,
    InvalidState,
    NotFound,
    TooManyActiveTasks,
)
from chalicelib.exporters import REGISTRY, get_exporter
from chalicelib.ids import IdWindow, new_id
from chalicelib.messages import BUILD
from chalicelib.principal import Principal
from chalicelib.task import DELETABLE, Status, Task, TaskError
from chalicelib.validation import CreateRequest, ListQuery, final_file_name

log = logging.getLogger(__name__)

#: A listing page reads at most this many items per requested item, so a
#: selective filter yields a short page with a cursor rather than a long read.
SCAN_FACTOR = 10


class ServiceUnavailable(ApiError):
    status = 503
    code = "unavailable"


@dataclass(frozen=True)
class Owner:
    sub: str
    name: str
    tenant: str


def body_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def event_detail(task: Task, at: datetime) -> dict[str, Any]:
    detail = task.to_resource(at)
    detail.pop("url", None)
    detail.pop("url_expires_at", None)
    return detail


class Downloads:
    def __init__(self, settings: Settings, repo: TaskRepository | None = None) -> None:
        self.settings = settings
        self.repo = repo or TaskRepository()

    # -- reading -------------------------------------------------------------
    def kinds(self) -> dict[str, Any]:
        return {"items": [e.describe() for e in REGISTRY.values()]}

    def resource(self, task: Task, at: datetime | None = None) -> dict[str, Any]:
        at = at or utcnow()
        url = url_expires = None
        if task.effective_status(at) is Status.SUCCEEDED and task.object_key:
            url, url_expires = storage.presign_get(
                self.settings.files_bucket, task.object_key, task.file_name,
                task.content_type, self.settings.url_ttl_seconds, at,
            )
        return task.to_resource(at, url, url_expires)

    def _visible(self, principal: Principal, task_id: str) -> Task:
        task = self.repo.get(task_id) if 0 < len(task_id) <= 64 else None
        if task is None or not principal.can_see(task.owner):
            raise NotFound(f"No download {task_id!r}.")
        return task

    def get(self, principal: Principal, task_id: str) -> dict[str, Any]:
        return self.resource(self._visible(principal, task_id))

    def file_url(self, principal: Principal, task_id: str) -> str:
        task = self._visible(principal, task_id)
        at = utcnow()
        status = task.effective_status(at)
        if status is Status.EXPIRED:
            raise Expired("The file has expired; create the export again.")
        if status is not Status.SUCCEEDED or not task.object_key:
            raise InvalidState(f"The download is {status.value}; its file is not ready.")
        return self.resource(task, at)["url"]

    def list(self, principal: Principal, q: ListQuery) -> dict[str, Any]:
        index, partition = self._partition(principal, q)
        window = IdWindow.between(q.created_after, q.created_before)
        start = (
            cursors.decode(q.cursor, index, partition, INDEX_HASH[index], window)
            if q.cursor else None
        )
        at = utcnow()
        try:
            page = self.repo.query(
                index, partition, id_low=window.low, id_high=window.high,
                filter_condition=self._filters(principal, q, index, at),
                limit=q.limit, start_key=start, max_scanned=q.limit * SCAN_FACTOR,
            )
        except StartKeyRejected:
            if start is None:  # DynamoDB refused its own key: our fault, not the client's
                raise
            raise cursors.invalid() from None
        last = page.last_key
        return {
            "items": [self.resource(t, at) for t in page.tasks],
            "next_cursor": cursors.encode(index, partition, window, last) if last else None,
        }

    @staticmethod
    def _partition(principal: Principal, q: ListQuery) -> tuple[str, str]:
        if not principal.is_admin:
            return "by_owner", principal.sub
        if q.owner:
            return "by_owner", q.owner
        if q.tenant:
            return "by_tenant", q.tenant
        return "by_scope", "all"

    @staticmethod
    def _filters(principal: Principal, q: ListQuery, index: str, at: datetime) -> Any:
        conds: list[Any] = []
        if q.statuses:
            status_conds = []
            stored = {s for s in q.statuses if s not in (Status.SUCCEEDED, Status.EXPIRED)}
            if stored:
                status_conds.append(TaskModel.status.is_in(*(s.value for s in stored)))
            if Status.SUCCEEDED in q.statuses:
                status_conds.append((TaskModel.status == "succeeded") & (TaskModel.expires_at > at))
            if Status.EXPIRED in q.statuses:
                status_conds.append((TaskModel.status == "succeeded") & (TaskModel.expires_at <= at))
            combined = status_conds[0]
            for c in status_conds[1:]:
                combined = combined | c
            conds.append(combined)
        if q.kind:
            conds.append(TaskModel.kind == q.kind)
        if q.task_name:
            conds.append(TaskModel.task_name_lc.contains(q.task_name.casefold()))
        if q.file_name:
            conds.append(TaskModel.file_name_lc.contains(q.file_name.casefold()))
        if principal.is_admin and q.tenant and index != "by_tenant":
            conds.append(TaskModel.tenant == q.tenant)
        if not conds:
            return None
        result = conds[0]
        for c in conds[1:]:
            result = result & c
        return result

    # -- writing -------------------------------------------------------------
    def _check_quota(self, owner: str) -> None:
        cap = self.settings.max_active_tasks
        if self.repo.count_active(owner, cap) >= cap:
            raise TooManyActiveTasks(
                f"You have {cap} active downloads; wait for one to finish or cancel one."
            )

    def new_task(self, owner: Owner, req: CreateRequest, idempotency_key: str | None) -> Task:
        at = utcnow()
        exporter = get_exporter(req.kind)
        assert exporter is not None
        ext = exporter.output(req.params, req.format).extension
        return Task(
            id=new_id(), owner=owner.sub, owner_name=owner.name, tenant=owner.tenant,
            task_name=req.task_name, file_name=final_file_name(req.file_name, req.task_name, ext, at),
            kind=req.kind, format=req.format, params=req.params, status=Status.QUEUED,
            created_at=at, attempts=1, progress={"rows": 0, "bytes": 0},
            idempotency_key=idempotency_key,
        )

    def store_new(
        self, owner: Owner, req: CreateRequest, body: dict[str, Any], idempotency_key: str | None
    ) -> tuple[Task, bool]:
        """Store a queued task, or return the one this idempotency key made."""
        task = self.new_task(owner, req, idempotency_key)
        if idempotency_key is None:
            self._check_quota(owner.sub)
            self.repo.add(task)
            return task, True
        key_id = "idem#" + owner.sub + "#" + hashlib.sha256(idempotency_key.encode()).hexdigest()
        digest = body_hash(body)
        try:
            existing = self.repo.live_key(  # a repeat needs no quota
                key_id, task.created_at, timedelta(hours=self.settings.idempotency_ttl_hours))
            if existing is None:
                self._check_quota(owner.sub)
            return self.repo.add_idempotent(
                task, key_id, digest, task.created_at,
                timedelta(hours=self.settings.idempotency_ttl_hours),
            )
        except KeyExists as exc:
            if exc.body_hash != digest:
                raise IdempotencyConflict(
                    "This Idempotency-Key was used with a different request body."
                ) from None
            return exc.task, False

    def enqueue(self, task: Task) -> None:
        try:
            url = queue.queue_url(self.settings.build_queue_name, self.settings.build_queue_url)
            queue.send(url, {"type": BUILD, "version": 1, "task_id": task.id})
        except Exception:
            log.exception("could not enqueue task %s", task.id)
            self.repo.transition(
                task.id, {Status.QUEUED}, Status.FAILED, finished_at=utcnow(),
                error=TaskError("enqueue_failed", "The build could not be queued; retry it."),
            )
            raise ServiceUnavailable("The build queue is unavailable; try again.") from None

    def create(
        self, principal: Principal, req: CreateRequest, body: dict[str, Any],
        idempotency_key: str | None,
    ) -> tuple[dict[str, Any], bool]:
        owner = Owner(principal.sub, principal.username, principal.tenant)
        task, is_new = self.store_new(owner, req, body, idempotency_key)
        if is_new:
            self.enqueue(task)
        return self.resource(task), is_new

    def cancel(self, principal: Principal, task_id: str) -> dict[str, Any]:
        task = self._visible(principal, task_id)
        for _ in range(3):
            at = utcnow()
            if task.status is Status.QUEUED:
                done = self.repo.transition(
                    task.id, {Status.QUEUED}, Status.CANCELED, finished_at=at,
                    ttl=at + timedelta(days=self.settings.record_retention_days),
                )
                if done:
                    publish_terminal(self.settings, done)
                    return self.resource(done)
            elif task.status is Status.RUNNING:
                done = self.repo.transition(task.id, {Status.RUNNING}, Status.CANCELING)
                if done:
                    return self.resource(done)
            elif task.status is Status.CANCELING:
                return self.resource(task)
            else:
                raise InvalidState(f"The download is already {task.effective_status(at).value}.")
            task = self._visible(principal, task_id)  # it moved meanwhile: look again
        raise InvalidState("The download is changing state; try again.")

    def retry(self, principal: Principal, task_id: str) -> dict[str, Any]:
        task = self._visible(principal, task_id)
        if task.status not in (Status.FAILED, Status.CANCELED):
            raise InvalidState(
                f"Only failed or canceled downloads can be retried; this one is "
                f"{task.effective_status(utcnow()).value}."
            )
        self._check_quota(task.owner)
        done = self.repo.transition(
            task.id, {task.status}, Status.QUEUED, owner=task.owner,
            attempts=task.attempts + 1, progress={"rows": 0, "bytes": 0},
            clear=("error", "started_at", "finished_at", "expires_at", "size", "md5", "sha256",
                   "content_type", "object_key", "ttl"),
        )
        if done is None:
            raise InvalidState("The download changed state meanwhile; reload it.")
        self.enqueue(done)
        return self.resource(done)

    def delete(self, principal: Principal, task_id: str) -> None:
        task = self._visible(principal, task_id)
        if task.status not in DELETABLE:
            raise InvalidState(f"The download is {task.status.value}; cancel it first.")
        if task.object_key:
            storage.delete_object(self.settings.files_bucket, task.object_key)
        if not self.repo.delete(task.id, DELETABLE):
            if self.repo.get(task.id) is None:
                return
            raise InvalidState("The download started meanwhile; cancel it first.")


def publish_terminal(settings: Settings, task: Task) -> None:
    """Tell the world a task ended; a failure here never changes the task."""
    try:
        events.publish(settings.event_bus_name, f"download.{task.status.value}",
                       event_detail(task, utcnow()))
    except Exception:
        log.exception("could not publish the %s event of task %s", task.status.value, task.id)


__all__ = ["Downloads", "Owner", "ServiceUnavailable", "publish_terminal"]
