"""The commissioning page in a real browser: Debian's chromium, headless, driven by Playwright
(the system browser: `playwright install` downloads nothing here), against the agent, a real
broker and the simulators (tests/agent/ui/stack.py). One browser and one test bed for the
module; the tests run in order on the same page, the device taken offline last.

With CITYEDGE_UI_SCREENSHOTS=DIR the phone (390x844) and laptop (1366x768) screenshots are
written there (docs/ keeps them: docs/ui-phone.png, docs/ui-laptop.png); otherwise to a
temporary directory, so the rendering at both widths is exercised on every run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.agent.ui.stack import METER_BOUND, PASSWORD, UI_INTERVAL, Stack, stack

pytestmark = pytest.mark.asyncio(loop_scope="module")
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",  # root in CI
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with stack(tmp_path_factory.mktemp("ui")) as st:
        yield st


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (make system-deps)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        await b.close()


class Console:
    """JavaScript errors and console errors of the page, but the 401 of a refused login."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def seen(self, kind: str, text: str) -> None:
        if kind == "error" and "status of 401" not in text:
            self.errors.append(text)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page(browser: Browser, bed: Stack) -> AsyncIterator[tuple[Page, Console]]:
    ctx = await browser.new_context(viewport=LAPTOP)  # type: ignore[arg-type]
    pg = await ctx.new_page()
    console = Console()
    pg.on("pageerror", lambda e: console.errors.append(str(e)))
    pg.on("console", lambda m: console.seen(m.type, m.text))
    yield pg, console
    await ctx.close()


def shots_dir(tmp: Path) -> Path:
    out = os.environ.get("CITYEDGE_UI_SCREENSHOTS")
    return Path(out) if out else tmp


async def login(pg: Page, password: str = PASSWORD) -> None:
    await pg.fill("#login-user", "alice")
    await pg.fill("#login-password", password)
    await pg.click("#login-submit")


async def test_login_then_every_panel_shows(page: tuple[Page, Console], bed: Stack) -> None:
    pg, console = page
    await pg.goto(bed.url)
    await pg.wait_for_selector("#login-form")
    await login(pg, "not the password")
    # (locator waits, not wait_for_function: the page's CSP forbids evaluating strings)
    await expect(pg.locator("#login-error")).to_contain_text("wrong user name")
    await login(pg)
    await pg.wait_for_selector('[data-device="lamp-1"][data-state="online"]')
    assert await pg.inner_text("#gw") == "hn-cabinet-0042"
    assert "alice" in await pg.inner_text("#who")
    cards = await pg.locator("article.device").evaluate_all("els => els.map(e => e.dataset.device)")
    assert sorted(cards) == ["cam-21", "lamp-1", "lamp-2", "meter-11"]
    voltage = pg.locator('[data-device="lamp-1"] li[data-point="voltage"]')
    assert "V" in await voltage.locator(".u").inner_text()
    assert float(await voltage.locator(".v").inner_text()) > 100
    # the uplink and its outbox, the buses with their measured load and read plan
    await pg.wait_for_selector('[data-sink="uplink"] .pill.ok')
    assert "waiting" in await pg.inner_text('[data-sink="uplink"]')
    bus = pg.locator('[data-bus="street"]')
    assert "measured load" in await bus.inner_text()
    await bus.locator("details.plan summary").click()
    plan = await bus.locator("details.plan").inner_text()
    assert "lamp-1" in plan and "FC" in plan and "dim_level" in plan
    assert console.errors == []


async def test_confirmed_write_reaches_the_device_and_the_audit(
    page: tuple[Page, Console], bed: Stack
) -> None:
    pg, console = page
    before = len(bed.audit)
    await pg.click('[data-device="lamp-1"] button.write[data-point="dim_level"]')
    await pg.fill("#wd-value", "0.4")
    await pg.click("#wd-next")
    confirm = await pg.inner_text("#wd-confirm")
    assert "lamp-1 · dim_level" in confirm and "0.4" in confirm and "alice" in confirm
    assert bed.street.registers(1, "holding", 0, 1) != [40]
    await pg.click("#wd-write")
    await pg.wait_for_selector("#wd-result.ok")
    assert "reads back 0.4" in await pg.inner_text("#wd-result")
    await pg.click("#wd-done")
    assert bed.street.registers(1, "holding", 0, 1) == [40]  # the register holds percent
    records = [json.loads(x) for x in bed.audit[before:]]
    assert [(r["device"], r["target"], r["value"], r["result"]) for r in records] == [
        ("lamp-1", "dim_level", 0.4, "ok")
    ]
    assert records[0]["onBehalfOf"] == "alice" and records[0]["source"] == "local"

    # an enum point is chosen from its labels
    await pg.click('[data-device="lamp-2"] button.write[data-point="working_mode"]')
    await pg.select_option("#wd-select", "manual")
    await pg.click("#wd-next")
    await pg.click("#wd-write")
    await pg.wait_for_selector("#wd-result.ok")
    await pg.click("#wd-done")
    assert json.loads(bed.audit[-1])["value"] == "manual"
    assert console.errors == []


async def test_cancelled_write_changes_nothing(page: tuple[Page, Console], bed: Stack) -> None:
    pg, _ = page
    sent: list[str] = []
    pg.on("request", lambda r: sent.append(r.url) if r.url.endswith("/api/write") else None)
    before_audit = len(bed.audit)
    before = bed.street.registers(2, "holding", 0, 1)
    await pg.click('[data-device="lamp-2"] button.write[data-point="dim_level"]')
    await pg.fill("#wd-value", "0.7")
    await pg.click("#wd-next")
    assert "0.7" in await pg.inner_text("#wd-confirm")
    await pg.click("#wd-cancel")
    assert not await pg.locator("#write-dialog").evaluate("d => d.open")
    assert sent == []
    assert bed.street.registers(2, "holding", 0, 1) == before != [70]
    assert len(bed.audit) == before_audit
    # out of bounds is refused on the page before anything is sent
    await pg.click('[data-device="lamp-2"] button.write[data-point="dim_level"]')
    await pg.fill("#wd-value", "1.5")
    await pg.click("#wd-next")
    assert "maximum" in await pg.inner_text("#wd-result")
    await pg.click("#wd-cancel")
    assert sent == [] and len(bed.audit) == before_audit


async def test_device_going_offline_shows_within_its_bound(
    page: tuple[Page, Console], browser: Browser, bed: Stack, tmp_path: Path
) -> None:
    pg, console = page
    await pg.wait_for_selector('[data-device="meter-11"][data-state="online"]')
    await bed.water.stop()  # the meter's gateway goes away: only meter-11 is on that bus
    t0 = time.monotonic()
    limit = METER_BOUND + UI_INTERVAL + 1.0  # the agent's bound, one page refresh, rendering
    await pg.wait_for_selector(
        '[data-device="meter-11"][data-state="offline"]', timeout=(limit + 5) * 1000
    )
    took = time.monotonic() - t0
    print(f"meter-11 offline on the page {took:.2f} s after its gateway went (limit {limit:.1f} s)")
    assert took <= limit, f"offline shown after {took:.1f} s (bound {limit:.1f} s)"
    why = await pg.inner_text('[data-device="meter-11"] .dev-why')
    assert why.split(":")[0] in ("refused", "reset", "timeout"), why
    await expect(pg.locator("#warn-body")).to_contain_text("meter-11")
    assert "1 offline" in await pg.inner_text("#summary")

    out = shots_dir(tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    await expect(pg.locator("#toast")).to_be_hidden(timeout=6000)  # the last write's note
    await pg.locator('[data-bus="street"] details.plan summary').click()  # closed again
    await pg.evaluate("window.scrollTo(0, 0)")
    await pg.screenshot(path=str(out / "ui-laptop.png"))
    ctx = await browser.new_context(
        viewport=PHONE,  # type: ignore[arg-type]
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    phone = await ctx.new_page()
    await phone.goto(bed.url)
    await login(phone)
    await phone.wait_for_selector('[data-device="meter-11"][data-state="offline"]')
    # nothing wider than the phone: no sideways scrolling
    assert await phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await phone.screenshot(path=str(out / "ui-phone.png"))
    await ctx.close()
    assert (out / "ui-laptop.png").stat().st_size > 10_000
    assert (out / "ui-phone.png").stat().st_size > 10_000
    assert console.errors == []
