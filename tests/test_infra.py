"""The deployment template and the local stack are built from the same definitions.

Two halves: ``tools.package`` must turn ``chalice package`` + ``infra/resources.json``
into a template that cfn-lint accepts and that wires the functions to the
stack's own resources; ``local.provision`` must create those same resources on
a moto server, idempotently.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import yaml
from moto import mock_aws
from moto.server import ThreadedMotoServer

from local import provision as provision_module
from local.provision import provision
from tools import checkov_scan, package

ROOT = Path(__file__).resolve().parent.parent
RESOURCES = json.loads((ROOT / "infra" / "resources.json").read_text(encoding="utf-8"))
CHALICE_CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text(encoding="utf-8"))

EXPECTED_INDEXES = {
    "by_owner": ("owner", "id", "ALL"),
    "by_tenant": ("tenant", "id", "ALL"),
    "by_scope": ("scope", "id", "ALL"),
    "by_due": ("sweep", "due_at", "KEYS_ONLY"),
}
FUNCTION = "AWS::Serverless::Function"
KEY_ARN = {"Fn::GetAtt": ["EncryptionKey", "Arn"]}
# X-Ray has no resource-level permissions: the only actions a role may grant on "*".
XRAY_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
USER_POOL_ARN = {
    "Fn::If": [
        "CreateUserPool",
        {"Fn::GetAtt": ["UserPool", "Arn"]},
        {"Ref": "ExistingUserPoolArn"},
    ]
}


@pytest.fixture(autouse=True)
def fake_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never reach real AWS, whatever the developer's shell has configured."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


def _indexes(gsis: list[dict[str, Any]]) -> dict[str, tuple[str, str, str]]:
    """{index: (hash key, range key, projection)} from template or API shapes."""
    result = {}
    for gsi in gsis:
        keys = {k["KeyType"]: k["AttributeName"] for k in gsi["KeySchema"]}
        result[gsi["IndexName"]] = (keys["HASH"], keys["RANGE"], gsi["Projection"]["ProjectionType"])
    return result


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in role["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --------------------------------------------------------------------------
# tools.package: the real `make package` into a temporary directory
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run ``python -m tools.package --stage prod --out DIR`` once for the module."""
    out = tmp_path_factory.mktemp("package") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.delenv("AWS_PROFILE", raising=False)
        status = package.main(["--stage", "prod", "--out", str(out)])
    assert status == 0, "tools.package failed; its stderr above says why"
    path = out / package.TEMPLATE_NAME
    return {"path": path, "template": json.loads(path.read_text(encoding="utf-8"))}


@pytest.mark.packaging
def test_packaged_template_passes_cfn_lint(packaged: dict[str, Any]) -> None:
    errors, _warnings = package.lint(packaged["path"])
    assert errors == []
    assert (packaged["path"].parent / "deployment.zip").is_file()


# -- the code package leaves the AWS SDK to the Lambda runtime ----------------------------------
SDK_CHECK = """
import sys
sys.path[:0] = sys.argv[1:3]
import app  # noqa
import boto3, botocore
from chalicelib.exporters.s3_bundle import stream_bundle
from chalicelib.formats import xlsx
assert sys.modules["pynamodb"].__file__.startswith(sys.argv[1]), "pynamodb not from the package"
assert botocore.__file__.startswith(sys.argv[2]), "botocore not from the runtime"
assert b"".join(stream_bundle([("a.txt", "a.txt", None, [b"x"])]))[:2] == b"PK"
assert b"".join(xlsx.write_xlsx(["a"], [{"a": 1}], lambda n: None))[:2] == b"PK"
boto3.client("s3", region_name="us-east-1")
print("ok")
"""


def _runtime_sdk(into: Path) -> None:
    """A stand-in for the runtime's /var/runtime: the SDK distributions of this venv, and nothing else."""
    from importlib import metadata

    pending, seen = list(package.RUNTIME_SDK), set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(name)
        for file in dist.files or []:
            source = Path(dist.locate_file(file))
            if ".." in file.parts or not source.is_file():
                continue
            (into / file).parent.mkdir(parents=True, exist_ok=True)
            (into / file).write_bytes(source.read_bytes())
        pending += [n for n in map(package.required_name, dist.requires or []) if n is not None]


@pytest.mark.packaging
def test_the_code_package_leaves_the_sdk_to_the_runtime_and_runs_on_it(
    packaged: dict[str, Any], tmp_path: Path,
) -> None:
    import sys
    import zipfile

    zip_path = packaged["path"].parent / package.DEPLOYMENT_ZIP
    with zipfile.ZipFile(zip_path) as archive:
        assert package.runtime_sdk_closure(archive) == set()
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
        archive.extractall(tmp_path / "task")
    assert {"app.py", "chalicelib", "pynamodb", "stream_zip"} <= tops
    # GET /openapi.json serves docs/openapi.yaml, carried as JSON (no YAML parser in Lambda)
    served = json.loads((tmp_path / "task" / "chalicelib" / "openapi.json").read_text("utf-8"))
    assert served == yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text("utf-8"))
    assert (tmp_path / "task" / "chalicelib" / "console" / "index.html").is_file()
    assert not tops & {"boto3", "botocore", "s3transfer", "urllib3", "dateutil", "jmespath"}
    _runtime_sdk(tmp_path / "runtime")
    # no site-packages: the package and the SDK are all the code sees, as in Lambda
    paths = [str(tmp_path / "task"), str(tmp_path / "runtime")]
    result = subprocess.run(
        [sys.executable, "-E", "-S", "-B", "-c", SDK_CHECK, *paths], cwd=tmp_path / "task",
        capture_output=True, text=True, check=False,
        env={"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"},
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def _fake_dist(archive: Any, name: str, top: str, requires: tuple[str, ...] = ()) -> None:
    info = f"{name.replace('-', '_')}-1.0.dist-info"
    archive.writestr(f"{top}/__init__.py", "")
    archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: " + name + "\n"
                     + "".join(f"Requires-Dist: {r}\n" for r in requires))
    archive.writestr(f"{info}/RECORD", f"{top}/__init__.py,,\n{info}/METADATA,,\n{info}/RECORD,,\n"
                     f"../../bin/{top},,\n")


def test_strip_runtime_sdk_drops_the_sdk_and_what_it_requires_only(tmp_path: Path) -> None:
    import zipfile

    zip_path = tmp_path / "deployment.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        _fake_dist(archive, "botocore", "botocore",
                   ("jmespath (<2,>=0.7)", "python-dateutil (<3,>=2.1)", "awscrt (==0.38) ; extra == 'crt'"))
        _fake_dist(archive, "jmespath", "jmespath")
        _fake_dist(archive, "python-dateutil", "dateutil", ("six>=1.5",))
        _fake_dist(archive, "six", "six_pkg")
        _fake_dist(archive, "awscrt", "awscrt")
        _fake_dist(archive, "PynamoDB", "pynamodb", ("botocore>=1.12.54",))
        archive.writestr("app.py", "import pynamodb\n")
        archive.writestr("chalicelib/__init__.py", "")
    assert package.strip_runtime_sdk(zip_path) == ["botocore", "jmespath", "python-dateutil", "six"]
    with zipfile.ZipFile(zip_path) as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
        assert archive.testzip() is None
    assert tops == {"app.py", "chalicelib", "awscrt", "awscrt-1.0.dist-info", "pynamodb",
                    "PynamoDB-1.0.dist-info"}
    assert package.strip_runtime_sdk(zip_path) == []  # nothing left to strip: the zip is untouched


@pytest.mark.packaging
def test_packaged_table_has_indexes_ttl_and_protection(packaged: dict[str, Any]) -> None:
    table = packaged["template"]["Resources"]["TasksTable"]
    props = table["Properties"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert _indexes(props["GlobalSecondaryIndexes"]) == EXPECTED_INDEXES
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": KEY_ARN}
    assert table["DeletionPolicy"] == "Retain"


@pytest.mark.packaging
def test_packaged_queue_redrives_to_dlq_and_outlasts_the_worker(packaged: dict[str, Any]) -> None:
    resources = packaged["template"]["Resources"]
    queue = resources["BuildQueue"]["Properties"]
    dlq = resources["BuildDeadLetterQueue"]["Properties"]
    assert queue["QueueName"] == "download-center-builds"
    assert dlq["QueueName"] == "download-center-builds-dlq"
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["BuildDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    worker_timeout = resources["BuildWorker"]["Properties"]["Timeout"]
    assert worker_timeout == CHALICE_CONFIG["lambda_functions"]["build_worker"]["lambda_timeout"]
    assert min(6 * worker_timeout, 43200) <= queue["VisibilityTimeout"] <= 43200
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert queue["KmsMasterKeyId"] == KEY_ARN and dlq["KmsMasterKeyId"] == KEY_ARN
    assert "SqsManagedSseEnabled" not in queue and "SqsManagedSseEnabled" not in dlq


ACCOUNT = "123456789012"


def _resolve(value: Any, template: dict[str, Any], parameters: dict[str, str]) -> Any:
    """The value CloudFormation makes of ``value`` for these parameter values.

    Enough of it for a policy: Ref of a parameter or the account, GetAtt Arn
    (``arn:<logical id>``), Fn::If on the template's Not/Equals conditions,
    Fn::Join, Fn::Split, and AWS::NoValue dropped from lists.
    """
    def condition(name: str) -> bool:
        def holds(c: Any) -> bool:
            if "Fn::Not" in c:
                return not holds(c["Fn::Not"][0])
            left, right = (_resolve(v, template, parameters) for v in c["Fn::Equals"])
            return bool(left == right)
        return holds(template["Conditions"][name])

    if isinstance(value, list):
        items = [_resolve(v, template, parameters) for v in value]
        return [v for v in items if v is not NO_VALUE]
    if not isinstance(value, dict):
        return value
    if value == {"Ref": "AWS::NoValue"}:
        return NO_VALUE
    if "Ref" in value:
        return ACCOUNT if value["Ref"] == "AWS::AccountId" else parameters.get(
            value["Ref"], template["Parameters"].get(value["Ref"], {}).get("Default"))
    if "Fn::GetAtt" in value:
        return f"arn:{value['Fn::GetAtt'][0]}"
    if "Fn::If" in value:
        name, then, otherwise = value["Fn::If"]
        return _resolve(then if condition(name) else otherwise, template, parameters)
    if "Fn::Join" in value:
        sep, items = value["Fn::Join"]
        return sep.join(_resolve(items, template, parameters))
    if "Fn::Split" in value:
        sep, text = value["Fn::Split"]
        return _resolve(text, template, parameters).split(sep)
    return {k: _resolve(v, template, parameters) for k, v in value.items()}


NO_VALUE = object()


def may_send(template: dict[str, Any], parameters: dict[str, str], principal: str | None = None,
             rule: str | None = None) -> bool:
    """Whether the build queue's policy lets this principal send (or EventBridge, for this rule).

    An IAM principal of the account may send unless a Deny says otherwise (its
    own grant is assumed); a service needs an Allow.
    """
    (policy,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::SQS::QueuePolicy"
                 and {"Ref": "BuildQueue"} in r["Properties"]["Queues"]]
    statements = _resolve(policy["Properties"]["PolicyDocument"]["Statement"], template, parameters)
    context = {"aws:PrincipalArn": principal} if principal else {
        "aws:SourceArn": rule, "aws:SourceAccount": ACCOUNT}
    operators = {"Null": lambda have, want: (have is None) == (want == "true"),
                 "ArnNotEquals": lambda have, want: have is None or have not in _as_list(want),
                 "ArnEquals": lambda have, want: have in _as_list(want),
                 "StringEquals": lambda have, want: have in _as_list(want)}
    allowed = principal is not None
    for statement in statements:
        assert statement["Action"] == "sqs:SendMessage" and statement["Resource"] == "arn:BuildQueue"
        applies = statement["Principal"] == "*" or (
            principal is None and statement["Principal"] == {"Service": "events.amazonaws.com"})
        applies = applies and all(operators[op](context.get(key), want)
                                  for op, keys in statement.get("Condition", {}).items()
                                  for key, want in keys.items())
        if applies and statement["Effect"] == "Deny":
            return False
        allowed = allowed or (applies and statement["Effect"] == "Allow")
    return allowed


@pytest.mark.packaging
def test_packaged_queue_lets_only_the_stacks_roles_and_the_named_senders_send(
    packaged: dict[str, Any],
) -> None:
    """Issue 19: any principal of the account with sqs:SendMessage could ask for any export for anyone."""
    template = packaged["template"]
    resources = template["Resources"]
    roles = {props["Handler"]: f"arn:{props['Role']['Fn::GetAtt'][0]}"
             for props in (r["Properties"] for r in resources.values() if r["Type"] == FUNCTION)}
    stack_senders = {roles["app.app"], roles["app.build_worker"], roles["app.sweeper"]}
    iam = f"arn:aws:iam::{ACCOUNT}"
    others = {f"{iam}:role/crm", f"{iam}:role/admin", f"{iam}:root", f"{iam}:user/ops"}
    everyone = set(roles.values()) | others
    assert {p for p in everyone if may_send(template, {}, p)} == stack_senders  # the notifier neither
    named = {"QueueSenderArns": f"{iam}:role/crm,{iam}:user/ops"}
    assert {p for p in everyone if may_send(template, named, p)} == stack_senders | {
        f"{iam}:role/crm", f"{iam}:user/ops"}
    rule = f"arn:aws:events:us-east-1:{ACCOUNT}:rule/crm-exports"
    assert not may_send(template, {}, rule=rule)  # no rule unless named
    assert may_send(template, {"QueueSenderRuleArns": rule}, rule=rule)
    assert not may_send(template, {"QueueSenderRuleArns": rule}, rule=rule + "-other")

    for name, good, bad in (
        ("QueueSenderArns", named["QueueSenderArns"], f"{iam}:role/crm, {iam}:role/x"),
        ("QueueSenderRuleArns", f"{rule},{rule}-2", f"{iam}:role/crm"),
    ):
        parameter = template["Parameters"][name]
        assert parameter["Default"] == ""
        pattern = parameter["AllowedPattern"]
        assert re.fullmatch(pattern, good) and re.fullmatch(pattern, "")
        assert not re.fullmatch(pattern, bad)  # a space would name nobody


def test_post_process_lets_the_stacks_rules_that_target_the_queue_send() -> None:
    template = _chalice_like_template()
    template["Resources"]["CrmRule"] = {"Type": "AWS::Events::Rule", "Properties": {
        "EventPattern": {"detail-type": ["download.request"]},
        "Targets": [{"Id": "q", "Arn": {"Fn::GetAtt": ["BuildQueue", "Arn"]}}]}}
    wired = package.post_process(template)
    assert may_send(wired, {}, rule="arn:CrmRule") and not may_send(wired, {}, rule="arn:Other")
    assert may_send(wired, {}, "arn:BuildWorkerRole") and not may_send(wired, {}, "arn:someone")


def test_post_process_refuses_a_template_without_the_queue_policy() -> None:
    template = _chalice_like_template()
    del template["Resources"]["BuildQueuePolicy"]
    with pytest.raises(package.PackagingError, match="BuildQueuePolicy"):
        package.post_process(template)


@pytest.mark.packaging
def test_packaged_key_rotates_outlives_the_stack_and_serves_its_services(
    packaged: dict[str, Any],
) -> None:
    resources = packaged["template"]["Resources"]
    key = resources["EncryptionKey"]
    assert key["Type"] == "AWS::KMS::Key"
    # the retained table stays readable after the stack is gone
    assert key["DeletionPolicy"] == "Retain" == resources["TasksTable"]["DeletionPolicy"]
    assert key["Properties"]["EnableKeyRotation"] is True
    alias = resources["EncryptionKeyAlias"]["Properties"]
    assert alias == {"AliasName": "alias/download-center", "TargetKeyId": {"Ref": "EncryptionKey"}}

    statements = {s["Sid"]: s for s in key["Properties"]["KeyPolicy"]["Statement"]}
    assert all(s["Principal"] != "*" and s["Principal"] != {"AWS": "*"} for s in statements.values())
    account = statements["TheAccountGrantsUseThroughIam"]
    assert account["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    logs = statements["CloudWatchLogsEncryptsTheStackLogGroups"]
    assert logs["Principal"] == {"Service": {"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}}
    # CloudWatch Logs may use it for this stack's log groups only
    groups = logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert all("${AWS::StackName}-" in g["Fn::Sub"] for g in groups)
    # an alarm cannot publish to an SNS topic under a key CloudWatch may not use
    alarms = statements["CloudWatchAlarmsPublishToTheEncryptedTopic"]
    assert alarms["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert set(alarms["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    rules = statements["EventBridgeRulesSendToTheEncryptedQueue"]
    assert rules["Principal"] == {"Service": "events.amazonaws.com"}

    log_groups = [r for r in resources.values() if r["Type"] == "AWS::Logs::LogGroup"]
    assert log_groups
    assert all(g["Properties"]["KmsKeyId"] == KEY_ARN for g in log_groups)


@pytest.mark.packaging
def test_packaged_bucket_is_private_encrypted_and_expires_downloads(
    packaged: dict[str, Any],
) -> None:
    resources = packaged["template"]["Resources"]
    props = resources["FilesBucket"]["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse == [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    name = props["BucketName"]["Fn::Sub"]
    assert "${AWS::AccountId}" in name and "${AWS::Region}" in name

    rules = {rule["Id"]: rule for rule in props["LifecycleConfiguration"]["Rules"]}
    file_ttl_days = int(CHALICE_CONFIG["environment_variables"]["FILE_TTL_DAYS"])
    assert rules["expire-downloads"]["Prefix"] == "downloads/"
    assert rules["expire-downloads"]["ExpirationInDays"] == file_ttl_days + 1
    abort = rules["abort-incomplete-multipart-uploads"]
    assert abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert "Prefix" not in abort  # the whole bucket

    (deny_http,) = [
        s
        for s in resources["FilesBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
        if s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert deny_http["Effect"] == "Deny" and deny_http["Principal"] == "*"
    assert props["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": "AccessLogsBucket"},
        "LogFilePrefix": "files/",
    }


@pytest.mark.packaging
def test_packaged_access_logs_bucket_takes_only_the_files_bucket_logs(packaged: dict[str, Any]) -> None:
    resources = packaged["template"]["Resources"]
    bucket = resources["AccessLogsBucket"]
    props = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert all(props["PublicAccessBlockConfiguration"].values())
    # S3 log delivery writes to SSE-S3 targets only (not SSE-KMS)
    sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse == [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    (expiry,) = props["LifecycleConfiguration"]["Rules"]
    assert expiry["ExpirationInDays"] == {"Ref": "LogRetentionDays"} and "Prefix" not in expiry

    statements = resources["AccessLogsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    (delivery,) = [s for s in statements if s["Effect"] == "Allow"]
    assert delivery["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert delivery["Action"] == "s3:PutObject"
    assert delivery["Resource"] == {"Fn::Sub": "${AccessLogsBucket.Arn}/files/*"}
    assert delivery["Condition"]["ArnLike"] == {"aws:SourceArn": {"Fn::GetAtt": ["FilesBucket", "Arn"]}}
    assert delivery["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert any(s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}} for s in statements)


@pytest.mark.packaging
def test_packaged_functions_use_the_stack_resources(packaged: dict[str, Any]) -> None:
    resources = packaged["template"]["Resources"]
    functions = {
        props["Handler"]: props
        for props in (r["Properties"] for r in resources.values() if r["Type"] == "AWS::Serverless::Function")
    }
    assert {"app.app", "app.build_worker"} <= set(functions)
    assert functions["app.app"]["Environment"]["Variables"]["USER_POOL_CLIENT_ID"] == {
        "Fn::If": ["CreateUserPool", {"Ref": "UserPoolClient"}, {"Ref": "ExistingUserPoolClientId"}]}
    for props in functions.values():
        env = props["Environment"]["Variables"]
        assert env["TASKS_TABLE"] == {"Ref": "TasksTable"}
        assert env["FILES_BUCKET"] == {"Ref": "FilesBucket"}
        assert env["BUILD_QUEUE_URL"] == {"Ref": "BuildQueue"}
        assert env["DEAD_LETTER_QUEUE_URL"] == {"Ref": "BuildDeadLetterQueue"}
        assert env["EVENT_BUS_NAME"] == {"Ref": "EventBus"}
        # config.json's other settings survive the rewrite
        assert env["FILE_TTL_DAYS"] == CHALICE_CONFIG["environment_variables"]["FILE_TTL_DAYS"]
        log_group = props["LoggingConfig"]["LogGroup"]["Ref"]
        assert resources[log_group]["Type"] == "AWS::Logs::LogGroup"

    (trigger,) = functions["app.build_worker"]["Events"].values()
    assert trigger["Type"] == "SQS"
    assert trigger["Properties"]["Queue"] == {"Fn::GetAtt": ["BuildQueue", "Arn"]}
    assert trigger["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # one build an invocation: each starts with the whole time budget
    assert trigger["Properties"]["BatchSize"] == 1
    assert functions["app.build_worker"]["EphemeralStorage"] == {"Size": {"Ref": "WorkerEphemeralStorageMB"}}
    assert packaged["template"]["Parameters"]["WorkerEphemeralStorageMB"]["Default"] == 2048


@pytest.mark.packaging
def test_packaged_authorizer_trusts_created_or_given_pool(packaged: dict[str, Any]) -> None:
    template = packaged["template"]
    assert template["Parameters"]["ExistingUserPoolArn"]["Default"] == ""
    assert template["Conditions"]["CreateUserPool"] == {"Fn::Equals": [{"Ref": "ExistingUserPoolArn"}, ""]}
    resources = template["Resources"]
    for name in ("UserPool", "UserPoolAdminGroup", "UserPoolTenantAdminGroup", "UserPoolClient"):
        assert resources[name]["Condition"] == "CreateUserPool"
    # every group the access policy gives a wider view exists in the pool the stack creates
    from chalicelib.policy import load
    groups = {r["Properties"]["GroupName"] for r in resources.values()
              if r["Type"] == "AWS::Cognito::UserPoolGroup"}
    assert set(load().visibility) <= groups == {"admin", "tenant-admin"}
    schema = resources["UserPool"]["Properties"]["Schema"]
    assert any(a["Name"] == "tenant" and a["AttributeDataType"] == "String" for a in schema)
    # users cannot rewrite their own tenant through the app client
    assert "custom:tenant" not in resources["UserPoolClient"]["Properties"]["WriteAttributes"]

    body = resources["RestAPI"]["Properties"]["DefinitionBody"]
    cognito = [
        d
        for d in body["securityDefinitions"].values()
        if d.get("x-amazon-apigateway-authtype") == "cognito_user_pools"
    ]
    assert cognito, "app.py declares no Cognito authorizer"
    for definition in cognito:
        assert definition["x-amazon-apigateway-authorizer"]["providerARNs"] == [USER_POOL_ARN]
    secured = [op for path in body["paths"].values() for op in path.values() if op.get("security")]
    assert secured, "no route uses the authorizer"


def _functions_by_handler(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    resources = template["Resources"].values()
    return {r["Properties"]["Handler"]: r["Properties"] for r in resources if r["Type"] == FUNCTION}


@pytest.mark.packaging
def test_packaged_worker_concurrency_is_capped_and_sweeps_run_one_at_a_time(
    packaged: dict[str, Any],
) -> None:
    template = packaged["template"]
    parameter = template["Parameters"]["WorkerReservedConcurrency"]
    assert parameter["Type"] == "Number" and parameter["Default"] == 50
    assert (parameter["MinValue"], parameter["MaxValue"]) == (2, 1000)  # an SQS trigger's range
    functions = _functions_by_handler(template)

    worker = functions["app.build_worker"]
    limit = {"Ref": "WorkerReservedConcurrency"}
    assert worker["ReservedConcurrentExecutions"] == limit
    (trigger,) = worker["Events"].values()
    # the poller stops at the same number, so no delivery is throttled toward the DLQ
    assert trigger["Properties"]["ScalingConfig"] == {"MaximumConcurrency": limit}

    sweeper = functions["app.sweeper"]
    assert sweeper["ReservedConcurrentExecutions"] == 1
    assert sweeper["EventInvokeConfig"] == {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}
    # the API cannot take the account's pool: it serves at most its reservation at once
    assert functions["app.app"]["ReservedConcurrentExecutions"] == {"Ref": "ApiReservedConcurrency"}
    parameter = template["Parameters"]["ApiReservedConcurrency"]
    assert parameter["Type"] == "Number" and parameter["Default"] == 50 and parameter["MinValue"] >= 1


#: the routes the function serves without a token (chalice answers every method on them)
PUBLIC_PATHS = {"/", "/health", "/openapi.json", "/console/config.json", "/console/{version}/{name}"}


@pytest.mark.packaging
def test_packaged_stage_throttles_every_method_and_the_public_routes_lower(packaged: dict[str, Any]) -> None:
    template = packaged["template"]
    defaults = {name: template["Parameters"][name]["Default"]
                for name in ("ApiRateLimit", "ApiBurstLimit", "PublicRateLimit", "PublicBurstLimit")}
    assert defaults == {"ApiRateLimit": 50, "ApiBurstLimit": 100,
                        "PublicRateLimit": 10, "PublicBurstLimit": 20}
    assert all(template["Parameters"][name]["Type"] == "Number" for name in defaults)
    settings = template["Resources"]["RestAPI"]["Properties"]["MethodSettings"]
    by_method = {(s["ResourcePath"], s["HttpMethod"]): (s["ThrottlingRateLimit"], s["ThrottlingBurstLimit"])
                 for s in settings}
    assert len(by_method) == len(settings)
    assert by_method.pop(("/*", "*")) == ({"Ref": "ApiRateLimit"}, {"Ref": "ApiBurstLimit"})
    paths = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["paths"]
    public = {(path, method.upper()) for path, methods in paths.items() if path in PUBLIC_PATHS
              for method in methods}
    assert "OPTIONS" in {m for _, m in public}  # it reaches the function too
    # each public method by its encoded resource path (API Gateway's "~1" for "/")
    encoded = {(path if path == "/" else "/" + path.replace("/", "~1"), m) for path, m in public}
    assert set(by_method) == encoded
    assert ("/~1console~1{version}~1{name}", "GET") in by_method
    assert all(v == ({"Ref": "PublicRateLimit"}, {"Ref": "PublicBurstLimit"}) for v in by_method.values())
    # every route that needs no token is one of those: nothing starts the function for anyone unthrottled
    assert {path for path, _ in package.public_operations(template)} == PUBLIC_PATHS


@pytest.mark.packaging
def test_packaged_api_and_functions_trace_and_log_every_request(packaged: dict[str, Any]) -> None:
    template = packaged["template"]
    resources = template["Resources"]
    api = resources["RestAPI"]["Properties"]
    assert api["TracingEnabled"] is True
    functions = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Serverless::Function"]
    assert functions and all(f["Tracing"] == "Active" for f in functions)

    access = api["AccessLogSetting"]
    assert access["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    fields = json.loads(access["Format"])  # one JSON object a request
    assert fields["requestId"] == "$context.requestId"  # API Gateway requires it
    assert {"status", "resourcePath", "responseLatency", "user", "xrayTraceId"} <= set(fields)
    group = resources["ApiAccessLogGroup"]["Properties"]
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert group["KmsKeyId"] == KEY_ARN
    assert group["LogGroupName"] == {"Fn::Sub": "/aws/apigateway/${AWS::StackName}-access"}

    # API Gateway's CloudWatch role is account-wide: set only when asked, kept with the stack gone
    parameter = template["Parameters"]["ApiGatewayCloudWatchRole"]
    assert parameter["AllowedValues"] == ["create", "existing"] and parameter["Default"] == "create"
    assert template["Conditions"]["CreateApiGatewayCloudWatchRole"] == {
        "Fn::Equals": [{"Ref": "ApiGatewayCloudWatchRole"}, "create"]
    }
    for name in ("ApiGatewayAccount", "ApiGatewayLogsRole"):
        assert resources[name]["Condition"] == "CreateApiGatewayCloudWatchRole"
        assert resources[name]["DeletionPolicy"] == "Retain"
    account = resources["ApiGatewayAccount"]["Properties"]
    assert account["CloudWatchRoleArn"] == {"Fn::GetAtt": ["ApiGatewayLogsRole", "Arn"]}
    # the stage names the log group, and the log group waits for the account setting
    assert resources["ApiAccessLogGroup"]["Metadata"]["WaitsFor"] == {
        "Fn::If": ["CreateApiGatewayCloudWatchRole", {"Ref": "ApiGatewayAccount"}, ""]
    }


#: What API Gateway answers itself, without the app: status (None: the type's own) and code.
GATEWAY_RESPONSES = {
    "UNAUTHORIZED": ("401", "unauthorized"),
    "EXPIRED_TOKEN": ("401", "token_expired"),
    "ACCESS_DENIED": ("403", "forbidden"),
    "MISSING_AUTHENTICATION_TOKEN": ("404", "not_found"),
    "REQUEST_TOO_LARGE": ("413", "body_too_large"),
    "THROTTLED": ("429", "throttled"),  # the stage's throttling (docs/openapi.yaml, 429)
    "INTEGRATION_TIMEOUT": ("504", "timeout"),
    "DEFAULT_4XX": (None, "bad_request"),
    "DEFAULT_5XX": (None, "internal_error"),
}
MESSAGE_STRING = "$context.error.messageString"
#: The one response whose message is API Gateway's: the Cognito authorizer's "Unauthorized"
#: or "The incoming token has expired", the only hint deployed that a token expired.
PASSES_THE_MESSAGE = {"UNAUTHORIZED"}


def gateway_body(spec: dict[str, Any], message: str = 'Say "hi"') -> dict[str, Any]:
    """The body API Gateway sends: $context.error.messageString becomes a JSON string."""
    template = spec["ResponseTemplates"]["application/json"]
    return json.loads(template.replace(MESSAGE_STRING, json.dumps(message)))


@pytest.mark.packaging
def test_packaged_gateway_responses_use_the_error_envelope(packaged: dict[str, Any]) -> None:
    from app import INTERNAL_ERROR

    responses = packaged["template"]["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
    assert set(responses) == set(GATEWAY_RESPONSES)
    for response_type, (status, code) in GATEWAY_RESPONSES.items():
        spec = responses[response_type]
        assert spec.get("StatusCode") == status, response_type
        body = gateway_body(spec)
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, response_type
        assert body["error"]["code"] == code, response_type
        if response_type in PASSES_THE_MESSAGE:
            assert body["error"]["message"] == 'Say "hi"'
    assert gateway_body(responses["DEFAULT_5XX"]) == INTERNAL_ERROR
    expired = gateway_body(responses["EXPIRED_TOKEN"])["error"]["message"]
    assert expired == "Your sign-in has expired; sign in again"


@pytest.mark.packaging
def test_packaged_gateway_responses_echo_nothing_of_the_request(packaged: dict[str, Any]) -> None:
    """Static text only: API Gateway's own messages may quote the request (an unknown
    route's quotes the caller's ``Authorization`` header), so only the authorizer's is used."""
    responses = packaged["template"]["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
    for response_type, spec in responses.items():
        template = spec["ResponseTemplates"]["application/json"]
        if response_type in PASSES_THE_MESSAGE:
            template = template.replace(MESSAGE_STRING, '""')
        assert "$" not in template, f"{response_type} maps a variable into its body: {template}"
        assert set(spec["ResponseParameters"]) == {"Headers"}, response_type  # SAM's form
        for name, value in spec["ResponseParameters"]["Headers"].items():
            assert value[0] == value[-1] == "'", f"{response_type} maps a request value into {name}"


@pytest.mark.packaging
def test_packaged_gateway_responses_have_the_apps_headers(packaged: dict[str, Any]) -> None:
    from app import JSON
    from chalicelib.webconsole import SECURITY_HEADERS

    responses = packaged["template"]["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
    for response_type, spec in responses.items():
        headers = {name: value.strip("'") for name, value in spec["ResponseParameters"]["Headers"].items()}
        assert headers["Content-Type"] == JSON["Content-Type"], response_type
        # a 401 names the scheme to sign in with (RFC 9110), as the app's own 401 does
        assert ("WWW-Authenticate" in headers) == (spec.get("StatusCode") == "401"), response_type
        assert headers.get("WWW-Authenticate", "Bearer").startswith("Bearer"), response_type
        # uncacheable and inert like the app's answers; the CSP is left out because its
        # own quotes ('none') cannot sit inside a static mapping value, and an error
        # body of API Gateway's runs nothing anyway
        for name, value in SECURITY_HEADERS.items():
            if name != "Content-Security-Policy":
                assert headers.get(name) == value, (response_type, name)


@pytest.mark.packaging
def test_packaged_policies_name_only_stack_resources(packaged: dict[str, Any]) -> None:
    resources = packaged["template"]["Resources"]
    roles = {
        props["Handler"]: resources[props["Role"]["Fn::GetAtt"][0]]
        for props in (r["Properties"] for r in resources.values() if r["Type"] == "AWS::Serverless::Function")
    }
    for role in roles.values():
        for statement in _statements(role):
            for resource in _as_list(statement["Resource"]):
                if resource == "*":
                    assert set(_as_list(statement["Action"])) <= XRAY_ACTIONS
                    continue
                assert isinstance(resource, dict), f"literal ARN left: {resource}"

    def granted(handler: str, action: str) -> list[Any]:
        return [
            resource
            for s in _statements(roles[handler])
            if action in _as_list(s["Action"])
            for resource in _as_list(s["Resource"])
        ]

    assert granted("app.build_worker", "sqs:ReceiveMessage") == [{"Fn::GetAtt": ["BuildQueue", "Arn"]}]
    # the dead-letter queue for what it cannot read, its own queue for a segmented build's segments
    assert granted("app.build_worker", "sqs:SendMessage") == [{"Fn::GetAtt": ["BuildQueue", "Arn"]},
                                                              {"Fn::GetAtt": ["BuildDeadLetterQueue", "Arn"]}]
    assert granted("app.app", "sqs:SendMessage") == [{"Fn::GetAtt": ["BuildQueue", "Arn"]}]
    assert granted("app.app", "s3:GetObject") == [{"Fn::Sub": "${FilesBucket.Arn}/downloads/*"}]
    assert granted("app.app", "events:PutEvents") == [{"Fn::GetAtt": ["EventBus", "Arn"]}]
    assert {"Fn::GetAtt": ["TasksTable", "Arn"]} in granted("app.app", "dynamodb:PutItem")
    assert granted("app.app", "s3:PutObject") == []
    assert granted("app.app", "dynamodb:Scan") == []
    assert granted("app.build_worker", "logs:PutLogEvents") == [
        {"Fn::GetAtt": ["BuildWorkerLogGroup", "Arn"]}
    ]
    # the queues are encrypted with the stack's key: senders and the receiver use it
    for handler in ("app.app", "app.sweeper", "app.build_worker"):
        assert granted(handler, "kms:GenerateDataKey") == [KEY_ARN]
        assert granted(handler, "kms:Decrypt") == [KEY_ARN]
        assert granted(handler, "xray:PutTraceSegments") == ["*"]
    # prod lists no source: no role may read one
    assert granted("app.build_worker", "dynamodb:Scan") == []
    assert granted("app.app", "logs:DescribeLogGroups") == []


def _stage_environment(stage: str) -> dict[str, str]:
    """A stage's variables as chalice merges them: the stage's own over the file's."""
    return {**CHALICE_CONFIG["environment_variables"],
            **CHALICE_CONFIG["stages"][stage].get("environment_variables", {})}


def test_prod_ships_empty_allow_lists() -> None:
    prod = _stage_environment("prod")
    assert {name: prod[name] for name in ("EXPORTABLE_TABLES", "BUNDLE_BUCKETS", "LOG_GROUPS")} == {
        "EXPORTABLE_TABLES": "", "BUNDLE_BUCKETS": "", "LOG_GROUPS": ""}
    assert _stage_environment("dev")["EXPORTABLE_TABLES"] == "demo-users"  # the local stack's demo


@pytest.mark.packaging
def test_packaged_prod_grants_no_source(packaged: dict[str, Any]) -> None:
    resources = packaged["template"]["Resources"]
    for resource in resources.values():
        if resource["Type"] != FUNCTION:
            continue
        env = resource["Properties"]["Environment"]["Variables"]
        assert (env["EXPORTABLE_TABLES"], env["BUNDLE_BUCKETS"], env["LOG_GROUPS"]) == ("", "", "")
        role = resources[resource["Properties"]["Role"]["Fn::GetAtt"][0]]
        assert not {s.get("Sid") for s in _statements(role)} & _source_sids()


@pytest.mark.packaging
def test_packaged_key_grants_are_conditioned_on_the_service_and_the_account(packaged: dict[str, Any]) -> None:
    resources = packaged["template"]["Resources"]
    roles = [r for r in resources.values() if r["Type"] == "AWS::IAM::Role" and "Policies" in r["Properties"]]
    keys = [s for role in roles for s in _statements(role)
            if any(str(a).startswith("kms:") for a in _as_list(s["Action"]))]
    assert len(keys) >= 4  # the API, the worker, the sweeper and the notifier
    for statement in keys:
        assert statement["Condition"]["StringEquals"] == {
            "kms:ViaService": {"Fn::Sub": "sqs.${AWS::Region}.amazonaws.com"},
            "kms:CallerAccount": {"Ref": "AWS::AccountId"},
        }
    # the services the key policy names use it for this account only
    policy = resources["EncryptionKey"]["Properties"]["KeyPolicy"]["Statement"]
    for statement in policy:
        service = statement["Principal"].get("Service")
        if service is None:
            continue
        condition = statement["Condition"]
        if "kms:EncryptionContext:aws:logs:arn" in condition.get("ArnLike", {}):
            # CloudWatch Logs: only this account's log groups of this stack
            groups = condition["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
            assert all(":${AWS::AccountId}:log-group:" in g["Fn::Sub"] for g in groups)
        else:
            assert condition == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}, service


@pytest.mark.packaging
def test_packaged_files_bucket_is_readable_by_the_stacks_reading_roles_only(packaged: dict[str, Any]) -> None:
    # the API signs the presigned URLs (S3 checks them as its role); the worker reads segments back
    assert _fence_readers(packaged["template"]) == ["ApiHandlerRole", "BuildWorkerRole"]


ALARM = "AWS::CloudWatch::Alarm"
EXPECTED_ALARMS = {
    "DeadLetterQueueAlarm",
    "NotifierDeadLetterQueueAlarm",
    "BuildQueueAgeAlarm",
    "BuildFailureRateAlarm",
    "BuildWorkerErrorsAlarm",
    "SweeperErrorsAlarm",
    "SweeperNotRunningAlarm",
    "ApiServerErrorsAlarm",
}
METRIC_MATH_FUNCTIONS = {"IF", "FILL"}


def _alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in template["Resources"].items() if r["Type"] == ALARM}


def _metric(props: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(namespace, metric, {dimension: value}) of a single-metric alarm."""
    dimensions = {d["Name"]: d["Value"] for d in props["Dimensions"]}
    return props["Namespace"], props["MetricName"], dimensions


def _metric_math(props: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], str]:
    """({id: metric stat}, the returned expression) of a metric-math alarm, its ids checked."""
    queries = {q["Id"]: q for q in props["Metrics"]}
    (returned,) = [q for q in props["Metrics"] if q["ReturnData"]]
    for query in queries.values():
        if "Expression" in query:
            names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query["Expression"])) - METRIC_MATH_FUNCTIONS
            assert names <= set(queries), f"{query['Id']} uses unknown ids {names - set(queries)}"
    stats = {i: q["MetricStat"] for i, q in queries.items() if "MetricStat" in q}
    return stats, returned["Expression"]


@pytest.mark.packaging
def test_packaged_alarms_notify_an_encrypted_topic(packaged: dict[str, Any]) -> None:
    template = packaged["template"]
    resources = template["Resources"]
    topic = resources["AlarmTopic"]
    assert topic["Type"] == "AWS::SNS::Topic"
    assert topic["Properties"]["KmsMasterKeyId"] == KEY_ARN  # the key policy lets CloudWatch use it
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""
    assert template["Conditions"]["SubscribeAlarmEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]
    }
    subscription = resources["AlarmEmailSubscription"]
    assert subscription["Condition"] == "SubscribeAlarmEmail"
    assert subscription["Properties"] == {
        "TopicArn": {"Ref": "AlarmTopic"},
        "Protocol": "email",
        "Endpoint": {"Ref": "AlarmEmail"},
    }
    assert template["Outputs"]["AlarmTopicArn"] == {"Value": {"Ref": "AlarmTopic"}}

    alarms = _alarms(template)
    assert set(alarms) == EXPECTED_ALARMS
    for name, props in alarms.items():
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert props["OKActions"] == [{"Ref": "AlarmTopic"}], name
        assert props["ActionsEnabled"] is True
        assert props["TreatMissingData"] in {"notBreaching", "breaching"}
        assert props["AlarmName"]["Fn::Sub"].startswith("${AWS::StackName}-")
        assert len(props["AlarmDescription"]) > 80, f"{name}: say what it means and what to look at"


@pytest.mark.packaging
def test_packaged_queue_alarms_watch_the_dead_letter_queue_and_the_backlog(packaged: dict[str, Any]) -> None:
    template = packaged["template"]
    alarms = _alarms(template)

    dlq = alarms["DeadLetterQueueAlarm"]
    assert _metric(dlq) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": {"Fn::GetAtt": ["BuildDeadLetterQueue", "QueueName"]}},
    )
    assert dlq["Statistic"] == "Maximum"
    assert (dlq["ComparisonOperator"], dlq["Threshold"]) == ("GreaterThanThreshold", 0)

    age = alarms["BuildQueueAgeAlarm"]
    assert _metric(age) == (
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        {"QueueName": {"Fn::GetAtt": ["BuildQueue", "QueueName"]}},
    )
    assert age["Threshold"] == {"Ref": "BuildQueueAgeAlarmSeconds"}
    assert age["ComparisonOperator"] == "GreaterThanThreshold"
    # a running build keeps its (counted) message for up to the worker's timeout
    worker_timeout = _functions_by_handler(template)["app.build_worker"]["Timeout"]
    assert template["Parameters"]["BuildQueueAgeAlarmSeconds"]["Default"] > worker_timeout
    for alarm in (dlq, age):
        assert alarm["TreatMissingData"] == "notBreaching"  # an idle queue publishes nothing


@pytest.mark.packaging
def test_packaged_failure_rate_alarm_reads_the_worker_metrics(packaged: dict[str, Any]) -> None:
    alarm = _alarms(packaged["template"])["BuildFailureRateAlarm"]
    stats, expression = _metric_math(alarm)
    service = [{"Name": "service", "Value": "download-center"}]
    assert {i: (s["Metric"]["Namespace"], s["Metric"]["MetricName"], s["Metric"]["Dimensions"])
            for i, s in stats.items()} == {
        "failed": ("DownloadCenter", "BuildsFailed", service),
        "succeeded": ("DownloadCenter", "BuildsSucceeded", service),
    }
    assert all(s["Stat"] == "Sum" and s["Period"] == 900 for s in stats.values())  # 15 minutes
    # no builds (no data) is no alarm; a few builds are not a rate
    assert expression.startswith("IF(builds >= 5,") and "FILL(failed, 0)" in expression
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (20, "GreaterThanThreshold")
    assert alarm["TreatMissingData"] == "notBreaching"


@pytest.mark.packaging
def test_packaged_function_and_api_alarms_name_the_deployed_resources(packaged: dict[str, Any]) -> None:
    template = packaged["template"]
    resources = template["Resources"]
    alarms = _alarms(template)
    handlers = {
        r["Properties"]["Handler"]: name for name, r in resources.items() if r["Type"] == FUNCTION
    }

    def function(handler: str) -> dict[str, Any]:
        return {"FunctionName": {"Ref": handlers[handler]}}

    worker = alarms["BuildWorkerErrorsAlarm"]
    assert _metric(worker) == ("AWS/Lambda", "Errors", function("app.build_worker"))
    sweeper_errors = alarms["SweeperErrorsAlarm"]
    assert _metric(sweeper_errors) == ("AWS/Lambda", "Errors", function("app.sweeper"))
    for alarm in (worker, sweeper_errors):
        assert alarm["DatapointsToAlarm"] > 1  # a single crash is retried, not paged
    not_running = alarms["SweeperNotRunningAlarm"]
    assert _metric(not_running) == ("AWS/Lambda", "Invocations", function("app.sweeper"))
    assert (not_running["ComparisonOperator"], not_running["Threshold"]) == ("LessThanThreshold", 1)
    assert not_running["TreatMissingData"] == "breaching"  # no invocation publishes no datapoint

    api = alarms["ApiServerErrorsAlarm"]
    stats, expression = _metric_math(api)
    restapi = resources["RestAPI"]["Properties"]
    dimensions = [
        {"Name": "ApiName", "Value": restapi["DefinitionBody"]["info"]["title"]},
        {"Name": "Stage", "Value": restapi["StageName"]},
    ]
    assert {i: (s["Metric"]["MetricName"], s["Metric"]["Dimensions"]) for i, s in stats.items()} == {
        "errors": ("5XXError", dimensions),
        "requests": ("Count", dimensions),
    }
    assert all(s["Metric"]["Namespace"] == "AWS/ApiGateway" for s in stats.values())
    assert expression.startswith("IF(answered >= 20,")
    assert (api["Threshold"], api["ComparisonOperator"]) == (5, "GreaterThanThreshold")


# --------------------------------------------------------------------------
# checkov on the packaged template
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov_report(packaged: dict[str, Any]) -> checkov_scan.Report:
    """checkov's report on the packaged template (its own venv; `make test` builds it)."""
    if checkov_scan.find_checkov() is None:
        pytest.fail("checkov is not installed: `make test` builds .venv-checkov "
                    "from requirements-checkov.txt")
    return checkov_scan.scan(packaged["path"])


@pytest.mark.packaging
def test_packaged_template_passes_checkov(checkov_report: checkov_scan.Report) -> None:
    print(checkov_report.summary())
    assert checkov_report.parsing_errors == 0
    assert checkov_report.resource_count > 20 and checkov_report.passed > 50, "checkov scanned nothing?"
    assert checkov_report.failed == [], "\n".join(
        f"{f.check_id} {f.resource}: {f.name}" for f in checkov_report.failed
    )


@pytest.mark.packaging
def test_every_checkov_skip_has_a_reason_and_is_still_needed(
    packaged: dict[str, Any], checkov_report: checkov_scan.Report
) -> None:
    resources = packaged["template"]["Resources"]
    declared: set[tuple[str, str]] = set()
    for logical_id, resource in resources.items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert len(skip.get("comment", "")) >= 60, f"{logical_id} skips {skip['id']} without a reason"
            declared.add((skip["id"], logical_id))
    reported = {(f.check_id, f.resource.split(".", 1)[1]) for f in checkov_report.skipped}
    # a skip checkov does not report is misspelt, or its check now passes: remove it
    assert reported == declared
    assert all(f.comment for f in checkov_report.skipped)
    # the table of skips for chalice's resources names only resources chalice generates
    assert set(package.CHECKOV_SKIPS) <= set(resources)


def test_checkov_runs_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BC_API_KEY", "secret")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    calls: list[tuple[list[str], dict[str, str]]] = []

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append((command, kwargs["env"]))
        report = {"check_type": "cloudformation", "results": {"failed_checks": []},
                  "summary": {"passed": 3, "failed": 0, "skipped": 0, "resource_count": 2}}
        return subprocess.CompletedProcess(command, 0, json.dumps(report), "")

    monkeypatch.setattr(checkov_scan.subprocess, "run", fake_run)
    executable = tmp_path / "checkov"
    executable.touch()
    report = checkov_scan.scan(tmp_path / "sam.json", executable)
    assert report.passed == 3 and report.failed == []
    ((command, env),) = calls
    assert "--skip-download" in command
    assert command[command.index("--framework") + 1] == "cloudformation"
    assert "BC_API_KEY" not in env  # nothing is uploaded to a platform account
    assert env["BC_SKIP_MAPPING"] == "TRUE" and env["CKV_SKIP_PACKAGE_UPDATE_CHECK"] == "true"
    assert env["HTTPS_PROXY"].startswith("http://127.0.0.1:")  # anything else fails fast
    assert env["LOG_LEVEL"] == "WARNING"


def test_checkov_report_lists_failures_and_skips_with_their_reasons() -> None:
    def check(check_id: str, resource: str, result: str, comment: str | None = None) -> dict[str, Any]:
        outcome: dict[str, Any] = {"result": result}
        if comment:
            outcome["suppress_comment"] = comment
        return {"check_id": check_id, "resource": resource, "check_name": "n", "check_result": outcome}

    output = [
        {"check_type": "secrets", "results": {}, "summary": {"passed": 99}},
        {
            "check_type": "cloudformation",
            "results": {
                "failed_checks": [check("CKV_AWS_1", "AWS::S3::Bucket.A", "FAILED")],
                "skipped_checks": [check("CKV_AWS_2", "AWS::S3::Bucket.B", "SKIPPED", "why")],
            },
            "summary": {"passed": 5, "failed": 1, "skipped": 1, "checkov_version": "3.3.30"},
        },
    ]
    report = checkov_scan.parse_report(output)
    assert report.passed == 5
    assert report.failed == [checkov_scan.Finding("CKV_AWS_1", "AWS::S3::Bucket.A", "n")]
    assert report.skipped == [checkov_scan.Finding("CKV_AWS_2", "AWS::S3::Bucket.B", "n", "why")]
    assert "failed=1" in report.summary()
    with pytest.raises(checkov_scan.CheckovError, match="no cloudformation"):
        checkov_scan.parse_report({"passed": 0, "failed": 0})


# --------------------------------------------------------------------------
# tools.package: the wiring and the lint, without chalice
# --------------------------------------------------------------------------


def _chalice_like_template(worker_timeout: int = 900) -> dict[str, Any]:
    """What ``chalice package --merge-template`` produces, cut down to what matters."""
    policy = json.loads((ROOT / ".chalice" / "policy-worker.json").read_text(encoding="utf-8"))
    template = copy.deepcopy(RESOURCES)
    template["Resources"]["BuildWorkerRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {"Policies": [{"PolicyName": "p", "PolicyDocument": policy}]},
    }
    template["Resources"]["BuildWorker"] = {
        "Type": "AWS::Serverless::Function",
        "Properties": {
            "Handler": "app.build_worker",
            "Timeout": worker_timeout,
            "Role": {"Fn::GetAtt": ["BuildWorkerRole", "Arn"]},
            "Environment": {
                "Variables": {
                    "FILES_BUCKET": "download-center-files",
                    "FILE_TTL_DAYS": "7",
                    "EXPORTABLE_TABLES": "demo-users",
                }
            },
            "Events": {
                "BuildWorkerSqsEventSource": {
                    "Type": "SQS",
                    "Properties": {
                        "Queue": {
                            "Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:"
                            "${AWS::AccountId}:download-center-builds"
                        },
                        "BatchSize": 10,
                    },
                }
            },
        },
    }
    api_policy = json.loads((ROOT / ".chalice" / "policy-api.json").read_text(encoding="utf-8"))
    template["Resources"]["ApiHandlerRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {"Policies": [{"PolicyName": "p", "PolicyDocument": api_policy}]},
    }
    template["Resources"]["APIHandler"] = {
        "Type": "AWS::Serverless::Function",
        "Properties": {
            "Handler": "app.app",
            "Role": {"Fn::GetAtt": ["ApiHandlerRole", "Arn"]},
            "Environment": {"Variables": {"EXPORTABLE_TABLES": "demo-users"}},
        },
    }
    template["Resources"]["RestAPI"]["Type"] = "AWS::Serverless::Api"
    template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"] = {
        "securityDefinitions": {
            "cognito": {
                "x-amazon-apigateway-authtype": "cognito_user_pools",
                "x-amazon-apigateway-authorizer": {"providerARNs": ["arn:aws:placeholder"]},
            }
        }
    }
    return template


def test_post_process_wires_a_chalice_template() -> None:
    original = _chalice_like_template()
    wired = package.post_process(original)
    worker = wired["Resources"]["BuildWorker"]["Properties"]
    assert worker["Environment"]["Variables"]["FILES_BUCKET"] == {"Ref": "FilesBucket"}
    event = worker["Events"]["BuildWorkerSqsEventSource"]["Properties"]
    assert event["Queue"] == {"Fn::GetAtt": ["BuildQueue", "Arn"]}
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    authorizer = wired["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["securityDefinitions"][
        "cognito"
    ]["x-amazon-apigateway-authorizer"]
    assert authorizer["providerARNs"] == [USER_POOL_ARN]
    # the console signs in with the stack's app client, or the one given with an existing pool
    api_env = wired["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert api_env["USER_POOL_CLIENT_ID"] == package.USER_POOL_CLIENT_ID
    assert "USER_POOL_CLIENT_ID" not in worker["Environment"]["Variables"]
    # the input is not modified: post_process returns a copy
    original_env = original["Resources"]["BuildWorker"]["Properties"]["Environment"]
    assert original_env["Variables"]["FILES_BUCKET"] == "download-center-files"


def test_post_process_rejects_a_queue_that_hides_messages_too_briefly() -> None:
    template = _chalice_like_template(worker_timeout=900)
    template["Resources"]["BuildQueue"]["Properties"]["VisibilityTimeout"] = 900
    with pytest.raises(package.PackagingError, match="VisibilityTimeout"):
        package.post_process(template)


def test_post_process_rejects_a_queue_age_alarm_that_pages_for_running_builds() -> None:
    template = _chalice_like_template(worker_timeout=900)
    template["Parameters"]["BuildQueueAgeAlarmSeconds"]["Default"] = 900
    with pytest.raises(package.PackagingError, match="BuildQueueAgeAlarmSeconds"):
        package.post_process(template)


def test_post_process_rejects_files_expiring_before_their_tasks() -> None:
    template = _chalice_like_template()
    env = template["Resources"]["BuildWorker"]["Properties"]["Environment"]["Variables"]
    env["FILE_TTL_DAYS"] = "30"
    with pytest.raises(package.PackagingError, match="FILE_TTL_DAYS=30"):
        package.post_process(template)


def _worker_env(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]["BuildWorker"]["Properties"]["Environment"]["Variables"]


def _sids(template: dict[str, Any], role: str) -> set[str]:
    return {s.get("Sid", "") for s in _statements(template["Resources"][role])}


def _source_sids() -> set[str]:
    """The Sids of the statements generated from the allow-lists."""
    return {grant.sid for grants in package.SOURCE_GRANTS.values() for grant in grants}


def test_post_process_grants_what_the_allow_lists_name_and_nothing_more() -> None:
    template = _chalice_like_template()
    env = _worker_env(template)
    env.update(EXPORTABLE_TABLES="demo-users,orders", BUNDLE_BUCKETS="reports-archive",
               LOG_GROUPS="/app/orders")
    wired = package.post_process(template)
    statements = {s["Sid"]: s for s in _statements(wired["Resources"]["BuildWorkerRole"])}
    here = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}"
    assert statements["ExportableTables"]["Resource"] == [
        {"Fn::Sub": f"{here}:table/demo-users"}, {"Fn::Sub": f"{here}:table/demo-users/index/*"},
        {"Fn::Sub": f"{here}:table/orders"}, {"Fn::Sub": f"{here}:table/orders/index/*"}]
    assert statements["BundleObjects"]["Resource"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:s3:::reports-archive/*"}]
    # a source log group is scoped to the stack's account, not replaced by the function's own
    assert statements["LogGroups"]["Resource"] == [{
        "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/app/orders:*"}]
    # the API only describes what the API's own lists name (here: demo-users)
    api = {s["Sid"]: s for s in _statements(wired["Resources"]["ApiHandlerRole"])}
    assert api["ExportableTablesAtCreate"] == {
        "Sid": "ExportableTablesAtCreate", "Effect": "Allow", "Action": ["dynamodb:DescribeTable"],
        "Resource": [{"Fn::Sub": f"{here}:table/demo-users"}]}
    assert "LogGroupsAtCreate" not in api and "BundleBucketsAtCreate" not in api


def test_empty_allow_lists_give_no_source_statement() -> None:
    template = _chalice_like_template()
    _worker_env(template)["EXPORTABLE_TABLES"] = ""
    template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]["EXPORTABLE_TABLES"] = ""
    wired = package.post_process(template)
    for role in ("BuildWorkerRole", "ApiHandlerRole"):
        assert not _sids(wired, role) & _source_sids(), role
        for statement in _statements(wired["Resources"][role]):
            assert "logs:DescribeLogGroups" not in _as_list(statement["Action"]), role
    for part in package.SOURCE_GRANTS:
        assert package.source_statements(part, {"EXPORTABLE_TABLES": " , ", "LOG_GROUPS": ""}) == []


@pytest.mark.parametrize("name", ["*", "demo-*", "orders?", "a,b[1]"])
def test_an_allow_list_holds_names_never_patterns(name: str) -> None:
    template = _chalice_like_template()
    _worker_env(template)["EXPORTABLE_TABLES"] = name
    with pytest.raises(package.PackagingError, match="no pattern"):
        package.post_process(template)


WILDCARD_GRANTS = {
    "dynamodb-star-on-another-table": ("BuildWorkerRole", {
        "Action": "dynamodb:*", "Resource": "arn:aws:dynamodb:*:*:table/orders"}),
    "s3-get-star-on-another-bucket": ("BuildWorkerRole", {
        "Action": "s3:Get*", "Resource": "arn:aws:s3:::other-bucket/*"}),
    "scan-on-every-resource": ("BuildWorkerRole", {"Action": "dynamodb:Scan", "Resource": "*"}),
    "everything": ("BuildWorkerRole", {"Action": "*", "Resource": "*"}),
    "a-pattern-over-other-tables": ("BuildWorkerRole", {
        "Action": "dynamodb:Scan", "Resource": "arn:aws:dynamodb:*:*:table/demo-*"}),
    "more-than-reads-on-a-listed-table": ("BuildWorkerRole", {
        "Action": "dynamodb:*", "Resource": "arn:aws:dynamodb:*:*:table/demo-users"}),
    "lowercase-action-pattern": ("BuildWorkerRole", {
        "Action": "S3:getobj*", "Resource": "arn:aws:s3:::other-bucket/*"}),
    "not-action": ("BuildWorkerRole", {
        "NotAction": "s3:PutObject", "Resource": "arn:aws:s3:::other-bucket/*"}),
    "api-describes-every-log-group": ("ApiHandlerRole", {
        "Action": "logs:DescribeLogGroups", "Resource": "arn:aws:logs:*:*:log-group:*"}),
    "api-lists-another-bucket": ("ApiHandlerRole", {
        "Action": ["s3:List*"], "Resource": ["arn:aws:s3:::other-bucket"]}),
}


@pytest.mark.parametrize("role, statement", list(WILDCARD_GRANTS.values()), ids=list(WILDCARD_GRANTS))
def test_a_wildcard_grant_on_a_source_fails_the_package(role: str, statement: dict[str, Any]) -> None:
    template = _chalice_like_template()
    policy = template["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]
    policy["Statement"].append({"Sid": "Added", "Effect": "Allow", **statement})
    with pytest.raises(package.PackagingError, match="Added"):
        package.post_process(template)


def test_the_wiring_conditions_key_use_and_fences_the_files() -> None:
    wired = package.post_process(_chalice_like_template())
    for role in ("BuildWorkerRole", "ApiHandlerRole"):
        keys = [s for s in _statements(wired["Resources"][role])
                if any(a.startswith("kms:") for a in _as_list(s["Action"]))]
        assert keys and all(s["Condition"] == package.KEY_USE_CONDITION for s in keys), role
    assert _fence_readers(wired) == ["ApiHandlerRole", "BuildWorkerRole"]


def _fence_readers(template: dict[str, Any]) -> list[str]:
    """The roles the files bucket lets read objects; the fence is a Deny for everyone else."""
    statements = template["Resources"]["FilesBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    (fence,) = [s for s in statements if s.get("Sid") == package.FILES_FENCE_SID]
    assert fence["Effect"] == "Deny" and fence["Principal"] == "*"
    assert fence["Action"] == "s3:GetObject*"
    assert fence["Resource"] == {"Fn::Sub": "${FilesBucket.Arn}/*"}
    (condition,) = fence["Condition"].items()
    assert condition[0] == "ArnNotEquals" and list(condition[1]) == ["aws:PrincipalArn"]
    return sorted(r["Fn::GetAtt"][0] for r in condition[1]["aws:PrincipalArn"])


def test_post_process_rejects_an_api_without_cognito_authorizer() -> None:
    template = _chalice_like_template()
    template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"] = {"paths": {}}
    with pytest.raises(package.PackagingError, match="Cognito"):
        package.post_process(template)


def test_post_process_rejects_a_trigger_on_an_unknown_queue() -> None:
    template = _chalice_like_template()
    event = template["Resources"]["BuildWorker"]["Properties"]["Events"]
    event["BuildWorkerSqsEventSource"]["Properties"]["Queue"] = "arn:aws:sqs:us-east-1:1:other"
    with pytest.raises(package.PackagingError, match="does not define"):
        package.post_process(template)


def test_lint_reports_template_errors(tmp_path: Path) -> None:
    broken = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {"Table": {"Type": "AWS::DynamoDB::Table", "Properties": {"BillingMode": "SOMETIMES"}}},
    }
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken), encoding="utf-8")
    errors, _warnings = package.lint(path)
    assert errors, "cfn-lint should reject a table without keys"


# --------------------------------------------------------------------------
# The hand-written IAM policies, as chalice deploy would use them
# --------------------------------------------------------------------------


def _allowed(policy: dict[str, Any], action: str, resource: str) -> bool:
    """Whether an Allow statement covers the action on the resource (no Deny here)."""
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = _as_list(statement["Action"])
        resources = _as_list(statement["Resource"])
        if any(fnmatch.fnmatchcase(action, a) for a in actions) and any(
            fnmatch.fnmatchcase(resource, r) for r in resources
        ):
            return True
    return False


TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/download-center-tasks"
DEMO_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/demo-users"
OBJECT_ARN = "arn:aws:s3:::download-center-files/downloads/acme/01J/report.csv"
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:download-center-builds"
DLQ_ARN = "arn:aws:sqs:us-east-1:123456789012:download-center-builds-dlq"
BUS_ARN = "arn:aws:events:us-east-1:123456789012:event-bus/download-center"
# The policies name the stack's key by its alias; tools.package rewrites it to the key's ARN.
KEY_ALIAS_ARN = "arn:aws:kms:us-east-1:123456789012:alias/download-center"


BUCKET_ARN = "arn:aws:s3:::download-center-files"


@pytest.mark.parametrize(
    ("action", "resource", "api", "worker", "sweeper"),
    [
        ("dynamodb:PutItem", TABLE_ARN, True, True, False),
        ("dynamodb:UpdateItem", TABLE_ARN, True, True, True),
        ("dynamodb:ConditionCheckItem", TABLE_ARN, True, True, True),
        ("dynamodb:DeleteItem", TABLE_ARN, True, True, False),
        ("dynamodb:Query", TABLE_ARN + "/index/by_owner", True, False, False),
        ("dynamodb:Query", TABLE_ARN + "/index/by_due", False, False, True),
        ("dynamodb:Scan", TABLE_ARN, False, False, False),
        ("dynamodb:DeleteTable", TABLE_ARN, False, False, False),
        # no source in the files: the allow-lists' grants are generated (package.SOURCE_GRANTS)
        ("dynamodb:Scan", DEMO_ARN, False, False, False),
        ("dynamodb:DescribeTable", DEMO_ARN, False, False, False),
        ("dynamodb:DescribeTable", TABLE_ARN, False, False, False),
        ("logs:DescribeLogGroups", "arn:aws:logs:us-east-1:123456789012:log-group:/app/orders", False, False,
         False),
        ("logs:FilterLogEvents", "arn:aws:logs:us-east-1:123456789012:log-group:/app/orders:*", False,
         False, False),
        ("dynamodb:Query", DEMO_ARN + "/index/by_name", False, False, False),
        ("dynamodb:PutItem", DEMO_ARN, False, False, False),
        # the worker reads the segments it composes into one file, and their checksums
        ("s3:GetObject", OBJECT_ARN, True, True, False),
        ("s3:DeleteObject", OBJECT_ARN, True, True, True),
        ("s3:PutObject", OBJECT_ARN, False, True, False),
        ("s3:AbortMultipartUpload", OBJECT_ARN, True, True, True),
        ("s3:ListBucketMultipartUploads", BUCKET_ARN, True, True, True),
        ("s3:ListBucket", BUCKET_ARN, True, True, True),
        ("s3:GetObject", "arn:aws:s3:::download-center-files/other/x", False, False, False),
        # the worker sends a segmented build's segment messages
        ("sqs:SendMessage", QUEUE_ARN, True, True, True),
        ("sqs:ReceiveMessage", QUEUE_ARN, False, True, False),
        ("sqs:DeleteMessage", QUEUE_ARN, False, True, False),
        ("sqs:SendMessage", DLQ_ARN, False, True, False),
        ("sqs:ReceiveMessage", DLQ_ARN, False, False, False),
        ("events:PutEvents", BUS_ARN, True, True, True),
        ("events:PutEvents", "arn:aws:events:us-east-1:123456789012:event-bus/default", False, False, False),
        ("kms:GenerateDataKey", KEY_ALIAS_ARN, True, True, True),
        ("kms:Decrypt", KEY_ALIAS_ARN, True, True, True),
        ("kms:Encrypt", KEY_ALIAS_ARN, False, False, False),
        ("kms:CreateGrant", KEY_ALIAS_ARN, False, False, False),
        ("kms:Decrypt", "arn:aws:kms:us-east-1:123456789012:alias/other", False, False, False),
        ("xray:PutTraceSegments", "*", True, True, True),
        ("xray:GetTraceSummaries", "*", False, False, False),
    ],
)
def test_policies_grant_least_privilege(
    action: str, resource: str, api: bool, worker: bool, sweeper: bool
) -> None:
    chalice_dir = ROOT / ".chalice"

    def policy(name: str) -> dict[str, Any]:
        return json.loads((chalice_dir / f"policy-{name}.json").read_text(encoding="utf-8"))

    assert _allowed(policy("api"), action, resource) is api
    assert _allowed(policy("worker"), action, resource) is worker
    assert _allowed(policy("sweeper"), action, resource) is sweeper


def _resolved(statements: list[dict[str, Any]]) -> dict[str, Any]:
    """Generated statements as a policy in us-east-1 of account 123456789012."""
    def arn(resource: dict[str, str]) -> str:
        return (resource["Fn::Sub"].replace("${AWS::Partition}", "aws").replace("${AWS::Region}", "us-east-1")
                .replace("${AWS::AccountId}", "123456789012"))

    return {"Statement": [{**s, "Resource": [arn(r) for r in s["Resource"]]} for s in statements]}


LISTS = {"EXPORTABLE_TABLES": "demo-users,orders", "BUNDLE_BUCKETS": "reports", "LOG_GROUPS": "/app/orders"}
ORDERS_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders"
GROUP_ARN = "arn:aws:logs:us-east-1:123456789012:log-group:/app/orders:*"
OTHER_GROUP_ARN = "arn:aws:logs:us-east-1:123456789012:log-group:/app/other:*"


@pytest.mark.parametrize(
    ("action", "resource", "api", "worker"),
    [
        ("dynamodb:Scan", DEMO_ARN, False, True),
        ("dynamodb:Scan", ORDERS_ARN, False, True),
        ("dynamodb:Query", ORDERS_ARN + "/index/by_day", False, True),
        ("dynamodb:DescribeTable", ORDERS_ARN, True, True),
        ("dynamodb:Scan", "arn:aws:dynamodb:us-east-1:123456789012:table/orders-archive", False, False),
        ("dynamodb:Scan", "arn:aws:dynamodb:us-east-1:999999999999:table/orders", False, False),
        ("dynamodb:PutItem", ORDERS_ARN, False, False),
        ("s3:GetObject", "arn:aws:s3:::reports/2026/x.pdf", False, True),
        ("s3:ListBucket", "arn:aws:s3:::reports", True, True),
        ("s3:PutObject", "arn:aws:s3:::reports/x", False, False),
        ("s3:GetObject", "arn:aws:s3:::reports-archive/x", False, False),
        ("logs:FilterLogEvents", GROUP_ARN, False, True),
        ("logs:DescribeLogGroups", GROUP_ARN, True, True),
        ("logs:FilterLogEvents", OTHER_GROUP_ARN, False, False),
        ("logs:DescribeLogGroups", OTHER_GROUP_ARN, False, False),
    ],
)
def test_source_statements_grant_least_privilege(action: str, resource: str, api: bool, worker: bool) -> None:
    assert _allowed(_resolved(package.source_statements("api", LISTS)), action, resource) is api
    assert _allowed(_resolved(package.source_statements("worker", LISTS)), action, resource) is worker
    assert package.source_statements("sweeper", LISTS) == []


def test_chalice_config_points_functions_at_the_policies() -> None:
    assert CHALICE_CONFIG["autogen_policy"] is False
    functions = CHALICE_CONFIG["lambda_functions"]
    assert functions["api_handler"]["iam_policy_file"] == "policy-api.json"
    assert functions["build_worker"]["iam_policy_file"] == "policy-worker.json"
    assert functions["sweeper"]["iam_policy_file"] == "policy-sweeper.json"


# --------------------------------------------------------------------------
# local.provision on a real (in-process) moto server
# --------------------------------------------------------------------------


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    """A moto server on a free loopback port, with empty state.

    moto keeps its backends per process, not per server, so the state is reset
    before (leftovers of other tests) and after (for the tests that follow).
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    try:
        yield endpoint
    finally:
        requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
        server.stop()


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


def test_provision_creates_resources_matching_the_template(moto_endpoint: str) -> None:
    names = provision(moto_endpoint)
    resources = RESOURCES["Resources"]

    table_props = resources["TasksTable"]["Properties"]
    table = _client("dynamodb", moto_endpoint).describe_table(TableName=names["table"])["Table"]
    assert names["table"] == table_props["TableName"]
    assert table["KeySchema"] == table_props["KeySchema"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert _indexes(table["GlobalSecondaryIndexes"]) == _indexes(table_props["GlobalSecondaryIndexes"])
    assert _indexes(table["GlobalSecondaryIndexes"]) == EXPECTED_INDEXES
    ttl = _client("dynamodb", moto_endpoint).describe_time_to_live(TableName=names["table"])
    assert ttl["TimeToLiveDescription"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}

    sqs = _client("sqs", moto_endpoint)
    queue = sqs.get_queue_attributes(QueueUrl=names["queue_url"], AttributeNames=["All"])
    queue = queue["Attributes"]
    queue_props = resources["BuildQueue"]["Properties"]
    assert queue["QueueArn"] == names["queue_arn"]
    assert int(queue["VisibilityTimeout"]) == queue_props["VisibilityTimeout"]
    redrive = json.loads(queue["RedrivePolicy"])
    assert redrive == {
        "deadLetterTargetArn": names["dlq_arn"],
        "maxReceiveCount": queue_props["RedrivePolicy"]["maxReceiveCount"],
    }
    dlq = sqs.get_queue_attributes(QueueUrl=names["dlq_url"], AttributeNames=["All"])
    assert dlq["Attributes"]["QueueArn"] == names["dlq_arn"]
    assert int(dlq["Attributes"]["MessageRetentionPeriod"]) == 14 * 24 * 3600

    s3 = _client("s3", moto_endpoint)
    bucket_props = resources["FilesBucket"]["Properties"]
    block = s3.get_public_access_block(Bucket=names["bucket"])["PublicAccessBlockConfiguration"]
    assert block == bucket_props["PublicAccessBlockConfiguration"]
    rules = s3.get_bucket_lifecycle_configuration(Bucket=names["bucket"])["Rules"]
    by_id = {rule["ID"]: rule for rule in rules}
    assert by_id["expire-downloads"]["Filter"] == {"Prefix": "downloads/"}
    assert by_id["expire-downloads"]["Expiration"] == {"Days": 8}
    abort = by_id["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"]
    assert abort == {"DaysAfterInitiation": 1}
    encryption = s3.get_bucket_encryption(Bucket=names["bucket"])
    default = encryption["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert default["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}

    bus = _client("events", moto_endpoint).describe_event_bus(Name=names["event_bus"])
    assert bus["Name"] == resources["EventBus"]["Properties"]["Name"]


def test_provision_is_idempotent(moto_endpoint: str) -> None:
    first = provision(moto_endpoint)
    second = provision(moto_endpoint)
    assert second == first
    assert _client("dynamodb", moto_endpoint).list_tables()["TableNames"] == [first["table"]]
    sqs = _client("sqs", moto_endpoint)
    notifier_dlq = sqs.get_queue_url(QueueName="download-center-notifier-dlq")["QueueUrl"]
    queues = sqs.list_queues()["QueueUrls"]
    assert sorted(queues) == sorted([first["queue_url"], first["dlq_url"], notifier_dlq])
    buckets = _client("s3", moto_endpoint).list_buckets()["Buckets"]
    assert [b["Name"] for b in buckets] == [first["bucket"]]


def test_provision_converges_resources_left_from_an_older_template(moto_endpoint: str) -> None:
    dynamodb = _client("dynamodb", moto_endpoint)
    dynamodb.create_table(
        TableName="download-center-tasks",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    sqs = _client("sqs", moto_endpoint)
    sqs.create_queue(QueueName="download-center-builds", Attributes={"VisibilityTimeout": "30"})

    names = provision(moto_endpoint)

    table = dynamodb.describe_table(TableName=names["table"])["Table"]
    assert _indexes(table["GlobalSecondaryIndexes"]) == EXPECTED_INDEXES
    queue = sqs.get_queue_attributes(QueueUrl=names["queue_url"], AttributeNames=["All"])
    assert queue["Attributes"]["VisibilityTimeout"] == "5400"
    assert json.loads(queue["Attributes"]["RedrivePolicy"])["deadLetterTargetArn"] == names["dlq_arn"]


def test_provision_names_match_the_app_defaults(moto_endpoint: str) -> None:
    from chalicelib import config

    names = provision(moto_endpoint)
    env = CHALICE_CONFIG["environment_variables"]
    assert names["table"] == config.DEFAULT_TABLE == env["TASKS_TABLE"]
    assert names["bucket"] == config.DEFAULT_BUCKET == env["FILES_BUCKET"]
    assert names["queue_url"].endswith("/" + config.DEFAULT_QUEUE)
    assert env["BUILD_QUEUE_NAME"] == config.DEFAULT_QUEUE
    assert names["dlq_url"].endswith("/" + config.DEFAULT_DLQ)
    assert names["event_bus"] == config.DEFAULT_EVENT_BUS == env["EVENT_BUS_NAME"]


def test_provision_works_inside_mock_aws() -> None:
    with mock_aws():
        names = provision(None)
        table = boto3.client("dynamodb").describe_table(TableName=names["table"])["Table"]
    assert _indexes(table["GlobalSecondaryIndexes"]) == EXPECTED_INDEXES


def test_provision_makes_no_kms_key_locally() -> None:
    """The template's KMS encryption is not mirrored: no key, the table keeps its default."""
    with mock_aws():
        names = provision(None)
        keys = boto3.client("kms", region_name="us-east-1").list_keys()["Keys"]
        table = boto3.client("dynamodb", region_name="us-east-1").describe_table(
            TableName=names["table"])["Table"]
    assert keys == [] and "SSEDescription" not in table
    assert RESOURCES["Resources"]["TasksTable"]["Properties"]["SSESpecification"]["SSEEnabled"]


def test_provision_refuses_real_aws_without_an_endpoint() -> None:
    with pytest.raises(provision_module.ProvisionError, match="real AWS"):
        provision(None)


def test_provision_refuses_template_properties_it_cannot_mirror(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = copy.deepcopy(RESOURCES)
    template["Resources"]["BuildQueue"]["Properties"]["SomethingNew"] = True
    monkeypatch.setattr(provision_module, "load_template", lambda: template)
    with pytest.raises(provision_module.ProvisionError, match="SomethingNew"):
        provision(moto_endpoint)


def test_template_indexes_match_the_task_model() -> None:
    from chalicelib.adapters.tasks_repo import TaskModel

    schema = TaskModel._get_schema()
    model_indexes = {
        index["index_name"]: (
            next(k["AttributeName"] for k in index["key_schema"] if k["KeyType"] == "HASH"),
            next(k["AttributeName"] for k in index["key_schema"] if k["KeyType"] == "RANGE"),
            index["projection"]["ProjectionType"],
        )
        for index in schema["global_secondary_indexes"]
    }
    table_props = RESOURCES["Resources"]["TasksTable"]["Properties"]
    assert model_indexes == _indexes(table_props["GlobalSecondaryIndexes"])
    assert schema["key_schema"] == table_props["KeySchema"]
    assert {tuple(sorted(d.items())) for d in schema["attribute_definitions"]} == {
        tuple(sorted(d.items())) for d in table_props["AttributeDefinitions"]
    }


@pytest.mark.packaging
def test_packaged_notifier_hears_the_stacks_bus_and_may_only_mail_as_the_identity(
    packaged: dict[str, Any],
) -> None:
    template = packaged["template"]
    resources = template["Resources"]
    notifier = _functions_by_handler(template)["app.notifier"]
    (rule,) = notifier["Events"].values()
    assert rule["Type"] == "CloudWatchEvent"
    assert rule["Properties"]["EventBusName"] == {"Ref": "EventBus"}
    assert rule["Properties"]["Pattern"] == {
        "source": ["download-center"], "detail-type": ["download.failed", "download.succeeded"]}
    env = notifier["Environment"]["Variables"]
    assert env["MAIL_SENDER"] == {"Ref": "MailSender"}
    assert "${RestAPI}" in env["CONSOLE_URL"]["Fn::Sub"]
    assert notifier["ReservedConcurrentExecutions"] == package.NOTIFIER_CONCURRENCY
    # the API refuses notify.email when no sender is configured: it knows the sender too
    assert _functions_by_handler(template)["app.app"]["Environment"]["Variables"]["MAIL_SENDER"] == {
        "Ref": "MailSender"}
    assert template["Parameters"]["MailSender"]["Default"] == ""

    role = resources[notifier["Role"]["Fn::GetAtt"][0]]
    statements = [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
    granted = {a for s in statements for a in _as_list(s["Action"])}
    assert granted == {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                       "dynamodb:GetItem", "dynamodb:UpdateItem", "ses:SendEmail",
                       "sqs:SendMessage", "kms:Decrypt", "kms:GenerateDataKey",
                       "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    (mail,) = [s for s in statements if "ses:SendEmail" in _as_list(s["Action"])]
    assert mail["Resource"] == package.MAIL_IDENTITY_ARN
    # no other role may send mail
    for name, resource in resources.items():
        if resource["Type"] == "AWS::IAM::Role" and name != notifier["Role"]["Fn::GetAtt"][0]:
            for policy in resource["Properties"].get("Policies", []):
                for statement in policy["PolicyDocument"]["Statement"]:
                    assert not any(a.startswith("ses:") for a in _as_list(statement["Action"])), name


@pytest.mark.packaging
def test_packaged_notifier_puts_the_events_it_failed_to_mail_on_an_alarmed_dead_letter_queue(
    packaged: dict[str, Any],
) -> None:
    """After Lambda's retries of an event fail (SES down, a crash), the event is kept, not dropped."""
    template = packaged["template"]
    resources = template["Resources"]
    notifier = _functions_by_handler(template)["app.notifier"]
    dlq_arn = {"Fn::GetAtt": ["NotifierDeadLetterQueue", "Arn"]}
    assert notifier["DeadLetterQueue"] == {"Type": "SQS", "TargetArn": dlq_arn}
    dlq = resources["NotifierDeadLetterQueue"]["Properties"]
    assert dlq["QueueName"] == "download-center-notifier-dlq"
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert dlq["KmsMasterKeyId"] == KEY_ARN
    # Lambda sends there with the notifier's role: that queue only, under the stack's key, nothing else
    role = resources[notifier["Role"]["Fn::GetAtt"][0]]
    statements = _statements(role)

    def granted(action: str) -> list[Any]:
        return [r for s in statements if action in _as_list(s["Action"]) for r in _as_list(s["Resource"])]

    assert granted("sqs:SendMessage") == [dlq_arn]
    assert not any(a.startswith("sqs:") and a != "sqs:SendMessage"
                   for s in statements for a in _as_list(s["Action"]))
    assert granted("kms:GenerateDataKey") == granted("kms:Decrypt") == [KEY_ARN]
    # no other role may write to it
    for name, resource in resources.items():
        if resource["Type"] == "AWS::IAM::Role" and name != notifier["Role"]["Fn::GetAtt"][0]:
            for policy in resource["Properties"].get("Policies", []):
                for statement in policy["PolicyDocument"]["Statement"]:
                    assert dlq_arn not in _as_list(statement["Resource"]), name
    # and someone hears of what is there
    alarm = _alarms(template)["NotifierDeadLetterQueueAlarm"]
    assert _metric(alarm) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible",
                              {"QueueName": {"Fn::GetAtt": ["NotifierDeadLetterQueue", "QueueName"]}})
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
    assert template["Outputs"]["NotifierDeadLetterQueueUrl"] == {"Value": {"Ref": "NotifierDeadLetterQueue"}}


def test_a_mail_claim_outlasts_the_notifier_and_fits_in_lambdas_retries() -> None:
    """A live notifier's claim is never taken over; a dead one's is, before Lambda's retries run out."""
    from chalicelib.config import Settings

    timeout = CHALICE_CONFIG["lambda_functions"]["notifier"]["lambda_timeout"]
    lease = Settings.from_env({}).notify_lease_seconds
    assert timeout < lease <= 60 + timeout  # Lambda's first retry comes a minute after a failure


def test_the_notifier_policy_may_only_dead_letter_its_events() -> None:
    policy = json.loads((ROOT / ".chalice" / "policy-notifier.json").read_text(encoding="utf-8"))
    notifier_dlq = "arn:aws:sqs:us-east-1:123456789012:download-center-notifier-dlq"
    assert _allowed(policy, "sqs:SendMessage", notifier_dlq)
    for action, resource in (("sqs:SendMessage", QUEUE_ARN), ("sqs:SendMessage", DLQ_ARN),
                             ("sqs:ReceiveMessage", notifier_dlq), ("sqs:DeleteMessage", notifier_dlq)):
        assert not _allowed(policy, action, resource), (action, resource)
    assert _allowed(policy, "kms:GenerateDataKey", KEY_ALIAS_ARN)
    assert not _allowed(policy, "kms:Encrypt", KEY_ALIAS_ARN)
