"""One contract, two repositories: DynamoDB (PynamoDB on moto) and the tests' in-memory one.

Every case runs against both. The declared state machine is what storage
enforces (every stored status × every named transition: it lands exactly
when the machine says, in its target, with the owner's counter moved by the
transition's quota effect and nothing else), the guards refuse what they
must, the quota is exact, idempotency records behave, the sweeper's due
times and the listing's partitions, order, filters and cursors agree. Tests
that run the services on the in-memory repository rely on this.

Tasks reach a status the way production gets them there: added, then moved
along the machine's own transitions (the shortest walk from ``queued``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.adapters.tasks_repo import (
    IdempotencyRecord,
    KeyExists,
    QuotaExceeded,
    TaskRepository,
    TaskStore,
    configure,
)
from chalicelib.ids import highest_id_at, lowest_id_at, ms_at, new_id
from chalicelib.task import (
    ACTIVE,
    CANCEL_QUEUED,
    CLAIM,
    FAIL,
    MACHINE,
    REQUEST_CANCEL,
    REQUEUE,
    RETRY,
    SUCCEED,
    Guard,
    Lifetimes,
    Status,
    Task,
    TaskError,
    TaskFilter,
    Transition,
)
from tests.memory_repo import MemoryTaskRepository

from .conftest import SETTINGS

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
#: when the tasks of a case were claimed: their heartbeat is stale by NOW
BEAT = NOW - timedelta(hours=1)
STORED = [s for s in Status if s is not Status.EXPIRED]
CAP = 5
LIFE = Lifetimes()


def _walks() -> dict[Status, tuple[Transition, ...]]:
    """The shortest walk along MACHINE from ``queued`` to every stored status."""
    walks: dict[Status, tuple[Transition, ...]] = {Status.QUEUED: ()}
    frontier = [Status.QUEUED]
    while frontier:
        nxt = []
        for src in frontier:
            for t in MACHINE:
                if src in t.sources and t.target not in walks:
                    walks[t.target] = (*walks[src], t)
                    nxt.append(t.target)
        frontier = nxt
    return walks


WALKS = _walks()


# -- the two repositories -----------------------------------------------------------------
@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    """One moto for the module: the deployment's table (infra/resources.json), emptied per test."""
    from local.provision import provision

    with mock_aws():
        configure(SETTINGS.tasks_table)
        provision(None)
        yield boto3.client("dynamodb")


def _empty(client: Any) -> None:
    pages = client.get_paginator("scan").paginate(TableName=SETTINGS.tasks_table,
                                                  ProjectionExpression="id")
    for page in pages:
        for item in page["Items"]:
            client.delete_item(TableName=SETTINGS.tasks_table, Key={"id": item["id"]})


@pytest.fixture(params=["dynamodb", "memory"])
def repo(request: pytest.FixtureRequest) -> TaskStore:
    if request.param == "memory":
        return MemoryTaskRepository(LIFE)
    _empty(request.getfixturevalue("dynamodb"))
    return TaskRepository(LIFE)


def new_task(owner: str = "owner-1", at: datetime = BEAT, **fields: Any) -> Task:
    values: dict[str, Any] = {
        "owner_name": "o", "tenant": "acme", "task_name": "t", "file_name": "t.csv", "kind": "demo",
        "format": "csv", "params": {"rows": 5}, "progress": {"rows": 0, "bytes": 0}} | fields
    return Task(id=new_id(ms_at(at)), owner=owner, status=Status.QUEUED, created_at=at, **values)


def stored_task(repo: TaskStore, status: Status, owner: str = "owner-1", at: datetime = BEAT,
                **fields: Any) -> Task:
    """A task in ``status``, added and walked there at ``at``."""
    task, _ = repo.add(new_task(owner, at, **fields), CAP)
    for t in WALKS[status]:
        moved = repo.apply(t, task, at, cap=CAP)
        assert moved is not None, (t.name, task.status)
        task = moved
    got = repo.get(task.id)
    assert got is not None and got.status is status
    return got


def test_every_stored_status_is_reached_by_the_machine() -> None:
    assert set(WALKS) == set(STORED)


# -- the machine, its guards and the quota ------------------------------------------------
CASES = [(src, t) for src in STORED for t in MACHINE]


@pytest.mark.parametrize("src,t", CASES, ids=[f"{s.value}-{t.name}" for s, t in CASES])
def test_every_status_and_transition(repo: TaskStore, src: Status, t: Transition) -> None:
    task = stored_task(repo, src)
    before = repo.active_count(task.owner)
    assert before == (1 if src in ACTIVE else 0)
    done = repo.apply(t, task, NOW, cap=CAP)  # its heartbeat (BEAT, 1 h ago) is stale by NOW
    after = repo.get(task.id)
    assert after is not None
    if src in t.sources:
        assert done is not None and done.status is t.target and after == done
        assert repo.active_count(task.owner) == before + t.quota
    else:
        assert done is None and after == task
        assert repo.active_count(task.owner) == before


def test_the_walk_covers_every_pair() -> None:
    assert len(CASES) == len(STORED) * len(MACHINE) == 72


@pytest.mark.parametrize("t", [t for t in MACHINE if t.guard is Guard.LEASE], ids=lambda t: t.name)
def test_a_lease_guard_refuses_a_writer_with_an_old_lease(repo: TaskStore, t: Transition) -> None:
    task = stored_task(repo, next(iter(t.sources)))
    assert repo.apply(t, replace(task, lease=task.lease - 1), NOW, cap=CAP) is None
    assert repo.get(task.id) == task


@pytest.mark.parametrize("t", [t for t in MACHINE if t.guard is Guard.STALE], ids=lambda t: t.name)
def test_a_stale_guard_refuses_while_the_build_still_beats(repo: TaskStore, t: Transition) -> None:
    task = stored_task(repo, next(iter(t.sources)))
    still_beating = BEAT + LIFE.stale_after  # the cutoff itself: not older than it yet
    assert repo.apply(t, task, still_beating) is None
    assert repo.get(task.id) == task
    assert repo.apply(t, task, still_beating + timedelta(seconds=1)) is not None


def test_a_transition_writes_its_effects_and_the_callers_fields(repo: TaskStore) -> None:
    task = stored_task(repo, Status.RUNNING)
    done = repo.apply(SUCCEED, task, NOW, size=12, md5="m", sha256="s", content_type="text/csv",
                      object_key="k", progress={"rows": 3, "bytes": 12})
    assert done is not None
    assert (done.size, done.md5, done.sha256, done.content_type, done.object_key) == (
        12, "m", "s", "text/csv", "k")
    assert done.finished_at == NOW and done.expires_at == NOW + LIFE.file_ttl
    assert done.progress == {"rows": 3, "bytes": 12} and done.error is None
    assert done.due_at == NOW + LIFE.event_grace  # its event is still to go out
    failed = repo.apply(RETRY, stored_task(repo, Status.FAILED), NOW, cap=CAP)
    assert failed is not None and failed.attempts == 2 and failed.claims == 0
    lost = stored_task(repo, Status.RUNNING)
    gone = repo.apply(FAIL, lost, NOW, error=TaskError("worker_lost", "It died."))
    assert gone is not None and repo.get(lost.id).error == TaskError("worker_lost", "It died.")
    # a retry clears what the failed attempt left
    again = repo.apply(RETRY, gone, NOW, cap=CAP)
    assert again is not None and again.error is None and again.finished_at is None
    assert again.progress == {"rows": 0, "bytes": 0} and again.queued_at == NOW


def test_unknown_fields_and_a_slot_without_its_cap_are_refused(repo: TaskStore) -> None:
    task = stored_task(repo, Status.FAILED)
    with pytest.raises(ValueError):
        repo.apply(FAIL, task, NOW, owner="someone else")
    with pytest.raises(ValueError):
        repo.apply(RETRY, task, NOW)
    assert repo.get(task.id) == task


def test_a_missing_task_moves_nowhere(repo: TaskStore) -> None:
    ghost = new_task()
    assert repo.get(ghost.id) is None
    assert repo.apply(CANCEL_QUEUED, ghost, NOW) is None
    assert repo.heartbeat(replace(ghost, status=Status.RUNNING), {"rows": 1}, NOW) is None
    assert repo.delete(ghost) is False
    assert repo.get(ghost.id) is None and repo.active_count(ghost.owner) == 0


def test_a_move_into_the_active_states_needs_a_free_slot(repo: TaskStore) -> None:
    failed = stored_task(repo, Status.FAILED)
    for _ in range(CAP):
        stored_task(repo, Status.QUEUED)
    with pytest.raises(QuotaExceeded):
        repo.apply(RETRY, failed, NOW, cap=CAP)
    assert repo.get(failed.id) == failed and repo.active_count(failed.owner) == CAP
    with pytest.raises(QuotaExceeded):
        repo.add(new_task(), CAP)
    assert repo.active_count(failed.owner) == CAP
    # the cap is per owner
    other, created = repo.add(new_task("owner-2"), CAP)
    assert created and repo.active_count("owner-2") == 1


def test_the_counter_follows_every_way_in_and_out(repo: TaskStore) -> None:
    owner = "owner-3"
    tasks = [stored_task(repo, Status.QUEUED, owner) for _ in range(4)]
    assert repo.active_count(owner) == 4
    assert repo.apply(CANCEL_QUEUED, tasks[0], NOW) is not None
    assert repo.delete(tasks[1]) is True
    running = repo.apply(CLAIM, tasks[2], NOW)
    assert running is not None and repo.active_count(owner) == 2
    assert repo.apply(SUCCEED, running, NOW) is not None
    canceling = repo.apply(REQUEST_CANCEL, repo.apply(CLAIM, tasks[3], BEAT), BEAT)
    assert canceling is not None and repo.active_count(owner) == 1
    assert repo.apply(FAIL, canceling, NOW) is not None
    assert repo.active_count(owner) == 0
    # and nothing gives back a slot twice
    assert repo.apply(CANCEL_QUEUED, tasks[0], NOW) is None and repo.delete(tasks[1]) is False
    assert repo.active_count(owner) == 0


def test_a_claim_fences_the_build_before_it(repo: TaskStore) -> None:
    """After a second claim, every write of the first build is refused."""
    task = stored_task(repo, Status.QUEUED)
    first = repo.apply(CLAIM, task, NOW)
    assert first is not None and first.lease == task.lease + 1 and first.claims == 1
    # its build died; the task went back to the queue and another build claimed it
    later = NOW + timedelta(hours=2)
    requeued = repo.apply(REQUEUE, first, later)
    assert requeued is not None
    second = repo.apply(CLAIM, requeued, later)
    assert second is not None and second.lease == first.lease + 1 and second.claims == 2
    assert repo.heartbeat(first, {"rows": 1, "bytes": 1}, NOW) is None
    assert repo.apply(SUCCEED, first, NOW) is None
    assert repo.heartbeat(second, {"rows": 2, "bytes": 2}, NOW) is Status.RUNNING
    assert repo.apply(SUCCEED, second, NOW).status is Status.SUCCEEDED
    # and a claim from a stale read cannot reuse a lease
    assert repo.apply(CLAIM, task, NOW) is None


# -- heartbeats, the sweeper's due times, delete ---------------------------------------------
def test_a_heartbeat_records_progress_and_tells_the_build_the_status(repo: TaskStore) -> None:
    task = stored_task(repo, Status.RUNNING)
    assert repo.heartbeat(task, {"rows": 7, "bytes": 70}, NOW) is Status.RUNNING
    got = repo.get(task.id)
    assert got.progress == {"rows": 7, "bytes": 70} and got.heartbeat_at == NOW
    assert got.due_at == NOW + LIFE.stale_after
    assert repo.apply(REQUEST_CANCEL, got, NOW) is not None
    assert repo.heartbeat(task, {"rows": 8, "bytes": 80}, NOW) is Status.CANCELING
    queued = stored_task(repo, Status.QUEUED)
    assert repo.heartbeat(queued, {"rows": 1}, NOW) is None and repo.get(queued.id) == queued


def test_due_lists_what_the_sweeper_must_look_at_most_overdue_first(repo: TaskStore) -> None:
    queued = stored_task(repo, Status.QUEUED, at=NOW - timedelta(minutes=10))
    running = stored_task(repo, Status.RUNNING, at=NOW - timedelta(minutes=30))
    done = stored_task(repo, Status.SUCCEEDED, at=NOW - timedelta(minutes=20))
    fresh = stored_task(repo, Status.QUEUED, at=NOW)
    assert queued.due_at == queued.created_at + LIFE.resend_after
    assert running.due_at == running.created_at + LIFE.stale_after
    assert done.due_at == done.created_at + LIFE.event_grace
    assert list(repo.due(NOW)) == [running.id, done.id, queued.id]
    assert list(repo.due(NOW, limit=2)) == [running.id, done.id]
    assert list(repo.due(fresh.due_at)) == [running.id, done.id, queued.id, fresh.id]
    repo.event_sent(done)
    assert done.id not in list(repo.due(NOW)) and repo.get(done.id).due_at is None


def test_due_times_are_kept_in_whole_seconds(repo: TaskStore) -> None:
    at = NOW + timedelta(microseconds=700_000)
    task, _ = repo.add(new_task(at=at), CAP)
    got = repo.get(task.id)
    assert got.created_at == at and got.queued_at == at
    assert got.due_at == (at + LIFE.resend_after).replace(microsecond=0)
    assert got == replace(task, due_at=got.due_at)


def test_postpone_lets_one_of_two_sweepers_through(repo: TaskStore) -> None:
    task = stored_task(repo, Status.QUEUED)
    assert repo.postpone(task, NOW + timedelta(minutes=5)) is True
    assert repo.postpone(task, NOW + timedelta(minutes=9)) is False  # read the old due time
    assert repo.get(task.id).due_at == NOW + timedelta(minutes=5)
    claimed = repo.apply(CLAIM, repo.get(task.id), NOW)
    assert repo.postpone(replace(claimed, status=Status.QUEUED), NOW) is False
    repo.event_sent(replace(claimed, status=Status.SUCCEEDED))  # not its status: no change
    assert repo.get(task.id).due_at == claimed.due_at


def test_delete_takes_a_deletable_task_in_the_status_read(repo: TaskStore) -> None:
    queued = stored_task(repo, Status.QUEUED)
    running = stored_task(repo, Status.RUNNING)
    succeeded = stored_task(repo, Status.SUCCEEDED)
    assert repo.active_count(queued.owner) == 2
    assert repo.delete(running) is False and repo.get(running.id) == running
    assert repo.delete(replace(running, status=Status.SUCCEEDED)) is False  # it is not
    assert repo.delete(succeeded) is True and repo.get(succeeded.id) is None
    assert repo.delete(queued) is True and repo.get(queued.id) is None
    assert repo.active_count(queued.owner) == 1


# -- idempotency records -----------------------------------------------------------------------
def key(name: str = "k", body: str = "h1", ttl: timedelta = timedelta(hours=24)) -> IdempotencyRecord:
    return IdempotencyRecord("idem#owner-1#" + name, body, ttl)


def test_a_key_names_its_task_and_a_repeat_takes_no_slot(repo: TaskStore) -> None:
    first, created = repo.add(new_task(), CAP, key())
    assert created and repo.active_count("owner-1") == 1
    with pytest.raises(KeyExists) as again:
        repo.add(new_task(), CAP, key(body="h2"))
    assert again.value.body_hash == "h1" and again.value.task == repo.get(first.id)
    assert repo.active_count("owner-1") == 1
    # another key is another task
    assert repo.add(new_task(), CAP, key("other"))[1]


def test_a_live_key_wins_over_a_full_quota(repo: TaskStore) -> None:
    first, _ = repo.add(new_task(), CAP, key())
    for _ in range(CAP - 1):
        repo.add(new_task(), CAP)
    with pytest.raises(KeyExists) as again:
        repo.add(new_task(), CAP, key())
    assert again.value.task.id == first.id
    with pytest.raises(QuotaExceeded):
        repo.add(new_task(), CAP, key("fresh"))


def test_a_key_is_free_again_once_its_task_is_deleted_or_it_expired(repo: TaskStore) -> None:
    first, _ = repo.add(new_task(), CAP, key())
    assert repo.delete(repo.get(first.id))
    second, created = repo.add(new_task(), CAP, key(body="h2"))
    assert created and second.id != first.id
    with pytest.raises(KeyExists) as again:
        repo.add(new_task(), CAP, key())
    assert again.value.body_hash == "h2"
    short = key("short", ttl=timedelta(minutes=1))
    old, _ = repo.add(new_task(at=BEAT), CAP, short)
    newer, created = repo.add(new_task(at=BEAT + timedelta(minutes=1)), CAP, short)
    assert created and newer.id != old.id and repo.get(old.id) is not None


# -- listing ----------------------------------------------------------------------------------
START = datetime(2026, 11, 1, tzinfo=UTC)
#: the filters judge expiry when the files of tasks finished by then have expired
EXPIRED_UNTIL = START + timedelta(hours=5)


def listing_tasks(repo: TaskStore) -> list[Task]:
    """Twelve tasks an hour apart (oldest first) of two owners in two tenants."""
    specs = [
        ("alice", "acme", Status.SUCCEEDED, "demo", "Quarterly Report"),
        ("bob", "acme", Status.FAILED, "demo", "daily"),
        ("alice", "acme", Status.QUEUED, "dynamodb_table", "报表 Zoë"),
        ("carol", "globex", Status.SUCCEEDED, "demo", "REPORT q3"),
        ("alice", "acme", Status.CANCELED, "demo", "weekly"),
        ("alice", "acme", Status.RUNNING, "s3_bundle", "bundle"),
        ("carol", "globex", Status.QUEUED, "demo", "x"),
        ("bob", "acme", Status.SUCCEEDED, "dynamodb_table", "export report"),
        ("alice", "acme", Status.FAILED, "demo", "zoë"),
        ("alice", "acme", Status.SUCCEEDED, "demo", "late"),
        ("carol", "globex", Status.CANCELED, "log_archive", "logs"),
        ("alice", "acme", Status.QUEUED, "demo", "last"),
    ]
    out = []
    for n, (owner, tenant, status, kind, name) in enumerate(specs):
        at = START + timedelta(hours=n)
        out.append(stored_task(repo, status, owner, at, tenant=tenant, kind=kind, task_name=name,
                               file_name=f"{name}.CSV"))
    return out


def page(repo: TaskStore, index: str, partition: str, *, f: TaskFilter | None = None, limit: int = 50,
         low: str | None = None, high: str | None = None, start: Any = None,
         max_scanned: int = 500) -> Any:
    return repo.query(index, partition, id_low=low, id_high=high, filter_condition=f, limit=limit,
                      start_key=start, max_scanned=max_scanned)


def ids(tasks: list[Task]) -> list[str]:
    return [t.id for t in tasks]


def newest_first(tasks: list[Task]) -> list[str]:
    return sorted(ids(tasks), reverse=True)


def test_each_index_lists_its_partition_newest_first(repo: TaskStore) -> None:
    tasks = listing_tasks(repo)
    alice = [t for t in tasks if t.owner == "alice"]
    acme = [t for t in tasks if t.tenant == "acme"]
    got = page(repo, "by_owner", "alice")
    assert ids(got.tasks) == newest_first(alice) and got.last_key is None and got.scanned == len(alice)
    assert got.tasks[0] == repo.get(got.tasks[0].id)
    assert ids(page(repo, "by_tenant", "acme").tasks) == newest_first(acme)
    assert ids(page(repo, "by_scope", "all").tasks) == newest_first(tasks)
    assert page(repo, "by_owner", "nobody").tasks == []


def test_the_id_window_bounds_the_listing(repo: TaskStore) -> None:
    tasks = listing_tasks(repo)
    low, high = lowest_id_at(START + timedelta(hours=3)), highest_id_at(START + timedelta(hours=8))
    assert ids(page(repo, "by_scope", "all", low=low, high=high).tasks) == newest_first(tasks[3:9])
    assert ids(page(repo, "by_scope", "all", low=low).tasks) == newest_first(tasks[3:])
    assert ids(page(repo, "by_scope", "all", high=high).tasks) == newest_first(tasks[:9])


FILTERS: dict[str, tuple[dict[str, Any], Any]] = {
    "status": ({"statuses": frozenset({Status.FAILED, Status.QUEUED})},
               lambda t: t.status in (Status.FAILED, Status.QUEUED)),
    "succeeded, not expired": ({"statuses": frozenset({Status.SUCCEEDED})},
                               lambda t: t.status is Status.SUCCEEDED and t.created_at > EXPIRED_UNTIL),
    "expired": ({"statuses": frozenset({Status.EXPIRED})},
                lambda t: t.status is Status.SUCCEEDED and t.created_at <= EXPIRED_UNTIL),
    "both": ({"statuses": frozenset({Status.EXPIRED, Status.SUCCEEDED})},
             lambda t: t.status is Status.SUCCEEDED),
    "kind": ({"kind": "dynamodb_table"}, lambda t: t.kind == "dynamodb_table"),
    "task name, any case": ({"task_name": "RePoRt"}, lambda t: "report" in t.task_name.casefold()),
    "task name, unicode": ({"task_name": "ZOË"}, lambda t: "zoë" in t.task_name.casefold()),
    "file name": ({"file_name": "report.csv"}, lambda t: t.file_name.casefold().endswith("report.csv")),
    "tenant": ({"tenant": "globex"}, lambda t: t.tenant == "globex"),
    "all of them": ({"statuses": frozenset({Status.SUCCEEDED, Status.EXPIRED}), "kind": "demo",
                     "task_name": "report", "tenant": "acme"},
                    lambda t: t.status is Status.SUCCEEDED and t.kind == "demo"
                    and "report" in t.task_name.casefold() and t.tenant == "acme"),
    "none": ({}, lambda t: True),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_filters_keep_what_task_filter_matches(repo: TaskStore, name: str) -> None:
    criteria, expected = FILTERS[name]
    tasks = listing_tasks(repo)
    f = TaskFilter(at=EXPIRED_UNTIL + LIFE.file_ttl, **criteria)
    got = page(repo, "by_scope", "all", f=f).tasks
    want = [t for t in tasks if expected(t)]
    assert want, "the case must keep something"
    assert ids(got) == newest_first(want)
    assert all(f.matches(t) for t in got) and not any(f.matches(t) for t in tasks if t.id not in ids(got))


def test_cursors_page_through_everything_once(repo: TaskStore) -> None:
    tasks = listing_tasks(repo)
    seen: list[str] = []
    start = None
    pages = 0
    while True:
        got = page(repo, "by_scope", "all", limit=5, start=start)
        seen += ids(got.tasks)
        pages += 1
        assert got.scanned == len(got.tasks)
        if got.last_key is None:
            break
        assert got.last_key == {"id": {"S": got.tasks[-1].id}, "scope": {"S": "all"}}
        start = got.last_key
    assert seen == newest_first(tasks) and pages == 3
    # a page that ends exactly at the last item has no cursor
    assert page(repo, "by_scope", "all", limit=len(tasks)).last_key is None


def test_a_filtered_page_reads_at_most_max_scanned_and_says_where_it_stopped(repo: TaskStore) -> None:
    tasks = listing_tasks(repo)
    nothing = TaskFilter(at=NOW, kind="no such kind")
    got = page(repo, "by_scope", "all", f=nothing, limit=2, max_scanned=7)
    assert got.tasks == [] and got.scanned == 7
    seventh = newest_first(tasks)[6]
    assert got.last_key == {"id": {"S": seventh}, "scope": {"S": "all"}}
    rest = page(repo, "by_scope", "all", f=nothing, limit=2, max_scanned=7, start=got.last_key)
    assert rest.tasks == [] and rest.scanned == len(tasks) - 7 and rest.last_key is None
    # a selective filter fills the page from larger reads: limit, then twice as many, ...
    canceled = TaskFilter(at=NOW, statuses=frozenset({Status.CANCELED}))
    got = page(repo, "by_scope", "all", f=canceled, limit=2, max_scanned=20)
    want = newest_first([t for t in tasks if t.status is Status.CANCELED])
    # the third read took the rest: full, and nothing can follow
    assert ids(got.tasks) == want and got.scanned == 2 + 4 + 6 and got.last_key is None


def test_a_full_page_stops_at_its_last_item(repo: TaskStore) -> None:
    tasks = listing_tasks(repo)
    failed_or_queued = TaskFilter(at=NOW, statuses=frozenset({Status.FAILED, Status.QUEUED}))
    want = newest_first([t for t in tasks if failed_or_queued.matches(t)])
    first = page(repo, "by_scope", "all", f=failed_or_queued, limit=2)
    assert ids(first.tasks) == want[:2]
    assert first.last_key == {"id": {"S": want[1]}, "scope": {"S": "all"}}
    second = page(repo, "by_scope", "all", f=failed_or_queued, limit=2, start=first.last_key)
    assert ids(second.tasks) == want[2:4]


# -- rename -------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [Status.QUEUED, Status.RUNNING, Status.SUCCEEDED, Status.CANCELED])
def test_rename_sets_the_name_the_filter_reads_and_nothing_else(repo: TaskStore, status: Status) -> None:
    task = stored_task(repo, status, task_name="Quarterly Report")
    renamed = repo.rename(task.id, "年度 SUMMARY")
    assert renamed is not None and renamed.task_name == "年度 SUMMARY"
    assert repo.get(task.id) == renamed
    assert replace(renamed, task_name=task.task_name) == task  # status, lease, quota fields untouched
    found = page(repo, "by_scope", "all", f=TaskFilter(at=NOW, task_name="summary"), limit=10)
    assert ids(found.tasks) == [task.id]
    gone = page(repo, "by_scope", "all", f=TaskFilter(at=NOW, task_name="quarterly"), limit=10)
    assert gone.tasks == []


def test_rename_of_a_task_that_is_gone_is_none_and_creates_nothing(repo: TaskStore) -> None:
    task = new_task()
    assert repo.rename(task.id, "ghost") is None
    assert repo.get(task.id) is None


# -- notifications ------------------------------------------------------------------------
#: how long a claim on a notification holds before a later delivery may take it over
LEASE = timedelta(seconds=60)


def test_a_notification_is_claimed_once_per_key(repo: TaskStore) -> None:
    task = stored_task(repo, Status.SUCCEEDED, notify_email="alice@example.com")
    assert repo.get(task.id).notify_email == "alice@example.com"
    assert repo.claim_notification(task.id, "1:succeeded", NOW, LEASE) == "claimed"
    assert repo.claim_notification(task.id, "1:succeeded", NOW, LEASE) == "sending"  # the event again
    repo.notification_sent(task.id, "1:succeeded")
    assert repo.claim_notification(task.id, "1:succeeded", NOW, LEASE) == "sent"
    assert repo.claim_notification(task.id, "1:succeeded", NOW + 10 * LEASE, LEASE) == "sent"  # for good
    assert repo.claim_notification(task.id, "2:succeeded", NOW, LEASE) == "claimed"  # a retry's own end
    assert repo.get(task.id) == task  # the ledger is no part of the task


def test_a_released_notification_can_be_claimed_again(repo: TaskStore) -> None:
    task = stored_task(repo, Status.FAILED)
    assert repo.claim_notification(task.id, "1:failed", NOW, LEASE) == "claimed"
    repo.release_notification(task.id, "1:failed", NOW)
    assert repo.claim_notification(task.id, "1:failed", NOW, LEASE) == "claimed"


def test_a_claim_whose_holder_died_is_taken_over_once_stale(repo: TaskStore) -> None:
    """The claimant died between its claim and SES: the mail is not lost, a later delivery sends it."""
    task = stored_task(repo, Status.SUCCEEDED, notify_email="alice@example.com")
    assert repo.claim_notification(task.id, "1:succeeded", NOW, LEASE) == "claimed"
    assert repo.claim_notification(task.id, "1:succeeded", NOW + LEASE, LEASE) == "sending"  # still its own
    later = NOW + LEASE + timedelta(seconds=1)
    assert repo.claim_notification(task.id, "1:succeeded", later, LEASE) == "claimed"  # taken over
    assert repo.claim_notification(task.id, "1:succeeded", later, LEASE) == "sending"  # by one delivery
    repo.release_notification(task.id, "1:succeeded", NOW)  # the first holder's late give-back
    assert repo.claim_notification(task.id, "1:succeeded", later, LEASE) == "sending"  # the new claim holds
    repo.notification_sent(task.id, "1:succeeded")
    assert repo.claim_notification(task.id, "1:succeeded", later + LEASE * 2, LEASE) == "sent"
    assert repo.get(task.id) == task


def test_no_notification_is_claimed_for_a_task_that_is_gone(repo: TaskStore) -> None:
    task = new_task()
    assert repo.claim_notification(task.id, "1:succeeded", NOW, LEASE) == "gone"
    repo.release_notification(task.id, "1:succeeded", NOW)  # nothing to forget: no error
    repo.notification_sent(task.id, "1:succeeded")  # nor to record, and nothing is created
    assert repo.get(task.id) is None


# -- segments: the plan and its segments' moves, on both repositories --------------------------
def planned(repo: TaskStore, count: int = 3, at: datetime = BEAT) -> Task:
    from chalicelib.segments import Plan, Segment

    running = stored_task(repo, Status.RUNNING, at=at)
    plan = Plan(tuple(Segment(n, {"first": n, "last": n}) for n in range(1, count + 1)),
                shared={"columns": ["id"]}, total_rows=count)
    task = repo.save_plan(running, plan, at)
    assert task is not None and task.plan_lease == running.lease
    return task


def test_a_plan_is_saved_only_under_the_builds_lease(repo: TaskStore) -> None:
    from chalicelib.segments import Plan, Segment

    running = stored_task(repo, Status.RUNNING)
    plan = Plan((Segment(1, {"a": 1}),), {"k": "v"}, 1)
    assert repo.save_plan(replace(running, lease=running.lease + 1), plan, NOW) is None
    saved = repo.save_plan(running, plan, NOW)
    assert saved is not None and saved.segments == (Segment(1, {"a": 1}),)
    assert saved.plan_shared == {"k": "v"} and saved.plan_rows == 1 and saved.segments_done == 0


def test_a_segment_is_claimed_once_and_taken_over_only_when_stale(repo: TaskStore) -> None:
    from chalicelib.segments import SegStatus

    task = planned(repo, at=NOW)
    first = repo.claim_segment(task, 2, NOW)
    assert first is not None and first.status is SegStatus.RUNNING and first.lease == 1
    assert repo.claim_segment(task, 2, NOW + timedelta(seconds=10)) is None  # alive: a duplicate
    later = NOW + LIFE.stale_after + timedelta(seconds=2)
    second = repo.claim_segment(task, 2, later)  # its worker stopped beating: taken over
    assert second is not None and second.lease == 2 and second.claims == 2
    # the first build's writes are refused now: its lease is gone
    assert repo.beat_segment(task, first, 5, 5, later) is None
    assert repo.finish_segment(task, first, later, rows=1, size=1) is None
    assert repo.beat_segment(task, second, 5, 50, later) is Status.RUNNING
    stored = repo.get(task.id)
    assert stored.segments[1].rows == 5 and stored.segments[1].bytes == 50
    assert stored.current_progress()["segments"] == {"total": 3, "succeeded": 0, "running": 1,
                                                     "failed": 0}


def test_finishing_counts_each_segment_once_and_names_one_finalizer(repo: TaskStore) -> None:
    task = planned(repo, at=NOW)
    segs = [repo.claim_segment(task, n, NOW) for n in (1, 2, 3)]
    dones = [repo.finish_segment(task, s, NOW, rows=1, size=10, key=f"k{s.number}") for s in segs]
    assert [d.segments_done for d in dones] == [1, 2, 3]  # only the last sees the total
    assert repo.finish_segment(task, segs[0], NOW, rows=1, size=10) is None  # twice: refused
    assert repo.get(task.id).segments_done == 3


def test_segment_moves_need_the_task_running_under_the_plan(repo: TaskStore) -> None:
    from chalicelib.task import REQUEST_CANCEL

    task = planned(repo, at=NOW)
    seg = repo.claim_segment(task, 1, NOW)
    canceling = repo.apply(REQUEST_CANCEL, task, NOW)
    assert canceling is not None
    assert repo.beat_segment(task, seg, 1, 1, NOW) is Status.CANCELING  # the beat learns the cancel
    assert repo.finish_segment(task, seg, NOW, rows=1, size=1) is None
    assert repo.claim_segment(task, 2, NOW) is None


def test_a_failed_segment_goes_back_to_the_queue_or_fails(repo: TaskStore) -> None:
    from chalicelib.segments import SegStatus

    task = planned(repo, at=NOW)
    seg = repo.claim_segment(task, 1, NOW)
    error = TaskError("source_throttled", "slow down")
    again = repo.fail_segment(task, seg, error, True, NOW)
    assert again.segments[0].status is SegStatus.QUEUED and again.segments[0].tries == 1
    assert again.segments[0].error == error.to_dict()
    seg = repo.claim_segment(task, 1, NOW)
    failed = repo.fail_segment(task, seg, error, False, NOW)
    assert failed.segments[0].status is SegStatus.FAILED and failed.segments[0].tries == 2
    assert repo.fail_segment(task, seg, error, False, NOW) is None  # not running any more


# -- building slots: a tenant's segments building at once ---------------------------------
SOON = NOW + timedelta(minutes=15)


def test_building_slots_bound_a_tenant_and_come_back_on_release(repo: TaskStore) -> None:
    assert repo.take_building_slot("acme", "a", NOW, SOON, 2)
    assert repo.take_building_slot("acme", "b", NOW, SOON, 2)
    assert not repo.take_building_slot("acme", "c", NOW, SOON, 2)  # the bound: refused, nothing kept
    assert repo.take_building_slot("globex", "c", NOW, SOON, 2)  # another tenant's are its own
    repo.release_building_slot("acme", "a")
    repo.release_building_slot("acme", "a")  # twice, or for a holder that has none: nothing
    repo.release_building_slot("initech", "z")
    assert repo.take_building_slot("acme", "c", NOW, SOON, 2)
    assert not repo.take_building_slot("acme", "d", NOW, SOON, 2)


def test_a_slot_whose_holder_died_frees_itself_at_its_deadline(repo: TaskStore) -> None:
    assert repo.take_building_slot("acme", "dead", NOW, NOW + timedelta(seconds=60), 1)
    assert not repo.take_building_slot("acme", "next", NOW + timedelta(seconds=59), SOON, 1)
    assert repo.take_building_slot("acme", "next", NOW + timedelta(seconds=61), SOON, 1)
    assert not repo.take_building_slot("acme", "third", NOW + timedelta(seconds=62), SOON, 1)


def test_concurrent_claims_never_take_more_slots_than_the_bound(repo: TaskStore) -> None:
    import threading

    cap, results = 3, []
    lock, start = threading.Lock(), threading.Barrier(8)

    def take(n: int) -> None:
        start.wait()
        took = repo.take_building_slot("acme", f"h{n}", NOW, SOON, cap)
        with lock:
            results.append(took)

    threads = [threading.Thread(target=take, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    granted = sum(results)
    assert 1 <= granted <= cap
    # what is stored is exactly what was granted: one more fits only under a bound above it
    assert not repo.take_building_slot("acme", "probe", NOW, SOON, granted)
    assert repo.take_building_slot("acme", "probe", NOW, SOON, granted + 1)
