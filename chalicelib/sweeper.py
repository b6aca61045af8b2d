"""The sweeper: what repairs the work of builds, messages and processes that died.

It runs on a schedule (every minute in the deployment, on a timer in the
local stack) and looks at the tasks of the sparse ``by_due`` index whose due
time has passed:

- a ``queued`` task whose message was lost (the API died between the write
  and the send, or SQS dropped it) gets its build message again, at doubling
  intervals; past ``QUEUED_EXPIRY_HOURS`` it fails ``not_started``;
- a ``running`` task whose heartbeat is older than ``STALE_AFTER_SECONDS``
  (its Lambda died) is put back in the queue, or fails ``worker_lost`` once
  ``MAX_BUILD_CLAIMS`` builds of it have died;
- a ``canceling`` task whose build died is finished ``canceled``;
- a finished task whose event did not go out gets it published.

Each of those moves is a conditional write, so two sweepers (or a sweeper
and a build that turns out to be alive) never both win. Then every open
multipart upload whose build no longer holds its task's lease is aborted.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

from chalicelib import logs, metrics
from chalicelib.adapters import storage
from chalicelib.adapters.tasks_repo import TaskRepository, TaskStore
from chalicelib.clock import now as utcnow
from chalicelib.config import Settings
from chalicelib.segments import SegStatus
from chalicelib.services import Downloads, publish_terminal
from chalicelib.task import (
    ABANDON,
    ACTIVE,
    BUILDING,
    FAIL_QUEUED,
    LOSE,
    REQUEUE,
    TERMINAL,
    Status,
    Task,
    TaskError,
)

log = logging.getLogger(__name__)

#: The longest wait between two resends of a queued task's message.
MAX_RESEND_INTERVAL = timedelta(hours=1)


class Sweeper:
    def __init__(self, settings: Settings, repo: TaskStore | None = None) -> None:
        self.settings = settings
        self.lifetimes = settings.lifetimes()
        self.repo = repo or TaskRepository(self.lifetimes)
        self.downloads = Downloads(settings, self.repo)

    def sweep(self, now: datetime | None = None) -> Counter[str]:
        """One pass; returns what it did, by action, for the logs and the tests."""
        now = now or utcnow()
        done: Counter[str] = Counter()
        for task_id in list(self.repo.due(now)):
            task = self.repo.get(task_id)
            if task is None or task.due_at is None or task.due_at > now:
                continue  # gone, or moved on since the index was read
            with logs.for_task(task):  # what it does to the task is logged under the task's keys
                try:
                    done[self._look_at(task, now)] += 1
                except Exception:
                    log.exception("sweeper could not handle task %s; next pass tries again", task_id)
                    done["error"] += 1
        aborted = self._abort_orphan_uploads()
        if aborted:
            done["uploads_aborted"] += aborted
        done.pop("nothing", None)
        if done:
            log.info("sweep: %s", dict(done))
        metrics.swept(done)
        return done

    def _look_at(self, task: Task, now: datetime) -> str:
        if task.status is Status.QUEUED:
            return self._queued(task, now)
        if task.status in BUILDING:
            if not task.is_stale(now, self.lifetimes.stale_after):
                return "nothing"  # a beat landed after the index was read
            return self._dead_build(task, now)
        if task.status in TERMINAL and self.repo.postpone(task, now + self.lifetimes.event_grace):
            published = publish_terminal(self.settings, self.repo, task)
            return "event_published" if published else "event_failed"
        return "nothing"

    def _queued(self, task: Task, now: datetime) -> str:
        queued_at = task.queued_at or task.created_at
        if now - queued_at >= timedelta(hours=self.settings.queued_expiry_hours):
            done = self.repo.apply(FAIL_QUEUED, task, now, error=TaskError(
                "not_started", "The build never started; retry it."))
            if done:
                publish_terminal(self.settings, self.repo, done)
                return "failed_not_started"
            return "nothing"
        waited = max(now - queued_at, self.lifetimes.resend_after)
        if not self.repo.postpone(task, now + min(waited, MAX_RESEND_INTERVAL)):
            return "nothing"  # another sweeper resends it
        self.downloads.send_build(task)
        return "resent"

    def _dead_build(self, task: Task, now: datetime) -> str:
        if self._segments_waiting(task):
            return self._resend_segments(task, now)
        if task.status is Status.CANCELING:
            action, done = "canceled", self.repo.apply(ABANDON, task, now)
        elif task.claims >= self.settings.max_build_claims:
            lost = TaskError("worker_lost", f"The build stopped without a word {task.claims} times; "
                             "retry it, or ask an operator to look at the worker's logs.")
            action = "failed_worker_lost"
            done = self.repo.apply(LOSE, task, now, error=lost)
        else:
            action, done = "requeued", self.repo.apply(REQUEUE, task, now)
        if done is None:
            return "nothing"
        log.warning("task %s: build %d stopped beating at %s: %s", task.id, task.lease,
                    task.heartbeat_at.isoformat() if task.heartbeat_at else "?", action)
        # no build holds the task now: whatever its dead builds left is garbage, but the
        # segments that succeeded (the next plan keeps them; a canceled task keeps nothing)
        canceled = done.status is Status.CANCELED
        kept = [s.key for s in task.segments if s.key and s.status is SegStatus.SUCCEEDED] \
            if not canceled else []
        uploads = [task.plan_upload["id"]] if task.plan_upload and done.status is Status.QUEUED else []
        storage.clear_task(self.settings.files_bucket, storage.task_prefix(task.tenant, task.id),
                           keep=kept, keep_uploads=uploads)
        if done.status is Status.QUEUED:
            self.downloads.send_build(done)
        else:
            publish_terminal(self.settings, self.repo, done)
        return action

    @staticmethod
    def _segments_waiting(task: Task) -> bool:
        """A running task whose plan has segments still to build is waiting for them, not dead.

        Its coordinator ended once it sent their messages; until a segment is
        claimed nothing beats the task, however long other builds keep the
        queue busy. A segment whose own build died is taken over by its next
        claim (which counts toward its ``worker_lost``); only a task whose
        every segment is stored and that nobody finishes is a dead build.
        """
        return (task.status is Status.RUNNING and task.segmented and task.plan_lease == task.lease
                and task.segments_done < len(task.segments))

    def _resend_segments(self, task: Task, now: datetime) -> str:
        """Send the messages of its segments still to build again, at doubling intervals (one of
        them may have been lost, or dead-lettered); a duplicate is refused by its claim."""
        stale = int(now.timestamp() - self.lifetimes.stale_after.total_seconds())
        todo = [s for s in task.segments if s.status is SegStatus.QUEUED
                or (s.status is SegStatus.RUNNING and (s.heartbeat_at is None or s.heartbeat_at < stale))]
        since = task.heartbeat_at or task.started_at or now
        # from the staleness cutoff, doubling: a segment whose worker died is sent again within
        # one more cutoff, and a task that waits long in a busy queue costs few resends
        waited = max(now - since, self.lifetimes.stale_after)
        if not self.repo.postpone(task, now + min(waited, MAX_RESEND_INTERVAL)):
            return "nothing"  # another sweeper resends them
        if todo:
            self.downloads.send_segments(task, todo)
        log.info("task %s: %d segment(s) waiting for a worker; their messages sent again", task.id,
                 len(todo))
        return "segments_resent"

    def _abort_orphan_uploads(self) -> int:
        """Abort multipart uploads whose build no longer holds its task's lease."""
        aborted = 0
        bucket = self.settings.files_bucket
        for key, upload_id in list(storage.open_uploads(bucket, "downloads/")):
            parsed = storage.parse_object_key(key)
            task = self.repo.get(parsed[0]) if parsed else None
            if task is not None and task.status in BUILDING and task.lease == parsed[1]:
                continue  # its build is alive (or the sweep will requeue it first)
            if (task is not None and task.status in ACTIVE and task.plan_upload
                    and task.plan_upload["id"] == upload_id):
                continue  # a single file's upload, which its segments write into across builds
            keys = logs.task_keys(task) if task is not None else {}
            if parsed:
                keys.update(task_id=parsed[0], attempt=parsed[1])  # the build that left it
            with logs.keys(**keys):
                storage.abort_upload(bucket, key, upload_id)
                log.info("aborted the upload of %s: its build no longer holds the task", key)
            aborted += 1
        return aborted
