"""Access as configured: roles × every task route × own / same-tenant / other-tenant task.

The shipped policy (chalicelib/policy.json) gives the ``admin`` group every
task and the ``tenant-admin`` group every task of its own ``custom:tenant``;
everyone else sees their own. A task the caller may not see answers 404,
exactly like one that does not exist, and is left untouched.
"""

from __future__ import annotations

import json

import pytest

from .conftest import Stack, create_then_drop_table

#: role -> (the user acting, the owner of a same-tenant task, the owner of an other-tenant task)
ROLES = {
    "user": ("alice", "bob", "carol"),
    "tenant_admin": ("dave", "alice", "carol"),
    "admin": ("admin", "alice", "carol"),
}
RELATIONS = ("own", "same_tenant", "other_tenant")
#: what each role sees, by the task's relation to it
SEES = {
    "user": {"own"},
    "tenant_admin": {"own", "same_tenant"},
    "admin": {"own", "same_tenant", "other_tenant"},
}
#: route -> (method, path, the task's state before, expected status when visible)
ROUTES = {
    "get": ("GET", "/downloads/{id}", "succeeded", 200),
    "file": ("GET", "/downloads/{id}/file", "succeeded", 302),
    "cancel": ("POST", "/downloads/{id}/cancel", "queued", 202),
    "retry": ("POST", "/downloads/{id}/retry", "canceled", 202),
    "delete": ("DELETE", "/downloads/{id}", "succeeded", 204),
    "list": ("GET", "/downloads", "succeeded", 200),
}
CASES = [(role, route, relation) for role in ROLES for route in ROUTES for relation in RELATIONS]


def test_the_access_matrix_is_3_roles_x_6_routes_x_3_relations_54_cases() -> None:
    assert len(CASES) == len(ROLES) * len(ROUTES) * len(RELATIONS) == 54
    print(f"access matrix: {len(CASES)} cases")


def call(stack: Stack, user: str, method: str, path: str, body: dict | None = None):
    return stack.client.http.request(method, path, headers=stack.users[user].headers,
                                     body=json.dumps(body).encode() if body is not None else b"")


def task_in_state(stack: Stack, owner: str, state: str) -> str:
    task_id = stack.create(owner)["id"]
    if state == "succeeded":
        stack.run_worker()
    else:
        stack.drain()
    if state == "canceled":
        assert call(stack, owner, "POST", f"/downloads/{task_id}/cancel").status_code == 202
    assert stack.get(task_id, owner)["status"] == state
    return task_id


@pytest.mark.parametrize("role,route,relation", CASES, ids=["-".join(c) for c in CASES])
def test_access_matrix(stack: Stack, role: str, route: str, relation: str) -> None:
    actor, same, other = ROLES[role]
    owner = {"own": actor, "same_tenant": same, "other_tenant": other}[relation]
    method, path, state, allowed = ROUTES[route]
    task_id = task_in_state(stack, owner, state)
    before = stack.get(task_id, owner)
    sees = relation in SEES[role]
    resp = call(stack, actor, method, path.format(id=task_id))
    if route == "list":
        assert resp.status_code == 200
        assert (task_id in {t["id"] for t in resp.json_body["items"]}) is sees
        return
    if sees:
        assert resp.status_code == allowed, resp.body
        return
    assert resp.status_code == 404 and resp.json_body["error"]["code"] == "not_found", resp.body
    after = stack.get(task_id, owner)  # untouched
    assert (after["status"], after["attempts"], after["size"]) == (
        before["status"], before["attempts"], before["size"])


# -- the tenant admin's listing stays in its tenant -----------------------------------------
def test_a_tenant_admin_lists_its_tenant_and_filters_by_owner_within_it(stack: Stack) -> None:
    ids = {user: stack.create(user)["id"] for user in ("alice", "bob", "carol", "dave")}
    listed = {t["id"] for t in call(stack, "dave", "GET", "/downloads").json_body["items"]}
    assert listed == {ids["alice"], ids["bob"], ids["dave"]}
    alices = call(stack, "dave", "GET", f"/downloads?owner={stack.users['alice'].sub}").json_body
    assert [t["id"] for t in alices["items"]] == [ids["alice"]]
    # carol's own tasks, asked for by owner: still nothing outside acme
    carols = call(stack, "dave", "GET", f"/downloads?owner={stack.users['carol'].sub}").json_body
    assert carols["items"] == []
    assert call(stack, "dave", "GET", "/downloads?tenant=acme").status_code == 200
    other = call(stack, "dave", "GET", "/downloads?tenant=globex")
    assert other.status_code == 403 and other.json_body["error"]["code"] == "forbidden"
    # a plain user may not filter by owner or tenant at all
    assert call(stack, "alice", "GET", "/downloads?tenant=acme").status_code == 400


# -- per-kind permissions from the policy ------------------------------------------------------
def test_kinds_lists_only_what_the_caller_may_use_with_its_sources(stack: Stack) -> None:
    def kinds(user: str) -> dict:
        return {k["kind"]: k for k in call(stack, user, "GET", "/kinds").json_body["items"]}

    alice, admin = kinds("alice"), kinds("admin")
    assert "log_archive" not in alice and "log_archive" in admin  # the shipped policy
    assert alice["dynamodb_table"]["sources"] == {"param": "table", "allowed": ["demo-users"]}
    assert admin["log_archive"]["sources"]["param"] == "log_group"
    assert "sources" not in alice["demo"]


def test_a_kind_the_policy_closes_is_403_with_the_reason(stack: Stack) -> None:
    body = {"task_name": "logs", "kind": "log_archive", "params": {
        "log_group": "/download-center/demo", "start": "2024-05-01T00:00:00Z",
        "end": "2024-05-02T00:00:00Z"}}
    resp = call(stack, "alice", "POST", "/downloads", body)
    assert resp.status_code == 403 and resp.json_body["error"]["code"] == "forbidden"
    assert "log_archive" in resp.json_body["error"]["message"]
    assert resp.json_body["error"]["details"] == [
        {"field": "kind", "issue": "is not allowed for your groups"}]
    assert stack.drain() == []
    import boto3

    boto3.client("logs").create_log_group(logGroupName="/download-center/demo")
    assert call(stack, "admin", "POST", "/downloads", body).status_code == 202


def test_sources_per_group_come_from_the_policy_file(stack: Stack, tmp_path, monkeypatch) -> None:
    """An operator narrows a kind's sources for one group without touching code."""
    import app as app_module
    from chalicelib.policy import Policy

    narrowed = Policy.from_dict({
        "visibility": {"admin": "all"},
        "kinds": {"*": {"groups": ["*"]},
                  "dynamodb_table": {"groups": ["*"], "sources": {"admin": ["*"]}}},
    })
    monkeypatch.setattr(app_module.downloads, "policy", narrowed)
    body = {"task_name": "t", "kind": "dynamodb_table", "params": {"table": "demo-users"}}
    resp = call(stack, "alice", "POST", "/downloads", body)
    assert resp.status_code == 403 and resp.json_body["error"]["details"][0]["field"] == "params.table"
    created = create_then_drop_table(stack, "admin")  # the admin may: 202
    assert created["params"] == {"table": "demo-users"}


def test_a_request_message_for_a_table_off_the_allow_list_is_refused_like_a_create(stack: Stack) -> None:
    """Queued requests are held to the access policy as creates are (issue 19: they bypassed it)."""
    import boto3

    request = {"type": "download.request", "version": 1, "request": {
        "task_name": "t", "kind": "dynamodb_table", "params": {"table": "secret-payroll"},
        "owner": stack.users["alice"].sub, "tenant": "acme", "idempotency_key": "k"}}
    boto3.client("sqs").send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps(request))
    stack.run_worker()
    assert call(stack, "alice", "GET", "/downloads").json_body["items"] == []
    (dead,) = [json.loads(r["body"]) for r in stack.drain(stack.dlq_url)]
    assert dead["code"] == "forbidden" and "secret-payroll" in dead["reason"]


def test_a_task_for_a_table_off_the_allow_list_still_fails_at_build(stack: Stack) -> None:
    """The worker checks its allow-list itself: a task stored before the list was narrowed, say."""
    import app as app_module
    from chalicelib.services import Owner
    from chalicelib.validation import parse_create

    alice = stack.users["alice"]
    body = {"task_name": "t", "kind": "dynamodb_table", "params": {"table": "secret-payroll"}}
    owner = Owner(alice.sub, "alice", "acme")
    task, _ = app_module.downloads.store_new(owner, parse_create(body), body, None)
    app_module.downloads.send_build(task)
    stack.run_worker()
    (listed,) = call(stack, "alice", "GET", "/downloads").json_body["items"]
    assert listed["status"] == "failed" and listed["error"]["code"] == "table_not_allowed"
