"""Every kind can be tried on ``make run``: its first example in ``GET /kinds`` builds.

One stack, started as a developer would with a setting in the environment
(``EXPORTABLE_TABLES``, which ``.chalice/config.json`` also sets): the
environment must win for local runs. The stack seeds a table, a bucket and a
log group and puts them on its allow-lists; the examples point at them.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.e2e.conftest import RunningStack, id_token, start_stack

HTTP_TIMEOUT = 30
BUILD_TIMEOUT = 120.0
TERMINAL = {"succeeded", "failed", "canceled", "expired"}
#: the config file says "demo-users"; the caller's environment says more, and wins
TABLES = "demo-users,not-seeded"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with start_stack(tmp_path_factory.mktemp("kind-examples"), EXPORTABLE_TABLES=TABLES) as running:
        yield running


@pytest.fixture(scope="module")
def admin(stack: RunningStack) -> dict[str, str]:
    """The shipped policy opens every kind to admins (log_archive to them only)."""
    return {"Authorization": id_token(stack, "admin")}


@pytest.fixture(scope="module")
def catalogue(stack: RunningStack, admin: dict[str, str]) -> dict[str, dict[str, Any]]:
    resp = requests.get(f"{stack.api}/kinds", headers=admin, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200, resp.text
    return {item["kind"]: item for item in resp.json()["items"]}


def test_the_environment_wins_over_the_config_file_and_samples_are_allowed(
    stack: RunningStack, catalogue: dict[str, dict[str, Any]]
) -> None:
    assert catalogue["dynamodb_table"]["sources"]["allowed"] == TABLES.split(",")
    assert catalogue["s3_bundle"]["sources"]["allowed"] == [stack.info["sample_bucket"]]
    assert catalogue["log_archive"]["sources"]["allowed"] == [stack.info["sample_log_group"]]


def test_every_kinds_first_example_builds(
    stack: RunningStack, admin: dict[str, str], catalogue: dict[str, dict[str, Any]]
) -> None:
    assert set(catalogue) == {"demo", "dynamodb_table", "s3_bundle", "log_archive"}
    sources = {"dynamodb_table": ("table", stack.info["demo_table"]),
               "s3_bundle": ("bucket", stack.info["sample_bucket"]),
               "log_archive": ("log_group", stack.info["sample_log_group"])}
    tasks = {}
    for kind, item in catalogue.items():
        params = item["params_schema"]["examples"][0]
        if kind in sources:
            param, name = sources[kind]
            assert params[param] == name, params  # the stack's own sample
        body = {"task_name": f"example {kind}", "kind": kind, "format": item["formats"][0],
                "params": params}
        resp = requests.post(f"{stack.api}/downloads", json=body, headers=admin, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 202, resp.text
        tasks[kind] = resp.json()

    deadline = time.monotonic() + BUILD_TIMEOUT
    while any(task["status"] not in TERMINAL for task in tasks.values()):
        if time.monotonic() > deadline:
            pytest.fail(f"still building after {BUILD_TIMEOUT:.0f} s: {tasks}\n{stack.log_tail()}")
        time.sleep(0.5)
        for kind, task in tasks.items():
            resp = requests.get(f"{stack.api}/downloads/{task['id']}", headers=admin, timeout=HTTP_TIMEOUT)
            tasks[kind] = resp.json()
    for kind, task in tasks.items():
        assert task["status"] == "succeeded", f"{kind}: {task.get('error')}\n{stack.log_tail()}"
        assert task["progress"]["rows"] > 0 and task["size"] > 0, (kind, task)

    # the bundle holds the sample's UTF-8 and space-containing names intact
    data = requests.get(tasks["s3_bundle"]["url"], timeout=HTTP_TIMEOUT).content
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert {"read me.txt", "年度报告 2024.txt", "emoji 🌸.txt", "deep/nested/a/b/c/leaf.txt"} <= names
    # a day of events, one a minute in each of three streams, minus the minute the range starts after
    assert tasks["log_archive"]["progress"]["rows"] >= 3 * 1430
