"""The segments' rules without AWS: ranges, names, counts, progress, and the composition plan."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from chalicelib.segments import (
    MAX_SEGMENTS,
    SEGMENT_MACHINE,
    Segment,
    SegStatus,
    count_for,
    etag_digest,
    even_ranges,
    first_part,
    fresh,
    part_name,
    part_span,
    progress,
    ranges_of,
    rebuild_groups,
)

MiB = 1024 * 1024


@pytest.mark.parametrize("first, last, count", [(1, 10, 3), (1, 4_000_000, 4), (5, 5, 8), (1, 7, 7)])
def test_even_ranges_cover_everything_once_in_order(first, last, count):
    ranges = even_ranges(first, last, count)
    assert ranges[0][0] == first and ranges[-1][1] == last
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    sizes = [b - a + 1 for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1 and len(ranges) == min(count, last - first + 1)


@pytest.mark.parametrize("name, expected", [
    ("export.csv.gz", "export-00001-of-00008.csv.gz"), ("users", "users-00001-of-00008"),
    ("报表 2024.jsonl", "报表 2024-00001-of-00008.jsonl"),
])
def test_part_names_keep_every_suffix(name, expected):
    assert part_name(name, 1, 8) == expected


@pytest.mark.parametrize("name, expected", [
    ("Users v2.1 final_20260101-120000.csv", "Users v2.1 final_20260101-120000-00001-of-00002.csv"),
    ("report.v3.csv.gz", "report.v3-00001-of-00002.csv.gz"),
    ("app 1.2.log.gz", "app 1.2-00001-of-00002.log.gz"),
    ("bundle.2026.01.zip", "bundle.2026.01-00001-of-00002.zip"),
    ("Q1.final.xlsx", "Q1.final-00001-of-00002.xlsx"),
    ("REPORT.V2.JSONL.GZ", "REPORT.V2-00001-of-00002.JSONL.GZ"),  # its own spelling kept
    ("notes.v2", "notes.v2-00001-of-00002"),  # no extension any kind writes: nothing is cut
    (".csv", ".csv-00001-of-00002"),  # all extension (refused at create, but never an empty stem)
])
def test_part_names_cut_only_the_formats_extension(name, expected):
    """A dot in the name is not an extension: only what a kind writes is cut (issue 18)."""
    assert part_name(name, 1, 2) == expected


def test_a_part_name_cuts_the_extension_it_is_given():
    assert part_name("a.b.jsonl.gz", 3, 4, extension=".jsonl.gz") == "a.b-00003-of-00004.jsonl.gz"
    assert part_name("v1.5 rows.csv", 1, 2, extension=".csv") == "v1.5 rows-00001-of-00002.csv"
    # one the name does not end with is not cut into it: the known extensions decide
    assert part_name("v1.5 rows.csv", 1, 2, extension=".xlsx") == "v1.5 rows-00001-of-00002.csv"


def test_a_registered_kinds_own_extension_is_cut_too():
    from chalicelib.exporters import REGISTRY, known_extensions, register
    from chalicelib.exporters.s3_bundle import S3BundleExporter
    from chalicelib.formats.base import Format

    class Parquet(S3BundleExporter):
        kind = "parquet_demo"
        formats = ("parquet",)

        def format_for(self, name: str) -> Format:
            return Format(name="parquet", extension=".parquet", content_type="application/vnd.apache.parquet")

    register(Parquet())
    try:
        assert ".parquet" in known_extensions()
        assert part_name("sales 2.0.parquet", 2, 2) == "sales 2.0-00002-of-00002.parquet"
    finally:
        del REGISTRY["parquet_demo"]


def test_count_for_honours_the_number_asked_and_plans_auto_from_the_budget():
    assert count_for(4, None, 900) == 4
    assert count_for(99, None, 900) == MAX_SEGMENTS
    assert count_for("auto", None, 900) == 1  # nothing known: one worker
    assert count_for("auto", 100, 900) == 1  # fits a quarter of the budget
    assert count_for("auto", 1000, 900) == 5  # 1000 s / 225 s
    assert count_for("auto", 10**6, 5) == MAX_SEGMENTS


def test_progress_adds_up_the_segments_and_counts_them():
    segs = (Segment(1, {}, SegStatus.SUCCEEDED, rows=10, bytes=100, size=100),
            Segment(2, {}, SegStatus.RUNNING, rows=5, bytes=40), Segment(3, {}))
    assert progress(segs, 30, final=False) == {
        "rows": 15, "bytes": 140, "total": 30, "percent": 50.0,
        "segments": {"total": 3, "succeeded": 1, "running": 1, "failed": 0}}
    assert progress(segs, 30, final=True)["percent"] == 100.0


def test_a_new_plan_keeps_what_succeeded_and_starts_the_rest_over():
    done = Segment(1, {"a": 1}, SegStatus.SUCCEEDED, lease=1, size=5, key="k")
    died = Segment(2, {"a": 2}, SegStatus.RUNNING, lease=3, claims=3, tries=1, rows=9, key="x")
    kept, again = fresh((done, died))
    assert kept == done
    assert again.status is SegStatus.QUEUED and again.claims == 0 and again.tries == 0
    assert again.rows == 0 and again.key is None and again.lease == 3  # leases only ever grow


def test_the_segment_machine_is_the_lifecycle_described():
    assert {(m.name, tuple(sorted(m.sources)), m.target) for m in SEGMENT_MACHINE} == {
        ("claim", ("queued", "running"), "running"), ("succeed", ("running",), "succeeded"),
        ("retry", ("running",), "queued"), ("fail", ("running",), "failed"),
        ("reset", ("failed", "queued", "running"), "queued")}


def test_segment_items_round_trip():
    seg = Segment(3, {"first": 1}, SegStatus.SUCCEEDED, lease=2, claims=1, tries=1, rows=4, bytes=5,
                  heartbeat_at=int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()), size=5, md5="m",
                  sha256="s", key="k", error={"code": "c", "message": "m"}, parts=[1, 4],
                  etags="e", stored_at=7)
    assert Segment.from_item(seg.to_item()) == seg


def check_groups(sizes, min_part):
    """What the finish completes (groups built again as one stream each, the rest as stored) is a
    valid upload: every part but the last at least ``min_part``."""
    groups = rebuild_groups(sizes, min_part)
    flat = [i for g in groups for i in g]
    assert flat == sorted(set(flat))  # each segment at most once, in order
    for group in groups:
        assert group == list(range(group[0], group[-1] + 1))  # a run of neighbours
    # the pieces the file is made of: a group's bytes are one piece, another segment its own
    pieces, i = [], 0
    starts = {g[0]: g for g in groups}
    while i < len(sizes):
        if i in starts:
            pieces.append(sum(sizes[j] for j in starts[i]))
            i = starts[i][-1] + 1
        else:
            pieces.append(sizes[i])
            i += 1
    with_bytes = [p for p in pieces if p]
    assert all(p >= min_part for p in with_bytes[:-1])
    return groups


@pytest.mark.parametrize("sizes, groups", [
    ([6 * MiB, 6 * MiB], []), ([1, 2, 3], [[0, 1, 2]]), ([0, 0, 0], []), ([7 * MiB, 1], []),
    ([6 * MiB, 1 * MiB, 7 * MiB], [[1, 2]]), ([1 * MiB, 20 * MiB, 1 * MiB], [[0, 1]]),
    ([0, 7 * MiB, 0], []), ([7 * MiB, 1, 0, 0], []), ([6 * MiB, 2 * MiB, 2 * MiB, 2 * MiB, 6 * MiB],
                                                    [[1, 2, 3]]),
])
def test_only_short_segments_before_others_are_built_again(sizes, groups):
    assert check_groups(sizes, 5 * MiB) == groups


def test_rebuild_groups_hold_for_random_sizes():
    rng = random.Random(10)
    for _ in range(2000):
        sizes = [rng.choice([0, rng.randrange(1, 10), rng.randrange(1, 40), rng.randrange(40, 400)])
                 for _ in range(rng.randrange(1, 12))]
        check_groups(sizes, 10)


def test_part_ranges_of_segments_never_overlap_and_fit_s3s_cap():
    for total in (1, 2, 3, 7, 32):
        firsts = [first_part(n, total) for n in range(1, total + 1)]
        assert firsts[0] == 1
        assert all(b - a == part_span(total) for a, b in zip(firsts, firsts[1:], strict=False))
        assert firsts[-1] + part_span(total) - 1 <= 10_000


def test_ranges_are_contiguous_and_carry_each_segments_checksums():
    segs = [Segment(1, {}, SegStatus.SUCCEEDED, rows=2, size=10, md5="a", sha256="b"),
            Segment(2, {}, SegStatus.SUCCEEDED, rows=0, size=0, md5="c", sha256="d"),
            Segment(3, {}, SegStatus.SUCCEEDED, rows=1, size=5, md5="e", sha256="f")]
    assert ranges_of(segs) == [
        {"segment": 1, "start": 0, "size": 10, "rows": 2, "md5": "a", "sha256": "b"},
        {"segment": 2, "start": 10, "size": 0, "rows": 0, "md5": "c", "sha256": "d"},
        {"segment": 3, "start": 10, "size": 5, "rows": 1, "md5": "e", "sha256": "f"}]


def test_etag_digests_tell_a_changed_part():
    parts = [(1, '"aa"'), (2, '"bb"')]
    assert etag_digest(parts) == etag_digest([(1, "aa"), (2, "bb")])  # quoted or not, as S3 varies
    assert etag_digest(parts) != etag_digest([(1, '"aa"'), (2, '"bc"')])
    assert etag_digest(parts) != etag_digest([(1, '"aa"'), (3, '"bb"')])


def test_the_claim_rule_is_one_table():
    from chalicelib.segments import SEG_CLAIM, SEG_SUCCEED
    now = 1_000
    queued = Segment(1, {}, SegStatus.QUEUED)
    alive = Segment(1, {}, SegStatus.RUNNING, lease=2, heartbeat_at=now - 10)
    dead = replace(alive, heartbeat_at=now - 400)
    assert SEG_CLAIM.admits(queued, None, now, 300) and SEG_CLAIM.admits(dead, None, now, 300)
    assert not SEG_CLAIM.admits(alive, None, now, 300)
    assert not SEG_CLAIM.admits(replace(alive, status=SegStatus.SUCCEEDED), None, now, 300)
    assert SEG_SUCCEED.admits(alive, alive, now, 300)
    assert not SEG_SUCCEED.admits(alive, replace(alive, lease=1), now, 300)  # a superseded build
