"""StreamingUpload against in-process moto: parts, checksums and the stored bytes."""

from __future__ import annotations

import hashlib
import os

import boto3
import pytest

from chalicelib.adapters.storage import (
    MIN_PART_SIZE,
    StreamingUpload,
    object_key,
    task_prefix,
)

BUCKET = "download-center-files"
PART = MIN_PART_SIZE


def upload(data: bytes, chunk_size: int, key: str = "t/file.bin") -> StreamingUpload:
    up = StreamingUpload(BUCKET, key, "application/octet-stream", "attachment", PART)
    for start in range(0, len(data), chunk_size):
        up.write(data[start:start + chunk_size])
    up.complete()
    return up


def stored(key: str = "t/file.bin") -> tuple[bytes, str, list[int]]:
    s3 = boto3.client("s3")
    obj = s3.get_object(Bucket=BUCKET, Key=key)
    etag = obj["ETag"].strip('"')
    count = int(etag.rsplit("-", 1)[1]) if "-" in etag else 0
    parts = [s3.head_object(Bucket=BUCKET, Key=key, PartNumber=n)["ContentLength"]
             for n in range(1, count + 1)]
    return obj["Body"].read(), etag, parts


@pytest.mark.parametrize("chunk_size", [777_777, PART, PART + 1, 3 * PART])
def test_parts_are_exactly_the_part_size_whatever_the_chunks(stack, chunk_size):
    data = os.urandom(PART // 2) * 5  # two and a half parts
    up = upload(data, chunk_size)
    body, etag, parts = stored()
    assert body == data and up.size == len(data)
    assert parts == [PART, PART, PART // 2] and etag.endswith("-3")
    assert up.md5 == hashlib.md5(data).hexdigest() and up.sha256 == hashlib.sha256(data).hexdigest()


def test_a_file_of_whole_parts_ends_without_an_empty_part(stack):
    data = os.urandom(2 * PART)
    up = upload(data, 1 << 20)
    body, etag, parts = stored()
    assert body == data and parts == [PART, PART] and etag.endswith("-2")
    assert up.sha256 == hashlib.sha256(data).hexdigest()


def test_a_file_under_one_part_is_one_put_and_an_empty_one_is_stored_too(stack):
    data = "Zoë,王\r\n".encode() * 1000
    up = upload(data, 333, key="t/small.csv")
    body, etag, parts = stored("t/small.csv")
    assert body == data and "-" not in etag and parts == []
    assert up.md5 == hashlib.md5(data).hexdigest() == etag
    empty = upload(b"", 1, key="t/empty.csv")
    assert stored("t/empty.csv")[0] == b"" and empty.sha256 == hashlib.sha256(b"").hexdigest()


# -- RangeUpload: a segment's bytes as parts of the task's one upload ------------------------------
def range_upload(data: bytes, chunk: int, first: int, upload_id: str, key: str, part: int = PART,
                 span: int = 100, last: bool = False) -> list[tuple[int, str]]:
    from chalicelib.adapters.storage import RangeUpload

    up = RangeUpload(BUCKET, key, upload_id, first, span, part, may_end_short=last)
    for start in range(0, len(data), chunk):
        up.write(data[start:start + chunk])
    parts = up.finish()
    assert up.size == len(data) and up.sha256 == hashlib.sha256(data).hexdigest()
    assert up.md5 == hashlib.md5(data).hexdigest()
    return parts


@pytest.mark.parametrize("sizes", [
    [2 * PART + 1, PART], [PART + 1, 3 * PART - 7], [3 * PART, 1], [PART // 2 * 3, PART * 2 + PART // 3],
])
def test_segments_parts_in_their_own_ranges_make_one_valid_object(stack, sizes):
    """Each segment holds back its last part and joins its tail to it: every part but the file's
    last stays at S3's minimum, so completing the upload needs no copy and no read."""
    s3 = boto3.client("s3")
    key = "t/one.bin"
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    datas = [os.urandom(size) for size in sizes]
    parts: list[tuple[int, str]] = []
    for i, data in reversed(list(enumerate(datas))):  # in any order: each owns its numbers
        got = range_upload(data, 1_000_003, 1 + 100 * i, upload_id, key, last=i == len(datas) - 1)
        assert all(1 + 100 * i <= n < 1 + 100 * (i + 1) for n, _ in got)
        parts = got + parts
    listed = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)["Parts"]
    lengths = [p["Size"] for p in sorted(listed, key=lambda p: p["PartNumber"])]
    assert sum(lengths) == sum(sizes) and all(n >= PART for n in lengths[:-1])
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"".join(datas)


def test_a_segment_under_the_minimum_before_others_sends_no_part(stack):
    """Its bytes are kept for the finish to join (a small object), never a part too short to stand."""
    from chalicelib.adapters.storage import RangeUpload

    s3 = boto3.client("s3")
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="t/short.bin")["UploadId"]
    data = os.urandom(PART - 1)
    up = RangeUpload(BUCKET, "t/short.bin", upload_id, 1, 10, PART)
    up.write(data)
    assert up.finish() == [] and up.short == data
    assert up.sha256 == hashlib.sha256(data).hexdigest() and up.size == len(data)
    assert not s3.list_parts(Bucket=BUCKET, Key="t/short.bin", UploadId=upload_id).get("Parts")
    ends = RangeUpload(BUCKET, "t/short.bin", upload_id, 11, 10, PART, may_end_short=True)
    ends.write(data)
    assert [n for n, _ in ends.finish()] == [11] and ends.short is None  # the file's last part


def test_a_segment_past_its_range_is_too_large(stack):
    from chalicelib.errors import ExportError

    s3 = boto3.client("s3")
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="t/big.bin")["UploadId"]
    with pytest.raises(ExportError) as err:
        range_upload(os.urandom(4 * PART), PART, 1, upload_id, "t/big.bin", span=2)
    assert err.value.code == "too_large"

@pytest.mark.parametrize("tenant,task_id,name", [
    ("acme/01JDQ4V8Z8S9Y6K1E6J3X2M7TQ", "01JDQ4V8Z8S9Y6K1E6J3X2M7TR", "f.csv"),
    ("..", "01JDQ4V8Z8S9Y6K1E6J3X2M7TR", "f.csv"),
    ("acme", "../01JDQ4V8Z8S9Y6K1E6J3X2M7TR", "f.csv"),
    ("acme", "", "f.csv"),
    ("acme", "01JDQ4V8Z8S9Y6K1E6J3X2M7TR", "../../other/f.csv"),
    ("acme", "01JDQ4V8Z8S9Y6K1E6J3X2M7TR", ".."),
])
def test_no_value_climbs_out_of_its_level_of_a_key(tenant, task_id, name):
    """Issue 19: the last guard below the edges' validation; a task's delete clears its prefix whole."""
    with pytest.raises(ValueError, match="cannot be one level of an S3 key"):  # storage.UnsafeKey
        object_key(tenant, task_id, 1, name)


def test_keys_of_safe_values_are_as_before():
    assert object_key("acme", "T1", 2, "r.csv") == "downloads/acme/T1/2/r.csv"
    assert task_prefix("acme", "T1") == "downloads/acme/T1/"
