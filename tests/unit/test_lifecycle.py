"""The task lifecycle and visibility rules, without AWS."""

import re
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.errors import Unauthorized
from chalicelib.principal import Principal, Scope
from chalicelib.task import (
    ACTIVE,
    CLAIM,
    DELETABLE,
    MACHINE,
    REQUEST_CANCEL,
    REQUEUE,
    RETRY,
    TERMINAL,
    Guard,
    Lifetimes,
    Status,
    Task,
    TaskError,
    Transition,
    can_transition,
    effects,
    sources_of,
)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

#: The status graph the README and the OpenAPI document describe.
ALLOWED = {
    ("queued", "running"), ("queued", "canceled"), ("queued", "failed"), ("running", "succeeded"),
    ("running", "failed"), ("running", "canceling"), ("running", "queued"), ("running", "canceled"),
    ("canceling", "canceled"), ("canceling", "failed"), ("failed", "queued"), ("canceled", "queued"),
}


def task(**changes):
    base = dict(id="01JDQ4V8Z8S9Y6K1E6J3X2M7TQ", owner="u1", owner_name="alice", tenant="acme",
                task_name="t", file_name="f.csv", kind="demo", format="csv", params={},
                status=Status.QUEUED, created_at=NOW)
    base.update(changes)
    return Task(**base)


@pytest.mark.parametrize("src", [s for s in Status if s is not Status.EXPIRED])
@pytest.mark.parametrize("dst", list(Status))
def test_only_the_contract_transitions_exist(src, dst):
    assert can_transition(src, dst) == ((src.value, dst.value) in ALLOWED)


def test_terminal_states_are_never_left_except_by_retry():
    assert not can_transition(Status.SUCCEEDED, Status.QUEUED)
    for state in TERMINAL:
        assert not can_transition(state, Status.RUNNING)
        assert not can_transition(state, Status.SUCCEEDED)


def test_sources_of_running_is_only_queued():
    assert sources_of(Status.RUNNING) == {Status.QUEUED}
    assert sources_of(Status.CANCELED) == {Status.QUEUED, Status.RUNNING, Status.CANCELING}


def test_every_move_out_of_running_but_a_cancel_request_is_guarded():
    """Only the build holding the lease, or the sweeper once the build is dead, ends a run."""
    for t in MACHINE:
        if Status.RUNNING in t.sources and t is not REQUEST_CANCEL:
            assert t.guard in (Guard.LEASE, Guard.STALE), t.name


def test_the_quota_effect_of_each_transition_follows_the_active_states():
    assert {t.name: t.quota for t in MACHINE} == {
        "claim": 0, "request_cancel": 0, "cancel_queued": -1, "succeed": -1, "fail": -1,
        "acknowledge_cancel": -1, "fail_queued": -1, "requeue": 0, "abandon": -1, "lose": -1,
        "retry": 1, "hand_off": 0,
    }
    with pytest.raises(ValueError):
        Transition("mixed", frozenset({Status.QUEUED, Status.FAILED}), Status.CANCELED)


LIFE = Lifetimes()


@pytest.mark.parametrize("t", [t for t in MACHINE if t.target in TERMINAL], ids=lambda t: t.name)
def test_every_way_into_a_terminal_state_sets_its_ttl_and_leaves_its_event_pending(t):
    fields = effects(t, task(status=next(iter(t.sources))), NOW, LIFE)
    assert fields["finished_at"] == NOW
    assert fields["ttl"] >= NOW + LIFE.record_retention
    assert fields["due_at"] == NOW + LIFE.event_grace


def test_a_hand_off_keeps_the_start_of_the_work_for_the_next_claim():
    from chalicelib.task import HAND_OFF

    started = NOW - timedelta(minutes=3)
    handed = effects(HAND_OFF, task(status=Status.RUNNING, started_at=started, lease=2), NOW, LIFE)
    assert "started_at" not in handed and handed["progress"] == {"rows": 0, "bytes": 0}
    assert effects(CLAIM, task(started_at=started), NOW, LIFE)["started_at"] == started
    assert effects(CLAIM, task(), NOW, LIFE)["started_at"] == NOW


def test_a_claim_takes_the_next_lease_and_counts_itself():
    fields = effects(CLAIM, task(lease=4, claims=1), NOW, LIFE)
    assert (fields["lease"], fields["claims"]) == (5, 2)
    assert fields["heartbeat_at"] == NOW and fields["due_at"] == NOW + LIFE.stale_after


def test_queued_again_clears_what_the_last_attempt_left():
    old = task(status=Status.FAILED, error=TaskError("x", "y"), size=3, object_key="k", claims=2,
               progress={"rows": 9, "bytes": 9})
    retried = effects(RETRY, old, NOW, LIFE)
    assert retried["attempts"] == 2 and retried["claims"] == 0
    assert retried["error"] is None and retried["object_key"] is None and retried["size"] is None
    assert retried["progress"] == {"rows": 0, "bytes": 0} and retried["queued_at"] == NOW
    requeued = effects(REQUEUE, task(status=Status.RUNNING, claims=1), NOW, LIFE)
    assert "attempts" not in requeued and "claims" not in requeued  # a dead build still counts
    assert requeued["due_at"] == NOW + LIFE.resend_after


def test_a_build_is_stale_once_its_heartbeat_is_older_than_the_cutoff():
    beat = task(status=Status.RUNNING, heartbeat_at=NOW - timedelta(seconds=301))
    assert beat.is_stale(NOW, timedelta(seconds=300))
    assert not beat.is_stale(NOW - timedelta(seconds=2), timedelta(seconds=300))
    assert not task(status=Status.QUEUED).is_stale(NOW, timedelta(0))


def test_running_tasks_cannot_be_deleted():
    assert Status.RUNNING not in DELETABLE and Status.CANCELING not in DELETABLE
    assert {Status.QUEUED, Status.RUNNING, Status.CANCELING} == ACTIVE


def test_succeeded_task_becomes_expired_when_its_file_expires():
    t = task(status=Status.SUCCEEDED, expires_at=NOW + timedelta(days=1))
    assert t.effective_status(NOW) is Status.SUCCEEDED
    assert t.effective_status(NOW + timedelta(days=1)) is Status.EXPIRED
    assert task(status=Status.FAILED, expires_at=NOW).effective_status(NOW) is Status.FAILED


def test_resource_has_url_only_while_succeeded():
    ok = task(status=Status.SUCCEEDED, expires_at=NOW + timedelta(days=7))
    res = ok.to_resource(NOW, "https://signed", NOW + timedelta(minutes=15))
    assert res["url"] == "https://signed" and res["url_expires_at"] == "2026-11-23T10:15:00Z"
    expired = ok.to_resource(NOW + timedelta(days=8), "https://signed", NOW)
    assert expired["status"] == "expired" and expired["url"] is None
    failed = task(status=Status.FAILED, error=TaskError("table_not_found", "gone"))
    res = failed.to_resource(NOW, "https://signed", NOW)
    assert res["url"] is None and res["url_expires_at"] is None
    assert res["error"] == {"code": "table_not_found", "message": "gone"}
    assert res["created_at"] == "2026-11-23T10:00:00Z"


def test_principal_from_claims():
    p = Principal.from_claims({"sub": "s1", "cognito:username": "alice", "custom:tenant": "acme"})
    assert (p.sub, p.username, p.tenant, p.scope) == ("s1", "alice", "acme", Scope.OWN)
    assert Principal.from_claims({"sub": "s", "cognito:groups": ["admin"]}).is_admin
    # API Gateway hands list claims over as strings
    assert Principal.from_claims({"sub": "s", "cognito:groups": "[admin editors]"}).is_admin
    assert not Principal.from_claims({"sub": "s", "cognito:groups": "[administrators]"}).is_admin
    assert Principal.from_claims({"sub": "s"}).tenant == "default"
    tenant_admin = {"sub": "s", "cognito:groups": ["tenant-admin"], "custom:tenant": "acme"}
    assert Principal.from_claims(tenant_admin).scope is Scope.TENANT
    # both groups: the wider view wins
    assert Principal.from_claims({**tenant_admin, "cognito:groups": "[tenant-admin admin]"}).is_admin


def test_a_tenant_admin_without_a_tenant_sees_only_its_own():
    """Otherwise it would administer everyone who has no tenant either."""
    p = Principal.from_claims({"sub": "s", "cognito:groups": ["tenant-admin"]})
    assert p.scope is Scope.OWN


@pytest.mark.parametrize("claims", [None, {}, {"cognito:username": "x"}, {"sub": ""}, {"sub": 5}])
def test_no_claims_is_unauthorized(claims):
    with pytest.raises(Unauthorized):
        Principal.from_claims(claims)


def test_visibility():
    mine, neighbours, elsewhere = (task(owner="a", tenant="acme"), task(owner="b", tenant="acme"),
                                   task(owner="c", tenant="globex"))
    alice = Principal("a", "alice", "acme")
    dave = Principal("d", "dave", "acme", scope=Scope.TENANT)
    admin = Principal("z", "root", "acme", scope=Scope.ALL)
    assert [alice.can_see(t) for t in (mine, neighbours, elsewhere)] == [True, False, False]
    assert [dave.can_see(t) for t in (mine, neighbours, elsewhere)] == [True, True, False]
    assert [admin.can_see(t) for t in (mine, neighbours, elsewhere)] == [True, True, True]


def test_the_readme_table_of_transitions_is_the_machine():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| ([a-z, ]+) \| (\w+) \|", readme, flags=re.M)
    documented = {name: (frozenset(src.split(", ")), dst) for name, src, dst in rows}
    assert documented == {t.name: (frozenset(s.value for s in t.sources), t.target.value)
                          for t in MACHINE}
