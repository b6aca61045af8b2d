"""Schemathesis against ``docs/openapi.yaml``, on the local stack, with real Cognito tokens.

The document is the contract clients code against, so every response the API
gives must be one it documents: no 5xx, only documented status codes, the
documented content type, headers and body schema. Schemathesis generates the
requests from the document itself: values it says are valid (which must not
be refused for a reason it does not give) and values it says are invalid
(which must be refused with a 4xx).

The requests go over real HTTP to this module's own ``python -m local.stack``
(moto, the real app behind ``chalice local`` verifying tokens, the workers,
the sweeper), as ``alice`` for every operation and as ``admin`` for the
listing, the one operation whose inputs depend on the role.

Bounded for ``make test``: a fixed number of generated cases per operation,
drawn deterministically (the same requests on every machine, so a CI failure
reproduces locally), no shrinking, and a wall-clock budget after which the
remaining cases are counted but not sent. The summary line at the end of the
run says how many cases were sent.
"""

from __future__ import annotations

import copy
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import strategies as st
from schemathesis.checks import CheckContext
from schemathesis.generation.meta import CoverageScenario, coverage_scenario
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app import HTTP_METHODS
from chalicelib.exporters import REGISTRY
from tests.e2e.conftest import PROJECT_DIR, RunningStack, add_summary_line, id_token
from tests.e2e.test_local_stack import missing_route_body

SPEC_PATH = PROJECT_DIR / "docs" / "openapi.yaml"
#: GET /downloads parameters only an admin may send; anyone else gets 400 validation_error.
ADMIN_ONLY_QUERY = frozenset({"owner", "tenant"})
#: Fixed, so every run draws the same cases; FUZZ_SEED draws others.
SEED = int(os.environ.get("FUZZ_SEED", "20261125"))
#: Generated cases per operation in the fuzzing phase; the examples and coverage
#: phases add their own fixed sets on top. FUZZ_EXAMPLES for a longer run.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
#: Wall-clock budget for sending cases, stack start-up excluded (FUZZ_BUDGET_SECONDS).
BUDGET_SECONDS = float(os.environ.get("FUZZ_BUDGET_SECONDS", "150"))
#: Demo exports the run creates are built by the stack's workers: keep them small.
MAX_TEST_ROWS = 100
#: ... except the ones created to be canceled: long enough (~0.2 s) to still be going.
CANCEL_TARGET_ROWS = 20_000
HTTP_TIMEOUT = 30


def load_spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text("utf-8"))


def without_admin_only_params(spec: dict[str, Any]) -> dict[str, Any]:
    """The document as a non-admin may use it: the admin-only listing filters left out.

    OpenAPI cannot say that a parameter depends on the caller's role, so the
    document lists ``owner`` and ``tenant`` (saying they are admin-only) and
    a non-admin sending them gets the documented 400. Generating them for
    ``alice`` would only test that 400, which tests/integration covers.
    """
    spec = copy.deepcopy(spec)
    listing = spec["paths"]["/downloads"]["get"]
    listing["parameters"] = [p for p in listing["parameters"] if p.get("name") not in ADMIN_ONLY_QUERY]
    return spec


def make_config() -> schemathesis.Config:
    """Deterministic, bounded generation; the checks and why some are replaced.

    * ``unsupported_method`` expects 405 for any method the document does not
      list on a path. The app answers so for the seven methods API Gateway
      can route; any other (``TRACE``, …) never reaches it and is the
      gateway's ``404 not_found`` (the document says so).
      ``undeclared_method_is_405`` checks both, and more: the envelope, and
      that ``Allow`` lists exactly the document's methods.
    * ``positive_data_acceptance`` counts every 4xx to a schema-valid request
      as a failure, but some refusals depend on data a JSON Schema cannot
      describe and the document names them (an unknown kind or format, params
      the kind's own ``params_schema`` refuses, a stale cursor, an inverted
      time window). ``positive_data_accepted`` allows exactly those.
    * ``max_response_time`` stays off: timings on a shared two-core machine
      would make the run flaky without saying anything about the contract.
    """
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "no-shrink": True,
                "database": "none",
                # The token is ours to send; bad and missing tokens are test_local_stack.py's.
                "with-security-parameters": False,
            },
            "checks": {
                "unsupported_method": {"enabled": False},
                "positive_data_acceptance": {"enabled": False},
            },
        }
    )


USER_SCHEMA = schemathesis.openapi.from_dict(without_admin_only_params(load_spec()), config=make_config())
ADMIN_SCHEMA = schemathesis.openapi.from_dict(load_spec(), config=make_config()).include(
    method="GET", path="/downloads"
)


# -- what the run saw ---------------------------------------------------------


@dataclass
class RunStats:
    """Counts for the summary line; one instance for the module's run."""

    started: float | None = None
    sent: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    over_budget: int = 0
    #: ids of the tasks the run created, in order, and of those it deleted
    created: list[str] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)

    def task_ids(self, *, for_delete: bool) -> list[str]:
        """The run's tasks still there; for DELETE only every other one of them.

        DELETE runs before the operations on a task's file, cancel and
        retry: this way those still find some.
        """
        created = self.created[::2] if for_delete else self.created
        return [task_id for task_id in created if task_id not in self.deleted]

    def out_of_time(self) -> bool:
        if self.started is None:
            self.started = time.monotonic()
        return time.monotonic() - self.started > BUDGET_SECONDS

    def line(self) -> str:
        elapsed = 0.0 if self.started is None else time.monotonic() - self.started
        total = sum(self.sent.values())
        users = ", ".join(f"{n} as {who}" for who, n in sorted(self.sent.items()))
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        line = f"schemathesis: {total} cases sent ({users}) in {elapsed:.0f} s; statuses {statuses}"
        if self.over_budget:
            line += f"; {self.over_budget} not sent, over the {BUDGET_SECONDS:.0f} s budget"
        return line


STATS = RunStats()


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    add_summary_line(request.config, STATS.line())


# -- generation: real kinds, small exports, real task ids ---------------------
#
# Left alone, the generator almost never names a kind that exists, so nearly
# every POST /downloads would stop at `400 unknown_kind` and the operations on
# a task would only ever see 404s. These hooks swap some generated values for
# realistic ones. Each swap replaces a value the document calls valid with
# another valid one (the document constrains `kind`, `format` and `params` only
# by type, and `task_id` by length), so a case stays positive or negative as
# generated and the checks judge it as before.

#: kind -> formats, from the app's own catalogue (what GET /kinds lists).
KINDS: dict[str, tuple[str, ...]] = {kind: exporter.formats for kind, exporter in REGISTRY.items()}


def demo_params() -> st.SearchStrategy[dict[str, Any]]:
    """Params the demo kind accepts (mostly), with few rows: its builds run on this machine."""
    return st.fixed_dictionaries(
        {},
        optional={
            "rows": st.integers(1, MAX_TEST_ROWS),
            "seed": st.integers(0, 2**31),
            "compression": st.sampled_from(["none", "gzip"]),
            "bom": st.booleans(),
        },
    )


def _typed(body: dict[str, Any], name: str, kind: type) -> bool:
    """Is ``body[name]`` absent, null or of the document's type, i.e. free to replace?"""
    return body.get(name) is None or isinstance(body[name], kind)


def real_kinds(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """Half the time, a demo export in one of its formats, with small params.

    The other kinds need resources the local stack does not offer (buckets,
    log groups) or read the 10,000-item demo table: their refusals and
    builds are tests/integration's.
    """
    if not (isinstance(body, dict) and isinstance(body.get("kind"), str)
            and _typed(body, "format", str) and _typed(body, "params", dict)):
        return st.just(body)

    def demo(fmt: str, params: dict[str, Any]) -> dict[str, Any]:
        if fmt != "csv":
            params.pop("bom", None)  # csv only
        if fmt == "xlsx":
            params.pop("compression", None)  # csv and jsonl only
        return {**body, "kind": "demo", "format": fmt, "params": params}

    return st.just(body) | st.builds(demo, st.sampled_from(KINDS["demo"]), demo_params())


def small_demo_exports(context: schemathesis.HookContext, body: Any) -> Any:
    """Cap ``params.rows`` of any demo export (the document's example included)."""
    if isinstance(body, dict) and body.get("kind") == "demo" and isinstance(body.get("params"), dict):
        rows = body["params"].get("rows")
        if isinstance(rows, int) and not isinstance(rows, bool) and rows > MAX_TEST_ROWS:
            body = {**body, "params": {**body["params"], "rows": MAX_TEST_ROWS}}
    return body


def real_task_ids(context: schemathesis.HookContext, path_parameters: dict[str, Any] | None) -> Any:
    """Half the time, aim a valid ``task_id`` at a task this run created, not at a 404.

    The same two values are drawn whatever the run has created so far:
    Hypothesis replays examples and refuses a strategy whose draws change
    between two runs of one example (FlakyStrategyDefinition).
    """
    params = dict(path_parameters or {})
    task_id = params.get("task_id")
    if not isinstance(task_id, str) or not 0 < len(task_id) <= 64:
        return st.just(path_parameters)
    for_delete = context.operation is not None and context.operation.method == "delete"

    def aim(pick: tuple[bool, int]) -> dict[str, Any]:
        use_a_task, index = pick
        pool = STATS.task_ids(for_delete=for_delete)[-10:]
        if use_a_task and pool:
            return {**params, "task_id": pool[index % len(pool)]}
        return params

    return st.tuples(st.booleans(), st.integers(0, 9)).map(aim)


def fewer_made_up_cursors(context: schemathesis.HookContext, query: dict[str, Any] | None) -> Any:
    """Half the time, leave a made-up (valid per the document) ``cursor`` out.

    A cursor the server did not issue is `400 invalid_cursor`; with one in
    nearly every generated listing, the filters would hardly ever be applied.
    """
    cursor = (query or {}).get("cursor")
    if not isinstance(cursor, str) or not 0 < len(cursor) <= 2048:
        return st.just(query)
    return st.just(query) | st.just({k: v for k, v in (query or {}).items() if k != "cursor"})


for _schema in (USER_SCHEMA, ADMIN_SCHEMA):
    _schema.hook("flatmap_body")(real_kinds)
    _schema.hook("map_body")(small_demo_exports)
    _schema.hook("flatmap_path_parameters")(real_task_ids)
    _schema.hook("flatmap_query")(fewer_made_up_cursors)


# -- checks -------------------------------------------------------------------


MISSING_ROUTE = missing_route_body()


def undeclared_method_is_405(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """A method the document does not list on a path: ``405 method_not_allowed``, ``Allow`` its methods.

    One API Gateway cannot route (``TRACE``, …) never reaches the app: the gateway's 404.
    """
    if coverage_scenario(case) != CoverageScenario.UNSPECIFIED_HTTP_METHOD:
        return None
    method = response.request.method
    if method not in HTTP_METHODS:
        assert response.status_code == 404, f"{method} answered {response.status_code}"
        assert response.json() == MISSING_ROUTE, response.text
        return None
    assert response.status_code == 405, f"{method} answered {response.status_code}"
    documented = {m.lower() for m in case.operation.schema[case.operation.path]}
    allow = ", ".join(response.headers.get("allow", []))
    assert allow == ", ".join(m for m in HTTP_METHODS if m.lower() in documented), allow
    if method != "HEAD":
        assert response.json()["error"]["code"] == "method_not_allowed", response.text
    return None


#: 400s a schema-valid request may get, for reasons the document gives in words.
SEMANTIC_CODES = frozenset({"unknown_kind", "unknown_format", "invalid_cursor",
                            # the create's checks of a source (Error400, "Checks at create")
                            "table_not_found", "index_not_found", "bucket_not_found",
                            "nothing_to_export", "log_group_not_found"})


def is_documented_refusal(response: Any) -> bool:
    """A 400 whose every problem is one the document describes but cannot encode."""
    if response.status_code != 400:
        return False
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    if error.get("code") in SEMANTIC_CODES:
        return True
    if error.get("code") != "validation_error" or not error.get("details"):
        return False
    return all(_semantic_detail(d) for d in error["details"])


def _semantic_detail(detail: dict[str, Any]) -> bool:
    """One of the 400s the document gives in words (see its Error400 and parameters)."""
    fieldname, issue = str(detail.get("field", "")), str(detail.get("issue", ""))
    if fieldname == "params" or fieldname.startswith("params."):
        return True  # the kind's params_schema (GET /kinds)
    if fieldname == "created_after" and issue == "must not be later than created_before":
        return True
    if fieldname in {"created_after", "created_before"} and "in UTC" in issue:
        return True  # e.g. 0001-01-01T00:00:00+01:00, before year 1 in UTC
    if fieldname in {"parallelism", "output"} and ("built by one worker" in issue
                                                   or "cannot be composed" in issue):
        return True  # what a kind and format can split into (GET /kinds' split)
    return fieldname in ADMIN_ONLY_QUERY and "bytes" in issue  # 2048 characters, not all one byte


def positive_data_accepted(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """schemathesis's ``positive_data_acceptance``, allowing the documented refusals."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if is_documented_refusal(response):
            return None
        raise


EXTRA_CHECKS = [undeclared_method_is_405, positive_data_accepted]


# -- the runs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def alice(local_stack: RunningStack) -> dict[str, str]:
    return {"Authorization": id_token(local_stack, "alice")}


@pytest.fixture(scope="module")
def admin(local_stack: RunningStack) -> dict[str, str]:
    return {"Authorization": id_token(local_stack, "admin")}


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def aim_cancel_at_a_fresh_task(
    case: Any, stack: RunningStack, auth: dict[str, str], session: requests.Session
) -> None:
    """Give a cancel aimed at one of the run's tasks a task created just now.

    By the time the cancel operation runs, the workers have built every
    earlier task and each cancel would be ``409 invalid_state``: a fresh one
    is still queued or running, so the 202 is checked too, and the canceled
    tasks it leaves are what the retry operation then finds.
    """
    if not case.path.endswith("/cancel") or case.path_parameters.get("task_id") not in STATS.created:
        return
    body = {"task_name": "to cancel", "kind": "demo", "params": {"rows": CANCEL_TARGET_ROWS}}
    created = session.post(f"{stack.api}/downloads", json=body, headers=auth, timeout=HTTP_TIMEOUT)
    if created.status_code == 202:  # else the quota: cancel the old task
        STATS.created.append(created.json()["id"])
        case.path_parameters["task_id"] = created.json()["id"]


def send(case: Any, who: str, stack: RunningStack, auth: dict[str, str], session: requests.Session) -> None:
    if STATS.out_of_time():
        STATS.over_budget += 1
        return
    STATS.sent[who] += 1
    aim_cancel_at_a_fresh_task(case, stack, auth, session)
    response = case.call_and_validate(
        base_url=stack.api,
        session=session,
        headers=auth,
        additional_checks=EXTRA_CHECKS,
        timeout=HTTP_TIMEOUT,
        allow_redirects=False,
    )
    STATS.statuses[f"{response.status_code // 100}xx"] += 1
    if case.method == "POST" and case.path == "/downloads" and response.status_code == 202:
        STATS.created.append(response.json()["id"])
    if case.method == "DELETE" and response.status_code == 204:
        STATS.deleted.add(case.path_parameters["task_id"])


@USER_SCHEMA.parametrize()
def test_api_as_a_user(
    case: Any, local_stack: RunningStack, alice: dict[str, str], session: requests.Session
) -> None:
    send(case, "alice", local_stack, alice, session)


@ADMIN_SCHEMA.parametrize()
def test_listing_as_an_admin(
    case: Any, local_stack: RunningStack, admin: dict[str, str], session: requests.Session
) -> None:
    send(case, "admin", local_stack, admin, session)
