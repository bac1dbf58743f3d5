"""The page tests' watcher catches what it is there to catch: the page tests' "no problems"
would pass on a watcher that hears nothing."""

from __future__ import annotations

from urllib.parse import quote

from router.dev.ports import free_port
from tests.e2e.page.conftest import OpenPage


async def test_the_watcher_records_console_errors_exceptions_failed_requests_and_dialogs(
    open_page: OpenPage,
) -> None:
    closed = free_port()  # nothing listens there: the image request fails
    html = (
        "<p id=done>done</p>"
        "<script>console.error('seen by the watcher'); alert('a dialog');</script>"
        f"<img src='http://127.0.0.1:{closed}/x.png'>"
        "<script>throw new Error('uncaught here');</script>"
    )
    watched = await open_page(f"data:text/html,{quote(html)}")
    await watched.page.wait_for_selector("#done")
    await watched.page.wait_for_function("() => document.readyState === 'complete'")
    problems = "\n".join(watched.problems())
    assert "console error: seen by the watcher" in problems, problems
    assert "uncaught: Error: uncaught here" in problems, problems
    assert f"request failed: GET http://127.0.0.1:{closed}/x.png" in problems, problems
    assert watched.dialogs == ["alert: a dialog"], problems


async def test_a_clean_page_has_no_problems(open_page: OpenPage) -> None:
    watched = await open_page("data:text/html,<p id=done>clean</p>")
    await watched.page.wait_for_selector("#done")
    assert watched.problems() == []
