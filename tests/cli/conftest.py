"""The CLI's tests run the installed ``dlc`` against the e2e tests' local stack (one per module)."""

from __future__ import annotations

from tests.e2e.conftest import local_stack  # noqa: F401  (the fixture, shared with tests/e2e)
