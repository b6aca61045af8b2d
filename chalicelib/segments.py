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
#: S3's largest part (and largest range of an UploadPartCopy).
MAX_PART = 5 * 1024 * 1024 * 1024
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


@dataclass(frozen=True)
class SegMove:
    name: str
    sources: frozenset[SegStatus]
    target: SegStatus


def _m(name: str, sources: set[SegStatus], target: SegStatus) -> SegMove:
    return SegMove(name, frozenset(sources), target)


G = SegStatus
#: A worker takes a queued segment (a running one only once its worker stopped beating).
SEG_CLAIM = _m("claim", {G.QUEUED, G.RUNNING}, G.RUNNING)
SEG_SUCCEED = _m("succeed", {G.RUNNING}, G.SUCCEEDED)
#: Its build failed and a try is left: back in the queue, alone.
SEG_RETRY = _m("retry", {G.RUNNING}, G.QUEUED)
SEG_FAIL = _m("fail", {G.RUNNING}, G.FAILED)
#: A new plan of the task (a retry, or a build that died): every segment not succeeded starts over.
SEG_RESET = _m("reset", {G.QUEUED, G.RUNNING, G.FAILED}, G.QUEUED)
SEGMENT_MACHINE: tuple[SegMove, ...] = (SEG_CLAIM, SEG_SUCCEED, SEG_RETRY, SEG_FAIL, SEG_RESET)
del G


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
    key: str | None = None
    error: dict[str, str] | None = None
    #: what the segment's build left for the finalizer (``Exporter.segment_notes``): small JSON
    notes: dict[str, Any] | None = None

    def to_item(self) -> dict[str, Any]:
        """The map stored under the task's ``segs`` (absent values left out)."""
        item = {"n": self.number, "spec": self.spec, "st": self.status.value, "ls": self.lease,
                "cl": self.claims, "tr": self.tries, "rows": self.rows, "bytes": self.bytes,
                "hb": self.heartbeat_at, "size": self.size, "md5": self.md5, "sha256": self.sha256,
                "key": self.key, "err": self.error, "notes": self.notes}
        return {k: v for k, v in item.items() if v is not None}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Segment:
        def num(name: str) -> int | None:
            value = item.get(name)
            return None if value is None else int(value)

        return cls(number=int(item["n"]), spec=dict(item.get("spec") or {}),
                   status=SegStatus(item.get("st", "queued")), lease=num("ls") or 0,
                   claims=num("cl") or 0, tries=num("tr") or 0, rows=num("rows") or 0,
                   bytes=num("bytes") or 0, heartbeat_at=num("hb"), size=num("size"),
                   md5=item.get("md5"), sha256=item.get("sha256"), key=item.get("key"),
                   error=dict(item["err"]) if item.get("err") else None,
                   notes=_numbers(dict(item["notes"])) if item.get("notes") else None)


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


def fresh(segments: Iterable[Segment]) -> tuple[Segment, ...]:
    """A new plan's segments: succeeded ones kept, the others queued from scratch."""
    return tuple(s if s.status not in SEG_RESET.sources else
                 replace(s, status=SEG_RESET.target, claims=0, tries=0, rows=0, bytes=0,
                         heartbeat_at=None, size=None, md5=None, sha256=None, key=None, error=None,
                         notes=None)
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


# -- composing one object from the segments' objects ----------------------------------------------

@dataclass(frozen=True)
class Piece:
    """A byte range of one segment's object: ``length`` bytes from ``start``."""

    source: int  # index into the sources
    start: int
    length: int


@dataclass(frozen=True)
class PartPlan:
    """One part of the composed object: copied on S3's side, or uploaded from read bytes."""

    pieces: tuple[Piece, ...]
    #: one range copied by UploadPartCopy; else the pieces are read and uploaded together
    copied: bool = False

    @property
    def size(self) -> int:
        return sum(p.length for p in self.pieces)


def compose_parts(sizes: Sequence[int], min_part: int = MIN_PART, max_part: int = MAX_PART
                  ) -> list[PartPlan]:
    """The parts of a multipart upload whose concatenation is the sources in order.

    Every part but the last is at least ``min_part`` and at most ``max_part``.
    A source of at least ``min_part`` is copied on S3's side in ranges of at
    most ``max_part`` (so the bytes never pass through the worker); smaller
    sources, and the head of a large one needed to fill a part started by
    small ones, are read and uploaded together. At most ``2 * min_part`` is
    ever read for one part.
    """
    parts: list[PartPlan] = []
    pending: list[Piece] = []  # small pieces gathered for the next uploaded part

    def pending_size() -> int:
        return sum(p.length for p in pending)

    for index, size in enumerate(sizes):
        start, left = 0, size
        if pending and left:
            head = min(left, min_part - pending_size())
            pending.append(Piece(index, start, head))
            start, left = start + head, left - head
            if pending_size() >= min_part:
                parts.append(PartPlan(tuple(pending)))
                pending = []
        while left >= min_part:
            take = min(left, max_part)
            if left - take and left - take < min_part:  # never leave a tail too small to copy
                take = left - min_part if left - min_part >= min_part else left
                take = min(take, max_part)
            parts.append(PartPlan((Piece(index, start, take),), copied=True))
            start, left = start + take, left - take
        if left:
            pending.append(Piece(index, start, left))
    if pending:  # the last part may be small: one range of one source is still copied
        parts.append(PartPlan(tuple(pending), copied=len(pending) == 1))
    return parts
