"""The OpenAPI document is valid and says what the code does."""

from datetime import UTC, datetime
from pathlib import Path

import yaml
from openapi_spec_validator import validate

from app import app
from chalicelib.task import Status, Task

SPEC = yaml.safe_load((Path(__file__).parents[2] / "docs" / "openapi.yaml").read_text("utf-8"))


def test_document_is_valid_openapi():
    validate(SPEC)


def test_every_route_is_documented_and_nothing_else():
    code = {(path.replace("{task_id}", "{task_id}"), method.lower())
            for path, methods in app.routes.items() for method in methods}
    documented = {(path, method) for path, item in SPEC["paths"].items()
                  for method in item if method != "parameters"}
    assert code == documented


def test_task_schema_lists_exactly_the_resource_fields():
    task = Task(id="01JDQ4V8Z8S9Y6K1E6J3X2M7TQ", owner="o", owner_name="n", tenant="t",
                task_name="t", file_name="f.csv", kind="demo", format="csv", params={},
                status=Status.QUEUED, created_at=datetime.now(UTC))
    resource = task.to_resource(datetime.now(UTC))
    assert set(SPEC["components"]["schemas"]["Task"]["properties"]) == set(resource)
    assert SPEC["components"]["schemas"]["Status"]["enum"] == [s.value for s in Status]
