"""JSON Schema errors rendered as sentences for people (chalicelib.schema_issues), without AWS."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.errors import ExportError, ValidationError
from chalicelib.exporters import REGISTRY
from chalicelib.exporters.dynamodb_table import build_filter
from chalicelib.schema_issues import field_path, fill_defaults, issues, validator
from chalicelib.validation import parse_create


def details(schema: dict[str, Any], instance: Any) -> list[dict[str, str]]:
    return issues(validator(schema).iter_errors(instance))


def one(schema: dict[str, Any], value: Any) -> str:
    """The issue of ``params.v`` when ``v`` takes ``schema``."""
    (detail,) = details({"type": "object", "properties": {"v": schema}}, {"v": value})
    assert detail["field"] == "params.v"
    return detail["issue"]


@pytest.mark.parametrize("schema,value,issue", [
    ({"type": "string"}, 5, "must be a string"),
    ({"type": "integer"}, "5", "must be a whole number"),
    ({"type": "integer"}, 1.5, "must be a whole number"),
    ({"type": "boolean"}, "yes", "must be true or false"),
    ({"type": ["string", "number", "boolean"]}, [], "must be a string, a number or a boolean"),
    ({"type": "array"}, {}, "must be a list"),
    ({"type": "object"}, [], "must be an object"),
    ({"type": "integer", "minimum": 1, "maximum": 10_000_000}, 0, "must be between 1 and 10000000"),
    ({"type": "integer", "minimum": 1, "maximum": 10_000_000}, 10_000_001,
     "must be between 1 and 10000000"),
    ({"minimum": 2}, 1, "must be at least 2"),
    ({"maximum": 2.5}, 3, "must be at most 2.5"),
    ({"exclusiveMinimum": 0}, 0, "must be greater than 0"),
    ({"exclusiveMaximum": 10}, 10, "must be less than 10"),
    ({"multipleOf": 5}, 7, "must be a multiple of 5"),
    ({"minLength": 1, "maxLength": 255}, "", "must not be empty"),
    ({"minLength": 3, "maxLength": 63}, "ab", "must be 3 to 63 characters long"),
    ({"minLength": 3, "maxLength": 63}, "a" * 64, "must be 3 to 63 characters long"),
    ({"minLength": 1, "maxLength": 1}, "ab", "must be at most 1 character long"),
    ({"minLength": 2, "maxLength": 2}, "a", "must be exactly 2 characters long"),
    ({"maxLength": 200}, "a" * 201, "must be at most 200 characters long"),
    ({"minLength": 4}, "abc", "must be at least 4 characters long"),
    ({"pattern": "^[a-z]+$", "x-pattern-issue": "may contain only lower-case letters"}, "A",
     "may contain only lower-case letters"),
    ({"pattern": "^[A-Z]{3}$"}, "euro", "is not in the form this field takes"),
    ({"enum": ["fail", "skip"]}, "ignore", 'must be one of "fail" or "skip"'),
    ({"enum": ["none", "gzip", 3]}, "zip", 'must be one of "none", "gzip" or 3'),
    ({"enum": ["only"]}, "other", 'must be "only"'),
    ({"const": 2}, 3, "must be 2"),
    ({"type": "array", "minItems": 1, "maxItems": 200}, [], "must not be empty"),
    ({"type": "array", "minItems": 2, "maxItems": 2}, [1], "must be a list of exactly 2 items"),
    ({"type": "array", "maxItems": 3}, [1, 2, 3, 4], "must have at most 3 items"),
    ({"type": "array", "minItems": 3}, [1], "must have at least 3 items"),
    ({"type": "array", "uniqueItems": True}, ["a", "b", "a"], 'must not list "a" more than once'),
    ({"type": "object", "maxProperties": 1}, {"a": 1, "b": 2}, "must have at most 1 entry"),
    ({"type": "object", "minProperties": 2}, {"a": 1}, "must have at least 2 entries"),
    ({"format": "date-time"}, "x", "must be an ISO 8601 date and time"),
    ({"not": {"type": "string"}}, "x", "has a value that is not allowed here"),
])
def test_each_keyword_reads_as_a_sentence(schema, value, issue):
    from jsonschema import FormatChecker, validators

    if "format" in schema:  # formats are annotations unless a checker is asked for
        cls = validators.validator_for(schema)
        errors = cls({"properties": {"v": schema}}, format_checker=FormatChecker()).iter_errors({"v": value})
        assert issues(errors) == [{"field": "params.v", "issue": issue}]
        return
    assert one(schema, value) == issue


def test_required_and_unknown_fields_are_named_one_by_one():
    schema = {"type": "object", "additionalProperties": False, "required": ["table", "start"],
              "properties": {"table": {}, "start": {}}, "patternProperties": {"^x-": {}}}
    assert details(schema, {"colour": 1, "x-mine": 2, "nmae": 3}) == [
        {"field": "params.colour", "issue": "is not a known field"},
        {"field": "params.nmae", "issue": "is not a known field"},
        {"field": "params.table", "issue": "is required"},
        {"field": "params.start", "issue": "is required"},
    ]


def test_an_if_then_branch_says_what_the_value_must_be_for_its_op():
    """The dynamodb_table filter: one sentence about the actual problem, not "not valid under"."""
    filters = REGISTRY["dynamodb_table"].params_schema["properties"]["filters"]
    schema = {"type": "object", "properties": {"filters": filters}}
    got = details(schema, {"filters": [
        {"attr": "a", "op": "between", "value": [1]},
        {"attr": "b", "op": "between", "value": {"low": 1}},
        {"attr": "c", "op": "in", "value": []},
        {"attr": "d", "op": "lt", "value": [1, 2]},
        {"attr": "e", "op": "in", "value": [{"x": 1}]},
        {"attr": "f", "op": "between", "value": [1, 2]},
    ]})
    between = "must be a list of two values, [low, high], for op between"
    assert got == [
        {"field": "params.filters[0].value", "issue": between},
        {"field": "params.filters[1].value", "issue": between},
        {"field": "params.filters[2].value", "issue": "must be a non-empty list of values for op in"},
        {"field": "params.filters[3].value",
         "issue": "must be one value (a string, a number or a boolean), not a list, for op lt"},
        {"field": "params.filters[4].value[0]", "issue": "must be a string, a number or a boolean"},
    ]


def test_alternatives_without_an_own_sentence_list_what_each_needs():
    schema = {"anyOf": [{"required": ["keys"]}, {"required": ["prefix"]}]}
    assert details(schema, {}) == [{"field": "params", "issue": (
        "must match one of the allowed forms: params.keys is required, or params.prefix is required")}]
    several = {"oneOf": [{"type": "integer"}, {"minimum": 0}]}
    assert details({"properties": {"v": several}}, {"v": 5}) == [
        {"field": "params.v", "issue": "must match exactly one of the allowed forms, but matches several"}]


def test_a_bad_key_is_named_as_a_key():
    schema = {"properties": {"headers": {"type": "object", "propertyNames": {"minLength": 1, "maxLength": 3},
                                         "additionalProperties": {"type": "string"}}}}
    assert details(schema, {"headers": {"": "a", "name": 5}}) == [
        {"field": "params.headers", "issue": 'has the key "", which must not be empty, and has the key '
                                             '"name", which must be at most 3 characters long'},
        {"field": "params.headers.name", "issue": "must be a string"},
    ]


def test_a_field_with_several_problems_is_one_entry_saying_each():
    schema = {"properties": {"bucket": {"minLength": 3, "maxLength": 63, "pattern": "^[a-z]+$",
                                        "x-pattern-issue": "may contain only lower-case letters"}}}
    assert details(schema, {"bucket": "X"}) == [{"field": "params.bucket", "issue": (
        "must be 3 to 63 characters long, and may contain only lower-case letters")}]


def test_a_dependency_names_the_missing_field():
    schema = {"dependencies": {"end": ["start"]}}
    assert details(schema, {"end": 1}) == [
        {"field": "params.start", "issue": "is required when params.end is given"}]


def test_field_paths_quote_keys_that_are_not_plain_names():
    assert field_path("params", ["filters", 0, "op"]) == "params.filters[0].op"
    assert field_path("params", ["headers", "first name"]) == 'params.headers["first name"]'
    assert field_path("params", ["headers", "列"]) == 'params.headers["列"]'
    assert field_path("", ["task_name"]) == "task_name"


def test_every_pattern_of_every_kind_is_explained_in_words():
    """A pattern's refusal shows the x-pattern-issue, never the regular expression."""

    def patterns(node: Any, where: str) -> list[str]:
        found = []
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str) and "x-pattern-issue" not in node:
                found.append(where)
            for key, sub in node.items():
                found += patterns(sub, f"{where}.{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                found += patterns(sub, f"{where}[{i}]")
        return found

    unexplained = [p for kind, exporter in REGISTRY.items()
                   for p in patterns(exporter.params_schema, kind)]
    assert unexplained == []


VALIDATOR_WORDING = ("is not valid under", "is not of type", "does not match", "is a required property",
                     "were unexpected", "was unexpected", "is too short", "is too long", "non-unique",
                     "{'", "['", "^", "$", "\\")


@pytest.mark.parametrize("kind,params", [
    ("demo", {"rows": "many", "seed": 1.5, "delimiter": "\"", "headers": {"": 1}, "compression": "zip"}),
    ("dynamodb_table", {"table": "a", "index": "b c", "segments": 99, "columns": [], "filters": [
        {"attr": "x", "op": "between", "value": [1]}, {"op": "nope", "value": {}}, "x"]}),
    ("s3_bundle", {"bucket": "Not_A_Bucket", "keys": ["a", "a"], "on_missing": "ignore"}),
    ("log_archive", {"log_group": "a:b", "start": "yesterday", "end": "2024-05-01T00:00:00+02:00",
                     "log_streams": ["a*", "a*"], "filter_pattern": 5}),
])
def test_every_invalid_field_of_a_kind_is_reported_at_once_in_plain_words(kind, params):
    with pytest.raises(ValidationError) as info:
        parse_create({"task_name": "t", "kind": kind, "params": params})
    got = info.value.details
    fields = {d["field"] for d in got}
    assert {f"params.{name}" for name in params} - {"params.filters", "params.headers", "params.keys",
                                                     "params.log_streams"} <= fields, got
    for detail in got:
        assert set(detail) == {"field", "issue"} and detail["issue"][:1].islower()
        assert not any(w in detail["issue"] for w in VALIDATOR_WORDING), detail
    assert info.value.message == f"The request has {len(got)} problems: " + "; ".join(
        f"{d['field']} {d['issue']}" for d in got) + "."


def test_codes_stay_what_the_first_failing_check_made_them():
    """Every problem is in details, and the code is the one this request always had."""
    with pytest.raises(ValidationError) as info:
        parse_create({"task_name": "t", "kind": "demo", "format": "pdf", "params": {"rows": 0}})
    assert info.value.code == "unknown_format"
    assert info.value.details == [
        {"field": "format", "issue": 'must be "csv", "jsonl" or "xlsx" for kind demo'},
        {"field": "params.rows", "issue": "must be between 1 and 10000000"}]
    with pytest.raises(ValidationError) as info:
        parse_create({"task_name": "", "kind": "nope"})
    assert info.value.code == "validation_error"
    assert [d["field"] for d in info.value.details] == ["task_name", "kind"]
    with pytest.raises(ValidationError) as info:
        parse_create({"task_name": "t", "kind": "nope"})
    assert info.value.code == "unknown_kind"
    assert info.value.message == "kind must be one of the kinds GET /kinds lists."


def test_format_options_are_checked_once_the_params_fit_the_schema():
    with pytest.raises(ValidationError) as info:
        parse_create({"task_name": "t", "kind": "demo", "format": "xlsx", "params": {"delimiter": ";"}})
    assert info.value.details == [{"field": "params.delimiter",
                                   "issue": "does not apply to format xlsx, only to csv"}]


def test_defaults_are_filled_in_at_every_depth_without_touching_the_request():
    schema = {"properties": {"on_missing": {"default": "fail"}, "opts": {
        "properties": {"level": {"default": 6}}}, "rows": {"items": {"properties": {"n": {"default": 0}}}}}}
    assert fill_defaults(schema, {"opts": {}, "rows": [{}, {"n": 2}]}) == {
        "on_missing": "fail", "opts": {"level": 6}, "rows": [{"n": 0}, {"n": 2}]}
    body = {"task_name": "t", "kind": "s3_bundle", "params": {"bucket": "abc", "prefix": "p/"}}
    assert parse_create(body).params == {"bucket": "abc", "prefix": "p/", "on_missing": "fail"}
    assert body["params"] == {"bucket": "abc", "prefix": "p/"}  # the idempotency hash's input


@pytest.mark.parametrize("value,op", [([1], "between"), (3, "in"), ([], "in"), ([1], "eq")])
def test_the_build_still_refuses_filters_the_schema_would(value, op):
    """Defence: a task stored without the API's checks still fails ``invalid_filter``, not a 500."""
    with pytest.raises(ExportError) as info:
        build_filter([{"attr": "age", "op": op, "value": value}])
    assert info.value.code == "invalid_filter"
