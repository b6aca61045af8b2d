"""Edges of GET /downloads through the API: time windows, cursors, limit."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from botocore.awsrequest import AWSResponse

from chalicelib import cursor as cursors
from chalicelib import ids
from chalicelib.adapters.tasks_repo import TaskModel


def call(stack, path: str, user: str = "alice"):
    return stack.client.http.get(path, headers=stack.users[user].headers)


def listing(stack, query: str, user: str = "alice") -> dict[str, Any]:
    resp = call(stack, "/downloads?" + query, user)
    assert resp.status_code == 200, resp.body
    return resp.json_body


def ids_of(stack, query: str, user: str = "alice") -> list[str]:
    return [t["id"] for t in listing(stack, query, user)["items"]]


def error_code(resp) -> str:
    assert resp.status_code == 400, (resp.status_code, resp.body)
    return json.loads(resp.body)["error"]["code"]


def _body(request: dict[str, Any]) -> dict[str, Any]:
    """The API parameters of a serialised DynamoDB request (a JSON body)."""
    return json.loads(request.get("body") or b"{}")


@contextmanager
def dynamodb_calls() -> Iterator[list[dict[str, Any]]]:
    """The DynamoDB calls PynamoDB makes meanwhile: operation name and params."""
    seen: list[dict[str, Any]] = []
    events = TaskModel._get_connection().connection.client.meta.events

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        seen.append({"op": model.name, **_body(params)})

    events.register("before-call.dynamodb.*", record)
    try:
        yield seen
    finally:
        events.unregister("before-call.dynamodb.*", record)


@contextmanager
def dynamodb_refuses_next_start_key(message: str) -> Iterator[list[str]]:
    """Answer the next Query that carries an ExclusiveStartKey with a
    ValidationException, as real DynamoDB does for a start key outside the key
    condition. Moto accepts any start key (checked: it just pages from there),
    so the error is injected on PynamoDB's own client, once, before the request
    would leave it; everything else goes to moto as usual.
    """
    fired: list[str] = []
    events = TaskModel._get_connection().connection.client.meta.events

    def refuse(model: Any, params: dict[str, Any], **_: Any) -> Any:
        body = _body(params)
        if fired or model.name != "Query" or "ExclusiveStartKey" not in body:
            return None
        fired.append(body["ExclusiveStartKey"]["id"]["S"])
        error = {"Error": {"Code": "ValidationException", "Message": message},
                 "ResponseMetadata": {"HTTPStatusCode": 400}}
        return AWSResponse("https://dynamodb.us-east-1.amazonaws.com/", 400, {}, None), error

    events.register("before-call.dynamodb.Query", refuse)
    try:
        yield fired
    finally:
        events.unregister("before-call.dynamodb.Query", refuse)


# -- time filters --------------------------------------------------------------
def test_time_filters_before_1970_and_at_the_ends_of_the_calendar(stack):
    made = [stack.create(task_name=f"t{i}")["id"] for i in range(2)]
    everything = list(reversed(made))
    assert ids_of(stack, "created_before=1960-01-01T00:00:00Z") == []
    assert ids_of(stack, "created_after=1960-01-01T00:00:00Z") == everything
    assert ids_of(stack, "created_after=0001-01-01T00:00:00Z") == everything
    assert ids_of(stack, "created_before=9999-12-31T23:59:59.999999Z") == everything
    assert ids_of(stack, "created_after=9999-12-31T23:59:59Z") == []
    assert ids_of(stack, "created_after=1950-01-01T00:00:00Z&created_before=1960-01-01T00:00:00Z") == []


@pytest.mark.parametrize("query", ["created_after=0001-01-01T00:00:00%2B01:00",
                                   "created_before=9999-12-31T23:59:59-05:00"])
def test_a_time_outside_the_calendar_in_utc_is_400(stack, query):
    assert error_code(call(stack, "/downloads?" + query)) == "validation_error"


# -- cursors and windows -------------------------------------------------------
def test_a_cursor_is_bound_to_its_time_window(stack):
    made = [stack.create(task_name=f"t{i}")["id"] for i in range(3)]
    window = "created_after=2000-01-01T00:00:00Z"
    first = listing(stack, f"limit=1&{window}")
    token = first["next_cursor"]
    assert first["items"][0]["id"] == made[-1] and token
    # the same window, spelled differently, is the same listing
    assert ids_of(stack, f"limit=1&created_after=2000-01-01T00:00:00%2B00:00&cursor={token}") \
        == [made[-2]]
    for other in ("", "created_after=2001-01-01T00:00:00Z&",
                  f"{window}&created_before=2100-01-01T00:00:00Z&", "created_after=1960-01-01T00:00:00Z&"):
        with dynamodb_calls() as seen:
            resp = call(stack, f"/downloads?{other}limit=1&cursor={token}")
        assert error_code(resp) == "invalid_cursor"
        assert not any(c["op"] == "Query" for c in seen), "refused before any query"


def test_a_cursor_without_a_window_does_not_fit_a_windowed_listing(stack):
    for i in range(3):
        stack.create(task_name=f"t{i}")
    token = listing(stack, "limit=1")["next_cursor"]
    resp = call(stack, f"/downloads?limit=1&created_before=2100-01-01T00:00:00Z&cursor={token}")
    assert error_code(resp) == "invalid_cursor"


def test_a_cursor_whose_id_is_outside_its_window_never_reaches_dynamodb(stack):
    alice = stack.users["alice"].sub
    stack.create()
    window = ids.IdWindow.between(datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), None)
    outside = ids.new_id(1_600_000_000_000)  # 2020-09-13: before the window
    token = cursors.encode("by_owner", alice, window, {"id": {"S": outside}})
    with dynamodb_calls() as seen:
        resp = call(stack, f"/downloads?created_after=2023-11-14T22:13:20Z&cursor={token}")
    assert error_code(resp) == "invalid_cursor"
    assert seen == []


def test_a_deeply_nested_cursor_is_400_not_a_crash(stack):
    token = base64.urlsafe_b64encode(b"[" * 1500).decode()
    assert error_code(call(stack, f"/downloads?cursor={token}")) == "invalid_cursor"


def test_a_start_key_dynamodb_refuses_is_invalid_cursor(stack):
    """Second line of defence: should a cursor pass our checks and DynamoDB
    still refuse its start key, the client hears invalid_cursor, not a 500."""
    for i in range(3):
        stack.create(task_name=f"t{i}")
    token = listing(stack, "limit=1")["next_cursor"]
    message = "The provided starting key is outside query boundaries based on provided conditions"
    with dynamodb_refuses_next_start_key(message) as fired:
        resp = call(stack, f"/downloads?limit=1&cursor={token}")
    assert fired, "the injected rejection was used"
    assert error_code(resp) == "invalid_cursor"
    assert len(listing(stack, f"limit=1&cursor={token}")["items"]) == 1  # moto again


def test_other_validation_errors_of_a_query_are_not_blamed_on_the_cursor(stack):
    for i in range(3):
        stack.create(task_name=f"t{i}")
    token = listing(stack, "limit=1")["next_cursor"]
    with dynamodb_refuses_next_start_key("Invalid FilterExpression: syntax error") as fired:
        resp = call(stack, f"/downloads?limit=1&cursor={token}")
    assert fired and resp.status_code == 500
    assert json.loads(resp.body)["error"]["code"] == "internal_error"


def test_status_filter_with_a_window_pages_every_match_once(stack):
    """status + window + cursor: a page may be short, never a repeat or a gap."""
    made = [stack.create(task_name=f"t{i}")["id"] for i in range(7)]
    for task_id in made[1::2]:
        assert call_post(stack, f"/downloads/{task_id}/cancel").status_code == 202
    seen, token, rounds = [], None, 0
    while rounds < 20:
        rounds += 1
        query = "status=canceled&limit=1&created_after=2000-01-01T00:00:00Z"
        page = listing(stack, query + (f"&cursor={quote(token)}" if token else ""))
        seen += [t["id"] for t in page["items"]]
        token = page["next_cursor"]
        if not token:
            break
    assert seen == list(reversed(made[1::2]))


def call_post(stack, path: str, user: str = "alice"):
    return stack.client.http.post(path, headers=stack.users[user].headers, body=b"")


# -- limit and partition keys --------------------------------------------------
@pytest.mark.parametrize("limit", ["1_0", "%2B5", "%205", "%D9%A5"])
def test_limit_that_is_not_plain_digits_is_400(stack, limit):
    assert error_code(call(stack, f"/downloads?limit={limit}")) == "invalid_limit"


def test_limit_edges(stack):
    made = [stack.create(task_name=f"t{i}")["id"] for i in range(2)]
    assert ids_of(stack, "limit=1") == [made[-1]]
    assert ids_of(stack, "limit=100") == list(reversed(made))


def test_an_owner_over_2048_bytes_is_400_not_a_dynamodb_error(stack):
    """Moto queries any hash key; real DynamoDB refuses one over 2048 bytes
    with a ValidationException, which was a 500."""
    resp = call(stack, "/downloads?owner=" + quote("é" * 1500), "admin")
    assert error_code(resp) == "validation_error"
