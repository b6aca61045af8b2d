"""``GET /kinds`` offers, in every kind's schema, ``examples`` that work where they are served.

The sources are the local stack's own samples (``local/seed.py``,
``local/samples.py``), seeded into moto under conftest's allow-list names:
table ``demo-users``, bucket ``download-center-sources``, log group
``/download-center/demo``. The same check on the real local stack, over
HTTP: tests/e2e/test_kind_examples.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from jsonschema.validators import Draft7Validator, validator_for

from chalicelib.clock import parse_iso
from chalicelib.exporters import REGISTRY
from chalicelib.policy import Policy
from local.samples import seed_log_group, seed_sample_bucket
from local.seed import seed_demo_table

from .conftest import Stack

BUCKET = "download-center-sources"
GROUP = "/download-center/demo"


def kinds(stack: Stack, user: str) -> dict[str, dict]:
    resp = stack.client.http.get("/kinds", headers=stack.users[user].headers)
    assert resp.status_code == 200, resp.body
    return {k["kind"]: k for k in resp.json_body["items"]}


@pytest.fixture
def samples(stack: Stack) -> None:
    region = boto3.session.Session().region_name
    seed_demo_table(None, region, "demo-users", rows=50)
    seed_sample_bucket(None, region, BUCKET)
    seed_log_group(None, region, GROUP)


def test_every_kind_has_examples_that_pass_its_own_schema_and_build(stack: Stack, samples: None) -> None:
    catalogue = kinds(stack, "admin")  # the shipped policy shows admins every kind
    assert set(catalogue) == set(REGISTRY)
    created = {}
    for kind, item in catalogue.items():
        examples = item["params_schema"].get("examples")
        assert examples, f"{kind} offers no example"
        # the draft the create's validator uses (chalicelib/schema_issues.py)
        schema = item["params_schema"]
        validator = validator_for(schema, default=Draft7Validator)(schema)
        for example in examples:
            validator.validate(example)
        body = {"task_name": f"example {kind}", "kind": kind, "format": item["formats"][0],
                "params": examples[0]}
        resp = stack.client.http.post("/downloads", headers=stack.users["admin"].headers,
                                      body=json.dumps(body))
        assert resp.status_code == 202, resp.body
        created[kind] = resp.json_body["id"]
    assert stack.run_worker() == {"batchItemFailures": []}
    for kind, task_id in created.items():
        task = stack.get(task_id, "admin")
        assert task["status"] == "succeeded", (kind, task.get("error"))
        assert task["progress"]["rows"] > 0, (kind, task["progress"])


def test_examples_name_the_first_source_the_caller_may_read(stack: Stack, samples: None) -> None:
    admin = kinds(stack, "admin")
    assert admin["dynamodb_table"]["params_schema"]["examples"] == [{"table": "demo-users"}]
    # the sample bucket's first top-level folder, in S3's (UTF-8 byte) order
    assert admin["s3_bundle"]["params_schema"]["examples"] == [{"bucket": BUCKET, "prefix": "docs/"}]
    (logs,) = admin["log_archive"]["params_schema"]["examples"]
    start, end = parse_iso(logs["start"]), parse_iso(logs["end"])
    assert logs["log_group"] == GROUP and end - start == timedelta(days=1)
    assert timedelta(0) < end - datetime.now(UTC) <= timedelta(minutes=1)
    assert "log_archive" not in kinds(stack, "alice")  # nor its example


def test_a_kind_with_nothing_to_read_offers_no_example(stack: Stack, monkeypatch) -> None:
    """No source the caller may read: an example would only be refused, so there is none."""
    import app as app_module

    closed = Policy.from_dict({"kinds": {"*": {"groups": ["*"], "sources": {"admin": ["*"]}}}})
    monkeypatch.setattr(app_module.downloads, "policy", closed)
    alice = kinds(stack, "alice")
    for kind in ("dynamodb_table", "s3_bundle"):
        assert alice[kind]["sources"]["allowed"] == []
        assert "examples" not in alice[kind]["params_schema"]
    assert alice["demo"]["params_schema"]["examples"] == [{"rows": 1000, "seed": 1}]


def test_a_bucket_that_cannot_be_listed_or_is_empty_gives_no_example(stack: Stack) -> None:
    """/kinds still answers 200: a missing bucket (never created), then an empty one."""
    assert "examples" not in kinds(stack, "alice")["s3_bundle"]["params_schema"]
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    assert "examples" not in kinds(stack, "alice")["s3_bundle"]["params_schema"]


def test_a_bucket_of_top_level_objects_is_offered_by_key(stack: Stack) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="Zoë report.csv", Body=b"a,b\n")
    s3.put_object(Bucket=BUCKET, Key="zz/later.txt", Body=b"x")
    examples = kinds(stack, "alice")["s3_bundle"]["params_schema"]["examples"]
    assert examples == [{"bucket": BUCKET, "keys": ["Zoë report.csv"]}]


def test_examples_leave_the_kinds_own_schema_alone(stack: Stack) -> None:
    """The per-caller answer is a copy: the exporter's schema is shared by every caller."""
    kinds(stack, "admin")
    assert all("examples" not in exporter.params_schema for exporter in REGISTRY.values())
