"""S3: streaming multipart upload with checksums, presigned GETs, deletes.

The uploader holds at most one part in memory. md5 and sha256 are computed
over the bytes as they pass, so nothing is read back after the upload.
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from chalicelib.adapters.aws import client
from chalicelib.errors import ExportError
from chalicelib.segments import MAX_PARTS, MIN_PART

#: S3's smallest part (all but the last), the one figure both uploaders share.
MIN_PART_SIZE = MIN_PART


def content_disposition(file_name: str) -> str:
    """RFC 6266 attachment with an ASCII fallback and the RFC 5987 UTF-8 name."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in file_name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"


class UnsafeKey(ValueError):
    """A value that would make a key climb out of its folder: a bug, or validation missed at an edge."""


def _one_level(value: str, what: str) -> str:
    """``value`` as one level of a key: never empty, ``.``, ``..``, nor holding a ``/``.

    The edges validate tenants and names (``principal.TENANT_RULE``,
    ``validation.check_file_name``); this is the last guard, because a
    task's delete clears its whole prefix: a tenant of ``acme/<another task's
    id>`` wrote under that task's prefix, and the other's delete took it.
    """
    if not value or value in (".", "..") or "/" in value:
        raise UnsafeKey(f"{what} {value!r} cannot be one level of an S3 key")
    return value


def task_prefix(tenant: str, task_id: str) -> str:
    """Where every build of one task writes: an operator finds a task's files here."""
    return f"downloads/{_one_level(tenant, 'tenant')}/{_one_level(task_id, 'task id')}/"


def object_key(tenant: str, task_id: str, lease: int, file_name: str) -> str:
    """One key per build (its lease), so a superseded build can only overwrite or delete its own."""
    return f"{task_prefix(tenant, task_id)}{int(lease)}/{_one_level(file_name, 'file name')}"


def parse_object_key(key: str) -> tuple[str, int] | None:
    """(task id, lease) of a key made by ``object_key``; None for any other key."""
    head, _, rest = key.partition("/")
    parts = rest.rsplit("/", 3)
    if head != "downloads" or len(parts) != 4 or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


class StreamingUpload:
    """Write bytes in; parts of ``part_size`` go to S3 as they fill.

    A file smaller than one part is stored with a single PutObject; the
    multipart upload is only opened once a first part is full. One part is
    hashed and sent on a background thread while the next one fills, so
    encoding waits neither for the network nor for the checksums. The two
    buffers of exactly ``part_size`` take turns, filling and on the wire:
    allocated once, never grown by copying, so memory is those two parts
    whatever the file's size. ``md5`` and ``sha256`` are final after
    ``complete()``.
    """

    def __init__(
        self, bucket: str, key: str, content_type: str, disposition: str,
        part_size: int = 8 * 1024 * 1024,
    ) -> None:
        self.bucket, self.key = bucket, key
        self.content_type, self.disposition = content_type, disposition
        self.part_size = max(part_size, MIN_PART_SIZE)
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self._buffer: bytearray | None = None
        self._filled = 0
        #: the buffer of the part last sent, back once its upload is done
        self._spare: bytearray | None = None
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._sender: ThreadPoolExecutor | None = None
        self._in_flight: tuple[Future[dict[str, Any]], bytearray] | None = None
        self._s3 = client("s3")

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        view = memoryview(chunk)
        while view:
            if self._buffer is None:
                self._buffer = bytearray(self.part_size)
            piece = view[:self.part_size - self._filled]
            end = self._filled + len(piece)
            self._buffer[self._filled:end] = piece
            self._filled, view = end, view[len(piece):]
            if end == self.part_size:
                self._flush_part()

    def _take_buffer(self) -> bytearray:
        """The part filled so far, trimmed to its bytes; the next part fills the spare."""
        body = self._buffer if self._buffer is not None else bytearray()
        del body[self._filled:]  # in place: nothing to trim unless it is the last part
        self._buffer, self._spare, self._filled = self._spare, None, 0
        return body

    def _hash(self, data: bytes | bytearray) -> None:
        # hashlib releases the GIL on large buffers: on the sender thread this
        # runs beside the encoding instead of after it
        self._md5.update(data)
        self._sha256.update(data)

    def _flush_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = self._s3.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self.content_type,
                ContentDisposition=self.disposition,
            )["UploadId"]
            self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload")
        self._wait_in_flight()
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            limit_gib = MAX_PARTS * self.part_size / 2**30
            raise ExportError(
                "too_large",
                f"The file is larger than this deployment's limit ({limit_gib:.0f} GiB); "
                "narrow the export or ask an operator to raise PART_SIZE_MB.",
            )
        body = self._take_buffer()  # handed over, not copied
        assert self._sender is not None
        # in a copy of the build's context: whatever the sender logs carries the build's keys
        sent = self._sender.submit(contextvars.copy_context().run, self._send_part, number, body)
        self._in_flight = (sent, body)

    def _send_part(self, number: int, body: bytearray) -> dict[str, Any]:
        """On the sender thread, parts in order: hash, then upload."""
        self._hash(body)
        etag = self._s3.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
            PartNumber=number, Body=body,
        )["ETag"]
        return {"ETag": etag, "PartNumber": number}

    def _wait_in_flight(self) -> None:
        """Wait for the part on the wire; its error, if any, is raised here."""
        if self._in_flight is not None:
            (future, body), self._in_flight = self._in_flight, None
            self._parts.append(future.result())
            self._spare = body

    def _stop_sender(self) -> None:
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None

    def complete(self) -> None:
        if self._upload_id is None:
            body = self._take_buffer()
            self._hash(body)
            self._s3.put_object(
                Bucket=self.bucket, Key=self.key, Body=bytes(body),
                ContentType=self.content_type, ContentDisposition=self.disposition,
            )
            return
        if self._filled:
            self._flush_part()
        self._wait_in_flight()
        self._stop_sender()
        self._s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        """Leave nothing behind: no open upload, no object."""
        self._buffer, self._spare, self._filled = None, None, 0
        self._in_flight = None
        self._stop_sender()  # let a part on the wire land first, so abort removes it too
        if self._upload_id is not None:
            self._s3.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload_id
            )
            self._upload_id = None


def presign_get(
    bucket: str, key: str, file_name: str, content_type: str | None, ttl_seconds: int,
    now: datetime,
) -> tuple[str, datetime]:
    """Sign locally (no S3 call); the URL carries the file's own name."""
    params: dict[str, Any] = {
        "Bucket": bucket, "Key": key,
        "ResponseContentDisposition": content_disposition(file_name),
    }
    if content_type:
        params["ResponseContentType"] = content_type
    url = client("s3").generate_presigned_url(
        "get_object", Params=params, ExpiresIn=ttl_seconds
    )
    return url, now + timedelta(seconds=ttl_seconds)


def delete_object(bucket: str, key: str) -> None:
    client("s3").delete_object(Bucket=bucket, Key=key)


def open_uploads(bucket: str, prefix: str) -> Iterator[tuple[str, str]]:
    """(key, upload id) of every multipart upload in progress under ``prefix``."""
    s3 = client("s3")
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = s3.list_multipart_uploads(**kwargs)
        for upload in page.get("Uploads", []):
            yield upload["Key"], upload["UploadId"]
        if not page.get("IsTruncated"):
            return
        kwargs.update(KeyMarker=page["NextKeyMarker"], UploadIdMarker=page["NextUploadIdMarker"])


def abort_upload(bucket: str, key: str, upload_id: str) -> None:
    client("s3").abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


def keys_under(bucket: str, prefix: str) -> Iterator[str]:
    s3 = client("s3")
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = s3.list_objects_v2(**kwargs)
        for obj in page.get("Contents", []):
            yield obj["Key"]
        if not page.get("IsTruncated"):
            return
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


def clear_task(bucket: str, prefix: str, keep: str | Collection[str] | None = None,
               keep_uploads: Collection[str] = ()) -> int:
    """Abort the uploads and delete the objects under a task's prefix, but those in ``keep``
    (object keys) and ``keep_uploads`` (upload ids: a single file's segments still to come).

    For a task no build may still finish: what is left there belongs to builds
    that died or were superseded. Returns how many things it removed.
    """
    from botocore.exceptions import ClientError

    kept = {keep} if isinstance(keep, str) else set(keep or ())
    removed = 0
    for key, upload_id in list(open_uploads(bucket, prefix)):
        if upload_id in keep_uploads:
            continue
        try:
            abort_upload(bucket, key, upload_id)
        except ClientError:  # its own build aborted it meanwhile (a cancel reaches them all)
            if any(u == upload_id for _, u in open_uploads(bucket, key)):
                raise
        removed += 1
    for key in list(keys_under(bucket, prefix)):
        if key not in kept:
            delete_object(bucket, key)
            removed += 1
    return removed


def head_size(bucket: str, key: str) -> int | None:
    """The object's size, or None when it is not there."""
    from botocore.exceptions import ClientError

    try:
        return int(client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def put_small(bucket: str, key: str, body: bytes, content_type: str, disposition: str
              ) -> tuple[str, str]:
    """Store a small object whole; its md5 and sha256."""
    client("s3").put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type,
                            ContentDisposition=disposition)
    return (hashlib.md5(body, usedforsecurity=False).hexdigest(), hashlib.sha256(body).hexdigest())


# -- one multipart upload shared by a single file's segments ----------------------------------------

def create_upload(bucket: str, key: str, content_type: str, disposition: str) -> str:
    """Open the multipart upload a single file's segments write into; its id."""
    return str(client("s3").create_multipart_upload(
        Bucket=bucket, Key=key, ContentType=content_type, ContentDisposition=disposition)["UploadId"])


def _no_upload(exc: Exception) -> bool:
    return getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchUpload", "404")


def list_parts(bucket: str, key: str, upload_id: str) -> dict[int, str] | None:
    """Part number -> ETag of what the upload holds now; None once it is gone (aborted, completed)."""
    from botocore.exceptions import ClientError

    s3 = client("s3")
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "UploadId": upload_id, "MaxParts": 1000}
    parts: dict[int, str] = {}
    try:
        while True:
            page = s3.list_parts(**kwargs)
            parts.update({int(p["PartNumber"]): str(p["ETag"]) for p in page.get("Parts", [])})
            if not page.get("IsTruncated"):
                return parts
            kwargs["PartNumberMarker"] = page["NextPartNumberMarker"]
    except ClientError as exc:
        if _no_upload(exc):
            return None
        raise


class PartRejected(Exception):
    """CompleteMultipartUpload refused a part: it changed since it was listed (a late writer)."""


def complete_upload(bucket: str, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> None:
    """Make the object of exactly ``parts`` (number, ETag), in order; unlisted parts are dropped."""
    from botocore.exceptions import ClientError

    try:
        client("s3").complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("InvalidPart", "InvalidPartOrder"):
            raise PartRejected(str(exc)) from exc
        raise


def read_small(bucket: str, key: str) -> bytes:
    """A short segment's small object, whole (under S3's part minimum by construction)."""
    return bytes(client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def put_empty(bucket: str, key: str, content_type: str, disposition: str) -> None:
    client("s3").put_object(Bucket=bucket, Key=key, Body=b"", ContentType=content_type,
                            ContentDisposition=disposition)


class RangeUpload:
    """A segment's bytes as parts of the task's one upload, numbered ``first``.. in its own range.

    Every part it leaves is at least S3's minimum, but for a segment smaller
    than that: the last full part is held back until at least the minimum
    follows it, and joined with the tail otherwise. So the file's parts need
    no copy and no second read at the finish. Two buffers of ``part_size``
    take turns (filling, and held or on the wire); memory stays at two parts.
    md5 and sha256 cover the segment's bytes (its range of the file).
    """

    def __init__(self, bucket: str, key: str, upload_id: str, first: int, span: int,
                 part_size: int = 8 * 1024 * 1024, may_end_short: bool = False) -> None:
        self.bucket, self.key, self.upload_id = bucket, key, upload_id
        self.first, self.span = first, span
        #: whether what it writes ends the file (its one part may then be under the minimum)
        self.may_end_short = may_end_short
        #: after ``finish``: all the bytes, when they were fewer than S3's minimum and sent as no
        #: part (the caller stores them as a small object, which the finish joins to others')
        self.short: bytes | None = None
        self.part_size = max(part_size, MIN_PART_SIZE)
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self._fill = bytearray(self.part_size)
        self._filled = 0
        self._held: bytearray | None = None  # a full part not sent yet
        self._spare: bytearray | None = None
        self._next = first
        self._parts: list[tuple[int, str]] = []
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload")
        self._in_flight: tuple[Future[tuple[int, str]], bytearray] | None = None
        self._s3 = client("s3")

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        view = memoryview(chunk)
        while view:
            piece = view[:self.part_size - self._filled]
            end = self._filled + len(piece)
            self._fill[self._filled:end] = piece
            self._filled, view = end, view[len(piece):]
            if self._held is not None and self._filled >= MIN_PART_SIZE:
                held, self._held = self._held, None  # enough follows it: it is not the last
                self._send(held)
            if self._filled == self.part_size:
                self._wait()
                self._held = self._fill
                self._fill = self._spare if self._spare is not None else bytearray(self.part_size)
                self._spare, self._filled = None, 0

    def _send(self, body: bytearray) -> None:
        self._wait()
        number = self._next
        if number >= self.first + self.span:
            limit_gib = self.span * self.part_size / 2**30
            raise ExportError(
                "too_large",
                f"A segment is larger than this deployment allows ({limit_gib:.0f} GiB at "
                f"{self.span} parts); narrow the export or ask an operator to raise PART_SIZE_MB.")
        self._next += 1
        # in a copy of the build's context: whatever the sender logs carries the build's keys
        sent = self._sender.submit(contextvars.copy_context().run, self._send_part, number, body)
        self._in_flight = (sent, body)

    def _send_part(self, number: int, body: bytearray) -> tuple[int, str]:
        """On the sender thread, parts in order: hash, then upload."""
        self._md5.update(body)
        self._sha256.update(body)
        etag = self._s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                    PartNumber=number, Body=body)["ETag"]
        return number, str(etag)

    def _wait(self) -> None:
        if self._in_flight is not None:
            (future, body), self._in_flight = self._in_flight, None
            self._parts.append(future.result())
            if len(body) == self.part_size:
                self._spare = body

    def finish(self) -> list[tuple[int, str]]:
        """Send what is left; the parts (number, ETag) this segment's bytes are, in order."""
        tail = self._fill[:self._filled]
        if (self._held is None and not self._parts and self._in_flight is None
                and self._filled < MIN_PART_SIZE and not self.may_end_short):
            self.short = bytes(tail)  # too short to be a part before another: no part at all
            self._md5.update(self.short)
            self._sha256.update(self.short)
            self._sender.shutdown(wait=True)
            return []
        if self._held is not None:  # less than the minimum follows the held part: one part
            self._held += tail
            body, self._held = self._held, None
            self._send(body)
        elif self._filled:
            self._send(tail)
        self._wait()
        self._sender.shutdown(wait=True)
        return list(self._parts)

    def abort(self) -> None:
        """Stop sending. Parts already sent stay in the upload, outside any completion: a next
        build of the segment sends its own under the same numbers, and the finish lists only
        the parts the stored segment recorded."""
        self._in_flight = None
        self._sender.shutdown(wait=True)
