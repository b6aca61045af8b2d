"""API use cases: create, list, get, file, cancel, retry, delete.

Routes call these with a Principal and parsed input; visibility is checked
here, once, so no route can forget it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib import cursor as cursors
from chalicelib.adapters import events, queue, storage
from chalicelib.adapters.tasks_repo import (
    INDEX_HASH,
    IdempotencyRecord,
    KeyExists,
    QuotaExceeded,
    StartKeyRejected,
    TaskRepository,
    TaskStore,
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
    ValidationError,
)
from chalicelib.exporters import REGISTRY, get_exporter
from chalicelib.ids import IdWindow, is_valid, ms_at, new_id
from chalicelib.messages import BUILD, SEGMENT
from chalicelib.policy import Forbidden, Policy
from chalicelib.policy import load as load_policy
from chalicelib.principal import Principal, Scope
from chalicelib.segments import Segment
from chalicelib.task import (
    ABANDON,
    BUILDING,
    CANCEL_QUEUED,
    DELETABLE,
    FAIL_QUEUED,
    REQUEST_CANCEL,
    RETRY,
    TERMINAL,
    ZERO_PROGRESS,
    Status,
    Task,
    TaskError,
    TaskFilter,
)
from chalicelib.validation import CreateRequest, ListQuery, final_file_name

log = logging.getLogger(__name__)

#: A listing page reads at most this many items per requested item, so a
#: selective filter yields a short page with a cursor rather than a long read.
SCAN_FACTOR = 10


class ServiceUnavailable(ApiError):
    status = 503
    code = "unavailable"


class MultipleFiles(ApiError):
    """``/file`` of a parts task: there is no one file to redirect to."""

    status = 409
    code = "multiple_files"


@dataclass(frozen=True)
class Owner:
    sub: str
    name: str
    tenant: str
    #: where the task's "ready" mail goes; None: no mail
    notify_email: str | None = None


def body_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def event_detail(task: Task, at: datetime) -> dict[str, Any]:
    detail = task.to_resource(at)
    detail.pop("url", None)
    detail.pop("url_expires_at", None)
    return detail


class Downloads:
    def __init__(
        self, settings: Settings, repo: TaskStore | None = None, policy: Policy | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy or load_policy()
        self.lifetimes = settings.lifetimes()
        self.repo = repo or TaskRepository(self.lifetimes)

    # -- reading -------------------------------------------------------------
    def kinds(self, principal: Principal) -> dict[str, Any]:
        """The kinds the caller may use, each with the sources it may read and examples that work.

        The examples go into the kind's schema (JSON Schema's ``examples``),
        where a form or a CLI looks for them; they use the caller's sources,
        so every one of them passes the access policy too.
        """
        items = []
        for exporter in REGISTRY.values():
            if not self.policy.may_use(principal, exporter.kind):
                continue
            item = exporter.describe()
            allowed: list[str] = []
            if exporter.source_param:
                allowed = list(self.policy.sources(
                    principal, exporter.kind, exporter.deployment_sources(self.settings)))
                item["sources"] = {"param": exporter.source_param, "allowed": allowed}
            examples = exporter.examples(allowed, self.settings)
            if examples:  # a copy: the schema is the exporter's, shared by every caller
                item["params_schema"] = {**item["params_schema"], "examples": examples}
            items.append(item)
        return {"items": items}

    def check_allowed(self, principal: Principal, req: CreateRequest) -> None:
        """403 for a kind, or a source of it, outside the caller's policy or the deployment's."""
        exporter = get_exporter(req.kind)
        assert exporter is not None
        source = None
        if exporter.source_param:
            source = (exporter.source_param, req.params.get(exporter.source_param),
                      exporter.deployment_sources(self.settings))
        self.policy.check(principal, req.kind, source)

    def preflight(self, req: CreateRequest) -> None:
        """The kind's cheap checks of its source (``Exporter.preflight``): a 400 for a mistake.

        A source that cannot answer now is not the caller's mistake, and a 503
        would block creates that the build (which retries) could well serve:
        the create goes on and the build reports what it finds.
        """
        exporter = get_exporter(req.kind)
        assert exporter is not None
        try:
            exporter.preflight(req.params, self.settings)
        except ApiError:
            raise
        except Exception:
            log.warning("could not check the source of a %s export at create; the build will",
                        req.kind, exc_info=True)

    def resource(self, task: Task, at: datetime | None = None) -> dict[str, Any]:
        at = at or utcnow()
        url = url_expires = None
        urls: dict[str, str] = {}
        ttl = url_lifetime(self.settings.url_ttl_seconds, task.expires_at, at)
        if task.effective_status(at) is Status.SUCCEEDED and task.files:
            for f in [*task.files, task.manifest or {}]:
                if f.get("key"):
                    content_type = "application/json" if f is task.manifest else task.content_type
                    urls[f["key"]], url_expires = storage.presign_get(
                        self.settings.files_bucket, f["key"], f["name"], content_type, ttl, at)
        elif task.effective_status(at) is Status.SUCCEEDED and task.object_key:
            url, url_expires = storage.presign_get(
                self.settings.files_bucket, task.object_key, task.file_name,
                task.content_type, ttl, at,
            )
        if url_expires is not None and ttl < self.settings.url_ttl_seconds:
            url_expires = task.expires_at  # capped: the URL ends with the file (to the second it is signed)
        return task.to_resource(at, url, url_expires, urls)

    def _visible(self, principal: Principal, task_id: str) -> Task:
        task = self.repo.get(task_id) if is_valid(task_id) else None
        if task is None or not principal.can_see(task):
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
        if task.files:
            raise MultipleFiles(
                f"The download is {len(task.files)} files: each has its url in files "
                f"(GET /downloads/{task.id}), and manifest.json lists them with their checksums.")
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
        """The index partition to read: never wider than what the caller may see.

        A tenant admin's reads stay in its tenant: its own tenant's partition,
        or an owner's, with a filter on the tenant (see ``_filters``).
        """
        if principal.scope is Scope.OWN:
            return "by_owner", principal.sub
        if principal.scope is Scope.TENANT and q.tenant not in (None, principal.tenant):
            raise Forbidden(f"You may list the downloads of tenant {principal.tenant!r} only.",
                            details=[{"field": "tenant", "issue": "is not your tenant"}])
        if q.owner:
            return "by_owner", q.owner
        if q.tenant or principal.scope is Scope.TENANT:
            return "by_tenant", q.tenant or principal.tenant
        return "by_scope", "all"

    @staticmethod
    def _filters(principal: Principal, q: ListQuery, index: str, at: datetime) -> TaskFilter:
        """What the listing keeps of its partition; a tenant admin's reads stay in its tenant."""
        tenant = principal.tenant if principal.scope is Scope.TENANT else q.tenant
        return TaskFilter(
            at=at, statuses=q.statuses, kind=q.kind or None, task_name=q.task_name or None,
            file_name=q.file_name or None,
            tenant=tenant if tenant and index != "by_tenant" else None,
        )

    # -- writing -------------------------------------------------------------
    def new_task(self, owner: Owner, req: CreateRequest, idempotency_key: str | None) -> Task:
        at = utcnow()
        exporter = get_exporter(req.kind)
        assert exporter is not None
        ext = exporter.output(req.params, req.format).extension
        return Task(
            id=new_id(ms_at(at)), owner=owner.sub, owner_name=owner.name, tenant=owner.tenant,
            task_name=req.task_name, file_name=final_file_name(req.file_name, req.task_name, ext, at),
            kind=req.kind, format=req.format, params=req.params, status=Status.QUEUED,
            created_at=at, attempts=1, progress=dict(ZERO_PROGRESS),
            idempotency_key=idempotency_key, notify_email=owner.notify_email,
            parallelism=req.parallelism, output=req.output,
        )

    def _too_many(self) -> TooManyActiveTasks:
        cap = self.settings.max_active_tasks
        return TooManyActiveTasks(
            f"You have {cap} active downloads; wait for one to finish or cancel one.")

    def store_new(
        self, owner: Owner, req: CreateRequest, body: dict[str, Any], idempotency_key: str | None
    ) -> tuple[Task, bool]:
        """Store a queued task, or return the one this idempotency key made.

        The task, its key and its quota slot are one transaction, so a cap
        holds under any number of parallel creates, and a repeat takes no slot.
        """
        task = self.new_task(owner, req, idempotency_key)
        key = None
        if idempotency_key is not None:
            key = IdempotencyRecord(
                "idem#" + owner.sub + "#" + hashlib.sha256(idempotency_key.encode()).hexdigest(),
                body_hash(body), timedelta(hours=self.settings.idempotency_ttl_hours))
        try:
            return self.repo.add(task, self.settings.max_active_tasks, key)
        except QuotaExceeded:
            raise self._too_many() from None
        except KeyExists as exc:
            if key is None or exc.body_hash != key.body_hash:
                raise IdempotencyConflict(
                    "This Idempotency-Key was used with a different request body."
                ) from None
            return exc.task, False

    def send_build(self, task: Task) -> None:
        url = queue.queue_url(self.settings.build_queue_name, self.settings.build_queue_url)
        queue.send(url, {"type": BUILD, "version": 1, "task_id": task.id})

    def send_segments(self, task: Task, segments: Sequence[Segment], delay_seconds: int = 0) -> None:
        """The segments' messages, under the plan's lease (a duplicate is refused by its claim)."""
        url = queue.queue_url(self.settings.build_queue_name, self.settings.build_queue_url)
        messages = [{"type": SEGMENT, "version": 1, "task_id": task.id, "lease": task.plan_lease,
                     "segment": s.number} for s in segments]
        if delay_seconds:
            for message in messages:
                queue.send(url, message, delay_seconds=delay_seconds)
        else:
            queue.send_many(url, messages)

    def enqueue(self, task: Task) -> Task:
        """Send the build message; if the queue cannot take it, the task fails ``enqueue_failed``.

        A client that sees the 503 may try again with the same Idempotency-Key,
        which queues that task again, so nothing runs behind its back and
        nothing is lost.
        """
        try:
            self.send_build(task)
            return task
        except Exception:
            log.exception("could not enqueue task %s", task.id)
            done = self.repo.apply(
                FAIL_QUEUED, task, utcnow(),
                error=TaskError("enqueue_failed", "The build could not be queued; retry it."))
            if done is not None:
                publish_terminal(self.settings, self.repo, done)
            raise ServiceUnavailable("The build queue is unavailable; try again.") from None

    def _replayed(self, task: Task) -> Task:
        """A repeat of a create: make sure the first one's build is on its way."""
        if task.status is Status.QUEUED:
            return self.enqueue(task)  # its message may have been lost; builds are idempotent
        if task.status is Status.FAILED and task.error and task.error.code == "enqueue_failed":
            return self._requeue(task)
        return task

    def create(
        self, principal: Principal, req: CreateRequest, body: dict[str, Any],
        idempotency_key: str | None,
    ) -> tuple[dict[str, Any], bool]:
        self.check_allowed(principal, req)
        notify_email = self.mail_to(principal, req.notify_email)
        self.preflight(req)
        owner = Owner(principal.sub, principal.username, principal.tenant, notify_email)
        task, is_new = self.store_new(owner, req, body, idempotency_key)
        task = self.enqueue(task) if is_new else self._replayed(task)
        return self.resource(task), is_new

    def mail_to(self, principal: Principal, asked: bool | None) -> str | None:
        """The address a new task's "ready" mail goes to, or None for no mail.

        Asked for explicitly, mail must be possible (a sender configured, a
        verified address on the account), else the create says why. By the
        deployment's default, it is sent where it can be and silently not otherwise.
        """
        wanted = self.settings.notify_email_default if asked is None else asked
        if not wanted:
            return None
        problem = None
        if not self.settings.mail_sender:
            problem = "cannot be true: this deployment sends no mail"
        elif principal.email is None:
            problem = "needs a verified email address on your account"
        if problem is None:
            return principal.email
        if asked:
            raise ValidationError.of([{"field": "notify.email", "issue": problem}], "validation_error")
        return None

    def rename(self, principal: Principal, task_id: str, task_name: str) -> dict[str, Any]:
        """A new name for a task the caller may see, in any status (the stored file keeps its name)."""
        self._visible(principal, task_id)
        renamed = self.repo.rename(task_id, task_name)
        if renamed is None:  # deleted meanwhile
            raise NotFound(f"No download {task_id!r}.")
        return self.resource(renamed)

    def cancel(self, principal: Principal, task_id: str) -> dict[str, Any]:
        task = self._visible(principal, task_id)
        for _ in range(3):
            at = utcnow()
            if task.status is Status.QUEUED:
                done = self.repo.apply(CANCEL_QUEUED, task, at)
                if done and task.segmented:  # the segments a plan stored (a retry, a hand-off)
                    storage.clear_task(self.settings.files_bucket,
                                       storage.task_prefix(task.tenant, task.id))
            elif task.status in BUILDING and task.is_stale(at, self.lifetimes.stale_after):
                done = self.repo.apply(ABANDON, task, at)
                if done:  # its build is dead: nobody else will clean up after it
                    storage.clear_task(self.settings.files_bucket,
                                       storage.task_prefix(task.tenant, task.id))
            elif task.status is Status.RUNNING:
                done = self.repo.apply(REQUEST_CANCEL, task, at)
            elif task.status is Status.CANCELING:
                return self.resource(task)
            else:
                raise InvalidState(f"The download is already {task.effective_status(at).value}.")
            if done:
                if done.status in TERMINAL:
                    publish_terminal(self.settings, self.repo, done)
                return self.resource(done)
            task = self._visible(principal, task_id)  # it moved meanwhile: look again
        raise InvalidState("The download is changing state; try again.")

    def _requeue(self, task: Task) -> Task:
        try:
            done = self.repo.apply(RETRY, task, utcnow(), cap=self.settings.max_active_tasks)
        except QuotaExceeded:
            raise self._too_many() from None
        if done is None:
            raise InvalidState("The download changed state meanwhile; reload it.")
        return self.enqueue(done)

    def retry(self, principal: Principal, task_id: str) -> dict[str, Any]:
        task = self._visible(principal, task_id)
        if task.status not in RETRY.sources:
            raise InvalidState(
                f"Only failed or canceled downloads can be retried; this one is "
                f"{task.effective_status(utcnow()).value}."
            )
        return self.resource(self._requeue(task))

    def delete(self, principal: Principal, task_id: str) -> None:
        task = self._visible(principal, task_id)
        if task.status not in DELETABLE:
            raise InvalidState(f"The download is {task.status.value}; cancel it first.")
        if not self.repo.delete(task):
            if self.repo.get(task.id) is None:
                return
            raise InvalidState("The download started meanwhile; cancel it first.")
        # the whole prefix, whatever the task knows of it: a build whose upload completed but whose
        # final write failed left a file the task does not name (no object_key), and a segmented
        # task has parts and segments besides
        storage.clear_task(self.settings.files_bucket, storage.task_prefix(task.tenant, task.id))


def url_lifetime(ttl_seconds: int, expires_at: datetime | None, at: datetime) -> int:
    """A presigned URL's lifetime in seconds: ``URL_TTL_SECONDS``, but never past the file's expiry.

    A URL that outlived ``expires_at`` would still fetch a file the API calls
    expired (the bucket's lifecycle deletes it only days later). At least one
    second: a task whose expiry has come is expired, and gets no URL at all.
    """
    if expires_at is None:
        return ttl_seconds
    return max(1, min(ttl_seconds, int((expires_at - at).total_seconds())))


def publish_terminal(settings: Settings, repo: TaskStore, task: Task) -> bool:
    """Tell the world a task ended, then stop watching it; a failure never changes the task.

    The terminal write left the event pending (``due_at``): if publishing
    fails here, or the process dies first, the sweeper publishes it later.
    """
    try:
        events.publish(settings.event_bus_name, f"download.{task.status.value}",
                       event_detail(task, utcnow()))
    except Exception:
        log.exception("could not publish the %s event of task %s; the sweeper will",
                      task.status.value, task.id)
        return False
    repo.event_sent(task)
    return True


__all__ = ["Downloads", "Owner", "ServiceUnavailable", "publish_terminal"]
