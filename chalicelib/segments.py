"""Segmented builds, as plain Python (no AWS here): one export built by many invocations.

A task whose work is larger than one invocation's time budget is planned
into segments by its first build (the *coordinator*). Each segment has a
lifecycle of its own, kept on the task's item so that one conditional write
can check the task's status, its plan and the segment together:

- ``queued`` → ``running``: a worker claims it (or takes over one whose
  worker stopped beating, which is how a crashed segment is rebuilt alone);
- ``running`` → ``succeeded``: its part is stored, with its size, rows and
  checksums, and the task's counter of succeeded segments goes up by one;
  the write that makes the counter reach the total elects the finalizer;
- ``running`` → ``queued``: its build failed and may be tried again
  (``MAX_SEGMENT_TRIES``), or a new plan of the task resets it;
- ``running`` → ``failed``: the last try failed; the task fails with its code.

``SEGMENT_MACHINE`` is that table; the repositories write exactly it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

#: The most segments one task may have: every segment lives on the task's item
#: (about 300 bytes each) and beats it, so this keeps the item small and its writes few.
MAX_SEGMENTS = 32
#: Builds of one segment that may fail with an error before the task fails with its code.
MAX_SEGMENT_TRIES = 3
#: "auto" plans segments of about this share of one invocation's time budget.
BUDGET_SHARE = 0.25
#: S3's smallest part of a multipart upload (all but the last).
MIN_PART = 5 * 1024 * 1024
#: S3's largest part.
MAX_PART = 5 * 1024 * 1024 * 1024
#: S3's cap on parts per upload: a single file's segments share them (``part_span``).
MAX_PARTS = 10_000
AUTO = "auto"
SINGLE = "single"
PARTS = "parts"
OUTPUTS = (SINGLE, PARTS)
MANIFEST_NAME = "manifest.json"


class SegStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class SegGuard(StrEnum):
    """What a segment move's conditional write checks besides the segment's status."""

    #: the writer holds the segment's lease (the build that claimed it)
    LEASE = "lease"
    #: a queued segment, or a running one whose heartbeat is older than the staleness cutoff
    STALE = "stale"


@dataclass(frozen=True)
class SegMove:
    name: str
    sources: frozenset[SegStatus]
    target: SegStatus
    guard: SegGuard = SegGuard.LEASE

    def admits(self, stored: Segment, snapshot: Segment | None, now_epoch: int, stale_after: int) -> bool:
        """Whether the move may be made on ``stored`` by a writer who read ``snapshot``.

        The rule in one place: the in-memory repository evaluates it as is, and
        the DynamoDB repository writes it as a condition (``sources`` each, with
        ``RUNNING`` under ``STALE`` needing a heartbeat older than the cutoff);
        the contract tests hold both to it.
        """
        if stored.status not in self.sources:
            return False
        if self.guard is SegGuard.STALE:
            return stored.status is not SegStatus.RUNNING or stored.is_stale(now_epoch, stale_after)
        return snapshot is not None and stored.lease == snapshot.lease


def _m(name: str, sources: set[SegStatus], target: SegStatus, guard: SegGuard = SegGuard.LEASE
       ) -> SegMove:
    return SegMove(name, frozenset(sources), target, guard)


G = SegStatus
#: A worker takes a queued segment (a running one only once its worker stopped beating).
SEG_CLAIM = _m("claim", {G.QUEUED, G.RUNNING}, G.RUNNING, SegGuard.STALE)
SEG_SUCCEED = _m("succeed", {G.RUNNING}, G.SUCCEEDED)
#: Its build failed and a try is left: back in the queue, alone.
SEG_RETRY = _m("retry", {G.RUNNING}, G.QUEUED)
SEG_FAIL = _m("fail", {G.RUNNING}, G.FAILED)
#: A new plan of the task (a retry, or a build that died): every segment not succeeded starts over.
SEG_RESET = _m("reset", {G.QUEUED, G.RUNNING, G.FAILED}, G.QUEUED)
SEGMENT_MACHINE: tuple[SegMove, ...] = (SEG_CLAIM, SEG_SUCCEED, SEG_RETRY, SEG_FAIL, SEG_RESET)
del G

#: Every stored field of a segment and its key in the task's ``segs`` map, said once:
#: ``to_item``, ``from_item`` and the repositories' writes all read this table.
SEGMENT_FIELDS: dict[str, str] = {
    "number": "n", "spec": "spec", "status": "st", "lease": "ls", "claims": "cl", "tries": "tr",
    "rows": "rows", "bytes": "bytes", "heartbeat_at": "hb", "size": "size", "md5": "md5",
    "sha256": "sha256", "key": "key", "error": "err", "notes": "notes", "parts": "parts",
    "etags": "etags", "stored_at": "at",
}
#: What a stored segment's build records (``finish_segment``), and what a new plan clears.
RESULT_FIELDS = ("rows", "bytes", "size", "md5", "sha256", "key", "notes", "parts", "etags",
                 "stored_at")


@dataclass(frozen=True)
class Segment:
    """One segment of a plan; ``spec`` is the exporter's (a row range, a scan segment...)."""

    number: int
    spec: dict[str, Any]
    status: SegStatus = SegStatus.QUEUED
    #: bumped by every claim: the fencing token of the segment's build
    lease: int = 0
    #: claims since the plan was made (a segment whose builds keep dying fails ``worker_lost``)
    claims: int = 0
    #: builds that failed with an error
    tries: int = 0
    rows: int = 0
    bytes: int = 0
    heartbeat_at: int | None = None  # epoch seconds
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    #: a parts task's file of this segment (a single file's segments write into the task's upload)
    key: str | None = None
    error: dict[str, str] | None = None
    #: what the segment's build left for the finalizer (``Exporter.segment_notes``): small JSON
    notes: dict[str, Any] | None = None
    #: a single file's segment: the part numbers it uploaded, ``[first, last]`` (none: no bytes)
    parts: list[int] | None = None
    #: a digest of those parts' ETags as S3 answered its build (``etag_digest``): the finalizer
    #: completes the upload only with parts whose ETags still give it, so a superseded build's
    #: late part cannot slip into the file
    etags: str | None = None
    #: when its bytes were stored (epoch seconds): a parts file's lifecycle counts from then
    stored_at: int | None = None

    def is_stale(self, now_epoch: int, stale_after: int) -> bool:
        """Whether the build holding this segment has stopped beating."""
        return self.heartbeat_at is not None and self.heartbeat_at < now_epoch - stale_after

    def to_item(self) -> dict[str, Any]:
        """The map stored under the task's ``segs`` (absent values left out)."""
        item = {key: getattr(self, name) for name, key in SEGMENT_FIELDS.items()}
        item["st"] = self.status.value
        return {k: v for k, v in item.items() if v is not None}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Segment:
        def num(name: str) -> int | None:
            value = item.get(SEGMENT_FIELDS[name])
            return None if value is None else int(value)

        values: dict[str, Any] = {name: item.get(key) for name, key in SEGMENT_FIELDS.items()}
        for name in ("lease", "claims", "tries", "rows", "bytes"):
            values[name] = num(name) or 0
        for name in ("number", "heartbeat_at", "size", "stored_at"):
            values[name] = num(name)
        values.update(spec=dict(values["spec"] or {}), status=SegStatus(values["status"] or "queued"),
                      error=dict(values["error"]) if values["error"] else None,
                      notes=_numbers(dict(values["notes"])) if values["notes"] else None,
                      parts=[int(p) for p in values["parts"]] if values["parts"] else None)
        return cls(**values)


def etag_digest(parts: Sequence[tuple[int, str]]) -> str:
    """One short value for a segment's parts as S3 stored them: numbers and ETags, in order."""
    text = ",".join(f"{number}:{etag.strip(chr(34))}" for number, etag in parts)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


def _numbers(value: Any) -> Any:
    """Numbers as the JSON they were written as: DynamoDB may hand back a Decimal or a float."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool) and value == int(value):
        return int(value)
    return value


def seg_key(number: int) -> str:
    """The segment's key in the task's ``segs`` map."""
    return f"{number:05d}"


@dataclass(frozen=True)
class Plan:
    """What the coordinator decided: the segments and what they share (e.g. the columns)."""

    segments: tuple[Segment, ...]
    shared: dict[str, Any] = field(default_factory=dict)
    #: rows the whole export should have, when known (for ``percent``)
    total_rows: int | None = None
    #: a single file's one multipart upload (``{"id", "key"}``), opened by the coordinator
    upload: dict[str, str] | None = None


def fresh(segments: Iterable[Segment]) -> tuple[Segment, ...]:
    """A new plan's segments: succeeded ones kept, the others queued from scratch."""
    cleared = {name: (0 if name in ("rows", "bytes") else None) for name in RESULT_FIELDS}
    return tuple(s if s.status not in SEG_RESET.sources else
                 replace(s, status=SEG_RESET.target, claims=0, tries=0, heartbeat_at=None, error=None,
                         **cleared)
                 for s in segments)


def counts(segments: Sequence[Segment]) -> dict[str, int]:
    """``progress.segments`` of the contract."""
    by = {s: 0 for s in SegStatus}
    for seg in segments:
        by[seg.status] += 1
    return {"total": len(segments), "succeeded": by[SegStatus.SUCCEEDED],
            "running": by[SegStatus.RUNNING], "failed": by[SegStatus.FAILED]}


def progress(segments: Sequence[Segment], total_rows: int | None, final: bool,
             max_running_percent: float = 99.0) -> dict[str, Any]:
    """The task's progress: its segments' rows and bytes added up, and how many are where."""
    rows = sum(s.rows for s in segments)
    out: dict[str, Any] = {"rows": rows, "bytes": sum(s.size if s.size is not None else s.bytes
                                                      for s in segments)}
    if total_rows:
        total = max(total_rows, rows)
        out["total"] = total
        out["percent"] = 100.0 if final else min(max_running_percent, round(100.0 * rows / total, 1))
    out["segments"] = counts(segments)
    return out


def count_for(asked: int | str | None, estimated_seconds: float | None, budget_seconds: float) -> int:
    """How many segments: the number asked, or for "auto" enough that each is about
    ``BUDGET_SHARE`` of one invocation's budget; between 1 and ``MAX_SEGMENTS``."""
    if isinstance(asked, int):
        return max(1, min(MAX_SEGMENTS, asked))
    if not estimated_seconds or budget_seconds <= 0:
        return 1
    return max(1, min(MAX_SEGMENTS, math.ceil(estimated_seconds / (budget_seconds * BUDGET_SHARE))))


def even_ranges(first: int, last: int, count: int) -> list[tuple[int, int]]:
    """``count`` contiguous inclusive ranges covering first..last, sizes differing by one at most."""
    total = last - first + 1
    count = max(1, min(count, total))
    out, start = [], first
    for i in range(count):
        size = total // count + (1 if i < total % count else 0)
        out.append((start, start + size - 1))
        start += size
    return out


def part_name(file_name: str, number: int, total: int, extension: str | None = None) -> str:
    """``export.csv.gz`` → ``export-00001-of-00008.csv.gz``: the stem, the number, the extension.

    Only the format's extension is cut, never another dot of the name
    (``Users v2.1 final.csv`` → ``Users v2.1 final-00001-of-00008.csv``):
    ``extension`` when given (the task's output extension, which its name ends
    with), else the longest extension a registered kind writes that the name
    ends with; a name with none gets the number at its end. The name's own
    spelling of the extension is kept (``REPORT.CSV``).
    """
    name = PurePosixPath(file_name).name
    lower = name.lower()
    if extension is not None and lower.endswith(extension.lower()):
        candidates: Iterable[str] = (extension.lower(),)
    else:
        from chalicelib.exporters import known_extensions  # the exporters import this module

        candidates = known_extensions()
    cut = next((len(e) for e in candidates if e and lower.endswith(e) and len(e) < len(name)), 0)
    stem, suffix = name[:len(name) - cut], name[len(name) - cut:]
    return f"{stem}-{number:05d}-of-{total:05d}{suffix}"


def manifest(task_id: str, file_name: str, fmt: str, content_type: str, files: Sequence[dict[str, Any]]
             ) -> bytes:
    """The parts' manifest: what DynamoDB's export manifest says of its files, in one document."""
    listed = [{k: f[k] for k in ("name", "size", "rows", "md5", "sha256")} for f in files]
    doc = {"version": 1, "task_id": task_id, "file_name": file_name, "format": fmt,
           "content_type": content_type, "output": PARTS,
           "rows": sum(f["rows"] for f in listed), "size": sum(f["size"] for f in listed),
           "files": listed}
    return (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


# -- one file from the segments' parts ------------------------------------------------------------

def part_span(total: int) -> int:
    """Part numbers each segment of a ``total``-segment single file may use (S3 allows 10,000)."""
    return MAX_PARTS // max(1, total)


def first_part(number: int, total: int) -> int:
    """The first part number of segment ``number`` (1-based): segments own ranges in file order."""
    return (number - 1) * part_span(total) + 1


class StepKind(StrEnum):
    #: a segment of at least the part minimum: its parts, as its build uploaded them
    PARTS = "parts"
    #: short segments side by side: their small objects read and uploaded together as parts
    JOIN = "join"
    #: short segments whose bytes are still short of the minimum, then the segment after them,
    #: built again behind their bytes (every part but the file's last must reach the minimum)
    REBUILD = "rebuild"


@dataclass(frozen=True)
class FinishStep:
    kind: StepKind
    #: 0-based indexes of the segments the step makes parts of, in file order
    indexes: tuple[int, ...]


def finish_plan(sizes: Sequence[int], min_part: int = MIN_PART) -> list[FinishStep]:
    """How the finish makes a single file's parts from its segments' sizes, in file order.

    A segment of ``min_part`` or more uploaded only such parts (it held back
    its last part to join its tail). A shorter one stored its bytes as a small
    object instead: a run of them is read and joined into parts, a bounded
    copy (each under ``min_part``, ``MAX_SEGMENTS`` of them at most). A run
    still short of the minimum before a longer segment is the one case that
    costs more: that segment is built again behind the run's bytes. Empty
    segments make nothing.
    """
    steps: list[FinishStep] = []
    i = 0
    while i < len(sizes):
        if not sizes[i]:
            i += 1
        elif sizes[i] >= min_part:
            steps.append(FinishStep(StepKind.PARTS, (i,)))
            i += 1
        else:
            run, total = [], 0
            while i < len(sizes) and sizes[i] < min_part:
                if sizes[i]:
                    run.append(i)
                    total += sizes[i]
                i += 1
            if total >= min_part or i == len(sizes):
                steps.append(FinishStep(StepKind.JOIN, tuple(run)))
            else:
                steps.append(FinishStep(StepKind.REBUILD, (*run, i)))
                i += 1
    return steps


def finish_reads(sizes: Sequence[int], min_part: int = MIN_PART) -> tuple[int, int]:
    """Bytes the finish reads back (short segments) and builds again (rare), for its budget."""
    read = again = 0
    for step in finish_plan(sizes, min_part):
        if step.kind is StepKind.JOIN:
            read += sum(sizes[i] for i in step.indexes)
        elif step.kind is StepKind.REBUILD:
            read += sum(sizes[i] for i in step.indexes[:-1])
            again += sizes[step.indexes[-1]]
    return read, again


def ranges_of(segments: Sequence[Segment]) -> list[dict[str, Any]]:
    """A single file's byte ranges, one per segment in order, with each range's checksums."""
    out, start = [], 0
    for seg in segments:
        size = seg.size or 0
        out.append({"segment": seg.number, "start": start, "size": size, "rows": seg.rows,
                    "md5": seg.md5, "sha256": seg.sha256})
        start += size
    return out
