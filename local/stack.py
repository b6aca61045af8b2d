"""``make run``: the whole Download Center on this machine (see docs/local-stack.md).

One process, several threads (and with ``LOCAL_WORKER_MODE=processes`` a child
process per build consumer): a moto server standing in for AWS, the real
``app.py`` behind ``chalice local`` (with Cognito tokens verified), and a
poller feeding the build queue to ``app.build_worker`` as the Lambda event
source mapping would. Before the API starts, moto gets something to export
for every kind: the ``demo-users`` table (``local/seed.py``), the
``demo-files`` bucket and the ``/demo/app`` log group (``local/samples.py``),
all three on the app's allow-lists. ``.local/stack.json`` appears once all of
it is up and disappears when it stops (Ctrl-C or SIGTERM; exit status 0).

Environment: ``MOTO_PORT`` (5000), ``PORT`` (8000), ``STACK_FILE``
(``.local/stack.json``), ``LOCAL_WORKERS`` (2: how many builds run side by
side, like concurrent Lambda invocations), ``LOCAL_WORKER_MODE`` (``threads``:
the builds run in threads of this process; ``processes``: each consumer is a
child process of its own, as each Lambda invocation has a sandbox, see
``local/workerproc.py``), ``SWEEP_INTERVAL_SECONDS`` (10: how
often the sweeper runs; every minute in the deployment). The app's settings
are the caller's environment over ``.chalice/config.json`` (stage ``dev``), see
:func:`app_environment`; the resource names and URLs come from provisioning.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shlex
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from local.logformat import DATEFMT, FORMAT, use_console_format
from local.stackfile import (
    PROJECT_DIR,
    bypass_proxy_for_loopback,
    remove_stack_file,
    stack_file_path,
    write_stack_file,
)

log = logging.getLogger("local.stack")

HOST = "127.0.0.1"
REGION = "us-east-1"
STAGE = "dev"
WORKER_FUNCTION = "build_worker"
SWEEPER_FUNCTION = "sweeper"
QUIET_LOGGERS = ("werkzeug", "botocore", "boto3", "urllib3", "s3transfer", "pynamodb")
# Variables that would point boto3 at real AWS or at a developer's own profile.
FOREIGN_AWS_VARS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


class Stop(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM: unwinds start-up or the wait."""


class StartupError(Exception):
    """The stack could not come up; the message says what to do."""


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        port = int(raw)
    except ValueError:
        raise StartupError(f"{name}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise StartupError(f"{name}={port} is out of range")
    return port


def _positive_int(name: str, default: int) -> int:
    """A count from the environment; anything but a positive integer stops start-up."""
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise StartupError(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise StartupError(f"{name}={value} must be at least 1")
    return value


def _positive_float(name: str, default: float) -> float:
    """A duration in seconds from the environment; anything but a positive number stops start-up."""
    raw = os.environ.get(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise StartupError(f"{name}={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise StartupError(f"{name}={raw} must be more than 0")
    return value


#: ``LOCAL_WORKER_MODE``'s values: where the ``LOCAL_WORKERS`` build consumers run
WORKER_MODES = ("threads", "processes")


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` from the environment; anything else stops start-up, naming them."""
    value = os.environ.get(name, default).strip().lower() or default
    if value not in choices:
        raise StartupError(f"{name}={os.environ[name]!r} is none of {', '.join(choices)}")
    return value


def check_port_free(port: int, variable: str) -> None:
    """Refuse early if something already listens on ``port`` (the server binds it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {HOST}:{port} ({exc.strerror}); set {variable} to use another port."
            ) from exc


def configure_logging(fmt: str = FORMAT) -> None:
    """One console stream for the stack, the API, the poller and the worker's logs.

    ``fmt``: the stack's ``FORMAT``; a worker process (``local.workerproc``) adds its pid.
    """
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format=fmt, datefmt=DATEFMT)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def point_aws_at(endpoint_url: str, region: str) -> None:
    """Make every boto3/PynamoDB client in this process talk to moto, with dummy keys.

    Must happen before app.py is imported (it creates clients at import time).
    The developer's own profile, config file and credentials are kept out, so a
    local run can never reach a real account.
    """
    bypass_proxy_for_loopback()
    for name in FOREIGN_AWS_VARS:
        os.environ.pop(name, None)
    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL_")]:
        os.environ.pop(name)
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint_url,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )


def resource_env(resources: dict[str, str]) -> dict[str, str]:
    """The app's settings (chalicelib/config.py names) for the provisioned resources."""
    return {
        "TASKS_TABLE": resources["table"],
        "FILES_BUCKET": resources["bucket"],
        "BUILD_QUEUE_URL": resources["queue_url"],
        "BUILD_QUEUE_NAME": resources["queue_url"].rstrip("/").rsplit("/", 1)[-1],
        "DEAD_LETTER_QUEUE_URL": resources["dlq_url"],
        "DEAD_LETTER_QUEUE_NAME": resources["dlq_url"].rstrip("/").rsplit("/", 1)[-1],
        "EVENT_BUS_NAME": resources["event_bus"],
    }


#: the From address of the local stack's mail (moto's SES keeps what it "sends")
LOCAL_MAIL_SENDER = "download-center@example.com"


def console_env(endpoint_url: str, client_id: str, api_url: str) -> dict[str, str]:
    """Where the web console signs in (moto's Cognito, the stack's app client), and the mail it sends."""
    return {"COGNITO_ENDPOINT": endpoint_url, "USER_POOL_CLIENT_ID": client_id,
            "CONSOLE_URL": f"{api_url}/", "MAIL_SENDER": os.environ.get("MAIL_SENDER", LOCAL_MAIL_SENDER)}


def verify_mail_sender(endpoint_url: str, region: str, sender: str) -> None:
    """SES sends only as a verified identity (moto verifies at once)."""
    import boto3

    boto3.client("ses", endpoint_url=endpoint_url, region_name=region).verify_email_identity(
        EmailAddress=sender)


def app_environment(
    config_vars: Mapping[str, Any], local_sources: Mapping[str, str], environ: Mapping[str, str]
) -> dict[str, str]:
    """The app's settings for a local run: the caller's environment wins.

    ``.chalice/config.json`` gives the defaults (what ``chalice local`` would
    apply), the stack's seeded sources go first on their allow-lists (so that
    ``GET /kinds`` offers them as examples), and any variable the caller set
    replaces all of that: ``BUNDLE_BUCKETS=my-bucket make run`` means exactly
    ``my-bucket``. Only the provisioned resources' names (``resource_env``)
    are not the caller's to change.
    """
    merged = {name: str(value) for name, value in config_vars.items()}
    for name, source in local_sources.items():
        entries = [source] + [e.strip() for e in merged.get(name, "").split(",") if e.strip()]
        merged[name] = ",".join(dict.fromkeys(entries))
    return {name: environ.get(name, value) for name, value in merged.items()}


def sqs_batch_size(app_object: Any, handler_name: str) -> int:
    """The batch size the app declares for its SQS handler (``@app.on_sqs_message``)."""
    for source in getattr(app_object, "event_sources", []):
        if getattr(source, "handler_string", "").rsplit(".", 1)[-1] == handler_name:
            return int(getattr(source, "batch_size", 1) or 1)
    return 1


def wait_for_health(api_url: str, timeout: float = 15.0) -> int:
    """Status of ``GET /health`` once the server answers at all (or raise)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise StartupError(f"the API at {api_url} does not answer: {exc}") from exc
            time.sleep(0.1)


@dataclass
class LocalStack:
    """Everything ``make run`` starts, and the order in which it stops it."""

    moto_port: int
    api_port: int
    stack_file: Path
    project_dir: Path = PROJECT_DIR
    region: str = REGION
    workers: int = 2
    worker_mode: str = "threads"
    sweep_interval: float = 10.0
    info: dict[str, Any] = field(default_factory=dict)
    _moto: Any = None
    _server: Any = None
    _server_thread: threading.Thread | None = None
    _poller: Any = None
    _worker_processes: Any = None
    _event_pollers: list[Any] = field(default_factory=list)
    _schedule: Any = None
    _wrote_stack_file: bool = False

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.moto_port}"

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    def start(self) -> None:
        """Bring every part up, in dependency order; the stack file comes last."""
        started = time.monotonic()
        check_port_free(self.api_port, "PORT")  # fail now, not after seeding
        self._start_moto()
        point_aws_at(self.endpoint_url, self.region)

        resources = self._provision()
        from local.cognito import TokenVerifier, create_user_pool

        pool = create_user_pool(self.endpoint_url, self.region)
        log.info("user pool %s, app client %s", pool.pool_id, pool.client_id)
        verifier = TokenVerifier(self.endpoint_url, pool)
        verifier.load()
        samples = self._seed()

        console = console_env(self.endpoint_url, pool.client_id, self.api_url)
        if console["MAIL_SENDER"]:
            verify_mail_sender(self.endpoint_url, self.region, console["MAIL_SENDER"])
        config, app_module = self._load_app(resources, samples, console)
        batch_size = self._start_api(app_module, config, verifier)
        self._start_poller(app_module, config, resources, batch_size)
        self._start_event_pollers(app_module, config, resources)
        self._start_schedule(app_module, config)

        status = wait_for_health(self.api_url)
        if status != 200:
            log.warning("GET /health answered %d, not 200", status)

        self.info = {
            "api_url": self.api_url,
            "console_url": f"{self.api_url}/",
            "aws_endpoint_url": self.endpoint_url,
            "region": self.region,
            "table": resources["table"],
            "bucket": resources["bucket"],
            "queue_url": resources["queue_url"],
            "dlq_url": resources["dlq_url"],
            "event_bus": resources["event_bus"],
            "user_pool_id": pool.pool_id,
            "client_id": pool.client_id,
            "users": [user.as_json() for user in pool.users],
            "demo_table": samples["EXPORTABLE_TABLES"],
            "sample_bucket": samples["BUNDLE_BUCKETS"],
            "sample_log_group": samples["LOG_GROUPS"],
        }
        self._wrote_stack_file = True  # first, so an interrupt mid-write still cleans up
        write_stack_file(self.stack_file, self.info)
        log.info("up in %.1f s", time.monotonic() - started)

    def _start_moto(self) -> None:
        from local.motoserver import MotoServer

        try:
            self._moto = MotoServer(HOST, self.moto_port)
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {HOST}:{self.moto_port} for moto ({exc.strerror}); "
                "is another stack running? Set MOTO_PORT to use another port."
            ) from exc
        self._moto.start()
        log.info("moto server on %s", self.endpoint_url)
        # We own the ports now, so a stack file still here is a killed run's leftover:
        # remove it, or readers would take it for this stack being ready.
        if self.stack_file.exists():
            log.info("removing stale %s", self.stack_file)
            self.stack_file.unlink(missing_ok=True)

    def _provision(self) -> dict[str, str]:
        try:
            from local.provision import provision
        except ImportError as exc:
            raise StartupError(f"local/provision.py is not usable: {exc}") from exc
        resources = provision(self.endpoint_url, self.region)
        missing = {"table", "bucket", "queue_url", "dlq_url", "event_bus", "queue_arn"} - set(resources)
        if missing:
            raise StartupError(f"provision() did not return {sorted(missing)}")
        log.info(
            "provisioned table %s, bucket %s, queue %s, event bus %s",
            resources["table"],
            resources["bucket"],
            resources["queue_url"],
            resources["event_bus"],
        )
        return resources

    def _seed(self) -> dict[str, str]:
        """Something to export for every kind; returns each source by its allow-list variable."""
        from local.samples import SAMPLE_BUCKET, SAMPLE_LOG_GROUP, seed_log_group, seed_sample_bucket
        from local.seed import DEMO_TABLE, seed_demo_table

        t0 = time.monotonic()
        rows = seed_demo_table(self.endpoint_url, self.region, DEMO_TABLE)
        log.info("demo table %s: %d items (%.1f s)", DEMO_TABLE, rows, time.monotonic() - t0)
        t0 = time.monotonic()
        bucket = seed_sample_bucket(self.endpoint_url, self.region, SAMPLE_BUCKET)
        events = seed_log_group(self.endpoint_url, self.region, SAMPLE_LOG_GROUP)
        log.info("sample bucket %s: %d objects, %.1f MiB; log group %s: %d events (%.1f s)",
                 bucket.name, bucket.objects, bucket.bytes / 2**20, SAMPLE_LOG_GROUP, events,
                 time.monotonic() - t0)
        return {"EXPORTABLE_TABLES": DEMO_TABLE, "BUNDLE_BUCKETS": bucket.name,
                "LOG_GROUPS": SAMPLE_LOG_GROUP}

    def _load_app(
        self, resources: dict[str, str], samples: Mapping[str, str], console: Mapping[str, str]
    ) -> tuple[Any, ModuleType]:
        """Import app.py the way ``chalice local`` does, with the stack's settings.

        ``.chalice/config.json``'s stage variables, with the seeded sources on
        the allow-lists, are the defaults and the caller's environment wins
        (:func:`app_environment`); the provisioned resource names and URLs
        then replace the deployment defaults.
        """
        from chalice.cli.factory import CLIFactory

        if not (self.project_dir / "app.py").exists():
            raise StartupError(f"{self.project_dir / 'app.py'} does not exist yet")
        config = CLIFactory(project_dir=str(self.project_dir)).create_config_obj(chalice_stage_name=STAGE)
        os.environ.update(app_environment(config.environment_variables, samples, os.environ))
        os.environ.update(resource_env(resources))
        os.environ.update(console)
        if str(self.project_dir) not in sys.path:
            sys.path.insert(0, str(self.project_dir))
        app_module = importlib.import_module("app")
        if not hasattr(app_module, "app") or not hasattr(app_module, WORKER_FUNCTION):
            raise StartupError(f"app.py must define `app` and `{WORKER_FUNCTION}`")
        use_console_format()  # the app's JSON lines as console text, with the task's keys
        return config, app_module

    def _start_api(self, app_module: ModuleType, config: Any, verifier: Any) -> int:
        from local.gateway import create_server

        try:
            self._server = create_server(app_module.app, config, HOST, self.api_port, verifier)
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {HOST}:{self.api_port} for the API ({exc.strerror}); "
                "set PORT to use another port."
            ) from exc
        self._server_thread = threading.Thread(
            target=self._server.server.serve_forever, name="chalice-local", daemon=True
        )
        self._server_thread.start()
        log.info("API (chalice local, stage %s) on %s", STAGE, self.api_url)
        return sqs_batch_size(app_module.app, WORKER_FUNCTION)

    def _start_poller(
        self,
        app_module: ModuleType,
        config: Any,
        resources: dict[str, str],
        batch_size: int,
    ) -> None:
        import boto3

        from local.poller import SqsPoller

        worker_config = config.scope(chalice_stage=STAGE, function_name=WORKER_FUNCTION)
        # the countdown each build gets, as Lambda's timeout would give it: the function's
        # configured timeout unless WORKER_TIMEOUT_SECONDS says less (to see a time budget run out)
        timeout = _positive_int("WORKER_TIMEOUT_SECONDS", int(worker_config.lambda_timeout or 900))
        function_name = f"{config.app_name}-{STAGE}-{WORKER_FUNCTION}"
        memory_size = int(worker_config.lambda_memory_size or 128)
        if self.worker_mode == "processes":
            self._start_worker_processes(resources, function_name, timeout, memory_size, batch_size)
            return
        self._poller = SqsPoller(
            sqs_client=boto3.client("sqs", endpoint_url=self.endpoint_url, region_name=self.region),
            handler=getattr(app_module, WORKER_FUNCTION),
            queue_url=resources["queue_url"],
            queue_arn=resources["queue_arn"],
            region=self.region,
            function_name=function_name,
            timeout_seconds=timeout,
            memory_size=memory_size,
            batch_size=batch_size,
            workers=self.workers,
        )
        self._poller.start()
        log.info(
            "poller: build queue -> app.%s, %d at a time (timeout %d s)",
            WORKER_FUNCTION,
            self.workers,
            timeout,
        )

    def _start_worker_processes(
        self, resources: dict[str, str], function_name: str, timeout: int, memory_size: int,
        batch_size: int,
    ) -> None:
        """``LOCAL_WORKER_MODE=processes``: each consumer a child with this process's environment.

        The environment is the app's as :meth:`_load_app` set it (moto's
        endpoint, the resources' names, the settings), so the children's
        ``app.py`` sees what the API's does.
        """
        from local.workerproc import WorkerProcesses, WorkerSpec, WorkerStartError

        specs = [
            WorkerSpec(index=n, queue_url=resources["queue_url"], queue_arn=resources["queue_arn"],
                       region=self.region, function_name=function_name, handler=WORKER_FUNCTION,
                       timeout_seconds=timeout, memory_size=memory_size, batch_size=batch_size,
                       endpoint_url=self.endpoint_url)
            for n in range(1, self.workers + 1)
        ]
        self._worker_processes = WorkerProcesses(specs, self.project_dir, os.environ)
        try:
            self._worker_processes.start()
        except (OSError, WorkerStartError) as exc:
            raise StartupError(f"LOCAL_WORKER_MODE=processes: {exc}") from exc
        log.info(
            "worker processes: build queue -> app.%s, %d at a time, one a process (pids %s; timeout %d s)",
            WORKER_FUNCTION,
            self.workers,
            ", ".join(map(str, self._worker_processes.pids)),
            timeout,
        )

    def _start_event_pollers(self, app_module: ModuleType, config: Any, resources: dict[str, str]) -> None:
        """The app's event functions (the notifier), fed by rules on the stack's bus."""
        import boto3

        from local.events import invoke_with_events, wire_rules
        from local.poller import SqsPoller

        sqs = boto3.client("sqs", endpoint_url=self.endpoint_url, region_name=self.region)
        events = boto3.client("events", endpoint_url=self.endpoint_url, region_name=self.region)
        for target in wire_rules(app_module.app, sqs, events, resources["event_bus"]):
            scoped = config.scope(chalice_stage=STAGE, function_name=target.function)
            poller = SqsPoller(
                sqs_client=sqs, handler=invoke_with_events(getattr(app_module, target.function),
                                           account=target.queue_arn.split(":")[4]),
                queue_url=target.queue_url, queue_arn=target.queue_arn, region=self.region,
                function_name=f"{config.app_name}-{STAGE}-{target.function}",
                timeout_seconds=int(scoped.lambda_timeout or 60),
                memory_size=int(scoped.lambda_memory_size or 128), batch_size=1, workers=1,
            )
            poller.start()
            self._event_pollers.append(poller)
            log.info("events: rule on %s -> app.%s", resources["event_bus"], target.function)

    def _start_schedule(self, app_module: ModuleType, config: Any) -> None:
        from local.schedule import Schedule

        if not hasattr(app_module, SWEEPER_FUNCTION):
            raise StartupError(f"app.py must define `{SWEEPER_FUNCTION}`")
        scoped = config.scope(chalice_stage=STAGE, function_name=SWEEPER_FUNCTION)
        self._schedule = Schedule(
            getattr(app_module, SWEEPER_FUNCTION), self.sweep_interval,
            f"{config.app_name}-{STAGE}-{SWEEPER_FUNCTION}", self.region,
            int(scoped.lambda_timeout or 60),
        )
        self._schedule.start()
        log.info("schedule: app.%s every %g s (SWEEP_INTERVAL_SECONDS)", SWEEPER_FUNCTION,
                 self.sweep_interval)

    def stop(self) -> None:
        """Stop whatever was started, newest first; safe after a partial start."""
        if self._wrote_stack_file:
            remove_stack_file(self.stack_file, self.info)
            self._wrote_stack_file = False
        if self._server is not None:
            self._server.shutdown()
            self._server.server.server_close()
            if self._server_thread is not None:
                self._server_thread.join(5)
            self._server = None
            log.info("API stopped")
        if self._schedule is not None:
            self._schedule.stop()
            self._schedule = None
        if self._poller is not None:
            if not self._poller.stop():
                log.warning("builds still running; leaving them behind")
            self._poller = None
        if self._worker_processes is not None:
            if not self._worker_processes.stop():
                log.warning("builds still running; their worker processes were killed")
            self._worker_processes = None
        for poller in self._event_pollers:
            poller.stop(timeout=5)
        self._event_pollers.clear()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
            log.info("moto server stopped")

    def banner(self) -> str:
        """Where everything is, and what to type next."""
        info = self.info
        python = Path(sys.executable)
        try:
            python_cmd = "./" + str(python.relative_to(self.project_dir))
        except ValueError:
            python_cmd = str(python)
        prefix = ""
        if os.environ.get("STACK_FILE"):
            prefix = f"STACK_FILE={shlex.quote(str(self.stack_file))} "
        users = ", ".join(
            f"{u['username']} ({u['tenant']}{', ' + ','.join(u['groups']) if u['groups'] else ''})"
            for u in info["users"]
        )
        token_cmd = f"{prefix}{python_cmd} -m local.login alice"
        password_cmd = f"{prefix}{python_cmd} -m local.login --password alice"
        body = '{"task_name": "试一试", "kind": "demo", "params": {"rows": 1000}}'
        return "\n".join(
            [
                "",
                "Download Center is running locally.",
                f"  console       {info['console_url']}  (sign in as alice; her password: {password_cmd})",
                f"  API           {info['api_url']}  (chalice local, stage {STAGE})",
                f"  AWS (moto)    {info['aws_endpoint_url']}  region {info['region']}",
                f"  tasks table   {info['table']}",
                f"  files bucket  {info['bucket']}",
                f"  build queue   {info['queue_url']}  -> app.{WORKER_FUNCTION}",
                f"  builds        {self.workers} at a time (LOCAL_WORKERS), "
                f"{'each in a process of its own' if self.worker_mode == 'processes' else 'in threads'}"
                " (LOCAL_WORKER_MODE)",
                f"  sweeper       every {self.sweep_interval:g} s (SWEEP_INTERVAL_SECONDS)",
                f"  dead letters  {info['dlq_url']}",
                f"  event bus     {info['event_bus']}",
                f"  user pool     {info['user_pool_id']}  client {info['client_id']}",
                f"  users         {users}",
                f"  demo table    {info['demo_table']}  (dynamodb_table)",
                f"  sample bucket {info['sample_bucket']}  (s3_bundle)",
                f"  sample logs   {info['sample_log_group']}  (log_archive)",
                f"  stack file    {self.stack_file}  (passwords are in it)",
                "",
                "Try it (logs in as alice, exports, downloads and checks the file):",
                f"  {prefix}{python_cmd} -m local.demo",
                "",
                "or by hand:",
                f"  TOKEN=$({token_cmd})",
                f'  curl -si -X POST {info["api_url"]}/downloads -H "Authorization: $TOKEN" '
                f"-H 'Content-Type: application/json' -d '{body}'",
                f'  curl -s {info["api_url"]}/downloads -H "Authorization: $TOKEN"',
                f'  curl -s {info["api_url"]}/kinds -H "Authorization: $TOKEN"'
                "   # every kind, each with an example that works here",
                "",
                "Ctrl-C stops everything.",
                "",
            ]
        )


_stop_requested = threading.Event()


def app_setting_names() -> set[str]:
    """The variables the app's settings come from: the config file's and those Settings reads.

    What a stack started for a test or a measurement keeps out of the caller's
    environment, so that a developer's shell does not change what runs.
    """
    from chalicelib.config import Settings

    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text(encoding="utf-8"))
    names = set(config.get("environment_variables", {}))
    for stage in config.get("stages", {}).values():
        names |= set(stage.get("environment_variables", {}))

    class Reads(dict[str, str]):
        def get(self, name: str, default: Any = None) -> Any:
            names.add(name)
            return default

    Settings.from_env(Reads())
    return names


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    """First SIGINT/SIGTERM unwinds the main thread; repeats (``timeout`` sends two) are noted.

    Raising only once matters: a second ``Stop`` inside the first's handling
    would escape ``main`` with a traceback instead of a clean exit.
    """
    name = signal.Signals(signum).name
    if _stop_requested.is_set():
        log.info("%s: already stopping", name)
        return
    _stop_requested.set()
    raise Stop(name)


def main() -> int:
    """Run the stack until SIGINT/SIGTERM; 0 on a clean stop, 1 if it could not start."""
    configure_logging()
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    stack: LocalStack | None = None
    status = 0
    try:
        stack = LocalStack(
            moto_port=_port("MOTO_PORT", 5000),
            api_port=_port("PORT", 8000),
            stack_file=stack_file_path(),
            workers=_positive_int("LOCAL_WORKERS", 2),
            worker_mode=_choice("LOCAL_WORKER_MODE", "threads", WORKER_MODES),
            sweep_interval=_positive_float("SWEEP_INTERVAL_SECONDS", 10.0),
        )
        stack.start()
        print(stack.banner(), flush=True)
        while True:
            time.sleep(3600)
    except Stop as exc:
        log.info("%s received, stopping", exc)
    except StartupError as exc:
        log.error("%s", exc)
        status = 1
    except Exception:
        log.exception("the local stack failed")
        status = 1
    finally:
        _stop_requested.set()  # from here on, signals only log
        if stack is not None:
            stack.stop()
    log.info("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
