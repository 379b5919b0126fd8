"""The browser tests' fixtures. ``chromium`` is the session's browser (a sync fixture: it starts
before and ends after every trio run, see ``harness.py``); ``browser`` and ``foreign_site`` are
each test's own. Without Playwright or Chromium the tests fail, saying what to install."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.browser.harness import (
    Browser,
    BrowserUnavailable,
    Chromium,
    Screenshots,
    open_browser,
    screenshots_folder,
)
from tests.browser.site import ForeignSite, open_foreign_site

_screenshots_key = pytest.StashKey[Screenshots]()
_chromium_key = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def chromium(pytestconfig: pytest.Config) -> Iterator[Chromium]:
    try:
        browser = Chromium.start()
    except BrowserUnavailable as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    pytestconfig.stash[_chromium_key] = f"Chromium {browser.version} ({browser.executable})"
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="session")
def screenshots(pytestconfig: pytest.Config) -> Screenshots:
    """Where screenshots go, and those saved this session (listed at the end of the run)."""
    shots = Screenshots(screenshots_folder())
    pytestconfig.stash[_screenshots_key] = shots
    return shots


@pytest.fixture
async def browser(
    chromium: Chromium, screenshots: Screenshots, request: pytest.FixtureRequest
) -> AsyncIterator[Browser]:
    if request.node.get_closest_marker("browser") is None:  # -m "not browser" must leave it out
        raise pytest.fail.Exception(
            "mark the test: pytestmark = pytest.mark.browser", pytrace=False
        )
    async with open_browser(
        chromium, request.node.name, screenshots.folder, screenshots.saved
    ) as b:
        yield b


@pytest.fixture
async def foreign_site() -> AsyncIterator[ForeignSite]:
    async with open_foreign_site() as site:
        yield site


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    chromium = config.stash.get(_chromium_key, None)
    if chromium is not None:
        terminalreporter.write_line(f"browser tests ran on {chromium}")
    shots = config.stash.get(_screenshots_key, None)
    if shots is not None and shots.saved:
        terminalreporter.write_line(f"browser screenshots: {len(shots.saved)} in {shots.folder}")
