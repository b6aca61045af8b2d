"""Edges of GET /downloads through the API: time windows."""

from __future__ import annotations

import json
from typing import Any

import pytest


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
