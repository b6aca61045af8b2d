"""boto3 clients, created once per process and shared.

``AWS_ENDPOINT_URL`` (the moto server locally) is honoured by boto3 itself,
so nothing here differs between Lambda, the local stack and tests.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any


def region_name() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


#: A create's checks of a source (``Exporter.preflight``) wait at most about this
#: long per call, retries included: the API answers within API Gateway's 29 s,
#: and a source that is slow to say whether it exists is left to the build.
PROBE_TIMEOUT_SECONDS = 3


@cache
def client(service: str, *, probe: bool = False) -> Any:
    """The shared client; ``probe=True`` for a create's quick source checks (one try, short timeouts)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 1 if probe else 5, "mode": "standard"},
        signature_version="s3v4" if service == "s3" else None,
        s3={"addressing_style": "path"} if os.environ.get("AWS_ENDPOINT_URL") else None,
        **({"connect_timeout": PROBE_TIMEOUT_SECONDS, "read_timeout": PROBE_TIMEOUT_SECONDS}
           if probe else {}),
    )
    return boto3.session.Session().client(service, region_name=region_name(), config=config)


@cache
def resource(service: str) -> Any:
    import boto3

    return boto3.session.Session().resource(service, region_name=region_name())


def reset() -> None:
    """Forget cached clients (tests switch endpoints and credentials)."""
    client.cache_clear()
    resource.cache_clear()
