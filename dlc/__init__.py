"""``dlc``: the Download Center's command line client, and a small client class to import.

``from dlc import Client`` gives programs the same calls the command line makes
(sign-in, the task calls, waiting, verified and resumable downloads), raising
:class:`dlc.errors.DlcError` subclasses that carry the API's ``code`` and
``message``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from dlc.client import Client, DownloadResult, Page, PartsResult, check_ranges
from dlc.errors import (
    ApiError,
    AuthError,
    ChecksumMismatch,
    DlcError,
    NotFound,
    TaskNotSucceeded,
    UsageError,
)

try:
    __version__ = version("download-center")
except PackageNotFoundError:  # imported from a checkout that was not installed
    __version__ = "0+unknown"

__all__ = [
    "ApiError",
    "AuthError",
    "ChecksumMismatch",
    "Client",
    "DlcError",
    "DownloadResult",
    "NotFound",
    "Page",
    "PartsResult",
    "TaskNotSucceeded",
    "UsageError",
    "__version__",
    "check_ranges",
]
