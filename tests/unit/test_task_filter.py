"""What a transition admits and what a listing filter keeps, as plain Python.

Both repositories answer to these (tests/integration/test_repository_contract.py);
here are their edges without any storage.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.task import (
    ABANDON,
    CANCEL_QUEUED,
    CLAIM,
    MACHINE,
    SUCCEED,
    Guard,
    Lifetimes,
    Status,
    Task,
    TaskFilter,
)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
LIFE = Lifetimes()


def task(**changes) -> Task:
    base = Task(id="01JD0000000000000000000000", owner="u1", owner_name="alice", tenant="acme",
                task_name="Quarterly Straße Report", file_name="Quarterly.CSV", kind="demo",
                format="csv", params={}, status=Status.QUEUED, created_at=NOW, lease=4)
    return replace(base, **changes)


@pytest.mark.parametrize("t", MACHINE, ids=lambda t: t.name)
def test_a_transition_admits_only_its_sources(t) -> None:
    for status in Status:
        if status is Status.EXPIRED:
            continue
        stored = task(status=status, heartbeat_at=NOW - timedelta(hours=1))
        assert t.admits(stored, stored, NOW, LIFE) is (status in t.sources), status


def test_a_lease_guard_wants_the_lease_read() -> None:
    stored = task(status=Status.RUNNING)
    assert SUCCEED.guard is Guard.LEASE
    assert SUCCEED.admits(stored, stored, NOW, LIFE)
    assert not SUCCEED.admits(stored, replace(stored, lease=3), NOW, LIFE)
    assert CLAIM.admits(task(), task(), NOW, LIFE) and not CLAIM.admits(task(), task(lease=5), NOW, LIFE)


def test_a_stale_guard_wants_a_beat_older_than_the_cutoff() -> None:
    beat = NOW - LIFE.stale_after
    stored = task(status=Status.CANCELING, heartbeat_at=beat)
    assert not ABANDON.admits(stored, stored, NOW, LIFE)  # exactly at the cutoff: still alive
    assert ABANDON.admits(stored, stored, NOW + timedelta(microseconds=1), LIFE)
    never_beat = task(status=Status.RUNNING, heartbeat_at=None)
    assert ABANDON.admits(never_beat, never_beat, NOW, LIFE)


def test_a_status_guard_ignores_the_lease_and_the_beat() -> None:
    stored = task(heartbeat_at=NOW)
    assert CANCEL_QUEUED.admits(stored, replace(stored, lease=0), NOW, LIFE)


def test_a_filter_judges_expiry_at_its_instant() -> None:
    done = task(status=Status.SUCCEEDED, expires_at=NOW)
    assert TaskFilter(at=NOW, statuses=frozenset({Status.EXPIRED})).matches(done)
    assert not TaskFilter(at=NOW, statuses=frozenset({Status.SUCCEEDED})).matches(done)
    earlier = NOW - timedelta(microseconds=1)
    assert TaskFilter(at=earlier, statuses=frozenset({Status.SUCCEEDED})).matches(done)
    # no expiry recorded: succeeded, as Task.effective_status says
    assert TaskFilter(at=NOW, statuses=frozenset({Status.SUCCEEDED})).matches(
        task(status=Status.SUCCEEDED))
    assert not TaskFilter(at=NOW, statuses=frozenset({Status.FAILED})).matches(done)


def test_names_match_case_insensitively_anywhere() -> None:
    t = task()
    assert TaskFilter(at=NOW, task_name="STRASSE").matches(t)  # casefold: ß is ss
    assert TaskFilter(at=NOW, task_name="report").matches(t)
    assert not TaskFilter(at=NOW, task_name="reports").matches(t)
    assert TaskFilter(at=NOW, file_name=".csv").matches(t)
    assert not TaskFilter(at=NOW, file_name="quarterly.xlsx").matches(t)


def test_every_criterion_given_must_hold() -> None:
    t = task(status=Status.FAILED)
    f = TaskFilter(at=NOW, statuses=frozenset({Status.FAILED}), kind="demo", task_name="report",
                   tenant="acme")
    assert f.matches(t) and not f.keeps_all
    for other in ({"kind": "s3_bundle"}, {"tenant": "globex"}, {"status": Status.QUEUED},
                  {"task_name": "weekly"}):
        assert not f.matches(replace(t, **other)), other
    assert TaskFilter(at=NOW).keeps_all and TaskFilter(at=NOW).matches(t)
