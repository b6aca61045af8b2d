"""The zip and gzip writers of s3_bundle and log_archive, without AWS.

The archive's structure (ZIP64 records, UTF-8 flags, > 65,535 entries) is
checked here on in-memory members: building that many objects under moto
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
import zipfile

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


def test_every_entry_is_zip64_with_utf8_names_and_the_manifest_last():
    bodies = {"报表/Zoë.txt": "你好, Zoë\n".encode() * 1000, "empty": b"", "bin/x.dat": os.urandom(70_000)}
    data = build((name, name, None, [body[:5000], body[5000:]]) for name, body in bodies.items())
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    infos = archive.infolist()
    assert [i.filename for i in infos] == [*bodies, MANIFEST_NAME]
    for info in infos:
        assert info.flag_bits & UTF8_FLAG, info.filename
        assert ZIP64_EXTRA in extra_ids(info.extra), f"{info.filename}: no zip64 central extra"
        # the local header: zip64 version, sizes deferred to the 64-bit fields
        sig, version, _flags, _method, _t, _d, _crc, csize, usize, nlen, xlen = struct.unpack_from(
            "<IHHHHHIIIHH", data, info.header_offset)
        assert sig == 0x04034B50 and version == 45
        assert (csize, usize) == (0xFFFFFFFF, 0xFFFFFFFF)
        local_extra = data[info.header_offset + 30 + nlen: info.header_offset + 30 + nlen + xlen]
        assert ZIP64_EXTRA in extra_ids(local_extra)
    for name, body in bodies.items():
        assert archive.read(name) == body
    # zip64 end of central directory record and locator precede the classic end record
    eocd = data.rindex(b"PK\x05\x06")
    assert data[eocd - 20: eocd - 16] == b"PK\x06\x07"
    (zip64_eocd_at,) = struct.unpack_from("<Q", data, eocd - 20 + 8)
    assert data[zip64_eocd_at: zip64_eocd_at + 4] == b"PK\x06\x06"
    rows = manifest_rows(archive)
    assert [(r["name"], int(r["size"]), r["sha256"], r["status"]) for r in rows] == [
        (n, len(b), hashlib.sha256(b).hexdigest(), "ok") for n, b in bodies.items()]


def test_more_than_65535_entries(record_property):
    count = 70_000
    started = time.monotonic()
    data = build((f"d{i % 7}/{i}.txt", f"k{i}", None, [b"x" * (i % 3)]) for i in range(count))
    record_property("build_seconds", round(time.monotonic() - started, 2))
    # the classic end record saturates; the zip64 record carries the real count
    eocd = data.rindex(b"PK\x05\x06")
    on_disk, total = struct.unpack_from("<HH", data, eocd + 8)
    assert (on_disk, total) == (0xFFFF, 0xFFFF)
    zip64_eocd = data.rindex(b"PK\x06\x06")
    (entries,) = struct.unpack_from("<Q", data, zip64_eocd + 32)
    assert entries == count + 1
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


def test_manifest_cells_that_would_run_as_formulas_stay_text():
    key = "=cmd|' /C calc'!A0"
    archive = zipfile.ZipFile(io.BytesIO(build([(key, key, None, [b"1"]), ("-5", "-5", None, [b"2"])])))
    assert archive.namelist()[0] == key  # the file keeps its name; only the manifest is escaped
    assert [(r["name"], r["key"]) for r in manifest_rows(archive)] == [("'" + key, "'" + key), ("-5", "-5")]


def test_one_source_is_open_at_a_time():
    open_now, peak = [0], [0]

    def source(n):
        open_now[0] += 1
        peak[0] = max(peak[0], open_now[0])
        yield b"y" * n
        open_now[0] -= 1

    build((f"{i}", f"{i}", None, source(i)) for i in range(50))
    assert peak == [1]


def test_manifest_spills_to_disk_past_its_memory_budget(monkeypatch):
    from chalicelib.exporters import s3_bundle

    monkeypatch.setattr(s3_bundle, "MANIFEST_SPOOL_BYTES", 1024)
    manifest = Manifest()
    for i in range(100):
        manifest.add(f"名前{i}", f"k{i}", i, "0" * 64, "ok")
    assert manifest._file._rolled  # type: ignore[attr-defined]
    rows = list(csv.DictReader(io.StringIO(b"".join(manifest.chunks()).decode("utf-8"))))
    assert len(rows) == 100 and rows[99]["name"] == "名前99"


@pytest.mark.slow
def test_an_entry_past_4_gib():
    """ZIP64 sizes for real: zeros compress fast, so this costs CPU time only."""
    mib, size = 1 << 20, (4 << 30) + (5 << 20)
    zeros = (bytes(mib) for _ in range(size // mib))
    data = build([("big.bin", "big.bin", None, zeros), ("after.txt", "after.txt", None, [b"hi"])])
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.getinfo("big.bin").file_size == size
    assert archive.read("after.txt") == b"hi"
    assert manifest_rows(archive)[0]["size"] == str(size)


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
