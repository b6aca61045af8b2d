"""Create the deployment's resources on a local AWS endpoint (the moto server).

The local stack must run against the same table keys, indexes, queue redrive,
bucket settings and event bus as production, so this reads them from
``infra/resources.json`` (the file merged into the deployed template) instead
of restating them. Properties that only matter in AWS (deletion protection,
retention policies, the TLS-only bucket policy on a plain-HTTP loopback
endpoint, encryption with the stack's KMS key) are skipped on purpose; any
property this module does not know raises, so that the template and the local
stack cannot drift apart silently.

Every step is idempotent: calling :func:`provision` again on the same server
converges the resources to the template and returns the same names.

``python -m local.provision --endpoint-url http://127.0.0.1:5000`` prints the
result as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "infra" / "resources.json"

# Logical ids in infra/resources.json whose names the caller needs.
TABLE = "TasksTable"
BUCKET = "FilesBucket"
QUEUE = "BuildQueue"
DLQ = "BuildDeadLetterQueue"
EVENT_BUS = "EventBus"

LOCAL_STACK_NAME = "download-center-local"
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

# Resource properties that are deliberately not mirrored locally. They are
# dropped before the template's intrinsic functions are resolved: they may name
# resources that exist only in AWS.
# The stack's customer-managed KMS key protects data at rest in AWS; locally
# there is no key (moto would only pretend to encrypt with it), so the table
# and the queues keep their default encryption. (A table's SSESpecification is
# KMS encryption whatever it names: moto would make a key, an RSA key pair, for
# every table it creates, a quarter of a second of CPU each time.)
_KMS_QUEUE_ATTRIBUTES = {"KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds"}
_TABLE_IGNORED = {"DeletionProtectionEnabled", "Tags", "ContributorInsightsSpecification", "SSESpecification"}
_QUEUE_IGNORED = {"Tags"} | _KMS_QUEUE_ATTRIBUTES
# S3 server access logs are an AWS audit trail: moto delivers none, so the
# logging configuration is not mirrored and its target bucket not created.
_BUCKET_IGNORED = {"Tags", "LoggingConfiguration"}
_BUS_IGNORED = {"Tags", "Description"}

_QUEUE_ATTRIBUTES = {
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
}
_QUEUE_JSON_ATTRIBUTES = {"RedrivePolicy", "RedriveAllowPolicy"}
_QUEUE_CREATE_ONLY = {"FifoQueue"}


class ProvisionError(Exception):
    """The template asks for something this module cannot mirror locally."""


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The CloudFormation fragment shared with the deployment."""
    return json.loads(path.read_text(encoding="utf-8"))


def provision(endpoint_url: str | None, region: str = "us-east-1") -> dict[str, str]:
    """Create (or converge) the table, queues, bucket and event bus; return their names.

    ``endpoint_url`` is the moto server's URL; ``None`` keeps boto3's default
    endpoint, for callers inside moto's in-process ``mock_aws``.
    """
    if endpoint_url is None and not _local_endpoint_configured():
        raise ProvisionError(
            "no endpoint_url, no AWS_ENDPOINT_URL and no moto mock: refusing to "
            "create resources in a real AWS account (deploy the template instead)"
        )
    template = load_template()
    resources: dict[str, Any] = template["Resources"]
    session = _session(region)

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint_url, region_name=region)

    account = client("sts").get_caller_identity()["Account"]
    resolver = _Resolver(
        {
            "AWS::AccountId": account,
            "AWS::Region": region,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": LOCAL_STACK_NAME,
        }
    )

    by_type: dict[str, list[str]] = {}
    for logical_id, resource in resources.items():
        by_type.setdefault(resource.get("Type", ""), []).append(logical_id)

    dynamodb = client("dynamodb")
    for logical_id in by_type.get("AWS::DynamoDB::Table", []):
        _provision_table(dynamodb, logical_id, resources[logical_id], resolver)

    sqs = client("sqs")
    for logical_id in _dependency_order(by_type.get("AWS::SQS::Queue", []), resources):
        _provision_queue(sqs, logical_id, resources[logical_id], resolver)

    s3 = client("s3")
    log_targets = _access_log_targets(resources)
    for logical_id in by_type.get("AWS::S3::Bucket", []):
        if logical_id not in log_targets:
            _provision_bucket(s3, logical_id, resources[logical_id], resolver, region)

    events = client("events")
    for logical_id in by_type.get("AWS::Events::EventBus", []):
        _provision_event_bus(events, logical_id, resources[logical_id], resolver)

    return {
        "table": resolver.refs[TABLE],
        "bucket": resolver.refs[BUCKET],
        "queue_url": resolver.refs[QUEUE],
        "dlq_url": resolver.refs[DLQ],
        "event_bus": resolver.refs[EVENT_BUS],
        "queue_arn": resolver.attributes[(QUEUE, "Arn")],
        "dlq_arn": resolver.attributes[(DLQ, "Arn")],
    }


def _local_endpoint_configured() -> bool:
    """Whether boto3's default endpoint is a stand-in (moto's mock or AWS_ENDPOINT_URL)."""
    if os.environ.get("AWS_ENDPOINT_URL"):
        return True
    try:
        from moto.core.models import botocore_stubber
    except ImportError:
        return False
    return bool(botocore_stubber.enabled)


def _session(region: str) -> boto3.session.Session:
    """Use the caller's credentials if any, otherwise moto's conventional fake ones."""
    session = boto3.session.Session(region_name=region)
    if session.get_credentials() is None:
        session = boto3.session.Session(region_name=region, **FAKE_CREDENTIALS)
    return session


class _Resolver:
    """Evaluates the few intrinsic functions the template uses, with local values."""

    def __init__(self, pseudo: dict[str, str]) -> None:
        self.pseudo = pseudo
        self.refs: dict[str, str] = {}
        self.attributes: dict[tuple[str, str], str] = {}

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self._attribute(logical_id, attribute)
            if key == "Fn::Sub":
                return self._sub(arg)
            if key.startswith("Fn::"):
                raise ProvisionError(f"{key} is not supported locally")
        return {key: self.resolve(item) for key, item in value.items()}

    def _ref(self, name: str) -> str:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.refs:
            return self.refs[name]
        raise ProvisionError(f"Ref {name}: not created (yet) locally")

    def _attribute(self, logical_id: str, attribute: str) -> str:
        try:
            return self.attributes[(logical_id, attribute)]
        except KeyError:
            raise ProvisionError(f"GetAtt {logical_id}.{attribute}: not known locally") from None

    def _sub(self, arg: str | list[Any]) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        values = {name: self.resolve(value) for name, value in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in values:
                return str(values[name])
            if "." in name and not name.startswith("AWS::"):
                return self._attribute(*name.split(".", 1))
            return self._ref(name)

        return re.sub(r"\$\{([^}!]+)\}", replace, text)


def _without(props: dict[str, Any], ignored: set[str]) -> dict[str, Any]:
    """The properties that are mirrored locally (the ignored ones may name AWS-only resources)."""
    return {key: value for key, value in props.items() if key not in ignored}


def _check_properties(logical_id: str, props: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(props) - known)
    if unknown:
        raise ProvisionError(
            f"{logical_id}: local provisioning does not know {', '.join(unknown)}; "
            "mirror or ignore it in local/provision.py"
        )


def _local_name(resource: dict[str, Any], name_property: str, resolver: _Resolver) -> str:
    """The resource's name on the local endpoint.

    ``Metadata.LocalName`` wins: in AWS the bucket name must be globally unique
    (account and region in it), locally it is the default the code expects.
    """
    local = resource.get("Metadata", {}).get("LocalName")
    if isinstance(local, str):
        return local
    name = resolver.resolve(resource.get("Properties", {}).get(name_property))
    if not isinstance(name, str) or not name:
        raise ProvisionError(f"resource needs {name_property} or Metadata.LocalName")
    return name


def _is_error(exc: ClientError, *codes: str) -> bool:
    return exc.response.get("Error", {}).get("Code") in codes


def _provision_table(dynamodb: Any, logical_id: str, resource: dict[str, Any], resolver: _Resolver) -> None:
    props = resource["Properties"]
    _check_properties(
        logical_id,
        props,
        {
            "TableName",
            "BillingMode",
            "AttributeDefinitions",
            "KeySchema",
            "GlobalSecondaryIndexes",
            "LocalSecondaryIndexes",
            "ProvisionedThroughput",
            "TimeToLiveSpecification",
            "PointInTimeRecoverySpecification",
            "StreamSpecification",
        }
        | _TABLE_IGNORED,
    )
    props = _without(props, _TABLE_IGNORED)
    props = resolver.resolve(props)
    name = _local_name(resource, "TableName", resolver)
    billing = props.get("BillingMode", "PROVISIONED")
    gsis = [_index(index, billing) for index in props.get("GlobalSecondaryIndexes", [])]
    kwargs: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": billing,
    }
    if gsis:
        kwargs["GlobalSecondaryIndexes"] = gsis
    if props.get("LocalSecondaryIndexes"):
        kwargs["LocalSecondaryIndexes"] = [
            _index(index, "PAY_PER_REQUEST") for index in props["LocalSecondaryIndexes"]
        ]
    if billing == "PROVISIONED":
        kwargs["ProvisionedThroughput"] = props["ProvisionedThroughput"]
    if "StreamSpecification" in props:
        kwargs["StreamSpecification"] = {"StreamEnabled": True} | props["StreamSpecification"]

    try:
        dynamodb.create_table(**kwargs)
    except ClientError as exc:
        if not _is_error(exc, "ResourceInUseException"):
            raise
        _add_missing_indexes(dynamodb, name, props["AttributeDefinitions"], gsis)
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        current = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        enabled = current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING")
        if enabled != bool(ttl["Enabled"]) or (
            enabled and current.get("AttributeName") != ttl["AttributeName"]
        ):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={
                    "AttributeName": ttl["AttributeName"],
                    "Enabled": bool(ttl["Enabled"]),
                },
            )
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr:
        dynamodb.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={
                "PointInTimeRecoveryEnabled": bool(pitr.get("PointInTimeRecoveryEnabled"))
            },
        )

    described = dynamodb.describe_table(TableName=name)["Table"]
    resolver.refs[logical_id] = name
    resolver.attributes[(logical_id, "Arn")] = described["TableArn"]


def _index(index: dict[str, Any], billing: str) -> dict[str, Any]:
    """A template index as the CreateTable API wants it."""
    result = {key: index[key] for key in ("IndexName", "KeySchema", "Projection")}
    if billing == "PROVISIONED" and "ProvisionedThroughput" in index:
        result["ProvisionedThroughput"] = index["ProvisionedThroughput"]
    return result


def _add_missing_indexes(
    dynamodb: Any, name: str, attributes: list[dict[str, str]], gsis: list[dict[str, Any]]
) -> None:
    """An existing table from an older template gets the indexes added since."""
    described = dynamodb.describe_table(TableName=name)["Table"]
    existing = {index["IndexName"] for index in described.get("GlobalSecondaryIndexes", [])}
    for index in gsis:
        if index["IndexName"] in existing:
            continue
        dynamodb.update_table(
            TableName=name,
            AttributeDefinitions=attributes,
            GlobalSecondaryIndexUpdates=[{"Create": index}],
        )


def _dependency_order(logical_ids: list[str], resources: dict[str, Any]) -> list[str]:
    """Queues that others reference (dead-letter targets) come first."""
    pending = list(logical_ids)
    ordered: list[str] = []
    while pending:
        for logical_id in pending:
            needs = _references(resources[logical_id].get("Properties", {}))
            if not (needs & set(pending)):
                ordered.append(logical_id)
                pending.remove(logical_id)
                break
        else:
            raise ProvisionError(f"circular references between {', '.join(pending)}")
    return ordered


def _references(value: Any) -> set[str]:
    """Logical ids a property value refers to with Ref, GetAtt or Sub."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= _references(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                found.add(item)
            elif key == "Fn::GetAtt":
                found.add(item[0] if isinstance(item, list) else item.split(".", 1)[0])
            elif key == "Fn::Sub":
                text = item if isinstance(item, str) else item[0]
                found |= {m.split(".", 1)[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
                if isinstance(item, list):
                    found |= _references(item[1])
            else:
                found |= _references(item)
    return found


def _queue_attributes(props: dict[str, Any]) -> dict[str, str]:
    """Template queue properties as SQS attribute strings."""
    attributes: dict[str, str] = {}
    for key, value in props.items():
        if key in _QUEUE_JSON_ATTRIBUTES:
            attributes[key] = json.dumps(value, separators=(",", ":"))
        elif key in _QUEUE_ATTRIBUTES:
            attributes[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return attributes


def _provision_queue(sqs: Any, logical_id: str, resource: dict[str, Any], resolver: _Resolver) -> None:
    props = resource.get("Properties", {})
    _check_properties(
        logical_id,
        props,
        {"QueueName"} | _QUEUE_ATTRIBUTES | _QUEUE_JSON_ATTRIBUTES | _QUEUE_IGNORED,
    )
    props = resolver.resolve(_without(props, _QUEUE_IGNORED))
    name = _local_name(resource, "QueueName", resolver)
    attributes = _queue_attributes(props)
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if not _is_error(exc, "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            raise
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    else:
        mutable = {k: v for k, v in attributes.items() if k not in _QUEUE_CREATE_ONLY}
        if mutable:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=mutable)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    resolver.refs[logical_id] = url
    resolver.attributes[(logical_id, "Arn")] = arn
    resolver.attributes[(logical_id, "QueueName")] = name
    resolver.attributes[(logical_id, "QueueUrl")] = url


def _access_log_targets(resources: dict[str, Any]) -> set[str]:
    """Buckets that receive other buckets' S3 server access logs (not created locally)."""
    targets: set[str] = set()
    for resource in resources.values():
        if resource.get("Type") != "AWS::S3::Bucket":
            continue
        logging = resource.get("Properties", {}).get("LoggingConfiguration", {})
        destination = logging.get("DestinationBucketName")
        if isinstance(destination, dict) and isinstance(destination.get("Ref"), str):
            targets.add(destination["Ref"])
    return targets


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in the PutBucketLifecycleConfiguration shape."""
    converted: dict[str, Any] = {"Status": rule["Status"]}
    for key, value in rule.items():
        if key == "Id":
            converted["ID"] = value
        elif key == "Status":
            continue
        elif key == "Prefix":
            converted["Filter"] = {"Prefix": value}
        elif key == "ExpirationInDays":
            converted.setdefault("Expiration", {})["Days"] = value
        elif key == "ExpiredObjectDeleteMarker":
            converted.setdefault("Expiration", {})["ExpiredObjectDeleteMarker"] = value
        elif key == "AbortIncompleteMultipartUpload":
            converted[key] = {"DaysAfterInitiation": value["DaysAfterInitiation"]}
        elif key == "NoncurrentVersionExpirationInDays":
            converted["NoncurrentVersionExpiration"] = {"NoncurrentDays": value}
        else:
            raise ProvisionError(f"lifecycle rule property {key} is not mirrored locally")
    converted.setdefault("Filter", {"Prefix": ""})
    return converted


def _provision_bucket(
    s3: Any, logical_id: str, resource: dict[str, Any], resolver: _Resolver, region: str
) -> None:
    props = resource.get("Properties", {})
    _check_properties(
        logical_id,
        props,
        {
            "BucketName",
            "PublicAccessBlockConfiguration",
            "BucketEncryption",
            "OwnershipControls",
            "LifecycleConfiguration",
        }
        | _BUCKET_IGNORED,
    )
    name = _local_name(resource, "BucketName", resolver)
    props = resolver.resolve(_without(props, {"BucketName"} | _BUCKET_IGNORED))
    try:
        s3.head_bucket(Bucket=name)
    except ClientError as exc:
        if not _is_error(exc, "404", "NoSuchBucket", "NotFound"):
            raise
        kwargs: dict[str, Any] = {"Bucket": name}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)

    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
        )
    if "BucketEncryption" in props:
        rules = []
        for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]:
            converted: dict[str, Any] = {
                "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]
            }
            if "BucketKeyEnabled" in rule:
                converted["BucketKeyEnabled"] = rule["BucketKeyEnabled"]
            rules.append(converted)
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    if "OwnershipControls" in props:
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=props["OwnershipControls"])
    if "LifecycleConfiguration" in props:
        s3.put_bucket_lifecycle_configuration(
            Bucket=name,
            LifecycleConfiguration={
                "Rules": [_lifecycle_rule(rule) for rule in props["LifecycleConfiguration"]["Rules"]]
            },
        )
    resolver.refs[logical_id] = name
    resolver.attributes[(logical_id, "Arn")] = f"arn:aws:s3:::{name}"


def _provision_event_bus(events: Any, logical_id: str, resource: dict[str, Any], resolver: _Resolver) -> None:
    props = resolver.resolve(resource.get("Properties", {}))
    _check_properties(logical_id, props, {"Name"} | _BUS_IGNORED)
    name = _local_name(resource, "Name", resolver)
    try:
        arn = events.create_event_bus(Name=name)["EventBusArn"]
    except ClientError as exc:
        if not _is_error(exc, "ResourceAlreadyExistsException"):
            raise
        arn = events.describe_event_bus(Name=name)["Arn"]
    resolver.refs[logical_id] = name
    resolver.attributes[(logical_id, "Arn")] = arn
    resolver.attributes[(logical_id, "Name")] = name


def main(argv: list[str] | None = None) -> int:
    """Provision against an endpoint and print the names as JSON."""
    parser = argparse.ArgumentParser(prog="python -m local.provision", description=__doc__)
    parser.add_argument("--endpoint-url", default="http://127.0.0.1:5000")
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args(argv)
    print(json.dumps(provision(args.endpoint_url, args.region), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
