"""The build: claim a task, stream its file to S3, record the outcome.

Called by the SQS handler for each message of a batch. A message that cannot
be understood is moved to the dead-letter queue with its reason; an
unexpected infrastructure error reports the message as failed so SQS retries
it (and, past the redrive limit, dead-letters it); no message blocks another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from chalicelib import logs, metrics
from chalicelib.adapters import queue, storage
from chalicelib.adapters.tasks_repo import TaskRepository, TaskStore
from chalicelib.buildloop import INTERNAL_MESSAGE, Stopped, Why, run_guarded
from chalicelib.clock import now as utcnow
from chalicelib.config import Settings
from chalicelib.errors import ExportError
from chalicelib.exporters import BuildContext, Exporter, get_exporter
from chalicelib.heartbeat import Heartbeat
from chalicelib.messages import InvalidMessage, RequestMessage, SegmentMessage, parse
from chalicelib.outcomes import Outcomes
from chalicelib.principal import Principal
from chalicelib.segmented import Segmented
from chalicelib.services import Downloads, Owner, publish_terminal
from chalicelib.task import CLAIM, SUCCEED, Status, Task

log = logging.getLogger(__name__)

RemainingMs = Callable[[], int]
#: ``percent`` while a build runs: 100 only once the file is stored.
MAX_RUNNING_PERCENT = 99.0


def _no_deadline() -> int:
    return 15 * 60 * 1000


class Worker:
    def __init__(self, settings: Settings, repo: TaskStore | None = None) -> None:
        self.settings = settings
        self.repo = repo or TaskRepository(settings.lifetimes())
        self.downloads = Downloads(settings, self.repo)
        self.outcomes = Outcomes(settings, self.repo)
        self.segmented = Segmented(settings, self.repo, self.outcomes, self.downloads, self.exporter_of)

    # -- batch -----------------------------------------------------------------
    def handle_batch(
        self, records: Iterable[dict[str, Any]], remaining_ms: RemainingMs = _no_deadline
    ) -> dict[str, list[dict[str, str]]]:
        failures: list[dict[str, str]] = []
        for record in records:
            message_id = str(record.get("messageId", "?"))
            with logs.keys(message_id=message_id):
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
            if isinstance(message, SegmentMessage):
                self.segmented.build_segment(message, remaining_ms)
                return
            if isinstance(message, RequestMessage):
                task_id = self.create_requested(message, message_id).id
            else:
                task_id = message.task_id
        except InvalidMessage as exc:
            log.error("message %s is invalid and is moved to the dead-letter queue: %s %s",
                      message_id, exc.code, exc.reason)
            self._dead_letter(record, exc)
            return
        self.build(task_id, remaining_ms)

    def _dead_letter(self, record: dict[str, Any], refused: InvalidMessage) -> None:
        url = queue.queue_url(self.settings.dead_letter_queue_name,
                              self.settings.dead_letter_queue_url)
        queue.send(url, {"reason": refused.reason, "code": refused.code,
                         "message_id": record.get("messageId"), "body": record.get("body")},
                   attributes={"reason": refused.reason[:256], "code": refused.code})

    def create_requested(self, message: RequestMessage, message_id: str) -> Task:
        """``download.request``: one task per idempotency key (or per message).

        The access policy decides as for ``POST /downloads``: the owner, with
        the groups the sender declares, must be allowed the kind and its
        source. The queue's policy is what makes a declaration worth anything:
        only the stack and the senders a deployment names may send
        (docs/queue-messages.md, "Trust"). A refusal creates no task.
        """
        from chalicelib.errors import ApiError

        asker = Principal(sub=message.owner, username=message.owner_name, tenant=message.tenant,
                          groups=message.groups)
        owner = Owner(message.owner, message.owner_name, message.tenant)
        key = message.idempotency_key or f"sqs:{message_id}"
        try:
            self.downloads.check_allowed(asker, message.request)
            task, is_new = self.downloads.store_new(owner, message.request, message.body, key)
        except ApiError as exc:  # the policy, the quota, or a key reused with another body
            log.error("request message %s refused: %s %s", message_id, exc.code, exc.message)
            raise InvalidMessage(exc.message, exc.code) from None
        if not is_new:
            log.info("request message %s repeats task %s", message_id, task.id)
        return task

    # -- build -----------------------------------------------------------------
    def build(self, task_id: str, remaining_ms: RemainingMs = _no_deadline) -> Task | None:
        """Claim a queued task and build it; a late or duplicate delivery does nothing."""
        task = self.repo.get(task_id)
        claimed = self.repo.apply(CLAIM, task, utcnow()) if task and task.status is Status.QUEUED \
            else None
        if claimed is None:
            current = self.repo.get(task_id)
            with logs.keys(task_id=task_id):  # no build of ours: no attempt to name
                log.info("task %s not claimed (status %s): duplicate or late delivery", task_id,
                         current.status.value if current else "missing")
            return current
        with logs.for_task(claimed):  # every line from here on names this build
            metrics.build_started()
            started = time.monotonic()
            try:
                done = self._build(claimed, remaining_ms)
            except Exception:  # whatever happens after the claim ends the task with a code
                log.exception("build of task %s failed unexpectedly", task_id)
                done = self.outcomes.fail(claimed, "internal_error", INTERNAL_MESSAGE)
            metrics.build_ended(done, time.monotonic() - started)
            return done

    @staticmethod
    def exporter_of(task: Task) -> Exporter | None:
        return get_exporter(task.kind)

    def _build(self, task: Task, remaining_ms: RemainingMs) -> Task | None:
        exporter = self.exporter_of(task)
        if exporter is None:
            return self.outcomes.fail(task, "unknown_kind", f"Kind {task.kind!r} is no longer offered.")
        count = self.segmented.count(task, exporter, remaining_ms)
        if count is not None:
            return self.segmented.coordinate(task, exporter, count, remaining_ms)
        key = storage.object_key(task.tenant, task.id, task.lease, task.file_name)
        ctx = BuildContext(self.settings)
        try:
            output = exporter.output(task.params, task.format)
        except ExportError as exc:
            return self.outcomes.fail(task, exc.code, exc.message)
        upload = storage.StreamingUpload(
            self.settings.files_bucket, key, output.content_type,
            storage.content_disposition(task.file_name), self.settings.part_size_bytes,
        )

        def beat() -> Status | None:
            return self.repo.heartbeat(task, self._progress(ctx, upload.size), utcnow())

        def work(heart: Heartbeat) -> None:
            ctx.check = heart.check
            ctx.total_rows = exporter.total_rows(task.params)
            for chunk in exporter.stream(task.params, task.format, ctx):
                upload.write(chunk)
                heart.check()

        def commit(_: None) -> None:
            upload.complete()

        outcome = run_guarded(beat, self.settings, remaining_ms, work, commit, cleanup=upload.abort,
                              what=f"build of task {task.id}")
        if isinstance(outcome, Stopped):
            if outcome.why is Why.CANCELED:
                return self.outcomes.acknowledge_cancel(task)
            if outcome.why is Why.LEASE_LOST:
                return None
            assert outcome.error is not None
            return self.outcomes.fail(task, outcome.error.code, outcome.error.message)
        try:
            done = self.repo.apply(
                SUCCEED, task, utcnow(), size=upload.size, md5=upload.md5, sha256=upload.sha256,
                content_type=output.content_type, object_key=key,
                progress=self._progress(ctx, upload.size, final=True), warnings=ctx.warnings or None,
            )
        except Exception:  # the file is stored but not recorded: it must not outlive the task
            self.outcomes.discard(key)
            raise
        if done is None:  # canceled, or superseded, while the last part went up
            self.outcomes.discard(key)  # ours, and only ours
            return self.outcomes.acknowledge_cancel(task)
        log.info("task %s succeeded: %d rows, %d bytes", task.id, ctx.rows, upload.size)
        if task.lease > 1:  # earlier builds of this task died: leave only the winner's file
            self.outcomes.clear(task, keep=[key])
        publish_terminal(self.settings, self.repo, done)
        return done

    @staticmethod
    def _progress(ctx: BuildContext, size: int, final: bool = False) -> dict[str, Any]:
        """Rows and bytes so far; with a total, ``percent``, which only ever grows.

        A total may be an estimate (DynamoDB's item count), so the rows can pass
        it: ``total`` is then the rows so far, and ``percent`` stays at
        ``MAX_RUNNING_PERCENT`` until the file is stored. 100 means stored.
        """
        progress: dict[str, Any] = {"rows": ctx.rows, "bytes": size}
        if ctx.total_rows:
            total = max(ctx.total_rows, ctx.rows)
            progress["total"] = total
            progress["percent"] = 100.0 if final else min(
                MAX_RUNNING_PERCENT, round(100.0 * ctx.rows / total, 1))
        return progress
