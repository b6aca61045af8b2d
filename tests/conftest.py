"""Fixtures and settings for every test.

botocore reads and parses its service models (JSON files of up to a few MB)
once per *session*, and every test that starts moto makes new sessions: the
app's clients are reset between tests, PynamoDB makes a connection per table
configuration, provisioning makes its own. Parsing the same files again was
about half the CPU of setting up a test's AWS. Here all sessions of the test
process share one data loader, as all clients of one session already do: the
parsed models are the same, only read once. A Lambda container keeps its
clients for its lifetime, so this is the test process catching up with
production rather than departing from it.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import botocore.loaders
import botocore.session
import pytest

#: The test process's AWS: dummy keys, one region, never a real endpoint, and the
#: sources the integration tests read on the allow-lists. Set here, before any test
#: module is collected, because ``app`` reads its settings when first imported, and
#: e2e and unit modules import it too (the e2e stacks drop these from their env).
TEST_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    "BUNDLE_BUCKETS": "download-center-sources,download-center-missing",
    "LOG_GROUPS": "/download-center/demo,/download-center/missing",
}
os.environ.update(TEST_ENVIRONMENT)
os.environ.pop("AWS_ENDPOINT_URL", None)


class _SearchPaths(list[str]):
    """The shared loader's search paths: each boto3 Session appends its data path again."""

    def append(self, path: str) -> None:
        if path not in self:
            super().append(path)


@functools.cache
def _shared_loader(search_path_string: str | None = None) -> Any:
    loader = botocore.loaders.create_loader(search_path_string)
    loader._search_paths = _SearchPaths(loader._search_paths)
    return loader


botocore.session.create_loader = _shared_loader


# -- lines for the closing summary --------------------------------------------------------------
#: Lines a test module wants shown in pytest's closing summary (e.g. how many cases it ran).
SUMMARY_LINES = pytest.StashKey[list[str]]()


def add_summary_line(config: pytest.Config, line: str) -> None:
    """Queue ``line`` for the end of the run: ``-q`` hides a passing test's own output."""
    config.stash.setdefault(SUMMARY_LINES, []).append(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker: hand the lines to the controller, which prints the summary."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["summary_lines"] = session.config.stash.get(SUMMARY_LINES, [])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist's controller: a worker finished; keep its lines."""
    for line in getattr(node, "workeroutput", {}).get("summary_lines", []):
        add_summary_line(node.config, line)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    for line in config.stash.get(SUMMARY_LINES, []):
        terminalreporter.write_line(line)
