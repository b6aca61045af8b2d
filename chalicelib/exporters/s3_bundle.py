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

import csv
import hashlib
import io
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import IO, Any

from chalicelib.config import Settings
from chalicelib.errors import ExportError, ValidationError
from chalicelib.exporters.base import BuildContext, Exporter
from chalicelib.formats.base import Format, defuse

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


def _error_code(exc: Exception) -> tuple[str, str]:
    response = getattr(exc, "response", None) or {}
    err = response.get("Error", {})
    return str(err.get("Code", "")), str(err.get("Message", ""))


class S3BundleExporter(Exporter):
    kind = "s3_bundle"
    title = "Zip bundle of S3 objects (with MANIFEST.csv)"
    formats = ("zip",)
    source_param = "bucket"
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
        bucket = params["bucket"]
        if bucket not in ctx.settings.bundle_buckets:
            raise ExportError("bucket_not_allowed",
                              f"Bucket {bucket!r} is not on this deployment's bundle allow-list.")
        entries = self._entries(bucket, list(params.get("keys") or []), params.get("prefix"),
                                skip_missing=params.get("on_missing") == "skip")

        def on_entry() -> None:
            ctx.check()  # skipped keys and folder listings yield no bytes
            ctx.count_rows(1)

        yield from stream_bundle(entries, on_entry=on_entry)

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
        from botocore.exceptions import ClientError

        from chalicelib.adapters.aws import client

        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": LIST_PAGE_SIZE}
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
                    yield obj["Key"]
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
            code, _ = _error_code(exc)
            if code in ("NoSuchKey", "404"):
                if skip_missing:
                    return name, key, None, None
                raise ExportError("object_not_found",
                                  f"Object {key!r} does not exist in bucket {bucket!r}.") from exc
            err = self._source_error(exc, bucket, key)
            if err is None:
                raise
            raise err from exc
        return name, key, obj.get("LastModified"), self._body(obj["Body"])

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
