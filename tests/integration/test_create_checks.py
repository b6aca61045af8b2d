"""Mistakes refused at create (``Exporter.preflight`` and the params schema), not by a later build.

Each refusal is a 400 (403 for a source off the allow-list) whose ``details``
name the field, nothing is queued, and the source is asked at most once or
twice. A source that cannot answer at create is no refusal: the create goes on.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib.adapters.aws import client

from .conftest import Stack

SOURCES = "download-center-sources"
GROUP = "/download-center/demo"
LOG_RANGE = {"start": "2024-05-01T00:00:00Z", "end": "2024-05-02T00:00:00Z"}
#: The shipped access policy opens log archives to admins only.
USER_FOR = {"log_archive": "admin"}


def post(stack: Stack, kind: str, params: dict[str, Any], **body: Any) -> Any:
    payload = {"task_name": "t", "kind": kind, "params": params} | body
    return stack.client.http.post("/downloads", headers=stack.users[USER_FOR.get(kind, "alice")].headers,
                                  body=json.dumps(payload))


def refused(stack: Stack, kind: str, params: dict[str, Any], status: int = 400, **body: Any) -> dict:
    resp = post(stack, kind, params, **body)
    assert resp.status_code == status, resp.body
    assert stack.drain() == []  # nothing queued, no task to fail later
    return resp.json_body["error"]


def calls(service: str, operation: str) -> list[dict]:
    """The params of each call the create's source checks make (their own quick client)."""
    seen: list[dict] = []
    client(service, probe=True).meta.events.register(
        f"provide-client-params.{service}.{operation}", lambda params, **_: seen.append(dict(params)))
    return seen


def make_table(name: str = "demo-users", indexes: tuple[str, ...] = ()) -> None:
    attributes = [{"AttributeName": "id", "AttributeType": "S"}]
    extra: dict[str, Any] = {}
    if indexes:
        attributes.append({"AttributeName": "city", "AttributeType": "S"})
        extra["GlobalSecondaryIndexes"] = [
            {"IndexName": index, "KeySchema": [{"AttributeName": "city", "KeyType": "HASH"}],
             "Projection": {"ProjectionType": "ALL"}} for index in indexes]
    boto3.client("dynamodb").create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST", AttributeDefinitions=attributes,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}], **extra)


# -- dynamodb_table ---------------------------------------------------------------------------

def test_a_table_off_the_allow_list_is_403_and_never_described(stack: Stack) -> None:
    make_table("secret-payroll")
    described = calls("dynamodb", "DescribeTable")
    error = refused(stack, "dynamodb_table", {"table": "secret-payroll"}, status=403)
    assert error["code"] == "forbidden"
    assert error["details"] == [{"field": "params.table", "issue": "is not allowed for you"}]
    assert described == []  # whether it exists is none of the caller's business


def test_a_missing_table_is_400_table_not_found(stack: Stack) -> None:
    described = calls("dynamodb", "DescribeTable")
    error = refused(stack, "dynamodb_table", {"table": "demo-users"})  # allowed, never created
    assert error["code"] == "table_not_found"
    assert error["details"] == [{"field": "params.table", "issue": "names a table that does not exist"}]
    assert error["message"] == "params.table names a table that does not exist."
    assert described == [{"TableName": "demo-users"}]


def test_a_missing_index_is_400_naming_the_indexes_there_are(stack: Stack) -> None:
    make_table(indexes=("by_city", "by_age"))
    described = calls("dynamodb", "DescribeTable")
    error = refused(stack, "dynamodb_table", {"table": "demo-users", "index": "by_nmae"})
    assert error["code"] == "index_not_found"
    assert error["details"] == [{"field": "params.index",
                                 "issue": 'must be an index of table demo-users: "by_age" or "by_city"'}]
    assert len(described) == 1  # one DescribeTable answers both questions


def test_an_index_on_a_table_without_any_is_400(stack: Stack) -> None:
    make_table()
    error = refused(stack, "dynamodb_table", {"table": "demo-users", "index": "by_city"})
    assert error["details"] == [{"field": "params.index",
                                 "issue": "must be left out: table demo-users has no index"}]


def test_an_existing_table_and_index_are_accepted(stack: Stack) -> None:
    make_table(indexes=("by_city",))
    assert post(stack, "dynamodb_table", {"table": "demo-users", "index": "by_city"}).status_code == 202


@pytest.mark.parametrize("op,value,issue", [
    ("between", [1], "must be a list of two values, [low, high], for op between"),
    ("between", 5, "must be a list of two values, [low, high], for op between"),
    ("in", [], "must be a non-empty list of values for op in"),
    ("in", 3, "must be a non-empty list of values for op in"),
    ("eq", [1, 2], "must be one value (a string, a number or a boolean), not a list, for op eq"),
])
def test_a_filter_value_that_does_not_fit_its_op_is_400(stack: Stack, op, value, issue) -> None:
    """Once ``invalid_filter`` from the build; the table is never asked."""
    described = calls("dynamodb", "DescribeTable")
    error = refused(stack, "dynamodb_table", {"table": "demo-users", "filters": [
        {"attr": "age", "op": "gte", "value": 1}, {"attr": "age", "op": op, "value": value}]})
    assert error["code"] == "validation_error"
    assert error["details"] == [{"field": "params.filters[1].value", "issue": issue}]
    assert described == []


def test_every_mistake_of_a_request_is_reported_at_once(stack: Stack) -> None:
    error = refused(stack, "dynamodb_table", {
        "table": "demo users", "segments": 0, "colums": ["id"],
        "filters": [{"attr": "age", "op": "between", "value": [1]}, {"attr": "", "op": "like", "value": 1}],
    }, task_name="")
    assert error["code"] == "validation_error"
    assert error["details"] == [
        {"field": "task_name", "issue": "must not be empty"},
        {"field": "params.colums", "issue": "is not a known field"},
        {"field": "params.table",
         "issue": "may contain only ASCII letters, digits, underscores (_), dots (.) and hyphens (-)"},
        {"field": "params.segments", "issue": "must be between 1 and 16"},
        {"field": "params.filters[0].value",
         "issue": "must be a list of two values, [low, high], for op between"},
        {"field": "params.filters[1].attr", "issue": "must not be empty"},
        {"field": "params.filters[1].op", "issue": "must be one of \"eq\", \"ne\", \"lt\", \"lte\", "
                                                   "\"gt\", \"gte\", \"begins_with\", \"contains\", "
                                                   "\"between\" or \"in\""},
    ]
    assert error["message"].startswith("The request has 7 problems: task_name must not be empty; ")


@pytest.mark.parametrize("code", ["ThrottlingException", "AccessDeniedException"])
def test_a_source_that_cannot_answer_at_create_leaves_it_to_the_build(stack: Stack, caplog, code) -> None:
    """Not the caller's mistake, and no 500: the create goes on and the build judges."""
    make_table()

    def fail(**_: Any) -> None:
        raise ClientError({"Error": {"Code": code, "Message": "not now"}}, "DescribeTable")

    client("dynamodb", probe=True).meta.events.register("before-call.dynamodb.DescribeTable", fail)
    resp = post(stack, "dynamodb_table", {"table": "demo-users"})
    assert resp.status_code == 202, resp.body
    assert "could not check the source" in caplog.text
    assert stack.run_worker() == {"batchItemFailures": []}
    assert stack.get(resp.json_body["id"])["status"] == "succeeded"


# -- s3_bundle --------------------------------------------------------------------------------

@pytest.fixture
def bucket(stack: Stack) -> Any:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=SOURCES)
    s3.put_object(Bucket=SOURCES, Key="exports/2024/a.csv", Body=b"a")
    s3.put_object(Bucket=SOURCES, Key="folders/empty/", Body=b"")  # a console 'folder'
    return s3


def test_a_prefix_that_selects_nothing_is_400_not_an_empty_zip(stack: Stack, bucket: Any) -> None:
    listed = calls("s3", "ListObjectsV2")
    error = refused(stack, "s3_bundle", {"bucket": SOURCES, "prefix": "exports/2042/"})
    assert error["code"] == "nothing_to_export"
    assert error["details"] == [{"field": "params.prefix",
                                 "issue": f"selects no object in bucket {SOURCES}"}]
    assert listed == [{"Bucket": SOURCES, "MaxKeys": 1, "Prefix": "exports/2042/"}]


def test_a_prefix_of_folder_placeholders_only_selects_nothing(stack: Stack, bucket: Any) -> None:
    error = refused(stack, "s3_bundle", {"bucket": SOURCES, "prefix": "folders/"})
    assert error["code"] == "nothing_to_export"


def test_a_prefix_whose_first_key_is_a_folder_still_finds_the_files_after_it(stack, bucket) -> None:
    bucket.put_object(Bucket=SOURCES, Key="folders/empty/z.txt", Body=b"z")
    listed = calls("s3", "ListObjectsV2")
    assert post(stack, "s3_bundle", {"bucket": SOURCES, "prefix": "folders/"}).status_code == 202
    assert [c.get("MaxKeys") for c in listed] == [1, 1000]


def test_a_prefix_with_objects_is_accepted_with_one_listing(stack: Stack, bucket: Any) -> None:
    listed = calls("s3", "ListObjectsV2")
    assert post(stack, "s3_bundle", {"bucket": SOURCES, "prefix": "exports/"}).status_code == 202
    assert len(listed) == 1


@pytest.mark.parametrize("params", [{"prefix": "x/"}, {"keys": ["a.txt"]}])
def test_a_missing_bucket_is_400_bucket_not_found(stack: Stack, params) -> None:
    error = refused(stack, "s3_bundle", {"bucket": "download-center-missing"} | params)
    assert error["code"] == "bucket_not_found"
    assert error["details"] == [{"field": "params.bucket", "issue": "names a bucket that does not exist"}]


def test_a_bundle_without_keys_or_prefix_says_so(stack: Stack) -> None:
    error = refused(stack, "s3_bundle", {"bucket": SOURCES})
    assert error["details"] == [{"field": "params", "issue": "must name keys, a prefix, or both"}]


# -- log_archive ------------------------------------------------------------------------------

def test_a_missing_log_group_is_400_log_group_not_found(stack: Stack) -> None:
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName="/download-center/missing-but-longer")  # a prefix match only
    described = calls("logs", "DescribeLogGroups")
    error = refused(stack, "log_archive", {"log_group": "/download-center/missing"} | LOG_RANGE)
    assert error["code"] == "log_group_not_found"
    assert error["details"] == [{"field": "params.log_group",
                                 "issue": "names a log group that does not exist"}]
    assert described == [{"logGroupNamePrefix": "/download-center/missing", "limit": 1}]


def test_an_existing_log_group_is_accepted(stack: Stack) -> None:
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName=GROUP)
    logs.create_log_group(logGroupName=GROUP + "-old")
    assert post(stack, "log_archive", {"log_group": GROUP} | LOG_RANGE).status_code == 202


def test_a_log_group_off_the_allow_list_is_403_and_never_described(stack: Stack) -> None:
    described = calls("logs", "DescribeLogGroups")
    error = refused(stack, "log_archive", {"log_group": "/aws/lambda/payroll"} | LOG_RANGE, status=403)
    assert error["code"] == "forbidden" and error["details"][0]["field"] == "params.log_group"
    assert described == []
