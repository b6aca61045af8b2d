"""Integration fixtures: the real app and worker against in-process moto.

Identity is real too: users live in a moto Cognito pool, every request
carries the ID token InitiateAuth returned for them, and the HTTP client
verifies it as API Gateway's Cognito authorizer does (``verifying_client``).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

import app as app_module
from chalicelib.adapters import aws, queue
from chalicelib.adapters.tasks_repo import TaskRepository, configure
from chalicelib.clock import now
from chalicelib.config import Settings
from chalicelib.task import CLAIM, Task
from chalicelib.worker import Worker
from local.cognito import TokenVerifier, UserPool
from local.motoserver import serialize_dynamodb

from .verifying_client import VerifyingClient, moto_jwks

#: app's settings, read when it was first imported: tests/conftest.py set the
#: process's AWS environment and the allow-lists these tests read before that.
SETTINGS = app_module.settings
EVENTS_QUEUE = "captured-events"


@dataclass
class User:
    username: str
    tenant: str
    groups: tuple[str, ...]
    token: str = ""
    sub: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": self.token, "Content-Type": "application/json"}


@dataclass
class Stack:
    queue_url: str
    dlq_url: str
    events_url: str
    users: dict[str, User]
    client: Client
    pool: UserPool

    def sqs(self) -> Any:
        return boto3.client("sqs")

    def drain(self, url: str | None = None) -> list[dict[str, Any]]:
        """Every message on a queue, removed from it, in the Lambda record shape."""
        url = url or self.queue_url
        out: list[dict[str, Any]] = []
        while True:
            got = self.sqs().receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                             MessageAttributeNames=["All"]).get("Messages", [])
            if not got:
                return out
            for m in got:
                self.sqs().delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                out.append({"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
                            "body": m["Body"], "attributes": {}, "messageAttributes": {},
                            "eventSource": "aws:sqs"})

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(m["body"]) for m in self.drain(self.events_url)]

    def run_worker(self, worker: Worker | None = None) -> dict[str, Any]:
        """Hand everything queued to the real SQS handler, as Lambda would."""
        records = self.drain()
        if worker is not None:
            return worker.handle_batch(records)
        return app_module.build_worker({"Records": records}, None)

    def create(self, user: str = "alice", **body: Any) -> dict[str, Any]:
        payload = {"task_name": "导出 report", "kind": "demo", "params": {"rows": 50}} | body
        resp = self.client.http.post("/downloads", headers=self.users[user].headers,
                                     body=json.dumps(payload))
        assert resp.status_code == 202, resp.body
        return resp.json_body

    def get(self, task_id: str, user: str = "alice") -> dict[str, Any]:
        resp = self.client.http.get(f"/downloads/{task_id}", headers=self.users[user].headers)
        assert resp.status_code == 200, resp.body
        return resp.json_body


#: carol has no address, bob one he has not verified; the others' are verified
UNVERIFIED_EMAIL = "bob"
NO_EMAIL = "carol"


def email_attributes(user: User) -> list[dict[str, str]]:
    if user.username == NO_EMAIL:
        return []
    verified = "false" if user.username == UNVERIFIED_EMAIL else "true"
    return [{"Name": "email", "Value": f"{user.username}@{user.tenant}.example"},
            {"Name": "email_verified", "Value": verified}]


def _cognito_users() -> tuple[UserPool, dict[str, User]]:
    idp = boto3.client("cognito-idp")
    pool = idp.create_user_pool(
        PoolName="tests",
        Schema=[{"Name": "tenant", "AttributeDataType": "String", "Mutable": True}],
    )["UserPool"]["Id"]
    client_id = idp.create_user_pool_client(
        UserPoolId=pool, ClientName="tests", ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"],
        ReadAttributes=["email", "email_verified", "custom:tenant"],
    )["UserPoolClient"]["ClientId"]
    for group in ("admin", "tenant-admin"):
        idp.create_group(GroupName=group, UserPoolId=pool)
    users = {
        "alice": User("alice", "acme", ()), "bob": User("bob", "acme", ()),
        "carol": User("carol", "globex", ()), "dave": User("dave", "acme", ("tenant-admin",)),
        "admin": User("admin", "acme", ("admin",)),
    }
    for user in users.values():
        password = secrets.token_urlsafe(12) + "aA1!"
        created = idp.admin_create_user(
            UserPoolId=pool, Username=user.username, MessageAction="SUPPRESS",
            UserAttributes=[{"Name": "custom:tenant", "Value": user.tenant}, *email_attributes(user)],
        )
        user.sub = next(a["Value"] for a in created["User"]["Attributes"] if a["Name"] == "sub")
        idp.admin_set_user_password(UserPoolId=pool, Username=user.username, Password=password,
                                    Permanent=True)
        for group in user.groups:
            idp.admin_add_user_to_group(UserPoolId=pool, Username=user.username, GroupName=group)
        user.token = idp.initiate_auth(
            ClientId=client_id, AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": user.username, "PASSWORD": password},
        )["AuthenticationResult"]["IdToken"]
    return UserPool(pool, client_id, idp.meta.region_name, ()), users


def provision_resources() -> tuple[str, str]:
    """The same definitions as the deployment (infra/resources.json), in moto."""
    from local.provision import provision

    names = provision(None)
    return names["queue_url"], names["dlq_url"]


serialize_dynamodb()  # moto's transactions are only atomic one request at a time


@pytest.fixture
def stack() -> Iterator[Stack]:
    with mock_aws():
        aws.reset()
        queue.queue_url.cache_clear()
        configure(SETTINGS.tasks_table)
        queue_url, dlq_url = provision_resources()
        sqs = boto3.client("sqs")
        events_url = sqs.create_queue(QueueName=EVENTS_QUEUE)["QueueUrl"]
        events_arn = sqs.get_queue_attributes(
            QueueUrl=events_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        eb = boto3.client("events")
        eb.put_rule(Name="capture", EventBusName=SETTINGS.event_bus_name,
                    EventPattern=json.dumps({"source": ["download-center"]}))
        eb.put_targets(Rule="capture", EventBusName=SETTINGS.event_bus_name,
                       Targets=[{"Id": "q", "Arn": events_arn}])
        pool, users = _cognito_users()
        with VerifyingClient(app_module.app, TokenVerifier(moto_jwks, pool)) as client:
            yield Stack(queue_url, dlq_url, events_url, users, client, pool)
        aws.reset()
        queue.queue_url.cache_clear()


def claim(task_id: str, at: datetime | None = None) -> Task:
    """Claim a queued task as a worker would, without building it (a build in flight)."""
    repo = TaskRepository()
    task = repo.get(task_id)
    assert task is not None
    claimed = repo.apply(CLAIM, task, at or now())
    assert claimed is not None
    return claimed


def create_then_drop_table(stack: Stack, user: str = "alice", table: str = "demo-users") -> dict[str, Any]:
    """A ``dynamodb_table`` task whose table is there at create and gone by its build.

    The create checks that the table exists (a 400 otherwise), so a source
    that fails the build is one that changed in between: its build fails
    ``table_not_found``.
    """
    ddb = boto3.client("dynamodb")
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    created = stack.create(user, kind="dynamodb_table", params={"table": table})
    ddb.delete_table(TableName=table)
    return created


def fast_worker(**changes: Any) -> Worker:
    """The real worker with settings a test needs (short intervals, small parts)."""
    settings: Settings = replace(SETTINGS, **changes)
    return Worker(settings)
