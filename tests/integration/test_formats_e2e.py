"""xlsx, gzip and output options through the real API and worker against moto.

Each stored object is read back with an independent reader (openpyxl, gzip
and csv) and its checksums are compared with what the task reports.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import boto3
import openpyxl
import pytest

from chalicelib.adapters.tasks_repo import TaskRepository
from chalicelib.formats import xlsx as xlsx_module

from .conftest import SETTINGS

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def stored_bytes(task_id: str) -> tuple[dict, bytes]:
    task = TaskRepository().get(task_id)
    obj = boto3.client("s3").get_object(Bucket=SETTINGS.files_bucket, Key=task.object_key)
    return obj, obj["Body"].read()


def built(stack, **body) -> tuple[dict, dict, bytes]:
    created = stack.create(**body)
    assert stack.run_worker() == {"batchItemFailures": []}
    task = stack.get(created["id"])
    assert task["status"] == "succeeded", task["error"]
    obj, data = stored_bytes(task["id"])
    assert task["size"] == len(data) == obj["ContentLength"]
    assert task["sha256"] == hashlib.sha256(data).hexdigest()
    assert task["md5"] == hashlib.md5(data).hexdigest()
    assert obj["ContentType"] == task["content_type"]
    return created, task, data


def sheets_of(data: bytes) -> dict[str, list[tuple]]:
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    try:
        return {name: list(book[name].iter_rows(values_only=True)) for name in book.sheetnames}
    finally:
        book.close()


def test_kinds_publish_xlsx_and_the_output_options(stack):
    resp = stack.client.http.get("/kinds", headers=stack.users["alice"].headers)
    kinds = {k["kind"]: k for k in resp.json_body["items"]}
    for kind in ("demo", "dynamodb_table"):
        assert kinds[kind]["formats"][:3] == ["csv", "jsonl", "xlsx"]
        props = kinds[kind]["params_schema"]["properties"]
        assert {"delimiter", "bom", "headers", "escape_formulas", "compression"} <= set(props)


def test_demo_xlsx_export(stack):
    created, task, data = built(stack, task_name="表格", file_name="用户 list", format="xlsx",
                                params={"rows": 300, "seed": 2, "headers": {"name": "姓名"}})
    assert created["file_name"] == task["file_name"] == "用户 list.xlsx"
    assert task["content_type"] == XLSX_TYPE
    assert task["progress"]["rows"] == 300 and task["progress"]["percent"] == 100.0
    sheets = sheets_of(data)
    assert list(sheets) == ["data"]
    rows = sheets["data"]
    assert rows[0] == ("id", "姓名", "email", "city", "amount", "signup_date")
    assert len(rows) == 301 and rows[-1][0] == 300
    assert any(any(ord(ch) > 127 for ch in r[1]) for r in rows[1:])
    query = parse_qs(urlparse(task["url"]).query)
    assert query["response-content-type"] == [XLSX_TYPE]


def test_xlsx_rolls_over_sheets_in_a_real_build(stack, monkeypatch):
    monkeypatch.setattr(xlsx_module, "MAX_SHEET_ROWS", 101)  # 100 data rows a sheet
    _, task, data = built(stack, format="xlsx", params={"rows": 250})
    sheets = sheets_of(data)
    assert list(sheets) == ["data", "data (2)", "data (3)"]
    assert [len(s) for s in sheets.values()] == [101, 101, 51]
    assert all(s[0][0] == "id" for s in sheets.values())
    assert [r[0] for s in sheets.values() for r in s[1:]] == list(range(1, 251))


def test_dynamodb_table_xlsx_export(stack):
    table = boto3.resource("dynamodb").create_table(
        TableName="demo-users", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )
    with table.batch_writer() as batch:
        for i in range(40):
            batch.put_item(Item={"id": f"u{i:02d}", "name": f"Zoë 王 {i}", "age": Decimal(i),
                                 "formula": "=HYPERLINK(\"x\")"})
    _, task, data = built(stack, kind="dynamodb_table", format="xlsx",
                          params={"table": "demo-users", "columns": ["id", "name", "age", "formula"],
                                  "headers": {"age": "Âge"}})
    rows = sheets_of(data)["data"]
    assert rows[0] == ("id", "name", "Âge", "formula")
    assert sorted(rows[1:]) == sorted((f"u{i:02d}", f"Zoë 王 {i}", i, "=HYPERLINK(\"x\")")
                                      for i in range(40))


def test_dynamodb_csv_escapes_formulas_unless_told_not_to(stack):
    """A hostile table value reaches the csv as text; escape_formulas=false keeps it raw."""
    table = boto3.resource("dynamodb").create_table(
        TableName="demo-users", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )
    notes = {"u1": '=HYPERLINK("http://evil","x")', "u2": "@SUM(A1)", "u3": "-1+2",
             "u4": "\tcmd", "u5": "-5", "u6": "Zoë"}
    with table.batch_writer() as batch:
        for key, note in notes.items():
            batch.put_item(Item={"id": key, "note": note, "delta": Decimal(-3)})
    params = {"table": "demo-users", "columns": ["id", "note", "delta"], "headers": {"delta": "=Δ"}}

    def export(**options) -> tuple[bytes, list[list[str]]]:
        _, task, data = built(stack, kind="dynamodb_table", format="csv", params=params | options)
        assert task["progress"]["rows"] == len(notes)
        return data, list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))

    data, rows = export()
    assert b'u1,"\'=HYPERLINK(""http://evil"",""x"")",-3\r\n' in data
    assert rows[0] == ["id", "note", "\'=Δ"]
    assert sorted(rows[1:]) == [["u1", "\'" + notes["u1"], "-3"], ["u2", "\'@SUM(A1)", "-3"],
                                ["u3", "\'-1+2", "-3"], ["u4", "\'\tcmd", "-3"],
                                ["u5", "-5", "-3"], ["u6", "Zoë", "-3"]]  # numbers stay numbers
    data, rows = export(escape_formulas=False)
    assert b'u1,"=HYPERLINK(""http://evil"",""x"")",-3\r\n' in data
    assert rows[0] == ["id", "note", "=Δ"]
    assert sorted(rows[1:]) == sorted([key, note, "-3"] for key, note in notes.items())


def test_gzip_csv_export_with_csv_options(stack):
    created, task, data = built(
        stack, file_name="report.csv",
        params={"rows": 2000, "delimiter": ";", "bom": True, "compression": "gzip",
                "headers": {"name": "Név"}})
    assert created["file_name"] == task["file_name"] == "report.csv.gz"
    assert task["content_type"] == "application/gzip"
    obj, _ = stored_bytes(task["id"])
    assert obj["ContentDisposition"].endswith("filename*=UTF-8''report.csv.gz")
    assert "ContentEncoding" not in obj  # a .gz download, not a transparently decoded csv
    assert data[:2] == b"\x1f\x8b"
    text = gzip.decompress(data)
    assert text.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(text.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert len(rows) == 2000 and rows[0]["id"] == "1" and "Név" in rows[0]
    assert task["progress"]["bytes"] == task["size"] == len(data)


def test_gzip_jsonl_export_gets_a_name_from_the_task(stack):
    _, task, data = built(stack, task_name="Nightly", format="jsonl",
                          params={"rows": 500, "compression": "gzip"})
    assert task["file_name"].startswith("Nightly_") and task["file_name"].endswith(".jsonl.gz")
    lines = gzip.decompress(data).decode("utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == list(range(1, 501))


@pytest.mark.parametrize("fmt,params,field", [
    ("jsonl", {"delimiter": ";"}, "params.delimiter"),
    ("xlsx", {"compression": "gzip"}, "params.compression"),
    ("xlsx", {"bom": True}, "params.bom"),
    ("jsonl", {"headers": {"id": "ID"}}, "params.headers"),
    ("csv", {"compression": "zip"}, "params.compression"),
    ("csv", {"delimiter": ";;"}, "params.delimiter"),
    ("xlsx", {"escape_formulas": False}, "params.escape_formulas"),
    ("jsonl", {"escape_formulas": True}, "params.escape_formulas"),
])
def test_options_that_do_not_fit_are_400_and_nothing_is_queued(stack, fmt, params, field):
    body = {"task_name": "t", "kind": "demo", "format": fmt, "params": {"rows": 5} | params}
    resp = stack.client.http.post("/downloads", headers=stack.users["alice"].headers,
                                  body=json.dumps(body))
    assert resp.status_code == 400, resp.body
    error = resp.json_body["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == [field]
    assert stack.drain() == []
    listed = stack.client.http.get("/downloads", headers=stack.users["alice"].headers)
    assert listed.json_body["items"] == []
