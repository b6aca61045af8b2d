"""The access policy as data: parsing, group rules, sources within the deployment's allow-list."""

from __future__ import annotations

import json

import pytest

from chalicelib.policy import Forbidden, Policy, PolicyError, load
from chalicelib.principal import Principal, Scope

POLICY = Policy.from_dict({
    "visibility": {"boss": "all", "lead": "tenant"},
    "kinds": {
        "*": {"groups": ["*"]},
        "tables": {"groups": ["*"], "sources": {"*": ["public"], "analysts": ["sales", "public"],
                                                "boss": ["*"]}},
        "logs": {"groups": ["boss"], "sources": {"boss": ["*"]}},
    },
})
DEPLOYMENT = ("public", "sales", "payroll")


def who(*groups: str) -> Principal:
    return POLICY.principal({"sub": "s", "cognito:groups": list(groups), "custom:tenant": "acme"})


def test_visibility_comes_from_the_file():
    assert who().scope is Scope.OWN
    assert who("lead").scope is Scope.TENANT
    assert who("boss", "lead").scope is Scope.ALL


def test_kinds_by_group_with_a_default_rule():
    assert POLICY.may_use(who(), "anything_else") and POLICY.may_use(who(), "tables")
    assert not POLICY.may_use(who("lead"), "logs") and POLICY.may_use(who("boss"), "logs")
    closed = Policy.from_dict({"kinds": {"tables": {"groups": ["*"]}}})
    assert not closed.may_use(who(), "anything_else")  # no rule, no use


def test_sources_are_the_union_of_the_callers_groups_within_the_deployment():
    assert POLICY.sources(who(), "tables", DEPLOYMENT) == ("public",)
    assert POLICY.sources(who("analysts"), "tables", DEPLOYMENT) == ("public", "sales")
    assert POLICY.sources(who("boss"), "tables", DEPLOYMENT) == DEPLOYMENT
    # a name the policy grants but the deployment cannot read is never offered
    assert POLICY.sources(who("analysts"), "tables", ("public",)) == ("public",)
    # no sources rule: the whole deployment allow-list
    assert POLICY.sources(who(), "anything_else", DEPLOYMENT) == DEPLOYMENT


def test_check_says_why_in_a_403():
    with pytest.raises(Forbidden) as kind:
        POLICY.check(who(), "logs", None)
    assert kind.value.status == 403 and kind.value.details == [
        {"field": "kind", "issue": "is not allowed for your groups"}]
    with pytest.raises(Forbidden) as source:
        POLICY.check(who(), "tables", ("table", "payroll", DEPLOYMENT))
    assert "payroll" in source.value.message and "public" in source.value.message
    assert source.value.details[0]["field"] == "params.table"
    POLICY.check(who("boss"), "tables", ("table", "payroll", DEPLOYMENT))


@pytest.mark.parametrize("data,where", [
    ([], "must be a JSON object"),
    ({"kinds": {"x": {"groups": "admin"}}}, "kinds.x.groups"),
    ({"kinds": {"x": {"groups": [], "extra": 1}}}, "unknown keys"),
    ({"visibility": {"g": "everything"}}, "visibility.g"),
    ({"roles": {}}, "unknown keys"),
    ({"kinds": {"x": {"groups": ["*"], "sources": {"*": "t"}}}}, "kinds.x.sources.*"),
])
def test_a_broken_policy_is_refused_at_load_with_where(data, where):
    with pytest.raises(PolicyError, match=where.replace("*", r"\*")):
        Policy.from_dict(data)


def test_the_shipped_policy_and_access_policy_file(tmp_path, monkeypatch):
    shipped = load()
    assert shipped.visibility == {"admin": Scope.ALL, "tenant-admin": Scope.TENANT}
    assert not shipped.may_use(who(), "log_archive") and shipped.may_use(who(), "demo")
    other = tmp_path / "policy.json"
    other.write_text(json.dumps({"kinds": {"demo": {"groups": ["*"]}}}), encoding="utf-8")
    assert set(load(str(other)).kinds) == {"demo"}
    with pytest.raises(PolicyError, match="missing.json"):
        load(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("tenant", ["acme/01JDQ4V8Z8S9Y6K1E6J3X2M7TQ", "..", ".", "a/../b", "acme\n",
                                    "-acme", "acme corp", "x" * 65])
def test_a_token_whose_tenant_is_no_tenant_name_is_refused(tenant):
    """Issue 19: a tenant becomes a folder of the files bucket; one rule for tokens and the queue."""
    with pytest.raises(Forbidden) as info:
        POLICY.principal({"sub": "s", "custom:tenant": tenant})
    (detail,) = info.value.details
    assert detail["field"] == "custom:tenant" and "hold no '..'" in detail["issue"]


def test_tenant_names_that_are_one_level_of_a_key_are_accepted():
    for tenant in ("acme", "globex-2", "eu.acme_1", "a", "x" * 64):
        assert POLICY.principal({"sub": "s", "custom:tenant": tenant}).tenant == tenant
    assert POLICY.principal({"sub": "s"}).tenant == "default"
