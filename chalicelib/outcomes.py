"""How a build's end is written: the task's terminal moves and what goes with them.

The whole build, the segments and the finalizer end a task the same ways
(failed with a code, canceled at the owner's word); this is the one place
that writes those moves, publishes their event and removes what the task
leaves in the bucket, so that the build paths share it instead of reaching
into one another.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection

from chalicelib.adapters import storage
from chalicelib.adapters.tasks_repo import TaskStore
from chalicelib.clock import now as utcnow
from chalicelib.config import Settings
from chalicelib.services import publish_terminal
from chalicelib.task import ACKNOWLEDGE_CANCEL, FAIL, Task, TaskError

log = logging.getLogger(__name__)


class Outcomes:
    def __init__(self, settings: Settings, repo: TaskStore) -> None:
        self.settings = settings
        self.repo = repo

    def fail(self, task: Task, code: str, message: str) -> Task | None:
        """The build under ``task``'s lease failed; a single file's open upload goes with it.

        A parts task's stored files stay for a retry (it rebuilds only the others).
        """
        done = self.repo.apply(FAIL, task, utcnow(), error=TaskError(code, message))
        if done:
            log.warning("task %s failed: %s", task.id, json.dumps({"code": code}),
                        extra={"error_code": code})
            if task.plan_upload:
                self.abort_plan_upload(task)
            publish_terminal(self.settings, self.repo, done)
        return done

    def acknowledge_cancel(self, task: Task, clear: bool = False) -> Task | None:
        """The build saw the cancel: the task is canceled. ``clear``: and every object and upload
        of the task goes (a segmented build's other segments stop at their next beat)."""
        done = self.repo.apply(ACKNOWLEDGE_CANCEL, task, utcnow())
        if done:
            log.info("task %s canceled while running", task.id)
            if clear:
                self._clear_after_cancel(task)
            publish_terminal(self.settings, self.repo, done)
        return done

    def _clear_after_cancel(self, task: Task) -> None:
        """The task is canceled already: a failed listing must not turn that into a failed
        message. Tried twice; what is still left, the sweeper's pass over open uploads (they
        belong to no build now) and the bucket's lifecycle rule remove."""
        for attempt in (1, 2):
            try:
                self.clear(task)
                return
            except Exception:
                if attempt == 2:
                    log.exception("task %s: could not clear its objects after the cancel", task.id)
                else:
                    log.warning("task %s: clearing after the cancel failed; once more", task.id,
                                exc_info=True)

    def clear(self, task: Task, keep: Collection[str] = (), keep_uploads: Collection[str] = ()) -> int:
        """Remove what the task has in the bucket, but ``keep`` (keys) and ``keep_uploads`` (ids)."""
        return storage.clear_task(self.settings.files_bucket, storage.task_prefix(task.tenant, task.id),
                                  keep=keep, keep_uploads=keep_uploads)

    def abort_plan_upload(self, task: Task) -> None:
        upload = task.plan_upload or {}
        try:
            storage.abort_upload(self.settings.files_bucket, upload["key"], upload["id"])
        except Exception:  # gone already, or the sweeper's next pass aborts it
            log.info("task %s: its upload could not be aborted now", task.id, exc_info=True)

    def discard(self, key: str) -> None:
        """A file whose task did not record it (its final write failed): it must not stay."""
        try:
            storage.delete_object(self.settings.files_bucket, key)
        except Exception:  # DELETE of the task, or the lifecycle rule, removes it later
            log.exception("could not delete %s after its task's final write failed", key)


__all__ = ["Outcomes"]
