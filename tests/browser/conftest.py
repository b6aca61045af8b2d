"""The web console in a real headless Chromium, against a real local stack.

Playwright's Python package drives the system's Chromium (``executable_path``):
Playwright cannot download its own browser here, and `make test` installs
Debian's ``chromium`` when it is missing (see the Makefile's ``browser``
target). Each test module gets its own stack and browser; each test its own
browser context (a fresh sessionStorage: a fresh sign-in).

Screenshots go to ``.local/screenshots/`` (ignored): ``shot(page, name)``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import PROJECT_DIR, RunningStack, start_stack

SCREENSHOTS = PROJECT_DIR / ".local" / "screenshots"
#: how long a page may take to show what a test waits for (a build of a few thousand rows included)
TIMEOUT_MS = 30_000


def chromium_path() -> str:
    """The system Chromium: ``CHROMIUM`` if set, else the first on PATH."""
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    pytest.fail("No Chromium found: `make test` installs Debian's chromium (as root), or set CHROMIUM=/path")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with start_stack(tmp_path_factory.mktemp("console-stack")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def new_page(browser: Any, stack: RunningStack) -> Iterator[Callable[..., Any]]:
    """new_page(locale="en-US", width=1440, height=900) -> a page at the console, in a new context.

    Errors the page throws or logs fail the test at teardown: a console that
    works only while it logs exceptions is not working.
    """
    contexts: list[Any] = []
    problems: list[str] = []

    def make(locale: str = "en-US", width: int = 1440, height: int = 900, **options: Any) -> Any:
        context = browser.new_context(locale=locale, viewport={"width": width, "height": height},
                                      accept_downloads=True, **options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
                if msg.type == "error" and not expected_console_error(msg.text) else None)
        page.goto(stack.info["console_url"])
        return page

    yield make
    for context in contexts:
        context.close()
    assert not problems, "\n".join(problems)


def expected_console_error(text: str) -> bool:
    """Errors Chromium logs for a response the page expects (an API 4xx it shows to the person)."""
    return "Failed to load resource: the server responded with a status of 4" in text


def password(stack: RunningStack, username: str) -> str:
    return next(u for u in stack.info["users"] if u["username"] == username)["password"]


def sign_in(page: Any, stack: RunningStack, username: str = "alice") -> None:
    """Sign in through the form, as a person would, and wait for the signed-in page."""
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password(stack, username))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()


def shot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under .local/screenshots/ (look at them)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
