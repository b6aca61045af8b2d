"""Typed errors, each with the API's ``code`` and ``message`` and the exit code the CLI uses.

A program that imports :class:`dlc.Client` catches these by kind (``except
NotFound``) rather than by HTTP status; the command line prints ``code:
message`` and exits with :attr:`DlcError.exit_code`, so scripts can tell
"sign in again" (3) from "no such task" (4) from "the file is corrupt" (5).
"""

from __future__ import annotations

from typing import Any

from dlc.sanitize import without_queries

#: The documented exit codes (docs/cli.md): one name each, so the CLI and the errors agree.
EXIT_OK = 0
EXIT_FAILED = 1  # the task failed or was canceled, or the request failed otherwise
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_CHECKSUM = 5
EXIT_INTERRUPTED = 130


class DlcError(Exception):
    """Something the user should be told as ``code: message``, with an exit code."""

    exit_code = EXIT_FAILED
    #: what ``--json`` prints for this error instead of the envelope (a failed task: the task)
    json_doc: Any = None

    def __init__(self, code: str, message: str, *, status: int | None = None,
                 details: Any = None) -> None:
        # a URL's query may be a presigned link's signature (a bearer credential): never in a message
        message = without_queries(message)
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details = details

    def to_json(self) -> dict[str, Any]:
        """The API's own error envelope, so ``--json`` errors read like the API's."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        if self.status is not None:
            error["status"] = self.status
        return {"error": error}


class ApiError(DlcError):
    """The API (or Cognito) refused a request; ``status`` is the HTTP status when there was one."""


class UsageError(ApiError):
    """The request itself was wrong: a 400 from the API, or a value the client could not use."""

    exit_code = EXIT_USAGE


class AuthError(ApiError):
    """Not signed in, a sign-in that failed, or one the API no longer accepts (401, 403)."""

    exit_code = EXIT_AUTH


class NotFound(ApiError):
    """No such task for this caller (404: another user's task reads the same), or its file is gone (410)."""

    exit_code = EXIT_NOT_FOUND


class ChecksumMismatch(DlcError):
    """The downloaded bytes are not the task's file; the partial file has been deleted."""

    exit_code = EXIT_CHECKSUM


class TaskNotSucceeded(DlcError):
    """A task that was waited for ended failed, canceled or expired; ``task`` is its last state."""

    exit_code = EXIT_FAILED

    def __init__(self, task: dict[str, Any]) -> None:
        status = task.get("status", "?")
        error = task.get("error") or {}
        reason = f" ({error.get('code')}: {error.get('message')})" if error else ""
        super().__init__(f"task_{status}", f"task {task.get('id')} is {status}{reason}")
        self.task = task


def error_for(status: int, code: str, message: str, details: Any = None) -> ApiError:
    """The typed error for an API answer's status and envelope."""
    cls: type[ApiError]
    if status == 400 or status == 415:
        cls = UsageError
    elif status in (401, 403):
        cls = AuthError
    elif status in (404, 410):
        cls = NotFound
    else:
        cls = ApiError
    return cls(code, message, status=status, details=details)
