"""``chalice.test.Client`` with the local stack's Cognito token verification.

chalice's test client builds a plain ``LocalGateway``, whose authorizer only
decodes the JWT: a forged, expired or foreign token becomes a principal and a
test passes that API Gateway would answer with 401. This client swaps in
:class:`~local.gateway.VerifyingGateway`, the same authorizer and
:class:`~local.cognito.TokenVerifier` that ``chalice local`` uses, so there is
one verifier and the tests exercise it.
"""

from __future__ import annotations

from chalice.app import Chalice
from chalice.config import Config
from chalice.test import Client, TestHTTPClient
from joserfc.jwk import KeySet
from moto.utilities.utils import load_resource

from local.cognito import TokenVerifier
from local.gateway import VerifyingGateway, gateway_responses

MOTO_PUBLIC_JWKS = "cognitoidp/resources/jwks-public.json"


def moto_jwks() -> KeySet:
    """The keys moto signs every pool's tokens with.

    In-process moto (``mock_aws``) has no HTTP endpoint to fetch
    ``/{pool}/.well-known/jwks.json`` from; this is the file moto serves there.
    """
    return KeySet.import_key_set(load_resource(MOTO_PUBLIC_JWKS))


class VerifyingHTTPClient(TestHTTPClient):
    """chalice's test HTTP client, routed through the verifying gateway."""

    def __init__(self, app: Chalice, config: Config, verifier: TokenVerifier) -> None:
        super().__init__(app, config)
        # TestHTTPClient hands every request to this gateway; it is the one hook.
        self._local_gateway = VerifyingGateway(app, config, verifier, gateway_responses())


class VerifyingClient(Client):
    """``chalice.test.Client`` whose ``http`` verifies Cognito tokens as API Gateway does."""

    def __init__(self, app: Chalice, verifier: TokenVerifier, stage_name: str = "dev",
                 project_dir: str = ".") -> None:
        super().__init__(app, stage_name=stage_name, project_dir=project_dir)
        self._verifier = verifier

    @property
    def http(self) -> TestHTTPClient:
        if self._http_client is None:
            self._http_client = VerifyingHTTPClient(self._app, self._chalice_config, self._verifier)
        return self._http_client
