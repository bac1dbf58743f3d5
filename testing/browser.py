"""Debian's `chromium`, headless, driven by Playwright for Python, for the page tests
(tests/e2e/page) and the screenshots (testing/screenshots.py).

Nothing here downloads a browser: Playwright is given the path of Debian's binary
(`executable_path`), and `playwright install` is never run. A page opened with `watch` records
everything that went wrong in it (console errors, uncaught exceptions, failed requests, error
responses, dialogs), so that a test can assert there was none.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Error,
    Page,
    Request,
    Response,
    ViewportSize,
    async_playwright,
)

MISSING = "chromium is not installed (Debian: apt-get install chromium); CI installs it"
MISSING_IN_CI = "chromium is not installed, yet CI must have it: .ci/run installs it (Debian)"
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
# /dev/shm is small in containers; without it chromium's renderer may crash on a large page.
LAUNCH_ARGS = ["--disable-dev-shm-usage"]


def chromium_binary() -> str | None:
    return shutil.which("chromium")


def require_chromium() -> str:
    """The chromium binary. Without it the calling test skips, except in CI (CI=1), where it
    fails, as the Redis and Prometheus tests do."""
    import pytest  # here, so that the screenshots command imports this module without pytest

    binary = chromium_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(MISSING_IN_CI)
        pytest.skip(MISSING)
    return binary


@asynccontextmanager
async def chromium(binary: str) -> AsyncIterator[Browser]:
    """Debian's chromium at `binary`, headless, closed on the way out."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=binary, headless=True, args=LAUNCH_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


class WatchedPage:
    """A page and what went wrong in it since it opened. Dialogs (alert, confirm) are
    dismissed and recorded: a page that opens one has run code it should not have."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.failed_requests: list[str] = []
        self.error_responses: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", self._page_error)
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)
        page.on("dialog", self._dialog)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location.get("url", "")
            self.console_errors.append(f"{message.text} ({where})")

    def _page_error(self, error: Error) -> None:
        self.page_errors.append(f"{error.name}: {error.message}")

    def _request_failed(self, request: Request) -> None:
        self.failed_requests.append(f"{request.method} {request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.error_responses.append(f"{response.status} {response.url}")

    async def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    def problems(self) -> list[str]:
        """Everything that went wrong so far, one line each; empty on a clean page."""
        return [
            *(f"console error: {m}" for m in self.console_errors),
            *(f"uncaught: {m}" for m in self.page_errors),
            *(f"request failed: {m}" for m in self.failed_requests),
            *(f"error response: {m}" for m in self.error_responses),
            *(f"dialog: {m}" for m in self.dialogs),
        ]


async def watch(browser: Browser, url: str) -> WatchedPage:
    """Open `url` in a new page of its own (a fresh context), recording its problems from
    before the first request on."""
    context = await browser.new_context(viewport=VIEWPORT)
    watched = WatchedPage(await context.new_page())
    await watched.page.goto(url)
    return watched
