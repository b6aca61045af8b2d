"""An in-process moto server that fails loudly when its port is taken.

``moto.server.ThreadedMotoServer`` binds inside its thread, so a busy port
leaves ``start()`` waiting forever (and werkzeug's own bind calls
``sys.exit``). This binds the socket in the caller's thread, so a busy port is
an ``OSError`` at once, and then serves from a daemon thread with the same
WSGI application and request handler ThreadedMotoServer uses.
"""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Callable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

_dynamodb_lock = threading.RLock()


def keep_key_restores_still() -> None:
    """Keep ``/moto-api/data.json`` readable once a multipart upload has parts.

    moto steps every S3 key's Glacier restore status the first time it is
    read, and announces a finished restore to the key's bucket; an upload's
    part is a key with no bucket, so reading the model data (where the stack
    finds the mail it "sent") fails with a 500 as soon as a multipart upload
    or a composed file exists. Nothing here restores from Glacier: the status
    stays where it starts.
    """
    from moto.moto_api import state_manager

    state_manager.set_transition(model_name="s3::keyrestore",
                                 transition={"progression": "manual", "times": 2**31})


def serialize_dynamodb() -> None:
    """Make moto's DynamoDB answer one request at a time, as real DynamoDB's items behave.

    moto runs a transaction by snapshotting the whole table, applying each
    item and, if one condition fails, restoring the snapshot: with requests
    served on several threads, a failed transaction wipes out whatever other
    requests wrote meanwhile, and two transactions can both pass a condition
    that only one should (40 parallel creates against a cap of 20 accepted
    21). Real DynamoDB is atomic per transaction and per item. Idempotent;
    used by the local stack's server and by the in-process tests.
    """
    from moto.dynamodb.responses import DynamoHandler

    original: Callable[..., Any] = DynamoHandler.call_action
    if getattr(original, "serialized", False):
        return

    @functools.wraps(original)
    def call_action(self: DynamoHandler) -> Any:
        with _dynamodb_lock:
            return original(self)

    call_action.serialized = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


def support_revoke_token() -> None:
    """Give moto Cognito's ``RevokeToken``, which moto 5.2.5 lacks (it answers "not implemented").

    ``dlc logout`` and the console's sign-out revoke the refresh token (issue 19), so the local
    stack needs the call to sign out at all. It does what Cognito documents: the refresh token
    must be one issued to ``ClientId`` (else ``UnauthorizedException``), and once revoked a
    ``REFRESH_TOKEN_AUTH`` with it fails with ``NotAuthorizedException`` -- moto's own check,
    the one its ``GlobalSignOut`` relies on (the token's entry set to None). A token Cognito
    does not know is revoked already: no error (RFC 7009, 2.2). Idempotent.
    """
    from moto.cognitoidp.models import cognitoidp_backends
    from moto.cognitoidp.responses import CognitoIdpResponse
    from moto.core.exceptions import JsonRESTError
    from moto.core.responses import EmptyResult

    if getattr(CognitoIdpResponse, "revoke_token", None) is not None:
        return

    def revoke_token(self: CognitoIdpResponse) -> Any:
        token, client_id = self._get_param("Token"), self._get_param("ClientId")
        if not token or not client_id:
            raise JsonRESTError("InvalidParameterException", "Token and ClientId are required")
        for backends in cognitoidp_backends.values():
            for region, backend in backends.items():
                if region == "global":
                    continue
                for pool in backend.user_pools.values():
                    issued = pool.refresh_tokens.get(token)
                    if token not in pool.refresh_tokens or issued is None:
                        continue
                    if issued[0] != client_id:
                        raise JsonRESTError("UnauthorizedException",
                                            "The token was not issued to this app client")
                    pool.refresh_tokens[token] = None
        return EmptyResult()

    CognitoIdpResponse.revoke_token = revoke_token  # type: ignore[attr-defined]


class MotoServer:
    """All moto services on one ``host:port``, served from a background thread."""

    def __init__(self, host: str, port: int) -> None:
        serialize_dynamodb()
        keep_key_restores_still()
        support_revoke_token()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            # werkzeug duplicates the descriptor; ours closes with the block.
            self._server = make_server(
                host,
                port,
                DomainDispatcherApplication(create_backend_app),
                threaded=True,
                request_handler=MotoRequestHandler,
                fd=sock.fileno(),
            )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout)
        self._server.server_close()
