"""Request validation and small pure helpers, without AWS."""

import base64
import json
from datetime import UTC, datetime

import pytest

from chalicelib import cursor, ids
from chalicelib.errors import ValidationError
from chalicelib.messages import BuildMessage, InvalidMessage, RequestMessage, SegmentMessage, parse
from chalicelib.validation import (
    DECEPTIVE_NAME_ISSUE,
    final_file_name,
    parse_create,
    parse_json_body,
    parse_list_query,
    parse_rename,
    validate_idempotency_key,
)


def code_of(fn, *args, **kwargs):
    with pytest.raises(ValidationError) as info:
        fn(*args, **kwargs)
    return info.value.code, info.value.details


def test_create_minimal_gets_defaults():
    req = parse_create({"task_name": "导出", "kind": "demo"})
    assert req.format == "csv" and req.params == {"rows": 1000, "seed": 0}
    assert req.file_name is None


@pytest.mark.parametrize("body,code,field", [
    ({"kind": "demo"}, "validation_error", "task_name"),
    ({"task_name": "", "kind": "demo"}, "validation_error", "task_name"),
    ({"task_name": "x" * 201, "kind": "demo"}, "validation_error", "task_name"),
    ({"task_name": 5, "kind": "demo"}, "validation_error", "task_name"),
    ({"task_name": "t"}, "validation_error", "kind"),
    ({"task_name": "t", "kind": "nope"}, "unknown_kind", "kind"),
    ({"task_name": "t", "kind": "demo", "format": "xls"}, "unknown_format", "format"),
    ({"task_name": "t", "kind": "demo", "params": {"rows": 0}}, "validation_error", "params.rows"),
    ({"task_name": "t", "kind": "demo", "params": {"rows": 10_000_001}}, "validation_error",
     "params.rows"),
    ({"task_name": "t", "kind": "demo", "params": {"colour": 1}}, "validation_error", "params.colour"),
    ({"task_name": "t", "kind": "demo", "params": []}, "validation_error", "params"),
    ({"task_name": "t", "kind": "demo", "extra": 1}, "validation_error", "extra"),
    ({"task_name": "t", "kind": "dynamodb_table", "params": {}}, "validation_error", "params.table"),
    ({"task_name": "t", "kind": "dynamodb_table",
      "params": {"table": "demo-users", "filters": [{"attr": "a", "op": "like", "value": 1}]}},
     "validation_error", "params.filters[0].op"),
])
def test_create_rejects(body, code, field):
    got, details = code_of(parse_create, body)
    assert got == code
    assert any(d["field"] == field for d in details), details


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b.csv", "a\\b.csv", ".hidden", "a\x01b",
                                  "x" * 201, "", 'quo"te.csv', " lead.csv"])
def test_unsafe_file_names_are_rejected(name):
    code, details = code_of(parse_create, {"task_name": "t", "kind": "demo", "file_name": name})
    assert code == "validation_error" and details[0]["field"] == "file_name"


def test_file_name_extension_and_derivation():
    at = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)
    assert final_file_name("user_list_202405", "t", ".csv", at) == "user_list_202405.csv"
    assert final_file_name("report.CSV", "t", ".csv", at) == "report.CSV"
    assert final_file_name(None, "用户/数据", ".jsonl", at) == "用户_数据_20240501-083000.jsonl"
    assert final_file_name(None, ".hidden", ".csv", at).startswith("hidden_")


@pytest.mark.parametrize("raw,code", [
    (b"", "invalid_json"), (b"{", "invalid_json"), (b"[1]", "invalid_json"),
    (b"\xff\xfe", "invalid_json"), (b'{"a": "' + b"x" * 70000 + b'"}', "body_too_large"),
])
def test_json_body_errors(raw, code):
    assert code_of(parse_json_body, raw)[0] == code


@pytest.mark.parametrize("raw", [
    b'{"task_name": "\\ud800", "kind": "demo"}',
    b'{"task_name": "t", "kind": "demo", "params": {"headers": {"id": "a\\udc00"}}}',
    b'{"\\udfff": 1}',
    b'{"task_name": "t", "kind": "demo", "params": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
])
def test_json_bodies_no_encoder_can_take_are_invalid_json(raw):
    """Found probing the local stack: both were a 500, a lone surrogate in params worse (see below)."""
    assert code_of(parse_json_body, raw)[0] == "invalid_json"


#: names that show other than they are: a terminal's escape sequences and line breaks (C0, DEL,
#: C1), and Unicode's invisible format characters (category Cf) that reorder or hide text
DECEPTIVE = ["evil\x1b[2J", "a\rb", "a\nFAKE ROW", "nul\x00", "tab\there", "del\x7f", "c1\x9b31m",
             "invoice\u202efdp.exe", "zero\u200bwidth", "zwj\u200d", "joiner\u2060", "bom\ufeff",
             "isolate\u2066x\u2069", "soft\u00adhyphen", "tag\U000e0041"]


@pytest.mark.parametrize("name", DECEPTIVE)
@pytest.mark.parametrize("field", ["task_name", "file_name"])
def test_names_with_control_or_format_characters_are_refused(field, name):
    body = {"task_name": "t", "kind": "demo", field: name}
    code, details = code_of(parse_create, body)
    assert code == "validation_error"
    assert details == [{"field": field, "issue": DECEPTIVE_NAME_ISSUE}]


@pytest.mark.parametrize("name", DECEPTIVE)
def test_a_rename_to_a_deceptive_name_is_refused(name):
    code, details = code_of(parse_rename, {"task_name": name})
    assert code == "validation_error"
    assert details == [{"field": "task_name", "issue": DECEPTIVE_NAME_ISSUE}]


def test_names_in_any_script_with_emoji_stay_accepted():
    for name in ("Users, 三月", "تقرير", "עברית report", "\U0001f600 export", "naïve café"):
        assert parse_create({"task_name": name, "kind": "demo", "file_name": name}).task_name == name
        assert parse_rename({"task_name": name}) == name


def test_a_number_of_thousands_of_digits_is_invalid_json_in_the_apis_words():
    """Python's own text ("Exceeds the limit (4300 digits) for integer string conversion...")
    named an interpreter setting; the envelope says what is wrong with the body."""
    with pytest.raises(ValidationError) as info:
        parse_json_body(b'{"task_name": "t", "kind": "demo", "params": {"rows": ' + b"7" * 5000 + b"}}")
    assert info.value.code == "invalid_json"
    assert info.value.message == ("The request body is not valid JSON the API takes: it holds a number "
                                  "of more than 4300 digits.")


def test_json_syntax_errors_say_where_in_the_apis_words():
    with pytest.raises(ValidationError) as info:
        parse_json_body(b'{"task_name": }')
    assert info.value.message == "The request body is not valid JSON: Expecting value at line 1, column 15."


def test_json_body_keeps_surrogate_pairs():
    assert parse_json_body(b'{"task_name": "\\ud83d\\ude00"}') == {"task_name": "\U0001f600"}


def test_idempotency_key_bounds():
    assert validate_idempotency_key("abc") == "abc"
    assert validate_idempotency_key(None) is None
    for bad in ("", "x" * 256, "a\nb"):
        assert code_of(validate_idempotency_key, bad)[0] == "validation_error"


def test_list_query_parsing():
    q = parse_list_query({"status": "queued,succeeded", "limit": "5",
                          "created_after": "2026-11-01T00:00:00Z"}, sees_others=False)
    assert {s.value for s in q.statuses} == {"queued", "succeeded"} and q.limit == 5
    assert q.created_after == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_list_query(None, sees_others=False).limit == 20
    assert parse_list_query({"owner": "x"}, sees_others=True).owner == "x"


@pytest.mark.parametrize("params,code", [
    ({"limit": "0"}, "invalid_limit"), ({"limit": "101"}, "invalid_limit"),
    ({"limit": "ten"}, "invalid_limit"), ({"status": "done"}, "validation_error"),
    ({"created_after": "yesterday"}, "validation_error"), ({"owner": "x"}, "validation_error"),
    ({"created_after": "2026-02-01", "created_before": "2026-01-01"}, "validation_error"),
    ({"sort": "asc"}, "validation_error"),
])
def test_list_query_errors(params, code):
    assert code_of(parse_list_query, params, sees_others=False)[0] == code


@pytest.mark.parametrize("status", ["", " ", ",", "queued,", ",queued", "queued,,failed"])
def test_empty_statuses_are_refused(status):
    """Found by schemathesis: ``status=`` used to mean "any status", though ``kind=`` is a 400."""
    got, details = code_of(parse_list_query, {"status": status}, sees_others=False)
    assert got == "validation_error"
    assert details == [{"field": "status",
                        "issue": "must not be empty or have an empty item between commas"}]


def test_spaces_around_status_commas_are_ignored():
    q = parse_list_query({"status": " queued , failed"}, sees_others=False)
    assert {s.value for s in q.statuses} == {"queued", "failed"}


def test_ids_sort_by_time_and_bound_ranges():
    early = datetime(2026, 1, 1, tzinfo=UTC)
    late = datetime(2026, 6, 1, tzinfo=UTC)
    a = ids.new_id(int(early.timestamp() * 1000))
    b = ids.new_id(int(late.timestamp() * 1000))
    assert a < b and ids.is_valid(a) and not ids.is_valid("nope")
    assert ids.lowest_id_at(early) <= a <= ids.highest_id_at(early) < b


def test_cursor_roundtrip_and_binding():
    key = {"id": {"S": ids.new_id()}, "owner": {"S": "u1"}}
    anywhen = ids.IdWindow()
    token = cursor.encode("by_owner", "u1", anywhen, key)
    assert cursor.decode(token, "by_owner", "u1", "owner", anywhen) == key
    for args in (("by_owner", "u2", "owner"), ("by_scope", "u1", "scope")):
        with pytest.raises(ValidationError) as info:
            cursor.decode(token, *args, anywhen)
        assert info.value.code == "invalid_cursor"
        assert info.value.details == [{"field": "cursor",
                                       "issue": "is not valid for this listing; start again without it"}]
    forged = base64.urlsafe_b64encode(json.dumps(
        {"v": 2, "i": "by_owner", "p": "u1", "w": [None, None], "id": "x"}
    ).encode()).decode()
    for bad in ("garbage!!", "e30", forged):
        with pytest.raises(ValidationError):
            cursor.decode(bad, "by_owner", "u1", "owner", anywhen)


def test_message_parsing():
    assert parse('{"type": "download.build", "version": 1, "task_id": "T"}') == BuildMessage("T")
    req = {"task_name": "t", "kind": "demo", "params": {"rows": 5}, "owner": "u1",
           "idempotency_key": "k1"}
    msg = parse(json.dumps({"type": "download.request", "version": 1, "request": req}))
    assert isinstance(msg, RequestMessage) and msg.owner == "u1" and msg.tenant == "default"
    envelope = {"version": "0", "detail-type": "download.request", "source": "crm", "detail": req}
    wrapped = parse(json.dumps(envelope))
    assert isinstance(wrapped, RequestMessage) and wrapped.idempotency_key == "k1"
    segment = '{"type": "download.segment", "version": 1, "task_id": "T", "lease": 2, "segment": 3}'
    assert parse(segment) == SegmentMessage("T", 2, 3)


@pytest.mark.parametrize("body", [
    "not json", "[]", "{}", '{"type": "download.build"}', '{"type": "download.nuke"}',
    '{"type": "download.build", "version": 2, "task_id": "T"}',
    '{"type": "download.request", "request": {"task_name": "t", "kind": "demo"}}',
    '{"type": "download.request", "request": {"task_name": "t", "kind": "x", "owner": "u"}}',
    '{"detail-type": "download.request", "detail": "nope"}',
    '{"type": "download.segment", "version": 1, "task_id": "T", "lease": 1}',
    '{"type": "download.segment", "version": 1, "task_id": "T", "lease": 0, "segment": 1}',
    '{"type": "download.segment", "version": 1, "task_id": "T", "lease": true, "segment": 1}',
    '{"type": "download.segment", "version": 1, "lease": 1, "segment": 1}',
])
def test_invalid_messages(body):
    with pytest.raises(InvalidMessage):
        parse(body)


def _request(**fields):
    req = {"task_name": "t", "kind": "demo", "params": {"rows": 5}, "owner": "u1"} | fields
    return json.dumps({"type": "download.request", "version": 1, "request": req})


@pytest.mark.parametrize("body,words", [
    # issue 19: each was read as a request, and the tenant became a path
    (_request(tenant="acme/01JDQ4V8Z8S9Y6K1E6J3X2M7TQ"), "request.tenant must be"),
    (_request(tenant=".."), "request.tenant must be"),
    (_request(tenant="acme/../globex"), "request.tenant must be"),
    (_request(tenant="acme\n"), "request.tenant must be"),
    (_request(tenant="a..b"), "request.tenant must be"),
    (_request(owner="u1/../u2"), "request.owner must be"),
    (_request(owner="u1#x"), "request.owner must be"),
    (_request(owner_name="alice\x1b[2J"), "request.owner_name must not"),
    (_request(groups="admin"), "request.groups must be"),
    (_request(groups=["admin\n"]), "request.groups must be"),
    (_request(idempotency_key="k\n"), "request.idempotency_key must be"),
    (json.dumps({"version": "0", "detail-type": "Object Created", "source": "aws.s3",
                 "detail": json.loads(_request())["request"]}), "detail-type 'Object Created'"),
])
def test_a_request_is_held_to_the_rules_of_the_api(body, words):
    with pytest.raises(InvalidMessage) as info:
        parse(body)
    assert words in info.value.reason and info.value.code == "invalid_message"


def test_a_request_declares_groups_and_a_safe_tenant():
    msg = parse(_request(tenant="acme-2.eu_west", owner="0b1e-4f@svc", groups=["admin", "x"]))
    assert isinstance(msg, RequestMessage)
    assert msg.tenant == "acme-2.eu_west" and msg.groups == frozenset({"admin", "x"})
    assert parse(_request()).groups == frozenset()  # none declared: a signed-in user's rights only


def test_a_listing_query_reports_every_problem_at_once_in_words():
    """Found with issue 12: the first bad limit hid the rest, and a status read "'done' is not a status"."""
    with pytest.raises(ValidationError) as info:
        parse_list_query({"limit": "0", "status": "queued,done", "created_after": "2026-02-01",
                          "created_before": "2026-01-01", "kind": "", "sort": "asc"}, sees_others=False)
    assert info.value.code == "invalid_limit"  # as before: the limit's own code
    assert info.value.details == [
        {"field": "sort", "issue": "is not a known query parameter"},
        {"field": "status", "issue": 'has "done", which is not one of "queued", "running", "canceling", '
                                     '"succeeded", "failed", "canceled" or "expired"'},
        {"field": "limit", "issue": "must be a whole number from 1 to 100"},
        {"field": "created_after", "issue": "must not be later than created_before"},
        {"field": "kind", "issue": "must be 1 to 2048 characters long"},
    ]
    assert info.value.message.startswith("The request has 5 problems: sort is not a known query parameter; ")


def test_header_and_file_name_issues_are_sentences():
    with pytest.raises(ValidationError) as info:
        validate_idempotency_key("a\nb")
    assert info.value.details == [{"field": "Idempotency-Key",
                                   "issue": "must be 1 to 255 printable characters"}]
    assert info.value.message == "Idempotency-Key must be 1 to 255 printable characters."
    for name, issue in (("a/b", 'must not contain a slash (/), a backslash (\\) or a double quote (")'),
                        ("a\x01b", DECEPTIVE_NAME_ISSUE),
                        (" a", "must not start with a dot, nor start or end with white space")):
        with pytest.raises(ValidationError) as info:
            parse_create({"task_name": "t", "kind": "demo", "file_name": name})
        assert info.value.details == [{"field": "file_name", "issue": issue}]
