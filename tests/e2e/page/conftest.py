"""The page tests' browser: Debian's chromium, headless (testing/browser.py), one per test, and
the pages a test opens in it, each recording what went wrong in it. The fleet fixtures (a
real redis-server, a provider of the test's own, `start_fleet`) are the fleet tests'."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from playwright.async_api import Browser

from testing.browser import WatchedPage, chromium, require_chromium, watch
from tests.e2e.fleet.conftest import provider, redis_server, start_fleet

__all__ = ["provider", "redis_server", "start_fleet"]

OpenPage = Callable[[str], Awaitable[WatchedPage]]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium, headless (skips outside CI without it, fails in CI)."""
    async with chromium(require_chromium()) as running:
        yield running


@pytest.fixture
async def open_page(browser: Browser) -> AsyncIterator[OpenPage]:
    """Open a URL in a page of its own that records its console errors, failed requests and
    dialogs; every page opened is closed at the end."""
    pages: list[WatchedPage] = []

    async def open_(url: str) -> WatchedPage:
        watched = await watch(browser, url)
        pages.append(watched)
        return watched

    yield open_
    for watched in pages:
        await watched.page.context.close()
