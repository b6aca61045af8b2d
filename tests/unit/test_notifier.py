"""The notice's words, and whose address it may go to: plain functions, no AWS."""

from __future__ import annotations

import pytest

from chalicelib.notifier import compose, human_size
from chalicelib.principal import Principal

TASK = {
    "id": "01JDQ4V8Z8S9Y6K1E6J3X2M7TQ", "task_name": "Users, March", "owner_name": "alice",
    "file_name": "users.csv", "size": 3 * 1024 * 1024, "progress": {"rows": 120000},
    "sha256": "ab" * 32, "expires_at": "2026-12-03T00:00:00Z", "status": "succeeded",
}


def test_the_ready_notice_names_the_file_and_links_to_the_console() -> None:
    mail = compose("alice@acme.example", "succeeded", TASK, "https://console.example/api/")
    assert mail.to == "alice@acme.example"
    assert mail.subject == 'Your export "Users, March" is ready'
    assert "users.csv, 3.0 MiB, 120,000 rows" in mail.body
    assert "https://console.example/api/" in mail.body
    assert "ab" * 32 in mail.body and "2026-12-03T00:00:00Z" in mail.body


def test_the_failed_notice_gives_the_reason() -> None:
    failed = {**TASK, "status": "failed", "error": {"code": "table_not_found", "message": "No table."}}
    mail = compose("a@b.example", "failed", failed, "")
    assert mail.subject == 'Your export "Users, March" failed'
    assert "failed: No table. (table_not_found)" in mail.body
    assert "http" not in mail.body  # no console address configured: no link at all


def test_a_task_name_cannot_break_the_subject_line() -> None:
    sneaky = {**TASK, "task_name": "x\r\nBcc: everyone@example.com\u2028y"}
    subject = compose("a@b.example", "succeeded", sneaky, "").subject
    assert "\n" not in subject and "\r" not in subject and "\u2028" not in subject
    assert subject == 'Your export "x  Bcc: everyone@example.com y" is ready'


@pytest.mark.parametrize("size, text", [(None, "unknown size"), (0, "0 bytes"), (1023, "1023 bytes"),
                                        (1536, "1.5 KiB"), (5 * 1024**4, "5.0 TiB")])
def test_sizes_read_in_binary_units(size: int | None, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize("claims, email", [
    ({"email": "a@b.example", "email_verified": True}, "a@b.example"),
    ({"email": "a@b.example", "email_verified": "true"}, "a@b.example"),  # as API Gateway passes it
    ({"email": "a@b.example", "email_verified": "false"}, None),
    ({"email": "a@b.example"}, None),
    ({"email_verified": "true"}, None),
    ({"email": "", "email_verified": "true"}, None),
])
def test_only_a_verified_address_is_the_principals(claims: dict, email: str | None) -> None:
    assert Principal.from_claims({"sub": "s", **claims}).email == email


def test_the_ready_notice_of_a_parts_task_counts_its_files() -> None:
    parts = {**TASK, "sha256": None, "size": 3 * 1024 * 1024,
             "files": [{"name": f"x-{n}.csv"} for n in range(1, 5)]}
    body = compose("a@b.example", "succeeded", parts, "").body
    assert "4 files and manifest.json, 3.0 MiB" in body and "The files are kept until" in body
    assert "sha256" not in body
