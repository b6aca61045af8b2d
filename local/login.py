"""``python -m local.login alice``: print a user's Cognito ID token.

Logs in the way a client in AWS would (InitiateAuth, USER_PASSWORD_AUTH)
against the running local stack, with the password from its stack file, so a
curl session can do ``TOKEN=$(python -m local.login alice)``; with
``--password`` it prints the password instead, to sign in to the web console.
"""

from __future__ import annotations

import argparse
import os
import sys

from local.stackfile import bypass_proxy_for_loopback, find_user, read_stack_file


def id_token(username: str, stack: dict | None = None) -> str:
    """A fresh ID token for ``username`` from the running stack's user pool."""
    from local.cognito import login

    stack = stack or read_stack_file()
    user = find_user(stack, username)
    # The moto endpoint ignores credentials, but botocore wants some to sign with.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    bypass_proxy_for_loopback()
    return login(stack["aws_endpoint_url"], stack["region"], stack["client_id"], username, user["password"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("username", nargs="?", default="alice")
    parser.add_argument("--password", action="store_true",
                        help="print the user's password instead (to sign in to the web console)")
    args = parser.parse_args(argv)
    if args.password:
        print(find_user(read_stack_file(), args.username)["password"])
    else:
        print(id_token(args.username))
    return 0


if __name__ == "__main__":
    sys.exit(main())
