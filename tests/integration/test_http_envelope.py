"""What the app answers at the edges of its routes: wrong methods, HEAD, foreign content types.

Behind API Gateway these requests reach the Lambda too (the app registers the
methods a path lacks, see ``app.route_other_methods``), so the app's answer is
the deployed one; the local stack's own gateway answers are tests/e2e's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

import app as app_module
from app import HTTP_METHODS, INTERNAL_ERROR, JSON

SPEC = yaml.safe_load((Path(__file__).parents[2] / "docs" / "openapi.yaml").read_text("utf-8"))
#: (path, method the document does not list on it, the methods it does list), for every path.
UNDOCUMENTED = [
    (path, method, [m for m in HTTP_METHODS if m.lower() in item])
    for path, item in SPEC["paths"].items()
    for method in HTTP_METHODS
    if method.lower() not in item
]


def concrete(path: str) -> str:
    return path.replace("{task_id}", "01JDQ4V8Z8S9Y6K1E6J3X2M7TQ")


def assert_envelope(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.body
    assert resp.headers["Content-Type"] == JSON["Content-Type"], resp.headers
    body = json.loads(resp.body)
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body


def test_every_method_a_path_lacks_is_405_with_allow(stack):
    # One stack for all of them (a stack a case would cost a minute); an odd
    # content type and a body that is not JSON: the 405 comes first.
    assert len(UNDOCUMENTED) > 30
    headers = {**stack.users["alice"].headers, "Content-Type": "application/xml"}
    for path, method, allowed in UNDOCUMENTED:
        resp = stack.client.http.request(method, concrete(path), headers=headers, body=b"<x/>")
        body = assert_envelope(resp, 405, "method_not_allowed")
        assert resp.headers["Allow"] == ", ".join(allowed), (method, path, resp.headers)
        assert method in body["error"]["message"] and path in body["error"]["message"], body


def test_the_405_of_a_path_that_needs_a_token_needs_one(stack):
    resp = stack.client.http.put("/downloads", headers={"Content-Type": "application/json"}, body=b"{}")
    assert_envelope(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert "Allow" not in resp.headers


def test_the_405_of_a_public_path_needs_no_token(stack):
    resp = stack.client.http.post("/health", body=b"")
    assert_envelope(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "GET"


def test_head_of_a_file_is_its_get_without_a_body(stack):
    task = stack.create("alice")
    stack.run_worker()
    assert stack.get(task["id"])["status"] == "succeeded"
    path, headers = f"/downloads/{task['id']}/file", stack.users["alice"].headers
    get, head = stack.client.http.get(path, headers=headers), stack.client.http.head(path, headers=headers)
    assert (head.status_code, get.status_code) == (302, 302)
    assert head.body == get.body == b""
    assert head.headers["Cache-Control"] == get.headers["Cache-Control"] == "no-store"
    # Each answer presigns the URL afresh: the same object, signed for the same time.
    where, there = urlsplit(head.headers["Location"]), urlsplit(get.headers["Location"])
    assert (where.netloc, where.path) == (there.netloc, there.path)
    assert parse_qs(where.query)["X-Amz-Expires"] == parse_qs(there.query)["X-Amz-Expires"]


@pytest.mark.parametrize(("task_state", "status", "code"), [("queued", 409, "invalid_state"),
                                                            ("missing", 404, "not_found")])
def test_head_of_a_file_refuses_as_get_does(stack, task_state, status, code):
    task_id = stack.create("alice")["id"] if task_state == "queued" else "01JDQ4V8Z8S9Y6K1E6J3X2M7TQ"
    path, headers = f"/downloads/{task_id}/file", stack.users["alice"].headers
    head, get = stack.client.http.head(path, headers=headers), stack.client.http.get(path, headers=headers)
    assert_envelope(head, status, code)
    assert head.body == get.body  # the HTTP layer drops it, as for any HEAD


def test_a_content_type_the_route_does_not_take_is_415_in_the_envelope(stack):
    headers = {**stack.users["alice"].headers, "Content-Type": "application/xml"}
    resp = stack.client.http.post("/downloads", headers=headers, body=b"<download/>")
    body = assert_envelope(resp, 415, "unsupported_media_type")
    assert "application/xml" in body["error"]["message"] and "application/json" in body["error"]["message"]


def test_a_failure_outside_any_view_is_a_500_in_the_envelope(stack):
    """chalice's own code failing (here on an event without the path's parameter) is no bare 500."""
    event = {
        "resource": "/downloads/{task_id}", "path": "/downloads/x", "httpMethod": "GET",
        "headers": {}, "multiValueHeaders": {}, "queryStringParameters": None,
        "multiValueQueryStringParameters": None, "pathParameters": None, "stageVariables": None,
        "body": None, "isBase64Encoded": False,
        "requestContext": {"resourcePath": "/downloads/{task_id}", "httpMethod": "GET",
                           "path": "/downloads/x", "requestId": "r-1"},
    }
    response = app_module.app(event, None)
    assert response["statusCode"] == 500
    assert response["headers"]["Content-Type"] == JSON["Content-Type"]
    assert json.loads(response["body"]) == INTERNAL_ERROR


@pytest.mark.parametrize("method,path", [("POST", "/downloads"),
                                         ("PATCH", "/downloads/01JDQ4V8Z8S9Y6K1E6J3X2M7TQ")])
def test_a_number_of_5000_digits_is_invalid_json_in_the_envelopes_words(stack, method, path):
    """It answered with Python's own text ("Exceeds the limit (4300 digits) for integer string
    conversion: value has 5000 digits; use sys.set_int_max_str_digits()...")."""
    body = b'{"task_name": "t", "kind": "demo", "params": {"rows": ' + b"9" * 5000 + b"}}"
    resp = stack.client.http.request(method, path, headers=stack.users["alice"].headers, body=body)
    error = assert_envelope(resp, 400, "invalid_json")["error"]
    assert error["message"] == ("The request body is not valid JSON the API takes: it holds a number "
                                "of more than 4300 digits.")
    assert "sys." not in resp.body.decode() and "Exceeds the limit" not in resp.body.decode()


def test_every_answer_api_gateway_gives_itself_is_documented_with_its_code():
    """The template's gateway responses (429 ``throttled`` among them) are the deployed API's
    answers too: the document names each one's code."""
    template = json.loads((Path(__file__).parents[2] / "infra" / "resources.json").read_text("utf-8"))
    responses = template["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
    described = SPEC["info"]["description"]
    for name, spec in responses.items():
        body = spec["ResponseTemplates"]["application/json"].replace("$context.error.messageString", '""')
        code = json.loads(body)["error"]["code"]
        assert f"`{code}`" in described, (name, code)
    assert responses["THROTTLED"]["StatusCode"] == "429"
    assert "**429 `throttled`**" in described
    assert "throttled" in SPEC["paths"]["/downloads"]["post"]["responses"]["429"]["description"]
