"""The zip and gzip writers of s3_bundle and log_archive, without AWS.

The archive's structure (ZIP64 records where needed, UTF-8 flags, > 65,535
entries, > 4 GiB entries) is checked here on in-memory members: building that many objects under moto
would take minutes (about 6 ms an object to put and get), while the code path
past the object reads is the same one ``stream_bundle`` runs here.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import struct
import time
import tracemalloc
import zipfile
import zlib

import pytest

from chalicelib.errors import ExportError
from chalicelib.exporters import log_archive
from chalicelib.exporters.s3_bundle import (
    MANIFEST_NAME,
    Manifest,
    safe_entry_name,
    stream_bundle,
    unique_name,
)
from chalicelib.formats.compression import gzip_chunks

ZIP64_EXTRA = 0x0001
UTF8_FLAG = 0x0800
DATA_DESCRIPTOR_FLAG = 0x0008
ZIP64_VERSION = 45


def build(entries, **kwargs) -> bytes:
    return b"".join(stream_bundle(entries, **kwargs))


def manifest_rows(archive: zipfile.ZipFile) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(archive.read(MANIFEST_NAME).decode("utf-8"))))


def extra_ids(extra: bytes) -> list[int]:
    ids, at = [], 0
    while at + 4 <= len(extra):
        header_id, size = struct.unpack_from("<HH", extra, at)
        ids.append(header_id)
        at += 4 + size
    return ids


def local_header(data: bytes, info: zipfile.ZipInfo) -> dict:
    """The entry's local header, and the data descriptor after its data (64-bit if ``zip64``)."""
    at = info.header_offset
    sig, version, flags, _method, _t, _d, crc, csize, usize, nlen, xlen = struct.unpack_from(
        "<IHHHHHIIIHH", data, at)
    assert sig == 0x04034B50
    extra = data[at + 30 + nlen: at + 30 + nlen + xlen]
    zip64 = ZIP64_EXTRA in extra_ids(extra)
    after = at + 30 + nlen + xlen + info.compress_size
    dd_sig, dd_crc, dd_csize, dd_usize = struct.unpack_from("<IIQQ" if zip64 else "<IIII", data, after)
    assert dd_sig == 0x08074B50, f"{info.filename}: no data descriptor where expected"
    return {"version": version, "flags": flags, "crc": crc, "sizes": (csize, usize), "zip64": zip64,
            "name": data[at + 30: at + 30 + nlen], "descriptor": (dd_crc, dd_csize, dd_usize)}


def zip64_end_records(data: bytes) -> tuple[int, int] | None:
    """(entries in the ZIP64 end record, entries in the classic one), or None without ZIP64 end records."""
    eocd = data.rindex(b"PK\x05\x06")
    (classic,) = struct.unpack_from("<H", data, eocd + 10)
    if data[eocd - 20: eocd - 16] != b"PK\x06\x07":
        return None
    (zip64_eocd_at,) = struct.unpack_from("<Q", data, eocd - 20 + 8)
    assert data[zip64_eocd_at: zip64_eocd_at + 4] == b"PK\x06\x06"
    (entries,) = struct.unpack_from("<Q", data, zip64_eocd_at + 32)
    return entries, classic


@pytest.mark.parametrize("raw,safe", [
    ("a/b.txt", "a/b.txt"),
    ("/etc/passwd", "etc/passwd"),
    ("../../evil.sh", "_/_/evil.sh"),
    ("a/../../b", "a/_/_/b"),
    ("..\\..\\win.ini", "_/_/win.ini"),
    ("C:\\Windows\\x", "C_/Windows/x"),
    ("./a//b/./c", "a/b/c"),
    ("报表/Zoë.txt", "报表/Zoë.txt"),
    ("tab\there\nnl", "tab_here_nl"),
    ("...", "..."),
    ("", "_"),
    ("/", "_"),
])
def test_entry_names_cannot_escape_the_extraction_folder(raw, safe):
    assert safe_entry_name(raw) == safe


def test_unique_names_keep_the_extension():
    used = {MANIFEST_NAME}
    assert [unique_name(n, used) for n in ("a/x.txt", "a/x.txt", "a/x.txt", "MANIFEST.csv", "b", "b",
                                           "d/.env", "d/.env")] == [
        "a/x.txt", "a/x~2.txt", "a/x~3.txt", "MANIFEST~2.csv", "b", "b~2", "d/.env", "d/.env~2"]


def test_utf8_names_the_manifest_last_and_zip64_headers_for_entries_of_unknown_size():
    bodies = {"报表/Zoë.txt": "你好, Zoë\n".encode() * 1000, "empty": b"", "bin/x.dat": os.urandom(70_000)}
    data = build((name, name, None, [body[:5000], body[5000:]]) for name, body in bodies.items())
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    infos = archive.infolist()
    assert [i.filename for i in infos] == [*bodies, MANIFEST_NAME]
    for info in infos:
        header = local_header(data, info)
        # UTF-8 flagged when not plain ASCII (ASCII bytes read the same in UTF-8 and CP437)
        assert info.flag_bits & UTF8_FLAG or info.filename.isascii(), info.filename
        assert header["name"] == info.filename.encode("utf-8")
        assert header["flags"] & DATA_DESCRIPTOR_FLAG and header["crc"] == 0
        if info.filename == MANIFEST_NAME:
            # its size is known when it starts: no ZIP64 needed
            assert not header["zip64"] and header["version"] < ZIP64_VERSION
            assert header["sizes"] == (0, 0)
        else:
            # size unknown while streaming: ZIP64 local header, sizes deferred to a 64-bit descriptor
            assert header["zip64"] and header["version"] == ZIP64_VERSION
            assert header["sizes"] == (0xFFFFFFFF, 0xFFFFFFFF)
        assert header["descriptor"] == (info.CRC, info.compress_size, info.file_size)
        # small sizes and offsets: the central directory needs no ZIP64 extra
        assert ZIP64_EXTRA not in extra_ids(info.extra)
    for name, body in bodies.items():
        assert archive.read(name) == body
    assert zip64_end_records(data) is None  # 4 entries: the classic end record suffices
    rows = manifest_rows(archive)
    assert [(r["name"], int(r["size"]), r["sha256"], r["status"]) for r in rows] == [
        (n, len(b), hashlib.sha256(b).hexdigest(), "ok") for n, b in bodies.items()]


def test_a_known_size_spares_small_entries_the_zip64_headers():
    """S3 gives each object's size (ContentLength) up front; small entries stay plain zip."""
    bodies = {"a.txt": b"hello " * 3000, "b/c.bin": os.urandom(10_000)}
    data = build((name, name, len(body), [body]) for name, body in bodies.items())
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    for info in archive.infolist():
        header = local_header(data, info)
        assert not header["zip64"] and header["version"] < ZIP64_VERSION
        assert header["descriptor"] == (info.CRC, info.compress_size, info.file_size)
    assert {n: archive.read(n) for n in bodies} == bodies


def test_more_than_65535_entries(record_property):
    count = 70_000
    started = time.monotonic()
    data = build((f"d{i % 7}/{i}.txt", f"k{i}", i % 3, [b"x" * (i % 3)]) for i in range(count))
    record_property("build_seconds", round(time.monotonic() - started, 2))
    # the classic end record saturates; the ZIP64 end record (found by its locator) has the real count
    assert zip64_end_records(data) == (count + 1, 0xFFFF)
    eocd = data.rindex(b"PK\x05\x06")
    assert struct.unpack_from("<HH", data, eocd + 8) == (0xFFFF, 0xFFFF)
    archive = zipfile.ZipFile(io.BytesIO(data))
    infos = archive.infolist()
    assert len(infos) == count + 1 and infos[-1].filename == MANIFEST_NAME
    assert archive.read("d6/69999.txt") == b"" and archive.read("d5/69998.txt") == b"xx"
    rows = manifest_rows(archive)
    assert len(rows) == count and rows[-1]["name"] == "d6/69999.txt"
    assert rows[-2]["size"] == "2" and rows[-2]["sha256"] == hashlib.sha256(b"xx").hexdigest()
    assert archive.testzip() is None


def test_entry_limit_is_a_user_facing_error():
    with pytest.raises(ExportError) as err:
        build(((f"{i}", f"{i}", None, [b""]) for i in range(10)), max_entries=3)
    assert err.value.code == "too_many_objects"


def test_skipped_entries_are_only_in_the_manifest_and_count_as_progress():
    seen = []
    data = build([("a", "a", None, [b"1"]), ("gone", "gone", None, None), ("b", "b", None, [b"2"])],
                 on_entry=lambda: seen.append(1))
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.namelist() == ["a", "b", MANIFEST_NAME]
    assert [(r["name"], r["status"], r["size"]) for r in manifest_rows(archive)] == [
        ("a", "ok", "1"), ("gone", "skipped", ""), ("b", "ok", "1")]
    assert len(seen) == 3


def test_one_source_is_open_at_a_time():
    open_now, peak = [0], [0]

    def source(n):
        open_now[0] += 1
        peak[0] = max(peak[0], open_now[0])
        yield b"y" * n
        open_now[0] -= 1

    build((f"{i}", f"{i}", None, source(i)) for i in range(50))
    assert peak == [1]


def test_stopping_mid_archive_closes_the_open_source_and_the_manifest(monkeypatch):
    """A cancel closes the chunk generator: the S3 body being read and the manifest's file go with it."""
    from chalicelib.exporters import s3_bundle

    manifests: list[Manifest] = []

    def tracked_manifest() -> Manifest:
        manifests.append(Manifest())
        return manifests[-1]

    monkeypatch.setattr(s3_bundle, "Manifest", tracked_manifest)
    closed: list[str] = []

    def source(name):
        try:
            while True:
                yield os.urandom(1 << 16)
        finally:
            closed.append(name)

    chunks = stream_bundle([("a", "a", 1 << 16, [b"done"]), ("endless", "endless", None, source("endless"))])
    for count, chunk in enumerate(chunks):
        if count > 50 and chunk:
            break
    chunks.close()
    assert closed == ["endless"] and manifests[0]._file.closed


def test_manifest_spills_to_disk_past_its_memory_budget(monkeypatch):
    from chalicelib.exporters import s3_bundle

    monkeypatch.setattr(s3_bundle, "MANIFEST_SPOOL_BYTES", 1024)
    manifest = Manifest()
    for i in range(100):
        manifest.add(f"名前{i}", f"k{i}", i, "0" * 64, "ok")
    assert manifest._file._rolled  # type: ignore[attr-defined]
    rows = list(csv.DictReader(io.StringIO(b"".join(manifest.chunks()).decode("utf-8"))))
    assert len(rows) == 100 and rows[99]["name"] == "名前99"


def test_an_entry_past_4_gib():
    """ZIP64 sizes for real: zeros compress fast, so this costs CPU time only.

    The size is known up front, as S3's ContentLength gives it; an entry of
    unknown size gets the same ZIP64 local header from its start (checked on
    small entries above).
    """
    mib, size = 1 << 20, (4 << 30) + (5 << 20)
    zeros = (bytes(mib) for _ in range(size // mib))
    data = build([("big.bin", "big.bin", size, zeros), ("after.txt", "after.txt", 2, [b"hi"])])
    archive = zipfile.ZipFile(io.BytesIO(data))
    big = archive.getinfo("big.bin")
    assert big.file_size == size
    # the central directory holds the real size in its ZIP64 extra (4 bytes cannot)
    header_id, _, usize, _csize = struct.unpack_from("<HHQQ", big.extra)
    assert header_id == ZIP64_EXTRA and usize == size
    # and so does the local side: ZIP64 local header, 64-bit data descriptor
    header = local_header(data, big)
    assert header["zip64"] and header["version"] == ZIP64_VERSION
    assert header["sizes"] == (0xFFFFFFFF, 0xFFFFFFFF)
    assert header["descriptor"] == (big.CRC, big.compress_size, size)
    crc, block = 0, bytes(mib)
    for _ in range(size // mib):
        crc = zlib.crc32(block, crc)
    assert crc == big.CRC  # the data descriptor came after the data, with its real CRC
    assert archive.read("after.txt") == b"hi"
    assert manifest_rows(archive)[0]["size"] == str(size)


def test_chunks_are_bounded_and_a_compressible_object_still_yields_between_reads():
    """The worker checks for cancel between chunks: every read must give control back."""
    mib, reads = 1 << 20, 48
    out: list[bytes] = []
    yielded_at_read: list[int] = []

    def zeros():
        for _ in range(reads):
            yielded_at_read.append(len(out))
            yield bytes(mib)  # deflates to (almost) nothing

    for chunk in stream_bundle([("z.bin", "z.bin", None, zeros()),
                                ("r.bin", "r.bin", None, [os.urandom(300_000)])], chunk_size=64 * 1024):
        out.append(chunk)
    # at least one chunk (maybe empty) between two reads of the source
    assert all(b > a for a, b in zip(yielded_at_read, yielded_at_read[1:], strict=False))
    assert max(map(len, out)) == 64 * 1024
    full = [c for c in out if c]
    assert all(len(c) == 64 * 1024 for c in full[:-1])
    archive = zipfile.ZipFile(io.BytesIO(b"".join(out)))
    assert archive.getinfo("z.bin").file_size == reads * mib and archive.testzip() is None


def test_memory_stays_bounded_while_streaming():
    """Neither the archive nor an object is held whole: 96 MiB go through a few MiB."""
    mib, reads = 1 << 20, 32
    block = os.urandom(mib)  # repeats farther apart than deflate's window: incompressible

    def source():
        for _ in range(reads):
            yield block

    tracemalloc.start()
    try:
        total = 0
        for chunk in stream_bundle([("r.bin", "r.bin", reads * mib, source()),
                                    ("r2.bin", "r2.bin", None, source()),
                                    ("z.bin", "z.bin", None, (bytes(mib) for _ in range(reads)))]):
            total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 2 * reads * mib
    assert peak < 8 * mib, f"peak {peak / mib:.1f} MiB"


# -- log_archive ----------------------------------------------------------------------------

EVENTS = [
    {"timestamp": 1714564800123, "ingestionTime": 1714564801000, "logStreamName": "web/1",
     "message": "GET /报表 200 Zoë\n"},
    {"timestamp": 1714564802000, "ingestionTime": 1714564803004, "logStreamName": "web/2",
     "message": '{"level": "ERROR", "msg": "naïve"}'},
]


def test_text_lines_and_jsonl_records():
    text = log_archive.encode_text(EVENTS).decode("utf-8")
    assert text == ("2024-05-01T12:00:00.123Z web/1 GET /报表 200 Zoë\n"
                    '2024-05-01T12:00:02.000Z web/2 {"level": "ERROR", "msg": "naïve"}\n')
    records = [json.loads(line) for line in log_archive.encode_jsonl(EVENTS).decode().splitlines()]
    assert records[0] == {"timestamp": "2024-05-01T12:00:00.123Z", "stream": "web/1",
                          "message": "GET /报表 200 Zoë\n", "ingestion_time": "2024-05-01T12:00:01.000Z"}


def test_gzip_stream_is_one_readable_member():
    parts = [f"line {i} Zoë\n".encode() * 500 for i in range(20)]
    out = list(gzip_chunks(iter(parts)))
    assert gzip.decompress(b"".join(out)) == b"".join(parts)
    assert b"".join(out)[:2] == b"\x1f\x8b"
    # one chunk out per chunk in (some empty), so the worker can check for cancel between pages
    assert len(out) == len(parts) + 1 and b"" in out


@pytest.mark.parametrize("start,end,ok", [
    ("2024-05-01T00:00:00Z", "2024-05-01T00:00:01Z", True),
    ("2024-05-01T00:00:00Z", "2024-06-01T00:00:00+00:00", True),  # exactly 31 days
    ("2024-05-01T00:00:00Z", "2024-06-01T00:00:00.001Z", False),
    ("2024-05-01T00:00:00Z", "2024-05-01T00:00:00Z", False),
    ("2024-05-02T00:00:00Z", "2024-05-01T00:00:00Z", False),
    ("2024-05-01T00:00:00+02:00", "2024-05-02T00:00:00Z", False),
])
def test_time_range_is_bounded_and_ordered(start, end, ok):
    if ok:
        start_ms, end_ms = log_archive.time_range({"start": start, "end": end})
        assert end_ms > start_ms
    else:
        with pytest.raises(ExportError) as err:
            log_archive.time_range({"start": start, "end": end})
        assert err.value.code == "invalid_time_range"


def test_a_bad_time_range_is_a_validation_error_at_creation():
    from chalicelib.errors import ValidationError
    from chalicelib.exporters.log_archive import LogArchiveExporter

    exporter = LogArchiveExporter()
    exporter.check({"start": "2024-05-01T00:00:00Z", "end": "2024-05-02T00:00:00Z"}, "text")
    with pytest.raises(ValidationError) as err:
        exporter.check({"start": "2024-05-01T00:00:00Z", "end": "2024-07-01T00:00:00Z"}, "jsonl")
    assert err.value.details == [{"field": "params.end",
                                  "issue": "must be at most 31 days after start; split the export"}]
