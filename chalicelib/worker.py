"""The build: claim a task, stream its file to S3, record the outcome.

Called by the SQS handler for each message of a batch. A message that cannot
be understood is moved to the dead-letter queue with its reason; an
unexpected infrastructure error reports the message as failed so SQS retries
it (and, past the redrive limit, dead-letters it); no message blocks another.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from chalicelib.adapters import queue, storage
from chalicelib.adapters.tasks_repo import TaskRepository
from chalicelib.clock import now as utcnow
from chalicelib.config import Settings
from chalicelib.errors import ExportError
from chalicelib.exporters import BuildContext, get_exporter
from chalicelib.messages import InvalidMessage, RequestMessage, parse
from chalicelib.services import Downloads, Owner, publish_terminal
from chalicelib.task import Status, Task, TaskError

log = logging.getLogger(__name__)

RemainingMs = Callable[[], int]


class _Canceled(Exception):
    pass


class _OutOfTime(Exception):
    pass


def _no_deadline() -> int:
    return 15 * 60 * 1000


class Worker:
    def __init__(self, settings: Settings, repo: TaskRepository | None = None) -> None:
        self.settings = settings
        self.repo = repo or TaskRepository()
        self.downloads = Downloads(settings, self.repo)

    # -- batch -----------------------------------------------------------------
    def handle_batch(
        self, records: Iterable[dict[str, Any]], remaining_ms: RemainingMs = _no_deadline
    ) -> dict[str, list[dict[str, str]]]:
        failures: list[dict[str, str]] = []
        for record in records:
            message_id = str(record.get("messageId", "?"))
            try:
                self.handle_record(record, remaining_ms)
            except Exception:
                log.exception("message %s failed; SQS will deliver it again", message_id)
                failures.append({"itemIdentifier": message_id})
        return {"batchItemFailures": failures}

    def handle_record(self, record: dict[str, Any], remaining_ms: RemainingMs) -> None:
        message_id = str(record.get("messageId", "?"))
        try:
            message = parse(record.get("body", ""))
            if isinstance(message, RequestMessage):
                task_id = self.create_requested(message, message_id).id
            else:
                task_id = message.task_id
        except InvalidMessage as exc:
            log.error("message %s is invalid and is moved to the dead-letter queue: %s",
                      message_id, exc.reason)
            self._dead_letter(record, exc.reason)
            return
        self.build(task_id, remaining_ms)

    def _dead_letter(self, record: dict[str, Any], reason: str) -> None:
        url = queue.queue_url(self.settings.dead_letter_queue_name,
                              self.settings.dead_letter_queue_url)
        queue.send(url, {"reason": reason, "message_id": record.get("messageId"),
                         "body": record.get("body")},
                   attributes={"reason": reason[:256]})

    def create_requested(self, message: RequestMessage, message_id: str) -> Task:
        """``download.request``: one task per idempotency key (or per message)."""
        from chalicelib.errors import ApiError

        owner = Owner(message.owner, message.owner_name, message.tenant)
        key = message.idempotency_key or f"sqs:{message_id}"
        try:
            task, is_new = self.downloads.store_new(owner, message.request, message.body, key)
        except ApiError as exc:  # quota or key reused with another body
            log.error("request message %s refused: %s %s", message_id, exc.code, exc.message)
            raise InvalidMessage(exc.message) from None
        if not is_new:
            log.info("request message %s repeats task %s", message_id, task.id)
        return task

    # -- build -----------------------------------------------------------------
    def build(self, task_id: str, remaining_ms: RemainingMs = _no_deadline) -> Task | None:
        started = utcnow()
        task = self.repo.transition(
            task_id, {Status.QUEUED}, Status.RUNNING, started_at=started, heartbeat_at=started,
            progress={"rows": 0, "bytes": 0},
        )
        if task is None:
            stale_before = started - timedelta(seconds=self.settings.stale_after_seconds)
            task = self.repo.reclaim_stale(task_id, stale_before, started)
            if task is not None:
                log.warning("task %s was running without a heartbeat since before %s: "
                            "its build died; building it again", task_id, stale_before.isoformat())
        if task is None:
            current = self.repo.get(task_id)
            log.info("task %s not claimed (status %s): duplicate or late delivery", task_id,
                     current.status.value if current else "missing")
            return current
        exporter = get_exporter(task.kind)
        if exporter is None:
            return self._fail(task, "unknown_kind", f"Kind {task.kind!r} is no longer offered.")
        output = exporter.output(task.params, task.format)
        key = storage.object_key(task.tenant, task.id, task.file_name)
        upload = storage.StreamingUpload(
            self.settings.files_bucket, key, output.content_type,
            storage.content_disposition(task.file_name), self.settings.part_size_bytes,
        )
        ctx = BuildContext(self.settings, total_rows=exporter.total_rows(task.params))
        try:
            self._stream(task, exporter.stream(task.params, task.format, ctx), upload, ctx,
                         remaining_ms)
        except _Canceled:
            self._abort(upload)
            return self._canceled(task)
        except _OutOfTime:
            self._abort(upload)
            return self._fail(task, "timeout",
                              "The export did not finish within the worker's time limit; "
                              "narrow it (fewer rows, filters) or ask an operator to raise it.")
        except ExportError as exc:
            self._abort(upload)
            return self._fail(task, exc.code, exc.message)
        except Exception:
            log.exception("build of task %s failed unexpectedly", task.id)
            self._abort(upload)
            return self._fail(task, "internal_error",
                              "The export failed because of an internal error.")
        finished = utcnow()
        done = self.repo.transition(
            task.id, {Status.RUNNING}, Status.SUCCEEDED,
            size=upload.size, md5=upload.md5, sha256=upload.sha256,
            content_type=output.content_type, object_key=key, finished_at=finished,
            expires_at=finished + timedelta(days=self.settings.file_ttl_days),
            ttl=finished + timedelta(days=self.settings.file_ttl_days
                                     + self.settings.record_retention_days),
            progress=self._progress(ctx, upload.size, final=True),
        )
        if done is None:  # canceled while the last part went up
            storage.delete_object(self.settings.files_bucket, key)
            return self._canceled(task)
        log.info("task %s succeeded: %d rows, %d bytes", task.id, ctx.rows, upload.size)
        publish_terminal(self.settings, done)
        return done

    def _stream(
        self, task: Task, chunks: Iterable[bytes], upload: storage.StreamingUpload,
        ctx: BuildContext, remaining_ms: RemainingMs,
    ) -> None:
        interval = self.settings.progress_interval_seconds
        margin_ms = self.settings.time_budget_margin_seconds * 1000
        next_check = time.monotonic() + interval
        for chunk in chunks:
            upload.write(chunk)
            if time.monotonic() >= next_check:
                status = self.repo.heartbeat(task.id, self._progress(ctx, upload.size), utcnow())
                if status is not Status.RUNNING:
                    raise _Canceled()
                if remaining_ms() < margin_ms:
                    raise _OutOfTime()
                next_check = time.monotonic() + interval
        current = self.repo.get(task.id)
        if current is None or current.status is not Status.RUNNING:
            raise _Canceled()
        upload.complete()

    @staticmethod
    def _progress(ctx: BuildContext, size: int, final: bool = False) -> dict[str, Any]:
        progress: dict[str, Any] = {"rows": ctx.rows, "bytes": size}
        if ctx.total_rows:
            progress["total"] = ctx.total_rows
            progress["percent"] = 100.0 if final else round(
                min(99.9, 100.0 * ctx.rows / ctx.total_rows), 1)
        return progress

    @staticmethod
    def _abort(upload: storage.StreamingUpload) -> None:
        try:
            upload.abort()
        except Exception:
            log.exception("could not abort the upload of %s", upload.key)

    def _fail(self, task: Task, code: str, message: str) -> Task | None:
        at = utcnow()
        done = self.repo.transition(
            task.id, {Status.RUNNING, Status.CANCELING}, Status.FAILED,
            error=TaskError(code, message), finished_at=at,
            ttl=at + timedelta(days=self.settings.record_retention_days),
        )
        if done:
            log.warning("task %s failed: %s", task.id, json.dumps({"code": code}))
            publish_terminal(self.settings, done)
        return done

    def _canceled(self, task: Task) -> Task | None:
        at = utcnow()
        done = self.repo.transition(
            task.id, {Status.CANCELING, Status.RUNNING}, Status.CANCELED, finished_at=at,
            ttl=at + timedelta(days=self.settings.record_retention_days),
        )
        if done:
            log.info("task %s canceled while running", task.id)
            publish_terminal(self.settings, done)
        return done
