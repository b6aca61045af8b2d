"""Settings read once from the environment.

The same code runs in Lambda, in the local stack and in tests; only these
variables differ between them (and ``AWS_ENDPOINT_URL``, which boto3 and
PynamoDB honour by themselves).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from chalicelib.task import Lifetimes

DEFAULT_TABLE = "download-center-tasks"
DEFAULT_BUCKET = "download-center-files"
DEFAULT_QUEUE = "download-center-builds"
DEFAULT_DLQ = "download-center-builds-dlq"
DEFAULT_EVENT_BUS = "download-center"


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with production-sane defaults."""

    region: str = "us-east-1"
    tasks_table: str = DEFAULT_TABLE
    files_bucket: str = DEFAULT_BUCKET
    build_queue_name: str = DEFAULT_QUEUE
    build_queue_url: str = ""
    dead_letter_queue_name: str = DEFAULT_DLQ
    dead_letter_queue_url: str = ""
    event_bus_name: str = DEFAULT_EVENT_BUS
    url_ttl_seconds: int = 900
    file_ttl_days: int = 7
    record_retention_days: int = 30
    exportable_tables: tuple[str, ...] = field(default_factory=lambda: ("demo-users",))
    #: Buckets ``s3_bundle`` may read and log groups ``log_archive`` may read:
    #: nothing until an operator lists them (the worker's role must allow them too).
    bundle_buckets: tuple[str, ...] = ()
    log_groups: tuple[str, ...] = ()
    max_active_tasks: int = 20
    part_size_bytes: int = 8 * 1024 * 1024
    progress_interval_seconds: float = 2.0
    time_budget_margin_seconds: float = 30.0
    idempotency_ttl_hours: int = 24
    scan_segments: int = 4
    #: a build whose heartbeat is older than this is dead: the sweeper requeues, fails or cancels it
    stale_after_seconds: int = 300
    #: a queued task not claimed after this long gets its build message again (doubling each time)
    resend_after_seconds: int = 300
    #: a queued task that has not started after this long fails ``not_started``
    queued_expiry_hours: int = 24
    #: claims of one attempt before a task whose builds keep dying fails ``worker_lost``
    max_build_claims: int = 3
    #: segments of one tenant's tasks building at once (every worker's); a segment past it waits
    #: on the queue (``segmented.SLOT_WAIT_SECONDS``), so one tenant cannot hold every worker
    max_building_segments_per_tenant: int = 16
    #: the From address of "your export is ready" mail (an SES identity); empty: no mail is sent
    mail_sender: str = ""
    #: whether a task mails its owner when the create body does not say (``notify.email``)
    notify_email_default: bool = False
    #: how long a delivery's claim on a mail holds before another delivery takes it over and sends
    #: it (its holder died before SES answered): longer than the notifier Lambda's timeout (30 s),
    #: short enough that Lambda's two retries of the event (1 and 3 minutes on) get there
    notify_lease_seconds: int = 60
    #: the web console's address, which mail links to
    console_url: str = ""
    #: the app client the web console signs in with (InitiateAuth USER_PASSWORD_AUTH)
    user_pool_client_id: str = ""
    #: Cognito's endpoint for the console; the region's own when empty (the local stack sets moto's)
    cognito_endpoint_url: str = ""

    @property
    def cognito_endpoint(self) -> str:
        return self.cognito_endpoint_url or f"https://cognito-idp.{self.region}.amazonaws.com/"

    def lifetimes(self) -> Lifetimes:
        return Lifetimes(
            file_ttl=timedelta(days=self.file_ttl_days),
            record_retention=timedelta(days=self.record_retention_days),
            stale_after=timedelta(seconds=self.stale_after_seconds),
            resend_after=timedelta(seconds=self.resend_after_seconds),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        return cls(
            region=e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION") or "us-east-1",
            tasks_table=e.get("TASKS_TABLE", DEFAULT_TABLE),
            files_bucket=e.get("FILES_BUCKET", DEFAULT_BUCKET),
            build_queue_name=e.get("BUILD_QUEUE_NAME", DEFAULT_QUEUE),
            build_queue_url=e.get("BUILD_QUEUE_URL", ""),
            dead_letter_queue_name=e.get("DEAD_LETTER_QUEUE_NAME", DEFAULT_DLQ),
            dead_letter_queue_url=e.get("DEAD_LETTER_QUEUE_URL", ""),
            event_bus_name=e.get("EVENT_BUS_NAME", DEFAULT_EVENT_BUS),
            url_ttl_seconds=int(e.get("URL_TTL_SECONDS", "900")),
            file_ttl_days=int(e.get("FILE_TTL_DAYS", "7")),
            record_retention_days=int(e.get("RECORD_RETENTION_DAYS", "30")),
            exportable_tables=_csv(e.get("EXPORTABLE_TABLES", "demo-users")),
            bundle_buckets=_csv(e.get("BUNDLE_BUCKETS", "")),
            log_groups=_csv(e.get("LOG_GROUPS", "")),
            max_active_tasks=int(e.get("MAX_ACTIVE_TASKS", "20")),
            part_size_bytes=int(float(e.get("PART_SIZE_MB", "8")) * 1024 * 1024),
            progress_interval_seconds=float(e.get("PROGRESS_INTERVAL_SECONDS", "2")),
            time_budget_margin_seconds=float(e.get("TIME_BUDGET_MARGIN_SECONDS", "30")),
            idempotency_ttl_hours=int(e.get("IDEMPOTENCY_TTL_HOURS", "24")),
            scan_segments=int(e.get("SCAN_SEGMENTS", "4")),
            stale_after_seconds=int(e.get("STALE_AFTER_SECONDS", "300")),
            resend_after_seconds=int(e.get("RESEND_AFTER_SECONDS", "300")),
            queued_expiry_hours=int(e.get("QUEUED_EXPIRY_HOURS", "24")),
            max_build_claims=int(e.get("MAX_BUILD_CLAIMS", "3")),
            max_building_segments_per_tenant=int(e.get("MAX_BUILDING_SEGMENTS_PER_TENANT", "16")),
            mail_sender=e.get("MAIL_SENDER", "").strip(),
            notify_email_default=_flag(e.get("NOTIFY_EMAIL_DEFAULT", "false")),
            notify_lease_seconds=int(e.get("NOTIFY_LEASE_SECONDS", "60")),
            console_url=e.get("CONSOLE_URL", "").strip(),
            user_pool_client_id=e.get("USER_POOL_CLIENT_ID", ""),
            cognito_endpoint_url=e.get("COGNITO_ENDPOINT", ""),
        )
