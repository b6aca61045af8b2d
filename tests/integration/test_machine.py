"""The declared state machine is what DynamoDB enforces: every status × every named transition.

Each case stores a task in one status (through the repository, with its
quota slot when the status is active), applies one transition with the
guard satisfied, and checks that it lands exactly when the machine says,
in the machine's target, with the owner's counter moved by the
transition's quota effect and nothing else.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.adapters.tasks_repo import TaskModel, TaskRepository
from chalicelib.ids import new_id
from chalicelib.task import (
    ACTIVE,
    CLAIM,
    MACHINE,
    SUCCEED,
    Guard,
    Status,
    Task,
    Transition,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
STORED = [s for s in Status if s is not Status.EXPIRED]
CAP = 5


def stored_task(repo: TaskRepository, status: Status, owner: str = "owner-1") -> Task:
    """A task in ``status``: created queued (taking a slot), then moved there directly."""
    task = Task(id=new_id(), owner=owner, owner_name="o", tenant="acme", task_name="t",
                file_name="t.csv", kind="demo", format="csv", params={}, status=Status.QUEUED,
                created_at=NOW, lease=3, heartbeat_at=NOW - timedelta(hours=1))
    repo.add(task, CAP)
    model = TaskModel(task.id)
    actions = [TaskModel.status.set(status.value), TaskModel.lease.set(3),
               TaskModel.heartbeat_at.set(NOW - timedelta(hours=1))]
    if status not in ACTIVE:  # it gave its slot back on the way
        from chalicelib.adapters.tasks_repo import QuotaModel, quota_id
        QuotaModel(quota_id(owner)).update(actions=[QuotaModel.active.add(-1)])
    model.update(actions=actions)
    got = repo.get(task.id)
    assert got is not None and got.status is status
    return got


CASES = [(src, t) for src in STORED for t in MACHINE]


@pytest.mark.parametrize("src,t", CASES, ids=[f"{s.value}-{t.name}" for s, t in CASES])
def test_every_status_and_transition(stack, src: Status, t: Transition) -> None:
    repo = TaskRepository()
    task = stored_task(repo, src)
    before = repo.active_count(task.owner)
    done = repo.apply(t, task, NOW, cap=CAP)  # its heartbeat (1 h ago) is stale by NOW
    after = repo.get(task.id)
    assert after is not None
    if src in t.sources:
        assert done is not None and done.status is t.target and after.status is t.target
        assert repo.active_count(task.owner) == before + t.quota
    else:
        assert done is None and after.status is src
        assert repo.active_count(task.owner) == before


def test_the_walk_covers_every_pair(stack) -> None:
    assert len(CASES) == len(STORED) * len(MACHINE) == 66


@pytest.mark.parametrize("t", [t for t in MACHINE if t.guard is Guard.LEASE], ids=lambda t: t.name)
def test_a_lease_guard_refuses_a_writer_with_an_old_lease(stack, t: Transition) -> None:
    repo = TaskRepository()
    task = stored_task(repo, next(iter(t.sources)))
    from dataclasses import replace
    assert repo.apply(t, replace(task, lease=task.lease - 1), NOW, cap=CAP) is None
    assert repo.get(task.id).status is task.status


@pytest.mark.parametrize("t", [t for t in MACHINE if t.guard is Guard.STALE], ids=lambda t: t.name)
def test_a_stale_guard_refuses_while_the_build_still_beats(stack, t: Transition) -> None:
    repo = TaskRepository()
    task = stored_task(repo, next(iter(t.sources)))
    just_after_its_beat = NOW - timedelta(minutes=59)  # the heartbeat was 1 h before NOW
    assert repo.apply(t, task, just_after_its_beat) is None
    assert repo.get(task.id).status is task.status


def test_a_move_into_the_active_states_needs_a_free_slot(stack) -> None:
    from chalicelib.adapters.tasks_repo import QuotaExceeded
    from chalicelib.task import RETRY

    repo = TaskRepository()
    failed = stored_task(repo, Status.FAILED)
    for _ in range(CAP):
        stored_task(repo, Status.QUEUED)
    with pytest.raises(QuotaExceeded):
        repo.apply(RETRY, failed, NOW, cap=CAP)
    assert repo.get(failed.id).status is Status.FAILED and repo.active_count(failed.owner) == CAP


def test_a_claim_fences_the_build_before_it(stack) -> None:
    """After a second claim, every write of the first build is refused."""
    repo = TaskRepository()
    task = stored_task(repo, Status.QUEUED)
    first = repo.apply(CLAIM, task, NOW)
    assert first is not None and first.lease == task.lease + 1
    # its build died; the task went back to the queue and another build claimed it
    from chalicelib.task import REQUEUE
    requeued = repo.apply(REQUEUE, first, NOW + timedelta(hours=2))
    second = repo.apply(CLAIM, requeued, NOW + timedelta(hours=2))
    assert second is not None and second.lease == first.lease + 1
    assert repo.heartbeat(first, {"rows": 1, "bytes": 1}, NOW) is None
    assert repo.apply(SUCCEED, first, NOW) is None
    assert repo.heartbeat(second, {"rows": 2, "bytes": 2}, NOW) is Status.RUNNING
    assert repo.apply(SUCCEED, second, NOW).status is Status.SUCCEEDED
    # and a claim from a stale read cannot reuse a lease
    assert repo.apply(CLAIM, task, NOW) is None
