"""A zip of S3 objects (given as keys and/or a prefix) from allow-listed buckets.

The archive is streamed: each object is read with GetObject in chunks and
deflated into the zip as it arrives, so neither the archive nor an object is
ever held whole in memory or on disk. Every entry is written in ZIP64 form, so
the archive may pass 4 GiB and 65,535 entries; names are UTF-8. A
``MANIFEST.csv`` comes last, because an entry's size and sha256 are only known
once it has been streamed.

What does grow with the number of entries (not their bytes): the zip's central
directory, which every zip writer must keep until the end (about 200 bytes an
entry), and the set of entry names used to keep them unique. ``MAX_ENTRIES``
bounds both; the manifest itself spills to a temporary file past a few MiB.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import json
import logging
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from chalicelib.config import Settings
from chalicelib.errors import ExportError, ValidationError
from chalicelib.exporters.base import BuildContext, Exporter
from chalicelib.formats.base import Format, defuse
from chalicelib.segments import Plan, Segment

log = logging.getLogger(__name__)

MANIFEST_NAME = "MANIFEST.csv"
MANIFEST_COLUMNS = ("name", "key", "size", "sha256", "status")
#: Bytes asked of each GetObject body at a time.
READ_CHUNK = 1024 * 1024
#: Size of the chunks handed to the uploader (stream-zip evens them out). Small
#: enough that even very compressible objects hand control back to the worker
#: (cancel, time budget) every fraction of a second.
ZIP_CHUNK = 64 * 1024
#: The manifest stays in memory up to this size, then rolls over to /tmp.
MANIFEST_SPOOL_BYTES = 4 * 1024 * 1024
#: Objects per bundle; bounds the central directory held until the end.
MAX_ENTRIES = 500_000
MAX_KEYS = 1000
#: Keys a ListObjectsV2 page may hold (the API's maximum).
LIST_PAGE_SIZE = 1000
#: Deflate level: 6 is zlib's own default, far faster than 9 for a few % of size.
DEFLATE_LEVEL = 6
# -- segmented builds: guesses for ``parallelism: "auto"`` and how the keys are cut --------------
#: Bytes a second one worker is guessed to bundle: GetObject, sha256 and deflate at level 6
#: (zlib's, some tens of MB/s on one core) and the upload, one after the other. A cautious guess,
#: not a measurement: docs/benchmarks.md has none for this kind.
BYTES_PER_SECOND = 16 * 1024 * 1024
#: Seconds an object costs besides its bytes: GetObject's round trip, its zip headers, its manifest row.
SECONDS_PER_OBJECT = 0.05
#: What an object weighs when the keys are cut into ranges: its bytes and this many more, the
#: same guess in bytes, so that many small objects are shared out as fairly as a few large ones.
OBJECT_WEIGHT_BYTES = int(SECONDS_PER_OBJECT * BYTES_PER_SECOND)
#: HeadObject calls at once, for the sizes of explicit keys (at most MAX_KEYS of them).
HEAD_THREADS = 8
#: ``estimate_seconds`` and ``plan`` run one after the other in the coordinator: the listing the
#: first made serves the second for this long, rather than listing a large prefix twice.
SELECTION_REUSE_SECONDS = 60.0
_FILE_MODE = stat.S_IFREG | 0o644
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SEPARATORS = re.compile(r"[/\\]+")
_DRIVE = re.compile(r"^[A-Za-z]:$")



ZIP = Format(name="zip", extension=".zip", content_type="application/zip")

#: One bundle member: entry name, object key, modification time and its bytes
#: (``None`` for a missing object listed as skipped in the manifest).
Entry = tuple[str, str, datetime | None, Iterable[bytes] | None]


def safe_entry_name(name: str) -> str:
    """A relative zip path that cannot escape the extraction folder (zip-slip).

    Both separators count (Windows extractors honour ``\\``); empty, ``.``
    and ``..`` segments and a leading drive letter cannot survive.
    """
    parts: list[str] = []
    for part in _SEPARATORS.split(_CONTROL.sub("_", name)):
        if part in ("", "."):
            continue
        parts.append("_" if part == ".." else part)
    if parts and _DRIVE.match(parts[0]):
        parts[0] = parts[0][0] + "_"
    return "/".join(parts) or "_"


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``name~2``, ``name~3``... (before the extension) if taken."""
    if name not in used:
        used.add(name)
        return name
    head, slash, leaf = name.rpartition("/")
    stem, dot, ext = leaf.rpartition(".")
    if not stem:  # no extension, or a dot file
        stem, dot, ext = leaf, "", ""
    n = 2
    while True:
        candidate = f"{head}{slash}{stem}~{n}{dot}{ext}"
        if candidate not in used:
            used.add(candidate)
            return candidate
        n += 1


class Manifest:
    """MANIFEST.csv rows, spooled (memory, then /tmp) until the archive's end."""

    def __init__(self) -> None:
        # Lives as long as the archive; chunks() closes it (a context manager cannot span that).
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=MANIFEST_SPOOL_BYTES)
        self._text = io.StringIO()
        self._writer = csv.writer(self._text, lineterminator="\r\n")
        self._write(MANIFEST_COLUMNS)

    def _write(self, row: Iterable[Any]) -> None:
        self._writer.writerow(row)
        self._file.write(self._text.getvalue().encode("utf-8"))
        self._text.seek(0)
        self._text.truncate()

    def add(self, name: str, key: str, size: int | None, sha256: str, status: str) -> None:
        # people open the manifest in a spreadsheet: a key such as "=HYPERLINK(...)" stays text
        self._write((defuse(name), defuse(key), "" if size is None else size, sha256, status))

    def chunks(self) -> Iterator[bytes]:
        self._file.seek(0)
        try:
            while chunk := self._file.read(READ_CHUNK):
                yield chunk
        finally:
            self._file.close()


def _hashed(chunks: Iterable[bytes], done: Callable[[int, str], None]) -> Iterator[bytes]:
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
        yield chunk
    done(size, digest.hexdigest())


def stream_bundle(
    entries: Iterable[Entry], on_entry: Callable[[], None] = lambda: None,
    chunk_size: int = ZIP_CHUNK, max_entries: int = MAX_ENTRIES,
) -> Iterator[bytes]:
    """The ZIP64 archive of ``entries`` then ``MANIFEST.csv``, as byte chunks.

    No S3 here, so the archive's structure can be tested on in-memory members.
    An entry is pulled only after the previous one was fully written, so at
    most one source is open at a time.
    """
    import zlib

    from stream_zip import ZIP_64, stream_zip  # imported here: it loads a crypto library

    manifest = Manifest()
    used = {MANIFEST_NAME}
    built_at = datetime.now(UTC).replace(microsecond=0)

    def members() -> Iterator[tuple[str, datetime, int, Any, Iterable[bytes]]]:
        count = 0
        for name, key, modified, chunks in entries:
            count += 1
            if count > max_entries:
                raise ExportError("too_many_objects",
                                  f"A bundle holds at most {max_entries:,} objects; "
                                  "narrow the prefix or split the request.")
            name = unique_name(safe_entry_name(name), used)
            on_entry()
            if chunks is None:
                manifest.add(name, key, None, "", "skipped")
                continue

            def record(size: int, sha256: str, name: str = name, key: str = key) -> None:
                manifest.add(name, key, size, sha256, "ok")

            yield name, modified or built_at, _FILE_MODE, ZIP_64, _hashed(chunks, record)
        yield MANIFEST_NAME, built_at, _FILE_MODE, ZIP_64, manifest.chunks()

    yield from stream_zip(members(), chunk_size=chunk_size,
                          get_compressobj=lambda: zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15))


def weighted_ranges(weights: Sequence[int], count: int) -> list[tuple[int, int]]:
    """At most ``count`` contiguous, non-empty, inclusive index ranges covering ``weights``,
    each about an equal share of their sum (a cut falls where the running sum is nearest it)."""
    n = len(weights)
    count = max(1, min(count, n))
    if n == 0:
        return []
    sums = [0]
    for weight in weights:
        sums.append(sums[-1] + weight)
    cuts = [0]
    for j in range(1, count):
        low, high = cuts[-1] + 1, n - (count - j)  # leave every range at least one item
        target = sums[n] * j / count
        at = min(max(bisect.bisect_left(sums, target), low), high)
        if at > low and target - sums[at - 1] < sums[at] - target:  # the nearer of the two
            at -= 1
        cuts.append(at)
    cuts.append(n)
    return [(cuts[i], cuts[i + 1] - 1) for i in range(count)]


def _next_char(char: str) -> str | None:
    """The code point after ``char`` that UTF-8 can encode (no surrogate), or None past the last."""
    code = ord(char) + 1
    if 0xD800 <= code <= 0xDFFF:
        code = 0xE000
    return chr(code) if code <= 0x10FFFF else None


def separator(low: str, high: str) -> str:
    """A short string ``s`` with ``low <= s < high`` (``low < high``), to cut keys between them.

    S3 orders keys by their UTF-8 bytes, which is code-point order, as Python's
    own; ``StartAfter=s`` then lists ``high`` and on, and ``key <= s`` keeps ``low``
    and before. Stored instead of the keys themselves to keep the plan small.
    """
    assert low < high, (low, high)
    common = 0
    while common < min(len(low), len(high)) and low[common] == high[common]:
        common += 1
    for j in range(common, len(low)):
        bumped = _next_char(low[j])
        if bumped is not None and low[:j] + bumped < high:
            return low[:j] + bumped
    return low


@dataclass(frozen=True)
class Selection:
    """What a bundle's params select, in the bundle's order: explicit keys, then the prefix's."""

    #: the size of each of ``params.keys`` (0 for a missing one that may be skipped)
    explicit_sizes: tuple[int, ...]
    #: the keys under the prefix that are files and not explicit keys, in S3's order, and their sizes
    keys: tuple[str, ...]
    sizes: tuple[int, ...]

    @property
    def objects(self) -> int:
        return len(self.explicit_sizes) + len(self.keys)

    @property
    def bytes(self) -> int:
        return sum(self.explicit_sizes) + sum(self.sizes)

    def weights(self) -> list[int]:
        return [size + OBJECT_WEIGHT_BYTES for size in (*self.explicit_sizes, *self.sizes)]


def range_specs(selection: Selection, prefix: str | None, count: int) -> list[dict[str, Any]]:
    """Segment specs: ``count`` ranges of the selection balanced by weight, stored as bounds.

    ``keys: [a, b]``, indexes into ``params.keys``; ``prefix: true`` with
    ``after`` (exclusive) and ``upto`` (inclusive), separators relative to the
    prefix (a missing bound is open). Adjacent segments share a bound, the first
    has no ``after`` and the last no ``upto``, so together they cover every key
    under the prefix, even one that appears after the plan, exactly once.
    """
    explicit, rel = len(selection.explicit_sizes), [k[len(prefix or ""):] for k in selection.keys]
    ranges = weighted_ranges(selection.weights(), count) or [(0, -1)]
    with_prefix = [i for i, (_, last) in enumerate(ranges) if last >= explicit]
    if prefix and not with_prefix:
        with_prefix = [len(ranges) - 1]  # nothing listed: the last segment looks again
    specs: list[dict[str, Any]] = []
    for i, (first, last) in enumerate(ranges):
        spec: dict[str, Any] = {}
        if first < explicit:
            spec["keys"] = [first, min(last, explicit - 1)]
        if i in with_prefix:
            spec["prefix"] = True
            low, high = max(first, explicit) - explicit, last - explicit
            if i != with_prefix[0] and low > 0:
                spec["after"] = separator(rel[low - 1], rel[low])
            if i != with_prefix[-1] and high + 1 < len(rel):
                spec["upto"] = separator(rel[high], rel[high + 1])
        specs.append(spec)
    return specs


def _error_code(exc: Exception) -> tuple[str, str]:
    response = getattr(exc, "response", None) or {}
    err = response.get("Error", {})
    return str(err.get("Code", "")), str(err.get("Message", ""))


class S3BundleExporter(Exporter):
    kind = "s3_bundle"
    title = "Zip bundle of S3 objects (with MANIFEST.csv)"
    formats = ("zip",)
    source_param = "bucket"
    #: every part is a zip of its own with its own MANIFEST.csv: zips do not concatenate
    split_by = "key ranges"
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["bucket"],
        # keys, a prefix, or both
        "if": {"not": {"required": ["keys"]}},
        "then": {"required": ["prefix"], "x-issue": "must name keys, a prefix, or both"},
        "properties": {
            "bucket": {"type": "string", "minLength": 3, "maxLength": 63,
                       "pattern": "^[a-z0-9][a-z0-9.-]*[a-z0-9]$",
                       "x-pattern-issue": "may contain only lower-case letters, digits, dots (.) "
                                          "and hyphens (-), and must start and end with a "
                                          "letter or a digit"},
            "keys": {"type": "array", "minItems": 1, "maxItems": MAX_KEYS, "uniqueItems": True,
                     "items": {"type": "string", "minLength": 1, "maxLength": 1024}},
            "prefix": {"type": "string", "minLength": 1, "maxLength": 1024},
            "on_missing": {"enum": ["fail", "skip"], "default": "fail"},
        },
    }

    def deployment_sources(self, settings: Settings) -> tuple[str, ...]:
        return settings.bundle_buckets

    def examples(self, sources: Sequence[str], settings: Settings) -> list[dict[str, Any]]:
        """The first bucket's first top-level folder (or object), found with one small listing.

        Only a prefix or a key that exists selects anything, and no name can
        be guessed, so this asks S3 (ListObjectsV2, one key, ``/`` as the
        delimiter). A bucket that is empty, missing or not listable by this
        role gives no example: ``GET /kinds`` must answer regardless.
        """
        if not sources:
            return []
        from botocore.exceptions import BotoCoreError, ClientError

        from chalicelib.adapters.aws import client

        bucket = sources[0]
        try:
            page = client("s3").list_objects_v2(Bucket=bucket, Delimiter="/", MaxKeys=1)
        except (BotoCoreError, ClientError):
            return []
        folders = page.get("CommonPrefixes") or []
        if folders:
            return [{"bucket": bucket, "prefix": folders[0]["Prefix"]}]
        objects = page.get("Contents") or []
        if objects:
            return [{"bucket": bucket, "keys": [objects[0]["Key"]]}]
        return []

    def format_for(self, name: str) -> Format:
        return ZIP

    def preflight(self, params: dict[str, Any], settings: Settings) -> None:
        """The bucket exists and a prefix selects an object: one ListObjectsV2 with MaxKeys=1.

        Listed keys are files unless they are folder placeholders (``.../``),
        which the bundle leaves out: if the first is one, one more page looks
        past it; if that page is full of them too, the build decides.
        """
        from botocore.exceptions import ClientError

        from chalicelib.adapters.aws import client

        s3, bucket, prefix = client("s3", probe=True), params["bucket"], params.get("prefix")
        try:
            page = s3.list_objects_v2(Bucket=bucket, MaxKeys=1, **({"Prefix": prefix} if prefix else {}))
            if not prefix:  # explicit keys: on_missing says what a missing one does
                return
            keys = [o["Key"] for o in page.get("Contents", [])]
            if keys and keys[-1].endswith("/") and page.get("IsTruncated"):
                page = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, StartAfter=keys[-1],
                                          MaxKeys=LIST_PAGE_SIZE)
                keys = [o["Key"] for o in page.get("Contents", [])]
        except ClientError as exc:
            if _error_code(exc)[0] != "NoSuchBucket":
                raise
            raise ValidationError.of([{"field": "params.bucket",
                                       "issue": "names a bucket that does not exist"}],
                                     "bucket_not_found") from None
        if not any(not key.endswith("/") for key in keys) and not page.get("IsTruncated"):
            raise ValidationError.of([{"field": "params.prefix",
                                       "issue": f"selects no object in bucket {bucket}"}],
                                     "nothing_to_export")

    def total_rows(self, params: dict[str, Any]) -> int | None:
        """Known up front only for a plain key list; a prefix is listed as it goes."""
        if params.get("keys") and not params.get("prefix"):
            return len(params["keys"])
        return None

    def stream(self, params: dict[str, Any], fmt: str, ctx: BuildContext) -> Iterator[bytes]:
        bucket = _allowed(params, ctx.settings)
        entries = self._entries(bucket, list(params.get("keys") or []), params.get("prefix"),
                                skip_missing=params.get("on_missing") == "skip")
        yield from self._bundle(entries, ctx)

    @staticmethod
    def _bundle(entries: Iterable[Entry], ctx: BuildContext) -> Iterator[bytes]:
        def on_entry() -> None:
            ctx.check()  # skipped keys and folder listings yield no bytes
            ctx.count_rows(1)

        yield from stream_bundle(entries, on_entry=on_entry)

    # -- segmented builds: one invocation a range of keys, one zip each ---------------------------

    def estimate_seconds(self, params: dict[str, Any], fmt: str, settings: Settings) -> float | None:
        """The selection's bytes at BYTES_PER_SECOND and SECONDS_PER_OBJECT an object (guesses).
        It lists the selection: ``plan``, which follows, reuses that listing."""
        if params["bucket"] not in settings.bundle_buckets:
            return None
        try:
            selection = self._selection(params, keep=True)
        except Exception:  # the build tells the owner what is wrong with the source
            log.warning("could not estimate the bundle of %s", params["bucket"], exc_info=True)
            return None
        return selection.bytes / BYTES_PER_SECOND + selection.objects * SECONDS_PER_OBJECT

    def plan(self, params: dict[str, Any], fmt: str, settings: Settings, count: int) -> Plan:
        """The selected objects in ``count`` ranges of about equal work, stored as key bounds."""
        _allowed(params, settings)
        selection = self._selection(params)
        specs = range_specs(selection, params.get("prefix"), count)
        return Plan(tuple(Segment(n, spec) for n, spec in enumerate(specs, 1)),
                    total_rows=selection.objects or None)

    def stream_segment(
        self, params: dict[str, Any], fmt: str, ctx: BuildContext, shared: dict[str, Any],
        segment: Segment, whole_file: bool,
    ) -> Iterator[bytes]:
        bucket = _allowed(params, ctx.settings)
        yield from self._bundle(self._segment_entries(bucket, params, segment.spec), ctx)

    def _segment_entries(self, bucket: str, params: dict[str, Any], spec: dict[str, Any]
                         ) -> Iterator[Entry]:
        """The range's explicit keys (named by their key), then its keys under the prefix."""
        keys = list(params.get("keys") or [])
        skip_missing = params.get("on_missing") == "skip"
        if "keys" in spec:
            first, last = (int(i) for i in spec["keys"])
            for key in keys[first:last + 1]:
                yield self._open(bucket, key, key, skip_missing)
        prefix = params.get("prefix")
        if prefix and spec.get("prefix"):
            explicit = set(keys)
            after, upto = spec.get("after"), spec.get("upto")
            for key, _ in self._list_sized(bucket, prefix, None if after is None else prefix + after):
                if upto is not None and key > prefix + upto:
                    return
                if key not in explicit:
                    yield self._open(bucket, key, key[len(prefix):], skip_missing)

    #: the selection ``estimate_seconds`` listed, for the ``plan`` that follows it: (params, when, it)
    _reused: tuple[str, float, Selection] | None = None
    _reuse_lock = threading.Lock()

    def _selection(self, params: dict[str, Any], keep: bool = False) -> Selection:
        """What the params select, with sizes: a listing of the prefix, a HeadObject an explicit key.

        ``keep``: for the next call with the same params (``estimate_seconds``
        keeps it for ``plan``), which takes it, if it comes within SELECTION_REUSE_SECONDS.
        """
        bucket, prefix = params["bucket"], params.get("prefix")
        keys = list(params.get("keys") or [])
        skip_missing = params.get("on_missing") == "skip"
        token = json.dumps([bucket, prefix, keys, skip_missing])
        with self._reuse_lock:
            reused, S3BundleExporter._reused = S3BundleExporter._reused, None
        if reused and reused[0] == token and time.monotonic() - reused[1] < SELECTION_REUSE_SECONDS:
            return reused[2]
        with ThreadPoolExecutor(HEAD_THREADS) as pool:
            explicit = tuple(pool.map(lambda key: self._size(bucket, key, skip_missing), keys))
        listed, sizes = [], []
        if prefix:
            given = set(keys)
            for key, size in self._list_sized(bucket, prefix):
                if key in given:
                    continue
                if len(keys) + len(listed) >= MAX_ENTRIES:
                    raise ExportError("too_many_objects",
                                      f"A bundle holds at most {MAX_ENTRIES:,} objects, even in "
                                      "parts; narrow the prefix or split the request.")
                listed.append(key)
                sizes.append(size)
        selection = Selection(explicit, tuple(listed), tuple(sizes))
        if keep:
            with self._reuse_lock:
                S3BundleExporter._reused = (token, time.monotonic(), selection)
        return selection

    def _size(self, bucket: str, key: str, skip_missing: bool) -> int:
        """An explicit key's size; a missing one is 0 if it may be skipped, else the task fails now."""
        from botocore.exceptions import ClientError

        from chalicelib.adapters.aws import client

        try:
            return int(client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            self._missing_or_raise(exc, bucket, key, skip_missing)
            return 0

    def _entries(
        self, bucket: str, keys: list[str], prefix: str | None, skip_missing: bool
    ) -> Iterator[Entry]:
        """Explicit keys (named by their key) first, then the prefix (named relative to it)."""
        for key in keys:
            yield self._open(bucket, key, key, skip_missing)
        if prefix:
            explicit = set(keys)
            for key in self._list(bucket, prefix):
                if key not in explicit:
                    yield self._open(bucket, key, key[len(prefix):], skip_missing)

    def _list(self, bucket: str, prefix: str) -> Iterator[str]:
        """Keys under the prefix, one ListObjectsV2 page (≤ 1,000) at a time."""
        for key, _ in self._list_sized(bucket, prefix):
            yield key

    def _list_sized(self, bucket: str, prefix: str, start_after: str | None = None
                    ) -> Iterator[tuple[str, int]]:
        """Keys under the prefix (after ``start_after``) that are files, and their sizes."""
        from botocore.exceptions import ClientError

        from chalicelib.adapters.aws import client

        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": LIST_PAGE_SIZE}
        if start_after is not None:
            kwargs["StartAfter"] = start_after
        while True:
            try:
                page = client("s3").list_objects_v2(**kwargs)
            except ClientError as exc:
                err = self._source_error(exc, bucket, prefix)
                if err is None:
                    raise
                raise err from exc
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):  # folder placeholders are not files
                    yield obj["Key"], int(obj.get("Size", 0))
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def _open(self, bucket: str, key: str, name: str, skip_missing: bool) -> Entry:
        """GetObject before the entry starts, so a missing key can still be skipped."""
        from botocore.exceptions import ClientError

        from chalicelib.adapters.aws import client

        try:
            obj = client("s3").get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            self._missing_or_raise(exc, bucket, key, skip_missing)
            return name, key, None, None
        return name, key, obj.get("LastModified"), self._body(obj["Body"])

    def _missing_or_raise(self, exc: Exception, bucket: str, key: str, skip_missing: bool) -> None:
        """Return for a missing key the task may skip; raise the user-facing error for any other."""
        code, _ = _error_code(exc)
        if code in ("NoSuchKey", "404"):
            if skip_missing:
                return
            raise ExportError("object_not_found",
                              f"Object {key!r} does not exist in bucket {bucket!r}.") from exc
        err = self._source_error(exc, bucket, key)
        if err is None:
            raise exc
        raise err from exc

    @staticmethod
    def _body(body: Any) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(READ_CHUNK)
        finally:
            body.close()

    @staticmethod
    def _source_error(exc: Exception, bucket: str, what: str) -> ExportError | None:
        """The user-facing error for a source problem; None for anything else (re-raised)."""
        code, _ = _error_code(exc)
        if code == "NoSuchBucket":
            return ExportError("bucket_not_found", f"Bucket {bucket!r} does not exist.")
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            return ExportError("access_denied",
                               f"This deployment may not read {what!r} in bucket {bucket!r}.")
        return None


def _allowed(params: dict[str, Any], settings: Settings) -> str:
    """The bucket to read, if this deployment may: the build's check, whatever the policy said."""
    bucket = str(params["bucket"])
    if bucket not in settings.bundle_buckets:
        raise ExportError("bucket_not_allowed",
                          f"Bucket {bucket!r} is not on this deployment's bundle allow-list.")
    return bucket
