"""Errors that cross the API boundary, each with a stable code and status.

Raising one of these anywhere below the routes produces the contract's error
envelope; anything else becomes a generic ``internal_error`` without details.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, code: str | None = None, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details

    @classmethod
    def of(cls, details: list[dict[str, str]], code: str | None = None) -> ApiError:
        """The error for these ``{"field", "issue"}`` details, its message their sentences.

        ``field`` followed by ``issue`` reads as a sentence, so the message
        (what curl, a log line or a dead-letter reason shows) says every
        problem too, not "Invalid params.".
        """
        sentences = [f"{d['field']} {d['issue']}" for d in details]
        if len(sentences) == 1:
            message = f"{sentences[0]}."
        else:
            message = f"The request has {len(sentences)} problems: {'; '.join(sentences)}."
        return cls(message, code=code, details=details)

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            err["details"] = self.details
        return {"error": err}

    def headers(self) -> dict[str, str]:
        """Headers HTTP requires of this answer besides the body (none for most)."""
        return {}


class ValidationError(ApiError):
    status = 400
    code = "validation_error"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}  # a 401 names the scheme to use (RFC 9110, 15.5.2)


class Forbidden(ApiError):
    """The caller is who it says, but may not do this (the access policy, or its account's tenant)."""

    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    """A method the path does not serve; ``Allow`` lists those it does (RFC 9110, 15.5.6)."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, method: str, path: str, allowed: Sequence[str]) -> None:
        super().__init__(f"{path} does not take {method}; it takes {', '.join(allowed)}.")
        self.allowed = tuple(allowed)

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class InvalidState(ApiError):
    status = 409
    code = "invalid_state"


class IdempotencyConflict(ApiError):
    status = 409
    code = "idempotency_conflict"


class Expired(ApiError):
    status = 410
    code = "expired"


class TooManyActiveTasks(ApiError):
    status = 429
    code = "too_many_active_tasks"


class ExportError(Exception):
    """A problem with the export's source that the user can act on.

    It ends the task ``failed`` with this code and message, shown to the user.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
