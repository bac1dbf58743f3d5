"""What the page shows, read from the browser through the page's stable ids and data
attributes (docs/page.md): `[data-route=NAME]` sections, stack rows `[data-version=V]` with a
`[data-field=weight]` cell, `.grid-cell[data-instance][data-version][data-flipped]`,
`#audit li[data-seq]`, `.guardrail[data-rule=R]` with `[data-field=observed|threshold]`,
`#status-banner` and `#connection`."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page

LOAD_TIMEOUT_MS = 15_000  # a loaded 2-core machine; the page itself answers in milliseconds

# A shown number, whatever its unit sign: "95%", "95.0 %", "0.021", "1,000".
NUMBER_JS = "(text) => { const m = (text || '').replace(/,/g, '').match(/-?\\d+(\\.\\d+)?/);"
NUMBER_JS += " return m ? parseFloat(m[0]) : null; }"


def route_scope(route: str) -> str:
    return f'[data-route="{route}"]'


def stack_row(route: str, version: str) -> str:
    """The deploy stack's row of `version` (not a grid cell, which has a data-version too)."""
    return f'{route_scope(route)} [data-version="{version}"]:has([data-field="weight"])'


async def until_shown(page: Page, route: str, version: str) -> None:
    """Wait until the page is live and shows `version` in `route`'s stack."""
    await page.wait_for_selector(stack_row(route, version), timeout=LOAD_TIMEOUT_MS)
    await until_live(page)


async def until_live(page: Page) -> None:
    """Wait until the connection indicator says "live" (the event stream is open)."""
    await page.wait_for_function(
        "() => { const c = document.querySelector('#connection');"
        " return c !== null && /^live\\b/i.test(c.textContent.trim()); }",
        timeout=LOAD_TIMEOUT_MS,
    )


async def weights(page: Page, route: str) -> dict[str, float]:
    """Each stack row's version and the number its weight cell shows (percent)."""
    result: dict[str, float] = await page.evaluate(
        f"""(scope) => {{
            const number = {NUMBER_JS};
            const rows = document.querySelectorAll(
                `${{scope}} [data-version]:has([data-field="weight"])`);
            return Object.fromEntries([...rows].map((row) => [
                row.dataset.version,
                number(row.querySelector('[data-field="weight"]').textContent)]));
        }}""",
        route_scope(route),
    )
    return result


async def row_text(page: Page, route: str, version: str) -> str:
    return await page.locator(stack_row(route, version)).inner_text()


async def grid(page: Page, route: str | None = None) -> list[dict[str, Any]]:
    """Every grid cell (of `route`'s grid, or of the whole page): its instance, version,
    flipped flag, title and background colour."""
    scope = route_scope(route) if route else ""
    cells: list[dict[str, Any]] = await page.evaluate(
        """(scope) => [...document.querySelectorAll(`${scope} .grid-cell`)].map((cell) => ({
            instance: cell.dataset.instance,
            version: cell.dataset.version,
            flipped: cell.dataset.flipped,
            title: cell.getAttribute('title') || '',
            colour: getComputedStyle(cell).backgroundColor,
        }))""",
        scope,
    )
    return cells


async def audit_seqs(page: Page) -> list[int]:
    """The audit trail's sequence numbers, in the page's order."""
    seqs: list[int] = await page.evaluate(
        "() => [...document.querySelectorAll('#audit li[data-seq]')]"
        ".map((li) => Number(li.dataset.seq))"
    )
    return seqs
