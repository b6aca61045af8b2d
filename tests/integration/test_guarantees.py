"""Promises that must hold under concurrency and failure, each reproduced against moto.

Quota under parallel creates, one build an invocation, the sweeper's repairs
of dead builds and lost messages, fencing between a build and its takeover,
errors after a claim, heartbeats during silent reads, and the create path
when the queue is down.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace

import boto3
import pytest

from chalicelib.adapters.tasks_repo import TaskModel, TaskRepository
from chalicelib.clock import now
from chalicelib.errors import ExportError
from chalicelib.exporters import REGISTRY, RowExporter, register
from chalicelib.principal import Principal
from chalicelib.services import Downloads
from chalicelib.sweeper import Sweeper
from chalicelib.task import Status
from chalicelib.validation import parse_create

from .conftest import SETTINGS, claim, fast_worker

BUCKET = SETTINGS.files_bucket


def objects(prefix: str = "downloads/") -> list[str]:
    got = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for o in got.get("Contents", [])]


def open_uploads() -> list[str]:
    return [u["Key"] for u in boto3.client("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]


def principal_of(stack, user: str = "alice") -> Principal:
    u = stack.users[user]
    return Principal(u.sub, u.username, u.tenant)


def age_heartbeat(task_id: str, seconds: float) -> None:
    """What a build that died that long ago leaves: its last beat, and the sweeper's due time."""
    last = now() - timedelta(seconds=seconds)
    due = last + timedelta(seconds=SETTINGS.stale_after_seconds)
    TaskModel(task_id).update(actions=[TaskModel.heartbeat_at.set(last),
                                       TaskModel.due_at.set(int(due.timestamp()))])


def build_ids(stack) -> list[str]:
    return [json.loads(r["body"])["task_id"] for r in stack.drain()]


# -- 1. the quota is exact under concurrency ----------------------------------------------
def test_parallel_creates_accept_exactly_the_cap_and_the_counter_returns_to_zero(stack):
    downloads = Downloads(replace(SETTINGS, max_active_tasks=20))
    alice = principal_of(stack)
    body = {"task_name": "并发", "kind": "demo", "params": {"rows": 5}}
    barrier = threading.Barrier(40)

    def create(_: int) -> str:
        barrier.wait()
        try:
            return downloads.create(alice, parse_create(body), body, None)[0]["id"]
        except Exception as exc:  # noqa: BLE001 - the refusals are what we count
            return getattr(exc, "code", repr(exc))

    with ThreadPoolExecutor(40) as pool:
        results = list(pool.map(create, range(40)))
    accepted = [r for r in results if len(r) == 26]
    assert len(accepted) == 20, results
    assert sorted(set(results) - set(accepted)) == ["too_many_active_tasks"]
    repo = TaskRepository()
    assert repo.active_count(alice.sub) == 20
    stack.run_worker()
    assert {repo.get(i).status for i in accepted} == {Status.SUCCEEDED}
    assert repo.active_count(alice.sub) == 0


def test_every_way_out_of_the_active_states_gives_the_slot_back(stack):
    repo = TaskRepository()
    sub = stack.users["alice"].sub
    canceled, deleted, failed, built = (stack.create()["id"] for _ in range(4))
    stack.drain()
    assert repo.active_count(sub) == 4
    stack.client.http.post(f"/downloads/{canceled}/cancel", headers=stack.users["alice"].headers)
    stack.client.http.delete(f"/downloads/{deleted}", headers=stack.users["alice"].headers)
    assert repo.active_count(sub) == 2
    claim(failed)
    age_heartbeat(failed, SETTINGS.stale_after_seconds + 1)
    Sweeper(replace(SETTINGS, max_build_claims=1)).sweep()  # its only build died: worker_lost
    assert repo.get(failed).error.code == "worker_lost"
    fast_worker().build(built)
    assert repo.active_count(sub) == 0
    # and a retry takes one again
    stack.client.http.post(f"/downloads/{failed}/retry", headers=stack.users["alice"].headers)
    assert repo.active_count(sub) == 1


def test_a_reused_key_after_delete_is_held_to_the_quota(stack):
    downloads = Downloads(replace(SETTINGS, max_active_tasks=3))
    alice = principal_of(stack)
    body = {"task_name": "t", "kind": "demo"}
    first, _ = downloads.create(alice, parse_create(body), body, "key-1")
    downloads.delete(alice, first["id"])
    for _ in range(3):
        downloads.create(alice, parse_create(body), body, None)
    with pytest.raises(Exception) as refused:
        downloads.create(alice, parse_create(body), body, "key-1")
    assert getattr(refused.value, "code", None) == "too_many_active_tasks"
    assert TaskRepository().active_count(alice.sub) == 3


# -- 2. every build starts with a whole invocation's budget --------------------------------
def test_queued_builds_each_get_a_whole_invocation_with_a_short_timeout(stack):
    """The local poller consumes the queue with the app's batch size, as Lambda would."""
    import app as app_module
    from local.poller import SqsPoller
    from local.stack import sqs_batch_size

    ids = [stack.create(params={"rows": 150_000})["id"] for _ in range(3)]
    worker = fast_worker(time_budget_margin_seconds=1, progress_interval_seconds=0.2)
    elapsed = []

    def handler(event, context):
        started = time.monotonic()
        try:
            return worker.handle_batch(event["Records"], context.get_remaining_time_in_millis)
        finally:
            elapsed.append(time.monotonic() - started)

    # a function timeout that fits one of these builds, not three: measured here, with room
    # for a build that runs slower than the measured one on a loaded machine (make test runs
    # other modules' stacks beside this one)
    t0 = time.monotonic()
    worker.build(stack.create(params={"rows": 150_000})["id"])
    one_build = time.monotonic() - t0
    timeout = max(3, int(one_build * 2.5) + 2)
    arn = boto3.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    poller = SqsPoller(sqs_client=boto3.client("sqs"), handler=handler, queue_url=stack.queue_url,
                       queue_arn=arn, region="us-east-1", function_name="build_worker",
                       timeout_seconds=timeout, memory_size=1024,
                       batch_size=sqs_batch_size(app_module.app, "build_worker"), wait_seconds=0)
    assert poller._batch_size == 1
    repo = TaskRepository()
    deadline = time.monotonic() + 120
    while any(repo.get(i).status is not Status.SUCCEEDED for i in ids):
        assert time.monotonic() < deadline, [repo.get(i).error for i in ids]
        messages = boto3.client("sqs").receive_message(
            QueueUrl=stack.queue_url, MaxNumberOfMessages=poller._batch_size).get("Messages", [])
        if messages:
            poller.dispatch(messages)
    assert {repo.get(i).status for i in ids} == {Status.SUCCEEDED}
    assert all(e < timeout for e in elapsed)


# -- 3. the sweeper reaps dead builds and lost messages ------------------------------------
def test_a_build_that_died_is_requeued_then_built_by_another_worker(stack):
    task_id = stack.create(params={"rows": 100})["id"]
    stack.drain()  # its message is in flight with the dead Lambda
    claim(task_id)
    sweeper = Sweeper(SETTINGS)
    assert sweeper.sweep()["requeued"] == 0  # alive as far as anyone knows
    age_heartbeat(task_id, SETTINGS.stale_after_seconds + 1)
    # found within one sweep of going stale
    assert sweeper.sweep(now() + timedelta(seconds=1))["requeued"] == 1
    task = TaskRepository().get(task_id)
    assert task.status is Status.QUEUED and task.progress == {"rows": 0, "bytes": 0}
    assert build_ids(stack) == [task_id]  # a new message for the next worker
    done = fast_worker().build(task_id)
    assert done.status is Status.SUCCEEDED and done.lease == 2
    assert objects() == [done.object_key] and open_uploads() == []
    assert [e["detail-type"] for e in stack.events()] == ["download.succeeded"]


def test_builds_that_keep_dying_fail_worker_lost(stack):
    task_id = stack.create()["id"]
    stack.drain()
    sweeper = Sweeper(replace(SETTINGS, max_build_claims=2))
    for _ in range(2):
        claim(task_id)
        age_heartbeat(task_id, SETTINGS.stale_after_seconds + 1)
        sweeper.sweep()
    task = TaskRepository().get(task_id)
    assert task.status is Status.FAILED and task.error.code == "worker_lost"
    assert [e["detail-type"] for e in stack.events()] == ["download.failed"]
    assert task.finished_at is not None


def test_a_cancel_whose_build_died_is_finished_by_the_sweeper(stack):
    task_id = stack.create()["id"]
    stack.drain()
    claim(task_id)
    resp = stack.client.http.post(f"/downloads/{task_id}/cancel", headers=stack.users["alice"].headers)
    assert resp.json_body["status"] == "canceling"
    age_heartbeat(task_id, SETTINGS.stale_after_seconds + 1)
    assert Sweeper(SETTINGS).sweep()["canceled"] == 1
    assert stack.get(task_id)["status"] == "canceled"
    assert stack.client.http.delete(f"/downloads/{task_id}",
                                    headers=stack.users["alice"].headers).status_code == 204
    assert TaskRepository().active_count(stack.users["alice"].sub) == 0


def test_a_cancel_of_a_build_already_dead_cancels_at_once(stack):
    task_id = stack.create()["id"]
    stack.drain()
    claim(task_id)
    age_heartbeat(task_id, SETTINGS.stale_after_seconds + 1)
    resp = stack.client.http.post(f"/downloads/{task_id}/cancel", headers=stack.users["alice"].headers)
    assert resp.status_code == 202 and resp.json_body["status"] == "canceled"
    assert [e["detail-type"] for e in stack.events()] == ["download.canceled"]


def test_a_lost_build_message_is_sent_again_with_backoff(stack):
    task_id = stack.create()["id"]
    assert build_ids(stack) == [task_id]  # ... and then the message is lost
    sweeper = Sweeper(SETTINGS)
    resend = timedelta(seconds=SETTINGS.resend_after_seconds)
    assert sweeper.sweep()["resent"] == 0  # not yet overdue
    assert sweeper.sweep(now() + resend + timedelta(seconds=1))["resent"] == 1
    assert build_ids(stack) == [task_id]
    assert sweeper.sweep(now() + resend + timedelta(seconds=2))["resent"] == 0  # backs off
    fast_worker().build(task_id)
    assert stack.get(task_id)["status"] == "succeeded"


def test_a_task_that_never_starts_fails_not_started(stack):
    task_id = stack.create()["id"]
    stack.drain()
    later = now() + timedelta(hours=SETTINGS.queued_expiry_hours, seconds=1)
    assert Sweeper(SETTINGS).sweep(later)["failed_not_started"] == 1
    task = TaskRepository().get(task_id)
    assert task.status is Status.FAILED and task.error.code == "not_started"
    assert TaskRepository().active_count(task.owner) == 0


def test_an_event_that_did_not_go_out_is_published_once_by_the_sweeper(stack, monkeypatch):
    from chalicelib.adapters import events

    task_id = stack.create()["id"]
    stack.drain()
    real = events.publish
    monkeypatch.setattr(events, "publish", lambda *a, **k: (_ for _ in ()).throw(OSError("down")))
    fast_worker().build(task_id)
    assert stack.events() == []
    monkeypatch.setattr(events, "publish", real)
    sweeper = Sweeper(SETTINGS)
    assert sweeper.sweep()["event_published"] == 0  # within the grace period: the worker's turn
    later = now() + timedelta(minutes=5)
    assert sweeper.sweep(later)["event_published"] == 1
    assert sweeper.sweep(later + timedelta(minutes=5))["event_published"] == 0
    assert [e["detail-type"] for e in stack.events()] == ["download.succeeded"]


def test_an_upload_left_by_a_dead_build_is_aborted(stack):
    s3 = boto3.client("s3")
    task_id = stack.create()["id"]
    stack.drain()
    live = claim(task_id)
    s3.create_multipart_upload(Bucket=BUCKET, Key=f"downloads/acme/{task_id}/{live.lease}/f.csv")
    s3.create_multipart_upload(Bucket=BUCKET, Key=f"downloads/acme/{task_id}/{live.lease - 1}/f.csv")
    s3.create_multipart_upload(Bucket=BUCKET, Key="downloads/acme/01JDQ4V8Z8S9Y6K1E6J3X2M7TQ/1/x.csv")
    assert Sweeper(SETTINGS).sweep()["uploads_aborted"] == 2
    assert open_uploads() == [f"downloads/acme/{task_id}/{live.lease}/f.csv"]


# -- 4. fencing: a superseded build never overwrites or deletes the winner's work ------------
class Slow(RowExporter):
    """Rows at a pace the test controls: the first build pauses until released."""

    kind = "test_slow"
    title = "slow"
    params_schema = {"type": "object"}
    gate = threading.Event()

    def open(self, params, ctx):
        def rows():
            for i in range(2000):
                if i == 1000 and params.get("pause"):
                    self.gate.wait(30)
                yield {"n": i}
        return ["n"], rows()


@pytest.fixture
def slow():
    Slow.gate = threading.Event()
    register(Slow())
    yield Slow
    Slow.gate.set()
    REGISTRY.pop("test_slow")


def test_a_build_taken_over_while_alive_cannot_touch_the_winner(stack, slow):
    task_id = stack.create(kind="test_slow", params={"pause": True})["id"]
    stack.drain()
    first = fast_worker(progress_interval_seconds=0.2)
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.update(done=first.build(task_id)))
    thread.start()
    repo = TaskRepository()
    deadline = time.monotonic() + 20
    while repo.get(task_id).status is not Status.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # the first build looks dead to the sweeper (a network partition, a long GC pause...)
    Sweeper(SETTINGS).sweep(now() + timedelta(seconds=SETTINGS.stale_after_seconds + 60))
    assert repo.get(task_id).status is Status.QUEUED
    # a second worker builds it (without pausing, the gate is for the first)
    TaskModel(task_id).update(actions=[TaskModel.params.set({})])
    winner = fast_worker().build(task_id)
    assert winner.status is Status.SUCCEEDED
    slow.gate.set()
    thread.join(30)
    assert result["done"] is None  # it learned it lost its lease and stopped
    final = repo.get(task_id)
    assert final.status is Status.SUCCEEDED and final.lease == winner.lease == 2
    assert final.progress == winner.progress  # no late beat moved it backwards
    assert objects() == [winner.object_key] and open_uploads() == []
    head = boto3.client("s3").head_object(Bucket=BUCKET, Key=final.object_key)
    assert head["ContentLength"] == final.size


# -- 5. every error after a claim ends the task with a code --------------------------------
class BrokenTotal(RowExporter):
    kind = "test_broken_total"
    title = "total_rows raises"
    params_schema = {"type": "object"}

    def total_rows(self, params):
        raise ExportError("source_unavailable", "The source could not be counted.")

    def open(self, params, ctx):
        return ["a"], iter([{"a": 1}])


class BrokenOutput(BrokenTotal):
    """Names its file fine at create, then fails to when the build asks again."""

    kind = "test_broken_output"
    armed = False

    def total_rows(self, params):
        return None

    def output(self, params, fmt):
        if params.get("boom") and BrokenOutput.armed:
            raise KeyError("no such format after all")
        BrokenOutput.armed = True
        return super().output(params, fmt)


@pytest.fixture
def broken():
    BrokenOutput.armed = False
    for exporter in (BrokenTotal(), BrokenOutput()):
        register(exporter)
    yield
    for kind in ("test_broken_total", "test_broken_output"):
        REGISTRY.pop(kind)


@pytest.mark.parametrize("kind,params,code", [
    ("test_broken_total", {}, "source_unavailable"),
    ("test_broken_output", {"boom": True}, "internal_error"),
])
def test_an_error_between_the_claim_and_the_stream_fails_the_task(stack, broken, kind, params, code):
    task_id = stack.create(kind=kind, params=params)["id"]
    stack.run_worker()
    task = stack.get(task_id)
    assert task["status"] == "failed" and task["error"]["code"] == code
    assert TaskRepository().active_count(stack.users["alice"].sub) == 0


# -- 6. a build that reads without yielding bytes is still alive ---------------------------
class Silent(RowExporter):
    kind = "test_silent"
    title = "reads a long time before its first row"
    params_schema = {"type": "object"}

    def open(self, params, ctx):
        def rows():
            time.sleep(2.0)  # a selective scan: minutes in real life
            yield {"a": 1}
        return ["a"], rows()


def test_heartbeats_go_on_while_the_exporter_is_silent(stack):
    register(Silent())
    try:
        task_id = stack.create(kind="test_silent")["id"]
        stack.drain()
        worker = fast_worker(progress_interval_seconds=0.2)
        beats = []
        thread = threading.Thread(target=worker.build, args=(task_id,))
        thread.start()
        while thread.is_alive():
            hb = TaskRepository().get(task_id).heartbeat_at
            if hb is not None:
                beats.append(hb)
            time.sleep(0.1)
        assert len(set(beats)) >= 5, beats  # beating all through the silence
        assert stack.get(task_id)["status"] == "succeeded"
    finally:
        REGISTRY.pop("test_silent")


# -- 7. the create path when the queue is down, and its replay ---------------------------
def test_a_create_the_queue_refused_is_failed_and_its_replay_queues_it_again(stack):
    sqs = boto3.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])["Attributes"]
    sqs.delete_queue(QueueUrl=stack.queue_url)
    body = json.dumps({"task_name": "t", "kind": "demo"})
    headers = {**stack.users["alice"].headers, "Idempotency-Key": "try-1"}
    resp = stack.client.http.post("/downloads", headers=headers, body=body)
    assert resp.status_code == 503 and resp.json_body["error"]["code"] == "unavailable"
    (listed,) = stack.client.http.get("/downloads", headers=stack.users["alice"].headers).json_body["items"]
    failed = TaskRepository().get(listed["id"])
    assert failed.status is Status.FAILED and failed.error.code == "enqueue_failed"
    assert failed.finished_at is not None
    assert TaskModel.get(failed.id).ttl is not None  # kept no longer than any finished task
    assert [e["detail-type"] for e in stack.events()] == ["download.failed"]
    assert TaskRepository().active_count(failed.owner) == 0
    # the queue is back: the same request again queues that task
    sqs.create_queue(QueueName=stack.queue_url.rsplit("/", 1)[1], Attributes={
        k: v for k, v in attributes.items() if k in ("VisibilityTimeout", "RedrivePolicy")})
    again = stack.client.http.post("/downloads", headers=headers, body=body)
    assert again.status_code == 202 and again.json_body["id"] == failed.id
    assert again.json_body["status"] == "queued" and again.headers["Idempotent-Replayed"] == "true"
    assert build_ids(stack) == [failed.id]
    fast_worker().build(failed.id)
    assert stack.get(failed.id)["status"] == "succeeded"


def test_concurrent_first_uses_of_a_key_give_the_loser_the_replay(stack):
    """Real DynamoDB cancels one of two racing transactions with TransactionConflict.

    moto serialises them instead, so the race is staged: just before the first
    TransactWriteItems is sent, the other request's create runs to the end,
    and the first is answered the way DynamoDB answers the loser.
    """
    from chalicelib.adapters.tasks_repo import TaskModel as Model

    downloads = Downloads(SETTINGS)
    alice = principal_of(stack)
    body = {"task_name": "t", "kind": "demo"}
    events = Model._get_connection().connection.client.meta.events
    state = {"staged": False}

    def conflict(**kwargs):
        if state["staged"]:
            return None
        state["staged"] = True
        state["winner"] = downloads.create(alice, parse_create(body), body, "same")[0]["id"]
        error = {"Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                 "CancellationReasons": [{"Code": "TransactionConflict"}, {"Code": "None"},
                                         {"Code": "None"}],
                 "ResponseMetadata": {"HTTPStatusCode": 400}}
        return SimpleNamespace(status_code=400, headers={}), error

    events.register_first("before-call.dynamodb.TransactWriteItems", conflict)
    try:
        loser, is_new = downloads.create(alice, parse_create(body), body, "same")
    finally:
        events.unregister("before-call.dynamodb.TransactWriteItems", conflict)
    assert not is_new and loser["id"] == state["winner"]
