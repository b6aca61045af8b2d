"""The OpenAPI document is valid and says what the code does."""

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from app import HTTP_METHODS, app, served_methods
from chalicelib.errors import ValidationError
from chalicelib.task import Status, Task
from chalicelib.validation import (
    _check_name,
    _check_text_param,
    check_file_name,
    validate_idempotency_key,
)

SPEC = yaml.safe_load((Path(__file__).parents[2] / "docs" / "openapi.yaml").read_text("utf-8"))


def test_document_is_valid_openapi():
    validate(SPEC)


def test_every_route_is_documented_and_nothing_else():
    code = {(path, method.lower()) for path in app.routes for method in served_methods(path)}
    documented = {(path, method) for path, item in SPEC["paths"].items()
                  for method in item if method != "parameters"}
    assert code == documented


def test_every_other_method_of_a_path_is_routed_to_the_405():
    # Behind API Gateway a method the app does not route is the gateway's 404, not a 405.
    for path, entries in app.routes.items():
        assert set(entries) == set(HTTP_METHODS), path


def test_task_schema_lists_exactly_the_resource_fields():
    task = Task(id="01JDQ4V8Z8S9Y6K1E6J3X2M7TQ", owner="o", owner_name="n", tenant="t",
                task_name="t", file_name="f.csv", kind="demo", format="csv", params={},
                status=Status.QUEUED, created_at=datetime.now(UTC))
    resource = task.to_resource(datetime.now(UTC))
    assert set(SPEC["components"]["schemas"]["Task"]["properties"]) == set(resource)
    assert SPEC["components"]["schemas"]["Status"]["enum"] == [s.value for s in Status]


# -- the document's string rules say what validation.py accepts -----------------
#
# JSON Schema cannot call the validators, so the document restates their rules
# as minLength/maxLength/pattern; schemathesis (tests/e2e/test_schemathesis.py)
# holds the API to them. These keep the two in step on the characters where
# they could differ: separators, quotes, dots, controls and every kind of
# Unicode white space (including U+FEFF, which Python does not strip).

TRICKY = ("a", "é", "文", "\U0001f600", ".", "/", "\\", '"', "'", " ", "\t", "\n", "\x00", "\x1c",
          "\x1f", "\x7f", "\x85", "\x9f", "\xa0", "\u1680", "\u2000", "\u200b", "\u2028", "\u3000",
          "\ufeff", "\x1b", "\u202e", "\u2066", "\u00ad", "\u2060")


def ecma_search(pattern: str, value: str) -> bool:
    """JSON Schema's ``pattern``: an unanchored ECMA-262 search.

    The one difference that matters here: ECMA's ``$`` matches only at the
    end, Python's also before a final newline, which would let ``"key\\n"`` pass.
    """
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + "\\Z"
    return re.search(pattern, value) is not None


def spec_accepts(schema: dict, value: str) -> bool:
    """minLength, maxLength and pattern of a string schema."""
    return (schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value))
            and ecma_search(schema.get("pattern", ""), value))


def api_accepts(check: Callable[[str, list], object], value: str) -> bool:
    details: list = []
    try:
        return check(value, details) is not None and not details
    except ValidationError:
        return False


CREATE = SPEC["components"]["schemas"]["CreateDownload"]["properties"]
IDEMPOTENCY_KEY = next(p["schema"] for p in SPEC["paths"]["/downloads"]["post"]["parameters"]
                       if p["name"] == "Idempotency-Key")
QUERY_TEXT = SPEC["components"]["schemas"]["QueryText"]


@pytest.mark.parametrize(("schema", "check"), [
    (CREATE["task_name"], lambda v, d: _check_name(v, "task_name", d)),
    (CREATE["file_name"], check_file_name),
    (IDEMPOTENCY_KEY, lambda v, d: validate_idempotency_key(v)),
    (QUERY_TEXT, lambda v, d: _check_text_param("kind", v, d) or v),
], ids=["task_name", "file_name", "Idempotency-Key", "query text"])
@settings(max_examples=2000, derandomize=True, database=None)
@given(value=st.text(st.sampled_from(TRICKY), max_size=6))
def test_string_rules_match_the_validators(schema: dict, check: Callable, value: str) -> None:
    assert spec_accepts(schema, value) == api_accepts(check, value), repr(value)


@pytest.mark.parametrize(("schema", "check", "limit"), [
    (CREATE["task_name"], lambda v, d: _check_name(v, "task_name", d), 200),
    (CREATE["file_name"], check_file_name, 200),
    (IDEMPOTENCY_KEY, lambda v, d: validate_idempotency_key(v), 255),
    (QUERY_TEXT, lambda v, d: _check_text_param("kind", v, d) or v, 2048),
], ids=["task_name", "file_name", "Idempotency-Key", "query text"])
def test_length_limits_match_the_validators(schema: dict, check: Callable, limit: int) -> None:
    for value in ("x" * limit, "x" * (limit + 1), "文" * limit):
        assert spec_accepts(schema, value) == api_accepts(check, value), len(value)
