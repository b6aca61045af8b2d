"""Segmented builds: plan, build one segment, finish (``chalicelib.segments`` has the rules).

The first build of a task (the *coordinator*) plans its segments, records
them on the task and sends one ``download.segment`` message each. A single
file's segments write straight into the task's one multipart upload, each in
its own range of part numbers; a parts task's segments each store a file of
their own. The invocation whose segment completes the count finishes: it
completes the upload (``single``) or writes the manifest (``parts``), and the
task succeeds. Nothing is copied and nothing read back, whatever the size.

Every write names the plan's lease, so a build that lost the task (a cancel,
a newer plan) changes nothing of it; a superseded segment's late part is
kept out of the file by the ETags its successor recorded.
"""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib import logs
from chalicelib.adapters import storage
from chalicelib.adapters.tasks_repo import TaskStore
from chalicelib.buildloop import Done, Stopped, Why, run_guarded
from chalicelib.clock import now as utcnow
from chalicelib.config import Settings
from chalicelib.errors import ExportError
from chalicelib.exporters import BuildContext, Exporter
from chalicelib.heartbeat import Heartbeat
from chalicelib.messages import SegmentMessage
from chalicelib.outcomes import Outcomes
from chalicelib.segments import (
    MANIFEST_NAME,
    MAX_SEGMENT_TRIES,
    MIN_PART,
    PARTS,
    SINGLE,
    FinishStep,
    Plan,
    Segment,
    SegStatus,
    StepKind,
    count_for,
    etag_digest,
    finish_plan,
    finish_reads,
    first_part,
    fresh,
    manifest,
    part_name,
    part_span,
    ranges_of,
    seg_key,
)
from chalicelib.segments import progress as segment_progress
from chalicelib.services import Downloads, publish_terminal
from chalicelib.task import HAND_OFF, SUCCEED, Status, Task, TaskError

log = logging.getLogger(__name__)

RemainingMs = Callable[[], int]
ExporterOf = Callable[[Task], "Exporter | None"]
#: The finish's own work (list the parts, complete the upload, the task's write): the same
#: small number of requests whatever the size, so the last segment's worker finishes in place.
FINALIZE_FIXED_SECONDS = 5.0
#: A cautious rate for what a finish may have to build again (a short segment between others).
REBUILD_BYTES_PER_SECOND = 20 * 1024 * 1024
#: A cautious rate for reading short segments' small objects back (at most MAX_SEGMENTS × 5 MiB).
READ_BYTES_PER_SECOND = 50 * 1024 * 1024
#: Completions refused because a part changed after it was listed, before the task fails.
MAX_COMPLETIONS = 3
#: How long a segment waits on the queue when its tenant builds all the segments it may
#: (``MAX_BUILDING_SEGMENTS_PER_TENANT``), at least; SQS delays a message by 900 s at most.
SLOT_WAIT_SECONDS = 30


def segment_count(task: Task, exporter: Exporter, budget_seconds: float, settings: Any) -> int:
    """How many segments to build ``task`` in: 1 is one worker as always (unless ``parts``)."""
    outputs = exporter.outputs(task.format)
    if task.output not in outputs:
        return 1
    asked = task.parallelism if isinstance(task.parallelism, int) else None
    estimate = None if asked else exporter.estimate_seconds(task.params, task.format, settings)
    return count_for(asked, estimate, budget_seconds)


def _short_key(task: Task, seg: Segment) -> str:
    """A single file's segment shorter than S3's part minimum: its bytes until the finish joins them."""
    name = f".short-{seg_key(seg.number)}-{seg.lease}"
    return storage.object_key(task.tenant, task.id, task.plan_lease, name)


def _segment_key(task: Task, seg: Segment) -> str:
    """A parts task's file of one segment build (its lease in the name: one per build)."""
    name = f".seg-{seg_key(seg.number)}-{seg.lease}"
    return storage.object_key(task.tenant, task.id, task.plan_lease, name)


class Segmented:
    """The segmented paths of the build, on the same settings, repository and outcomes."""

    def __init__(self, settings: Settings, repo: TaskStore, outcomes: Outcomes, downloads: Downloads,
                 exporter_of: ExporterOf) -> None:
        self.settings = settings
        self.repo = repo
        self.outcomes = outcomes
        self.downloads = downloads
        self.exporter_of = exporter_of

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
        opened: dict[str, str] | None = None
        if task.segmented:
            segments, upload = self._still_there(task)
            if task.output == SINGLE and upload is None:
                upload = opened = self._open_upload(task, exporter)
            plan = Plan(segments, task.plan_shared, task.plan_rows, upload)
        else:
            try:  # a plan reads the source (DescribeTable, a listing): its problems are the task's
                plan = exporter.plan(task.params, task.format, self.settings, count)
            except ExportError as exc:
                return self.outcomes.fail(task, exc.code, exc.message)
            if task.output == SINGLE:
                plan = replace(plan, upload=self._open_upload(task, exporter))
                opened = plan.upload
        stored = self.repo.save_plan(task, plan, utcnow())
        if stored is None:  # canceled while planning, or superseded: the new upload goes
            if opened is not None:
                self.outcomes.abort_plan_upload(replace(task, plan_upload=opened))
            log.warning("task %s: lost while planning", task.id)
            return self._refused(task)
        todo = [s for s in stored.segments if s.status is not SegStatus.SUCCEEDED]
        log.info("task %s planned in %d segment(s), %d to build", task.id, len(stored.segments),
                 len(todo))
        if not todo:  # every segment is stored: the finalizer of an earlier plan died
            return self.finalize(stored, exporter, remaining_ms)
        self.downloads.send_segments(stored, todo)
        return stored

    def _open_upload(self, task: Task, exporter: Exporter) -> dict[str, str]:
        output = exporter.output(task.params, task.format)
        key = storage.object_key(task.tenant, task.id, task.lease, task.file_name)
        upload_id = storage.create_upload(self.settings.files_bucket, key, output.content_type,
                                          storage.content_disposition(task.file_name))
        return {"id": upload_id, "key": key}

    def _still_there(self, task: Task) -> tuple[tuple[Segment, ...], dict[str, str] | None]:
        """The plan's segments for a new plan, and the upload a single file keeps.

        A parts file that is gone, or that S3's lifecycle would remove before
        half a file's lifetime is over, is built again (a file's lifetime counts
        from its object's creation, not from the retry). A single file whose
        upload is gone (aborted when the task failed) builds every segment again.
        """
        bucket = self.settings.files_bucket
        segments = list(task.segments)
        upload = task.plan_upload
        if task.output == SINGLE:
            if upload is None or storage.list_parts(bucket, upload["key"], upload["id"]) is None:
                upload = None
                segments = [replace(s, status=SegStatus.QUEUED) for s in segments]
            for i, seg in enumerate(segments):  # a short segment's small object must still be there
                if seg.status is SegStatus.SUCCEEDED and seg.key and \
                        storage.head_size(bucket, seg.key) != seg.size:
                    segments[i] = replace(seg, status=SegStatus.QUEUED)
            return fresh(segments), upload
        half_life = self.settings.lifetimes().file_ttl / 2
        oldest = utcnow() - half_life
        for i, seg in enumerate(segments):
            if seg.status is SegStatus.SUCCEEDED and (
                    not seg.key or seg.stored_at is None or _at(seg.stored_at) < oldest
                    or storage.head_size(bucket, seg.key) != seg.size):
                segments[i] = replace(seg, status=SegStatus.QUEUED)
        return fresh(segments), None

    # -- one segment -----------------------------------------------------------
    def build_segment(self, message: SegmentMessage, remaining_ms: RemainingMs) -> Task | None:
        task = self.repo.get(message.task_id)
        if task is None or task.plan_lease != message.lease or task.lease != message.lease:
            with logs.keys(task_id=message.task_id):
                log.info("segment %d of task %s: its plan is gone or superseded", message.segment,
                         message.task_id)
            return task
        # one of the tenant's slots first: a claim marks the segment running, and a running
        # segment's next delivery is refused as a duplicate
        holder = f"{task.id}:{message.segment}:{secrets.token_hex(4)}"
        until = utcnow() + timedelta(milliseconds=remaining_ms())  # nothing outlives the invocation
        if not self.repo.take_building_slot(task.tenant, holder, utcnow(), until,
                                            self.settings.max_building_segments_per_tenant):
            return self._wait_for_slot(task, message)
        try:
            return self._claim_and_build(task, message, remaining_ms)
        finally:
            try:
                self.repo.release_building_slot(task.tenant, holder)
            except Exception:  # the slot frees itself at ``until``
                log.warning("task %s: could not give segment %d's slot back", task.id, message.segment,
                            exc_info=True)

    def _wait_for_slot(self, task: Task, message: SegmentMessage) -> Task:
        """The tenant builds as many segments as it may: this one is sent again, later.

        Not a failure and no claim: the segment stays queued and its message comes
        back after ``SLOT_WAIT_SECONDS`` (and up to as much again, so that the
        waiting ones do not all return at once). A copy for a segment that is no
        longer queued (built, failed, or running elsewhere) is dropped: its claim
        would refuse it, and the sweeper sends a dead one's message again.
        """
        seg = next((s for s in task.segments if s.number == message.segment), None)
        with logs.for_task(task), logs.keys(segment=message.segment):
            if seg is None or seg.status is not SegStatus.QUEUED:
                log.info("segment %d of task %s is not queued: nothing to wait for", message.segment,
                         task.id)
                return task
            delay = SLOT_WAIT_SECONDS + random.randint(0, SLOT_WAIT_SECONDS)
            log.info("segment %d of task %s waits %d s: tenant %s builds %d segments already",
                     message.segment, task.id, delay, task.tenant,
                     self.settings.max_building_segments_per_tenant)
            self.downloads.send_segments(task, [seg], delay_seconds=delay)
        return task

    def _claim_and_build(self, task: Task, message: SegmentMessage, remaining_ms: RemainingMs
                         ) -> Task | None:
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
            return self.outcomes.acknowledge_cancel(current, clear=True)
        return current

    def _build(self, task: Task, seg: Segment, remaining_ms: RemainingMs) -> Task | None:
        exporter = self.exporter_of(task)
        assert exporter is not None  # a plan exists only for a kind that could make it
        output = exporter.output(task.params, task.format)
        ctx = BuildContext(self.settings)
        total = len(task.segments)
        key: str | None = None
        if task.is_parts:
            key = _segment_key(task, seg)
            upload: storage.StreamingUpload | storage.RangeUpload = storage.StreamingUpload(
                self.settings.files_bucket, key, output.content_type,
                storage.content_disposition(part_name(task.file_name, seg.number, total)),
                self.settings.part_size_bytes)
        else:
            assert task.plan_upload is not None
            upload = storage.RangeUpload(self.settings.files_bucket, task.plan_upload["key"],
                                         task.plan_upload["id"], first_part(seg.number, total),
                                         part_span(total), self.settings.part_size_bytes)

        def beat() -> Status | None:
            return self.repo.beat_segment(task, seg, ctx.rows, upload.size, utcnow())

        def work(heart: Heartbeat) -> None:
            ctx.check = heart.check
            for chunk in exporter.stream_segment(task.params, task.format, ctx, task.plan_shared, seg,
                                                 whole_file=task.is_parts):
                upload.write(chunk)
                heart.check()

        def commit(_: None) -> list[tuple[int, str]]:
            if isinstance(upload, storage.RangeUpload):
                parts = upload.finish()
                if upload.short:  # too short to be a part before another: a small object instead
                    self._store_short(task, seg, output.content_type, upload.short)
                return parts
            upload.complete()
            return []

        outcome = run_guarded(beat, self.settings, remaining_ms, work, commit, cleanup=upload.abort,
                              what=f"segment {seg.number} of task {task.id}")
        if isinstance(outcome, Stopped):
            return self._segment_stopped(task, seg, outcome)
        parts = outcome.value
        if isinstance(upload, storage.RangeUpload) and upload.short:
            key = _short_key(task, seg)
        result: dict[str, Any] = {"rows": ctx.rows, "bytes": upload.size, "size": upload.size,
                                  "md5": upload.md5, "sha256": upload.sha256, "key": key,
                                  "stored_at": int(utcnow().timestamp()),
                                  "notes": exporter.segment_notes(ctx) or None}
        if parts:
            result.update(parts=[parts[0][0], parts[-1][0]], etags=etag_digest(parts))
        done = self.repo.finish_segment(task, seg, utcnow(), **result)
        if done is None:  # canceled or superseded while its last part went up
            if key is not None:
                self.outcomes.discard(key)  # ours, and only ours
            return self._refused(task)
        log.info("segment %d of %d of task %s stored: %d rows, %d bytes", seg.number,
                 len(done.segments), task.id, ctx.rows, upload.size)
        if done.segments_done == len(done.segments):  # ours was the last: we, and only we, finish
            return self._finalize_or_hand_off(done, exporter, remaining_ms)
        return done

    def _segment_stopped(self, task: Task, seg: Segment, stopped: Stopped) -> Task | None:
        if stopped.why is Why.CANCELED:
            return self.outcomes.acknowledge_cancel(task, clear=True)
        if stopped.why is Why.LEASE_LOST:
            return None
        assert stopped.error is not None
        return self._segment_failed(task, seg, stopped.error)

    def _finalize_or_hand_off(self, task: Task, exporter: Exporter, remaining_ms: RemainingMs
                              ) -> Task | None:
        """Finish here if what is left of this invocation is ample, else in a fresh one."""
        need = FINALIZE_FIXED_SECONDS
        if task.output == SINGLE:
            read, again = finish_reads([s.size or 0 for s in task.segments])
            need += read / READ_BYTES_PER_SECOND + again / REBUILD_BYTES_PER_SECOND
        if self._budget(remaining_ms) >= 2 * need:
            return self.finalize(task, exporter, remaining_ms, fresh=False)
        return self.hand_off(task)

    def hand_off(self, task: Task) -> Task | None:
        """Queue the task again under its plan: the next claim finds every segment stored and
        finishes with a whole time budget (the claim's lease makes it the only one)."""
        done = self.repo.apply(HAND_OFF, task, utcnow())
        if done is None:
            return self._refused(task)
        log.info("task %s: every segment stored; finishing in a fresh invocation", task.id)
        self.downloads.send_build(done)  # if it is lost, the sweeper sends it again
        return done

    def _segment_failed(self, task: Task, seg: Segment, error: TaskError) -> Task | None:
        retry = seg.tries + 1 < MAX_SEGMENT_TRIES
        stored = self.repo.fail_segment(task, seg, error, retry, utcnow())
        if stored is None:
            return self._refused(task)
        if retry:
            log.warning("segment %d of task %s failed (%s); trying it again", seg.number, task.id,
                        error.code)
            self.downloads.send_segments(task, [seg], delay_seconds=2 ** (seg.tries + 1))
            return stored
        return self._fail_task(task, seg, error)

    def _fail_task(self, task: Task, seg: Segment, error: TaskError) -> Task | None:
        """The task fails with the segment's code; a parts task's stored files stay for a retry."""
        prefix = f"Segment {seg.number} of {len(task.segments)}: "
        return self.outcomes.fail(task, error.code, prefix + error.message)

    # -- finish ----------------------------------------------------------------
    def finalize(self, task: Task, exporter: Exporter, remaining_ms: RemainingMs, fresh: bool = True
                 ) -> Task | None:
        """Complete the one upload, or write the manifest; then the task succeeds, once.

        ``fresh``: this invocation claimed the task to finish it (a whole
        budget); else it is the last segment's, which hands off if time runs out.
        """
        output = exporter.output(task.params, task.format)
        if self._files_lost(task):  # a new plan builds them again
            log.warning("task %s: a segment's file is gone before the finish; planning again", task.id)
            return self.hand_off(task)
        final = segment_progress(task.segments, task.plan_rows, final=True)
        running = {**final, "percent": min(final.get("percent", 99.0), 99.0)}

        def beat() -> Status | None:
            return self.repo.heartbeat(task, running, utcnow())

        def work(heart: Heartbeat) -> dict[str, Any]:
            if task.output == SINGLE:
                return self._single(task, exporter, heart)
            return self._manifest(task, output.content_type)

        outcome = run_guarded(beat, self.settings, remaining_ms, work, what=f"finish of task {task.id}")
        if isinstance(outcome, Stopped):
            if outcome.why is Why.CANCELED:
                return self.outcomes.acknowledge_cancel(task, clear=True)
            if outcome.why is Why.LEASE_LOST:
                return None
            if outcome.why is Why.OUT_OF_TIME and not fresh:
                return self.hand_off(task)
            assert outcome.error is not None
            return self.outcomes.fail(task, outcome.error.code, outcome.error.message)
        return self._succeed(task, exporter, outcome, output.content_type, final)

    def _succeed(self, task: Task, exporter: Exporter, outcome: Done[dict[str, Any]], content_type: str,
                 final: dict[str, Any]) -> Task | None:
        fields = outcome.value
        keep = [fields["object_key"]] + [f["key"] for f in fields.get("files") or []]
        try:
            done = self.repo.apply(SUCCEED, task, utcnow(), content_type=content_type, progress=final,
                                   warnings=self._warnings(task, exporter) or None, **fields)
        except Exception:  # the file (a parts task's manifest) is stored but not recorded: it goes
            self.outcomes.discard(fields["object_key"])
            raise
        if done is None:  # canceled, or superseded, at the last moment
            return self._refused(task)
        log.info("task %s succeeded from %d segments: %d rows, %d bytes", task.id, len(task.segments),
                 final.get("rows", 0), done.size or 0)
        self.outcomes.clear(task, keep=keep)  # whatever dead or superseded builds left
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

    def _single(self, task: Task, exporter: Exporter, heart: Heartbeat) -> dict[str, Any]:
        """Complete the task's one upload: a handful of requests, whatever the file's size.

        ``finish_plan`` says how each segment becomes parts: as its build
        uploaded them (checked against the ETags it recorded: a superseded
        build's late part landed over one, and that segment is built again
        here), joined from short segments' small objects (a bounded read), or,
        rarely, built again behind a run of short ones. A completion refused
        because a part changed after the listing lists again.
        """
        assert task.plan_upload is not None
        bucket, key, upload_id = (self.settings.files_bucket, task.plan_upload["key"],
                                  task.plan_upload["id"])
        segments = list(task.segments)
        made: dict[tuple[int, ...], list[tuple[int, str]]] = {}  # parts this finish uploaded
        for _ in range(MAX_COMPLETIONS):
            heart.check()
            listed = storage.list_parts(bucket, key, upload_id)
            if listed is None:
                raise ExportError("internal_error", "The file's upload was lost before it was "
                                  "completed; retry the export.")
            steps = finish_plan([s.size or 0 for s in segments])
            parts: list[tuple[int, str]] = []
            for n, step in enumerate(steps):
                done = made.get(step.indexes)
                if done is not None and all(listed.get(p) == etag for p, etag in done):
                    parts += done
                    continue
                if step.kind is StepKind.PARTS and self._intact(segments[step.indexes[0]], listed):
                    seg = segments[step.indexes[0]]
                    assert seg.parts is not None
                    parts += [(p, listed[p]) for p in range(seg.parts[0], seg.parts[1] + 1)]
                    continue
                done = self._make(task, exporter, segments, step, heart, last=n == len(steps) - 1)
                made[step.indexes] = done
                parts += done
            heart.check()
            if not parts:  # no bytes at all: an empty file, as one worker stores it
                storage.abort_upload(bucket, key, upload_id)
                output = exporter.output(task.params, task.format)
                storage.put_empty(bucket, key, output.content_type,
                                  storage.content_disposition(task.file_name))
            else:
                try:
                    storage.complete_upload(bucket, key, upload_id, parts)
                except storage.PartRejected:
                    log.warning("task %s: a part changed after it was listed; listing again", task.id)
                    continue
            return {"size": sum(s.size or 0 for s in segments), "md5": None, "sha256": None,
                    "object_key": key, "ranges": ranges_of(segments)}
        raise ExportError("internal_error", "The file's parts kept changing while it was completed; "
                          "retry the export.")

    @staticmethod
    def _intact(seg: Segment, listed: dict[int, str]) -> bool:
        if seg.parts is None:
            return False
        numbers = range(seg.parts[0], seg.parts[1] + 1)
        if any(n not in listed for n in numbers):
            return False
        return etag_digest([(n, listed[n]) for n in numbers]) == seg.etags

    def _make(self, task: Task, exporter: Exporter, segments: list[Segment], step: FinishStep,
              heart: Heartbeat, last: bool) -> list[tuple[int, str]]:
        """Upload ``step``'s parts here, into its segments' part numbers: short segments' small
        objects read back (each checked against its sha256), the others built again from their
        spec (their ranges' checksums computed anew, in ``segments``)."""
        assert task.plan_upload is not None
        total = len(segments)
        first = segments[step.indexes[0]].number
        span = part_span(total) * (segments[step.indexes[-1]].number - first + 1)
        upload = storage.RangeUpload(self.settings.files_bucket, task.plan_upload["key"],
                                     task.plan_upload["id"], first_part(first, total), span,
                                     self.settings.part_size_bytes, may_end_short=last)
        try:
            for i in step.indexes:
                seg = segments[i]
                if step.kind is not StepKind.PARTS and seg.key and (seg.size or 0) < MIN_PART:
                    body = storage.read_small(self.settings.files_bucket, seg.key)
                    if hashlib.sha256(body).hexdigest() != seg.sha256:
                        raise ExportError("internal_error", f"Segment {seg.number}'s bytes changed "
                                          "after they were stored; retry the export.")
                    upload.write(body)
                    heart.check()
                    continue
                log.info("task %s: building segment %d again for the finish", task.id, seg.number)
                ctx = BuildContext(self.settings)
                ctx.check = heart.check
                md5, sha, size = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0
                for chunk in exporter.stream_segment(task.params, task.format, ctx, task.plan_shared, seg,
                                                     whole_file=False):
                    upload.write(chunk)
                    md5.update(chunk)
                    sha.update(chunk)
                    size += len(chunk)
                    heart.check()
                segments[i] = replace(seg, rows=ctx.rows, bytes=size, size=size, md5=md5.hexdigest(),
                                      sha256=sha.hexdigest())
            return upload.finish()
        except BaseException:
            upload.abort()
            raise

    def _files_lost(self, task: Task) -> bool:
        """Whether a parts file, or a short segment's small object, is not there as its segment
        stored it (one HEAD a segment that has one)."""
        if task.is_parts:
            return any(not s.key or storage.head_size(self.settings.files_bucket, s.key) != s.size
                       for s in task.segments)
        return any(s.key and storage.head_size(self.settings.files_bucket, s.key) != s.size
                   for s in task.segments)

    def _store_short(self, task: Task, seg: Segment, content_type: str, body: bytes) -> None:
        storage.put_small(self.settings.files_bucket, _short_key(task, seg), body, content_type,
                          storage.content_disposition(task.file_name))

    def _manifest(self, task: Task, content_type: str) -> dict[str, Any]:
        total = len(task.segments)
        files = [{"name": part_name(task.file_name, s.number, total), "key": s.key, "size": s.size,
                  "rows": s.rows, "md5": s.md5, "sha256": s.sha256} for s in task.segments]
        body = manifest(task.id, task.file_name, task.format, content_type, files)
        key = storage.object_key(task.tenant, task.id, task.plan_lease, MANIFEST_NAME)
        md5, sha256 = storage.put_small(self.settings.files_bucket, key, body,
                                        "application/json", storage.content_disposition(MANIFEST_NAME))
        fields: dict[str, Any] = {
            "files": files, "size": sum(f["size"] or 0 for f in files), "object_key": key,
            "manifest": {"name": MANIFEST_NAME, "key": key, "size": len(body), "md5": md5,
                         "sha256": sha256}}
        stored = [s.stored_at for s in task.segments if s.stored_at is not None]
        if stored:  # S3's lifecycle counts from each file's creation: so does the task's expiry
            life = self.settings.lifetimes()
            expires = min(utcnow() + life.file_ttl, _at(min(stored)) + life.file_ttl)
            fields.update(expires_at=expires, ttl=expires + life.record_retention)
        return fields


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


__all__ = ["Segmented", "segment_count"]
