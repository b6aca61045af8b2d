"""How the kinds that read AWS cut their work into segments, and merge what segments saw: no AWS.

Slices of a time range, ranges of keys balanced by bytes with short bounds,
the notes a segment keeps on the task's item and the warnings made of them.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from chalicelib.config import Settings
from chalicelib.exporters import BuildContext, get_exporter
from chalicelib.exporters.dynamodb_table import (
    LISTED_NAMES,
    left_out_warning,
    segment_column_notes,
)
from chalicelib.exporters.log_archive import SECONDS_PER_HOUR, time_slices
from chalicelib.exporters.s3_bundle import (
    OBJECT_WEIGHT_BYTES,
    Selection,
    range_specs,
    separator,
    weighted_ranges,
)
from chalicelib.segments import Segment, SegStatus

# -- log_archive: time slices --------------------------------------------------------------------


@pytest.mark.parametrize("start, end, count", [(0, 3_600_000, 3), (1_700_000_000_123, 1_700_000_000_130, 3),
                                               (5, 6, 4), (10, 17, 32), (0, 86_400_000 * 31, 32)])
def test_time_slices_are_whole_milliseconds_in_order_with_no_gap_or_overlap(start, end, count):
    slices = time_slices(start, end, count)
    assert len(slices) == min(count, end - start)
    assert slices[0][0] == start and slices[-1][1] == end
    assert all(a < b for a, b in slices)  # never empty
    assert all(prev[1] == nxt[0] for prev, nxt in zip(slices, slices[1:], strict=False))
    assert all(isinstance(x, int) for s in slices for x in s)
    sizes = {b - a for a, b in slices}
    assert max(sizes) - min(sizes) <= 1


def test_the_log_estimate_is_the_range_in_hours_times_the_guess():
    exporter = get_exporter("log_archive")
    params = {"log_group": "/g", "start": "2024-05-01T00:00:00Z", "end": "2024-05-02T00:00:00Z"}
    assert exporter.estimate_seconds(params, "text", Settings()) == pytest.approx(24 * SECONDS_PER_HOUR)
    assert exporter.estimate_seconds({**params, "end": params["start"]}, "text", Settings()) is None


# -- s3_bundle: key ranges -----------------------------------------------------------------------


def test_weighted_ranges_cover_everything_once_and_split_by_weight():
    assert weighted_ranges([], 3) == []
    assert weighted_ranges([5, 5], 8) == [(0, 0), (1, 1)]  # never more ranges than items
    assert weighted_ranges([1] * 9, 3) == [(0, 2), (3, 5), (6, 8)]
    assert weighted_ranges([1, 1, 100, 1, 1, 1], 3) == [(0, 1), (2, 2), (3, 5)]  # the heavy one alone
    rng = random.Random(7)
    for _ in range(200):
        weights = [rng.choice((1, 10, 1000)) for _ in range(rng.randint(1, 60))]
        count = rng.randint(1, 40)
        ranges = weighted_ranges(weights, count)
        assert len(ranges) == min(count, len(weights)) and ranges[0][0] == 0
        assert ranges[-1][1] == len(weights) - 1
        assert all(a <= b for a, b in ranges)
        assert all(p[1] + 1 == n[0] for p, n in zip(ranges, ranges[1:], strict=False))
        # no range holds more than a share plus its heaviest item (and the items it must leave)
        share, heaviest = sum(weights) / len(ranges), max(weights)
        assert all(sum(weights[a:b + 1]) <= share + 2 * heaviest for a, b in ranges)


def test_a_separator_is_short_and_between_the_two_keys():
    assert separator("daily/report-004.csv", "daily/report-005.csv") == "daily/report-005"
    assert separator("a/b", "a/b/c") == "a/b"  # a key that is the other's start is its own bound
    assert separator("ab", "ac") == "ab"  # nothing shorter fits: 'ac' is the next key
    assert separator("abz", "ac") == "ab{"
    assert separator("\ud7ff", "\ue001") == "\ue000"  # no surrogate: UTF-8 cannot encode one
    assert separator("\U0010ffffa", "\U0010ffffc") == "\U0010ffffb"
    alphabet = "ab/-.0z报表Zoë😀\U0010ffff"
    rng = random.Random(3)
    for _ in range(2000):
        low, high = sorted("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in "xy")
        if low == high:
            continue
        cut = separator(low, high)
        assert low <= cut < high and len(cut) <= max(len(low), 1)
        # S3 keys are UTF-8 (encode raises on a surrogate), and S3's order is the bytes'
        assert low.encode() <= cut.encode("utf-8") < high.encode()


def covering(specs: list[dict], key: str) -> list[int]:
    """The segments whose prefix bounds (relative keys) take ``key``."""
    return [i for i, s in enumerate(specs) if s.get("prefix")
            and ("after" not in s or key > s["after"]) and ("upto" not in s or key <= s["upto"])]


def test_range_specs_store_index_ranges_and_shared_bounds_relative_to_the_prefix():
    prefix = "exports/2024/region=eu-west-1/customer=0000123456/"
    listed = [f"{prefix}daily/report-{i:03d}.csv" for i in range(30)]
    selection = Selection((10, 20, 30), tuple(listed), tuple([100] * 30))
    specs = range_specs(selection, prefix, 4)
    assert len(specs) == 4 and specs[0]["keys"] == [0, 2]
    assert all("keys" not in s for s in specs[1:])  # explicit keys come first and weigh little
    assert "after" not in specs[0] and "upto" not in specs[-1]
    assert [s["upto"] for s in specs[:-1]] == [s["after"] for s in specs[1:]]
    assert all(len(json.dumps(s).encode()) < 80 for s in specs)  # ~300 bytes a segment at most
    # every listed key, every key between them, before and after: in exactly one range
    rel = [k[len(prefix):] for k in listed]
    probes = rel + [k + "~" for k in rel] + [k[:-1] for k in rel] + ["", "a", "zzz"]
    assert all(len(covering(specs, key)) == 1 for key in probes)
    assert sum(len([k for k in rel if covering(specs, k) == [i]]) for i in range(4)) == 30


def test_range_specs_without_listed_keys_leave_the_prefix_to_the_last_segment():
    specs = range_specs(Selection((1, 2), (), ()), "empty/", 2)
    assert specs == [{"keys": [0, 0]}, {"keys": [1, 1], "prefix": True}]
    assert range_specs(Selection((1, 2), (), ()), None, 2) == [{"keys": [0, 0]}, {"keys": [1, 1]}]
    assert range_specs(Selection((), (), ()), "empty/", 3) == [{"prefix": True}]


def test_objects_weigh_their_bytes_and_a_share_of_time_each():
    selection = Selection((0,), ("p/a",), (1000,))
    assert selection.weights() == [OBJECT_WEIGHT_BYTES, 1000 + OBJECT_WEIGHT_BYTES]
    assert selection.objects == 2 and selection.bytes == 1000


# -- notes on a segment, and the task's warnings from them ----------------------------------------


def test_notes_survive_the_item_with_numbers_as_written():
    seg = Segment(2, {"segment": 1, "total": 3}, status=SegStatus.SUCCEEDED,
                  notes={"unseen": [1, 3], "left": ["rare"], "left_n": 1})
    item = seg.to_item()
    stored = json.loads(json.dumps(item), parse_float=Decimal, parse_int=Decimal)  # as DynamoDB hands back
    assert Segment.from_item(stored).notes == {"unseen": [1, 3], "left": ["rare"], "left_n": 1}
    assert "notes" not in Segment(1, {}).to_item()


def test_by_default_a_segments_warnings_are_its_notes_and_the_task_gets_each_once():
    exporter = get_exporter("demo")
    ctx = BuildContext(Settings())
    assert exporter.segment_notes(ctx) is None
    ctx.warn("some_code", "params.x", "Something about the params.")
    notes = exporter.segment_notes(ctx)
    assert notes == {"warnings": [{"code": "some_code", "field": "params.x",
                                   "message": "Something about the params."}]}
    other = {"warnings": [{"code": "other", "field": "params.y", "message": "Else."}]}
    assert exporter.segment_warnings({}, {}, [notes, None, other, notes]) == [
        *notes["warnings"], *other["warnings"]]


def test_a_segment_notes_which_requested_columns_it_never_saw_or_which_names_it_saw_beyond():
    assert segment_column_notes(["id", "nmae", "city"], ["id", "nmae", "city"], {"id", "city"}) == {
        "unseen": [1]}
    assert segment_column_notes(["id"], ["id"], {"id"}) == {}
    names = {f"extra{i:02d}" for i in range(25)} | {"id"}
    assert segment_column_notes([], ["id"], names) == {
        "left": [f"extra{i:02d}" for i in range(LISTED_NAMES)], "left_n": 25}
    assert segment_column_notes([], ["id"], {"id"}) == {}


def test_names_left_out_by_segments_are_merged_into_one_warning():
    exporter = get_exporter("dynamodb_table")
    params = {"table": "t"}
    shared = {"from": "sample", "columns": ["id"]}
    assert exporter.segment_warnings(params, shared, [None, {}, None]) == []
    (warning,) = exporter.segment_warnings(params, shared, [
        {"left": ["b", "c"], "left_n": 2}, None, {"left": ["a", "c"], "left_n": 2}])
    assert warning == left_out_warning({"a", "b", "c"}, 3, True, "sample")
    assert warning["message"].startswith("3 attribute(s) that some exported items have are in none of")
    assert "'a', 'b', 'c'." in warning["message"]
    # a segment that kept only its first names: the count is a lower bound, the names the first
    many = [f"n{i:02d}" for i in range(LISTED_NAMES)]
    (warning,) = exporter.segment_warnings(params, {"from": "some-names"}, [
        {"left": many, "left_n": 40}, {"left": ["a"], "left_n": 1}])
    assert warning["message"].startswith("At least 40 attribute(s)")
    assert "'a', 'n00'" in warning["message"] and "'n09'" not in warning["message"]
    assert "and others" in warning["message"] and "jsonl" in warning["message"]


def test_a_requested_column_a_segment_saw_is_no_warning_without_asking_the_source():
    exporter = get_exporter("dynamodb_table")
    params = {"table": "t", "columns": ["id", "rare"]}
    # segment 2 had "rare": not missing; no segment lacked "id"
    assert exporter.segment_warnings(params, {}, [{"unseen": [1]}, None, {"unseen": [1]}]) == []
