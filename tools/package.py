"""Build the deployable CloudFormation/SAM template: ``python -m tools.package --out DIR``.

``chalice package`` knows the functions, the API and the SQS trigger, but not
the table, queue, bucket, bus and user pool the code talks to. Those live in
``infra/resources.json`` (which the local stack provisions as well) and are
merged in by chalice. What a merge cannot express is done here afterwards:

- every Lambda's resource-name env vars point at the template's resources
  (``Ref``/``Fn::GetAtt``) instead of the literal defaults from config.json;
- the build queue trigger targets the template's queue and reports partial
  batch failures (``ReportBatchItemFailures``);
- each function logs to its own log group with a retention period, encrypted
  with the stack's KMS key, and its role may write to that group only;
- the build worker gets more /tmp, and at most ``WorkerReservedConcurrency``
  builds run at once (reserved concurrency, and the same maximum on its queue
  trigger); the scheduled sweeper runs one sweep at a time and drops stale ticks;
- the stage throttles every method (``ApiRateLimit``/``ApiBurstLimit``), the
  routes without a token lower (``PublicRateLimit``/``PublicBurstLimit``), and
  the API function serves at most ``ApiReservedConcurrency`` requests at once;
- the roles' statements on export sources are generated from the allow-lists
  of the stage's environment (``SOURCE_GRANTS``) and no other grant on a source
  passes (wildcards expanded); KMS grants hold only through SQS in this account,
  and the files bucket lets only the roles granted its objects read them;
- the literal ARNs of the hand-written IAM policies (which name the default
  resource names so that they also work for ``chalice deploy``) are rewritten
  to the real resources, or scoped to the stack's partition/region/account;
- only the roles of the functions that send to the build queue, the principals
  of ``QueueSenderArns`` and (through EventBridge) the rules of
  ``QueueSenderRuleArns`` and of the stack may send to it (``BuildQueuePolicy``);
- the Cognito authorizer trusts the pool this stack creates, or the one passed
  in ``ExistingUserPoolArn``;
- the checkov checks that do not apply to the generated resources are skipped
  in their Metadata, each with its reason (``CHECKOV_SKIPS``).

The code package (``deployment.zip``) leaves out the AWS SDK for Python and
what it requires (``RUNTIME_SDK``): the Lambda runtime has them, and chalice
would otherwise ship an unpinned botocore, pulled in by PynamoDB, that shadows
the runtime's (docs/benchmarks.md, "Deployment package", has the figures).

Finally the template is checked with cfn-lint; errors make the exit status
non-zero, warnings are only printed.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MERGE_TEMPLATE = Path("infra") / "resources.json"
TEMPLATE_NAME = "sam.json"
DEPLOYMENT_ZIP = "deployment.zip"

# Logical ids declared in infra/resources.json that the wiring below relies on.
TABLE = "TasksTable"
BUCKET = "FilesBucket"
QUEUE = "BuildQueue"
DLQ = "BuildDeadLetterQueue"
#: where the notifier's events go once Lambda's retries of them all failed
NOTIFIER_DLQ = "NotifierDeadLetterQueue"
EVENT_BUS = "EventBus"
KEY = "EncryptionKey"
USER_POOL = "UserPool"
USER_POOL_CONDITION = "CreateUserPool"
USER_POOL_PARAMETER = "ExistingUserPoolArn"
USER_POOL_CLIENT = "UserPoolClient"
USER_POOL_CLIENT_PARAMETER = "ExistingUserPoolClientId"
#: the function that serves the HTTP API (and the web console)
API_HANDLER = "app.app"
LOG_RETENTION_PARAMETER = "LogRetentionDays"
QUEUE_AGE_ALARM_PARAMETER = "BuildQueueAgeAlarmSeconds"

SQS_MAX_VISIBILITY_TIMEOUT = 43200  # 12 hours, the SQS maximum
VISIBILITY_TIMEOUT_FACTOR = 6  # AWS's advice for a queue that triggers a Lambda

FUNCTION_TYPE = "AWS::Serverless::Function"
LOG_WRITE_ACTIONS = {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}

ENVIRONMENT: dict[str, Any] = {
    "TASKS_TABLE": {"Ref": TABLE},
    "FILES_BUCKET": {"Ref": BUCKET},
    "BUILD_QUEUE_NAME": {"Fn::GetAtt": [QUEUE, "QueueName"]},
    "BUILD_QUEUE_URL": {"Ref": QUEUE},
    "DEAD_LETTER_QUEUE_NAME": {"Fn::GetAtt": [DLQ, "QueueName"]},
    "DEAD_LETTER_QUEUE_URL": {"Ref": DLQ},
    "EVENT_BUS_NAME": {"Ref": EVENT_BUS},
    "MAIL_SENDER": {"Ref": "MailSender"},
}
#: the notifier's policy names this identity; the template puts the deployment's in its place
MAIL_IDENTITY_PLACEHOLDER = "identity/download-center-mail-identity"
MAIL_IDENTITY_ARN = {
    "Fn::Sub": "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${MailIdentity}"}
#: the function that mails owners when their exports end, and how many may send at once
NOTIFIER_HANDLER = "app.notifier"
NOTIFIER_CONCURRENCY = 2
#: where the mail's link points: the API's stage root, which serves the console
CONSOLE_URL = {"Fn::Sub": "https://${RestAPI}.execute-api.${AWS::Region}.${AWS::URLSuffix}/api/"}

USER_POOL_ARN: dict[str, Any] = {
    "Fn::If": [
        USER_POOL_CONDITION,
        {"Fn::GetAtt": [USER_POOL, "Arn"]},
        {"Ref": USER_POOL_PARAMETER},
    ]
}


#: the app client the web console signs in with: the stack's own, or the one given with the pool
USER_POOL_CLIENT_ID: dict[str, Any] = {
    "Fn::If": [
        USER_POOL_CONDITION,
        {"Ref": USER_POOL_CLIENT},
        {"Ref": USER_POOL_CLIENT_PARAMETER},
    ]
}


class PackagingError(Exception):
    """The template cannot be made deployable; the message says why."""


def run_chalice_package(project_dir: Path, stage: str, out_dir: Path) -> Path:
    """Run ``chalice package`` with the merge template; return the template's path.

    It runs in a child process because chalice imports ``app.py`` and changes
    global state (sys.path, the app module) that the caller should not inherit.
    """
    merge_template = (project_dir / MERGE_TEMPLATE).resolve()
    if not merge_template.is_file():
        raise PackagingError(f"merge template not found: {merge_template}")
    env = dict(os.environ)
    # chalice needs a region to create its session, even though packaging
    # talks to no AWS service; the template itself is region-agnostic.
    if not (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")):
        env["AWS_DEFAULT_REGION"] = "us-east-1"
    command = [
        sys.executable,
        "-c",
        "import sys; from chalice.cli import main; sys.exit(main())",
        "--project-dir",
        str(project_dir),
        "package",
        "--stage",
        stage,
        "--merge-template",
        str(merge_template),
        str(out_dir),
    ]
    result = subprocess.run(command, cwd=project_dir, env=env, check=False)
    if result.returncode != 0:
        raise PackagingError(f"chalice package failed with exit status {result.returncode}")
    template = out_dir / TEMPLATE_NAME
    if not template.is_file():
        raise PackagingError(f"chalice package wrote no {TEMPLATE_NAME} in {out_dir}")
    return template


def post_process(template: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of the merged template wired to its own resources.

    Pure (no I/O) so that the wiring can be tested without running chalice.
    """
    template = copy.deepcopy(template)
    resources: dict[str, Any] = template.get("Resources", {})
    _check_merged(template)
    functions = {
        name: resource for name, resource in resources.items() if resource.get("Type") == FUNCTION_TYPE
    }
    if not functions:
        raise PackagingError("the template has no Lambda functions: is app.py empty?")

    names = _physical_names(resources)
    triggered = _wire_functions(resources, functions, names)
    if not triggered:
        raise PackagingError(f"no function is triggered by the {QUEUE} queue")
    _give_workers_disk(template, functions, triggered)
    _cap_workers(template, functions, triggered)
    _serialize_sweeps(functions)
    _throttle_api(template, functions)
    _check_visibility_timeout(resources, triggered)
    _check_queue_age_alarm(template, triggered)
    _check_file_expiry(resources, functions)
    _rewrite_policies(resources, functions, names)
    _grant_sources(resources, functions, triggered)
    _check_source_grants(resources, functions, triggered)
    _condition_key_use(resources, functions)
    _fence_files(resources, functions)
    _wire_queue_policy(template, functions)
    _wire_authorizers(resources)
    _wire_console(functions)
    _wire_notifier(resources, functions)
    _skip_checkov_checks(resources)
    return template


def _check_merged(template: dict[str, Any]) -> None:
    """Fail early when the merge left half-defined or missing resources."""
    resources = template.get("Resources", {})
    typeless = sorted(name for name, res in resources.items() if "Type" not in res)
    if typeless:
        raise PackagingError(
            "infra/resources.json adds properties to resources chalice did not "
            f"generate: {', '.join(typeless)}"
        )
    for name in (TABLE, BUCKET, QUEUE, DLQ, NOTIFIER_DLQ, EVENT_BUS, USER_POOL, KEY):
        if name not in resources:
            raise PackagingError(f"resource {name} missing from the merged template")
    if USER_POOL_CONDITION not in template.get("Conditions", {}):
        raise PackagingError(f"condition {USER_POOL_CONDITION} missing")
    for parameter in (USER_POOL_PARAMETER, USER_POOL_CLIENT_PARAMETER, LOG_RETENTION_PARAMETER,
                      QUEUE_AGE_ALARM_PARAMETER, "MailSender", "MailIdentity"):
        if parameter not in template.get("Parameters", {}):
            raise PackagingError(f"parameter {parameter} missing")


def _physical_names(resources: dict[str, Any]) -> dict[tuple[str, str], str]:
    """Map (service, default physical name) to the logical id that replaces it.

    The policy files and config.json name resources by their defaults (the
    literal names, or the bucket's ``Metadata.LocalName``); this finds which
    template resource each default stands for. A KMS key has no name: the
    policies name it by its alias (``alias/...``), which stands for the key
    the alias targets.
    """
    properties = {
        "AWS::DynamoDB::Table": ("dynamodb", "TableName"),
        "AWS::SQS::Queue": ("sqs", "QueueName"),
        "AWS::S3::Bucket": ("s3", "BucketName"),
        "AWS::Events::EventBus": ("events", "Name"),
    }
    names: dict[tuple[str, str], str] = {}
    for logical_id, resource in resources.items():
        if resource.get("Type") == "AWS::KMS::Alias":
            alias = resource.get("Properties", {})
            target = alias.get("TargetKeyId")
            if isinstance(alias.get("AliasName"), str) and isinstance(target, dict) and "Ref" in target:
                names[("kms", alias["AliasName"])] = target["Ref"]
            continue
        kind = properties.get(resource.get("Type", ""))
        if kind is None:
            continue
        service, prop = kind
        for name in (
            resource.get("Properties", {}).get(prop),
            resource.get("Metadata", {}).get("LocalName"),
        ):
            if isinstance(name, str):
                names[(service, name)] = logical_id
    return names


def _wire_functions(
    resources: dict[str, Any],
    functions: dict[str, Any],
    names: dict[tuple[str, str], str],
) -> list[str]:
    """Set env vars, log groups and queue triggers; return the queue-triggered functions."""
    triggered: list[str] = []
    for logical_id, function in functions.items():
        props = function.setdefault("Properties", {})
        variables = props.setdefault("Environment", {}).setdefault("Variables", {})
        variables.update(copy.deepcopy(ENVIRONMENT))

        log_group = f"{logical_id}LogGroup"
        resources[log_group] = {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Delete",
            "UpdateReplacePolicy": "Delete",
            "Properties": {
                "LogGroupName": {"Fn::Sub": f"/aws/lambda/${{AWS::StackName}}-{logical_id}"},
                "RetentionInDays": {"Ref": LOG_RETENTION_PARAMETER},
                "KmsKeyId": {"Fn::GetAtt": [KEY, "Arn"]},
            },
        }
        props["LoggingConfig"] = {"LogGroup": {"Ref": log_group}, "LogFormat": "Text"}

        for event_name, event in props.get("Events", {}).items():
            if event.get("Type") != "SQS":
                continue
            event_props = event.setdefault("Properties", {})
            queue = _queue_logical_id(event_props.get("Queue"), names)
            if queue is None:
                raise PackagingError(
                    f"{logical_id}.{event_name} reads a queue the template does not "
                    f"define: {event_props.get('Queue')!r}"
                )
            event_props["Queue"] = {"Fn::GetAtt": [queue, "Arn"]}
            # The worker returns {"batchItemFailures": [...]}: without this the
            # event source ignores it and retries the whole batch.
            event_props["FunctionResponseTypes"] = ["ReportBatchItemFailures"]
            if queue == QUEUE:
                triggered.append(logical_id)
    return triggered


WORKER_STORAGE_PARAMETER = "WorkerEphemeralStorageMB"


def _give_workers_disk(template: dict[str, Any], functions: dict[str, Any], workers: list[str]) -> None:
    """An ``s3_bundle`` manifest past 4 MiB spills to /tmp: the worker gets more than Lambda's 512 MB.

    (xlsx used to spill whole sheets there; it streams now, like csv.)

    Chalice's config has no setting for it, so the template carries it as a parameter.
    """
    template.setdefault("Parameters", {})[WORKER_STORAGE_PARAMETER] = {
        "Type": "Number", "Default": 2048, "MinValue": 512, "MaxValue": 10240,
        "Description": "The build worker's /tmp in MB (an s3_bundle manifest past 4 MiB spills there).",
    }
    for name in workers:
        functions[name]["Properties"]["EphemeralStorage"] = {"Size": {"Ref": WORKER_STORAGE_PARAMETER}}


WORKER_CONCURRENCY_PARAMETER = "WorkerReservedConcurrency"
DEFAULT_WORKER_CONCURRENCY = 50
# The range of an SQS event source's MaximumConcurrency.
SQS_MIN_CONCURRENCY, SQS_MAX_CONCURRENCY = 2, 1000


def _cap_workers(template: dict[str, Any], functions: dict[str, Any], workers: list[str]) -> None:
    """At most ``WorkerReservedConcurrency`` builds run at once, and that many always can.

    Every build reads an export source (a table scan, a bucket, log groups):
    the cap is what keeps a burst of requests from becoming a burst on them,
    and the reservation keeps the account's other functions from starving the
    builds. The queue trigger gets the same maximum: with the reservation
    alone, the SQS poller would keep handing messages to a throttled function,
    and every throttled delivery counts toward the redrive to the dead-letter
    queue.
    """
    template.setdefault("Parameters", {})[WORKER_CONCURRENCY_PARAMETER] = {
        "Type": "Number",
        "Default": DEFAULT_WORKER_CONCURRENCY,
        "MinValue": SQS_MIN_CONCURRENCY,
        "MaxValue": SQS_MAX_CONCURRENCY,
        "Description": (
            "How many builds may run at once (the worker's reserved concurrency and its queue "
            "trigger's maximum concurrency); caps the load on export sources. The account must "
            "keep 100 unreserved concurrent executions besides it."
        ),
    }
    limit = {"Ref": WORKER_CONCURRENCY_PARAMETER}
    for name in workers:
        props = functions[name]["Properties"]
        props["ReservedConcurrentExecutions"] = copy.deepcopy(limit)
        for event in props.get("Events", {}).values():
            if event.get("Type") == "SQS":
                event["Properties"]["ScalingConfig"] = {"MaximumConcurrency": copy.deepcopy(limit)}


#: The stage's throttling, each a template parameter: (default, minimum, what it sets).
#: API Gateway applies a rate and a burst to each method (route and verb) on its own and
#: answers past them with its THROTTLED gateway response (``429 throttled``) before the
#: function starts. The routes without a token (the console, ``/health``, ``/openapi.json``)
#: start the function for anyone: they get the lower ``Public*`` limits.
THROTTLE_PARAMETERS: dict[str, tuple[int, int, str]] = {
    "ApiRateLimit": (50, 1, "Requests a second each method of the API serves in the steady state, all "
                            "callers together; past it API Gateway answers 429 throttled."),
    "ApiBurstLimit": (100, 1, "Requests each method of the API takes at once above ApiRateLimit."),
    "PublicRateLimit": (10, 1, "Requests a second each method of a route without a token (the console, "
                               "/health, /openapi.json) serves; these start the function for anyone."),
    "PublicBurstLimit": (20, 1, "Requests each method of a route without a token takes at once above "
                                "PublicRateLimit."),
}
API_CONCURRENCY_PARAMETER = "ApiReservedConcurrency"
DEFAULT_API_CONCURRENCY = 50


def public_operations(template: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, METHOD) of every operation without an authorizer, OPTIONS too (it reaches the function)."""
    found: list[tuple[str, str]] = []
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") != "AWS::Serverless::Api":
            continue
        paths = resource.get("Properties", {}).get("DefinitionBody", {}).get("paths", {})
        for path, methods in paths.items():
            for method, operation in methods.items():
                if isinstance(operation, dict) and not operation.get("security"):
                    found.append((path, method.upper()))
    return found


def _method_setting(path: str, method: str, rate: str, burst: str) -> dict[str, Any]:
    """One stage MethodSetting; its ResourcePath encodes each ``/`` of the path as ``~1``."""
    return {"ResourcePath": path if path in ("/", "/*") else "/" + path.replace("/", "~1"),
            "HttpMethod": method,
            "ThrottlingRateLimit": {"Ref": rate}, "ThrottlingBurstLimit": {"Ref": burst}}


def _throttle_api(template: dict[str, Any], functions: dict[str, Any]) -> None:
    """Throttle the stage per method, the public routes lower, and bound the API's concurrency.

    The public routes are derived from the API's definition (``public_operations``),
    so a route added without a token gets the public limits by itself. The API
    function's reserved concurrency (``ApiReservedConcurrency``) is what bounds
    all methods together: it keeps the API from taking the account's shared pool
    (and the builds' and other functions' capacity) whatever the stage lets through.
    """
    parameters = template.setdefault("Parameters", {})
    for name, (default, minimum, description) in THROTTLE_PARAMETERS.items():
        parameters[name] = {"Type": "Number", "Default": default, "MinValue": minimum,
                            "Description": description}
    parameters[API_CONCURRENCY_PARAMETER] = {
        "Type": "Number", "Default": DEFAULT_API_CONCURRENCY, "MinValue": 1, "MaxValue": 1000,
        "Description": ("How many API requests the API function serves at once (its reserved "
                        "concurrency); the account must keep 100 unreserved concurrent executions "
                        "besides it and WorkerReservedConcurrency."),
    }
    settings = [_method_setting("/*", "*", "ApiRateLimit", "ApiBurstLimit")]
    settings += [_method_setting(path, method, "PublicRateLimit", "PublicBurstLimit")
                 for path, method in public_operations(template)]
    apis = [r for r in template.get("Resources", {}).values() if r.get("Type") == "AWS::Serverless::Api"]
    if not apis:
        raise PackagingError("the template has no API to throttle")
    for api in apis:
        api.setdefault("Properties", {})["MethodSettings"] = copy.deepcopy(settings)
    for function in functions.values():
        props = function.get("Properties", {})
        if props.get("Handler") == API_HANDLER:
            props["ReservedConcurrentExecutions"] = {"Ref": API_CONCURRENCY_PARAMETER}


# A stale tick of the sweeper's schedule is superseded by the next one.
SWEEP_MAX_EVENT_AGE_SECONDS = 60  # Lambda's minimum


def _serialize_sweeps(functions: dict[str, Any]) -> None:
    """Scheduled functions (the sweeper) run one at a time and never catch up on old ticks.

    The schedule fires every minute and each sweep looks at everything due, so
    a retry of a failed tick, or a tick queued behind a slow sweep, would only
    repeat the next one; what matters is that sweeps keep succeeding, which an
    alarm watches.
    """
    for function in functions.values():
        props = function["Properties"]
        if not any(event.get("Type") == "Schedule" for event in props.get("Events", {}).values()):
            continue
        props["ReservedConcurrentExecutions"] = 1
        props["EventInvokeConfig"] = {
            "MaximumRetryAttempts": 0,
            "MaximumEventAgeInSeconds": SWEEP_MAX_EVENT_AGE_SECONDS,
        }


def _queue_logical_id(queue: Any, names: dict[tuple[str, str], str]) -> str | None:
    """Find the template queue behind chalice's ``Fn::Sub`` queue ARN (or a plain one)."""
    if isinstance(queue, dict) and "Fn::GetAtt" in queue:
        return str(queue["Fn::GetAtt"][0])
    if isinstance(queue, dict) and isinstance(queue.get("Fn::Sub"), str):
        queue = queue["Fn::Sub"]
    if not isinstance(queue, str):
        return None
    return names.get(("sqs", queue.rsplit(":", 1)[-1]))


def _check_visibility_timeout(resources: dict[str, Any], triggered: list[str]) -> None:
    """A message must stay hidden while the worker can still be running it."""
    longest = max(int(resources[name]["Properties"].get("Timeout", 3)) for name in triggered)
    needed = min(VISIBILITY_TIMEOUT_FACTOR * longest, SQS_MAX_VISIBILITY_TIMEOUT)
    actual = int(resources[QUEUE]["Properties"].get("VisibilityTimeout", 30))
    if actual < needed:
        raise PackagingError(
            f"{QUEUE} VisibilityTimeout is {actual}s; the worker may run {longest}s, so "
            f"it must be at least {needed}s"
        )


def _check_queue_age_alarm(template: dict[str, Any], triggered: list[str]) -> None:
    """The queue-age alarm must not page for a build that is merely running.

    ``ApproximateAgeOfOldestMessage`` counts in-flight messages, and a build
    keeps its message for as long as the worker runs.
    """
    resources = template["Resources"]
    longest = max(int(resources[name]["Properties"].get("Timeout", 3)) for name in triggered)
    threshold = int(template["Parameters"][QUEUE_AGE_ALARM_PARAMETER]["Default"])
    if threshold <= longest:
        raise PackagingError(
            f"{QUEUE_AGE_ALARM_PARAMETER} defaults to {threshold}s but a build may hold its message "
            f"for {longest}s: the alarm would page for every long build"
        )


def _check_file_expiry(resources: dict[str, Any], functions: dict[str, Any]) -> None:
    """S3 may only expire a file after its task stopped handing out URLs for it."""
    rules = resources[BUCKET]["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
    expiry = [
        rule["ExpirationInDays"]
        for rule in rules
        if rule.get("Status") == "Enabled"
        and "ExpirationInDays" in rule
        and "downloads/".startswith(rule.get("Prefix", ""))
    ]
    for logical_id, function in functions.items():
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        ttl = variables.get("FILE_TTL_DAYS")
        if not isinstance(ttl, str) or not expiry:
            continue
        if min(expiry) < int(ttl) + 1:
            raise PackagingError(
                f"{BUCKET} expires downloads after {min(expiry)} days but {logical_id} "
                f"keeps them for FILE_TTL_DAYS={ttl}: the lifecycle needs at least {int(ttl) + 1}"
            )


#: How an ARN in the stack's own partition, region and account begins.
_HERE = "arn:${AWS::Partition}:{service}:${AWS::Region}:${AWS::AccountId}:"


@dataclass(frozen=True)
class SourceGrant:
    """What each entry of one allow-list lets a role do: one statement, generated.

    ``arns`` are ``Fn::Sub`` strings with ``{name}`` standing for the entry.
    """

    variable: str
    sid: str
    actions: tuple[str, ...]
    arns: tuple[str, ...]


_TABLE = _HERE.replace("{service}", "dynamodb") + "table/{name}"
_BUCKET = "arn:${AWS::Partition}:s3:::{name}"
# FilterLogEvents (and DescribeLogGroups) are evaluated against the group's ARN with ":*"
_LOG_GROUP = _HERE.replace("{service}", "logs") + "log-group:{name}:*"

#: The one table of what the allow-lists of a function's environment (``EXPORTABLE_TABLES``,
#: ``BUNDLE_BUCKETS``, ``LOG_GROUPS``, per stage in .chalice/config.json) let its role read,
#: by the function's part. The code enforces the same lists (``chalicelib.config``); the roles'
#: source statements are generated from them here, never written in .chalice/policy-*.json,
#: and ``_check_source_grants`` refuses any other grant on a source. An empty list grants
#: nothing: no statement at all.
SOURCE_GRANTS: dict[str, tuple[SourceGrant, ...]] = {
    # the builds read the sources (a scan's DescribeTable, a bundle's HeadObject and listing,
    # a log range's events and, for a segmented plan, whether the group exists)
    "worker": (
        SourceGrant("EXPORTABLE_TABLES", "ExportableTables",
                    ("dynamodb:Scan", "dynamodb:Query", "dynamodb:DescribeTable"),
                    (_TABLE, _TABLE + "/index/*")),
        SourceGrant("BUNDLE_BUCKETS", "BundleObjects", ("s3:GetObject",), (_BUCKET + "/*",)),
        SourceGrant("BUNDLE_BUCKETS", "BundleBuckets", ("s3:ListBucket",), (_BUCKET,)),
        SourceGrant("LOG_GROUPS", "LogGroups", ("logs:FilterLogEvents", "logs:DescribeLogGroups"),
                    (_LOG_GROUP,)),
    ),
    # the API asks each source one cheap question at create (``preflight``) and lists a
    # bucket for ``GET /kinds`` examples; it never reads a row, an object or an event
    "api": (
        SourceGrant("EXPORTABLE_TABLES", "ExportableTablesAtCreate", ("dynamodb:DescribeTable",),
                    (_TABLE,)),
        SourceGrant("BUNDLE_BUCKETS", "BundleBucketsAtCreate", ("s3:ListBucket",), (_BUCKET,)),
        SourceGrant("LOG_GROUPS", "LogGroupsAtCreate", ("logs:DescribeLogGroups",), (_LOG_GROUP,)),
    ),
}
#: What an allow-list entry may be: a name, never a pattern (``*`` would grant every table).
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9_.#/-]+$")

#: The actions on the source services the check knows: a statement's action pattern
#: (``dynamodb:*``, ``s3:Get*``, ``*``) stands for every one of these it matches.
SOURCE_ACTIONS: tuple[str, ...] = tuple(
    f"{service}:{action}"
    for service, actions in (
        ("dynamodb", "BatchGetItem BatchWriteItem ConditionCheckItem CreateBackup DeleteItem DeleteTable "
                     "DescribeStream DescribeTable ExportTableToPointInTime GetItem GetRecords "
                     "GetShardIterator PartiQLDelete PartiQLInsert PartiQLSelect PartiQLUpdate PutItem "
                     "Query RestoreTableToPointInTime Scan UpdateItem UpdateTable"),
        ("s3", "AbortMultipartUpload DeleteBucketPolicy DeleteObject DeleteObjectVersion GetBucketAcl "
               "GetBucketPolicy GetObject GetObjectAcl GetObjectAttributes GetObjectTagging "
               "GetObjectVersion GetObjectVersionAttributes ListBucket ListBucketMultipartUploads "
               "ListBucketVersions ListMultipartUploadParts PutBucketPolicy PutObject PutObjectAcl "
               "RestoreObject"),
        ("logs", "CreateExportTask CreateLogGroup CreateLogStream DeleteLogGroup DescribeLogGroups "
                 "DescribeLogStreams FilterLogEvents GetLogEvents GetLogRecord GetQueryResults "
                 "PutLogEvents StartLiveTail StartQuery Unmask"),
    )
    for action in actions.split()
)


QUEUE_POLICY = "BuildQueuePolicy"
QUEUE_SENDERS_PARAMETER, QUEUE_SENDERS_CONDITION = "QueueSenderArns", "HasQueueSenders"
QUEUE_RULES_PARAMETER, QUEUE_RULES_CONDITION = "QueueSenderRuleArns", "HasQueueSenderRules"
QUEUE_DENY_SID = "OnlyTheStackAndTheNamedSendersSend"
QUEUE_RULES_SID = "TheNamedEventBridgeRulesSend"
QUEUE_ARN = {"Fn::GetAtt": [QUEUE, "Arn"]}


def _named_and(fixed: list[Any], parameter: str, condition: str) -> Any:
    """``fixed`` followed by the comma-separated ARNs of ``parameter``, when it names any."""
    joined = {"Fn::Split": [",", {"Fn::Join": [",", [*copy.deepcopy(fixed), {"Ref": parameter}]]}]}
    return {"Fn::If": [condition, joined, copy.deepcopy(fixed)]}


def _queue_senders(resources: dict[str, Any], functions: dict[str, Any]) -> list[str]:
    """The roles of the functions whose policy lets them send to the build queue (after the rewrite)."""
    roles: set[str] = set()
    for function in functions.values():
        role_id = function.get("Properties", {}).get("Role", {}).get("Fn::GetAtt", [""])[0]
        for policy in resources.get(role_id, {}).get("Properties", {}).get("Policies", []):
            for statement in policy.get("PolicyDocument", {}).get("Statement", []):
                sends = any(fnmatch.fnmatchcase("sqs:SendMessage", action)
                            for action in _as_list(statement.get("Action")) if isinstance(action, str))
                if statement.get("Effect") == "Allow" and sends and \
                        QUEUE_ARN in _as_list(statement.get("Resource")):
                    roles.add(role_id)
    return sorted(roles)


def _wire_queue_policy(template: dict[str, Any], functions: dict[str, Any]) -> None:
    """Only the stack's senders and the ones a deployment names may send to the build queue.

    Whoever may send a ``download.request`` is trusted with the owner, tenant
    and groups it declares (docs/queue-messages.md, "Trust"), so the queue's
    policy denies every principal but those: the roles of the functions that
    send to it (found in their policies, so the list cannot drift from them)
    and ``QueueSenderArns``. EventBridge rules of the stack that target the
    queue join the rules of ``QueueSenderRuleArns`` in the statement that
    lets EventBridge send.
    """
    resources = template["Resources"]
    policy = resources.get(QUEUE_POLICY, {})
    if policy.get("Type") != "AWS::SQS::QueuePolicy" or {"Ref": QUEUE} not in policy.get(
            "Properties", {}).get("Queues", []):
        raise PackagingError(f"{QUEUE_POLICY} must be the AWS::SQS::QueuePolicy of {QUEUE}: "
                             "without it any principal of the account may send requests")
    for name in (QUEUE_SENDERS_PARAMETER, QUEUE_RULES_PARAMETER):
        if name not in template.get("Parameters", {}):
            raise PackagingError(f"parameter {name} missing")
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    deny = next((s for s in statements if isinstance(s, dict) and s.get("Sid") == QUEUE_DENY_SID), None)
    if deny is None:
        raise PackagingError(f"{QUEUE_POLICY} has no statement {QUEUE_DENY_SID}")
    senders = _queue_senders(resources, functions)
    if not senders:
        raise PackagingError(f"no function's role may send to {QUEUE}: the API could not queue builds")
    deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] = _named_and(
        [{"Fn::GetAtt": [role, "Arn"]} for role in senders], QUEUE_SENDERS_PARAMETER,
        QUEUE_SENDERS_CONDITION)

    rules = sorted(
        logical_id for logical_id, resource in resources.items()
        if resource.get("Type") == "AWS::Events::Rule"
        and any(t.get("Arn") == QUEUE_ARN for t in resource.get("Properties", {}).get("Targets", []))
    )
    if not rules:
        return  # only the named rules, when there are any: the statement stays conditional
    for index, statement in enumerate(statements):
        branches = statement.get("Fn::If") if isinstance(statement, dict) else None
        if branches and isinstance(branches[1], dict) and branches[1].get("Sid") == QUEUE_RULES_SID:
            allow = copy.deepcopy(branches[1])
            allow["Condition"]["ArnEquals"]["aws:SourceArn"] = _named_and(
                [{"Fn::GetAtt": [rule, "Arn"]} for rule in rules], QUEUE_RULES_PARAMETER,
                QUEUE_RULES_CONDITION)
            statements[index] = allow
            return
    raise PackagingError(f"{QUEUE_POLICY} has no statement {QUEUE_RULES_SID} for the rules "
                         f"that target {QUEUE}: {', '.join(rules)}")


def _allow_list(variables: dict[str, Any], variable: str) -> list[str]:
    """The entries of one allow-list, in order; a pattern instead of a name is refused."""
    names = list(dict.fromkeys(n.strip() for n in str(variables.get(variable, "")).split(",") if n.strip()))
    for name in names:
        if not _SOURCE_NAME.match(name):
            raise PackagingError(f"{variable} lists {name!r}: an allow-list names sources, "
                                 "it holds no pattern")
    return names


def source_statements(part: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements a function of ``part`` (``worker``, ``api``) needs for its allow-lists.

    None for an empty list: a role reads no source a deployment did not name.
    """
    statements: list[dict[str, Any]] = []
    for grant in SOURCE_GRANTS.get(part, ()):
        names = _allow_list(variables, grant.variable)
        if not names:
            continue
        statements.append({
            "Sid": grant.sid,
            "Effect": "Allow",
            "Action": list(grant.actions),
            "Resource": [{"Fn::Sub": arn.replace("{name}", name)} for name in names for arn in grant.arns],
        })
    return statements


def _part(logical_id: str, function: dict[str, Any], workers: list[str]) -> str | None:
    """Which allow-list part a function plays: the builds, the API, or none (no source)."""
    if logical_id in workers:
        return "worker"
    if function.get("Properties", {}).get("Handler") == API_HANDLER:
        return "api"
    return None


def _role_statements(resources: dict[str, Any], function: dict[str, Any]) -> tuple[str, list[Any]]:
    """The function's role and the statement list of its (chalice's one) inline policy."""
    role_id = function.get("Properties", {}).get("Role", {}).get("Fn::GetAtt", [""])[0]
    policies = resources.get(role_id, {}).get("Properties", {}).get("Policies", [])
    if not policies:
        raise PackagingError(f"{role_id or 'a function'} has no inline policy to grant its sources in")
    return role_id, policies[0].setdefault("PolicyDocument", {}).setdefault("Statement", [])


def _grant_sources(resources: dict[str, Any], functions: dict[str, Any], workers: list[str]) -> None:
    """Append each function's source statements, from its environment's allow-lists."""
    for logical_id, function in functions.items():
        part = _part(logical_id, function, workers)
        if part is None:
            continue
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        generated = source_statements(part, variables)
        if generated:
            _role_statements(resources, function)[1].extend(generated)


def _stack_target(resource: Any, resources: dict[str, Any]) -> str | None:
    """The template resource a statement's Resource names (or a path in), or None."""
    target: str | None = None
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        target = str(resource["Fn::GetAtt"][0])
    elif isinstance(resource, dict) and isinstance(resource.get("Fn::Sub"), str):
        match = re.match(r"^\$\{([A-Za-z0-9]+)\.Arn\}", resource["Fn::Sub"])
        target = match.group(1) if match else None
    return target if target in resources else None


def _covers(pattern: str) -> set[str]:
    """The known source actions an action pattern stands for (IAM compares them case-blind)."""
    return {action for action in SOURCE_ACTIONS if fnmatch.fnmatchcase(action.lower(), pattern.lower())}


def _check_source_grants(resources: dict[str, Any], functions: dict[str, Any], workers: list[str]) -> None:
    """No role may touch a source its allow-lists do not name, by exact name or by pattern.

    Every Allow statement of every function's role whose actions cover a source
    action (``dynamodb:*`` and ``s3:Get*`` cover many; ``*`` all) may name only
    this stack's resources, or a source the generated statements name with no
    more than their actions. A ``*`` resource, an ARN pattern over other tables or
    buckets, a source off the list, ``NotAction``/``NotResource``: each refuses
    the package. Run after the rewrite and the generation, on what will be deployed.
    """
    for logical_id, function in functions.items():
        part = _part(logical_id, function, workers)
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        allowed: dict[str, set[str]] = {}
        for statement in source_statements(part, variables) if part else []:
            for resource in statement["Resource"]:
                allowed.setdefault(resource["Fn::Sub"], set()).update(a.lower() for a in statement["Action"])
        role_id, statements = _role_statements(resources, function)
        for statement in statements:
            if statement.get("Effect") != "Allow":
                continue
            where = f"{role_id} statement {statement.get('Sid') or '(no Sid)'}"
            if "NotAction" in statement or "NotResource" in statement:
                raise PackagingError(f"{where} uses NotAction/NotResource: it grants everything else")
            patterns = [str(a) for a in _as_list(statement.get("Action"))]
            covered = set().union(*(_covers(a) for a in patterns))
            if not covered:
                continue  # not a source service's action
            # an exact action the check does not know counts as itself
            wanted = {a.lower() for a in covered} | {a.lower() for a in patterns if not set("*?[") & set(a)}
            for resource in _as_list(statement.get("Resource")):
                if _stack_target(resource, resources):
                    continue
                arn = resource.get("Fn::Sub") if isinstance(resource, dict) else resource
                grants = allowed.get(arn) if isinstance(arn, str) else None
                if grants is None or not wanted <= grants:
                    raise PackagingError(
                        f"{where} grants {sorted(covered)} on {arn!r}, which is neither this stack's "
                        "nor a source of its allow-lists with only the actions SOURCE_GRANTS gives it: "
                        "name sources in EXPORTABLE_TABLES, BUNDLE_BUCKETS or LOG_GROUPS "
                        "(.chalice/config.json), never in a policy file"
                    )


#: How the functions' roles may use the stack's key: only through SQS (the encrypted queues the
#: API, the builds, the sweeper and the notifier's dead-letter queue send to and read), only in
#: this account. DynamoDB uses the key through its own grant and CloudWatch Logs as its service
#: principal (the key policy), so no role needs it otherwise: a role's credentials taken
#: elsewhere cannot decrypt with it directly.
KEY_USE_CONDITION: dict[str, Any] = {
    "StringEquals": {
        "kms:ViaService": {"Fn::Sub": "sqs.${AWS::Region}.amazonaws.com"},
        "kms:CallerAccount": {"Ref": "AWS::AccountId"},
    }
}


def _condition_key_use(resources: dict[str, Any], functions: dict[str, Any]) -> None:
    """Every KMS grant of a function's role carries ``KEY_USE_CONDITION``."""
    for function in functions.values():
        role_id, statements = _role_statements(resources, function)
        for statement in statements:
            actions = [str(a).lower() for a in _as_list(statement.get("Action"))]
            if statement.get("Effect") != "Allow" or not any(a.startswith("kms:") for a in actions):
                continue
            if not all(a.startswith("kms:") for a in actions):
                raise PackagingError(f"{role_id} statement {statement.get('Sid')} mixes KMS with other "
                                     "actions: give the key its own statement, which gets its conditions")
            condition = statement.setdefault("Condition", {})
            for operator, keys in KEY_USE_CONDITION.items():
                condition.setdefault(operator, {}).update(copy.deepcopy(keys))


FILES_FENCE_SID = "OnlyTheStackRolesReadFiles"


def _fence_files(resources: dict[str, Any], functions: dict[str, Any]) -> None:
    """The files bucket denies reading an export to everyone but the roles granted it.

    The readers are derived from the roles' own grants (``s3:GetObject`` on the
    bucket's objects: the API, whose role signs the presigned URLs, and the
    builds, which read segments back), so the fence and the grants cannot
    disagree. An account administrator's ``s3:*`` no longer reads users' files;
    the API's URLs still work, since S3 evaluates them as the API's role.
    """
    readers: list[str] = []
    for function in functions.values():
        role_id, statements = _role_statements(resources, function)
        for statement in statements:
            if statement.get("Effect") != "Allow":
                continue
            if not any(fnmatch.fnmatchcase("s3:getobject", str(a).lower())
                       for a in _as_list(statement.get("Action"))):
                continue
            if any(_stack_target(r, resources) == BUCKET
                   for r in _as_list(statement.get("Resource"))) and role_id not in readers:
                readers.append(role_id)
    policies = [r for r in resources.values() if r.get("Type") == "AWS::S3::BucketPolicy"
                and r.get("Properties", {}).get("Bucket") == {"Ref": BUCKET}]
    if len(policies) != 1 or not readers:
        raise PackagingError(f"{BUCKET} needs one bucket policy and a role that reads it "
                             f"(found {len(policies)} policies, readers {readers})")
    statements = policies[0]["Properties"]["PolicyDocument"]["Statement"]
    statements.append({
        "Sid": FILES_FENCE_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:GetObject*",
        "Resource": {"Fn::Sub": f"${{{BUCKET}.Arn}}/*"},
        "Condition": {"ArnNotEquals": {"aws:PrincipalArn": [{"Fn::GetAtt": [r, "Arn"]} for r in readers]}},
    })


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _rewrite_policies(
    resources: dict[str, Any],
    functions: dict[str, Any],
    names: dict[tuple[str, str], str],
) -> None:
    """Point the roles' literal ARNs at the template's resources."""
    log_groups: dict[str, list[str]] = {}
    for logical_id, function in functions.items():
        role = function.get("Properties", {}).get("Role")
        if isinstance(role, dict) and "Fn::GetAtt" in role:
            log_groups.setdefault(role["Fn::GetAtt"][0], []).append(f"{logical_id}LogGroup")

    for role_id, groups in log_groups.items():
        role = resources.get(role_id, {})
        if role.get("Type") != "AWS::IAM::Role":
            continue
        for policy in role.get("Properties", {}).get("Policies", []):
            for statement in policy.get("PolicyDocument", {}).get("Statement", []):
                # Only the function's own logging goes to its log group; reading
                # other log groups (an export source) keeps its named ARNs.
                own_logs = set(_as_list(statement.get("Action"))) <= LOG_WRITE_ACTIONS
                statement["Resource"] = _rewrite_resources(
                    statement.get("Resource"), names, groups if own_logs else None
                )


def _rewrite_resources(resource: Any, names: dict[tuple[str, str], str], log_groups: list[str] | None) -> Any:
    """Rewrite one statement's Resource (a string or a list of them).

    With ``log_groups``, log-group ARNs become those groups (the statement is
    the function's own logging).
    """
    items = resource if isinstance(resource, list) else [resource]
    rewritten: list[Any] = []
    for item in items:
        if (
            log_groups is not None
            and isinstance(item, str)
            and item.startswith("arn:")
            and item.split(":")[2] == "logs"
        ):
            # The role's own function log groups (GetAtt Arn ends in ":*", so
            # it covers their streams too).
            for group in log_groups:
                value = {"Fn::GetAtt": [group, "Arn"]}
                if value not in rewritten:
                    rewritten.append(value)
            continue
        value = _rewrite_arn(item, names)
        if value not in rewritten:
            rewritten.append(value)
    return rewritten if isinstance(resource, list) or len(rewritten) != 1 else rewritten[0]


def _rewrite_arn(arn: Any, names: dict[tuple[str, str], str]) -> Any:
    """One literal ARN to the intrinsic naming the same thing in this stack."""
    if not isinstance(arn, str) or not arn.startswith("arn:"):
        return arn
    parts = arn.split(":", 5)
    if len(parts) != 6:
        raise PackagingError(f"not an ARN: {arn}")
    _, _, service, region, account, rest = parts

    target: str | None = None
    suffix = ""
    if service == "dynamodb" and rest.startswith("table/"):
        table, _, tail = rest[len("table/") :].partition("/")
        target, suffix = names.get(("dynamodb", table)), f"/{tail}" if tail else ""
    elif service == "s3":
        bucket, _, key = rest.partition("/")
        target, suffix = names.get(("s3", bucket)), f"/{key}" if key else ""
    elif service == "sqs":
        target = names.get(("sqs", rest))
    elif service == "events" and rest.startswith("event-bus/"):
        target = names.get(("events", rest[len("event-bus/") :]))
    elif service == "ses" and rest == MAIL_IDENTITY_PLACEHOLDER:
        return copy.deepcopy(MAIL_IDENTITY_ARN)
    elif service == "kms" and rest.startswith("alias/"):
        # IAM matches KMS actions against the key's ARN, never an alias's.
        target = names.get(("kms", rest))

    if target is not None:
        if not suffix:
            return {"Fn::GetAtt": [target, "Arn"]}
        return {"Fn::Sub": f"${{{target}.Arn}}{suffix}"}
    # Something outside the stack (an exportable table, say): same name,
    # but only in this stack's partition, region and account.
    region = "${AWS::Region}" if region == "*" else region
    account = "${AWS::AccountId}" if account == "*" else account
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:{service}:{region}:{account}:{rest}"}


def _wire_authorizers(resources: dict[str, Any]) -> None:
    """Make every Cognito authorizer trust this stack's pool (or the given one)."""
    found = 0
    for resource in resources.values():
        if resource.get("Type") != "AWS::Serverless::Api":
            continue
        body = resource.get("Properties", {}).get("DefinitionBody", {})
        for definition in body.get("securityDefinitions", {}).values():
            if definition.get("x-amazon-apigateway-authtype") != "cognito_user_pools":
                continue
            authorizer = definition.setdefault("x-amazon-apigateway-authorizer", {})
            authorizer["providerARNs"] = [copy.deepcopy(USER_POOL_ARN)]
            found += 1
    if not found:
        raise PackagingError("the API has no Cognito user pool authorizer: its routes would be public")


def _wire_console(functions: dict[str, Any]) -> None:
    """The API function tells the web console which app client to sign in with."""
    api = [f for f in functions.values() if f.get("Properties", {}).get("Handler") == API_HANDLER]
    if not api:
        raise PackagingError(f"no function has the handler {API_HANDLER}: nothing serves the API")
    for function in api:
        variables = function["Properties"]["Environment"]["Variables"]
        variables["USER_POOL_CLIENT_ID"] = copy.deepcopy(USER_POOL_CLIENT_ID)


def _wire_notifier(resources: dict[str, Any], functions: dict[str, Any]) -> None:
    """The notifier hears the stack's own bus (chalice's rule would watch the default bus).

    Its mail links to the console at the API's stage root. Only the notifier
    names the API: the API's own function cannot (the API depends on it).

    EventBridge invokes it asynchronously: Lambda retries a failed event twice
    (its default), then puts it on ``NotifierDeadLetterQueue`` (alarmed) rather
    than dropping it, so an operator can put it back on the bus once SES works
    (the task's lease on the mail makes that safe). Lambda sends there with the
    function's role: its policy must allow exactly that queue.
    """
    for function in functions.values():
        props = function.get("Properties", {})
        if props.get("Handler") != NOTIFIER_HANDLER:
            continue
        rules = [e for e in props.get("Events", {}).values() if e.get("Type") == "CloudWatchEvent"]
        if not rules:
            raise PackagingError(f"{NOTIFIER_HANDLER} has no event rule: no mail would go out")
        for rule in rules:
            rule["Properties"]["EventBusName"] = {"Ref": EVENT_BUS}
        props["Environment"]["Variables"]["CONSOLE_URL"] = copy.deepcopy(CONSOLE_URL)
        # a burst of endings becomes a queue of invocations (Lambda holds throttled events and
        # retries them for hours), not a burst on SES's sending rate
        props["ReservedConcurrentExecutions"] = NOTIFIER_CONCURRENCY
        dlq = {"Fn::GetAtt": [NOTIFIER_DLQ, "Arn"]}
        props["DeadLetterQueue"] = {"Type": "SQS", "TargetArn": dlq}
        role_id = props.get("Role", {}).get("Fn::GetAtt", [""])[0]
        senders = [
            resource
            for policy in resources.get(role_id, {}).get("Properties", {}).get("Policies", [])
            for statement in policy.get("PolicyDocument", {}).get("Statement", [])
            if statement.get("Effect") == "Allow" and "sqs:SendMessage" in _as_list(statement.get("Action"))
            for resource in _as_list(statement.get("Resource"))
        ]
        if senders != [dlq]:
            raise PackagingError(
                f"{NOTIFIER_HANDLER} sends failed events to {NOTIFIER_DLQ}, but its role grants "
                f"sqs:SendMessage on {senders}: grant it on download-center-notifier-dlq only"
            )


_NO_VPC = (
    "CKV_AWS_117",
    "Not in a VPC: the functions call only AWS APIs (DynamoDB, S3, SQS, EventBridge, CloudWatch Logs, "
    "X-Ray), over TLS and authorized by IAM; a VPC would add NAT or endpoint costs and cold-start "
    "latency and protect nothing more.",
)
_PLAIN_ENVIRONMENT = (
    "CKV_AWS_173",
    "The environment holds resource names and tunables only, no secret (CKV_AWS_45 checks for them); "
    "Lambda already encrypts it at rest with its service key, so the stack's key would protect "
    "nothing more. Secrets belong in Secrets Manager, not in the environment.",
)

# checkov checks that do not apply to resources chalice generates, by logical
# id, each with the reason a reviewer can verify. They go into the resources'
# Metadata, where checkov reads skips; the resources of infra/resources.json
# carry their skips in their own Metadata. tests/test_infra.py fails on a skip
# that checkov no longer needs, and on any check that fails.
CHECKOV_SKIPS: dict[str, tuple[tuple[str, str], ...]] = {
    "APIHandler": (
        _NO_VPC,
        _PLAIN_ENVIRONMENT,
        (
            "CKV_AWS_116",
            "API Gateway invokes it synchronously, never asynchronously: a dead-letter queue for failed "
            "asynchronous events would stay empty; errors reach the caller as 5xx, which "
            "ApiServerErrorsAlarm watches.",
        ),
    ),
    "BuildWorker": (
        _NO_VPC,
        _PLAIN_ENVIRONMENT,
        (
            "CKV_AWS_116",
            "Its SQS event source invokes it synchronously: a failed message returns to BuildQueue and, "
            "after maxReceiveCount, moves to the queue's dead-letter queue (BuildDeadLetterQueue, "
            "alarmed). A function dead-letter queue only serves asynchronous invocations.",
        ),
    ),
    "Sweeper": (
        _NO_VPC,
        _PLAIN_ENVIRONMENT,
        (
            "CKV_AWS_116",
            "Only the one-minute schedule invokes it: a failed tick carries no data (the next tick sweeps "
            "everything due again), so a dead-letter queue would keep nothing of use; failing sweeps "
            "page through SweeperErrorsAlarm.",
        ),
    ),
    "Notifier": (
        _NO_VPC,
        _PLAIN_ENVIRONMENT,
    ),
    "RestAPI": (
        (
            "CKV_AWS_120",
            "No stage cache: responses are per user and change while builds run (status, progress, "
            "download redirects to short-lived URLs); a cache would serve stale or another user's "
            "answers, and it bills by the hour.",
        ),
    ),
}


def _skip_checkov_checks(resources: dict[str, Any]) -> None:
    """Write ``CHECKOV_SKIPS`` into the generated resources' ``Metadata.checkov.skip``."""
    for logical_id, skips in CHECKOV_SKIPS.items():
        if logical_id not in resources:
            continue  # a cut-down template (the tests'); the packaging test checks the real one
        metadata = resources[logical_id].setdefault("Metadata", {})
        listed = metadata.setdefault("checkov", {}).setdefault("skip", [])
        listed.extend({"id": check_id, "comment": comment} for check_id, comment in skips)


def unauthenticated_routes(template: dict[str, Any]) -> list[str]:
    """Routes without an authorizer, so that the packager can point them out (OPTIONS aside)."""
    return [f"{method} {path}" for path, method in public_operations(template) if method != "OPTIONS"]


#: Distributions every Lambda Python runtime provides (in /var/runtime); the
#: package leaves them out together with everything they require, so the code
#: runs on one consistent SDK (the runtime's) rather than the runtime's boto3
#: on a packaged botocore. What the code needs of the SDK is old: PynamoDB asks
#: for botocore >= 1.12.54, and the newest feature used is the "standard"
#: retry mode (botocore 1.15, 2020).
RUNTIME_SDK = ("boto3", "botocore", "s3transfer")
_DIST_INFO = re.compile(r"^([^/]+)-[^/-]+\.dist-info/METADATA$")
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
#: an optional dependency (``...; extra == 'crt'``), never installed by chalice
_EXTRA_ONLY = re.compile(r";.*\bextra\s*==")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def required_name(requirement: str) -> str | None:
    """The distribution a ``Requires-Dist`` names, or None for an optional (extra) one."""
    name = _REQUIREMENT_NAME.match(requirement)
    if name is None or _EXTRA_ONLY.search(requirement):
        return None
    return _canonical(name.group(1))


def distributions(archive: zipfile.ZipFile) -> dict[str, tuple[str, list[str]]]:
    """Each distribution in the zip: its dist-info folder and what it requires (no extras)."""
    found: dict[str, tuple[str, list[str]]] = {}
    for entry in archive.namelist():
        match = _DIST_INFO.match(entry)
        if not match:
            continue
        metadata = HeaderParser().parsestr(archive.read(entry).decode("utf-8"))
        requires = [name for name in map(required_name, metadata.get_all("Requires-Dist") or [])
                    if name is not None]
        found[_canonical(metadata["Name"])] = (entry.rsplit("/", 1)[0], requires)
    return found


def runtime_sdk_closure(archive: zipfile.ZipFile) -> set[str]:
    """The packaged distributions the runtime provides: ``RUNTIME_SDK`` and what they require."""
    dists = distributions(archive)
    closure: set[str] = set()
    pending = [_canonical(name) for name in RUNTIME_SDK]
    while pending:
        name = pending.pop()
        if name in closure or name not in dists:
            continue
        closure.add(name)
        pending.extend(dists[name][1])
    return closure


def top_level_entries(archive: zipfile.ZipFile, dist_info: str) -> set[str]:
    """The top-level names (packages, modules, the dist-info folder) a distribution installed."""
    names = {dist_info}
    record = archive.read(f"{dist_info}/RECORD").decode("utf-8")
    for line in record.splitlines():
        path = line.split(",", 1)[0]
        if path and not path.startswith(".."):
            names.add(path.split("/", 1)[0])
    return names


def strip_runtime_sdk(zip_path: Path) -> list[str]:
    """Rewrite the code package without the runtime's SDK; return the distributions left out."""
    with zipfile.ZipFile(zip_path) as archive:
        closure = runtime_sdk_closure(archive)
        dists = distributions(archive)
        dropped: set[str] = set()
        for name in closure:
            dropped |= top_level_entries(archive, dists[name][0])
        kept = [info for info in archive.infolist() if info.filename.split("/", 1)[0] not in dropped]
        if len(kept) == len(archive.infolist()):
            return []
        lean = zip_path.with_suffix(".lean.zip")
        with zipfile.ZipFile(lean, "w", zipfile.ZIP_DEFLATED) as out:
            for info in kept:
                with archive.open(info) as source, out.open(info, "w") as target:
                    shutil.copyfileobj(source, target)
    lean.replace(zip_path)
    return sorted(closure)


def add_openapi_document(zip_path: Path, project_dir: Path) -> None:
    """Put ``docs/openapi.yaml``, as JSON, where ``chalicelib.openapi`` reads it in Lambda.

    The function then serves ``GET /openapi.json`` without a YAML parser, and
    the YAML file stays the one source.
    """
    import yaml  # a development dependency: packaging runs on a developer's machine or in CI

    from chalicelib.openapi import PACKAGED_NAME

    source = project_dir / "docs" / "openapi.yaml"
    if not source.is_file():
        raise PackagingError(f"{source} is missing: GET /openapi.json would have nothing to serve")
    document = yaml.safe_load(source.read_text(encoding="utf-8"))
    with zipfile.ZipFile(zip_path, "a", zipfile.ZIP_DEFLATED) as archive:
        if PACKAGED_NAME in archive.namelist():
            raise PackagingError(f"{PACKAGED_NAME} is in the project: it must only be written here")
        archive.writestr(PACKAGED_NAME, json.dumps(document, ensure_ascii=False, separators=(",", ":")))


def lint(template_path: Path) -> tuple[list[str], list[str]]:
    """cfn-lint the template; return (errors, warnings) as printable lines."""
    from cfnlint.api import lint_file  # imported late: it is slow to load

    errors: list[str] = []
    warnings: list[str] = []
    for match in lint_file(template_path):
        line = f"{match.rule.id} {match.message} ({template_path.name}:{match.linenumber})"
        (errors if match.rule.id.startswith("E") else warnings).append(line)
    return errors, warnings


def package(project_dir: Path, stage: str, out_dir: Path) -> tuple[Path, list[str]]:
    """Package, wire and lint; return the template path and the lint warnings."""
    out_dir = out_dir.resolve()
    template_path = run_chalice_package(project_dir.resolve(), stage, out_dir)
    strip_runtime_sdk(out_dir / DEPLOYMENT_ZIP)
    add_openapi_document(out_dir / DEPLOYMENT_ZIP, project_dir.resolve())
    template = json.loads(template_path.read_text(encoding="utf-8"))
    template = post_process(template)
    template_path.write_text(json.dumps(template, indent=2) + "\n", encoding="utf-8")
    errors, warnings = lint(template_path)
    if errors:
        raise PackagingError("cfn-lint found errors:\n  " + "\n  ".join(errors))
    return template_path, warnings


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.package", description=__doc__)
    parser.add_argument("--stage", default="prod", help="chalice stage (default: prod)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument(
        "--project-dir",
        type=Path,
        default=PROJECT_ROOT,
        help="chalice project to package (default: this repository)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = _parse_args(argv)
    try:
        template_path, warnings = package(args.project_dir, args.stage, args.out)
    except PackagingError as exc:
        print(f"package: {exc}", file=sys.stderr)
        return 1
    for line in warnings:
        print(f"cfn-lint warning: {line}", file=sys.stderr)
    template = json.loads(template_path.read_text(encoding="utf-8"))
    for route in unauthenticated_routes(template):
        print(f"note: {route} has no authorizer", file=sys.stderr)
    print(f"wrote {template_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
