"""Segmented builds: plan, build one segment, finalize (``chalicelib.segments`` has the rules).

The first build of a task (the *coordinator*) plans its segments, records
them on the task and sends one ``download.segment`` message each; each
segment is built by whichever invocation receives its message, into an
object of its own; the invocation whose segment completes the count
finalizes: it composes the one object (``single``) or writes the manifest
(``parts``), and the task succeeds. Every write names the plan's lease, so a
build that lost the task (a cancel, a newer plan) touches nothing but its own
object.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from chalicelib import logs
from chalicelib.adapters import queue, storage
from chalicelib.clock import now as utcnow
from chalicelib.errors import ExportError
from chalicelib.exporters import BuildContext, Exporter
from chalicelib.heartbeat import Canceled, Heartbeat, LeaseLost, OutOfTime
from chalicelib.messages import SEGMENT, SegmentMessage
from chalicelib.segments import (
    MANIFEST_NAME,
    MAX_SEGMENT_TRIES,
    PARTS,
    SINGLE,
    Plan,
    Segment,
    SegStatus,
    count_for,
    fresh,
    manifest,
    part_name,
    seg_key,
)
from chalicelib.segments import progress as segment_progress
from chalicelib.services import publish_terminal
from chalicelib.task import HAND_OFF, SUCCEED, Status, Task, TaskError

if TYPE_CHECKING:
    from chalicelib.worker import Worker

log = logging.getLogger(__name__)

RemainingMs = Callable[[], int]
TIMEOUT_MESSAGE = ("The export did not finish within the worker's time limit; ask for more "
                   "parallelism, narrow it, or ask an operator to raise the limit.")
COMPOSE_TIMEOUT_MESSAGE = ("The segments could not be composed into one file within one invocation's "
                           'time limit; ask for "output": "parts" (one file per segment).')
#: A cautious rate for the finalizer's pass over a single file's bytes (read and hashed), so
#: that the last segment's worker finalizes in place only with time to spare.
FINALIZE_BYTES_PER_SECOND = 100 * 1024 * 1024
FINALIZE_FIXED_SECONDS = 5.0


def segment_count(task: Task, exporter: Exporter, budget_seconds: float, settings: Any) -> int:
    """How many segments to build ``task`` in: 1 is one worker as always (unless ``parts``)."""
    outputs = exporter.outputs(task.format)
    if task.output not in outputs:
        return 1
    asked = task.parallelism if isinstance(task.parallelism, int) else None
    estimate = None if asked else exporter.estimate_seconds(task.params, task.format, settings)
    return count_for(asked, estimate, budget_seconds)


def _segment_key(task: Task, seg: Segment) -> str:
    name = f".seg-{seg_key(seg.number)}-{seg.lease}"
    return storage.object_key(task.tenant, task.id, task.plan_lease, name)


class Segmented:
    """The segmented paths of the worker (the worker's settings, repository and helpers)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.settings = worker.settings
        self.repo = worker.repo

    # -- coordinator -----------------------------------------------------------
    def count(self, task: Task, exporter: Exporter, remaining_ms: RemainingMs) -> int | None:
        """How many segments build a claimed task; None: one worker builds the whole file, as always.

        Decided once a claim (an estimate may ask the source), and handed to ``coordinate``.
        """
        if task.segmented:
            return len(task.segments)
        count = segment_count(task, exporter, self._budget(remaining_ms), self.settings)
        parts = task.output == PARTS and PARTS in exporter.outputs(task.format)
        return count if count > 1 or parts else None

    def _budget(self, remaining_ms: RemainingMs) -> float:
        """Seconds one invocation may build for: what is left of this one, less the margin."""
        return max(1.0, remaining_ms() / 1000.0 - self.settings.time_budget_margin_seconds)

    def coordinate(self, task: Task, exporter: Exporter, count: int, remaining_ms: RemainingMs
                   ) -> Task | None:
        """Plan (or plan again, keeping what succeeded), then send the segments' messages."""
        if task.segmented:
            plan = Plan(self._still_there(task), task.plan_shared, task.plan_rows)
        else:
            try:  # a plan reads the source (DescribeTable, a listing): its problems are the task's
                plan = exporter.plan(task.params, task.format, self.settings, count)
            except ExportError as exc:
                return self.worker._fail(task, exc.code, exc.message)
        stored = self.repo.save_plan(task, plan, utcnow())
        if stored is None:
            log.warning("task %s: lost while planning", task.id)
            return None
        todo = [s for s in stored.segments if s.status is not SegStatus.SUCCEEDED]
        log.info("task %s planned in %d segment(s), %d to build", task.id, len(stored.segments),
                 len(todo))
        if not todo:  # every segment is stored: the finalizer of an earlier plan died
            return self.finalize(stored, exporter, remaining_ms)
        url = queue.queue_url(self.settings.build_queue_name, self.settings.build_queue_url)
        queue.send_many(url, [self._message(stored, s) for s in todo])
        return stored

    def _still_there(self, task: Task) -> tuple[Segment, ...]:
        """The plan's segments for a new plan: a succeeded one whose object is gone is built again."""
        kept = []
        for seg in task.segments:
            if seg.status is SegStatus.SUCCEEDED and (
                    not seg.key or storage.head_size(self.settings.files_bucket, seg.key) != seg.size):
                seg = replace(seg, status=SegStatus.QUEUED)
            kept.append(seg)
        return fresh(kept)

    @staticmethod
    def _message(task: Task, seg: Segment) -> dict[str, Any]:
        return {"type": SEGMENT, "version": 1, "task_id": task.id, "lease": task.plan_lease,
                "segment": seg.number}

    # -- one segment -----------------------------------------------------------
    def build_segment(self, message: SegmentMessage, remaining_ms: RemainingMs) -> Task | None:
        task = self.repo.get(message.task_id)
        if task is None or task.plan_lease != message.lease or task.lease != message.lease:
            with logs.keys(task_id=message.task_id):
                log.info("segment %d of task %s: its plan is gone or superseded", message.segment,
                         message.task_id)
            return task
        seg = self.repo.claim_segment(task, message.segment, utcnow())
        with logs.for_task(task), logs.keys(segment=message.segment):
            if seg is None:
                return self._not_claimed(task, message)
            if seg.claims > self.settings.max_build_claims:
                return self._fail_task(task, seg, TaskError(
                    "worker_lost", f"Segment {seg.number}'s build stopped without a word "
                    f"{seg.claims - 1} times; retry it, or ask an operator to look at the logs."))
            return self._build(task, seg, remaining_ms)

    def _not_claimed(self, task: Task, message: SegmentMessage) -> Task | None:
        current = self._refused(task)
        if current is None or current.status is not Status.CANCELED:
            log.info("segment %d of task %s not claimed: duplicate or late delivery", message.segment,
                     task.id)
        return current

    def _refused(self, task: Task) -> Task | None:
        """A write under ``task``'s lease was refused: the task as it is now.

        A cancel asked under that same lease is acknowledged here (and every
        object of the task goes): this build may be the last one left to see it.
        """
        current = self.repo.get(task.id)
        if current is not None and current.status is Status.CANCELING and current.lease == task.lease:
            return self.worker._acknowledge_cancel(current, clear=True)
        return current

    def _build(self, task: Task, seg: Segment, remaining_ms: RemainingMs) -> Task | None:
        exporter = self.worker.exporter_of(task)
        assert exporter is not None  # a plan exists only for a kind that could make it
        output = exporter.output(task.params, task.format)
        key = _segment_key(task, seg)
        name = part_name(task.file_name, seg.number, len(task.segments)) if task.is_parts \
            else task.file_name
        ctx = BuildContext(self.settings)
        upload = storage.StreamingUpload(self.settings.files_bucket, key, output.content_type,
                                         storage.content_disposition(name),
                                         self.settings.part_size_bytes)

        def beat() -> Status | None:
            return self.repo.beat_segment(task, seg, ctx.rows, upload.size, utcnow())

        heart = Heartbeat(beat, self.settings.progress_interval_seconds, remaining_ms,
                          self.settings.time_budget_margin_seconds * 1000)
        ctx.check = heart.check
        error: TaskError | None = None
        try:
            with heart:
                for chunk in exporter.stream_segment(task.params, task.format, ctx, task.plan_shared,
                                                     seg, whole_file=task.is_parts):
                    upload.write(chunk)
                    heart.check()
                heart.beat_now()
                heart.check()
                upload.complete()
        except Canceled:
            self.worker._abort(upload)
            return self.worker._acknowledge_cancel(task, clear=True)
        except LeaseLost:
            self.worker._abort(upload)
            log.warning("segment %d of task %s: no longer ours; stopped", seg.number, task.id)
            return None
        except OutOfTime:
            self.worker._abort(upload)
            error = TaskError("timeout", TIMEOUT_MESSAGE)
        except ExportError as exc:
            self.worker._abort(upload)
            error = TaskError(exc.code, exc.message)
        except Exception:
            self.worker._abort(upload)
            log.exception("segment %d of task %s failed unexpectedly", seg.number, task.id)
            error = TaskError("internal_error", "The export failed because of an internal error.")
        if error is not None:
            return self._segment_failed(task, seg, error)
        result: dict[str, Any] = {"rows": ctx.rows, "bytes": upload.size, "size": upload.size,
                                  "md5": upload.md5, "sha256": upload.sha256, "key": key}
        notes = exporter.segment_notes(ctx)
        if notes:
            result["notes"] = notes
        done = self.repo.finish_segment(task, seg, utcnow(), **result)
        if done is None:  # canceled or superseded while its last part went up: ours goes
            storage.delete_object(self.settings.files_bucket, key)
            return self._refused(task)
        log.info("segment %d of %d of task %s stored: %d rows, %d bytes", seg.number,
                 len(done.segments), task.id, ctx.rows, upload.size)
        if done.segments_done == len(done.segments):  # ours was the last: we, and only we, finalize
            return self._finalize_or_hand_off(done, exporter, remaining_ms)
        return done

    def _finalize_or_hand_off(self, task: Task, exporter: Exporter, remaining_ms: RemainingMs
                              ) -> Task | None:
        """Finalize here if what is left of this invocation is ample, else in a fresh one."""
        need = FINALIZE_FIXED_SECONDS
        if task.output == SINGLE:
            need += sum(s.size or 0 for s in task.segments) / FINALIZE_BYTES_PER_SECOND
        if self._budget(remaining_ms) >= 2 * need:
            return self.finalize(task, exporter, remaining_ms, fresh=False)
        return self.hand_off(task)

    def hand_off(self, task: Task) -> Task | None:
        """Queue the task again under its plan: the next claim finds every segment stored and
        finalizes with a whole time budget (the claim's lease makes it the only one)."""
        done = self.repo.apply(HAND_OFF, task, utcnow())
        if done is None:
            return self._refused(task)
        log.info("task %s: every segment stored; finalizing in a fresh invocation", task.id)
        self.worker.downloads.send_build(done)  # if it is lost, the sweeper sends it again
        return done

    def _segment_failed(self, task: Task, seg: Segment, error: TaskError) -> Task | None:
        retry = seg.tries + 1 < MAX_SEGMENT_TRIES
        stored = self.repo.fail_segment(task, seg, error, retry, utcnow())
        if stored is None:
            return self._refused(task)
        if retry:
            log.warning("segment %d of task %s failed (%s); trying it again", seg.number, task.id,
                        error.code)
            url = queue.queue_url(self.settings.build_queue_name, self.settings.build_queue_url)
            queue.send(url, self._message(task, seg), delay_seconds=2 ** (seg.tries + 1))
            return stored
        return self._fail_task(task, seg, error)

    def _fail_task(self, task: Task, seg: Segment, error: TaskError) -> Task | None:
        """The task fails with the segment's code; the segments that succeeded stay for a retry."""
        prefix = f"Segment {seg.number} of {len(task.segments)}: "
        return self.worker._fail(task, error.code, prefix + error.message)

    # -- finalizer -------------------------------------------------------------
    def finalize(self, task: Task, exporter: Exporter, remaining_ms: RemainingMs, fresh: bool = True
                 ) -> Task | None:
        """Compose the one object, or write the manifest; then the task succeeds, once.

        ``fresh``: this invocation claimed the task to finalize it (a whole
        budget); else it is the last segment's, which hands off if time runs out.
        """
        output = exporter.output(task.params, task.format)
        segments = task.segments
        rows = sum(s.rows for s in segments)
        final = segment_progress(segments, task.plan_rows, final=True)
        running = {**final, "percent": min(final.get("percent", 99.0), 99.0)}

        def beat() -> Status | None:
            return self.repo.heartbeat(task, running, utcnow())

        heart = Heartbeat(beat, self.settings.progress_interval_seconds, remaining_ms,
                          self.settings.time_budget_margin_seconds * 1000)
        bucket = self.settings.files_bucket
        fields: dict[str, Any] = {}
        keep: list[str] = []
        try:
            with heart:
                if task.output == SINGLE:
                    key = storage.object_key(task.tenant, task.id, task.plan_lease, task.file_name)
                    keep.append(key)
                    fields = self._single(task, key, output.content_type, heart.check)
                else:
                    fields = self._manifest(task, output.content_type)
                    keep += [f["key"] for f in fields["files"]] + [fields["manifest"]["key"]]
                heart.beat_now()
                heart.check()
        except Canceled:
            return self.worker._acknowledge_cancel(task, clear=True)
        except LeaseLost:
            log.warning("task %s: lost while finalizing; stopped", task.id)
            return None
        except OutOfTime:
            if not fresh:
                return self.hand_off(task)
            return self.worker._fail(task, "timeout", COMPOSE_TIMEOUT_MESSAGE)
        except ExportError as exc:
            return self.worker._fail(task, exc.code, exc.message)
        done = self.repo.apply(SUCCEED, task, utcnow(), content_type=output.content_type,
                               progress=final, warnings=self._warnings(task, exporter) or None, **fields)
        if done is None:  # canceled, or superseded, at the last moment
            return self._refused(task)
        log.info("task %s succeeded from %d segments: %d rows, %d bytes", task.id, len(segments), rows,
                 done.size or 0)
        # the segments' own objects of a single file, and whatever dead builds left: gone
        storage.clear_task(bucket, storage.task_prefix(task.tenant, task.id), keep=keep)
        publish_terminal(self.settings, self.repo, done)
        return done

    @staticmethod
    def _warnings(task: Task, exporter: Exporter) -> list[dict[str, str]]:
        """The segments' warnings merged by the kind; a failure loses them, never the file."""
        try:
            return exporter.segment_warnings(task.params, task.plan_shared,
                                             [s.notes for s in task.segments])
        except Exception:
            log.warning("task %s: could not merge its segments' warnings", task.id, exc_info=True)
            return []

    def _single(self, task: Task, key: str, content_type: str, check: Callable[[], None]
                ) -> dict[str, Any]:
        """Compose the one object and take its checksums, side by side.

        The copy is S3's work and the checksums a read of the same bytes, so
        the read runs beside the copy rather than after it; whichever stops
        first (an error, a cancel) stops the other at its next check.
        """
        bucket = self.settings.files_bucket
        keys = [s.key or "" for s in task.segments]
        stopped = threading.Event()

        def go_on() -> None:
            if stopped.is_set():
                raise OutOfTime()  # the other pass failed: its error is the one raised
            check()

        def digest() -> tuple[int, str, str]:
            try:
                return storage.digest(bucket, keys, go_on)
            except BaseException:
                stopped.set()
                raise

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest") as pool:
            read = pool.submit(contextvars.copy_context().run, digest)
            try:
                storage.compose(bucket, key, keys, [s.size or 0 for s in task.segments], content_type,
                                storage.content_disposition(task.file_name), go_on)
            except BaseException as err:
                stopped.set()
                first = read.exception()  # waits: the read stops at its next check
                if isinstance(err, OutOfTime) and first is not None and not isinstance(first, OutOfTime):
                    raise first from None  # the read failed first: its error is the reason
                raise
            size, md5, sha256 = read.result()
        return {"size": size, "md5": md5, "sha256": sha256, "object_key": key}

    def _manifest(self, task: Task, content_type: str) -> dict[str, Any]:
        total = len(task.segments)
        files = [{"name": part_name(task.file_name, s.number, total), "key": s.key, "size": s.size,
                  "rows": s.rows, "md5": s.md5, "sha256": s.sha256} for s in task.segments]
        body = manifest(task.id, task.file_name, task.format, content_type, files)
        key = storage.object_key(task.tenant, task.id, task.plan_lease, MANIFEST_NAME)
        md5, sha256 = storage.put_small(self.settings.files_bucket, key, body,
                                        "application/json", storage.content_disposition(MANIFEST_NAME))
        return {"files": files, "size": sum(f["size"] or 0 for f in files), "object_key": key,
                "manifest": {"name": MANIFEST_NAME, "key": key, "size": len(body), "md5": md5,
                             "sha256": sha256}}


__all__ = ["Segmented", "segment_count"]
