"""Mail the owner when an export ends: "ready" or "failed", once per terminal state.

Driven by the ``download.succeeded`` / ``download.failed`` events the API,
the worker and the sweeper already publish, so every way a task can end is
covered by one rule. EventBridge may deliver an event more than once (and the
sweeper republishes one whose first publication it could not confirm): a
conditional write on the task (``TaskStore.claim_notification``) lets one
delivery at a time send. The claim is a lease, not a record of the mail: the
key is recorded as sent only once SES has taken the mail
(``TaskStore.notification_sent``), and a claim older than
``NOTIFY_LEASE_SECONDS`` (its holder died between the claim and SES's answer,
a Lambda timeout say) is taken over by the next delivery. So a mail is sent at
least once, and exactly once unless an invocation dies between SES's answer and
that record. A mail that cannot be sent gives its claim back and fails the
invocation, so the event's retry sends it; a delivery that finds another's
fresh claim fails too (``ClaimHeld``), so that its retry sends the mail if the
holder never does. Nothing about the task changes. An event whose every retry
failed goes to the notifier's dead-letter queue (tools/package.py).

The mail links to the console, never to the file: a presigned URL in a mailbox
would outlive its purpose and travel wherever the mail is forwarded.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib import clock
from chalicelib.adapters import events, mail
from chalicelib.adapters.tasks_repo import TaskStore
from chalicelib.config import Settings

log = logging.getLogger(__name__)

#: the events that mail, by EventBridge detail-type (cancel is the owner's own doing: no mail)
MAILED = {"download.succeeded": "succeeded", "download.failed": "failed"}
#: the EventBridge rule that invokes the notifier: this app's events that mail
EVENT_PATTERN = {"source": [events.SOURCE], "detail-type": sorted(MAILED)}


class ClaimHeld(Exception):
    """Another delivery of the event holds a fresh claim on the mail.

    Raised, not answered as a duplicate: the holder may still die before SES
    answers, and then only this event's retry (once the claim is stale) sends it.
    """


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


def _one_line(text: str) -> str:
    """Text safe for a subject line: control characters and line or paragraph separators become spaces."""
    return "".join(" " if unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp")
                   else c for c in text).strip()


def human_size(size: int | None) -> str:
    if size is None:
        return "unknown size"
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def compose(to: str, status: str, task: Mapping[str, Any], console_url: str) -> Mail:
    """The mail for a task that ended ``status``, from the event's task resource."""
    name = _one_line(str(task.get("task_name", "")))
    where = f"the Download Center: {console_url}" if console_url else "the Download Center"
    lines = [f"Hello {task.get('owner_name') or ''},".replace(" ,", ","), ""]
    if status == "succeeded":
        subject = f'Your export "{name}" is ready'
        rows = (task.get("progress") or {}).get("rows")
        files = task.get("files") or []
        what = f"{len(files)} files and manifest.json" if files else task.get("file_name")
        detail = f"{what}, {human_size(task.get('size'))}"
        if isinstance(rows, int):
            detail += f", {rows:,} rows"
        lines += [f'Your export "{name}" is ready ({detail}).',
                  f"Download it from {where}"]
        if task.get("expires_at"):
            lines.append(f"The {'files are' if files else 'file is'} kept until {task['expires_at']}.")
        if task.get("sha256"):
            lines += ["", f"sha256 {task['sha256']}"]
    else:
        error = task.get("error") or {}
        subject = f'Your export "{name}" failed'
        lines += [f'Your export "{name}" failed: {error.get("message", "no reason given")} '
                  f'({error.get("code", "unknown")}).',
                  f"You can retry it from {where}"]
    lines += ["", "You get this mail because you asked to be told when this export ends."]
    return Mail(to=to, subject=subject, body="\n".join(lines) + "\n")


class Notifier:
    def __init__(self, settings: Settings, repo: TaskStore,
                 send: Callable[[str, str, str, str], str] = mail.send,
                 now: Callable[[], datetime] = clock.now) -> None:
        self.settings = settings
        self.repo = repo
        self.send = send
        self.now = now

    def handle(self, detail_type: str, detail: Mapping[str, Any]) -> str:
        """Mail for one event, at least once and in all likelihood once; returns what happened.

        (The outcome is for the log and the tests.) Raises when the mail may
        still need sending (SES failed, or another delivery's claim is fresh),
        so that the event is retried.
        """
        status = MAILED.get(detail_type)
        task_id = detail.get("id")
        if status is None or not isinstance(task_id, str):
            return "ignored"
        task = self.repo.get(task_id)
        if task is None or task.notify_email is None:
            return "not_asked"  # deleted meanwhile, or its owner did not ask for mail
        if not self.settings.mail_sender:
            log.warning("task %s asked for mail, but MAIL_SENDER is not set", task_id)
            return "no_sender"
        key = f"{detail.get('attempts', task.attempts)}:{status}"
        claimed_at = self.now()
        claim = self.repo.claim_notification(task_id, key, claimed_at,
                                             timedelta(seconds=self.settings.notify_lease_seconds))
        if claim == "sent":
            return "duplicate"
        if claim == "gone":
            return "not_asked"
        if claim == "sending":
            log.warning("the %s notice of task %s is being sent by another delivery: retry later",
                        status, task_id)
            raise ClaimHeld(f"{key} of task {task_id}")
        message = compose(task.notify_email, status, detail, self.settings.console_url)
        try:
            message_id = self.send(self.settings.mail_sender, message.to, message.subject, message.body)
        except Exception:
            self.repo.release_notification(task_id, key, claimed_at)  # the event's retry sends it
            log.exception("could not mail the %s notice of task %s", status, task_id)
            raise
        self.repo.notification_sent(task_id, key)
        log.info("mailed the %s notice of task %s (SES message %s)", status, task_id, message_id)
        return "sent"
