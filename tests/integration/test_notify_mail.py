""""Your export is ready" mail: opt-in per task, sent once per terminal state through SES (moto),
driven by the EventBridge event the task's ending published, never changing the task."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses import ses_backends

import app as app_module
from chalicelib import clock
from chalicelib.adapters.tasks_repo import TaskRepository
from chalicelib.notifier import Notifier
from local.events import as_delivered
from tests.integration.conftest import Stack

SENDER = "exports@example.com"


@pytest.fixture
def mail(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """A deployment that sends mail: a verified sender; returns moto's record of sent mail."""
    settings = replace(app_module.settings, mail_sender=SENDER, console_url="https://console.example/api/")
    monkeypatch.setattr(app_module, "settings", settings)
    monkeypatch.setattr(app_module.downloads, "settings", settings)
    boto3.client("ses").verify_email_identity(EmailAddress=SENDER)
    return ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages


def deliver(event: dict[str, Any]) -> None:
    """EventBridge invoking the notifier with one event (as captured from the bus by a queue)."""
    app_module.notifier(as_delivered(event, DEFAULT_ACCOUNT_ID), None)


def failing_task(stack: Stack) -> dict[str, Any]:
    """A table export whose table is there at create and gone when the build reads it."""
    ddb = boto3.client("dynamodb")
    ddb.create_table(TableName="demo-users", BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    task = stack.create(kind="dynamodb_table", params={"table": "demo-users"}, notify={"email": True})
    ddb.delete_table(TableName="demo-users")
    return task


def ended(stack: Stack, **body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Create a task, build it, and return it with the events its ending published."""
    task = stack.create(**body)
    stack.run_worker()
    events = [e for e in stack.events() if e["detail"]["id"] == task["id"]]
    return task, events


def test_a_task_that_asked_mails_its_owner_once_however_often_the_event_comes(
    stack: Stack, mail: list[Any],
) -> None:
    task, events = ended(stack, task_name="Quarterly 报表", notify={"email": True})
    assert task["notify"] == {"email": True}
    (event,) = events
    assert event["detail-type"] == "download.succeeded"
    deliver(event)
    deliver(event)  # EventBridge delivers at least once
    (sent,) = mail
    assert sent.destinations["ToAddresses"] == ["alice@acme.example"]
    assert sent.source == SENDER
    assert sent.subject == 'Your export "Quarterly 报表" is ready'
    assert "https://console.example/api/" in sent.body
    built = stack.client.http.get(f"/downloads/{task['id']}", headers=stack.users["alice"].headers).json_body
    assert built["sha256"] in sent.body and built["file_name"] in sent.body
    # the console, never the file: no presigned URL (nor any bucket address) in the mail
    assert built["url"] and built["url"].split("?")[0] not in sent.body
    assert "X-Amz-" not in sent.body and "Signature" not in sent.body


def test_a_failed_task_mails_the_reason(stack: Stack, mail: list[Any]) -> None:
    task = failing_task(stack)
    stack.run_worker()
    (event,) = [e for e in stack.events() if e["detail"]["id"] == task["id"]]
    assert event["detail-type"] == "download.failed"
    deliver(event)
    (sent,) = mail
    assert sent.subject.endswith("failed")
    assert event["detail"]["error"]["code"] in sent.body
    assert event["detail"]["error"]["message"] in sent.body


def test_no_mail_unless_asked(stack: Stack, mail: list[Any]) -> None:
    task, events = ended(stack)
    assert task["notify"] == {"email": False}
    for event in events:
        deliver(event)
    assert mail == []


def test_a_retried_task_mails_each_ending(stack: Stack, mail: list[Any]) -> None:
    task = failing_task(stack)
    stack.run_worker()
    failed = [e for e in stack.events() if e["detail"]["id"] == task["id"]]
    resp = stack.client.http.post(f"/downloads/{task['id']}/retry", headers=stack.users["alice"].headers)
    assert resp.status_code == 202
    stack.run_worker()
    again = [e for e in stack.events() if e["detail"]["id"] == task["id"]]
    for event in failed + again + failed:  # the first ending's event, late, once more
        deliver(event)
    assert [m.subject.rsplit(" ", 1)[1] for m in mail] == ["failed", "failed"]  # attempt 1 and 2


def test_a_mail_that_cannot_be_sent_changes_nothing_and_is_sent_on_the_retry(
    stack: Stack, mail: list[Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    task, (event,) = ended(stack, notify={"email": True})
    before = TaskRepository().get(task["id"])
    unverified = replace(app_module.settings, mail_sender="nobody@unverified.example")
    monkeypatch.setattr(app_module, "settings", unverified)
    with pytest.raises(Exception, match="not verified|MessageRejected"):
        deliver(event)  # Lambda reports the failure: EventBridge retries the event
    assert TaskRepository().get(task["id"]) == before
    assert mail == []
    monkeypatch.setattr(app_module, "settings", replace(unverified, mail_sender=SENDER))
    deliver(event)
    assert len(mail) == 1


class Killed(BaseException):
    """The runtime ending an invocation (its timeout, a crash): no ``except Exception`` runs."""


def dies(sender: str, to: str, subject: str, body: str) -> str:
    """An invocation that dies after its claim, before SES answers."""
    raise Killed


def test_a_mail_whose_sender_died_before_ses_answered_is_sent_by_a_later_delivery(
    stack: Stack, mail: list[Any],
) -> None:
    task, (event,) = ended(stack, notify={"email": True})
    dying = Notifier(app_module.settings, TaskRepository(), send=dies)
    with pytest.raises(Killed):
        dying.handle(event["detail-type"], event["detail"])
    # Lambda's retry while the dead claim is fresh fails again, rather than calling the mail sent
    with pytest.raises(Exception, match=f"1:succeeded of task {task['id']}"):
        deliver(event)
    assert mail == []
    # its next retry, once the claim is stale, takes the claim over and sends
    stale = timedelta(seconds=app_module.settings.notify_lease_seconds + 1)
    later = Notifier(app_module.settings, TaskRepository(), now=lambda: clock.now() + stale)
    assert later.handle(event["detail-type"], event["detail"]) == "sent"
    assert len(mail) == 1
    deliver(event)  # and it is recorded as sent: once
    assert len(mail) == 1


@pytest.mark.parametrize("user, issue", [
    ("bob", "needs a verified email address on your account"),  # his address is not verified
    ("carol", "needs a verified email address on your account"),  # she has none
])
def test_asking_for_mail_without_a_verified_address_is_refused(
    stack: Stack, mail: list[Any], user: str, issue: str,
) -> None:
    resp = stack.client.http.post("/downloads", headers=stack.users[user].headers, body=json.dumps(
        {"task_name": "t", "kind": "demo", "notify": {"email": True}}))
    assert resp.status_code == 400
    assert resp.json_body["error"]["details"] == [{"field": "notify.email", "issue": issue}]
    assert stack.drain() == []  # nothing was queued


def test_asking_for_mail_where_none_is_sent_is_refused(stack: Stack) -> None:
    assert not app_module.settings.mail_sender
    resp = stack.client.http.post("/downloads", headers=stack.users["alice"].headers, body=json.dumps(
        {"task_name": "t", "kind": "demo", "notify": {"email": True}}))
    assert resp.status_code == 400
    assert resp.json_body["error"]["details"] == [
        {"field": "notify.email", "issue": "cannot be true: this deployment sends no mail"}]


@pytest.mark.parametrize("notify, field", [
    ({"email": "yes"}, "notify.email"), ({"sms": True}, "notify.sms"), ("email", "notify"),
])
def test_a_malformed_notify_is_a_400(stack: Stack, notify: Any, field: str) -> None:
    resp = stack.client.http.post("/downloads", headers=stack.users["alice"].headers, body=json.dumps(
        {"task_name": "t", "kind": "demo", "notify": notify}))
    assert resp.status_code == 400
    assert [d["field"] for d in resp.json_body["error"]["details"]] == [field]


def test_the_deployment_default_mails_those_who_can_receive_it(
    stack: Stack, mail: list[Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = replace(app_module.settings, notify_email_default=True)
    monkeypatch.setattr(app_module, "settings", settings)
    monkeypatch.setattr(app_module.downloads, "settings", settings)
    alice, _ = ended(stack)
    carol = stack.create("carol")  # no address: her create is not refused, she gets no mail
    opted_out = stack.create(notify={"email": False})
    assert (alice["notify"], carol["notify"], opted_out["notify"]) == (
        {"email": True}, {"email": False}, {"email": False})
