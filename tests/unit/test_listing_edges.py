"""Edges of GET /downloads without AWS: time bounds, cursors, limit, keys."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import cursor, ids
from chalicelib.errors import ValidationError
from chalicelib.validation import parse_list_query

YEAR_1 = datetime(1, 1, 1, tzinfo=UTC)
Y1960 = datetime(1960, 1, 1, tzinfo=UTC)
LAST_INSTANT = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
FIRST_ID, LAST_ID = "0" * 26, "7" + "Z" * 25  # ULID's range: 48 bits of ms, then 80 random


def code_of(fn, *args, **kwargs):
    with pytest.raises(ValidationError) as info:
        fn(*args, **kwargs)
    return info.value.code, info.value.details


def b64(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


# -- time bounds ---------------------------------------------------------------
@pytest.mark.parametrize("dt", [Y1960, YEAR_1, datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)])
def test_bounds_before_1970_clamp_to_the_first_id(dt):
    """A negative ms count used to wrap round to a huge id (1960 → "ZZPT…"),
    so created_before=1960 listed everything and created_after=1960 nothing."""
    assert ids.lowest_id_at(dt) == FIRST_ID
    assert ids.highest_id_at(dt) == "0" * 10 + "Z" * 16


def test_bounds_keep_the_order_of_real_ids_across_the_whole_calendar():
    now_id = ids.new_id()
    assert ids.lowest_id_at(YEAR_1) <= ids.lowest_id_at(Y1960) <= now_id
    assert now_id <= ids.highest_id_at(LAST_INSTANT) <= LAST_ID
    assert ids.lowest_id_at(LAST_INSTANT) <= ids.highest_id_at(LAST_INSTANT)


def test_far_future_bound_is_exact_to_the_millisecond():
    """``dt.timestamp()`` is a float: it rounded 9999-12-31T23:59:59.999999 up
    to the next second, so the bound named a millisecond after the instant."""
    ms = 253402300799999
    assert ids.lowest_id_at(LAST_INSTANT) == ids.new_id(ms)[:10] + "0" * 16
    assert ids.ms_at(datetime(2500, 4, 11, 20, 46, 4, 3999, tzinfo=UTC)) == 16733940364003


def test_ms_at_clamps_to_the_ulid_range_and_reads_naive_times_as_utc():
    assert ids.ms_at(datetime.min.replace(tzinfo=UTC)) == 0
    assert 0 < ids.ms_at(datetime.max.replace(tzinfo=UTC)) <= ids.MAX_MS
    assert ids.ms_at(datetime(1970, 1, 1, 0, 0, 1)) == 1000
    assert ids.ms_at(datetime(1970, 1, 1, 1, tzinfo=UTC) - timedelta(microseconds=1)) == 3599999


@pytest.mark.parametrize("name", ["created_after", "created_before"])
@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00"])
def test_times_outside_the_calendar_in_utc_are_400_not_a_crash(name, value):
    """Converting these to UTC overflowed datetime: an OverflowError, a 500."""
    code, details = code_of(parse_list_query, {name: value}, sees_others=False)
    assert code == "validation_error" and details[0]["field"] == name


def test_the_ends_of_the_calendar_are_accepted():
    q = parse_list_query({"created_after": "0001-01-01T00:00:00Z",
                          "created_before": "9999-12-31T23:59:59.999999Z"}, sees_others=False)
    assert ids.lowest_id_at(q.created_after) == FIRST_ID
    assert ids.new_id() <= ids.highest_id_at(q.created_before)


# -- cursors -------------------------------------------------------------------
def _window(after: datetime | None, before: datetime | None) -> ids.IdWindow:
    return ids.IdWindow.between(after, before)


def _key(task_id: str) -> dict:
    return {"id": {"S": task_id}, "owner": {"S": "u1"}}


def test_a_cursor_is_bound_to_its_time_window():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    made_for = _window(t0, None)
    token = cursor.encode("by_owner", "u1", made_for, _key(ids.new_id()))
    assert cursor.decode(token, "by_owner", "u1", "owner", _window(t0, None))
    for other in (ids.IdWindow(), _window(t0 + timedelta(milliseconds=1), None),
                  _window(t0, datetime(2027, 1, 1, tzinfo=UTC)), _window(None, t0)):
        assert code_of(cursor.decode, token, "by_owner", "u1", "owner", other)[0] == "invalid_cursor"


def test_windows_equal_to_the_millisecond_share_cursors():
    """The binding is to the id range queried, not to how the time was spelled."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    token = cursor.encode("by_owner", "u1", _window(t0, None), _key(ids.new_id()))
    assert cursor.decode(token, "by_owner", "u1", "owner",
                         _window(t0 + timedelta(microseconds=999), None))


def test_a_cursor_whose_id_lies_outside_its_window_is_refused():
    """DynamoDB rejects such a start key; a forged cursor must not get there."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    window = _window(t0, t0 + timedelta(days=1))
    early = ids.new_id(ids.ms_at(t0) - 1)
    late = ids.new_id(ids.ms_at(t0 + timedelta(days=1)) + 1)
    for outside in (early, late):
        token = b64({"v": cursor.VERSION, "i": "by_owner", "p": "u1",
                     "w": [window.low, window.high], "id": outside})
        assert code_of(cursor.decode, token, "by_owner", "u1", "owner", window)[0] == "invalid_cursor"


@pytest.mark.parametrize("bad", [
    b64({"v": 1, "i": "by_owner", "p": "u1", "k": {"id": {"S": ids.new_id()}, "owner": {"S": "u1"}}}),
    b64({"v": 2, "i": "by_owner", "p": "u1", "id": ids.new_id()}),
    b64({"v": 2, "i": "by_owner", "p": "u1", "w": [None, None], "id": 5}),
    b64({"v": True, "i": "by_owner", "p": "u1", "w": [None, None], "id": ids.new_id()}),
    b64([[[[]]]]), "[" * 3, base64.urlsafe_b64encode(b"[" * 1500).decode(), "ü",
], ids=["version 1", "no window", "id not a string", "version not a number", "nested arrays",
        "not base64", "deeply nested", "not ascii"])  # fixed ids: the cursors hold fresh task ids
def test_malformed_and_old_cursors_are_invalid_not_a_crash(bad):
    """The nested one raised RecursionError from json.loads: a 500."""
    assert code_of(cursor.decode, bad, "by_owner", "u1", "owner", ids.IdWindow())[0] == "invalid_cursor"


# -- limit and key parameters --------------------------------------------------
@pytest.mark.parametrize("raw", ["+5", " 5", "5 ", "1_0", "٥", "5.0", "0x10", "1" * 5000, "-1", ""])
def test_limit_is_plain_decimal_digits(raw):
    """int() took "1_0", "+5", " 5" and Arabic-Indic "٥" as limits."""
    assert code_of(parse_list_query, {"limit": raw}, sees_others=False)[0] == "invalid_limit"


@pytest.mark.parametrize("raw,limit", [("1", 1), ("100", 100), ("007", 7)])
def test_limit_edges_that_are_fine(raw, limit):
    assert parse_list_query({"limit": raw}, sees_others=False).limit == limit


@pytest.mark.parametrize("name", ["owner", "tenant"])
def test_partition_parameters_fit_a_dynamodb_hash_key(name):
    """2048 characters passed the check, but DynamoDB refuses a Query whose
    hash key is over 2048 bytes (ValidationException: a 500)."""
    assert parse_list_query({name: "x" * 2048}, sees_others=True)
    code, details = code_of(parse_list_query, {name: "é" * 1025}, sees_others=True)
    assert code == "validation_error" and details[0]["field"] == name
