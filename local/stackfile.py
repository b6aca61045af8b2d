"""Where the running local stack describes itself (``.local/stack.json``).

The stack writes the file once everything is up and removes it on shutdown,
so its existence is the readiness signal. ``STACK_FILE`` moves it, which lets
tests run a stack of their own without clobbering a developer's.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent


def stack_file_path() -> Path:
    """The stack file for this environment (``STACK_FILE`` or the default)."""
    override = os.environ.get("STACK_FILE")
    if override:
        return Path(override).expanduser().resolve()
    return PROJECT_DIR / ".local" / "stack.json"


def write_stack_file(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (readers never see half a file), readable by the owner only.

    The file holds the demo users' passwords, hence 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".stack-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stack_file(path: Path, data: dict[str, Any]) -> bool:
    """Remove the file if it still describes this stack (``data``); say whether it did.

    Another stack started on the same ``STACK_FILE`` while this one was
    stopping has replaced it: that file is the other stack's readiness signal
    and must stay.
    """
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = None
    if current != data:
        return False
    path.unlink(missing_ok=True)
    return True


def read_stack_file(path: Path | None = None) -> dict[str, Any]:
    """Load the running stack's description, with a helpful error if it is not up."""
    path = path or stack_file_path()
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise SystemExit(f"{path} not found: is the local stack running? Start it with `make run`.") from None


def find_user(stack: dict[str, Any], username: str) -> dict[str, Any]:
    """The demo user entry named ``username`` (exit with the known names otherwise)."""
    for user in stack.get("users", []):
        if user["username"] == username:
            return user
    names = ", ".join(u["username"] for u in stack.get("users", []))
    raise SystemExit(f"unknown user {username!r}; the local stack has: {names}")


def bypass_proxy_for_loopback() -> None:
    """Keep loopback traffic off any HTTP(S)_PROXY (boto3, requests and urllib honour this)."""
    for var in ("NO_PROXY", "no_proxy"):
        entries = [e for e in os.environ.get(var, "").split(",") if e.strip()]
        for host in ("127.0.0.1", "localhost"):
            if host not in entries:
                entries.append(host)
        os.environ[var] = ",".join(entries)
